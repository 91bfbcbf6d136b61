/*
 * gk-export-statsd: send the metrics snapshots read on stdin to a statsd
 * server over UDP: counters as the increase since the last snapshot of
 * their process, gauges as they are, histograms as timers (|ms) or, with
 * --dogstatsd, distributions (|d) with the labels as DogStatsD tags.
 * See gk-export-statsd(1).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "export_fold.h"

/* A process, by proc and pid: the seq of its first snapshot we saw, and
 * the seq and part of its last. */
struct proc {
	int64_t first_seq, last_seq, last_part;
	uint64_t seen_ms;
};

/*
 * A statsd bucket (its type and name as sent, tags included) and the
 * series that owns it: name, labels, svc and proc as the event wrote them
 * (the pid is left out: the processes of one program share a bucket).
 * Folding maps other series onto the same bucket ("a.b" and "a_b"), and
 * statsd would silently add their counts: the first series keeps it, the
 * others are refused and counted.
 */
struct bucket {
	char *owner;
	size_t len;
	uint64_t seen_ms;
};

static struct {
	gk_export *ex;
	gk_loop *loop;
	gk_econn *conn;
	const char *prefix;
	bool dogstatsd;
	size_t max_packet;
	uint64_t timer_lines;
	uint64_t expire_ms;
	gk_deltas *deltas;
	gk_smap *procs, *buckets;
	size_t max_procs, max_buckets;
	gk_buf pkt, line, path, tags, key, t, owner;
	gk_timer sweep;
	gk_series *m_lines, *m_not_finite, *m_negative, *m_max_series,
	    *m_too_long, *m_collision;
	uint64_t untold, told_ms;
} S;

/* ------------------------------------------------------------------ */
/* Packets                                                             */
/* ------------------------------------------------------------------ */

static void
flush_packet(void)
{
	if (!S.pkt.len)
		return;
	gk_econn_send(S.conn, S.pkt.data, S.pkt.len);
	S.pkt.len = 0;
}

/* Add one unit (a line, or lines that must travel together) to the
 * packet; a packet never exceeds max_packet and never splits a unit. */
static void
add_unit(const char *p, size_t n)
{
	if (n > S.max_packet) {
		gk_counter_add(S.m_too_long, 1);
		gk_export_dropped(S.ex, 1);
		return;
	}
	if (S.pkt.len && S.pkt.len + 1 + n > S.max_packet)
		flush_packet();
	if (S.pkt.len)
		gk_buf_addc(&S.pkt, '\n');
	gk_buf_add(&S.pkt, p, n);
	gk_counter_add(S.m_lines, 1);
}

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

/* A DogStatsD tag part: no ',', '|', '#', no control character. */
static void
add_tag_text(gk_buf *out, gk_json v, bool key)
{
	gk_buf *t = &S.t;
	gk_buf_reset(t);
	gk_event_text(v, t);
	if (!t->len)
		gk_buf_addc(out, '_');
	for (size_t i = 0; i < t->len; i++) {
		char c = t->data[i];
		bool bad = c == ',' || c == '|' || c == '#' ||
		           (unsigned char)c < 0x20 || (key && c == ':');
		gk_buf_addc(out, bad ? '_' : c);
	}
}

static void
add_tag(gk_buf *out, gk_json k, gk_json v)
{
	if (out->len)
		gk_buf_addc(out, ',');
	add_tag_text(out, k, true);
	gk_buf_addc(out, ':');
	add_tag_text(out, v, false);
}

static gk_json
cjson(const char *s)
{
	/* A bare JSON text that gk_event_text copies as it is. */
	return (gk_json){GK_JSON_NUMBER, s, strlen(s)};
}

