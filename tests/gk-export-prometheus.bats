#!/usr/bin/env bats
# gk-export-prometheus: the latest snapshot of every process on /metrics,
# scraped by a real Prometheus server (Debian's prometheus) started here.

load helpers/common

setup() {
	common_setup
	# the plugins are built into BUILD/exporters
	export PATH="$GK_BUILD/exporters:$PATH"
}

teardown() {
	stop_all
}

# start_in NAME FILE CMD ARGS...: start_bg with stdin from FILE (a fifo is
# opened by the started process, so this does not wait for a writer).
start_in() {
	local name=$1 file=$2
	shift 2
	start_bg "$name" sh -c 'f=$1; shift; exec "$@" <"$f"' sh "$file" "$@"
}

# start_prometheus TARGET: a Prometheus scraping TARGET (HOST:PORT) every
# second; sets $PROM (its base URL).
start_prometheus() {
	local pport
	pport=$(free_port)
	cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gokit
    honor_labels: true
    static_configs:
      - targets: ['$1']
EOF
	start_bg prom prometheus --config.file="$T/prometheus.yml" \
		--storage.tsdb.path="$T/tsdb" --web.listen-address="127.0.0.1:$pport"
	PROM="http://127.0.0.1:$pport"
	wait_for -t 30 curl -sf "$PROM/-/ready"
}

# query EXPR: the value of the single sample EXPR gives, "" when none.
query() {
	curl -sf --get --data-urlencode "query=$1" "$PROM/api/v1/query" |
		jq -r 'if .status == "success" and (.data.result | length) == 1
		       then .data.result[0].value[1] else "" end'
}

# query_is EXPR VALUE: Prometheus answers EXPR with VALUE now.
query_is() {
	[ "$(query "$1")" = "$2" ]
}

# scrape PORT: the plugin's /metrics.
scrape() {
	curl -sf "http://127.0.0.1:$1/metrics"
}

# The handler of the stack: answers every request, after 30 ms for paths
# under /slow, so that the latency histogram has two populations.
handler() {
	cat >"$T/handler.py" <<'EOF'
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    if req.get("path", "").startswith("/slow"):
        time.sleep(0.03)
    sys.stdout.write(json.dumps({"id": req["id"], "status": 200,
                                 "headers": {"content-type": "text/plain"},
                                 "body": "ok\n"}) + "\n")
    sys.stdout.flush()
EOF
}

# quantile Q FILE: what histogram_quantile(Q, ...) must give for the
# gk_http_request_duration_seconds buckets of gk-listener's last snapshot
# in the event log FILE (Prometheus' linear interpolation within the
# bucket that holds the rank).
quantile() {
	jq -R -c 'fromjson? | select(.type == "metrics" and .proc == "gk-listener")
	  | .metrics[] | select(.name == "gk_http_request_duration_seconds")
	  | .series[0].buckets' "$2" | tail -n 1 | python3 -c '
import json, sys
q = float(sys.argv[1])
b = json.load(sys.stdin)
total = b[-1][1]
rank = q * total
lo, below = 0.0, 0
for le, c in b:
    if c >= rank:
        le = float("inf") if le == "+Inf" else le
        if le == float("inf"):
            print(repr(lo)); break
        print(repr(lo + (le - lo) * (rank - below) / (c - below))); break
    lo, below = le, c' "$1"
}

@test "Prometheus scrapes the counter and the latency histogram a real stack produced" {
	handler
	lport=$(free_port)
	eport=$(free_port)
	# The stack's events go to the exporter and, for the test's own
	# reckoning, to a file.
	start_bg stack sh -c "GK_SERVICE=orders GK_METRICS_INTERVAL=1 GK_EVENTS_FORMAT=json \
		gk-listener -l 127.0.0.1:$lport -- python3 '$T/handler.py' 2>&1 >/dev/null \
		| tee '$T/events' | gk-exporter prometheus -l 127.0.0.1:$eport"
	wait_port 127.0.0.1 "$lport" 20
	wait_port 127.0.0.1 "$eport" 20
	start_prometheus "127.0.0.1:$eport"
	for i in 1 2 3 4; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$lport/fast/$i")" = 200 ]
	done
	for i in 1 2 3 4 5 6; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$lport/slow/$i")" = 200 ]
	done
	wait_for -t 40 query_is 'gk_http_requests_total{svc="orders",proc="gk-listener",method="GET",code="200"}' 10
	# the series carries the process's labels
	run curl -sf --get --data-urlencode 'query=gk_http_requests_total{code="200"}' "$PROM/api/v1/query"
	[ "$(echo "$output" | jq -r '.data.result[0].metric | [.svc, .proc, (.instance | test(":[0-9]+$"))] | @tsv')" = "$(printf 'orders\tgk-listener\ttrue')" ]
	wait_for -t 40 query_is 'gk_http_request_duration_seconds_count{proc="gk-listener"}' 10
	want=$(quantile 0.5 "$T/events")
	[ -n "$want" ]
	got=$(query 'histogram_quantile(0.5, gk_http_request_duration_seconds_bucket{proc="gk-listener"})')
	python3 -c 'import sys; w, g = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(w - g) > 1e-9 * max(1, abs(w)))' "$want" "$got" ||
		{ echo "quantile: want $want, got $got"; false; }
	# 6 of the 10 took 30 ms or more: the median is not in the fast bucket
	python3 -c 'import sys; sys.exit(not float(sys.argv[1]) > 0.005)' "$got"
	# and the plugin's own exposition passes promtool's lint
	scrape "$eport" >"$T/scraped"
	run promtool check metrics <"$T/scraped"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	grep -q '^# TYPE gk_http_request_duration_seconds histogram$' "$T/scraped"
}

