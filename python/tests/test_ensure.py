"""ensure(): queue only what is missing or damaged, return the local paths."""

from __future__ import annotations

from pathlib import Path

import pytest

import mdl
from conftest import Daemon, Mocks, sha256_of


def test_ensure_fetches_skips_present_and_refetches_damaged(daemon: Daemon, mocks: Mocks) -> None:
    a = mocks.file("/reg/base/a.bin")
    b = mocks.file("/reg/base/b.bin")
    vae = mocks.file("/reg/other/vae.bin")
    single = mocks.file("/reg/single.safetensors")
    registry = [
        {
            "id": "pair",
            "url": mocks.url("/reg/base/"),
            "files": ["a.bin", "b.bin"],
            # The second checksum is an md5 (32 hex digits).
            "sha256": [a["sha256"], b["md5"]],
            "save_dir": daemon.root / "models" / "pair",
            "save_as": ["first.bin", "second.bin"],
            "additional_urls": [{"url": vae["url"], "sha256": vae["sha256"]}],
        },
        mdl.ModelSpec(
            id="single",
            url=single["url"],
            sha256=single["sha256"],
            save_dir=str(daemon.root / "models" / "single"),
        ),
    ]
    client = daemon.client()
    progress: list = []
    paths = client.ensure(registry, on_progress=progress.append)
    pair_dir = daemon.root / "models" / "pair"
    assert paths == {
        "pair": [pair_dir / "first.bin", pair_dir / "second.bin", pair_dir / "vae.bin"],
        "single": [daemon.root / "models" / "single" / "single.safetensors"],
    }
    assert sha256_of(pair_dir / "first.bin") == a["sha256"]
    assert sha256_of(pair_dir / "second.bin") == b["sha256"]
    assert sha256_of(pair_dir / "vae.bin") == vae["sha256"]
    assert len(client.jobs()) == 4

    # Everything present: nothing is queued, not even a request to the daemon's queue.
    client.remove(finished=True)
    assert mdl.ensure(registry, client=client) == paths
    assert client.jobs() == []

    # A damaged file (one the daemon once completed, and one it never saw) is fetched again.
    client2 = daemon.client()
    (pair_dir / "second.bin").write_bytes(b"broken")
    paths_again = client2.ensure(registry)
    assert paths_again == paths
    assert sha256_of(pair_dir / "second.bin") == b["sha256"]
    assert [j.source for j in client2.jobs()] == [mocks.url("/reg/base/b.bin")]


def test_ensure_refetches_a_file_the_daemon_believes_complete(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/reg/kept.bin")
    spec = {"id": "k", "url": served["url"], "sha256": served["sha256"], "save_dir": daemon.downloads}
    client = daemon.client()
    (path,) = client.ensure([spec])["k"]
    # Same size, different bytes: the daemon's record still says "complete".
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    assert client.ensure([spec]) == {"k": [path]}
    assert sha256_of(path) == served["sha256"]


def test_ensure_raises_the_typed_error_of_a_failed_file(daemon: Daemon, mocks: Mocks) -> None:
    spec = {"id": "gone", "url": mocks.url("/reg/nowhere.bin"), "sha256": "1" * 64, "save_dir": daemon.downloads}
    with pytest.raises(mdl.NotFoundError):
        daemon.client().ensure([spec])


def test_malformed_specs_are_invalid_requests(tmp_path: Path) -> None:
    client = mdl.Client(str(tmp_path / "unused.sock"), autostart=False)
    bad = [
        {"id": "x", "url": "https://h/x.bin", "sha256": "abc", "save_dir": tmp_path},
        {"id": "x", "url": "https://h/", "files": ["a", "b"], "sha256": ["0" * 64], "save_dir": tmp_path},
        {"id": "x", "url": "https://h/x.bin", "save_as": ["../x"], "save_dir": tmp_path, "files": ["x"]},
        {"id": "x", "url": "https://h/x.bin"},
    ]
    for spec in bad:
        with pytest.raises(mdl.InvalidRequestError):
            client.ensure([spec])
