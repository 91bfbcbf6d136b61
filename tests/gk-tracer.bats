#!/usr/bin/env bats
# gk-tracer as a user sees it: a real gk-listener in front, real curl and
# wrk, and a jq handler that echoes what it received (its headers and the
# trace member) as the body.  The stack runs in its own process group
# (start_bg) and teardown ends it.  Spans are read from the stack's stderr.

load helpers/common

TP_TRACE=4bf92f3577b34da6a3ce929d0e0e4736
TP_SPAN=00f067aa0ba902b7

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
}

teardown() {
	stop_all
}

# The handler answers the status in the request's x-status header (200),
# with the headers and trace member it received as the body.
HANDLER='{id, status: ((.headers["x-status"] // "200") | tonumber),
	body: ({headers, trace} | tojson)}'

# start_stack [TRACER OPTIONS...]
start_stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer "$@" -- jq -c --unbuffered "$HANDLER"
	wait_http "$URL/healthz" 10
}

# get PATH [CURL ARGS...]: the body the handler echoed, into $BODY.
get() {
	local path=$1
	shift
	BODY=$(curl -sS -m 10 "$@" "$URL$path")
}

# seen FILTER: apply a jq filter to what the handler last received.
seen() {
	jq -r "$1" <<<"$BODY"
}

spans() {
	count_events "$ERR" '.type == "span"'
}

_spans_at_least() {
	[ "$(spans)" -ge "$1" ]
}

# A valid W3C traceparent that is not the all-zero one.
valid_traceparent() {
	[[ $1 =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$ ]] || return 1
	[[ $1 != 00-00000000000000000000000000000000-* ]] || return 1
	[[ $1 != *-0000000000000000-0[0-3] ]] || return 1
}

tracer_pid() {
	stage_pid gk-tracer stack
}

_metrics_more() {
	[ "$(count_events "$ERR" ".type == \"metrics\" and .proc == \"$(stage_proc gk-tracer)\"")" -gt "$1" ]
}

# snapshot: ask the tracer for a metrics snapshot (SIGUSR1) and print it.
snapshot() {
	local before pid
	before=$(count_events "$ERR" ".type == \"metrics\" and .proc == \"$(stage_proc gk-tracer)\"")
	pid=$(tracer_pid)
	kill -USR1 "$pid"
	poll_for -t 10 _metrics_more "$before"
	last_metrics "$ERR" "$(stage_proc gk-tracer)"
}

# metric SNAPSHOT NAME [SERIES FILTER]: the sum of the matching series.
metric() {
	jq -r --arg n "$2" "[.metrics[] | select(.name == \$n) | .series[] |
		select(${3:-true}) | .value] | add // 0" <<<"$1"
}

# marker: a sampled request after others; once its span is written, every
# span of the requests before it is written too (one process, in order).
marker() {
	get /marker -H "traceparent: 00-$TP_TRACE-aaaaaaaaaaaaaaaa-01"
	wait_event "$ERR" '.type == "span" and .attrs["url.path"] == "/marker"' 10
}

@test "a traceparent in is continued: same trace id, new span id, parent is the caller" {
	start_stack
	get /orders/42 -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" -D "$T/h"
	tp=$(seen '.headers.traceparent')
	valid_traceparent "$tp"
	[[ $tp == "00-$TP_TRACE-"*-01 ]]
	span=$(cut -d- -f3 <<<"$tp")
	[ "$span" != "$TP_SPAN" ]
	assert_equal "$(seen .trace.trace_id)" "$TP_TRACE"
	assert_equal "$(seen .trace.span_id)" "$span"
	assert_equal "$(seen .trace.parent_id)" "$TP_SPAN"
	assert_equal "$(seen .trace.sampled)" true

	# The sampled flag is honoured: 00 in, 00 out.
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00"
	[[ $(seen '.headers.traceparent') == "00-$TP_TRACE-"*-00 ]]
	assert_equal "$(seen .trace.sampled)" false
}

