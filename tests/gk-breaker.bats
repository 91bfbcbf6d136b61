#!/usr/bin/env bats
# gk-breaker as a user sees it: a real gk-listener in front, real curl, and
# a wire handler that fails on command.  Every stack runs in its own process
# group (start_bg) and teardown ends it.  The breaker's events are read from
# the stack's stderr.

load helpers/common

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
	RECEIVED="$T/received"
	ANSWERED="$T/answered"
	FAIL_FILE="$T/fail"
	READY_FILE="$T/ready"
	export RECEIVED ANSWERED FAIL_FILE READY_FILE
	: >"$RECEIVED"
	: >"$ANSWERED"
	write_handler
}

teardown() {
	stop_all
}

# A wire handler.  Every request it reads is one line in $RECEIVED (its
# path); every answer it writes, one line in $ANSWERED.  It answers 500
# while $FAIL_FILE exists, else 200; the x-status header overrides that;
# x-sleep: MS answers after MS milliseconds (others are answered meanwhile).
# Cancels are read and ignored, so a late answer is still written.
write_handler() {
	cat >"$T/handler.py" <<'PY'
import json, os, sys, threading
received = open(os.environ["RECEIVED"], "a", buffering=1)
answered = open(os.environ["ANSWERED"], "a", buffering=1)
fail = os.environ["FAIL_FILE"]
lock = threading.Lock()
open(os.environ["READY_FILE"], "w").write("ready\n")
def answer(req, status):
    line = json.dumps({"id": req["id"], "status": status,
        "headers": {"content-type": "text/plain"},
        "body": "%d %s\n" % (status, req.get("path", ""))})
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        answered.write(req["id"] + "\n")
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    h = req.get("headers", {})
    received.write(req.get("path", "") + "\n")
    status = int(h["x-status"]) if "x-status" in h else (
        500 if os.path.exists(fail) else 200)
    if "x-sleep" in h:
        t = threading.Timer(int(h["x-sleep"]) / 1000.0, answer, (req, status))
        t.daemon = True
        t.start()
    else:
        answer(req, status)
PY
}

# start_stack [BREAKER OPTIONS...]
start_stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-breaker "$@" -- python3 -u "$T/handler.py"
	wait_http "$URL/healthz" 10
	# The handler has started: the first call is not slowed by that.
	wait_file "$READY_FILE" 20
}

# code PATH [CURL ARGS...]: the status of one request.
code() {
	local path=$1
	shift
	curl -s -m 10 -o "$T/body" -D "$T/head" -w '%{http_code}' "$@" "$URL$path"
}

# header NAME: a header of the last response code fetched.
header() {
	tr -d '\r' <"$T/head" | awk -v n="$1" -F': ' 'tolower($1) == n {print $2}'
}

received() {
	wc -l <"$RECEIVED" | tr -d ' '
}

# expect CODE PATH [CURL ARGS...]: one request, its status must be CODE.
expect() {
	local want=$1
	shift
	local got
	got=$(code "$@")
	[ "$got" = "$want" ] || fail "$*: status $got, expected $want"
}

breaker_pid() {
	stage_pid gk-breaker stack
}

_metrics_more() {
	[ "$(count_events "$ERR" ".type == \"metrics\" and .proc == \"$(stage_proc gk-breaker)\"")" -gt "$1" ]
}

# snapshot: ask the breaker for a metrics snapshot (SIGUSR1) and print it.
snapshot() {
	local before
	before=$(count_events "$ERR" ".type == \"metrics\" and .proc == \"$(stage_proc gk-breaker)\"")
	kill -USR1 "$(breaker_pid)"
	poll_for -t 10 _metrics_more "$before"
	last_metrics "$ERR" "$(stage_proc gk-breaker)"
}

# metric SNAPSHOT NAME [SERIES FILTER]: the sum of the matching series.
metric() {
	jq -r --arg n "$2" "[.metrics[] | select(.name == \$n) | .series[] |
		select(${3:-true}) | .value] | add // 0" <<<"$1"
}

