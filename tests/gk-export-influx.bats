#!/usr/bin/env bats
# gk-export-influx: line protocol into a real InfluxDB 1.6 (Debian
# influxdb, its own config in a temp dir, HTTP on a free port), read back
# with /query.  InfluxDB 2.x is not packaged in Debian 12: its request
# shape (path, query, token header, body) is checked against what a
# loopback HTTP sink of the test recorded, per the v2 API documentation.

load helpers/common
load helpers/metrics-exporters

setup() {
	common_setup
}

teardown() {
	stop_all
}

create_db() {
	run curl -s -m 10 -XPOST "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode "q=CREATE DATABASE $1"
	assert_success
	assert_output --partial '"statement_id":0'
}

# last_of DB QUERY: the first value column of the last row (or "none").
last_of() {
	influx_q "$1" "$2" | jq -r '.results[0].series[0].values[-1][1] // "none"'
}

@test "v1: a live stack's counters and histograms are points in /write?db= (gzipped bodies), read back with /query" {
	start_influx
	create_db gk
	PORT=$(free_port)
	start_stack stack "$PORT" gk-exporter influx --db gk --gzip --batch-interval 200ms "http://127.0.0.1:$INFLUX_PORT"
	hit "$PORT" 5
	wait_eq 5 30 last_of gk "SELECT last(\"value\") FROM gk_http_requests_total WHERE proc = 'gk-listener' AND method = 'GET' AND code = '200'"
	wait_eq 5 30 last_of gk "SELECT last(\"count\") FROM gk_http_request_duration_seconds WHERE proc = 'gk-listener'"
	run last_of gk "SELECT last(\"+Inf\") FROM gk_http_request_duration_seconds WHERE proc = 'gk-listener'"
	assert_output 5
	run last_of gk "SELECT last(\"value\") FROM gk_http_max_connections"
	assert_output 16384
	# The points carry the snapshot's time, not the write's: each one
	# of the listener's snapshots is its own point.
	n=$(influx_q gk "SELECT count(\"value\") FROM process_open_fds WHERE proc = 'gk-listener'" | jq '.results[0].series[0].values[0][1]')
	[ "$n" -ge 1 ]
	hit "$PORT" 2
	wait_eq 7 30 last_of gk "SELECT last(\"value\") FROM gk_http_requests_total WHERE proc = 'gk-listener'"
}

