//! File names from servers: `Content-Disposition` (RFC 6266, with RFC 5987 `filename*=`) or the
//! URL path, made safe so that a server can never make us write outside the destination.

use std::path::{Path, PathBuf};

use mdl_protocol::ErrorKind;
use percent_encoding::percent_decode_str;

use super::FetchError;

/// The longest file name we produce, in bytes (most filesystems allow 255).
const MAX_NAME_BYTES: usize = 200;

/// The file name a `Content-Disposition` header gives, preferring `filename*=` (RFC 5987) over
/// `filename=`. Returns the raw name; pass it through [`sanitize_file_name`].
pub fn content_disposition_name(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(header).into_iter().skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "filename*" => extended = decode_ext_value(value),
            "filename" => plain = Some(unquote(value)),
            _ => {}
        }
    }
    extended.or(plain).filter(|n| !n.is_empty())
}

/// Split a header at `;` outside quoted strings.
fn split_params(header: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in header.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let inner = &value[1..value.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        value.to_string()
    }
}

/// Decode an RFC 5987 ext-value: `charset'lang'percent-encoded`.
fn decode_ext_value(value: &str) -> Option<String> {
    let value = unquote(value);
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    match charset.as_str() {
        "utf-8" | "" => String::from_utf8(bytes).ok(),
        "iso-8859-1" => Some(bytes.iter().map(|&b| b as char).collect()),
        _ => None,
    }
}

/// The last non-empty path segment of a URL, percent-decoded.
pub fn url_file_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let segment = parsed
        .path_segments()?
        .rfind(|s| !s.is_empty())?
        .to_string();
    let decoded = percent_decode_str(&segment).decode_utf8_lossy().to_string();
    Some(decoded).filter(|s| !s.is_empty())
}

/// Make a server-supplied name safe to use as one path component inside the destination:
/// only its last component is kept (both `/` and `\` separate), control characters and
/// characters Windows forbids become `_`, leading dots are stripped (no hidden files, no `..`),
/// and the length is capped. Returns `None` when nothing usable is left.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last
        .chars()
        .map(|c| match c {
            c if c.is_control() => '_',
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    name = name
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .to_string();
    if name.is_empty() {
        return None;
    }
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    let upper = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = [
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "LPT1", "LPT2", "LPT3",
    ];
    if reserved.contains(&upper.as_str()) {
        name.insert(0, '_');
    }
    Some(name)
}

/// Make a relative path from a hub (e.g. `unet/diffusion_model.safetensors`) safe: every
/// component is sanitized and `.`/`..`/empty components are refused. Leading dots of a
/// component are kept (hub repos hold `.gitattributes`, and cache layouts must mirror repo
/// paths exactly). Returns `None` when the path would escape or is empty.
pub fn sanitize_relative_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in raw.split(['/', '\\']) {
        if component.is_empty() || component == "." {
            continue;
        }
        if component == ".." {
            return None;
        }
        let dots = component.len() - component.trim_start_matches('.').len();
        let name = sanitize_file_name(component)?;
        parts.push(format!("{}{name}", &component[..dots]));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// The longest relative path a hub may list, in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// The longest path component a hub may list, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;

/// Check a path from a hub's file list (`unet/model.safetensors`) without changing it: the
/// path is stored and used as it is, so anything that could reach outside the destination or
/// that some platform cannot hold is refused with the reason. Refused: empty paths, absolute
/// paths (`/x`, `\\x`, `C:x`), empty, `.` and `..` components, NUL and other control
/// characters, names Windows reserves (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`,
/// `LPT1`–`LPT9`, `CONIN$`, `CONOUT$`, with any extension), names ending in a dot or a space,
/// names like mdl's own partial files (`.mdl-…`), and over-long components or paths.
pub fn checked_repo_path(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(format!("path longer than {MAX_PATH_BYTES} bytes"));
    }
    if raw.chars().any(char::is_control) {
        return Err("control character in the path".into());
    }
    let bytes = raw.as_bytes();
    if raw.starts_with(['/', '\\']) || (bytes.len() >= 2 && bytes[1] == b':') {
        return Err("absolute path".into());
    }
    for component in raw.split(['/', '\\']) {
        match component {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("{component:?} component")),
            _ => {}
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "a component longer than {MAX_COMPONENT_BYTES} bytes"
            ));
        }
        if component.ends_with(['.', ' ']) {
            return Err(format!("{component:?} ends with a dot or a space"));
        }
        if is_windows_reserved(component) {
            return Err(format!("{component:?} is a name Windows reserves"));
        }
        if component.starts_with(".mdl-") {
            return Err(format!(
                "{component:?} is named like mdl's own partial files"
            ));
        }
    }
    Ok(raw.to_string())
}

