#!/usr/bin/env python3
"""tests/helpers/http-sink.py: a loopback HTTP server that records every
request and answers a scripted sequence of statuses.  It stands in for a
backend that Debian does not package (an OpenTelemetry collector, Zipkin,
...): tests check what arrives against the backend's documented wire format.

usage: http-sink.py DIR [--port N] [--statuses LIST] [--then STATUS]
                   [--body PATH=TEXT ...]

  DIR              where requests are recorded (created if missing)
  --port N         listen on 127.0.0.1:N; default a free port (bind port 0)
  --statuses LIST  comma-separated answers, the Nth request (in arrival
                   order, whatever its path) gets the Nth: STATUS, or
                   STATUS:SECONDS to add "Retry-After: SECONDS"
                   (e.g. "503:1,200,400")
  --then STATUS    the answer once LIST is used up (default 200)
  --body PATH=TEXT the body of the answer to the first request on PATH
                   (such as an OTLP partialSuccess); repeatable

Once listening it writes the port to DIR/port (atomically).  Request N
(numbered from 1 in arrival order, 4 digits) is recorded as:

  DIR/NNNN.body  the body as received (still gzipped if it was)
  DIR/NNNN.json  the body decoded: gunzipped when Content-Encoding is gzip
  DIR/NNNN.req   one JSON object: n, method, path, headers (lowercase
                 names), status (what it answered), bytes (body as
                 received), gzip_error (a string, when gunzip failed)

NNNN.req is written last and renamed into place, so once it exists the
record is complete.  Every other answer has the body "{}"
(application/json, which is also an OTLP/HTTP full success).  TERM or INT ends it.
"""
import argparse
import gzip
import http.server
import json
import os
import signal
import sys
import threading


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def main():
    ap = argparse.ArgumentParser(prog="http-sink.py")
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--statuses", default="")
    ap.add_argument("--then", type=int, default=200)
    ap.add_argument("--body", action="append", default=[])
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    script = []
    for item in filter(None, a.statuses.split(",")):
        status, _, retry = item.partition(":")
        script.append((int(status), retry or None))
    bodies = {}
    for item in a.body:
        path, _, text = item.partition("=")
        bodies[path] = text.encode()
    lock = threading.Lock()
    state = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("http-sink: " + (fmt % args) + "\n")

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            with lock:
                state["n"] += 1
                seq = state["n"]
                if seq <= len(script):
                    status, retry = script[seq - 1]
                else:
                    status, retry = a.then, None
                out = bodies.pop(self.path, b"{}")
            rec = {
                "n": seq,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "status": status,
                "bytes": len(body),
            }
            decoded = body
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    decoded = gzip.decompress(body)
                except Exception as e:  # recorded for the test to see
                    rec["gzip_error"] = str(e)
            base = os.path.join(a.dir, "%04d" % seq)
            write_atomic(base + ".body", body)
            write_atomic(base + ".json", decoded)
            write_atomic(base + ".req", (json.dumps(rec) + "\n").encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            if retry is not None:
                self.send_header("Retry-After", retry)
            self.end_headers()
            self.wfile.write(out)

        do_POST = handle_any
        do_PUT = handle_any
        do_GET = handle_any

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", a.port), Handler)
    write_atomic(os.path.join(a.dir, "port"),
                 ("%d\n" % srv.server_address[1]).encode())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
