/*
 * export.c: the runtime of exporter plugins (see export.h): reading events
 * from stdin, the plugin's own metrics, signals and drain; the bounded
 * queue, backoff, snapshot walking and small helpers.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "export.h"
#include "log_gate.h"
#include "stream.h"

#define DEFAULT_MAX_LINE (4u << 20)
#define MAX_HOLDERS 16

struct gk_export {
	gk_export_def def;
	gk_loop *loop;
	char proc[64];
	gk_buf in;
	size_t max_line;
	bool skipping, eof, paused, draining, done, watching;
	int status;
	gk_wire_msg msg;
	gk_buf wrap;
	gk_metrics_timer metrics;
	gk_timer drain_timer;
	gk_timer file_timer; /* stdin is a regular file: epoll cannot watch it */
	bool file_in;
	int64_t queue_bytes;
	struct {
		size_t (*abandon)(void *);
		void *arg;
	} holder[MAX_HOLDERS];
	size_t nholders;
	gk_series *m_events, *m_raw, *m_sent, *m_dropped, *m_errors,
	    *m_reconnects, *m_queue, *m_toolong, *m_badts, *m_surrogates;
	gk_log_gate badts_gate;
};

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static int
digits(const char *p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

/* The last second nanoseconds since the epoch hold in a uint64_t
 * (2554-07-21T23:34:33.709551615Z), and the nanoseconds within it. */
#define TS_MAX_S 18446744073ull
#define TS_MAX_FRAC 709551615ull

/*
 * RFC 3339 as events write it ("2026-12-04T09:30:00.123456Z"; a space for
 * the T, up to nine fraction digits, Z or an offset) in nanoseconds since
 * the epoch: every exporter reads ts through this one parse.  *range is
 * set when ts is well formed but outside what a uint64_t of nanoseconds
 * since the epoch holds (before 1970, after 2554-07-21T23:34:33.709551615Z).
 */
static uint64_t
ts_parse(gk_json ts, bool *range)
{
	*range = false;
	if (ts.type != GK_JSON_STRING || ts.len < 22)
		return 0;
	const char *p = ts.p + 1, *end = ts.p + ts.len - 1;
	if (p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != ' ') ||
	    p[13] != ':' || p[16] != ':')
		return 0;
	int y = digits(p, 4), mo = digits(p + 5, 2), d = digits(p + 8, 2);
	int h = digits(p + 11, 2), mi = digits(p + 14, 2),
	    s = digits(p + 17, 2);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 ||
	    mi < 0 || mi > 59 || s < 0 || s > 60)
		return 0;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
	                .tm_hour = h, .tm_min = mi, .tm_sec = s};
	int64_t t = (int64_t)timegm(&tm);
	uint64_t frac = 0;
	const char *q = p + 19;
	if (q < end && *q == '.') {
		uint64_t scale = 100000000;
		for (q++; q < end && *q >= '0' && *q <= '9'; q++) {
			frac += (uint64_t)(*q - '0') * scale;
			scale /= 10;
		}
	}
	/* An offset other than Z: +hh:mm or -hh:mm. */
	if (q < end && (*q == '+' || *q == '-') && end - q >= 6) {
		int oh = digits(q + 1, 2), om = digits(q + 4, 2);
		if (oh >= 0 && om >= 0) {
			int64_t off = (int64_t)oh * 3600 + (int64_t)om * 60;
			t += *q == '+' ? -off : off;
		}
	}
	/* Past the range the nanoseconds would wrap, or go negative: no
	 * time rather than a wrong one. */
	if (t < 0 || (uint64_t)t > TS_MAX_S ||
	    ((uint64_t)t == TS_MAX_S && frac > TS_MAX_FRAC)) {
		*range = true;
		return 0;
	}
	return (uint64_t)t * 1000000000u + frac;
}

uint64_t
gk_event_ts_ns(gk_json ts)
{
	bool range;
	return ts_parse(ts, &range);
}

uint64_t
gk_event_ts_ms(const gk_event *ev)
{
	return gk_event_ts_ns(ev->ts) / 1000000;
}

uint64_t
gk_event_ts_us(const gk_event *ev)
{
	return gk_event_ts_ns(ev->ts) / 1000;
}

