#!/usr/bin/env bats
# gk-export-statsd: metrics snapshots of real gokit stacks into the real
# statsd daemon (npm statsd 0.9 under Node, console backend plus a test
# backend that writes each flush as JSON), over UDP on loopback.

load helpers/common
load helpers/metrics-exporters

setup() {
	common_setup
}

teardown() {
	stop_all
}

REQ=gk_http_requests_total.method.GET.code.200.proc.gk-listener
LAT=gk_http_request_duration_seconds.proc.gk-listener

@test "counters reach statsd as deltas that add up to the requests served, and the latency histogram as timers that count them" {
	start_statsd
	PORT=$(free_port)
	start_stack stack "$PORT" gk-exporter statsd "127.0.0.1:$STATSD_PORT"
	hit "$PORT" 7
	wait_eq 7 30 statsd_counter "$REQ"
	wait_eq 7 30 statsd_timer_count "$LAT"
	hit "$PORT" 4
	wait_eq 11 30 statsd_counter "$REQ"
	wait_eq 11 30 statsd_timer_count "$LAT"
	# Each request took well under a second: the timers are milliseconds
	# within the histogram's first buckets, not seconds, not negative.
	run jq -s --arg k "$LAT" '[.[].timers[$k] // [] | .[]] | all(. >= 0 and . < 1000)' "$STATSD_FLUSH"
	assert_output true
	# Gauges as they are: the listener's bound on connections.
	run statsd_gauge gk_http_max_connections.proc.gk-listener
	assert_output 16384
	# Nothing statsd could not read.
	run jq -s 'map(.counters["statsd.bad_lines_seen"] // 0) | add' "$STATSD_FLUSH"
	assert_output 0
	# Every delta was positive: counters never go backwards in statsd.
	run bash -c "statsd_lines() { sed -n 's/^.* - DEBUG: //p' '$T/statsd.out'; }; statsd_lines | grep -c '^$REQ:-'"
	assert_output 0
}

@test "a process that restarted (even with the same pid) counts from zero: never a negative delta, nothing lost when its counters climb back past the old values" {
	start_statsd
	record_stack "$T/run1.jsonl" 3
	record_stack "$T/run2.jsonl" 2
	# The second run as if its processes had the pids of the first.
	pid1=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run1.jsonl" | head -n 1)
	hpid1=$(jq -r 'select(.proc == "hello") | .pid' "$T/run1.jsonl" | head -n 1)
	jq -c --argjson p "$pid1" --argjson h "$hpid1" \
		'if .proc == "gk-listener" then .pid = $p elif .proc == "hello" then .pid = $h else . end' \
		"$T/run2.jsonl" >"$T/run2same.jsonl"
	cat "$T/run1.jsonl" "$T/run2same.jsonl" |
		gk-export-statsd "127.0.0.1:$STATSD_PORT" 2>"$T/plugin.err"
	wait_eq 5 30 statsd_counter "$REQ"
	wait_eq 5 30 statsd_timer_count "$LAT"
	run bash -c "sed -n 's/^.* - DEBUG: //p' '$T/statsd.out' | grep -c ':-'"
	assert_output 0
	# And with the real, different pids of the restart: the same sum.
	cat "$T/run1.jsonl" "$T/run2.jsonl" |
		gk-export-statsd "127.0.0.1:$STATSD_PORT" 2>"$T/plugin2.err"
	wait_eq 10 30 statsd_counter "$REQ"
	# Restarted with the same pids (a container restarted), it served as
	# many requests again: its counters are back where they were, not
	# below, and every count is still new (its seq went back to 1).
	cat "$T/run1.jsonl" "$T/run1.jsonl" |
		gk-export-statsd "127.0.0.1:$STATSD_PORT" 2>"$T/plugin3.err"
	wait_eq 16 30 statsd_counter "$REQ"
	wait_eq 16 30 statsd_timer_count "$LAT"
}

