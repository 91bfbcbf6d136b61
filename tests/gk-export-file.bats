#!/usr/bin/env bats
# gk-export-file: appending, rotation by size and time, --keep, reopening
# on SIGHUP, the fsync policy, and a full disk.
#
# logrotate's two styles are tested twice: done by hand the way logrotate
# does them ("create" renames the file and sends SIGHUP; "copytruncate"
# copies the file and truncates it in place, sending nothing), and with
# the real logrotate(8) and a config of the test's own, when the logrotate
# package is installed (those two are skipped, saying so, where it is not).
#
# The full disk is real: a small tmpfs mounted by the test (the suite runs
# as root, as CI does) and filled with a file, so write(2) fails with
# ENOSPC; removing the filler gives the space back.  Where mount is not
# allowed those tests are skipped, saying so.

bats_require_minimum_version 1.5.0
load helpers/common
load helpers/log-exporters

setup() {
	common_setup
	LOG="$T/events.log"
}

teardown() {
	feed_end
	stop_all
	if [ -n "${MNT:-}" ] && mountpoint -q "$MNT"; then
		umount -l "$MNT" || true
	fi
}

# seq_events FROM TO: numbered events, each about 130 bytes.
seq_events() {
	local i
	for ((i = $1; i <= $2; i++)); do
		ev info "event $i" "\"n\":$i,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\""
		echo
	done
}

# ns FILE...: the n members of the events in FILEs, in order, on one line.
ns() {
	cat "$@" | jq -r '.n' | tr '\n' ' ' | sed 's/ $//'
}

mount_small_fs() {
	MNT="$T/mnt"
	mkdir -p "$MNT"
	if ! mount -t tmpfs -o size=256k,mode=0755 gk-test "$MNT" 2>/dev/null; then
		MNT=
		skip "cannot mount a tmpfs here (not root?): the full-disk case needs one"
	fi
}

fill_fs() {
	dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null || true
	# Nothing left: a one-byte write must fail.
	! printf x >>"$MNT/probe" 2>/dev/null
}

@test "events are appended one a line after what the file held, and a non-JSON line is kept as a raw event" {
	echo '{"old":true}' >"$LOG"
	plugin_start plug gk-export-file "$LOG"
	feed "$(ev info 'first')" 'a stray print' "$(ev warn 'third')"
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	run jq -c '[.old, .msg, .raw]' "$LOG"
	assert_output '[true,null,null]
[null,"first",null]
[null,"a stray print",true]
[null,"third",null]'
}

@test "an exporter that read its events on stdin leaves stdin blocking, as it found it, for what runs after it" {
	printf '%s\n' "$(ev info 'one')" >"$T/in"
	# O_NONBLOCK belongs to the open file, which the shell shares.
	run bash -c 'timeout 10 gk-export-file "$1" 2>/dev/null
		python3 -c "import fcntl, os; print(\"nonblocking\" if fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK else \"blocking\")"' \
		_ "$LOG" <"$T/in"
	assert_output blocking
	run jq -r .msg "$LOG"
	assert_output one
}

@test "a lone surrogate escape in an event's string is read as U+FFFD, counted: the event keeps its type and members" {
	plugin_start plug gk-export-file "$LOG"
	feed '{"type":"log","level":"warn","msg":"a\ud800b","k":"x\udc00","pair":"\ud83d\ude00","esc":"\\ud800"}' \
		'{"type":"metrics","metrics":[{"name":"m","type":"counter","series":[{"labels":{"path":"\udbff"},"value":1}]}]}'
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	run jq -c '[.type, .level, .msg, .k, .pair, .esc, .raw, .metrics[0].series[0].labels.path]' "$LOG"
	assert_output '["log","warn","a�b","x�","😀","\\ud800",null,null]
["metrics",null,null,null,null,null,null,"�"]'
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_lone_surrogates_total)" = 2 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_raw_total)" = 0 ]
}

@test "gk-log's event goes through gk-exporter file, and --format text writes it for a person" {
	gk-log -l warn "disk nearly full" free_mb=120 2>&1 >/dev/null |
		gk-exporter file --format text "$LOG"
	run cat "$LOG"
	assert_output --regexp '^20[0-9-]+T[0-9:.]+Z WARN gk-log\[[0-9]+\]: disk nearly full free_mb=120$'
}