enum gk_level
gk_event_level(const gk_event *ev)
{
	static const char *const names[] = {"debug", "info", "warn", "error",
	                                    "fatal"};
	if (ev->level.type == GK_JSON_STRING) {
		for (int i = 0; i < 5; i++)
			if (gk_json_eq(ev->level, names[i]))
				return (enum gk_level)i;
		if (gk_json_eq(ev->level, "warning"))
			return GK_WARN;
		if (gk_json_eq(ev->level, "critical"))
			return GK_FATAL;
	}
	return GK_INFO;
}

bool
gk_event_common_key(gk_json key)
{
	static const char *const common[] = {"ts",  "type", "level", "proc",
	                                     "pid", "svc",  "msg"};
	for (size_t i = 0; i < sizeof common / sizeof *common; i++)
		if (gk_json_eq(key, common[i]))
			return true;
	return false;
}

void
gk_event_text(gk_json v, gk_buf *out)
{
	if (v.type == GK_JSON_STRING)
		gk_json_string(v, out);
	else if (v.type != GK_JSON_NONE)
		gk_buf_add(out, v.p, v.len);
}

void
gk_event_read(gk_event *ev, const gk_wire_msg *m, bool raw)
{
	memset(ev, 0, sizeof *ev);
	ev->line = m->line;
	ev->len = m->len;
	ev->msg = m;
	ev->raw = raw;
	ev->ts = gk_wire_get(m, "ts");
	ev->proc = gk_wire_get(m, "proc");
	ev->pid = gk_wire_get(m, "pid");
	ev->svc = gk_wire_get(m, "svc");
	ev->level = gk_wire_get(m, "level");
	ev->text = gk_wire_get(m, "msg");
	gk_json t = gk_wire_get(m, "type");
	if (t.type == GK_JSON_NONE || gk_json_eq(t, "log"))
		ev->type = GK_EV_LOG;
	else if (gk_json_eq(t, "metrics"))
		ev->type = GK_EV_METRICS;
	else if (gk_json_eq(t, "span"))
		ev->type = GK_EV_SPAN;
	else if (gk_json_eq(t, "access"))
		ev->type = GK_EV_ACCESS;
	else
		ev->type = GK_EV_OTHER;
}

static int
hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The \uXXXX at p (p[0] is the backslash, 6 bytes there), or -1. */
static long
uesc(const char *p)
{
	if (p[1] != 'u')
		return -1;
	long u = 0;
	for (int i = 2; i < 6; i++) {
		int v = hexv(p[i]);
		if (v < 0)
			return -1;
		u = u << 4 | v;
	}
	return u;
}

size_t
gk__event_mend_surrogates(const char *line, size_t len, gk_buf *out)
{
	/*
	 * A backslash in valid JSON only ever starts an escape inside a
	 * string, so stepping escape by escape needs no string state.  The
	 * replacement is as long as what it replaces.
	 */
	size_t n = 0, i = 0, from = 0;
	while (i < len) {
		const char *b = memchr(line + i, '\\', len - i);
		if (!b || (size_t)(line + len - b) < 2)
			break;
		i = (size_t)(b - line);
		long u = len - i >= 6 ? uesc(b) : -1;
		if (u < 0xd800 || u > 0xdfff) {
			i += 2;
			continue;
		}
		if (u <= 0xdbff && len - i >= 12) {
			long l = uesc(b + 6);
			if (l >= 0xdc00 && l <= 0xdfff) {
				i += 12; /* a pair: one character */
				continue;
			}
		}
		if (!n)
			gk_buf_reset(out);
		gk_buf_add(out, line + from, i - from);
		gk_buf_adds(out, "\\ufffd");
		i += 6;
		from = i;
		n++;
	}
	if (n)
		gk_buf_add(out, line + from, len - from);
	return n;
}

static void
format_now(char out[64])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, (long)(ts.tv_nsec / 1000));
}

void
gk_event_wrap_raw(gk_buf *out, const char *line, size_t len)
{
	char ts[64];
	format_now(ts);
	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	gk_jw_key(&w, "ts");
	gk_jw_cstr(&w, ts);
	gk_jw_key(&w, "type");
	gk_jw_cstr(&w, "log");
	gk_jw_key(&w, "level");
	gk_jw_cstr(&w, "info");
	gk_jw_key(&w, "msg");
	gk_jw_string(&w, line, len);
	gk_jw_key(&w, "raw");
	gk_jw_bool(&w, true);
	gk_jw_object_end(&w);
}

