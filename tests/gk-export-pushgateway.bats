#!/usr/bin/env bats
# gk-export-pushgateway: the latest snapshot of each process PUT to a real
# Prometheus Pushgateway (Debian prometheus-pushgateway, no persistence
# file, on a free port), checked on its /metrics and /api/v1/metrics.

load helpers/common
load helpers/metrics-exporters

setup() {
	common_setup
}

teardown() {
	stop_all
}

# pgw_value SELECTOR: the value of the sample whose line starts with
# SELECTOR on the pushgateway's /metrics ("none" when absent).
pgw_value() {
	local v
	v=$(curl -s -m 5 "http://127.0.0.1:$PGW_PORT/metrics" |
		awk -v s="$1" 'index($0, s) == 1 {print $NF}' | tail -n 1)
	echo "${v:-none}"
}

# pgw_groups: the groups the pushgateway holds, as job/instance lines.
pgw_groups() {
	curl -s -m 5 "http://127.0.0.1:$PGW_PORT/api/v1/metrics" |
		jq -r '.data[].labels | "\(.job)/\(.instance)"' | sort
}

@test "a live stack's snapshots replace its groups: values arrive with job and instance from the group, proc as a label" {
	start_pushgateway
	PORT=$(free_port)
	start_stack stack "$PORT" gk-exporter pushgateway "http://127.0.0.1:$PGW_PORT"
	hit "$PORT" 4
	lpid=$(pgrep -x -s "$(bg_pid stack)" gk-listener)
	host=$(hostname)
	sel="gk_http_requests_total{code=\"200\",instance=\"$host:$lpid\",job=\"gokit\",method=\"GET\",proc=\"gk-listener\"}"
	wait_eq 4 30 pgw_value "$sel"
	wait_eq 4 30 pgw_value "gk_http_request_duration_seconds_count{instance=\"$host:$lpid\",job=\"gokit\",proc=\"gk-listener\"}"
	hit "$PORT" 3
	wait_eq 7 30 pgw_value "$sel"
	# One group per process of the stack: the listener and hello.
	run pgw_groups
	assert_line "gokit/$host:$lpid"
	[ "${#lines[@]}" -eq 2 ]
}

@test "GK_SERVICE names the job, and --job overrides it; a label value with a slash, or one that is a dot segment (..), goes in base64 in the group URL" {
	start_pushgateway
	record_stack "$T/run.jsonl" 2
	jq -c '.svc = "shop/eu"' "$T/run.jsonl" >"$T/svc.jsonl"
	gk-export-pushgateway "http://127.0.0.1:$PGW_PORT" <"$T/svc.jsonl" 2>"$T/p1.err"
	gk-export-pushgateway --job batch "http://127.0.0.1:$PGW_PORT/" <"$T/run.jsonl" 2>"$T/p2.err"
	gk-export-pushgateway --job .. "http://127.0.0.1:$PGW_PORT" <"$T/run.jsonl" 2>"$T/p3.err"
	run pgw_groups
	lpid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	assert_line "shop/eu/$(hostname):$lpid"
	assert_line "batch/$(hostname):$lpid"
	assert_line "../$(hostname):$lpid"
	run pgw_value "gk_http_requests_total{code=\"200\",instance=\"$(hostname):$lpid\",job=\"shop/eu\",method=\"GET\",proc=\"gk-listener\",svc=\"shop/eu\"}"
	assert_output 2
}

@test "a push is a PUT: what the group held before and the snapshot lacks is gone" {
	start_pushgateway
	record_stack "$T/run.jsonl" 2
	lpid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	group="http://127.0.0.1:$PGW_PORT/metrics/job/gokit/instance/$(hostname):$lpid"
	printf 'stale_metric 42\n' | curl -s -f --data-binary @- "$group"
	run pgw_value "stale_metric{instance=\"$(hostname):$lpid\",job=\"gokit\"}"
	assert_output 42
	gk-export-pushgateway "http://127.0.0.1:$PGW_PORT" <"$T/run.jsonl" 2>"$T/plugin.err"
	run pgw_value "stale_metric{instance=\"$(hostname):$lpid\",job=\"gokit\"}"
	assert_output none
	run pgw_value "gk_http_requests_total{code=\"200\",instance=\"$(hostname):$lpid\",job=\"gokit\",method=\"GET\",proc=\"gk-listener\"}"
	assert_output 2
}