@test "the caller's random-trace-id flag (W3C Level 2) goes on with its trace id; other unknown flags are cleared" {
	start_stack
	local in out v
	for in in 03:03 02:02 ff:03 fe:02 09:01 01:01; do
		get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-${in%:*}" -D "$T/h"
		out=${in#*:}
		# the traceparent south and the trace member's random flag
		mapfile -t v < <(seen '.headers.traceparent, (.trace.random // false)')
		[[ ${v[0]} == "00-$TP_TRACE-"*"-$out" ]] ||
			fail "flags ${in%:*} in, ${v[0]} south"
		tr=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
		assert_equal "$tr" "${v[0]}"
		# The trace member says it too, for gk-client below.
		assert_equal "${v[1]}" \
			"$([ $((0x$out & 2)) = 2 ] && echo true || echo false)"
	done
	# A future version's flags are read the same way.
	get / -H "traceparent: cc-$TP_TRACE-$TP_SPAN-03-later"
	[[ $(seen .headers.traceparent) == "00-$TP_TRACE-"*-03 ]]
	# --no-parent decides sampling, but the trace id, and what is
	# known of it, is the caller's.
	stop_all
	start_stack --no-parent --sample 0
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-03"
	[[ $(seen .headers.traceparent) == "00-$TP_TRACE-"*-02 ]]
	# B3 says nothing of how its ids were made.
	get / -H "b3: $TP_TRACE-$TP_SPAN-1"
	[[ $(seen .headers.traceparent) == "00-$TP_TRACE-"*-00 ]]
}

@test "traceresponse on the response names the server span" {
	start_stack
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" -D "$T/h"
	tr=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
	assert_equal "$tr" "$(seen '.headers.traceparent')"
	# A trace started here has one too.
	curl -sS -o /dev/null -D "$T/h2" "$URL/"
	tr=$(tr -d '\r' <"$T/h2" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
	valid_traceparent "$tr"
}

@test "no trace header starts a trace with valid new ids" {
	start_stack
	get /
	tp=$(seen '.headers.traceparent')
	valid_traceparent "$tp"
	assert_equal "$(seen '.trace | has("parent_id")')" false
	# W3C Level 2: the id is random, and the flags say so.
	[[ $tp == *-03 ]] || fail "new trace's flags: $tp"
	assert_equal "$(seen .trace.random)" true
	[[ $(seen .trace.trace_id) =~ ^[0-9a-f]{32}$ ]]
	[[ $(seen .trace.span_id) =~ ^[0-9a-f]{16}$ ]]
	first=$(seen .trace.trace_id)
	get /
	[ "$(seen .trace.trace_id)" != "$first" ]
	# No B3 header is invented for a W3C (or empty) caller.
	assert_equal "$(seen '.headers | has("b3")')" false
}

@test "B3 single header is understood, and answered in kind" {
	start_stack
	get / -H "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
	assert_equal "$(seen .trace.trace_id)" 80f198ee56343ba864fe8b2a57d3eff7
	assert_equal "$(seen .trace.parent_id)" e457b5a2e4d86bd1
	assert_equal "$(seen .trace.sampled)" true
	tp=$(seen '.headers.traceparent')
	[[ $tp == 00-80f198ee56343ba864fe8b2a57d3eff7-*-01 ]]
	span=$(seen .trace.span_id)
	assert_equal "$(seen '.headers.b3')" \
		"80f198ee56343ba864fe8b2a57d3eff7-$span-1-e457b5a2e4d86bd1"

	# 64-bit trace id: left-padded to 128 bits; "0" is not sampled.
	get / -H "b3: a3ce929d0e0e4736-00f067aa0ba902b7-0"
	assert_equal "$(seen .trace.trace_id)" 0000000000000000a3ce929d0e0e4736
	assert_equal "$(seen .trace.sampled)" false
	[[ $(seen '.headers.traceparent') == 00-0000000000000000a3ce929d0e0e4736-*-00 ]]
}

@test "B3 multi headers are understood and replaced" {
	start_stack
	get / -H "X-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124" \
		-H "X-B3-SpanId: a2fb4a1d1a96d312" -H "X-B3-ParentSpanId: 0020000000000001" \
		-H "X-B3-Sampled: 1"
	assert_equal "$(seen .trace.trace_id)" 463ac35c9f6413ad48485a3953bb6124
	assert_equal "$(seen .trace.parent_id)" a2fb4a1d1a96d312
	assert_equal "$(seen .trace.sampled)" true
	[[ $(seen '.headers.traceparent') == 00-463ac35c9f6413ad48485a3953bb6124-*-01 ]]
	# The caller's X-B3-* are not passed on as they came.
	assert_equal "$(seen '[.headers | keys[] | select(startswith("x-b3-"))] | length')" 0

	get / -H "X-B3-TraceId: 463ac35c9f6413ad" -H "X-B3-SpanId: a2fb4a1d1a96d312" \
		-H "X-B3-Sampled: 0"
	assert_equal "$(seen .trace.trace_id)" 0000000000000000463ac35c9f6413ad
	assert_equal "$(seen .trace.sampled)" false

	# X-B3-ParentSpanId is 16 lower-hex, as the b3 header's parent is:
	# a context with a bad one is invalid, and not continued.
	local bad
	for bad in ": zz" ": 0020000000000001a" ": 0020000000000001A" ";"; do
		get / -H "X-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124" \
			-H "X-B3-SpanId: a2fb4a1d1a96d312" -H "X-B3-ParentSpanId$bad" \
			-H "X-B3-Sampled: 1"
		assert_equal "$(seen '.trace | has("parent_id")')" false ||
			fail "X-B3-ParentSpanId '$bad' continued"
		[ "$(seen .trace.trace_id)" != 463ac35c9f6413ad48485a3953bb6124 ]
	done
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "b3"')" 4
}

@test "B3 multi: a sampling decision without ids is followed, debug beats --sample" {
	start_stack --sample 0
	# X-B3-Flags: 1 alone: debug, so sampled, though --sample 0.
	get / -H "X-B3-Flags: 1"
	assert_equal "$(seen .trace.sampled)" true
	# Answered in kind, with debug kept for the services below.
	[[ $(seen .headers.b3) =~ ^[0-9a-f]{32}-[0-9a-f]{16}-d$ ]] ||
		fail "b3 south: $(seen .headers.b3)"
	# X-B3-Sampled alone is the caller's decision, either way.
	get / -H "X-B3-Sampled: 1"
	assert_equal "$(seen .trace.sampled)" true
	stop_all
	start_stack
	get / -H "X-B3-Sampled: 0"
	assert_equal "$(seen .trace.sampled)" false
	[[ $(seen .headers.traceparent) == *-02 ]] # unsampled, in a new trace of ours: random
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "b3"')" 0
}

@test "B3 debug holds through a chain of tracers, past --sample-rate" {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer --sample-rate 1/s -- gk-tracer --sample-rate 1/s -- \
		jq -c --unbuffered "$HANDLER"
	wait_http "$URL/healthz" 10
	local i v
	for i in $(seq 12); do
		get / -H "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"
		mapfile -t v < <(seen '.trace.sampled, .headers.b3')
		assert_equal "${v[0]}" true
		[[ ${v[1]} == 80f198ee56343ba864fe8b2a57d3eff7-*-d-* ]] ||
			fail "debug lost: ${v[1]}"
	done
	# Every request a span in each tracer, though each allows 1/s.
	poll_for -t 10 _spans_at_least 24
	assert_equal "$(spans)" 24
}

@test "two traceparent headers are no context; repeated tracestate headers are joined" {
	start_stack
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" \
		-H "traceparent: 00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
	assert_equal "$(seen '.trace | has("parent_id")')" false
	[[ $(seen .trace.trace_id) != "$TP_TRACE" ]]
	[[ $(seen .trace.trace_id) != 80f198ee56343ba864fe8b2a57d3eff7 ]]
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "traceparent"')" 1
	# W3C: tracestate headers are combined into one list.
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" \
		-H "tracestate: congo=t61rcWkgMzE" -H "tracestate: rojo=00f067aa0ba902b7"
	assert_equal "$(seen .trace.trace_id)" "$TP_TRACE"
	assert_equal "$(seen '.headers.tracestate')" "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
}

@test "answers the tracer makes itself carry traceresponse (a deadline's 504)" {
	cat >"$T/slow.cgi" <<-'EOF'
		#!/bin/sh
		sleep 5
		printf 'Status: 200\r\n\r\nlate\n'
	EOF
	chmod +x "$T/slow.cgi"
	start_bg stack gk-listener -l "127.0.0.1:$PORT" -- \
		gk-tracer --timeout 300ms -- gk-exec "$T/slow.cgi"
	wait_http "$URL/healthz" 10
	run curl -sS -m 10 -D "$T/h" -o /dev/null -w '%{http_code}' \
		-H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" "$URL/"
	assert_output 504
	tr=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
	[[ $tr == 00-$TP_TRACE-*-01 ]] || fail "traceresponse: '$tr'"
	# So the listener's access event joins the trace.
	wait_event "$ERR" '.type == "access" and .status == 504' 5
	assert_equal "$(events "$ERR" 'select(.type == "access" and .status == 504) | .trace_id')" "$TP_TRACE"
}

@test "a request cancelled from above at its deadline is a timeout in its span, not client_gone" {
	# A stage above (gk-listener --timeout) answers 504 at the deadline
	# and cancels south; the tracer's own timer for the same deadline
	# races that cancel, and when the cancel won, the span said the
	# client had gone.  Made certain here: the tracer is stopped
	# (SIGSTOP) while the deadline passes and the cancel arrives; once
	# continued, the loop reads what came during the stop before it runs
	# the timers that came due, so the cancel comes first.
	run python3 - "$PORT" "$T/south.log" "$T/events" <<'PY'
import json, os, signal, socket, subprocess, sys, time
port, south, events = int(sys.argv[1]), sys.argv[2], sys.argv[3]
p = subprocess.Popen(["gk-tracer", "-l", "json:127.0.0.1:%d" % port, "--",
    "python3", "-c", "import sys\nlog = open(sys.argv[1], 'a', buffering=1)\n"
    "for l in sys.stdin: log.write(l)", south],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    stderr=open(events, "w"), env=dict(os.environ, GK_EVENTS_FORMAT="json"))
def wait(cond):
    for _ in range(400):
        if cond():
            return
        time.sleep(0.05)
    p.kill()
    sys.exit("timed out")
def up():
    with socket.socket() as t:
        return t.connect_ex(("127.0.0.1", port)) == 0
def state():
    return open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()[0]
wait(up)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
# The south handler is running (a first request, never answered, is in
# its log) before the request with a deadline goes: the second to the
# deadline is then all for the steps up to the stop, not python's start.
s.sendall((json.dumps({"id": "0", "method": "GET", "path": "/warm"}) +
    "\n").encode())
wait(lambda: os.path.exists(south) and "/warm" in open(south).read())
# Cancelled, so that nothing is in flight at the end but the request
# below (the tracer's drain would wait for it); its span is not the one
# looked at.
s.sendall(b"{\"id\":\"0\",\"cancel\":true}\n")
deadline = int(time.time() * 1000) + 1000
s.sendall((json.dumps({"id": "1", "method": "GET", "path": "/t",
    "deadline": deadline}) + "\n").encode())
wait(lambda: os.path.exists(south) and "/t" in open(south).read())
os.kill(p.pid, signal.SIGSTOP)
wait(lambda: state() == "T")
s.sendall(b"{\"id\":\"1\",\"cancel\":true}\n")
wait(lambda: time.time() * 1000 > deadline + 200)
os.kill(p.pid, signal.SIGCONT)
spans = []
def span():
    global spans
    spans = [json.loads(l) for l in open(events)
             if l.startswith("{") and "\"span\"" in l]
    spans = [x for x in spans if x["attrs"].get("url.path") == "/t"]
    return spans
wait(span)
p.terminate()
p.wait()
print(spans[0]["status"], spans[0]["attrs"].get("error.type"))
PY
	assert_success
	assert_output "error timeout"
}

@test "invalid trace headers are replaced by a new trace, never passed on" {
	start_stack
	local bad=(
		"traceparent: 00-00000000000000000000000000000000-$TP_SPAN-01"
		"traceparent: 00-$TP_TRACE-0000000000000000-01"
		"traceparent: ff-$TP_TRACE-$TP_SPAN-01"
		"traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-$TP_SPAN-01"
		"traceparent: 00-$TP_TRACE-00F067AA0BA902B7-01"
		"traceparent: 00-${TP_TRACE}aa-$TP_SPAN-01"
		"traceparent: 00-$TP_TRACE-${TP_SPAN:0:14}-01"
		"traceparent: 00-$TP_TRACE-$TP_SPAN-01-extra"
		"traceparent: garbage"
		"b3: garbage"
		"b3: 00000000000000000000000000000000-e457b5a2e4d86bd1-1"
		"b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-7"
		"b3: 80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1"
	)
	local h tp
	local v
	for h in "${bad[@]}"; do
		get / -H "$h"
		# What the handler saw, one jq: the traceparent, its type,
		# whether the trace has a parent, the b3 header.
		mapfile -t v < <(seen '.headers.traceparent, (.headers.traceparent | type),
			(.trace | has("parent_id")), .headers.b3')
		tp=${v[0]}
		valid_traceparent "$tp" || fail "not replaced by a valid traceparent: $h -> $tp"
		assert_equal "${v[1]}" string
		# A new trace: no parent, and nothing of the invalid value kept.
		assert_equal "${v[2]}" false
		[[ $tp != *"$TP_TRACE"* ]] || fail "trace id of an invalid header kept: $h"
		[[ $tp != *"$TP_SPAN"* ]] || fail "span id of an invalid header kept: $h"
		case $h in
		b3:*)
			b3=${v[3]}
			[ "$b3" != "${h#b3: }" ] || fail "invalid b3 passed on: $h"
			[[ $b3 =~ ^[0-9a-f]{32}-[0-9a-f]{16}-[01]$ ]] ||
				fail "b3 written is not valid: $b3"
			;;
		esac
	done
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "traceparent"')" 9
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "b3"')" 4
	assert_equal "$(metric "$snap" gk_tracer_traces_started_total)" 13
}

@test "tracestate is kept with a valid traceparent and dropped with an invalid one" {
	start_stack
	get / -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" -H "tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	assert_equal "$(seen '.headers.tracestate')" "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	get / -H "traceparent: ff-$TP_TRACE-$TP_SPAN-01" -H "tracestate: congo=t61rcWkgMzE"
	assert_equal "$(seen '.headers | has("tracestate")')" false
	get / -H "tracestate: congo=t61rcWkgMzE"
	assert_equal "$(seen '.headers | has("tracestate")')" false
}

@test "an invalid tracestate is dropped, its traceparent kept; a valid one goes on without empty members or optional whitespace" {
	start_stack
	local tp="traceparent: 00-$TP_TRACE-$TP_SPAN-01"
	# The W3C test suite's invalid lists (test_tracestate_*): each is
	# dropped whole, and the caller's trace goes on.
	local bad=(
		"foo=1,foo=2"
		"foo=1,foo=1"
		"FOO=1"
		"foo =1"
		"foo.bar=1"
		"foo@=1,bar=2"
		"@foo=1,bar=2"
		"foo@@bar=1,bar=2"
		"foo@bar@baz=1,bar=2"
		"1foo=1"
		"$(printf 'z%.0s' {1..257})=1"
		"$(printf 't%.0s' {1..242})@v=1"
		"t@$(printf 'v%.0s' {1..15})=1"
		"foo=bar=baz"
		"foo=,bar=3"
		"foo"
		"=1"
		"foo=$(printf 'v%.0s' {1..257})"
		"$(seq -f 'k%g=1' -s, 33)"
	)
	local ts
	for ts in "${bad[@]}"; do
		get / -H "$tp" -H "tracestate: $ts"
		# trace id, parent id, and whether a tracestate went on: one jq
		assert_equal "$(seen '.trace.trace_id, .trace.parent_id, (.headers | has("tracestate"))')" \
			"$TP_TRACE"$'\n'"$TP_SPAN"$'\n'false ||
			fail "invalid tracestate passed on, or the trace lost: $ts"
	done
	# Duplicates across repeated headers too.
	get / -H "$tp" -H "tracestate: foo=1" -H "tracestate: foo=2"
	assert_equal "$(seen '.headers | has("tracestate")')" false
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "tracestate"')" $((${#bad[@]} + 1))
	assert_equal "$(metric "$snap" gk_tracer_invalid_context_total '.labels.header == "traceparent"')" 0

	# Valid at the limits: 32 members, a 256-character key, a 241@14
	# multi-tenant key, a value of every allowed character.
	local good=(
		"$(seq -f 'k%g=1' -s, 32)"
		"$(printf 'z%.0s' {1..256})=1"
		"$(printf 't%.0s' {1..241})@$(printf 'v%.0s' {1..14})=1"
		"abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/= !\"#\$%&'()*+-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_\`abcdefghijklmnopqrstuvwxyz{|}~"
		"0tenant@vendor=x"
		"foo= 1"
	)
	for ts in "${good[@]}"; do
		get / -H "$tp" -H "tracestate: $ts"
		assert_equal "$(seen '.headers.tracestate')" "$ts"
	done
	# Optional whitespace and empty members are not passed on.
	get / -H "$tp" -H $'tracestate: foo=1 \t , \t bar=2, ,\t \tbaz=3\t'
	assert_equal "$(seen '.headers.tracestate')" "foo=1,bar=2,baz=3"
	get / -H "$tp" -H "tracestate: ,,"
	assert_equal "$(seen '.headers | has("tracestate")')" false
	get / -H "$tp" -H "tracestate: ," -H "tracestate: foo=1"
	assert_equal "$(seen '.headers.tracestate')" "foo=1"
}

@test "spans validate against the span fields of gk-events(5)" {
	start_stack
	get /orders/42 -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01"
	span=$(seen .trace.span_id)
	wait_event "$ERR" '.type == "span"' 10
	run events "$ERR" 'select(.type == "span")'
	assert_success
	ev=$output
	assert_equal "$(jq -c 'select(
		.proc == "'"$(stage_proc gk-tracer)"'" and
		(.ts | type) == "string" and
		(.pid | type) == "number" and
		.trace_id == "'"$TP_TRACE"'" and
		.span_id == "'"$span"'" and
		.parent_id == "'"$TP_SPAN"'" and
		(.trace_id | test("^[0-9a-f]{32}$")) and
		(.span_id | test("^[0-9a-f]{16}$")) and
		(.parent_id | test("^[0-9a-f]{16}$")) and
		(.name | type) == "string" and (.name | startswith("GET ")) and
		.kind == "server" and
		(.start_us | type) == "number" and .start_us == (.start_us | floor) and
		.start_us > 1000000000000000 and
		(.duration_us | type) == "number" and .duration_us >= 0 and
		.duration_us == (.duration_us | floor) and
		(.status | type) == "string" and .status == "ok" and
		(.attrs | type) == "object" and
		.attrs["http.request.method"] == "GET" and
		.attrs["url.path"] == "/orders/42" and
		.attrs["http.response.status_code"] == 200 and
		.attrs["client.address"] == "127.0.0.1"
		) | 1' <<<"$ev")" 1

	# A trace started here: no parent_id; a 500 is status "error".
	get /x -H "x-status: 500"
	wait_event "$ERR" '.type == "span" and .attrs["url.path"] == "/x"' 10
	ev=$(events "$ERR" 'select(.type == "span" and .attrs["url.path"] == "/x")')
	assert_equal "$(jq -r 'has("parent_id")' <<<"$ev")" false
	assert_equal "$(jq -r .status <<<"$ev")" error
	assert_equal "$(jq -r '.attrs["http.response.status_code"]' <<<"$ev")" 500
	[[ $(jq -r .trace_id <<<"$ev") =~ ^[0-9a-f]{32}$ ]]
	# start_us is the wall clock, in microseconds.
	now_us=$(($(date +%s) * 1000000))
	start=$(jq -r .start_us <<<"$ev")
	[ $((now_us - start)) -lt 60000000 ] && [ $((start - now_us)) -lt 60000000 ]
}

@test "--sample 0.1 samples 10% of 10,000 requests within 2%" {
	start_stack --sample 0.1
	# 10,000 requests, 20 at a time on keep-alive connections.
	timeout 60 curl -s --no-progress-meter --parallel --parallel-max 20 -m 10 \
		-w 'CODE=%{http_code}\n' "$URL/r[1-10000]" >"$T/load.out" 2>"$T/load.err"
	assert_equal "$(grep -o 'CODE=[0-9]*' "$T/load.out" | grep -c '^CODE=200$')" 10000
	snap=$(snapshot)
	sampled=$(metric "$snap" gk_tracer_requests_total '.labels.decision == "sampled"')
	unsampled=$(metric "$snap" gk_tracer_requests_total '.labels.decision == "unsampled"')
	total=$((sampled + unsampled))
	assert_equal "$total" 10000
	ratio=$(jq -n "$sampled / $total")
	jq -en "($ratio - 0.1) | fabs < 0.02" >/dev/null ||
		fail "sampled ratio $ratio ($sampled of $total)"
	# Every sampled request is one span event (the last ones may still
	# be on their way when wrk stops: wait for them).
	poll_for -t 10 _spans_at_least "$sampled"
	spans_written=$(spans)
	assert_equal "$spans_written" "$sampled"
}

@test "a caller's sampled=0 yields no span and sampled=0 passed on" {
	start_stack
	get /unsampled -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00"
	[[ $(seen '.headers.traceparent') == *-00 ]]
	get /unsampled-error -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00" -H "x-status: 500"
	[[ $(seen '.headers.traceparent') == *-00 ]]
	marker
	assert_equal "$(count_events "$ERR" '.type == "span" and (.attrs["url.path"] | startswith("/unsampled"))')" 0
	assert_equal "$(spans)" 1
}

@test "--sample-errors: a span for a 5xx even when the caller said sampled=0" {
	start_stack --sample-errors
	get /ok -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00"
	get /fail -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00" -H "x-status: 500"
	[[ $(seen '.headers.traceparent') == *-00 ]]
	marker
	assert_equal "$(count_events "$ERR" '.type == "span" and .attrs["url.path"] == "/ok"')" 0
	ev=$(events "$ERR" 'select(.type == "span" and .attrs["url.path"] == "/fail")')
	assert_equal "$(jq -r .status <<<"$ev")" error
	assert_equal "$(jq -r .trace_id <<<"$ev")" "$TP_TRACE"
	assert_equal "$(jq -r '.attrs["http.response.status_code"]' <<<"$ev")" 500
	# The caller is told which of the two was recorded (Level 2
	# traceresponse: the sampled flag is the callee's recording).
	local trs
	for trs in ok:00 fail:01; do
		get "/${trs%:*}" -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00" \
			-H "x-status: $([ "${trs%:*}" = ok ] && echo 200 || echo 500)" -D "$T/h"
		tr=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
		[[ $tr == "00-$TP_TRACE-"*"-${trs#*:}" ]] || fail "traceresponse of /${trs%:*}: $tr"
	done
}

@test "--no-parent ignores the caller's sampled flag" {
	start_stack --no-parent
	get /a -H "traceparent: 00-$TP_TRACE-$TP_SPAN-00"
	# Still the caller's trace, but our decision (--sample 1): sampled.
	[[ $(seen '.headers.traceparent') == "00-$TP_TRACE-"*-01 ]]
	assert_equal "$(seen .trace.parent_id)" "$TP_SPAN"
	wait_event "$ERR" '.type == "span" and .attrs["url.path"] == "/a"' 10
	stop_all

	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
	start_stack --no-parent --sample 0
	get /b -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01"
	[[ $(seen '.headers.traceparent') == "00-$TP_TRACE-"*-00 ]]
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_requests_total '.labels.decision == "sampled"')" 0
	assert_equal "$(metric "$snap" gk_tracer_spans_total)" 0
	assert_equal "$(spans)" 0
}

