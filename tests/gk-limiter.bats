#!/usr/bin/env bats
# gk-limiter: rate limits behind a real gk-listener, under real load (wrk,
# curl), with a real redis-server for the global limit.

load helpers/common
load helpers/resolver

setup() {
	common_setup
	# wrk: offer ~100 requests/s per connection (delay 10 ms) and count
	# the answers by status; done() prints one RESULT line.
	cat >"$T/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; limited = 0; other = 0 end
function delay() return 10 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 429 then limited = limited + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, l, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); l = l + t:get("limited"); x = x + t:get("other")
  end
  io.write(string.format("RESULT %d %d %d %.6f\n", o, l, x,
    summary.duration / 1e6))
end
EOF
}

teardown() {
	stop_all
}

# start_stack NAME PORT LIMITER-ARGS...: gk-listener -> gk-limiter -> hello.
# Readiness is a TCP connect: an HTTP probe would spend a token.
start_stack() {
	local name=$1 port=$2
	shift 2
	start_bg "$name" gk-listener -l "127.0.0.1:$port" --no-access-log \
		-- gk-limiter "$@" -- hello
	wait_port 127.0.0.1 "$port"
}

limiter_pid() {
	stage_pid gk-limiter "$1"
}

# A wire handler for the concurrency tests.  Every request it reads is one
# line in $RECEIVED.  HOLD mode: nothing is answered until the file
# $RELEASE exists, then everything at once.  LATENCY mode: each answer
# after 50 ms; while the file $SLOW exists, at most 4 are served at once
# and the rest queue inside the handler, as in an overloaded service.
write_handler() {
	cat >"$T/handler.py" <<'PY'
import json, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
mode = os.environ["MODE"]
received = open(os.environ["RECEIVED"], "a", buffering=1)
answered = open(os.environ["ANSWERED"], "a", buffering=1)
release, slow = os.environ.get("RELEASE", ""), os.environ.get("SLOW", "")
out = threading.Lock()
held, held_lock = [], threading.Lock()
capacity = threading.Semaphore(4)
def answer(req):
    line = json.dumps({"id": req["id"], "status": 200,
        "headers": {"content-type": "text/plain"}, "body": "ok\n"})
    with out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        answered.write(req.get("path", "") + "\n")
def releaser():
    while True:
        if os.path.exists(release):
            with held_lock:
                for r in held:
                    answer(r)
                held.clear()
        time.sleep(0.02)
def serve(req):
    if os.path.exists(slow):
        with capacity:
            time.sleep(0.05)
    else:
        time.sleep(0.05)
    answer(req)
pool = ThreadPoolExecutor(max_workers=256)
if mode == "hold":
    threading.Thread(target=releaser, daemon=True).start()
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    received.write(req.get("path", "") + "\n")
    if mode == "hold":
        with held_lock:
            if os.path.exists(release):
                answer(req)
            else:
                held.append(req)
    else:
        pool.submit(serve, req)
PY
	RECEIVED="$T/received"
	ANSWERED="$T/answered"
	RELEASE="$T/release"
	SLOW="$T/slow"
	export RECEIVED ANSWERED RELEASE SLOW
	: >"$RECEIVED"
	: >"$ANSWERED"
}

# start_held NAME PORT LIMITER-ARGS...: the limiter in front of the
# handler in HOLD mode.
start_held() {
	local name=$1 port=$2
	shift 2
	write_handler
	MODE=hold start_bg "$name" gk-listener -l "127.0.0.1:$port" \
		--no-access-log -- gk-limiter "$@" -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$port"
}

received() {
	wc -l <"$RECEIVED" | tr -d ' '
}

_received_is() {
	[ "$(received)" -eq "$1" ]
}

# _codes_at_least FILE CODE N: N answers with CODE in FILE.
_codes_at_least() {
	[ "$(grep -c "^$2\$" "$1")" -ge "$3" ]
}

# snapshot NAME: a fresh metrics snapshot of the limiter of stack NAME
# (SIGUSR1), as one object {metric name: series list}.
_limiter_snaps() {
	count_events "$T/$1.err" ".proc == \"$(stage_proc gk-limiter)\" and .type == \"metrics\""
}
_snaps_more() {
	[ "$(_limiter_snaps "$1")" -gt "$2" ]
}
snapshot() {
	local before
	before=$(_limiter_snaps "$1")
	kill -USR1 "$(limiter_pid "$1")"
	poll_for -t 10 _snaps_more "$1" "$before"
	# A snapshot may come in parts: take the parts of the last seq.
	events "$T/$1.err" "select(.proc == \"$(stage_proc gk-limiter)\" and .type == \"metrics\")" |
		jq -s -c '(last.seq) as $q | [.[] | select(.seq == $q) | .metrics[]] |
		    map({(.name): .series}) | add'
}

# value SNAPSHOT NAME [SERIES FILTER]: the sum of the matching series.
value() {
	jq -r --arg n "$2" "[.[\$n][]? | select(${3:-true}) | .value] | add // 0" <<<"$1"
}

