"""``mdl.Client``: everything ``mdlctl`` does, over the daemon's socket in JSON."""

from __future__ import annotations

import os
import socket as _socket
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _endpoint
from ._wire import Connection
from .errors import CancelledError, DaemonUnreachable, MdlError, error_for
from .types import DaemonInfo, Event, Job, Plan, Progress

if TYPE_CHECKING:
    from pathlib import Path

    from .ensure import Spec

__all__ = ["Client", "EventStream", "FORWARDED_ENV", "JobRef"]

#: The caller's environment variables forwarded with every add (the same list as ``mdlctl``),
#: so the daemon resolves tokens, endpoints and caches as if started in the caller's shell.
FORWARDED_ENV: Tuple[str, ...] = (
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HUGGING_FACE_HUB_TOKEN",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_CACHE",
    "CIVITAI_TOKEN",
    "CIVITAI_API_KEY",
    "CIVITAI_ENDPOINT",
    "XDG_CACHE_HOME",
    "HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HF_HUB_OFFLINE",
    "MDL_OFFLINE",
)

#: A job, by id or as returned by a call.
JobRef = Union[int, Job]

#: The version string sent in the handshake.
CLIENT_VERSION = "mdl-python/0.1.0"


def _id(job: JobRef) -> int:
    return job.id if isinstance(job, Job) else int(job)


def _ids(jobs: Union[JobRef, Iterable[JobRef]]) -> List[int]:
    if isinstance(jobs, (int, Job)):
        return [_id(jobs)]
    out: List[int] = []
    for job in jobs:
        if _id(job) not in out:
            out.append(_id(job))
    return out


def forwarded_env(extra: Optional[Mapping[str, str]] = None) -> List[List[str]]:
    """``AddRequest.env``: the forwarded variables that are set, then ``extra`` (which wins)."""
    values = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    values.update(extra or {})
    return [[name, value] for name, value in values.items()]


