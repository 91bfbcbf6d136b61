#!/usr/bin/env bats
# gk-client as a user sees it: real nginx upstreams started by the test
# (tests/helpers/upstreams.bash: each with its own config, on a free
# loopback port, in its own process group), a real gk-listener in front,
# driven with curl.  Where a request went is read from the upstreams'
# access logs; the stack's events (and metrics on SIGUSR1) from its stderr.

load helpers/common
load helpers/upstreams

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
}

teardown() {
	stop_all
}

# The suite runs on gk-client's default HTTP/1.1 engine; with
# GK_CLIENT_ENGINE=native or curl, on that one (--engine).
ENGINE=()
[ -z "${GK_CLIENT_ENGINE:-}" ] || ENGINE=(--engine "$GK_CLIENT_ENGINE")

# stack [GK-CLIENT OPTIONS...]: gk-listener -- gk-client OPTIONS.
stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-client "${ENGINE[@]}" "$@"
	wait_http "$URL/healthz" 10
}

# traced_stack [GK-CLIENT OPTIONS...]: gk-tracer in front of gk-client.
traced_stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-tracer -- gk-client "${ENGINE[@]}" "$@"
	wait_http "$URL/healthz" 10
}

# _upstream_closed N: nginx N holds no established connection (it closed
# the idle ones on its side).
_upstream_closed() {
	[ -z "$(ss -Htn state established "( sport = :${UP_PORT[$1]} )")" ]
}

client_pid() {
	pgrep -x gk-client -s "$(bg_pid stack)" | head -n 1
}

# The last complete snapshot of gk-client (a snapshot larger than PIPE_BUF
# comes in parts sharing one seq), as one object {seq, metrics}.
_last_snapshot() {
	jq -R -n -c '[inputs | [try fromjson catch null][] | objects |
		select(.type == "metrics" and .proc == "gk-client")] |
		(group_by(.seq) | map(select(length == .[0].parts)) | last) as $l |
			if $l then {seq: $l[0].seq, metrics: ($l | map(.metrics) | add)}
			else {seq: 0, metrics: []} end' "$ERR"
}

_snapshot_after() {
	[ "$(_last_snapshot | jq .seq)" -gt "$1" ]
}

# snapshot: ask gk-client for a metrics snapshot (SIGUSR1) and print it.
snapshot() {
	local before
	before=$(_last_snapshot | jq .seq)
	kill -USR1 "$(client_pid)"
	poll_for -t 10 _snapshot_after "$before"
	_last_snapshot
}

# metric SNAPSHOT NAME [ENDPOINT]: the value (a histogram: its count) of the
# series of NAME, summed, for one endpoint when given.
metric() {
	jq -r --arg n "$2" --arg e "${3:-}" '[.metrics[] | select(.name == $n) |
		.series[] | select($e == "" or .labels.endpoint == $e) |
		(.value // .count)] | add // 0' <<<"$1"
}

# statuses FILE: "count status" lines, most frequent first.
count_status() {
	grep -c "^$2\$" "$1" || true
}

@test "round robin spreads 150 requests evenly over three upstreams" {
	upstream_start 1
	upstream_start 2
	upstream_start 3
	stack -b round-robin -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}" -e "${UP_ADDR[3]}"
	fetch_many 150 "$URL/rr" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 150
	settle ' /rr ' 150
	assert_equal "$(hits 1 ' /rr ')" 50
	assert_equal "$(hits 2 ' /rr ')" 50
	assert_equal "$(hits 3 ' /rr ')" 50
}

@test "weights in the endpoints file are honoured: 3:1 exactly by round robin" {
	upstream_start 1
	upstream_start 2
	printf '%s 3\n%s 1\n' "${UP_ADDR[1]}" "${UP_ADDR[2]}" >"$T/endpoints"
	stack -b round-robin --endpoints "$T/endpoints"
	fetch_many 200 "$URL/w" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 200
	settle ' /w ' 200
	assert_equal "$(hits 1 ' /w ')" 150
	assert_equal "$(hits 2 ' /w ')" 50
}

@test "weights are honoured by random balancing: 3:1 over 1200 requests within 5%" {
	upstream_start 1
	upstream_start 2
	printf '%s 3\n%s 1\n' "${UP_ADDR[1]}" "${UP_ADDR[2]}" >"$T/endpoints"
	stack -b random --endpoints "$T/endpoints"
	fetch_many 1200 "$URL/w" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 1200
	settle ' /w ' 1200
	local one
	one=$(hits 1 ' /w ')
	assert_equal "$(($(hits 2 ' /w ') + one))" 1200
	# expected 900; 5% of the requests either way (4 standard deviations)
	[ "$one" -ge 840 ] && [ "$one" -le 960 ] || fail "upstream 1 got $one of 1200"
}

@test "hash on -k path sends every key to one upstream, and the keys to all three" {
	upstream_start 1
	upstream_start 2
	upstream_start 3
	stack -b hash -k path -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}" -e "${UP_ADDR[3]}"
	local r k
	for r in 1 2 3 4 5; do
		for k in $(seq 1 40 | shuf); do
			echo "$URL/key/$k"
		done
	done >"$T/urls"
	fetch_urls "$T/urls" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 200
	settle ' /key/' 200
	# key -> the upstreams that served it
	cat "$T"/up*/access.log | awk '$3 ~ /^\/key\// { print $3, $1 }' | sort -u >"$T/served"
	assert_equal "$(wc -l <"$T/served")" 40
	assert_equal "$(awk '{ print $2 }' "$T/served" | sort -u | wc -l)" 3
	for k in 1 17 40; do
		assert_equal "$(awk -v p="/key/$k" '$3 == p' "$T"/up*/access.log | wc -l)" 5
	done
}

@test "least outstanding sends few requests to a slow upstream under concurrency" {
	upstream_start 1
	upstream_start 2 slow
	stack -b least -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	fetch_many 300 "$URL/" --parallel --parallel-max 8 >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 300
	settle ' / ' 300
	local slow
	slow=$(hits 2 ' / ')
	assert_equal "$(($(hits 1 ' / ') + slow))" 300
	[ "$slow" -le 30 ] || fail "the slow upstream got $slow of 300"
}

@test "p2c-ewma sends few requests to a slow upstream under concurrency" {
	upstream_start 1
	upstream_start 2 slow
	stack -b p2c-ewma -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	# a few requests one at a time: each upstream is measured once (a
	# burst at a cold start is spread over both: nothing is known yet)
	fetch_many 4 "$URL/" >"$T/codes"
	fetch_many 300 "$URL/" --parallel --parallel-max 8 >>"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 304
	settle ' / ' 304
	local slow
	slow=$(hits 2 ' / ')
	assert_equal "$(($(hits 1 ' / ') + slow))" 304
	# one try while it is unmeasured, then it is known to be slow
	[ "$slow" -le 3 ] || fail "the slow upstream got $slow of 304"
}