void
gk_export_feed(gk_export *ex, const char *line, size_t len)
{
	if (len && line[len - 1] == '\r')
		len--;
	if (!len)
		return;
	gk_counter_add(ex->m_events, 1);
	gk_wire_error err;
	gk_event ev;
	if (gk_wire_parse(&ex->msg, line, len, &err) == 0) {
		gk_event_read(&ev, &ex->msg, false);
	} else if (gk__event_mend_surrogates(line, len, &ex->wrap) &&
	           gk_wire_parse(&ex->msg, ex->wrap.data, ex->wrap.len, &err) ==
	               0) {
		/* A lone surrogate (JavaScript's and Python's writers let one
		 * through): the event, with U+FFFD in its place. */
		gk_counter_add(ex->m_surrogates, 1);
		gk_event_read(&ev, &ex->msg, false);
	} else {
		/* Not an event: wrap it, never drop it silently. */
		gk_counter_add(ex->m_raw, 1);
		gk_buf_reset(&ex->wrap);
		gk_event_wrap_raw(&ex->wrap, line, len);
		if (gk_wire_parse(&ex->msg, ex->wrap.data, ex->wrap.len, &err))
			return; /* cannot happen: we wrote it */
		gk_event_read(&ev, &ex->msg, true);
	}
	bool range;
	if (ev.ts.type == GK_JSON_STRING && !ts_parse(ev.ts, &range) && range) {
		/* Read as an event without ts: said, not silently shifted. */
		gk_counter_add(ex->m_badts, 1);
		gk_log_gate_error(&ex->badts_gate,
		                  "event ts out of range: read as without ts",
		                  "nanoseconds since the epoch hold 1970 to "
		                  "2554-07-21T23:34:33.709551615Z");
	}
	if (ex->def.on_event)
		ex->def.on_event(ex, &ev, ex->def.arg);
}

/* ------------------------------------------------------------------ */
/* The runtime                                                         */
/* ------------------------------------------------------------------ */

static void start_drain(gk_export *ex);

static void
too_long(gk_export *ex)
{
	char f[64];
	snprintf(f, sizeof f, "max_bytes=%zu", ex->max_line);
	gk_log(GK_ERROR, "event line too long: dropped", f);
	gk_counter_add(ex->m_toolong, 1);
	gk_counter_add(ex->m_dropped, 1);
}

static void
deliver(gk_export *ex)
{
	size_t start = 0;
	while (start < ex->in.len) {
		char *nl = memchr(ex->in.data + start, '\n', ex->in.len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (ex->in.data + start));
		/* A line may arrive whole in one read, past the bound: the
		 * bound holds for it too, not only for a line still open. */
		if (ex->skipping)
			ex->skipping = false;
		else if (len > ex->max_line)
			too_long(ex);
		else
			gk_export_feed(ex, ex->in.data + start, len);
		start += len + 1;
	}
	gk_buf_consume(&ex->in, start);
	if (ex->in.len > ex->max_line) {
		if (!ex->skipping)
			too_long(ex);
		ex->skipping = true;
		ex->in.len = 0;
	}
	if (!ex->in.len && ex->in.cap > (256u << 10))
		gk_buf_free(&ex->in);
}

static void
on_stdin(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)events;
	gk_export *ex = arg;
	int err = -1;
	for (int rounds = 0; rounds < 16 && !ex->paused; rounds++) {
		bool full;
		if (!gk_read_chunk(fd, &ex->in, 0, &full, &err))
			break;
		deliver(ex);
		if (!full)
			break;
	}
	if (err >= 0) {
		if (ex->in.len && !ex->skipping) /* a last line without \n */
			gk_export_feed(ex, ex->in.data, ex->in.len);
		ex->in.len = 0;
		ex->eof = true;
		gk_loop_unwatch(ex->loop, 0);
		ex->watching = false;
		if (err)
			gk_logf(GK_ERROR, "reading events: %s", strerror(err));
		if (ex->def.keep_running &&
		    ex->def.keep_running(ex, ex->def.arg))
			return;
		start_drain(ex);
	}
}

/* A regular file (or /dev/null) is always readable: read it a turn at a
 * time from a timer instead. */
static void
on_file_tick(gk_loop *loop, void *arg)
{
	gk_export *ex = arg;
	if (!ex->watching || ex->eof)
		return;
	on_stdin(loop, 0, GK_READ, ex);
	if (ex->watching && !ex->eof)
		gk_timer_start(loop, &ex->file_timer, 0, on_file_tick, ex);
}