# snap PROC PID SVC TS SEQ N: a one-part snapshot with a counter of value N
# labelled code=200 and a histogram with one observation of 0.2 s.
snap() {
	printf '{"ts":"%s","type":"metrics","proc":"%s","pid":%s,"svc":"%s","seq":%s,"part":1,"parts":1,"metrics":[' "$4" "$1" "$2" "$3" "$5"
	printf '{"name":"app_requests_total","type":"counter","help":"Requests","series":[{"labels":{"code":"200"},"value":%s}]},' "$6"
	printf '{"name":"app_latency_seconds","type":"histogram","help":"Latency","series":[{"labels":{},"buckets":[[0.1,0],[0.5,1],["+Inf",1]],"sum":0.2,"count":1}]}]}\n'
}

# iso SECONDS_FROM_NOW: a ts of gk-events(5).
iso() {
	date -u -d "@$(($(date +%s) + $1))" +%Y-%m-%dT%H:%M:%S.000000Z
}

@test "snapshots of several processes merge into one exposition with svc, proc and instance labels; promtool is clean" {
	eport=$(free_port)
	{
		snap gk-listener 101 orders "$(iso 0)" 1 5
		snap gk-limiter 102 orders "$(iso 0)" 1 7
		snap gk-listener 103 users "$(iso 0)" 1 11
		echo 'a stray line that is not JSON'
		echo '{"type":"log","level":"info","msg":"not a snapshot"}'
	} >"$T/in"
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	cat "$T/in" >&4
	wait_port 127.0.0.1 "$eport" 10
	host=$(hostname)
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q 'instance=\"$host:103\"'"
	scrape "$eport" >"$T/m"
	run grep '^app_requests_total' "$T/m"
	assert_line "app_requests_total{code=\"200\",svc=\"orders\",proc=\"gk-listener\",instance=\"$host:101\"} 5"
	assert_line "app_requests_total{code=\"200\",svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\"} 7"
	assert_line "app_requests_total{code=\"200\",svc=\"users\",proc=\"gk-listener\",instance=\"$host:103\"} 11"
	[ "${#lines[@]}" -eq 3 ]
	# one HELP and one TYPE per family, whatever the number of processes
	[ "$(grep -c '^# TYPE app_requests_total counter$' "$T/m")" -eq 1 ]
	[ "$(grep -c '^# TYPE app_latency_seconds histogram$' "$T/m")" -eq 1 ]
	assert_equal "$(grep "instance=\"$host:102\"" "$T/m" | grep '^app_latency_seconds')" \
		"$(printf '%s\n' \
		"app_latency_seconds_bucket{svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\",le=\"0.1\"} 0" \
		"app_latency_seconds_bucket{svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\",le=\"0.5\"} 1" \
		"app_latency_seconds_bucket{svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\",le=\"+Inf\"} 1" \
		"app_latency_seconds_sum{svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\"} 0.2" \
		"app_latency_seconds_count{svc=\"orders\",proc=\"gk-limiter\",instance=\"$host:102\"} 1")"
	run promtool check metrics <"$T/m"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	# a newer snapshot of a process replaces its older one
	snap gk-listener 101 orders "$(iso 1)" 2 6 >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q 'instance=\"$host:101\"} 6\$'"
	[ "$(scrape "$eport" | grep -c "^app_requests_total.*instance=\"$host:101\"")" -eq 1 ]
	exec 4>&-
}

