#!/usr/bin/env bats
# gk-filter: a jq program over each event of stdin.

load helpers/common

setup() {
	common_setup
	export GK_EVENTS_FD=3
}

teardown() {
	stop_all
}

# filt ARGS...: gk-filter with stdin from $T/in, stdout in $T/out,
# events (fd 3) in $T/ev; status in $status.
filt() {
	status=0
	gk-filter "$@" <"$T/in" >"$T/out" 3>"$T/ev" || status=$?
}

# metric NAME [LABEL VALUE]: the value in the last snapshot of $T/ev.
metric() {
	local sel='.labels == {}'
	[ $# -ge 3 ] && sel=".labels.$2 == \"$3\""
	jq -R -r --arg n "$1" "fromjson? | select(.type == \"metrics\")
	  | .metrics[] | select(.name == \$n) | .series[] | select($sel)
	  | .value" "$T/ev" | tail -n 1
}

@test "a select program keeps the matching events, as compact JSON lines" {
	printf '%s\n' '{"level":"error","msg":"a"}' '{"level":"info","msg":"b"}' \
		'{ "level" : "error" , "msg" : "c" }' >"$T/in"
	filt 'select(.level=="error")'
	[ "$status" -eq 0 ]
	run cat "$T/out"
	assert_line -n 0 '{"level":"error","msg":"a"}'
	assert_line -n 1 '{"level":"error","msg":"c"}'
	[ "${#lines[@]}" -eq 2 ]
	[ "$(metric gk_filter_events_in_total)" = 3 ]
	[ "$(metric gk_filter_events_out_total)" = 2 ]
}

@test "output matches jq -c for strings, escapes, unicode and numbers" {
	printf '%s\n' '{"s":"\u00e9\ud83d\ude00 \"q\" \\ \n\t\u0001","n":[0,-0,1.5,1e300,0.1,1e-7,9007199254740992,-9007199254740992,12.0],"o":{},"a":[],"t":true,"f":false,"z":null,"d":1,"d":2}' >"$T/in"
	filt .
	[ "$status" -eq 0 ]
	[ "$(cat "$T/out")" = "$(jq -c . "$T/in")" ]
}

@test "-f FILE reads the program, --arg and --argjson bind \$NAME and \$ARGS.named" {
	echo '{"level":"warn"}' >"$T/in"
	echo '{lvl: .level, name: $name, j: $j, named: $ARGS.named}' >"$T/prog.jq"
	filt -f "$T/prog.jq" --arg name x --argjson j '{"k":[1,2]}'
	[ "$status" -eq 0 ]
	assert_equal "$(cat "$T/out")" '{"lvl":"warn","name":"x","j":{"k":[1,2]},"named":{"name":"x","j":{"k":[1,2]}}}'
}

@test "a program that does not compile: one line with jq's message, exit 64" {
	echo '{}' >"$T/in"
	run gk-filter 'select(.a=='
	[ "$status" -eq 64 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial 'gk-filter: fatal: program does not compile: syntax error'
}

@test "bad usage exits 64: no program, bad --argjson, a bad route expression" {
	run gk-filter
	[ "$status" -eq 64 ]
	run gk-filter --argjson j '{bad' .
	[ "$status" -eq 64 ]
	assert_output --partial 'argjson j'
	run gk-filter --route '.a ==' cat .
	[ "$status" -eq 64 ]
	assert_output --partial 'route 1 expression does not compile'
	run gk-filter --arg onlyname
	[ "$status" -eq 64 ]
	# one line each, naming what was wrong
	for args in "--bogus ." "-x ." "-f" "--raw-proc" ". extra"; do
		run gk-filter $args </dev/null
		[ "$status" -eq 64 ] || { echo "$args: $status: $output"; false; }
		[ "${#lines[@]}" -eq 1 ] || { echo "$args: $output"; false; }
		[[ "${lines[0]}" == gk-filter:* ]]
	done
}

@test "lines that are not JSON objects are wrapped as raw log events and go through the program" {
	printf '%s\n' 'plain text from a handler' '[1,2]' '{"a":nan}' '{"ok":true}' '' '  ' >"$T/in"
	filt .
	[ "$status" -eq 0 ]
	run jq -c -s 'map(select(.raw == true) | [.type, .level, .proc, .msg])' "$T/out"
	assert_output '[["log","info","unknown","plain text from a handler"],["log","info","unknown","[1,2]"],["log","info","unknown","{\"a\":nan}"]]'
	[ "$(jq -s 'map(select(.ok)) | length' "$T/out")" = 1 ]
	[ "$(jq -s 'map(select(.raw) | .ts | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$")) | all' "$T/out")" = true ]
	[ "$(metric gk_filter_raw_total)" = 3 ]
	# and the program sees them: select on msg
	filt --raw-proc svc 'select(.raw) | .proc + ":" + .msg'
	run cat "$T/out"
	assert_line -n 0 '"svc:plain text from a handler"'
}

@test "a program that errors on every event: error events rate-limited, counted, the stream goes on" {
	python3 -c '
for i in range(2000):
    print("{\"n\":%d}" % i)
print("{\"n\":\"last\"}")' >"$T/in"
	filt 'if .n == "last" then . else error("boom \(.n)") end'
	[ "$status" -eq 0 ]
	assert_equal "$(cat "$T/out")" '{"n":"last"}'
	[ "$(metric gk_filter_errors_total kind runtime)" = 2000 ]
	reported=$(count_events "$T/ev" '.msg == "jq error"')
	[ "$reported" -ge 1 ]
	[ "$reported" -le 5 ]
	run events "$T/ev" 'select(.msg == "jq error") | .error'
	assert_line -n 0 'boom 0'
	[ "$(events "$T/ev" 'select(.msg == "jq error")' | head -1 | jq -r .event)" = '{"n":0}' ]
	# every error is accounted for: reported one by one, or in a suppressed count
	total=$(jq -R -s '[split("\n")[] | fromjson? | select(.kind == "runtime")
	  | if .msg == "jq error" then 1 + (.suppressed // 0) else .suppressed end] | add' "$T/ev")
	[ "$total" = 2000 ]
}

@test "numbers beyond 2^53 are refused with an error event naming the offset, never rounded" {
	printf '%s\n' '{"id":12345678901234567890,"msg":"a"}' '{"x":[1,{"y":-9007199254740993}]}' \
		'{"ok":9007199254740992}' '{"big":1e400}' '{"s":"12345678901234567890"}' >"$T/in"
	filt .
	[ "$status" -eq 0 ]
	run cat "$T/out"
	assert_line -n 0 '{"ok":9007199254740992}'
	assert_line -n 1 '{"s":"12345678901234567890"}'
	[ "${#lines[@]}" -eq 2 ]
	[ "$(metric gk_filter_errors_total kind number)" = 3 ]
	run events "$T/ev" 'select(.kind == "number" and .msg == "event refused") | [.offset, .event] | @tsv'
	assert_line -n 0 "$(printf '6\t{"id":12345678901234567890,"msg":"a"}')"
}

@test "an event of 1 MiB passes through unchanged" {
	python3 -c 'import json; print(json.dumps({"type":"log","msg":"x" * (1 << 20)}, separators=(",", ":")))' >"$T/in"
	filt .
	[ "$status" -eq 0 ]
	cmp "$T/in" "$T/out"
}

@test "a line over 16 MiB is skipped with an error event and counted; the next line passes" {
	python3 -c 'print("{\"a\":\"" + "y" * (17 << 20) + "\"}"); print("{\"after\":1}")' >"$T/in"
	filt .
	[ "$status" -eq 0 ]
	assert_equal "$(cat "$T/out")" '{"after":1}'
	[ "$(metric gk_filter_errors_total kind too_long)" = 1 ]
	[ "$(count_events "$T/ev" '.msg == "line too long, skipped"')" = 1 ]
}

@test "a line just over 16 MiB is skipped too, even when its newline comes in the same read" {
	# 16 MiB + 100 bytes: the reads of 256 KiB reach exactly 16 MiB of
	# the line, then the read that ends it brings the newline.
	python3 -c 'print("{\"a\":\"" + "y" * ((16 << 20) + 100 - 8) + "\"}"); print("{\"after\":1}")' >"$T/in"
	[ "$(head -n 1 "$T/in" | wc -c)" -eq $(((16 << 20) + 101)) ]
	filt '{after}'
	[ "$status" -eq 0 ]
	assert_equal "$(cat "$T/out")" '{"after":1}'
	[ "$(metric gk_filter_errors_total kind too_long)" = 1 ]
	[ "$(metric gk_filter_events_in_total)" = 2 ]
}

@test "halt and halt_error stop the stream: no event after the one that halted" {
	printf '%s\n' '{"n":1}' '{"n":2}' '{"n":3}' '{"n":4}' >"$T/in"
	filt 'if .n == 2 then halt_error else . end'
	[ "$status" -eq 5 ]
	assert_equal "$(cat "$T/out")" '{"n":1}'
	filt 'if .n == 3 then halt else . end'
	[ "$status" -eq 0 ]
	run cat "$T/out"
	assert_output "$(printf '%s\n' '{"n":1}' '{"n":2}')"
}

@test "halt_error's message, a string or any other value (as JSON), is the message of the program halted event, with the status" {
	printf '%s\n' '{"n":1}' >"$T/in"
	filt '"no more\n" | halt_error(3)'
	[ "$status" -eq 3 ]
	assert_equal "$(count_events "$T/ev" '.msg == "program halted" and .message == "no more\n" and .status == 3')" 1
	filt '{"why":"bad", n} | halt_error'
	[ "$status" -eq 5 ]
	assert_equal "$(count_events "$T/ev" '.msg == "program halted" and .message == "{\"why\":\"bad\",\"n\":1}" and .status == 5')" 1
}

@test "standard output that fails (a full disk): an error event and exit 74, not 0" {
	printf '%s\n' '{"n":1}' '{"n":2}' >"$T/in"
	status=0
	gk-filter . <"$T/in" >/dev/full 3>"$T/ev" || status=$?
	[ "$status" -eq 74 ]
	run events "$T/ev" 'select(.msg == "writing output failed") | .error'
	assert_output 'No space left on device'
	# a closed stdout is a failure as well
	status=0
	gk-filter . <"$T/in" >&- 3>"$T/ev" || status=$?
	[ "$status" -eq 74 ]
}

@test "a reader that goes away (EPIPE) ends gk-filter quietly, with status 0" {
	python3 -c '
for i in range(200000):
    print("{\"n\":%d}" % i)' >"$T/in"
	run bash -c "gk-filter . <'$T/in' 3>'$T/ev' | head -n 1 >'$T/out'; echo \${PIPESTATUS[0]}"
	assert_output 0
	assert_equal "$(cat "$T/out")" '{"n":0}'
	[ "$(count_events "$T/ev" '.msg == "writing output failed"')" = 0 ]
}

@test "--route sends matching outputs to a spawned command, the rest to stdout" {
	python3 -c '
for i in range(100):
    print("{\"level\":\"%s\",\"n\":%d}" % ("error" if i % 4 == 0 else "info", i))' >"$T/in"
	filt --route 'select(.level=="error")' "sh -c 'cat >> $T/errors'" \
		--route '.n == 1' "sh -c 'cat >> $T/one'" .
	[ "$status" -eq 0 ]
	[ "$(wc -l <"$T/errors")" -eq 25 ]
	[ "$(jq -s 'map(.level == "error") | all' "$T/errors")" = true ]
	assert_equal "$(cat "$T/one")" '{"level":"info","n":1}'
	[ "$(wc -l <"$T/out")" -eq 74 ]
	[ "$(metric gk_filter_routed_total route 1)" = 25 ]
	[ "$(metric gk_filter_routed_total route 2)" = 1 ]
}

@test "a route command that dies is reported, restarted on the next event, losses counted" {
	mkfifo "$T/fifo"
	# The command takes one event and exits: each later event finds it
	# dead, which is reported; it is restarted at once the first time,
	# then after a backoff (events routed meanwhile are counted lost).
	# It reads exactly one line (the shell's read takes a pipe byte by
	# byte; head would take what the pipe holds and drop the rest), and
	# the next event is sent once it is gone: an event written while it
	# still runs would be left in the pipe, neither delivered nor lost.
	printf '%s\n' '#!/bin/sh' 'read -r l && printf "%s\n" "$l" >>"$1"' >"$T/one.sh"
	start_bg_in "$T/fifo" filt env GK_EVENTS_FD=2 gk-filter \
		--route '.level == "error"' "sh $T/one.sh $T/got" .
	exec 4>"$T/fifo"
	echo '{"level":"error","n":1}' >&4
	poll_for -t 10 lines_ge "$T/got" 1
	poll_for -t 10 not_running "^sh $T/one.sh"
	echo '{"level":"error","n":2}' >&4
	poll_for -t 10 lines_ge "$T/got" 2
	poll_for -t 10 not_running "^sh $T/one.sh"
	for i in 3 4 5; do
		echo "{\"level\":\"error\",\"n\":$i}" >&4
	done
	echo '{"level":"info","n":6}' >&4
	exec 4>&-
	wait_exit filt 10
	[ "$BG_STATUS" -eq 0 ]
	[ "$(count_events "$T/filt.err" '.msg == "route command exited"')" -ge 2 ]
	[ "$(count_events "$T/filt.err" '.msg == "route command restarted"')" -ge 1 ]
	assert_equal "$(cat "$T/filt.out")" '{"level":"info","n":6}'
	[ "$(route_metric gk_filter_routed_total)" = 5 ]
	# every routed event reached a command or is counted as undelivered
	got=$(wc -l <"$T/got")
	lost=$(route_metric gk_filter_route_undelivered_total)
	[ "$got" -ge 2 ]
	[ $((got + lost)) -eq 5 ] || { echo "got $got, lost $lost"; false; }
}

@test "a route command that stops reading does not stall the stream: past a 1 MiB backlog its outputs are dropped, counted, said" {
	mkfifo "$T/fifo"
	# The command never reads; it exits once released.  Before the
	# bound, gk-filter blocked in write(2) once the pipe was full, and
	# every other output (and its stdin's writer) waited with it.
	printf '%s\n' '#!/bin/sh' 'i=0' \
		'while [ ! -e "$1" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done' >"$T/stuck.sh"
	python3 -c '
pad = "x" * 1000
for i in range(1500):
    print("{\"level\":\"error\",\"n\":%d,\"pad\":\"%s\"}" % (i, pad))
print("{\"level\":\"info\",\"n\":-1}")' >"$T/in"
	start_bg_in "$T/fifo" filt env GK_EVENTS_FD=2 gk-filter \
		--route '.level == "error"' "sh $T/stuck.sh $T/release" .
	exec 4>"$T/fifo"
	timeout 10 cat "$T/in" >&4 || true
	poll_for -t 10 lines_ge "$T/filt.out" 1
	assert_equal "$(cat "$T/filt.out")" '{"level":"info","n":-1}'
	wait_event "$T/filt.err" '.msg == "route command not reading: outputs dropped"'
	touch "$T/release"
	exec 4>&-
	wait_exit filt 10
	[ "$BG_STATUS" -eq 0 ]
	[ "$(route_metric gk_filter_routed_total)" = 1500 ]
	# All but what a pipe (64 KiB, some 62 events) took: the command's,
	# and at the end that of the one restarted for the backlog.
	lost=$(route_metric gk_filter_route_undelivered_total)
	[ "$lost" -ge 1300 ] && [ "$lost" -le 1500 ] || { echo "lost $lost"; false; }
}

# not_running PATTERN: no process's command line holds PATTERN.
not_running() {
	! pgrep -f "$1" >/dev/null
}

# lines_ge FILE N: FILE has at least N lines (a predicate for wait_for).
lines_ge() {
	[ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]
}

# route_metric NAME: the value for route 1 in the last snapshot of filt.err.
route_metric() {
	jq -R -r --arg n "$1" 'fromjson? | select(.type == "metrics") | .metrics[]
	  | select(.name == $n) | .series[0].value' "$T/filt.err" | tail -1
}

@test "a live stream is answered line by line, not held back" {
	mkfifo "$T/fifo"
	start_bg_in "$T/fifo" live gk-filter '.n'
	exec 4>"$T/fifo"
	echo '{"n":1}' >&4
	wait_grep '^1$' "$T/live.out" 10
	echo '{"n":2}' >&4
	wait_grep '^2$' "$T/live.out" 10
	exec 4>&-
	wait_exit live 10
	[ "$BG_STATUS" -eq 0 ]
}

@test "SIGUSR1 writes a metrics snapshot; SIGTERM ends with status 0" {
	mkfifo "$T/fifo"
	start_bg_in "$T/fifo" sig env GK_EVENTS_FD=2 gk-filter .
	exec 4>"$T/fifo"
	echo '{"n":1}' >&4
	wait_grep '"n":1' "$T/sig.out" 10
	kill -USR1 "$(bg_pid sig)"
	wait_event "$T/sig.err" '.type == "metrics"' 10
	kill -TERM "$(bg_pid sig)"
	wait_exit sig 10
	exec 4>&-
	[ "$BG_STATUS" -eq 0 ]
}

@test "--help and --version" {
	run gk-filter --help
	[ "$status" -eq 0 ]
	assert_output --partial '--route EXPR CMD'
	run gk-filter --version
	[ "$status" -eq 0 ]
	assert_output --regexp '^gk-filter [0-9]'
}
