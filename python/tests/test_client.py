"""Every client call against the real daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import pytest

import mdl
from conftest import Daemon, Mocks, sha256_of, until


def test_add_wait_and_query(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/client/a.bin", 200 * 1024)
    client = daemon.client()
    job = client.add(served["url"], sha256=served["sha256"], dest=daemon.downloads / "a")
    assert isinstance(job, mdl.Job) and job.state in ("queued", "running", "completed")
    seen: List[mdl.Progress] = []
    (done,) = client.wait(job, timeout=20, on_progress=seen.append)
    assert done.state == "completed" and done.error is None
    path = daemon.downloads / "a" / "a.bin"
    assert done.paths == [path] and sha256_of(path) == served["sha256"]
    assert client.job(job.id) == done
    assert [j.id for j in client.jobs()] == [job.id]
    info = client.daemon_status()
    assert info.protocol == 1 and info.socket == daemon.socket and info.pid == daemon.proc.pid
    assert client.daemon_version == info.version
    # The same add again completes at once without a download.
    outcome, again = client.add_reply(served["url"], sha256=served["sha256"], dest=daemon.downloads / "a")
    assert outcome == "already_complete"


def test_name_priority_and_relative_dest(daemon: Daemon, mocks: Mocks, monkeypatch: pytest.MonkeyPatch) -> None:
    served = mocks.file("/client/named.bin")
    monkeypatch.chdir(daemon.root)
    client = daemon.client()
    job = client.add(served["url"], dest="rel", name="renamed.bin", priority=7, paused=True)
    assert isinstance(job, mdl.Job)
    assert job.state == "paused" and job.priority == 7 and job.dest == str(daemon.root / "rel")
    client.resume(job)
    (done,) = client.wait([job.id], timeout=20)
    assert done.paths == [daemon.root / "rel" / "renamed.bin"]


def test_pause_resume_prio_cancel_remove(daemon: Daemon, mocks: Mocks) -> None:
    slow = mocks.file("/client/slow.bin", 4 * 1024 * 1024)
    mocks.cmd(op="throttle", path="/client/slow.bin", bytes_per_sec=256 * 1024)
    client = daemon.client()
    job = client.add(slow["url"], dest=daemon.downloads)
    assert isinstance(job, mdl.Job)
    client.pause(job)
    until(lambda: client.job(job).state == "paused")
    client.resume("all")
    assert client.job(job).state in ("queued", "running")
    assert client.prio(job, 9).priority == 9
    client.pause("all")
    until(lambda: client.job(job).state == "paused")
    client.cancel(job)
    until(lambda: client.job(job).state == "cancelled")
    with pytest.raises(mdl.CancelledError) as caught:
        client.wait(job, timeout=5)
    assert caught.value.job is not None and caught.value.job.id == job.id
    with pytest.raises(ValueError):
        client.remove()
    client.remove(job)
    with pytest.raises(mdl.InvalidRequestError, match=f"no job {job.id}"):
        client.job(job)


def test_remove_finished_with_files_verify_limit_concurrency_plan(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/client/v.bin")
    client = daemon.client()
    job = client.add(served["url"], sha256=served["sha256"], dest=daemon.downloads)
    (done,) = client.wait(job, timeout=20)
    assert client.verify() == []
    done.paths[0].write_bytes(b"damaged")
    requeued = client.verify(paths=[daemon.downloads])
    assert [j.id for j in requeued] == [job.id]
    (again,) = client.wait(job, timeout=20)
    assert sha256_of(again.paths[0]) == served["sha256"]

    assert client.limit(5_000_000).bandwidth_limit == 5_000_000
    assert client.limit(None).bandwidth_limit is None
    client.limit(1_000_000, job=job)
    assert client.concurrency(2).max_concurrent == 2

    other = mocks.file("/client/plan.bin", 1234)
    plan = client.plan(other["url"], dest=daemon.downloads)
    assert plan.files[0].dest == str(daemon.downloads / "plan.bin")
    assert len(client.jobs()) == 1, "a plan queues nothing"

    client.remove(finished=True, delete_files=True)
    assert client.jobs() == [] and not done.paths[0].exists()


def test_events_stream_live_changes(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/client/ev.bin", 512 * 1024)
    mocks.cmd(op="throttle", path="/client/ev.bin", bytes_per_sec=1024 * 1024)
    client = daemon.client()
    with client.events() as events:
        first = next(events)
        assert first.type == "Snapshot" and first.jobs == ()
        job = client.add(served["url"], dest=daemon.downloads)
        assert isinstance(job, mdl.Job)
        kinds = []
        for event in events:
            if event.job_id == job.id:
                kinds.append(event.type)
            if event.type == "Completed":
                assert event.job is not None and event.job.state == "completed"
                break
        assert kinds[0] == "Queued" and "Started" in kinds and "Progress" in kinds, kinds


def test_events_end_when_the_daemon_shuts_down(daemon: Daemon) -> None:
    client = daemon.client()
    events = client.events()
    assert next(events).type == "Snapshot"
    daemon.client().shutdown()
    rest = [e.type for e in events]
    assert all(t in ("Heartbeat",) for t in rest), rest
    daemon.proc.wait(10)


def test_wait_times_out(daemon: Daemon, mocks: Mocks) -> None:
    served = mocks.file("/client/held.bin")
    client = daemon.client()
    job = client.add(served["url"], dest=daemon.downloads, paused=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait(job, timeout=0.5)
    assert time.monotonic() - started < 3


def test_autostart_through_mdlctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import TARGET

    monkeypatch.setenv("PATH", f"{TARGET}:{'/usr/bin:/bin'}")
    monkeypatch.setenv("MDL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path))
    socket = str(tmp_path / "auto" / "mdld.sock")
    with pytest.raises(mdl.DaemonUnreachable, match="cannot connect"):
        mdl.Client(socket, autostart=False).jobs()
    client = mdl.Client(socket)
    try:
        assert client.jobs() == []
        info = client.daemon_status()
        assert info.socket == socket
    finally:
        pid = client.daemon_status().pid
        client.shutdown()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the started daemon stopped"


def test_no_daemon_and_nothing_to_start_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MDL_DAEMON_BIN", raising=False)
    with pytest.raises(mdl.DaemonUnreachable, match="neither mdlctl nor mdld") as caught:
        mdl.Client(str(tmp_path / "none.sock")).jobs()
    assert caught.value.exit_code == 9
