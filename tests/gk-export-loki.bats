#!/usr/bin/env bats
# gk-export-loki.  Debian has no Loki server, so these tests check the
# plugin against Loki's documented push API (POST /loki/api/v1/push,
# Content-Type: application/json, {"streams":[{"stream":{labels},
# "values":[["<unix ns as a string>","<line>"], ...]}]}, 204 on success)
# with a small loopback HTTP sink (python3's http.server, in
# helpers/log-exporters.bash) that records each request and answers with
# the statuses a test asks for.

bats_require_minimum_version 1.5.0
load helpers/common
load helpers/log-exporters

setup() {
	common_setup
	# 2026-12-04T09:30:00.123456Z in nanoseconds, as ev writes it.
	NS="$(date -u -d 2026-12-04T09:30:00Z +%s)123456000"
}

teardown() {
	feed_end
	stop_all
}

# pushed [JQ]: every entry of every request the sink answered 2xx, one
# per line: [labels, ns, line's msg]; or JQ applied to each entry.
pushed() {
	jq -c --arg f "${1:-}" 'select(.status < 300) | .body | fromjson |
		.streams[] | .stream as $s | .values[] |
		[$s, .[0], (.[1] | fromjson | .msg)]' "$SINK_LOG"
}

# ns_pushed: the n members delivered (2xx), in order, on one line.
ns_pushed() {
	jq -r 'select(.status < 300) | .body | fromjson | .streams[] |
		.values[] | .[1] | fromjson | .n' "$SINK_LOG" | tr '\n' ' ' |
		sed 's/ $//'
}

seq_events() {
	local i
	for ((i = $1; i <= $2; i++)); do
		ev "${3:-info}" "event $i" "\"n\":$i"
		echo
	done
}

