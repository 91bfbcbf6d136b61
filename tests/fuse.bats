#!/usr/bin/env bats
# gk-listener --fuse: gk-tracer, gk-limiter and gk-breaker run inside the
# listener's process, and the stack behaves as the same stack of processes
# does.  Real curl, a real wire handler (python) that records every line it
# reads; every stack in its own process group (start_bg).  The stage suites
# themselves also run fused: GK_FUSE=1 tests/run build tests/gk-breaker.bats.

load helpers/common

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
	SEEN="$T/seen"
	export SEEN
	: >"$SEEN"
	# Every line read goes to $SEEN.  x-sleep: MS answers after MS ms,
	# x-status: N answers N, x-exit: 1 exits at once.  The body is the
	# request's trace member and traceparent header, as JSON.
	cat >"$T/handler.py" <<'PY'
import json, os, sys, threading, time
seen = open(os.environ["SEEN"], "a", buffering=1)
lock = threading.Lock()
def answer(req):
    h = req.get("headers", {})
    time.sleep(int(h.get("x-sleep", "0")) / 1000)
    body = json.dumps({"trace": req.get("trace"), "traceparent": h.get("traceparent")})
    out = json.dumps({"id": req["id"], "status": int(h.get("x-status", "200")),
                      "headers": {"content-type": "application/json"}, "body": body})
    with lock:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
for line in sys.stdin:
    seen.write(line)
    req = json.loads(line)
    if req.get("cancel"):
        continue
    if req.get("headers", {}).get("x-exit"):
        os._exit(3)
    threading.Thread(target=answer, args=(req,), daemon=True).start()
PY
}

teardown() {
	stop_all
}

# Ends the stack of the test, for another on a new port ($PORT, $URL).
next_stack() {
	stop_all
	: >"$T/.bg_names"
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
}

# The commands of the processes below the listener started as "stack".
children() {
	local p
	for p in $(pgrep -s "$(bg_pid stack)"); do
		[ "$p" = "$(bg_pid stack)" ] || cat "/proc/$p/comm"
	done | sort | tr '\n' ' '
}

@test "--fuse runs gk-tracer, gk-limiter and gk-breaker in gk-listener's process; the handler gets the trace context" {
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -r 1000/s -- gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	run curl -sS -m 10 -D "$T/h" "$URL/a"
	assert_success
	body=$output
	# One child, the handler: no stage runs as a process of its own.
	assert_equal "$(children)" "python3 "
	tp=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
	[[ $tp =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-0[13]$ ]]
	trace=$(cut -d- -f2 <<<"$tp")
	assert_equal "$(jq -r .trace.trace_id <<<"$body")" "$trace"
	assert_equal "$(jq -r .traceparent <<<"$body" | cut -d- -f2)" "$trace"
}

@test "GK_FUSE=1 fuses as --fuse does; without either every stage is a process" {
	GK_FUSE=1 start_bg stack gk-listener -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$URL/")" 200
	assert_equal "$(children)" "python3 "
	next_stack
	start_bg stack gk-listener -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$URL/")" 200
	assert_equal "$(children)" "gk-breaker gk-tracer python3 "
}

@test "a stage named twice, or not the one installed beside gk-listener, runs as its own process" {
	mkdir "$T/bin"
	cp "$GK_BUILD/bin/gk-limiter" "$T/bin/gk-limiter"
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-tracer -- "$T/bin/gk-limiter" -r 1000/s -- gk-breaker -- \
		python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$URL/")" 200
	# The second gk-tracer is a process; it fuses nothing itself (only
	# gk-listener does), so the rest are processes too.
	assert_equal "$(children)" "gk-breaker gk-limiter gk-tracer python3 "
}

