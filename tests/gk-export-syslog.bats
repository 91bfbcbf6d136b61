#!/usr/bin/env bats
# gk-export-syslog against a real rsyslogd (Debian's rsyslog), started by
# each test with its own config in a temp dir: imudp and imtcp on free
# loopback ports, and imuxsock on temp socket paths.  The local mode
# (what syslog(3) does) is tested with --socket pointing at rsyslog's
# imuxsock socket instead of /dev/log: the plugin opens the unix datagram
# socket itself and writes the RFC 3164 format glibc writes, so the test
# needs no bind mount over /dev/log.  rsyslog writes every message to a
# file with a template that prints facility, severity, APP-NAME, PROCID,
# MSGID, MSG and STRUCTURED-DATA.

bats_require_minimum_version 1.5.0
load helpers/common
load helpers/log-exporters

setup() {
	common_setup
	rsyslog_start
}

teardown() {
	feed_end
	stop_all
}

@test "local mode: each level arrives with the facility and the syslog severity it maps to" {
	plugin_start plug gk-export-syslog --socket "$RS_SOCK" --facility local3
	feed "$(ev debug 'cache miss' '"key":"a"')" \
		"$(ev info 'request served' '"status":200')" \
		"$(ev warn 'slow upstream' '"ms":950')" \
		"$(ev error 'upstream failed' '"err":"connection refused"')" \
		"$(ev fatal 'cannot bind')"
	wait_for -t 20 grep -q 'cannot bind' "$RS_OUT"
	run rs_lines 'orders-api'
	assert_line --index 0 --regexp '^local3\.debug orders-api 4242 - \| ?cache miss key=a\|'
	assert_line --index 1 --regexp '^local3\.info orders-api 4242 - \| ?request served status=200\|'
	assert_line --index 2 --regexp '^local3\.warning orders-api 4242 - \| ?slow upstream ms=950\|'
	assert_line --index 3 --regexp '^local3\.err orders-api 4242 - \| ?upstream failed err="connection refused"\|'
	assert_line --index 4 --regexp '^local3\.crit orders-api 4242 - \| ?cannot bind\|'
	[ "$(rs_lines orders-api | wc -l)" = 5 ]
}

@test "local mode: --ident replaces the tag, and gk-log's event goes through gk-exporter" {
	gk-log -l error "disk failed" dev=sda 2>&1 >/dev/null |
		gk-exporter syslog --socket "$RS_SOCK" --facility daemon \
			--ident backup
	wait_for -t 20 grep -q 'disk failed' "$RS_OUT"
	run rs_lines 'disk failed'
	assert_output --regexp '^daemon\.err backup [0-9]+ - \| ?disk failed dev=sda\|'
}

@test "local mode: messages wait while the daemon is away and arrive, in order, once it is back" {
	stop_all
	rm -f "$RS_OUT"
	plugin_start plug gk-export-syslog --socket "$RS_SOCK"
	for i in 1 2 3; do feed "$(ev info "held $i")"; done
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "cannot connect to the backend" or .msg == "send to the backend failed"' 20
	start_bg rsyslogd rsyslogd -n -f "$BATS_TEST_TMPDIR/rsyslog/rsyslog.conf" \
		-i "$BATS_TEST_TMPDIR/rsyslog/rsyslogd.pid"
	wait_for -t 30 grep -q 'held 3' "$RS_OUT"
	run rs_lines 'held'
	[ "${#lines[@]}" = 3 ]
	assert_line --index 0 --regexp '^user\.info orders-api 4242 - \| ?held 1\|'
	assert_line --index 2 --regexp '^user\.info orders-api 4242 - \| ?held 3\|'
}

@test "RFC 5424 over UDP: the event's other members are structured data, with \", \\ and ] escaped" {
	plugin_start plug gk-export-syslog --facility local5 "udp:127.0.0.1:$RS_UDP"
	feed "$(ev warn 'odd path' '"path":"/a]b","q":"say \"hi\"","win":"C:\\tmp","n":3,"ok":true')"
	wait_for -t 20 grep -q 'odd path' "$RS_OUT"
	run rs_lines 'odd path'
	assert_output 'local5.warning orders-api 4242 log |odd path| [gokit@32473 svc="orders" path="/a\]b" q="say \"hi\"" win="C:\\tmp" n="3" ok="true"]'
}

@test "RFC 5424 carries the event's ts as TIMESTAMP, and --sd-id names the SD element" {
	plugin_start plug gk-export-syslog --sd-id 'acme@99999' \
		"udp:127.0.0.1:$RS_UDP"
	feed "$(ev info 'stamped' '"k":"v"')"
	wait_for -t 20 grep -q 'stamped' "$RS_OUT"
	run rs_lines 'stamped'
	assert_output 'user.info orders-api 4242 log |stamped| [acme@99999 svc="orders" k="v"]'
	# rsyslog's own reading of the TIMESTAMP, microseconds and all.
	run grep -F 'stamped' "$RS_TS"
	assert_output --regexp '^2026-12-04T09:30:00\.123456(Z|\+00:00) '
}

