//! The testkit's mock servers as a process, for tests written in other languages (the Python
//! package's pytest suite).
//!
//! ```text
//! cargo run -p testkit --example serve_mocks
//! ```
//!
//! Starts the fault-injecting file server and the Hugging Face mock (Hub and CDN) on
//! `127.0.0.1:0`, prints one JSON line `{"file_server": URL, "hf_endpoint": URL}` on stdout,
//! then reads one JSON command per line on stdin and answers each with one JSON line. It exits
//! when stdin closes, so it never outlives the test process that started it.
//!
//! Commands (`op` picks one):
//!
//! * `{"op":"file","path":"/a.bin","size":N,"seed":S}`: serve N pseudo-random bytes at `path`;
//!   answers `{"url","sha256","md5","size"}`.
//! * `{"op":"fault","path":"/a.bin","status":401,"count":N,"headers":[["Retry-After","0"]]}`:
//!   answer the next N requests to `path` with that status; answers `{"ok":true}`.
//! * `{"op":"throttle","path":"/a.bin","bytes_per_sec":N}`: send that file's body at most this
//!   fast; answers `{"ok":true}`.
//! * `{"op":"hf_repo","id":"acme/tiny","kind":"model","files":[{"path":"config.json",
//!   "text":"{}"},{"path":"model.safetensors","size":N,"seed":S}]}`: add a repository (a file
//!   with `text` is a regular git file, one with `size` an LFS file); answers `{"commit",
//!   "files":[{"path","sha256","size"}]}`.
//!
//! A command that cannot be carried out answers `{"error": MESSAGE}`.

use serde_json::{json, Value};
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo, RepoKind};
use testkit::{md5_hex, pseudo_random_bytes, Behavior, Fault, FileServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let files = FileServer::start().await;
    let hf = HfMock::start().await;
    let mut out = tokio::io::stdout();
    let hello = json!({"file_server": files.url("/"), "hf_endpoint": hf.endpoint()});
    out.write_all(format!("{hello}\n").as_bytes()).await?;
    out.flush().await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(command) => run(&files, &hf, &command).unwrap_or_else(|e| json!({"error": e})),
            Err(e) => json!({"error": format!("not JSON: {e}")}),
        };
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// Carry out one command.
fn run(files: &FileServer, hf: &HfMock, command: &Value) -> Result<Value, String> {
    let str_of = |key: &str| {
        command[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("missing string {key:?}"))
    };
    let u64_of = |key: &str| {
        command[key]
            .as_u64()
            .ok_or_else(|| format!("missing number {key:?}"))
    };
    match command["op"].as_str().unwrap_or_default() {
        "file" => {
            let body = pseudo_random_bytes(u64_of("size")? as usize, u64_of("seed").unwrap_or(1));
            let md5 = md5_hex(&body);
            let served = files.add(&str_of("path")?, body);
            Ok(json!({"url": served.url, "sha256": served.sha256, "md5": md5, "size": served.len}))
        }
        "fault" => {
            let code = u64_of("status")? as u16;
            let headers: Vec<(String, String)> = command["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pair| Some((pair[0].as_str()?.into(), pair[1].as_str()?.into())))
                .collect();
            let fault = Fault::Status {
                code,
                headers,
                body: format!("mock status {code}"),
            };
            let count = u64_of("count").unwrap_or(1000) as usize;
            files.push_faults(&str_of("path")?, std::iter::repeat_n(fault, count));
            Ok(json!({"ok": true}))
        }
        "throttle" => {
            let path = str_of("path")?;
            let behavior = Behavior {
                rate_limit_bytes_per_sec: command["bytes_per_sec"].as_u64(),
                ..files.behavior(&path)
            };
            files.set_behavior(&path, behavior);
            Ok(json!({"ok": true}))
        }
        "hf_repo" => {
            let id = str_of("id")?;
            let kind = match command["kind"].as_str().unwrap_or("model") {
                "model" => RepoKind::Model,
                "dataset" => RepoKind::Dataset,
                "space" => RepoKind::Space,
                other => return Err(format!("unknown repository kind {other:?}")),
            };
            let mut listed = Vec::new();
            for (i, file) in command["files"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let path = file["path"].as_str().ok_or("a file without \"path\"")?;
                listed.push(match (file["text"].as_str(), file["size"].as_u64()) {
                    (Some(text), _) => HfFile::regular(path, text.to_string()),
                    (None, Some(size)) => HfFile::lfs(
                        path,
                        pseudo_random_bytes(
                            size as usize,
                            file["seed"].as_u64().unwrap_or(i as u64),
                        ),
                    ),
                    _ => return Err(format!("file {path:?} needs \"text\" or \"size\"")),
                });
            }
            let report: Vec<Value> = listed
                .iter()
                .map(|f| json!({"path": f.path, "sha256": f.sha256(), "size": f.size()}))
                .collect();
            let repo = HfRepo::new(kind, id).with_files(listed);
            let commit = repo
                .commit_sha("main")
                .ok_or("the repository has no main")?;
            hf.add_repo(repo);
            Ok(json!({"commit": commit, "files": report}))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}
