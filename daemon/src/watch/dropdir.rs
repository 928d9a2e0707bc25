//! The drop folder (`watch_dir`): a file placed there is queued, then renamed `NAME.queued`;
//! one that cannot be used becomes `NAME.invalid`, with `NAME.error.txt` beside it saying what
//! is wrong and on which line.
//!
//! What is read:
//! * `*.toml`, `*.json`: a manifest in the `mdlctl ensure` format ([`mdl_protocol::manifest`]);
//!   relative directories are taken from the daemon's `download_dir`.
//! * `*.url`: an internet shortcut (`[InternetShortcut]` with `URL=...`).
//! * anything else: one source per line, `#` starts a comment; after the source, options in
//!   the words of `mdlctl add`: `dest=DIR` (relative: below `download_dir`), `sha256=HEX`,
//!   `md5=HEX`, `name=FILE`, `priority=N`, `revision=REV`, `include=GLOB`, `exclude=GLOB`,
//!   `option=K=V`, `paused`; each may also be written `--dest DIR` or `--dest=DIR`.
//!
//! Hidden files, `*.queued`, `*.invalid`, `*.error.txt` and names of files still being
//! downloaded by a browser (`*.part`, `*.crdownload`, `*.tmp`, `*~`) are left alone. A file
//! is taken only once its size and modification time have not changed for `watch_settle_ms`
//! (a copy in progress is not read half-way). Files dropped while the daemon was down are
//! taken when it starts. Nothing is queued twice: besides the rename, a digest of the file's
//! name and content is recorded in the store before the rename, so a crash in between does
//! not queue it again (and the daemon's add joins an identical queued job anyway).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdl_protocol::manifest::ManifestText;
use mdl_protocol::AddRequest;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::disk::DiskWatcher;
use crate::engine::finalize::file_stamp;
use crate::handlers::{add, Services};
use crate::settings::Settings;

/// What a dropped file asks for: adds, each with the line it came from.
type Entries = Vec<(Option<usize>, AddRequest)>;

/// A problem with a dropped file, on a line where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn problem(line: Option<usize>, message: impl Into<String>) -> Problem {
    Problem {
        line,
        message: message.into(),
    }
}

/// Whether a file in the drop folder is one to read.
pub fn is_candidate(name: &str) -> bool {
    const SKIP: [&str; 9] = [
        ".queued",
        ".invalid",
        ".error.txt",
        ".part",
        ".partial",
        ".crdownload",
        ".tmp",
        ".swp",
        "~",
    ];
    !name.starts_with('.') && !SKIP.iter().any(|s| name.ends_with(s))
}

/// Parse a dropped file into adds (nothing queued yet). Relative destinations are taken from
/// `download_dir`.
pub fn parse(name: &str, text: &str, download_dir: &Path) -> Result<Entries, Vec<Problem>> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".toml") || lower.ends_with(".json") {
        let (_, files) = ManifestText::new(text, lower.ends_with(".json"))
            .plan(download_dir)
            .map_err(|e| vec![problem(e.line, e.message)])?;
        return Ok(files
            .into_iter()
            .map(|f| {
                let request = AddRequest {
                    source: f.url.clone(),
                    dest: Some(f.dir.display().to_string()),
                    sha256: f.sha256.clone(),
                    md5: f.md5.clone(),
                    file_name: Some(f.name.clone()),
                    ..Default::default()
                };
                (None, request)
            })
            .collect());
    }
    if lower.ends_with(".url") {
        return parse_shortcut(text).map(|e| vec![e]).map_err(|p| vec![p]);
    }
    parse_list(text, download_dir)
}

/// An internet shortcut: the `URL=` line of its `[InternetShortcut]` section.
fn parse_shortcut(text: &str) -> Result<(Option<usize>, AddRequest), Problem> {
    let mut in_section = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line.eq_ignore_ascii_case("[InternetShortcut]");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_section && key.trim().eq_ignore_ascii_case("url") {
            let url = value.trim();
            if url.is_empty() {
                return Err(problem(Some(i + 1), "URL= is empty"));
            }
            let request = AddRequest {
                source: url.to_string(),
                ..Default::default()
            };
            return Ok((Some(i + 1), request));
        }
    }
    Err(problem(
        None,
        "no URL= line in an [InternetShortcut] section",
    ))
}