@test "the first snapshot of a process already running when the plugin started is a baseline, not a burst of old counts" {
	start_statsd
	record_stack "$T/run.jsonl" 4
	# Without the first snapshot of each process: the plugin joins late
	# and must not send the 4 requests it never saw happen, although the
	# snapshots it gets hold them.
	jq -c 'select(.type != "metrics" or .seq > 1)' "$T/run.jsonl" >"$T/late.jsonl"
	run jq -c 'select(.type == "metrics" and .proc == "gk-listener") | .metrics[] | select(.name == "gk_http_requests_total") | .series[0].value' "$T/late.jsonl"
	assert_line 4
	gk-export-statsd "127.0.0.1:$STATSD_PORT" <"$T/late.jsonl" 2>"$T/plugin.err"
	# Still process its gauges: they prove the packets arrived.
	wait_for -t 30 grep -q 'gk_http_max_connections.proc.gk-listener:16384|g' "$T/statsd.out"
	# Let statsd flush what it got.
	statsd_flushed
	run statsd_counter "$REQ"
	assert_output 0
}

@test "a histogram's buckets weigh in statsd's mean and percentiles as their observations do, not a line each; counts stay exact past --timer-lines" {
	start_statsd
	# 90 requests within 0.1 s and 10 between 0.1 and 1 s (a); the same
	# times a hundred (b), more observations than --timer-lines (100).
	printf '%s\n' '{"ts":"2026-12-05T10:00:01Z","type":"metrics","proc":"w","pid":7,"seq":1,"part":1,"parts":1,"metrics":[{"name":"lat_seconds","type":"histogram","help":"","series":[{"labels":{"k":"a"},"buckets":[[0.1,90],[1,100],["+Inf",100]],"sum":10,"count":100},{"labels":{"k":"b"},"buckets":[[0.1,9000],[1,10000],["+Inf",10000]],"sum":1000,"count":10000}]}]}' |
		gk-export-statsd "127.0.0.1:$STATSD_PORT" 2>"$T/plugin.err"
	wait_eq 100 30 statsd_timer_count lat_seconds.k.a.proc.w
	wait_eq 10000 30 statsd_timer_count lat_seconds.k.b.proc.w
	# Each bucket's value is its middle: 50 ms and 550 ms, 9 to 1.
	for k in a b; do
		run jq -s -c --arg k "lat_seconds.k.$k.proc.w" 'map(.timer_data[$k] // empty) | .[0] | [.mean, .median, .upper_90]' "$STATSD_FLUSH"
		assert_output '[100,50,50]'
	done
}

@test "--dogstatsd sends labels as |#k:v tags and histograms as distributions (|d)" {
	start_statsd
	PORT=$(free_port)
	start_stack stack "$PORT" gk-export-statsd --dogstatsd --prefix app "127.0.0.1:$STATSD_PORT"
	hit "$PORT" 5
	# statsd 0.9 reads DogStatsD tags into its key as ;k=v.
	wait_eq 5 30 statsd_counter 'app.gk_http_requests_total;method=GET;code=200;proc=gk-listener'
	run bash -c "sed -n 's/^.* - DEBUG: //p' '$T/statsd.out' | grep '^app.gk_http_request_duration_seconds:' | head -n 1"
	assert_output --regexp '^app\.gk_http_request_duration_seconds:[0-9.e-]+\|d(\|@[0-9.]+)?\|#proc:gk-listener$'
	run bash -c "sed -n 's/^.* - DEBUG: //p' '$T/statsd.out' | grep -c '^app.gk_http_requests_total:[0-9]*|c|#method:GET,code:200,proc:gk-listener$'"
	[ "$output" -ge 1 ]
}