@test "a snapshot in several parts is served once every part has come, never half" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	ts=$(iso 0)
	echo '{"ts":"'"$ts"'","type":"metrics","proc":"p","pid":9,"seq":1,"part":1,"parts":2,"metrics":[{"name":"a_total","type":"counter","help":"A","series":[{"labels":{},"value":1}]}]}' >&4
	# part 1 alone: nothing yet (the scrape answers, without a_total);
	# the plugin's events say when it has read the line
	kill -USR1 "$(bg_pid exp)"
	wait_event "$T/exp.err" '.type == "metrics" and any(.metrics[]; .name == "gk_export_events_total" and .series[0].value == 1)' 10
	run scrape "$eport"
	refute_output --partial 'a_total'
	echo '{"ts":"'"$ts"'","type":"metrics","proc":"p","pid":9,"seq":1,"part":2,"parts":2,"metrics":[{"name":"b","type":"gauge","help":"B","series":[{"labels":{},"value":2}]}]}' >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^b{'"
	run scrape "$eport"
	assert_line --partial 'a_total{proc="p",instance='
	assert_line --partial 'b{proc="p",instance='
	exec 4>&-
}

@test "the series of a process gone for 3 of its intervals are dropped, the others stay, one that wrote a snapshot out of turn (SIGUSR1) too" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	# pid 201 reports every second (its interval, from ts), then stops;
	# pid 202 reports every 10 s (the interval is learnt from two).
	snap gone 201 s "$(iso -1)" 1 1 >&4
	snap gone 201 s "$(iso 0)" 2 2 >&4
	snap stays 202 s "$(iso -10)" 1 3 >&4
	snap stays 202 s "$(iso 0)" 2 4 >&4
	# and 0.2 s later one on SIGUSR1: its interval is still 10 s.
	snap stays 202 s "$(iso 0 | sed 's/\.000000Z$/.200000Z/')" 3 5 >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q 'proc=\"gone\"'"
	scrape "$eport" | grep -q 'proc="stays"'
	# after 3 s without a snapshot from 201
	wait_event "$T/exp.err" '.msg == "process gone: its series expired" and .process == "gone"' 20
	run scrape "$eport"
	refute_output --partial 'proc="gone"'
	assert_output --partial 'proc="stays"'
	# the plugin counts what it dropped
	kill -USR1 "$(bg_pid exp)"
	wait_event "$T/exp.err" '.type == "metrics" and any(.metrics[]; .name == "gk_export_prometheus_expired_total" and .series[0].value == 1)' 10
	exec 4>&-
}

@test "a process restarted with the same pid (its seq starts again) keeps its counters and histograms climbing: no increase lost, gauges as they are" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	line='app_requests_total{code="200",svc="s",proc="p",instance="[^"]*:7"}'
	snap p 7 s "$(iso -2)" 1 100 >&4
	snap p 7 s "$(iso -1)" 2 110 >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^$line 110\$'"
	# restarted, same pid: 150 since its start is 110 + 150 in all
	snap p 7 s "$(iso 0)" 1 150 >&4
	printf '{"ts":"%s","type":"metrics","proc":"p","pid":7,"svc":"s","seq":2,"part":1,"parts":1,"metrics":[{"name":"g","type":"gauge","help":"G","series":[{"labels":{},"value":3}]},{"name":"app_requests_total","type":"counter","help":"Requests","series":[{"labels":{"code":"200"},"value":160}]},{"name":"app_latency_seconds","type":"histogram","help":"Latency","series":[{"labels":{},"buckets":[[0.1,0],[0.5,1],["+Inf",1]],"sum":0.2,"count":1}]}]}\n' "$(iso 0)" >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^$line 270\$'"
	# a gauge is as the process says
	scrape "$eport" | grep -qE '^g\{.*\} 3$'
	# and again: 5 more
	snap p 7 s "$(iso 1)" 1 5 >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^$line 275\$'"
	scrape "$eport" >"$T/m"
	run grep -E '^app_latency_seconds_(count|sum|bucket)' "$T/m"
	assert_line --regexp '^app_latency_seconds_bucket\{.*le="0.1"\} 0$'
	assert_line --regexp '^app_latency_seconds_bucket\{.*le="0.5"\} 3$'
	assert_line --regexp '^app_latency_seconds_count\{.*\} 3$'
	assert_line --regexp '^app_latency_seconds_sum\{.*\} 0.6000000000000001$'
	run promtool check metrics <"$T/m"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	wait_event "$T/exp.err" '.msg == "process restarted with the same pid: its counters go on from their last values" and .process == "p"' 10
	exec 4>&-
}