@test "an upstream stopped mid-run is ejected and every GET is still answered 200" {
	upstream_start 1
	upstream_start 2
	upstream_start 3
	stack -b round-robin --retry-on 502,503 --eject-after 3 \
		-e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}" -e "${UP_ADDR[3]}"
	fetch_many 1000 "$URL/run" --rate 500/s >"$T/codes" &
	local loader=$!
	_two_busy() { [ "$(hits 2)" -ge 60 ]; }
	poll_for -t 20 _two_busy
	upstream_stop 2
	local at_stop=$(($(hits 1) + $(hits 3)))
	poll_for -t 60 _not_running "$loader"
	wait "$loader" || true
	assert_equal "$(wc -l <"$T/codes")" 1000
	assert_equal "$(count_status "$T/codes" 200)" 1000
	# the run went on well after the stop
	[ $(($(hits 1) + $(hits 3) - at_stop)) -ge 300 ] || fail "too few requests after the stop"
	assert_equal "$(count_events "$ERR" ".msg == \"endpoint ejected\" and .endpoint == \"${UP_ADDR[2]}\"")" 1
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_ejections_total "${UP_ADDR[2]}")" 1
	assert_equal "$(metric "$snap" gk_client_ejected "${UP_ADDR[2]}")" 1
	assert_equal "$(metric "$snap" gk_client_ejected "${UP_ADDR[1]}")" 0
}

@test "a POST is never sent twice: the upstream closed the connection, 502, one hit" {
	upstream_start 1
	stack --retry-on 502,503 -e "${UP_ADDR[1]}"
	# a keep-alive connection to the upstream is in the pool now
	run curl -s -o /dev/null -w '%{http_code}' "$URL/"
	assert_output 200
	# nginx reads the POST and closes without an answer (444): libcurl
	# would send it again on a new connection; gk-client refuses
	run curl -s -o /dev/null -w '%{http_code}' -d 'pay=1' "$URL/drop"
	assert_output 502
	assert_equal "$(hits 1 'POST /drop')" 1
	assert_equal "$(metric "$(snapshot)" gk_client_not_resent_total)" 1
	# a GET may be tried again
	run curl -s -o /dev/null -w '%{http_code}' "$URL/drop"
	assert_output 502
	[ "$(hits 1 'GET /drop')" -ge 2 ] || fail "the GET was not retried"
}

@test "a chunked upstream response arrives whole, and its connection is reused" {
	upstream_start 1
	stack -e "${UP_ADDR[1]}"
	run curl -s -D "$T/head" "$URL/ssi/small.txt"
	assert_output "chunked from upstream 1"
	# the upstream's framing is not passed on
	! grep -qi '^transfer-encoding: chunked' "$T/head" || fail "hop-by-hop header passed"
	# 200 KB in many chunks and reads
	curl -s -o "$T/big" "$URL/ssi/big.txt"
	cmp "$T/big" "$T/up1/html/big.txt"
	run curl -s "$URL/ssi/small.txt"
	assert_output "chunked from upstream 1"
	settle ' /ssi/' 3
	assert_equal "$(hits 1 ' /ssi/.* 200 ')" 3
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 1
	assert_equal "$(metric "$snap" gk_client_connections "${UP_ADDR[1]}")" 1
}

@test "a close-delimited upstream response arrives whole; Connection: close is honoured" {
	upstream_start 1
	stack -e "${UP_ADDR[1]}"
	run curl -s "$URL/ssi-close/small.txt"
	assert_output "chunked from upstream 1"
	curl -s -o "$T/big" "$URL/ssi-close/big.txt"
	cmp "$T/big" "$T/up1/html/big.txt"
	run curl -s "$URL/ssi-close/small.txt"
	assert_output "chunked from upstream 1"
	# every answer ended with its connection: a new one each time
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 3
	assert_equal "$(metric "$snap" gk_client_connections "${UP_ADDR[1]}")" 0
	assert_equal "$(metric "$snap" gk_client_errors_total "${UP_ADDR[1]}")" 0
}

@test "HEAD is answered without a body; a body past --max-response is 502 and the next request is answered" {
	upstream_start 1
	stack --max-response 1k -e "${UP_ADDR[1]}"
	run curl -s -m 10 -o /dev/null -w '%{http_code}' -I "$URL/ssi/small.txt"
	assert_output 200
	run curl -s -m 10 -o /dev/null -w '%{http_code}' -I "$URL/"
	assert_output 200
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/ssi/big.txt"
	assert_output 502
	run curl -s -m 10 "$URL/"
	assert_output "upstream 1"
	settle 'HEAD ' 2
	assert_equal "$(hits 1 'GET /ssi/big.txt')" 1
}

@test "an upstream that closes an idle keep-alive connection: the next GET and POST are answered, each sent once" {
	upstream_start 1
	stack --retry-on 502,503 -e "${UP_ADDR[1]}"
	run curl -s "$URL/brief"
	assert_output "brief 1"
	# nginx ends the idle connection after 300 ms
	poll_for -t 10 _upstream_closed 1
	run curl -s "$URL/brief"
	assert_output "brief 1"
	poll_for -t 10 _upstream_closed 1
	run curl -s -o /dev/null -w '%{http_code}' -d 'pay=1' "$URL/brief"
	assert_output 200
	settle ' /brief ' 3
	assert_equal "$(hits 1 'GET /brief')" 2
	assert_equal "$(hits 1 'POST /brief')" 1
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_not_resent_total)" 0
	assert_equal "$(metric "$snap" gk_client_errors_total "${UP_ADDR[1]}")" 0
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 3
}

@test "a POST on a reused connection the upstream closed unanswered is not resent, on either engine" {
	upstream_start 1
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" --retry-on 502,503 -e "${UP_ADDR[1]}"
		wait_http "$URL/healthz" 10
		run curl -s -o /dev/null -w '%{http_code}' "$URL/warm-$eng"
		assert_output 200
		run curl -s -o /dev/null -w '%{http_code}' -d 'pay=1' "$URL/drop"
		assert_output 502
		run curl -s -o /dev/null -w '%{http_code}' -X PUT -d 'put=1' "$URL/drop"
		assert_output 502
	done
	settle 'POST /drop' 2
	settle 'PUT /drop' 4
	# one POST from each engine; a PUT is idempotent: tried again
	assert_equal "$(hits 1 'POST /drop')" 2
	[ "$(hits 1 'PUT /drop')" -ge 4 ] || fail "the PUT was not tried again"
}

@test "--retry-on 503 retries a GET but never a POST" {
	upstream_start 1
	stack --retry-on 503 --retries 2 --eject-after 0 -e "${UP_ADDR[1]}"
	run curl -s -o /dev/null -w '%{http_code}' -d 'x=1' "$URL/503"
	assert_output 503
	run curl -s -o /dev/null -w '%{http_code}' "$URL/503"
	assert_output 503
	# a status not named is not retried
	run curl -s -o /dev/null -w '%{http_code}' "$URL/500"
	assert_output 500
	# the lines of every try are in once the last request's is
	run curl -s -o /dev/null -w '%{http_code}' "$URL/last"
	settle ' /last ' 1
	assert_equal "$(hits 1 'POST /503')" 1
	assert_equal "$(hits 1 'GET /503')" 3
	assert_equal "$(hits 1 'GET /500')" 1
}

@test "a retry goes to an endpoint not tried yet: two of three answer 503, every GET is answered 200" {
	upstream_start 1 503
	upstream_start 2 503
	upstream_start 3
	# Random picks: were only the endpoint tried last avoided, one GET in
	# six would go back to the first 503 on its third try.
	stack -b random --retry-on 503 --retries 2 --retry-budget 100% --eject-after 0 \
		-e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}" -e "${UP_ADDR[3]}"
	local codes
	codes=$(for i in $(seq 60); do curl -s -o /dev/null -w '%{http_code}\n' "$URL/r$i"; done | sort | uniq -c | awk '{print $2 ":" $1}' | tr '\n' ' ')
	assert_equal "$codes" "200:60 "
	settle ' /r60 ' 1
	# no endpoint was tried twice for one request
	assert_equal "$(grep -ho 'GET /r[0-9]* ' "$T/up1/access.log" | sort | uniq -d)" ""
	assert_equal "$(grep -ho 'GET /r[0-9]* ' "$T/up2/access.log" | sort | uniq -d)" ""
}

