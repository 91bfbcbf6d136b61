/*
 * gk-export-kafka: events to Apache Kafka with librdkafka, a topic per
 * event type, keyed by a chosen member.  An event counts as sent only when
 * its delivery report says the broker acknowledged it; librdkafka's queue
 * is bounded (queue.buffering.max.messages, .max.kbytes) and what does
 * not fit is dropped and counted.  See gk-export-kafka(1).
 *
 * librdkafka's callbacks (delivery reports, errors, its log lines) are
 * served by rd_kafka_poll() on the plugin's loop: the main queue wakes the
 * loop through a pipe when it becomes non-empty.  This file holds only
 * that glue: libgokit does not link librdkafka.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logship.h"

#define MAX_PROPS 64

static struct {
	gk_export *ex;
	gk_loop *loop;
	rd_kafka_t *rk;
	rd_kafka_topic_t *topic[5]; /* by enum gk_event_type */
	const char *topic_name[5];
	const char *key;
	int wake[2];
	gk_timer poll_timer, drain_timer;
	uint64_t last_full_log, last_err_log;
	int64_t queued_bytes;
	gk_buf keybuf;
	gk_series *m_skipped, *m_full, *m_failed;
} K;

static void
on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	gk_export_queue_change(K.ex, -(int64_t)m->len);
	if (!m->err) {
		gk_export_sent(K.ex, 1);
		return;
	}
	gk_export_dropped(K.ex, 1);
	gk_export_error(K.ex, 1);
	gk_counter_add(K.m_failed, 1);
	uint64_t now = gk_monotonic_ms();
	if (now - K.last_err_log >= 1000 || !K.last_err_log) {
		K.last_err_log = now;
		char t[300], e[300];
		snprintf(t, sizeof t, "topic=%s", rd_kafka_topic_name(m->rkt));
		snprintf(e, sizeof e, "error=%s", rd_kafka_err2str(m->err));
		gk_log(GK_WARN, "message not delivered: dropped", t, e);
	}
}

