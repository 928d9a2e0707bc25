//! The real `modelscope` SDK finds what mdl wrote into the ModelScope cache, offline.
//!
//! The daemon downloads a model from the ModelScope mock into a cache; then the real SDK
//! (`modelscope` in `target/modelscope-venv`, which `scripts/test.sh` installs) runs in a
//! Python subprocess whose endpoint is a closed loopback port and whose sockets refuse every
//! connection: `snapshot_download(..., local_files_only=True)` (the SDK has no offline
//! variable; `local_files_only` is its offline mode) returns the model folder with
//! the right files, the index files unpickle to exactly what the SDK's `pickle.dump` writes, and
//! the SDK's own cache class answers as `modelscope` ≤ 1.37 asks (`.msc` not empty for
//! `local_files_only`, every listed file "already cached" for an online run, so nothing is
//! fetched again), and its cache scanner names the model and its revision.
//!
//! Without the venv the test skips with the reason; under `CI=true` it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::external::skip_unless_ci;
use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, JobState};
use testkit::daemon::TestDaemon;
use testkit::hubs::modelscope::{MsFile, MsMock, MsModel};
use testkit::pseudo_random_bytes;

/// The venv's Python: `MDL_MODELSCOPE_PYTHON`, else `target/modelscope-venv/bin/python`.
fn sdk_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MDL_MODELSCOPE_PYTHON").map(PathBuf::from) {
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/modelscope-venv/bin/python");
    venv.is_file().then_some(venv)
}

/// Phase 1 asks the mock for the file list as `modelscope` ≤ 1.37's `get_model_files` does
/// (what an online run of it compares the cache with). Phase 2 runs with every socket
/// refusing to connect.
const SCRIPT: &str = r#"
import hashlib, json, os, pickle, socket, sys

cfg = json.load(open(sys.argv[1]))
owner, name = cfg["model_id"].split("/")
import requests
answer = requests.get(cfg["mock"] + "/api/v1/models/" + cfg["model_id"] + "/repo/files",
                      params={"Revision": "master", "Recursive": "True"}, timeout=30)
answer.raise_for_status()
listing = [f for f in answer.json()["Data"]["Files"] if f["Type"] != "tree"]

attempts = []
def refuse(self, address, *args, **kwargs):
    attempts.append(repr(address))
    raise OSError("the test forbids connections: %r" % (address,))
socket.socket.connect = refuse
socket.socket.connect_ex = refuse

import modelscope
from modelscope.hub.snapshot_download import snapshot_download
from modelscope.hub.utils.caching import ModelFileSystemCache
from modelscope.hub.cache_manager import scan_cache_dir

out = {"version": modelscope.__version__}
path = snapshot_download(cfg["model_id"], cache_dir=cfg["cache"], local_files_only=True)
out["path"] = str(path)
out["files"] = {
    f["Path"]: hashlib.sha256(open(os.path.join(path, f["Path"]), "rb").read()).hexdigest()
    == f["Sha256"] for f in listing}
raw = lambda n: open(os.path.join(path, n), "rb").read()
entries = [{"Path": f["Path"], "Revision": f["Revision"]}
           for f in sorted(listing, key=lambda f: f["Path"])]
out["mdl_exact"] = pickle.loads(raw(".mdl")) == {"id": owner + "/" + name.replace(".", "___")}
out["msc_exact"] = sorted(pickle.loads(raw(".msc")), key=lambda e: e["Path"]) == entries
out["mv"] = raw(".mv").decode()

# modelscope <= 1.37: ModelFileSystemCache(<cache>/models, owner, name with ___).
legacy = ModelFileSystemCache(os.path.join(cfg["cache"], "models"), owner, name.replace(".", "___"))
out["legacy_root"] = legacy.get_root_location()
out["legacy_cached"] = len(legacy.cached_files)
out["legacy_would_skip"] = {f["Path"]: legacy.exists(f) for f in listing}
out["legacy_model_id"] = ModelFileSystemCache(path).get_model_id()

scan = scan_cache_dir(cfg["cache"])
out["scan"] = sorted(
    [r.repo_id, r.nb_files, sorted(v.commit_hash for v in r.revisions)] for r in scan.repos)
out["dotted_link"] = os.path.realpath(os.path.join(cfg["cache"], "models", owner, name))
out["attempts"] = attempts
print(json.dumps(out))
"#;

#[tokio::test]
async fn the_modelscope_sdk_finds_the_download_offline() {
    let Some(python) = sdk_python() else {
        return skip_unless_ci(
            "modelscope SDK",
            "the modelscope venv (target/modelscope-venv) is not installed",
        );
    };
    let mock = MsMock::start().await;
    mock.add_model(MsModel::new("acme/tiny.v2").with_files(vec![
        MsFile::new("configuration.json", "{\"framework\": \"pytorch\"}\n"),
        MsFile::lfs("onnx/model.onnx", pseudo_random_bytes(200 * 1024, 4)),
        MsFile::lfs("weights.bin", pseudo_random_bytes(100 * 1024, 5)),
    ]));
    let daemon = TestDaemon::start().await;
    let cache = daemon.downloads.join("modelscope");
    let mut client = daemon.client().await;
    let job = client
        .add(AddRequest {
            source: "ms://acme/tiny.v2".into(),
            env: env(&[
                ("MODELSCOPE_ENDPOINT", &mock.endpoint()),
                ("MODELSCOPE_CACHE", &cache.display().to_string()),
            ]),
            ..Default::default()
        })
        .await
        .expect("add")
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");

    // A port nothing listens on, as the SDK's endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "model_id": "acme/tiny.v2",
            "cache": cache,
            "mock": mock.endpoint(),
        })
        .to_string(),
    )
    .unwrap();
    // The mock runs on this test's runtime: the SDK runs on a blocking thread.
    let mut command = Command::new(&python);
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work.path())
        .env("MODELSCOPE_CACHE", &cache)
        .env("MODELSCOPE_ENDPOINT", format!("http://127.0.0.1:{closed}"))
        .env("MODELSCOPE_DOMAIN", format!("127.0.0.1:{closed}"));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the modelscope SDK");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let out: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("modelscope {}", out["version"]);

    let model_dir = std::path::absolute(cache.join("models/acme/tiny___v2")).unwrap();
    assert_eq!(out["path"], model_dir.display().to_string(), "{out:#}");
    let files = out["files"].as_object().expect("files");
    assert_eq!(
        files.len(),
        4,
        "the three files and .gitattributes: {out:#}"
    );
    assert!(files.values().all(|ok| ok == true), "{out:#}");
    assert_eq!(out["mdl_exact"], true, "{out:#}");
    assert_eq!(out["msc_exact"], true, "{out:#}");
    assert!(
        out["mv"]
            .as_str()
            .is_some_and(|mv| mv.starts_with("Revision:master,CreatedAt:")),
        "{out:#}"
    );
    assert_eq!(out["legacy_root"], out["path"], "{out:#}");
    assert_eq!(out["legacy_cached"], 4, "{out:#}");
    let skip = out["legacy_would_skip"].as_object().expect("skips");
    assert!(
        skip.len() == 4 && skip.values().all(|s| s == true),
        "{out:#}"
    );
    assert_eq!(out["legacy_model_id"], "acme/tiny___v2", "{out:#}");
    assert_eq!(
        out["scan"],
        serde_json::json!([["acme/tiny.v2", 4, ["master"]]]),
        "{out:#}"
    );
    assert_eq!(out["dotted_link"], model_dir.display().to_string());
    assert_eq!(out["attempts"], serde_json::json!([]), "{out:#}");
}