@test "a member with an empty name and a pid that is not an integer are left out, an event of a ts past 2262 is not written (all counted), and a metric named #... is not read as a comment: InfluxDB takes the whole batch" {
	start_influx
	create_db odd
	cat >"$T/events.jsonl" <<'EOF'
{"ts":"2026-12-04T09:30:00Z","type":"log","level":"info","proc":"p","pid":1,"msg":"first","":"x","n":1}
{"ts":"2026-12-04T09:30:01Z","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[{"name":"#hash","type":"gauge","help":"h","series":[{"labels":{},"value":7}]}]}
{"ts":"2026-12-04T09:30:02Z","type":"log","level":"info","proc":"p","pid":1,"msg":"second","n":2}
{"ts":"2026-12-04T09:30:03Z","type":"log","level":"info","proc":"p","pid":1.5,"msg":"third","n":3,"time\\":"z"}
{"ts":"2300-12-04T09:30:04Z","type":"log","level":"info","proc":"p","pid":1,"msg":"2300","n":4}
{"ts":"9999-12-04T09:30:04Z","type":"log","level":"info","proc":"p","pid":1,"msg":"9999","n":5}
EOF
	GK_METRICS_INTERVAL=0 gk-export-influx --db odd "http://127.0.0.1:$INFLUX_PORT" <"$T/events.jsonl" 2>"$T/plugin.err"
	run jq -r '.results[0].series[0].values | map(.[1:] | map(tostring) | join("|")) | .[]' \
		<<<"$(influx_q odd 'SELECT "msg", "n" FROM "logs"')"
	assert_output 'first|1
second|2
third|3'
	# InfluxDB keeps no field named time: "time\" (cut) is time_.
	run last_of odd 'SELECT "time_" FROM "logs"'
	assert_output z
	run last_of odd 'SELECT "value" FROM "_#hash"'
	assert_output 7
	[ "$(own_metric "$T/plugin.err" gk_export_dropped_total)" = 0 ]
	[ "$(own_metric "$T/plugin.err" gk_export_influx_empty_key_total)" = 1 ]
	[ "$(own_metric "$T/plugin.err" gk_export_influx_bad_pid_total)" = 1 ]
	[ "$(own_metric "$T/plugin.err" gk_export_influx_bad_time_total)" = 2 ]
	[ "$(own_metric "$T/plugin.err" gk_export_sent_total)" = 4 ]
}

@test "a label named time, and one named label_svc beside svc, do not cost their point or the batch: InfluxDB takes every point" {
	start_influx
	create_db lab
	# InfluxDB refuses a tag key "time", and a tag key twice in a point
	# (partial write, 400): such a point would be lost.
	cat >"$T/events.jsonl" <<'EOF'
{"ts":"2026-12-04T09:30:00Z","type":"metrics","proc":"p","pid":1,"svc":"s","seq":1,"part":1,"parts":1,"metrics":[{"name":"m_time","type":"gauge","help":"h","series":[{"labels":{"time":"x"},"value":1}]},{"name":"m_dup","type":"gauge","help":"h","series":[{"labels":{"svc":"a","label_svc":"b"},"value":2}]},{"name":"m_ok","type":"gauge","help":"h","series":[{"labels":{"k":"v"},"value":3}]}]}
EOF
	GK_METRICS_INTERVAL=0 gk-export-influx --db lab "http://127.0.0.1:$INFLUX_PORT" <"$T/events.jsonl" 2>"$T/plugin.err"
	run last_of lab 'SELECT "value" FROM "m_ok"'
	assert_output 3
	run last_of lab "SELECT \"value\" FROM \"m_time\" WHERE \"label_time\" = 'x'"
	assert_output 1
	# The first label_svc is kept (the renamed svc), the later one left
	# out and counted.
	run last_of lab "SELECT \"value\" FROM \"m_dup\" WHERE \"label_svc\" = 'a' AND \"svc\" = 's'"
	assert_output 2
	[ "$(own_metric "$T/plugin.err" gk_export_dropped_total)" = 0 ]
	[ "$(own_metric "$T/plugin.err" gk_export_sent_total)" = 3 ]
	[ "$(own_metric "$T/plugin.err" gk_export_influx_duplicate_tag_total)" = 1 ]
}

@test "a partial write (400: a field of another type than InfluxDB has) counts only the points InfluxDB dropped, and the error says why" {
	start_influx
	create_db part
	# st is a float field once the first point is in; in the next batch
	# InfluxDB drops the point where it is a string and writes the other.
	printf '%s\n' '{"ts":"2026-12-04T09:30:01Z","type":"log","level":"info","proc":"p","pid":1,"msg":"first","st":1}' |
		GK_METRICS_INTERVAL=0 gk-export-influx --db part "http://127.0.0.1:$INFLUX_PORT" 2>"$T/first.err"
	[ "$(own_metric "$T/first.err" gk_export_sent_total)" = 1 ]
	cat >"$T/events.jsonl" <<'EOF'
{"ts":"2026-12-04T09:30:02Z","type":"log","level":"info","proc":"p","pid":1,"msg":"second","st":"x"}
{"ts":"2026-12-04T09:30:03Z","type":"log","level":"info","proc":"p","pid":1,"msg":"third","st":3}
EOF
	GK_METRICS_INTERVAL=0 gk-export-influx --db part "http://127.0.0.1:$INFLUX_PORT" <"$T/events.jsonl" 2>"$T/plugin.err"
	run jq -r '.results[0].series[0].values | map(.[1]) | join(",")' \
		<<<"$(influx_q part 'SELECT "msg" FROM "logs"')"
	assert_output 'first,third'
	[ "$(own_metric "$T/plugin.err" gk_export_sent_total)" = 1 ]
	[ "$(own_metric "$T/plugin.err" gk_export_dropped_total)" = 1 ]
	run jq -R -r 'fromjson? | select(.level == "error") | [.status, .records, .reason] | map(tostring) | join("|")' "$T/plugin.err"
	assert_output --regexp '^400\|1\|.*field type conflict'
}

@test "while InfluxDB is down and the queue is full, the oldest batches are dropped and counted, told at most once a second" {
	python3 -c '
for i in range(3000):
    print("{\"ts\":\"2026-12-04T09:30:00Z\",\"type\":\"log\",\"proc\":\"p\",\"msg\":\"m%d\",\"pad\":\"%s\"}" % (i, "x" * 100))' >"$T/events.jsonl"
	port=$(free_port) # nobody listens there
	GK_EXPORT_DRAIN_TIMEOUT=1s GK_METRICS_INTERVAL=0 gk-export-influx --db x \
		--batch-records 1 --max-queue 4KiB "http://127.0.0.1:$port" \
		<"$T/events.jsonl" 2>"$T/plugin.err"
	told=$(count_events "$T/plugin.err" '.msg == "queue full: oldest batch dropped"')
	echo "told=$told"
	[ "$told" -ge 1 ]
	[ "$told" -le 4 ]
	# Every point is accounted for, and each one the bound dropped is
	# in a warning.
	[ "$(own_metric "$T/plugin.err" gk_export_dropped_total)" = 3000 ]
	run jq -s 'map(select(.msg == "queue full: oldest batch dropped") | .records) | add' "$T/plugin.err"
	[ "$output" -gt 2900 ]
}

@test "tags, measurements, field keys and strings with spaces, commas, equals signs, quotes and backslashes read back exactly, a trailing backslash costs only itself" {
	start_influx
	create_db esc
	# A log event from gk-log, and a real snapshot whose family name and
	# label value were given the characters line protocol escapes.
	GK_EVENTS_FORMAT=json gk-log -p 'my proc,a=b' -l warn 'said "hi", a=b \ back' \
		'field key,x=1=has "quotes", commas, = and \' "multi=$(printf 'line1\nline2')" n=3 2>"$T/events.jsonl"
	record_stack "$T/run.jsonl" 2
	jq -c 'select(.type == "metrics" and .proc == "gk-listener") | .metrics |= map(if .name == "gk_http_requests_total" then (.name = "req total,x=y" | .series |= map(.labels.path = "a b,c=d\"e\\f")) else . end)' \
		"$T/run.jsonl" >>"$T/events.jsonl"
	# InfluxDB never reads two backslashes in a name as one, and a
	# trailing one escapes the separator after it (the point is refused).
	cat >>"$T/events.jsonl" <<'EOF'
{"ts":"2026-12-04T09:30:05Z","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[{"name":"bs\\","type":"gauge","help":"h","series":[{"labels":{"path":"C:\\"},"value":1},{"labels":{"path":"a\\,b"},"value":2},{"labels":{"path":"a\\\\b"},"value":3},{"labels":{"path":"x\\ y"},"value":4},{"labels":{"time\\":"t"},"value":5}]}]}
EOF
	gk-export-influx --db esc --logs-measurement 'app logs' "http://127.0.0.1:$INFLUX_PORT" <"$T/events.jsonl" 2>"$T/plugin.err"
	run jq -c '.results[0].series[0] | [.columns, .values[0]] | transpose | map({(.[0]): .[1]}) | add | del(.time, .host, .pid)' \
		<<<"$(influx_q esc 'SELECT * FROM "app logs"')"
	assert_output '{"field key,x":"1=has \"quotes\", commas, = and \\","level":"warn","msg":"said \"hi\", a=b \\ back","multi":"line1\nline2","n":3,"proc":"my proc,a=b"}'
	run jq -r '.results[0].series[0].values[-1] | .[1:] | join("|")' \
		<<<"$(influx_q esc 'SELECT "path", "proc", "value" FROM "req total,x=y"')"
	assert_output 'a b,c=d"e\f|gk-listener|2'
	run jq -r '.results[0].series[0].values | map(.[1:] | map(tostring) | join("|")) | sort | .[]' \
		<<<"$(influx_q esc 'SELECT "path", "value" FROM "bs"')"
	assert_output 'C:|1
a\,b|2
a\\b|3
null|5
x\ y|4'
	# "time\" cut is time, which InfluxDB refuses as a tag key.
	run last_of esc "SELECT \"value\" FROM \"bs\" WHERE \"label_time\" = 't'"
	assert_output 5
	[ "$(own_metric "$T/plugin.err" gk_export_influx_trailing_backslash_total)" = 7 ]
	# Nothing rejected.
	run jq -R 'fromjson? | select(.type == "metrics") | .metrics[] | select(.name == "gk_export_dropped_total") | .series[0].value' "$T/plugin.err"
	assert_line --index 0 0
	refute_line 1
}

@test "v2: POST /api/v2/write?org=&bucket=&precision=ns with Authorization: Token and line protocol (recorded by a loopback sink)" {
	# No InfluxDB 2 server in Debian 12: this checks the request against
	# the v2 write API's documented shape.
	start_http_sink "$T/requests.jsonl"
	printf 's3cr3t-token\n' >"$T/token"
	GK_EVENTS_FORMAT=json gk-log -p app 'v2 hello' k=v 2>"$T/events.jsonl"
	gk-export-influx --org 'my org' --bucket 'b/1' --token-file "$T/token" --no-logs --pid-tag \
		"http://127.0.0.1:$SINK_PORT/" <"$T/events.jsonl" 2>"$T/plugin.err"
	[ ! -s "$T/requests.jsonl" ] # --no-logs: no point, no request
	[ "$(own_metric "$T/plugin.err" gk_export_influx_skipped_total)" = 1 ]
	record_stack "$T/run.jsonl" 1
	gk-export-influx --org 'my org' --bucket 'b/1' --token-file "$T/token" --pid-tag \
		"http://127.0.0.1:$SINK_PORT/" <"$T/run.jsonl" 2>"$T/plugin.err"
	wait_file "$T/requests.jsonl"
	run jq -r '.method + " " + .path' "$T/requests.jsonl"
	assert_line --index 0 'POST /api/v2/write?org=my%20org&bucket=b%2F1&precision=ns'
	run jq -r '.headers.authorization' "$T/requests.jsonl"
	assert_line --index 0 'Token s3cr3t-token'
	run jq -r '.headers["content-type"]' "$T/requests.jsonl"
	assert_line --index 0 'text/plain; charset=utf-8'
	pid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	run bash -c "jq -r .body '$T/requests.jsonl' | grep '^gk_http_requests_total,'"
	assert_line --index 0 --regexp "^gk_http_requests_total,method=GET,code=200,proc=gk-listener,host=[^ ]+,pid=$pid value=1 [0-9]{19}$"
	run bash -c "jq -r .body '$T/requests.jsonl' | grep -c '^logs,level=info,proc=gk-listener,host=[^ ]*'"
	[ "$output" -ge 1 ]
}

@test "a missing database is a rejected batch (404): logged, its points counted dropped, and the plugin goes on" {
	start_influx
	record_stack "$T/run.jsonl" 1
	gk-export-influx --db nosuchdb --batch-records 10 "http://127.0.0.1:$INFLUX_PORT" <"$T/run.jsonl" 2>"$T/plugin.err"
	run jq -R -c 'fromjson? | select(.level == "error" and (.msg | test("rejected"))) | [.status, .url]' "$T/plugin.err"
	assert_line --index 0 '[404,"http://127.0.0.1:'"$INFLUX_PORT"'/write?db=nosuchdb&precision=ns"]'
	points=$(own_metric "$T/plugin.err" gk_export_influx_points_total)
	[ "$points" -gt 10 ]
	run own_metric "$T/plugin.err" gk_export_dropped_total
	assert_output "$points"
}

@test "points made while InfluxDB is unreachable are retried and arrive once it starts" {
	record_stack "$T/run.jsonl" 3
	# The database exists; then the server goes away.
	start_influx
	create_db late
	kill -TERM -- "-$(bg_pid influxd)"
	wait_exit influxd 20
	fifo_plugin plugin gk-export-influx --db late --retry-max 300ms "http://127.0.0.1:$INFLUX_PORT"
	cat "$T/run.jsonl" >&8
	wait_metric_ge "$T/plugin.err" gk_export_errors_total 1
	[ "$(own_metric "$T/plugin.err" gk_export_sent_total)" = 0 ]
	start_influx_on
	wait_eq 3 30 last_of late "SELECT last(\"value\") FROM gk_http_requests_total"
	points=$(own_metric "$T/plugin.err" gk_export_influx_points_total)
	wait_eq "$points" 20 own_metric "$T/plugin.err" gk_export_sent_total
	run own_metric "$T/plugin.err" gk_export_dropped_total
	assert_output 0
}

@test "bad options are one-line usage errors with exit 64" {
	run gk-export-influx
	assert_failure 64
	assert_output --partial "gk-export-influx: "
	assert_output --partial "--db"
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-influx --db a --org b --bucket c
	assert_failure 64
	run env -u INFLUX_TOKEN gk-export-influx --org b --bucket c
	assert_failure 64
	assert_output --partial "token"
	run gk-export-influx --db a ftp://x
	assert_failure 64
	run gk-export-influx --db a --logs-measurement 'logs\'
	assert_failure 64
	assert_output --partial "backslash"
	run gk-export-influx --help
	assert_success
	assert_output --partial "usage: gk-export-influx"
}
