#!/usr/bin/env bats
# gk-listener as a user sees it: real curl and raw sockets against a real
# listener on loopback.  Every listener runs in its own process group
# (start_bg) and teardown ends it.

load helpers/common

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/listener.err"
	HANDLER_LOG="$T/south.log"
	export HANDLER_LOG
	write_handler
}

teardown() {
	stop_all
}

# A wire handler that logs every line it reads to $HANDLER_LOG, writes its
# pid to $HANDLER_LOG.pid, and answers by path:
#   /hang...  never answered            /exit   exits with status 3
#   /junk     a line that is not JSON   /rev/N  held until three /rev/ are
#   anything else: 200, body "PATH\n"           in, then answered last first
#   /slow     answered after 1 s         /big/N  200, a body of N bytes that
#   /slow/S   answered after S seconds           starts with "PATH\n"
#   /closeout closes its stdout and lives on, reading nothing
#   /badjson  a line that starts with its id, then is not JSON
# It exits 1 at start while $DOWN_FILE exists.
write_handler() {
	cat >"$T/handler.py" <<'PY'
import json, os, sys, threading
down = os.environ.get("DOWN_FILE")
if down and os.path.exists(down):
    sys.exit(1)
log = open(os.environ["HANDLER_LOG"], "a", buffering=1)
with open(os.environ["HANDLER_LOG"] + ".pid", "w") as f:
    f.write(str(os.getpid()))
out = sys.stdout
held = []
lock = threading.Lock()
def answer(req):
    body = req.get("path", "") + "\n"
    if body.startswith("/big/"):
        body = body.ljust(int(body.split("/")[2]), "x")
    with lock:
        out.write(json.dumps({"id": req["id"], "status": 200,
            "headers": {"content-type": "text/plain"}, "body": body}) + "\n")
        out.flush()
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    log.write(line.decode())
    req = json.loads(line)
    if req.get("cancel"):
        continue
    path = req.get("path", "")
    if path.startswith("/hang"):
        continue
    if path == "/slow" or path.startswith("/slow/"):
        secs = float(path.split("/")[2]) if path.count("/") > 1 else 1.0
        threading.Timer(secs, answer, [req]).start()
        continue
    if path == "/exit":
        sys.exit(3)
    if path == "/closeout":
        os.close(1)
        threading.Event().wait()
    if path == "/junk":
        out.write("this is not json\n")
    elif path == "/badjson":
        out.write('{"id": %s, "status": 200, "body": "a "quoted" word"}\n'
            % json.dumps(req["id"]))
    elif path.startswith("/rev/"):
        held.append(req)
        if len(held) == 3:
            for r in reversed(held):
                answer(r)
            held = []
    else:
        answer(req)
    with lock:
        out.flush()
PY
}

# listener ARGS...: gk-listener -l 127.0.0.1:$PORT ARGS, started in the
# background; returns once it accepts connections (no request is made, so
# counts of requests and access events start at zero).
listener() {
	start_bg listener gk-listener -l "127.0.0.1:$PORT" "$@"
	LPID=$BG_PID
	wait_listening
}

_listening_or_dead() {
	bg_alive listener || return 0
	_port_open 127.0.0.1 "$PORT"
}

wait_listening() {
	wait_for -t 10 _listening_or_dead
	if ! bg_alive listener; then
		echo "gk-listener exited at start:" >&2
		cat "$ERR" >&2
		return 1
	fi
}

# The handler's pid, once it has started.
handler_pid() {
	wait_file "$HANDLER_LOG.pid" >&2 && cat "$HANDLER_LOG.pid"
}

# status URL [CURL ARGS]: the HTTP status code only.
status() {
	local url=$1
	shift
	curl -s -o /dev/null -m 10 -w '%{http_code}' "$@" "$url"
}