@test "the retry budget stops a retry storm: 500 requests to an all-503 set, retries within 20%" {
	upstream_start 1 503
	upstream_start 2 503
	stack -b round-robin --retry-on 503 --retries 2 --retry-budget 20% \
		--retry-min 1/s --eject-after 0 -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	local t0=$SECONDS
	fetch_many 500 "$URL/" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 503)" 500
	# without a budget: 1500 tries.  With it: 500, plus 20% of them, plus
	# the minimum of 1/s over the 10 s window (or over the run, if longer)
	local bound=$((600 + (SECONDS - t0 > 10 ? SECONDS - t0 + 1 : 11)))
	local snap retries tries
	snap=$(snapshot)
	retries=$(metric "$snap" gk_client_retries_total)
	settle ' / ' $((500 + retries))
	tries=$(all_hits ' / ')
	assert_equal "$tries" $((500 + retries))
	[ "$tries" -le "$bound" ] || fail "$tries tries for 500 requests (at most $bound)"
	# every request that was not retried at all was refused by the budget
	[ "$(metric "$snap" gk_client_retry_budget_exhausted_total)" -ge $((1000 - tries)) ]
}

@test "the deadline from north is honoured (504) and what is left of it goes upstream" {
	upstream_start 1
	stack -e "${UP_ADDR[1]}"
	# gk-listener gives every request a deadline (--timeout, 30 s)
	run curl -s -o /dev/null -w '%{http_code}' "$URL/none"
	assert_output 200
	settle ' /none ' 1
	local t
	t=$(sed -n 's|.* /none .* t=\([0-9]*\) .*|\1|p' "$T/up1/access.log")
	[ -n "$t" ] && [ "$t" -gt 0 ] && [ "$t" -le 30000 ] || fail "x-gk-timeout-ms upstream: '$t'"
	run curl -s -o /dev/null -w '%{http_code}' -H 'x-gk-timeout-ms: 5000' "$URL/left"
	assert_output 200
	settle ' /left ' 1
	t=$(sed -n 's|.* /left .* t=\([0-9]*\) .*|\1|p' "$T/up1/access.log")
	[ -n "$t" ] && [ "$t" -gt 0 ] && [ "$t" -le 5000 ] || fail "x-gk-timeout-ms upstream: '$t'"
	# a slow answer (about 1 s) against 300 ms left
	run curl -s -o /dev/null -w '%{http_code}' -H 'x-gk-timeout-ms: 300' "$URL/slow"
	assert_output 504
	settle ' /slow ' 1
	t=$(sed -n 's|.* /slow .* t=\([0-9]*\) .*|\1|p' "$T/up1/access.log")
	[ -n "$t" ] && [ "$t" -le 300 ] || fail "x-gk-timeout-ms upstream: '$t'"
}

@test "traceparent goes upstream with a client span id, and a client span is written when sampled" {
	upstream_start 1
	traced_stack -e "${UP_ADDR[1]}"
	local tr=4bf92f3577b34da6a3ce929d0e0e4736 caller=00f067aa0ba902b7
	run curl -s -o /dev/null -w '%{http_code}' \
		-H "traceparent: 00-$tr-$caller-01" "$URL/traced"
	assert_output 200
	settle ' /traced ' 1
	local tp
	tp=$(sed -n 's|.* /traced .* tp=\([^ ]*\) .*|\1|p' "$T/up1/access.log")
	[[ $tp =~ ^00-$tr-([0-9a-f]{16})-01$ ]] || fail "traceparent upstream: $tp"
	local sent=${BASH_REMATCH[1]}
	[ "$sent" != "$caller" ] || fail "the caller's span id went upstream"
	wait_event "$ERR" ".type == \"span\" and .kind == \"client\" and .trace_id == \"$tr\"" 10
	local client server
	client=$(events "$ERR" "select(.type == \"span\" and .kind == \"client\" and .trace_id == \"$tr\")")
	assert_equal "$(jq -r .span_id <<<"$client")" "$sent"
	assert_equal "$(jq -r '.attrs["http.response.status_code"]' <<<"$client")" 200
	assert_equal "$(jq -r .proc <<<"$client")" gk-client
	wait_event "$ERR" ".type == \"span\" and .kind == \"server\" and .trace_id == \"$tr\"" 10
	server=$(events "$ERR" "select(.type == \"span\" and .kind == \"server\" and .trace_id == \"$tr\")")
	# the client span is the child of gk-tracer's server span
	assert_equal "$(jq -r .parent_id <<<"$client")" "$(jq -r .span_id <<<"$server")"

	# not sampled: the context still goes upstream, no client span
	local tr2=0af7651916cd43dd8448eb211c80319c
	run curl -s -o /dev/null -w '%{http_code}' \
		-H "traceparent: 00-$tr2-b7ad6b7169203331-00" "$URL/quiet"
	assert_output 200
	settle ' /quiet ' 1
	tp=$(sed -n 's|.* /quiet .* tp=\([^ ]*\) .*|\1|p' "$T/up1/access.log")
	[[ $tp =~ ^00-$tr2-[0-9a-f]{16}-00$ ]] || fail "traceparent upstream: $tp"
	# W3C Level 2: the random-trace-id flag goes upstream with the trace
	# id, whether the caller set it or the tracer made the id.
	local tr4=22222222222222222222222222222222
	curl -s -o /dev/null -H "traceparent: 00-$tr4-$caller-03" "$URL/random"
	curl -s -o /dev/null "$URL/fresh"
	settle ' /fresh ' 1
	tp=$(sed -n 's|.* /random .* tp=\([^ ]*\) .*|\1|p' "$T/up1/access.log")
	[[ $tp =~ ^00-$tr4-[0-9a-f]{16}-03$ ]] || fail "traceparent upstream: $tp"
	tp=$(sed -n 's|.* /fresh .* tp=\([^ ]*\) .*|\1|p' "$T/up1/access.log")
	[[ $tp =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-03$ ]] || fail "traceparent upstream: $tp"
	# a sampled request after it: once its span is out, so would the other be
	local tr3=11111111111111111111111111111111
	curl -s -o /dev/null -H "traceparent: 00-$tr3-$caller-01" "$URL/marker"
	wait_event "$ERR" ".type == \"span\" and .kind == \"client\" and .trace_id == \"$tr3\"" 10
	assert_equal "$(count_events "$ERR" ".type == \"span\" and .trace_id == \"$tr2\"")" 0
}