opened() {
	count_events "$ERR" '.type == "log" and .msg == "circuit opened"'
}

_opened_at_least() {
	[ "$(opened)" -ge "$1" ]
}

# last_event MSG: the last log event with that message.
last_event() {
	events "$ERR" "select(.type == \"log\" and .msg == \"$1\")" | tail -n 1
}

# poll_until_admitted PATH [CURL ARGS...]: send requests (every 50 ms, at
# most 10 s) until one is not answered 503 by the breaker; its status in
# $CODE.  While open, the breaker answers them without the handler.
poll_until_admitted() {
	local i
	for ((i = 0; i < 200; i++)); do
		CODE=$(code "$@")
		[ "$CODE" != 503 ] && return 0
		sleep 0.05
	done
	fail "still open after 10 s"
}

@test "closed, open, half-open, closed: --consecutive 3 --open-for 1s" {
	start_stack --consecutive 3 --open-for 1s
	expect 200 /ok
	touch "$FAIL_FILE"
	expect 500 /f1
	expect 500 /f2
	assert_equal "$(opened)" 0
	expect 500 /f3
	assert_equal "$(received)" 4
	wait_event "$ERR" '.msg == "circuit opened"' 5
	ev=$(last_event "circuit opened")
	assert_equal "$(jq -r .open_for_ms <<<"$ev")" 1000
	assert_equal "$(jq -r .reason <<<"$ev")" "consecutive failures"
	assert_equal "$(jq -r .level <<<"$ev")" warn

	# Open: 503 with Retry-After, without reaching the handler.
	expect 503 /rejected
	ra=$(header retry-after)
	[[ $ra =~ ^[0-9]+$ ]] && [ "$ra" -ge 1 ] && [ "$ra" -le 1 ]
	assert_equal "$(received)" 4

	# After the interval, the first request is a probe; it succeeds: closed.
	rm -f "$FAIL_FILE"
	poll_until_admitted /probe
	assert_equal "$CODE" 200
	assert_equal "$(received)" 5
	assert_equal "$(tail -n 1 "$RECEIVED")" /probe
	wait_event "$ERR" '.msg == "circuit closed"' 5
	assert_equal "$(count_events "$ERR" '.msg == "circuit half-open"')" 1
	assert_equal "$(jq -r .reason <<<"$(last_event "circuit closed")")" "probes succeeded"
	# Open for the whole second, by the breaker's own clock (its events;
	# 10 ms for the time between a loop turn's start and an event).
	run events "$ERR" 'select(.msg == "circuit opened" or .msg == "circuit half-open") |
		.ts | capture("(?<s>.*T[0-9:]+)(?<f>\\.[0-9]+)Z") |
		((.s + "Z" | fromdateiso8601) + (.f | tonumber))'
	assert_success
	assert_equal "${#lines[@]}" 2
	awk -v a="${lines[0]}" -v b="${lines[1]}" 'BEGIN {
		printf "# open for %.3f s\n", b - a; exit !(b - a >= 0.99) }' >&3
	expect 200 /again
	assert_equal "$(received)" 6
}

@test "--http: the breaker fronts the stack itself; open answers 503 over HTTP" {
	start_bg stack gk-breaker --http -l "127.0.0.1:$PORT" --no-access-log \
		--consecutive 2 --open-for 10s -- python3 -u "$T/handler.py"
	wait_http "$URL/healthz" 10
	wait_file "$READY_FILE" 20
	expect 200 /ok
	touch "$FAIL_FILE"
	expect 500 /f1
	expect 500 /f2
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /rejected
	[[ $(header retry-after) =~ ^[0-9]+$ ]]
	assert_equal "$(received)" 3
	assert_equal "$(ps -o comm= -p "$(pgrep -P "$(bg_pid stack)")")" python3
}

