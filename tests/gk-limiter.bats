#!/usr/bin/env bats
# gk-limiter: rate limits behind a real gk-listener, under real load (wrk,
# curl), with a real redis-server for the global limit.

load helpers/common

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
	pgrep -P "$(bg_pid "$1")" -x gk-limiter
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
	echo ".proc == \"gk-limiter\" and .type == \"metrics\" and
	    ([.metrics[] | select(.name == \"$name\") | .series[] |
	      select(\"$reason\" == \"\" or .labels.reason == \"$reason\") |
	      .value] | first) == $want"
}

@test "at 10x overload for 10 s the admitted rate is within 2% of --rate" {
	local port
	port=$(free_port)
	export GK_METRICS_INTERVAL=1
	start_stack s "$port" -r 100/s -b 10
	# 10 connections at ~100 requests/s each: ~10x the rate.
	run wrk -t1 -c10 -d10s -s "$T/count.lua" "http://127.0.0.1:$port/"
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
	events "$T/s.err" 'select(.proc == "gk-limiter" and .type == "metrics")
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
	wrk -t1 -c4 -d4s -s "$T/count.lua" -H 'x-api-key: flood' \
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
	start_stack s "$port" -r 10/s -b 0 --wait 300ms
	run codes "http://127.0.0.1:$port" 30
	assert_success
	echo "$output" >"$T/codes"
	sort -k2 -n "$T/codes" | tail -n 3 | sed 's/^/# slowest: /' >&3
	# Every answer within 300 ms plus a generous margin for a loaded box.
	[ "$(awk '$2 > 0.45' "$T/codes" | wc -l)" -eq 0 ]
	# Some were held and then admitted; past the bound they were refused.
	[ "$(awk '$1 == 200 && $2 >= 0.15' "$T/codes" | wc -l)" -ge 1 ]
	[ "$(grep -c '^200 ' "$T/codes")" -ge 4 ]
	[ "$(grep -c '^429 ' "$T/codes")" -ge 1 ]
	kill -USR1 "$(limiter_pid s)"
	wait_event "$T/s.err" "$(metric_is gk_limiter_queue_length '' 0) and
	    ([.metrics[] | select(.name == \"gk_limiter_queued_total\") |
	      .series[0].value] | first) >= 3"
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
	start_stack b "$p2" -r 50/s -b 5 --redis "127.0.0.1:$rport"
	wait_event "$T/a.err" '(.msg // "") | startswith("redis connected")'
	wait_event "$T/b.err" '(.msg // "") | startswith("redis connected")'
	wrk -t1 -c5 -d5s -s "$T/count.lua" "http://127.0.0.1:$p1/" >"$T/a.wrk" &
	local w1=$!
	wrk -t1 -c5 -d5s -s "$T/count.lua" "http://127.0.0.1:$p2/" >"$T/b.wrk" &
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

@test "redis killed mid-run: the local limit answers, the gauge and an event say so" {
	local rport port
	rport=$(free_port)
	port=$(free_port)
	start_redis redis "$rport"
	export GK_METRICS_INTERVAL=1
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
}