@test "--sample-rate 5/s caps the spans written" {
	start_stack --sample-rate 5/s
	t0=$(date +%s%N)
	timeout 30 curl -s --no-progress-meter -m 10 -w 'CODE=%{http_code}\n' \
		"$URL/r[1-200]" >"$T/load.out" 2>"$T/load.err"
	t1=$(date +%s%N)
	assert_equal "$(grep -o 'CODE=[0-9]*' "$T/load.out" | grep -c '^CODE=200$')" 200
	snap=$(snapshot)
	sampled=$(metric "$snap" gk_tracer_requests_total '.labels.decision == "sampled"')
	unsampled=$(metric "$snap" gk_tracer_requests_total '.labels.decision == "unsampled"')
	assert_equal "$((sampled + unsampled))" 200
	# A bucket of 5, refilled at 5 a second over the time the load took.
	secs=$(((t1 - t0) / 1000000000 + 1))
	[ "$sampled" -ge 5 ] || fail "only $sampled sampled"
	[ "$sampled" -le $((5 + 5 * secs)) ] || fail "$sampled sampled in ${secs}s"
	poll_for -t 10 _spans_at_least "$sampled"
	assert_equal "$(spans)" "$sampled"
}

@test "the listener's access event carries the trace id of the tracer's span" {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" -- gk-tracer -- hello
	wait_http "$URL/healthz" 10
	curl -sS -o /dev/null -m 10 -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" "$URL/"
	wait_event "$ERR" '.type == "access" and .path == "/"' 10
	ev=$(events "$ERR" 'select(.type == "access" and .path == "/")' | tail -n 1)
	assert_equal "$(jq -r .trace_id <<<"$ev")" "$TP_TRACE"
	# and a request without a tracer south has none
	run jq -r 'select(.type == "access" and .path == "/healthz") | has("trace_id")' <<<"$(events "$ERR")"
	refute_output --partial true
}