@test "fused stages answer on their own, naming themselves in error.stage" {
	# A wire socket beside the HTTP one shows the error member.
	WPORT=$(free_port)
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" \
		-l "json:127.0.0.1:$WPORT" -- gk-tracer -- gk-limiter -r 1/m -b 0 \
		-- gk-breaker --consecutive 1 --open-for 1m -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	wait_port 127.0.0.1 "$WPORT"
	run python3 - "$WPORT" <<'PY'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rw")
for i, st in (("1", "500"), ("2", "200")):
    f.write(json.dumps({"id": i, "method": "GET", "path": "/",
                        "headers": {"x-status": st}}) + "\n")
    f.flush()
    print(f.readline().strip())
PY
	assert_success
	first=$(sed -n 1p <<<"$output")
	second=$(sed -n 2p <<<"$output")
	assert_equal "$(jq -r .status <<<"$first")" 500
	assert_equal "$(jq -r .status <<<"$second")" 429
	assert_equal "$(jq -c .error <<<"$second")" '{"stage":"gk-limiter","reason":"rate limited"}'
	assert_equal "$(jq -r '.headers["retry-after"] | tonumber > 0' <<<"$second")" true
	# The breaker opened on the 500: over HTTP (the limiter's one token
	# is spent, so the breaker must come first): a stack with the order
	# turned round.
	next_stack
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- \
		gk-breaker --consecutive 1 --open-for 1m -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'x-status: 500' "$URL/")" 500
	n=$(grep -c . "$SEEN")
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$URL/")" 503
	assert_equal "$(grep -c . "$SEEN")" "$n"
}

@test "a fused breaker's -t answers 504 and the handler is told to cancel" {
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-breaker -t 300ms -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'x-sleep: 3000' "$URL/slow")" 504
	poll_for -t 10 grep -q '"cancel": *true' "$SEEN"
	id=$(jq -r 'select(.path == "/slow") | .id' "$SEEN")
	assert_equal "$(jq -r 'select(.cancel) | .id' "$SEEN")" "$id"
}

@test "a client that goes away cancels down the fused chain to the handler" {
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -c 4 -- gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	run curl -sS -m 0.5 -H 'x-sleep: 5000' "$URL/gone"
	assert_failure
	poll_for -t 10 grep -q '"cancel": *true' "$SEEN"
	# The limiter's -c slot was freed by the cancel: four more at once
	# are all let through.
	local pids=() i
	for i in 1 2 3 4; do
		curl -sS -m 10 -o "$T/c$i" -w '%{http_code}\n' -H 'x-sleep: 300' "$URL/$i" >"$T/code$i" &
		pids+=($!)
	done
	wait "${pids[@]}"
	assert_equal "$(cat "$T"/code[1-4] | tr '\n' ' ')" "200 200 200 200 "
	assert_equal "$(jq -r 'select(.cancel | not) | .path' "$SEEN" | sort | tr '\n' ' ')" "/1 /2 /3 /4 /gone "
}

@test "SIGTERM drains the fused chain: the request in flight is answered, the handler's stdin closes, exit 0" {
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -r 1000/s -- gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	curl -sS -m 10 -o "$T/body" -w '%{http_code}' -H 'x-sleep: 800' "$URL/last" >"$T/code" &
	local client=$!
	poll_for -t 10 grep -q '"/last"' "$SEEN"
	kill -TERM "$(bg_pid stack)"
	wait "$client"
	assert_equal "$(cat "$T/code")" 200
	wait_exit stack 10
	assert_equal "$BG_STATUS" 0
	wait_event "$ERR" '.msg == "south exited" and .cmd == "python3" and .status == 0' 5
}

@test "the handler dies: restarted by default; with --no-restart on the last stage the process drains and exits 75" {
	# (No breaker: the 502 and the 503s while the handler restarts
	# would open its circuit.)
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -r 1000/s -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'x-exit: 1' "$URL/")" 502
	poll_for -t 10 bash -c "[ \"\$(curl -sS -m 2 -o /dev/null -w %{http_code} $URL/)\" = 200 ]"
	next_stack
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-breaker --no-restart -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	curl -sS -m 10 -o /dev/null -H 'x-exit: 1' "$URL/" || true
	wait_exit stack 10
	assert_equal "$BG_STATUS" 75
}

