# tests/helpers/log-exporters.bash: helpers of the log exporter suites
# (gk-export-syslog, -file, -loki, -kafka).
#
#   load helpers/common
#   load helpers/log-exporters
#
# The plugins are run by name: tests/run puts GK_BUILD/bin on PATH, and
# this adds GK_BUILD/exporters (gk-exporter finds them there by itself).

PATH="$GK_BUILD/exporters:$PATH"

# plugin_start NAME CMD ARGS...: start a plugin (start_bg, its own process
# group) with its stdin on a fifo that this shell holds open on fd 7, so
# that events can be written to it a few at a time (feed), and EOF sent
# (feed_end).  stderr (the plugin's events) goes to $T/NAME.err.
plugin_start() {
	local name=$1
	shift
	local fifo="$BATS_TEST_TMPDIR/$name.in"
	rm -f "$fifo"
	mkfifo "$fifo"
	start_bg "$name" sh -c 'exec "$@" <"$0"' "$fifo" "$@"
	# Opening the write end waits for the plugin to open the read end.
	exec 7>"$fifo"
}

# feed LINE...: write event lines to the plugin plugin_start started.
feed() {
	printf '%s\n' "$@" >&7
}

# feed_end: EOF on the plugin's stdin (it drains, then exits).
feed_end() {
	exec 7>&- 2>/dev/null || true
}

# ev [LEVEL] MSG [JSON MEMBERS]: one event line, as gk-log writes it, with
# a fixed ts.
ev() {
	local level=$1 msg=$2 extra=${3:-}
	printf '{"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"%s","proc":"orders-api","pid":4242,"svc":"orders","msg":"%s"%s}' \
		"$level" "$msg" "${extra:+,$extra}"
}

# metric FILE NAME: the value of an unlabelled counter or gauge in the last
# metrics snapshot in FILE (a plugin's stderr); empty when none.
metric() {
	jq -R -c 'fromjson? | objects | select(.type == "metrics")' "$1" |
		jq -r -s --arg n "$2" \
			'[.[] | .metrics[] | select(.name == $n) | .series[0].value] | last // empty'
}

# --- rsyslog ------------------------------------------------------------

# rsyslog_start: a real rsyslogd with its own config in $T/rsyslog, on free
# loopback ports: imudp on $RS_UDP, imtcp on $RS_TCP, imuxsock on
# $RS_SOCK (the legacy /dev/log format, as glibc writes it) and on
# $RS_SOCK5424 (the default parsers: RFC 5424).  Every message goes to
# $RS_OUT, one line each:
#   FACILITY.SEVERITY APP-NAME PROCID MSGID |MSG| STRUCTURED-DATA
# to $RS_TS as: TIMESTAMP (RFC 3339, as rsyslog read it) MSG
# and to $RS_RAW as the message as received (rawmsg), one a line.
rsyslog_start() {
	local d="$BATS_TEST_TMPDIR/rsyslog"
	mkdir -p "$d/work"
	RS_UDP=$(free_port)
	RS_TCP=$(free_port)
	RS_SOCK="$d/log.sock"
	RS_SOCK5424="$d/log5424.sock"
	RS_OUT="$d/out.log"
	RS_TS="$d/ts.log"
	RS_RAW="$d/raw.log"
	cat >"$d/rsyslog.conf" <<EOF
global(workDirectory="$d/work" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="$RS_UDP")
input(type="imtcp" address="127.0.0.1" port="$RS_TCP")
input(type="imuxsock" socket="$RS_SOCK" createPath="on"
      rateLimit.interval="0")
input(type="imuxsock" socket="$RS_SOCK5424" createPath="on"
      rateLimit.interval="0" useSpecialParser="off" parseHostname="on")
template(name="gk" type="string"
  string="%syslogfacility-text%.%syslogseverity-text% %app-name% %procid% %msgid% |%msg%| %structured-data%\n")
template(name="gkts" type="string"
  string="%timereported:::date-rfc3339% %msg%\n")
template(name="gkraw" type="string" string="%rawmsg%\n")
*.* action(type="omfile" file="$RS_OUT" template="gk")
*.* action(type="omfile" file="$RS_TS" template="gkts")
*.* action(type="omfile" file="$RS_RAW" template="gkraw")
EOF
	start_bg rsyslogd rsyslogd -n -f "$d/rsyslog.conf" -i "$d/rsyslogd.pid"
	wait_port 127.0.0.1 "$RS_TCP" 20
	wait_for -t 20 test -S "$RS_SOCK"
	wait_for -t 20 test -S "$RS_SOCK5424"
	# UDP has no handshake: wait until a probe datagram is written out.
	wait_for -t 20 _rsyslog_udp_probe
}

