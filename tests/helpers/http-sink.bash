# tests/helpers/http-sink.bash: a recording HTTP backend for the exporter
# suites (tests/helpers/http-sink.py: see its top for what it records).
#
#   load helpers/common
#   load helpers/http-sink
#
#   start_sink NAME [SINK ARGS...]   start it in its own process group
#                                    (start_bg), recording into $T/NAME;
#                                    sets SINK_DIR and SINK_PORT
#   sink_reqs DIR [JQ SELECT]        the .req records, one compact JSON a line
#   sink_count DIR [JQ SELECT]       how many requests match
#   wait_sink DIR N [JQ SELECT] [S]  until at least N requests match
#   sink_bodies DIR [JQ SELECT]      the decoded bodies of the matching
#                                    requests, in arrival order, one a line
#   run_plugin EVENTS CMD ARGS...    pipe the file EVENTS into CMD (a plugin)
#                                    and wait for it to end (at most 60 s);
#                                    its stderr in $T/plugin.err, status in
#                                    $PLUGIN_STATUS
#   plugin_metric FILE NAME          the value of counter NAME in the last
#                                    metrics snapshot of the gk-export-*
#                                    process in FILE

start_sink() {
	local name=$1
	shift
	SINK_DIR="$T/$name"
	start_bg "$name" python3 "$BATS_TEST_DIRNAME/helpers/http-sink.py" \
		"$SINK_DIR" "$@"
	wait_file "$SINK_DIR/port" 10
	SINK_PORT=$(cat "$SINK_DIR/port")
}

sink_reqs() {
	local dir=$1 sel=${2:-true}
	local f
	for f in "$dir"/[0-9]*.req; do
		[ -e "$f" ] || continue
		jq -c "select($sel)" "$f"
	done
}

sink_count() {
	sink_reqs "$@" | wc -l
}

_sink_at_least() {
	[ "$(sink_count "$1" "$3")" -ge "$2" ]
}

wait_sink() {
	wait_for -t "${4:-20}" _sink_at_least "$1" "$2" "${3:-true}"
}

sink_bodies() {
	local dir=$1 sel=${2:-true}
	local n
	for n in $(sink_reqs "$dir" "$sel" | jq -r '.n'); do
		jq -c . "$dir/$(printf %04d "$n").json"
	done
}

run_plugin() {
	local events=$1
	shift
	PLUGIN_STATUS=0
	cat "$events" | timeout -k 5 60 "$@" 2>"$T/plugin.err" ||
		PLUGIN_STATUS=$?
}

plugin_metric() {
	jq -R -c 'fromjson? | objects' "$1" |
		jq -s -r --arg n "$2" '[.[] | select(.type == "metrics" and
			(.proc | startswith("gk-export-")))] | last | .metrics[] |
			select(.name == $n) | .series[0].value'
}
