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
 * prometheus does.  Each line is also written again through the event
 * writer (gk_log with its members as key=value fields, and gk_event_begin
 * with them as they are, left open), in JSON and in text, to a memfd: every
 * line written must be at most 4095 bytes; JSON must read back as an event
 * (valid, at most 64 members, no key twice) for gk_log, as JSON for
 * gk_event_begin; text must be UTF-8 without control characters, C1
 * included.  Any disagreement aborts.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* The members of m as gk_log fields, and as an event of its own. */
static void
write_again(const gk_wire_msg *m)
{
	const char *a[72] = {0};
	gk_buf f[72];
	unsigned n = m->nfields < 72 ? m->nfields : 72;
	for (unsigned i = 0; i < n; i++) {
		gk_json k = m->field[i].key, v = m->field[i].value;
		f[i] = (gk_buf){0};
		gk_json_string(k, &f[i]);
		gk_buf_addc(&f[i], '=');
		if (v.type == GK_JSON_STRING)
			gk_json_string(v, &f[i]);
		else
			gk_buf_add(&f[i], v.p, v.len);
		a[i] = gk_buf_cstr(&f[i]);
	}
#define A8(i)                                                                  \
	a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6],      \
	    a[i + 7]
	gk_log_trace(GK_WARN, NULL, "again", A8(0), A8(8), A8(16), A8(24),
	             A8(32), A8(40), A8(48), A8(56), A8(64), (char *)0);
#undef A8
	for (unsigned i = 0; i < n; i++)
		gk_buf_free(&f[i]);
}

static void
write_raw(const gk_wire_msg *m, size_t depth)
{
	gk_jw *w = gk_event_begin("fuzz");
	gk_jw_key(w, "again");
	gk_jw_object(w);
	gk_buf k = {0};
	for (unsigned i = 0; i < m->nfields; i++) {
		/* Raw values are compact JSON, as gk_jw_raw's callers give:
		 * a byte below 0x20 in valid JSON is whitespace. */
		gk_json v = m->field[i].value;
		bool compact = true;
		for (size_t j = 0; j < v.len && compact; j++)
			compact = (unsigned char)v.p[j] >= 0x20;
		if (!compact)
			continue;
		gk_buf_reset(&k);
		gk_json_string(m->field[i].key, &k);
		gk_jw_keyn(w, k.data ? k.data : "", k.len);
		gk_jw_raw(w, m->field[i].value.p, m->field[i].value.len);
	}
	gk_buf_free(&k);
	/* Left open, as deep as the input says: gk_event_end closes. */
	gk_jw_key(w, "open");
	for (size_t d = 0; d < depth % 8; d++) {
		if (d % 2)
			gk_jw_array(w);
		else {
			gk_jw_object(w);
			gk_jw_key(w, "k");
		}
	}
	gk_event_end();
}

static int events_fd = -1;

/* What the writer wrote to events_fd since the last reset, checked. */
static void
check_written(bool text, bool readable)
{
	gk_events_flush();
	off_t size = lseek(events_fd, 0, SEEK_END);
	MUST(size >= 0);
	char *buf = malloc((size_t)size + 1);
	MUST(pread(events_fd, buf, (size_t)size, 0) == size);
	const char *p = buf, *end = buf + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		MUST(nl);
		size_t len = (size_t)(nl - p);
		MUST(len <= 4095);
		if (text) {
			if (!gk_utf8_valid(p, len) || memchr(p, 0x7f, len))
				fprintf(stderr, "fuzz_events: text: [%.*s]\n",
				        (int)len, p);
			MUST(gk_utf8_valid(p, len));
			for (size_t i = 0; i < len; i++) {
				unsigned char c = (unsigned char)p[i];
				if (c < 0x20 || c == 0x7f)
					fprintf(
					    stderr,
					    "fuzz_events: byte %02x at %zu of "
					    "[%.*s]\n",
					    c, i, (int)len, p);
				MUST(c >= 0x20 && c != 0x7f);
				MUST(!(c == 0xc2 && i + 1 < len &&
				       (unsigned char)p[i + 1] < 0xa0));
			}
		} else if (readable) {
			gk_wire_msg m;
			gk_wire_error err;
			if (gk_wire_parse(&m, p, len, &err) != 0)
				fprintf(stderr, "fuzz_events: %s: [%.*s]\n",
				        err.reason, (int)len, p);
			MUST(gk_wire_parse(&m, p, len, &err) == 0);
		} else {
			if (gk_json_validate(p, len, NULL) != 0)
				fprintf(stderr,
				        "fuzz_events: not JSON: [%.*s]\n",
				        (int)len, p);
			MUST(gk_json_validate(p, len, NULL) == 0);
		}
		p = nl + 1;
	}
	free(buf);
	MUST(ftruncate(events_fd, 0) == 0 &&
	     lseek(events_fd, 0, SEEK_SET) == 0);
}

static void
writer(const gk_wire_msg *m, size_t depth)
{
	if (events_fd < 0) {
		events_fd = memfd_create("events", MFD_CLOEXEC);
		MUST(events_fd >= 0);
		char v[16];
		snprintf(v, sizeof v, "%d", events_fd);
		setenv("GK_EVENTS_FD", v, 1);
		unsetenv("GK_SERVICE");
		unsetenv("GK_LOG_LEVEL");
	}
	for (int text = 0; text < 2; text++) {
		setenv("GK_EVENTS_FORMAT", text ? "text" : "json", 1);
		gk_events_init("fuzz");
		write_again(m);
		check_written(text, true);
		write_raw(m, depth);
		check_written(text, false);
	}
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
		writer(&m, len);
		p += len + (nl != NULL);
	}
	gk_buf_free(&wrap);
	gk_snapasm_free(&asm_);
	gk_loki_free(loki);
	return 0;
}