static void
watch_stdin(gk_export *ex, bool on)
{
	if (on == ex->watching || ex->eof)
		return;
	ex->watching = on;
	if (ex->file_in || (on && gk_loop_watch(ex->loop, 0, GK_READ,
	                              on_stdin, ex) < 0 && errno == EPERM)) {
		ex->file_in = true;
		if (on)
			gk_timer_start(ex->loop, &ex->file_timer, 0,
			    on_file_tick, ex);
		else
			gk_timer_stop(ex->loop, &ex->file_timer);
		return;
	}
	if (!on)
		gk_loop_unwatch(ex->loop, 0);
}

void
gk_export_pause(gk_export *ex, bool paused)
{
	ex->paused = paused;
	watch_stdin(ex, !paused);
}

void
gk_export_set_max_line(gk_export *ex, size_t max)
{
	ex->max_line = max ? max : DEFAULT_MAX_LINE;
}

static void
finish(gk_export *ex)
{
	if (ex->done)
		return;
	ex->done = true;
	gk_loop_stop(ex->loop);
}

static void
on_drain_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_export *ex = arg;
	/* What is still held will not be delivered: count it dropped now,
	 * before the last snapshot. */
	int64_t bytes = ex->queue_bytes;
	size_t left = 0;
	for (size_t i = 0; i < ex->nholders; i++)
		left += ex->holder[i].abandon(ex->holder[i].arg);
	if (left || bytes > 0) {
		char f1[64], f2[64];
		snprintf(f1, sizeof f1, "records=%zu", left);
		snprintf(f2, sizeof f2, "pending_bytes=%lld", (long long)bytes);
		gk_log(GK_WARN, "drain timeout: pending records dropped", f1,
		    f2);
	}
	gk_export_dropped(ex, left);
	gk_export_queue_change(ex, -ex->queue_bytes);
	finish(ex);
}

static void
start_drain(gk_export *ex)
{
	if (ex->draining)
		return;
	ex->draining = true;
	watch_stdin(ex, false);
	ex->eof = true;
	uint64_t ms = 5000;
	const char *e = getenv("GK_EXPORT_DRAIN_TIMEOUT");
	if (e && *e)
		gk_parse_duration_ms(e, &ms);
	gk_timer_start(ex->loop, &ex->drain_timer, ms, on_drain_timeout, ex);
	if (ex->def.on_drain)
		ex->def.on_drain(ex, ex->def.arg);
	else
		finish(ex);
}

void
gk_export_done(gk_export *ex)
{
	finish(ex);
}

bool
gk_export_draining(const gk_export *ex)
{
	return ex->draining;
}

static void
on_term(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	gk_export *ex = arg;
	if (ex->draining)
		finish(ex); /* a second TERM: now */
	else
		start_drain(ex);
}

static void
on_hup(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	gk_export *ex = arg;
	if (ex->def.on_hup)
		ex->def.on_hup(ex, ex->def.arg);
}

static gk_series *
counter(const char *name, const char *help)
{
	return gk_metric_series(gk_counter_new(name, help, NULL));
}

gk_export *
gk_export_new(const gk_export_def *def)
{
	gk_export *ex = gk_xcalloc(1, sizeof *ex);
	ex->def = *def;
	snprintf(ex->proc, sizeof ex->proc, "gk-export-%s", def->name);
	gk_events_init(ex->proc);
	signal(SIGPIPE, SIG_IGN);
	ex->loop = gk_loop_new();
	ex->max_line = DEFAULT_MAX_LINE;
	ex->m_events = counter("gk_export_events_total",
	    "Events read from stdin");
	ex->m_raw = counter("gk_export_raw_total",
	    "Lines that were not JSON, wrapped as raw log events");
	ex->m_sent = counter("gk_export_sent_total",
	    "Records delivered to the backend");
	ex->m_dropped = counter("gk_export_dropped_total",
	    "Records dropped: queue bound, too long, or rejected");
	ex->m_errors = counter("gk_export_errors_total", "Backend errors");
	ex->m_reconnects = counter("gk_export_reconnects_total",
	    "Connections to the backend established after a failure");
	ex->m_toolong = counter("gk_export_too_long_total",
	    "Event lines longer than the bound, dropped");
	ex->m_badts = counter(
	    "gk_export_ts_out_of_range_total",
	    "Events whose ts is before 1970 or past 2554-07-21T23:34:33Z, "
	    "read as without ts");
	ex->m_surrogates = counter(
	    "gk_export_lone_surrogates_total",
	    "Events holding a lone UTF-16 surrogate escape, read with U+FFFD "
	    "in its place");
	ex->m_queue = gk_metric_series(gk_gauge_new("gk_export_queue_bytes",
	    "Bytes waiting for the backend", NULL));
	gk__fd_nonblock_inherited(0);
	gk_loop_signal(ex->loop, SIGTERM, on_term, ex);
	gk_loop_signal(ex->loop, SIGINT, on_term, ex);
	gk_loop_signal(ex->loop, SIGHUP, on_hup, ex);
	gk_loop_signal(ex->loop, SIGUSR1, gk_metrics_on_signal, NULL);
	return ex;
}

