"""``ensure``: make sure every file an app's model registry lists is present and intact.

A spec is a dict (or any object with the same attributes, e.g. a dataclass such as
:class:`ModelSpec`) with:

* ``id``: the name the result is keyed by;
* ``url``: the file's URL, or the base URL of ``files`` when ``files`` is given;
* ``files``: file names under ``url`` (optional);
* ``sha256``: one checksum per file, in the order of ``files`` (a single string without
  ``files``); 64 hex digits are a sha256, 32 an md5; ``None`` means "present when it exists";
* ``save_dir``: the directory the files go to (relative: from the current directory);
* ``save_as``: names on disk, in the order of ``files`` (optional; default: the URL's last
  path segment);
* ``additional_urls``: further files, each a dict (or object) with ``url``, ``sha256`` and
  optional ``save_as``, or a bare URL.

The semantics are those of ``mdlctl ensure``: hash what is on disk, queue a download only for
what is missing or damaged (a damaged file the daemon believes complete is re-verified and so
fetched again), wait for those downloads, and return every spec's local paths in order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
)
from urllib.parse import unquote, urlsplit

from .errors import InvalidRequestError
from .types import Progress

if TYPE_CHECKING:
    from .client import Client

__all__ = ["ModelSpec", "AdditionalFile", "Spec", "PlannedFile", "plan", "is_intact", "ensure"]


@dataclass
class AdditionalFile:
    """A further file of a spec, with its own URL."""

    #: The file's URL.
    url: str
    #: Its sha256 (64 hex) or md5 (32 hex).
    sha256: Optional[str] = None
    #: The name on disk.
    save_as: Optional[str] = None


@dataclass
class ModelSpec:
    """One entry of an app's model registry (see the module docs)."""

    #: The key of the result.
    id: str
    #: The file's URL, or the base URL of ``files``.
    url: str
    #: Where the files go.
    save_dir: Union[str, "os.PathLike[str]"]
    #: File names under ``url``.
    files: Sequence[str] = ()
    #: One checksum per file (or one string without ``files``).
    sha256: Union[str, Sequence[Optional[str]], None] = None
    #: Names on disk, in the order of ``files``.
    save_as: Sequence[str] = ()
    #: Further files, each with its own URL.
    additional_urls: Sequence[Union[str, AdditionalFile, Mapping[str, Any]]] = field(
        default_factory=list
    )


#: A spec: a mapping, or an object with the same attributes.
Spec = Union[Mapping[str, Any], ModelSpec, Any]


@dataclass(frozen=True)
class PlannedFile:
    """One file as ``ensure`` handles it."""

    #: The spec's id.
    spec: str
    #: Where it comes from.
    url: str
    #: The save directory (absolute).
    dir: Path
    #: The file name in it.
    name: str
    #: Expected sha256 (lowercase hex).
    sha256: Optional[str]
    #: Expected md5 (lowercase hex).
    md5: Optional[str]

    @property
    def path(self) -> Path:
        """The full local path."""
        return self.dir / self.name


def _get(spec: Spec, key: str, default: Any = None) -> Any:
    if isinstance(spec, Mapping):
        return spec.get(key, default)
    return getattr(spec, key, default)


def _checksum(value: Optional[str], where: str) -> Dict[str, Optional[str]]:
    if value is None or value == "":
        return {"sha256": None, "md5": None}
    v = value.strip().lower()
    if all(c in "0123456789abcdef" for c in v):
        if len(v) == 64:
            return {"sha256": v, "md5": None}
        if len(v) == 32:
            return {"sha256": None, "md5": v}
    raise InvalidRequestError(
        f"{where}: checksum {value!r} is neither a sha256 (64 hex) nor an md5 (32 hex)"
    )


def _url_file_name(url: str) -> Optional[str]:
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return unquote(segments[-1]) if segments else None


def _name(explicit: Optional[str], url: str, where: str) -> str:
    name = explicit or _url_file_name(url)
    if not name:
        raise InvalidRequestError(f"{where}: cannot name the file of {url}; give save_as")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidRequestError(f"{where}: save_as {name!r} must be a plain file name")
    return name