@test "pushes are bounded by --min-interval: snapshots in between are coalesced and counted, and the newest is pushed at the end" {
	start_pushgateway
	record_stack "$T/run.jsonl" 3 4
	lsnaps=$(jq -s 'map(select(.type == "metrics" and .proc == "gk-listener")) | length' "$T/run.jsonl")
	hsnaps=$(jq -s 'map(select(.type == "metrics" and .proc == "hello")) | length' "$T/run.jsonl")
	[ "$lsnaps" -ge 4 ]
	# All snapshots arrive at once: each process is pushed once now, its
	# later snapshots wait, each replacing the one before, and the last
	# is pushed when input ends.
	GK_METRICS_INTERVAL=0 gk-export-pushgateway --min-interval 1h "http://127.0.0.1:$PGW_PORT" <"$T/run.jsonl" 2>"$T/plugin.err"
	run own_metric "$T/plugin.err" gk_export_pushgateway_pushes_total
	assert_output 4
	run own_metric "$T/plugin.err" gk_export_pushgateway_coalesced_total
	assert_output $((lsnaps + hsnaps - 4))
	lpid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	run pgw_value "gk_http_requests_total{code=\"200\",instance=\"$(hostname):$lpid\",job=\"gokit\",method=\"GET\",proc=\"gk-listener\"}"
	assert_output 3
}

@test "a process restarted with the same pid (its seq starts again) keeps its counter climbing in the Pushgateway: no increase lost" {
	start_pushgateway
	snap() {
		printf '{"ts":"%s","type":"metrics","proc":"p","pid":7,"svc":"s","seq":%s,"part":1,"parts":1,"metrics":[{"name":"app_requests_total","type":"counter","help":"Requests","series":[{"labels":{},"value":%s}]}]}\n' \
			"$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)" "$1" "$2"
	}
	# 100, 110, then restarted with the same pid: 150 since its start,
	# 260 in all, pushed when input ends
	{ snap 1 100; snap 2 110; snap 1 150; } >"$T/in"
	GK_METRICS_INTERVAL=0 gk-export-pushgateway --min-interval 1h "http://127.0.0.1:$PGW_PORT" <"$T/in" 2>"$T/plugin.err"
	run pgw_value "app_requests_total{instance=\"$(hostname):7\",job=\"s\",proc=\"p\",svc=\"s\"}"
	assert_output 260
	run own_metric "$T/plugin.err" gk_export_pushgateway_restarts_total
	assert_output 1
}

@test "the group of a process that stops sending snapshots is deleted after --expire intervals" {
	start_pushgateway
	record_stack "$T/run.jsonl" 1 2
	lpid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	fifo_plugin plugin gk-export-pushgateway --expire 3 "http://127.0.0.1:$PGW_PORT"
	cat "$T/run.jsonl" >&8
	wait_for -t 20 bash -c "curl -s http://127.0.0.1:$PGW_PORT/api/v1/metrics | grep -q '$(hostname):$lpid'"
	# The snapshots were a second apart: 3 s without one, and it is gone.
	wait_metric_ge "$T/plugin.err" gk_export_pushgateway_deleted_total 2 30
	run pgw_groups
	assert_output ""
	run jq -R -r 'fromjson? | select(.msg == "process gone quiet: deleting its group") | .process' "$T/plugin.err"
	assert_line gk-listener
	assert_line hello
}

@test "a snapshot written out of turn (SIGUSR1) does not shorten a process's interval: its group stays while one gone quiet is deleted" {
	start_pushgateway
	# snap PROC PID SECONDS_FROM_NOW SEQ: a snapshot of one counter.
	snap() {
		printf '{"ts":"%s","type":"metrics","proc":"%s","pid":%s,"seq":%s,"part":1,"parts":1,"metrics":[{"name":"app_requests_total","type":"counter","help":"Requests","series":[{"labels":{},"value":%s}]}]}\n' \
			"$(date -u -d "@$(($(date +%s) + $3))" +%Y-%m-%dT%H:%M:%S.000000Z | sed "s/\.000000Z/.${5:-000000}Z/")" "$1" "$2" "$4" "$4"
	}
	fifo_plugin plugin gk-export-pushgateway --expire 3 "http://127.0.0.1:$PGW_PORT"
	# gone: every second, then nothing; stays: every 10 s, and one
	# snapshot on SIGUSR1 0.2 s after the last.
	{
		snap gone 301 -1 1
		snap gone 301 0 2
		snap stays 302 -10 1
		snap stays 302 0 2
		snap stays 302 0 3 200000
	} >&8
	host=$(hostname)
	wait_for -t 20 bash -c "curl -s http://127.0.0.1:$PGW_PORT/api/v1/metrics | grep -q '$host:302'"
	wait_metric_ge "$T/plugin.err" gk_export_pushgateway_deleted_total 1 30
	run pgw_groups
	assert_output "gokit/$host:302"
	run own_metric "$T/plugin.err" gk_export_pushgateway_deleted_total
	assert_output 1
	exec 8>&-
}

