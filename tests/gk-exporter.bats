#!/usr/bin/env bats
# gk-exporter: run an exporter plugin, or feed one event stream to several.
#
# The sinks here are test plugins: a plugin may be any executable named
# gk-export-NAME, so small shell scripts on PATH stand in for backends that
# record, stall, die or stop reading.

load helpers/common

setup() {
	common_setup
	mkdir -p "$T/plugins"
	export PATH="$T/plugins:$PATH"
	# tee: appends what it reads to the file given as its argument.
	plugin tee 'exec cat >>"$1"'
	# gate: reads nothing until the file $2 exists (at most 60 s), then
	# appends everything to $1: a backend that stalls, then recovers.
	plugin gate 'i=0
while [ ! -e "$2" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
exec cat >>"$1"'
	# stall: never reads its stdin.
	plugin stall 'exec sleep 600'
	# once: takes one event, then exits 3.
	plugin once 'head -n 1 >>"$1"; exit 3'
	# args: records its name and arguments, one a line, and its stdin.
	plugin args 'printf "%s\n" "$(basename "$0")" "$@" >"$ARGS_OUT"; exec cat >>"$ARGS_OUT.in"'
}

teardown() {
	stop_all
}

# plugin NAME BODY: an executable gk-export-NAME in $T/plugins.
plugin() {
	printf '#!/bin/sh\n%s\n' "$2" >"$T/plugins/gk-export-$1"
	chmod +x "$T/plugins/gk-export-$1"
}

# gen N [PAD]: N log events, {"type":"log","n":I,"pad":"xxx..."}.
gen() {
	python3 -c '
import sys
n, pad = int(sys.argv[1]), "x" * int(sys.argv[2])
w = sys.stdout.write
for i in range(n):
    w("{\"type\":\"log\",\"level\":\"info\",\"n\":%d,\"pad\":\"%s\"}\n" % (i, pad))' "$1" "${2:-0}"
}

# metric FILE NAME SINK: the value of NAME{sink=SINK} in the last snapshot.
metric() {
	jq -R -r --arg n "$2" --arg s "$3" 'fromjson? | select(.type == "metrics")
	  | .metrics[] | select(.name == $n) | .series[]
	  | select(.labels.sink == $s or $s == "") | .value' "$1" | tail -n 1
}

# live_metric NAME SINK: ask the running exporter "ex" for a snapshot
# (SIGUSR1), wait for it, and print NAME{sink=SINK} from it.
live_metric() {
	local before
	before=$(count_events "$T/ex.err" '.type == "metrics"')
	kill -USR1 "$(bg_pid ex)"
	poll_for -t 10 events_ge "$T/ex.err" '.type == "metrics"' $((before + 1)) || return 1
	metric "$T/ex.err" "$1" "$2"
}

# start_in NAME FILE CMD ARGS...: start_bg with stdin from FILE (a fifo is
# opened by the started process, so this does not wait for a writer).
start_in() {
	local name=$1 file=$2
	shift 2
	start_bg "$name" sh -c 'f=$1; shift; exec "$@" <"$f"' sh "$file" "$@"
}

lines_of() {
	if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi
}

# The predicates below are re-evaluated on every poll of wait_for (an
# argument "$(...)" would be expanded once, before the first).

# lines_ge FILE N: FILE has at least N lines.
lines_ge() {
	[ "$(lines_of "$1")" -ge "$2" ]
}

# events_ge FILE SELECT N: at least N events of FILE match SELECT.
events_ge() {
	[ "$(count_events "$1" "$2")" -ge "$3" ]
}

# live_metric_ge NAME SINK N: a fresh snapshot has NAME{sink} >= N.
live_metric_ge() {
	local v
	v=$(live_metric "$1" "$2") || return 1
	[ -n "$v" ] && [ "$v" -ge "$3" ]
}

@test "gk-exporter NAME ARGS runs gk-export-NAME with ARGS as given, no shell, stdin passed on" {
	export ARGS_OUT="$T/args.out"
	echo '{"type":"log","msg":"hi"}' | gk-exporter args -l 'a b,c' '$HOME' "it's"
	wait_file "$T/args.out.in"
	run cat "$T/args.out"
	assert_line -n 0 gk-export-args
	assert_line -n 1 -- -l
	assert_line -n 2 'a b,c'
	assert_line -n 3 '$HOME'
	assert_line -n 4 "it's"
	[ "${#lines[@]}" -eq 5 ]
	assert_equal "$(cat "$T/args.out.in")" '{"type":"log","msg":"hi"}'
}

@test "plugin lookup: GK_EXPORTER_DIR, then next to gk-exporter (../libexec/gokit, ../exporters), then PATH" {
	# An installed layout: PREFIX/bin/gk-exporter, PREFIX/libexec/gokit.
	mkdir -p "$T/inst/bin" "$T/inst/libexec/gokit" "$T/inst/exporters" "$T/override" "$T/onpath"
	cp "$(command -v gk-exporter)" "$T/inst/bin/"
	for d in inst/libexec/gokit inst/exporters override onpath; do
		printf '#!/bin/sh\necho %s\n' "$d" >"$T/$d/gk-export-where"
		chmod +x "$T/$d/gk-export-where"
	done
	export PATH="$T/onpath:$PATH"
	run "$T/inst/bin/gk-exporter" where </dev/null
	assert_output inst/libexec/gokit
	GK_EXPORTER_DIR="$T/override" run "$T/inst/bin/gk-exporter" where </dev/null
	assert_output override
	rm "$T/inst/libexec/gokit/gk-export-where"
	run "$T/inst/bin/gk-exporter" where </dev/null
	assert_output inst/exporters
	rm "$T/inst/exporters/gk-export-where"
	run "$T/inst/bin/gk-exporter" where </dev/null
	assert_output onpath
	# The build tree: build/bin/gk-exporter finds build/exporters, which
	# is not on PATH.
	run gk-exporter prometheus --version
	[ "$status" -eq 0 ]
	assert_output --regexp '^gk-export-prometheus [0-9]'
}

@test "an unknown plugin: one fatal line naming it, exit 127" {
	run gk-exporter nosuchbackend </dev/null
	[ "$status" -eq 127 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial 'gk-export-nosuchbackend'
	assert_output --partial 'No such file or directory'
}

@test "--to NAME:ARGS twice feeds the whole stream, in order, to each sink; arguments split on commas" {
	gen 5000 40 >"$T/in"
	export ARGS_OUT="$T/args.out"
	run gk-exporter --to "tee:$T/a" --to "tee:$T/b" --to 'args:x\,y,,z' <"$T/in"
	[ "$status" -eq 0 ]
	cmp "$T/in" "$T/a"
	cmp "$T/in" "$T/b"
	cmp "$T/in" "$T/args.out.in"
	assert_equal "$(cat "$T/args.out")" "$(printf 'gk-export-args\nx,y\n\nz')"
	# its own metrics: per sink, the repeated name told apart
	gk-exporter --to "tee:$T/c" --to "tee:$T/d" <"$T/in" 2>"$T/ev"
	[ "$(metric "$T/ev" gk_exporter_sent_total tee)" = 5000 ]
	[ "$(metric "$T/ev" gk_exporter_sent_total 'tee#2')" = 5000 ]
	[ "$(metric "$T/ev" gk_exporter_dropped_total tee)" = 0 ]
}

@test "--to prometheus:ADDR twice: two real plugins fed one stream serve the same snapshot, and stop on TERM" {
	p1=$(free_port)
	p2=$(free_port)
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --to "prometheus:127.0.0.1:$p1" --to "prometheus:-l,127.0.0.1:$p2"
	exec 4>"$T/fifo"
	echo '{"ts":"2026-12-04T09:30:00.000000Z","type":"metrics","proc":"svc","pid":7,"seq":1,"part":1,"parts":1,"metrics":[{"name":"jobs_total","type":"counter","help":"Jobs","series":[{"labels":{},"value":42}]}]}' >&4
	for p in "$p1" "$p2"; do
		poll_for -t 10 sh -c "curl -sf http://127.0.0.1:$p/metrics | grep -q '^jobs_total{proc=\"svc\",instance=\"[^\"]*:7\"} 42\$'"
	done
	# at the end of input they serve on; TERM stops them, gently
	exec 4>&-
	kill -TERM "$(bg_pid ex)"
	wait_exit ex 15
	[ "$BG_STATUS" -eq 0 ]
	[ "$(count_events "$T/ex.err" '.msg == "plugin exited" and .status == 0')" -eq 2 ]
	[ "$(count_events "$T/ex.err" '.msg == "plugin did not exit: killed"')" -eq 0 ]
}

@test "a sink that stops reading blocks neither the stack nor the other sinks; it drops oldest first, counted and told" {
	gen 40000 200 >"$T/in" # about 9 MB, far past the 4m bound + pipe
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --drain-timeout 60s \
		--to "tee:$T/fast" --to "gate:$T/slow,$T/open"
	# The stack's side: every line is taken although one sink is stuck.
	# Written in 40 pieces 50 ms apart (about 4.5 MB/s): the fast sink's
	# own 4 MiB bound then covers a second of its `cat` stalling on the
	# disk, which an unpaced burst did not (it flaked once in ten runs).
	start_bg writer sh -c "python3 -c '
import sys, time
lines = open(sys.argv[1], \"rb\").read().splitlines(True)
out = open(sys.argv[2], \"wb\")
for i in range(0, len(lines), 1000):
    out.writelines(lines[i:i + 1000])
    out.flush()
    time.sleep(0.05)
' '$T/in' '$T/fifo'; echo done >'$T/written'"
	wait_file "$T/written" 30
	wait_for -t 30 lines_ge "$T/fast" 40000
	cmp "$T/in" "$T/fast"
	wait_event "$T/ex.err" '.msg == "sink buffer full: oldest events dropped" and .sink == "gate"' 10
	# The backend recovers: it gets what the bound kept, the newest last.
	touch "$T/open"
	# stdin has ended: it exits once the recovered sink took its buffer
	wait_exit ex 30
	[ "$BG_STATUS" -eq 0 ]
	dropped=$(metric "$T/ex.err" gk_exporter_dropped_total gate)
	got=$(lines_of "$T/slow")
	[ "$dropped" -gt 0 ]
	# nothing unaccounted for: what arrived plus what was dropped is all
	[ $((got + dropped)) -eq 40000 ]
	# what arrived is in order, and what is missing is one run in the
	# middle: the oldest of the buffer went first, the newest stayed.
	run jq -s -r '[.[].n] as $n | [range(1; $n | length) | select($n[.] != $n[. - 1] + 1)]
	  | length' "$T/slow"
	assert_output 1
	[ "$(jq -s '[.[].n] | . == sort' "$T/slow")" = true ]
	[ "$(head -1 "$T/slow" | jq .n)" = 0 ]
	[ "$(metric "$T/ex.err" gk_exporter_dropped_total tee)" = 0 ]
}

@test "a sink that never reads does not hold up the exit: drain timeout, its buffer counted as dropped, exit 0" {
	gen 3000 100 >"$T/in"
	# 500 ms for the sinks at the end: the tee takes what it has in
	# milliseconds, the stall never
	start_in ex "$T/in" gk-exporter --drain-timeout 500ms --to stall --to "tee:$T/a"
	wait_exit ex 20
	[ "$BG_STATUS" -eq 0 ]
	cmp "$T/in" "$T/a"
	wait_event "$T/ex.err" '.msg == "drain timeout: sink closed" and .sink == "stall"' 1
	sent=$(metric "$T/ex.err" gk_exporter_sent_total stall)
	dropped=$(metric "$T/ex.err" gk_exporter_dropped_total stall)
	lost=$(metric "$T/ex.err" gk_exporter_lost_total stall)
	[ "$dropped" -gt 0 ]
	# written into its pipe and never read counts as lost
	[ "$lost" -gt 0 ]
	[ $((sent + dropped)) -eq 3000 ]
	# Closed: nothing waits for it any more.
	[ "$(metric "$T/ex.err" gk_exporter_queue_bytes stall)" = 0 ]
}

@test "--drain-timeout is kept to the millisecond, not to the next 1 s tick: 300ms with a stuck sink, gone well before 1 s" {
	gen 1 >"$T/in"
	local t0 t1
	t0=$(date +%s%N)
	run timeout 20 gk-exporter --drain-timeout 300ms --to stall <"$T/in"
	t1=$(date +%s%N)
	assert_success
	# 300 ms, then the stall plugin's TERM and exit; the 1 s tick came
	# at about 1,000 ms
	local ms=$(((t1 - t0) / 1000000))
	[ "$ms" -lt 900 ] || fail "took $ms ms"
}

@test "from a regular file, reading keeps pace with the live sinks (nothing dropped), not with a stuck one" {
	gen 40000 200 >"$T/in" # about 9 MB, 140 times the 64k bound
	# at the end the tees hold at most their 64k; the stall never takes
	start_in ex "$T/in" gk-exporter --buffer 64k --drain-timeout 500ms \
		--to "tee:$T/a" --to "tee:$T/b" --to stall
	wait_exit ex 60
	[ "$BG_STATUS" -eq 0 ]
	cmp "$T/in" "$T/a"
	cmp "$T/in" "$T/b"
	[ "$(metric "$T/ex.err" gk_exporter_dropped_total tee)" = 0 ]
	[ "$(metric "$T/ex.err" gk_exporter_dropped_total stall)" -gt 0 ]
}

@test "a plugin that exits is restarted with backoff and what it left unread is counted as lost" {
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --to "once:$T/got"
	exec 4>"$T/fifo"
	for i in 1 2 3; do
		echo "{\"type\":\"log\",\"n\":$i}" >&4
		poll_for -t 10 lines_ge "$T/got" "$i"
		poll_for -t 10 events_ge "$T/ex.err" '.msg == "plugin exited: restarting"' "$i"
		# the next one goes to the restarted plugin
		poll_for -t 10 events_ge "$T/ex.err" '.msg == "plugin started"' $((i + 1))
	done
	exec 4>&-
	wait_exit ex 10
	[ "$BG_STATUS" -eq 0 ]
	run jq -c .n "$T/got"
	assert_output "$(printf '1\n2\n3')"
	# the delays grow: 100 ms, then 200 ms, then 400 ms (+-20%)
	run events "$T/ex.err" 'select(.msg == "plugin exited: restarting") | .restart_in_ms'
	[ "${lines[0]}" -ge 80 ] && [ "${lines[0]}" -le 120 ]
	[ "${lines[1]}" -ge 160 ] && [ "${lines[1]}" -le 240 ]
	[ "${lines[2]}" -ge 320 ] && [ "${lines[2]}" -le 480 ]
	[ "$(events "$T/ex.err" 'select(.msg == "plugin exited: restarting") | .status' | sort -u)" = 3 ]
	[ "$(metric "$T/ex.err" gk_exporter_restarts_total once)" = 3 ]
}

@test "a plugin that dies with events in its pipe: they are counted lost, the restarted plugin gets the rest" {
	# die: reads one line, then sleeps until told to exit (file $2).
	plugin die 'head -n 1 >>"$1"
i=0
while [ ! -e "$2" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
exit 1'
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --to "die:$T/got,$T/exit"
	exec 4>"$T/fifo"
	echo '{"n":1}' >&4
	poll_for -t 10 lines_ge "$T/got" 1
	# head has exited; these wait in the pipe of a plugin that will die
	for i in 2 3 4; do echo "{\"n\":$i}" >&4; done
	wait_for -t 10 live_metric_ge gk_exporter_sent_total die 4
	touch "$T/exit"
	wait_event "$T/ex.err" '.msg == "plugin exited: restarting" and .lost_events == 3' 10
	rm "$T/exit"
	echo '{"n":5}' >&4
	poll_for -t 10 lines_ge "$T/got" 2
	touch "$T/exit"
	exec 4>&-
	wait_exit ex 10
	[ "$BG_STATUS" -eq 0 ]
	run jq -c .n "$T/got"
	assert_output "$(printf '1\n5')"
	[ "$(metric "$T/ex.err" gk_exporter_lost_total die)" -eq 3 ]
}

@test "lines that are not JSON objects reach every sink wrapped as raw log events, counted" {
	printf '%s\n' 'plain text' '{"type":"log","n":1}' '[1,2]' '{"broken":' '{"type":"log","n":2}' >"$T/in"
	gk-exporter --to "tee:$T/a" --to "tee:$T/b" <"$T/in" 2>"$T/ev"
	cmp "$T/a" "$T/b"
	[ "$(wc -l <"$T/a")" -eq 5 ]
	run jq -c -s 'map(if .raw then [.type, .level, .msg] else .n end)' "$T/a"
	assert_output '[["log","info","plain text"],1,["log","info","[1,2]"],["log","info","{\"broken\":"],2]'
	[ "$(jq -s 'map(select(.raw) | .ts | test("^[0-9-]{10}T[0-9:.]+Z$")) | all' "$T/a")" = true ]
	[ "$(metric "$T/ev" gk_exporter_raw_total '')" = 3 ]
}

@test "an event with a lone surrogate escape reaches every sink as that event with U+FFFD in its place, counted" {
	printf '%s\n' '{"type":"log","n":1,"msg":"a\udc00\ud800"}' >"$T/in"
	gk-exporter --to "tee:$T/a" --to "tee:$T/b" <"$T/in" 2>"$T/ev"
	cmp "$T/a" "$T/b"
	run jq -c '[.n, .msg, .raw]' "$T/a"
	assert_output '[1,"a��",null]'
	[ "$(metric "$T/ev" gk_exporter_lone_surrogates_total '')" = 1 ]
	[ "$(metric "$T/ev" gk_exporter_raw_total '')" = 0 ]
}

@test "an event of 1 MiB passes through to every sink unchanged" {
	python3 -c 'import json; print(json.dumps({"type":"log","msg":"x" * (1 << 20)}, separators=(",", ":")))' >"$T/in"
	echo '{"type":"log","n":2}' >>"$T/in"
	run gk-exporter --to "tee:$T/a" --to "tee:$T/b" <"$T/in"
	[ "$status" -eq 0 ]
	cmp "$T/in" "$T/a"
	cmp "$T/in" "$T/b"
}

@test "SIGTERM drains: every event read so far is delivered, plugins exit, status 0" {
	gen 2000 50 >"$T/in"
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --to "tee:$T/a" --to "tee:$T/b"
	exec 4>"$T/fifo"
	cat "$T/in" >&4
	poll_for -t 20 lines_ge "$T/a" 2000
	# a last line without newline is delivered too, at TERM
	printf '{"type":"log","n":"last"}' >&4
	wait_for -t 10 live_metric_ge gk_exporter_sent_total tee 2000
	kill -TERM "$(bg_pid ex)"
	wait_exit ex 10
	exec 4>&-
	[ "$BG_STATUS" -eq 0 ]
	[ "$(tail -1 "$T/a")" = '{"type":"log","n":"last"}' ]
	[ "$(tail -1 "$T/b")" = '{"type":"log","n":"last"}' ]
	[ "$(wc -l <"$T/b")" -eq 2001 ]
	# both plugins exited on their own (EOF), none was killed
	[ "$(count_events "$T/ex.err" '.msg == "plugin exited" and .status == 0')" -eq 2 ]
	[ "$(count_events "$T/ex.err" '.msg == "plugin did not exit: killed"')" -eq 0 ]
}

@test "a line longer than --buffer is dropped from every sink, counted and told; the lines around it pass" {
	{
		echo '{"type":"log","n":1}'
		python3 -c 'print("{\"type\":\"log\",\"pad\":\"" + "x" * 10000 + "\"}")'
		echo '{"type":"log","n":2}'
	} >"$T/in"
	gk-exporter --buffer 4k --to "tee:$T/a" --to "tee:$T/b" <"$T/in" 2>"$T/ev"
	run jq -c .n "$T/a"
	assert_output "$(printf '1\n2')"
	cmp "$T/a" "$T/b"
	[ "$(metric "$T/ev" gk_exporter_dropped_total tee)" = 1 ]
	[ "$(metric "$T/ev" gk_exporter_dropped_total tee#2)" = 1 ]
	[ "$(metric "$T/ev" gk_exporter_sent_total tee#2)" = 2 ]
	[ "$(count_events "$T/ev" '.msg == "event longer than the sink buffer: dropped" and .max_bytes == 4096')" -eq 1 ]
}

@test "a line longer than --buffer that comes whole in one read is told as too long, not as oldest dropped" {
	{
		echo '{"type":"log","n":1}'
		python3 -c 'print("{\"type\":\"log\",\"pad\":\"" + "x" * 10000 + "\"}")'
		# not JSON, and longer than the bound only once wrapped
		python3 -c 'print("\"" * 3000)'
		echo '{"type":"log","n":2}'
	} >"$T/in"
	# through a pipe, in one write: the long lines arrive whole
	cat "$T/in" | gk-exporter --buffer 4k --to "tee:$T/a" 2>"$T/ev"
	run jq -c .n "$T/a"
	assert_output "$(printf '1\n2')"
	[ "$(metric "$T/ev" gk_exporter_dropped_total tee)" = 2 ]
	[ "$(metric "$T/ev" gk_exporter_sent_total tee)" = 2 ]
	[ "$(count_events "$T/ev" '.msg == "event longer than the sink buffer: dropped"')" -eq 2 ]
	[ "$(count_events "$T/ev" '.msg == "sink buffer full: oldest events dropped"')" -eq 0 ]
}

@test "a plugin that leaves its input unread past the drain timeout is sent TERM, and gk-exporter exits" {
	# sulk: reads nothing; on TERM, says so and exits 0.
	plugin sulk 'trap "echo term >>\"\$1\"; exit 0" TERM
while :; do sleep 0.05; done'
	gen 3 >"$T/in"
	# Its events fit in the pipe: the sink's own buffer is empty at EOF,
	# but the plugin has taken nothing.
	start_in ex "$T/in" gk-exporter --drain-timeout 500ms --to "sulk:$T/sulk" --to "tee:$T/a"
	wait_exit ex 15
	[ "$BG_STATUS" -eq 0 ]
	cmp "$T/in" "$T/a"
	# TERM, not the last-resort KILL
	assert_equal "$(cat "$T/sulk")" term
	[ "$(count_events "$T/ex.err" '.msg == "plugin did not exit: killed"')" -eq 0 ]
	[ "$(metric "$T/ex.err" gk_exporter_lost_total sulk)" = 3 ]
	[ "$(metric "$T/ex.err" gk_exporter_sent_total sulk)" = 3 ]
}

@test "SIGHUP is passed on to every plugin, SIGUSR1 to none" {
	# sig: records the HUP and USR1 it gets in $1, reads stdin to its end
	# (from a cat in the background: fd 3, as the shell gives a background
	# command /dev/null for its stdin).
	plugin sig 'trap "echo hup >>\"\$1\"" HUP
trap "echo usr1 >>\"\$1\"" USR1
exec 3<&0
cat >/dev/null <&3 &
c=$!
echo ready >>"$1"
while kill -0 $c 2>/dev/null; do wait $c; done'
	mkfifo "$T/fifo"
	start_in ex "$T/fifo" gk-exporter --to "sig:$T/a" --to "sig:$T/b"
	exec 4>"$T/fifo"
	wait_grep ready "$T/a" 10
	wait_grep ready "$T/b" 10
	# the snapshot answers USR1: it has been handled, and not passed on
	[ -n "$(live_metric gk_exporter_restarts_total sig)" ]
	kill -HUP "$(bg_pid ex)"
	wait_grep hup "$T/a" 10
	wait_grep hup "$T/b" 10
	exec 4>&-
	wait_exit ex 10
	[ "$BG_STATUS" -eq 0 ]
	! grep -q usr1 "$T/a" "$T/b"
	[ "$(metric "$T/ex.err" gk_exporter_restarts_total sig)" = 0 ]
}

@test "usage errors: one line on stderr, exit 64" {
	for args in "" "--bogus" "-x" "--to" "--to :x" "--to a/b" "--buffer 1x --to tee" \
		"--buffer-events 0 --to tee" "--drain-timeout soon --to tee" "--to tee extra" "../evil"; do
		run gk-exporter $args </dev/null
		[ "$status" -eq 64 ] || { echo "args: $args: status $status: $output"; false; }
		[ "${#lines[@]}" -eq 1 ] || { echo "args: $args: $output"; false; }
		[[ "${lines[0]}" == gk-exporter:* ]]
	done
}

@test "--help and --version" {
	run gk-exporter --help
	[ "$status" -eq 0 ]
	assert_output --partial '--to NAME'
	run gk-exporter --version
	[ "$status" -eq 0 ]
	assert_output --regexp '^gk-exporter [0-9]'
}
