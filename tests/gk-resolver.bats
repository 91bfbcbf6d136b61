#!/usr/bin/env bats
# gk-resolver: names to endpoint sets, against real peers on loopback:
# dnsmasq (A and SRV records), etcd 3.4 (v3 JSON gateway: range, watch,
# leases), files; and registration.
#
# Consul has no server in Debian: the consul: source and Consul
# registration are tested against tests/helpers/consul-recorded.py, which
# serves recorded answers of Consul's documented health API
# (/v1/health/service/NAME) with its documented blocking-query behaviour
# (X-Consul-Index, requests held on ?index= until a change or ?wait=), and
# the documented agent endpoints (service/register, check/pass,
# service/deregister), and logs every request it gets.

bats_require_minimum_version 1.5.0

load helpers/common
load helpers/notify
load helpers/resolver

setup() {
	common_setup
}

teardown() {
	stop_all
}

# one_line_error: the usage error is one line on stderr, exit 64.
usage_fails() {
	run --separate-stderr gk-resolver "$@"
	assert_equal "$status" 64
	assert_equal "${#stderr_lines[@]}" 1
	[[ $stderr == gk-resolver:\ usage:* ]]
}

@test "bad options and URIs exit 64 with one line naming the problem" {
	usage_fails
	usage_fails --bogus static:1.2.3.4:80
	usage_fails -o
	usage_fails --timeout 5parsecs static:1.2.3.4:80
	usage_fails --invalidate-after x static:1.2.3.4:80
	usage_fails --nameserver nonsense dns:a.test:80
	usage_fails --json -o "$T/f" static:1.2.3.4:80
	usage_fails nope:x
	usage_fails static:1.2.3.4:80 extra
	usage_fails 'static:1.2.3.4'
	usage_fails 'static:'
	usage_fails 'static:a.test:http'
	usage_fails 'static:1.2.3.4:70000'
	usage_fails 'static::80'
	usage_fails 'static:http://10.0.0.1:80'
	usage_fails register etcd:http://127.0.0.1:2379/s --name a --addr ::1:80 --ttl 5s
	usage_fails 'consul:http://127.0.0.1:8500/'
	usage_fails 'consul:http://127.0.0.1:8500/web?index=3'
	usage_fails 'consul:http://127.0.0.1:8500/web?wait=1h'
	usage_fails 'etcd:http://127.0.0.1:2379'
	usage_fails 'dns:a.test'
	usage_fails register etcd:http://127.0.0.1:2379/s --name a --addr 1.2.3.4:80
	usage_fails register etcd:http://127.0.0.1:2379/s --name a --addr nope --ttl 5s
	usage_fails register etcd:http://127.0.0.1:2379/s --name a --addr 1.2.3.4:80 --ttl 500ms
	usage_fails register zk:x --name a --addr 1.2.3.4:80 --ttl 5s
	usage_fails register etcd:http://127.0.0.1:2379/s --name a --addr 1.2.3.4:80 --ttl 5s --check ftp://x
	run gk-resolver --version
	assert_success
	assert_output --regexp '^gk-resolver [0-9]'
	run gk-resolver --help
	assert_success
	assert_output --partial 'register'
}

@test "static: prints the set as HOST:PORT WEIGHT TAGS lines, or JSON with --json" {
	run --separate-stderr gk-resolver 'static:10.0.0.2:81*3,10.0.0.1:80'
	assert_success
	assert_equal "$output" "$(printf '10.0.0.1:80 1 -\n10.0.0.2:81 3 -')"
	run --separate-stderr gk-resolver --json 'static:10.0.0.1:80,[::1]:81*2'
	assert_success
	assert_equal "$(jq -c '.endpoints | map([.addr, .host, .port, .weight])' <<<"$output")" \
		'[["10.0.0.1:80","10.0.0.1",80,1],["[::1]:81","::1",81,2]]'
}

@test "an address given twice in different spellings is listed once, in its canonical form, the first one's weight, and a twice that differs is told" {
	# 080 is port 80, [0:0::1] is [::1], Web.Test is web.test: one
	# endpoint each, whatever the source
	run --separate-stderr gk-resolver \
		'static:127.0.0.1:80*3,127.0.0.1:080*5,[0:0::1]:0081,[::1]:81,Web.Test:82,web.test:82'
	assert_success
	assert_equal "$output" "$(printf '127.0.0.1:80 3 -\n[::1]:81 1 -\nweb.test:82 1 -')"
	# the weight 5 is lost: told once, naming it; the same twice is not
	run jq -R -c 'fromjson? | select(.msg == "resolver: an address listed twice, differently: the first kept") | .addr' <<<"$stderr"
	assert_output '"127.0.0.1:80"'
	printf '10.0.0.1:0080 2\n10.0.0.1:80 4\n[::FFFF:10.0.0.2]:90\n' >"$T/eps"
	run --separate-stderr gk-resolver "file:$T/eps"
	assert_success
	assert_equal "$output" "$(printf '10.0.0.1:80 2 -\n[::ffff:10.0.0.2]:90 1 -')"
	[[ $stderr == *'"msg":"resolver: an address listed twice, differently: the first kept","addr":"10.0.0.1:80"'* ]]
}

@test "-o FILE round-trips through the file: source that gk-client --endpoints uses" {
	printf '10.0.0.1:80 5 a,b priority=2\n# comment\n\n10.0.0.2:80\n10.0.0.3:80 2 - priority=1\n' >"$T/in"
	run gk-resolver -o "$T/out" "file:$T/in"
	assert_success
	assert_equal "$(cat "$T/out")" "$(printf '10.0.0.1:80 5 a,b priority=2\n10.0.0.2:80 1 -\n10.0.0.3:80 2 - priority=1')"
	run --separate-stderr gk-resolver --json "file:$T/out"
	assert_success
	assert_equal "$(jq -c '.endpoints | map([.addr, .weight, .priority, .tags])' <<<"$output")" \
		'[["10.0.0.1:80",5,2,["a","b"]],["10.0.0.2:80",1,0,[]],["10.0.0.3:80",2,1,[]]]'
	# no temporary file left beside it
	assert_equal "$(ls -A "$T" | grep -c '^\.out\.')" 0
}

@test "file: an atomic rename and an in-place rewrite are both seen" {
	printf '10.0.0.1:80\n' >"$T/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80
	# the SmartStack way: write elsewhere, rename over
	printf '10.0.0.1:80\n10.0.0.2:80\n' >"$T/eps.new"
	mv "$T/eps.new" "$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80 10.0.0.2:80
	# in place: truncate and write the same inode
	printf '10.0.0.3:80 4\n' >"$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.3:80
	grep -qx '10.0.0.3:80 4 -' "$T/out"
}

