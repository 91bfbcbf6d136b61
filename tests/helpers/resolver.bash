# tests/helpers/resolver.bash: real peers for the gk-resolver suite.
#
#   load helpers/common
#   load helpers/resolver
#
# start_dnsmasq NAME ARGS...   dnsmasq on a free loopback port ($DNS_PORT)
# start_etcd NAME              etcd 3.4 on free loopback ports ($ETCD_URL)
# ectl ARGS...                 etcdctl (API 3) against $ETCD_URL
# start_consul NAME SCRIPT     tests/helpers/consul-recorded.py ($CONSUL_URL,
#                              its request log in $CONSUL_LOG)
# within_ms MS CMD ARGS...     poll CMD every 20 ms; fail after MS ms
# set_of FILE                  the endpoints of an endpoints file, sorted,
#                              one "ADDR" a line

start_dnsmasq() {
	local name=$1
	shift
	local i
	# dnsmasq binds UDP and TCP: retry when the picked port was taken.
	for i in 1 2 3; do
		DNS_PORT=$(free_port)
		start_bg "$name" dnsmasq --no-daemon --port="$DNS_PORT" \
			--listen-address=127.0.0.1 --bind-interfaces --no-resolv \
			--no-hosts --conf-file=/dev/null "$@"
		if poll_for -t 10 _dns_up "$DNS_PORT"; then
			return 0
		fi
		bg_alive "$name" && return 1
	done
	return 1
}

_dns_up() {
	_port_open 127.0.0.1 "$1"
}

start_etcd() {
	local name=$1 cport pport
	cport=$(free_port)
	pport=$(free_port)
	ETCD_URL="http://127.0.0.1:$cport"
	ETCD_DATA="$BATS_TEST_TMPDIR/$name.data"
	ETCD_CPORT=$cport
	ETCD_PPORT=$pport
	_run_etcd "$name"
}

# restart_etcd NAME: the same member again, same ports and data.
restart_etcd() {
	_run_etcd "$1"
}

_run_etcd() {
	local name=$1
	start_bg "$name" etcd --name default --data-dir "$ETCD_DATA" \
		--listen-client-urls "http://127.0.0.1:$ETCD_CPORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_CPORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PPORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PPORT" \
		--initial-cluster "default=http://127.0.0.1:$ETCD_PPORT" \
		--log-level error
	poll_for -t 30 _etcd_up
}

_etcd_up() {
	curl -sf -m 2 -X POST "$ETCD_URL/v3/kv/range" -d '{"key":"AA=="}' \
		>/dev/null
}

ectl() {
	ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s "$@"
}

start_consul() {
	local name=$1 script=$2
	local pf="$BATS_TEST_TMPDIR/$name.port"
	CONSUL_LOG="$BATS_TEST_TMPDIR/$name.log"
	: >"$CONSUL_LOG"
	: >"$CONSUL_LOG.arrivals"
	start_bg "$name" python3 "$BATS_TEST_DIRNAME/helpers/consul-recorded.py" \
		"$pf" "$CONSUL_LOG" "$script"
	wait_file "$pf" 10 || return 1
	CONSUL_URL="http://127.0.0.1:$(cat "$pf")"
}

consul_ctl() {
	curl -sf -m 5 -X POST "$CONSUL_URL/_control/$1" >/dev/null
}

# consul_requests JQ_SELECT: how many logged requests match.
consul_requests() {
	jq -s "map(select($1)) | length" "$CONSUL_LOG"
}

# consul_at_least N JQ_SELECT: at least N logged requests match.
consul_at_least() {
	[ "$(consul_requests "$2")" -ge "$1" ]
}

# consul_arrivals: the index= of each health query in order of arrival
# ("none" when it had none), space-separated.
consul_arrivals() {
	jq -r -s 'map(.query.index // "none") | join(" ")' "$CONSUL_LOG.arrivals"
}

# etcd_has PREFIX: some key exists under PREFIX.
etcd_has() {
	[ -n "$(ectl get --prefix --keys-only "$1")" ]
}

within_ms() {
	local ms=$1
	shift
	local start now
	start=$(date +%s%3N)
	while :; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		now=$(date +%s%3N)
		if ((now - start > ms)); then
			echo "within_ms: not within ${ms} ms: $*" >&2
			return 1
		fi
		sleep 0.02
	done
}

set_of() {
	awk '!/^#/ && NF { print $1 }' "$1" | sort
}

# set_is FILE ADDR...: the endpoints file holds exactly these addresses.
set_is() {
	local file=$1
	shift
	[ -f "$file" ] || return 1
	local want=""
	[ $# -gt 0 ] && want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
	[ "$(set_of "$file" | tr '\n' ' ')" = "$want" ]
}

# metric_seq FILE NAME VALUE [REASON]: the seq of the last metrics snapshot
# in FILE whose NAME (its reason= series, when given) is VALUE; fails when
# there is none.
metric_seq() {
	local s
	s=$(jq -R -c 'fromjson? | objects' "$1" | jq -s -r --arg n "$2" \
		--argjson v "$3" --arg r "${4:-}" '
		map(select(.type == "metrics" and ([.metrics[] | select(.name == $n) |
			.series[] | select($r == "" or .labels.reason == $r) | .value] |
			first) == $v)) | last | .seq // empty')
	[ -n "$s" ] && echo "$s"
}

# snapshot_after FILE SEQ NAME VALUE: a snapshot later than SEQ says VALUE.
snapshot_after() {
	local s
	s=$(metric_seq "$1" "$3" "$4") && [ "$s" -gt "$2" ]
}

# udp_queued PORT: datagrams wait, unread, on the loopback UDP socket of
# PORT (a stopped server has been asked).
udp_queued() {
	awk -v p="$(printf '%04X' "$1")" '
		$2 ~ ":" p "$" { split($5, q, ":"); if (q[2] !~ /^0+$/) f = 1 }
		END { exit !f }' /proc/net/udp
}

# udp_drained PORT: nothing waits on it (the server read what it was sent).
udp_drained() {
	! udp_queued "$1"
}