@test "a stage's log event carries the trace_id of the request" {
	cat >"$T/fail.sh" <<'SH'
#!/bin/sh
exit 3
SH
	chmod +x "$T/fail.sh"
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer -- gk-exec "$T/fail.sh"
	wait_http "$URL/healthz" 10
	curl -sS -o /dev/null -m 10 -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" "$URL/"
	wait_event "$ERR" '.type == "log" and .proc == "gk-exec" and .level == "error"' 10
	ev=$(events "$ERR" 'select(.type == "log" and .proc == "gk-exec" and .level == "error")' | tail -n 1)
	assert_equal "$(jq -r .trace_id <<<"$ev")" "$TP_TRACE"
}

@test "the limiter's and breaker's events carry the trace id the tracer started" {
	# A handler that fails every request: the first opens the breaker.
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer -- gk-limiter -r 1/m -b 0 -- gk-breaker --consecutive 1 \
		--open-for 60s -- jq -c --unbuffered '{id, status: 500, body: "no\n"}'
	wait_port 127.0.0.1 "$PORT"
	# No trace header: the tracer starts each trace; traceresponse names it.
	local code1 code2 t1 t2
	code1=$(curl -sS -m 10 -o /dev/null -D "$T/h1" -w '%{http_code}' "$URL/one")
	code2=$(curl -sS -m 10 -o /dev/null -D "$T/h2" -w '%{http_code}' "$URL/two")
	assert_equal "$code1" 500
	assert_equal "$code2" 429
	t1=$(tr -d '\r' <"$T/h1" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}' | cut -d- -f2)
	t2=$(tr -d '\r' <"$T/h2" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}' | cut -d- -f2)
	[[ $t1 =~ ^[0-9a-f]{32}$ ]] && [[ $t2 =~ ^[0-9a-f]{32}$ ]] && [ "$t1" != "$t2" ]
	wait_event "$ERR" ".proc == \"$(stage_proc gk-breaker)\" and .msg == \"circuit opened\"" 10
	wait_event "$ERR" ".proc == \"$(stage_proc gk-limiter)\" and .msg == \"rate limited\"" 10
	assert_equal "$(events "$ERR" "select(.proc == \"$(stage_proc gk-breaker)\" and .msg == \"circuit opened\") | .trace_id")" "$t1"
	assert_equal "$(events "$ERR" "select(.proc == \"$(stage_proc gk-limiter)\" and .msg == \"rate limited\") | .trace_id")" "$t2"
	# And the spans of both requests are in the same traces.
	poll_for -t 10 _spans_at_least 2
	assert_equal "$(count_events "$ERR" ".type == \"span\" and .trace_id == \"$t1\" and .attrs[\"http.response.status_code\"] == 500")" 1
	assert_equal "$(count_events "$ERR" ".type == \"span\" and .trace_id == \"$t2\" and .attrs[\"http.response.status_code\"] == 429")" 1
}

