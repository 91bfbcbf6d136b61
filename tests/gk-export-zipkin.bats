#!/usr/bin/env bats
# gk-export-zipkin: span events to Zipkin as v2 JSON.
#
# Debian packages no Zipkin server, so these tests run against the
# documented wire format instead: tests/helpers/http-sink.py records every
# request (method, path, headers, body) and answers a scripted sequence of
# statuses, and jq checks the bodies against zipkin-api's zipkin2-api.yaml
# (POST /api/v2/spans, a JSON array of spans: lowercase hex ids, timestamp
# and duration in microseconds as numbers, kind SERVER/CLIENT/...,
# localEndpoint.serviceName, tags a map of strings).

load helpers/common
load helpers/http-sink

TRACE=4bf92f3577b34da6a3ce929d0e0e4736
PARENT=00f067aa0ba902b7

setup() {
	common_setup
	export PATH="$GK_BUILD/exporters:$PATH"
	EV="$T/events"
}

teardown() {
	stop_all
}

# spans N: N span events of one trace, span ids 1..N (16 hex digits).
spans() {
	local i
	for ((i = 1; i <= $1; i++)); do
		printf '{"ts":"2026-12-04T09:30:00.%06dZ","type":"span","proc":"gk-tracer","pid":4242,"svc":"orders","trace_id":"%s","span_id":"%016x","parent_id":"%s","name":"GET /items","kind":"server","start_us":%d,"duration_us":250,"status":"ok","attrs":{"http.request.method":"GET","http.response.status_code":200}}\n' \
			"$i" "$TRACE" "$i" "$PARENT" "$((1796376600000000 + i))"
	done
}

# the ids of the spans in the arrays on stdin, one a line
span_ids() {
	jq -r '.[].id'
}

# ids DIR [SELECT]: the span ids delivered, comma-separated, in order
ids() {
	sink_bodies "$1" "${2:-.status == 200}" | span_ids | paste -sd,
}

@test "--help and --version answer on stdout; a bad option is a one-line usage error, exit 64" {
	run gk-export-zipkin --help
	assert_success
	assert_output --partial "usage: gk-export-zipkin"
	run gk-export-zipkin --version
	assert_success
	assert_output --regexp '^gk-export-zipkin [0-9]'
	run gk-export-zipkin --batch-records 0 http://127.0.0.1:1
	assert_failure 64
	assert_output "gk-export-zipkin: usage: bad --batch-records: 0 (expected a whole number from 1 to 1000000)"
	run gk-export-zipkin http://127.0.0.1:1 extra
	assert_failure 64
	assert_output --partial "unexpected argument: extra"
}

@test "a real gk-listener + gk-tracer stack: the span of a curl request arrives at /api/v2/spans as a Zipkin v2 SERVER span" {
	start_sink sink
	PORT=$(free_port)
	start_bg stack env GK_SERVICE=orders bash -c "gk-listener -l 127.0.0.1:$PORT -- \
		gk-tracer --sample 1 -- hello 2>&1 >/dev/null |
		gk-exporter zipkin --batch-interval 100ms http://127.0.0.1:$SINK_PORT"
	wait_http "http://127.0.0.1:$PORT/" 10
	run curl -sS -m 10 -H "traceparent: 00-$TRACE-$PARENT-01" \
		"http://127.0.0.1:$PORT/hello"
	assert_output "hello"
	wait_for -t 20 grep -q "$TRACE" "$SINK_DIR"/0001.json
	run sink_count "$SINK_DIR" '.path == "/api/v2/spans" and .method == "POST" and
		.headers["content-type"] == "application/json"'
	assert_output 1
	jq -c '.[] | select(.traceId == "'$TRACE'")' "$SINK_DIR/0001.json" >"$T/span"
	run jq -s length "$T/span"
	assert_output 1
	run jq -r '[.traceId, .parentId, (.id | test("^[0-9a-f]{16}$")), .kind, .name,
		(.timestamp | type), (.timestamp > 1000000000000000), (.duration | type),
		(.duration >= 1), .localEndpoint.serviceName, .remoteEndpoint.ipv4,
		(.tags | map_values(type) | to_entries | map(.value) | unique | join(",")),
		.tags["http.request.method"], .tags["http.response.status_code"],
		.tags["url.path"]] | @tsv' "$T/span"
	assert_output "$TRACE	$PARENT	true	SERVER	GET /hello	number	true	number	true	orders	127.0.0.1	string	GET	200	/hello"
}