@test "a failing probe opens the circuit again for twice as long" {
	start_stack --consecutive 3 --open-for 1s
	touch "$FAIL_FILE"
	expect 500 /f1
	expect 500 /f2
	expect 500 /f3
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .open_for_ms <<<"$(last_event "circuit opened")")" 1000
	poll_until_admitted /probe
	assert_equal "$CODE" 500
	assert_equal "$(received)" 4
	poll_for -t 5 _opened_at_least 2
	ev=$(last_event "circuit opened")
	assert_equal "$(jq -r .reason <<<"$ev")" "probe failed"
	assert_equal "$(jq -r .from <<<"$ev")" half-open
	assert_equal "$(jq -r .open_for_ms <<<"$ev")" 2000
	expect 503 /rejected
	# Whole seconds left of the 2 s interval, however long the checks
	# above took.
	ra=$(header retry-after)
	[ "$ra" -ge 1 ] && [ "$ra" -le 2 ] || fail "retry-after $ra"
	assert_equal "$(received)" 4
}

@test "failure rate over a count window: --window 10 --min-calls 10 --failure-rate 50%" {
	start_stack --consecutive 0 --window 10 --min-calls 10 --failure-rate 50%
	# 6 successes, 4 failures: 40% over 10 calls, still closed.
	for i in 1 2 3 4 5 6; do expect 200 /s$i; done
	for i in 1 2 3 4; do expect 500 /f$i -H "x-status: 500"; done
	expect 200 /s7
	# The window now holds 5 successes, 4 failures; one more is 50%.
	expect 500 /f5 -H "x-status: 500"
	assert_equal "$(received)" 12
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .reason <<<"$(last_event "circuit opened")")" "failure rate"
	expect 503 /rejected
	assert_equal "$(received)" 12
}

@test "failures below --min-calls do not trip the rate" {
	start_stack --consecutive 0 --window 10 --min-calls 10 --failure-rate 50%
	for i in 1 2 3 4 5 6 7 8 9; do expect 500 /f$i -H "x-status: 500"; done
	assert_equal "$(opened)" 0
	# The tenth call makes the window count: 9 of 10 failed.
	expect 200 /ok
	assert_equal "$(received)" 10
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /rejected
}

@test "failure rate over a time window: --window 10s" {
	start_stack --consecutive 0 --window 10s --min-calls 4 --failure-rate 50%
	expect 200 /s1
	expect 200 /s2
	expect 500 /f1 -H "x-status: 500"
	assert_equal "$(opened)" 0
	expect 500 /f2 -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .reason <<<"$(last_event "circuit opened")")" "failure rate"
	expect 503 /rejected
	assert_equal "$(received)" 4
}

@test "slow calls trip the breaker: --slow 400ms --slow-rate 50%" {
	start_stack --consecutive 0 --window 4 --min-calls 4 --slow 400ms --slow-rate 50%
	expect 200 /fast1
	expect 200 /fast2
	# Slow by the handler's timer, which never fires early: 500 ms is
	# past 400 ms however loaded the machine.
	expect 200 /slow1 -H "x-sleep: 500"
	assert_equal "$(opened)" 0
	expect 200 /slow2 -H "x-sleep: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .reason <<<"$(last_event "circuit opened")")" "slow call rate"
	expect 503 /rejected
	assert_equal "$(received)" 4
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "slow"')" 2
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "success"')" 4
}

@test "-t answers 504, counts a failure, and drops the late answer quietly" {
	start_stack -t 300ms --consecutive 2 --open-for 60s
	expect 504 /hang1 -H "x-sleep: 1000"
	# Answered at the call timeout, before the handler answered.
	assert_equal "$(wc -l <"$ANSWERED")" 0
	assert_equal "$(opened)" 0
	expect 504 /hang2 -H "x-sleep: 1000"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /rejected
	assert_equal "$(received)" 2
	# The late answers come back and are dropped without a warning.
	poll_for -t 10 _answered 2
	snapshot >/dev/null
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "timeout"')" 2
	assert_equal "$(metric "$snap" gk_stage_dropped_lines_total '.labels.reason == "unknown_id"')" 0
	assert_equal "$(count_events "$ERR" '.msg == "response for unknown id: dropped"')" 0
}

