"""The examples in examples/python/ work against a real daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import REPO, Daemon, Mocks, until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sse_relay_streams_events_and_queues(daemon: Daemon, mocks: Mocks) -> None:
    port = _free_port()
    env = dict(os.environ, MDL_SOCKET=daemon.socket)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples/python/sse_relay.py"), str(port)],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("http://")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                stream = urllib.request.urlopen(base + "/events", timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert stream.readline() == b"event: Snapshot\n"
        served = mocks.file("/examples/sse.bin")
        request = urllib.request.Request(base + "/add", data=served["url"].encode(), method="POST")
        assert b'"jobs"' in urllib.request.urlopen(request, timeout=10).read()
        seen = set()
        while "event: Completed\n" not in seen:
            seen.add(stream.readline().decode())
        assert "event: Queued\n" in seen
        client = daemon.client()
        until(lambda: [j.state for j in client.jobs()] == ["completed"])
    finally:
        proc.terminate()
        proc.wait(10)