_file_waits() {
	[ "$(count_events "$T/res.err" '.msg == "endpoints file open for writing: read once it is closed"')" -ge "$1" ]
}

@test "file: a slow rewrite in place (curl ... >FILE) keeps the last good set while the file is empty or half written, then gives the whole new set; an empty file written on purpose is the empty set" {
	printf '10.0.0.1:80\n10.0.0.2:80\n' >"$T/eps"
	start_bg res env GK_LOG_LEVEL=debug gk-resolver --watch "file:$T/eps"
	wait_for -t 10 grep -qx '10.0.0.2:80 1 -' "$T/res.out"
	# truncated and held open, as by curl before its answer comes
	local fd
	exec {fd}>"$T/eps"
	wait_for -t 5 _file_waits 1
	# half written: one line and a part of the next
	printf '10.0.0.1:80\n10.0.0.3:8' >&"$fd"
	wait_for -t 5 _file_waits 2
	printf '0\n' >&"$fd"
	exec {fd}>&-
	wait_for -t 10 grep -qx '10.0.0.3:80 1 -' "$T/res.out"
	# the sets printed: the first and the new one, nothing between
	assert_equal "$(cat "$T/res.out")" "$(printf '10.0.0.1:80 1 -\n10.0.0.2:80 1 -\n\n10.0.0.1:80 1 -\n10.0.0.3:80 1 -\n')"
	# emptied on purpose: opened, truncated and closed
	: >"$T/eps"
	wait_for -t 10 _blank_lines_are 3 "$T/res.out"
	assert_equal "$(tail -n 2 "$T/res.out" | grep -c .)" 0
	# made again as a symbolic link (rm, then ln -s): complete at once,
	# no writer to wait for
	printf '10.0.0.4:80\n' >"$T/eps4"
	rm "$T/eps"
	ln -s "$T/eps4" "$T/eps"
	wait_for -t 10 grep -qx '10.0.0.4:80 1 -' "$T/res.out"
	assert_equal "$(count_events "$T/res.err" '.msg == "endpoints file open for writing: read once it is closed"')" 2
}

_blank_lines_are() {
	[ "$(grep -c '^$' "$2")" -eq "$1" ]
}

@test "file: a symbolic link swapped as Kubernetes updates a ConfigMap (a new directory, a rename over ..data) is followed, and a rewrite behind it seen" {
	local cm=$T/cm
	mkdir -p "$cm/..v1" "$T/elsewhere"
	printf '10.0.0.1:80\n' >"$cm/..v1/eps"
	ln -s ..v1 "$cm/..data"
	ln -s ..data/eps "$cm/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$cm/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80
	mkdir "$cm/..v2"
	printf '10.0.0.2:80\n' >"$cm/..v2/eps"
	ln -s ..v2 "$cm/..data_tmp"
	mv -T "$cm/..data_tmp" "$cm/..data"
	rm -r "$cm/..v1"
	wait_for -t 10 set_is "$T/out" 10.0.0.2:80
	# rewritten where the link leads, in another directory
	printf '10.0.0.3:80\n' >"$T/elsewhere/eps"
	ln -sfn "$T/elsewhere/eps" "$cm/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.3:80
	printf '10.0.0.4:80\n' >"$T/elsewhere/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.4:80
}

@test "file: the file's directory removed and made again (a unit's RuntimeDirectory= restarted) is watched again: its new file is seen" {
	mkdir "$T/run"
	printf '10.0.0.1:80\n' >"$T/run/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$T/run/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80
	rm -r "$T/run"
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set" and .error == "'"$T/run/eps"': No such file or directory"'
	mkdir "$T/run"
	printf '10.0.0.2:80\n' >"$T/run/eps.new"
	mv "$T/run/eps.new" "$T/run/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.2:80
	# and it is watched: a change after is seen too
	printf '10.0.0.3:80\n' >"$T/run/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.3:80
}

@test "--watch -o: a write that failed is tried again until it goes through, though the set does not change" {
	# as after ENOSPC: here the file's directory is missing at first
	printf '10.0.0.1:80\n' >"$T/eps"
	start_bg res gk-resolver --watch -o "$T/later/out" "file:$T/eps"
	wait_event "$T/res.err" '.msg | startswith("unable to write the endpoints file")'
	mkdir "$T/later"
	wait_for -t 15 set_is "$T/later/out" 10.0.0.1:80
	wait_event "$T/res.err" '.msg == "endpoints file written again"'
	bg_alive res
}

@test "file: a file with only bad lines keeps the last good set and says so, in an event and in gk_resolver_stale, counting the bad line" {
	printf '10.0.0.1:80\n' >"$T/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 metric_seq "$T/res.err" gk_resolver_stale 0
	local good seq
	good=$(metric_seq "$T/res.err" gk_resolver_stale 0)
	printf 'not an endpoint at all\n' >"$T/eps"
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set"'
	set_is "$T/out" 10.0.0.1:80
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 snapshot_after "$T/res.err" "$good" gk_resolver_stale 1
	seq=$(metric_seq "$T/res.err" gk_resolver_stale 1)
	# the bad line is counted, as a malformed endpoint of any source
	[ "$(metric_seq "$T/res.err" gk_resolver_dropped_total 1 bad)" = "$seq" ]
	printf '10.0.0.9:80\n' >"$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.9:80
	wait_event "$T/res.err" '.msg == "resolver source recovered"'
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 snapshot_after "$T/res.err" "$seq" gk_resolver_stale 0
}

@test "file: a file over 16 MiB is a source error that keeps the last good set" {
	printf '10.0.0.1:80\n' >"$T/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$T/eps"
	wait_for -t 10 set_is "$T/out" 10.0.0.1:80
	{
		printf '10.0.0.2:80\n#'
		head -c 17M /dev/zero | tr '\0' x
		echo
	} >"$T/eps.new"
	mv "$T/eps.new" "$T/eps"
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set" and .error == "file over 16777216 bytes"'
	set_is "$T/out" 10.0.0.1:80
	run --separate-stderr gk-resolver "file:$T/eps"
	assert_equal "$status" 69
	[[ $stderr == *"unable to resolve file:$T/eps: file over 16777216 bytes"* ]]
}

