#!/usr/bin/env bats
# gk-exec as a user sees it: a real gk-listener on loopback in front of
# gk-exec running CGI scripts, and real curl.  Every stack runs in its own
# process group (start_bg) and teardown ends it.

load helpers/common

setup() {
	common_setup
	PORT=$(free_port)
	URL="http://127.0.0.1:$PORT"
	ERR="$T/stack.err"
	EXAMPLES="$BATS_TEST_DIRNAME/../contrib/examples"
}

teardown() {
	stop_all
}

# script NAME <<'EOF' ... : an executable /bin/sh script $T/NAME.
script() {
	{
		echo '#!/bin/sh'
		cat
	} >"$T/$1"
	chmod +x "$T/$1"
}

_up_or_dead() {
	bg_alive stack || return 0
	_port_open 127.0.0.1 "$PORT"
}

# stack GK-EXEC-ARGS...: gk-listener -l 127.0.0.1:$PORT -- gk-exec ARGS.
stack() {
	start_bg stack gk-listener -l "127.0.0.1:$PORT" -- gk-exec "$@"
	poll_for -t 10 _up_or_dead
	if ! bg_alive stack; then
		cat "$ERR" >&2
		return 1
	fi
}

status() {
	local url=$1
	shift
	curl -s -o /dev/null -m 10 -w '%{http_code}' "$@" "$url"
}