/// Whether `name` (with any extension) is a device name on Windows.
fn is_windows_reserved(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.len() == 4
        && stem.as_bytes()[3].is_ascii_digit()
        && stem.as_bytes()[3] != b'0')
}

/// The file name for a download: the `Content-Disposition` name, else the URL's last path
/// segment, else `download`; always sanitized.
pub fn choose_file_name(content_disposition: Option<&str>, url: &str) -> String {
    content_disposition
        .and_then(content_disposition_name)
        .and_then(|n| sanitize_file_name(&n))
        .or_else(|| url_file_name(url).and_then(|n| sanitize_file_name(&n)))
        .unwrap_or_else(|| "download".to_string())
}

/// Join a sanitized relative path to the destination, refusing anything that would escape it.
pub fn safe_join(dest_dir: &Path, rel: &str) -> Result<PathBuf, FetchError> {
    let clean = sanitize_relative_path(rel).ok_or_else(|| {
        FetchError::failed(
            ErrorKind::Fatal,
            format!("refusing unsafe file path {rel:?}"),
        )
    })?;
    let joined = dest_dir.join(&clean);
    if !joined.starts_with(dest_dir) {
        return Err(FetchError::failed(
            ErrorKind::Fatal,
            format!("refusing unsafe file path {rel:?}"),
        ));
    }
    if let Some(outside) = leaves_through_a_link(dest_dir, &joined) {
        return Err(FetchError::failed(
            ErrorKind::Fatal,
            format!(
                "refusing {rel:?}: {} is a link that leads out of the destination {}",
                outside.display(),
                dest_dir.display()
            ),
        ));
    }
    Ok(joined)
}