@test "--format text writes each event on one line: control characters anywhere in it (a newline in proc or ts, an escape) become spaces" {
	plugin_start plug gk-export-file --format text "$LOG"
	feed '{"ts":"2026-12-04T09:30:00.123456Z\nFORGED","type":"log","level":"info","proc":"a\nb\u001b[31m","pid":1,"msg":"m\u001b[2J","k":"v"}' \
		"$(ev info 'second')"
	feed_end
	wait_exit plug 20
	run cat "$LOG"
	assert_line --index 0 '2026-12-04T09:30:00.123456Z FORGED INFO a b [31m[1]: m [2J k=v'
	assert_line --index 1 --regexp ' INFO orders-api\[4242\]: second'
	[ "${#lines[@]}" -eq 2 ]
}

@test "--max-size rotates between events and --keep 2 keeps PATH.1 and PATH.2 only" {
	plugin_start plug gk-export-file --max-size 1k --keep 2 "$LOG"
	while read -r line; do feed "$line"; done < <(seq_events 1 40)
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	[ -s "$LOG" ]
	[ -s "$LOG.1" ]
	[ -s "$LOG.2" ]
	[ ! -e "$LOG.3" ]
	for f in "$LOG" "$LOG.1" "$LOG.2"; do
		[ "$(stat -c %s "$f")" -le 1024 ]
		jq -e . "$f" >/dev/null # whole events only
	done
	# The newest events, in order, across the kept files.
	all=$(ns "$LOG.2" "$LOG.1" "$LOG")
	last=${all##* }
	[ "$last" = 40 ]
	first=${all%% *}
	[ "$all" = "$(seq -s ' ' "$first" 40)" ]
	rot=$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_file_rotations_total)
	[ "$rot" -ge 5 ]
}

@test "--rotate 1s starts a new file at the next second, moving the old one to PATH.1" {
	plugin_start plug gk-export-file --rotate 1s "$LOG"
	feed "$(ev info 'before' '"n":1')"
	wait_event "$BATS_TEST_TMPDIR/plug.err" '.msg == "log file rotated"' 20
	feed "$(ev info 'after' '"n":2')"
	wait_for -t 20 grep -q after "$LOG"
	[ "$(ns "$LOG.1")" = 1 ]
	[ "$(ns "$LOG")" = 2 ]
}

@test "logrotate's create style: after a rename and SIGHUP events go to a new file at PATH" {
	plugin_start plug gk-export-file --fsync never "$LOG"
	feed "$(ev info 'one' '"n":1')"
	wait_for -t 20 grep -q one "$LOG"
	mv "$LOG" "$LOG.old"
	feed "$(ev info 'two' '"n":2')"
	wait_for -t 20 grep -q two "$LOG.old"
	kill -HUP "$(bg_pid plug)"
	wait_event "$BATS_TEST_TMPDIR/plug.err" '.msg == "log file reopened"' 20
	feed "$(ev info 'three' '"n":3')"
	wait_for -t 20 grep -q three "$LOG"
	[ "$(ns "$LOG.old")" = "1 2" ]
	[ "$(ns "$LOG")" = 3 ]
}

@test "logrotate's copytruncate style: writing goes on at the start of the truncated file" {
	plugin_start plug gk-export-file "$LOG"
	feed "$(ev info 'one' '"n":1')" "$(ev info 'two' '"n":2')"
	wait_for -t 20 grep -q two "$LOG"
	cp "$LOG" "$LOG.1"
	: >"$LOG"
	feed "$(ev info 'three' '"n":3')"
	wait_for -t 20 grep -q three "$LOG"
	[ "$(ns "$LOG.1")" = "1 2" ]
	[ "$(ns "$LOG")" = 3 ]
	# No hole of NUL bytes where the old content was.
	[ "$(stat -c %s "$LOG")" = "$(($(ev info three '"n":3' | wc -c) + 1))" ]
}

need_logrotate() {
	command -v logrotate >/dev/null ||
		skip "logrotate is not installed (Debian package logrotate)"
}

@test "logrotate (create, postrotate SIGHUP) rotates the file and events go on in the new one" {
	need_logrotate
	plugin_start plug gk-export-file "$LOG"
	cat >"$T/logrotate.conf" <<EOF
$LOG {
    rotate 3
    create 0640
    postrotate
        kill -HUP $(bg_pid plug)
    endscript
}
EOF
	feed "$(ev info 'one' '"n":1')"
	wait_for -t 20 grep -q one "$LOG"
	logrotate -f -s "$T/logrotate.state" "$T/logrotate.conf"
	wait_event "$BATS_TEST_TMPDIR/plug.err" '.msg == "log file reopened"' 20
	feed "$(ev info 'two' '"n":2')"
	feed_end
	wait_exit plug 20
	[ "$(ns "$LOG.1")" = 1 ]
	[ "$(ns "$LOG")" = 2 ]
	[ "$(stat -c %a "$LOG")" = 640 ] # logrotate's new file, kept
}