# _snap_value_is STACK NAME WANT: a fresh snapshot shows NAME at WANT.
_snap_value_is() {
	[ "$(value "$(snapshot "$1")" "$2")" = "$3" ]
}

start_redis() {
	local name=$1 port=$2
	start_bg "$name" redis-server --port "$port" --bind 127.0.0.1 \
		--save '' --appendonly no --dir "$T"
	wait_port 127.0.0.1 "$port"
}

# codes URL N: N parallel requests; prints "CODE TIME_TOTAL" per answer.
codes() {
	curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$2" \
		-o /dev/null -w '%{http_code} %{time_total}\n' "$1/[1-$2]" 2>/dev/null
}

# The value of a limiter metric (optionally one label value) in the
# limiter's snapshots in FILE, as a jq condition on events.
metric_is() {
	local name=$1 reason=$2 want=$3
	echo ".proc == \"$(stage_proc gk-limiter)\" and .type == \"metrics\" and
	    ([.metrics[] | select(.name == \"$name\") | .series[] |
	      select(\"$reason\" == \"\" or .labels.reason == \"$reason\") |
	      .value] | first) == $want"
}

@test "at 10x overload for 10 s the admitted rate is within 2% of --rate" {
	local port
	port=$(free_port)
	export GK_METRICS_INTERVAL=1
	start_stack s "$port" -r 100/s -b 10
	# 12 connections at up to ~100 requests/s each: over 10x the rate even
	# when a loaded machine delivers a little less.
	run wrk -t1 -c12 -d10s -s "$T/count.lua" "http://127.0.0.1:$port/"
	assert_success
	local res
	res=$(grep '^RESULT' <<<"$output")
	read -r _ ok limited other dur <<<"$res"
	echo "# client: ok=$ok limited=$limited other=$other duration=$dur" >&3
	[ "$other" -eq 0 ]
	# Really overloaded: at least 8x as many refused as admitted.
	[ "$limited" -ge $((ok * 8)) ]
	# Admitted over the run: rate * duration + burst, within 2%.
	awk -v ok="$ok" -v d="$dur" 'BEGIN {
		want = 100 * d + 10; e = (ok - want) / want
		printf "# admitted %d, expected %.1f (%.2f%%)\n", ok, want, e * 100
		exit !(e < 0.02 && e > -0.02) }' >&3
	# The limiter's own view: allowed_total between two snapshots taken
	# while the load ran, over the time between them (their ts).
	events "$T/s.err" 'select(.proc == "'"$(stage_proc gk-limiter)"'" and .type == "metrics")
	    | [.ts, ([.metrics[] | select(.name == "gk_limiter_allowed_total")
	      | .series[0].value] | first)] | select(.[1] != null)' |
		jq -s '[.[] | {t: ((.[0] | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601)
		    + (.[0] | capture("(?<f>\\.[0-9]+)Z$").f | tonumber)), a: .[1]}]
		  | . as $s
		  | [range(1; length - 1) | select($s[. - 1].a < $s[.].a and
		      $s[.].a < $s[. + 1].a) | $s[.]]
		  | {n: length, rate: ((last.a - first.a) / (last.t - first.t)),
		     span: (last.t - first.t)}' >"$T/rate.json"
	cat "$T/rate.json" | sed 's/^/# /' >&3
	run jq -e '.n >= 3 and .span >= 4 and .rate > 98 and .rate < 102' \
		"$T/rate.json"
	assert_success
}

@test "an idle limiter admits exactly burst + 1 of a parallel burst" {
	local port
	port=$(free_port)
	# One per minute: no slot refills while the burst arrives.
	start_stack s "$port" -r 1/m -b 10
	run codes "http://127.0.0.1:$port" 15
	assert_success
	[ "$(grep -c '^200 ' <<<"$output")" -eq 11 ]
	[ "$(grep -c '^429 ' <<<"$output")" -eq 4 ]
}

@test "429 carries Retry-After and RateLimit-* headers" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 1/m -b 2
	for i in 1 2 3; do
		run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
		[ "$output" = 200 ]
	done
	run curl -s -i "http://127.0.0.1:$port/"
	assert_line --partial "429"
	# Three admitted at once: the next slot is a minute away, the key is
	# full again in three.
	assert_line --regexp '^[Rr]etry-[Aa]fter: 60'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Ll]imit: 3'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Rr]emaining: 0'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Rr]eset: 1(79|80)'
}

@test "RateLimit-Policy states the configured rate, whatever the burst" {
	local port
	port=$(free_port)
	# 2/s with no burst: one at once, then one every 500 ms.  A second
	# request right after the first is refused; the policy a client
	# paces itself by must say 2 a second, not 1.
	start_stack s "$port" -r 2/s -b 0
	run curl -s -i "http://127.0.0.1:$port/a" "http://127.0.0.1:$port/b"
	assert_line --regexp '^HTTP/1.1 429'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Ll]imit: 1'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Pp]olicy: 2;w=1'
	stop_all
	# 40/m: 2 every 3 s, the smallest whole window that holds a whole
	# number of requests.
	port=$(free_port)
	start_stack t "$port" -r 40/m -b 0
	run curl -s -i "http://127.0.0.1:$port/a" "http://127.0.0.1:$port/b"
	assert_line --regexp '^[Rr]ate[Ll]imit-[Pp]olicy: 2;w=3'
	stop_all
	# 1/m with a burst of 2: 3 in 3 minutes, as before.
	port=$(free_port)
	start_stack u "$port" -r 1/m -b 2
	run curl -s -i "http://127.0.0.1:$port/[1-4]"
	assert_line --regexp '^[Rr]ate[Ll]imit-[Pp]olicy: 3;w=180'
}