@test "file: a set over the bound of 10000 endpoints keeps the first 10000 and counts the rest in gk_resolver_dropped_total, duplicates apart" {
	awk 'BEGIN { for (i = 0; i < 10003; i++)
		printf "10.%d.%d.%d:80\n", int(i / 65536), int(i / 256) % 256, i % 256
		print "10.0.0.7:080" }' >"$T/eps"
	start_bg res gk-resolver --watch -o "$T/out" "file:$T/eps"
	wait_for -t 10 test -s "$T/out"
	assert_equal "$(wc -l <"$T/out")" 10000
	# the first by address, so that the set does not churn
	assert_equal "$(head -1 "$T/out")" '10.0.0.0:80 1 -'
	assert_equal "$(count_events "$T/res.err" '.msg == "resolver: more endpoints than the bound, the rest left out" and .max == 10000')" 1
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 metric_seq "$T/res.err" gk_resolver_dropped_total 3 bound
	# an address listed twice is counted as such, not in the bound
	metric_seq "$T/res.err" gk_resolver_dropped_total 1 duplicate
}

@test "file: a line longer than 600 bytes is one line: an address at the end of a long comment stays commented out" {
	{
		printf '#%0598d10.0.0.9:80\n' 0
		printf '10.0.0.1:80 1 %0700d\n' 0
		printf '10.0.0.2:80\n'
	} >"$T/eps"
	run --separate-stderr gk-resolver "file:$T/eps"
	assert_success
	assert_output '10.0.0.2:80 1 -'
	# the long line is the bad one, by its own number, and only it
	run jq -R -c 'fromjson? | select(.msg == "resolver: bad line in endpoints file") | .line' <<<"$stderr"
	assert_output 2
}

@test "file: tags past 255 bytes are left out whole, never cut inside a tag" {
	local tags
	tags=$(printf 'tag%d,' $(seq 10 60))
	printf '10.0.0.1:80 1 %s\n' "${tags%,}" >"$T/eps"
	run --separate-stderr gk-resolver --json "file:$T/eps"
	assert_success
	run jq -r '.endpoints[0].tags | "\(length) \(.[0]) \(.[-1])"' <<<"$output"
	assert_output '42 tag10 tag51'
}

# --- DNS: a real dnsmasq ----------------------------------------------

@test "dns: the A records of a name are the set, at the port given; a short name is looked up through the search list, as getaddrinfo does" {
	printf '127.0.0.2 web.example.test\n127.0.0.3 web.example.test\n' >"$T/hosts"
	# other.test: a domain the server knows has no web (NXDOMAIN)
	start_dnsmasq dns --addn-hosts="$T/hosts" --local-ttl=60 --local=/other.test/
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns:web.example.test:8080
	assert_success
	assert_equal "$output" "$(printf '127.0.0.2:8080 1 -\n127.0.0.3:8080 1 -')"
	# "orders" in Kubernetes is orders.NAMESPACE.svc.cluster.local:
	# LOCALDOMAIN is resolv.conf's search line, as resolv.conf(5) says
	run --separate-stderr env LOCALDOMAIN='other.test example.test' gk-resolver --timeout 5s --nameserver "127.0.0.1:$DNS_PORT" dns:web:8080
	assert_success
	assert_equal "$output" "$(printf '127.0.0.2:8080 1 -\n127.0.0.3:8080 1 -')"
}

@test "dns: a name that does not exist exits 69 with the reason" {
	start_dnsmasq dns --host-record=a.example.test,127.0.0.2
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns:nothing.example.test:80
	assert_equal "$status" 69
	assert_equal "$output" ""
	[[ $stderr == *'unable to resolve dns:nothing.example.test:80'* ]]
}

@test "dns: an IP address is the address itself, asked of no server; an IPv6 one without brackets is a usage error" {
	# --nameserver names a port nobody answers on: nothing is asked
	local port
	port=$(free_port)
	run --separate-stderr gk-resolver --timeout 5s --nameserver "127.0.0.1:$port" dns:127.0.0.1:080
	assert_success
	assert_output '127.0.0.1:80 1 -'
	run --separate-stderr gk-resolver --timeout 5s --nameserver "127.0.0.1:$port" 'dns:[0::1]:81'
	assert_success
	assert_output '[::1]:81 1 -'
	usage_fails 'dns:::1:80'
}

@test "dns: a name with 40 A records gives all 40 endpoints" {
	# 40 records do not fit a 512-byte UDP answer: c-ares asks again
	# over TCP, and every record is in the set, none left out.
	local i
	for i in $(seq 1 40); do
		echo "127.0.1.$i many.example.test"
	done >"$T/hosts"
	start_dnsmasq dns --addn-hosts="$T/hosts" --local-ttl=60
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns:many.example.test:80
	assert_success
	assert_equal "$(wc -l <<<"$output")" 40
	assert_line '127.0.1.1:80 1 -'
	assert_line '127.0.1.40:80 1 -'
}

@test "dns+srv: a target of '.' (RFC 2782: service not available) gives no endpoint, not an error" {
	start_dnsmasq dns --local-ttl=60 \
		--host-record=a.example.test,127.0.0.11 \
		--srv-host=_off._tcp.example.test,.,80 \
		--srv-host=_web._tcp.example.test,a.example.test,8001 \
		--srv-host=_web._tcp.example.test,.,8002
	run --separate-stderr gk-resolver --json --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_off._tcp.example.test
	assert_success
	assert_output '{"endpoints":[]}'
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	assert_success
	assert_output '127.0.0.11:8001 1 -'
	[[ $stderr != *'source failed'* ]]
}

@test "dns+srv: a target of weight 0 among weighted ones of its priority gets a very small share (RFC 2782), not as much as weight 1" {
	start_dnsmasq dns --local-ttl=60 \
		--host-record=a.example.test,127.0.0.11 \
		--host-record=b.example.test,127.0.0.12 \
		--host-record=c.example.test,127.0.0.13 \
		--host-record=d.example.test,127.0.0.14 \
		--srv-host=_web._tcp.example.test,a.example.test,8001,1,0 \
		--srv-host=_web._tcp.example.test,b.example.test,8002,1,1 \
		--srv-host=_web._tcp.example.test,c.example.test,8003,1,3 \
		--srv-host=_web._tcp.example.test,d.example.test,8004,2,0
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	assert_success
	# the weighted ones keep their ratio, 100 times over; priority 2,
	# all of weight 0, has nothing to choose between
	assert_equal "$output" "$(printf '%s\n' \
		'127.0.0.11:8001 1 - priority=1' \
		'127.0.0.12:8002 100 - priority=1' \
		'127.0.0.13:8003 300 - priority=1' \
		'127.0.0.14:8004 1 - priority=2')"
}