gk_loop *
gk_export_loop(gk_export *ex)
{
	return ex->loop;
}

int
gk_export_run(gk_export *ex)
{
	gk_metrics_every(ex->loop, &ex->metrics);
	if (fcntl(0, F_GETFD) == -1) {
		ex->eof = true;
		start_drain(ex);
	} else {
		watch_stdin(ex, !ex->paused);
	}
	if (!ex->done)
		gk_loop_run(ex->loop);
	gk_metrics_snapshot();
	gk_events_flush();
	return ex->status;
}

void
gk_export_sent(gk_export *ex, uint64_t n)
{
	gk_counter_add(ex->m_sent, (double)n);
}

void
gk_export_dropped(gk_export *ex, uint64_t n)
{
	gk_counter_add(ex->m_dropped, (double)n);
}

void
gk_export_error(gk_export *ex, uint64_t n)
{
	gk_counter_add(ex->m_errors, (double)n);
}

void
gk_export_reconnected(gk_export *ex)
{
	gk_counter_add(ex->m_reconnects, 1);
}

void
gk_export_queue_change(gk_export *ex, int64_t delta)
{
	ex->queue_bytes += delta;
	if (ex->queue_bytes < 0)
		ex->queue_bytes = 0;
	gk_gauge_set(ex->m_queue, (double)ex->queue_bytes);
}

void
gk_export_hold(gk_export *ex, size_t (*abandon)(void *), void *arg)
{
	if (ex->nholders == MAX_HOLDERS)
		gk_fatal(GK_EXIT_SOFTWARE, "more than %d record holders",
		    MAX_HOLDERS);
	ex->holder[ex->nholders].abandon = abandon;
	ex->holder[ex->nholders++].arg = arg;
}

void
gk_export_unhold(gk_export *ex, void *arg)
{
	for (size_t i = 0; i < ex->nholders; i++) {
		if (ex->holder[i].arg != arg)
			continue;
		ex->holder[i] = ex->holder[--ex->nholders];
		return;
	}
}

void
gk_export_version(const char *name)
{
	printf("%s %s\n", name, GK_VERSION);
}

const char *
gk_export_operand(int argc, char **argv, int first, const char *dflt,
    const char *expected)
{
	if (first >= argc)
		return dflt;
	if (first + 1 < argc)
		gk_usage_error("unexpected argument: %s (expected %s)",
		    argv[first + 1], expected);
	return argv[first];
}

/* ------------------------------------------------------------------ */
/* Bounded queue                                                       */
/* ------------------------------------------------------------------ */

/*
 * Records laid end to end in one buffer, each a 4-byte length then its
 * bytes; head is the offset of the oldest.  The consumed front is moved
 * away once it is more than half the buffer, so pushes and pops are
 * amortised O(1) and memory stays within about twice the bound.
 */
struct gk_equeue {
	gk_buf b;
	size_t head;
	size_t count, bytes, max_bytes, max_records;
	uint64_t dropped;
};

gk_equeue *
gk_equeue_new(size_t max_bytes, size_t max_records)
{
	gk_equeue *q = gk_xcalloc(1, sizeof *q);
	q->max_bytes = max_bytes ? max_bytes : (4u << 20);
	q->max_records = max_records;
	return q;
}

void
gk_equeue_free(gk_equeue *q)
{
	if (!q)
		return;
	gk_buf_free(&q->b);
	free(q);
}

static uint32_t
rec_len(const gk_equeue *q, size_t at)
{
	uint32_t n;
	memcpy(&n, q->b.data + at, 4);
	return n;
}

