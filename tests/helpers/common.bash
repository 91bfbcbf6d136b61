# tests/helpers/common.bash: shared helpers for the bats suites.
#
#   load helpers/common
#
#   setup()    { common_setup; }          # optional: sets $T (a temp dir)
#   teardown() { stop_all; }              # ends every group start_bg made
#
# Every server a test starts goes through start_bg, so it runs in its own
# process group and teardown can end it, even when the test failed.
# Every wait is a bounded poll; nothing here sleeps as synchronisation.

load /usr/lib/bats/bats-support/load
load /usr/lib/bats/bats-assert/load

: "${GK_BUILD:=build}"
export GK_BUILD

# A temporary directory of the test, and the events written as JSON.
common_setup() {
	T="$BATS_TEST_TMPDIR"
	export GK_EVENTS_FORMAT=json
}

# free_port: a TCP port on 127.0.0.1 nobody listens on now, below the
# kernel's ephemeral range (32768 and up here), so that no client
# connection of the test can take it between this check and the server's
# bind.
free_port() {
	# perl starts in milliseconds, python3 in a tenth of a second: this runs
	# several times a test.  The same check as ever: a bind that succeeds.
	perl -MSocket -e '
open(my $f, "<", "/proc/sys/net/ipv4/ip_local_port_range") or die "free_port: $!\n";
my ($lo) = split " ", scalar <$f>;
my $hi = $lo > 10001 ? $lo : 10001;
for (1 .. 1000) {
	my $p = 10000 + int(rand($hi - 10000));
	socket(my $s, PF_INET, SOCK_STREAM, 0) or die "free_port: $!\n";
	my $ok = bind($s, pack_sockaddr_in($p, inet_aton("127.0.0.1")));
	close($s);
	if ($ok) { print "$p\n"; last }
}'
}

# start_bg NAME CMD ARGS...: run CMD in its own session and process group,
# stdout in $BATS_TEST_TMPDIR/NAME.out, stderr in NAME.err, pid in NAME.pid.
# The pid is the process group id.  Also sets $BG_PID.
# Its stdin is /dev/null unless the caller redirected it
# (`start_bg NAME CMD <FILE`).  For a fifo use start_bg_in: the caller's
# shell would block opening a fifo that has no writer yet.
start_bg() {
	local name=$1
	shift
	if [ "$(readlink /proc/$BASHPID/fd/0)" != "$GK_BATS_STDIN" ]; then
		start_bg_in /dev/stdin "$name" "$@"
	else
		start_bg_in /dev/null "$name" "$@"
	fi
}

# start_bg_in FILE NAME CMD ARGS...: start_bg with stdin from FILE, opened
# by the background process itself (so a fifo's writer may come later).
start_bg_in() {
	local in=$1 name=$2
	shift 2
	local d="$BATS_TEST_TMPDIR"
	if [ "$in" = /dev/stdin ]; then
		setsid "$@" >"$d/$name.out" 2>"$d/$name.err" &
	else
		setsid "$@" >"$d/$name.out" 2>"$d/$name.err" <"$in" &
	fi
	BG_PID=$!
	echo "$BG_PID" >"$d/$name.pid"
	echo "$name" >>"$d/.bg_names"
}
GK_BATS_STDIN=$(readlink /proc/$BASHPID/fd/0)

# bg_pid NAME: the pid start_bg recorded.
bg_pid() {
	cat "$BATS_TEST_TMPDIR/$1.pid"
}

# stage_pid NAME BG: the process of stage NAME just below the gk-listener
# started as BG; stage_proc NAME: the proc of its events.  Under GK_FUSE=1
# (gk-listener --fuse, which the suites can be run with) the built-in
# stages run inside the listener: its pid, its proc.
stage_pid() {
	if [ "${GK_FUSE:-}" = 1 ]; then
		bg_pid "$2"
	else
		pgrep -P "$(bg_pid "$2")" -x "$1"
	fi
}

stage_proc() {
	if [ "${GK_FUSE:-}" = 1 ]; then echo gk-listener; else echo "$1"; fi
}

# last_metrics FILE PROC: the last metrics snapshot of PROC in events FILE,
# its parts (a large snapshot comes in several events) made one.
last_metrics() {
	events "$1" "select(.type == \"metrics\" and .proc == \"$2\")" |
		jq -sc 'last as $l | map(select(.seq == $l.seq)) |
			$l + {metrics: (map(.metrics) | add)}'
}