_answered() {
	[ "$(wc -l <"$ANSWERED")" -ge "$1" ]
}

@test "the runtime's --timeout answers 504 without counting a failure" {
	start_stack --timeout 300ms --consecutive 1
	expect 504 /hang1 -H "x-sleep: 800"
	expect 504 /hang2 -H "x-sleep: 800"
	expect 200 /ok
	assert_equal "$(received)" 3
	assert_equal "$(opened)" 0
}

@test "a stage below answering 504 at the request's deadline is no failure either" {
	# gk-tracer below keeps the same deadline as the breaker's runtime
	# (the listener's --timeout); whichever timer fires first, the
	# caller's budget ran out: not the south side's failure.
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log \
		--timeout 300ms -- gk-breaker --consecutive 1 -- \
		gk-tracer --sample 0 -- python3 -u "$T/handler.py"
	wait_http "$URL/healthz" 10
	wait_file "$READY_FILE" 20
	local i
	for i in 1 2 3; do
		expect 504 "/hang$i" -H "x-sleep: 1500"
	done
	expect 200 /ok
	assert_equal "$(opened)" 0
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "failure"')" 0
}

@test "while open, 100 requests are each answered within 1 ms without reaching the handler" {
	start_stack --consecutive 1 --open-for 60s
	expect 500 /trip -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	timeout 30 curl -s --no-progress-meter -m 10 -o /dev/null -w '%{http_code}\n' \
		"$URL/r[1-100]" >"$T/codes" 2>"$T/curl.err"
	assert_equal "$(grep -c '^503$' "$T/codes")" 100
	assert_equal "$(received)" 1
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_rejected_total)" 100
	# The breaker's own measure: from the loop turn that read each
	# request to its answer.  Every one of the 100 is in the 1 ms bucket.
	h=$(jq -c '.metrics[] | select(.name == "gk_breaker_open_answer_seconds") |
		.series[0]' <<<"$snap")
	echo "# $h" >&3
	assert_equal "$(jq -r .count <<<"$h")" 100
	assert_equal "$(jq -r '[.buckets[] | select(.[0] == 0.001) | .[1]][0]' <<<"$h")" 100
}

@test "the open interval doubles with each failed probe up to --open-max, and starts over once closed" {
	start_stack --consecutive 1 --open-for 200ms --open-max 400ms
	expect 500 /trip -H "x-status: 500"
	poll_for -t 5 _opened_at_least 1
	assert_equal "$(jq -r .open_for_ms <<<"$(last_event "circuit opened")")" 200
	poll_until_admitted /probe1 -H "x-status: 500"
	assert_equal "$CODE" 500
	poll_for -t 5 _opened_at_least 2
	assert_equal "$(jq -r .open_for_ms <<<"$(last_event "circuit opened")")" 400
	# Doubled again it would be 800: --open-max holds it at 400.
	poll_until_admitted /probe2 -H "x-status: 500"
	assert_equal "$CODE" 500
	poll_for -t 5 _opened_at_least 3
	assert_equal "$(jq -r .open_for_ms <<<"$(last_event "circuit opened")")" 400
	# A probe that succeeds closes it; the next trip is --open-for again.
	poll_until_admitted /probe3
	assert_equal "$CODE" 200
	wait_event "$ERR" '.msg == "circuit closed"' 5
	expect 500 /trip2 -H "x-status: 500"
	poll_for -t 5 _opened_at_least 4
	ev=$(last_event "circuit opened")
	assert_equal "$(jq -r .open_for_ms <<<"$ev")" 200
	assert_equal "$(jq -r .from <<<"$ev")" closed
	assert_equal "$(received)" 5
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "open"')" 4
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "half_open"')" 3
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "closed"')" 1
}