void
gk_equeue_pop(gk_equeue *q)
{
	if (!q->count)
		return;
	uint32_t n = rec_len(q, q->head);
	q->head += 4 + n;
	q->count--;
	q->bytes -= n;
	if (!q->count) {
		q->head = 0;
		q->b.len = 0;
		if (q->b.cap > (1u << 20))
			gk_buf_free(&q->b);
	} else if (q->head > q->b.len / 2 && q->head > 4096) {
		memmove(q->b.data, q->b.data + q->head, q->b.len - q->head);
		q->b.len -= q->head;
		q->head = 0;
	}
}

size_t
gk_equeue_push(gk_equeue *q, const void *p, size_t n)
{
	size_t dropped = 0;
	if (n > q->max_bytes || n > UINT32_MAX) {
		q->dropped++;
		return 1;
	}
	while (q->count && (q->bytes + n > q->max_bytes ||
	                    (q->max_records && q->count >= q->max_records))) {
		gk_equeue_pop(q);
		dropped++;
	}
	uint32_t len = (uint32_t)n;
	gk_buf_reserve(&q->b, 4 + n);
	gk_buf_add(&q->b, &len, 4);
	gk_buf_add(&q->b, p, n);
	q->count++;
	q->bytes += n;
	q->dropped += dropped;
	return dropped;
}

bool
gk_equeue_peek(const gk_equeue *q, const char **p, size_t *n)
{
	if (!q->count)
		return false;
	*n = rec_len(q, q->head);
	*p = q->b.data + q->head + 4;
	return true;
}

size_t
gk_equeue_count(const gk_equeue *q)
{
	return q->count;
}

size_t
gk_equeue_bytes(const gk_equeue *q)
{
	return q->bytes;
}

uint64_t
gk_equeue_dropped(const gk_equeue *q)
{
	return q->dropped;
}

/* ------------------------------------------------------------------ */
/* Backoff                                                             */
/* ------------------------------------------------------------------ */

void
gk_backoff_init(gk_backoff *b, uint64_t min_ms, uint64_t max_ms)
{
	b->min_ms = min_ms ? min_ms : 100;
	b->max_ms = max_ms ? max_ms : 30000;
	b->cur_ms = 0;
}

uint64_t
gk_backoff_next(gk_backoff *b)
{
	if (!b->cur_ms)
		b->cur_ms = b->min_ms;
	else if (b->cur_ms < b->max_ms)
		b->cur_ms = b->cur_ms * 2 > b->max_ms ? b->max_ms : b->cur_ms * 2;
	/* +-20% jitter, so that many plugins do not retry in step. */
	uint64_t span = b->cur_ms / 5;
	uint64_t d = b->cur_ms - span;
	if (span)
		d += (uint64_t)random() % (2 * span + 1);
	return d;
}