@test "metrics on SIGUSR1: requests, errors, latency, ejections and pool size per endpoint" {
	upstream_start 1
	upstream_start 2
	stack -b round-robin --eject-after 0 -e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	fetch_many 10 "$URL/" >"$T/codes"
	fetch_many 4 "$URL/500" >>"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 10
	assert_equal "$(count_status "$T/codes" 500)" 4
	local snap e
	snap=$(snapshot)
	for e in "${UP_ADDR[1]}" "${UP_ADDR[2]}"; do
		assert_equal "$(metric "$snap" gk_client_requests_total "$e")" 7
		assert_equal "$(metric "$snap" gk_client_errors_total "$e")" 2
		assert_equal "$(metric "$snap" gk_client_request_duration_seconds "$e")" 7
		assert_equal "$(metric "$snap" gk_client_ejections_total "$e")" 0
		assert_equal "$(metric "$snap" gk_client_ejected "$e")" 0
		# one curl, one request at a time: one connection to each
		assert_equal "$(metric "$snap" gk_client_connections "$e")" 1
	done
	assert_equal "$(metric "$snap" gk_client_endpoints)" 2
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 2
	assert_equal "$(metric "$snap" gk_client_pool_max)" 1024
	# the pool shrinks when an upstream goes away
	upstream_stop 2
	_pool_empty() {
		[ "$(metric "$(snapshot)" gk_client_connections "${UP_ADDR[2]}")" = 0 ]
	}
	fetch_many 4 "$URL/" >/dev/null
	wait_for -t 10 _pool_empty
}

@test "no endpoint at all: 503 with error {stage: gk-client, reason: no endpoints}" {
	: >"$T/endpoints"
	run bash -c "printf '%s\n' '{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\"}' |
		gk-client --endpoints '$T/endpoints' 2>/dev/null"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" 503
	assert_equal "$(jq -c .error <<<"$output")" '{"stage":"gk-client","reason":"no endpoints"}'
	stack --endpoints "$T/endpoints"
	run curl -s -D "$T/head" "$URL/"
	assert_output --partial "no endpoints"
	grep -qi '^retry-after: 1' "$T/head"
	head -n 1 "$T/head" | grep -q ' 503 '
	assert_equal "$(metric "$(snapshot)" gk_client_no_endpoint_total)" 1
}

@test "the endpoints file replaced by a rename, then rewritten in place, is picked up" {
	upstream_start 1
	upstream_start 2
	echo "${UP_ADDR[1]}" >"$T/endpoints"
	stack --endpoints "$T/endpoints"
	fetch_many 10 "$URL/a" >/dev/null
	settle ' /a ' 10
	assert_equal "$(hits 1 ' /a ')" 10
	# the SmartStack way: write a new file, rename it over the old one
	echo "${UP_ADDR[2]}" >"$T/endpoints.new"
	mv "$T/endpoints.new" "$T/endpoints"
	_moved_to() {
		curl -s -o /dev/null "$URL/probe$1"
		[ "$(hits "$1" " /probe$1 ")" -gt 0 ]
	}
	wait_for -t 10 _moved_to 2
	fetch_many 20 "$URL/b" >/dev/null
	settle ' /b ' 20
	assert_equal "$(hits 2 ' /b ')" 20
	assert_equal "$(hits 1 ' /b ')" 0
	# an editor's way: the same file written again
	echo "${UP_ADDR[1]}" >"$T/endpoints"
	wait_for -t 10 _moved_to 1
	fetch_many 20 "$URL/c" >/dev/null
	settle ' /c ' 20
	assert_equal "$(hits 1 ' /c ')" 20
	assert_equal "$(hits 2 ' /c ')" 0
}

@test "--check takes an upstream whose health check fails out of rotation" {
	upstream_start 1
	upstream_start 2 sick
	stack -b round-robin --check /healthz --check-interval 200ms \
		-e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	wait_event "$ERR" ".msg == \"endpoint check fails\" and .endpoint == \"${UP_ADDR[2]}\"" 10
	fetch_many 20 "$URL/" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 20
	settle ' / ' 20
	assert_equal "$(hits 1 ' / ')" 20
	assert_equal "$(hits 2 ' / ')" 0
	[ "$(hits 2 ' /healthz ')" -ge 1 ]
}

@test "failing checks take no more than --max-ejected of the set out of rotation: with one endpoint, none" {
	upstream_start 1 sick
	upstream_start 2 sick
	stack -b round-robin --check /healthz --check-interval 200ms \
		-e "${UP_ADDR[1]}" -e "${UP_ADDR[2]}"
	wait_event "$ERR" ".msg == \"endpoint check fails\" and .endpoint == \"${UP_ADDR[1]}\"" 10
	wait_event "$ERR" ".msg == \"endpoint check fails\" and .endpoint == \"${UP_ADDR[2]}\"" 10
	# the default 50% of two: one out, the other still serves
	fetch_many 20 "$URL/" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 20
	settle ' / ' 20
	[ "$(hits 1 ' / ')" = 20 ] || [ "$(hits 2 ' / ')" = 20 ] ||
		fail "spread over both: $(hits 1 ' / ') and $(hits 2 ' / ')"
	assert_equal "$(metric "$(snapshot)" gk_client_ejected)" 1
	# one endpoint: none out, whatever its check says
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	start_bg stack1 gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-client "${ENGINE[@]}" --check /healthz --check-interval 200ms -e "${UP_ADDR[1]}"
	wait_http "$URL/healthz" 10
	wait_event "$BATS_TEST_TMPDIR/stack1.err" ".msg == \"endpoint check fails\"" 10
	run curl -s -m 10 "$URL/"
	assert_output "upstream 1"
}

# Debian 12's libcurl 7.88.1 cannot reuse an HTTP/2 connection made with
# prior knowledge (curl issue 10634, fixed in 8.0.0): there gk-client opens
# one per request and says so in a warning; the answers are right either way.
@test "HTTP/2 with prior knowledge to an upstream tagged h2, and to all with --http2" {
	upstream_start 1 h2
	printf '%s 1 h2\n' "${UP_ADDR[1]}" >"$T/endpoints"
	stack --endpoints "$T/endpoints"
	fetch_many 5 "$URL/two" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 5
	settle ' /two ' 5
	assert_equal "$(hits 1 ' /two .*proto=HTTP/2.0')" 5
	# a second stack, every endpoint spoken to in HTTP/2
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	start_bg stack2 gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-client --http2 -e "${UP_ADDR[1]}"
	wait_http "$URL/healthz" 10
	fetch_many 5 "$URL/all" >"$T/codes"
	assert_equal "$(count_status "$T/codes" 200)" 5
	settle ' /all ' 5
	assert_equal "$(hits 1 ' /all .*proto=HTTP/2.0')" 5
}

@test "bad options exit 64 with one line" {
	local bad
	for bad in "--balance fastest -e 127.0.0.1:1" "--retry-on 99 -e 127.0.0.1:1" \
		"--retry-budget 150% -e 127.0.0.1:1" "--eject-time soon -e 127.0.0.1:1" \
		"-b hash -e 127.0.0.1:1" "--resolve gopher:x" "" \
		"-e 127.0.0.1:1 --endpoints /nonexistent/x" "--retries many -e 127.0.0.1:1" \
		"--engine fast -e 127.0.0.1:1" "-e upstream.test:http" "-e 127.0.0.1:0" \
		"--check healthz -e 127.0.0.1:1" "--check /healthz --check-interval 0 -e 127.0.0.1:1"; do
		run bash -c "gk-client $bad 2>&1 >/dev/null </dev/null"
		assert_equal "$status" 64
		assert_equal "${#lines[@]}" 1
		assert_output --partial "gk-client"
	done
}