def plan(specs: Iterable[Spec]) -> List[PlannedFile]:
    """Every file of every spec, with absolute directories; raises
    :class:`~mdl.InvalidRequestError` for a malformed spec."""
    out: List[PlannedFile] = []
    for spec in specs:
        spec_id = _get(spec, "id")
        url = _get(spec, "url")
        save_dir = _get(spec, "save_dir")
        where = f"model {spec_id!r}"
        if not spec_id or not url or save_dir is None:
            raise InvalidRequestError(f"{where}: a spec needs id, url and save_dir")
        directory = Path(os.path.abspath(os.fspath(save_dir)))
        files: Sequence[str] = list(_get(spec, "files") or ())
        sums = _get(spec, "sha256")
        if isinstance(sums, str) or sums is None:
            sums = [sums] * max(1, len(files)) if sums is None else [sums]
        sums = list(sums)
        save_as: Sequence[Optional[str]] = list(_get(spec, "save_as") or ())
        if files:
            urls = [url.rstrip("/") + "/" + f.lstrip("/") for f in files]
        else:
            urls = [url]
        if len(sums) != len(urls):
            raise InvalidRequestError(
                f"{where}: {len(urls)} file(s) but {len(sums)} checksum(s); give one per file"
            )
        if save_as and len(save_as) != len(urls):
            raise InvalidRequestError(
                f"{where}: {len(urls)} file(s) but {len(save_as)} save_as name(s)"
            )
        for i, file_url in enumerate(urls):
            name = _name(save_as[i] if save_as else None, file_url, where)
            out.append(
                PlannedFile(spec_id, file_url, directory, name, **_checksum(sums[i], where))
            )
        for extra in _get(spec, "additional_urls") or ():
            if isinstance(extra, str):
                extra = {"url": extra}
            extra_url = _get(extra, "url")
            if not extra_url:
                raise InvalidRequestError(f"{where}: an additional file without url")
            checksum = _get(extra, "sha256") or _get(extra, "checksum") or _get(extra, "md5")
            name = _name(_get(extra, "save_as"), extra_url, where)
            out.append(
                PlannedFile(spec_id, extra_url, directory, name, **_checksum(checksum, where))
            )
    return out


def is_intact(file: PlannedFile) -> bool:
    """Whether the local file exists and matches its checksum (any file, without one)."""
    path = file.path
    if not path.is_file():
        return False
    if file.sha256 is None and file.md5 is None:
        return True
    digest = hashlib.sha256() if file.sha256 is not None else hashlib.md5()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == (file.sha256 or file.md5)


def ensure(
    client: "Client",
    specs: Iterable[Spec],
    *,
    on_progress: Optional[Callable[[Progress], None]] = None,
    priority: int = 0,
) -> Dict[str, List[Path]]:
    """See the module docs; raises the typed error of the first download that fails."""
    files = plan(specs)
    result: Dict[str, List[Path]] = {}
    queued: List[int] = []
    for file in files:
        result.setdefault(file.spec, []).append(file.path)
        if is_intact(file):
            continue
        if file.path.is_file():
            # Damaged: it is about to be replaced anyway. Removing it first also keeps the
            # daemon from trusting its record of the earlier download (kept by size and
            # modification second), which could otherwise "complete" from this very file.
            try:
                file.path.unlink()
            except OSError:
                pass
        outcome, job = client.add_reply(
            file.url,
            dest=file.dir,
            sha256=file.sha256,
            md5=file.md5,
            priority=priority,
            name=file.name,
        )
        assert not isinstance(job, list), "a URL queues one job"
        if outcome == "already_complete":
            # The daemon believes its earlier download intact, but the file fails its
            # checksum here: have it re-hash the file and fetch it again.
            client.verify([job.id])
        queued.append(job.id)
    if queued:
        client.wait(queued, on_progress=on_progress)
    return result
