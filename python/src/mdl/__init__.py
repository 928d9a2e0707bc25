"""Queue model downloads with the mdl daemon (``mdld``) from Python.

Standard library only. The package speaks the daemon's JSON protocol (``docs/protocol.md``)
over its local socket; it holds no state and repeats no rule the daemon already has::

    import mdl

    client = mdl.Client()                      # finds (or starts) the daemon like mdlctl
    job = client.add("https://example.com/model.safetensors", sha256="...", dest="models")
    client.wait(job, on_progress=print)        # raises mdl.IntegrityError, mdl.AuthError, ...

    paths = client.ensure([{"id": "vae", "url": "https://...", "sha256": "...",
                            "save_dir": "models/vae"}])

    path = mdl.snapshot_download("org/name")   # huggingface_hub's meaning and return value
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional

from .client import FORWARDED_ENV, Client, EventStream, JobRef
from .ensure import AdditionalFile, ModelSpec, Spec
from .errors import (
    AuthError,
    CancelledError,
    DaemonUnreachable,
    IntegrityError,
    InvalidRequestError,
    MdlError,
    NetworkError,
    NoSpaceError,
    NotFoundError,
    RateLimitedError,
    error_for,
)
from .hf import hf_hub_download, snapshot_download
from .types import DaemonInfo, ErrorInfo, Event, FileInfo, Job, Plan, PlannedFile, Progress

__version__ = "0.1.0"

__all__ = [
    "Client",
    "EventStream",
    "JobRef",
    "FORWARDED_ENV",
    "ModelSpec",
    "AdditionalFile",
    "Spec",
    "ensure",
    "snapshot_download",
    "hf_hub_download",
    "Job",
    "FileInfo",
    "ErrorInfo",
    "Progress",
    "Event",
    "DaemonInfo",
    "Plan",
    "PlannedFile",
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


def ensure(
    specs: Iterable[Spec],
    *,
    on_progress: Optional[Callable[[Progress], None]] = None,
    client: Optional[Client] = None,
    **kwargs: Any,
) -> Dict[str, List[Any]]:
    """:meth:`Client.ensure` on a default client (see :mod:`mdl.ensure`)."""
    return (client or Client()).ensure(specs, on_progress=on_progress, **kwargs)