/// Split a line into words: whitespace separates, double quotes group.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if any {
        out.push(word);
    }
    Ok(out)
}

/// The options a source line takes, in the words of `mdlctl add`.
const OPTIONS: &str =
    "dest, sha256, md5, name, priority, revision, include, exclude, option, paused";

/// A list of sources, one per line.
fn parse_list(text: &str, download_dir: &Path) -> Result<Entries, Vec<Problem>> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = Some(i + 1);
        // A `#` starts a comment at the start of a line or after a space (a URL's `#` stays).
        let line = match raw.find(" #").or_else(|| raw.find("\t#")) {
            Some(at) => &raw[..at],
            None => raw,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, download_dir) {
            Ok(request) => entries.push((line_no, request)),
            Err(message) => problems.push(problem(line_no, message)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if entries.is_empty() {
        return Err(vec![problem(None, "no source in the file")]);
    }
    Ok(entries)
}

fn parse_line(line: &str, download_dir: &Path) -> Result<AddRequest, String> {
    let mut words = words(line)?.into_iter();
    let source = words.next().ok_or("no source")?;
    if source.starts_with("--") || source.contains('=') && !source.contains("://") {
        return Err(format!("the line must start with a source, not {source:?}"));
    }
    let mut request = AddRequest {
        source,
        ..Default::default()
    };
    while let Some(word) = words.next() {
        let word = word.trim_start_matches("--").to_string();
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None if word == "paused" => (word, None),
            // `--dest DIR`: the value is the next word.
            None => {
                let value = words
                    .next()
                    .ok_or_else(|| format!("{word} needs a value"))?;
                (word, Some(value))
            }
        };
        let value = value.unwrap_or_default();
        match key.as_str() {
            "dest" => {
                let dir = PathBuf::from(&value);
                let dir = if dir.is_absolute() {
                    dir
                } else {
                    download_dir.join(dir)
                };
                request.dest = Some(dir.display().to_string());
            }
            "sha256" => request.sha256 = Some(value),
            "md5" => request.md5 = Some(value),
            "name" => request.file_name = Some(value),
            "revision" => request.revision = Some(value),
            "include" => request.include.push(value),
            "exclude" => request.exclude.push(value),
            "priority" => {
                request.priority = value
                    .parse()
                    .map_err(|_| format!("priority must be a whole number, got {value:?}"))?
            }
            "option" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("option must be K=V, got {value:?}"))?;
                request.options.push((k.to_string(), v.to_string()));
            }
            "paused" => request.paused = matches!(value.as_str(), "" | "true" | "yes" | "1"),
            other => return Err(format!("unknown option {other:?}; known: {OPTIONS}")),
        }
    }
    Ok(request)
}

/// A name for `path` with `suffix` appended that is not taken yet.
fn free_name(path: &Path, suffix: &str) -> PathBuf {
    let base = path.as_os_str().to_string_lossy().to_string();
    let first = PathBuf::from(format!("{base}{suffix}"));
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| PathBuf::from(format!("{base}.{n}{suffix}")))
        .find(|p| !p.exists())
        .expect("some number is free")
}

/// Read, queue and rename one settled file.
async fn take(services: &Services, path: &Path) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(file = %path.display(), "cannot read a dropped file: {e}");
            return;
        }
    };
    let key = hex::encode(
        Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(&bytes)
            .finalize(),
    );
    let seen = {
        let key = key.clone();
        services.call(move |s| Ok(s.was_dropped(&key)?)).await
    };
    if seen.unwrap_or(false) {
        tracing::info!(file = %path.display(), "queued before; only renaming it");
        finish(services, path, Vec::new()).await;
        return;
    }
    let settings = services.settings.get();
    let problems = match String::from_utf8(bytes) {
        Err(_) => vec![problem(None, "not a UTF-8 text file")],
        Ok(text) => match parse(&name, &text, &settings.download_dir) {
            Err(problems) => problems,
            Ok(entries) => queue(services, &settings, &key, entries).await,
        },
    };
    finish(services, path, problems).await;
}

