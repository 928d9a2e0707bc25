"""A typed error per error kind, from wait() on a failed job and from replies."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Type

import pytest

import mdl
from conftest import Daemon, Mocks


def _wait_raises(daemon: Daemon, url: str, cls: Type[mdl.MdlError], kind: str, **add: str) -> mdl.MdlError:
    client = daemon.client()
    job = client.add(url, dest=daemon.downloads, **add)  # type: ignore[arg-type]
    with pytest.raises(cls) as caught:
        client.wait(job, timeout=20)
    err = caught.value
    assert err.kind == kind, err
    assert err.job is not None and err.job.error is not None and err.job.error.kind == kind
    assert [j.id for j in err.jobs] == [err.job.id]
    return err


def test_auth(daemon: Daemon, mocks: Mocks) -> None:
    mocks.file("/err/auth.bin")
    mocks.cmd(op="fault", path="/err/auth.bin", status=401, count=50)
    err = _wait_raises(daemon, mocks.url("/err/auth.bin"), mdl.AuthError, "auth")
    assert err.exit_code == 3


def test_not_found(daemon: Daemon, mocks: Mocks) -> None:
    _wait_raises(daemon, mocks.url("/err/missing.bin"), mdl.NotFoundError, "not_found")


def test_integrity(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/err/bad.bin")
    err = _wait_raises(daemon, served["url"], mdl.IntegrityError, "integrity", sha256="0" * 64)
    assert not (daemon.downloads / "bad.bin").exists(), "nothing at the final path"


def test_rate_limited(daemon: Daemon, mocks: Mocks) -> None:
    mocks.file("/err/busy.bin")
    mocks.cmd(op="fault", path="/err/busy.bin", status=429, count=50, headers=[["Retry-After", "0"]])
    _wait_raises(daemon, mocks.url("/err/busy.bin"), mdl.RateLimitedError, "rate_limited")


def test_network(daemon: Daemon, mocks: Mocks) -> None:
    mocks.file("/err/down.bin")
    mocks.cmd(op="fault", path="/err/down.bin", status=503, count=50)
    _wait_raises(daemon, mocks.url("/err/down.bin"), mdl.NetworkError, "network")


@pytest.fixture
def small_fs() -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp())
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)
    mount.rmdir()


def test_no_space(daemon: Daemon, mocks: Mocks, small_fs: Path) -> None:
    served = mocks.file("/err/big.bin", 3 * 1024 * 1024)
    client = daemon.client()
    job = client.add(served["url"], dest=small_fs)
    with pytest.raises(mdl.NoSpaceError, match="paused") as caught:
        client.wait(job, timeout=20)
    assert caught.value.job is not None and caught.value.job.state == "paused"
    client.cancel(job)


def test_unreachable(tmp_path: Path) -> None:
    with pytest.raises(mdl.DaemonUnreachable) as caught:
        mdl.Client(str(tmp_path / "nobody.sock"), autostart=False).daemon_status()
    assert isinstance(caught.value, ConnectionError) and caught.value.kind == "unreachable"


def test_invalid_requests_raise_at_once(daemon: Daemon) -> None:
    client = daemon.client()
    with pytest.raises(mdl.InvalidRequestError):
        client.add("ftp://example.invalid/x")
    with pytest.raises(mdl.InvalidRequestError):
        client.add("http://127.0.0.1:9/x", sha256="xyz")
    with pytest.raises(mdl.InvalidRequestError, match="no job 424242"):
        client.job(424242)
    with pytest.raises(mdl.InvalidRequestError):
        client.wait([424242], timeout=5)
    # The connection stays usable after error replies.
    assert client.jobs() == []


def test_error_for_maps_every_kind() -> None:
    expected = {
        "other": mdl.MdlError,
        "invalid_request": mdl.InvalidRequestError,
        "auth": mdl.AuthError,
        "not_found": mdl.NotFoundError,
        "network": mdl.NetworkError,
        "fatal": mdl.NetworkError,
        "rate_limited": mdl.RateLimitedError,
        "integrity": mdl.IntegrityError,
        "no_space": mdl.NoSpaceError,
        "unreachable": mdl.DaemonUnreachable,
        "from_the_future": mdl.MdlError,
    }
    for kind, cls in expected.items():
        err = mdl.error_for(kind, "m")
        assert type(err) is cls and err.kind == kind and str(err) == "m"
