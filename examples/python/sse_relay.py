"""A web backend that relays the daemon's live events to its page as server-sent events.

    python3 examples/python/sse_relay.py [PORT]     # then open http://127.0.0.1:PORT/

Standard library only: ``GET /events`` streams every event as ``event: <type>`` /
``data: <the event's JSON>``; ``POST /add`` with a URL in the body queues a download. Each
browser connection has its own event stream (``mdl.Client.events()``), so a slow page never
holds up anything else.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mdl

PAGE = b"""<!doctype html><title>mdl downloads</title>
<form onsubmit="fetch('/add',{method:'POST',body:url.value});return false">
<input id=url size=80 placeholder="https://... or hf://org/name"> <button>add</button></form>
<pre id=log></pre>
<script>
const jobs = {}, log = document.getElementById('log');
const show = () => log.textContent = Object.values(jobs).map(j =>
  `${j.id}\\t${j.state}\\t${j.bytes_done}/${j.bytes_total ?? '?'}\\t${j.source}`).join('\\n');
const es = new EventSource('/events');
es.addEventListener('Snapshot', e => { for (const j of JSON.parse(e.data).Snapshot) jobs[j.id] = j; show(); });
es.addEventListener('Progress', e => { const p = JSON.parse(e.data).Progress;
  if (jobs[p.job]) { jobs[p.job].bytes_done = p.job_bytes_done; show(); } });
for (const t of ['Queued','Started','Completed','Failed','Paused','Resumed','Cancelled','Updated'])
  es.addEventListener(t, e => { const j = JSON.parse(e.data)[t]; jobs[j.id] = j; show(); });
</script>"""

CLIENT = mdl.Client()


class Handler(BaseHTTPRequestHandler):
    """``/`` the page, ``/events`` the SSE stream, ``POST /add`` queue a URL."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(PAGE)
            return
        if self.path != "/events":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        with CLIENT.events() as events:
            try:
                for event in events:
                    data = json.dumps(event.raw)
                    self.wfile.write(f"event: {event.type}\ndata: {data}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page went away

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/add":
            self.send_error(404)
            return
        source = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode().strip()
        try:
            job = CLIENT.add(source)
        except mdl.MdlError as e:
            self.send_response(400 if isinstance(e, mdl.InvalidRequestError) else 502)
            self.end_headers()
            self.wfile.write(str(e).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        ids = [j.id for j in job] if isinstance(job, list) else [job.id]
        self.wfile.write(json.dumps({"jobs": ids}).encode())


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8377
    print(f"http://127.0.0.1:{port}/")
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