@test "a rate under 0.001/h is kept as given: -r 0.0001/h admits one per 10000 hours" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 0.0001/h -b 0
	run curl -s -i "http://127.0.0.1:$port/a" "http://127.0.0.1:$port/b"
	assert_line --regexp '^HTTP/1.1 200'
	assert_line --regexp '^HTTP/1.1 429'
	# The next slot is 10000 h (36000000 s) after the first request.
	assert_line --regexp '^[Rr]etry-[Aa]fter: (35999999|36000000)'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Pp]olicy: 1;w=36000000'
}

@test "a rate the limiter cannot keep exactly is a usage error, never rounded" {
	local r
	for r in 1.00000000001/s 0.0000000000000001/h 0.0000000000000000001/s; do
		run timeout 10 gk-limiter -r "$r" -- hello </dev/null
		[ "$status" -eq 64 ]
		[ "${#lines[@]}" -eq 1 ]
		assert_output --partial "gk-limiter: usage: bad --rate: $r (not kept exactly"
	done
	# As fine as the limiter keeps them: accepted.
	for r in 1.0000000001/s 0.000001/h 7/s 1/m; do
		run timeout 10 gk-limiter -r "$r" -- hello </dev/null
		[ "$status" -eq 0 ]
	done
}

@test "--http: the limiter fronts the stack itself and answers 429 over HTTP" {
	local port
	port=$(free_port)
	start_bg s gk-limiter --http -l "127.0.0.1:$port" --no-access-log \
		-r 1/m -b 1 -k remote -- hello
	wait_port 127.0.0.1 "$port"
	for i in 1 2; do
		run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
		[ "$output" = 200 ]
	done
	run curl -s -i "http://127.0.0.1:$port/"
	assert_line --partial "429"
	assert_line --regexp '^[Rr]etry-[Aa]fter: [0-9]+'
	assert_line --regexp '^[Rr]ate[Ll]imit-[Rr]emaining: 0'
	# The handler is the limiter's own child.
	assert_equal "$(ps -o comm= -p "$(pgrep -P "$(bg_pid s)")")" hello
}

@test "a rejected request carries the error member on the wire" {
	run timeout 10 bash -c 'for i in 1 2 3; do
		printf "{\"id\":\"%s\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{},\"trace\":{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}}\n" $i
	    done | GK_EVENTS_FORMAT=json gk-limiter -r 1/m -b 1 -- hello 2>"$1/err"' _ "$T"
	assert_success
	run jq -e -s 'map(select(.status == 429)) | length == 1 and
	    (.[0].error == {"stage": "gk-limiter", "reason": "rate limited"})
	    and .[0].headers["retry-after"] == "60"
	    and .[0].headers["ratelimit-limit"] == "2"' <<<"$output"
	assert_success
	# The rejection is logged, with the request's trace id.
	[ "$(count_events "$T/err" '.msg == "rate limited" and
	    .trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and .count == 1')" -eq 1 ]
}

@test "one key flooding does not reject another (-k header:x-api-key)" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 10/s -b 5 -k header:x-api-key
	wrk -t1 -c4 -d2s -s "$T/count.lua" -H 'x-api-key: flood' \
		"http://127.0.0.1:$port/" >"$T/wrk.out" &
	local wrk=$!
	wait_event "$T/s.err" '.msg == "rate limited" and .key == "flood"'
	# Another key gets its whole burst while the first is refused.
	local codes_b
	codes_b=$(for i in 1 2 3 4 5 6; do
		curl -s -o /dev/null -w '%{http_code}\n' -H 'x-api-key: calm' \
			"http://127.0.0.1:$port/"
	done)
	wait "$wrk"
	echo "# calm: $(tr '\n' ' ' <<<"$codes_b")" >&3
	[ "$(grep -c '^200$' <<<"$codes_b")" -eq 6 ]
	read -r _ ok limited _ <"$T/wrk.out" < <(grep '^RESULT' "$T/wrk.out")
	[ "$limited" -gt "$ok" ]
}

