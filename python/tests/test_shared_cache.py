"""One Hugging Face cache shared by the real ``huggingface_hub`` and mdl at the same time:
both take ``huggingface_hub``'s per-blob lock (``.locks/<repo folder>/<etag>.lock``), and
both end with correct files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import pytest

import mdl
from conftest import Daemon, Mocks, sha256_of

KIB = 1024


def _repo(mocks: Mocks, repo_id: str) -> Dict[str, Any]:
    return mocks.cmd(
        op="hf_repo",
        id=repo_id,
        kind="model",
        files=[
            {"path": "config.json", "text": '{"hidden": 8}\n'},
            {"path": "a.safetensors", "size": 600 * KIB, "seed": 41},
            {"path": "b.safetensors", "size": 700 * KIB, "seed": 42},
            {"path": "sub/c.bin", "size": 300 * KIB, "seed": 43},
        ],
    )


def _check(snapshot: Path, repo: Dict[str, Any]) -> None:
    for f in repo["files"]:
        assert sha256_of(snapshot / f["path"]) == f["sha256"], f["path"]


@pytest.fixture
def hf_env(mocks: Mocks, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_ENDPOINT", mocks.hf_endpoint)


def test_huggingface_hub_and_mdl_download_into_one_cache_at_once(
    daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path
) -> None:
    repo = _repo(mocks, "acme/shared")
    cache = tmp_path / "cache"
    script = (
        "import sys; from huggingface_hub import snapshot_download\n"
        "print(snapshot_download('acme/shared', cache_dir=sys.argv[1]))"
    )
    env = dict(os.environ, HF_ENDPOINT=mocks.hf_endpoint, HF_HUB_DISABLE_XET="1")
    hub = subprocess.Popen(
        [sys.executable, "-c", script, str(cache)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ours = mdl.snapshot_download("acme/shared", cache_dir=cache, client=daemon.client())
    out, err = hub.communicate(timeout=120)
    assert hub.returncode == 0, err
    theirs = out.strip().splitlines()[-1]
    assert ours == theirs == str(cache / "models--acme--shared" / "snapshots" / repo["commit"])
    _check(Path(ours), repo)
    # The lock files both used, and the cache's tag.
    locks = cache / ".locks" / "models--acme--shared"
    for f in repo["files"]:
        if f["path"].endswith((".safetensors", ".bin")):
            assert (locks / f"{f['sha256']}.lock").is_file(), sorted(p.name for p in locks.iterdir())
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_mdl_waits_for_the_lock_huggingface_hub_holds(
    daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path
) -> None:
    """While ``filelock`` (what huggingface_hub uses) holds a blob's lock, mdl does not move
    that blob into place; once it is released, mdl finishes."""
    repo = _repo(mocks, "acme/locked")
    cache = tmp_path / "cache"
    blob = next(f for f in repo["files"] if f["path"] == "a.safetensors")
    lock_path = cache / ".locks" / "models--acme--locked" / f"{blob['sha256']}.lock"
    lock_path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock\n"
            "with FileLock(sys.argv[1]):\n"
            "    print('held', flush=True); sys.stdin.readline()",
            str(lock_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    client = daemon.client()
    result: Dict[str, str] = {}
    worker = threading.Thread(
        target=lambda: result.update(path=mdl.snapshot_download("acme/locked", cache_dir=cache, client=client))
    )
    worker.start()
    blob_path = cache / "models--acme--locked" / "blobs" / blob["sha256"]
    time.sleep(2.0)
    assert not blob_path.exists(), "mdl wrote the blob while huggingface_hub held its lock"
    assert worker.is_alive()
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=10)
    worker.join(timeout=60)
    assert not worker.is_alive()
    _check(Path(result["path"]), repo)
