#!/usr/bin/env bats
# gk-log as a shell script uses it: one event per call, on stderr or on
# GK_EVENTS_FD, checked with jq.

bats_require_minimum_version 1.5.0
load helpers/common

setup() {
	common_setup
}

@test "gk-log writes one valid JSON event with typed fields" {
	run --separate-stderr gk-log -l warn "disk almost full" free=12 \
		ratio=0.25 ok=true none=null name=sda1 big=99999999999999999999 \
		flag
	assert_success
	assert_output ''
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	run jq -e -c '[.type, .level, .proc, .msg, .free, .ratio, .ok, .none,
		.name, .big, .flag, (.pid | type), (.ts | test("Z$"))]' <<<"$stderr"
	assert_success
	assert_output '["log","warn","gk-log","disk almost full",12,0.25,true,null,"sda1","99999999999999999999",true,"number",true]'
}

@test "a number just past 2^53 (or any number beyond it, in any notation) is written as a string, never rounded" {
	# 9007199254740993 reads as the double 2^53: a reader would see
	# another number.  2^53 itself stays a number.
	local args=(edge=9007199254740992 nedge=-9007199254740992
		big=9007199254740993 nbig=-9007199254740993
		frac=9007199254740993.5 exp=1e300 exp2=9.007199254740993e15
		small=1.5e3)
	local t
	for t in log access; do
		run --separate-stderr gk-log -t "$t" m "${args[@]}"
		assert_success
		run jq -c '[.edge, .nedge, .big, .nbig, .frac, .exp, .exp2, .small]' <<<"$stderr"
		assert_output '[9007199254740992,-9007199254740992,"9007199254740993","-9007199254740993","9007199254740993.5","1e300","9.007199254740993e15",1500]'
	done
}

@test "-p sets proc, -t sets type, GK_SERVICE sets svc" {
	run --separate-stderr env GK_SERVICE=orders gk-log -p backup.sh \
		-t access "nightly run" bytes=1024
	assert_success
	run jq -e -c '[.type, .proc, .svc, .msg, .bytes, .level]' <<<"$stderr"
	assert_success
	assert_output '["access","backup.sh","orders","nightly run",1024,"info"]'
}

@test "the event goes to GK_EVENTS_FD when it names an open fd" {
	GK_EVENTS_FD=3 gk-log "to fd 3" n=1 3>"$T/events" 2>"$T/stderr"
	run jq -e -c '[.msg, .n]' "$T/events"
	assert_success
	assert_output '["to fd 3",1]'
	[ ! -s "$T/stderr" ]
}

@test "a level below GK_LOG_LEVEL writes nothing and exits 0" {
	run --separate-stderr env GK_LOG_LEVEL=warn gk-log -l info "quiet"
	assert_success
	assert_equal "$stderr" ''
}

@test "reserved keys are renamed so the common members stay intact" {
	run --separate-stderr gk-log "hello" level=error pid=1 msg=other
	assert_success
	run jq -e -c '[.level, (.pid | type), .msg, .field_level, .field_pid,
		.field_msg]' <<<"$stderr"
	assert_success
	assert_output '["info","number","hello","error",1,"other"]'
}

@test "gk-log exits 64 on -l bogus, with one line naming the program" {
	run --separate-stderr gk-log -l bogus "message"
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	assert_equal "${stderr%%:*}" gk-log
	[[ $stderr == *bogus* ]]
}

@test "gk-log without a MESSAGE or with an unknown option exits 64" {
	run gk-log
	assert_failure 64
	run gk-log --frobnicate x
	assert_failure 64
	run gk-log -l
	assert_failure 64
}

@test "--help and --version exit 0" {
	run gk-log --help
	assert_success
	assert_output --partial 'MESSAGE'
	run gk-log --version
	assert_success
	assert_output 'gk-log 0.1.0'
}

@test "a GK_EVENTS_FD open only for reading is warned about and stderr used" {
	# Events written to a read-only fd would vanish (EBADF) in silence.
	run --separate-stderr env GK_EVENTS_FD=0 gk-log "not lost" </dev/null
	assert_success
	run jq -c -s 'map([.msg, .var])' <<<"$stderr"
	assert_output '[["bad environment variable","GK_EVENTS_FD"],["not lost",null]]'
}

@test "a bad GK_LOG_LEVEL or GK_EVENTS_FD is warned about once, its value a string" {
	run --separate-stderr env GK_LOG_LEVEL=loud GK_EVENTS_FD=77 gk-log "m"
	assert_success
	run jq -c -s '[.[] | select(.msg == "bad environment variable") | [.var, .value]]' <<<"$stderr"
	assert_output '[["GK_EVENTS_FD","77"],["GK_LOG_LEVEL","loud"]]'
}