void
gk_backoff_reset(gk_backoff *b)
{
	b->cur_ms = 0;
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

bool
gk_snap_number(gk_json v, double *out)
{
	if (v.type == GK_JSON_NUMBER)
		return gk_json_double(v, out);
	if (v.type == GK_JSON_STRING) {
		if (gk_json_eq(v, "NaN"))
			*out = NAN;
		else if (gk_json_eq(v, "+Inf") || gk_json_eq(v, "Inf"))
			*out = INFINITY;
		else if (gk_json_eq(v, "-Inf"))
			*out = -INFINITY;
		else
			return false;
		return true;
	}
	return false;
}

void
gk_snap_begin(gk_snap_iter *it, const gk_event *ev)
{
	gk_json m = gk_wire_get(ev->msg, "metrics");
	if (m.type != GK_JSON_ARRAY)
		m = (gk_json){GK_JSON_ARRAY, "[]", 2};
	gk_json_iter_init(&it->it, m);
}

bool
gk_snap_next(gk_snap_iter *it, gk_snap_family *f)
{
	gk_json v;
	while (gk_json_iter_next(&it->it, NULL, &v)) {
		if (v.type != GK_JSON_OBJECT)
			continue;
		f->name = gk_json_member(v, "name");
		f->help = gk_json_member(v, "help");
		f->series = gk_json_member(v, "series");
		gk_json t = gk_json_member(v, "type");
		if (f->name.type != GK_JSON_STRING ||
		    f->series.type != GK_JSON_ARRAY)
			continue;
		if (gk_json_eq(t, "counter"))
			f->type = GK_COUNTER;
		else if (gk_json_eq(t, "gauge"))
			f->type = GK_GAUGE;
		else if (gk_json_eq(t, "histogram"))
			f->type = GK_HISTOGRAM;
		else
			continue;
		return true;
	}
	return false;
}

void
gk_snap_series_begin(gk_json_iter *it, const gk_snap_family *f)
{
	gk_json_iter_init(it, f->series);
}

bool
gk_snap_series_next(gk_json_iter *it, const gk_snap_family *f,
    gk_snap_series *s)
{
	gk_json v;
	while (gk_json_iter_next(it, NULL, &v)) {
		if (v.type != GK_JSON_OBJECT)
			continue;
		memset(s, 0, sizeof *s);
		s->labels = gk_json_member(v, "labels");
		if (s->labels.type != GK_JSON_OBJECT)
			s->labels = (gk_json){GK_JSON_OBJECT, "{}", 2};
		if (f->type == GK_HISTOGRAM) {
			s->buckets = gk_json_member(v, "buckets");
			if (s->buckets.type != GK_JSON_ARRAY ||
			    !gk_snap_number(gk_json_member(v, "sum"), &s->sum) ||
			    !gk_snap_number(gk_json_member(v, "count"),
			        &s->count))
				continue;
		} else if (!gk_snap_number(gk_json_member(v, "value"),
		               &s->value)) {
			continue;
		}
		return true;
	}
	return false;
}

bool
gk_snap_bucket_next(gk_json_iter *it, double *le, double *count)
{
	gk_json v;
	while (gk_json_iter_next(it, NULL, &v)) {
		if (v.type != GK_JSON_ARRAY)
			continue;
		gk_json_iter in;
		gk_json a, b;
		gk_json_iter_init(&in, v);
		if (!gk_json_iter_next(&in, NULL, &a) ||
		    !gk_json_iter_next(&in, NULL, &b))
			continue;
		if (gk_snap_number(a, le) && gk_snap_number(b, count))
			return true;
	}
	return false;
}

struct ordered_bucket {
	gk_snap_bucket b;
	size_t i; /* where it was listed: the first of a repeat is kept */
};

static int
bucket_cmp(const void *a, const void *b)
{
	const struct ordered_bucket *x = a, *y = b;
	if (x->b.le != y->b.le)
		return x->b.le < y->b.le ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

size_t
gk_snap_buckets(const gk_snap_series *s, gk_snap_bucket **v, size_t *cap,
                size_t *dropped)
{
	/* Sorted with the place each was listed (a stable order), then copied
	 * to *v without repeats. */
	struct ordered_bucket *o = NULL;
	size_t n = 0, ocap = 0;
	gk_json_iter it;
	gk_json_iter_init(&it, s->buckets);
	double le, c;
	while (gk_snap_bucket_next(&it, &le, &c)) {
		if (isnan(le)) {
			if (dropped)
				(*dropped)++;
			continue;
		}
		if (n == ocap) {
			ocap = ocap ? ocap * 2 : 32;
			o = gk_xrealloc(o, ocap * sizeof *o);
		}
		o[n] = (struct ordered_bucket){{le, c}, n};
		n++;
	}
	if (n > 1)
		qsort(o, n, sizeof *o, bucket_cmp);
	if (n > *cap) {
		*cap = n;
		*v = gk_xrealloc(*v, n * sizeof **v);
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k && o[i].b.le == (*v)[k - 1].le) {
			if (dropped)
				(*dropped)++;
			continue;
		}
		(*v)[k++] = o[i].b;
	}
	free(o);
	return k;
}

void
gk_snap_walk(const gk_event *ev,
    void (*fn)(const gk_snap_family *f, const gk_snap_series *s, void *arg),
    void *arg)
{
	gk_snap_iter si;
	gk_snap_family f;
	gk_snap_begin(&si, ev);
	while (gk_snap_next(&si, &f)) {
		gk_json_iter it;
		gk_snap_series s;
		gk_snap_series_begin(&it, &f);
		while (gk_snap_series_next(&it, &f, &s))
			fn(&f, &s, arg);
	}
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

void
gk_fmt_float(gk_buf *out, double v)
{
	if (isnan(v)) {
		gk_buf_adds(out, "NaN");
		return;
	}
	if (isinf(v)) {
		gk_buf_adds(out, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v == 0) {
		gk_buf_adds(out, signbit(v) ? "-0" : "0");
		return;
	}
	/* The shortest digits that read back as v; then Go's choice for the
	 * shortest 'g' format: the exponent form when exp < -4 || exp >= 6. */
	char e[40];
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(e, sizeof e, "%.*e", prec - 1, v);
		if (strtod(e, NULL) == v)
			break;
	}
	const char *x = strchr(e, 'e');
	int exp = x ? atoi(x + 1) : 0;
	if (exp < -4 || exp >= 6) {
		gk_buf_adds(out, e); /* C, like Go, writes two exponent digits */
		return;
	}
	char buf[64];
	int decimals = prec - 1 - exp;
	if (decimals < 0)
		decimals = 0;
	snprintf(buf, sizeof buf, "%.*f", decimals, v);
	gk_buf_adds(out, buf);
}

struct smap_slot {
	char *key;
	size_t klen;
	uint64_t hash;
	void *value;
	bool tomb;
};

struct gk_smap {
	struct smap_slot *slot;
	size_t cap, count, used;
};

gk_smap *
gk_smap_new(void)
{
	gk_smap *m = gk_xcalloc(1, sizeof *m);
	m->cap = 16;
	m->slot = gk_xcalloc(m->cap, sizeof *m->slot);
	return m;
}

void
gk_smap_free(gk_smap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++)
		free(m->slot[i].key);
	free(m->slot);
	free(m);
}

static struct smap_slot *
find(const gk_smap *m, const char *key, size_t n, uint64_t h,
    struct smap_slot **free_slot)
{
	size_t mask = m->cap - 1;
	*free_slot = NULL;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct smap_slot *s = &m->slot[i];
		if (!s->key) {
			if (!s->tomb) {
				if (!*free_slot)
					*free_slot = s;
				return NULL;
			}
			if (!*free_slot)
				*free_slot = s;
			continue;
		}
		if (s->hash == h && s->klen == n && !memcmp(s->key, key, n))
			return s;
	}
}

