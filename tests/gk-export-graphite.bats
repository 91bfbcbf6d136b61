#!/usr/bin/env bats
# gk-export-graphite: metrics snapshots of real gokit stacks into a real
# carbon-cache (Debian graphite-carbon, its own carbon.conf in a temp dir),
# checked in the whisper files it writes (whisper-fetch).

load helpers/common
load helpers/metrics-exporters

setup() {
	common_setup
}

teardown() {
	stop_all
}

REQ=gk.gk_http_requests_total.method.GET.code.200.proc.gk-listener

@test "a live stack's counters, gauges and histogram buckets land in whisper under --prefix, labels folded into the path, timestamps in seconds" {
	start_carbon
	PORT=$(free_port)
	start_stack stack "$PORT" gk-exporter graphite --prefix gk "127.0.0.1:$CARBON_PORT"
	hit "$PORT" 6
	wait_eq 6 30 wsp_last "$REQ"
	wait_eq 6 30 wsp_last gk.gk_http_request_duration_seconds_count.proc.gk-listener
	wait_eq 6 30 wsp_last gk.gk_http_request_duration_seconds_bucket.le._Inf.proc.gk-listener
	run wsp_last gk.gk_http_max_connections.proc.gk-listener
	assert_output 16384
	# The hello handler's own series, under its proc.
	[ -f "$(wsp gk.process_open_fds.proc.hello)" ]
	# Points stamped with the snapshot's second: within the last 10 min.
	now=$(date +%s)
	run bash -c "whisper-fetch --from=0 '$(wsp "$REQ")' | awk '\$2 != \"None\" {print \$1}' | tail -n 1"
	[ "$output" -le "$now" ]
	[ "$output" -ge $((now - 600)) ]
	hit "$PORT" 3
	wait_eq 9 30 wsp_last "$REQ"
}

# long_values DIR: the values carbon stored under DIR (a path's
# directory in $CARBON_WSP), each file's last, sorted.
long_values() {
	local f
	find "$CARBON_WSP/$1" -name '*.wsp' | while read -r f; do
		whisper-fetch --from=0 "$f" 2>/dev/null |
			awk '$2 != "None" {v = $2} END {printf "%.15g\n", v}'
	done | sort | tr '\n' ' '
}

@test "label values with dots, spaces, slashes and quotes fold into safe path components; one longer than a file name may be is cut, not lost" {
	start_carbon
	record_stack "$T/run.jsonl" 2
	# The recorded snapshots, with a label value no path may hold as is.
	jq -c 'if .type == "metrics" then .metrics |= map(if .name == "gk_http_requests_total" then .series |= map(.labels.method = "a.b c/d\"e") else . end) else . end' \
		"$T/run.jsonl" >"$T/odd.jsonl"
	gk-export-graphite --prefix odd "127.0.0.1:$CARBON_PORT" <"$T/odd.jsonl" 2>"$T/plugin.err"
	wait_eq 2 30 wsp_last odd.gk_http_requests_total.method.a_b_c_d_e.code.200.proc.gk-listener
	# No other file was made for that series.
	run bash -c "find '$CARBON_WSP/odd/gk_http_requests_total' -name '*.wsp' | wc -l"
	assert_output 1
	# Two label values of 301 bytes, alike but for the last: carbon
	# cannot make a directory of such a name, and lost their points.
	long=$(printf 'v%.0s' $(seq 300))
	printf '{"ts":"%s","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[{"name":"m_long","type":"gauge","help":"h","series":[{"labels":{"path":"%sa"},"value":1},{"labels":{"path":"%sb"},"value":2}]}]}\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$long" "$long" |
		GK_METRICS_INTERVAL=0 gk-export-graphite --prefix odd "127.0.0.1:$CARBON_PORT" 2>"$T/long.err"
	wait_eq "1 2 " 30 long_values odd/m_long
	run bash -c "ls '$CARBON_WSP/odd/m_long/path' | awk '{print length(\$0), substr(\$0, 230, 5)}'"
	assert_output '250 vvvv_
250 vvvv_'
	run own_metric "$T/long.err" gk_export_graphite_cut_total
	assert_output 2
}

