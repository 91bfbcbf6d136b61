#!/usr/bin/env bats
# The jq programs shipped in filters/, as gk-filter -f runs them.

load helpers/common

F="$BATS_TEST_DIRNAME/../filters"

setup() {
	common_setup
	export GK_EVENTS_FD=3
}

# filt FILTER ARGS...: gk-filter -f filters/FILTER.jq ARGS over $T/in;
# stdout in $T/out (and $output, $lines), events in $T/ev.
filt() {
	local f=$1
	shift
	status=0
	gk-filter -f "$F/$f.jq" "$@" <"$T/in" >"$T/out" 3>"$T/ev" || status=$?
	output=$(cat "$T/out")
	mapfile -t lines <"$T/out"
}

# errors: the jq runtime errors gk-filter counted.
errors() {
	jq -R -r 'fromjson? | select(.type == "metrics") | .metrics[]
	  | select(.name == "gk_filter_errors_total") | .series[]
	  | select(.labels.kind == "runtime") | .value' "$T/ev" | tail -n 1
}

levels_in() {
	printf '%s\n' \
		'{"type":"log","level":"debug","msg":"d"}' \
		'{"type":"log","level":"info","msg":"i"}' \
		'{"type":"log","level":"warn","msg":"w"}' \
		'{"type":"log","level":"WARNING","msg":"w2"}' \
		'{"type":"log","level":"error","msg":"e"}' \
		'{"type":"log","level":"fatal","msg":"f"}' \
		'{"type":"log","level":"notice","msg":"unknown level"}' \
		'{"type":"metrics","proc":"p","metrics":[]}' \
		'{"type":"access","method":"GET","path":"/","status":200}' >"$T/in"
}

@test "level.jq keeps log events at or above --arg min, in any case, and every event without a level" {
	levels_in
	filt level --arg min warn
	[ "$status" -eq 0 ]
	run jq -r '.msg // .type' "$T/out"
	assert_output "$(printf '%s\n' w w2 e f 'unknown level' metrics access)"
	filt level --arg min error
	[ "$(jq -r '.msg // .type' "$T/out" | tr '\n' ' ')" = 'e f unknown level metrics access ' ]
	filt level --arg min DEBUG
	[ "${#lines[@]}" -eq 9 ]
	# the default minimum is info
	filt level
	[ "$(jq -r '.msg // .type' "$T/out" | head -1)" = i ]
	[ "${#lines[@]}" -eq 8 ]
	[ "$(errors)" = 0 ]
}

@test "level.jq with an unknown --arg min: an error event naming it, nothing passes, the stream ends cleanly" {
	levels_in
	filt level --arg min loud
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 0 ]
	[ "$(errors)" = 9 ]
	run events "$T/ev" 'select(.msg == "jq error") | .error'
	assert_line -n 0 'level.jq: --arg min loud: expected debug, info, warn, error or fatal'
}