# The last value of a gauge in the metrics snapshots of the events.
gauge() {
	events "$ERR" "select(.type == \"metrics\") | .metrics[]
		| select(.name == \"$1\") | .series[0].value" | tail -n 1
}

_gauge_is() {
	[ "$(gauge "$1")" = "$2" ]
}

_lines_are() {
	[ "$(grep -c '^+' "$1")" = "$2" ]
}

_not_running() {
	[ ! -e "/proc/$1" ] && return 0
	[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

@test "an unchanged /bin/sh CGI script printing text/plain hello is answered 200" {
	script hello.cgi <<'EOF'
printf "Content-Type: text/plain\n\nhello"
EOF
	stack "$T/hello.cgi"
	run curl -s -i -m 10 "$URL/"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	assert_line --regexp '^content-type: text/plain'
	assert_output --partial $'\r\n\r\nhello'
}

@test "contrib/examples/hello.cgi answers hello" {
	stack "$EXAMPLES/hello.cgi"
	run curl -s -m 10 "$URL/"
	assert_success
	assert_output hello
}

@test "meta-variables and HTTP_ headers reach the script" {
	script env.cgi <<'EOF'
printf 'Content-Type: text/plain\n\n'
env
EOF
	stack "$T/env.cgi"
	run curl -s -m 10 -H 'X-Custom-Thing: abc' -H 'Accept: text/x-test' \
		"$URL/some/path?a=1&b=2"
	assert_success
	assert_line GATEWAY_INTERFACE=CGI/1.1
	assert_line REQUEST_METHOD=GET
	assert_line "SCRIPT_NAME=$T/env.cgi"
	assert_line PATH_INFO=/some/path
	assert_line 'QUERY_STRING=a=1&b=2'
	assert_line SERVER_PROTOCOL=HTTP/1.1
	assert_line SERVER_SOFTWARE=gokit/0.1.0
	assert_line SERVER_NAME=127.0.0.1
	assert_line "SERVER_PORT=$PORT"
	assert_line REMOTE_ADDR=127.0.0.1
	assert_line --regexp '^REMOTE_PORT=[0-9]+$'
	assert_line HTTP_X_CUSTOM_THING=abc
	assert_line HTTP_ACCEPT=text/x-test
	assert_line "HTTP_HOST=127.0.0.1:$PORT"
	assert_line --regexp '^HTTP_USER_AGENT=curl/'
	assert_line --regexp '^PATH=.+'
	refute_line --regexp '^CONTENT_LENGTH='
	refute_line --regexp '^CONTENT_TYPE='
}

@test "a header name with '_' or another character than a letter, digit or '-' is not passed: it cannot pose as another" {
	script env.cgi <<'EOF'
printf 'Content-Type: text/plain\n\n'
env
EOF
	stack "$T/env.cgi"
	run curl -s -m 10 -H 'X-Forwarded-For: 10.0.0.1' \
		-H 'X_Forwarded_For: 6.6.6.6' -H 'Content_Length: 99' \
		-H 'X.Real.Ip: 6.6.6.6' -H 'X-Fine-9: yes' "$URL/"
	assert_success
	assert_line HTTP_X_FORWARDED_FOR=10.0.0.1
	assert_line HTTP_X_FINE_9=yes
	refute_output --partial 6.6.6.6
	refute_output --partial HTTP_CONTENT_LENGTH
	refute_line --regexp '^[A-Z_]+=99$'
}

@test "the request body reaches the script on stdin with CONTENT_LENGTH and CONTENT_TYPE" {
	script echo.cgi <<'EOF'
printf 'Content-Type: text/plain\n\n'
echo "method=$REQUEST_METHOD length=$CONTENT_LENGTH type=$CONTENT_TYPE"
cat
EOF
	stack "$T/echo.cgi"
	run curl -s -m 10 -H 'Content-Type: text/x-mine' --data-binary 'the body' \
		"$URL/"
	assert_success
	assert_line --index 0 'method=POST length=8 type=text/x-mine'
	assert_line --index 1 'the body'
	refute_output --partial HTTP_CONTENT
}

@test "a wire request whose body_b64 is not base64 is answered 400 and runs no script" {
	# gk-exec on stdin, as a stage above it would feed it.
	script echo.cgi <<'EOF'
printf 'Content-Type: text/plain\n\n'
touch "$0.ran"
cat
EOF
	run bash -c 'printf "%s\n" \
		"{\"id\":\"bad\",\"method\":\"POST\",\"path\":\"/\",\"body_b64\":\"aGk\"}" |
		gk-exec "$1" 2>/dev/null' _ "$T/echo.cgi"
	assert_success
	assert_equal "$(echo "$output" | jq -c '[.id, .status, .error.reason]')" '["bad",400,"invalid body_b64"]'
	[ ! -e "$T/echo.cgi.ran" ]
	run bash -c 'printf "%s\n" \
		"{\"id\":\"good\",\"method\":\"POST\",\"path\":\"/\",\"body_b64\":\"aGk=\"}" |
		gk-exec "$1" 2>/dev/null' _ "$T/echo.cgi"
	assert_equal "$(echo "$output" | jq -c '[.id, .status, .body]')" '["good",200,"hi"]'
	[ -e "$T/echo.cgi.ran" ]
}

@test "a 300 KB body (more than a pipe holds) reaches the script whole" {
	script sum.cgi <<'EOF'
printf 'Content-Type: text/plain\n\n'
sha256sum | cut -d' ' -f1
EOF
	head -c 300000 /dev/urandom >"$T/big"
	stack "$T/sum.cgi"
	run curl -s -m 10 -H 'Content-Type: application/octet-stream' \
		--data-binary @"$T/big" "$URL/"
	assert_success
	assert_output "$(sha256sum <"$T/big" | cut -d' ' -f1)"
}

@test "Status: 404 Not Found sets the status; other headers pass through lowercased" {
	script status.cgi <<'EOF'
printf 'Status: 404 Not Found\nContent-Type: text/plain\nX-Thing: Yes\nSet-Cookie: a=1\nSet-Cookie: b=2\n\nnope\n'
EOF
	stack "$T/status.cgi"
	run curl -s -i -m 10 "$URL/"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 404 '
	assert_line --regexp '^x-thing: Yes'
	assert_line --regexp '^set-cookie: a=1'
	assert_line --regexp '^set-cookie: b=2'
	assert_line nope
}

@test "CRLF line ends in the CGI header block work as LF does" {
	script crlf.cgi <<'EOF'
printf 'Status: 201 Created\r\nContent-Type: text/plain\r\n\r\ncreated'
EOF
	stack "$T/crlf.cgi"
	run curl -s -i -m 10 "$URL/"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 201 '
	assert_line --regexp '^content-type: text/plain'
	assert_output --partial $'\r\n\r\ncreated'
	refute_output --partial $'\r\n\r\n\r\n'
}

@test "Location without Status is answered 302" {
	script redirect.cgi <<'EOF'
printf 'Location: http://example.com/elsewhere\n\n'
EOF
	stack "$T/redirect.cgi"
	run curl -s -i -m 10 "$URL/"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 302 '
	assert_line --regexp '^location: http://example.com/elsewhere'
}

@test "binary output after the header block reaches the client byte for byte" {
	script bin.cgi <<'EOF'
printf 'Content-Type: application/octet-stream\n\n\377\376\000\001'
EOF
	stack "$T/bin.cgi"
	curl -s -m 10 -o "$T/got" "$URL/"
	run od -An -tx1 "$T/got"
	assert_output --regexp '^ *ff fe 00 01$'
}

@test "a document with no header block is answered 502 and logged" {
	script nohdr.cgi <<'EOF'
echo "hello, no headers here"
EOF
	stack "$T/nohdr.cgi"
	run status "$URL/"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-exec" and .msg == "malformed CGI response"'
}

@test "a header block without its blank line is answered 502" {
	script noblank.cgi <<'EOF'
printf 'Content-Type: text/plain\n'
EOF
	stack "$T/noblank.cgi"
	run status "$URL/"
	assert_output 502
}

@test "a malformed Status is answered 502" {
	script badstatus.cgi <<'EOF'
printf 'Status: great\nContent-Type: text/plain\n\nx'
EOF
	stack "$T/badstatus.cgi"
	run status "$URL/"
	assert_output 502
}

@test "a CGI script that exits 3 is answered 502 and logged with its status" {
	script exit3.cgi <<'EOF'
printf 'Content-Type: text/plain\n\nalmost'
exit 3
EOF
	stack "$T/exit3.cgi"
	run status "$URL/"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-exec" and .msg == "CGI script failed" and .status == 3'
}

@test "a CGI script killed by a signal is answered 502 and logged with the signal" {
	script killed.cgi <<'EOF'
kill -9 $$
EOF
	stack "$T/killed.cgi"
	run status "$URL/"
	assert_output 502
	wait_event "$ERR" '.proc == "gk-exec" and .signal == "KILL" and (.child_pid | type) == "number"'
}

@test "the script's stderr goes to the event stream" {
	script noisy.cgi <<'EOF'
echo "a stray line from the script" >&2
printf 'Content-Type: text/plain\n\nok'
EOF
	stack "$T/noisy.cgi"
	run status "$URL/"
	assert_output 200
	wait_grep 'a stray line from the script' "$ERR"
}

@test "-t 500ms: a script that hangs is answered 504 within 5 s and its processes are gone" {
	script hang.cgi <<EOF
echo \$\$ >"$T/script.pid"
sleep 30 &
echo \$! >"$T/sleep.pid"
wait
EOF
	stack -t 500ms "$T/hang.cgi"
	run curl -s -o /dev/null -m 5 -w '%{http_code}' "$URL/"
	assert_success
	assert_output 504
	# Answered once the script was reaped: it no longer exists.
	pid=$(cat "$T/script.pid")
	run _not_running "$pid"
	assert_success
	# Its process group was killed, so the sleep it started is gone too.
	poll_for -t 5 _not_running "$(cat "$T/sleep.pid")"
	wait_event "$ERR" '.proc == "gk-exec" and .msg == "CGI script timed out: killed"'
}

@test "a request whose client goes away kills its child" {
	script hang.cgi <<EOF
echo \$\$ >"$T/script.pid"
exec sleep 30
EOF
	stack "$T/hang.cgi"
	run curl -s -m 1 "$URL/"
	assert_failure
	wait_file "$T/script.pid"
	poll_for -t 5 _not_running "$(cat "$T/script.pid")"
}

@test "-j 2 bounds concurrency: two children at once, the rest queued, all answered" {
	script slow.cgi <<EOF
echo "+ \$\$" >>"$T/log"
while [ ! -e "$T/release" ]; do sleep 0.05; done
echo "- \$\$" >>"$T/log"
printf 'Content-Type: text/plain\n\ndone'
EOF
	export GK_METRICS_INTERVAL=100ms
	stack -j 2 "$T/slow.cgi"
	local pids=()
	for i in 1 2 3 4 5; do
		curl -s -o /dev/null -m 20 -w '%{http_code}\n' "$URL/$i" \
			>"$T/code.$i" &
		pids+=($!)
	done
	# Two running, three waiting: seen in gk-exec's own gauges.
	poll_for -t 10 _gauge_is gk_exec_queue 3
	run gauge gk_exec_children
	assert_output 2
	poll_for -t 10 _lines_are "$T/log" 2
	touch "$T/release"
	wait "${pids[@]}"
	for i in 1 2 3 4 5; do
		run cat "$T/code.$i"
		assert_output 200
	done
	# Never more than two between a start and an end.
	run awk '/^\+/ { n++; if (n > max) max = n } /^-/ { n-- }
		END { print max }' "$T/log"
	assert_output 2
	run grep -c '^+' "$T/log"
	assert_output 5
}

@test "-j 1: a queued request whose client goes away leaves the queue and never runs" {
	script slow.cgi <<EOF
echo "+ \$\$" >>"$T/log"
while [ ! -e "$T/release" ]; do sleep 0.05; done
printf 'Content-Type: text/plain\n\ndone'
EOF
	export GK_METRICS_INTERVAL=100ms
	stack -j 1 "$T/slow.cgi"
	curl -s -o /dev/null -m 20 -w '%{http_code}' "$URL/first" >"$T/code.first" &
	local first=$!
	poll_for -t 10 _lines_are "$T/log" 1
	# Two wait behind it; the first of them gives up after half a second.
	run curl -s -m 0.5 "$URL/gone"
	assert_failure
	curl -s -o /dev/null -m 20 -w '%{http_code}' "$URL/last" >"$T/code.last" &
	local last=$!
	poll_for -t 10 _gauge_is gk_exec_queue 1
	touch "$T/release"
	wait "$first" "$last"
	assert_equal "$(cat "$T/code.first")" 200
	assert_equal "$(cat "$T/code.last")" 200
	# The one that left was never started.
	run grep -c '^+' "$T/log"
	assert_output 2
	poll_for -t 10 _gauge_is gk_exec_queue 0
}

@test "a script that cannot run is said at the start, and each request is answered 502" {
	run bash -c "printf '{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\",\"headers\":{}}\n' |
		GK_EVENTS_FORMAT=json timeout 10 gk-exec $T/missing.cgi 2>$T/err"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" 502
	assert_equal "$(count_events "$T/err" '.level == "warn" and .msg == "the CGI script cannot be run now" and .script == "'"$T/missing.cgi"'" and .error == "No such file or directory"')" 1
	assert_equal "$(count_events "$T/err" '.msg == "unable to spawn the CGI script"')" 1
}

@test "usage errors exit 64; --help names the SCRIPT operand" {
	run gk-exec
	assert_failure 64
	assert_output --partial 'gk-exec'
	run gk-exec -j zero /bin/true
	assert_failure 64
	run gk-exec -t forever /bin/true
	assert_failure 64
	run gk-exec --help
	assert_success
	assert_output --partial 'SCRIPT'
	assert_output --partial '--jobs'
	run gk-exec --version
	assert_success
	assert_output --partial 'gk-exec 0.1.0'
}

@test "250 request headers (the listener takes 256): every one reaches the script, and CONTENT_LENGTH and PATH still do" {
	# The environment used to hold 255 variables at most, and dropped
	# the rest without a word: the last headers, then CONTENT_LENGTH
	# (a POST body the script never read) and PATH.
	script env.cgi <<'EOF2'
printf 'Content-Type: text/plain\n\n'
env
EOF2
	stack "$T/env.cgi"
	local args=() i
	for i in $(seq 250); do args+=(-H "X-H$i: v$i"); done
	run curl -s -m 10 "${args[@]}" --data-binary 'abc' "$URL/"
	assert_success
	assert_equal "$(grep -c '^HTTP_X_H[0-9]*=v[0-9]*$' <<<"$output")" 250
	assert_line HTTP_X_H250=v250
	assert_line CONTENT_LENGTH=3
	assert_line --regexp '^PATH=.+'
	assert_line SERVER_NAME=127.0.0.1
}

@test "repeated Cookie headers are joined with '; ', other repeated headers with ', '" {
	# RFC 6265 §5.4: one Cookie header, pairs separated by "; "; a
	# cookie parser reads "a=1, b=2" as the single cookie a="1, b=2".
	# As Go's net/http/cgi and nginx's $http_cookie.
	script env.cgi <<'EOF2'
printf 'Content-Type: text/plain\n\n'
env
EOF2
	stack "$T/env.cgi"
	run curl -s -m 10 -H 'Cookie: a=1' -H 'Cookie: b=2' \
		-H 'X-Many: 1' -H 'X-Many: 2' "$URL/"
	assert_success
	assert_line 'HTTP_COOKIE=a=1; b=2'
	assert_line 'HTTP_X_MANY=1, 2'
}

@test "PATH_INFO is percent-decoded (RFC 3875 4.1.5); REQUEST_URI and QUERY_STRING are not" {
	script env.cgi <<'EOF2'
printf 'Content-Type: text/plain\n\n'
env
EOF2
	stack "$T/env.cgi"
	run curl -s -m 10 "$URL/caf%C3%A9/a%20b/c%2Fd?q=%20r&s=t%2Bu"
	assert_success
	assert_line 'PATH_INFO=/café/a b/c/d'
	assert_line 'REQUEST_URI=/caf%C3%A9/a%20b/c%2Fd?q=%20r&s=t%2Bu'
	assert_line 'QUERY_STRING=q=%20r&s=t%2Bu'
}

@test "a path with an invalid percent escape or an encoded NUL is answered 400 and runs no script" {
	# As nginx, Apache and Go answer 400; a NUL cannot be in the
	# environment, and cut there it would name another file.
	script env.cgi <<EOF2
touch "$T/ran"
printf 'Content-Type: text/plain\n\n'
EOF2
	stack "$T/env.cgi"
	run status "$URL/a%zzb"
	assert_output 400
	run status "$URL/a%2"
	assert_output 400
	run status "$URL/secret%00.txt"
	assert_output 400
	[ ! -e "$T/ran" ]
	run status "$URL/fine%2a"
	assert_output 200
}

@test "-t: a script that exited but left a process holding its stdout is answered 504, and that process is killed" {
	# Its process group is killed at -t whether or not the script
	# itself has exited: a process it left in the background used to
	# outlive the 504.
	script bg.cgi <<EOF2
printf 'Content-Type: text/plain\n\nhi\n'
sleep 300 &
echo \$! >"$T/sleep.pid"
EOF2
	stack -t 500ms "$T/bg.cgi"
	run status "$URL/"
	assert_output 504
	wait_file "$T/sleep.pid"
	poll_for -t 5 _not_running "$(cat "$T/sleep.pid")"
}

@test "a Status the wire cannot carry (1xx) is answered 502 as a malformed Status" {
	script s100.cgi <<'EOF2'
printf 'Status: 101 Switching Protocols\nContent-Type: text/plain\n\nx'
EOF2
	run bash -c 'printf "%s\n" "{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\"}" |
		GK_EVENTS_FORMAT=json gk-exec "$1" 2>"$2"' _ "$T/s100.cgi" "$T/err"
	assert_success
	assert_equal "$(jq -c '[.status, .error.reason]' <<<"$output")" '[502,"malformed response"]'
	assert_equal "$(count_events "$T/err" '.msg == "malformed CGI response" and .reason == "malformed Status"')" 1
}

# wire SCRIPT: one GET / on gk-exec's stdin; its answer in $output.
wire() {
	run bash -c 'printf "%s\n" "{\"id\":\"1\",\"method\":\"GET\",\"path\":\"/\"}" |
		GK_EVENTS_FORMAT=json gk-exec "$1" 2>"$2"' _ "$1" "$T/err"
}

@test "a header block of only a Status (204, 404 with no body) sets that status" {
	script s204.cgi <<'EOF2'
printf 'Status: 204 No Content\n\n'
EOF2
	wire "$T/s204.cgi"
	assert_success
	assert_equal "$(jq -c '[.status, .error, .body]' <<<"$output")" '[204,null,null]'
	script s404.cgi <<'EOF2'
printf 'Status: 404\r\n\r\n'
EOF2
	wire "$T/s404.cgi"
	assert_equal "$(jq -c '[.status, .error]' <<<"$output")" '[404,null]'
}

@test "an nph- script's status line (HTTP/1.1 201 Created) sets the status, its headers pass on" {
	script nph-created.cgi <<'EOF2'
printf 'HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Id: 7\r\n\r\nmade\n'
EOF2
	wire "$T/nph-created.cgi"
	assert_success
	assert_equal "$(jq -c '[.status, .headers, .body, .error]' <<<"$output")" \
		'[201,{"content-type":"text/plain","x-id":"7"},"made\n",null]'
	script nph-bad.cgi <<'EOF2'
printf 'HTTP/1.1 2O1 Created\r\nContent-Type: text/plain\r\n\r\nmade\n'
EOF2
	wire "$T/nph-bad.cgi"
	assert_equal "$(jq -c '[.status, .error.reason]' <<<"$output")" '[502,"malformed response"]'
	assert_equal "$(count_events "$T/err" '.msg == "malformed CGI response" and .reason == "malformed status line"')" 1
}

@test "a response header name of 300 characters passes on whole, not cut to 256" {
	script longname.cgi <<'EOF2'
printf 'Content-Type: text/plain\nX-%0298d: v\n\nb' 0
EOF2
	wire "$T/longname.cgi"
	assert_success
	local name
	name="x-$(printf '%0298d' 0)"
	assert_equal "$(jq -r '.headers | keys | map(length) | sort | join(",")' <<<"$output")" "12,300"
	assert_equal "$(jq -r --arg n "$name" '.headers[$n]' <<<"$output")" v
}

@test "a script that closes its stdout and goes on running is answered from what it wrote; its later exit status is logged" {
	script early.cgi <<EOF2
printf 'Content-Type: text/plain\n\nbye\n'
exec >&-
echo \$\$ >"$T/script.pid"
i=0
while [ ! -e "$T/release" ] && [ \$i -lt 400 ]; do sleep 0.05; i=\$((i + 1)); done
exit 4
EOF2
	stack -t 20s "$T/early.cgi"
	run curl -s -m 10 -w ' %{http_code}' "$URL/"
	assert_success
	assert_output $'bye\n 200'
	# Answered while the script still runs: it keeps its child slot.
	run _not_running "$(cat "$T/script.pid")"
	assert_failure
	touch "$T/release"
	wait_event "$ERR" '.proc == "gk-exec" and .msg == "CGI script failed" and .status == 4'
	assert_equal "$(count_events "$ERR" '.type == "access"')" 1
}