# The value of gk_http_requests_total{method,code} in the last metrics
# snapshot of the events.
requests_total() {
	events "$ERR" "select(.type == \"metrics\")
		| .metrics[] | select(.name == \"gk_http_requests_total\")
		| .series[] | select(.labels.method == \"$1\" and .labels.code == \"$2\")
		| .value" | tail -n 1
}

# A metrics snapshot now, and wait for it: every event written before it
# is then in the file.
snapshot() {
	local before
	before=$(count_events "$ERR" '.type == "metrics"')
	kill -USR1 "$LPID"
	wait_for -t 10 _more_events "$ERR" '.type == "metrics"' "$before"
}

_more_events() {
	[ "$(count_events "$1" "$2")" -gt "$3" ]
}

# ---- requests through the stack ----

@test "GET through gk-listener -- hello is 200 with Date and Content-Length" {
	listener -- hello
	run curl -s -i -m 10 "$URL/"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200 OK'
	assert_line --regexp '^[Dd]ate: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT'
	assert_line --regexp '^[Cc]ontent-[Ll]ength: 6'
	assert_line --index 0 --partial '200'
	assert_output --partial $'\r\n\r\nhello'
}

@test "POST with a body through gk-listener -- hello is 200" {
	listener -- hello
	run curl -s -i -m 10 --data-binary 'some body' "$URL/post"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200'
	assert_line --regexp '^[Cc]ontent-[Ll]ength: 6'
	assert_line --regexp '^[Dd]ate: '
	assert_output --partial 'hello'
}

@test "the issue's jq handler line answers hi" {
	listener -- jq -c --unbuffered '{id, status: 200, body: "hi\n"}'
	run curl -s -m 10 -w '|%{http_code}' "$URL/anything?x=1"
	assert_success
	assert_output $'hi\n|200'
}

@test "keep-alive: two requests from curl share one connection" {
	listener -- hello
	run curl -s -m 10 -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
		"$URL/a" "$URL/b"
	assert_success
	assert_line --index 0 '200 1'
	assert_line --index 1 '200 0'
}

@test "pipelining: three requests in one write are answered in request order" {
	# The handler answers the three last first; the client must not see that.
	listener -- python3 "$T/handler.py"
	run pyhttp '
import gkhttp, sys
s = gkhttp.connect(sys.argv[1])
s.sendall(b"GET /rev/1 HTTP/1.1\r\nHost: x\r\n\r\n"
          b"GET /rev/2 HTTP/1.1\r\nHost: x\r\n\r\n"
          b"GET /rev/3 HTTP/1.1\r\nHost: x\r\n\r\n")
for i in range(3):
    st, h, body = gkhttp.read_response(s)
    print(st, body.decode().strip())
' "$PORT"
	assert_success
	assert_output $'200 /rev/1\n200 /rev/2\n200 /rev/3'
}

@test "a client that pipelines and never reads: the listener stops reading it, its memory stays bounded, every answer comes in order once it reads" {
	# 400 requests each answered 100 kB: up to 40 MB if the listener
	# kept reading while its output to this client piles up; bounded,
	# it holds at most the 32 answers of a full pipeline (3.2 MB).
	listener -- python3 "$T/handler.py"
	run pyhttp '
import gkhttp, socket, sys, time
port, lpid, log = sys.argv[1], sys.argv[2], sys.argv[3]
status = lambda key: gkhttp.proc_status(lpid, key)
handled = lambda: gkhttp.lines_in(log)
before = status("VmRSS:")
s = gkhttp.slow_reader(port, 10)
n = 400
s.sendall(b"".join(b"GET /big/100000/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                   for i in range(n)))
# A full pipeline went south; give the listener time to go on if it
# would (a bound on the time, not a synchronisation).
deadline = time.time() + 10
while handled() < 32 and time.time() < deadline:
    time.sleep(0.05)
deadline = time.time() + 1.5
while handled() < 100 and time.time() < deadline:
    time.sleep(0.05)
print("south before reading:", "bounded" if handled() < 100 else handled())
for i in range(n):
    st, h, body = gkhttp.read_response(s)
    want = b"/big/100000/%d\n" % i
    if st != 200 or not body.startswith(want) or len(body) != 100000:
        print("answer", i, st, body[:30])
        break
else:
    print("all", n, "in order")
grown = status("VmHWM:") - before
print("peak growth:", "bounded" if grown < 10000 else "%d kB" % grown)
' "$PORT" "$LPID" "$HANDLER_LOG"
	assert_success
	if [ -n "${GK_SANITIZED:-}" ]; then
		# ASan's quarantine keeps freed memory: the peak measures it,
		# not the listener.  What went south is the bound seen here.
		assert_line -n 0 'south before reading: bounded'
		assert_line -n 1 'all 400 in order'
		return
	fi
	assert_output $'south before reading: bounded\nall 400 in order\npeak growth: bounded'
}

@test "answers held behind a slow one count toward the 64 KiB bound: the listener stops reading, its memory stays bounded, every answer comes in order" {
	# The first request is answered after 3 s; 40 more, each answered
	# 1 MB at once, trickle in behind it.  Answers that wait for an
	# earlier one are held in memory: counted only by the 32-request
	# bound, they would pile up to 31 MB before the first is answered.
	listener -- python3 "$T/handler.py"
	run pyhttp '
import gkhttp, socket, sys, time
port, lpid, log = sys.argv[1], sys.argv[2], sys.argv[3]
status = lambda key: gkhttp.proc_status(lpid, key)
handled = lambda: gkhttp.lines_in(log)
before = status("VmRSS:")
s = gkhttp.slow_reader(port, 20)
start = time.time()
n = 40
s.sendall(b"GET /slow/3 HTTP/1.1\r\nHost: x\r\n\r\n")
for i in range(n):
    s.sendall(b"GET /big/1000000/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    time.sleep(0.02)
# Measured before the slow answer is due (at 3 s): what was read then,
# and the memory the held answers took.
while time.time() < start + 2.5:
    time.sleep(0.05)
south = handled()
grown = status("VmHWM:") - before
print("south while the first waited:", "bounded" if south < 10 else south)
print("peak growth while the first waited:",
      "bounded" if grown < 10000 else "%d kB" % grown)
st, h, body = gkhttp.read_response(s)
ok = st == 200 and body == b"/slow/3\n"
for i in range(n):
    st, h, body = gkhttp.read_response(s)
    want = b"/big/1000000/%d\n" % i
    if st != 200 or not body.startswith(want) or len(body) != 1000000:
        ok = False
        print("answer", i, st, body[:30])
        break
print("all in order" if ok else "not in order")
' "$PORT" "$LPID" "$HANDLER_LOG"
	assert_success
	assert_line -n 0 'south while the first waited: bounded'
	assert_line 'all in order'
	if [ -z "${GK_SANITIZED:-}" ]; then
		# (ASan's quarantine keeps freed memory: the peak measures it.)
		assert_line -n 1 'peak growth while the first waited: bounded'
	fi
	snapshot
	run events "$ERR" 'select(.type == "metrics") | .metrics[]
		| select(.name == "gk_http_rejected_total") | .series[]
		| select(.labels.reason == "unsent_output") | .value'
	[ "$(tail -n 1 <<<"$output")" -ge 1 ]
}

@test "HTTP/1.0 request is answered and the connection closed" {
	listener -- hello
	run curl -s -0 -m 10 -w '|%{http_code}' "$URL/"
	assert_output $'hello\n|200'
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET / HTTP/1.0\r\n\r'
	assert_output --partial 'hello'
	assert_line --index 0 --regexp '^HTTP/1\.[01] 200'
	assert_line 'closed'
}

@test "an HTTP/1.0 request is answered with status line HTTP/1.1, keep-alive as 1.0 asked" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r'
	assert_line --index 0 --regexp $'^HTTP/1\\.1 200 OK\r$'
	assert_line --regexp $'^Connection: keep-alive\r$'
	assert_line --regexp $'^Connection: close\r$'
	[ "$(grep -c '^HTTP/1\.1 200 OK' <<<"$output")" = 2 ]
	assert_line closed
}

@test "HTTP/1.0 with Connection: keep-alive, close is answered with Connection: close and closed" {
	listener -- python3 "$T/handler.py"
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /a HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /b HTTP/1.0\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	assert_line --regexp '^Connection: close'
	assert_line closed
	assert_equal "$(grep -c '^HTTP/1.1 ' <<<"$output")" 1
	run jq -r .path "$HANDLER_LOG"
	assert_output /a
}

@test "HTTP/1.0 with Connection: keep-alive keeps the connection" {
	listener -- hello
	run pyhttp '
import gkhttp, sys
s = gkhttp.connect(sys.argv[1])
for i in range(2):
    gkhttp.request(s, path="/k", headers={"Connection": "keep-alive"}, version="1.0")
    print(gkhttp.read_response(s)[0])
' "$PORT"
	assert_success
	assert_output $'200\n200'
}

@test "a chunked request body reaches the handler whole" {
	listener -- jq -c --unbuffered '{id, status: 200, body: .body}'
	run curl -s -m 10 -H 'Transfer-Encoding: chunked' --data-binary 'hello chunked world' "$URL/echo"
	assert_success
	assert_output 'hello chunked world'
	# Two chunks sent by hand, and a trailer.
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nabcde\r\n3\r\nfgh\r\n0\r\nX-T: 1\r\n\r\n')
	assert_output --partial $'\r\n\r\nabcdefgh'
}

@test "Expect: 100-continue gets 100 Continue before the body is sent" {
	listener -- jq -c --unbuffered '{id, status: 200, body: .body}'
	run curl -s -v -m 10 --expect100-timeout 10 -H 'Expect: 100-continue' \
		--data-binary 'the body' "$URL/upload"
	assert_success
	assert_output --partial '< HTTP/1.1 100 Continue'
	assert_output --partial 'the body'
	# Pipelined behind a request still in flight: the 100 comes after
	# that one's answer, and the client that waits for it is not stalled.
	run pyhttp '
import gkhttp, socket, sys
s = gkhttp.connect(sys.argv[1])
s.sendall(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
    b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    b"Content-Length: 8\r\n\r\n")
seen = []
try:
    while not seen or seen[-1] != 100:
        st, _, body = gkhttp.read_response(s)
        seen.append(st)
    s.sendall(b"the body")
    st, _, body = gkhttp.read_response(s)
    seen.append(st)
    seen.append(body.decode())
except socket.timeout:
    seen.append("timeout")
print(*seen)
' "$PORT"
	assert_output '200 100 200 the body'
}

@test "HEAD is answered with Content-Length and no body" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200'
	assert_line --regexp $'^[Cc]ontent-[Ll]ength: 6\r$'
	refute_output --partial 'hello'
	assert_line 'closed'
	# and on a kept connection, the next response follows at once
	run pyhttp '
import gkhttp, sys
s = gkhttp.connect(sys.argv[1])
gkhttp.request(s, method="HEAD", path="/")
st, h, b = gkhttp.read_response(s, head=True)
print(st, h.get("content-length"), len(b))
gkhttp.request(s, path="/")
st, h, b = gkhttp.read_response(s)
print(st, b.decode().strip())
' "$PORT"
	assert_output $'200 6 0\n200 hello'
	# an error the listener answers to a HEAD has no body either
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'HEAD / HTTP/1.1\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line --regexp $'^Content-Length: [1-9][0-9]*\r$'
	refute_output --partial 'host'
	assert_line closed
}

@test "Connection: close is answered and the connection closed" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200'
	assert_line --regexp $'^[Cc]onnection: close\r$'
	assert_line 'closed'
}

# linger_probe CASE: one connection that sends a request which closes the
# connection with 100 kB more behind it (more pipelined requests, or the
# rest of a body), waits, then reads.  Prints how the connection ended
# (eof or reset), the status line and the body length.  Bytes left unread
# when a socket is closed make Linux send a reset, which throws away what
# the client has not read yet: the wait lets the reset happen first if it
# is going to; the small receive buffer keeps most of a big answer on the
# listener's side until the client reads.
linger_probe() {
	pyhttp '
import gkhttp, socket, sys, time
port, case = int(sys.argv[1]), sys.argv[2]
s = gkhttp.slow_reader(port, 10)
if case == "close":
    req = b"GET /big/1000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    extra = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n" * 3000
elif case == "http10":
    req = b"GET /big/1000000 HTTP/1.0\r\n\r\n"
    extra = b"GET /second HTTP/1.0\r\n\r\n" * 4000
else:
    req = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
    extra = b"x" * 100000
s.sendall(req + extra)
time.sleep(0.5)
out, state = b"", "eof"
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except ConnectionResetError:
    state = "reset"
head, _, body = out.partition(b"\r\n\r\n")
print(state, head.split(b"\r\n")[0].decode(), len(body))
' "$PORT" "$1"
}

@test "Connection: close with more requests pipelined behind it: the whole answer arrives, then a clean close, not a reset" {
	listener -- python3 "$T/handler.py"
	run linger_probe close
	assert_success
	assert_output 'eof HTTP/1.1 200 OK 1000000'
	run linger_probe http10
	assert_output 'eof HTTP/1.1 200 OK 1000000'
	run jq -r .path "$HANDLER_LOG"
	assert_output $'/big/1000000\n/big/1000000'
}

@test "a 413 while the client still sends its body reaches the client, then a clean close, not a reset" {
	listener -- hello
	run linger_probe 413
	assert_success
	assert_output --regexp '^eof HTTP/1\.1 413 Content Too Large [0-9]+$'
	# curl sees the 413 too, not a failed send
	head -c 3000000 /dev/zero >"$T/big"
	run curl -s -m 10 -o /dev/null -w '%{http_code}' --data-binary @"$T/big" "$URL/"
	assert_output 413
}

# gauge NAME: its value in a metrics snapshot taken now.
gauge() {
	snapshot
	events "$ERR" "select(.type == \"metrics\") | .metrics[]
		| select(.name == \"$1\") | .series[0].value" | tail -n 1
}

_gauge_is() {
	[ "$(gauge "$1")" = "$2" ]
}

# keep_open_client [EXTRA]: in the background, a client that sends a
# request with Connection: close and EXTRA bytes after it, reads its answer
# to the end, writes "STATUS-LINE then eof" to $T/client.out and keeps its
# end open.
keep_open_client() {
	start_bg client python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + sys.argv[2].encode())
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
print(out.split(b"\r\n")[0].decode(), "then eof", flush=True)
time.sleep(60)
' "$PORT" "${1:-}"
	wait_file "$T/client.out"
	run cat "$T/client.out"
	assert_output 'HTTP/1.1 200 OK then eof'
}

@test "after the last answer a connection lingers, reading and discarding, until the client closes or --lingering-timeout passes with nothing read" {
	listener --lingering-timeout 5s -- hello
	keep_open_client 'more bytes'
	run gauge gk_http_lingering_connections
	assert_output 1
	run gauge gk_http_connections
	assert_output 1
	# Nothing more comes: closed after --lingering-timeout.
	wait_for -t 15 _gauge_is gk_http_lingering_connections 0
	run gauge gk_http_connections
	assert_output 0
}

@test "--lingering-time 0 closes at once after the last answer" {
	listener --lingering-time 0 -- hello
	keep_open_client
	run gauge gk_http_connections
	assert_output 0
	run gauge gk_http_lingering_connections
	assert_output 0
}

@test "SIGTERM with a connection lingering: the listener still exits 0 within --drain-timeout" {
	listener --lingering-timeout 60s --lingering-time 60s --drain-timeout 1s -- hello
	keep_open_client 'more bytes'
	run gauge gk_http_lingering_connections
	assert_output 1
	kill -TERM "$LPID"
	wait_exit listener 15
	assert_equal "$BG_STATUS" 0
}

@test "SIGTERM closes an idle keep-alive connection lingering: a request the client sends as it closes is read and discarded, not answered with a reset" {
	listener --lingering-timeout 60s --lingering-time 60s --drain-timeout 20s -- hello
	start_bg client python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
out = b""
while b"hello" not in out:
    out += s.recv(65536)
print("answered", flush=True)
while s.recv(65536):
    pass
print("eof", flush=True)
# A request on its way as the listener closed: closed at once, the kernel
# answers it with a reset.
s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
print("sent", flush=True)
time.sleep(60)
' "$PORT"
	wait_grep answered "$T/client.out"
	kill -TERM "$LPID"
	wait_grep sent "$T/client.out"
	# The connection lingers: reading, not closed, until the client closes.
	run gauge gk_http_lingering_connections
	assert_output 1
	kill -- "-$(bg_pid client)"
	wait_exit listener 15
	assert_equal "$BG_STATUS" 0
}

# Send the bytes of stdin on one connection, then a GET /check on another;
# once /check is answered, anything the first one ran is in $HANDLER_LOG.
after_close_case() {
	run http_raw 127.0.0.1 "$PORT" 5
	assert_line --index 0 --regexp '^HTTP/1\.[01] 200 '
	assert_line closed
	[ "$(grep -c '^HTTP/1' <<<"$output")" = 1 ]
	run curl -s -m 10 "$URL/check"
	assert_output /check
	run jq -r .path "$HANDLER_LOG"
	assert_output $'/first\n/check'
}

@test "requests after Connection: close in the same packet are neither run nor answered" {
	listener -- python3 "$T/handler.py"
	after_close_case <<<$'GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\nPOST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r'
}

@test "requests after an HTTP/1.0 request without keep-alive are neither run nor answered" {
	listener -- python3 "$T/handler.py"
	after_close_case <<<$'GET /first HTTP/1.0\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r'
}

@test "the wire request carries method, path, query, lowercase headers, remote, deadline" {
	listener --timeout 30s -- python3 "$T/handler.py"
	run curl -s -m 10 -H 'X-Mixed-Case: Value' -H 'X-Twice: 1' -H 'X-Twice: 2' \
		--data-binary 'b=1' "$URL/some/path?a=1&c=%20"
	assert_output /some/path
	run jq -c 'select(.path == "/some/path") | [.method, .query, .headers["x-mixed-case"], .headers["x-twice"], .body, (.id | type), (.remote | test("^127\\.0\\.0\\.1:[0-9]+$")), ((.deadline / 1000 - now) | . > 20 and . < 31)]' "$HANDLER_LOG"
	assert_output '["POST","a=1&c=%20","Value",["1","2"],"b=1","string",true,true]'
}

@test "repeated response headers from the handler are sent as repeated lines" {
	listener -- jq -c --unbuffered '{id, status: 201, headers: {"set-cookie": ["a=1", "b=2"], "x-one": "v"}, body: "ok\n"}'
	run curl -s -i -m 10 "$URL/"
	assert_line --index 0 --regexp '^HTTP/1\.1 201'
	assert_line --regexp $'^[Ss]et-[Cc]ookie: a=1\r$'
	assert_line --regexp $'^[Ss]et-[Cc]ookie: b=2\r$'
	assert_line --regexp $'^[Xx]-[Oo]ne: v\r$'
}

@test "a 1 MB response and a binary request body travel whole" {
	listener -- jq -c --unbuffered 'if .path == "/big" then {id, status: 200, body: ("x" * 1000000)} else {id, status: 200} + (if .body_b64 then {body_b64} else {body} end) end'
	run curl -s -m 20 -o "$T/big.out" -w '%{http_code} %{size_download}' "$URL/big"
	assert_output '200 1000000'
	run tr -d x <"$T/big.out"
	assert_output ''
	head -c 300000 /dev/urandom >"$T/rnd"
	curl -s -m 20 --data-binary @"$T/rnd" -o "$T/rnd.out" "$URL/echo"
	cmp "$T/rnd" "$T/rnd.out"
}

@test "a hundred pipelined requests are all answered, in order" {
	listener -- hello
	run pyhttp '
import gkhttp, sys
s = gkhttp.connect(sys.argv[1], timeout=10)
s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(100)))
ok = 0
for i in range(100):
    r = gkhttp.read_response(s)
    if r and r[0] == 200 and r[2] == b"hello\n":
        ok += 1
print(ok)
' "$PORT"
	assert_output 100
	snapshot
	run events "$ERR" 'select(.type == "access") | .path' 
	assert_equal "$(echo "$output" | head -n 3 | paste -sd ' ')" '/0 /1 /2'
	assert_equal "${#lines[@]}" 100
	assert_equal "$(echo "$output" | tail -n 1)" '/99'
}