@test "--wait never holds a request longer than its bound" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 10/s -b 0 --wait 250ms
	run codes "http://127.0.0.1:$port" 30
	assert_success
	echo "$output" >"$T/codes"
	sort -k2 -n "$T/codes" | tail -n 3 | sed 's/^/# slowest: /' >&3
	# Slots come every 100 ms: those within 250 ms were held and then
	# admitted (the client saw the delay); the rest were refused.
	[ "$(awk '$1 == 200 && $2 >= 0.15' "$T/codes" | wc -l)" -ge 1 ]
	[ "$(grep -c '^200 ' "$T/codes")" -ge 3 ]
	[ "$(grep -c '^429 ' "$T/codes")" -ge 1 ]
	# By the limiter's own clock, every request it held was let go
	# within the bound: all of them are in the 0.25 s bucket.
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_queue_length)" 0
	local held
	held=$(jq -r '.gk_limiter_wait_seconds[0].count' <<<"$snap")
	echo "# held: $held" >&3
	[ "$held" -ge 2 ]
	assert_equal "$(value "$snap" gk_limiter_queued_total)" "$held"
	assert_equal "$(jq -r '[.gk_limiter_wait_seconds[0].buckets[] |
	    select(.[0] == 0.25) | .[1]][0]' <<<"$snap")" "$held"
}

@test "--wait refuses at once a request whose slot comes after its deadline, and spends no slot" {
	local port
	port=$(free_port)
	# One slot a minute, held for up to 10 minutes, but each request has
	# 3 s (the listener's --timeout): the second request's slot is a
	# minute away, past its deadline.  Holding it could only end in a 504
	# at the deadline, and would spend the slot that a later request could
	# have used: under load every request then timed out and nothing
	# went south.
	start_bg s gk-listener -l "127.0.0.1:$port" --no-access-log \
		--timeout 3s -- gk-limiter -r 1/m -b 0 --wait 10m -- hello
	wait_port 127.0.0.1 "$port"
	run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
	assert_output 200
	local i
	for i in 1 2; do
		run curl -s -i -m 20 "http://127.0.0.1:$port/"
		assert_line --partial "429"
		# The next slot is still the one a minute after the first
		# request: the refused requests did not take it.
		assert_line --regexp '^[Rr]etry-[Aa]fter: (59|60)'
	done
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_queued_total)" 0
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "rate_limited"')" 2
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 1
}

@test "--shadow lets everything through and counts what it would refuse" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 1/m --shadow
	for i in $(seq 10); do
		run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
		[ "$output" = 200 ]
	done
	kill -USR1 "$(limiter_pid s)"
	wait_event "$T/s.err" "$(metric_is gk_limiter_shadow_rejected_total rate_limited 9)"
	wait_event "$T/s.err" "$(metric_is gk_limiter_rejected_total rate_limited 0)"
	wait_event "$T/s.err" "$(metric_is gk_limiter_allowed_total '' 10)"
}

@test "two limiters sharing redis admit the global rate, not twice it" {
	local rport p1 p2
	rport=$(free_port)
	start_redis redis "$rport"
	p1=$(free_port)
	p2=$(free_port)
	start_stack a "$p1" -r 50/s -b 5 --redis "127.0.0.1:$rport"
	# A host name from the hosts file, as getaddrinfo(3) would find it.
	start_stack b "$p2" -r 50/s -b 5 --redis "localhost:$rport"
	wait_event "$T/a.err" '(.msg // "") | startswith("redis connected")'
	wait_event "$T/b.err" '(.msg // "") | startswith("redis connected")'
	# 3 s: 155 admitted in all, 5% is 7 either way; the two runs start
	# within milliseconds of each other (seen: 0.2% off over 5 s).
	wrk -t1 -c5 -d3s -s "$T/count.lua" "http://127.0.0.1:$p1/" >"$T/a.wrk" &
	local w1=$!
	wrk -t1 -c5 -d3s -s "$T/count.lua" "http://127.0.0.1:$p2/" >"$T/b.wrk" &
	local w2=$!
	wait "$w1" "$w2"
	local a b
	a=$(grep '^RESULT' "$T/a.wrk")
	b=$(grep '^RESULT' "$T/b.wrk")
	echo "# a: $a" >&3
	echo "# b: $b" >&3
	run awk -v a="$a" -v b="$b" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		ok = x[2] + y[2]; d = (x[5] > y[5]) ? x[5] : y[5]
		want = 50 * d + 5; e = (ok - want) / want
		printf "together %d, expected %.1f (%.2f%%)\n", ok, want, e * 100
		exit !(e < 0.05 && e > -0.05 && x[2] > 0 && y[2] > 0 &&
		    x[4] == 0 && y[4] == 0) }'
	echo "# $output" >&3
	assert_success
	[ "$(count_events "$T/a.err" '(.msg // "") | startswith("redis unavailable")')" -eq 0 ]
}

# script_admits PORT SHA KEY NOW0 FIRST STEPS STEP_US CALLS ARGV...: runs the
# limiter's script (EVALSHA SHA) on a clock of the test's own (the script's
# last argument, in microseconds): FIRST calls at NOW0, then CALLS at each
# of STEPS times STEP_US apart.  Prints how many were admitted in all.
# ARGV as lib/redis_limit.c sends it: T in us as whole, fraction
# numerator, denominator; burst * T as whole, numerator; the longest wait
# (us); burst + 1.
script_admits() {
	python3 - "$@" <<'PY'
import socket, sys
port, sha, key, now0, first, steps, step, calls = sys.argv[1:9]
args = sys.argv[9:]
s = socket.create_connection(("127.0.0.1", int(port)))
f = s.makefile("rb")
def cmd(parts):
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        p = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)
def reply():
    line = f.readline()
    if line[:1] == b"*":
        return [reply() for _ in range(int(line[1:]))]
    if line[:1] == b":":
        return int(line[1:])
    sys.exit("unexpected reply: %r" % line)
