#!/usr/bin/env python3
"""Helpers of bench/store.sh (standard library only, plus the repository's own `mdl` package
for the wire protocol).

  store.py serve PORT                 a loopback HTTP/1.1 server: GET /f/<anything> answers 16
                                      bytes (keep-alive, Content-Length, HEAD and Range too)
  store.py ls SOCKET                  time one List request over the raw protocol (JSON codec)
  store.py status SOCKET ID N         N Status requests on one connection; prints the median
  store.py rss PID                    VmRSS and VmHWM of PID, in KiB
  store.py wait SOCKET COUNT TIMEOUT  wait until no job is queued or running and at least
                                      COUNT jobs exist (DaemonStatus polling); prints seconds
  store.py settled SOCKET TIMEOUT      wait until the start-up check of every completed file is
                                      done (Health polling); prints seconds
  store.py parse FILE                 time json.loads of FILE's text; prints seconds
  store.py stats VALUE...             "median min max" of the values
"""

import http.server
import json
import os
import socketserver
import statistics
import sys
import time

BODY = b"0123456789abcdef"


def serve(port: int) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _head(self, status: int, length: int, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()

        def _answer(self, body: bool):
            if not self.path.startswith("/f/"):
                self._head(404, 0)
                return
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                first, _, last = rng[6:].partition("-")
                start = int(first or 0)
                end = min(int(last) if last else len(BODY) - 1, len(BODY) - 1)
                part = BODY[start : end + 1]
                self._head(206, len(part), [("Content-Range", f"bytes {start}-{end}/{len(BODY)}")])
                if body:
                    self.wfile.write(part)
                return
            self._head(200, len(BODY))
            if body:
                self.wfile.write(BODY)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 512

    Server(("127.0.0.1", port), Handler).serve_forever()


def connect(sock: str):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "src"))
    from mdl._wire import Connection  # noqa: E402

    return Connection(sock, "bench-store")


def ls(sock: str) -> None:
    conn = connect(sock)
    start = time.perf_counter()
    reply = conn.request("List")
    took = time.perf_counter() - start
    print(f"{took:.6f} {len(reply['Jobs'])}")


def status(sock: str, job: int, n: int) -> None:
    conn = connect(sock)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        reply = conn.request({"Status": job})
        times.append(time.perf_counter() - start)
        assert "Job" in reply, reply
    print(f"{statistics.median(times):.6f}")


def rss(pid: int) -> None:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    print(values["VmRSS"], values["VmHWM"])


def wait(sock: str, count: int, timeout: float) -> None:
    start = time.monotonic()
    conn = connect(sock)
    while True:
        info = conn.request("DaemonStatus")["Daemon"]
        if info["queued"] == 0 and info["running"] == 0:
            jobs = len(conn.request("List")["Jobs"])
            if jobs >= count:
                print(f"{time.monotonic() - start:.3f}")
                return
        if time.monotonic() - start > timeout:
            sys.exit(f"timeout: {info}")
        time.sleep(0.5)


def settled(sock: str, timeout: float) -> None:
    """Wait until the daemon's start-up check of every completed file is done; print how long
    that took from now."""
    start = time.monotonic()
    conn = connect(sock)
    while not conn.request("Health")["Health"]["startup_check_done"]:
        if time.monotonic() - start > timeout:
            sys.exit("timeout: the start-up check is not done")
        time.sleep(0.05)
    print(f"{time.monotonic() - start:.3f}")


def parse(path: str) -> None:
    """Time json.loads of a file's text (read first)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = time.perf_counter()
    json.loads(text)
    print(f"{time.perf_counter() - start:.6f}")


def stats(values) -> None:
    v = [float(x) for x in values]
    print(f"{statistics.median(v):.6f} {min(v):.6f} {max(v):.6f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(int(args[0]))
    elif cmd == "ls":
        ls(args[0])
    elif cmd == "status":
        status(args[0], int(args[1]), int(args[2]))
    elif cmd == "rss":
        rss(int(args[0]))
    elif cmd == "wait":
        wait(args[0], int(args[1]), float(args[2]))
    elif cmd == "parse":
        parse(args[0])
    elif cmd == "settled":
        settled(args[0], float(args[1]))
    elif cmd == "stats":
        stats(args)
    else:
        sys.exit(__doc__)