@test "a 304 with the Content-Length of its representation is answered at once, and its connection reused" {
	odd_start
	stack --try-timeout 3s -e "$ODD_ADDR"
	# RFC 9110 8.6: the length is the representation's; no content follows
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/304cl"
	assert_output 304
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/204"
	assert_output 204
	run curl -s -m 10 "$URL/after"
	assert_output ok
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 1
	assert_equal "$(metric "$snap" gk_client_errors_total)" 0
}

@test "headers the Connection header names are hop-by-hop: not sent upstream, not passed north, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		run curl -s -m 10 -H 'Connection: keep-alive, X-Key' -H 'X-Key: 1' \
			-H 'X-Keep: 2' "$URL/echo"
		assert_success
		assert_equal "$(jq -c '[has("x-key"), .["x-keep"]]' <<<"$output")" '[false,"2"]'
		curl -s -m 10 -D "$T/head" -o /dev/null "$URL/conn"
		! grep -qi '^x-hop:' "$T/head" || fail "$eng: X-Hop, named by Connection, passed north"
		grep -qi '^x-stay: 1' "$T/head" || fail "$eng: X-Stay lost"
	done
}

@test "the request's headers go upstream as they are: no Accept or Content-Type added, an empty one kept, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		# curl's own Accept and form Content-Type suppressed
		run curl -s -m 10 -H 'Accept:' -H 'Content-Type:' -H 'X-Empty;' -d 'a=1' "$URL/echo"
		assert_success
		assert_equal "$(jq -c '[has("accept"), has("content-type"), .["content-length"], .["x-empty"]]' <<<"$output")" \
			'[false,false,"3",""]'
		run curl -s -m 10 -H 'Accept: text/html' -H 'Content-Type: text/plain' -d 'a=1' "$URL/echo"
		assert_equal "$(jq -c '[.accept, .["content-type"]]' <<<"$output")" '["text/html","text/plain"]'
	done
}

@test "a check that outlives --check-interval is not joined by more: a hanging endpoint that recovers passes once, without flapping" {
	upstream_start 1
	odd_start
	# its /healthz answers 5 s late while $ODD_DIR/hang exists: past the
	# check's 2 s, and past ten intervals
	touch "$ODD_DIR/hang"
	stack -b round-robin --check /healthz --check-interval 200ms \
		-e "${UP_ADDR[1]}" -e "$ODD_ADDR"
	wait_event "$ERR" ".msg == \"endpoint check fails\" and .endpoint == \"$ODD_ADDR\"" 10
	rm "$ODD_DIR/hang"
	wait_event "$ERR" ".msg == \"endpoint check passes\" and .endpoint == \"$ODD_ADDR\"" 10
	# checks started while it hung would end in the next 2 s, failed, one
	# by one: wait for 15 more checks (3 s at 200 ms)
	local at
	at=$(grep -c '"/healthz"' "$ODD_DIR/log")
	_checks_after() { [ "$(grep -c '"/healthz"' "$ODD_DIR/log")" -ge $((at + 15)) ]; }
	poll_for -t 20 _checks_after
	assert_equal "$(count_events "$ERR" ".msg == \"endpoint check fails\" and .endpoint == \"$ODD_ADDR\"")" 1
	assert_equal "$(count_events "$ERR" ".msg == \"endpoint check passes\" and .endpoint == \"$ODD_ADDR\"")" 1
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/after"
	assert_output 200
}

@test "the trailer fields of a chunked upstream response are dropped, not merged into its headers, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		run curl -s -m 10 -D "$T/head" "$URL/trailers"
		assert_output hello
		! grep -qi '^x-trail' "$T/head" || fail "$eng: a trailer field became a header"
		run curl -s -m 10 "$URL/after"
		assert_output ok
	done
}

@test "an answer too large for a wire line (16 MiB) is 502 at once, not lost until the deadline" {
	odd_start
	stack --max-response 20M -e "$ODD_ADDR"
	# 13 MB that is not UTF-8: about 17.3 MB of base64
	run curl -s -m 20 -o /dev/null -w '%{http_code}' "$URL/binary/13000000"
	assert_output 502
	# 11 MB: about 14.7 MB, within the line
	run curl -s -m 20 -o "$T/got" -w '%{http_code}' "$URL/binary/11000000"
	assert_output 200
	assert_equal "$(stat -c %s "$T/got")" 11000000
}

@test "an endpoint that does not answer within the request's deadline counts as failing and is ejected, on either engine" {
	upstream_start 1
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		# no --try-timeout: the deadline (gk-listener's --timeout) ends
		# the tries to the endpoint that answers in 3 s.  One stack at a
		# time, named stack (for snapshot), its events in $ERR.
		start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log \
			--timeout 500ms -- gk-client --engine "$eng" -b round-robin --eject-after 2 \
			-e "${UP_ADDR[1]}" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		fetch_many 8 "$URL/slow/3000" >"$T/codes"
		assert_equal "$(count_status "$T/codes" 504)" 2
		assert_equal "$(count_status "$T/codes" 200)" 6
		wait_event "$ERR" ".msg == \"endpoint ejected\" and .endpoint == \"$ODD_ADDR\"" 10
		local snap
		snap=$(snapshot)
		assert_equal "$(metric "$snap" gk_client_errors_total "$ODD_ADDR")" 2
		assert_equal "$(metric "$snap" gk_client_ejections_total "$ODD_ADDR")" 1
		assert_equal "$(metric "$snap" gk_client_request_duration_seconds "$ODD_ADDR")" 2
		kill -TERM -- "-$(bg_pid stack)"
		poll_for -t 10 _not_running "$(bg_pid stack)"
	done
}

@test "a sampled request whose try the deadline cuts short still gets its client span, status error" {
	odd_start
	start_bg stack gk-listener -l "127.0.0.1:$PORT" --no-access-log --timeout 500ms -- \
		gk-tracer -- gk-client "${ENGINE[@]}" -e "$ODD_ADDR"
	wait_http "$URL/healthz" 10
	local tr=4bf92f3577b34da6a3ce929d0e0e4736
	run curl -s -m 10 -o /dev/null -w '%{http_code}' \
		-H "traceparent: 00-$tr-00f067aa0ba902b7-01" "$URL/slow/3000"
	assert_output 504
	wait_event "$ERR" ".type == \"span\" and .kind == \"client\" and .trace_id == \"$tr\"" 10
	local client
	client=$(events "$ERR" "select(.type == \"span\" and .kind == \"client\" and .trace_id == \"$tr\")")
	assert_equal "$(jq -r .status <<<"$client")" error
	assert_equal "$(jq -r '.attrs["url.full"]' <<<"$client")" "http://$ODD_ADDR/slow/3000"
	assert_equal "$(jq -r '.attrs | has("http.response.status_code")' <<<"$client")" false
}

@test "an upstream header folded over two lines (obs-fold) is unfolded with a space, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		run curl -s -m 10 -D "$T/head" -o /dev/null -w '%{http_code}' "$URL/fold"
		assert_output 200
		grep -qi '^x-fold: one two: 2' "$T/head" || fail "$eng: $(cat "$T/head")"
		grep -qi '^x-after: 1' "$T/head" || fail "$eng: X-After lost"
	done
}

@test "http_proxy in the environment is ignored by requests and health checks alike" {
	upstream_start 1
	# a proxy that refuses: whatever went through it would fail
	local dead
	dead=$(free_port)
	start_bg stack env http_proxy="http://127.0.0.1:$dead" \
		gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-client "${ENGINE[@]}" --check /healthz --check-interval 200ms -e "${UP_ADDR[1]}"
	wait_http "$URL/healthz" 10
	_checked() { [ "$(hits 1 ' /healthz ')" -ge 3 ]; }
	poll_for -t 10 _checked
	run curl -s -m 10 "$URL/"
	assert_output "upstream 1"
	assert_equal "$(count_events "$ERR" '.msg == "endpoint check fails"')" 0
}