@test "only spans go to Zipkin: logs and metrics are passed over and counted" {
	start_sink sink
	{
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"log","level":"info","proc":"a","pid":1,"msg":"hi"}'
		spans 1
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"metrics","proc":"a","pid":1,"seq":1,"part":1,"parts":1,"metrics":[]}'
	} >"$EV"
	run_plugin "$EV" gk-export-zipkin --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" 'true'
	assert_output 1
	run jq -c 'map(.id)' "$SINK_DIR/0001.json"
	assert_output '["0000000000000001"]'
	[ "$(plugin_metric "$T/plugin.err" gk_export_zipkin_skipped_total)" = 2 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 1 ]
}

@test "503 with Retry-After and 429, then 200: each span is delivered exactly once, in order" {
	start_sink sink --statuses 503:1,200,429:1,200
	spans 6 >"$EV"
	run_plugin "$EV" env GK_EXPORT_DRAIN_TIMEOUT=30s gk-export-zipkin \
		--batch-records 2 "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" '.path == "/api/v2/spans"'
	assert_output 5
	run ids "$SINK_DIR"
	assert_output "0000000000000001,0000000000000002,0000000000000003,0000000000000004,0000000000000005,0000000000000006"
	cmp "$SINK_DIR/0001.body" "$SINK_DIR/0002.body"
	cmp "$SINK_DIR/0003.body" "$SINK_DIR/0004.body"
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 6 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 0 ]
}

@test "400 drops its batch without a retry, counts its spans dropped and logs an error; the next batch is sent" {
	start_sink sink --statuses 400,200
	spans 4 >"$EV"
	run_plugin "$EV" gk-export-zipkin --batch-records 2 "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" 'true'
	assert_output 2
	run ids "$SINK_DIR"
	assert_output "0000000000000003,0000000000000004"
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 2 ]
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "batch rejected: dropped" and .status == 400 and .records == 2')" = 1 ]
}

@test "Zipkin down at start, then up: the spans queued meanwhile all arrive, once each, in order" {
	SINK_PORT=$(free_port)
	spans 5 >"$EV"
	start_bg plugin bash -c "cat '$EV' | GK_EXPORT_DRAIN_TIMEOUT=40s GK_EVENTS_FORMAT=json \
		gk-export-zipkin --retry-min 100ms --retry-max 300ms \
		--batch-records 2 http://127.0.0.1:$SINK_PORT/api/v2/spans"
	wait_event "$T/plugin.err" '.msg == "batch not accepted: retrying" and (.error | test("onnect"))' 20
	start_sink sink --port "$SINK_PORT"
	wait_exit plugin 40
	[ "$BG_STATUS" = 0 ]
	# The full URL was taken as it is.
	run sink_count "$SINK_DIR" '.path != "/api/v2/spans"'
	assert_output 0
	run ids "$SINK_DIR"
	assert_output "0000000000000001,0000000000000002,0000000000000003,0000000000000004,0000000000000005"
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 5 ]
}

@test "--gzip bodies carry Content-Encoding: gzip and decompress to a JSON array of spans; --header is sent" {
	start_sink sink
	spans 3 >"$EV"
	run_plugin "$EV" gk-export-zipkin -z -H "Authorization=Basic eDp5" \
		--batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" '.headers["content-encoding"] == "gzip" and
		.headers["authorization"] == "Basic eDp5" and (has("gzip_error") | not)'
	assert_output 1
	[ "$(head -c 2 "$SINK_DIR/0001.body" | od -An -tx1 | tr -d ' ')" = 1f8b ]
	run jq -r 'type' "$SINK_DIR/0001.json"
	assert_output array
	run ids "$SINK_DIR"
	assert_output "0000000000000001,0000000000000002,0000000000000003"
}

