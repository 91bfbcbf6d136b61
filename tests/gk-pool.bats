#!/usr/bin/env bats
# gk-pool as a user sees it: a real gk-listener on loopback in front of
# gk-pool running copies of a one-request-at-a-time wire handler, and real
# curl.  Every stack runs in its own process group (start_bg).

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
	stop_all
}

# A wire handler that answers one request at a time with its pid as the
# body, and records its pid in $T/started when it starts.  By path:
#   /crash  exits 3 without answering
#   /hang   records its pid in $T/hang.pid and never answers
#   /wait   answers once $T/release exists
#   /huge   answers with a line of 17 MiB, past the wire's bound
#   /wrongid answers with an id it was not given
#   /twice  answers twice
write_handler() {
	cat >"$T/handler.py" <<'PY'
import json, os, sys, time
T = os.environ["T"]
pid = os.getpid()
with open(T + "/started", "a") as f:
    f.write("%d\n" % pid)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    path = req.get("path", "")
    if path == "/crash":
        os._exit(3)
    if path == "/hang":
        with open(T + "/hang.pid", "w") as f:
            f.write(str(pid))
        time.sleep(600)
    if path == "/wait":
        while not os.path.exists(T + "/release"):
            time.sleep(0.05)
    if path == "/wrongid":
        req["id"] = "not-" + req["id"]
    if path == "/twice":
        sys.stdout.write(json.dumps({"id": req["id"], "status": 200,
            "body": "%d\n" % pid}) + "\n")
    if path == "/huge":
        # a line past the wire's 16 MiB
        sys.stdout.write(json.dumps({"id": req["id"], "status": 200,
            "body": "x" * (17 << 20)}) + "\n")
        sys.stdout.flush()
        continue
    sys.stdout.write(json.dumps({"id": req["id"], "status": 200,
        "headers": {"content-type": "text/plain"}, "body": "%d\n" % pid}) + "\n")
    sys.stdout.flush()
PY
}

_up_or_dead() {
	bg_alive stack || return 0
	_port_open 127.0.0.1 "$PORT"
}

# stack [LISTENER-ARGS] -- GK-POOL-ARGS...
stack() {
	local largs=()
	while [ "$1" != -- ]; do
		largs+=("$1")
		shift
	done
	shift
	start_bg stack gk-listener -l "127.0.0.1:$PORT" "${largs[@]}" \
		-- gk-pool "$@"
	wait_for -t 10 _up_or_dead
	if ! bg_alive stack; then
		cat "$ERR" >&2
		return 1
	fi
}

# started N: until N copies have started in all.
_started() {
	[ "$(wc -l <"$T/started" 2>/dev/null || echo 0)" -ge "$1" ]
}