@test "sample.jq keeps about 1 in N, the same ones on every run, whole traces, and never an error or fatal" {
	python3 -c '
for i in range(10000):
    lvl = "error" if i % 100 == 0 else ("fatal" if i % 100 == 1 else "info")
    print("{\"ts\":\"2026-12-04T09:%02d:%02d.%06dZ\",\"type\":\"log\",\"level\":\"%s\",\"msg\":\"m%d\"}" % (i // 3600 % 60, i // 60 % 60, i, lvl, i))
for t in range(50):
    for s in range(4):
        print("{\"type\":\"span\",\"trace_id\":\"%032x\",\"span_id\":\"%016x\",\"name\":\"s\"}" % (t * 7919, s))' >"$T/in"
	filt sample --argjson n 10
	[ "$status" -eq 0 ]
	cp "$T/out" "$T/first"
	# every error and fatal event is kept
	[ "$(jq -s 'map(select(.level == "error" or .level == "fatal")) | length' "$T/out")" -eq 200 ]
	# about a tenth of the 9800 others
	kept=$(jq -s 'map(select(.level == "info")) | length' "$T/out")
	[ "$kept" -ge 830 ] && [ "$kept" -le 1130 ] || { echo "kept $kept of 9800"; false; }
	# a trace is kept whole or not at all
	run jq -s -r 'map(select(.type == "span")) | group_by(.trace_id) | map(length) | unique | @csv' "$T/out"
	assert_output 4
	# deterministic: the same input gives the same output
	filt sample --argjson n 10
	cmp "$T/first" "$T/out"
	# n as a string, and n <= 1 keeps everything
	filt sample --arg n 10
	cmp "$T/first" "$T/out"
	filt sample --argjson n 1
	[ "${#lines[@]}" -eq 10200 ]
	[ "$(errors)" = 0 ]
}

@test "redact.jq masks the configured keys at any depth and bearer tokens, card numbers and e-mail addresses in any string" {
	cat >"$T/in" <<'EOF'
{"type":"log","msg":"login by a.b+c@example.co.uk with Authorization: Bearer abc.DEF-123_x= ok","password":"hunter2","nested":{"Token":"t0k","list":["card 4111 1111 1111 1111 paid","card 5500-0000-0000-0004","not a card 4111 1111 1111 1112","order 1234567890123","bearer xyz"]},"n":5,"ok":true}
{"type":"access","headers":{"authorization":"Basic dXNlcjpwYXNz","x-api-key":"k","cookie":"c"},"path":"/u/jo@ex.io"}
EOF
	filt redact
	[ "$status" -eq 0 ]
	assert_line -n 0 '{"type":"log","msg":"login by [REDACTED] with Authorization: Bearer [REDACTED] ok","password":"[REDACTED]","nested":{"Token":"[REDACTED]","list":["card [REDACTED] paid","card [REDACTED]","not a card 4111 1111 1111 1112","order 1234567890123","bearer [REDACTED]"]},"n":5,"ok":true}'
	assert_line -n 1 '{"type":"access","headers":{"authorization":"[REDACTED]","x-api-key":"k","cookie":"c"},"path":"/u/[REDACTED]"}'
	# --arg keys replaces the list; numbers and objects are masked whole
	filt redact --arg keys 'X-API-Key,cookie,n,nested'
	assert_line -n 0 '{"type":"log","msg":"login by [REDACTED] with Authorization: Bearer [REDACTED] ok","password":"hunter2","nested":"[REDACTED]","n":"[REDACTED]","ok":true}'
	assert_line -n 1 '{"type":"access","headers":{"authorization":"Basic dXNlcjpwYXNz","x-api-key":"[REDACTED]","cookie":"[REDACTED]"},"path":"/u/[REDACTED]"}'
	[ "$(errors)" = 0 ]
}

@test "redact.jq also masks the text of a line that was not JSON (wrapped raw by gk-filter)" {
	echo 'handler printed: mail bob@example.com, token Bearer s3cr3t' >"$T/in"
	filt redact
	[ "$(jq -r .msg "$T/out")" = 'handler printed: mail [REDACTED], token Bearer [REDACTED]' ]
	[ "$(jq -r .raw "$T/out")" = true ]
}

@test "schema.jq tags violators with schema_error and passes conforming events unchanged" {
	cat >"$T/in" <<'EOF'
{"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"info","proc":"p","pid":1,"msg":"ok"}
{"ts":"2026-12-04T09:30:00.123456Z","level":"warn","proc":"p","pid":1,"msg":"no type: a log event"}
{"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"loud","proc":"p","pid":"1"}
{"type":"span","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","name":"GET /","kind":"server","start_us":1,"duration_us":2,"status":"ok"}
{"type":"span","trace_id":"0af7651916cd43dd8448eb211c80319c","name":"GET /","kind":"server","start_us":"1","duration_us":2,"status":"ok"}
{"ts":"2026-12-04T09:30:00.123456Z","type":"access","proc":"gk-listener","pid":2,"method":"GET","path":"/","status":200,"bytes":6,"duration":0.0001,"remote":"127.0.0.1:1"}
{"type":"access","method":"GET","path":"/","status":"200","bytes":6,"duration":0.0001}
{"ts":"2026-12-04T09:30:00.123456Z","type":"metrics","proc":"p","pid":1,"metrics":[]}
{"ts":"2026-12-04T09:30:00.123456Z","type":"metrics","proc":"p","pid":1,"metrics":{}}
{"type":"trace"}
{"type":7}
EOF
	filt schema
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 11 ]
	run jq -r '.schema_error // "-"' "$T/out"
	assert_output "$(printf '%s\n' \
		- \
		- \
		'pid: expected number, got string; missing msg; level: unknown level loud' \
		- \
		'missing span_id; start_us: expected number, got string' \
		- \
		'status: expected number, got string; missing remote' \
		- \
		'metrics: expected array, got object' \
		'unknown type trace' \
		'type: expected string, got number')"
	# conforming events pass byte for byte
	[ "$(sed -n 1p "$T/out")" = "$(sed -n 1p "$T/in")" ]
	[ "$(sed -n 6p "$T/out")" = "$(sed -n 6p "$T/in")" ]
	[ "$(errors)" = 0 ]
}

@test "access.jq keeps access events only, unchanged, or renders them in the common log format" {
	cat >"$T/in" <<'EOF'
{"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"info","msg":"not access"}
{"ts":"2026-12-04T09:30:00.123456Z","type":"access","proc":"gk-listener","pid":2,"method":"GET","path":"/orders","query":"id=1","status":200,"bytes":512,"duration":0.001,"remote":"10.0.0.7:5555"}
{"ts":"2026-01-31T23:59:59.999999Z","type":"access","method":"POST","path":"/x","status":503,"bytes":0,"duration":0.001,"remote":"[::1]:5555","user":"bob","proto":"HTTP/1.0"}
{"type":"access","method":"GET","path":"/","status":200}
{"type":"metrics","metrics":[]}
EOF
	filt access
	[ "${#lines[@]}" -eq 3 ]
	[ "${lines[0]}" = "$(sed -n 2p "$T/in")" ]
	[ "$(jq -s 'map(.type == "access") | all' "$T/out")" = true ]
	filt access --arg format clf
	[ "$status" -eq 0 ]
	run jq -r .line "$T/out"
	assert_line -n 0 '10.0.0.7 - - [04/Dec/2026:09:30:00 +0000] "GET /orders?id=1 HTTP/1.1" 200 512'
	assert_line -n 1 '::1 - bob [31/Jan/2026:23:59:59 +0000] "POST /x HTTP/1.0" 503 -'
	assert_line -n 2 '- - - [-] "GET / HTTP/1.1" 200 -'
	[ "${#lines[@]}" -eq 3 ]
	[ "$(errors)" = 0 ]
}

@test "access.jq renders the access events of a real gk-listener" {
	port=$(free_port)
	start_bg stack env GK_EVENTS_FD=2 GK_EVENTS_FORMAT=json gk-listener -l "127.0.0.1:$port" -- hello
	wait_port 127.0.0.1 "$port" 10
	curl -sf "http://127.0.0.1:$port/a/b" >/dev/null
	wait_event "$T/stack.err" '.type == "access"' 10
	cp "$T/stack.err" "$T/in"
	filt access --arg format clf
	[ "${#lines[@]}" -eq 1 ]
	[[ "$(jq -r .line "$T/out")" =~ ^127\.0\.0\.1\ -\ -\ \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9:]{8}\ \+0000\]\ \"GET\ /a/b\ HTTP/1\.1\"\ 200\ [0-9]+$ ]] ||
		{ cat "$T/out"; false; }
}

teardown() {
	stop_all
}