@test "--http: the tracer fronts the stack itself, one process fewer" {
	start_bg stack gk-tracer --http -l "127.0.0.1:$PORT" -- \
		jq -c --unbuffered '{id, status: 200,
			body: ({headers, trace, deadline} | tojson)}'
	wait_http "$URL/healthz" 10
	before_ms=$(date +%s%3N)
	get /orders/42 -H "traceparent: 00-$TP_TRACE-$TP_SPAN-01" -D "$T/h"
	tp=$(seen '.headers.traceparent')
	valid_traceparent "$tp"
	[[ $tp == "00-$TP_TRACE-"*-01 ]]
	assert_equal "$(seen .trace.parent_id)" "$TP_SPAN"
	tr=$(tr -d '\r' <"$T/h" | awk -F': ' 'tolower($1) == "traceresponse" {print $2}')
	assert_equal "$tr" "$tp"
	# Every request gets a deadline, as behind gk-listener: 30 s unless
	# --timeout says otherwise.
	dl=$(seen .deadline)
	[ "$dl" -ge $((before_ms + 29000)) ] && [ "$dl" -le $(($(date +%s%3N) + 30000)) ]
	# The span and the access event are the one process's, and join.
	wait_event "$ERR" '.type == "span"' 10
	span=$(events "$ERR" 'select(.type == "span")')
	assert_equal "$(jq -r .trace_id <<<"$span")" "$TP_TRACE"
	assert_equal "$(jq -r '.attrs["client.address"]' <<<"$span")" 127.0.0.1
	assert_equal "$(jq -r .name <<<"$span")" "GET /orders/{id}"
	wait_event "$ERR" '.type == "access" and .path == "/orders/42"' 10
	ev=$(events "$ERR" 'select(.type == "access" and .path == "/orders/42")')
	assert_equal "$(jq -r .trace_id <<<"$ev")" "$TP_TRACE"
	assert_equal "$(jq -r .proc <<<"$ev")" gk-tracer
	# The handler is the tracer's own child: no gk-listener in between.
	assert_equal "$(ps -o comm= -p "$(pgrep -P "$(bg_pid stack)")")" jq
}

