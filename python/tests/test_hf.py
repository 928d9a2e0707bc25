"""snapshot_download / hf_hub_download through the daemon, then the real huggingface_hub
finds the files offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import mdl
from conftest import Daemon, Mocks, sha256_of

KIB = 1024


def _repo(mocks: Mocks, repo_id: str, kind: str = "model") -> Dict[str, Any]:
    return mocks.cmd(
        op="hf_repo",
        id=repo_id,
        kind=kind,
        files=[
            {"path": ".gitattributes", "text": "*.safetensors filter=lfs\n"},
            {"path": "config.json", "text": '{"hidden": 8}\n'},
            {"path": "onnx/model.onnx", "size": 40 * KIB, "seed": 3},
            {"path": "model.safetensors", "size": 300 * KIB, "seed": 4},
        ],
    )


def _offline(script: str, *args: str) -> Any:
    """Run ``script`` with the real huggingface_hub, offline; return its last stdout line."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def hf_env(mocks: Mocks, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    # Forwarded with every add, exactly like mdlctl does.
    monkeypatch.setenv("HF_ENDPOINT", mocks.hf_endpoint)


def test_snapshot_download_is_found_offline(daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path) -> None:
    repo = _repo(mocks, "acme/snap")
    cache = tmp_path / "hf-cache"
    client = daemon.client()
    path = mdl.snapshot_download("acme/snap", cache_dir=cache, client=client)
    assert path == str(cache / "models--acme--snap" / "snapshots" / repo["commit"])
    for f in repo["files"]:
        assert sha256_of(Path(path) / f["path"]) == f["sha256"]
    found = _offline(
        "import json, sys; from huggingface_hub import snapshot_download, hf_hub_download\n"
        "d = snapshot_download('acme/snap', cache_dir=sys.argv[1], local_files_only=True)\n"
        "f = hf_hub_download('acme/snap', 'onnx/model.onnx', cache_dir=sys.argv[1], local_files_only=True)\n"
        "print(json.dumps([d, f]))",
        str(cache),
    )
    assert found == [path, os.path.join(path, "onnx", "model.onnx")]


def test_hf_hub_download_uses_the_forwarded_cache(
    daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(mocks, "acme/one")
    cache = tmp_path / "from-env"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    client = daemon.client()
    path = client.hf_hub_download("acme/one", "model.onnx", subfolder="onnx")
    assert path == str(cache / "models--acme--one" / "snapshots" / repo["commit"] / "onnx" / "model.onnx")
    found = _offline(
        "import json; from huggingface_hub import hf_hub_download\n"
        "print(json.dumps(hf_hub_download('acme/one', 'onnx/model.onnx', local_files_only=True)))"
    )
    assert found == path
    # Only that file was fetched.
    assert not (Path(path).parents[1] / "model.safetensors").exists()


def test_patterns_local_dir_and_datasets(daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path) -> None:
    _repo(mocks, "acme/data", kind="dataset")
    client = daemon.client()
    out = mdl.snapshot_download(
        "acme/data",
        repo_type="dataset",
        allow_patterns=["*.json", "onnx/*"],
        ignore_patterns="*.onnx",
        local_dir=tmp_path / "local",
        client=client,
    )
    assert out == str(tmp_path / "local")
    got = sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file())
    assert got == ["config.json"]
    with pytest.raises(ValueError):
        mdl.snapshot_download("acme/data", repo_type="bucket", client=client)


def test_missing_repositories_and_files_raise_typed_errors(
    daemon: Daemon, mocks: Mocks, hf_env: None, tmp_path: Path
) -> None:
    client = daemon.client()
    # Like the real Hub, an unknown repository looks private without a token: an auth error.
    with pytest.raises(mdl.AuthError, match="HF_TOKEN"):
        mdl.snapshot_download("acme/nothing-here", cache_dir=tmp_path, client=client)
    _repo(mocks, "acme/has")
    with pytest.raises(mdl.NotFoundError):
        mdl.hf_hub_download("acme/has", "nope.bin", cache_dir=tmp_path, client=client)