@test "label values are escaped, names sanitised, and labels named like ours renamed exported_*" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	printf '%s\n' '{"ts":"'"$(iso 0)"'","type":"metrics","proc":"p","pid":1,"svc":"s","seq":1,"part":1,"parts":1,"metrics":[{"name":"odd.name-x","type":"gauge","help":"Help with \\ and\nnewline","series":[{"labels":{"path":"a\"b\\c\nd","proc":"theirs","le":"x"},"value":1.5}]},{"name":"hits","type":"counter","help":"","series":[{"labels":{},"value":3}]}]}' >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^odd_name_x'"
	scrape "$eport" >"$T/m"
	run cat "$T/m"
	assert_line '# HELP odd_name_x Help with \\ and\nnewline'
	assert_line --partial 'odd_name_x{path="a\"b\\c\nd",exported_proc="theirs",exported_le="x",svc="s",proc="p",instance='
	# a counter without _total gets it
	assert_line --partial 'hits_total{svc="s",proc="p"'
	run promtool check metrics <"$T/m"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	exec 4>&-
}

@test "histogram buckets a producer listed out of order are served in increasing le, +Inf last; a repeated or NaN le is left out, counted" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" env GK_METRICS_INTERVAL=1 gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	printf '%s\n' '{"ts":"'"$(iso 0)"'","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[{"name":"h","type":"histogram","help":"h","series":[{"labels":{},"buckets":[[1,5],["+Inf",7],[0.1,2],[0.5,4],[0.5,9],["NaN",3],[10,6]],"sum":3,"count":7}]}]}' >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q '^h_count'"
	scrape "$eport" >"$T/m"
	run sh -c "grep '^h_bucket' '$T/m' | sed 's/.*le=\"\\([^\"]*\\)\"} /\\1 /'"
	assert_output '0.1 2
0.5 4
1 5
10 6
+Inf 7'
	run promtool check metrics <"$T/m"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	wait_event "$T/exp.err" '.msg | startswith("metric families, series or labels left out")' 10
	exec 4>&-
}

@test "names that collide once sanitised, series that become one, and one name of two types: the later is left out, counted dropped and logged; promtool is clean" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" env GK_METRICS_INTERVAL=1 gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	# Process 1: labels x_y and x-y on one series; families x_y and x.y;
	# a histogram h and a gauge h_count; series {a.b} and {a_b} of dup,
	# one series once written.  Process 2: shared as a
	# histogram, where process 1 has it as a gauge.
	printf '%s\n' '{"ts":"'"$(iso 0)"'","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[{"name":"lab","type":"gauge","help":"h","series":[{"labels":{"x_y":"1","x-y":"2"},"value":1}]},{"name":"x_y","type":"gauge","help":"h","series":[{"labels":{},"value":1}]},{"name":"x.y","type":"gauge","help":"h","series":[{"labels":{},"value":2}]},{"name":"h","type":"histogram","help":"h","series":[{"labels":{},"buckets":[[1,1],["+Inf",1]],"sum":0.5,"count":1}]},{"name":"h_count","type":"gauge","help":"h","series":[{"labels":{},"value":9}]},{"name":"shared","type":"gauge","help":"h","series":[{"labels":{},"value":1}]},{"name":"dup","type":"gauge","help":"h","series":[{"labels":{"a.b":"1"},"value":1},{"labels":{"a_b":"1"},"value":2}]}]}' >&4
	printf '%s\n' '{"ts":"'"$(iso 0)"'","type":"metrics","proc":"q","pid":2,"seq":1,"part":1,"parts":1,"metrics":[{"name":"shared","type":"histogram","help":"h","series":[{"labels":{},"buckets":[["+Inf",1]],"sum":2,"count":1}]}]}' >&4
	wait_for -t 10 sh -c "curl -sf http://127.0.0.1:$eport/metrics | grep -q 'instance=\"[^\"]*:2\"'"
	scrape "$eport" >"$T/m"
	run promtool check metrics <"$T/m"
	[ "$status" -eq 0 ]
	[ -z "$output" ] || { echo "promtool: $output"; false; }
	run grep -E '^(lab|x_y|h_count|dup)[{ ]' "$T/m"
	assert_line --regexp '^lab\{x_y="1",proc="p",instance="[^"]*:1"\} 1$'
	assert_line --regexp '^x_y\{proc="p",instance="[^"]*:1"\} 1$'
	assert_line --regexp '^h_count\{proc="p",instance="[^"]*:1"\} 1$'
	assert_line --regexp '^dup\{a_b="1",proc="p",instance="[^"]*:1"\} 1$'
	[ "${#lines[@]}" -eq 4 ]
	# shared: one process's, as a gauge or as a histogram, not both.
	[ "$(grep -c '^# TYPE shared ' "$T/m")" -eq 1 ]
	[ "$(grep -cE '^shared(_count)?\{' "$T/m")" -eq 1 ]
	# One label, one family of another name, h_count, a series of dup
	# and the other process's shared: 5 at each scrape; told once a
	# second at most.
	wait_event "$T/exp.err" '.msg | startswith("metric families, series or labels left out")' 10
	exec 4>&-
	kill -TERM "$(bg_pid exp)"
	wait_exit exp 10
	dropped=$(jq -R 'fromjson? | select(.type == "metrics") | .metrics[] | select(.name == "gk_export_dropped_total") | .series[0].value' "$T/exp.err" | tail -n 1)
	[ "$dropped" -gt 0 ]
	[ $((dropped % 5)) -eq 0 ]
}