@test "half-open admits exactly --probes 3" {
	start_stack --consecutive 1 --open-for 500ms --probes 3
	expect 500 /trip -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	# The first request after the interval: probe 1 (fast, succeeds).
	poll_until_admitted /probe1
	assert_equal "$CODE" 200
	assert_equal "$(received)" 2
	assert_equal "$(count_events "$ERR" '.msg == "circuit closed"')" 0
	# Ten at once, slow: exactly two more probes reach the handler.
	timeout 30 curl -s --no-progress-meter --parallel --parallel-max 10 -m 10 \
		-o /dev/null -w '%{http_code}\n' -H "x-sleep: 500" \
		"$URL/p[1-10]" >"$T/codes" 2>"$T/curl.err"
	assert_equal "$(grep -c '^200$' "$T/codes")" 2
	assert_equal "$(grep -c '^503$' "$T/codes")" 8
	assert_equal "$(received)" 4
	wait_event "$ERR" '.msg == "circuit closed"' 5
	assert_equal "$(jq -r .reason <<<"$(last_event "circuit closed")")" "probes succeeded"
	expect 200 /closed
}

@test "a probe of an earlier half-open that answers late does not count toward closing" {
	local a
	start_stack --consecutive 1 --open-for 300ms --probes 3
	expect 500 /trip -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	# Half-open: probe P succeeds, probe A is slow (it will succeed
	# late), probe B fails and opens the circuit again, for 600 ms.
	poll_until_admitted /p
	assert_equal "$CODE" 200
	curl -s -m 10 -o /dev/null -w '%{http_code}' -H "x-sleep: 1500" \
		"$URL/a" >"$T/a" 2>/dev/null &
	a=$!
	poll_for -t 5 grep -qx /a "$RECEIVED"
	expect 500 /b -H "x-status: 500"
	poll_for -t 5 _opened_at_least 2
	# The next half-open: its first probe succeeds...
	poll_until_admitted /c
	assert_equal "$CODE" 200
	# ...A's late success belongs to the earlier half-open...
	wait "$a"
	assert_equal "$(cat "$T/a")" 200
	# ...so after this period's second probe it is still half-open.
	expect 200 /d
	snap=$(snapshot)
	assert_equal "$(count_events "$ERR" '.msg == "circuit closed"')" 0
	assert_equal "$(metric "$snap" gk_breaker_state)" 1
	expect 200 /e
	wait_event "$ERR" '.msg == "circuit closed"' 5
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "half_open"')" 2
	assert_equal "$(received)" 7
}

@test "--fail-on 5xx,429: 429 fails, 404 does not" {
	start_stack --fail-on 5xx,429 --consecutive 3
	for i in 1 2 3 4; do expect 404 /n$i -H "x-status: 404"; done
	assert_equal "$(opened)" 0
	expect 429 /a -H "x-status: 429"
	expect 500 /b -H "x-status: 500"
	expect 429 /c -H "x-status: 429"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /rejected
	assert_equal "$(received)" 7
}

@test "--fail-on 429 alone: a 500 is a success" {
	start_stack --fail-on 429 --consecutive 2
	for i in 1 2 3; do expect 500 /e$i -H "x-status: 500"; done
	assert_equal "$(opened)" 0
	expect 429 /a -H "x-status: 429"
	expect 429 /b -H "x-status: 429"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /rejected
}

@test "--fallback-status and --fallback-body answer while open" {
	start_stack --consecutive 1 --open-for 60s --fallback-status 200 \
		--fallback-body "cached answer"
	expect 500 /trip -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 200 /x
	assert_equal "$(cat "$T/body")" "cached answer"
	assert_equal "$(received)" 1
}

@test "per key: -k header:x-tenant opens only the failing tenant's circuit" {
	start_stack -k header:x-tenant --consecutive 2 --open-for 60s
	expect 500 /a1 -H "x-tenant: a" -H "x-status: 500"
	expect 200 /b1 -H "x-tenant: b"
	expect 500 /a2 -H "x-tenant: a" -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .key <<<"$(last_event "circuit opened")")" a
	expect 503 /a3 -H "x-tenant: a"
	expect 200 /b2 -H "x-tenant: b"
	expect 200 /b3 -H "x-tenant: b" -H "x-status: 200"
	assert_equal "$(received)" 5
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_state '.labels.key == "a"')" 2
	assert_equal "$(metric "$snap" gk_breaker_state '.labels.key == "b"')" 0
}