@test "two series whose labels fold to one path, in one part of a snapshot or two: the first is sent, the other counted, not left to overwrite it" {
	start_carbon
	record_stack "$T/run.jsonl" 2
	# Each snapshot's request counter as two series: method "a.b" (its
	# value) and "a_b" (value 999), which fold alike.
	jq -c 'if .type == "metrics" then .metrics |= map(if .name == "gk_http_requests_total" then .series |= (map(.labels.method = "a.b") | . + [.[0] | .labels.method = "a_b" | .value = 999]) else . end) else . end' \
		"$T/run.jsonl" >"$T/fold.jsonl"
	n=$(jq -s 'map(select(.type == "metrics" and any(.metrics[]; .name == "gk_http_requests_total"))) | length' "$T/fold.jsonl")
	gk-export-graphite --prefix fold "127.0.0.1:$CARBON_PORT" <"$T/fold.jsonl" 2>"$T/plugin.err"
	wait_eq 2 30 wsp_last fold.gk_http_requests_total.method.a_b.code.200.proc.gk-listener
	run own_metric "$T/plugin.err" gk_export_graphite_collisions_total
	assert_output "$n"
	run bash -c "whisper-fetch --from=0 '$(wsp fold.gk_http_requests_total.method.a_b.code.200.proc.gk-listener)' | awk '\$2 != \"None\" && \$2 + 0 == 999' | wc -l"
	assert_output 0
	# A family split across two parts of one snapshot (metrics.c splits
	# a snapshot into lines a pipe writes whole), another process's event
	# between them: the second series is a collision too.
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	{
		printf '{"ts":"%s","type":"metrics","proc":"q","pid":1,"seq":1,"part":1,"parts":2,"metrics":[{"name":"split","type":"gauge","help":"h","series":[{"labels":{"m":"a.b"},"value":1}]}]}\n' "$now"
		printf '{"ts":"%s","type":"metrics","proc":"r","pid":2,"seq":5,"part":1,"parts":1,"metrics":[{"name":"split","type":"gauge","help":"h","series":[{"labels":{"m":"a.b"},"value":2}]}]}\n' "$now"
		printf '{"ts":"%s","type":"metrics","proc":"q","pid":1,"seq":1,"part":2,"parts":2,"metrics":[{"name":"split","type":"gauge","help":"h","series":[{"labels":{"m":"a_b"},"value":999}]}]}\n' "$now"
	} | GK_METRICS_INTERVAL=0 gk-export-graphite --prefix fold "127.0.0.1:$CARBON_PORT" 2>"$T/split.err"
	run own_metric "$T/split.err" gk_export_graphite_collisions_total
	assert_output 1
	wait_eq 2 30 wsp_last fold.split.m.a_b.proc.r
	wait_eq 1 30 wsp_last fold.split.m.a_b.proc.q
}

@test "while carbon is down points are queued, and they all arrive once it starts, with a reconnection counted" {
	record_stack "$T/run.jsonl" 5
	CARBON_PORT=$(free_port)
	fifo_plugin plugin gk-export-graphite --prefix q --backoff-max 300ms "127.0.0.1:$CARBON_PORT"
	cat "$T/run.jsonl" >&8
	# Every snapshot read and turned into points, none sent.
	n=$(jq -s 'map(select(.type == "metrics")) | length' "$T/run.jsonl")
	wait_for -t 20 _metric_ge "$T/plugin.err" gk_export_events_total "$(wc -l <"$T/run.jsonl")"
	wait_metric_ge "$T/plugin.err" gk_export_queue_bytes 1
	[ "$(own_metric "$T/plugin.err" gk_export_sent_total)" = 0 ]
	wait_metric_ge "$T/plugin.err" gk_export_errors_total 1
	start_carbon
	# The listener's snapshots: one point per distinct second.
	secs=$(jq -r 'select(.type == "metrics" and .proc == "gk-listener") | .ts[0:19]' "$T/run.jsonl" | sort -u | wc -l)
	wait_eq "$secs" 30 wsp_count q.gk_http_requests_total.method.GET.code.200.proc.gk-listener
	run wsp_last q.gk_http_requests_total.method.GET.code.200.proc.gk-listener
	assert_output 5
	wait_metric_ge "$T/plugin.err" gk_export_reconnects_total 1
	points=$(own_metric "$T/plugin.err" gk_export_graphite_points_total)
	wait_eq "$points" 20 own_metric "$T/plugin.err" gk_export_sent_total
	run own_metric "$T/plugin.err" gk_export_dropped_total
	assert_output 0
	[ "$n" -gt 0 ]
}

