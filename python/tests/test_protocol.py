"""The wire itself, by hand: what docs/protocol.md promises a client in any language."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import mdl
from conftest import Daemon, Mocks

HELLO = {"magic": [109, 100, 108, 0], "protocol": 1, "client_version": "raw-test/1"}


def send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">Q", len(payload)) + payload)


def recv(sock: socket.socket) -> Any:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    (length,) = struct.unpack(">Q", exact(8))
    return json.loads(exact(length))


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(daemon.socket)
    return sock


def test_the_documented_session_replays(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/proto/x.bin", 1000)
    sock = connect(daemon)
    send(sock, json.dumps(HELLO).encode())
    assert recv(sock) == {"Welcome": {"protocol": 1, "daemon_version": daemon.client().daemon_version}}
    add = {
        "source": served["url"], "dest": str(daemon.downloads), "sha256": served["sha256"], "md5": None,
        "priority": 0, "paused": False, "revision": None, "include": [], "exclude": [], "token": None,
        "env": [], "dry_run": False, "options": [], "file_name": None,
    }
    send(sock, json.dumps({"Add": add}).encode())
    reply = recv(sock)
    assert reply["Added"]["outcome"] == "created"
    job_id = reply["Added"]["job"]["id"]
    send(sock, b'"Subscribe"')
    events = []
    while True:
        event = recv(sock)["Event"]
        events.append(event)
        if isinstance(event, dict) and "Completed" in event:
            break
    assert "Snapshot" in events[0]
    assert events[-1]["Completed"]["id"] == job_id
    assert events[-1]["Completed"]["files"][0]["sha256"] == served["sha256"]
    sock.close()


def test_malformed_frames_get_an_error_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    sock = connect(daemon)
    send(sock, json.dumps(HELLO).encode())
    assert "Welcome" in recv(sock)
    for bad in [b'{"Status": ', b'{"Frobnicate": 1}', b'{"Status": "seven"}', b"\xff"]:
        send(sock, bad)
        reply = recv(sock)
        assert reply["Error"]["kind"] == "invalid_request", reply
        assert "cannot decode" in reply["Error"]["message"]
    # The same connection still works, and so does everyone else's.
    send(sock, b'"List"')
    assert recv(sock) == {"Jobs": []}
    assert daemon.client().jobs() == []


def test_an_incompatible_or_broken_json_hello_gets_a_clear_answer(daemon: Daemon) -> None:
    sock = connect(daemon)
    send(sock, json.dumps(dict(HELLO, protocol=99)).encode())
    reply = recv(sock)
    assert reply["Incompatible"]["expected"] == 1 and reply["Incompatible"]["got"] == 99
    sock.close()
    sock = connect(daemon)
    send(sock, b'{"hello": true}')
    refused = recv(sock)["Refused"]
    assert refused["kind"] == "invalid_request" and "Hello" in refused["message"]
    sock.close()


def test_a_json_client_and_a_bincode_client_at_the_same_time(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/proto/both.bin")
    client = daemon.client()
    with client.events() as events:
        assert next(events).type == "Snapshot"
        # mdlctl (bincode) queues while the Python (JSON) connections stay open.
        out = daemon.mdlctl("--json", "add", served["url"], "--dest", str(daemon.downloads), "--paused")
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["id"]
        event = next(e for e in events if e.job_id == job_id)
        assert event.type == "Queued"
        client.prio(job_id, 3)
        status = daemon.mdlctl("--json", "status", str(job_id))
        assert json.loads(status.stdout)["priority"] == 3
        client.resume(job_id)
        done = daemon.mdlctl("wait", str(job_id))
        assert done.returncode == 0, done.stderr
        assert client.job(job_id).state == "completed"


def test_version_and_typed_objects(daemon: Daemon) -> None:
    info = daemon.client().daemon_status()
    assert isinstance(info, mdl.DaemonInfo) and info.max_concurrent >= 1


def test_the_script_in_the_protocol_document_runs(daemon: Daemon, mocks: Mocks) -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO

    doc = (REPO / "docs" / "protocol.md").read_text()
    match = re.search(r"<!-- replay-script -->\n```python\n(.*?)```", doc, re.S)
    assert match, "the replay script is marked in docs/protocol.md"
    script = match.group(1)
    assert len(script.strip().splitlines()) <= 10
    served = mocks.file("/proto/replay.bin", 300 * 1024)
    dest = daemon.root / "replayed"
    out = subprocess.run(
        [sys.executable, "-c", script, daemon.socket, served["url"], str(dest)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "Welcome" in out.stdout and "Completed" in out.stdout.splitlines()[-1]
    assert Path(dest / "replay.bin").stat().st_size == 300 * 1024


def test_the_forwarded_environment_is_the_protocol_crates_list() -> None:
    """Python forwards exactly what `mdl_protocol::FORWARDED_ENV` names, in the same order:
    the Rust list is the one source, this copy must not drift from it."""
    import re
    from pathlib import Path

    import mdl.client

    rust = (Path(__file__).resolve().parents[2] / "protocol/src/request.rs").read_text()
    block = re.search(r"pub const FORWARDED_ENV: \[&str; \d+\] = \[(.*?)\];", rust, re.S)
    assert block, "FORWARDED_ENV not found in protocol/src/request.rs"
    names = tuple(re.findall(r'"([A-Za-z_]+)"', block.group(1)))
    assert names and mdl.client.FORWARDED_ENV == names
