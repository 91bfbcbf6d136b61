# tests/helpers/metrics-exporters.bash: real peers for the metrics
# exporter plugins (statsd, carbon, InfluxDB, Pushgateway) and the gokit
# stacks that feed them.  Load after helpers/common.
#
# Every peer runs in its own process group through start_bg, with its own
# config in $BATS_TEST_TMPDIR, on loopback ports picked by binding port 0;
# stop_all in teardown ends them.  The plugins run by name: this puts
# GK_BUILD/exporters on PATH (gk-exporter finds them there by itself).

PATH="$GK_BUILD/exporters:$PATH"

# free_udp_port: a UDP port on 127.0.0.1 nobody has bound now.
free_udp_port() {
	python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# start_stack NAME PORT PLUGIN ARGS...: a gk-listener on 127.0.0.1:PORT in
# front of the hello example, writing a metrics snapshot every second, its
# events (stderr) piped into the plugin.  The plugin's own events go to
# $BATS_TEST_TMPDIR/NAME.err.  Waits until the listener answers.
start_stack() {
	local name=$1 port=$2
	shift 2
	start_bg "$name" env GK_METRICS_INTERVAL=1 GK_EVENTS_FORMAT=json \
		bash -c 'port=$1; shift
gk-listener -l "127.0.0.1:$port" -- hello 2>&1 >/dev/null | "$@"' \
		_ "$port" "$@"
	# A TCP connect, not a request: requests are what the tests count.
	wait_port 127.0.0.1 "$port" 20
}

# hit PORT N: N requests to the stack, each answered 200.
hit() {
	local i code
	for ((i = 0; i < $2; i++)); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 \
			"http://127.0.0.1:$1/") || return 1
		[ "$code" = 200 ] || return 1
	done
}

# record_stack FILE N [SNAPSHOTS]: run a stack alone, serve N requests,
# wait for SNAPSHOTS (default 1) snapshots of the listener, the last with
# the N requests, stop it, and keep every event it wrote (metrics
# snapshots included, the one at exit last) in FILE.  The events are those
# of real gokit programs.
record_stack() {
	local file=$1 n=$2 snaps=${3:-1} port
	port=$(free_port)
	start_bg rec env GK_METRICS_INTERVAL=1 GK_EVENTS_FORMAT=json \
		gk-listener -l "127.0.0.1:$port" -- hello
	# A TCP connect, not a request: requests are what the tests count.
	wait_port 127.0.0.1 "$port" 20
	hit "$port" "$n"
	# A snapshot after the requests, then TERM: the exit snapshot.
	wait_for -t 20 _snapshot_with_requests "$BATS_TEST_TMPDIR/rec.err" "$n"
	wait_for -t 20 _listener_seq_ge "$BATS_TEST_TMPDIR/rec.err" "$snaps"
	kill -TERM "$(bg_pid rec)"
	wait_exit rec 20
	cp "$BATS_TEST_TMPDIR/rec.err" "$file"
}

_listener_seq_ge() {
	jq -R -c 'fromjson? | select(.type == "metrics" and
		.proc == "gk-listener") | .seq' "$1" 2>/dev/null |
		awk -v n="$2" '$1 >= n {f = 1} END {exit !f}'
}

_snapshot_with_requests() {
	jq -R -c 'fromjson? | select(.type == "metrics") | .metrics[]
		| select(.name == "gk_http_requests_total") | .series[].value' \
		"$1" 2>/dev/null | grep -qx "$2"
}

# fifo_plugin NAME CMD ARGS...: start a plugin (start_bg) reading a fifo
# that this shell holds open on fd 8: feed it with `cat FILE >&8`, end its
# input with `exec 8>&-`.  Its events (own metrics every second) go to
# $BATS_TEST_TMPDIR/NAME.err.
fifo_plugin() {
	local name=$1
	shift
	local fifo=$BATS_TEST_TMPDIR/$name.in
	rm -f "$fifo"
	mkfifo "$fifo"
	start_bg "$name" env GK_METRICS_INTERVAL=1 GK_EVENTS_FORMAT=json \
		sh -c 'exec "$@" <"$0"' "$fifo" "$@"
	exec 8>"$fifo"
}

# own_metric FILE NAME: the last value of a plugin's own (unlabelled)
# metric NAME in its events FILE; 0 before its first snapshot.
own_metric() {
	local v
	v=$(jq -R -r --arg n "$2" 'fromjson? | select(.type == "metrics")
		| .metrics[] | select(.name == $n) | .series[0].value // empty' \
		"$1" 2>/dev/null | tail -n 1)
	echo "${v:-0}"
}