/// The first directory between `dest_dir` and `path` that is a symlink leading outside
/// `dest_dir`, if any: creating parents, renaming into or deleting below it would act outside
/// the destination. Missing directories are fine (they will be created as real ones); a link
/// that stays inside the destination is fine too. The final component itself is not checked:
/// replacing or deleting a link never touches its target.
pub fn leaves_through_a_link(dest_dir: &Path, path: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(dest_dir).ok()?;
    let rel = path.strip_prefix(dest_dir).ok()?;
    let mut current = dest_dir.to_path_buf();
    let mut components: Vec<_> = rel.components().collect();
    components.pop();
    for component in components {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let inside = std::fs::canonicalize(&current).is_ok_and(|t| t.starts_with(&root));
                if !inside {
                    return Some(current);
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The path of `target` relative to the directory `from` (both absolute).
pub fn relative_path(from: &Path, target: &Path) -> Option<PathBuf> {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part.as_os_str());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_symlinked_directory_out_of_the_destination_is_refused() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("out")).unwrap();
        std::fs::create_dir(dest.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dest.path().join("real"), dest.path().join("in")).unwrap();
        let err = safe_join(dest.path(), "out/x.bin").unwrap_err();
        assert!(
            err.to_string().contains("leads out of the destination"),
            "{err}"
        );
        assert!(safe_join(dest.path(), "out/deeper/x.bin").is_err());
        assert!(safe_join(dest.path(), "in/x.bin").is_ok());
        assert!(safe_join(dest.path(), "new/dir/x.bin").is_ok());
        // The last component may be a link (a snapshot entry): replacing it is safe.
        assert!(safe_join(dest.path(), "out").is_ok());
    }

    #[test]
    fn repo_paths_that_could_escape_or_not_exist_everywhere_are_refused() {
        for ok in [
            "a.bin",
            "unet/model.safetensors",
            ".gitattributes",
            "a b/c.d",
        ] {
            assert_eq!(checked_repo_path(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "/home/u/.bashrc",
            "\\\\server\\x",
            "C:x",
            "a/../../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "CON",
            "con.txt",
            "dir/COM1.bin",
            "LPT9",
            "CONIN$",
            "name.",
            "name ",
            ".mdl-1-0.part",
            "sub/.mdl-7-3.written",
        ] {
            assert!(checked_repo_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(checked_repo_path("COM0").is_ok());
        assert!(checked_repo_path(&"a".repeat(256)).is_err());
        assert!(checked_repo_path(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn plain_and_quoted_filenames() {
        assert_eq!(
            content_disposition_name("attachment; filename=model.bin").as_deref(),
            Some("model.bin")
        );
        assert_eq!(
            content_disposition_name(r#"attachment; filename="my \"model\".bin""#).as_deref(),
            Some(r#"my "model".bin"#)
        );
        assert_eq!(
            content_disposition_name(r#"attachment; filename="a;b.bin"; size=3"#).as_deref(),
            Some("a;b.bin")
        );
    }

    #[test]
    fn rfc5987_wins_over_plain() {
        let header =
            r#"attachment; filename="fallback.bin"; filename*=UTF-8''mod%C3%A8le%20v2.safetensors"#;
        assert_eq!(
            content_disposition_name(header).as_deref(),
            Some("modèle v2.safetensors")
        );
        let only_ext = "attachment; filename*=utf-8'en'na%C3%AFve.ckpt";
        assert_eq!(
            content_disposition_name(only_ext).as_deref(),
            Some("naïve.ckpt")
        );
        let latin1 = "attachment; filename*=iso-8859-1''caf%E9.bin";
        assert_eq!(
            content_disposition_name(latin1).as_deref(),
            Some("café.bin")
        );
    }

    #[test]
    fn traversal_never_escapes() {
        assert_eq!(
            choose_file_name(Some(r#"attachment; filename="../../x""#), "http://h/f"),
            "x"
        );
        assert_eq!(
            choose_file_name(
                Some("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd"),
                "http://h/f"
            ),
            "passwd"
        );
        assert_eq!(
            choose_file_name(Some(r#"attachment; filename="..""#), "http://h/a.bin"),
            "a.bin"
        );
        assert_eq!(
            choose_file_name(
                Some(r#"attachment; filename="C:\\Windows\\evil.dll""#),
                "http://h/"
            ),
            "evil.dll"
        );
        assert_eq!(choose_file_name(None, "http://h/"), "download");
        assert_eq!(
            choose_file_name(None, "http://h/dir/w%20x.bin?q=1"),
            "w x.bin"
        );
        assert_eq!(sanitize_file_name(".hidden").as_deref(), Some("hidden"));
        assert_eq!(sanitize_file_name("a\u{0}b\nc").as_deref(), Some("a_b_c"));
        assert_eq!(sanitize_file_name("CON.txt").as_deref(), Some("_CON.txt"));
        assert!(sanitize_file_name(&"é".repeat(300)).unwrap().len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn relative_paths_are_checked_per_component() {
        assert_eq!(
            sanitize_relative_path("unet/model.bin").as_deref(),
            Some("unet/model.bin")
        );
        assert_eq!(sanitize_relative_path("./a//b").as_deref(), Some("a/b"));
        assert_eq!(sanitize_relative_path("a/../../b"), None);
        assert_eq!(sanitize_relative_path("/"), None);
        assert_eq!(
            sanitize_relative_path("a/.gitattributes").as_deref(),
            Some("a/.gitattributes")
        );
        assert_eq!(sanitize_relative_path("a/..."), None);
    }
}