@test "OPTIONS * goes upstream as OPTIONS *, and a wire path without its slash gets one, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		PORT=$(free_port)
		URL="http://127.0.0.1:$PORT"
		start_bg "stack_$eng" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
			gk-client --engine "$eng" -e "$ODD_ADDR"
		wait_http "$URL/healthz" 10
		run curl -s -m 10 -o /dev/null -w '%{http_code}' -X OPTIONS --request-target '*' "$URL/"
		assert_output 200
		assert_equal "$(tail -n 1 "$ODD_DIR/log" | jq -c '[.method, .path]')" '["OPTIONS","*"]'
		run bash -c "echo '{\"id\":\"1\",\"method\":\"GET\",\"path\":\"nos\",\"query\":\"a=1\"}' |
			gk-client --engine $eng -e $ODD_ADDR 2>/dev/null"
		assert_equal "$(jq .status <<<"$output")" 200
		assert_equal "$(tail -n 1 "$ODD_DIR/log" | jq -c '[.method, .path]')" '["GET","/nos?a=1"]'
	done
}

# engine_stack ENGINE NAME [GK-CLIENT OPTIONS...]: a stack of its own on a
# new port (PORT and URL set), gk-client on the engine given.
engine_stack() {
	local eng=$1 name=$2
	shift 2
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	start_bg "$name" gk-listener -l "127.0.0.1:$PORT" --no-access-log -- \
		gk-client --engine "$eng" "$@"
	wait_http "$URL/healthz" 10
}

@test "HEAD and 304 answers carry the upstream's Content-Length, as the GET's would, on either engine" {
	upstream_start 1
	odd_start
	local eng get
	# what nginx itself says to a GET and to a HEAD of /
	get=$(curl -s -o /dev/null -w '%header{content-length}' "http://${UP_ADDR[1]}/")
	assert_equal "$get" 11
	assert_equal "$(curl -s -I -o /dev/null -w '%header{content-length}' "http://${UP_ADDR[1]}/")" 11
	for eng in native curl; do
		engine_stack "$eng" "stack_$eng" -e "${UP_ADDR[1]}"
		assert_equal "$(curl -s -m 10 -o /dev/null -w '%header{content-length}' "$URL/")" "$get"
		run curl -s -m 10 -I -o /dev/null -w '%{http_code} %header{content-length}' "$URL/"
		assert_output "200 $get"
		# the connection is still in step: the next GET is answered whole
		run curl -s -m 10 "$URL/"
		assert_output "upstream 1"
		# a 304 states the length of its representation (RFC 9110 8.6)
		engine_stack "$eng" "odd_$eng" -e "$ODD_ADDR"
		run curl -s -m 10 -o /dev/null -w '%{http_code} %header{content-length}' "$URL/304cl"
		assert_output "304 5"
	done
}

@test "requests go upstream with Via: 1.1 gokit, after the Via they came with; X-Forwarded-For passes untouched, on either engine" {
	odd_start
	local eng
	# via PATH: the Via field lines the upstream got for PATH, as a JSON array
	via() {
		grep -F "\"path\": \"$1\"" "$ODD_DIR/log" | tail -n 1 |
			jq -c '[.headers[] | select(.[0] == "via") | .[1]]'
	}
	for eng in native curl; do
		engine_stack "$eng" "stack_$eng" -e "$ODD_ADDR"
		run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/v1-$eng"
		assert_output 200
		assert_equal "$(via "/v1-$eng")" '["1.1 gokit"]'
		# one Via line: the client's, then ours (RFC 9110 7.6.3)
		curl -s -m 10 -o /dev/null -H 'Via: 1.0 fred, 1.1 p.example' "$URL/v2-$eng"
		assert_equal "$(via "/v2-$eng")" '["1.0 fred, 1.1 p.example, 1.1 gokit"]'
		curl -s -m 10 -o /dev/null -H 'Via: 1.0 a' -H 'Via: 1.1 b' -d 'x=1' "$URL/v3-$eng"
		assert_equal "$(via "/v3-$eng")" '["1.0 a, 1.1 b, 1.1 gokit"]'
		# X-Forwarded-For is the client's, as sent: gk-client adds nothing
		curl -s -m 10 -o /dev/null -H 'X-Forwarded-For: 192.0.2.1' "$URL/x-$eng"
		assert_equal "$(grep -F "\"/x-$eng\"" "$ODD_DIR/log" | tail -n 1 |
			jq -c '[.headers[] | select(.[0] == "x-forwarded-for") | .[1]]')" '["192.0.2.1"]'
	done
	# --via names this proxy otherwise
	engine_stack curl stack_named --via edge-7 -e "$ODD_ADDR"
	curl -s -m 10 -o /dev/null -H 'Via: 1.0 fred' "$URL/v4"
	assert_equal "$(via /v4)" '["1.0 fred, 1.1 edge-7"]'
	local bad
	for bad in "--via ''" "--via 'a b'" "--via a,b"; do
		run bash -c "gk-client $bad -e 127.0.0.1:1 2>&1 >/dev/null </dev/null"
		assert_equal "$status" 64
		assert_equal "${#lines[@]}" 1
		assert_output --partial "gk-client: usage: bad --via"
	done
}

# _no_close_wait N: no socket to nginx N is left in CLOSE_WAIT (its peer,
# nginx, closed it; ours was not closed).
_no_close_wait() {
	[ -z "$(ss -Htn state close-wait "( dport = :${UP_PORT[$1]} )")" ]
}

@test "an idle connection the upstream closes is closed on our side at once, not left in CLOSE_WAIT, on either engine" {
	upstream_start 1
	local eng
	for eng in native curl; do
		engine_stack "$eng" "stack_$eng" -e "${UP_ADDR[1]}"
		run curl -s -m 10 "$URL/brief"
		assert_output "brief 1"
		# nginx ends the idle connection after 300 ms (/brief's keepalive_timeout)
		poll_for -t 10 _upstream_closed 1
		poll_for -t 5 _no_close_wait 1 || fail "$eng: a socket stays in CLOSE_WAIT"
		# and the next request is answered, on a new connection, sent once
		run curl -s -m 10 "$URL/brief"
		assert_output "brief 1"
	done
	settle ' /brief ' 4
	assert_equal "$(hits 1 'GET /brief')" 4
	# the curl engine's stack, again after nginx closed: its pool gauge is 0
	# at once (a connection gone is not counted while libcurl still holds
	# the descriptor), and two connections were opened in all
	ERR="$T/stack_curl.err"
	client_pid() { pgrep -x gk-client -s "$(bg_pid stack_curl)" | head -n 1; }
	poll_for -t 10 _upstream_closed 1
	poll_for -t 5 _no_close_wait 1 || fail "curl: a socket stays in CLOSE_WAIT after the second"
	local snap
	snap=$(snapshot)
	assert_equal "$(metric "$snap" gk_client_connections "${UP_ADDR[1]}")" 0
	assert_equal "$(metric "$snap" gk_client_connections_opened_total)" 2
	assert_equal "$(metric "$snap" gk_client_errors_total)" 0
}