@test "a push is Loki's JSON: streams labelled by the chosen members, values of [ns timestamp string, the event line]" {
	http_sink_start
	plugin_start plug gk-export-loki --label svc --label level \
		--static-label job=gokit "http://127.0.0.1:$SINK_PORT"
	feed "$(ev info 'one' '"n":1')" "$(ev error 'two' '"n":2')" \
		'{"ts":"2026-12-04T09:30:01Z","proc":"x","msg":"no svc","n":3}'
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	[ "$(jq -s length "$SINK_LOG")" = 1 ]
	run jq -r '[.method, .path, .headers["content-type"]] | @tsv' "$SINK_LOG"
	assert_output "$(printf 'POST\t/loki/api/v1/push\tapplication/json')"
	run pushed
	assert_output "[{\"job\":\"gokit\",\"svc\":\"orders\",\"level\":\"info\"},\"$NS\",\"one\"]
[{\"job\":\"gokit\",\"svc\":\"orders\",\"level\":\"error\"},\"$NS\",\"two\"]
[{\"job\":\"gokit\",\"level\":\"info\"},\"$(date -u -d 2026-12-04T09:30:01Z +%s)000000000\",\"no svc\"]"
	# The line is the event, byte for byte.
	run jq -r '.body | fromjson | .streams[0].values[0][1]' "$SINK_LOG"
	assert_output "$(ev info 'one' '"n":1')"
}

@test "an event with none of the labels (an access event without svc) is labelled by its type: no stream without labels, the batch is accepted" {
	http_sink_start
	plugin_start plug gk-export-loki "http://127.0.0.1:$SINK_PORT"
	feed "$(ev info 'one' '"n":1')" \
		'{"ts":"2026-12-04T09:30:00.123456Z","type":"access","proc":"gk-listener","pid":8,"method":"GET","path":"/","status":200,"msg":"access"}' \
		"$(ev warn 'three' '"n":3')"
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	run jq -r '.status' "$SINK_LOG"
	assert_output 204
	run pushed
	assert_output "[{\"svc\":\"orders\",\"level\":\"info\"},\"$NS\",\"one\"]
[{\"type\":\"access\"},\"$NS\",\"access\"]
[{\"svc\":\"orders\",\"level\":\"warn\"},\"$NS\",\"three\"]"
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 3 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
}

@test "gk-log's event goes through gk-exporter loki" {
	http_sink_start
	GK_SERVICE=billing gk-log -l warn "card declined" code=51 2>&1 >/dev/null |
		gk-exporter loki "http://127.0.0.1:$SINK_PORT"
	run pushed
	assert_output --regexp '^\[\{"svc":"billing","level":"warn"\},"[0-9]{19}","card declined"\]$'
}

@test "batches close at --batch-records and events arrive in the order they were read" {
	http_sink_start
	plugin_start plug gk-export-loki --batch-records 5 \
		"http://127.0.0.1:$SINK_PORT"
	while read -r l; do feed "$l"; done < <(seq_events 1 23)
	feed_end
	wait_exit plug 20
	[ "$(jq -s length "$SINK_LOG")" = 5 ]
	[ "$(ns_pushed)" = "$(seq -s ' ' 1 23)" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 23 ]
}

@test "a batch is sent --batch-interval after its first event, without waiting for more" {
	http_sink_start
	plugin_start plug gk-export-loki --batch-interval 300ms \
		"http://127.0.0.1:$SINK_PORT"
	feed "$(ev info 'alone' '"n":1')"
	wait_for -t 20 test -s "$SINK_LOG"
	bg_alive plug # still reading stdin
	[ "$(ns_pushed)" = 1 ]
}

@test "500 then 429 then 204: the same batch is sent again and each event delivered exactly once, in order" {
	http_sink_start 500 429
	plugin_start plug gk-export-loki --batch-records 10 --retry-min 100ms \
		"http://127.0.0.1:$SINK_PORT"
	while read -r l; do feed "$l"; done < <(seq_events 1 20)
	feed_end
	wait_exit plug 30
	[ "$BG_STATUS" = 0 ]
	run jq -r '.status' "$SINK_LOG"
	assert_output '500
429
204
204'
	# The retried body is the very same bytes.
	[ "$(jq -s '[.[0:3][] | .body] | unique | length' "$SINK_LOG")" = 1 ]
	[ "$(ns_pushed)" = "$(seq -s ' ' 1 20)" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 20 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_errors_total)" = 2 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
}

@test "a 400 (Loki rejecting entries) drops that batch, counted, and the next is delivered" {
	http_sink_start 400
	plugin_start plug gk-export-loki --batch-records 2 \
		"http://127.0.0.1:$SINK_PORT"
	while read -r l; do feed "$l"; done < <(seq_events 1 4)
	feed_end
	wait_exit plug 20
	[ "$(jq -s length "$SINK_LOG")" = 2 ]
	[ "$(ns_pushed)" = "3 4" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 2 ]
	# counted apart from network errors and 5xx, and told with the status
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_rejected_total)" = 1 ]
	[ "$(count_events "$BATS_TEST_TMPDIR/plug.err" '.level == "error" and .msg == "batch rejected: dropped" and .status == 400 and .records == 2')" = 1 ]
}

@test "--max-streams bounds the label sets: further sets go to one _overflow stream, counted" {
	http_sink_start
	plugin_start plug gk-export-loki --label user --max-streams 2 \
		"http://127.0.0.1:$SINK_PORT"
	for u in alice bob carol dave alice; do
		feed "$(ev info "from $u" "\"user\":\"$u\"")"
	done
	feed_end
	wait_exit plug 20
	run pushed
	assert_output "[{\"user\":\"alice\"},\"$NS\",\"from alice\"]
[{\"user\":\"bob\"},\"$NS\",\"from bob\"]
[{\"user\":\"_overflow\"},\"$NS\",\"from carol\"]
[{\"user\":\"_overflow\"},\"$NS\",\"from dave\"]
[{\"user\":\"alice\"},\"$NS\",\"from alice\"]"
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_overflow_total)" = 2 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_streams)" = 2 ]
}

@test "a label value past Loki's 2048-byte limit is cut on a character boundary and counted: the push is accepted, no event lost" {
	http_sink_start
	plugin_start plug gk-export-loki --label user "http://127.0.0.1:$SINK_PORT"
	# 1 + 1500 two-byte characters: byte 2048 is inside one.
	long="x$(printf 'é%.0s' $(seq 1500))"
	feed "$(ev info 'long' "\"user\":\"$long\"")" "$(ev info 'short' '"user":"bob"')"
	feed_end
	wait_exit plug 20
	run jq -r 'select(.status < 300) | .body | fromjson | .streams[] |
		"\(.stream.user | utf8bytelength) \(.values[0][1] | fromjson | .msg)"' "$SINK_LOG"
	assert_output "2047 long
3 short"
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_label_cut_total)" = 1 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
}

@test "an event longer than Loki's max_line_size is dropped alone, counted and logged: the rest of its batch is accepted" {
	http_sink_start
	plugin_start plug gk-export-loki "http://127.0.0.1:$SINK_PORT"
	feed "$(ev info 'long' "\"pad\":\"$(head -c 300000 /dev/zero | tr '\0' x)\"")" \
		"$(ev info 'short')"
	feed_end
	wait_exit plug 20
	run pushed
	assert_output "[{\"svc\":\"orders\",\"level\":\"info\"},\"$NS\",\"short\"]"
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_too_long_total)" = 1 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 1 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 1 ]
	wait_event "$BATS_TEST_TMPDIR/plug.err" '.msg == "event longer than --max-line-size: dropped"' 5
}

@test "--gzip compresses the body and says so in Content-Encoding; --tenant sets X-Scope-OrgID" {
	http_sink_start
	plugin_start plug gk-export-loki --gzip --tenant team-a \
		"http://127.0.0.1:$SINK_PORT"
	while read -r l; do feed "$l"; done < <(seq_events 1 50)
	feed_end
	wait_exit plug 20
	run jq -r '[.headers["content-encoding"], .headers["x-scope-orgid"]] | @tsv' "$SINK_LOG"
	assert_output "$(printf 'gzip\tteam-a')"
	[ "$(jq '.raw_bytes < (.body | length) / 4' "$SINK_LOG")" = true ]
	[ "$(ns_pushed)" = "$(seq -s ' ' 1 50)" ]
}

@test "metrics snapshots are not sent by default; --types all sends them" {
	http_sink_start
	snap='{"ts":"2026-12-04T09:30:00.5Z","type":"metrics","proc":"p","pid":1,"seq":1,"part":1,"parts":1,"metrics":[]}'
	plugin_start plug gk-export-loki --label type "http://127.0.0.1:$SINK_PORT"
	feed "$snap" "$(ev info 'kept')"
	feed_end
	wait_exit plug 20
	run jq -c '.body | fromjson | [.streams[].stream.type]' "$SINK_LOG"
	assert_output '["log"]'
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_loki_skipped_total)" = 1 ]
}

@test "usage errors exit 64 with one line naming the program; more than --max-label-names (15) label names, or one twice, is one" {
	run --separate-stderr gk-export-loki --label 'bad-name'
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == *gk-export-loki*bad-name* ]]
	run --separate-stderr gk-export-loki ftp://x
	assert_failure 64
	run --separate-stderr gk-export-loki --static-label novalue
	assert_failure 64
	run --separate-stderr gk-export-loki --static-label "job=$(printf 'v%.0s' $(seq 2049))"
	assert_failure 64
	[[ $stderr == *'2048 bytes'* ]]
	# Loki refuses a stream of more than 15 label names (its
	# max_label_names_per_series), and with it the whole push: 16 in
	# all is refused at the start, 15 is taken.
	local i args=()
	for i in 1 2 3 4 5 6 7 8; do args+=(--label "l$i" --static-label "s$i=v"); done
	run --separate-stderr gk-export-loki "${args[@]}" </dev/null
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == *'at most 15'* ]]
	run --separate-stderr gk-export-loki "${args[@]:2}" --help
	assert_success
	# the default labels (svc, level) count too: 14 static ones are 16
	args=()
	for i in $(seq 14); do args+=(--static-label "s$i=v"); done
	run --separate-stderr gk-export-loki "${args[@]:2}" --help
	assert_success
	run --separate-stderr gk-export-loki "${args[@]}" </dev/null
	assert_failure 64
	# --max-label-names follows a Loki whose limit was raised (or cut)
	run --separate-stderr gk-export-loki --max-label-names 17 "${args[@]}" </dev/null
	assert_success
	run --separate-stderr gk-export-loki "${args[@]}" --max-label-names 16 </dev/null
	assert_success
	run --separate-stderr gk-export-loki --max-label-names 2 --static-label job=x </dev/null
	assert_failure 64
	[[ $stderr == *'at most 2'* ]]
	run --separate-stderr gk-export-loki --max-label-names 0 </dev/null
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == *'--max-label-names'* ]]
	# and a name twice is a duplicate Loki refuses
	run --separate-stderr gk-export-loki --static-label svc=shop </dev/null
	assert_failure 64
	[[ $stderr == *'svc'*'twice'* ]]
	run gk-export-loki --help
	assert_success
	assert_output --partial '/loki/api/v1/push'
}