@test "bad options exit 64 with one line" {
	run bash -c 'gk-tracer --sample 1.5 -- cat 2>&1 >/dev/null'
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --partial "1.5"
	assert_output --partial "gk-tracer"
	run bash -c 'gk-tracer --sample-rate 10/x -- cat 2>&1 >/dev/null'
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --partial "10/x"
	run bash -c 'gk-tracer --sample -0.1 -- cat 2>&1 >/dev/null'
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	# A cap of nothing is a mistake, not "no cap".
	run bash -c 'gk-tracer --sample-rate 0/s -- cat 2>&1 >/dev/null'
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --partial "bad --sample-rate: 0/s (expected a rate above 0"
	# --http with nowhere to listen would read the wire on stdin.
	run bash -c 'gk-tracer --http -- cat 2>&1 >/dev/null'
	assert_equal "$status" 64
	assert_equal "${#lines[@]}" 1
	assert_output --partial "-l"
}

@test "--sample-rate 1/m samples the first request at once, then no other within the minute" {
	start_stack --sample-rate 1/m
	get /a
	[[ $(seen .headers.traceparent) == *-03 ]] ||
		fail "first request not sampled: $(seen .headers.traceparent)"
	get /b
	get /c
	[[ $(seen .headers.traceparent) == *-02 ]] ||
		fail "third request sampled: $(seen .headers.traceparent)"
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_tracer_requests_total '.labels.decision == "sampled"')" 1
	assert_equal "$(metric "$snap" gk_tracer_requests_total '.labels.decision == "unsampled"')" 2
	wait_for -t 10 _spans_at_least 1
	assert_equal "$(spans)" 1
}