@test "a 1xx answer has no content whatever its Content-Length says: the final answer follows it, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		engine_stack "$eng" "stack_$eng" -e "$ODD_ADDR"
		run curl -s -m 10 -D "$T/head" -w ' %{http_code}' "$URL/early"
		assert_output "ok
 200"
		! grep -qi '^link:' "$T/head" || fail "$eng: a header of the 103 passed north"
		run curl -s -m 10 "$URL/after"
		assert_output ok
	done
}

@test "an upstream status that is not 100-599 (two digits, 600 and more) is a bad answer: 502, counted as an error" {
	odd_start
	local st
	stack --try-timeout 3s -e "$ODD_ADDR"
	for st in 20 0 600 999; do
		run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/status/$st"
		assert_output 502
	done
	run curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/status/299"
	assert_output 299
	assert_equal "$(metric "$(snapshot)" gk_client_errors_total)" 4
}

@test "a request with thousands of headers and Connection options costs gk-client milliseconds, not seconds" {
	# Each header was checked against the whole Connection list: a wire
	# line from north (up to 16 MiB) with 20000 of each took seconds of
	# the loop every other request waits on.  gk-client on stdin, its CPU
	# time read back by python.
	[ -z "${GK_SANITIZED:-}" ] || skip "timing under sanitizers"
	odd_start
	run python3 - "$ODD_ADDR" "${ENGINE[@]}" <<'PY'
import json, resource, subprocess, sys
opts = ",".join("o%d" % i for i in range(20000))
headers = {"host": "x", "connection": "close, " + opts, "o7": "dropped"}
headers.update(("h%d" % i, "1") for i in range(20000))
line = json.dumps({"id": "1", "method": "GET", "path": "/", "headers": headers})
p = subprocess.run(["gk-client", *sys.argv[2:], "-e", sys.argv[1]],
                   input=(line + "\n").encode(), capture_output=True, timeout=60)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.loads(p.stdout)["status"], "slow" if ru.ru_utime + ru.ru_stime > 1 else "fast")
PY
	assert_output "200 fast"
	# The named header stayed here; the others went on.
	run jq -c '[.headers[] | select(.[0] == "h19999" or .[0] == "o7") | .[0]]' "$ODD_DIR/log"
	assert_output '["h19999"]'
}

@test "an answer with thousands of distinct headers and Connection options costs gk-client milliseconds, not seconds" {
	[ -z "${GK_SANITIZED:-}" ] || skip "timing under sanitizers"
	odd_start
	stack -e "$ODD_ADDR"
	run curl -s -m 10 -D "$T/head" "$URL/many"
	assert_output ok
	grep -qi '^h5999: 1' "$T/head" || fail "h5999 lost"
	local pid t0 t1
	pid=$(client_pid)
	t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	for _ in 1 2 3 4 5; do
		curl -s -m 20 -o /dev/null "$URL/many"
	done
	t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	# ticks of 10 ms: five answers in well under a second
	[ $((t1 - t0)) -lt 50 ] || fail "gk-client used $((t1 - t0)) ticks"
}

# notify_listener: a NOTIFY_SOCKET ($NOTIFY) that appends each message it
# receives to $NOTES, a line each, as systemd would read them.
notify_listener() {
	NOTIFY="$T/notify.sock"
	NOTES="$T/notify.out"
	start_bg notify python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
open(sys.argv[2] + ".ready", "w").close()
while True:
    for line in s.recv(65536).decode(errors="replace").split("\n"):
        if line:
            out.write(line + "\n")
' "$NOTIFY" "$NOTES"
	poll_for -t 10 test -e "$NOTES.ready"
}

@test "with a source that has no set yet, gk-client says READY and reads requests only once the first set comes: a request sent before is answered 200, not 503" {
	upstream_start 1
	notify_listener
	mkfifo "$T/in"
	# gk-resolver -o writes the file later (not there at start)
	start_bg_in "$T/in" client env NOTIFY_SOCKET="$NOTIFY" \
		gk-client "${ENGINE[@]}" --resolve "file:$T/eps"
	exec 7>"$T/in"
	echo '{"id":"1","method":"GET","path":"/early"}' >&7
	wait_event "$T/client.err" '.msg == "resolver source failed"'
	! grep -q READY "$NOTES" || fail "READY=1 before any set"
	[ ! -s "$T/client.out" ] || fail "answered before any set: $(cat "$T/client.out")"
	gk-resolver -o "$T/eps" "static:${UP_ADDR[1]}"
	wait_file "$T/client.out"
	assert_equal "$(jq -c '[.id, .status]' "$T/client.out")" '["1",200]'
	grep -qx 'READY=1' "$NOTES"
	exec 7>&-
	wait_exit client
	assert_equal "$BG_STATUS" 0
	assert_equal "$(count_events "$T/client.err" '.msg == "no endpoints yet: serving without them"')" 0
}

@test "a source that gives no set within --wait-endpoints: gk-client starts anyway, says so, answers 503 and counts it" {
	notify_listener
	mkfifo "$T/in"
	start_bg_in "$T/in" client env NOTIFY_SOCKET="$NOTIFY" \
		gk-client "${ENGINE[@]}" --wait-endpoints 200ms --resolve "file:$T/eps"
	exec 7>"$T/in"
	echo '{"id":"1","method":"GET","path":"/"}' >&7
	wait_file "$T/client.out"
	assert_equal "$(jq -c '[.status, .error.reason]' "$T/client.out")" '[503,"no endpoints"]'
	grep -qx 'READY=1' "$NOTES"
	exec 7>&-
	wait_exit client
	assert_equal "$(count_events "$T/client.err" '.msg == "no endpoints yet: serving without them"')" 1
	assert_equal "$(events "$T/client.err" 'select(.type == "metrics") | .metrics[] |
		select(.name == "gk_client_start_wait_expired_total") | .series[0].value' | tail -n 1)" 1
	# an empty set is the source's answer: served at once, no wait
	: >"$T/empty"
	run bash -c "echo '{\"id\":\"2\",\"method\":\"GET\",\"path\":\"/\"}' |
		gk-client --wait-endpoints 60s --endpoints '$T/empty' 2>/dev/null"
	assert_equal "$(jq -r .status <<<"$output")" 503
}

# _no_close_wait_to PORT: no socket to PORT is left in CLOSE_WAIT.
_no_close_wait_to() {
	[ -z "$(ss -Htn state close-wait "( dport = :$1 )")" ]
}