/// Check every entry, then queue them; returns the problems (none: all queued).
async fn queue(
    services: &Services,
    settings: &Settings,
    key: &str,
    entries: Entries,
) -> Vec<Problem> {
    // Refuse the whole file when any entry is invalid, before queueing anything.
    let refused: Vec<Problem> = entries
        .iter()
        .filter_map(|(line, request)| {
            add::check(settings, &services.sources(), request.clone())
                .err()
                .map(|e| problem(*line, e.message))
        })
        .collect();
    if !refused.is_empty() {
        return refused;
    }
    let mut problems = Vec::new();
    let mut queued = 0;
    for (line, request) in entries {
        let source = request.source.clone();
        match add::add(services, request).await {
            Ok(_) => queued += 1,
            Err(e) => problems.push(problem(line, format!("{source}: {}", e.message))),
        }
    }
    if queued > 0 {
        let key = key.to_string();
        if let Err(e) = services.call(move |s| Ok(s.record_dropped(&key)?)).await {
            tracing::warn!("cannot record a dropped file: {}", e.message);
        }
    }
    problems
}

/// Rename a taken file: `.queued`, or `.invalid` with `.error.txt` beside it.
async fn finish(services: &Services, path: &Path, problems: Vec<Problem>) {
    let shown = path.display().to_string();
    let result = if problems.is_empty() {
        tracing::info!(file = %shown, "dropped file queued");
        std::fs::rename(path, free_name(path, ".queued"))
    } else {
        let mut text = format!(
            "mdld could not queue {}:\n",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        for p in &problems {
            text.push_str(&format!("{p}\n"));
        }
        tracing::warn!(file = %shown, "dropped file refused: {}", problems[0]);
        let invalid = free_name(path, ".invalid");
        let error = PathBuf::from(format!("{}.error.txt", path.as_os_str().to_string_lossy()));
        std::fs::write(&error, text).and_then(|()| std::fs::rename(path, invalid))
    };
    if let Err(e) = result {
        tracing::warn!(file = %shown, "cannot rename a dropped file: {e}");
    }
    let ok = problems.is_empty();
    let _ = services
        .call(move |s| {
            s.report_watch(|w| {
                if ok {
                    w.dropped_queued += 1;
                } else {
                    w.dropped_invalid += 1;
                }
            });
            Ok(())
        })
        .await;
}

/// A file seen in the folder, waiting to settle.
struct Pending {
    stamp: Option<(u64, i64, u128)>,
    since: Instant,
}

/// Size, modification time (seconds) and nanoseconds: finer than the store's stamp, to see a
/// copy that is still growing.
fn fine_stamp(path: &Path) -> Option<(u64, i64, u128)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let (size, secs) = file_stamp(path)?;
    let nanos = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((size, secs, nanos))
}

