"""The protocol's messages as Python values, read from the daemon's JSON (``docs/protocol.md``).

These mirror the Rust types of ``mdl-protocol`` field for field; they hold no logic beyond
reading JSON and a few conveniences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = [
    "ErrorInfo",
    "FileInfo",
    "Job",
    "Progress",
    "Event",
    "DaemonInfo",
    "PlannedFile",
    "Plan",
    "FINISHED_STATES",
]

#: States a job never leaves by itself.
FINISHED_STATES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class ErrorInfo:
    """A failure as a job records it."""

    #: The error kind (``auth``, ``not_found``, ``integrity``, ...).
    kind: str
    #: What happened, for a person.
    message: str

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "ErrorInfo":
        """Read the JSON object."""
        return cls(kind=str(value["kind"]), message=str(value["message"]))


@dataclass(frozen=True)
class FileInfo:
    """One file of a job."""

    #: Where the verified file ends up (absolute).
    path: str
    #: The expected size in bytes, once known.
    size: Optional[int]
    #: Bytes fetched so far.
    bytes_done: int
    #: ``pending``, ``downloading``, ``verifying``, ``completed`` or ``failed``; ``missing``
    #: or ``modified`` for a completed file deleted or changed on disk since it was verified.
    state: str
    #: The expected or computed sha256 (lowercase hex).
    sha256: Optional[str]
    #: The scheme and host that served the bytes.
    endpoint: Optional[str]
    #: A remark for a person.
    note: Optional[str]

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "FileInfo":
        """Read the JSON object."""
        return cls(
            path=value["path"],
            size=value.get("size"),
            bytes_done=value["bytes_done"],
            state=value["state"],
            sha256=value.get("sha256"),
            endpoint=value.get("endpoint"),
            note=value.get("note"),
        )


@dataclass(frozen=True)
class Job:
    """A job, as the daemon reports it."""

    #: The job's id.
    id: int
    #: The source as given, without credentials.
    source: str
    #: ``queued``, ``running``, ``verifying``, ``completed``, ``failed``, ``paused`` or
    #: ``cancelled``.
    state: str
    #: Higher runs first.
    priority: int
    #: The destination directory.
    dest: str
    #: Bytes fetched so far over all files.
    bytes_done: int
    #: Total size, once every size is known.
    bytes_total: Optional[int]
    #: Why it failed, or why the daemon paused it.
    error: Optional[ErrorInfo]
    #: Its files (empty until the source is resolved).
    files: Tuple[FileInfo, ...]
    #: When it was added (ms since the Unix epoch).
    created_ms: int
    #: When it finished (ms since the Unix epoch).
    finished_ms: Optional[int]
    #: The resolved revision or commit of a hub source.
    revision: Optional[str]

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Job":
        """Read the JSON object."""
        error = value.get("error")
        return cls(
            id=value["id"],
            source=value["source"],
            state=value["state"],
            priority=value["priority"],
            dest=value["dest"],
            bytes_done=value["bytes_done"],
            bytes_total=value.get("bytes_total"),
            error=ErrorInfo.from_json(error) if error else None,
            files=tuple(FileInfo.from_json(f) for f in value.get("files", ())),
            created_ms=value["created_ms"],
            finished_ms=value.get("finished_ms"),
            revision=value.get("revision"),
        )

    @property
    def finished(self) -> bool:
        """True when completed, failed or cancelled."""
        return self.state in FINISHED_STATES

    @property
    def settled(self) -> bool:
        """Finished, or paused by the daemon for a reason the user must act on (a full disk)."""
        return self.finished or (self.state == "paused" and self.error is not None)

    @property
    def paths(self) -> List[Path]:
        """The local paths of its files."""
        return [Path(f.path) for f in self.files]


@dataclass(frozen=True)
class Progress:
    """A progress update for one job."""

    #: The job.
    job: int
    #: The file being fetched (final path).
    file: str
    #: Bytes of that file so far.
    file_bytes_done: int
    #: That file's size, if known.
    file_bytes_total: Optional[int]
    #: Bytes of the whole job so far.
    job_bytes_done: int
    #: The whole job's size, if known.
    job_bytes_total: Optional[int]
    #: Recent speed in bytes per second.
    bytes_per_second: int
    #: Estimated seconds left, if known.
    eta_seconds: Optional[int]

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Progress":
        """Read the JSON object."""
        return cls(
            job=value["job"],
            file=value["file"],
            file_bytes_done=value["file_bytes_done"],
            file_bytes_total=value.get("file_bytes_total"),
            job_bytes_done=value["job_bytes_done"],
            job_bytes_total=value.get("job_bytes_total"),
            bytes_per_second=value["bytes_per_second"],
            eta_seconds=value.get("eta_seconds"),
        )


#: Event variants that carry one job.
_JOB_EVENTS = frozenset(
    {"Queued", "Started", "Completed", "Failed", "Paused", "Resumed", "Cancelled", "Updated"}
)


@dataclass(frozen=True)
class Event:
    """Something that happened in the daemon. ``type`` is the protocol's variant name
    (``Snapshot``, ``Queued``, ``Started``, ``Progress``, ``Verifying``, ``Completed``,
    ``Failed``, ``Paused``, ``Resumed``, ``Cancelled``, ``Removed``, ``Updated``, ``Heartbeat``,
    ``Lagged``, ``End``); the other fields are set as the variant has them."""

    #: The variant name.
    type: str
    #: The job, for job events.
    job: Optional[Job] = None
    #: Every job, for ``Snapshot``.
    jobs: Tuple[Job, ...] = ()
    #: The update, for ``Progress``.
    progress: Optional[Progress] = None
    #: The job's id, for every event about one job.
    job_id: Optional[int] = None
    #: The file, for ``Verifying``.
    file: Optional[str] = None
    #: The daemon's clock, for ``Heartbeat``.
    unix_ms: Optional[int] = None
    #: Dropped events, for ``Lagged``.
    missed: Optional[int] = None
    #: The event as it came from the wire.
    raw: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Any) -> "Event":
        """Read the JSON value of an ``Event`` (a string for unit variants, else one key)."""
        if isinstance(value, str):
            return cls(type=value, raw=value)
        ((name, body),) = value.items()
        if name in _JOB_EVENTS:
            job = Job.from_json(body)
            return cls(type=name, job=job, job_id=job.id, raw=value)
        if name == "Snapshot":
            return cls(type=name, jobs=tuple(Job.from_json(j) for j in body), raw=value)
        if name == "Progress":
            progress = Progress.from_json(body)
            return cls(type=name, progress=progress, job_id=progress.job, raw=value)
        if name == "Verifying":
            return cls(type=name, job_id=body["job"], file=body["file"], raw=value)
        if name == "Removed":
            return cls(type=name, job_id=body, raw=value)
        if name == "Heartbeat":
            return cls(type=name, unix_ms=body["unix_ms"], raw=value)
        if name == "Lagged":
            return cls(type=name, missed=body["missed"], raw=value)
        # A variant newer than this package: pass it on untouched.
        return cls(type=name, raw=value)


@dataclass(frozen=True)
class DaemonInfo:
    """The daemon's own status."""

    #: Its package version.
    version: str
    #: The protocol version it speaks.
    protocol: int
    #: Its process id.
    pid: int
    #: The socket it listens on.
    socket: str
    #: Its data directory.
    data_dir: str
    #: Jobs that may run at once.
    max_concurrent: int
    #: The global bandwidth limit (bytes per second).
    bandwidth_limit: Optional[int]
    #: Jobs running now.
    running: int
    #: Jobs waiting.
    queued: int
    #: Milliseconds since it started.
    uptime_ms: int

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "DaemonInfo":
        """Read the JSON object."""
        fields: Dict[str, Any] = {name: value.get(name) for name in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass(frozen=True)
class PlannedFile:
    """One file of a dry-run plan."""

    #: The path inside the source.
    path: str
    #: Where it would be saved.
    dest: str
    #: Its size, if known.
    size: Optional[int]
    #: Its sha256, if known.
    sha256: Optional[str]
    #: Bytes still to fetch (0 when a verified copy is there).
    bytes_to_fetch: Optional[int]


@dataclass(frozen=True)
class Plan:
    """What an add would do."""

    #: The source, without credentials.
    source: str
    #: The resolved revision.
    revision: Optional[str]
    #: The files.
    files: Tuple[PlannedFile, ...]

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Plan":
        """Read the JSON object."""
        files: List[Dict[str, Any]] = value.get("files", [])
        return cls(
            source=value["source"],
            revision=value.get("revision"),
            files=tuple(PlannedFile(**f) for f in files),
        )