/* S.path: the metric name; S.tags: its DogStatsD tags (or none). */
static void
make_name(const gk_event *ev, gk_json name, gk_json labels)
{
	gk_buf_reset(&S.path);
	gk_buf_reset(&S.tags);
	gk_fold_name(&S.path, S.prefix, name);
	if (S.dogstatsd) {
		gk_json_iter it;
		gk_json k, v;
		gk_json_iter_init(&it, labels);
		while (gk_json_iter_next(&it, &k, &v))
			add_tag(&S.tags, k, v);
		if (ev->svc.type != GK_JSON_NONE)
			add_tag(&S.tags, cjson("svc"), ev->svc);
		add_tag(&S.tags, cjson("proc"),
		    ev->proc.type != GK_JSON_NONE ? ev->proc : cjson("unknown"));
		return;
	}
	gk_fold_labels(&S.path, labels);
	gk_fold_origin(&S.path, ev);
}

static void
add_raw(gk_buf *b, gk_json v)
{
	if (v.len)
		gk_buf_add(b, v.p, v.len);
}

/* Tell the refused series at most once a second, with the count since. */
static void
tell_collision(void)
{
	S.untold++;
	uint64_t now = gk_loop_now(S.loop);
	if (S.told_ms && now - S.told_ms < 1000)
		return;
	S.told_ms = now;
	char b[300], n[40];
	snprintf(b, sizeof b, "bucket=%.*s",
	         (int)(S.path.len > 250 ? 250 : S.path.len), S.path.data);
	snprintf(n, sizeof n, "count=%llu", (unsigned long long)S.untold);
	gk_log(
	    GK_WARN,
	    "series not sent: another series folds to the same statsd bucket",
	    b, n);
	S.untold = 0;
}

/* Name the series (make_name) and claim its bucket of that type for it:
 * false when the bucket belongs to another series (or the table of
 * buckets is full), counted. */
static bool
claim_name(const gk_event *ev, gk_json name, gk_json labels, const char *type)
{
	make_name(ev, name, labels);
	gk_buf *k = &S.key;
	gk_buf_reset(k);
	gk_buf_adds(k, type);
	gk_buf_addc(k, '|');
	gk_buf_add(k, S.path.data, S.path.len);
	gk_buf_addc(k, '|');
	if (S.tags.len)
		gk_buf_add(k, S.tags.data, S.tags.len);
	gk_buf *o = &S.owner;
	gk_buf_reset(o);
	add_raw(o, name);
	gk_buf_addc(o, 0x1f);
	add_raw(o, labels);
	gk_buf_addc(o, 0x1f);
	add_raw(o, ev->svc);
	gk_buf_addc(o, 0x1f);
	add_raw(o, ev->proc);
	void **slot = gk_smap_slot(S.buckets, k->data, k->len, false);
	struct bucket *b = slot ? *slot : NULL;
	if (!b) {
		if (gk_smap_count(S.buckets) >= S.max_buckets) {
			gk_counter_add(S.m_max_series, 1);
			gk_export_dropped(S.ex, 1);
			return false;
		}
		slot = gk_smap_slot(S.buckets, k->data, k->len, true);
		b = gk_xcalloc(1, sizeof *b);
		b->owner = gk_xmalloc(o->len);
		memcpy(b->owner, o->data, o->len);
		b->len = o->len;
		*slot = b;
	} else if (b->len != o->len || memcmp(b->owner, o->data, o->len)) {
		gk_counter_add(S.m_collision, 1);
		gk_export_dropped(S.ex, 1);
		tell_collision();
		return false;
	}
	b->seen_ms = gk_loop_now(S.loop);
	return true;
}