@test "a bad request after a good one in a pipeline: 200 then 400, then close" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200'
	assert_line --regexp '^HTTP/1\.1 400'
	assert_line closed
	assert_equal "$(grep -c '^HTTP/1.1 ' <<<"$output")" 2
}

@test "an absolute-form target: its authority replaces Host; userinfo or a scheme other than http(s) is 400" {
	listener -- python3 "$T/handler.py"
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET http://evil.example/p?x=1 HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	run jq -r '[.path, .query, .headers.host] | @tsv' "$HANDLER_LOG"
	assert_output $'/p\tx=1\tevil.example'
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET http://user:pw@evil.example/ HTTP/1.1\r\nHost: good\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET ftp://evil.example/ HTTP/1.1\r\nHost: good\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	[ "$(wc -l <"$HANDLER_LOG")" = 1 ]
}

@test "a request target or header value that would not travel as UTF-8 is answered 400 with the reason, not changed" {
	listener -- python3 "$T/handler.py"
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_output --partial 'request target is not ASCII'
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /?q=\xff HTTP/1.1\r\nHost: x\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_output --partial 'header value is not UTF-8'
	# UTF-8 in a header value travels as it is
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /ok HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\nConnection: close\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	run jq -r '[.path, .headers["x-name"]] | @tsv' "$HANDLER_LOG"
	assert_output $'/ok\tcaf\u00e9'
}

@test "HTTP/1.1 without Host is answered 400" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET / HTTP/1.1\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line closed
}

@test "Expect: 100-continue with a body over --max-body gets 413 and no 100" {
	listener --max-body 1k -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 413'
	refute_output --partial '100 Continue'
}

# ---- bounds ----

@test "a malformed request is answered 400 and the connection closed" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'THIS IS NOT HTTP\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line --regexp '^[Dd]ate: '
	assert_line --regexp '^[Cc]ontent-[Ll]ength: [0-9]+'
	assert_line 'closed'
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line 'closed'
	# the listener still serves
	run status "$URL/"
	assert_output 200
}

@test "Content-Length together with Transfer-Encoding is 400 (smuggling)" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line 'closed'
	refute_output --partial 'hello'
}

@test "two Content-Length headers are 400, differing or not" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	assert_line 'closed'
	refute_output --partial 'hello'
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc')
	assert_line --index 0 --regexp '^HTTP/1\.1 400'
	refute_output --partial 'hello'
}