@test "dns+srv: a record with port 0 adds no endpoint and is counted; an answer of nothing else is a source error" {
	start_dnsmasq dns --local-ttl=1 \
		--host-record=a.example.test,127.0.0.11 \
		--host-record=b.example.test,127.0.0.12 \
		--srv-host=_web._tcp.example.test,a.example.test,8001 \
		--srv-host=_web._tcp.example.test,b.example.test,0 \
		--srv-host=_zero._tcp.example.test,b.example.test,0
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	assert_success
	assert_output '127.0.0.11:8001 1 -'
	[[ $stderr == *'"msg":"dns+srv: a record with port 0, left out","target":"b.example.test"'* ]]
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_zero._tcp.example.test
	assert_equal "$status" 69
	assert_equal "$output" ""
	[[ $stderr == *'unable to resolve dns+srv:_zero._tcp.example.test: dns: _zero._tcp.example.test: every SRV record has port 0'* ]]
	start_bg res gk-resolver --watch -o "$T/out" --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	wait_for -t 10 set_is "$T/out" 127.0.0.11:8001
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 metric_seq "$T/res.err" gk_resolver_dropped_total 1 bad
}

@test "dns: SIGTERM while a lookup waits on a server that stopped answering ends a watch with 0 and no source error, a one-shot run with 69" {
	start_dnsmasq dns --host-record=a.example.test,127.0.0.11
	kill -STOP "$(bg_pid dns)"
	start_bg res gk-resolver --watch -o "$T/out" --nameserver "127.0.0.1:$DNS_PORT" dns:a.example.test:80
	# asked, and waiting (c-ares gives up after about 3 s)
	wait_for -t 2 udp_queued "$DNS_PORT"
	kill -TERM "$(bg_pid res)"
	wait_exit res
	kill -CONT "$(bg_pid dns)"
	assert_equal "$BG_STATUS" 0
	assert_equal "$(count_events "$T/res.err" '(.msg // "") | startswith("resolver source failed")')" 0
	# the snapshot at exit counts no source error
	metric_seq "$T/res.err" gk_resolver_errors_total 0
	# without --watch, exit 0 would say the set was written: it was not
	wait_for -t 5 udp_drained "$DNS_PORT"
	kill -STOP "$(bg_pid dns)"
	start_bg once gk-resolver --timeout 30s --nameserver "127.0.0.1:$DNS_PORT" dns:a.example.test:80
	wait_for -t 2 udp_queued "$DNS_PORT"
	kill -TERM "$(bg_pid once)"
	wait_exit once
	kill -CONT "$(bg_pid dns)"
	assert_equal "$BG_STATUS" 69
	assert_equal "$(cat "$T/once.out")" ""
	grep -q 'unable to resolve dns:a.example.test:80: interrupted before a set came' "$T/once.err"
}

srv_dnsmasq() {
	start_dnsmasq dns --local-ttl=60 \
		--host-record=a.example.test,127.0.0.11 \
		--host-record=b.example.test,127.0.0.12 \
		--host-record=c.example.test,127.0.0.13 \
		--host-record=d.example.test,127.0.0.14 \
		--srv-host=_web._tcp.example.test,a.example.test,8001,1,50 \
		--srv-host=_web._tcp.example.test,b.example.test,8002,1,30 \
		--srv-host=_web._tcp.example.test,c.example.test,8003,1,20 \
		--srv-host=_web._tcp.example.test,d.example.test,8004,2,100
}

@test "dns+srv: each SRV target's addresses with its port, weight and priority" {
	srv_dnsmasq
	run --separate-stderr gk-resolver --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	assert_success
	assert_equal "$output" "$(printf '%s\n' \
		'127.0.0.11:8001 50 - priority=1' \
		'127.0.0.12:8002 30 - priority=1' \
		'127.0.0.13:8003 20 - priority=1' \
		'127.0.0.14:8004 100 - priority=2')"
}

@test "dns+srv: gk-client's balancer honours SRV weights over 10,000 picks within 5% and leaves the backup priority alone" {
	srv_dnsmasq
	gk-resolver --nameserver "127.0.0.1:$DNS_PORT" -o "$T/eps" dns+srv:_web._tcp.example.test
	# The set as gk-client --endpoints reads it, fed to lib/balancer.c's
	# pick function: "POLICY ADDR WEIGHT PRIORITY PICKS".
	run "$GK_BUILD/tests/test_balancer" --picks 10000 "$T/eps"
	assert_success
	echo "$output"
	assert_equal "$(wc -l <<<"$output")" 8
	# round robin is exact (5% of each share); random within 5% of the
	# picks; priority 2 (the backup) gets none while priority 1 is up.
	run awk '
		$4 == 1 { tot[$1] += $3 }
		{ line[NR] = $0 }
		END {
			bad = 0
			for (i = 1; i <= NR; i++) {
				split(line[i], f, " ")
				if (f[4] != 1) { if (f[5] != 0) bad++; continue }
				want = 10000 * f[3] / tot[f[1]]
				d = f[5] - want; if (d < 0) d = -d
				if (f[1] == "round-robin" && d > 0.05 * want) bad++
				if (f[1] == "random" && d > 0.05 * 10000) bad++
			}
			print bad
		}' <<<"$output"
	assert_output 0
}

@test "dns: a changed record is seen within one TTL" {
	printf '127.0.0.2 web.example.test\n' >"$T/hosts"
	start_dnsmasq dns --addn-hosts="$T/hosts" --local-ttl=2
	start_bg res gk-resolver --watch -o "$T/out" --nameserver "127.0.0.1:$DNS_PORT" dns:web.example.test:80
	wait_for -t 10 set_is "$T/out" 127.0.0.2:80
	printf '127.0.0.3 web.example.test\n' >"$T/hosts"
	kill -HUP "$(bg_pid dns)"
	# The TTL is 2 s: re-resolved when it runs out.  1 s of slack for a
	# loaded machine.
	within_ms 3000 set_is "$T/out" 127.0.0.3:80
}

@test "dns+srv: when one target's lookups fail (its server gone), the last good set is kept whole, not shrunk" {
	# A second dnsmasq serves sub.test; the first forwards it there and
	# caches nothing, so that killing the second makes b.sub.test fail
	# (SERVFAIL or a timeout) while a.example.test still answers.
	start_dnsmasq sub --local-ttl=1 --host-record=b.sub.test,127.0.0.12
	local sub=$DNS_PORT
	start_dnsmasq dns --local-ttl=1 --cache-size=0 \
		--server="/sub.test/127.0.0.1#$sub" \
		--host-record=a.example.test,127.0.0.11 \
		--srv-host=_web._tcp.example.test,a.example.test,8001 \
		--srv-host=_web._tcp.example.test,b.sub.test,8002
	start_bg res gk-resolver --watch -o "$T/out" --nameserver "127.0.0.1:$DNS_PORT" dns+srv:_web._tcp.example.test
	wait_for -t 10 set_is "$T/out" 127.0.0.11:8001 127.0.0.12:8002
	kill -- -"$(bg_pid sub)"
	wait_event "$BATS_TEST_TMPDIR/res.err" '.msg | startswith("resolver source failed")' 20
	run set_of "$T/out"
	assert_output "$(printf '127.0.0.11:8001\n127.0.0.12:8002')"
}