@test "logrotate copytruncate: no signal needed, events go on at the start of the emptied file" {
	need_logrotate
	plugin_start plug gk-export-file "$LOG"
	cat >"$T/logrotate.conf" <<EOF
$LOG {
    rotate 3
    copytruncate
}
EOF
	feed "$(ev info 'one' '"n":1')"
	wait_for -t 20 grep -q one "$LOG"
	logrotate -f -s "$T/logrotate.state" "$T/logrotate.conf"
	feed "$(ev info 'two' '"n":2')"
	feed_end
	wait_exit plug 20
	[ "$(ns "$LOG.1")" = 1 ]
	[ "$(ns "$LOG")" = 2 ]
	[ "$(stat -c %s "$LOG")" = "$(($(ev info two '"n":2' | wc -c) + 1))" ]
}

@test "--fsync always syncs after each event, batch once per write round, never not at all" {
	for policy in always batch never; do
		rm -f "$LOG"
		plugin_start "p-$policy" gk-export-file --fsync "$policy" "$LOG"
		while read -r line; do feed "$line"; done < <(seq_events 1 6)
		feed_end
		wait_exit "p-$policy" 20
		[ "$(jq -s length "$LOG")" = 6 ]
		eval "n_$policy=\$(metric \"\$BATS_TEST_TMPDIR/p-$policy.err\" gk_export_file_fsyncs_total)"
	done
	[ "$n_always" = 6 ]
	[ "$n_batch" -ge 1 ]
	[ "$n_batch" -le 6 ]
	[ "$n_never" = 0 ]
}

@test "a full disk holds the events in memory and writes each once, in order, when space returns" {
	mount_small_fs
	plugin_start plug gk-export-file "$MNT/events.log"
	fill_fs
	while read -r line; do feed "$line"; done < <(seq_events 1 20)
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "cannot write the log file: holding events" and .error == "No space left on device"' 20
	rm -f "$MNT/filler"
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "writing the log file again" and .dropped == 0' 20
	feed "$(ev info 'later' '"n":21')"
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	[ "$(ns "$MNT/events.log")" = "$(seq -s ' ' 1 21)" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_file_blocked_total)" = 1 ]
}

@test "past --buffer a full disk drops the oldest events, counts them and says so" {
	mount_small_fs
	GK_METRICS_INTERVAL=200ms plugin_start plug gk-export-file --buffer 2k \
		"$MNT/events.log"
	fill_fs
	feed "$(seq_events 1 1)"
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "cannot write the log file: holding events"' 20
	while read -r line; do feed "$line"; done < <(seq_events 2 40)
	# Every event read (the snapshots say so), then space again.
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.type == "metrics" and any(.metrics[]; .name == "gk_export_events_total" and .series[0].value == 40)' 20
	rm -f "$MNT/filler"
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "writing the log file again" and .dropped > 0' 20
	feed_end
	wait_exit plug 20
	all=$(ns "$MNT/events.log")
	kept=$(wc -w <<<"$all")
	# Event 1 was already being written when the disk filled: it is kept
	# (and finished); after it, the newest, in order.
	rest=${all#1 }
	second=${rest%% *}
	[ "$all" = "1 $(seq -s ' ' "$second" 40)" ]
	dropped=$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)
	[ "$((kept + dropped))" = 40 ]
	told=$(events "$BATS_TEST_TMPDIR/plug.err" 'select(.msg == "writing the log file again") | .dropped')
	[ "$told" = "$dropped" ]
	[ "$kept" -lt 20 ] # 2k holds about 15 of them
}

@test "a PATH that cannot be opened is a fatal error, exit 73; usage errors exit 64" {
	run --separate-stderr gk-export-file "$T/no/such/dir/x.log"
	assert_failure 73
	[[ $stderr == *"unable to open $T/no/such/dir/x.log: No such file or directory"* ]]
	run --separate-stderr gk-export-file
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	run --separate-stderr gk-export-file --fsync sometimes "$LOG"
	assert_failure 64
	[[ $stderr == *"gk-export-file"*"expected never, batch or always"* ]]
	run --separate-stderr gk-export-file --rotate weekly "$LOG"
	assert_failure 64
	run gk-export-file --help
	assert_success
	assert_output --partial '--max-size'
}