@test "a chunk extension or trailer field that another parser could frame otherwise is 400, and nothing runs (smuggling)" {
	listener -- python3 "$T/handler.py"
	# a bare LF inside a chunk extension: a parser that ends the chunk
	# line at a bare LF (RFC 9112 §2.2 lets it) sees other chunks
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a="b\nc"\r\nabc\r\n0\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_output --partial 'invalid chunk line'
	assert_line closed
	# a space after the size and no extension (RFC 9112 §7.1: BWS only
	# before ';'): a proxy in front may read the size otherwise
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_output --partial 'invalid chunk line'
	assert_line closed
	# whitespace between a trailer field's name and colon (RFC 9112 §5.1)
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T : 1\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	# an obs-folded trailer field (RFC 9112 §5.2)
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n 2\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	[ ! -s "$HANDLER_LOG" ]
	# what the grammar allows still passes: BWS, a quoted extension, a
	# trailer field
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3 ; a="b;c"\r\nabc\r\n0\r\nX-T: 1\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	run jq -r '[.path, .body] | @tsv' "$HANDLER_LOG"
	assert_output $'/ok\tabc'
}

@test "a chunk that declares more than --max-body is answered 413 at its size line" {
	listener --max-body 1k -- hello
	# the chunk's bytes never come: the answer must not wait for them
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n100000\r\nab')
	assert_line --index 0 --regexp '^HTTP/1\.1 413 '
	assert_line closed
	# chunk extensions are dropped, but count toward --max-body: 20 bytes
	# of data cannot carry 2 KB of them
	ext=$(head -c 97 /dev/zero | tr '\0' b)
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
		for i in $(seq 20); do printf '1;a=%s\r\nx\r\n' "$ext"; done
		printf '0\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 413 '
	assert_output --partial 'chunk extensions over the body limit'
	assert_line closed
}

@test "a Host that is not host[:port] is 400 and runs nothing; an empty one, an IPv6 literal or a port pass" {
	listener -- python3 "$T/handler.py"
	for h in 'a b' 'a/b' 'u@a' 'a:b' 'a?b' '[::1'; do
		run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET / HTTP/1.1\r\nHost: %s\r\n\r\n' "$h")
		assert_line --index 0 --regexp '^HTTP/1\.1 400 '
		assert_output --partial 'invalid host'
	done
	[ ! -s "$HANDLER_LOG" ]
	for h in '' 'example.com:8080' '[::1]:80' '10.0.0.1'; do
		run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /ok HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$h")
		assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	done
	run jq -r '.headers.host' "$HANDLER_LOG"
	assert_output $'\nexample.com:8080\n[::1]:80\n10.0.0.1'
}

@test "the asterisk-form target is for OPTIONS only, and a target with a tab is 400" {
	listener -- python3 "$T/handler.py"
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET * HTTP/1.1\r\nHost: x\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n')
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	[ ! -s "$HANDLER_LOG" ]
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	run jq -r '[.method, .path] | @tsv' "$HANDLER_LOG"
	assert_output $'OPTIONS\t*'
}

@test "an unknown or lowercase method is answered 501, a request line that is no request 400" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'FOO / HTTP/1.1\r\nHost: x\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 501 Not Implemented'
	assert_line closed
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'get / HTTP/1.1\r\nHost: x\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 501 '
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GARBAGE\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
}

@test "headers over --max-header are answered 431, a request line over it 414" {
	listener --max-header 1k -- hello
	big=$(head -c 2000 /dev/zero | tr '\0' a)
	run status "$URL/" -H "X-Big: $big"
	assert_output 431
	# RFC 9112 §3: a target longer than the server parses is 414
	run status "$URL/$big"
	assert_output 414
	# under the bound is fine
	run status "$URL/" -H "X-Small: abc"
	assert_output 200
	snapshot
	for reason in header_too_large uri_too_long; do
		run events "$ERR" "select(.type == \"metrics\") | .metrics[]
			| select(.name == \"gk_http_rejected_total\") | .series[]
			| select(.labels.reason == \"$reason\") | .value"
		assert_equal "$(tail -n 1 <<<"$output")" 1
	done
}

@test "a body over --max-body is answered 413" {
	listener --max-body 1k -- hello
	head -c 2000 /dev/zero | tr '\0' a >"$T/big"
	head -c 1000 /dev/zero | tr '\0' a >"$T/small"
	run status "$URL/" --data-binary @"$T/big"
	assert_output 413
	# a chunked body that grows past it too
	run status "$URL/" -H 'Transfer-Encoding: chunked' --data-binary @"$T/big"
	assert_output 413
	run status "$URL/" --data-binary @"$T/small"
	assert_output 200
}

@test "headers not complete within --header-timeout get 408 and close" {
	listener --header-timeout 500ms -- hello
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1], timeout=10)
t0 = time.monotonic()
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
r = gkhttp.read_response(s)
took = time.monotonic() - t0
print(r[0] if r else "none", gkhttp.closed_within(s, 5), took >= 0.4)
' "$PORT"
	assert_success
	assert_output '408 True True'
	# a byte every 100 ms does not push the deadline back (slowloris)
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1], timeout=10)
data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
t0 = time.monotonic()
s.setblocking(False)
got = b""
for i in range(len(data)):
    try:
        s.send(data[i:i+1])
    except OSError:
        break
    time.sleep(0.1)
    try:
        got += s.recv(4096)
    except BlockingIOError:
        pass
    except OSError:
        break
    if b"\r\n\r\n" in got or time.monotonic() - t0 > 10:
        break
print(got.split(b" ")[1].decode() if got else "none", time.monotonic() - t0 < 5)
' "$PORT"
	assert_success
	assert_output '408 True'
}

@test "a slow body upload that keeps moving outlasts --header-timeout; one that stalls for --idle-timeout gets 408" {
	listener --header-timeout 500ms --idle-timeout 2s -- hello
	# 8 pieces 250 ms apart: 2 s of body, four times --header-timeout
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1], timeout=10)
s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\n")
for i in range(8):
    time.sleep(0.25)
    s.sendall(b"a" * 1000)
r = gkhttp.read_response(s)
print(r[0] if r else "none")
' "$PORT"
	assert_success
	assert_output 200
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1], timeout=10)
t0 = time.monotonic()
s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\nabc")
r = gkhttp.read_response(s)
print(r[0] if r else "none", gkhttp.closed_within(s, 5), time.monotonic() - t0 >= 1.8)
' "$PORT"
	assert_success
	assert_output '408 True True'
}

@test "an unknown Transfer-Encoding is answered 501" {
	listener -- hello
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxxxx')
	assert_line --index 0 --regexp '^HTTP/1\.1 501'
	assert_line 'closed'
}

@test "a handler that never answers gets 504 after --timeout" {
	listener --timeout 500ms -- jq -c --unbuffered 'empty'
	run curl -s -m 10 -w '|%{http_code}|%{time_total}' "$URL/"
	assert_success
	[[ $output == *'|504|'* ]]
	took=${output##*|}
	# not before the timeout (the upper bound is curl's -m)
	python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.45 else 1)" "$took"
}

@test "a request answered 504 by --timeout is cancelled south" {
	listener --timeout 500ms -- python3 "$T/handler.py"
	run status "$URL/hang-timeout"
	assert_output 504
	id=$(jq -r 'select(.path == "/hang-timeout") | .id' "$HANDLER_LOG")
	[ -n "$id" ]
	_cancelled() { jq -e --arg id "$id" 'select(.id == $id and .cancel == true)' "$HANDLER_LOG" >/dev/null; }
	wait_for -t 10 _cancelled
}

@test "x-gk-timeout-ms from a gokit stack upstream shortens the deadline; 0 is answered 504 at once and never goes south; a value that is no number is ignored" {
	listener --timeout 20s -- python3 "$T/handler.py"
	run status "$URL/hang-left" -H 'x-gk-timeout-ms: 300'
	assert_output 504
	run status "$URL/hang-zero" -H 'x-gk-timeout-ms: 0' -m 5
	assert_output 504
	run status "$URL/plain" -H 'x-gk-timeout-ms: soon'
	assert_output 200
	run jq -r 'select(.path == "/plain") | .deadline - now * 1000 | . > 10000' "$HANDLER_LOG"
	assert_output true
	run grep -c '/hang-zero' "$HANDLER_LOG"
	assert_output 0
}

@test "--max-inflight 1 with a slow handler answers 503 with Retry-After" {
	listener --max-inflight 1 --timeout 20s -- python3 "$T/handler.py"
	curl -s -o /dev/null -m 20 "$URL/hang" &
	# the first request is in the handler
	wait_grep '"/hang"' "$HANDLER_LOG"
	run curl -s -i -m 10 "$URL/second"
	assert_line --index 0 --regexp '^HTTP/1\.1 503'
	assert_line --regexp '^[Rr]etry-[Aa]fter: [0-9]+'
	# it never went south
	run grep -c '"/second"' "$HANDLER_LOG"
	assert_output 0
}

