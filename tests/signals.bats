#!/usr/bin/env bats
# Signals to a whole stack as a user sends them: Ctrl-C at a terminal,
# `kill %1` in a shell and `kill -- -PGID` signal every process of the
# terminal's (or the group's) foreground process group.  A real
# gk-listener on loopback, real stages, a plain python handler (no
# libgokit: it dies of a SIGINT), and curl.  Each stack is started in its
# own process group (start_bg), which the test then signals as a whole.

load helpers/common

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
	export T
	write_handler
}

teardown() {
	# the stack on a terminal runs in a session of its own
	[ ! -s "$T/tty.pid" ] || kill -KILL "$(cat "$T/tty.pid")" 2>/dev/null || true
	stop_all
}

# A plain wire handler: appends its pid to $T/pids at start, and for each
# request appends the path to $T/seen and answers "PATH\n" once
# $T/release exists.  No signal handling of its own: a SIGINT or SIGTERM
# kills it.  At EOF on its stdin it waits $EXIT_DELAY seconds (0), then
# creates $T/exited.PID and exits.
write_handler() {
	cat >"$T/handler.py" <<'PY'
import json, os, sys, time
T = os.environ["T"]
with open(T + "/pids", "a") as f:
    f.write("%d\n" % os.getpid())
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    with open(T + "/seen", "a") as f:
        f.write(req["path"] + "\n")
    while not os.path.exists(T + "/release"):
        time.sleep(0.02)
    sys.stdout.write(json.dumps({"id": req["id"], "status": 200,
        "body": req["path"] + "\n"}) + "\n")
    sys.stdout.flush()
time.sleep(float(os.environ.get("EXIT_DELAY", "0")))
open("%s/exited.%d" % (T, os.getpid()), "w").close()
PY
}

_listening_or_dead() {
	bg_alive stack || return 0
	_port_open 127.0.0.1 "$PORT"
}

# stack ARGS...: gk-listener on $PORT with ARGS, in a process group of
# its own; $SPID is its pid and the group's id.
stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" "$@"
	SPID=$BG_PID
	wait_for -t 10 _listening_or_dead
	bg_alive stack || { cat "$ERR" >&2; return 1; }
}

# A request held by the handler, its answer in $T/held.out.
hold_request() {
	curl -s -m 20 -w '|%{http_code}' "$URL/held" >"$T/held.out" &
	CPID=$!
	wait_grep /held "$T/seen"
}

_gone() {
	local p
	for p in "$@"; do
		_not_running "$p" || return 1
	done
}

@test "Ctrl-C to the stack's process group: the plain handler's request in flight is answered 200, exit 0" {
	stack --timeout 20s -- gk-tracer -- python3 "$T/handler.py"
	hold_request
	kill -INT -- "-$SPID"
	wait_event "$ERR" '.proc == "gk-listener" and .msg == "draining"'
	touch "$T/release"
	wait "$CPID"
	run cat "$T/held.out"
	assert_output $'/held\n|200'
	wait_exit stack 15
	assert_equal "$BG_STATUS" 0
	# the handler saw its stdin close and exited, killed by nothing
	wait_event "$ERR" '.proc == "gk-tracer" and .msg == "south exited" and .status == 0'
	run count_events "$ERR" '.msg == "south exited" and has("signal")'
	assert_output 0
}

@test "Ctrl-C to the stack's process group: gk-pool's copies answer what they hold, 200" {
	EXIT_DELAY=0.3 stack --timeout 20s -- gk-pool -n 2 -- python3 "$T/handler.py"
	wait_for _lines_are "$T/pids" 2
	hold_request
	kill -INT -- "-$SPID"
	wait_event "$ERR" '.proc == "gk-listener" and .msg == "draining"'
	touch "$T/release"
	wait "$CPID"
	run cat "$T/held.out"
	assert_output $'/held\n|200'
	wait_exit stack 15
	assert_equal "$BG_STATUS" 0
	# gk-pool waited for its copies, which left on the EOF of their stdin
	# (each a moment after it)
	mapfile -t pids <"$T/pids"
	for p in "${pids[@]}"; do
		[ -e "$T/exited.$p" ]
	done
	_gone "${pids[@]}"
	run count_events "$ERR" '.proc == "gk-pool" and .level == "error"'
	assert_output 0
}

@test "a second Ctrl-C ends the drain: what is still held is answered 503, exit 0" {
	# The first one no longer reaches the handler; the second must still
	# cut the wait short, as it did when it killed everything.
	stack --timeout 20s -- gk-tracer -- python3 "$T/handler.py"
	curl -s -m 5 -w '|%{http_code}' "$URL/held" >"$T/held.out" &
	CPID=$!
	wait_grep /held "$T/seen"
	kill -INT -- "-$SPID"
	wait_event "$ERR" '.proc == "gk-listener" and .msg == "draining"'
	kill -INT -- "-$SPID"
	wait "$CPID" || true
	run cat "$T/held.out"
	assert_output $'service unavailable\n|503'
	wait_event "$ERR" '.proc == "gk-listener" and
	    .msg == "SIGINT again: ending the drain, answering what is left"'
	touch "$T/release"
	wait_exit stack 15
	assert_equal "$BG_STATUS" 0
}