def run(now, n):
    s.sendall(cmd(["EVALSHA", sha, "1", key] + args + [str(now)]) * n)
    return sum(reply()[0] == 1 for _ in range(n))
now0 = int(now0)
total = run(now0, int(first))
for i in range(1, int(steps) + 1):
    total += run(now0 + i * int(step), int(calls))
print(total)
PY
}

@test "the global limit admits exactly the rate at 300000/s and 8M/s, not a rounded one" {
	local rport port sha now0
	rport=$(free_port)
	port=$(free_port)
	start_redis redis "$rport"
	start_stack s "$port" -r 1/s --redis "127.0.0.1:$rport"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis connected")'
	sha=$(events "$T/s.err" 'select((.msg // "") | startswith("redis connected")) | .script')
	# Redis's own clock, as the script would read it: times near 1.8e15 us.
	now0=$(redis-cli -p "$rport" TIME | awk 'NR == 1 { s = $1 } NR == 2 {
	    printf "%d%06d", s, $1 }')
	# 300000/s (T = 10/3 us), burst 3000: an idle key admits 3001 at
	# once, then exactly 300 per simulated millisecond; each step calls
	# more than that, so the count is the limit's, not the calls'.
	run script_admits "$rport" "$sha" k300k "$now0" 3100 20 1000 330 \
		3 1 3 10000 0 0 3001
	assert_success
	assert_output 9001
	# 8000000/s (T = 1/8 us, under the spacing of doubles near now):
	# burst 1000, then 8 per simulated microsecond.
	run script_admits "$rport" "$sha" k8m "$now0" 1100 10 1 20 \
		0 1 8 125 0 0 1001
	assert_success
	assert_output 1081
	# A key in the format of earlier versions (one number, far in the
	# future here) is taken as absent: no script error, burst + 1 admitted.
	redis-cli -p "$rport" SET kold 99999999999999999.125 >/dev/null
	run script_admits "$rport" "$sha" kold "$now0" 5 0 0 0 \
		3 1 3 6 2 0 3
	assert_success
	assert_output 3
}

@test "redis killed mid-run: the local limit answers, the gauge and an event say so" {
	local rport port
	rport=$(free_port)
	port=$(free_port)
	start_redis redis "$rport"
	export GK_METRICS_INTERVAL=200ms
	start_stack s "$port" -r 1/m -b 2 --redis "127.0.0.1:$rport"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis connected")'
	wait_event "$T/s.err" "$(metric_is gk_limiter_redis_up '' 1)"
	local got=""
	for i in 1 2 3 4; do
		got+="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/") "
	done
	[ "$got" = "200 200 200 429 " ]
	kill -KILL -- "-$(bg_pid redis)"
	wait_event "$T/s.err" '.msg == "redis unavailable: falling back to local limit"'
	# The local limit starts afresh: burst + 1, then 429.
	got=""
	for i in 1 2 3 4; do
		got+="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/") "
	done
	[ "$got" = "200 200 200 429 " ]
	wait_event "$T/s.err" "$(metric_is gk_limiter_redis_up '' 0)"
	[ "$(count_events "$T/s.err" '.msg == "redis unavailable: falling back to local limit"')" -eq 1 ]
	# Back on the same port: reconnected, said once.
	start_redis redis2 "$rport"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis available again")'
	wait_event "$T/s.err" "$(metric_is gk_limiter_redis_up '' 1)"
}

@test "--redis by host name: no request waits on the resolver, and one that stops answering leaves the last address" {
	local rport port got i
	rport=$(free_port)
	port=$(free_port)
	start_redis redis "$rport"
	start_dnsmasq dns --host-record=redis.example.test,127.0.0.1
	start_stack s "$port" -r 1/m -b 2 --redis "redis.example.test:$rport" \
		--nameserver "127.0.0.1:$DNS_PORT"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis connected")'
	run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
	assert_output 200
	# Decided in Redis, at the address the name has.
	assert_equal "$(redis-cli -p "$rport" EXISTS gk-limiter:)" 1
	# The resolver stops answering, then the connection drops: the
	# reconnect asks the stopped resolver.
	kill -STOP "$(bg_pid dns)"
	redis-cli -p "$rport" CLIENT KILL TYPE normal >/dev/null
	wait_event "$T/s.err" '.msg == "redis unavailable: falling back to local limit"'
	# Meanwhile every request is answered (the local limit: burst + 1,
	# then 429), none held behind the lookup.
	got=""
	for i in 1 2 3 4; do
		got+="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/") "
	done
	[ "$got" = "200 200 200 429 " ]
	# The lookup fails; the last address stands, and the global limit is
	# back while the resolver is still stopped.
	wait_event "$T/s.err" '.msg == "redis host not resolved: its last address stands"'
	wait_event "$T/s.err" '(.msg // "") | startswith("redis available again")'
	kill -CONT "$(bg_pid dns)"
}

