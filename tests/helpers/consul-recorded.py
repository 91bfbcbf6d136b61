#!/usr/bin/env python3
"""consul-recorded.py: Consul's HTTP API as documented, played from a script.

Consul has no server in Debian, so the consul: source and Consul
registration are tested against this: recorded answers of the health API
(GET /v1/health/service/NAME, the documented JSON array of {Node, Service,
Checks}) with the documented blocking-query behaviour (X-Consul-Index on
every answer; a request with ?index=N at or past the current index is held
until the state changes or ?wait= runs out), and the agent endpoints a
registration uses (/v1/agent/service/register, /v1/agent/check/pass/ID,
/v1/agent/service/deregister/ID).

    consul-recorded.py PORT_FILE LOG_FILE SCRIPT_FILE

binds 127.0.0.1 port 0 and writes the port to PORT_FILE.  SCRIPT_FILE is a
JSON list of states, each {"index": N, "body": [...]}; the first is current
at start.  Every request is appended to LOG_FILE as one JSON line once
answered: {"method", "path", "query": {...}, "answered_index", "status",
"body"}; health queries also to LOG_FILE.arrivals as they arrive (a held
query is there before it is answered).
Control, for the test:
    POST /_control/next       the next scripted state becomes current
    POST /_control/fail       health queries answer 500 (held ones at once)
    POST /_control/recover    they answer again
    POST /_control/health/S   GET /_control/health answers status S
    POST /_control/forget     the agent forgets its services (as a restart)
"""
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file, log_file, script_file = sys.argv[1:4]
with open(script_file) as f:
    states = json.load(f)

cond = threading.Condition()
cur = {"i": 0, "fail": False, "health": 200, "services": {}, "checks": set()}
log_lock = threading.Lock()


def record(entry):
    with log_lock:
        with open(log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()


def parse_wait(s):
    if not s:
        return 300.0
    mult = 1.0
    if s.endswith("ms"):
        s, mult = s[:-2], 0.001
    elif s.endswith("s"):
        s = s[:-1]
    elif s.endswith("m"):
        s, mult = s[:-1], 60.0
    return min(float(s) * mult, 600.0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        if u.path == "/_control/health":
            record({"method": "GET", "path": u.path, "query": q,
                    "status": cur["health"]})
            return self.answer(cur["health"], {})
        if not u.path.startswith("/v1/health/service/"):
            return self.answer(404, b"not found")
        entry = {"method": "GET", "path": u.path, "query": q,
                 "token": self.headers.get("X-Consul-Token"),
                 "t": time.time()}
        arrival = dict(entry)
        with log_lock:
            with open(log_file + ".arrivals", "a") as f:
                f.write(json.dumps(arrival) + "\n")
        want = int(q["index"]) if q.get("index", "") not in ("", "0") else 0
        deadline = time.time() + parse_wait(q.get("wait"))
        with cond:
            # Blocking: hold while nothing changed past the index given.
            while (want and not cur["fail"] and
                   states[cur["i"]]["index"] == want and
                   time.time() < deadline):
                cond.wait(deadline - time.time())
            if cur["fail"]:
                entry["status"] = 500
                record(entry)
                return self.answer(500, b"rpc error: No cluster leader")
            st = states[cur["i"]]
        entry.update(status=200, answered_index=st["index"])
        record(entry)
        self.answer(200, st["body"], {"X-Consul-Index": str(st["index"])})

    def do_PUT(self):
        u = urllib.parse.urlsplit(self.path)
        body = self.body()
        entry = {"method": "PUT", "path": u.path, "body": body,
                 "token": self.headers.get("X-Consul-Token")}
        status = 200
        if u.path == "/v1/agent/service/register":
            svc = json.loads(body)
            cur["services"][svc["ID"]] = svc
            cur["checks"].add(svc["Check"]["CheckID"])
        elif u.path.startswith("/v1/agent/check/pass/"):
            cid = urllib.parse.unquote(u.path[len("/v1/agent/check/pass/"):])
            if cid not in cur["checks"]:
                status = 404  # "Unknown check ID"
        elif u.path.startswith("/v1/agent/service/deregister/"):
            sid = urllib.parse.unquote(
                u.path[len("/v1/agent/service/deregister/"):])
            if sid in cur["services"]:
                del cur["services"][sid]
                cur["checks"].discard("service:" + sid)
            else:
                status = 404
        else:
            status = 404
        entry["status"] = status
        record(entry)
        self.answer(status, b"" if status == 200 else b"Unknown")

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        self.body()
        with cond:
            if u.path == "/_control/next":
                cur["i"] = min(cur["i"] + 1, len(states) - 1)
            elif u.path == "/_control/fail":
                cur["fail"] = True
            elif u.path == "/_control/recover":
                cur["fail"] = False
            elif u.path.startswith("/_control/health/"):
                cur["health"] = int(u.path.rsplit("/", 1)[1])
            elif u.path == "/_control/forget":
                cur["services"].clear()
                cur["checks"].clear()
            else:
                return self.answer(404, b"")
            cond.notify_all()
        self.answer(200, {"state": cur["i"]})


def orphan_guard(parent):
    # A test run killed before its teardown leaves no server behind.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


threading.Thread(target=orphan_guard, args=(os.getppid(),),
                 daemon=True).start()
srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
