#!/usr/bin/env bats
# gk-export-kafka.  Debian has no Kafka broker, so these tests run against
# librdkafka's own mock cluster (rdkafka_mock.h) in the helper
# build/tests/kafka-mock (tests/helpers/kafka-mock.c): an in-process broker
# that speaks the real Kafka protocol on a loopback port, but is not
# Apache Kafka.  The helper consumes the topics with a real librdkafka
# consumer and prints what arrived; commands on its stdin take the broker
# down and up, or make Produce requests fail.

bats_require_minimum_version 1.5.0
load helpers/common
load helpers/log-exporters

setup() {
	common_setup
}

teardown() {
	feed_end
	kafka_mock_end
	stop_all
}

seq_events() {
	local i
	for ((i = $1; i <= $2; i++)); do
		ev info "event $i" "\"n\":$i"
		echo
	done
}

# ns_in TOPIC: the n members of the messages of TOPIC, in offset order.
ns_in() {
	kafka_msgs "$1" | jq -r '.value | fromjson | .n' | tr '\n' ' ' |
		sed 's/ $//'
}

@test "each event type goes to its topic, keyed by the chosen member, stamped with the event's ts" {
	kafka_mock_start logs access
	plugin_start plug gk-export-kafka --brokers "$KAFKA_BOOT" \
		--topic-log logs --topic-access access --key svc
	feed "$(ev warn 'slow' '"n":1')" \
		'{"ts":"2026-12-04T09:30:01.5Z","type":"access","proc":"gk-listener","pid":9,"svc":"web","method":"GET","path":"/","status":200}' \
		'{"ts":"2026-12-04T09:30:02Z","type":"span","proc":"gk-tracer","pid":9,"name":"x"}' \
		"$(ev error 'nokey' | jq -c 'del(.svc)')"
	feed_end
	wait_exit plug 30
	[ "$BG_STATUS" = 0 ]
	wait_for -t 20 kafka_has 3
	run kafka_msgs logs
	assert_line --index 0 "{\"topic\":\"logs\",\"partition\":0,\"offset\":0,\"key\":\"orders\",\"timestamp\":$(date -u -d 2026-12-04T09:30:00Z +%s)123,\"value\":$(ev warn 'slow' '"n":1' | jq -R .)}"
	run kafka_msgs logs
	assert_line --index 1 --partial '"offset":1,"key":null,'
	run kafka_msgs access
	assert_output --partial "\"key\":\"web\",\"timestamp\":$(date -u -d 2026-12-04T09:30:01Z +%s)500,"
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 3 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_kafka_skipped_total)" = 1 ]
}

@test "gk-log's events go through gk-exporter kafka; --topic takes every type" {
	kafka_mock_start all-events
	{
		gk-log -l info "started" port=8080
		gk-log -t access "GET /health" status=200
	} 2>&1 >/dev/null | gk-exporter kafka --topic all-events "$KAFKA_BOOT"
	wait_for -t 20 kafka_has 2 all-events
	run kafka_msgs all-events
	assert_line --index 0 --partial '\"msg\":\"started\"'
	assert_line --index 1 --partial '\"type\":\"access\"'
}

@test "gk-listener's access events reach the access topic, keyed by path" {
	kafka_mock_start access logs
	port=$(free_port)
	start_bg stack sh -c 'gk-listener -l "127.0.0.1:$1" -- hello 2>&1 >/dev/null |
		gk-exporter kafka --topic-access access --topic-log logs --key path "$2"' \
		sh "$port" "$KAFKA_BOOT"
	wait_port 127.0.0.1 "$port" 20
	for p in /a /b /a; do
		curl -s -o /dev/null "http://127.0.0.1:$port$p"
	done
	wait_for -t 20 kafka_has 3 access
	run kafka_msgs access
	assert_line --index 0 --regexp '"key":"/a".*\\"method\\":\\"GET\\"'
	assert_line --index 1 --partial '"key":"/b"'
	assert_line --index 2 --partial '"key":"/a"'
	run bash -c "tail -n +2 '$KAFKA_OUT' | grep '^{' | jq -r 'select(.topic == \"access\") | .value | fromjson | [.path, .status] | @tsv'"
	assert_output "$(printf '/a\t200\n/b\t200\n/a\t200')"
}