/// The candidate files in `dir` now.
fn scan(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| is_candidate(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Run the drop folder until `shutdown`, following `watch_dir` as the settings change.
pub async fn run(
    services: Services,
    mut settings: watch::Receiver<Arc<Settings>>,
    shutdown: CancellationToken,
) {
    let mut current: Option<(
        PathBuf,
        DiskWatcher,
        tokio::sync::mpsc::UnboundedReceiver<_>,
    )> = None;
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    let mut configured = false;
    loop {
        if !configured {
            configured = true;
            let now = settings.borrow_and_update().clone();
            let wanted = now.watch_dir.clone();
            if current.as_ref().map(|(d, ..)| d) != wanted.as_ref() {
                pending.clear();
                current = None;
                let mut error = None;
                if let Some(dir) = &wanted {
                    match open(dir, &now) {
                        Ok((disk, rx)) => {
                            tracing::info!(dir = %dir.display(), "watching the drop folder");
                            current = Some((dir.clone(), disk, rx));
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), "cannot watch the drop folder: {e}");
                            error = Some(e);
                        }
                    }
                }
                let shown = wanted.as_ref().map(|d| d.display().to_string());
                let _ = services
                    .call(move |s| {
                        s.report_watch(|w| {
                            w.watch_dir = shown;
                            w.watch_dir_error = error;
                        });
                        Ok(())
                    })
                    .await;
                if let Some((dir, ..)) = &current {
                    note_files(dir, &mut pending);
                }
            }
        }
        let poll = settings.borrow().poll_interval;
        let settle = settings.borrow().watch_settle;
        let tick = if pending.is_empty() {
            poll
        } else {
            Duration::from_millis(100).min(settle)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = settings.changed() => {
                if changed.is_err() {
                    break;
                }
                configured = false;
            }
            Some(_) = async {
                match current.as_mut() {
                    Some((_, _, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((dir, ..)) = &current {
                    note_files(dir, &mut pending);
                }
            }
            _ = tokio::time::sleep(tick) => {
                let Some((dir, ..)) = &current else { continue };
                // A safety net where events are lost: look at the folder at every poll.
                note_files(dir, &mut pending);
                let mut settled = Vec::new();
                pending.retain(|path, p| {
                    let stamp = fine_stamp(path);
                    if stamp.is_none() {
                        return false;
                    }
                    if stamp != p.stamp {
                        p.stamp = stamp;
                        p.since = Instant::now();
                        return true;
                    }
                    if p.since.elapsed() >= settle {
                        settled.push(path.clone());
                        return false;
                    }
                    true
                });
                settled.sort();
                for path in settled {
                    take(&services, &path).await;
                }
            }
        }
    }
}

/// Create (if needed) and watch the folder.
fn open(
    dir: &Path,
    settings: &Settings,
) -> Result<
    (
        DiskWatcher,
        tokio::sync::mpsc::UnboundedReceiver<Vec<super::disk::Change>>,
    ),
    String,
> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (mut disk, rx) = DiskWatcher::new(
        Duration::from_millis(200),
        settings.poll_interval,
        settings.force_poll,
    );
    disk.watch(dir).map_err(|e| e.to_string())?;
    Ok((disk, rx))
}

/// Add the folder's candidate files not seen yet to `pending`.
fn note_files(dir: &Path, pending: &mut HashMap<PathBuf, Pending>) {
    for path in scan(dir) {
        pending.entry(path.clone()).or_insert_with(|| Pending {
            stamp: fine_stamp(&path),
            since: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lists_take_the_words_of_mdlctl_add() {
        let text = "# models\n\nhttps://h.example/a.bin sha256=ABC dest=sub priority=3\nhf://org/m --revision v1 --include \"*.json\" option=layout=comfyui paused  # a comment\nhttps://h.example/x#frag\n";
        let entries = parse("list.txt", text, Path::new("/dl")).unwrap();
        assert_eq!(entries.len(), 3);
        let (line, a) = &entries[0];
        assert_eq!(*line, Some(3));
        assert_eq!(a.dest.as_deref(), Some("/dl/sub"));
        assert_eq!(a.sha256.as_deref(), Some("ABC"));
        assert_eq!(a.priority, 3);
        let (_, b) = &entries[1];
        assert_eq!(b.revision.as_deref(), Some("v1"));
        assert_eq!(b.include, vec!["*.json"]);
        assert_eq!(b.options, vec![("layout".into(), "comfyui".into())]);
        assert!(b.paused);
        assert_eq!(entries[2].1.source, "https://h.example/x#frag");
    }

    #[test]
    fn problems_name_their_line() {
        let text = "https://h.example/a.bin\n\nhttps://h.example/b.bin colour=red\nhttps://h.example/c.bin priority=high\n";
        let problems = parse("list", text, Path::new("/dl")).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].line, Some(3));
        assert!(problems[0]
            .to_string()
            .contains("unknown option \"colour\""));
        assert_eq!(problems[1].line, Some(4));
        let toml = "[[models]]\nname = \"a\"\nfiles = 3\n";
        let problems = parse("m.toml", toml, Path::new("/dl")).unwrap_err();
        assert_eq!(problems[0].line, Some(3), "{}", problems[0]);
    }

    #[test]
    fn shortcuts_and_names() {
        let (_, r) = parse(
            "x.url",
            "[InternetShortcut]\r\nURL=https://h.example/m.bin\r\n",
            Path::new("/"),
        )
        .unwrap()
        .remove(0);
        assert_eq!(r.source, "https://h.example/m.bin");
        assert!(parse("x.url", "[Other]\nURL=x\n", Path::new("/")).is_err());
        assert!(is_candidate("models.toml"));
        for skip in [
            ".hidden",
            "a.queued",
            "a.invalid",
            "a.error.txt",
            "a.crdownload",
            "a~",
        ] {
            assert!(!is_candidate(skip), "{skip}");
        }
    }
}