static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	(void)rk;
	(void)opaque;
	gk_export_error(K.ex, 1);
	uint64_t now = gk_monotonic_ms();
	if (now - K.last_err_log < 1000 && K.last_err_log)
		return;
	K.last_err_log = now;
	char e[400], c[120];
	snprintf(e, sizeof e, "error=%s", reason);
	snprintf(c, sizeof c, "code=%s",
	         rd_kafka_err2name((rd_kafka_resp_err_t)err));
	gk_log(GK_WARN, "kafka error", c, e);
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	/* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
	enum gk_level l = level <= 3   ? GK_ERROR
	                  : level == 4 ? GK_WARN
	                  : level <= 6 ? GK_INFO
	                               : GK_DEBUG;
	char f[80], m[600];
	snprintf(f, sizeof f, "facility=%s", fac);
	snprintf(m, sizeof m, "text=%s", buf);
	gk_log(l, "librdkafka", f, m);
}

static void
serve(void)
{
	rd_kafka_poll(K.rk, 0);
}

static void
on_wake(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)events;
	(void)arg;
	char buf[256];
	while (read(fd, buf, sizeof buf) > 0)
		;
	serve();
}

static void
on_poll_timer(gk_loop *loop, void *arg)
{
	(void)arg;
	serve();
	gk_timer_start(loop, &K.poll_timer, 100, on_poll_timer, NULL);
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	rd_kafka_topic_t *t = K.topic[ev->type];
	if (!t) {
		gk_counter_add(K.m_skipped, 1);
		return;
	}
	const void *key = NULL;
	size_t keylen = 0;
	if (K.key) {
		gk_json v = gk_wire_get(ev->msg, K.key);
		if (v.type != GK_JSON_NONE && v.type != GK_JSON_NULL) {
			gk_buf_reset(&K.keybuf);
			gk_event_text(v, &K.keybuf);
			key = K.keybuf.data;
			keylen = K.keybuf.len;
		}
	}
	uint64_t us = gk_event_ts_us(ev);
	rd_kafka_resp_err_t err = rd_kafka_producev(
	    K.rk, RD_KAFKA_V_RKT(t),
	    RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
	    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	    RD_KAFKA_V_VALUE((void *)ev->line, ev->len),
	    RD_KAFKA_V_KEY(key, keylen),
	    RD_KAFKA_V_TIMESTAMP((int64_t)(us / 1000)), RD_KAFKA_V_END);
	if (!err) {
		gk_export_queue_change(ex, (int64_t)ev->len);
		return;
	}
	gk_export_dropped(ex, 1);
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		gk_counter_add(K.m_full, 1);
	else
		gk_export_error(ex, 1);
	uint64_t now = gk_monotonic_ms();
	if (now - K.last_full_log >= 1000 || !K.last_full_log) {
		K.last_full_log = now;
		char e[200], q[64];
		snprintf(e, sizeof e, "error=%s", rd_kafka_err2str(err));
		snprintf(q, sizeof q, "queued=%d", rd_kafka_outq_len(K.rk));
		gk_log(GK_WARN, "event not queued for kafka: dropped", e, q);
	}
}

static void
check_drained(gk_loop *loop, void *arg)
{
	gk_export *ex = arg;
	serve();
	if (rd_kafka_outq_len(K.rk) == 0) {
		gk_export_done(ex);
		return;
	}
	gk_timer_start(loop, &K.drain_timer, 20, check_drained, ex);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	check_drained(K.loop, ex);
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: gk-export-kafka [OPTIONS] [BROKERS]\n"
	    "Send events to Kafka, a topic per event type; sent once "
	    "acknowledged.\n"
	    "  BROKERS, -b, --brokers LIST  bootstrap servers "
	    "(127.0.0.1:9092)\n"
	    "  -t, --topic T            the topic of every event type not "
	    "given one below\n"
	    "  --topic-log T            topic of log events\n"
	    "  --topic-access T         ... access events\n"
	    "  --topic-span T           ... span events\n"
	    "  --topic-metrics T        ... metrics snapshots\n"
	    "  --topic-other T          ... events of other types\n"
	    "  -k, --key MEMBER         the message key: this member's value "
	    "(none)\n"
	    "  --queue-messages N       queue.buffering.max.messages "
	    "(10000)\n"
	    "  --queue-kbytes N         queue.buffering.max.kbytes (2048)\n"
	    "  -X, --property K=V       any librdkafka property; repeatable\n"
	    "  -h, --help               this help\n"
	    "  -V, --version            version\n");
}

static void
set_prop(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char err[512];
	if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK)
		gk_usage_error("bad property %s=%s: %s", k, v, err);
}

int
main(int argc, char **argv)
{
	const char *brokers = NULL, *all_topic = NULL;
	const char *props[MAX_PROPS];
	size_t nprops = 0;
	/* librdkafka's own defaults (100000 messages, 1 GiB) let a burst
	 * hold tens of MiB: each message costs its payload, its copy in a
	 * produce request and a few hundred bytes of its own.  These keep
	 * the plugin under 16 MiB resident. */
	uint64_t qmsgs = 10000, qkb = 2048;
	static const struct option opts[] = {
	    {"brokers", required_argument, NULL, 'b'},
	    {"topic", required_argument, NULL, 't'},
	    {"topic-log", required_argument, NULL, 0x100 + GK_EV_LOG},
	    {"topic-metrics", required_argument, NULL, 0x100 + GK_EV_METRICS},
	    {"topic-span", required_argument, NULL, 0x100 + GK_EV_SPAN},
	    {"topic-access", required_argument, NULL, 0x100 + GK_EV_ACCESS},
	    {"topic-other", required_argument, NULL, 0x100 + GK_EV_OTHER},
	    {"key", required_argument, NULL, 'k'},
	    {"queue-messages", required_argument, NULL, 'Q'},
	    {"queue-kbytes", required_argument, NULL, 'K'},
	    {"property", required_argument, NULL, 'X'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":b:t:k:X:hV", opts, NULL)) != -1) {
		if (c >= 0x100 && c < 0x105) {
			if (!*optarg)
				gk_usage_error("bad --topic-%s: empty",
				               gk_event_type_name(c - 0x100));
			K.topic_name[c - 0x100] = optarg;
			continue;
		}
		switch (c) {
		case 'b': brokers = optarg; break;
		case 't':
			if (!*optarg)
				gk_usage_error("bad --topic: empty");
			all_topic = optarg;
			break;
		case 'k':
			if (!*optarg)
				gk_usage_error("bad --key: empty");
			K.key = optarg;
			break;
		case 'Q':
			if (gk_parse_uint(optarg, 1, 10000000, &qmsgs) < 0)
				gk_usage_error("bad --queue-messages: %s "
				               "(expected 1 to 10000000)",
				               optarg);
			break;
		case 'K':
			if (gk_parse_uint(optarg, 1, 2147483647, &qkb) < 0)
				gk_usage_error("bad --queue-kbytes: %s "
				               "(expected 1 to 2147483647)",
				               optarg);
			break;
		case 'X':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				gk_usage_error("bad --property: %s (expected "
				               "NAME=VALUE)",
				               optarg);
			if (nprops == MAX_PROPS)
				gk_usage_error("too many --property options "
				               "(at most %d)",
				               MAX_PROPS);
			props[nprops++] = optarg;
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-kafka"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	if (optind < argc) {
		if (brokers)
			gk_usage_error("unexpected argument: %s (--brokers "
			               "given already)",
			               argv[optind]);
		brokers = argv[optind++];
	}
	if (optind < argc)
		gk_usage_error("unexpected argument: %s (expected [BROKERS])",
		               argv[optind]);
	if (!brokers)
		brokers = "127.0.0.1:9092";
	bool any = false;
	for (int i = 0; i < 5; i++) {
		if (!K.topic_name[i])
			K.topic_name[i] = all_topic;
		any |= K.topic_name[i] != NULL;
	}
	if (!any)
		gk_usage_error("no topic (expected --topic or --topic-TYPE)");

	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char num[32];
	set_prop(conf, "bootstrap.servers", brokers);
	snprintf(num, sizeof num, "%llu", (unsigned long long)qmsgs);
	set_prop(conf, "queue.buffering.max.messages", num);
	snprintf(num, sizeof num, "%llu", (unsigned long long)qkb);
	set_prop(conf, "queue.buffering.max.kbytes", num);
	set_prop(conf, "client.id", "gk-export-kafka");
	set_prop(conf, "log.queue", "true");
	for (size_t i = 0; i < nprops; i++) {
		char *kv = gk_xstrdup(props[i]);
		char *eq = strchr(kv, '=');
		*eq = 0;
		set_prop(conf, kv, eq + 1);
		free(kv);
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_log_cb(conf, on_log);

	gk_export_def def = {
	    .name = "kafka", .on_event = on_event, .on_drain = on_drain};
	K.ex = gk_export_new(&def);
	K.loop = gk_export_loop(K.ex);
	K.m_skipped = gk_metric_series(
	    gk_counter_new("gk_export_kafka_skipped_total",
	                   "Events of a type that has no topic", NULL));
	K.m_full = gk_metric_series(gk_counter_new(
	    "gk_export_kafka_queue_full_total",
	    "Events dropped because librdkafka's queue was full", NULL));
	K.m_failed = gk_metric_series(gk_counter_new(
	    "gk_export_kafka_delivery_failed_total",
	    "Messages whose delivery report was an error", NULL));

	char err[512];
	K.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	if (!K.rk)
		gk_fatal(GK_EXIT_SOFTWARE,
		         "unable to create the kafka "
		         "producer: %s",
		         err);
	rd_kafka_set_log_queue(K.rk, NULL); /* logs to the main queue */
	for (int i = 0; i < 5; i++) {
		if (!K.topic_name[i])
			continue;
		/* One handle per name: types may share a topic. */
		for (int j = 0; j < i && !K.topic[i]; j++)
			if (K.topic_name[j] &&
			    !strcmp(K.topic_name[j], K.topic_name[i]))
				K.topic[i] = K.topic[j];
		if (!K.topic[i])
			K.topic[i] =
			    rd_kafka_topic_new(K.rk, K.topic_name[i], NULL);
		if (!K.topic[i])
			gk_fatal(GK_EXIT_SOFTWARE, "unable to use topic %s: %s",
			         K.topic_name[i],
			         rd_kafka_err2str(rd_kafka_last_error()));
	}
	if (pipe2(K.wake, O_NONBLOCK | O_CLOEXEC) < 0)
		gk_fatal(GK_EXIT_OSERR, "pipe: %s", strerror(errno));
	rd_kafka_queue_t *mq = rd_kafka_queue_get_main(K.rk);
	rd_kafka_queue_io_event_enable(mq, K.wake[1], "1", 1);
	rd_kafka_queue_destroy(mq);
	gk_loop_watch(K.loop, K.wake[0], GK_READ, on_wake, NULL);
	gk_timer_start(K.loop, &K.poll_timer, 100, on_poll_timer, NULL);

	char b[400];
	snprintf(b, sizeof b, "brokers=%s", brokers);
	gk_log(GK_INFO, "sending events to kafka", b);
	int rc = gk_export_run(K.ex);

	/* What is still queued (drain timed out) is lost: say how much. */
	int left = rd_kafka_outq_len(K.rk);
	if (left > 0) {
		rd_kafka_purge(K.rk, RD_KAFKA_PURGE_F_QUEUE |
		                         RD_KAFKA_PURGE_F_INFLIGHT |
		                         RD_KAFKA_PURGE_F_NON_BLOCKING);
		/* Purged messages are reported as failed: serve them. */
		for (int i = 0; i < 20 && rd_kafka_outq_len(K.rk) > 0; i++)
			rd_kafka_poll(K.rk, 50);
		gk_metrics_snapshot();
		gk_events_flush();
	}
	for (int i = 0; i < 5; i++) {
		bool dup = false;
		for (int j = 0; j < i; j++)
			dup |= K.topic[j] == K.topic[i];
		if (K.topic[i] && !dup)
			rd_kafka_topic_destroy(K.topic[i]);
	}
	rd_kafka_destroy(K.rk);
	gk_buf_free(&K.keybuf);
	return rc;
}
