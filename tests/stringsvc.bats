#!/usr/bin/env bats
# Go kit's stringsvc twice: in C with gk_serve (contrib/examples/stringsvc.c)
# and as a shell CGI script under gk-exec (contrib/examples/stringsvc.cgi),
# each behind a real gk-listener on loopback.  Both must answer the same.

load helpers/common

setup() {
	common_setup
	EXAMPLES="$BATS_TEST_DIRNAME/../contrib/examples"
	C_PORT=$(free_port)
	start_bg c gk-listener -l "127.0.0.1:$C_PORT" -- stringsvc
	SH_PORT=$(free_port)
	start_bg sh gk-listener -l "127.0.0.1:$SH_PORT" -- \
		gk-exec "$EXAMPLES/stringsvc.cgi"
	wait_port 127.0.0.1 "$C_PORT"
	wait_port 127.0.0.1 "$SH_PORT"
}

teardown() {
	stop_all
}

# ask PORT METHOD PATH [BODY]: "STATUS CONTENT-TYPE BODY" on one line.
ask() {
	local port=$1 method=$2 path=$3
	local args=(-s -m 10 -X "$method" -o "$BATS_TEST_TMPDIR/body"
		-w '%{http_code} %{content_type}')
	if [ $# -ge 4 ]; then
		args+=(--data-binary "$4")
	fi
	local head
	head=$(curl "${args[@]}" "http://127.0.0.1:$port$path") || return 1
	printf '%s %s\n' "$head" "$(cat "$BATS_TEST_TMPDIR/body")"
}

# same EXPECTED METHOD PATH [BODY]: both services answer EXPECTED.
same() {
	local want=$1
	shift
	run ask "$C_PORT" "$@"
	assert_success
	assert_output "$want"
	run ask "$SH_PORT" "$@"
	assert_success
	assert_output "$want"
}

@test "POST /uppercase {\"s\":\"hello\"} is 200 {\"v\":\"HELLO\"} from both" {
	same '200 application/json {"v":"HELLO"}' POST /uppercase '{"s":"hello"}'
}

@test "POST /count {\"s\":\"hello\"} is 200 {\"v\":5} from both" {
	same '200 application/json {"v":5}' POST /count '{"s":"hello"}'
}

@test "count is in bytes and uppercase leaves non-ASCII alone, in both" {
	same '200 application/json {"v":6}' POST /count '{"s":"héllo"}'
	same '200 application/json {"v":"HéLLO, WORLD 42"}' POST /uppercase \
		'{"s":"héllo, world 42"}'
}

@test "an empty string to /uppercase is 400 {\"err\":\"empty string\"} (ErrEmpty) in both" {
	same '400 application/json {"err":"empty string"}' POST /uppercase '{"s":""}'
	same '400 application/json {"err":"empty string"}' POST /uppercase '{}'
}

@test "an empty string to /count is 200 {\"v\":0} in both" {
	same '200 application/json {"v":0}' POST /count '{"s":""}'
}

@test "a malformed JSON body is 400 with an err in both" {
	same '400 application/json {"err":"malformed JSON body"}' POST /uppercase '{"s":'
	same '400 application/json {"err":"malformed JSON body"}' POST /count 'hello'
	same '400 application/json {"err":"malformed JSON body"}' POST /count '["s"]'
	same '400 application/json {"err":"malformed JSON body"}' POST /count
}

@test "s that is not a string is 400 in both" {
	same '400 application/json {"err":"s must be a string"}' POST /uppercase '{"s":42}'
}

@test "another path is 404 {\"err\":\"not found\"} in both" {
	same '404 application/json {"err":"not found"}' POST /lowercase '{"s":"x"}'
	same '404 application/json {"err":"not found"}' GET /
}

@test "the wrong method is 405 with Allow: POST in both" {
	same '405 application/json {"err":"method not allowed"}' GET /uppercase
	same '405 application/json {"err":"method not allowed"}' PUT /count '{"s":"x"}'
	for port in "$C_PORT" "$SH_PORT"; do
		run curl -s -i -m 10 "http://127.0.0.1:$port/count"
		assert_line --regexp '^allow: POST'
	done
}

@test "a JSON object with many members, or s twice, is read as Go and jq read it (the last s) in both" {
	local body='{' i
	for ((i = 0; i < 70; i++)); do body+="\"k$i\":$i,"; done
	body+='"s":"hello"}'
	same '200 application/json {"v":"HELLO"}' POST /uppercase "$body"
	same '200 application/json {"v":"SECOND"}' POST /uppercase '{"s":"first","s":"second"}'
}
