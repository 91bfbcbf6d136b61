#!/usr/bin/env python3
"""idle-conns: open N keep-alive connections, send one request on each, wait
for every answer, then hold them idle until killed.

usage: idle-conns.py HOST PORT N [PATH]

Connects in batches (so the listen backlog never overflows and no SYN has to
be retried), non-blocking, with one epoll.  When every connection has its
answer (or the deadline passes) it prints one line on stdout:

    READY open=N answered=M failed=F seconds=S

and then sleeps, holding the sockets, until SIGTERM or SIGINT.
"""
import errno
import select
import signal
import socket
import sys
import time

BATCH = 256
DEADLINE = 60.0


def main():
    if len(sys.argv) < 4:
        sys.stderr.write("usage: idle-conns.py HOST PORT N [PATH]\n")
        return 64
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/healthz"
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()

    ep = select.epoll()
    socks = {}          # fd -> socket
    state = {}          # fd -> "connecting" | "reading" | "done"
    got = {}            # fd -> bytes received
    answered = failed = 0
    started = time.monotonic()
    opened = 0

    def fail(fd):
        nonlocal failed
        failed += 1
        try:
            ep.unregister(fd)
        except OSError:
            pass
        socks.pop(fd).close()
        state.pop(fd, None)

    while (answered + failed) < n and time.monotonic() - started < DEADLINE:
        # open the next batch once the previous one is mostly answered
        pending = opened - answered - failed
        while opened < n and pending < BATCH:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                opened += 1
                pending = opened - answered - failed
                continue
            fd = s.fileno()
            socks[fd] = s
            state[fd] = "connecting"
            got[fd] = b""
            ep.register(fd, select.EPOLLOUT)
            opened += 1
            pending += 1
        for fd, ev in ep.poll(0.5):
            s = socks.get(fd)
            if s is None:
                continue
            if state[fd] == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(fd)
                    continue
                try:
                    s.send(req)
                except OSError:
                    fail(fd)
                    continue
                state[fd] = "reading"
                ep.modify(fd, select.EPOLLIN)
            elif state[fd] == "reading":
                try:
                    b = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    fail(fd)
                    continue
                if not b:
                    fail(fd)
                    continue
                got[fd] += b
                data = got[fd]
                head_end = data.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                clen = 0
                for line in data[:head_end].split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        clen = int(v.strip())
                if len(data) >= head_end + 4 + clen:
                    state[fd] = "done"
                    answered += 1
                    got[fd] = b""
                    ep.unregister(fd)

    sys.stdout.write("READY open=%d answered=%d failed=%d seconds=%.2f\n"
                     % (len(socks), answered, failed, time.monotonic() - started))
    sys.stdout.flush()

    stop = [False]

    def on_sig(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    while not stop[0]:
        signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