@test "the span of a request a stage below answered names that stage and its reason" {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer -- gk-breaker --consecutive 1 -- jq -c --unbuffered "$HANDLER"
	wait_http "$URL/healthz" 10
	get /fail -H "x-status: 500"
	# Open now: the breaker answers 503 itself.
	assert_equal "$(curl -s -o /dev/null -w '%{http_code}' "$URL/open")" 503
	wait_for -t 10 _spans_at_least 2
	open=$(events "$ERR" 'select(.type == "span" and .attrs["url.path"] == "/open") | .attrs')
	assert_equal "$(jq -r '.["http.response.status_code"]' <<<"$open")" 503
	assert_equal "$(jq -r '.["gk.error.stage"]' <<<"$open")" gk-breaker
	assert_equal "$(jq -r '.["gk.error.reason"]' <<<"$open")" open
	# The handler's own 500 names no stage.
	failed=$(events "$ERR" 'select(.type == "span" and .attrs["url.path"] == "/fail") | .attrs')
	assert_equal "$(jq -r '.["http.response.status_code"]' <<<"$failed")" 500
	assert_equal "$(jq -r 'has("gk.error.stage")' <<<"$failed")" false
}

@test "--sample-errors writes no span, and no bytes that are not JSON, for a request refused before it was traced" {
	# /a is held (the handler never answers), so /b is refused 503
	# (overloaded) by the runtime before the tracer sees it.
	printf '%s\n' '{"id":"a","method":"GET","path":"/a"}' \
		'{"id":"b","method":"GET","path":"/b"}' |
		timeout 10 gk-tracer --sample-errors --max-inflight 1 \
			--drain-timeout 200ms -- sh -c 'cat >/dev/null' \
			>"$T/out" 2>"$T/ev"
	assert_equal "$(jq -r 'select(.id == "b") | .error.reason' "$T/out")" overloaded
	assert_equal "$(jq -r 'select(.id == "a") | .status' "$T/out")" 503
	# Every event is JSON; the one span is /a's, with real ids.
	run jq -c 'select(.type == "span") | [.attrs["url.path"], .trace_id]' "$T/ev"
	assert_success
	assert_equal "${#lines[@]}" 1
	[[ ${lines[0]} =~ ^\[\"/a\",\"[0-9a-f]{32}\"\]$ ]] || fail "span: ${lines[0]}"
}