gauge() {
	events "$ERR" "select(.type == \"metrics\") | .metrics[]
		| select(.name == \"$1\") | .series[0].value" | tail -n 1
}

_gauge_is() {
	[ "$(gauge "$1")" = "$2" ]
}

_not_running() {
	[ ! -e "/proc/$1" ] && return 0
	[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# An answer from a copy that is not in the file of pids $1.
_answer_from_new_copy() {
	local pid
	pid=$(curl -s -m 5 "$URL/") || return 1
	[ -n "$pid" ] && ! grep -qx "$pid" "$1"
}

@test "requests are spread over the copies: six requests in turn to three copies: each copy answers two" {
	stack -- -n 3 -- python3 "$T/handler.py"
	wait_for -t 10 _started 3
	for i in 1 2 3 4 5 6; do
		curl -s -m 10 "$URL/$i" >>"$T/answers"
	done
	assert_equal "$(sort -u "$T/answers" | wc -l)" 3
	# Every answer came from a copy that gk-pool started.
	run sh -c "sort -u '$T/answers' | grep -vxFf '$T/started'"
	assert_output ''
	# Six requests in turn, round-robin: each copy answered two.
	run sh -c "sort '$T/answers' | uniq -c | awk '{print \$1}' | sort -u"
	assert_output 2
}

@test "with every copy busy, requests wait in the queue and are all answered" {
	export GK_METRICS_INTERVAL=100ms
	stack -- -n 1 -- python3 "$T/handler.py"
	local pids=()
	for i in 1 2 3; do
		curl -s -o /dev/null -m 20 -w '%{http_code}\n' "$URL/wait" \
			>"$T/code.$i" &
		pids+=($!)
	done
	wait_for -t 10 _gauge_is gk_pool_queue 2
	run gauge gk_pool_busy
	assert_output 1
	touch "$T/release"
	wait "${pids[@]}"
	for i in 1 2 3; do
		run cat "$T/code.$i"
		assert_output 200
	done
}

@test "a copy that dies: its request is answered 502, and it is restarted" {
	stack -- -n 2 -- python3 "$T/handler.py"
	wait_for -t 10 _started 2
	cp "$T/started" "$T/first"
	run curl -s -o /dev/null -m 10 -w '%{http_code}' "$URL/crash"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-pool" and .msg == "copy exited" and .status == 3 and (.child_pid | type) == "number" and .pid != .child_pid'
	# A third copy starts in place of the dead one, and answers.
	wait_for -t 10 _started 3
	wait_for -t 10 _answer_from_new_copy "$T/first"
}

@test "a copy that answers with a line past 16 MiB: its request is answered 502 at once, and it is restarted" {
	stack -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	cp "$T/started" "$T/first"
	run curl -s -o /dev/null -m 10 -w '%{http_code}' "$URL/huge"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-pool" and .msg == "invalid line from copy: restarting it" and .reason == "line too long"'
	wait_for -t 10 _started 2
	wait_for -t 10 _answer_from_new_copy "$T/first"
}

@test "a copy that answers with an id it was not given: its request is answered 502 at once, and it is restarted" {
	# Its request used to wait for ever (or its deadline), and the copy,
	# taken as busy with it, was never given another request.
	stack -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	cp "$T/started" "$T/first"
	run curl -s -o /dev/null -m 10 -w '%{http_code}' "$URL/wrongid"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-pool" and .level == "error" and .msg == "response with another id from copy: restarting it" and (.id | startswith("not-"))'
	wait_for -t 10 _started 2
	wait_for -t 10 _answer_from_new_copy "$T/first"
}

@test "a copy that answers one request twice: the first answer goes, the second is dropped, the copy keeps serving" {
	stack -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	first=$(head -n 1 "$T/started")
	run curl -s -m 10 "$URL/twice"
	assert_output "$first"
	for i in 1 2 3; do
		run curl -s -m 10 "$URL/"
		assert_output "$first"
	done
	wait_event "$ERR" '.proc == "gk-pool" and .msg == "second response for a request of the copy: dropped"'
	assert_equal "$(wc -l <"$T/started")" 1
}

@test "a copy killed from outside is restarted and the pool keeps answering" {
	stack -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	first=$(head -n 1 "$T/started")
	run curl -s -m 10 "$URL/"
	assert_output "$first"
	kill -9 "$first"
	wait_for -t 10 _started 2
	second=$(sed -n 2p "$T/started")
	echo "$first" >"$T/first"
	wait_for -t 10 _answer_from_new_copy "$T/first"
	run curl -s -m 10 "$URL/"
	assert_output "$second"
}

@test "a request past its deadline while a copy works on it: 504, the copy is killed and restarted" {
	stack --timeout 500ms -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	run curl -s -o /dev/null -m 5 -w '%{http_code}' "$URL/hang"
	assert_output 504
	wait_file "$T/hang.pid"
	wait_for -t 5 _not_running "$(cat "$T/hang.pid")"
	wait_for -t 10 _started 2
	run curl -s -m 10 "$URL/"
	assert_output "$(sed -n 2p "$T/started")"
}

@test "a request whose client goes away gets its copy killed and restarted" {
	stack -- -n 1 -- python3 "$T/handler.py"
	wait_for -t 10 _started 1
	run curl -s -m 1 "$URL/hang"
	assert_failure
	wait_file "$T/hang.pid"
	wait_for -t 5 _not_running "$(cat "$T/hang.pid")"
	wait_event "$ERR" '.proc == "gk-pool" and .msg == "copy killed for a cancelled request"'
	wait_for -t 10 _started 2
	run curl -s -m 10 "$URL/"
	assert_output "$(sed -n 2p "$T/started")"
}

@test "usage errors exit 64; --help documents -n and the restart on cancel" {
	run gk-pool -n 2
	assert_failure 64
	run gk-pool -n none -- /bin/cat
	assert_failure 64
	run gk-pool --help
	assert_success
	assert_output --partial -- '--copies'
	assert_output --partial 'killed and restarted'
	# no south side: no --to, --restart or --no-restart, in --help or taken
	refute_output --partial -- '--to'
	refute_output --partial -- '--no-restart'
	for o in --restart --no-restart "--to 127.0.0.1:1"; do
		run gk-pool $o -- /bin/cat
		assert_failure 64
		assert_output "gk-pool: usage: unknown option ${o%% *} (see --help)"
	done
	run gk-pool --version
	assert_success
	assert_output --partial 'gk-pool 0.1.0'
}