# --- etcd: a real etcd 3.4 --------------------------------------------

@test "etcd: keys put under the prefix appear, and deleted ones disappear, within 1 s" {
	start_etcd etcd
	ectl put /svc/orders/a '127.0.0.1:9001 3' >/dev/null
	ectl put /svc/ordersX/z '127.0.0.1:9999' >/dev/null # not under the prefix
	start_bg res gk-resolver --watch -o "$T/out" "etcd:$ETCD_URL/svc/orders/"
	wait_for -t 10 set_is "$T/out" 127.0.0.1:9001
	grep -qx '127.0.0.1:9001 3 -' "$T/out"
	ectl put /svc/orders/b '127.0.0.1:9002' >/dev/null
	within_ms 1000 set_is "$T/out" 127.0.0.1:9001 127.0.0.1:9002
	ectl put /svc/orders/c '127.0.0.1:9003 7' >/dev/null
	within_ms 1000 set_is "$T/out" 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003
	ectl del /svc/orders/a >/dev/null
	within_ms 1000 set_is "$T/out" 127.0.0.1:9002 127.0.0.1:9003
	ectl del --prefix /svc/orders/ >/dev/null
	within_ms 1000 set_is "$T/out"
}

@test "etcd: gk-client --resolve follows the watched set in-process: 200 through the endpoint, 503 once its key is deleted" {
	start_etcd etcd
	local up lp
	up=$(free_port)
	lp=$(free_port)
	mkdir "$T/www" && echo hello >"$T/www/index.html"
	start_bg up python3 -m http.server "$up" --bind 127.0.0.1 --directory "$T/www"
	wait_port 127.0.0.1 "$up"
	ectl put /up/a "127.0.0.1:$up" >/dev/null
	start_bg stack gk-listener -l "127.0.0.1:$lp" -- gk-client --resolve "etcd:$ETCD_URL/up/"
	wait_port 127.0.0.1 "$lp"
	wait_for -t 10 _status_is 200 "http://127.0.0.1:$lp/index.html"
	assert_equal "$(curl -s "http://127.0.0.1:$lp/index.html")" hello
	ectl del /up/a >/dev/null
	wait_for -t 5 _status_is 503 "http://127.0.0.1:$lp/index.html"
}

_status_is() {
	[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$2")" = "$1" ]
}

@test "etcd: a value that is not HOST:PORT [WEIGHT] (a URL, an IPv6 address without brackets) is left out with a warning; a prefix of only such values keeps the last good set; two keys of one address take one place of the 10000" {
	start_etcd etcd
	ectl put /svc/a '127.0.0.1:9001' >/dev/null
	ectl put /svc/b 'garbage' >/dev/null
	ectl put /svc/c 'http://127.0.0.1:9002' >/dev/null
	ectl put /svc/d '::1:9003' >/dev/null
	ectl put /svc/e '[nonsense]:9004' >/dev/null
	run --separate-stderr gk-resolver "etcd:$ETCD_URL/svc/"
	assert_success
	assert_output '127.0.0.1:9001 1 -'
	[ "$(count_events <(printf '%s\n' "$stderr") '.msg | startswith("etcd: value is not")')" = 4 ]
	# the one endpoint's value overwritten with garbage: the prefix is
	# malformed, not empty
	ectl put /one/a '127.0.0.1:9001' >/dev/null
	start_bg res gk-resolver --watch -o "$T/out" "etcd:$ETCD_URL/one/"
	wait_for -t 10 set_is "$T/out" 127.0.0.1:9001
	ectl put /one/a 'http://127.0.0.1:9001' >/dev/null
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set" and (.error | test("every key under the prefix is malformed"))'
	set_is "$T/out" 127.0.0.1:9001
	ectl put /one/b '127.0.0.1:9002' >/dev/null
	wait_for -t 10 set_is "$T/out" 127.0.0.1:9002
	# a malformed key deleted is gone: the prefix is what it holds
	ectl del /one/b >/dev/null
	ectl del /one/a >/dev/null
	wait_for -t 10 set_is "$T/out"
	# the bound of 10000 counts endpoints: two keys of one address take
	# one place (10001 addresses in 10002 keys, 128 puts a transaction)
	python3 -c '
import base64, json, sys, urllib.request
b64 = lambda s: base64.b64encode(s.encode()).decode()
vals = ["10.9.9.9:80"] * 2 + ["10.0.%d.%d:80" % (i >> 8, i & 255) for i in range(10000)]
for off in range(0, len(vals), 128):
    ops = [{"request_put": {"key": b64("/many/%05d" % (off + j)), "value": b64(v)}}
           for j, v in enumerate(vals[off:off + 128])]
    req = urllib.request.Request(sys.argv[1] + "/v3/kv/txn", json.dumps({"success": ops}).encode())
    urllib.request.urlopen(req, timeout=10).read()' "$ETCD_URL"
	run --separate-stderr gk-resolver "etcd:$ETCD_URL/many/"
	assert_success
	assert_equal "${#lines[@]}" 10000
}

@test "etcd: through an etcd restart the last good set is kept, and changes made meanwhile are seen" {
	start_etcd etcd
	ectl put /svc/a '127.0.0.1:9001' >/dev/null
	start_bg res gk-resolver --watch -o "$T/out" "etcd:$ETCD_URL/svc/"
	wait_for -t 10 set_is "$T/out" 127.0.0.1:9001
	kill -TERM -- "-$(bg_pid etcd)"
	wait_exit etcd 20
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set"' 20
	set_is "$T/out" 127.0.0.1:9001
	# the watch's end says what ended it: etcd, or the transfer's error
	wait_event "$T/res.err" '.msg == "etcd: watch ended, ranging the prefix again" and (.error | test("^etcd ended the watch stream$|Recv failure|transfer closed|Failed to connect"))'
	restart_etcd etcd
	ectl put /svc/b '127.0.0.1:9002' >/dev/null
	wait_for -t 20 set_is "$T/out" 127.0.0.1:9001 127.0.0.1:9002
	wait_event "$T/res.err" '.msg == "resolver source recovered"'
}

