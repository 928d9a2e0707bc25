"""Frames and the JSON codec: an 8-byte big-endian length, then one JSON document.

The first frame is the ``Hello``; because its payload starts with ``{`` the daemon speaks JSON
on this connection for good. See ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, BinaryIO, Optional

from .errors import DaemonUnreachable, InvalidRequestError, error_for

#: The protocol version this package speaks.
PROTOCOL_VERSION = 1
#: ``Hello.magic``: "mdl" and a NUL, as a JSON array of bytes.
MAGIC = [109, 100, 108, 0]
#: The largest payload a frame may carry.
MAX_FRAME_LEN = 16 * 1024 * 1024


class Connection:
    """One connection to the daemon, past the handshake. Not thread-safe: use one per thread
    (``mdl.Client`` locks its own)."""

    def __init__(self, path: str, client_version: str, timeout: Optional[float] = None) -> None:
        self.path = path
        self._sock: Optional[socket.socket] = None
        self._pipe: Optional[BinaryIO] = None
        try:
            if os.name == "nt":
                # A named pipe opens like a file.
                self._pipe = open(path, "r+b", buffering=0)  # noqa: SIM115
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(path)
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock
        except OSError as e:
            raise DaemonUnreachable(f"cannot connect to mdld at {path}: {e}") from e
        hello = {"magic": MAGIC, "protocol": PROTOCOL_VERSION, "client_version": client_version}
        try:
            self.send(hello)
            reply = self.recv()
        except BaseException:
            self.close()
            raise
        if isinstance(reply, dict) and "Welcome" in reply:
            #: The daemon's package version.
            self.daemon_version: str = reply["Welcome"]["daemon_version"]
            return
        self.close()
        if isinstance(reply, dict) and "Incompatible" in reply:
            i = reply["Incompatible"]
            raise DaemonUnreachable(
                f"the running daemon (mdld {i['daemon_version']}) speaks protocol {i['expected']}, "
                f"this client speaks protocol {i['got']}; restart the daemon from the same "
                "installation as the client (`mdlctl daemon stop` and run the command again)"
            )
        if isinstance(reply, dict) and "Refused" in reply:
            refused = reply["Refused"]
            raise error_for(refused.get("kind", "other"), refused.get("message", ""))
        raise DaemonUnreachable(f"unexpected handshake reply from {path}: {reply!r:.200}")

    def settimeout(self, timeout: Optional[float]) -> None:
        """Limit how long one read may block (``None``: forever)."""
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def send(self, message: Any) -> None:
        """Send one message as one frame."""
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        if len(payload) > MAX_FRAME_LEN:
            raise InvalidRequestError(
                f"message of {len(payload)} bytes exceeds the frame cap of {MAX_FRAME_LEN}"
            )
        data = len(payload).to_bytes(8, "big") + payload
        try:
            if self._sock is not None:
                self._sock.sendall(data)
            elif self._pipe is not None:
                self._pipe.write(data)
            else:
                raise OSError("connection is closed")
        except OSError as e:
            raise DaemonUnreachable(f"lost the connection to mdld at {self.path}: {e}") from e

    def recv(self) -> Any:
        """Receive one message; ``None`` when the daemon closed the connection between frames."""
        header = self._read(8, allow_eof=True)
        if header is None:
            return None
        length = int.from_bytes(header, "big")
        if length > MAX_FRAME_LEN:
            raise DaemonUnreachable(f"frame of {length} bytes exceeds the cap of {MAX_FRAME_LEN}")
        payload = self._read(length, allow_eof=False) or b""
        try:
            return json.loads(payload)
        except ValueError as e:
            raise DaemonUnreachable(f"undecodable frame from mdld: {e}") from e

    def request(self, message: Any) -> Any:
        """Send a request and return its reply; an ``Error`` reply raises its typed error.

        A list too large for one frame arrives as ``JobsPart`` frames ended by ``Jobs``; they
        are joined into one ``Jobs`` reply.
        """
        self.send(message)
        parts: list = []
        while True:
            reply = self.recv()
            if isinstance(reply, dict) and "JobsPart" in reply:
                parts.extend(reply["JobsPart"])
                continue
            break
        if parts and isinstance(reply, dict) and "Jobs" in reply:
            reply = {"Jobs": parts + reply["Jobs"]}
        if reply is None:
            raise DaemonUnreachable(f"the daemon at {self.path} closed the connection")
        if isinstance(reply, dict) and "Error" in reply:
            raise error_for(reply["Error"]["kind"], reply["Error"]["message"])
        return reply

    def _read(self, n: int, *, allow_eof: bool) -> Optional[bytes]:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                if self._sock is not None:
                    chunk = self._sock.recv(min(n - len(chunks), 1 << 20))
                elif self._pipe is not None:
                    chunk = self._pipe.read(n - len(chunks)) or b""
                else:
                    chunk = b""
            except socket.timeout:
                raise
            except OSError as e:
                raise DaemonUnreachable(f"lost the connection to mdld at {self.path}: {e}") from e
            if not chunk:
                if allow_eof and not chunks:
                    return None
                raise DaemonUnreachable(f"the daemon at {self.path} closed the connection mid-frame")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        """Close the connection."""
        for closable in (self._sock, self._pipe):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass
        self._sock = None
        self._pipe = None


