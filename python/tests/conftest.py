"""Fixtures: the real ``mdld`` on a temp socket, and the testkit's mock servers, on loopback.

The binaries come from the workspace's target directory (``CARGO_TARGET_DIR`` or
``<repo>/target``, debug profile); they are built with cargo when missing, so ``pytest
python/tests`` works on its own. ``scripts/test.sh`` builds them first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import mdl

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"
MDLD = TARGET / "mdld"
MDLCTL = TARGET / "mdlctl"
SERVE_MOCKS = TARGET / "examples" / "serve_mocks"

# Fast failure: two attempts, short backoff, so a typed error arrives in well under a second.
CONFIG = """
heartbeat_secs = 1
[engine]
max_attempts = 2
backoff_base_ms = 10
backoff_max_ms = 50
retry_after_max_secs = 1
"""


def _build() -> None:
    if all(p.exists() for p in (MDLD, MDLCTL, SERVE_MOCKS)):
        return
    subprocess.run(["cargo", "build", "-p", "mdld", "-p", "mdlctl", "--bins"], cwd=REPO, check=True)
    subprocess.run(["cargo", "build", "-p", "testkit", "--example", "serve_mocks"], cwd=REPO, check=True)


class Mocks:
    """The ``serve_mocks`` process: a file server and a Hugging Face mock."""

    def __init__(self) -> None:
        _build()
        self.proc = subprocess.Popen(
            [str(SERVE_MOCKS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline())
        self.file_server: str = hello["file_server"].rstrip("/")
        self.hf_endpoint: str = hello["hf_endpoint"]
        self._seed = 100

    def cmd(self, **command: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        reply: Dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert "error" not in reply, reply
        return reply

    def file(self, path: str, size: int = 64 * 1024) -> Dict[str, Any]:
        """Serve fresh pseudo-random bytes at ``path``."""
        self._seed += 1
        return self.cmd(op="file", path=path, size=size, seed=self._seed)

    def url(self, path: str) -> str:
        return self.file_server + path

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def mocks() -> Iterator[Mocks]:
    m = Mocks()
    yield m
    m.close()


class Daemon:
    """A real ``mdld`` on a private socket, data directory and HOME."""

    def __init__(self, root: Path) -> None:
        _build()
        self.root = root
        self.socket = str(root / "run" / "mdld.sock")
        self.data = root / "data"
        self.downloads = root / "downloads"
        self.downloads.mkdir(parents=True)
        config = root / "config.toml"
        config.write_text(f'download_dir = "{self.downloads}"\n' + CONFIG)
        self.log = open(root / "mdld.log", "wb")
        self.proc = subprocess.Popen(
            [str(MDLD), "--socket", self.socket, "--data-dir", str(self.data), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                mdl.Client(self.socket, autostart=False).daemon_status()
                break
            except mdl.DaemonUnreachable:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.02)

    def client(self) -> mdl.Client:
        return mdl.Client(self.socket, autostart=False)

    def mdlctl(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [str(MDLCTL), "--socket", self.socket, *args], capture_output=True, text=True, timeout=30
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    # Nothing from the developer's environment leaks into a job, nor a real cache.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in mdl.FORWARDED_ENV:
        if name != "HOME":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MDL_SOCKET", raising=False)
    d = Daemon(tmp_path)
    yield d
    d.stop()


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_jobs(client: mdl.Client) -> List[mdl.Job]:
    return client.jobs()


def until(check: "Any", timeout: float = 10.0) -> None:
    """Poll ``check()`` until it is true (the daemon acts asynchronously on some requests)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