@test "per key: two keys alike in their first 200 bytes keep circuits of their own" {
	# Keys were cut at 127 bytes: long paths with one prefix shared one
	# circuit, and one failing route opened it for all of them.
	local long
	long=$(printf 'x%.0s' $(seq 200))
	start_stack -k header:x-tenant --consecutive 2 --open-for 60s
	expect 500 /a1 -H "x-tenant: ${long}a" -H "x-status: 500"
	expect 500 /a2 -H "x-tenant: ${long}a" -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	expect 503 /a3 -H "x-tenant: ${long}a"
	expect 200 /b1 -H "x-tenant: ${long}b"
	# The key in the event: its start, then ~ and a hash of the whole.
	run jq -r .key <<<"$(last_event "circuit opened")"
	assert_output --regexp "^x{110}~[0-9a-f]{16}$"
}

@test "metrics on SIGUSR1: state, transitions, calls by outcome, rejected" {
	start_stack --consecutive 3 --open-for 60s
	expect 200 /ok1
	expect 200 /ok2
	touch "$FAIL_FILE"
	for i in 1 2 3; do expect 500 /f$i; done
	wait_event "$ERR" '.msg == "circuit opened"' 5
	for i in 1 2 3 4 5; do expect 503 /r$i; done
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_state)" 2
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "open"')" 1
	assert_equal "$(metric "$snap" gk_breaker_transitions_total '.labels.to == "closed"')" 0
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "success"')" 2
	# Calls answered while open are rejections, not failures.
	assert_equal "$(metric "$snap" gk_breaker_calls_total '.labels.outcome == "failure"')" 3
	assert_equal "$(metric "$snap" gk_breaker_rejected_total)" 5
	assert_equal "$(jq -r '[.metrics[] | select(.name == "gk_breaker_state") | .type][0]' <<<"$snap")" gauge
	assert_equal "$(jq -r '[.metrics[] | select(.name == "gk_breaker_rejected_total") | .type][0]' <<<"$snap")" counter
}

@test "the open answer carries error {stage: gk-breaker, reason: open} on the wire" {
	start_bg stack gk-breaker -l "unix:$T/b.sock" --consecutive 1 --open-for 60s \
		-- python3 -u "$T/handler.py"
	poll_for -t 10 test -S "$T/b.sock"
	run timeout 20 python3 - "$T/b.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def call(i, headers):
    f.write(json.dumps({"id": str(i), "method": "GET", "path": "/w",
        "headers": headers}) + "\n")
    f.flush()
    return json.loads(f.readline())
r1 = call(1, {"x-status": "500"})
r2 = call(2, {})
print(r1["status"], r2["status"], r2["error"]["stage"], r2["error"]["reason"],
    r2["headers"].get("retry-after"))
PY
	assert_success
	assert_output --regexp '^500 503 gk-breaker open [0-9]+$'
}

@test "the circuit opened event carries the trace_id of the request that opened it" {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer -- gk-breaker --consecutive 1 -- python3 -u "$T/handler.py"
	wait_http "$URL/healthz" 10
	expect 500 /trip -H "x-status: 500" \
		-H "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	assert_equal "$(jq -r .trace_id <<<"$(last_event "circuit opened")")" \
		4bf92f3577b34da6a3ce929d0e0e4736
}