_watch_ends() {
	events "$T/res.err" 'select(.msg == "etcd: watch ended, ranging the prefix again") | .retry_ms' | tr '\n' ' '
}

_watch_ends_at_least() {
	[ "$(count_events "$T/res.err" '.msg == "etcd: watch ended, ranging the prefix again"')" -ge "$1" ]
}

@test "etcd: a watch ended at once every time (an idle timeout in front of etcd) is started again with backoff, shown in gk_resolver_etcd_retry_delay_seconds, and a watch that brought changes starts the backoff over" {
	start_etcd etcd
	ectl put /svc/a '127.0.0.1:9001' >/dev/null
	# a TCP relay that drops a connection idle for 0.3 s, as a load
	# balancer's idle timeout does: each watch ends soon after it starts
	local port
	port=$(free_port)
	start_bg relay socat -T 0.3 "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
		"TCP:127.0.0.1:$ETCD_CPORT"
	wait_port 127.0.0.1 "$port"
	start_bg res gk-resolver --watch -o "$T/out" "etcd:http://127.0.0.1:$port/svc/"
	wait_for -t 10 set_is "$T/out" 127.0.0.1:9001
	wait_for -t 10 _watch_ends_at_least 3
	# 100, 200, 400 ms (more, should a range between them fail too)
	run jq -n --argjson w "[$(_watch_ends | awk '{ print $1 "," $2 "," $3 }')]" \
		'$w[0] >= 100 and $w[1] >= 2 * $w[0] and $w[2] >= 2 * $w[1]'
	assert_output true
	# changes keep a watch busy, and up: once one has brought some, the
	# next end waits 0.1 s again (puts 0.1 s apart for longer than the
	# backoff reached, so that a watch comes up among them)
	local i
	for ((i = 10; i < 20; i++)); do
		curl -sf -m 2 -o /dev/null "$ETCD_URL/v3/kv/put" -d \
			"{\"key\":\"$(printf /svc/b | base64)\",\"value\":\"$(printf "127.0.0.1:91$i" | base64)\"}"
		sleep 0.1
	done
	wait_for -t 10 _backoff_started_over
	kill -TERM "$(bg_pid res)"
	wait_exit res
	# the snapshot at exit shows the last wait chosen
	local last
	last=$(events "$T/res.err" 'select(.msg == "etcd: watch ended, ranging the prefix again") | .retry_ms' | tail -1)
	metric_seq "$T/res.err" gk_resolver_etcd_retry_delay_seconds "$(jq -n "$last / 1000")"
}

# _backoff_started_over: after the first three ends, one waited 0.1 s.
_backoff_started_over() {
	[ "$(events "$T/res.err" 'select(.msg == "etcd: watch ended, ranging the prefix again") | .retry_ms' | tail -n +4 | grep -cx 100)" -ge 1 ]
}

@test "etcd register: the key lives while kept alive, and disappears when the process is killed -9 and the lease expires" {
	start_etcd etcd
	export GK_METRICS_INTERVAL=1
	start_bg reg gk-resolver register "etcd:$ETCD_URL/services" --name orders \
		--addr 127.0.0.1:8080 --weight 5 --ttl 2s
	start_bg res gk-resolver --watch -o "$T/out" "etcd:$ETCD_URL/services/orders/"
	wait_for -t 10 set_is "$T/out" 127.0.0.1:8080
	grep -qx '127.0.0.1:8080 5 -' "$T/out"
	# Six keepalives at a third of the TTL: two TTLs, and still there.
	wait_event "$T/reg.err" '.type == "metrics" and ([.metrics[] | select(.name == "gk_register_keepalives_total") | .series[0].value] | first) >= 6' 30
	set_is "$T/out" 127.0.0.1:8080
	assert_equal "$(ectl get --print-value-only /services/orders/127.0.0.1:8080)" '127.0.0.1:8080 5'
	kill -KILL -- "-$(bg_pid reg)"
	# The lease (2 s) runs out: etcd deletes the key, the watch sees it.
	wait_for -t 15 set_is "$T/out"
	assert_equal "$(ectl get --prefix --keys-only /services/ | grep -c .)" 0
}

@test "etcd register: SIGTERM tells systemd STOPPING=1 and revokes the lease, so the key is gone at once" {
	start_etcd etcd
	notify_listener
	# 08080 is registered as every resolver lists it: 8080
	start_bg reg env NOTIFY_SOCKET="$NOTIFY" gk-resolver register \
		"etcd:$ETCD_URL/services" --name orders --addr 127.0.0.1:08080 --ttl 60s
	local pid=$BG_PID
	wait_for -t 10 etcd_has /services/orders/
	wait_event "$T/reg.err" '.msg == "registered"'
	assert_equal "$(ectl get --prefix --keys-only /services/ | grep .)" /services/orders/127.0.0.1:8080
	wait_grep "^$pid READY=1\$" "$NOTES"
	kill -TERM "$(bg_pid reg)"
	wait_exit reg 10
	assert_equal "$BG_STATUS" 0
	# The TTL is 60 s: only the revoke can have removed it.
	assert_equal "$(ectl get --prefix --keys-only /services/ | grep -c .)" 0
	wait_event "$T/reg.err" '.msg == "deregistered"'
	# systemd knows the unit is on its way down while it deregisters
	wait_grep "^$pid STOPPING=1\$" "$NOTES" 5
}

@test "etcd register: a lease lost while running (revoked elsewhere) is granted and put again" {
	start_etcd etcd
	start_bg reg gk-resolver register "etcd:$ETCD_URL/services" --name orders \
		--addr 127.0.0.1:8080 --ttl 3s
	wait_for -t 10 etcd_has /services/orders/
	local lease
	# int64: past what jq keeps exact, so read it as text
	lease=$(ectl get /services/orders/127.0.0.1:8080 -w json | grep -o '"lease":[0-9]*' | cut -d: -f2)
	ectl lease revoke "$(printf '%x' "$lease")" >/dev/null
	wait_event "$T/reg.err" '.msg == "registration lost: registering again"' 15
	wait_for -t 10 etcd_has /services/orders/
}

# --- Consul: recorded answers of its documented API -------------------