@test "redis that stops answering: one outage, no flapping back, the global limit once it answers" {
	local rport port
	rport=$(free_port)
	port=$(free_port)
	start_redis redis "$rport"
	start_stack s "$port" -r 1/m -b 2 --redis "127.0.0.1:$rport"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis connected")'
	# Stopped, Redis still accepts connections (the kernel does) but
	# answers nothing: every reconnect must prove itself by an answer.
	kill -STOP "$(bg_pid redis)"
	local got="" i
	for i in 1 2 3 4; do
		got+="$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/") "
	done
	[ "$got" = "200 200 200 429 " ]
	wait_event "$T/s.err" '.msg == "redis unavailable: falling back to local limit"'
	# Traffic through the outage, about 2 s of it: two reconnects (100 ms
	# and 200 ms of backoff, each given 1 s to be answered).
	for i in $(seq 20); do
		curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/"
		sleep 0.1
	done
	[ "$(count_events "$T/s.err" '(.msg // "") | startswith("redis available again")')" -eq 0 ]
	[ "$(count_events "$T/s.err" '.msg == "redis unavailable: falling back to local limit"')" -eq 1 ]
	kill -CONT "$(bg_pid redis)"
	wait_event "$T/s.err" '(.msg // "") | startswith("redis available again")' 20
	# Decided by Redis again: a fresh key there admits, where the
	# exhausted local limit would refuse.
	redis-cli -p "$rport" DEL gk-limiter: >/dev/null
	run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
	assert_output 200
	[ "$(count_events "$T/s.err" '(.msg // "") | startswith("redis available again")')" -eq 1 ]
	[ "$(count_events "$T/s.err" '.msg == "redis unavailable: falling back to local limit"')" -eq 1 ]
}

@test "-c 64: at most 64 in flight south, the rest answered 429 at once" {
	local port
	port=$(free_port)
	start_held s "$port" -c 64
	# Line-buffered: each answer is counted as it comes.
	timeout 60 stdbuf -oL curl -s --no-progress-meter --parallel --parallel-immediate \
		--parallel-max 100 -m 30 -o /dev/null -w '%{http_code}\n' \
		"http://127.0.0.1:$port/r[1-100]" >"$T/codes" 2>"$T/curl.err" &
	local curl=$!
	# While the handler holds the 64, the other 36 are refused.
	poll_for -t 20 _codes_at_least "$T/codes" 429 36
	poll_for -t 10 _received_is 64
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_inflight)" 64
	assert_equal "$(value "$snap" gk_limiter_concurrency_limit)" 64
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 64
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "concurrency_limited"')" 36
	assert_equal "$(grep -c . "$T/codes")" 36
	touch "$RELEASE"
	wait "$curl"
	assert_equal "$(grep -c '^200$' "$T/codes")" 64
	assert_equal "$(grep -c '^429$' "$T/codes")" 36
	assert_equal "$(received)" 64
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_inflight)" 0
}

@test "a request the concurrency limit refuses spends no rate slot" {
	local port i
	port=$(free_port)
	# A quota of two (burst 1) that does not refill within the test.
	start_held s "$port" -r 1/m -b 1 -c 1
	curl -s -m 30 -o /dev/null -w '%{http_code}\n' \
		"http://127.0.0.1:$port/first" >"$T/first" 2>/dev/null &
	local first=$!
	poll_for -t 10 _received_is 1
	for i in 1 2 3 4 5; do
		run curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/r$i"
		assert_output 429
	done
	touch "$RELEASE"
	wait "$first"
	assert_equal "$(cat "$T/first")" 200
	# The second slot of the quota is still there.
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/second"
	assert_output 200
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 2
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "concurrency_limited"')" 5
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "rate_limited"')" 0
}

@test "--wait with a full --queue answers 429 at once; the queued go south in order" {
	local port
	port=$(free_port)
	start_held s "$port" -c 2 --wait 20s --queue 3
	# Line-buffered: each answer is counted as it comes.
	timeout 60 stdbuf -oL curl -s --no-progress-meter --parallel --parallel-immediate \
		--parallel-max 10 -m 30 -o /dev/null -w '%{http_code}\n' \
		"http://127.0.0.1:$port/r[1-10]" >"$T/codes" 2>"$T/curl.err" &
	local curl=$!
	# 2 in flight, 3 held: the other 5 are refused while those wait,
	# long before the 20 s bound.
	poll_for -t 15 _codes_at_least "$T/codes" 429 5
	poll_for -t 10 _received_is 2
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_queue_length)" 3
	assert_equal "$(value "$snap" gk_limiter_queued_total)" 3
	assert_equal "$(value "$snap" gk_limiter_inflight)" 2
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "concurrency_limited"')" 5
	assert_equal "$(grep -c . "$T/codes")" 5
	touch "$RELEASE"
	wait "$curl"
	assert_equal "$(grep -c '^200$' "$T/codes")" 5
	assert_equal "$(received)" 5
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_queue_length)" 0
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 5
	# The three that waited are in the wait-time histogram.
	assert_equal "$(jq -r '.gk_limiter_wait_seconds[0].count' <<<"$snap")" 3
	assert_equal "$(jq -r '.gk_limiter_wait_seconds[0].buckets | last | .[1]' <<<"$snap")" 3
}