@test "bad options exit 64 with one line" {
	local bad
	for bad in "--failure-rate 150%" "--window 0" "--fail-on 6xx" \
		"--slow-rate 0%" "--consecutive x" "--probes 0" "-t soon" \
		"--fail-on 5xx," "--fail-on +500" "--open-for 0" \
		"--slow-rate 50%" "--failure-rate 0.5" "--slow-rate 0.9" \
		"--window 1500ms"; do
		# shellcheck disable=SC2086
		run bash -c "gk-breaker $bad -- cat 2>&1 >/dev/null"
		[ "$status" = 64 ] || fail "$bad: exit $status"
		[ "${#lines[@]}" = 1 ] || fail "$bad: ${#lines[@]} lines: $output"
		assert_output --partial "gk-breaker"
		assert_output --partial "${bad#* }"
		# What was expected, or what is missing.
		[[ $output == *expected* || $output == *needs* ]] ||
			fail "$bad: says not what was expected: $output"
	done
	# A count window that could never hold --min-calls calls.
	run bash -c "gk-breaker --window 100 --min-calls 500 -- cat 2>&1 >/dev/null"
	assert_equal "$status" 64
	assert_output "gk-breaker: usage: bad --min-calls: 500 (more than the --window of 100 calls holds)"
	# A bound below the first interval, given: not silently raised.
	run bash -c "timeout 10 gk-breaker --open-for 10s --open-max 5s -- cat 2>&1 >/dev/null </dev/null"
	assert_equal "$status" 64
	assert_output "gk-breaker: usage: bad --open-max: 5s (below the --open-for of 10s)"
}

@test "a call let through before the circuit opened that fails late does not count once it has closed again" {
	local a
	# As handler.py, but an answer to x-hold waits for $T/release.
	cat >"$T/hold.py" <<'PY'
import json, os, sys, threading, time
received = open(os.environ["RECEIVED"], "a", buffering=1)
release = os.environ["RELEASE"]
lock = threading.Lock()
open(os.environ["READY_FILE"], "w").write("ready\n")
def answer(req, status):
    if "x-hold" in req.get("headers", {}):
        for _ in range(1000):
            if os.path.exists(release):
                break
            time.sleep(0.01)
    with lock:
        sys.stdout.write(json.dumps({"id": req["id"], "status": status}) + "\n")
        sys.stdout.flush()
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    received.write(req.get("path", "") + "\n")
    status = int(req.get("headers", {}).get("x-status", "200"))
    threading.Thread(target=answer, args=(req, status), daemon=True).start()
PY
	export RELEASE="$T/release"
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-breaker --consecutive 2 --open-for 200ms -- python3 -u "$T/hold.py"
	wait_http "$URL/healthz" 10
	wait_file "$READY_FILE" 20
	# A: let through while closed; it fails once released.
	curl -s -m 20 -o /dev/null -w '%{http_code}' -H "x-hold: 1" \
		-H "x-status: 500" "$URL/a" >"$T/a" 2>/dev/null &
	a=$!
	wait_for -t 5 grep -qx /a "$RECEIVED"
	# Two fast failures open it; the probe after 200 ms closes it.
	expect 500 /f1 -H "x-status: 500"
	expect 500 /f2 -H "x-status: 500"
	wait_event "$ERR" '.msg == "circuit opened"' 5
	poll_until_admitted /probe
	assert_equal "$CODE" 200
	wait_event "$ERR" '.msg == "circuit closed"' 5
	# A's failure now belongs to the outage that is over: one new
	# failure is one in a row, not the second.
	echo go >"$RELEASE"
	wait "$a"
	assert_equal "$(cat "$T/a")" 500
	expect 500 /f3 -H "x-status: 500"
	expect 200 /ok
	assert_equal "$(opened)" 1
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_breaker_state)" 0
}

@test "--slow longer than -t, which no call could reach, exits 64 with one line" {
	run bash -c "timeout 10 gk-breaker --slow 2s -t 1s -- cat 2>&1 >/dev/null </dev/null"
	assert_equal "$status" 64
	assert_output "gk-breaker: usage: bad --slow: 2s (longer than the -t of 1s: no call could be slow)"
	# At -t or below, a call can be slow.
	run bash -c "timeout 10 gk-breaker --slow 1s -t 1s -- true 2>&1 >/dev/null </dev/null"
	assert_equal "$status" 0
}
