"""``snapshot_download`` and ``hf_hub_download`` with ``huggingface_hub``'s meanings and return
values, fetched by the daemon (its queue, resume and verification). Swap one import::

    from mdl import snapshot_download   # instead of: from huggingface_hub import ...

Without ``local_dir`` the files land in the Hugging Face cache (``cache_dir``, else
``HF_HUB_CACHE``, ``HF_HOME``..., as ``huggingface_hub`` resolves it) in its layout, so the real
``huggingface_hub`` finds them offline afterwards; the result is the snapshot folder
(``.../models--ORG--NAME/snapshots/COMMIT``) or the file in it. With ``local_dir`` the files go
to ``local_dir/<path in repo>`` and the result is ``local_dir`` (or the file in it).

Arguments ``huggingface_hub`` has and the daemon makes moot (``force_download``,
``resume_download``, ``etag_timeout``, ``max_workers``, ``tqdm_class``, ``user_agent``,
``proxies``, ``headers``, ...) are accepted and ignored: every download resumes and is
verified anyway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .client import Client, raise_for
from .errors import NotFoundError
from .types import Job

__all__ = ["snapshot_download", "hf_hub_download"]

_REPO_TYPES = {None: "", "model": "", "dataset": "datasets/", "space": "spaces/"}
_FOLDERS = {None: "models", "model": "models", "dataset": "datasets", "space": "spaces"}


def _patterns(value: Optional[Union[str, Sequence[str]]]) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _source(repo_id: str, repo_type: Optional[str], path: Optional[str] = None) -> str:
    if repo_type not in _REPO_TYPES:
        raise ValueError(f"invalid repo_type {repo_type!r}: use model, dataset or space")
    source = f"hf://{_REPO_TYPES[repo_type]}{repo_id}"
    return f"{source}/{path}" if path else source


def _env(cache_dir: Optional[Union[str, "os.PathLike[str]"]], endpoint: Optional[str]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    if cache_dir is not None:
        env["HF_HUB_CACHE"] = os.path.abspath(os.fspath(cache_dir))
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def _fetch(
    client: Optional[Client],
    source: str,
    *,
    revision: Optional[str],
    include: List[str],
    exclude: List[str],
    cache_dir: Optional[Union[str, "os.PathLike[str]"]],
    local_dir: Optional[Union[str, "os.PathLike[str]"]],
    token: Optional[Union[str, bool]],
    endpoint: Optional[str],
) -> Job:
    client = client or Client()
    job = client.add(
        source,
        dest=local_dir,
        revision=revision,
        include=include,
        exclude=exclude,
        token=token if isinstance(token, str) else None,
        env=_env(cache_dir, endpoint),
    )
    assert not isinstance(job, list)
    (done,) = client.wait([job.id])
    raise_for([done])
    return done


def _snapshot_dir(job: Job, repo_id: str, repo_type: Optional[str]) -> Path:
    folder = f"{_FOLDERS[repo_type]}--{repo_id.replace('/', '--')}"
    if not job.revision:
        raise NotFoundError(f"the daemon did not say which commit of {repo_id} it fetched")
    return Path(job.dest) / folder / "snapshots" / job.revision


def snapshot_download(
    repo_id: str,
    *,
    repo_type: Optional[str] = "model",
    revision: Optional[str] = None,
    allow_patterns: Optional[Union[str, Sequence[str]]] = None,
    ignore_patterns: Optional[Union[str, Sequence[str]]] = None,
    cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    local_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    token: Optional[Union[str, bool]] = None,
    endpoint: Optional[str] = None,
    client: Optional[Client] = None,
    **_ignored: Any,
) -> str:
    """Download a repository (the files matching ``allow_patterns`` and not
    ``ignore_patterns``) and return the snapshot folder, or ``local_dir``."""
    job = _fetch(
        client,
        _source(repo_id, repo_type),
        revision=revision,
        include=_patterns(allow_patterns),
        exclude=_patterns(ignore_patterns),
        cache_dir=cache_dir,
        local_dir=local_dir,
        token=token,
        endpoint=endpoint,
    )
    if local_dir is not None:
        return os.path.abspath(os.fspath(local_dir))
    return str(_snapshot_dir(job, repo_id, repo_type))


def hf_hub_download(
    repo_id: str,
    filename: str,
    *,
    subfolder: Optional[str] = None,
    repo_type: Optional[str] = "model",
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    local_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    token: Optional[Union[str, bool]] = None,
    endpoint: Optional[str] = None,
    client: Optional[Client] = None,
    **_ignored: Any,
) -> str:
    """Download one file of a repository and return its local path."""
    path = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
    job = _fetch(
        client,
        _source(repo_id, repo_type, path),
        revision=revision,
        include=[],
        exclude=[],
        cache_dir=cache_dir,
        local_dir=local_dir,
        token=token,
        endpoint=endpoint,
    )
    if local_dir is not None:
        return os.path.join(os.path.abspath(os.fspath(local_dir)), *path.split("/"))
    return str(_snapshot_dir(job, repo_id, repo_type).joinpath(*path.split("/")))