static void
grow(gk_smap *m)
{
	struct smap_slot *old = m->slot;
	size_t oldcap = m->cap;
	m->cap *= 2;
	m->slot = gk_xcalloc(m->cap, sizeof *m->slot);
	m->used = m->count;
	for (size_t i = 0; i < oldcap; i++) {
		if (!old[i].key)
			continue;
		size_t mask = m->cap - 1;
		size_t j = old[i].hash & mask;
		while (m->slot[j].key)
			j = (j + 1) & mask;
		m->slot[j] = old[i];
	}
	free(old);
}

void **
gk_smap_slot(gk_smap *m, const char *key, size_t n, bool create)
{
	uint64_t h = gk__hash_bytes(key, n);
	struct smap_slot *fs;
	struct smap_slot *s = find(m, key, n, h, &fs);
	if (s)
		return &s->value;
	if (!create)
		return NULL;
	if ((m->used + 1) * 4 > m->cap * 3) {
		grow(m);
		s = find(m, key, n, h, &fs);
	}
	if (!fs->tomb)
		m->used++;
	fs->tomb = false;
	fs->key = gk_xmalloc(n + 1);
	memcpy(fs->key, key, n);
	fs->key[n] = 0;
	fs->klen = n;
	fs->hash = h;
	fs->value = NULL;
	m->count++;
	return &fs->value;
}

void *
gk_smap_get(const gk_smap *m, const char *key, size_t n)
{
	struct smap_slot *fs;
	struct smap_slot *s = find(m, key, n, gk__hash_bytes(key, n), &fs);
	return s ? s->value : NULL;
}

bool
gk_smap_del(gk_smap *m, const char *key, size_t n)
{
	struct smap_slot *fs;
	struct smap_slot *s = find(m, key, n, gk__hash_bytes(key, n), &fs);
	if (!s)
		return false;
	free(s->key);
	s->key = NULL;
	s->tomb = true;
	s->value = NULL;
	m->count--;
	return true;
}

size_t
gk_smap_count(const gk_smap *m)
{
	return m->count;
}

bool
gk_smap_next(const gk_smap *m, size_t *pos, const char **key, void **value)
{
	while (*pos < m->cap) {
		struct smap_slot *s = &m->slot[(*pos)++];
		if (s->key) {
			*key = s->key;
			*value = s->value;
			return true;
		}
	}
	return false;
}