# bg_alive NAME: true while the process is running (and not a zombie).
bg_alive() {
	local pid
	pid=$(bg_pid "$1") || return 1
	[ -e "/proc/$pid" ] || return 1
	local state
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[ "$state" != Z ]
}

# wait_for [-t SECONDS] CMD ARGS...: poll CMD every 50 ms until it succeeds,
# at most SECONDS (default 10).  Returns 1 on timeout.
wait_for() {
	local deadline_s=10
	if [ "${1:-}" = -t ]; then
		deadline_s=$2
		shift 2
	fi
	local tries=$((deadline_s * 20))
	local i
	for ((i = 0; i < tries; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.05
	done
	echo "wait_for: timed out after ${deadline_s}s: $*" >&2
	return 1
}

# poll_for [-t SECONDS] CMD ARGS...: wait_for for a CMD that only looks
# (a file, an event, a port that is refused until it listens): every 10 ms
# for the first half second, then every 50 ms, until it succeeds; it sleeps
# at least SECONDS (default 10) in all before it gives up.  Not for a CMD
# that sends what a test counts: it may run several times more often.
poll_for() {
	local deadline_s=10
	if [ "${1:-}" = -t ]; then
		deadline_s=$2
		shift 2
	fi
	local left_ms=$((deadline_s * 1000)) fast=50
	while :; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		[ "$left_ms" -gt 0 ] || break
		if [ "$fast" -gt 0 ]; then
			fast=$((fast - 1))
			left_ms=$((left_ms - 10))
			sleep 0.01
		else
			left_ms=$((left_ms - 50))
			sleep 0.05
		fi
	done
	echo "wait_for: timed out after ${deadline_s}s: $*" >&2
	return 1
}

# wait_file FILE [SECONDS]: until FILE exists and is not empty.
wait_file() {
	poll_for -t "${2:-10}" test -s "$1"
}

# wait_grep PATTERN FILE [SECONDS]: until FILE holds a line matching PATTERN.
wait_grep() {
	poll_for -t "${3:-10}" grep -q -- "$1" "$2"
}

_http_up() {
	# Any HTTP answer counts: the server is accepting and speaking.
	local code
	code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$@") || true
	[ -n "$code" ] && [ "$code" != 000 ]
}

# wait_http URL [SECONDS] [CURL ARGS...]: until URL answers anything over HTTP.
wait_http() {
	local url=$1
	local deadline_s=${2:-10}
	shift 2 2>/dev/null || shift $#
	poll_for -t "$deadline_s" _http_up "$@" "$url"
}

_port_open() {
	# bash's own connect (no python3 to start), bounded by 1 s as ever
	timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _port_open "$1" "$2" 2>/dev/null
}

# wait_port HOST PORT [SECONDS]: until a TCP connect succeeds.
wait_port() {
	poll_for -t "${3:-10}" _port_open "$1" "$2"
}

# wait_exit NAME [SECONDS]: until the process start_bg started has exited;
# its exit status is then in $BG_STATUS.
wait_exit() {
	local pid
	pid=$(bg_pid "$1")
	poll_for -t "${2:-10}" _not_running "$pid" || return 1
	BG_STATUS=0
	wait "$pid" 2>/dev/null || BG_STATUS=$?
	return 0
}

_not_running() {
	[ ! -e "/proc/$1" ] && return 0
	[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# stop_all: in teardown.  TERM each recorded group, wait up to 2 s, KILL.
stop_all() {
	local d="$BATS_TEST_TMPDIR"
	[ -f "$d/.bg_names" ] || return 0
	local name pid pids=()
	while read -r name; do
		pid=$(cat "$d/$name.pid" 2>/dev/null) || continue
		pids+=("$pid")
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	done <"$d/.bg_names"
	local i alive
	for ((i = 0; i < 200; i++)); do
		alive=0
		for pid in "${pids[@]}"; do
			if kill -0 -- "-$pid" 2>/dev/null; then
				alive=1
			fi
		done
		[ "$alive" = 0 ] && break
		sleep 0.01
	done
	for pid in "${pids[@]}"; do
		kill -KILL -- "-$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -f "$d/.bg_names"
	return 0
}

# events FILE [JQ FILTER]: the JSON events in a stderr capture, one per line
# (compact), through jq; lines that are not JSON objects are skipped.
# One jq, not two in a pipe: jq 1.6 takes ~20 ms to start, and these run
# in every poll of wait_event.  The parse is closed in [...]: jq 1.6's
# fromjson? (and try) would also swallow the errors of what follows it,
# and an error in FILTER or JQ_SELECT must stay one, as with two jq.
events() {
	local file=$1
	local filter=${2:-.}
	jq -R -r -c "[try fromjson catch null][] | objects | ($filter)" "$file"
}

# count_events FILE JQ_SELECT: how many events match a jq condition.
count_events() {
	jq -R -n "[inputs | [try fromjson catch null][] | objects | select($2)] | length" "$1"
}

# wait_event FILE JQ_SELECT [SECONDS]: until an event matching the condition
# is in FILE.
_has_event() {
	[ "$(count_events "$1" "$2")" -gt 0 ]
}
wait_event() {
	poll_for -t "${3:-10}" _has_event "$1" "$2"
}

# http_raw HOST PORT [SECONDS]: send stdin as raw bytes, print everything
# the server answers until it closes the connection, or until SECONDS
# (default 5) pass without a byte.  When the server closed, the last line
# printed on stderr is "closed"; otherwise "open".
http_raw() {
	python3 -c "$_HTTP_RAW_PY" "$1" "$2" "${3:-5}"
}

_HTTP_RAW_PY='
import socket, sys
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = sys.stdin.buffer.read()
s = socket.create_connection((host, port), timeout=wait)
s.sendall(data)
out = b""
state = "open"
try:
    while True:
        b = s.recv(65536)
        if not b:
            state = "closed"
            break
        out += b
except socket.timeout:
    pass
except ConnectionResetError:
    state = "closed"
sys.stdout.buffer.write(out)
sys.stdout.flush()
sys.stderr.write(state + "\n")
'

# pyhttp SCRIPT [ARGS...]: run a python3 program with the module gkhttp on
# its path: connect(port, host), request(sock, method, path, headers, body),
# read_response(sock, head=False) -> (status, headers, body) or None when
# the server closed first, closed_within(sock, seconds) -> True when the
# server closes the connection in time.
pyhttp() {
	local dir="${BATS_TEST_TMPDIR:-${TMPDIR:-/tmp}}/.pylib"
	if [ ! -f "$dir/gkhttp.py" ]; then
		mkdir -p "$dir"
		printf '%s\n' "$_GKHTTP_PY" >"$dir/gkhttp.py"
	fi
	local script=$1
	shift
	PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" python3 -c "$script" "$@"
}

_GKHTTP_PY='
import socket, time

def connect(port, host="127.0.0.1", timeout=5.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, int(port)))
    return s

def request(s, method="GET", path="/", headers=None, body=b"", version="1.1"):
    h = {"Host": "test"}
    h.update(headers or {})
    if body and "Content-Length" not in h and "Transfer-Encoding" not in h:
        h["Content-Length"] = str(len(body))
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    lines += ["%s: %s" % kv for kv in h.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    s.sendall(data)

_buffers = {}

def _recv(s):
    try:
        return s.recv(65536)
    except ConnectionResetError:
        return b""

def read_response(s, head=False):
    buf = _buffers.pop(s.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        b = _recv(s)
        if not b:
            return None
        buf += b
    top, rest = buf.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = 0 if head or status in (100, 204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < n:
        b = _recv(s)
        if not b:
            break
        rest += b
    body, extra = rest[:n], rest[n:]
    if extra:
        _buffers[s.fileno()] = extra
    return status, headers, body

def slow_reader(port, timeout):
    """A client with a 4 KiB receive buffer: what it does not read stays
    with the server."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", int(port)))
    return s

def proc_status(pid, key):
    """A /proc/PID/status figure in kB (VmRSS:, VmHWM:)."""
    for l in open("/proc/%s/status" % pid):
        if l.startswith(key):
            return int(l.split()[1])

def lines_in(path):
    """Lines written to path so far (0 before it exists)."""
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0

def closed_within(s, seconds):
    s.settimeout(seconds)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
'