@test "datagrams stay within --max-packet, hold several lines, and never split a line" {
	UPORT=$(free_udp_port)
	start_bg sink python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
with open(sys.argv[2], "a") as f:
    while True:
        d = s.recv(65536)
        f.write("%d %s\n" % (len(d), d.decode().replace("\n", "\\n")))
        f.flush()
' "$UPORT" "$T/packets"
	wait_for -t 10 bash -c "ss -uln | grep -q ':$UPORT '"
	record_stack "$T/run.jsonl" 3
	gk-export-statsd --max-packet 300 "127.0.0.1:$UPORT" <"$T/run.jsonl" 2>"$T/plugin.err"
	wait_file "$T/packets"
	# What the plugin counted as sent, the sink received.
	sent=$(jq -R 'fromjson? | select(.type == "metrics" and .proc == "gk-export-statsd") | .metrics[] | select(.name == "gk_export_sent_total") | .series[0].value' "$T/plugin.err" | tail -n 1)
	[ "$sent" -gt 1 ]
	wait_for -t 10 test "$(wc -l <"$T/packets")" -eq "$sent"
	# Every datagram at most 300 bytes; most hold several lines.
	run awk '$1 > 300' "$T/packets"
	assert_output ""
	run awk '$2 ~ /\\n/' "$T/packets"
	[ "${#lines[@]}" -ge 1 ]
	# Every line whole: NAME:VALUE|TYPE[|@RATE].
	run bash -c "cut -d' ' -f2- '$T/packets' | sed 's/\\\\n/\n/g' | grep -Evc '^[A-Za-z0-9_.-]+:-?[0-9.e+-]+\|(c|g|ms)(\|@[0-9.]+)?$'"
	assert_output 0
}

@test "two series that fold to one statsd bucket are not merged: the first keeps it, the other is refused, counted and told" {
	start_statsd
	# jobs.done and jobs_done both fold to jobs_done; so do the label
	# values x.y and x_y of one gauge.
	snap() {
		printf '{"ts":"2026-12-05T10:00:0%sZ","type":"metrics","proc":"worker","pid":4242,"seq":%s,"part":1,"parts":1,"metrics":[' "$1" "$1"
		printf '{"name":"jobs.done","type":"counter","help":"","series":[{"labels":{},"value":%s}]},' "$2"
		printf '{"name":"jobs_done","type":"counter","help":"","series":[{"labels":{},"value":%s}]},' "$3"
		printf '{"name":"depth","type":"gauge","help":"","series":[{"labels":{"q":"x.y"},"value":-2},{"labels":{"q":"x_y"},"value":7}]}]}\n'
	}
	{ snap 1 3 5; snap 2 4 9; } >"$T/snaps.jsonl"
	GK_EVENTS_FORMAT=json gk-export-statsd "127.0.0.1:$STATSD_PORT" <"$T/snaps.jsonl" 2>"$T/plugin.err"
	# 3, then 1 more: jobs.done's increases only, never jobs_done's.
	wait_eq 4 30 statsd_counter jobs_done.proc.worker
	run bash -c "sed -n 's/^.* - DEBUG: //p' '$T/statsd.out' | grep '^jobs_done.proc.worker:'"
	assert_output "$(printf 'jobs_done.proc.worker:3|c\njobs_done.proc.worker:1|c')"
	run statsd_gauge depth.q.x_y.proc.worker
	assert_output -- -2
	# Two series refused in each of the two snapshots.
	run jq -R 'fromjson? | select(.type == "metrics") | .metrics[] | select(.name == "gk_export_statsd_skipped_total") | .series[] | select(.labels.reason == "collision") | .value' "$T/plugin.err"
	assert_output 4
	run grep -c 'same statsd bucket' "$T/plugin.err"
	assert_output 1
	run grep -c '"bucket":"jobs_done.proc.worker","count":1' "$T/plugin.err"
	assert_output 1
}

@test "bad options are one-line usage errors with exit 64" {
	run gk-export-statsd --max-packet 10
	assert_failure 64
	assert_output --partial "gk-export-statsd: "
	assert_output --partial "--max-packet"
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-statsd 'udp:nohost'
	assert_failure 64
	run gk-export-statsd --timer-lines 0
	assert_failure 64
	assert_output --partial "--timer-lines"
	run gk-export-statsd --help
	assert_success
	assert_output --partial "usage: gk-export-statsd"
	run gk-export-statsd --version
	assert_success
}