_metric_ge() {
	[ "$(own_metric "$1" "$2")" -ge "$3" ]
}

# wait_metric_ge FILE NAME MIN [SECONDS]: until own_metric >= MIN.
wait_metric_ge() {
	wait_for -t "${4:-20}" _metric_ge "$1" "$2" "$3"
}

# ------------------------------------------------------------------
# statsd (npm statsd 0.9 under Node)

STATSD_DIR=${STATSD_DIR:-/opt/gokit/statsd/node_modules/statsd}

require_statsd() {
	if [ ! -f "$STATSD_DIR/bin/statsd" ]; then
		skip "statsd is not installed at $STATSD_DIR (contrib/install-deps installs it with npm)"
	fi
	command -v node >/dev/null || skip "node is not installed"
}

# start_statsd: statsd on a free UDP port ($STATSD_PORT), flushing every
# second to the console backend and to a test backend that appends each
# flush as one JSON line to $STATSD_FLUSH; every line received is dumped
# (dumpMessages) to statsd.out.
start_statsd() {
	require_statsd
	local d=$BATS_TEST_TMPDIR
	STATSD_PORT=$(free_udp_port)
	STATSD_FLUSH=$d/statsd-flush.jsonl
	local mgmt
	mgmt=$(free_port)
	cat >"$d/flushjson.js" <<'EOF'
// Each flush of statsd as one JSON line in config.flushFile.
var fs = require('fs');
exports.init = function (startup, config, events) {
  events.on('flush', function (ts, m) {
    fs.appendFileSync(config.flushFile, JSON.stringify({
      counters: m.counters, gauges: m.gauges, timer_data: m.timer_data,
      timers: m.timers }) + "\n");
  });
  return true;
};
EOF
	cat >"$d/statsd.js" <<EOF
{ port: $STATSD_PORT, address: "127.0.0.1",
  mgmt_port: $mgmt, mgmt_address: "127.0.0.1",
  flushInterval: 1000, dumpMessages: true, deleteIdleStats: true,
  backends: ["./backends/console", "$d/flushjson.js"],
  flushFile: "$STATSD_FLUSH" }
EOF
	start_bg statsd node "$STATSD_DIR/bin/statsd" "$d/statsd.js"
	# Ready once its management port answers.
	wait_port 127.0.0.1 "$mgmt" 20
	: >"$STATSD_FLUSH"
}

# statsd_counter KEY: the sum of KEY over every flush so far.
statsd_counter() {
	jq -s --arg k "$1" 'map(.counters[$k] // 0) | add // 0' "$STATSD_FLUSH"
}

# statsd_timer_count KEY: the timer count of KEY over every flush, rounded
# (sample rates make it a float).
statsd_timer_count() {
	jq -s --arg k "$1" \
		'map(.timer_data[$k].count // 0) | add // 0 | . + 0.5 | floor' \
		"$STATSD_FLUSH"
}

# statsd_gauge KEY: the last value of gauge KEY.
statsd_gauge() {
	jq -s --arg k "$1" 'map(.gauges[$k] // empty) | last // "none"' \
		"$STATSD_FLUSH"
}

# statsd_flushed: wait until statsd flushed twice more than now, so that
# what it received before this call is in $STATSD_FLUSH.
statsd_flushed() {
	local n
	n=$(wc -l <"$STATSD_FLUSH")
	wait_for -t 20 _lines_ge "$STATSD_FLUSH" $((n + 2))
}

_lines_ge() {
	[ "$(wc -l <"$1")" -ge "$2" ]
}

# statsd_lines: every line statsd received (dumpMessages).
statsd_lines() {
	sed -n 's/^.* - DEBUG: //p' "$BATS_TEST_TMPDIR/statsd.out"
}

_eq() {
	[ "$("${@:2}")" = "$1" ]
}

# wait_eq EXPECTED SECONDS CMD ARGS...: until CMD prints EXPECTED.
wait_eq() {
	local want=$1 t=$2
	shift 2
	wait_for -t "$t" _eq "$want" "$@" || {
		echo "wanted $want, last: $("$@")" >&2
		return 1
	}
}

# ------------------------------------------------------------------
# carbon (Debian graphite-carbon) and whisper