# _past_ms T0 MS: MS milliseconds have passed since T0 (date +%s%3N).
_past_ms() {
	[ "$(date +%s%3N)" -ge $(($1 + $2)) ]
}

@test "--wait: a queued request whose bound passed while the limiter stalled is refused, not admitted" {
	local port a b
	port=$(free_port)
	write_handler
	# Each request has 2 s (the listener's --timeout); the handler holds
	# everything.  The first request's deadline (a + 2 s) comes before
	# the second's --wait bound (b + 1.5 s, b > a + 0.5 s).
	MODE=hold start_bg s gk-listener -l "127.0.0.1:$port" --no-access-log \
		--timeout 2s -- gk-limiter -c 1 --wait 1500ms -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$port"
	a=$(date +%s%3N)
	curl -s -m 30 -o /dev/null -w '%{http_code}\n' \
		"http://127.0.0.1:$port/first" >"$T/first" 2>/dev/null &
	local first=$!
	poll_for -t 10 _received_is 1
	poll_for -t 10 _past_ms "$a" 600
	b=$(date +%s%3N)
	curl -s -m 30 -o /dev/null -w '%{http_code}\n' \
		"http://127.0.0.1:$port/second" >"$T/second" 2>/dev/null &
	local second=$!
	# Queued (a counter: still 1 should its bound pass meanwhile).
	wait_for -t 10 _snap_value_is s gk_limiter_queued_total 1
	# Stalled (as by swapping or a debugger) past both times: when it
	# resumes, the first request's deadline frees its slot in the same
	# loop turn in which the second's bound has passed.
	kill -STOP "$(limiter_pid s)"
	poll_for -t 10 _past_ms "$b" 1700
	kill -CONT "$(limiter_pid s)"
	wait "$first" "$second"
	assert_equal "$(cat "$T/first")" 504
	assert_equal "$(received)" 1
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 1
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "concurrency_limited"')" 1
	assert_equal "$(value "$snap" gk_limiter_queue_length)" 0
	assert_equal "$(value "$snap" gk_limiter_inflight)" 0
}

@test "-k jq:EXPR keys each tenant apart; requests it finds no key in share the empty key" {
	local port
	port=$(free_port)
	# Without the header jq stops with an error: the empty key, and the
	# limiter goes on.
	start_stack s "$port" -r 1/m -b 0 -k 'jq:.headers["x-tenant"] | ascii_downcase'
	local pid got="" h
	pid=$(limiter_pid s)
	for h in a A b b "" ""; do
		got+="$(curl -s -o /dev/null -w '%{http_code}' ${h:+-H "x-tenant: $h"} \
			"http://127.0.0.1:$port/") "
	done
	assert_equal "$got" "200 429 200 429 200 429 "
	assert_equal "$(limiter_pid s)" "$pid"
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_keys)" 3
	assert_equal "$(value "$snap" gk_limiter_allowed_total)" 3
	assert_equal "$(value "$snap" gk_limiter_rejected_total '.labels.reason == "rate_limited"')" 3
	# The log of a refusal names the key jq found.
	wait_event "$T/s.err" '.msg == "rate limited" and .key == "a"'
	# jq's error is said once, not a line a request (the two requests
	# without the header failed; at most one warning in 10 s).
	wait_event "$T/s.err" '(.msg // "") | startswith("key expression failed")'
	ev=$(events "$T/s.err" 'select((.msg // "") | startswith("key expression failed"))')
	assert_equal "$(wc -l <<<"$ev")" 1
	assert_equal "$(jq -r .level <<<"$ev")" warn
	assert_equal "$(jq -r .error <<<"$ev")" "explode input must be a string"
}

@test "--max-keys 2 evicts the least recently used key and counts it" {
	local port
	port=$(free_port)
	start_stack s "$port" -r 1/m -b 0 -k header:x-api-key --max-keys 2
	local got="" k
	# a, b; a again (refused, now the most recent); c evicts b; a is
	# still refused; b comes back fresh (evicting c); so does c.
	for k in a b a c a b c; do
		got+="$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $k" \
			"http://127.0.0.1:$port/") "
	done
	assert_equal "$got" "200 200 429 200 429 200 200 "
	snap=$(snapshot s)
	assert_equal "$(value "$snap" gk_limiter_keys)" 2
	assert_equal "$(value "$snap" gk_limiter_evictions_total)" 3
}