@test "trace_id given as a field without --trace-id is renamed, as gk-log(1) says" {
	run --separate-stderr gk-log "m" trace_id=8
	assert_success
	run jq -e -c '[.trace_id, .field_trace_id]' <<<"$stderr"
	assert_output '[null,8]'
	run --separate-stderr gk-log --trace-id 4bf92f3577b34da6a3ce929d0e0e4736 "m" trace_id=8
	run jq -e -c '[.trace_id, .field_trace_id]' <<<"$stderr"
	assert_output '["4bf92f3577b34da6a3ce929d0e0e4736",8]'
}

@test "gk-log exits 1, saying why on stderr, when the event could not be written (full, closed, read-only)" {
	# A script must be able to tell that its event went nowhere.
	run --separate-stderr env GK_EVENTS_FD=3 gk-log "to a full disk" 3>/dev/full
	assert_failure 1
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == "gk-log: fatal: unable to write the event to fd 3: No space left on device" ]]
	# (run would put its own stderr in place of these: outside it.)
	local st=0
	gk-log "to a closed stderr" 2>&- || st=$?
	[ "$st" = 1 ]
	st=0
	gk-log "to a read-only stderr" 2</dev/null || st=$?
	[ "$st" = 1 ]
	st=0
	gk-log "to /dev/full as stderr" 2>/dev/full || st=$?
	[ "$st" = 1 ]
	# Filtered out by the level is not a failure: nothing was to be written.
	GK_LOG_LEVEL=error gk-log "filtered" 2>/dev/full
}

@test "a key given twice is written once, with the last value (as jq reads it)" {
	# Readers differ on duplicate keys (jq keeps the last, others the
	# first): the event never has any.
	local t
	for t in log access; do
		run --separate-stderr gk-log -t "$t" m a=1 b=x a=2 level=warn \
			field_level=z flag flag=false
		assert_success
		[ "$(grep -o '"a":' <<<"$stderr" | wc -l)" = 1 ]
		[ "$(grep -o '"field_level":' <<<"$stderr" | wc -l)" = 1 ]
		[ "$(grep -o '"flag":' <<<"$stderr" | wc -l)" = 1 ]
		run jq -c '[.a, .b, .field_level, .flag]' <<<"$stderr"
		assert_output '[2,"x","z",false]'
	done
}

@test "gk-log's largest event is read by an exporter as an event, and one field more is refused with 64" {
	# Readers take at most 64 members (gk-wire(5)): 55 fields, the
	# common members (svc and trace_id too) and "truncated" fit.
	local args=() i long
	long=$(printf 'v%.0s' {1..100})
	for i in $(seq 1 55); do args+=("k$i=$long"); done
	GK_SERVICE=orders GK_EVENTS_FD=3 gk-log --trace-id 4bf92f3577b34da6a3ce929d0e0e4736 \
		m "${args[@]}" 3>"$T/events"
	# A one-shot reader: to EOF of the file, then exits.
	GK_EVENTS_FD=3 timeout 10 "$GK_BUILD/exporters/gk-export-file" "$T/out" \
		<"$T/events" 3>/dev/null
	run jq -c '[.raw, .truncated, .svc, (.k1 | length > 16)]' "$T/out"
	assert_output '[null,true,"orders",true]'
	run --separate-stderr gk-log m "${args[@]}" k56=1
	assert_failure 64
	[[ $stderr == "gk-log: usage: too many fields: 56 (at most 55)" ]]
}

@test "a --trace-id that is not 32 lowercase hexadecimal digits is refused with 64, nothing written" {
	local bad
	for bad in xyz 4BF92F3577B34DA6A3CE929D0E0E4736 00000000000000000000000000000000 \
		4bf92f3577b34da6a3ce929d0e0e473 4bf92f3577b34da6a3ce929d0e0e47361; do
		run --separate-stderr env GK_EVENTS_FD=3 gk-log --trace-id "$bad" m 3>"$T/events"
		assert_failure 64
		[[ $stderr == "gk-log: usage: bad --trace-id: $bad (expected 32 lowercase hexadecimal digits, not all 0)" ]]
		[ ! -s "$T/events" ]
	done
}

@test "a -p longer than the 127 bytes proc holds is refused with 64, never cut" {
	local long
	long=$(printf 'p%.0s' {1..128})
	run --separate-stderr gk-log -p "$long" m
	assert_failure 64
	[[ $stderr == "gk-log: usage: bad -p: 128 bytes (at most 127)" ]]
	run --separate-stderr gk-log -p "${long:1}" m
	assert_success
	run jq -r '.proc | length' <<<"$stderr"
	assert_output 127
}