# start_carbon [NAME]: carbon-cache --nodaemon with a carbon.conf of its own
# under $BATS_TEST_TMPDIR/carbon, its line receiver on $CARBON_PORT (free,
# chosen once per test), every other port free too.  Whisper files go to
# $CARBON_WSP; storage-schemas keep 1-second points for an hour.
start_carbon() {
	local name=${1:-carbon}
	local c=$BATS_TEST_TMPDIR/carbon
	mkdir -p "$c/whisper" "$c/lists" "$c/log" "$c/run" "$c/rrd"
	: "${CARBON_PORT:=$(free_port)}"
	CARBON_WSP=$c/whisper
	local pickle query
	pickle=$(free_port)
	query=$(free_port)
	cat >"$c/storage-schemas.conf" <<EOF
[all]
pattern = .*
retentions = 1s:1h
EOF
	cat >"$c/storage-aggregation.conf" <<EOF
[default]
pattern = .*
xFilesFactor = 0
aggregationMethod = last
EOF
	cat >"$c/carbon.conf" <<EOF
[cache]
STORAGE_DIR = $c/
LOCAL_DATA_DIR = $c/whisper/
WHITELISTS_DIR = $c/lists/
CONF_DIR = $c/
LOG_DIR = $c/log/
PID_DIR = $c/run/
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = $CARBON_PORT
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = $pickle
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = $query
USE_FLOW_CONTROL = True
CACHE_WRITE_STRATEGY = sorted
WHISPER_AUTOFLUSH = True
LOG_UPDATES = False
LOG_CREATES = True
EOF
	start_bg "$name" carbon-cache --config="$c/carbon.conf" \
		--pidfile="$c/run/$name.pid" --logdir="$c/log" --nodaemon start
	wait_port 127.0.0.1 "$CARBON_PORT" 30
}

# wsp PATH: the whisper file of a dotted metric path.
wsp() {
	echo "$CARBON_WSP/${1//.//}.wsp"
}

# wsp_values PATH: the values stored in the whisper file of PATH (not
# None), one per line, oldest first.
wsp_values() {
	local f
	f=$(wsp "$1")
	[ -f "$f" ] || return 0
	whisper-fetch --from=0 "$f" 2>/dev/null |
		awk '$2 != "None" {printf "%.15g\n", $2}'
}

# wsp_last PATH: the last value stored for PATH ("none" when none).
wsp_last() {
	local v
	v=$(wsp_values "$1" | tail -n 1)
	echo "${v:-none}"
}

# wsp_count PATH: how many points PATH holds.
wsp_count() {
	wsp_values "$1" | wc -l
}

# ------------------------------------------------------------------
# InfluxDB 1.x (Debian influxdb)

# start_influx: influxd with a config of its own, HTTP on $INFLUX_PORT,
# every other service off; waits for /ping.
start_influx() {
	INFLUX_PORT=$(free_port)
	start_influx_on
}

# start_influx_on: the same on $INFLUX_PORT, chosen by the caller.
start_influx_on() {
	local d=$BATS_TEST_TMPDIR/influx
	mkdir -p "$d/meta" "$d/data" "$d/wal"
	local rpc
	rpc=$(free_port)
	cat >"$d/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$d/meta"
[data]
  dir = "$d/data"
  wal-dir = "$d/wal"
  query-log-enabled = false
[coordinator]
[retention]
  enabled = false
[shard-precreation]
  enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[subscriber]
  enabled = false
[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
[continuous_queries]
  enabled = false
EOF
	start_bg influxd influxd -config "$d/influxdb.conf"
	wait_for -t 30 _influx_ping
}

_influx_ping() {
	[ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 \
		"http://127.0.0.1:$INFLUX_PORT/ping")" = 204 ]
}

# influx_q DB QUERY: the JSON answer of /query.
influx_q() {
	curl -s -m 10 -G "http://127.0.0.1:$INFLUX_PORT/query" \
		--data-urlencode "db=$1" --data-urlencode "q=$2"
}

# ------------------------------------------------------------------
# Pushgateway (Debian prometheus-pushgateway)

start_pushgateway() {
	PGW_PORT=$(free_port)
	start_pushgateway_on
}

# start_pushgateway_on: the same on $PGW_PORT, chosen by the caller.
start_pushgateway_on() {
	start_bg pushgateway prometheus-pushgateway --persistence.file= \
		--web.listen-address="127.0.0.1:$PGW_PORT"
	wait_http "http://127.0.0.1:$PGW_PORT/-/ready" 30
}

# ------------------------------------------------------------------
# A loopback HTTP sink that records each request (method, path, headers,
# body) as one JSON line in FILE and answers 204.  For wire formats with
# no real server here (InfluxDB v2): its port in $SINK_PORT.

start_http_sink() {
	local file=$1
	SINK_PORT=$(free_port)
	start_bg sink python3 -c '
import http.server, json, sys
out = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_any(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body.decode("utf-8", "replace")}
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(204)
        self.end_headers()
    do_POST = do_PUT = do_GET = do_any
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$SINK_PORT" "$file"
	wait_port 127.0.0.1 "$SINK_PORT" 20
}