@test "--max-conns N: connection N+1 gets 503, then a clean close even when its request is in, and the others still work" {
	listener --max-conns 2 -- hello
	run pyhttp '
import gkhttp, sys
port = sys.argv[1]
a = gkhttp.connect(port); gkhttp.request(a); print("a", gkhttp.read_response(a)[0])
b = gkhttp.connect(port); gkhttp.request(b); print("b", gkhttp.read_response(b)[0])
c = gkhttp.connect(port)
r = gkhttp.read_response(c)
print("c", r[0] if r else "closed", gkhttp.closed_within(c, 5))
# one whose request is in before the listener takes the connection (it
# is stopped meanwhile): closed with those bytes unread, the kernel would
# send a reset, which destroys the 503 on the client side
import os, signal
os.kill(int(sys.argv[2]), signal.SIGSTOP)
e = gkhttp.connect(port)
e.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 1000)
os.kill(int(sys.argv[2]), signal.SIGCONT)
out, end = b"", "eof"
try:
    while True:
        d = e.recv(65536)
        if not d:
            break
        out += d
except ConnectionResetError:
    end = "reset"
print("e", out.split(b" ")[1].decode() if out else "none", end)
gkhttp.request(a); print("a", gkhttp.read_response(a)[0])
gkhttp.request(b); print("b", gkhttp.read_response(b)[0])
a.close()
# a freed slot is usable again
import time
for i in range(100):
    d = gkhttp.connect(port); gkhttp.request(d); r = gkhttp.read_response(d)
    if r and r[0] == 200:
        break
    time.sleep(0.05)
print("d", r[0] if r else "closed")
' "$PORT" "$LPID"
	assert_success
	assert_output $'a 200\nb 200\nc 503 True\ne 503 eof\na 200\nb 200\nd 200'
}

@test "out of file descriptors: a connection past the limit is answered 503, and all is served once they free" {
	# 32 fds for the listener: about 20 client connections fit.  Past
	# that, accept(2) fails with EMFILE, and the connection would wait in
	# the kernel's queue while the listener, woken again and again for
	# it, spun at 100% CPU.
	start_bg listener prlimit --nofile=32 gk-listener -l "127.0.0.1:$PORT" \
		--no-access-log -- hello
	LPID=$BG_PID
	wait_listening
	run pyhttp '
import gkhttp, sys
port = sys.argv[1]
held, codes = [], []
for i in range(60):
    s = gkhttp.connect(port, timeout=5)
    held.append(s)
    try:
        gkhttp.request(s)
        r = gkhttp.read_response(s)
    except OSError:
        r = None
    codes.append(r[0] if r else "none")
    if r and r[0] == 503:
        print("refused closed", gkhttp.closed_within(s, 5))
    if codes[-1] != 200:
        break
print("first", codes[0], "last", codes[-1], "unanswered", codes.count("none"))
print("served", codes.count(200) >= 10)
for s in held:
    s.close()
import time
for i in range(100):
    s = gkhttp.connect(port)
    gkhttp.request(s)
    r = gkhttp.read_response(s)
    s.close()
    if r and r[0] == 200:
        break
    time.sleep(0.05)
print("after", r[0] if r else "none")
' "$PORT"
	assert_success
	assert_output $'refused closed True\nfirst 200 last 503 unanswered 0\nserved True\nafter 200'
	wait_event "$ERR" '.type == "log" and .level == "error" and
	    (.msg | startswith("out of file descriptors"))'
}

# accept_paused MODE PORT METRIC: with the listener's fd limit cut to 3,
# below every fd it holds, accept(2) fails with EMFILE even after the fd
# kept in reserve is closed, and the connection stays in the kernel's
# queue, ready every turn.  A request (MODE http or json) sent then must
# not make the listener spin (under 20 CPU ticks in 0.5 s), must be
# answered 200 once the limit is raised, and the pause must be logged and
# counted in METRIC.
accept_paused() {
	run pyhttp '
import gkhttp, json, subprocess, sys, time
mode, port, pid = sys.argv[1], sys.argv[2], sys.argv[3]
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
subprocess.run(["prlimit", "--pid", pid, "--nofile=3:"], check=True)
c = gkhttp.connect(port, timeout=10)
if mode == "http":
    gkhttp.request(c)
else:
    c.sendall(b"{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{}}\n")
before = cpu()
time.sleep(0.5)  # a window to measure CPU in, not a wait for a state
spent = cpu() - before
subprocess.run(["prlimit", "--pid", pid, "--nofile=1024:"], check=True)
if mode == "http":
    r = gkhttp.read_response(c)
    status = r[0] if r else "none"
else:
    status = json.loads(c.makefile("rb").readline())["status"]
print("cpu ticks in 0.5 s under 20:", spent < 20, spent)
print("then", status)
' "$1" "$2" "$LPID"
	assert_success
	assert_line --index 0 --regexp '^cpu ticks in 0.5 s under 20: True'
	assert_line --index 1 'then 200'
	wait_event "$ERR" '.type == "log" and .level == "error" and
	    .msg == "out of file descriptors: accepting paused"'
	snapshot
	run events "$ERR" "select(.type == \"metrics\") | .metrics[]
	    | select(.name == \"$3\") | .series[0].value"
	[ "${lines[-1]}" -ge 1 ]
}

@test "out of file descriptors even with the reserve freed: accepting pauses instead of spinning, is counted, and resumes" {
	listener --no-access-log -- hello
	accept_paused http "$PORT" gk_http_accept_pauses_total
}

@test "out of file descriptors on a wire (json:) socket: accepting pauses instead of spinning, is counted, and resumes" {
	JPORT=$(free_port)
	start_bg listener gk-listener -l "json:127.0.0.1:$JPORT" -- hello
	LPID=$BG_PID
	wait_port 127.0.0.1 "$JPORT"
	accept_paused json "$JPORT" gk_wire_accept_pauses_total
}

@test "--idle-timeout closes an idle keep-alive connection" {
	listener --idle-timeout 500ms -- hello
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1])
gkhttp.request(s)
print(gkhttp.read_response(s)[0])
t0 = time.monotonic()
closed = gkhttp.closed_within(s, 5)
print(closed, time.monotonic() - t0 >= 0.4)
' "$PORT"
	assert_success
	assert_output $'200\nTrue True'
}

