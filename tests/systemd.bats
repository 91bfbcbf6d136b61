#!/usr/bin/env bats
# gk-listener under systemd: socket activation (LISTEN_FDS) through
# systemd-socket-activate, sd_notify to a NOTIFY_SOCKET the test listens on,
# and the units in contrib/systemd checked by systemd-analyze verify.

bats_require_minimum_version 1.5.0

load helpers/common
load helpers/notify

setup() {
	common_setup
	command -v systemd-socket-activate >/dev/null ||
		skip "systemd-socket-activate is not installed"
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	NOTIFY="$T/notify.sock"
	NOTES="$T/notify.out"
	ERR="$T/activate.err"
}

teardown() {
	stop_all
}

# activate [ACTIVATE OPTIONS...] -- gk-listener ARGS: systemd-socket-activate
# on 127.0.0.1:$PORT, passing NOTIFY_SOCKET on.  systemd-socket-activate
# starts the program at the first connection, so wait for the port only.
activate() {
	local opts=()
	while [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	shift
	start_bg activate env NOTIFY_SOCKET="$NOTIFY" \
		systemd-socket-activate -E NOTIFY_SOCKET "${opts[@]}" \
		-l "127.0.0.1:$PORT" "$@"
	APID=$BG_PID
	touch "$ERR" # exists even before the child opens it; never truncated
	wait_port 127.0.0.1 "$PORT"
}

@test "under systemd-socket-activate gk-listener serves on the socket it was given" {
	notify_listener
	activate -- gk-listener -- hello
	run curl -s -m 10 -w '|%{http_code}' "$URL/"
	assert_output $'hello\n|200'
	run curl -s -m 10 "$URL/healthz"
	assert_output ok
	# the one process: systemd-socket-activate exec'd gk-listener, which
	# bound nothing itself (it had no -l)
	run cat "/proc/$APID/comm"
	assert_output gk-listener
	run events "$T/activate.err" 'select(.type == "access") | .path'
	assert_line /
}

@test "gk-listener sends READY=1 to NOTIFY_SOCKET, and STOPPING=1 on SIGTERM with EXTEND_TIMEOUT_USEC covering --drain-timeout and the stack's exit" {
	notify_listener
	activate -- gk-listener --drain-timeout 40s -- hello
	run curl -s -m 10 "$URL/"
	assert_output hello
	wait_grep "^$APID READY=1\$" "$NOTES"
	kill -TERM "$APID"
	wait_exit activate 10
	assert_equal "$BG_STATUS" 0
	wait_grep "^$APID STOPPING=1\$" "$NOTES"
	# READY came before STOPPING
	run grep -E "^$APID (READY|STOPPING)=1\$" "$NOTES"
	assert_line --index 0 "$APID READY=1"
	assert_line --index 1 "$APID STOPPING=1"
	# systemd's TimeoutStopSec (90 s by default, often less) would KILL a
	# drain longer than it: 40 s of drain, 5 s for the stack to exit on
	# its own, 2 s after TERM, and 1 s to spare
	wait_grep "^$APID EXTEND_TIMEOUT_USEC=48000000\$" "$NOTES"
}

@test "only gk-listener talks to NOTIFY_SOCKET, not the stack it spawned" {
	# systemd takes READY=1 from the main pid only (NotifyAccess=main) and
	# logs every other sender; sd_notify(3) unsets NOTIFY_SOCKET for this.
	notify_listener
	activate -- gk-listener -- hello
	run curl -s -m 10 "$URL/"
	assert_output hello
	wait_grep "^$APID READY=1\$" "$NOTES"
	kill -TERM "$APID"
	wait_exit activate 10
	wait_grep "^$APID STOPPING=1\$" "$NOTES"
	run grep -v "^$APID " "$NOTES"
	assert_output ''
}

# fd_probe: $T/probe, a handler that writes its open fds to $T/fds and its
# environment to $T/env, then runs hello.
fd_probe() {
	cat >"$T/probe" <<EOF
#!/bin/sh
ls -l /proc/\$\$/fd/ >"$T/fds"
env >"$T/env"
exec hello
EOF
	chmod +x "$T/probe"
}

@test "the stack gk-listener spawns inherits neither the passed socket nor LISTEN_FDS (sd_listen_fds(3))" {
	# Were the listening socket left open in the child, connections would
	# queue on it, unanswered, after gk-listener is gone.
	fd_probe
	activate -- gk-listener -- "$T/probe"
	run curl -s -m 10 "$URL/"
	assert_output hello
	run grep -c 'socket:' "$T/fds"
	assert_output 0
	run grep -E '^LISTEN_(PID|FDS|FDNAMES)=' "$T/env"
	assert_output ''
}

@test "the copies gk-pool starts inherit neither the passed socket nor LISTEN_FDS" {
	fd_probe
	activate --fdname=json -- gk-pool -n 1 -- "$T/probe"
	run pyhttp '
import gkhttp, json, sys
s = gkhttp.connect(sys.argv[1])
s.sendall(b"{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{}}\n")
m = json.loads(s.makefile("rb").readline())
print(m["id"], m["status"], m["body"].strip())
' "$PORT"
	assert_output 'a 200 hello'
	run grep -c 'socket:' "$T/fds"
	assert_output 0
	run grep -E '^LISTEN_(PID|FDS|FDNAMES)=' "$T/env"
	assert_output ''
}

@test "more sockets from systemd than a stage takes (100): exit 64 naming LISTEN_FDS, not a crash" {
	mkdir "$T/s"
	local i opts=()
	for i in $(seq 1 99); do
		opts+=(-l "$T/s/$i")
	done
	activate "${opts[@]}" -- gk-listener -- hello
	run curl -s -m 10 "$URL/"
	wait_exit activate 10
	assert_equal "$BG_STATUS" 64
	grep -q 'too many sockets from systemd: 100 (LISTEN_FDS; at most 64)' "$ERR"
}

# passed NSOCKETS LISTEN_FDS LISTEN_FDNAMES|- CMD ARGS...: run CMD (as `run`
# does) with NSOCKETS listening sockets from fd 3, LISTEN_PID its own pid
# and LISTEN_FDS and LISTEN_FDNAMES as given ("-": unset), as systemd
# would pass them were it wrong.
passed() {
	run --separate-stderr timeout 10 python3 -c '
import os, socket, sys
os.closerange(3, 1024)  # bats holds some: only ours from 3
socks = []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    assert s.fileno() == 3 + i
    os.set_inheritable(s.fileno(), True)
    socks.append(s)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = sys.argv[2]
if sys.argv[3] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[3]
os.execvp(sys.argv[4], sys.argv[4:])
' "$@"
}

@test "a malformed LISTEN_FDS or LISTEN_PID, or LISTEN_FDNAMES not naming every socket, ends a stage with 64 naming it (sd_listen_fds(3))" {
	local bad
	for bad in 1x 0 -1 '' 99999999999; do
		passed 1 "$bad" - gk-listener -- hello
		assert_equal "$status" 64
		jq -e --arg v "$bad" 'select(.level == "fatal") |
			.msg == "bad LISTEN_FDS: \($v) (expected a number of sockets from 1)"' <<<"$stderr"
	done
	passed 2 2 json gk-listener -- hello
	assert_equal "$status" 64
	jq -e 'select(.level == "fatal") |
		.msg == "LISTEN_FDNAMES names 1 socket and LISTEN_FDS passes 2: json"' <<<"$stderr"
	passed 1 1 json:http gk-listener -- hello
	assert_equal "$status" 64
	jq -e 'select(.level == "fatal") | .msg | startswith("LISTEN_FDNAMES names 2 sockets and LISTEN_FDS passes 1")' <<<"$stderr"
	# a socket systemd said it passed but did not: not the stage's own fd
	passed 1 2 - gk-listener -- hello
	assert_equal "$status" 64
	jq -e 'select(.level == "fatal") | .msg == "LISTEN_FDS passes 2 sockets but fd 4 is not open"' <<<"$stderr"
	run --separate-stderr timeout 10 env LISTEN_PID=12x LISTEN_FDS=1 gk-listener -- hello
	assert_equal "$status" 64
	jq -e 'select(.level == "fatal") | .msg == "bad LISTEN_PID: 12x (expected a process id)"' <<<"$stderr"
}

@test "LISTEN_FDS for another process is not ours, even malformed: the stage binds its own -l" {
	local port
	port=$(free_port)
	start_bg lst env LISTEN_PID=1 LISTEN_FDS=1x LISTEN_FDNAMES=a:b \
		gk-listener -l "127.0.0.1:$port" -- hello
	wait_http "http://127.0.0.1:$port/"
	run curl -s -m 10 "http://127.0.0.1:$port/"
	assert_output hello
}

@test "WATCHDOG_USEC makes gk-listener send WATCHDOG=1" {
	notify_listener
	activate -E WATCHDOG_USEC=400000 -- gk-listener -- hello
	run curl -s -m 10 "$URL/"
	assert_output hello
	wait_grep "^$APID WATCHDOG=1\$" "$NOTES" 10
}

# _lines_at_least N PATTERN FILE
_lines_at_least() {
	[ "$(grep -c -- "$2" "$3")" -ge "$1" ]
}

@test "WATCHDOG_USEC makes gk-resolver --watch send WATCHDOG=1 as well as READY=1" {
	notify_listener
	start_bg res env NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=400000 \
		gk-resolver --watch static:127.0.0.1:80
	local pid=$BG_PID
	wait_grep "^$pid READY=1\$" "$NOTES"
	wait_grep "^$pid WATCHDOG=1\$" "$NOTES" 10
	# not for another process's watchdog
	start_bg res2 env NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=400000 \
		WATCHDOG_PID=1 gk-resolver --watch static:127.0.0.1:81
	local pid2=$BG_PID
	wait_grep "^$pid2 READY=1\$" "$NOTES"
	wait_for -t 10 _lines_at_least 3 "^$pid WATCHDOG=1\$" "$NOTES"
	run grep -c "^$pid2 WATCHDOG=1\$" "$NOTES"
	assert_output 0
}

# notify_mark TEXT: send TEXT to $NOTIFY ourselves and wait until it is in
# $NOTES: every message sent to the socket before it is in $NOTES by then.
notify_mark() {
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(sys.argv[2].encode(), sys.argv[1])' "$NOTIFY" "$1"
	wait_grep " $1\$" "$NOTES"
}

@test "gk-resolver --watch sends READY=1 once the first set is written, not while the source fails (then STATUS= says why)" {
	notify_listener
	start_bg res env NOTIFY_SOCKET="$NOTIFY" \
		gk-resolver --watch -o "$T/out" "file:$T/eps"
	local pid=$BG_PID
	wait_event "$T/res.err" '.msg == "resolver source failed"'
	notify_mark MARK=1
	run grep -c "^$pid READY=1\$" "$NOTES"
	assert_output 0
	grep -q "^$pid STATUS=waiting for the first set: " "$NOTES"
	[ ! -e "$T/out" ]
	printf '10.0.0.1:80\n' >"$T/eps"
	wait_grep "^$pid READY=1\$" "$NOTES"
	# the set was in the file before READY=1 was sent
	grep -qx '10.0.0.1:80 1 -' "$T/out"
	# once only
	printf '10.0.0.2:80\n' >"$T/eps"
	wait_for -t 10 grep -qx '10.0.0.2:80 1 -' "$T/out"
	notify_mark MARK=2
	run grep -c "^$pid READY=1\$" "$NOTES"
	assert_output 1
}

@test "a socket named json by LISTEN_FDNAMES speaks the wire protocol" {
	activate --fdname=json -- gk-listener -- hello
	run pyhttp '
import gkhttp, json, sys
s = gkhttp.connect(sys.argv[1])
s.sendall(b"{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{}}\n")
m = json.loads(s.makefile("rb").readline())
print(m["id"], m["status"], m["body"].strip())
' "$PORT"
	assert_success
	assert_output 'a 200 hello'
}

@test "a socket named http speaks HTTP to a handler that was not given --http" {
	activate --fdname=http -- hello
	run curl -s -m 10 -w '|%{http_code}' "$URL/"
	assert_output $'hello\n|200'
}

@test "a stage given a socket named http fronts the stack with gk-listener's 30 s bound" {
	activate --fdname=http -- gk-tracer -- \
		jq -c --unbuffered '{id, status: 200, body: (.deadline | tostring)}'
	before=$(date +%s%3N)
	run curl -s -m 10 "$URL/"
	assert_success
	[ "$output" -ge $((before + 29000)) ] && [ "$output" -le $(($(date +%s%3N) + 30000)) ]
}

# The units in contrib/systemd, copied to $T with the programs they run
# pointed at this build (systemd-analyze checks that ExecStart exists).
copy_units() {
	local src dst f name
	mkdir -p "$T/units"
	for src in contrib/systemd/*; do
		[ -f "$src" ] || continue
		f=$(basename "$src")
		case $f in
		*.in) dst="$T/units/${f%.in}" ;;
		*.service | *.socket | *.target | *.path | *.timer) dst="$T/units/$f" ;;
		*) continue ;;
		esac
		sed -e "s|@PREFIX@|/usr/local|g" -e "s|@BINDIR@|/usr/local/bin|g" "$src" >"$dst"
	done
	# Programs named by absolute path in Exec*= lines: this build's copy.
	for f in "$T"/units/*; do
		[ -f "$f" ] || continue
		for name in $(grep -E '^Exec[A-Za-z]*=' "$f" | grep -o -E '/[^ ;]*/[A-Za-z0-9_.-]+' | sort -u); do
			local base=${name##*/}
			if [ -x "$GK_BUILD/bin/$base" ]; then
				sed -i "s|$name|$GK_BUILD/bin/$base|g" "$f"
			elif [ -x "$GK_BUILD/examples/$base" ]; then
				sed -i "s|$name|$GK_BUILD/examples/$base|g" "$f"
			fi
		done
	done
	# Documentation=man:... is checked with man(1): this build's pages.
	local page sec
	for page in "$GK_BUILD"/man/*.[1-9] man/*.[1-9]; do
		[ -f "$page" ] || continue
		sec=${page##*.}
		mkdir -p "$T/man/man$sec"
		[ -e "$T/man/man$sec/${page##*/}" ] || cp "$page" "$T/man/man$sec/"
	done
	export MANPATH="$T/man"
}

@test "the units in contrib/systemd pass systemd-analyze verify" {
	command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed"
	compgen -G 'contrib/systemd/*.s*' >/dev/null || compgen -G 'contrib/systemd/*.in' >/dev/null ||
		skip "no units in contrib/systemd yet"
	copy_units
	run compgen -G "$T/units/*.service"
	assert_success
	run compgen -G "$T/units/*.socket"
	assert_success
	# a socket-activated service of Type=notify
	run grep -l -E '^Type=notify' "$T"/units/*.service
	assert_success
	cd "$T/units"
	run systemd-analyze verify ./*
	echo "$output" >&2
	assert_success
	# It also reports on unrelated units installed on the machine; every
	# line about one of ours is a finding (warnings included).
	local u
	for u in *; do
		refute_output --partial "$u:"
	done
}
