"""Typed errors: one class per error kind of the protocol (``docs/protocol.md``, "Error kinds").

Every error the daemon reports, on a reply or on a failed job, carries a ``kind``; the class
raised is chosen by that kind, so an app can catch exactly what it can act on::

    try:
        client.wait(job)
    except mdl.AuthError:
        ...  # ask for a token
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence, Type

if TYPE_CHECKING:
    from .types import Job

__all__ = [
    "MdlError",
    "InvalidRequestError",
    "AuthError",
    "NotFoundError",
    "NetworkError",
    "RateLimitedError",
    "IntegrityError",
    "NoSpaceError",
    "DaemonUnreachable",
    "CancelledError",
    "error_for",
]


class MdlError(Exception):
    """Base class of every error this package raises (kind ``other`` when raised itself)."""

    #: The protocol's error kind (``auth``, ``not_found``, ...).
    kind: str = "other"
    #: The exit code ``mdlctl`` uses for this kind.
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        job: Optional["Job"] = None,
        jobs: Sequence["Job"] = (),
    ) -> None:
        super().__init__(message)
        #: What went wrong, for a person.
        self.message = message
        if kind is not None:
            self.kind = kind
        #: The failed job, when a job failed.
        self.job = job
        #: Every job of the call as it ended (for :meth:`mdl.Client.wait`).
        self.jobs = list(jobs)


class InvalidRequestError(MdlError):
    """The request itself is wrong: a bad argument, an unknown job, a conflicting destination."""

    kind = "invalid_request"
    exit_code = 2


class AuthError(MdlError):
    """The server wants credentials, or refused the ones given (a gated repository too)."""

    kind = "auth"
    exit_code = 3


class NotFoundError(MdlError):
    """The server says the file or repository does not exist."""

    kind = "not_found"
    exit_code = 4


class NetworkError(MdlError):
    """Network or server failure that persisted after retries (kinds ``network`` and ``fatal``)."""

    kind = "network"
    exit_code = 5


class RateLimitedError(MdlError):
    """The server kept rate-limiting after retries."""

    kind = "rate_limited"
    exit_code = 6


class IntegrityError(MdlError):
    """A checksum or size did not match; nothing is left at the final path."""

    kind = "integrity"
    exit_code = 7


class NoSpaceError(MdlError):
    """The destination is full; the job is paused and keeps its bytes (resume it later)."""

    kind = "no_space"
    exit_code = 8


class DaemonUnreachable(MdlError, ConnectionError):
    """No daemon answers and none could be started, or it speaks another protocol version."""

    kind = "unreachable"
    exit_code = 9


class CancelledError(MdlError):
    """A job that was waited for was cancelled."""

    kind = "other"
    exit_code = 1


_BY_KIND: Dict[str, Type[MdlError]] = {
    "other": MdlError,
    "invalid_request": InvalidRequestError,
    "auth": AuthError,
    "not_found": NotFoundError,
    "network": NetworkError,
    "fatal": NetworkError,
    "rate_limited": RateLimitedError,
    "integrity": IntegrityError,
    "no_space": NoSpaceError,
    "unreachable": DaemonUnreachable,
}


def error_for(
    kind: str,
    message: str,
    *,
    job: Optional["Job"] = None,
    jobs: Sequence["Job"] = (),
) -> MdlError:
    """The typed error for a protocol error ``kind`` (an unknown kind gives :class:`MdlError`)."""
    cls = _BY_KIND.get(kind, MdlError)
    return cls(message, kind=kind, job=job, jobs=jobs)