@test "--idle-timeout does not cut an answer a slow client is still taking; one that takes none of it is closed" {
	listener --idle-timeout 300ms -- python3 "$T/handler.py"
	# 6 MB, more than the kernel buffers, read a little at a time for
	# longer than --idle-timeout in all
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.slow_reader(sys.argv[1], 10)
s.sendall(b"GET /big/6000000 HTTP/1.1\r\nHost: x\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
head, _, body = head.partition(b"\r\n\r\n")
n = len(body)
while n < 6000000:
    b = s.recv(16384)
    if not b:
        break
    n += len(b)
    time.sleep(0.0005)
print(head.split(b"\r\n")[0].decode(), n)
' "$PORT"
	assert_output 'HTTP/1.1 200 OK 6000000'
	# asked with Connection: close, and never read: closed all the same
	start_bg stuck python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /big/6000001 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
time.sleep(60)
' "$PORT"
	wait_grep '/big/6000001' "$HANDLER_LOG"
	wait_for -t 10 _gauge_is gk_http_connections 0
	run gauge gk_http_lingering_connections
	assert_output 0
}

@test "a response header with CR LF from the handler becomes 502 and an error event" {
	listener -- jq -c --unbuffered '{id, status: 200, headers: {"x-bad": "a\r\nInjected: yes"}, body: "x"}'
	run curl -s -i -m 10 "$URL/"
	assert_line --index 0 --regexp '^HTTP/1\.1 502'
	refute_output --partial 'Injected'
	wait_event "$ERR" '.type == "log" and .level == "error" and (.stage // "" | length > 0)'
}

@test "a response with status 700 becomes 502 and the error event names the stage" {
	listener -- jq -c --unbuffered '{id, status: 700, body: "x", error: {stage: "gk-fake", reason: "test"}}'
	run status "$URL/"
	assert_output 502
	wait_event "$ERR" '.type == "log" and .level == "error" and .stage == "gk-fake"'
}

@test "a 1xx status from the handler becomes 502 and an error event; the next pipelined answer is its own" {
	listener -- jq -c --unbuffered 'if .path == "/info" then {id, status: 103, body: "x"} else {id, status: 200, body: "ok\n"} end'
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET /info HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 502 '
	assert_output --regexp $'\r\n\r\nbad gateway\nHTTP/1\\.1 200 OK\r\n.*\r\n\r\nok\n'
	assert_line closed
	wait_event "$ERR" '.type == "log" and .level == "error" and (.why | test("200-599"))'
}

@test "a response header value with a control character from the handler becomes 502" {
	listener -- jq -c --unbuffered '{id, status: 200, headers: {"x-esc": "a\u001b[2Jb"}, body: "x"}'
	run status "$URL/"
	assert_output 502
	wait_event "$ERR" '.type == "log" and .level == "error" and (.why | test("control character"))'
}

@test "a 205 from the handler is sent without its body, with Content-Length: 0" {
	listener -- jq -c --unbuffered '{id, status: 205, body: "should not be sent"}'
	run http_raw 127.0.0.1 "$PORT" 5 <<<$'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r'
	assert_line --index 0 --regexp '^HTTP/1\.1 205 Reset Content'
	assert_line --regexp $'^Content-Length: 0\r$'
	refute_output --partial 'should not'
	assert_output --partial $'Connection: close\r\n\r\nclosed'
}

@test "a header name with a NUL from the handler becomes 502" {
	listener -- jq -c --unbuffered '{id, status: 200, headers: {"x-a\u0000b": "v"}, body: "x"}'
	run status "$URL/"
	assert_output 502
}

# ---- health ----

@test "/healthz is 200 while the stack runs, 503 while the south child is down" {
	export DOWN_FILE="$T/down"
	listener -- python3 "$T/handler.py"
	run curl -s -m 10 -w '|%{http_code}' "$URL/healthz"
	assert_output $'ok\n|200'
	handler_pid >/dev/null
	# the health check is the listener's own: it never goes south
	run grep -c healthz "$HANDLER_LOG"
	assert_output 0
	# the handler dies, and every restart fails while the down file exists
	touch "$DOWN_FILE"
	run status "$URL/exit"
	assert_output 502
	_health_503() { [ "$(status "$URL/healthz")" = 503 ]; }
	wait_for -t 10 _health_503
	rm -f "$DOWN_FILE"
	_health_200() { [ "$(status "$URL/healthz")" = 200 ]; }
	wait_for -t 15 _health_200
	run status "$URL/again"
	assert_output 200
}

@test "--health /ready moves the health check" {
	listener --health /ready -- jq -c --unbuffered '{id, status: 200, body: "handler\n"}'
	run curl -s -m 10 "$URL/ready"
	assert_output 'ok'
	run curl -s -m 10 "$URL/healthz"
	assert_output 'handler'
}

# ---- addresses ----

@test "several -l: IPv4, IPv6 and a unix socket with --mode 0600" {
	python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' ||
		skip "no IPv6 loopback here"
	P6=$(free_port)
	SOCK="$T/l.sock"
	listener -l "[::1]:$P6" -l "unix:$SOCK" --mode 0600 -- hello
	run curl -s -m 10 "$URL/"
	assert_output hello
	run curl -s -m 10 -g "http://[::1]:$P6/"
	assert_output hello
	run curl -s -m 10 --unix-socket "$SOCK" http://localhost/
	assert_output hello
	run stat -c '%a %F' "$SOCK"
	assert_output '600 socket'
}

@test "-l json:HOST:PORT speaks wire JSON lines over TCP" {
	JPORT=$(free_port)
	start_bg listener gk-listener -l "json:127.0.0.1:$JPORT" -- hello
	LPID=$BG_PID
	wait_port 127.0.0.1 "$JPORT"
	run pyhttp '
import gkhttp, json, sys
port = sys.argv[1]
a = gkhttp.connect(port)
b = gkhttp.connect(port)
# the same id on two connections: ids are unique per connection only
for s in (a, b):
    s.sendall(b"{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{}}\n")
for s in (a, b):
    f = s.makefile("rb")
    m = json.loads(f.readline())
    print(m["id"], m["status"], m.get("body", "").strip())
' "$JPORT"
	assert_success
	assert_output $'1 200 hello\n1 200 hello'
	# no HTTP there
	run http_raw 127.0.0.1 "$JPORT" 1 < <(printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
	refute_output --partial 'HTTP/1.1 200'
}

# ---- events and metrics ----

@test "access events by default: method, path, status, bytes, duration, remote" {
	listener -- hello
	curl -s -o /dev/null -m 10 "$URL/one"
	curl -s -o /dev/null -m 10 -d x "$URL/two"
	_two_access() { [ "$(count_events "$ERR" '.type == "access"')" -ge 2 ]; }
	wait_for -t 10 _two_access
	run events "$ERR" 'select(.type == "access") | [.proc, .method, .path, .status, .bytes, (.duration | type), (.duration >= 0), (.remote | test("^127\\.0\\.0\\.1:[0-9]+$"))] | @tsv'
	assert_line --index 0 $'gk-listener\tGET\t/one\t200\t6\tnumber\ttrue\ttrue'
	assert_line --index 1 $'gk-listener\tPOST\t/two\t200\t6\tnumber\ttrue\ttrue'
}

@test "--no-access-log writes no access events" {
	listener --no-access-log -- hello
	for i in 1 2 3; do
		run status "$URL/$i"
		assert_output 200
	done
	snapshot
	run count_events "$ERR" '.type == "access"'
	assert_output 0
	# the requests were counted all the same
	run requests_total GET 200
	assert_output 3
}

@test "--access-sample 3 keeps one access event in three" {
	listener --access-sample 3 -- hello
	for i in 1 2 3 4 5 6 7 8 9; do
		run status "$URL/$i"
		assert_output 200
	done
	snapshot
	run count_events "$ERR" '.type == "access"'
	assert_output 3
}

@test "SIGUSR1 writes a metrics snapshot with gk_http_requests_total{method,code}" {
	listener -- hello
	for i in 1 2 3; do status "$URL/g$i" >/dev/null; done
	for i in 1 2; do status "$URL/p$i" -d x >/dev/null; done
	run http_raw 127.0.0.1 "$PORT" 5 < <(printf 'BAD\r\n\r\n')
	snapshot
	run requests_total GET 200
	assert_output 3
	run requests_total POST 200
	assert_output 2
	run events "$ERR" 'select(.type == "metrics") | .metrics[] | .name'
	assert_line gk_http_request_duration_seconds
	assert_line gk_http_inflight
	assert_line gk_http_connections
	assert_line process_cpu_seconds_total
	run events "$ERR" 'select(.type == "metrics") | .metrics[]
		| select(.name == "gk_http_request_duration_seconds") | .series[0].count'
	assert_line --index 0 --regexp '^[5-6]$'
}

# ---- faults ----

@test "a handler line that is not JSON is logged with its first bytes; the listener keeps serving" {
	listener --timeout 1s -- python3 "$T/handler.py"
	run status "$URL/junk"
	assert_output 504
	wait_event "$ERR" '.type == "log" and .level == "error" and ((.line // "") | startswith("this is not json"))'
	run status "$URL/fine"
	assert_output 200
}

@test "a handler line that starts with its id and is not JSON is answered 502 at once" {
	# The line cannot be passed on, but the request it answers is known:
	# its client need not wait for --timeout (curl's -m is shorter).
	listener --timeout 30s -- python3 "$T/handler.py"
	run curl -s -m 10 -w '|%{http_code}' "$URL/badjson"
	assert_output $'bad gateway\n|502'
	wait_event "$ERR" '.type == "log" and .level == "error" and
	    .msg == "invalid line from south: answered 502" and
	    (.line | startswith("{\"id\": "))'
	run curl -s -m 10 "$URL/fine"
	assert_output /fine
	snapshot
	run jq -s -r '[.[] | select(.type == "metrics")] | last | .metrics[]
	    | select(.name == "gk_stage_dropped_lines_total") | .series[]
	    | select(.labels.reason == "invalid") | .value' "$ERR"
	assert_output 1
}

@test "a response for an unknown id is logged and dropped" {
	listener --timeout 1s -- jq -c --unbuffered 'if .path == "/stray" then {id: "nope-\(.id)", status: 200, body: "stray\n"} else {id, status: 200, body: "ok\n"} end'
	run curl -s -m 10 -w '|%{http_code}' "$URL/stray"
	assert_output --partial '|504'
	refute_output --partial stray
	wait_event "$ERR" '.type == "log" and ((.id // "") | startswith("nope-"))'
	run curl -s -m 10 "$URL/fine"
	assert_output ok
}

@test "a handler killed mid-stream: 502 for what it held, restarted, next request works" {
	listener --timeout 20s -- python3 "$T/handler.py"
	pid1=$(handler_pid)
	curl -s -o "$T/inflight.out" -m 20 -w '%{http_code}' "$URL/hang" >"$T/inflight.code" &
	cpid=$!
	wait_grep '"/hang"' "$HANDLER_LOG"
	kill -KILL "$pid1"
	wait "$cpid" || true
	run cat "$T/inflight.code"
	assert_output 502
	wait_event "$ERR" '.type == "log" and .msg == "south exited" and .signal == "KILL"'
	_restarted() { [ -s "$HANDLER_LOG.pid" ] && [ "$(cat "$HANDLER_LOG.pid")" != "$pid1" ]; }
	wait_for -t 10 _restarted
	_serves() { [ "$(status "$URL/after")" = 200 ]; }
	wait_for -t 10 _serves
	run curl -s -m 10 "$URL/after"
	assert_output /after
}

@test "a handler that closes its output and lives on: 502, ended with TERM, restarted" {
	# It can answer nothing more, and a restart waits for its exit: it
	# used to be left running, and every request was answered 503
	# "south unavailable" for good.
	listener --timeout 20s -- python3 "$T/handler.py"
	pid1=$(handler_pid)
	run status "$URL/closeout" -m 20
	assert_output 502
	wait_event "$ERR" '.type == "log" and .level == "warn" and
	    .msg == "south closed its pipes and did not exit: sending TERM"'
	wait_event "$ERR" '.type == "log" and .msg == "south exited" and .signal == "TERM"'
	_restarted() { [ -s "$HANDLER_LOG.pid" ] && [ "$(cat "$HANDLER_LOG.pid")" != "$pid1" ]; }
	wait_for -t 10 _restarted
	_serves() { [ "$(status "$URL/after")" = 200 ]; }
	wait_for -t 10 _serves
	[ ! -e "/proc/$pid1" ] || [ "$(awk '{print $3}' "/proc/$pid1/stat")" = Z ]
}

@test "a response line past the wire's 16 MiB is answered 502 at once, and the next one works" {
	# The line cannot be passed on, but its id comes first: the request
	# it answers is known, and its client need not wait for --timeout.
	listener --timeout 20s -- python3 "$T/handler.py"
	run curl -s -m 20 -o /dev/null -w '%{http_code}' "$URL/big/17000000"
	assert_output 502
	wait_event "$ERR" '.type == "log" and .msg == "line too long: dropped"'
	wait_event "$ERR" '.type == "log" and .level == "error" and
	    .msg == "response too long from south: answered 502"'
	run curl -s -m 20 "$URL/after"
	assert_output /after
	run curl -s -m 20 -o /dev/null -w '%{http_code} %{size_download}' "$URL/big/16000000"
	assert_output "200 16000000"
}

@test "a request whose wire line passes 16 MiB (--max-body 20m) is answered 413 by the stage below at once" {
	listener --max-body 20m --timeout 20s -- gk-tracer -- python3 "$T/handler.py"
	head -c 17000000 /dev/zero | tr '\0' a >"$T/body"
	run curl -s -m 20 --data-binary @"$T/body" -o "$T/resp" -w '%{http_code}' "$URL/up"
	assert_output 413
	run cat "$T/resp"
	assert_output "request too large"
	wait_event "$ERR" '.proc == "'"$(stage_proc gk-tracer)"'" and .level == "error" and
	    .msg == "request too long from north: answered 413"'
	run curl -s -m 20 "$URL/after"
	assert_output /after
}

@test "with --no-restart the listener exits 75 when the handler dies" {
	listener --no-restart --timeout 20s -- python3 "$T/handler.py"
	pid1=$(handler_pid)
	curl -s -o /dev/null -m 20 -w '%{http_code}' "$URL/hang" >"$T/inflight.code" &
	cpid=$!
	wait_grep '"/hang"' "$HANDLER_LOG"
	kill -KILL "$pid1"
	wait "$cpid" || true
	run cat "$T/inflight.code"
	assert_output 502
	wait_exit listener 10
	[ "$BG_STATUS" = 75 ]
}

@test "a client that closes mid-request: no crash, a cancel line goes south" {
	listener --timeout 20s -- python3 "$T/handler.py"
	run pyhttp '
import gkhttp, sys, time
s = gkhttp.connect(sys.argv[1])
gkhttp.request(s, path="/hang-gone")
log = sys.argv[2]
for i in range(200):
    if "/hang-gone" in open(log).read():
        break
    time.sleep(0.05)
s.close()
' "$PORT" "$HANDLER_LOG"
	assert_success
	id=$(jq -r 'select(.path == "/hang-gone") | .id' "$HANDLER_LOG")
	[ -n "$id" ]
	_cancelled() { jq -e --arg id "$id" 'select(.id == $id and .cancel == true)' "$HANDLER_LOG" >/dev/null; }
	wait_for -t 10 _cancelled
	# and a client that goes away in the middle of its headers or body
	pyhttp '
import gkhttp, sys
s = gkhttp.connect(sys.argv[1]); s.sendall(b"GET / HTTP/1.1\r\nHo"); s.close()
s = gkhttp.connect(sys.argv[1]); s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"); s.close()
' "$PORT"
	run status "$URL/still"
	assert_output 200
	bg_alive listener
}

@test "SIGTERM under wrk load: every answer is 2xx and the listener exits 0" {
	command -v wrk >/dev/null || skip "wrk is not installed"
	listener --no-access-log -- hello
	wrk -t1 -c20 -d3s --timeout 5s "$URL/" >"$T/wrk.out" 2>&1 &
	wpid=$!
	sleep 1 # load, not synchronisation: the signal lands mid-run
	kill -TERM "$LPID"
	wait_exit listener 15
	wait "$wpid" || true
	sed "s/^/# /" "$T/wrk.out" >&3
	[ "$BG_STATUS" = 0 ]
	run grep -E '^ +[0-9]+ requests in' "$T/wrk.out"
	assert_success
	n=$(awk '/requests in/ {print $1}' "$T/wrk.out")
	[ "$n" -gt 0 ]
	run grep 'Non-2xx or 3xx responses' "$T/wrk.out"
	assert_failure
	# the drain was logged, and the child reaped
	run count_events "$ERR" '.type == "log" and .msg == "draining"'
	refute_output 0
}

@test "SIGTERM to the whole process group: the stages below leave the drain to the listener" {
	# Ctrl-C, kill %1 and systemd's KillMode=control-group signal every
	# process of the stack at once.  The stages below used to drain on
	# their own: they stopped reading their stdin and exited once what
	# they held was answered, so a request the listener still took on
	# (here one whose body was arriving) met a closed stack: 502.
	start_bg listener gk-listener -l "127.0.0.1:$PORT" --timeout 20s -- \
		gk-tracer -- bash -c 'trap "" TERM INT; exec python3 "$0"' \
		"$T/handler.py"
	LPID=$BG_PID
	wait_listening
	curl -s -m 20 -w '|%{http_code}' "$URL/slow/3" >"$T/slow.out" &
	cpid=$!
	wait_grep '"/slow/3"' "$HANDLER_LOG"
	run pyhttp '
import gkhttp, json, subprocess, sys, time
port, pgid, err = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def draining():
    n = 0
    for l in open(err):
        if l.startswith("{") and json.loads(l).get("msg") == "draining":
            n += 1
    return n
s = gkhttp.connect(port, timeout=20)
s.sendall(b"POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
# Until the listener has read it (its socket holds no unread byte): a
# request not begun at the drain would be closed as idle.
me = s.getsockname()[1]
def unread():
    out = subprocess.run(["ss", "-tnH", "state", "established",
        "( sport = :%s and dport = :%d )" % (port, me)],
        capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else -1
for _ in range(200):
    if unread() == 0:
        break
    time.sleep(0.05)
import os, signal
os.killpg(pgid, signal.SIGTERM)
for _ in range(200):
    if draining():
        break
    time.sleep(0.05)
s.sendall(b"cd")
r = gkhttp.read_response(s)
print(r[0] if r else "closed", r[2].decode().strip() if r else "")
' "$PORT" "$LPID" "$ERR"
	assert_success
	assert_output "200 /late"
	wait "$cpid"
	run cat "$T/slow.out"
	assert_output $'/slow/3\n|200'
	wait_exit listener 15
	assert_equal "$BG_STATUS" 0
}

_lines_are() {
	[ "$(wc -l <"$1")" -eq "$2" ]
}

@test "SIGTERM: what is in flight is answered, new connections are refused, exit 0" {
	listener --timeout 20s -- python3 "$T/handler.py"
	curl -s -m 20 -w '|%{http_code}' "$URL/slow" >"$T/slow.out" &
	cpid=$!
	# and three pipelined on one connection, all in flight
	start_bg piped python3 -c '
import re, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"".join(b"GET /slow/1?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
    for i in range(3)))
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
for head, body in re.findall(rb"(HTTP/1.1 .*?)\r\n\r\n(/slow/1\n)", out, re.S):
    print(head.split(b" ")[1].decode(), body.decode().strip(),
        "close" if b"Connection: close" in head else "keep-alive")
' "$PORT"
	wait_grep '"/slow"' "$HANDLER_LOG"
	wait_for _lines_are "$HANDLER_LOG" 4
	kill -TERM "$LPID"
	wait_event "$ERR" '.type == "log" and .msg == "draining"'
	run curl -s -m 5 -o /dev/null -w '%{http_code}' "$URL/new"
	assert_output 000
	wait "$cpid"
	run cat "$T/slow.out"
	assert_output $'/slow\n|200'
	# each pipelined request is answered (the last one with close, when
	# the signal came before the answers)
	wait_exit piped 20
	run cut -d' ' -f1,2 "$T/piped.out"
	assert_output $'200 /slow/1\n200 /slow/1\n200 /slow/1'
	wait_exit listener 10
	assert_equal "$BG_STATUS" 0
	# the handler saw its stdin close and was reaped
	wait_event "$ERR" '.type == "log" and .msg == "south exited"'
}

@test "--drain-timeout: what is still in flight then is answered 503, exit 0" {
	listener --drain-timeout 500ms --timeout 20s -- python3 "$T/handler.py"
	curl -s -m 20 -w '|%{http_code}' "$URL/hang" >"$T/hang.out" &
	cpid=$!
	wait_grep '"/hang"' "$HANDLER_LOG"
	kill -TERM "$LPID"
	wait "$cpid"
	run cat "$T/hang.out"
	assert_output --partial '|503'
	wait_exit listener 15
	assert_equal "$BG_STATUS" 0
}

# ---- the command line ----

@test "usage errors exit 64 with one line naming the program" {
	run gk-listener -l nonsense -- hello
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --regexp '^gk-listener: .*nonsense'
	run gk-listener -l "127.0.0.1:$PORT" --max-body lots -- hello
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --regexp '^gk-listener: .*max-body.*lots'
	run gk-listener -l "127.0.0.1:$PORT"
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --regexp '^gk-listener: .*south'
	run gk-listener --no-such-option -- hello
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --regexp '^gk-listener: '
	# Zero bounds are refused, not read as "the default" (sizes) or
	# "close at once" (timers: no request would ever be served).
	local opt
	for opt in max-header max-body header-timeout idle-timeout; do
		run gk-listener -l "127.0.0.1:$PORT" "--$opt" 0 -- hello
		assert_equal "$status" 64
		assert_equal "${#lines[@]}" 1
		assert_output --regexp "^gk-listener: .*$opt: 0 .*above 0"
	done
}

@test "--help and --version exit 0" {
	run gk-listener --help
	assert_success
	assert_output --partial 'usage: gk-listener'
	assert_output --partial '--max-body'
	run gk-listener --version
	assert_success
	assert_output --regexp '^gk-listener [0-9]+\.[0-9]+\.[0-9]+$'
}

# ---- the stage runtime: the wire protocol (gk-wire(5)) on a stage's stdin ----

@test "a wire line of exactly 16 MiB is taken and one byte more is answered 413, even when both come in one read" {
	# A regular file hands a stage whole lines in one read: the bound
	# holds for a line whose end came with it, not only for one that is
	# still arriving.
	python3 -c '
import sys
for i, n in (("a", 16 << 20), ("b", (16 << 20) + 1)):
    head = "{\"id\":\"%s\",\"path\":\"/%s\",\"pad\":\"" % (i, i)
    sys.stdout.write(head + "x" * (n - len(head) - 2) + "\"}\n")
sys.stdout.write("{\"id\":\"c\",\"path\":\"/c\"}\n")' >"$T/in"
	[ "$(head -1 "$T/in" | wc -c)" -eq $(((16 << 20) + 1)) ]
	start_bg_in "$T/in" stage gk-breaker -- python3 "$T/handler.py"
	wait_exit stage 20
	[ "$BG_STATUS" -eq 0 ]
	jq -r '"\(.id) \(.status) \(.error.reason // "-")"' "$T/stage.out" |
	    sort >"$T/got"
	run cat "$T/got"
	assert_output "$(printf 'a 200 -\nb 413 request too long\nc 200 -')"
	run grep -c '"id": "b"' "$HANDLER_LOG"
	assert_output 0
	[ "$(count_events "$T/stage.err" '.msg == "line too long: dropped"')" -eq 1 ]
}

@test "a last request line without its LF at the end of stdin is served" {
	printf '{"id":"1","path":"/a"}\n{"id":"2","path":"/b"}' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker -- python3 "$T/handler.py"
	wait_exit stage 10
	[ "$BG_STATUS" -eq 0 ]
	jq -r '"\(.id) \(.status) \(.body | rtrimstr("\n"))"' "$T/stage.out" |
	    sort >"$T/got"
	run cat "$T/got"
	assert_output "$(printf '1 200 /a\n2 200 /b')"
}

@test "a member a stage adds to a message already at 64 members is counted and logged, not lost without a word; the request is still served" {
	# id, path and 62 more: the 64 the wire allows.  The runtime's
	# --timeout would add a deadline, a 65th.
	python3 -c 'import json
m = {"id": "1", "path": "/full"}
m.update(("m%d" % i, i) for i in range(62))
print(json.dumps(m))' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker --timeout 20s -- python3 "$T/handler.py"
	wait_exit stage 10
	[ "$BG_STATUS" -eq 0 ]
	run jq -r '"\(.id) \(.status)"' "$T/stage.out"
	assert_output '1 200'
	run events "$T/stage.err" 'select(.msg == "message at 64 members: member not added") | .key'
	assert_output deadline
	run events "$T/stage.err" 'select(.type == "metrics") | .metrics[]
	    | select(.name == "gk_wire_members_dropped_total") | .series[]
	    | select(.labels.key == "deadline") | .value'
	assert_output 1
}

@test "a stage that read its requests on stdin leaves stdin blocking, as it found it, for what runs after it" {
	printf '{"id":"1","path":"/a"}\n' >"$T/in"
	# O_NONBLOCK belongs to the open file, which the shell shares: left
	# set, the next reader of the same stdin gets EAGAIN.
	run bash -c 'timeout 10 gk-breaker -- python3 "$1" >/dev/null 2>&1
		python3 -c "import fcntl, os; print(\"nonblocking\" if fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK else \"blocking\")"' \
		_ "$T/handler.py" <"$T/in"
	assert_output blocking
}

@test "a handler's last answer without its LF, written as it exits, reaches the client" {
	cat >"$T/once.py" <<'PY'
import json, sys
r = json.loads(sys.stdin.readline())
sys.stdout.write(json.dumps({"id": r["id"], "status": 200, "body": "last\n"}))
PY
	echo '{"id":"1","path":"/a"}' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker --no-restart -- python3 "$T/once.py"
	wait_exit stage 10
	run jq -r '"\(.id) \(.status) \(.body | rtrimstr("\n"))"' "$T/stage.out"
	assert_output "1 200 last"
}

@test "blank lines, LF or CRLF, are ignored without an error" {
	printf '\r\n\n{"id":"1","path":"/a"}\r\n\r\n\n' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker -- python3 "$T/handler.py"
	wait_exit stage 10
	[ "$BG_STATUS" -eq 0 ]
	run jq -r '"\(.id) \(.status)"' "$T/stage.out"
	assert_output "1 200"
	[ "$(count_events "$T/stage.err" '.level == "error"')" -eq 0 ]
}

# stage_rejected REASON FILE: gk_stage_rejected_total{reason=REASON} in the
# metrics snapshot a stage wrote to FILE as it exited.
stage_rejected() {
	jq -R 'fromjson? | select(.type == "metrics") | .metrics[] |
	    select(.name == "gk_stage_rejected_total") | .series[] |
	    select(.labels.reason == "'"$1"'") | .value' "$2" | tail -1
}

@test "a request with the id of one in flight is answered 400 and counted in gk_stage_rejected_total" {
	# Both lines come in one read: the first is still in flight when the
	# second is taken.
	printf '{"id":"7","path":"/a"}\n{"id":"7","path":"/b"}\n' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker -- python3 "$T/handler.py"
	wait_exit stage 10
	jq -r '"\(.id) \(.status) \(.error.reason // "-")"' "$T/stage.out" |
	    sort >"$T/got"
	run cat "$T/got"
	assert_output "$(printf '7 200 -\n7 400 duplicate id')"
	run stage_rejected duplicate_id "$T/stage.err"
	assert_output 1
}

@test "what --drain-timeout cuts short is answered 503 and counted in gk_stage_rejected_total" {
	printf '{"id":"1","path":"/hang"}\n{"id":"2","path":"/hang2"}\n' >"$T/in"
	start_bg_in "$T/in" stage gk-breaker --drain-timeout 200ms -- python3 "$T/handler.py"
	wait_exit stage 10
	run jq -r '"\(.status) \(.error.reason)"' "$T/stage.out"
	assert_output "$(printf '503 drain timeout\n503 drain timeout')"
	run stage_rejected drain_timeout "$T/stage.err"
	assert_output 2
}

@test "a cancel on a wire connection reaches the handler for an id of 300 bytes" {
	start_bg stage gk-breaker -l "127.0.0.1:$PORT" -- python3 "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	python3 -c '
import socket, sys
i = "k" * 300
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(("{\"id\":\"%s\",\"path\":\"/hang\"}\n" % i).encode())
s.sendall(("{\"id\":\"%s\",\"cancel\":true}\n" % i).encode())
s.sendall(b"{\"id\":\"after\",\"path\":\"/after\"}\n")
f = s.makefile()
assert "after" in f.readline()
# The handler reads in order: the cancel came before /after, and the
# connection is still open (closing it cancels too).
log = open(sys.argv[2]).read()
assert log.count("\"cancel\"") == 1, log[-200:]' "$PORT" "$HANDLER_LOG"
}
