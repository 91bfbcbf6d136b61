#!/usr/bin/env python3
"""tests/helpers/odd-upstream.py: a loopback HTTP/1.1 upstream for the
gk-client suite, for answers nginx will not give.  Raw sockets, one thread
a connection, keep-alive.

usage: odd-upstream.py DIR

Once listening on 127.0.0.1 (a free port) it writes the port to DIR/port.
Each request is appended to DIR/log as one JSON line: method, path,
headers (lowercase names, a list of [name, value] in order).

  /echo      200, the request's headers as a JSON object (lowercase names)
  /304cl     304 Not Modified with Content-Length: 5 (the length of the
             representation, RFC 9110 8.6) and no content
  /many      200 "ok" with about 76 KiB of header section: a Connection
             header naming 3000 options (o0..o2999), and 6000 headers of
             distinct names (h0..h5999), none of them named
  /204       204 No Content
  /bad/KIND  200 "ok" with a header section no valid answer has: KIND
             name (a header name with a space), ctl (a value with a
             control byte), dupcl (two different Content-Lengths), tecl
             (chunked, and a Content-Length)
  /cl/N      200 with Content-Length: N (any digits) and "ok", the
             connection kept open
  /stray     200 "ok"; 200 ms later bytes no request asked for (a 408)
             on the idle connection, 300 ms later the close; then the
             file DIR/stray-closed
  /short     200 with Content-Length: 100, 10 bytes of it, then a close
  /size      200, the length of the request body received, as text
  /trailers  200, chunked "hello", then the trailer fields X-Trail-A
             and X-Trail-B
  /fold      200 with a header folded over two lines (obs-fold)
  /slow/MS   200 "slow" after MS milliseconds
  /binary/N  200, N bytes that are not UTF-8 (0xff)
  /healthz   200 "ok"; while the file DIR/hang exists, 5 s late
  /conn      200 with "Connection: X-Hop" (and X-Hop, X-Stay headers)
  /status/N  "HTTP/1.1 N Odd", N as given (any digits), and "ok"
  /early     103 Early Hints with Content-Length: 5 and, as RFC 9112 6.3
             says of a 1xx, no content; then 200 "ok"
  anything   200 "ok"
"""
import json
import os
import socket
import sys
import threading
import time

d = sys.argv[1]
os.makedirs(d, exist_ok=True)
lock = threading.Lock()


def answer(c, status, reason, headers, body=b""):
    lines = ["HTTP/1.1 %d %s" % (status, reason)]
    lines += ["%s: %s" % kv for kv in headers]
    c.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def serve(c):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                b = c.recv(65536)
                if not b:
                    return
                buf += b
            top, buf = buf.split(b"\r\n\r\n", 1)
            lines = top.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            hs = []
            for l in lines[1:]:
                n, _, v = l.partition(":")
                hs.append([n.strip().lower(), v.strip()])
            cl = int(dict(hs).get("content-length", "0"))
            while len(buf) < cl:
                b = c.recv(65536)
                if not b:
                    return
                buf += b
            buf = buf[cl:]
            with lock, open(os.path.join(d, "log"), "a") as f:
                f.write(json.dumps({"method": method, "path": path,
                                    "headers": hs}) + "\n")
            if path == "/echo":
                body = json.dumps(dict(hs)).encode()
                answer(c, 200, "OK", [("Content-Type", "application/json"),
                                      ("Content-Length", len(body))], body)
            elif path == "/304cl":
                answer(c, 304, "Not Modified", [("ETag", '"x"'),
                                                ("Content-Length", 5)])
            elif path == "/conn":
                answer(c, 200, "OK", [("Connection", "X-Hop"),
                                      ("X-Hop", "1"), ("X-Stay", "1"),
                                      ("Content-Length", 3)], b"ok\n")
            elif path == "/short":
                answer(c, 200, "OK", [("Content-Length", 100)], b"x" * 10)
                return
            elif path == "/size":
                body = str(cl).encode()
                answer(c, 200, "OK", [("Content-Length", len(body))], body)
            elif path == "/healthz":
                if os.path.exists(os.path.join(d, "hang")):
                    time.sleep(5)
                answer(c, 200, "OK", [("Content-Length", 3)], b"ok\n")
            elif path == "/trailers":
                answer(c, 200, "OK", [("Transfer-Encoding", "chunked"),
                                      ("Trailer", "X-Trail-A, X-Trail-B")],
                       b"5\r\nhello\r\n0\r\nX-Trail-A: 1\r\n"
                       b"X-Trail-B: 2\r\n\r\n")
            elif path == "/fold":
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Fold: one\r\n two: 2\r\n"
                          b"X-After: 1\r\nContent-Length: 3\r\n\r\nok\n")
            elif path.startswith("/slow/"):
                time.sleep(int(path[6:]) / 1000)
                answer(c, 200, "OK", [("Content-Length", 5)], b"slow\n")
            elif path.startswith("/binary/"):
                body = b"\xff" * int(path[8:])
                answer(c, 200, "OK", [("Content-Length", len(body))], body)
            elif path.startswith("/status/"):
                c.sendall(b"HTTP/1.1 " + path[8:].encode() + b" Odd\r\n"
                          b"Content-Length: 3\r\n\r\nok\n")
            elif path == "/early":
                c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n"
                          b"Content-Length: 5\r\n\r\n")
                answer(c, 200, "OK", [("Content-Length", 3)], b"ok\n")
            elif path == "/many":
                hs = [("Connection", ",".join("o%d" % i
                                              for i in range(3000)))]
                hs += [("h%d" % i, "1") for i in range(6000)]
                answer(c, 200, "OK", hs + [("Content-Length", 3)], b"ok\n")
            elif path == "/204":
                answer(c, 204, "No Content", [("X-Up", "1")])
            elif path.startswith("/bad/"):
                c.sendall({
                    "name": b"HTTP/1.1 200 OK\r\nBad Name: x\r\n"
                            b"Content-Length: 2\r\n\r\nok",
                    "ctl": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n"
                           b"Content-Length: 2\r\n\r\nok",
                    "dupcl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             b"Content-Length: 3\r\n\r\nok!",
                    "tecl": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n"
                            b"2\r\nok\r\n0\r\n\r\n",
                }[path[5:]])
            elif path.startswith("/cl/"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " +
                          path[4:].encode() + b"\r\n\r\nok")
            elif path == "/stray":
                answer(c, 200, "OK", [("Content-Length", 3)], b"ok\n")
                time.sleep(0.2)
                c.sendall(b"HTTP/1.1 408 Request Timeout\r\n"
                          b"Content-Length: 0\r\n\r\n")
                time.sleep(0.3)
                c.close()
                with open(os.path.join(d, "stray-closed"), "w") as f:
                    f.write("closed\n")
                return
            else:
                answer(c, 200, "OK", [("Content-Length", 3)], b"ok\n")
    except OSError:
        pass
    finally:
        c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
with open(os.path.join(d, "port.tmp"), "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