@test "a fused stage's bad option exits 64 with one line naming the stage" {
	run gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -r 10/x -- hello
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --regexp '^gk-limiter: usage: bad'
	run gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-breaker \
		--failure-rate 150% -- hello
	assert_equal "$status" 64
	assert_output --regexp '^gk-breaker: usage: .*150%'
}

@test "one metrics snapshot of the listener holds the fused stages' metrics" {
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-limiter -r 1000/s -- gk-breaker -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	for i in 1 2 3; do curl -sS -m 10 -o /dev/null "$URL/$i"; done
	kill -USR1 "$(bg_pid stack)"
	wait_event "$ERR" '.type == "metrics"' 10
	names=$(events "$ERR" 'select(.type == "metrics") | .metrics[].name' | sort -u)
	for n in gk_tracer_requests_total gk_limiter_allowed_total gk_breaker_state gk_stage_inflight gk_http_requests_total; do
		grep -qx "$n" <<<"$names" || fail "no $n in the snapshot"
	done
	allowed=$(events "$ERR" 'select(.type == "metrics") | .metrics[] | select(.name == "gk_limiter_allowed_total") | .series[0].value' | tail -n 1)
	assert_equal "$allowed" 3
}

@test "the wire's 16 MiB line bound holds between fused stages: a larger request is answered 413 by the stage below" {
	start_bg stack gk-listener --fuse --max-body 20m --timeout 20s \
		-l "127.0.0.1:$PORT" -- gk-tracer -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	head -c 17000000 /dev/zero | tr '\0' a >"$T/body"
	run curl -sS -m 20 --data-binary @"$T/body" -o "$T/resp" -w '%{http_code}' "$URL/up"
	assert_output 413
	assert_equal "$(cat "$T/resp")" "request too large"
	wait_event "$ERR" '.level == "error" and .msg == "request too long from north: answered 413"'
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$URL/after")" 200
	# The handler saw the request after, not the large one.
	assert_equal "$(jq -r .path "$SEEN" | tr '\n' ' ')" "/after "
}

@test "a fused stage's own --timeout, shorter than the stack's or where the stack has none, answers 504" {
	# The listener gives requests no deadline (--timeout 0): the
	# breaker's own --timeout is the only one, and its timer answers.
	start_bg stack gk-listener --fuse --timeout 0 -l "127.0.0.1:$PORT" -- \
		gk-tracer -- gk-breaker --timeout 300ms -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$PORT"
	a=$(date +%s%3N)
	assert_equal "$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'x-sleep: 5000' "$URL/slow")" 504
	b=$(date +%s%3N)
	[ $((b - a)) -lt 3000 ] || fail "504 after $((b - a)) ms"
	poll_for -t 10 grep -q '"cancel": *true' "$SEEN"
}

@test "fused: the signal again, once the chain has drained, hurries the handler's end: TERM, then KILL" {
	# A handler that ignores TERM and stays after end of file.
	cat >"$T/stubborn.py" <<'PY'
import os, sys, time
for line in sys.stdin:
    pass
open(os.environ["SEEN"] + ".eof", "w").write("eof\n")
time.sleep(60)
PY
	start_bg stack gk-listener --fuse -l "127.0.0.1:$PORT" -- gk-tracer -- \
		gk-breaker -- bash -c 'trap "" TERM INT; exec python3 "$0"' "$T/stubborn.py"
	wait_port 127.0.0.1 "$PORT"
	kill -TERM "$(bg_pid stack)"
	# The drain went down the chain: the last stage closed the
	# handler's stdin.
	wait_file "$SEEN.eof" 10
	a=$(date +%s%3N)
	kill -TERM "$(bg_pid stack)"
	wait_event "$ERR" '.msg == "south did not exit: sending TERM"' 5
	kill -TERM "$(bg_pid stack)"
	wait_event "$ERR" '.msg == "south did not exit: sending KILL"' 5
	wait_exit stack 5
	b=$(date +%s%3N)
	# Well before the 5 s + 2 s it waits on its own.
	[ $((b - a)) -lt 4000 ] || fail "exited $((b - a)) ms after the second TERM"
	assert_equal "$BG_STATUS" 0
}
