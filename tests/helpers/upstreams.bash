# tests/helpers/upstreams.bash: real nginx upstreams for the gk-client suite.
#
#   load helpers/common
#   load helpers/upstreams
#
#   upstream_start 1            # nginx "upstream 1" on a free loopback port
#   upstream_start 2 slow       # its / answers slowly (limit_rate)
#   curl ... "${UP_ADDR[1]}"    # 127.0.0.1:PORT
#   settle ' /x ' 300           # until 300 lines for /x are logged, in all
#   hits 1                      # requests its access log holds
#   upstream_stop 2             # TERM its process group, until the port closes
#
# Each nginx runs with a config of its own in $T/upN (daemon off, one
# process, pid, error log and temp paths there), started by start_bg in its
# own process group, so teardown's stop_all ends it.  Its access log,
# $T/upN/access.log, has one line per request:
#
#   up1 GET /path 200 proto=HTTP/1.1 t=<x-gk-timeout-ms> tp=<traceparent> k=<x-key>
#
# Locations (every upstream): / answers 200 "upstream N" (MODE changes it:
# slow answers in about 1 s, 503 answers 503, h2 listens with HTTP/2 only);
# /slow answers slowly; /503 and /500 answer those statuses; /drop closes
# the connection without an answer (nginx's 444); /healthz answers 200
# (503 with MODE sick).  Framings other than Content-Length: /ssi/FILE
# serves $T/upN/html/FILE through nginx's SSI filter, which drops the
# length, so the body comes chunked; /ssi-close/FILE the same with chunked
# encoding off, so the body ends where nginx closes the connection.
# /brief answers 200 and then keeps the connection idle 300 ms at most.

declare -gA UP_PORT UP_ADDR

# A body nginx sends at 1000 bytes/s (limit_rate): the first 1000 bytes of
# the response go at once, the rest (with the header section, under 2000
# bytes in all: a third 1000 would wait another second) about 1 s later.
_slow_body() {
	head -c 1500 /dev/zero | tr '\0' 'z'
}

# upstream_start N [MODE]
upstream_start() {
	local n=$1 mode=${2:-ok}
	local d="$T/up$n"
	mkdir -p "$d/tmp" "$d/html"
	printf 'chunked from upstream %s\n' "$n" >"$d/html/small.txt"
	# 200 KB: many reads and chunks
	head -c 150000 /dev/urandom | base64 >"$d/html/big.txt"
	local port
	port=$(free_port)
	UP_PORT[$n]=$port
	UP_ADDR[$n]="127.0.0.1:$port"
	local root="return 200 \"upstream $n\\n\";"
	local listen="listen 127.0.0.1:$port;"
	local health="return 200 \"ok\\n\";"
	case $mode in
	ok) ;;
	slow) root="limit_rate 1000; return 200 \"$(_slow_body)\\n\";" ;;
	503) root="return 503 \"busy $n\\n\";" ;;
	sick) health="return 503 \"sick\\n\";" ;;
	h2) listen="listen 127.0.0.1:$port http2;" ;;
	*)
		echo "upstream_start: unknown mode $mode" >&2
		return 1
		;;
	esac
	cat >"$d/nginx.conf" <<-EOF
		daemon off;
		master_process off;
		worker_processes 1;
		pid $d/nginx.pid;
		error_log $d/error.log warn;
		events { worker_connections 1024; }
		http {
		    log_format up 'up$n \$request_method \$uri \$status proto=\$server_protocol t=\$http_x_gk_timeout_ms tp=\$http_traceparent k=\$http_x_key';
		    access_log $d/access.log up;
		    keepalive_requests 100000;
		    keepalive_timeout 60s;
		    client_body_temp_path $d/tmp/body;
		    proxy_temp_path $d/tmp/proxy;
		    fastcgi_temp_path $d/tmp/fastcgi;
		    uwsgi_temp_path $d/tmp/uwsgi;
		    scgi_temp_path $d/tmp/scgi;
		    default_type text/plain;
		    server {
		        $listen
		        location / { $root }
		        location = /slow { limit_rate 1000; return 200 "$(_slow_body)\\n"; }
		        location = /503 { return 503 "busy $n\\n"; }
		        location = /500 { return 500 "broken $n\\n"; }
		        location = /drop { return 444; }
		        location = /healthz { $health }
		        location /ssi/ { ssi on; ssi_types text/plain; alias $d/html/; }
		        location /ssi-close/ { ssi on; ssi_types text/plain; chunked_transfer_encoding off; alias $d/html/; }
		        location = /brief { keepalive_timeout 300ms; return 200 "brief $n\\n"; }
		    }
		}
	EOF
	: >"$d/access.log"
	start_bg "up$n" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
	wait_port 127.0.0.1 "$port" 10
}