@test "past --queue the oldest points are dropped and counted; the newest arrive once carbon starts" {
	# Three snapshots a second apart, then the one at exit.
	record_stack "$T/run.jsonl" 4 3
	CARBON_PORT=$(free_port)
	fifo_plugin plugin gk-export-graphite --prefix b --queue 4k --backoff-max 300ms "127.0.0.1:$CARBON_PORT"
	cat "$T/run.jsonl" >&8
	wait_metric_ge "$T/plugin.err" gk_export_dropped_total 1
	# The queue stays within its bound.
	run jq -R -r 'fromjson? | select(.type == "metrics") | .metrics[] | select(.name == "gk_export_queue_bytes") | .series[0].value' "$T/plugin.err"
	for v in "${lines[@]}"; do [ "$v" -le 4096 ]; done
	start_carbon
	# The exit snapshot of the listener was among the last events: its
	# points were kept and arrive.
	wait_eq 4 30 wsp_last b.gk_http_requests_total.method.GET.code.200.proc.gk-listener
	# Every point is accounted for: sent or dropped.
	wait_for -t 20 _all_accounted "$T/plugin.err"
	dropped=$(own_metric "$T/plugin.err" gk_export_dropped_total)
	[ "$dropped" -gt 0 ]
	# The first snapshot of the stack was dropped: its second is missing.
	first=$(jq -r 'select(.type == "metrics" and .proc == "hello") | .ts' "$T/run.jsonl" | head -n 1)
	first_s=$(date -d "$first" +%s)
	run bash -c "whisper-fetch --from=0 '$(wsp b.process_open_fds.proc.hello)' | awk '\$1 == $first_s && \$2 != \"None\"'"
	assert_output ""
}

_all_accounted() {
	local p s d
	p=$(own_metric "$1" gk_export_graphite_points_total)
	s=$(own_metric "$1" gk_export_sent_total)
	d=$(own_metric "$1" gk_export_dropped_total)
	[ "$p" -gt 0 ] && [ $((s + d)) -eq "$p" ]
}

@test "a carbon that accepts and never reads: at the drain timeout what is still queued is counted dropped, sent + dropped = points, the queue gauge is 0, exit 0" {
	# 2000 snapshots of 100 series: about 7 MB of points, more than
	# the kernel's buffers and --queue hold.
	python3 -c '
import json
for i in range(2000):
    s = [{"labels": {"k": "v%d" % j}, "value": i} for j in range(100)]
    print(json.dumps({"ts": "2026-12-04T09:30:01Z", "type": "metrics", "proc": "p",
        "pid": 1, "seq": i + 1, "part": 1, "parts": 1,
        "metrics": [{"name": "m", "type": "gauge", "help": "h", "series": s}]}))' >"$T/big.jsonl"
	PORT=$(free_port)
	start_bg stuck python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
conns = []
while True:
    conns.append(s.accept()[0])' "$PORT"
	wait_port 127.0.0.1 "$PORT" 20
	start_bg_in "$T/big.jsonl" plugin env GK_EXPORT_DRAIN_TIMEOUT=1s \
		gk-export-graphite --queue 1MiB "127.0.0.1:$PORT"
	wait_exit plugin 60
	[ "$BG_STATUS" = 0 ]
	[ "$(count_events "$T/plugin.err" '.msg == "drain timeout: pending records dropped" and .records > 0')" = 1 ]
	points=$(own_metric "$T/plugin.err" gk_export_graphite_points_total)
	sent=$(own_metric "$T/plugin.err" gk_export_sent_total)
	dropped=$(own_metric "$T/plugin.err" gk_export_dropped_total)
	echo "points=$points sent=$sent dropped=$dropped"
	[ "$points" = 200000 ]
	[ $((sent + dropped)) -eq "$points" ]
	[ "$(own_metric "$T/plugin.err" gk_export_queue_bytes)" = 0 ]
}

@test "bad options are one-line usage errors with exit 64" {
	run gk-export-graphite --queue nonsense
	assert_failure 64
	assert_output --partial "gk-export-graphite: "
	assert_output --partial "--queue"
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-graphite --backoff-max 1ms
	assert_failure 64
	run gk-export-graphite 127.0.0.1:1 extra
	assert_failure 64
	run gk-export-graphite --help
	assert_success
	assert_output --partial "usage: gk-export-graphite"
}