@test "--adaptive: the limit rises while latency holds and falls when queueing starts" {
	local port
	port=$(free_port)
	write_handler
	export GK_METRICS_INTERVAL=200ms
	MODE=latency start_bg s gk-listener -l "127.0.0.1:$port" --no-access-log \
		-- gk-limiter --adaptive -c 10 --min 4 --max 40 --wait 20s \
		--queue 1000 -- python3 -u "$T/handler.py"
	wait_port 127.0.0.1 "$port"
	# The handler (python) has started before the load: its start would
	# be the first latencies the limit adapts to.
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
	assert_output 200
	# 60 connections keep more requests offered than any limit allows.
	start_bg load timeout 60 wrk -t1 -c60 -d50s "http://127.0.0.1:$port/"
	local gauge='.proc == "'"$(stage_proc gk-limiter)"'" and .type == "metrics" and
	    any(.metrics[]; .name == "gk_limiter_concurrency_limit")'
	local limits="[.metrics[] | select(.name == \"gk_limiter_concurrency_limit\") | .series[0].value] | first"
	# Each request takes 50 ms however many are in flight: the limit
	# climbs from 10 (it may settle anywhere up to --max).
	wait_event "$T/s.err" "$gauge and ($limits) >= 24" 20
	local peak n
	peak=$(events "$T/s.err" "select($gauge) | $limits" | sort -n | tail -n 1)
	n=$(count_events "$T/s.err" "$gauge")
	echo "# limit before queueing: $peak" >&3
	# Now the service serves 4 at a time: latency grows with the limit.
	touch "$SLOW"
	_fell() {
		events "$T/s.err" "select($gauge) | $limits" | tail -n "+$((n + 1))" |
			awk -v p="$1" '$1 <= p / 2 { f = 1 } END { exit !f }'
	}
	wait_for -t 20 _fell "$peak"
	events "$T/s.err" "select($gauge) | $limits" | tail -n "+$((n + 1))" |
		sort -n | head -n 1 | sed 's/^/# lowest after queueing: /' >&3
	# Within --min and --max all along.
	[ "$(count_events "$T/s.err" "$gauge and (($limits) < 4 or ($limits) > 40)")" -eq 0 ]
}

@test "without a jq key or --redis, the stages load neither libjq, hiredis nor c-ares" {
	[ -z "${GK_SANITIZED:-}" ] || skip "sanitizer builds link every library at start"
	local port
	port=$(free_port)
	start_bg s gk-listener -l "127.0.0.1:$port" --no-access-log -- \
		gk-tracer -- gk-limiter -r 100/s -k header:x-api-key -- \
		gk-breaker -k path -- hello
	wait_port 127.0.0.1 "$port"
	run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/"
	assert_output 200
	local p name
	for name in gk-tracer gk-limiter gk-breaker; do
		if [ "${GK_FUSE:-}" = 1 ]; then # all in gk-listener
			p=$(bg_pid s)
		else
			p=$(pgrep -s "$(bg_pid s)" -x "$name")
		fi
		[ -n "$p" ]
		echo "# $name: $(grep VmRSS "/proc/$p/status" | tr -s ' \t' ' ')" >&3
		! grep -E 'libjq|libonig|libhiredis|libcurl|libcares' "/proc/$p/maps" ||
			fail "$name maps a library it does not use"
	done
	stop_all
	# A jq key loads libjq when it is given.
	port=$(free_port)
	start_stack j "$port" -r 100/s -k 'jq:.path'
	grep -q libjq "/proc/$(limiter_pid j)/maps"
}

@test "bad options exit 64 with one line" {
	run gk-limiter -r 10/x -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "gk-limiter: usage: bad --rate: 10/x (expected"
	run gk-limiter -r 10/s -b -1 -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "gk-limiter: usage: bad --burst: -1 (expected"
	run gk-limiter -r 10/s --wait 2x -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "gk-limiter: usage: bad --wait: 2x (expected"
	run gk-limiter -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "nothing to limit"
	run gk-limiter -r 10/s -k 'jq:.[' -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "gk-limiter: usage: bad --key: jq:.[ (jq program does not compile)"
	run gk-limiter --adaptive --min 50 --max 10 -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "--min is above --max"
	# With a key given, a fault elsewhere is not blamed on the key.
	run gk-limiter -r 10/s -k remote --adaptive --min 50 --max 10 -- hello
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output "gk-limiter: usage: --min is above --max"
	# An option that would change nothing: the user meant something else.
	run gk-limiter -c 10 -b 5 -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --burst needs --rate"
	run gk-limiter -c 10 --queue 5 -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --queue needs --wait"
	run gk-limiter -c 10 --max 40 -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --min and --max need --adaptive"
	run gk-limiter -r 10/s --max-keys 5 -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --max-keys needs --key"
	run gk-limiter -r 10/s --redis-timeout 20ms -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --redis-prefix, --redis-timeout and --nameserver need --redis"
	# 1e9 hours of burst: past what the Redis script counts exactly.
	run gk-limiter -r 1/h -b 1000000000 --redis 127.0.0.1:1 -- hello
	[ "$status" -eq 64 ]
	assert_output "gk-limiter: usage: --redis: the rate's interval times --burst + 1 passes 2^52us (142 years), past what Redis's script counts exactly"
}
