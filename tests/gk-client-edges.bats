#!/usr/bin/env bats
# gk-client at the edges of HTTP and of its own state: answers an upstream
# frames or encodes oddly, an upload the upstream refuses mid-way, an
# endpoint set that churns, weights under light traffic.  Real nginx
# upstreams (tests/helpers/upstreams.bash, or a config of the test's own),
# a real gk-listener in front on each engine, driven with curl.  Answers
# nginx will not give come from a small raw server (canned_start).

load helpers/common
load helpers/upstreams

setup() {
	common_setup
	ERR="$T/stack.err"
}

teardown() {
	stop_all
}

# stack NAME ENGINE [GK-CLIENT OPTIONS...]: gk-listener -- gk-client on
# ENGINE; its URL in SURL[NAME], its events in $T/NAME.err.
declare -gA SURL
stack() {
	local name=$1 eng=$2 port
	shift 2
	port=$(free_port)
	SURL[$name]="http://127.0.0.1:$port"
	start_bg "$name" gk-listener -l "127.0.0.1:$port" --no-access-log \
		--max-body 16m -- gk-client --engine "$eng" "$@"
	wait_http "${SURL[$name]}/healthz" 10
}

client_pid() {
	pgrep -x gk-client -s "$(bg_pid "$1")" | head -n 1
}

# The last complete snapshot of gk-client in FILE, as {seq, metrics}.
_last_snapshot() {
	jq -R -c 'fromjson? | objects | select(.type == "metrics" and .proc == "gk-client")' "$1" |
		jq -s -c '(group_by(.seq) | map(select(length == .[0].parts)) | last) as $l |
			if $l then {seq: $l[0].seq, metrics: ($l | map(.metrics) | add)}
			else {seq: 0, metrics: []} end'
}

_snapshot_after() {
	[ "$(_last_snapshot "$1" | jq .seq)" -gt "$2" ]
}

# snapshot NAME: ask the gk-client of stack NAME for a snapshot (SIGUSR1).
snapshot() {
	local before
	before=$(_last_snapshot "$T/$1.err" | jq .seq)
	kill -USR1 "$(client_pid "$1")"
	wait_for -t 10 _snapshot_after "$T/$1.err" "$before"
	_last_snapshot "$T/$1.err"
}