@test "an event counts as sent only once the broker acknowledged it: none while it is down, all once it is up" {
	kafka_mock_start logs
	kafka_mock_cmd down
	GK_METRICS_INTERVAL=200ms plugin_start plug gk-export-kafka \
		--topic logs -X reconnect.backoff.max.ms=300 "$KAFKA_BOOT"
	while read -r l; do feed "$l"; done < <(seq_events 1 5)
	# A snapshot taken after all five were read: none acknowledged yet.
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.type == "metrics" and any(.metrics[]; .name == "gk_export_events_total" and .series[0].value == 5)' 20
	run events "$BATS_TEST_TMPDIR/plug.err" \
		'select(.type == "metrics" and any(.metrics[]; .name == "gk_export_events_total" and .series[0].value == 5)) | [.metrics[] | select(.name == "gk_export_sent_total" or .name == "gk_export_queue_bytes") | .series[0].value] | @tsv'
	[ "$(head -n 1 <<<"$output" | cut -f1)" = 0 ]
	[ "$(head -n 1 <<<"$output" | cut -f2)" -gt 0 ]
	kafka_mock_cmd up
	wait_for -t 30 kafka_has 5 logs
	feed_end
	wait_exit plug 30
	[ "$(ns_in logs)" = "1 2 3 4 5" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 5 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 0 ]
}

@test "past --queue-messages events are dropped and counted, the queued ones delivered" {
	kafka_mock_start logs
	kafka_mock_cmd down
	plugin_start plug gk-export-kafka --topic logs --queue-messages 3 \
		-X reconnect.backoff.max.ms=300 "$KAFKA_BOOT"
	while read -r l; do feed "$l"; done < <(seq_events 1 10)
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "event not queued for kafka: dropped"' 20
	kafka_mock_cmd up
	feed_end
	wait_exit plug 30
	wait_for -t 20 kafka_has 3 logs
	[ "$(ns_in logs)" = "1 2 3" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 3 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 7 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_kafka_queue_full_total)" = 7 ]
}

@test "a retriable Produce error is retried and the event delivered once; a permanent one is dropped and counted" {
	kafka_mock_start logs
	plugin_start plug gk-export-kafka --topic logs "$KAFKA_BOOT"
	kafka_mock_cmd 'fail 2 NOT_ENOUGH_REPLICAS'
	feed "$(ev info 'retried' '"n":1')"
	wait_for -t 20 kafka_has 1 logs
	kafka_mock_cmd 'fail 1 MSG_SIZE_TOO_LARGE'
	feed "$(ev info 'rejected' '"n":2')"
	wait_event "$BATS_TEST_TMPDIR/plug.err" \
		'.msg == "message not delivered: dropped"' 20
	feed "$(ev info 'after' '"n":3')"
	feed_end
	wait_exit plug 30
	wait_for -t 20 kafka_has 2 logs
	[ "$(ns_in logs)" = "1 3" ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_sent_total)" = 2 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_kafka_delivery_failed_total)" = 1 ]
	[ "$(metric "$BATS_TEST_TMPDIR/plug.err" gk_export_dropped_total)" = 1 ]
}

@test "usage errors exit 64 with one line naming the program" {
	run --separate-stderr gk-export-kafka 127.0.0.1:9092
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ $stderr == *"gk-export-kafka"*"no topic"* ]]
	run --separate-stderr gk-export-kafka --topic t -X no.such.property=1
	assert_failure 64
	[[ $stderr == *"no.such.property"* ]]
	run --separate-stderr gk-export-kafka --topic t --queue-messages 0
	assert_failure 64
	run gk-export-kafka --help
	assert_success
	assert_output --partial '--topic-log'
}