@test "usage errors exit 64 with one line; --help; SIGTERM exits 0" {
	run gk-export-prometheus --expire 0
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-prometheus -l nowhere:port
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-prometheus --bogus
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-prometheus 127.0.0.1:1 extra
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-prometheus --help
	[ "$status" -eq 0 ]
	assert_output --partial '--expire'
	eport=$(free_port)
	mkfifo "$T/fifo"
	start_in exp "$T/fifo" gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	# A second exporter on the same port fails (the scrapes would
	# otherwise go to one or the other): exit 71, the error said as every
	# program says it.
	run timeout 10 bash -c "gk-export-prometheus -l 127.0.0.1:$eport </dev/null 2>&1"
	[ "$status" -eq 71 ]
	assert_output --partial "unable to bind 127.0.0.1:$eport: Address already in use"
	kill -TERM "$(bg_pid exp)"
	wait_exit exp 10
	[ "$BG_STATUS" -eq 0 ]
	exec 4>&-
}

@test "every plugin: an unknown option or one without its value is one line naming it, exit 64" {
	local p
	for p in file graphite influx kafka loki otlp prometheus pushgateway statsd syslog zipkin; do
		run gk-export-$p --bogus
		[ "$status" -eq 64 ] || { echo "gk-export-$p --bogus: $status"; false; }
		[ "${#lines[@]}" -eq 1 ] || { echo "gk-export-$p --bogus: $output"; false; }
		[ "$output" = "gk-export-$p: usage: unknown option --bogus (see --help)" ]
		run gk-export-$p -Z
		[ "$status" -eq 64 ]
		[ "$output" = "gk-export-$p: usage: unknown option -Z (see --help)" ]
	done
	# an option that takes a value, given none
	for p in "statsd --queue" "graphite --queue" "otlp --timeout" "file --max-size" \
		"syslog --max-message" "kafka --queue-messages" "pushgateway --job" "loki --max-streams"; do
		run gk-export-$p
		[ "$status" -eq 64 ]
		[ "$output" = "gk-export-${p%% *}: usage: ${p#* }: expected a value (see --help)" ] || {
			echo "gk-export-$p: $output"
			false
		}
	done
}

@test "out of file descriptors: scrape connections past the limit are closed at once, no busy loop, and scrapes work once they free" {
	eport=$(free_port)
	mkfifo "$T/fifo"
	# 16 fds: a handful of connections fit; accept(2) then fails with
	# EMFILE and, the connection left queued, the loop woke for it at
	# once, again and again.
	start_in exp "$T/fifo" prlimit --nofile=16 gk-export-prometheus -l "127.0.0.1:$eport"
	exec 4>"$T/fifo"
	wait_port 127.0.0.1 "$eport" 10
	epid=$(pgrep -f -n "gk-export-prometheus -l 127.0.0.1:$eport")
	run python3 - "$eport" "$epid" <<'PY'
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def ticks():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
held, closed = [], 0
for i in range(30):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.append(s)
time.sleep(0.3)
t0 = ticks()
time.sleep(1)
busy = ticks() - t0
for s in held:
    s.settimeout(0.2)
    try:
        if s.recv(1) == b"":
            closed += 1
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed += 1
print("some refused", closed > 0, "some kept", closed < 30)
print("quiet", busy < 30 or busy)
for s in held:
    s.close()
PY
	assert_success
	assert_output $'some refused True some kept True\nquiet True'
	wait_for -t 10 curl -sf -o /dev/null "http://127.0.0.1:$eport/metrics"
	exec 4>&-
}
