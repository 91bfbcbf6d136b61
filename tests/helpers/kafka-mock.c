/*
 * kafka-mock: a test helper (not a unit test) for gk-export-kafka.bats.
 *
 *   kafka-mock TOPIC...
 *
 * Starts librdkafka's mock cluster (rdkafka_mock.h: one in-process broker
 * that speaks the real Kafka protocol, though it is not Apache Kafka),
 * creates TOPICs (one partition each), prints its bootstrap servers on the
 * first line of stdout, then consumes every TOPIC from the beginning and
 * prints each message as one JSON line:
 *   {"topic":"logs","partition":0,"offset":0,"key":"orders","value":"..."}
 * ("key" is null for a message without one).  Commands on stdin, one a
 * line, act on the broker:
 *   down              the broker goes down (connections refused/closed)
 *   up                it comes back
 *   fail N ERRNAME    the next N Produce requests fail with that error
 *                     (for example MSG_SIZE_TOO_LARGE, NOT_ENOUGH_REPLICAS)
 * Each command is answered with "ok CMD" on stdout.  Ends on TERM or INT.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void
die(const char *what, const char *why)
{
	fprintf(stderr, "kafka-mock: fatal: %s: %s\n", what, why);
	exit(1);
}

static void
put_json_string(const void *p, size_t n)
{
	const unsigned char *s = p;
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static rd_kafka_resp_err_t
err_by_name(const char *name)
{
	const struct rd_kafka_err_desc *d;
	size_t n;
	rd_kafka_get_err_descs(&d, &n);
	for (size_t i = 0; i < n; i++)
		if (d[i].name && !strcmp(d[i].name, name))
			return d[i].code;
	return RD_KAFKA_RESP_ERR_UNKNOWN;
}

static void
command(rd_kafka_mock_cluster_t *mc, char *line)
{
	line[strcspn(line, "\r\n")] = 0;
	int n;
	char name[128];
	if (!strcmp(line, "down")) {
		rd_kafka_mock_broker_set_down(mc, 1);
	} else if (!strcmp(line, "up")) {
		rd_kafka_mock_broker_set_up(mc, 1);
	} else if (sscanf(line, "fail %d %127s", &n, name) == 2 && n > 0 &&
	           n <= 1000) {
		rd_kafka_resp_err_t e = err_by_name(name);
		for (int i = 0; i < n; i++)
			rd_kafka_mock_push_request_errors(mc, 0 /* Produce */,
			                                  1, e);
	} else {
		printf("error unknown command: %s\n", line);
		fflush(stdout);
		return;
	}
	printf("ok %s\n", line);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: kafka-mock TOPIC...\n");
		return 64;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	char err[512];

	/* The handle that owns the mock cluster. */
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
	rd_kafka_t *owner =
	    rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	if (!owner)
		die("rd_kafka_new", err);
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(owner, 1);
	if (!mc)
		die("rd_kafka_mock_cluster_new", "failed");
	const char *boot = rd_kafka_mock_cluster_bootstraps(mc);
	for (int i = 1; i < argc; i++)
		if (rd_kafka_mock_topic_create(mc, argv[i], 1, 1))
			die("rd_kafka_mock_topic_create", argv[i]);

	/* A consumer of every topic from the start, no group. */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", boot, err,
	                      sizeof err) ||
	    rd_kafka_conf_set(conf, "group.id", "kafka-mock", err,
	                      sizeof err) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err,
	                      sizeof err) ||
	    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "50", err,
	                      sizeof err) ||
	    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err))
		die("consumer config", err);
	rd_kafka_t *cons =
	    rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	if (!cons)
		die("rd_kafka_new consumer", err);
	rd_kafka_topic_partition_list_t *parts =
	    rd_kafka_topic_partition_list_new(argc - 1);
	for (int i = 1; i < argc; i++)
		rd_kafka_topic_partition_list_add(parts, argv[i], 0)->offset =
		    RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_resp_err_t e = rd_kafka_assign(cons, parts);
	if (e)
		die("rd_kafka_assign", rd_kafka_err2str(e));
	rd_kafka_topic_partition_list_destroy(parts);

	printf("%s\n", boot);
	fflush(stdout);

	char line[512];
	size_t used = 0;
	bool stdin_open = true;
	while (!stop) {
		if (stdin_open) {
			struct pollfd pfd = {.fd = 0, .events = POLLIN};
			while (poll(&pfd, 1, 0) > 0) {
				ssize_t n = read(0, line + used,
				                 sizeof line - 1 - used);
				if (n <= 0) {
					stdin_open = false;
					break;
				}
				used += (size_t)n;
				line[used] = 0;
				char *nl;
				while ((nl = strchr(line, '\n'))) {
					*nl = 0;
					command(mc, line);
					size_t rest =
					    used - (size_t)(nl + 1 - line);
					memmove(line, nl + 1, rest + 1);
					used = rest;
				}
				if (used == sizeof line - 1)
					used = 0; /* too long: dropped */
			}
		}
		rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 100);
		if (!m)
			continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "kafka-mock: consume: %s\n",
				        rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		printf("{\"topic\":");
		const char *t = rd_kafka_topic_name(m->rkt);
		put_json_string(t, strlen(t));
		printf(",\"partition\":%d,\"offset\":%lld,\"key\":",
		       (int)m->partition, (long long)m->offset);
		if (m->key)
			put_json_string(m->key, m->key_len);
		else
			printf("null");
		rd_kafka_timestamp_type_t tt;
		long long ts = (long long)rd_kafka_message_timestamp(m, &tt);
		printf(",\"timestamp\":%lld,\"value\":", ts);
		put_json_string(m->payload, m->len);
		printf("}\n");
		fflush(stdout);
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(cons);
	rd_kafka_destroy(cons);
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(owner);
	return 0;
}