_port_closed() {
	! _port_open "$@"
}

# upstream_stop N: end nginx N (TERM to its group), until its port refuses.
upstream_stop() {
	local pid
	pid=$(bg_pid "up$1")
	kill -TERM -- "-$pid" 2>/dev/null || true
	poll_for -t 10 _port_closed 127.0.0.1 "${UP_PORT[$1]}"
}

# hits N [ERE]: lines of upstream N's access log (matching ERE).
hits() {
	local f="$T/up$1/access.log"
	if [ -n "${2:-}" ]; then
		grep -cE -- "$2" "$f" || true
	else
		wc -l <"$f"
	fi
}

# all_hits [ERE]: the sum of hits over every upstream started.
all_hits() {
	local n sum=0
	for n in "${!UP_PORT[@]}"; do
		sum=$((sum + $(hits "$n" "${1:-}")))
	done
	echo "$sum"
}

_hits_reach() {
	[ "$(all_hits "$1")" -ge "$2" ]
}

# settle ERE COUNT: until the upstreams' access logs hold COUNT lines
# matching ERE, at most 10 s.  nginx writes a request's line just after it
# has sent the answer, so a client can have its answer before the line is
# there: count only once the lines of every request made are in.
settle() {
	poll_for -t 10 _hits_reach "$1" "$2"
}

# fetch_many COUNT URL [CURL ARGS...]: COUNT requests of URL from one curl
# (one keep-alive connection unless the args say otherwise); the status of
# each on a line of stdout.  Every transfer is bounded by -m 30.
fetch_many() {
	local count=$1 url=$2
	shift 2
	local cfg
	cfg=$(mktemp "$T/fetch.XXXXXX")
	local i
	for ((i = 0; i < count; i++)); do
		printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
	done >"$cfg"
	curl -s --no-progress-meter -m 30 -w '%{http_code}\n' -K "$cfg" "$@"
}

# fetch_urls FILE [CURL ARGS...]: one request of each URL in FILE (a line
# each); the statuses on stdout.
fetch_urls() {
	local list=$1
	shift
	local cfg
	cfg=$(mktemp "$T/fetch.XXXXXX")
	local u
	while read -r u; do
		printf 'url = "%s"\noutput = "/dev/null"\n' "$u"
	done <"$list" >"$cfg"
	curl -s --no-progress-meter -m 30 -w '%{http_code}\n' -K "$cfg" "$@"
}

# odd_start: tests/helpers/odd-upstream.py (answers nginx will not give:
# see its top), in its own process group; sets ODD_ADDR and ODD_DIR (its
# request log is $ODD_DIR/log, one JSON line a request).
odd_start() {
	ODD_DIR="$T/odd"
	start_bg odd python3 "$BATS_TEST_DIRNAME/helpers/odd-upstream.py" "$ODD_DIR"
	wait_file "$ODD_DIR/port" 10
	ODD_ADDR="127.0.0.1:$(cat "$ODD_DIR/port")"
	wait_port 127.0.0.1 "$(cat "$ODD_DIR/port")" 10
}