consul_script() {
	# Three states of the health API for "web": the index goes 10 -> 12,
	# then backwards to 7 (as after a snapshot restore).
	cat >"$T/script.json" <<'EOF'
[
 {"index": 10, "body": [
  {"Node": {"Node": "n1", "Address": "10.1.0.1"},
   "Service": {"ID": "web-1", "Service": "web", "Address": "10.2.0.1", "Port": 8080,
               "Tags": ["v1", "blue"], "Weights": {"Passing": 10, "Warning": 1}},
   "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]},
  {"Node": {"Node": "n2", "Address": "10.1.0.2"},
   "Service": {"ID": "web-2", "Service": "web", "Address": "", "Port": 8081,
               "Tags": [], "Weights": {"Passing": 10, "Warning": 2}},
   "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
              {"CheckID": "service:web-2", "Status": "warning"}]}
 ]},
 {"index": 12, "body": [
  {"Node": {"Node": "n3", "Address": "10.1.0.3"},
   "Service": {"ID": "web-3", "Service": "web", "Address": "10.2.0.3", "Port": 9090,
               "Tags": null, "Weights": {"Passing": 4, "Warning": 1}},
   "Checks": []}
 ]},
 {"index": 7, "body": [
  {"Node": {"Node": "n4", "Address": "10.1.0.4"},
   "Service": {"ID": "web-4", "Service": "web", "Address": "10.2.0.4", "Port": 80,
               "Tags": [], "Weights": {"Passing": 1, "Warning": 1}},
   "Checks": []}
 ]}
]
EOF
}

@test "consul: the health API's instances are the set: Service.Address over Node.Address, weights by check status, tags" {
	consul_script
	start_consul consul "$T/script.json"
	run --separate-stderr env CONSUL_HTTP_TOKEN=s3cret gk-resolver "consul:$CONSUL_URL/web?tag=v1&passing"
	assert_success
	assert_equal "$output" "$(printf '10.1.0.2:8081 2 -\n10.2.0.1:8080 10 v1,blue')"
	# the query as written, plus wait; no index on the first query
	assert_equal "$(consul_requests '.path == "/v1/health/service/web" and .query.tag == "v1" and (.query | has("passing")) and .query.wait == "5m" and (.query | has("index") | not) and .token == "s3cret"')" 1
}

@test "consul: blocking queries pass back X-Consul-Index, a held query's answer is seen, and a backwards index starts over" {
	consul_script
	start_consul consul "$T/script.json"
	start_bg res gk-resolver --watch -o "$T/out" "consul:$CONSUL_URL/web?wait=30s"
	wait_for -t 10 set_is "$T/out" 10.1.0.2:8081 10.2.0.1:8080
	# The second query blocks with the index of the first answer (it is
	# logged once answered).
	consul_ctl next
	wait_for -t 10 set_is "$T/out" 10.2.0.3:9090
	wait_for -t 10 _logged '.query.index == "10" and .answered_index == 12 and .query.wait == "30s"'
	grep -qx '10.2.0.3:9090 4 -' "$T/out"
	# The index goes backwards (12 -> 7): the answer is used, and the
	# next query starts over without an index, then blocks on 7.
	consul_ctl next
	wait_for -t 10 set_is "$T/out" 10.2.0.4:80
	wait_for -t 10 _logged '.query.index == "12" and .answered_index == 7'
	# in order of arrival: none, 10, 12, then (backwards) none, 7 held
	wait_for -t 10 _arrivals_are "none 10 12 none 7"
	wait_event "$T/res.err" '.msg == "consul: index went backwards, starting over"'
}