@test "while the pushgateway is down pushes are retried, and the newest snapshot arrives once it starts" {
	record_stack "$T/run.jsonl" 5 2
	PGW_PORT=$(free_port)
	fifo_plugin plugin gk-export-pushgateway --expire 1000 "http://127.0.0.1:$PGW_PORT"
	cat "$T/run.jsonl" >&8
	wait_metric_ge "$T/plugin.err" gk_export_errors_total 2
	start_pushgateway_on
	lpid=$(jq -r 'select(.proc == "gk-listener") | .pid' "$T/run.jsonl" | head -n 1)
	wait_eq 5 30 pgw_value "gk_http_requests_total{code=\"200\",instance=\"$(hostname):$lpid\",job=\"gokit\",method=\"GET\",proc=\"gk-listener\"}"
	wait_metric_ge "$T/plugin.err" gk_export_reconnects_total 1
}

@test "a push the pushgateway refuses (a metric of another type in another group) is logged with its reason and counted" {
	start_pushgateway
	# Another group already holds gk_http_requests_total as a gauge.
	printf '# TYPE gk_http_requests_total gauge\ngk_http_requests_total 1\n' |
		curl -s -f --data-binary @- "http://127.0.0.1:$PGW_PORT/metrics/job/other"
	record_stack "$T/run.jsonl" 1
	gk-export-pushgateway "http://127.0.0.1:$PGW_PORT" <"$T/run.jsonl" 2>"$T/plugin.err"
	run jq -R -r 'fromjson? | select(.msg == "push rejected") | "\(.status) \(.error)"' "$T/plugin.err"
	assert_line --index 0 --partial "400 "
	assert_line --index 0 --partial "gk_http_requests_total"
	rejected=$(own_metric "$T/plugin.err" gk_export_pushgateway_rejected_total)
	[ "$rejected" -ge 1 ]
	run own_metric "$T/plugin.err" gk_export_dropped_total
	assert_output "$rejected"
	# hello's snapshots hold no such metric: its group was accepted.
	hpid=$(jq -r 'select(.proc == "hello") | .pid' "$T/run.jsonl" | head -n 1)
	run pgw_groups
	assert_line "gokit/$(hostname):$hpid"
}

@test "series that are one once written ({a.b} and {a_b}) are pushed once, the later left out and counted: the Pushgateway takes the snapshot, not a 400 for all of it; a half snapshot before it is counted incomplete" {
	start_pushgateway
	# Before it, part 1 of 2 of a snapshot whose part 2 never came.
	printf '%s\n' '{"ts":"2026-12-05T09:59:59.000000Z","type":"metrics","proc":"p","pid":401,"seq":1,"part":1,"parts":2,"metrics":[{"name":"app_up","type":"gauge","help":"Up","series":[{"labels":{},"value":0}]}]}' >"$T/in.jsonl"
	printf '%s\n' '{"ts":"2026-12-05T10:00:00.000000Z","type":"metrics","proc":"p","pid":401,"seq":2,"part":1,"parts":1,"metrics":[{"name":"app_jobs","type":"gauge","help":"Jobs","series":[{"labels":{"a.b":"1"},"value":1},{"labels":{"a_b":"1"},"value":2}]},{"name":"app_up","type":"gauge","help":"Up","series":[{"labels":{},"value":1}]}]}' >>"$T/in.jsonl"
	gk-export-pushgateway "http://127.0.0.1:$PGW_PORT" <"$T/in.jsonl" 2>"$T/plugin.err"
	host=$(hostname)
	run pgw_value "app_up{instance=\"$host:401\",job=\"gokit\",proc=\"p\"}"
	assert_output 1
	run pgw_value "app_jobs{a_b=\"1\",instance=\"$host:401\",job=\"gokit\",proc=\"p\"}"
	assert_output 1
	run own_metric "$T/plugin.err" gk_export_pushgateway_rejected_total
	assert_output 0
	run own_metric "$T/plugin.err" gk_export_dropped_total
	assert_output 1
	# The half snapshot was given up, and counted.
	run own_metric "$T/plugin.err" gk_export_pushgateway_incomplete_total
	assert_output 1
}

@test "bad options are one-line usage errors with exit 64" {
	run gk-export-pushgateway --min-interval soon
	assert_failure 64
	assert_output --partial "gk-export-pushgateway: "
	assert_output --partial "--min-interval"
	[ "${#lines[@]}" -eq 1 ]
	run gk-export-pushgateway ftp://x
	assert_failure 64
	run gk-export-pushgateway --job ''
	assert_failure 64
	run gk-export-pushgateway --help
	assert_success
	assert_output --partial "usage: gk-export-pushgateway"
}
