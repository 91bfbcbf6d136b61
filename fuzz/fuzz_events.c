/*
 * fuzz_events.c: libFuzzer target for the exporters' encoders.
 *
 * An exporter reads whatever its input holds: the events of gokit's
 * programs, and also whatever a handler wrote to stderr.  The input is cut
 * into lines; each is read as gk_export_feed reads it (a line that is not
 * JSON is wrapped as a raw log event) and given to every encoder.  What an
 * encoder produces must hold to its format: OTLP and Zipkin JSON that
 * jansson reads, syslog messages within their size bound, one Loki entry
 * that is JSON, Influx points and a Prometheus exposition made of whole
 * lines.  Metrics events are assembled into snapshots as gk-export-
 * prometheus does.  Any disagreement aborts.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exposition.h"
#include "export.h"
#include "influx_line.h"
#include "logship.h"
#include "otlp.h"

#define MUST(c)                                                              \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_events: %s:%d: %s\n", __FILE__, \
			    __LINE__, #c);                                     \
			abort();                                             \
		}                                                            \
	} while (0)

static void
must_be_json(const gk_buf *b)
{
	json_error_t e;
	json_t *j = json_loadb(b->data ? b->data : "", b->len, JSON_ALLOW_NUL, &e);
	if (!j)
		fprintf(stderr, "fuzz_events: %s: [%.*s]\n", e.text,
		    (int)b->len, b->data);
	MUST(j);
	json_decref(j);
}

/* Whole lines: ends with a newline when not empty.  (A NUL a string held
 * as \u0000 is a byte like any other to InfluxDB and Prometheus.) */
static void
must_be_lines(const gk_buf *b)
{
	if (!b->len)
		return;
	MUST(b->data[b->len - 1] == '\n');
}

/* The exposition's lines are comments or samples: NAME[{...}] VALUE. */
static void
must_be_exposition(const gk_buf *b)
{
	must_be_lines(b);
	if (!b->len)
		return;
	const char *p = b->data, *end = p + b->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		MUST(nl);
		if (*p != '#') {
			char c = *p;
			MUST((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    c == '_' || c == ':');
			MUST(memchr(p, ' ', (size_t)(nl - p)));
		}
		p = nl + 1;
	}
}

static void
encode(const gk_event *ev, gk_snapasm *asm_, gk_loki *loki)
{
	gk_buf out = {0};
	const char *why = NULL;

	if (ev->type == GK_EV_SPAN) {
		if (gk_otlp_span(ev, &out, &why) == 0)
			must_be_json(&out);
		else
			MUST(why);
		gk_buf_reset(&out);
		if (gk_zipkin_span(ev, &out, &why) == 0)
			must_be_json(&out);
		else
			MUST(why);
	} else if (ev->type == GK_EV_METRICS) {
		uint64_t start_ns = 0;
		(void)gk_otlp_snapshot_start(ev, &start_ns);
		int r = gk_otlp_metrics(ev, start_ns, &out, &why);
		if (r == 0)
			must_be_json(&out);
		gk_buf snap = {0};
		uint64_t ts_ms;
		if (gk_snapasm_add(asm_, ev, &snap, &ts_ms) ==
		    GK_SNAPASM_COMPLETE) {
			gk_expo_origin o;
			gk_expo_origin_set(&o, ev, "fuzzhost");
			gk_expo_src src = {.snap = snap.data, .len = snap.len,
			    .svc = o.has_svc ? o.svc : NULL, .proc = o.proc,
			    .instance = o.instance};
			gk_buf expo = {0};
			(void)gk_expo_render(&expo, &src, 1, NULL);
			must_be_exposition(&expo);
			gk_expo_opts job = {.rename_job = true};
			gk_buf_reset(&expo);
			(void)gk_expo_render(&expo, &src, 1, &job);
			must_be_exposition(&expo);
			gk_buf_free(&expo);
		}
		gk_buf_free(&snap);
	} else {
		if (gk_otlp_log(ev, &out, &why) == 0)
			must_be_json(&out);
	}

	gk_buf_reset(&out);
	gk_influx_opts io = {.host = "h", .pid_tag = true, .logs = "logs"};
	gk_influx_stats st = {0};
	size_t points = gk_influx_event(ev, &io, &out, &st);
	must_be_lines(&out);
	MUST(!points == !out.len);

	/* gk-export-syslog takes 480 (what RFC 5424 receivers must take) up */
	static const size_t bounds[] = {0, 480, 1000};
	for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
		gk_syslog_opts so = {.facility = 16, .host = "h",
		    .sd_id = "gokit@32473", .max_bytes = bounds[i]};
		size_t max = bounds[i] ? bounds[i] : 8192;
		gk_buf_reset(&out);
		(void)gk_syslog_5424(ev, &so, &out);
		MUST(out.len <= max);
		gk_buf_reset(&out);
		(void)gk_syslog_3164(ev, &so, &out);
		MUST(out.len <= max);
	}

	gk_buf_reset(&out);
	gk_buf_addc(&out, '[');
	gk_loki_entry(loki, ev, &out);
	gk_buf_addc(&out, ']');
	must_be_json(&out);
	gk_buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const labels[] = {"type", "level", "proc"};
	static const char *const fixed[] = {"job=fuzz"};
	gk_loki *loki = gk_loki_new(labels, 3, fixed, 1, 4);
	gk_snapasm asm_;
	gk_snapasm_init(&asm_);
	gk_buf wrap = {0};

	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		gk_wire_msg m;
		gk_wire_error err;
		gk_event ev;
		if (gk_wire_parse(&m, p, len, &err) == 0) {
			gk_event_read(&ev, &m, false);
		} else {
			gk_buf_reset(&wrap);
			gk_event_wrap_raw(&wrap, p, len);
			MUST(gk_wire_parse(&m, wrap.data, wrap.len, &err) == 0);
			gk_event_read(&ev, &m, true);
		}
		encode(&ev, &asm_, loki);
		p += len + (nl != NULL);
	}
	gk_buf_free(&wrap);
	gk_snapasm_free(&asm_);
	gk_loki_free(loki);
	return 0;
}