/* "PATH:VALUE|TYPE[|@RATE][|#TAGS]" into S.line (appended). */
static void
add_line(double value, const char *type, double rate)
{
	gk_buf_add(&S.line, S.path.data, S.path.len);
	gk_buf_addc(&S.line, ':');
	gk_fmt_value(&S.line, value);
	gk_buf_addc(&S.line, '|');
	gk_buf_adds(&S.line, type);
	if (rate < 1) {
		/* statsd reads the rate as digits and dots only. */
		char r[64];
		snprintf(r, sizeof r, "%.20f", rate);
		size_t n = strlen(r);
		while (n > 1 && r[n - 1] == '0')
			r[--n] = 0;
		gk_buf_addf(&S.line, "|@%s", r);
	}
	if (S.tags.len) {
		gk_buf_add(&S.line, "|#", 2);
		gk_buf_add(&S.line, S.tags.data, S.tags.len);
	}
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

/* proc US pid */
static void
proc_key(const gk_event *ev, gk_buf *k)
{
	add_raw(k, ev->proc);
	gk_buf_addc(k, 0x1f);
	add_raw(k, ev->pid);
}

/* key: proc US pid US name US labels [US suffix], from the raw JSON. */
static void
make_key(const gk_event *ev, gk_json name, gk_json labels,
    const char *suffix)
{
	gk_buf *k = &S.key;
	gk_buf_reset(k);
	proc_key(ev, k);
	gk_buf_addc(k, 0x1f);
	add_raw(k, name);
	gk_buf_addc(k, 0x1f);
	add_raw(k, labels);
	if (suffix) {
		gk_buf_addc(k, 0x1f);
		gk_buf_adds(k, suffix);
	}
}

/* The increase of one cumulative value; false when there is none to
 * send (a baseline, or the table is full). */
static bool
delta(const gk_event *ev, gk_json name, gk_json labels, const char *suffix,
    double value, bool from_zero, double *d)
{
	make_key(ev, name, labels, suffix);
	switch (gk_deltas_update(S.deltas, S.key.data, S.key.len, value,
	    from_zero, gk_loop_now(S.loop), d)) {
	case GK_DELTA_OK:
		/* 15 digits: no 0.30000000000000004 from a subtraction. */
		if (isfinite(*d) && *d != 0) {
			char t[40];
			snprintf(t, sizeof t, "%.15g", *d);
			*d = strtod(t, NULL);
		}
		return true;
	case GK_DELTA_BASELINE: return false;
	case GK_DELTA_FULL:
		gk_counter_add(S.m_max_series, 1);
		gk_export_dropped(S.ex, 1);
		return false;
	}
	return false;
}

static bool
ends_with(gk_json s, const char *suffix)
{
	size_t n = strlen(suffix);
	/* s is a JSON string: its text is between the quotes. */
	return s.len >= n + 2 && !memcmp(s.p + s.len - 1 - n, suffix, n);
}

static void
do_histogram(const gk_event *ev, const gk_snap_family *f,
    const gk_snap_series *s, bool from_zero)
{
	/* Observations per bucket since the last snapshot. */
	static double *bounds, *counts;
	static size_t cap;
	static gk_snap_bucket *bk;
	static size_t bkcap;
	size_t nb = 0, nbk = gk_snap_buckets(s, &bk, &bkcap, NULL);
	double prev = 0;
	char suffix[40];
	bool ok = true;
	for (size_t j = 0; j < nbk; j++) {
		double le = bk[j].le, c = bk[j].count;
		if (nb == cap) {
			cap = cap ? cap * 2 : 32;
			bounds = gk_xrealloc(bounds, cap * sizeof *bounds);
			counts = gk_xrealloc(counts, cap * sizeof *counts);
		}
		snprintf(suffix, sizeof suffix, "le=%.17g", le);
		double d;
		if (!delta(ev, f->name, s->labels, suffix, c, from_zero, &d))
			ok = false;
		bounds[nb] = le;
		counts[nb] = d - prev > 0 ? d - prev : 0;
		prev = d;
		nb++;
	}
	double dsum, dcount;
	if (!delta(ev, f->name, s->labels, "sum", s->sum, from_zero, &dsum) ||
	    !delta(ev, f->name, s->labels, "count", s->count, from_zero,
	        &dcount) ||
	    !ok || dcount <= 0)
		return;
	size_t nonempty = 0;
	for (size_t i = 0; i < nb; i++)
		nonempty += counts[i] > 0;
	bool ms = !S.dogstatsd && ends_with(f->name, "_seconds");
	if (!claim_name(ev, f->name, s->labels, S.dogstatsd ? "d" : "ms"))
		return;
	/*
	 * statsd counts a line as 1/rate observations, but takes its mean
	 * and percentiles over the lines, one value each: a bucket's weight
	 * there is its number of lines.  So each bucket gets lines in
	 * proportion to its observations: one each while they are at most
	 * --timer-lines, else about --timer-lines in all (at least one a
	 * bucket), each line counting for its share of the bucket.
	 */
	double total = 0;
	for (size_t i = 0; i < nb; i++)
		total += counts[i] > 0 ? counts[i] : 0;
	double scale =
	    total > (double)S.timer_lines ? (double)S.timer_lines / total : 1;
	for (size_t i = 0; i < nb; i++) {
		if (counts[i] <= 0)
			continue;
		double lo = i ? bounds[i - 1] : (bounds[0] > 0 ? 0 : bounds[0]);
		double hi = bounds[i];
		double v;
		if (nonempty == 1 && isfinite(dsum / dcount))
			v = dsum / dcount; /* exact: every one in this bucket */
		else if (isinf(hi))
			v = lo;
		else
			v = (lo + hi) / 2;
		if (ms)
			v *= 1000;
		if (!isfinite(v)) {
			gk_counter_add(S.m_not_finite, 1);
			continue;
		}
		if (!S.dogstatsd && v < 0) { /* statsd refuses such timers */
			gk_counter_add(S.m_negative, 1);
			continue;
		}
		double lines = round(counts[i] * scale);
		if (lines < 1)
			lines = 1;
		gk_buf_reset(&S.line);
		add_line(v, S.dogstatsd ? "d" : "ms", lines / counts[i]);
		for (double k = 0; k < lines; k++)
			add_unit(S.line.data, S.line.len);
	}
}

/* A snapshot being sent. */
struct snap {
	const gk_event *ev;
	/*
	 * Counters count from zero when the process is new (its first
	 * snapshot), or when we have seen an earlier snapshot of it.  The
	 * first snapshot we see of a process that was already running only
	 * sets the baseline: its counts before it were sent by whoever read
	 * its events then, or are unknown.
	 */
	bool from_zero;
};

static void
series(const gk_snap_family *f, const gk_snap_series *s, void *arg)
{
	const struct snap *sn = arg;
	const gk_event *ev = sn->ev;
	double d;
	switch (f->type) {
	case GK_COUNTER:
		if (!delta(ev, f->name, s->labels, NULL, s->value,
		        sn->from_zero, &d) ||
		    !(d > 0))
			break;
		if (!isfinite(d)) {
			gk_counter_add(S.m_not_finite, 1);
			break;
		}
		if (!claim_name(ev, f->name, s->labels, "c"))
			break;
		gk_buf_reset(&S.line);
		add_line(d, "c", 1);
		add_unit(S.line.data, S.line.len);
		break;
	case GK_GAUGE:
		if (!isfinite(s->value)) {
			gk_counter_add(S.m_not_finite, 1);
			break;
		}
		if (!claim_name(ev, f->name, s->labels, "g"))
			break;
		gk_buf_reset(&S.line);
		/* A signed value changes a statsd gauge: set it to 0 first,
		 * in the same packet. */
		if (s->value < 0) {
			add_line(0, "g", 1);
			gk_buf_addc(&S.line, '\n');
		}
		add_line(s->value, "g", 1);
		add_unit(S.line.data, S.line.len);
		break;
	case GK_HISTOGRAM:
		do_histogram(ev, f, s, sn->from_zero);
		break;
	}
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	if (ev->type != GK_EV_METRICS)
		return;
	int64_t seq = 0, part = 1;
	gk_json_int(gk_wire_get(ev->msg, "seq"), &seq);
	gk_json_int(gk_wire_get(ev->msg, "part"), &part);
	uint64_t now = gk_loop_now(S.loop);
	/* The process: proc US pid. */
	gk_buf_reset(&S.key);
	proc_key(ev, &S.key);
	void **slot = gk_smap_slot(S.procs, S.key.data, S.key.len, false);
	struct proc *p = slot ? *slot : NULL;
	if (!p) {
		if (gk_smap_count(S.procs) >= S.max_procs) {
			gk_counter_add(S.m_max_series, 1);
			gk_export_dropped(ex, 1);
			return;
		}
		slot = gk_smap_slot(S.procs, S.key.data, S.key.len, true);
		p = gk_xcalloc(1, sizeof *p);
		p->first_seq = seq;
		*slot = p;
	} else if (seq > 0 && (seq < p->last_seq ||
	                       (seq == p->last_seq && part <= p->last_part))) {
		/*
		 * Its seq went back: the process restarted with the same
		 * pid (a container restarted, say), and its counters
		 * started again from zero.  A value above the last one is
		 * then no increase over it: forget the last values.
		 */
		gk_buf_addc(&S.key, 0x1f);
		gk_deltas_forget(S.deltas, S.key.data, S.key.len);
		p->first_seq = seq;
	}
	p->last_seq = seq;
	p->last_part = part;
	p->seen_ms = now;
	/*
	 * Counters count from zero when the process is new (its first
	 * snapshot), or when we have seen an earlier snapshot of it.  The
	 * first snapshot we see of a process that was already running only
	 * sets the baseline: its counts before it were sent by whoever read
	 * its events then, or are unknown.
	 */
	struct snap sn = {ev, seq <= 1 || seq > p->first_seq};
	gk_snap_walk(ev, series, &sn);
	flush_packet();
}

static void
sweep(gk_loop *loop, void *arg)
{
	(void)arg;
	uint64_t now = gk_loop_now(loop);
	if (now > S.expire_ms) {
		uint64_t before = now - S.expire_ms;
		gk_deltas_expire(S.deltas, before);
		size_t pos = 0;
		const char *k;
		void *v;
		while (gk_smap_next(S.buckets, &pos, &k, &v)) {
			struct bucket *b = v;
			if (b->seen_ms < before) {
				free(b->owner);
				free(b);
				/* Keys hold no NUL: folded text and tags. */
				gk_smap_del(S.buckets, k, strlen(k));
			}
		}
		pos = 0;
		while (gk_smap_next(S.procs, &pos, &k, &v)) {
			struct proc *p = v;
			if (p->seen_ms < before) {
				free(p);
				gk_smap_del(S.procs, k, strlen(k));
			}
		}
	}
	gk_timer_start(loop, &S.sweep, 10000, sweep, NULL);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	flush_packet();
	gk_econn_drain(S.conn);
}

/* ------------------------------------------------------------------ */

static void
usage(FILE *f)
{
	fprintf(
	    f, "usage: gk-export-statsd [--dogstatsd] [--prefix P] "
	       "[--max-packet N] [ADDR]\n"
	       "Send the metrics snapshots read on stdin to statsd over UDP: "
	       "counters as deltas,\ngauges, histograms as timers (|ms) or "
	       "distributions (|d).\n"
	       "  ADDR                host:port, udp:host:port or unix:PATH "
	       "(127.0.0.1:8125)\n"
	       "  --dogstatsd         labels as DogStatsD tags (|#k:v), "
	       "histograms as |d\n"
	       "  --prefix P          put P. before every metric name\n"
	       "  --max-packet N      bytes per datagram at most (1432)\n"
	       "  --timer-lines N     timer lines per histogram and snapshot, "
	       "about (100)\n"
	       "  --max-series N      counter series tracked at most (100000)\n"
	       "  --expire DUR        forget a series not seen for DUR (10m)\n"
	       "  --queue SIZE        bound of the datagrams waiting (1m)\n"
	       "  -h, --help          this help\n"
	       "  -V, --version       version\n");
}

int
main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:8125";
	size_t queue = 1u << 20;
	uint64_t max_series = 100000;
	S.max_packet = 1432;
	S.timer_lines = 100;
	S.expire_ms = 600000;
	static const struct option opts[] = {
	    {"dogstatsd", no_argument, NULL, 'd'},
	    {"prefix", required_argument, NULL, 'p'},
	    {"max-packet", required_argument, NULL, 'm'},
	    {"max-series", required_argument, NULL, 's'},
	    {"timer-lines", required_argument, NULL, 't'},
	    {"expire", required_argument, NULL, 'e'},
	    {"queue", required_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
		switch (c) {
		case 'd': S.dogstatsd = true; break;
		case 'p': S.prefix = optarg; break;
		case 'm':
			if (gk_parse_uint(optarg, 64, 65507, &v) < 0)
				gk_usage_error("bad --max-packet: %s (expected "
				               "64 to 65507 bytes)",
				    optarg);
			S.max_packet = (size_t)v;
			break;
		case 's':
			if (gk_parse_uint(optarg, 1, 100000000, &max_series) <
			    0)
				gk_usage_error("bad --max-series: %s (expected "
				               "a count)",
				    optarg);
			break;
		case 't':
			if (gk_parse_uint(optarg, 1, 10000, &S.timer_lines) < 0)
				gk_usage_error(
				    "bad --timer-lines: %s (expected "
				    "1 to 10000)",
				    optarg);
			break;
		case 'e':
			if (gk_parse_duration_ms(optarg, &S.expire_ms) < 0 ||
			    !S.expire_ms)
				gk_usage_error("bad --expire: %s (expected a "
				               "duration such as 10m)",
				    optarg);
			break;
		case 'q':
			if (gk_parse_size(optarg, &queue) < 0 || !queue)
				gk_usage_error("bad --queue: %s (expected a "
				               "size such as 1m)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-statsd"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	addr = gk_export_operand(argc, argv, optind, addr, "[ADDR]");
	gk_export_def def = {.name = "statsd", .on_event = on_event,
	                     .on_drain = on_drain};
	S.ex = gk_export_new(&def);
	S.loop = gk_export_loop(S.ex);
	const char *why = NULL;
	S.conn = gk_econn_new(S.ex, addr, GK_ECONN_UDP, queue, &why);
	if (!S.conn)
		gk_usage_error("bad ADDR: %s (%s)", addr,
		    why ? why : "expected host:port");
	S.deltas = gk_deltas_new((size_t)max_series);
	S.procs = gk_smap_new();
	S.max_procs = 100000;
	S.buckets = gk_smap_new();
	S.max_buckets = (size_t)max_series;
	gk_metric *skipped = gk_counter_new("gk_export_statsd_skipped_total",
	    "Values not sent, by reason", "reason");
	S.m_not_finite = gk_series_get(skipped, "not_finite", (char *)0);
	S.m_max_series = gk_series_get(skipped, "max_series", (char *)0);
	S.m_too_long = gk_series_get(skipped, "too_long", (char *)0);
	S.m_negative = gk_series_get(skipped, "negative_timer", (char *)0);
	S.m_collision = gk_series_get(skipped, "collision", (char *)0);
	S.m_lines = gk_metric_series(gk_counter_new(
	    "gk_export_statsd_lines_total", "statsd lines sent", NULL));
	gk_timer_start(S.loop, &S.sweep, 10000, sweep, NULL);
	char f[340];
	snprintf(f, sizeof f, "addr=%s", addr);
	gk_log(GK_INFO, "sending metrics to statsd", f);
	return gk_export_run(S.ex);
}