_failing_checks_since() {
	[ "$(jq -s ".[$1:] | map(select(.path == \"/_control/health\" and .status == 500)) | length" "$CONSUL_LOG")" -ge "$2" ]
}

_arrivals_are() {
	[ "$(consul_arrivals)" = "$1" ]
}

_logged() {
	[ "$(consul_requests "$1")" -ge 1 ]
}

@test "consul: an agent answering errors keeps the last good set, says so, and --invalidate-after drops it" {
	consul_script
	start_consul consul "$T/script.json"
	start_bg res gk-resolver --watch -o "$T/out" --invalidate-after 2s "consul:$CONSUL_URL/web?wait=30s"
	wait_for -t 10 set_is "$T/out" 10.1.0.2:8081 10.2.0.1:8080
	consul_ctl fail
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set" and (.error | test("HTTP 500"))'
	set_is "$T/out" 10.1.0.2:8081 10.2.0.1:8080
	# the errors last past --invalidate-after: the set is dropped
	wait_event "$T/res.err" '.msg == "resolver: last good set invalidated"' 15
	wait_for -t 5 set_is "$T/out"
	consul_ctl recover
	wait_for -t 20 set_is "$T/out" 10.1.0.2:8081 10.2.0.1:8080
}

@test "consul: an answer of only malformed instances (a port as a string, out of range) is an error that keeps the last good set" {
	cat >"$T/script.json" <<'EOF2'
[{"index": 5, "body": [
  {"Node": {"Node": "n1", "Address": "10.1.0.1"},
   "Service": {"ID": "web-1", "Service": "web", "Address": "10.2.0.1", "Port": 8080}, "Checks": []}]},
 {"index": 6, "body": [
  {"Node": {"Node": "n1", "Address": "10.1.0.1"},
   "Service": {"ID": "web-1", "Service": "web", "Address": "10.2.0.1", "Port": "8080"}, "Checks": []},
  {"Node": {"Node": "n2", "Address": "10.1.0.2"},
   "Service": {"ID": "web-2", "Service": "web", "Address": "10.2.0.2", "Port": 70000}, "Checks": []}]},
 {"index": 7, "body": [
  {"Node": {"Node": "n4", "Address": "10.1.0.4"},
   "Service": {"ID": "web-4", "Service": "web", "Address": "http://10.2.0.4", "Port": 8084}, "Checks": []},
  {"Node": {"Node": "n2", "Address": "10.1.0.2"},
   "Service": {"ID": "web-2", "Service": "web", "Address": "10.2.0.2", "Port": 70000}, "Checks": []},
  {"Node": {"Node": "n3", "Address": "10.1.0.3"},
   "Service": {"ID": "web-3", "Service": "web", "Address": "10.2.0.3", "Port": 8083}, "Checks": []}]}]
EOF2
	start_consul consul "$T/script.json"
	start_bg res gk-resolver --watch -o "$T/out" "consul:$CONSUL_URL/web?wait=30s"
	wait_for -t 10 set_is "$T/out" 10.2.0.1:8080
	consul_ctl next
	wait_event "$T/res.err" '.msg == "resolver source failed: keeping the last good set" and .error == "consul: no usable instance in the answer, only malformed ones"'
	# one warning an answer, naming the first, counting them all
	wait_event "$T/res.err" '.msg == "consul: malformed instances skipped" and .id == "web-1" and (.error | test("65535")) and .skipped == 2'
	local warned
	warned=$(count_events "$T/res.err" '.msg == "consul: malformed instances skipped"')
	[ "$warned" -le "$(consul_requests '.answered_index == 6')" ]
	set_is "$T/out" 10.2.0.1:8080
	# a good instance among bad ones is an answer: it is the set
	consul_ctl next
	wait_for -t 20 set_is "$T/out" 10.2.0.3:8083
	# an Address that is no host (a URL) is malformed too
	wait_event "$T/res.err" '.msg == "consul: malformed instances skipped" and .id == "web-4" and .skipped == 2'
}

@test "consul: tags that read as a priority (priority=high, priority=3) round-trip through -o and file: as tags" {
	cat >"$T/script.json" <<'EOF2'
[{"index": 5, "body": [
  {"Node": {"Node": "n1", "Address": "10.1.0.1"},
   "Service": {"ID": "web-1", "Service": "web", "Address": "10.2.0.1", "Port": 8080,
               "Tags": ["priority=high"]}, "Checks": []},
  {"Node": {"Node": "n2", "Address": "10.1.0.2"},
   "Service": {"ID": "web-2", "Service": "web", "Address": "10.2.0.2", "Port": 8080,
               "Tags": ["priority=3", "v2"]}, "Checks": []}]}]
EOF2
	start_consul consul "$T/script.json"
	run --separate-stderr gk-resolver -o "$T/out" "consul:$CONSUL_URL/web"
	assert_success
	# what gk-client --endpoints reads: both endpoints, tags as given,
	# neither a backup of priority 3
	run --separate-stderr gk-resolver --json "file:$T/out"
	assert_success
	assert_equal "$(jq -c '.endpoints | map([.addr, .priority, .tags])' <<<"$output")" \
		'[["10.2.0.1:8080",0,["priority=high"]],["10.2.0.2:8080",0,["priority=3","v2"]]]'
	[[ $stderr != *'bad line'* ]]
}

@test "consul: the bound of 10000 counts endpoints: an instance listed twice takes no room of another" {
	python3 -c '
import json, sys
inst = lambda i, a: {"Node": {"Node": "n%d" % i, "Address": a},
                     "Service": {"ID": "w%d" % i, "Service": "web", "Address": a, "Port": 80},
                     "Checks": []}
body = [inst(0, "10.9.9.9"), inst(1, "10.9.9.9")]
body += [inst(i + 2, "10.0.%d.%d" % (i // 256, i % 256)) for i in range(10000)]
json.dump([{"index": 5, "body": body}], open(sys.argv[1], "w"))' "$T/script.json"
	start_consul consul "$T/script.json"
	start_bg res gk-resolver --watch -o "$T/out" "consul:$CONSUL_URL/web?wait=30s"
	wait_for -t 10 test -s "$T/out"
	# 10001 addresses: 10000 of them, the first in order, one counted
	assert_equal "$(wc -l <"$T/out")" 10000
	assert_equal "$(head -1 "$T/out")" '10.0.0.0:80 1 -'
	kill -USR1 "$(bg_pid res)"
	wait_for -t 10 metric_seq "$T/res.err" gk_resolver_dropped_total 1 bound
}

@test "consul register: registers with a TTL check, passes it at a third of the TTL, deregisters on SIGTERM, also when the agent forgot it" {
	consul_script
	start_consul consul "$T/script.json"
	start_bg reg gk-resolver register "consul:$CONSUL_URL" --name web \
		--addr 10.0.0.5:8080 --ttl 1s --tags v1,blue --weight 7
	wait_for -t 10 _logged '.path == "/v1/agent/service/register"'
	run jq -c -s 'map(select(.path == "/v1/agent/service/register"))[0].body | fromjson |
		[.ID, .Name, .Address, .Port, .Tags, .Weights.Passing, .Check.CheckID, .Check.TTL, .Check.Status]' "$CONSUL_LOG"
	assert_output '["web-10.0.0.5-8080","web","10.0.0.5",8080,["v1","blue"],7,"service:web-10.0.0.5-8080","1s","passing"]'
	wait_for -t 15 consul_at_least 3 '.path == "/v1/agent/check/pass/service:web-10.0.0.5-8080" and .status == 200'
	# The agent restarts and forgets it: registered again.
	consul_ctl forget
	wait_for -t 15 consul_at_least 2 '.path == "/v1/agent/service/register"'
	kill -TERM "$(bg_pid reg)"
	wait_exit reg 10
	assert_equal "$BG_STATUS" 0
	assert_equal "$(consul_requests '.path == "/v1/agent/service/deregister/web-10.0.0.5-8080" and .status == 200')" 1
	# Forgotten by the agent and stopped before the next pass: the
	# service the agent does not know (404) is as good as deregistered.
	start_bg reg2 gk-resolver register "consul:$CONSUL_URL" --name web \
		--addr 10.0.0.6:8080 --ttl 30s
	wait_event "$T/reg2.err" '.msg == "registered"'
	consul_ctl forget
	kill -TERM "$(bg_pid reg2)"
	wait_exit reg2 10
	assert_equal "$BG_STATUS" 0
	assert_equal "$(consul_requests '.path == "/v1/agent/service/deregister/web-10.0.0.6-8080" and .status == 404')" 1
	wait_event "$T/reg2.err" '.msg == "deregistered"'
}

@test "register --check: the registration is only kept alive while the check URL answers 2xx" {
	consul_script
	start_consul consul "$T/script.json"
	consul_ctl health/503
	start_bg reg gk-resolver register "consul:$CONSUL_URL" --name web \
		--addr 10.0.0.5:8080 --ttl 1s --check "$CONSUL_URL/_control/health"
	# failing checks: nothing registered
	wait_for -t 15 consul_at_least 2 '.path == "/_control/health"'
	assert_equal "$(consul_requests '.path | startswith("/v1/agent/")')" 0
	wait_event "$T/reg.err" '.msg == "health check failed: not keeping the registration alive"'
	consul_ctl health/200
	wait_for -t 15 _logged '.path == "/v1/agent/check/pass/service:web-10.0.0.5-8080"'
	consul_ctl health/500
	local n
	n=$(jq -s 'length' "$CONSUL_LOG")
	# two more failing checks after the switch, and no pass among them
	wait_for -t 15 _failing_checks_since "$n" 2
	local first
	first=$(jq -s "[.[$n:] | to_entries[] | select(.value.status == 500) | .key][0]" "$CONSUL_LOG")
	assert_equal "$(jq -s ".[$((n + first)):] | map(select(.path | startswith(\"/v1/agent/check/pass/\"))) | length" "$CONSUL_LOG")" 0
}