@test "SIGTERM to every process at once (KillMode=control-group): the stage below leaves the drain to the listener" {
	# systemd signals each process of the cgroup, whatever its process
	# group.  The handler here stands for one that ignores the signal.
	stack --timeout 20s -- gk-tracer -- python3 "$T/handler.py"
	hold_request
	handler=$(cat "$T/pids")
	tracer=$(awk '{print $4}' "/proc/$handler/stat")
	kill -TERM "$SPID" "$tracer"
	wait_event "$ERR" '.proc == "gk-listener" and .msg == "draining"'
	wait_event "$ERR" '.proc == "gk-tracer" and
	    (.msg | startswith("SIGTERM: left to the parent stage"))'
	touch "$T/release"
	wait "$CPID"
	run cat "$T/held.out"
	assert_output $'/held\n|200'
	wait_exit stack 15
	assert_equal "$BG_STATUS" 0
}

@test "SIGTERM to the listener alone: what the handler left running in its process group is ended too" {
	stack -- sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! >"$T/bg.pid"; exec python3 "$T/handler.py"'
	wait_file "$T/bg.pid"
	bg=$(cat "$T/bg.pid")
	kill -TERM "$SPID"
	wait_exit stack 15
	assert_equal "$BG_STATUS" 0
	wait_for -t 5 _gone "$bg"
	wait_event "$ERR" '.proc == "gk-listener" and .msg == "south left processes behind: sending TERM"'
}

@test "SIGKILL to the stack's process group: the stages and the handler below exit, without waiting --drain-timeout" {
	# Only gk-listener is in the group now; the processes below see their
	# standard input close and exit, as after any crash of the top.  What
	# gk-tracer holds can reach no one: it ends its drain at once.
	stack -- gk-tracer -- python3 "$T/handler.py"
	hold_request
	handler=$(cat "$T/pids")
	tracer=$(awk '{print $4}' "/proc/$handler/stat")
	[ "$(awk '{print $5}' "/proc/$tracer/stat")" != "$SPID" ]
	[ "$(awk '{print $5}' "/proc/$handler/stat")" != "$SPID" ]
	kill -KILL -- "-$SPID"
	wait_event "$ERR" '.proc == "gk-tracer" and
	    .msg == "parent stage gone: ending the drain" and .inflight == 1'
	touch "$T/release"
	wait_for -t 10 _gone "$tracer" "$handler"
}

_lines_are() {
	[ -f "$1" ] && [ "$(wc -l <"$1")" -eq "$2" ]
}

@test "at a terminal with stty tostop, a handler writing to it is not stopped" {
	# The stages and the handler are in process groups of their own, not
	# the terminal's foreground group: a write there (with tostop) would
	# stop them with SIGTTOU, and the stack would hang.  They run with
	# SIGTTOU (and SIGTTIN) ignored: the write goes through.
	cat >"$T/onpty.py" <<'PY'
import os, pty, select, sys, termios
pid, fd = pty.fork()
if pid == 0:
    a = termios.tcgetattr(0)
    a[3] |= termios.TOSTOP
    termios.tcsetattr(0, termios.TCSANOW, a)
    os.execvp(sys.argv[1], sys.argv[1:])
with open(os.environ["T"] + "/tty.pid", "w") as f:
    f.write(str(pid))
out = open(os.environ["T"] + "/tty.out", "ab", buffering=0)
while True:
    r, _, _ = select.select([fd], [], [], 1)
    try:
        if r:
            out.write(os.read(fd, 65536))
    except OSError:
        break
    if os.waitpid(pid, os.WNOHANG)[0]:
        break
PY
	cat >"$T/ttyhandler.py" <<'PY'
import json, sys
sys.stderr.write("handler writes to the terminal\n")
sys.stderr.flush()
for line in sys.stdin:
    req = json.loads(line)
    if not req.get("cancel"):
        print(json.dumps({"id": req["id"], "status": 200, "body": "tty\n"}), flush=True)
PY
	start_bg tty python3 "$T/onpty.py" gk-listener -l "127.0.0.1:$PORT" \
		-- gk-tracer -- python3 "$T/ttyhandler.py"
	wait_for -t 10 _port_open 127.0.0.1 "$PORT"
	run curl -s -m 5 -w '|%{http_code}' "$URL/x"
	assert_output $'tty\n|200'
	wait_grep "handler writes to the terminal" "$T/tty.out"
	kill -TERM "$(cat "$T/tty.pid")"
	wait_exit tty 15
}