@test "a client span's remoteEndpoint is its server (server.address, server.port as gk-client writes them), a server span's its client" {
	start_sink sink
	# The members and attrs of gk-client's span (lib/client.c), and of
	# gk-tracer's server span.
	{
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"span","proc":"gk-client","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000c1","parent_id":"'$PARENT'","name":"GET","kind":"client","start_us":1796376600000000,"duration_us":5,"status":"ok","attrs":{"http.request.method":"GET","url.full":"http://127.0.0.2:8080/x","server.address":"127.0.0.2","server.port":8080,"http.response.status_code":200}}'
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"span","proc":"gk-client","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000c2","parent_id":"'$PARENT'","name":"GET","kind":"client","start_us":1796376600000000,"duration_us":5,"status":"ok","attrs":{"server.address":"[::1]","server.port":8081,"client.address":"127.0.0.9"}}'
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"span","proc":"gk-tracer","pid":4,"trace_id":"'$TRACE'","span_id":"00000000000000c3","name":"GET /x","kind":"server","start_us":1796376600000000,"duration_us":9,"status":"ok","attrs":{"client.address":"127.0.0.3","client.port":40000,"server.address":"127.0.0.4"}}'
	} >"$EV"
	run_plugin "$EV" gk-export-zipkin --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run jq -c '.[] | [.id, .kind, .remoteEndpoint]' "$SINK_DIR/0001.json"
	assert_output '["00000000000000c1","CLIENT",{"ipv4":"127.0.0.2","port":8080}]
["00000000000000c2","CLIENT",{"ipv6":"::1","port":8081}]
["00000000000000c3","SERVER",{"ipv4":"127.0.0.3","port":40000}]'
}

@test "a failed span carries Zipkin's error tag and otel.status_code ERROR, an ok one with an error attribute of false none; a span with a bad id is dropped with an error naming why" {
	start_sink sink
	{
		echo '{"ts":"2026-12-04T09:30:00.000001Z","type":"span","proc":"gk-tracer","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000aa","name":"GET /x","kind":"client","start_us":1796376600000000,"duration_us":0,"status":"error","attrs":{"error.type":"client_gone","retries":2,"cached":false}}'
		echo '{"type":"span","proc":"x","pid":1,"trace_id":"'$TRACE'","span_id":"xyz","start_us":1}'
		# ok spans whose "error" attribute says false: Zipkin reads an
		# error tag's presence as a failure, so none is written
		echo '{"type":"span","proc":"gk-tracer","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000bb","name":"GET /y","start_us":1796376600000000,"duration_us":5,"status":"ok","attrs":{"error":false,"n":1}}'
		echo '{"type":"span","proc":"gk-tracer","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000cc","name":"GET /z","start_us":1796376600000000,"duration_us":5,"status":"ok","attrs":{"error":"false"}}'
		# a failed span with "error": false is still failed, once
		echo '{"type":"span","proc":"gk-tracer","pid":3,"trace_id":"'$TRACE'","span_id":"00000000000000dd","name":"GET /w","start_us":1796376600000000,"duration_us":5,"status":"error","attrs":{"error":false}}'
	} >"$EV"
	run_plugin "$EV" gk-export-zipkin --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run jq -c '.[] | [.id, .kind, .duration, .localEndpoint.serviceName, .tags]' "$SINK_DIR/0001.json"
	assert_output - <<-'EOF'
	["00000000000000aa","CLIENT",1,"gk-tracer",{"error.type":"client_gone","retries":"2","cached":"false","otel.status_code":"ERROR","error":"client_gone"}]
	["00000000000000bb",null,5,"gk-tracer",{"n":"1"}]
	["00000000000000cc",null,5,"gk-tracer",{}]
	["00000000000000dd",null,5,"gk-tracer",{"otel.status_code":"ERROR","error":"error"}]
	EOF
	[ "$(count_events "$T/plugin.err" '.level == "error" and .reason == "span_id is not 16 hexadecimal digits"')" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 1 ]
}
