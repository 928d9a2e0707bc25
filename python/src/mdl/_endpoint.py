"""Where the daemon listens, and starting it when none answers, exactly as ``mdlctl`` does.

Socket: the explicit path, else ``MDL_SOCKET``, else ``$XDG_RUNTIME_DIR/mdl/mdld.sock``, else
``$TMPDIR/mdl-<uid>/mdld.sock`` (``/tmp`` when ``TMPDIR`` is unset); ``\\\\.\\pipe\\mdl-<user>``
on Windows.

Starting: ``mdlctl daemon start`` when ``mdlctl`` is on ``PATH`` (it finds ``mdld`` beside
itself, on ``PATH`` or in ``MDL_DAEMON_BIN``), else ``mdld`` itself (``MDL_DAEMON_BIN``, else
on ``PATH``) detached, logging to ``<data dir>/mdld.log``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import DaemonUnreachable

#: The environment variable that overrides the socket path.
SOCKET_ENV = "MDL_SOCKET"
#: The environment variable that names the daemon binary.
DAEMON_BIN_ENV = "MDL_DAEMON_BIN"
#: How long to wait for a started daemon to answer, in seconds.
START_TIMEOUT = 10.0


def default_socket_path() -> str:
    """The default endpoint, without overrides."""
    if os.name == "nt":
        return "\\\\.\\pipe\\mdl-" + os.environ.get("USERNAME", "user")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "mdl", "mdld.sock")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"mdl-{os.getuid()}", "mdld.sock")


def resolve_socket_path(explicit: Optional[str] = None) -> str:
    """The endpoint to use: ``explicit``, else ``MDL_SOCKET``, else the default."""
    if explicit:
        return os.fspath(explicit)
    return os.environ.get(SOCKET_ENV) or default_socket_path()


def data_dir() -> Optional[Path]:
    """mdl's data directory: ``MDL_DATA_DIR``, else ``$XDG_DATA_HOME/mdl``, else
    ``~/.local/share/mdl``."""
    if os.environ.get("MDL_DATA_DIR"):
        return Path(os.environ["MDL_DATA_DIR"])
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "mdl"
    if os.environ.get("HOME"):
        return Path(os.environ["HOME"]) / ".local/share/mdl"
    return None


def start_daemon(socket_path: str, pass_socket: bool) -> None:
    """Start a daemon for ``socket_path`` and return once it answers (or raise
    :class:`DaemonUnreachable`). ``pass_socket``: the path was chosen explicitly, so tell the
    daemon too."""
    mdlctl = shutil.which("mdlctl")
    if mdlctl:
        command: List[str] = [mdlctl]
        if pass_socket:
            command += ["--socket", os.path.abspath(socket_path)]
        result = subprocess.run(
            command + ["daemon", "start"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DaemonUnreachable(
                f"no daemon answers on {socket_path} and `mdlctl daemon start` failed: "
                f"{result.stderr.strip()}"
            )
        return
    mdld = os.environ.get(DAEMON_BIN_ENV) or shutil.which("mdld")
    if not mdld:
        raise DaemonUnreachable(
            f"no daemon answers on {socket_path} and neither mdlctl nor mdld is on PATH; "
            f"install them, set {DAEMON_BIN_ENV}, or start the daemon yourself (mdld --socket PATH)"
        )
    directory = data_dir()
    if directory is None:
        raise DaemonUnreachable("cannot start mdld: no data directory (set MDL_DATA_DIR or HOME)")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "mdld.log"
    command = [mdld] + (["--socket", os.path.abspath(socket_path)] if pass_socket else [])
    with open(log_path, "ab") as log:
        kwargs: Dict[str, Any] = {}
        if sys.platform != "win32":
            kwargs["start_new_session"] = True  # a Ctrl-C here must not reach the daemon
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **kwargs
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if os.name == "nt" or os.path.exists(socket_path):
            return  # the caller connects (and retries briefly)
        if child.poll() is not None:
            # Another daemon may have won a start race.
            if os.path.exists(socket_path):
                return
            raise DaemonUnreachable(
                f"mdld ({mdld}) exited ({child.returncode}) before answering on {socket_path}; "
                f"its output is in {log_path}"
            )
        time.sleep(0.05)
    raise DaemonUnreachable(
        f"mdld ({mdld}) did not answer on {socket_path} within {START_TIMEOUT:.0f} s; "
        f"its output is in {log_path}"
    )