@test "RFC 5424 over TCP uses octet counting, so a message may hold a newline" {
	plugin_start plug gk-export-syslog "tcp:127.0.0.1:$RS_TCP"
	feed "$(ev error 'two\nlines' '"a":"1"')" "$(ev info 'after it')"
	wait_for -t 20 grep -q 'after it' "$RS_OUT"
	run rs_lines 'orders-api'
	assert_line --index 0 --regexp '^user\.err orders-api 4242 log \|two(#012|\\n|.)lines\| \[gokit@32473 svc="orders" a="1"\]$'
	assert_line --index 1 'user.info orders-api 4242 log |after it| [gokit@32473 svc="orders"]'
	[ "$(rs_lines orders-api | wc -l)" = 2 ]
}

@test "TCP: events written while rsyslog is down are delivered, in order, once it is back" {
	stop_all
	rm -f "$RS_OUT"
	plugin_start plug gk-export-syslog "tcp:127.0.0.1:$RS_TCP"
	for i in 1 2 3 4 5; do feed "$(ev info "queued $i")"; done
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "cannot connect to the backend"' 20
	start_bg rsyslogd rsyslogd -n -f "$BATS_TEST_TMPDIR/rsyslog/rsyslog.conf" \
		-i "$BATS_TEST_TMPDIR/rsyslog/rsyslogd.pid"
	wait_for -t 30 grep -q 'queued 5' "$RS_OUT"
	run rs_lines 'queued'
	assert_output "$(for i in 1 2 3 4 5; do echo "user.info orders-api 4242 log |queued $i| [gokit@32473 svc=\"orders\"]"; done)"
}

@test "UDP with nobody listening: every datagram is sent, and each the kernel reports refused (port unreachable) is counted, none silently" {
	port=$(free_port)
	plugin_start plug gk-export-syslog "udp:127.0.0.1:$port"
	for i in 1 2 3 4; do feed "$(ev info "lost $i")"; done
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	# Each refusal is reported on the send after the lost datagram: the
	# last one's is not seen before the exit.
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 4 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_udp_refused_total)" = 3 ]
	[ "$(count_events "$BATS_TEST_TMPDIR/plug.err" '.msg == "datagrams refused by the backend host (nobody listening)"')" -ge 1 ]
}

@test "unix:PATH sends RFC 5424 datagrams" {
	plugin_start plug gk-export-syslog --facility local0 "unix:$RS_SOCK5424"
	feed "$(ev error 'over unix' '"x":"y"')"
	wait_for -t 20 grep -q 'over unix' "$RS_OUT"
	run rs_lines 'over unix'
	assert_output 'local0.err orders-api 4242 log |over unix| [gokit@32473 svc="orders" x="y"]'
}

@test "access events are sent, metrics snapshots are skipped and counted" {
	plugin_start plug gk-export-syslog "udp:127.0.0.1:$RS_UDP"
	feed '{"ts":"2026-12-04T09:30:00.000001Z","type":"metrics","proc":"gk-listener","pid":7,"seq":1,"part":1,"parts":1,"metrics":[]}' \
		'{"ts":"2026-12-04T09:30:00.000002Z","type":"access","proc":"gk-listener","pid":7,"method":"GET","path":"/x","status":200}' \
		"$(ev info 'last one')"
	wait_for -t 20 grep -q 'last one' "$RS_OUT"
	run rs_lines 'gk-listener'
	assert_output 'user.info gk-listener 7 access || [gokit@32473 method="GET" path="/x" status="200"]'
	feed_end
	wait_exit plug 20
	[ "$BG_STATUS" = 0 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_syslog_skipped_total)" = 1 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 2 ]
}

@test "a message longer than --max-message is cut, and counted" {
	long=$(head -c 3000 /dev/zero | tr '\0' x)
	plugin_start plug gk-export-syslog --max-message 1k "udp:127.0.0.1:$RS_UDP"
	feed "$(ev info "big $long")"
	wait_for -t 20 grep -q 'big xxx' "$RS_OUT"
	run rs_lines 'big xxx'
	[ "${#output}" -lt 1100 ]
	feed_end
	wait_exit plug 20
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_syslog_truncated_total)" = 1 ]
}

@test "no message is longer than --max-message, wherever the bound falls in its structured data" {
	# Structured data of every size around the bound, then a message:
	# one of them ends exactly at the bound, with no room for " MSG".
	plugin_start plug gk-export-syslog --max-message 480 --hostname h "udp:127.0.0.1:$RS_UDP"
	for k in $(seq 380 480); do
		feed "$(ev info "sd $k" "\"k\":\"$(head -c "$k" /dev/zero | tr '\0' a)\"")"
	done
	feed "$(ev info 'after them')"
	wait_for -t 20 grep -q 'after them' "$RS_RAW"
	run grep -c 'orders-api' "$RS_RAW"
	assert_output 102
	run awk 'length($0) > 480 {print length($0)}' "$RS_RAW"
	assert_output ""
}

@test "usage errors exit 64 with one line naming the program" {
	run --separate-stderr gk-export-syslog --facility nosuch
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == *gk-export-syslog*nosuch* ]]
	run --separate-stderr gk-export-syslog http://example
	assert_failure 64
	[[ $stderr == *"expected udp:HOST:PORT"* ]]
	run gk-export-syslog --help
	assert_success
	assert_output --partial '--facility'
	run gk-export-syslog --version
	assert_success
	assert_output --regexp '^gk-export-syslog [0-9]'
}
