#!/usr/bin/env bats
# gk_serve(3) as a service author sees it, through the hello example: the
# same binary on stdin/stdout, on a wire socket, as an HTTP server, and as
# the south side of a gk-listener that reaches it with --to.

load helpers/common

setup() {
	common_setup
}

teardown() {
	stop_all
}

# wire_exchange PATH LINE...: connect to the unix socket PATH, send each
# LINE, print the answers (one per line) once every LINE is answered.
wire_exchange() {
	python3 - "$@" <<'PY'
import socket, sys
path, lines = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
s.sendall("".join(l + "\n" for l in lines).encode())
buf = b""
while buf.count(b"\n") < len(lines):
    b = s.recv(65536)
    if not b:
        break
    buf += b
sys.stdout.write(buf.decode())
PY
}

# body_is URL WANT: the body of a GET of URL is WANT (for wait_for).
body_is() {
	[ "$(curl -s -m 2 "$1")" = "$2" ]
}

@test "on stdin, hello answers each wire request by id and exits 0 at EOF" {
	run bash -c 'printf "%s\n" "{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\"}" \
		"{\"id\":\"b\",\"method\":\"GET\",\"path\":\"/x\"}" | hello 2>/dev/null'
	assert_success
	[ "$(echo "$output" | wc -l)" -eq 2 ]
	assert_equal "$(echo "$output" | jq -r -s 'map(.id) | sort | join(",")')" "a,b"
	assert_equal "$(echo "$output" | jq -r -s 'map(.status) | unique | join(",")')" "200"
	assert_equal "$(echo "$output" | jq -r -s '.[0].body')" "hello"
}

@test "a line that is not JSON on stdin is dropped with an event; the next request is answered" {
	run bash -c 'printf "%s\n" "not json" "{\"id\":\"ok\",\"method\":\"GET\",\"path\":\"/\"}" |
		GK_EVENTS_FORMAT=json hello 2>"$BATS_TEST_TMPDIR/err"'
	assert_success
	assert_equal "$(echo "$output" | jq -r .id)" ok
	[ "$(count_events "$T/err" '.level == "warn" or .level == "error"')" -ge 1 ]
}

@test "an invalid request line whose id comes first is answered 400 at once; the next is answered" {
	# Whoever wrote it would otherwise wait for ever: nothing else
	# answers a line that was dropped.
	run bash -c 'printf "%s\n" "{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\",\"body\":\"an \"unescaped\" quote\"}" \
		"{\"id\":\"b\",\"method\":\"GET\",\"path\":\"/\"}" |
		GK_EVENTS_FORMAT=json hello 2>"$BATS_TEST_TMPDIR/err"'
	assert_success
	assert_equal "$(echo "$output" | jq -c 'select(.id == "a") | [.status, .error]')" \
		'[400,{"stage":"hello","reason":"invalid request"}]'
	assert_equal "$(echo "$output" | jq -r 'select(.id == "b") | .status')" 200
	assert_equal "$(count_events "$T/err" '.level == "error" and .msg == "invalid line from north: answered 400"')" 1
}

@test "a body_b64 that is not base64 is answered 400 before the handler runs; \\/ in a valid one is read as /" {
	# Unpadded base64 used to reach the handler as an empty body.  The
	# listener always pads; another program writing the wire may not.
	# eyJzIjoiYS9iIn0= is {"s":"a/b"}.  eyJzIjoiXCI\/In0= is
	# eyJzIjoiXCI/In0= once unescaped (a JSON writer may escape '/'):
	# {"s":"\"?"}, which the handler must be given as it is.
	run bash -c 'printf "%s\n" \
		"{\"id\":\"short\",\"method\":\"POST\",\"path\":\"/count\",\"body_b64\":\"eyJzIjoiYS9iIn0\"}" \
		"{\"id\":\"num\",\"method\":\"POST\",\"path\":\"/count\",\"body_b64\":7}" \
		"{\"id\":\"both\",\"method\":\"POST\",\"path\":\"/count\",\"body\":\"{}\",\"body_b64\":\"e30=\"}" \
		"{\"id\":\"esc\",\"method\":\"POST\",\"path\":\"/count\",\"body_b64\":\"eyJzIjoiYS9iIn0=\"}" \
		"{\"id\":\"slash\",\"method\":\"POST\",\"path\":\"/count\",\"body_b64\":\"eyJzIjoiXCI\\/In0=\"}" |
		GK_EVENTS_FORMAT=json stringsvc 2>"$BATS_TEST_TMPDIR/err"'
	assert_success
	by_id() { echo "$output" | jq -c --arg id "$1" 'select(.id == $id) | [.status, .error.reason, .body]'; }
	assert_equal "$(by_id short)" '[400,"invalid body_b64","bad request\n"]'
	assert_equal "$(by_id num)" '[400,"invalid body_b64","bad request\n"]'
	assert_equal "$(by_id both)" '[400,"both body and body_b64","bad request\n"]'
	assert_equal "$(by_id esc)" '[200,null,"{\"v\":3}\n"]'
	assert_equal "$(by_id slash)" '[200,null,"{\"v\":2}\n"]'
	assert_equal "$(count_events "$T/err" '.msg == "request body invalid" and .reason == "invalid body_b64"')" 2
}

