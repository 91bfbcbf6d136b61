#!/usr/bin/env bats
# gk-export-otlp: events to an OpenTelemetry collector over OTLP/HTTP JSON.
#
# Debian packages no OpenTelemetry collector, so these tests run against the
# documented wire format instead: tests/helpers/http-sink.py records every
# request (method, path, headers, body) and answers a scripted sequence of
# statuses, and jq checks the bodies against the field names and types of
# the OTLP specification's JSON mapping (opentelemetry-proto, "JSON Protobuf
# Encoding": lowerCamelCase names, hex ids, 64-bit integers as decimal
# strings, enums as numbers).

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

# _sink_has DIR TEXT: a body recorded in DIR holds TEXT
_sink_has() {
	grep -qsF -- "$2" "$1"/*.json
}

# the span ids of the spans in the bodies on stdin, one a line
span_ids() {
	jq -r '.resourceSpans[].scopeSpans[].spans[].spanId'
}

@test "--help and --version answer on stdout; a bad option is a one-line usage error, exit 64" {
	run gk-export-otlp --help
	assert_success
	assert_output --partial "usage: gk-export-otlp"
	run gk-export-otlp --version
	assert_success
	assert_output --regexp '^gk-export-otlp [0-9]'
	run gk-export-otlp --batch-interval soon http://127.0.0.1:1
	assert_failure 64
	assert_output "gk-export-otlp: usage: bad --batch-interval: soon (expected a duration above 0: 250ms, 2s, 1m)"
	# a bound above 1 is named
	run gk-export-otlp --max-queue 1k http://127.0.0.1:1
	assert_failure 64
	assert_output "gk-export-otlp: usage: bad --max-queue: 1k (expected a size of at least 4096 bytes: 16k, 1m, bytes)"
	run gk-export-otlp --header 'no equals sign' http://127.0.0.1:1
	assert_failure 64
	assert_output --partial "bad --header"
	run gk-export-otlp ftp://127.0.0.1:1
	assert_failure 64
	assert_output --partial "bad URL: ftp://127.0.0.1:1"
}

@test "a real gk-listener + gk-tracer stack: the span of a curl request arrives at /v1/traces with its trace id, kind 2 and the OTel attributes" {
	start_sink sink
	PORT=$(free_port)
	# The stack's events (its stderr) piped through the plugin, as a user
	# runs it; gk-exporter finds the plugin beside itself in the build.
	start_bg stack env GK_SERVICE=orders bash -c "gk-listener -l 127.0.0.1:$PORT -- \
		gk-tracer --sample 1 -- hello 2>&1 >/dev/null |
		gk-exporter otlp --batch-interval 100ms http://127.0.0.1:$SINK_PORT"
	wait_http "http://127.0.0.1:$PORT/" 10
	run curl -sS -m 10 -H "traceparent: 00-$TRACE-$PARENT-01" \
		"http://127.0.0.1:$PORT/hello"
	assert_success
	assert_output "hello"
	wait_sink "$SINK_DIR" 1 ".path == \"/v1/traces\"" 20
	sink_bodies "$SINK_DIR" '.path == "/v1/traces"' >"$T/traces"
	# Content-Type as OTLP/HTTP JSON requires.
	[ "$(sink_count "$SINK_DIR" '.path == "/v1/traces" and .method == "POST" and
		.headers["content-type"] == "application/json"')" -ge 1 ]
	jq -c '.resourceSpans[] | .resource as $r | .scopeSpans[].spans[] |
		select(.traceId == "'$TRACE'") | {r: $r, s: .}' "$T/traces" >"$T/span"
	run jq -s length "$T/span"
	assert_output 1
	# The span, field by field, with the types of the JSON mapping.
	run jq -r '.s | [.traceId, .parentSpanId, (.spanId | test("^[0-9a-f]{16}$")),
		.kind, (.startTimeUnixNano | type), (.startTimeUnixNano | test("^[0-9]{19}$")),
		((.endTimeUnixNano | tonumber) >= (.startTimeUnixNano | tonumber)),
		.name, .status.code] | @tsv' "$T/span"
	assert_output "$TRACE	$PARENT	true	2	string	true	true	GET /hello	0"
	run jq -r '.s.attributes | map({key, value}) | from_entries |
		[.["http.request.method"].stringValue, .["url.path"].stringValue,
		 .["http.response.status_code"].intValue,
		 .["client.address"].stringValue,
		 (.["client.port"].intValue | test("^[0-9]+$"))] | @tsv' "$T/span"
	assert_output "GET	/hello	200	127.0.0.1	true"
	# Resource: service.name from GK_SERVICE, the process that made it.
	run jq -r '.r.attributes | map({key, value: .value}) | from_entries |
		[.["service.name"].stringValue, .["process.executable.name"].stringValue,
		 (.["process.pid"].intValue | test("^[0-9]+$"))] | @tsv' "$T/span"
	assert_output "orders	gk-tracer	true"

	# A real metrics snapshot of the listener (SIGUSR1 asks for one now):
	# its request counter is a monotonic cumulative sum, and its latency
	# histogram's bucket counts add up to its count.
	listener=$(pgrep -x -g "$(bg_pid stack)" gk-listener)
	kill -USR1 "$listener"
	wait_for -t 20 _sink_has "$SINK_DIR" '"gk_http_request_duration_seconds"'
	sink_bodies "$SINK_DIR" '.path == "/v1/metrics"' |
		jq -c '.resourceMetrics[] | select(any(.resource.attributes[];
			.key == "process.executable.name" and
			.value.stringValue == "gk-listener")) |
			.scopeMetrics[].metrics[]' >"$T/metrics"
	run jq -r -s '[.[] | select(.name == "gk_http_requests_total") | .sum |
		.isMonotonic, .aggregationTemporality,
		(.dataPoints | map(.asDouble) | add >= 1)] | unique | map(tostring) | join(",")' "$T/metrics"
	assert_output "true,2"
	run jq -r -s '[.[] | select(.name == "gk_http_request_duration_seconds") |
		.histogram.dataPoints[] | [((.bucketCounts | map(tonumber) | add) == (.count | tonumber)),
		((.bucketCounts | length) == (.explicitBounds | length) + 1),
		((.count | tonumber) >= 1), (.startTimeUnixNano | test("^[0-9]{19}$"))]] |
		flatten | unique | map(tostring) | join(",")' "$T/metrics"
	assert_output "true"
}

@test "a metrics snapshot becomes a cumulative monotonic sum, a gauge, and a histogram whose bucket counts sum to its count" {
	start_sink sink
	# A snapshot as gk-events(5) documents it.
	cat >"$EV" <<-'EOF'
	{"ts":"2026-12-04T09:30:00.000001Z","type":"metrics","proc":"gk-listener","pid":77,"svc":"orders","seq":1,"part":1,"parts":1,"metrics":[{"name":"gk_http_requests_total","type":"counter","help":"HTTP requests answered","series":[{"labels":{"method":"GET","code":"200"},"value":12}]},{"name":"gk_http_request_duration_seconds","type":"histogram","help":"","series":[{"labels":{},"buckets":[[0.005,3],[0.01,5],[0.1,11],[10,12],["+Inf",12]],"sum":0.42,"count":12}]},{"name":"process_start_time_seconds","type":"gauge","help":"start","series":[{"labels":{},"value":1796376000.5}]},{"name":"empty_total","type":"counter","help":"","series":[]}]}
	EOF
	run_plugin "$EV" gk-export-otlp --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" '.path == "/v1/metrics" and .status == 200'
	assert_output 1
	sink_bodies "$SINK_DIR" '.path == "/v1/metrics"' >"$T/m"
	M='.resourceMetrics[0].scopeMetrics[0].metrics'
	run jq -r "$M | map(.name) | join(\",\")" "$T/m"
	assert_output "gk_http_requests_total,gk_http_request_duration_seconds,process_start_time_seconds"
	run jq -r "$M[0] | [.description, .sum.isMonotonic, .sum.aggregationTemporality,
		.sum.dataPoints[0].asDouble, .sum.dataPoints[0].startTimeUnixNano,
		.sum.dataPoints[0].timeUnixNano,
		(.sum.dataPoints[0].attributes | map(.key + \"=\" + .value.stringValue) | join(\",\"))] | @tsv" "$T/m"
	assert_output "HTTP requests answered	true	2	12	1796376000500000000	1796376600000001000	method=GET,code=200"
	run jq -r "$M[1].histogram | [.aggregationTemporality,
		(.dataPoints[0].bucketCounts | map(type) | unique | join(\",\")),
		(.dataPoints[0].bucketCounts | join(\",\")),
		(.dataPoints[0].explicitBounds | map(tostring) | join(\",\")),
		(.dataPoints[0].bucketCounts | map(tonumber) | add),
		.dataPoints[0].count, .dataPoints[0].sum] | @tsv" "$T/m"
	assert_output "2	string	3,2,6,1,0	0.005,0.01,0.1,10	12	12	0.42"
	run jq -r "$M[2].gauge.dataPoints[0].asDouble" "$T/m"
	assert_output "1796376000.5"
	run jq -r '.resourceMetrics[0].resource.attributes | map({key, value}) | from_entries |
		.["service.name"].stringValue' "$T/m"
	assert_output "orders"
}

@test "a log event with a trace_id becomes a log record with traceId, a severity from its level and its other keys as typed attributes (a number past a double's range as -Infinity); a ts past 2554 is sent as no time, counted; with --signals traces they are passed over, counted" {
	start_sink sink
	cat >"$EV" <<-EOF
	{"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"warn","proc":"gk-limiter","pid":9,"svc":"orders","msg":"rate limited","key":"10.0.0.7","limit":200,"ratio":0.5,"huge":-1e400,"trace_id":"$TRACE"}
	a stray line from a handler
	{"ts":"2600-01-01T00:00:00Z","type":"log","msg":"from past 2554"}
	EOF
	run_plugin "$EV" gk-export-otlp --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	sink_bodies "$SINK_DIR" '.path == "/v1/logs"' |
		jq -c '.resourceLogs[].scopeLogs[].logRecords[]' >"$T/logs"
	run jq -s length "$T/logs"
	assert_output 3
	# A ts past what uint64 nanoseconds hold is no time, not a wrapped
	# one: the record has only its observed time, and it is counted.
	run jq -r -s '.[2] | [.body.stringValue, (.timeUnixNano // "none")] | @tsv' "$T/logs"
	assert_output "from past 2554	none"
	[ "$(plugin_metric "$T/plugin.err" gk_export_ts_out_of_range_total)" = 1 ]
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "event ts out of range: read as without ts"')" = 1 ]
	run jq -r -s '.[0] | [.traceId, .severityNumber, .severityText, .body.stringValue,
		.timeUnixNano, (.attributes | map(.key + "=" + (.value | tostring)) | join(" "))] | @tsv' "$T/logs"
	assert_output "$TRACE	13	warn	rate limited	1796376600123456000	key={\"stringValue\":\"10.0.0.7\"} limit={\"intValue\":\"200\"} ratio={\"doubleValue\":0.5} huge={\"doubleValue\":\"-Infinity\"}"
	# The line that was not JSON is not lost: a log record of its own.
	run jq -r -s '.[1] | [.body.stringValue, .severityNumber, (.traceId // "none"),
		(.attributes[] | select(.key == "raw") | .value.boolValue)] | @tsv' "$T/logs"
	assert_output "a stray line from a handler	9	none	true"
	n=$(sink_count "$SINK_DIR" true)
	run_plugin "$EV" gk-export-otlp --signals traces --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	[ "$(sink_count "$SINK_DIR" true)" = "$n" ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_otlp_skipped_total)" = 3 ]
}

@test "an event line over the 4 MiB bound is dropped and counted even when it arrives whole in one read; one of exactly 4 MiB is sent" {
	start_sink sink
	# stdin is a regular file: the runtime reads it in large reads, so
	# each long line arrives complete, newline included.
	python3 - "$EV" <<-'PY'
	import sys
	cap = 4 << 20
	pad = cap - len('{"type":"log","msg":""}')
	with open(sys.argv[1], "w") as f:
	    f.write('{"type":"log","msg":"%s"}\n' % ("a" * pad))
	    f.write('{"type":"log","msg":"%s"}\n' % ("b" * (pad + 1)))
	    f.write('{"type":"log","msg":"short"}\n')
	PY
	timeout -k 5 60 gk-export-otlp --max-queue 16M --batch-interval 50ms \
		"http://127.0.0.1:$SINK_PORT" <"$EV" 2>"$T/plugin.err"
	sink_bodies "$SINK_DIR" '.path == "/v1/logs"' |
		jq -r '.resourceLogs[].scopeLogs[].logRecords[].body.stringValue | .[:1] + ":" + (length | tostring)' >"$T/got"
	run paste -sd, "$T/got"
	assert_output "a:$(((4 << 20) - 23)),s:5"
	[ "$(plugin_metric "$T/plugin.err" gk_export_too_long_total)" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 1 ]
	[ "$(count_events "$T/plugin.err" '.msg == "event line too long: dropped" and .max_bytes == 4194304')" = 1 ]
}

@test "a 200 with partialSuccess: the rejected spans and log records are counted dropped, not sent, not retried; every rejected item, data points too, is counted per signal and the collector's errorMessage logged, wherever it stands in a body of up to 64 KiB" {
	# The traces answer holds its count after a 5000-byte errorMessage.
	long="span too old $(printf '%05000d' 0)"
	start_sink sink \
		--body '/v1/traces={"partialSuccess":{"errorMessage":"'"$long"'","rejectedSpans":"1"}}' \
		--body '/v1/metrics={"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"points refused"}}' \
		--body '/v1/logs={"partialSuccess":{"rejectedLogRecords":2,"errorMessage":"log \"x\" refused"}}'
	{
		spans 4
		printf '{"type":"log","msg":"m%d"}\n' 1 2 3
		printf '{"ts":"2026-12-04T09:30:00Z","type":"metrics","proc":"p","pid":1,"metrics":[{"name":"g","type":"gauge","help":"h","series":[{"labels":{},"value":1}]}]}\n'
	} >"$EV"
	run_plugin "$EV" env GK_EXPORT_DRAIN_TIMEOUT=30s gk-export-otlp \
		--batch-records 2 "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	# two batches of spans, two of logs, one of metrics, each sent once
	run sink_count "$SINK_DIR" 'true'
	assert_output 5
	# 8 records: 1 span and 2 log records rejected by the collector; the
	# snapshot is sent (3 of its points refused)
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 5 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 3 ]
	run jq -R -r 'fromjson? | select(.type == "metrics") | .metrics[]
	  | select(.name == "gk_export_otlp_rejected_total") | .series[]
	  | "\(.labels.signal)=\(.value)"' "$T/plugin.err"
	assert_output --partial "$(printf 'traces=1\nmetrics=3\nlogs=2')"
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "batch partly rejected: dropped" and .rejected == 1 and (.reason | startswith("span too old 000"))')" = 1 ]
	[ "$(count_events "$T/plugin.err" '.level == "warn" and .msg == "batch accepted with a warning" and .rejected == 3 and .reason == "points refused"')" = 1 ]
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "batch partly rejected: dropped" and .rejected == 2 and .reason == "log \"x\" refused"')" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_http_answers_cut_total)" = 0 ]
	# An answer past 64 KiB: its first 64 KiB are read, the cut counted.
	stop_all
	start_sink sink2 --body '/v1/logs={"partialSuccess":{"errorMessage":"'"$(printf '%070000d' 0)"'","rejectedLogRecords":1}}'
	printf '{"type":"log","msg":"m1"}\n' >"$EV"
	run_plugin "$EV" gk-export-otlp "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_http_answers_cut_total)" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 1 ]
}

@test "503 with Retry-After, then 200: each span is delivered exactly once, in order, and the retry waits as told" {
	start_sink sink --statuses 503:1,200,503:1,200
	spans 6 >"$EV"
	run_plugin "$EV" env GK_EXPORT_DRAIN_TIMEOUT=30s gk-export-otlp \
		--batch-records 2 "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	# 3 batches; the first and the second were answered 503 once each.
	run sink_count "$SINK_DIR" '.path == "/v1/traces"'
	assert_output 5
	run sink_count "$SINK_DIR" '.status == 503'
	assert_output 2
	run bash -c "$(declare -f sink_reqs sink_bodies span_ids); \
		sink_bodies '$SINK_DIR' '.status == 200' | span_ids | paste -sd,"
	assert_output "0000000000000001,0000000000000002,0000000000000003,0000000000000004,0000000000000005,0000000000000006"
	# The retried request carried the same bytes as the refused one.
	cmp "$SINK_DIR/0001.body" "$SINK_DIR/0002.body"
	cmp "$SINK_DIR/0003.body" "$SINK_DIR/0004.body"
	# Retry-After: 1 was honoured rather than the backoff.
	[ "$(count_events "$T/plugin.err" '.msg == "batch not accepted: retrying" and .retry_in_ms == 1000')" -ge 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 6 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 0 ]
}

@test "429 is retried; 400 and 500 drop their batch without a retry, count its spans dropped and log an error" {
	start_sink sink --statuses 429:1,200,400,500,200
	spans 8 >"$EV"
	run_plugin "$EV" env GK_EXPORT_DRAIN_TIMEOUT=30s gk-export-otlp \
		--batch-records 2 "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" 'true'
	assert_output 5
	run bash -c "$(declare -f sink_reqs sink_bodies span_ids); \
		sink_bodies '$SINK_DIR' '.status == 200' | span_ids | paste -sd,"
	assert_output "0000000000000001,0000000000000002,0000000000000007,0000000000000008"
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 4 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 4 ]
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "batch rejected: dropped" and .status == 400 and .records == 2')" = 1 ]
	[ "$(count_events "$T/plugin.err" '.level == "error" and .msg == "batch rejected: dropped" and .status == 500')" = 1 ]
}

@test "backend down at start, then up: the spans queued meanwhile all arrive, once each, in order" {
	SINK_PORT=$(free_port)
	spans 5 >"$EV"
	start_bg plugin bash -c "cat '$EV' | GK_EXPORT_DRAIN_TIMEOUT=40s GK_EVENTS_FORMAT=json \
		gk-export-otlp --retry-min 100ms --retry-max 300ms \
		--batch-records 1 http://127.0.0.1:$SINK_PORT"
	# Refused connections are retried, not dropped.
	wait_event "$T/plugin.err" '.msg == "batch not accepted: retrying" and (.error | test("onnect"))' 20
	start_sink sink --port "$SINK_PORT"
	wait_exit plugin 40
	[ "$BG_STATUS" = 0 ]
	run bash -c "$(declare -f sink_reqs sink_bodies span_ids); \
		sink_bodies '$SINK_DIR' '.status == 200' | span_ids | paste -sd,"
	assert_output "0000000000000001,0000000000000002,0000000000000003,0000000000000004,0000000000000005"
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 5 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_reconnects_total)" = 1 ]
}

@test "backend down with more queued than --max-queue: the oldest batches are dropped and counted, the rest arrive in order" {
	SINK_PORT=$(free_port)
	spans 40 >"$EV"
	# Each span is one batch of about 700 bytes; 4KiB holds a few.
	start_bg plugin bash -c "cat '$EV' | GK_EXPORT_DRAIN_TIMEOUT=40s GK_EVENTS_FORMAT=json \
		gk-export-otlp --retry-min 100ms --retry-max 300ms --max-queue 4KiB \
		--batch-records 1 http://127.0.0.1:$SINK_PORT"
	wait_event "$T/plugin.err" '.msg == "queue full: oldest batch dropped"' 20
	wait_event "$T/plugin.err" '.msg == "batch not accepted: retrying"' 20
	start_sink sink --port "$SINK_PORT"
	wait_exit plugin 40
	[ "$BG_STATUS" = 0 ]
	sink_bodies "$SINK_DIR" '.status == 200' | span_ids >"$T/ids"
	sent=$(plugin_metric "$T/plugin.err" gk_export_sent_total)
	dropped=$(plugin_metric "$T/plugin.err" gk_export_dropped_total)
	[ "$(wc -l <"$T/ids")" = "$sent" ]
	[ "$((sent + dropped))" = 40 ]
	[ "$dropped" -gt 0 ]
	[ "$sent" -lt 10 ]
	# In order, the newest span among them, each once.
	sort -c "$T/ids"
	[ "$(sort -u "$T/ids" | wc -l)" = "$sent" ]
	[ "$(tail -n 1 "$T/ids")" = "$(printf %016x 40)" ]
}

@test "--gzip bodies carry Content-Encoding: gzip and decompress to valid OTLP JSON; --header is sent on every request" {
	start_sink sink
	spans 3 >"$EV"
	run_plugin "$EV" gk-export-otlp --gzip --header "Authorization=Bearer s3cret" \
		-H "X-Tenant=blue" --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$SINK_DIR" 'true'
	assert_output 1
	run sink_count "$SINK_DIR" '.path == "/v1/traces" and
		.headers["content-encoding"] == "gzip" and
		.headers["authorization"] == "Bearer s3cret" and
		.headers["x-tenant"] == "blue" and (has("gzip_error") | not)'
	assert_output 1
	# On the wire: gzip's magic bytes, not JSON.
	[ "$(head -c 2 "$SINK_DIR/0001.body" | od -An -tx1 | tr -d ' ')" = 1f8b ]
	run bash -c "$(declare -f sink_reqs sink_bodies span_ids); \
		sink_bodies '$SINK_DIR' | span_ids | paste -sd,"
	assert_output "0000000000000001,0000000000000002,0000000000000003"
}

@test "a span event that cannot be encoded (a bad trace id) is dropped with an error naming why; the others are sent" {
	start_sink sink
	{
		spans 1
		echo '{"type":"span","proc":"x","pid":1,"trace_id":"nothex","span_id":"00f067aa0ba902b7","start_us":1}'
		echo '{"type":"span","proc":"x","pid":1,"trace_id":"'$TRACE'","span_id":"00f067aa0ba902b7"}'
	} >"$EV"
	run_plugin "$EV" gk-export-otlp --batch-interval 50ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run bash -c "$(declare -f sink_reqs sink_bodies span_ids); \
		sink_bodies '$SINK_DIR' | span_ids | paste -sd,"
	assert_output "0000000000000001"
	[ "$(count_events "$T/plugin.err" '.level == "error" and .reason == "trace_id is not 32 hexadecimal digits"')" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_otlp_invalid_total)" = 2 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 2 ]
}

@test "a backend that keeps answering 503: at the drain timeout the plugin exits 0 and counts the undelivered spans dropped" {
	start_sink sink --then 503
	spans 3 >"$EV"
	run_plugin "$EV" env GK_EXPORT_DRAIN_TIMEOUT=1s gk-export-otlp \
		--retry-min 100ms --retry-max 200ms "http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	[ "$(sink_count "$SINK_DIR" '.status == 503')" -ge 1 ]
	[ "$(count_events "$T/plugin.err" '.msg == "drain timeout: pending records dropped" and .records == 3')" = 1 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_dropped_total)" = 3 ]
	[ "$(plugin_metric "$T/plugin.err" gk_export_sent_total)" = 0 ]
}

@test "gk-exporter fans one stream out to otlp (with its options) and zipkin: the same span reaches both, of the same kind" {
	start_sink otlp
	OTLP_DIR=$SINK_DIR OTLP_PORT=$SINK_PORT
	start_sink zipkin
	# Its kind in upper case, as Zipkin writes kinds.
	spans 1 | sed 's/"kind":"server"/"kind":"CLIENT"/' >"$EV"
	run_plugin "$EV" gk-exporter \
		--to "otlp:--gzip,--batch-interval,50ms,http://127.0.0.1:$OTLP_PORT" \
		--to "zipkin:--batch-interval,50ms,http://127.0.0.1:$SINK_PORT"
	[ "$PLUGIN_STATUS" = 0 ]
	run sink_count "$OTLP_DIR" '.path == "/v1/traces" and .headers["content-encoding"] == "gzip"'
	assert_output 1
	run jq -r '.resourceSpans[0].scopeSpans[0].spans[0] | .traceId + " " + .spanId + " " + (.kind | tostring)' "$OTLP_DIR/0001.json"
	assert_output "$TRACE 0000000000000001 3"
	run jq -r '.[0] | .traceId + " " + .id + " " + .kind' "$SINK_DIR/0001.json"
	assert_output "$TRACE 0000000000000001 CLIENT"
}