class Client:
    """A client of the local ``mdld``.

    ``socket``: the daemon's socket (default: ``MDL_SOCKET``, else the per-user default, like
    ``mdlctl``). When no daemon answers and ``autostart`` is true, one is started through
    ``mdlctl daemon start`` (or ``mdld`` on ``PATH``). Calls are thread-safe; each
    :meth:`events` stream and :meth:`wait` opens a connection of its own.
    """

    def __init__(
        self,
        socket: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        autostart: bool = True,
        client_version: str = CLIENT_VERSION,
    ) -> None:
        explicit = os.fspath(socket) if socket is not None else None
        #: The socket path in use.
        self.socket: str = _endpoint.resolve_socket_path(explicit)
        self._pass_socket = explicit is not None or bool(os.environ.get(_endpoint.SOCKET_ENV))
        self._autostart = autostart
        self._client_version = client_version
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None

    # -- connections ---------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A new connection, starting the daemon when none answers."""
        try:
            return Connection(self.socket, self._client_version)
        except DaemonUnreachable as e:
            cause = e.__cause__
            absent = isinstance(cause, (FileNotFoundError, ConnectionRefusedError))
            if not (self._autostart and absent):
                raise
        _endpoint.start_daemon(self.socket, self._pass_socket)
        deadline = time.monotonic() + _endpoint.START_TIMEOUT
        while True:
            try:
                return Connection(self.socket, self._client_version)
            except DaemonUnreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _request(self, message: Any) -> Any:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            try:
                return self._conn.request(message)
            except DaemonUnreachable:
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        """Close the control connection (the client reconnects when used again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def daemon_version(self) -> str:
        """The daemon's package version, from the handshake."""
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            return self._conn.daemon_version

    # -- requests ------------------------------------------------------------------------

    def _add_request(
        self,
        source: str,
        *,
        dest: Optional[Union[str, "os.PathLike[str]"]] = None,
        sha256: Optional[str] = None,
        md5: Optional[str] = None,
        priority: int = 0,
        paused: bool = False,
        revision: Optional[str] = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        name: Optional[str] = None,
        token: Optional[str] = None,
        options: Optional[Mapping[str, str]] = None,
        env: Optional[Mapping[str, str]] = None,
        dry_run: bool = False,
    ) -> Dict[str, Any]:
        return {
            "source": source,
            "dest": os.path.abspath(os.fspath(dest)) if dest is not None else None,
            "sha256": sha256,
            "md5": md5,
            "priority": priority,
            "paused": paused,
            "revision": revision,
            "include": list(include),
            "exclude": list(exclude),
            "token": token,
            "env": forwarded_env(env),
            "dry_run": dry_run,
            "options": [[k, v] for k, v in (options or {}).items()],
            "file_name": name,
        }

    def add_reply(self, source: str, **kwargs: Any) -> Tuple[str, Union[Job, List[Job]]]:
        """Like :meth:`add`, also returning what the add did: ``created``, ``joined`` (the same
        destination was already queued) or ``already_complete``."""
        reply = self._request({"Add": self._add_request(source, **kwargs)})
        if "Added" in reply:
            return reply["Added"]["outcome"], Job.from_json(reply["Added"]["job"])
        if "Jobs" in reply:
            return "created", [Job.from_json(j) for j in reply["Jobs"]]
        raise MdlError(f"unexpected reply to add: {reply!r:.200}")

    def add(
        self,
        source: str,
        *,
        dest: Optional[Union[str, "os.PathLike[str]"]] = None,
        sha256: Optional[str] = None,
        md5: Optional[str] = None,
        priority: int = 0,
        paused: bool = False,
        revision: Optional[str] = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        name: Optional[str] = None,
        token: Optional[str] = None,
        options: Optional[Mapping[str, str]] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Union[Job, List[Job]]:
        """Queue a download, like ``mdlctl add``: a URL or a hub source (``hf://``, ``ms://``,
        ``civitai://``...). Returns the job, or a list of jobs for a search source. ``dest``
        (made absolute), ``name`` (the file name of a single file), ``options`` (source
        options such as ``layout=comfyui``) and ``env`` (variables added to the forwarded
        environment) are as in ``mdlctl add``."""
        _, job = self.add_reply(
            source,
            dest=dest,
            sha256=sha256,
            md5=md5,
            priority=priority,
            paused=paused,
            revision=revision,
            include=include,
            exclude=exclude,
            name=name,
            token=token,
            options=options,
            env=env,
        )
        return job

    def plan(self, source: str, **kwargs: Any) -> Plan:
        """What :meth:`add` with the same arguments would do, queueing nothing (``--dry-run``)."""
        reply = self._request({"Add": self._add_request(source, dry_run=True, **kwargs)})
        return Plan.from_json(reply["Plan"])

    def jobs(self) -> List[Job]:
        """Every job: queued ones in run order, then finished ones (``mdlctl ls``)."""
        return [Job.from_json(j) for j in self._request("List")["Jobs"]]

    def job(self, id: JobRef) -> Job:
        """One job (``mdlctl status``)."""
        return Job.from_json(self._request({"Status": _id(id)})["Job"])

    @staticmethod
    def _target(id: Union[JobRef, str]) -> Any:
        return "All" if id == "all" else {"Job": _id(id)}  # type: ignore[arg-type]

    def pause(self, id: Union[JobRef, str]) -> None:
        """Hold a job (or every job with ``"all"``), keeping its bytes."""
        self._request({"Pause": self._target(id)})

    def resume(self, id: Union[JobRef, str]) -> None:
        """Let a held job (or ``"all"``) run again; also retries a failed job."""
        self._request({"Resume": self._target(id)})

    def cancel(self, id: JobRef) -> None:
        """Stop a job for good and delete its partial files."""
        self._request({"Cancel": _id(id)})

    def prio(self, id: JobRef, priority: int) -> Job:
        """Change a job's priority (higher runs first)."""
        reply = self._request({"SetPriority": {"id": _id(id), "priority": priority}})
        return Job.from_json(reply["Job"])

    def remove(
        self,
        ids: Union[JobRef, Iterable[JobRef]] = (),
        *,
        finished: bool = False,
        delete_files: bool = False,
    ) -> None:
        """Forget jobs (``mdlctl rm``): the given ones, or with ``finished=True`` every finished
        one. ``delete_files`` also deletes the downloaded files of completed jobs."""
        wanted = _ids(ids)
        if not wanted and not finished:
            raise ValueError("name the jobs to remove, or pass finished=True")
        self._request({"Remove": {"ids": wanted, "delete_files": delete_files}})

    def verify(
        self,
        ids: Union[JobRef, Iterable[JobRef]] = (),
        *,
        paths: Iterable[Union[str, "os.PathLike[str]"]] = (),
    ) -> List[Job]:
        """Re-hash finished files (every completed job when nothing is named) and queue the
        damaged ones again; returns the jobs queued again."""
        reply = self._request(
            {
                "Verify": {
                    "ids": _ids(ids),
                    "paths": [os.path.abspath(os.fspath(p)) for p in paths],
                }
            }
        )
        return [Job.from_json(j) for j in reply["Jobs"]]

    def limit(self, bytes_per_second: Optional[int], *, job: Optional[JobRef] = None) -> DaemonInfo:
        """Set (or with ``None`` clear) the bandwidth limit, global or for one job."""
        body = {"job": _id(job) if job is not None else None, "bytes_per_second": bytes_per_second}
        return DaemonInfo.from_json(self._request({"SetBandwidthLimit": body})["Daemon"])

    def concurrency(self, max_jobs: int) -> DaemonInfo:
        """Change how many jobs run at once."""
        return DaemonInfo.from_json(self._request({"SetConcurrency": max_jobs})["Daemon"])

    def daemon_status(self) -> DaemonInfo:
        """The daemon's version, pid, socket, limits and counters."""
        return DaemonInfo.from_json(self._request("DaemonStatus")["Daemon"])

    def shutdown(self) -> None:
        """Ask the daemon to shut down gracefully (``mdlctl daemon stop``)."""
        self._request("Shutdown")
        self.close()

    # -- events and waiting --------------------------------------------------------------

    def events(self) -> "EventStream":
        """Live events on a connection of their own: first a ``Snapshot`` of every job, then
        changes as they happen, and a ``Heartbeat`` when idle. Iterating ends when the daemon
        shuts down. Close the stream (or use it as a context manager) when done."""
        return EventStream(self._connect())

    def wait(
        self,
        ids: Union[JobRef, Iterable[JobRef]],
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
    ) -> List[Job]:
        """Wait until every job has finished and return them as they ended (in the order
        given). Raises the typed error of the first job that did not complete
        (:class:`~mdl.AuthError`, :class:`~mdl.IntegrityError`, ...; :class:`~mdl.NoSpaceError`
        for a job the daemon paused for a full disk; :class:`~mdl.CancelledError`), with every
        job in ``error.jobs``; :class:`TimeoutError` after ``timeout`` seconds."""
        order = _ids(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        jobs: Dict[int, Job] = {}
        with self.events() as stream:
            while True:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"job(s) {order} not finished within {timeout} s")
                    stream.settimeout(left)
                try:
                    event = next(stream, None)
                except _socket.timeout:
                    continue  # the deadline check above raises
                if event is None:
                    raise DaemonUnreachable(
                        "the daemon ended the event stream before the jobs finished "
                        "(did it shut down?)"
                    )
                if event.type == "Snapshot":
                    jobs.update((j.id, j) for j in event.jobs if j.id in order)
                elif event.type == "Lagged" or (event.type == "Removed" and event.job_id in order):
                    # Events were dropped (or a job vanished): ask about every unsettled job.
                    for i in order:
                        if not (i in jobs and jobs[i].settled):
                            jobs[i] = self.job(i)
                elif event.job is not None and event.job.id in order:
                    jobs[event.job.id] = event.job
                elif event.progress is not None and event.progress.job in order:
                    if on_progress is not None:
                        on_progress(event.progress)
                # Jobs the snapshot did not list: asking also turns an unknown id into the
                # daemon's error.
                for i in order:
                    if i not in jobs:
                        jobs[i] = self.job(i)
                if all(jobs[i].settled for i in order):
                    break
        done = [jobs[i] for i in order]
        raise_for(done)
        return done

    # -- apps' conveniences --------------------------------------------------------------

    def ensure(
        self,
        specs: Iterable["Spec"],
        *,
        on_progress: Optional[Callable[[Progress], None]] = None,
        priority: int = 0,
    ) -> Dict[str, List["Path"]]:
        """Make sure every file of every spec is present and intact, queueing only what is
        missing or damaged, and return each spec's local paths (see :mod:`mdl.ensure`)."""
        from .ensure import ensure

        return ensure(self, specs, on_progress=on_progress, priority=priority)

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> str:
        """``huggingface_hub.snapshot_download`` through the daemon (see :mod:`mdl.hf`)."""
        from .hf import snapshot_download

        return snapshot_download(repo_id, client=self, **kwargs)

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        """``huggingface_hub.hf_hub_download`` through the daemon (see :mod:`mdl.hf`)."""
        from .hf import hf_hub_download

        return hf_hub_download(repo_id, filename, client=self, **kwargs)


def raise_for(jobs: Sequence[Job]) -> None:
    """Raise the typed error of the first job that did not complete, if any."""
    for job in jobs:
        if job.state == "failed":
            kind, message = (job.error.kind, job.error.message) if job.error else ("other", "")
            raise error_for(kind, f"job {job.id} failed: {message}", job=job, jobs=jobs)
        if job.state == "cancelled":
            raise CancelledError(f"job {job.id} was cancelled", job=job, jobs=jobs)
        if job.state == "paused" and job.error is not None:
            raise error_for(
                job.error.kind,
                f"job {job.id} is paused: {job.error.message}; it keeps its bytes: fix the "
                f"cause and resume it",
                job=job,
                jobs=jobs,
            )


class EventStream(Iterator[Event]):
    """The events of a subscribed connection; iterate, and close when done."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._done = False
        conn.send("Subscribe")

    def settimeout(self, timeout: Optional[float]) -> None:
        """Make the next read raise ``socket.timeout`` after ``timeout`` seconds."""
        self._conn.settimeout(timeout)

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        if self._done:
            raise StopIteration
        reply = self._conn.recv()
        # A snapshot too large for one frame arrives in parts, ended by the Snapshot itself.
        parts: list = []
        while isinstance(reply, dict) and isinstance(reply.get("Event"), dict) and "SnapshotPart" in reply["Event"]:
            parts.extend(reply["Event"]["SnapshotPart"])
            reply = self._conn.recv()
        if parts and isinstance(reply, dict) and isinstance(reply.get("Event"), dict) and "Snapshot" in reply["Event"]:
            reply = {"Event": {"Snapshot": parts + reply["Event"]["Snapshot"]}}
        if reply is None or reply == {"Event": "End"}:
            self.close()
            raise StopIteration
        if isinstance(reply, dict) and "Error" in reply:
            self.close()
            raise error_for(reply["Error"]["kind"], reply["Error"]["message"])
        return Event.from_json(reply["Event"])

    def close(self) -> None:
        """Stop receiving events."""
        self._done = True
        self._conn.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