@test "an idle connection on which the upstream sends stray bytes, then closes, is closed on our side, not left in CLOSE_WAIT, on either engine" {
	odd_start
	local eng port
	port=${ODD_ADDR##*:}
	for eng in native curl; do
		rm -f "$ODD_DIR/stray-closed"
		engine_stack "$eng" "stack_$eng" -e "$ODD_ADDR"
		run curl -s -m 10 "$URL/stray"
		assert_output ok
		# the upstream wrote a 408 on the idle connection, then closed it
		wait_file "$ODD_DIR/stray-closed"
		poll_for -t 5 _no_close_wait_to "$port" ||
			fail "$eng: $(ss -Htn state close-wait "( dport = :$port )")"
		# the next request goes on a new connection, answered
		run curl -s -m 10 "$URL/after-$eng"
		assert_output ok
	done
	assert_equal "$(grep -c '"/after-' "$ODD_DIR/log")" 2
}

@test "a wire request whose method or header would split or bend the request upstream is answered 400 and not sent, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		: >"$ODD_DIR/log"
		run bash -c "gk-client --engine $eng -e $ODD_ADDR 2>/dev/null" <<-'EOF2'
			{"id":"m","method":"GET /x HTTP/1.1\r\nX-Inj: 1\r\n\r\nDELETE","path":"/m"}
			{"id":"v","method":"GET","path":"/v","headers":{"x-v":"a\r\nX-Evil: 1"}}
			{"id":"n","method":"GET","path":"/n","headers":{"transfer-encoding ":"chunked"}}
			{"id":"e","method":"GET","path":"/e","headers":{"":"1"}}
			{"id":"a","method":"GET","path":"/a","headers":{"x-a":["1","b\nc"]}}
			{"id":"ok","method":"GET","path":"/ok","headers":{"x-ok":"tab\tok"}}
		EOF2
		assert_success
		assert_equal "$(jq -c -s 'sort_by(.id) | map([.id, .status])' <<<"$output")" \
			'[["a",400],["e",400],["m",400],["n",400],["ok",200],["v",400]]'
		assert_equal "$(jq -r -s 'map(.error.reason // empty) | unique | join(",")' <<<"$output")" \
			"control character in header value,header name is not a token,method is not a token"
		# only the good one reached the upstream
		assert_equal "$(jq -c -s 'map(.path)' "$ODD_DIR/log")" '["/ok"]'
	done
}

@test "the request target goes upstream as the wire gave it on either engine: what HTTP cannot carry percent-encoded, dot segments kept, a '#' not taken for a fragment" {
	odd_start
	local eng
	for eng in native curl; do
		: >"$ODD_DIR/log"
		run bash -c "gk-client --engine $eng -e $ODD_ADDR 2>/dev/null" <<-'EOF2'
			{"id":"1","method":"GET","path":"/a b"}
			{"id":"2","method":"GET","path":"/c\r\nX-Evil: 1"}
			{"id":"3","method":"GET","path":"/d#frag","query":"q=1"}
			{"id":"4","method":"GET","path":"/e","query":"x=1 2#f"}
			{"id":"5","method":"GET","path":"/h/../../i"}
			{"id":"6","method":"GET","path":"/\u00e9"}
		EOF2
		assert_success
		assert_equal "$(jq -c -s 'map(.status) | unique' <<<"$output")" '[200]'
		assert_equal "$(jq -c -s 'map(.path) | sort' "$ODD_DIR/log")" \
			'["/%C3%A9","/a%20b","/c%0D%0AX-Evil:%201","/d%23frag?q=1","/e?x=1%202%23f","/h/../../i"]'
	done
}

@test "an answer whose Content-Length is past --max-response, or past any number, is 502 at once on either engine, not waited for until the deadline" {
	odd_start
	local eng
	for eng in native curl; do
		# no deadline: a try that waited for the body would never end
		run timeout 10 bash -c "gk-client --engine $eng --max-response 1m -e $ODD_ADDR 2>/dev/null" <<-'EOF2'
			{"id":"huge","method":"GET","path":"/cl/99999999999999999999"}
			{"id":"big","method":"GET","path":"/cl/2000000"}
			{"id":"fits","method":"GET","path":"/cl/2"}
			{"id":"head","method":"HEAD","path":"/cl/2000000"}
		EOF2
		assert_success
		assert_equal "$(jq -c -s 'sort_by(.id) | map([.id, .status])' <<<"$output")" \
			'[["big",502],["fits",200],["head",200],["huge",502]]'
		assert_equal "$(jq -r -s 'map(select(.id == "big") | .error.reason)[]' <<<"$output")" \
			"upstream response too large"
	done
}

@test "an upstream answer with a header no valid answer has (a name with a space, a control byte, two lengths, a length and chunked) is 502, counted as an error, on either engine" {
	odd_start
	local eng
	for eng in native curl; do
		run bash -c "gk-client --engine $eng --eject-after 0 -e $ODD_ADDR 2>'$T/err.$eng'" <<-'EOF2'
			{"id":"name","method":"GET","path":"/bad/name"}
			{"id":"ctl","method":"GET","path":"/bad/ctl"}
			{"id":"dupcl","method":"GET","path":"/bad/dupcl"}
			{"id":"tecl","method":"GET","path":"/bad/tecl"}
			{"id":"ok","method":"GET","path":"/ok"}
		EOF2
		assert_success
		assert_equal "$(jq -c -s 'sort_by(.id) | map([.id, .status, .error.reason])' <<<"$output")" \
			'[["ctl",502,"invalid upstream response"],["dupcl",502,"invalid upstream response"],["name",502,"invalid upstream response"],["ok",200,null],["tecl",502,"invalid upstream response"]]'
		assert_equal "$(events "$T/err.$eng" 'select(.type == "metrics") | .metrics[] |
			select(.name == "gk_client_errors_total") | .series[].value' | tail -n 1)" 4
	done
}

@test "with --try-timeout shorter than what is left of the deadline, x-gk-timeout-ms upstream is the try's, on either engine" {
	upstream_start 1
	local eng t
	for eng in native curl; do
		engine_stack "$eng" "stack_$eng" --try-timeout 400ms -e "${UP_ADDR[1]}"
		# gk-listener's deadline: 30 s; the try gives up after 400 ms
		run curl -s -o /dev/null -w '%{http_code}' "$URL/tt-$eng"
		assert_output 200
		settle " /tt-$eng " 1
		t=$(sed -n "s|.* /tt-$eng .* t=\\([0-9]*\\) .*|\\1|p" "$T/up1/access.log")
		[ -n "$t" ] && [ "$t" -gt 0 ] && [ "$t" -le 400 ] || fail "$eng: x-gk-timeout-ms upstream: '$t'"
	done
	# no deadline at all (gk-client on stdin): the try's alone
	run bash -c "echo '{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/tt-stdin\"}' |
		gk-client --try-timeout 400ms -e ${UP_ADDR[1]} 2>/dev/null"
	assert_equal "$(jq .status <<<"$output")" 200
	settle " /tt-stdin " 1
	t=$(sed -n "s|.* /tt-stdin .* t=\\([0-9]*\\) .*|\\1|p" "$T/up1/access.log")
	assert_equal "$t" 400
}

# _no_conn_to PORT: no established connection of ours to PORT.
_no_conn_to() {
	[ -z "$(ss -Htn state established "( dport = :$1 )")" ]
}

@test "an endpoint that leaves the set has its idle connections closed at once, on either engine" {
	upstream_start 1
	local eng
	for eng in native curl; do
		printf '%s\n' "${UP_ADDR[1]}" >"$T/eps-$eng"
		engine_stack "$eng" "stack_$eng" --endpoints "$T/eps-$eng"
		run curl -s -m 10 "$URL/kept-$eng"
		assert_output "upstream 1"
		# idle in the pool now (nginx keeps it 60 s)
		! _no_conn_to "${UP_PORT[1]}" || fail "$eng: no pooled connection"
		: >"$T/eps-$eng.new"
		mv "$T/eps-$eng.new" "$T/eps-$eng"
		poll_for -t 5 _no_conn_to "${UP_PORT[1]}" ||
			fail "$eng: $(ss -Htn state established "( dport = :${UP_PORT[1]} )")"
		kill -TERM -- "-$(bg_pid "stack_$eng")"
		poll_for -t 10 _not_running "$(bg_pid "stack_$eng")"
	done
}