_rsyslog_udp_probe() {
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"<14>1 - - probe - - - udp-probe", ("127.0.0.1", int(sys.argv[1])))' "$RS_UDP"
	grep -q 'udp-probe' "$RS_OUT" 2>/dev/null
}

# rs_lines PATTERN: the lines of $RS_OUT that match (fixed string).
rs_lines() {
	grep -F -- "$1" "$RS_OUT" 2>/dev/null || true
}

# --- loopback HTTP sink -------------------------------------------------

# http_sink_start [STATUS...]: a python3 HTTP server on a free port
# ($SINK_PORT) that records every request (method, path, headers, body
# decompressed when gzipped) as one JSON line in $SINK_LOG, and answers
# with the given statuses in turn, then 204 for every request after.
# Like Loki, it answers 400 to a push with a stream without labels, or
# with a label value longer than 2048 bytes or a line longer than 256000
# (its default limits).
http_sink_start() {
	SINK_PORT=$(free_port)
	SINK_LOG="$BATS_TEST_TMPDIR/sink.jsonl"
	: >"$SINK_LOG"
	start_bg sink python3 -c "$_HTTP_SINK_PY" "$SINK_PORT" "$SINK_LOG" "$@"
	wait_port 127.0.0.1 "$SINK_PORT" 20
}

_HTTP_SINK_PY='
import gzip, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, log = int(sys.argv[1]), sys.argv[2]
statuses = [int(s) for s in sys.argv[3:]]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        body = raw
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(raw)
        status = statuses.pop(0) if statuses else 204
        try:
            streams = json.loads(body).get("streams") or []
        except (ValueError, AttributeError):
            streams = []
        if any(not s.get("stream") for s in streams):
            status = 400  # Loki: at least one label pair per stream
        if any(len(v.encode()) > 2048 for s in streams
               for v in (s.get("stream") or {}).values()):
            status = 400  # Loki: max_label_value_length, 2048 bytes
        if any(len(v[1].encode()) > 256000 for s in streams
               for v in s.get("values") or []):
            status = 400  # Loki: max_line_size, 256KB
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "raw_bytes": len(raw), "body": body.decode("utf-8"),
               "status": status}
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'

# --- Kafka --------------------------------------------------------------

# kafka_mock_start TOPIC...: build/tests/kafka-mock (librdkafka's mock
# cluster: one in-process broker speaking the real Kafka protocol, not
# Apache Kafka) with TOPICs; its bootstrap servers in $KAFKA_BOOT, what it
# consumes in $KAFKA_OUT (one JSON line a message, after the first line).
# Its stdin is a fifo held on fd 8, for kafka_mock_cmd.
kafka_mock_start() {
	local fifo="$BATS_TEST_TMPDIR/kafka.in"
	rm -f "$fifo"
	mkfifo "$fifo"
	start_bg kafka sh -c 'exec "$@" <"$0"' "$fifo" \
		"$GK_BUILD/tests/kafka-mock" "$@"
	exec 8>"$fifo"
	KAFKA_OUT="$BATS_TEST_TMPDIR/kafka.out"
	wait_file "$KAFKA_OUT" 20
	KAFKA_BOOT=$(head -n 1 "$KAFKA_OUT")
}

# kafka_mock_cmd CMD: send a command (down, up, fail N ERR) and wait for
# the mock to say it is done.
kafka_mock_cmd() {
	printf '%s\n' "$1" >&8
	wait_for -t 10 grep -qxF "ok $1" "$KAFKA_OUT"
}

kafka_mock_end() {
	exec 8>&- 2>/dev/null || true
}

# kafka_msgs [TOPIC]: the messages consumed (of TOPIC), one JSON a line.
kafka_msgs() {
	tail -n +2 "$KAFKA_OUT" | grep '^{' | jq -c --arg t "${1:-}" \
		'select($t == "" or .topic == $t)'
}

kafka_count() {
	kafka_msgs "$@" | wc -l
}

# kafka_has N [TOPIC]: true when N messages (of TOPIC) were consumed; for
# wait_for, which runs it again each time.
kafka_has() {
	[ "$(kafka_count "${2:-}")" = "$1" ]
}