# metric SNAPSHOT NAME [ENDPOINT]: the value (a histogram: its count) of
# the series of NAME, summed; null when there is no such metric.
metric() {
	jq -r --arg n "$2" --arg e "${3:-}" '[.metrics[] | select(.name == $n) |
		.series[] | select($e == "" or .labels.endpoint == $e) |
		(.value // .count)] | add' <<<"$1"
}

# canned_start: a raw HTTP/1.1 server on a free loopback port (CANNED_ADDR)
# that reads a request's head (and a Content-Length body), then writes the
# bytes of the file $T/canned/NAME for the path /NAME as they are, and
# closes (keeps the connection open, until the client closes it, when
# NAME ends in -open): for answers nginx will not give.
canned_start() {
	mkdir -p "$T/canned"
	local port
	port=$(free_port)
	CANNED_ADDR="127.0.0.1:$port"
	start_bg canned python3 -c '
import os, socket, sys, threading
d, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(64)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(65536)
        if not b:
            c.close()
            return
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    cl = 0
    for l in lines[1:]:
        n, _, v = l.partition(":")
        if n.strip().lower() == "content-length":
            cl = int(v)
    while len(rest) < cl:
        b = c.recv(65536)
        if not b:
            break
        rest += b
    name = lines[0].split(" ")[1].lstrip("/")
    with open(os.path.join(d, os.path.basename(name)), "rb") as f:
        c.sendall(f.read())
    if not name.endswith("-open"):
        c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
' "$T/canned" "$port"
	wait_port 127.0.0.1 "$port" 10
}

# edge_nginx NAME LISTEN SERVER-BODY: an nginx of the test's own, LISTEN
# (one or more listen directives) and SERVER-BODY inside its server block;
# its access log ($T/NAME/access.log) has "$server_addr $request_method
# $uri $status" a line.
edge_nginx() {
	local name=$1 listen=$2 body=$3 d="$T/$1"
	mkdir -p "$d/tmp"
	cat >"$d/nginx.conf" <<-CONF
		daemon off;
		master_process off;
		worker_processes 1;
		pid $d/nginx.pid;
		error_log $d/error.log warn;
		events { worker_connections 1024; }
		http {
		    log_format e '\$server_addr \$request_method \$uri \$status';
		    access_log $d/access.log e;
		    client_body_temp_path $d/tmp/body;
		    proxy_temp_path $d/tmp/proxy;
		    fastcgi_temp_path $d/tmp/fastcgi;
		    uwsgi_temp_path $d/tmp/uwsgi;
		    scgi_temp_path $d/tmp/scgi;
		    default_type text/plain;
		    server {
		        $listen
		        $body
		    }
		}
	CONF
	: >"$d/access.log"
	start_bg "$name" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
}

@test "an upload the upstream answers 413 and then resets mid-way is answered 413, not 502, on either engine" {
	local port
	port=$(free_port)
	# nginx answers 413 at the headers, discards the body for 1 ms at
	# most, then closes with the rest unread: the kernel resets.
	edge_nginx up "listen 127.0.0.1:$port;" 'client_max_body_size 1k;
		lingering_close off; lingering_time 1ms; lingering_timeout 1ms;
		location / { return 200 "ok\n"; }'
	wait_port 127.0.0.1 "$port" 10
	stack n native -e "127.0.0.1:$port"
	stack c curl -e "127.0.0.1:$port"
	head -c 8000000 /dev/zero | tr '\0' a >"$T/big"
	local s i
	for s in n c; do
		for i in 1 2 3; do
			curl -s -o /dev/null -m 20 -w '%{http_code}\n' \
				--data-binary @"$T/big" "${SURL[$s]}/upload"
		done >"$T/codes-$s"
		assert_equal "$(grep -c '^413$' "$T/codes-$s")" 3
	done
	# and the engine goes on: a GET after is answered
	for s in n c; do
		run curl -s -m 10 "${SURL[$s]}/after"
		assert_output "ok"
	done
}

@test "an upstream answer in a transfer coding other than chunked (gzip, chunked; gzip alone, closed or not) is 502 at once on either engine, not passed on as the content" {
	canned_start
	local gz
	printf 'hello\n' | gzip -c >"$T/gz"
	gz=$(stat -c %s "$T/gz")
	{
		printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n'
		printf 'Connection: close\r\n\r\n%x\r\n' "$gz"
		cat "$T/gz"
		printf '\r\n0\r\n\r\n'
	} >"$T/canned/gzchunked"
	{
		printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n'
		printf 'Connection: close\r\n\r\n'
		cat "$T/gz"
	} >"$T/canned/gzonly"
	# gzip alone, the connection kept open: the body never ends
	{
		printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n'
		cat "$T/gz"
	} >"$T/canned/gz-open"
	# the same answer chunked only is passed on
	printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n6\r\nhello\n\r\n0\r\n\r\n' \
		>"$T/canned/chunked"
	stack n native -e "$CANNED_ADDR"
	stack c curl -e "$CANNED_ADDR"
	local s p
	for s in n c; do
		for p in gzchunked gzonly gz-open; do
			run curl -s -m 5 -o "$T/body" -w '%{http_code}' "${SURL[$s]}/$p"
			assert_output 502
		done
		run curl -s -m 10 "${SURL[$s]}/chunked"
		assert_output "hello"
		# a HEAD answer has no body: its coding is only said
		run curl -s -m 5 -I -o /dev/null -w '%{http_code}' "${SURL[$s]}/gzchunked"
		assert_output 200
		local snap
		snap=$(snapshot "$s")
		assert_equal "$(metric "$snap" gk_client_errors_total)" 3
	done
}

@test "an upstream header value in Latin-1 (obs-text, not UTF-8) is 502 on either engine, not passed on changed" {
	local port
	port=$(free_port)
	edge_nginx up "listen 127.0.0.1:$port;" "location = /latin { add_header X-Name \"caf$(printf '\351')\"; return 200 \"ok\\n\"; }
		location = /utf8 { add_header X-Name \"caf$(printf '\303\251')\"; return 200 \"ok\\n\"; }"
	wait_port 127.0.0.1 "$port" 10
	stack n native -e "127.0.0.1:$port"
	stack c curl -e "127.0.0.1:$port"
	local s
	for s in n c; do
		run curl -s -m 10 -o /dev/null -w '%{http_code}' "${SURL[$s]}/latin"
		assert_output 502
		# UTF-8 passes as it is
		run curl -s -m 10 -D - -o /dev/null "${SURL[$s]}/utf8"
		assert_output --partial "x-name: caf$(printf '\303\251')"
		local snap
		snap=$(snapshot "$s")
		assert_equal "$(metric "$snap" gk_client_errors_total)" 1
	done
}

@test "weights are honoured one request at a time: 3:1 by p2c-ewma within 6% over 800, by least exactly over 200" {
	upstream_start 1
	upstream_start 2
	printf '%s 3\n%s 1\n' "${UP_ADDR[1]}" "${UP_ADDR[2]}" >"$T/endpoints"
	stack p native -b p2c-ewma --endpoints "$T/endpoints"
	stack l native -b least --endpoints "$T/endpoints"
	fetch_many 800 "${SURL[p]}/w" >"$T/codes"
	fetch_many 200 "${SURL[l]}/l" >>"$T/codes"
	assert_equal "$(grep -c '^200$' "$T/codes")" 1000
	settle ' /(w|l) ' 1000
	local one
	one=$(hits 1 ' /w ')
	assert_equal "$(($(hits 2 ' /w ') + one))" 800
	# expected 600; 6% of the requests either way (about 4 standard
	# deviations of a binomial draw)
	[ "$one" -ge 552 ] && [ "$one" -le 648 ] || fail "p2c-ewma: upstream 1 got $one of 800"
	# least, with nothing in flight at a pick: smooth weighted round robin
	assert_equal "$(hits 1 ' /l ')" 150
	assert_equal "$(hits 2 ' /l ')" 50
}

# _in_flight PORT N: N connections to PORT are open (the tries began).
_in_flight() {
	[ "$(ss -Htn state established "( dport = :$1 )" | wc -l)" -ge "$2" ]
}

_served_by() {
	curl -s -o /dev/null -m 5 "${SURL[$1]}/probe-$1-$2"
	grep -q "^$2 GET /probe-$1-$2 " "$T/up/access.log"
}

@test "an endpoint set that churns through 8 addresses keeps connections, and the native engine records, only for the set, on either engine" {
	local port k s listen=""
	port=$(free_port)
	for k in $(seq 1 8); do
		listen+="listen 127.0.0.$k:$port; "
	done
	# /slow: 3000 bytes at once, the last 900 about 1 s later
	edge_nginx up "$listen" "location / { return 200 \"ok\\n\"; }
		location = /slow { limit_rate 3000; return 200 \"$(head -c 3900 /dev/zero | tr '\0' z)\"; }"
	for k in $(seq 1 8); do
		wait_port "127.0.0.$k" "$port" 10
	done
	for s in n c; do
		echo "127.0.0.1:$port" >"$T/endpoints-$s"
	done
	stack n native --endpoints "$T/endpoints-n"
	stack c curl --endpoints "$T/endpoints-c"
	# a try in flight to the first address while it leaves the set: it
	# finishes there, and its connection is not kept for reuse
	curl -s -m 10 -o "$T/slow-n" "${SURL[n]}/slow" &
	local slow_n=$!
	curl -s -m 10 -o "$T/slow-c" "${SURL[c]}/slow" &
	local slow_c=$!
	wait_for -t 10 _in_flight "$port" 2
	for k in $(seq 1 8); do
		for s in n c; do
			echo "127.0.0.$k:$port" >"$T/endpoints-$s.new"
			mv "$T/endpoints-$s.new" "$T/endpoints-$s"
		done
		for s in n c; do
			wait_for -t 10 _served_by "$s" "127.0.0.$k"
		done
	done
	wait "$slow_n"
	wait "$slow_c"
	for s in n c; do
		assert_equal "$(stat -c %s "$T/slow-$s")" 3900
		local snap
		snap=$(snapshot "$s")
		assert_equal "$(metric "$snap" gk_client_endpoints)" 1
		assert_equal "$(metric "$snap" gk_client_connections)" 1
	done
	# one record: the address in the set; those that left had no
	# connection or try left and are gone
	assert_equal "$(metric "$(snapshot n)" gk_client_native_addresses)" 1
}