@test "hello --http -l serves HTTP/1.1 itself, with health, Date and Content-Length" {
	port=$(free_port)
	start_bg hello hello --http -l "127.0.0.1:$port"
	wait_http "http://127.0.0.1:$port/healthz" 10
	run curl -s -i "http://127.0.0.1:$port/"
	assert_success
	assert_line --partial "HTTP/1.1 200"
	assert_line --regexp '^[Dd]ate: '
	assert_line --regexp '^[Cc]ontent-[Ll]ength: 6'
	assert_line "hello"
	run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz"
	assert_output 200
	# The same bounds as gk-listener: a malformed request is 400.
	run bash -c "printf 'BOGUS\r\n\r\n' | python3 -c '
import socket, sys
s = socket.create_connection((\"127.0.0.1\", $port), timeout=5)
s.sendall(sys.stdin.buffer.read())
print(s.recv(100).decode().split(\"\\r\\n\")[0])'"
	assert_output --partial " 400 "
}

@test "hello -l unix:PATH speaks the wire protocol, many requests on one connection" {
	start_bg hello hello -l "unix:$T/hello.sock"
	poll_for -t 10 test -S "$T/hello.sock"
	run wire_exchange "$T/hello.sock" \
		'{"id":"1","method":"GET","path":"/"}' \
		'{"id":"2","method":"GET","path":"/"}' \
		'{"id":"3","method":"GET","path":"/"}'
	assert_success
	assert_equal "$(echo "$output" | jq -r -s 'map(.id) | sort | join(",")')" "1,2,3"
	assert_equal "$(echo "$output" | jq -r -s 'map(.body) | unique | join(",")')" "hello"
}

@test "gk-listener --to unix:PATH reaches a hello listening there, and reconnects when it comes back" {
	port=$(free_port)
	start_bg hello hello -l "unix:$T/hello.sock"
	poll_for -t 10 test -S "$T/hello.sock"
	start_bg listener gk-listener -l "127.0.0.1:$port" --to "unix:$T/hello.sock"
	wait_http "http://127.0.0.1:$port/healthz" 10
	wait_for -t 10 body_is "http://127.0.0.1:$port/" hello

	# hello goes away: requests are answered by the listener, not hung.
	kill -TERM -- "-$(bg_pid hello)"
	wait_exit hello 10
	rm -f "$T/hello.sock"
	code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "http://127.0.0.1:$port/")
	[ "$code" -ge 500 ] && [ "$code" -le 504 ]

	# hello comes back on the same path: the listener reconnects by itself.
	start_bg hello2 hello -l "unix:$T/hello.sock"
	poll_for -t 10 test -S "$T/hello.sock"
	wait_for -t 15 body_is "http://127.0.0.1:$port/" hello
	bg_alive listener
}

@test "gk_serve usage errors exit 64 with one line naming the program" {
	run hello --jobs nope
	assert_failure 64
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "hello:"
	# the bad value and what was expected, as for every option
	run hello -j 1025
	assert_failure 64
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial "bad --jobs: 1025 (expected a whole number from 0 to 1024)"
	run hello --bogus
	assert_failure 64
	[ "${#lines[@]}" -eq 1 ]
}

@test "requests from a regular file (stdin redirected): every one answered, then exit 0" {
	# epoll cannot watch a regular file: the loop reads it to its end
	for i in 1 2 3 4 5; do
		printf '{"id":"r%d","method":"GET","path":"/","headers":{}}\n' "$i"
	done >"$BATS_TEST_TMPDIR/req.jsonl"
	run timeout 10 gk-breaker -- hello <"$BATS_TEST_TMPDIR/req.jsonl" 2>"$BATS_TEST_TMPDIR/err"
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "$output" | jq -r 'select(.status == 200) | .id' | sort | tr '\n' ' ')" = "r1 r2 r3 r4 r5 " ]
	run timeout 10 hello </dev/null
	[ "$status" -eq 0 ]
}

@test "answers that cannot be written (stdout on a full disk): an error event and exit 74" {
	run bash -c 'printf "%s\n" "{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\"}" |
		GK_EVENTS_FORMAT=json hello 2>"$BATS_TEST_TMPDIR/err" >/dev/full'
	[ "$status" -eq 74 ]
	[ "$(count_events "$T/err" '.level == "error" and .msg == "standard input or output failed" and .error == "No space left on device"')" -eq 1 ]
}

@test "a reader of stdout that goes away: no busy loop while stdin stays open, exit 0 at its end" {
	# The reader takes the answer and exits (head -n 1), or exits before
	# it is written (head -c 0, EPIPE): either way the stage waits for its
	# stdin quietly.  Its own CPU time over the second it waits is in its
	# last metrics snapshot; a busy loop would spend most of that second
	# (two thirds of a core at least with the three side by side here).
	local readers=("head -n 1" "head -c 0" "head -n 1") i pids=()
	for i in 0 1 2; do
		bash -c '(printf "%s\n" "{\"id\":\"a\",\"method\":\"GET\",\"path\":\"/\"}"; sleep 1) |
			GK_EVENTS_FORMAT=json hello 2>"$BATS_TEST_TMPDIR/err.'$i'" | '"${readers[$i]}"' >/dev/null
			echo "${PIPESTATUS[1]}" >"$BATS_TEST_TMPDIR/status.'$i'"' &
		pids+=($!)
	done
	wait "${pids[@]}"
	for i in 0 1 2; do
		assert_equal "$(cat "$T/status.$i")" 0
		cpu=$(jq -r 'select(.type == "metrics") | .metrics[]
			| select(.name == "process_cpu_seconds_total") | .series[0].value' "$T/err.$i" | tail -1)
		awk -v c="$cpu" 'BEGIN { exit !(c < 0.3) }' || { echo "${readers[$i]}: cpu $cpu s"; false; }
	done
}
