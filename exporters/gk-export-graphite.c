/*
 * gk-export-graphite: send the metrics snapshots read on stdin to Graphite
 * (carbon) in the plaintext protocol, "path value timestamp\n" over TCP,
 * reconnecting with backoff and holding the lines in a bounded queue while
 * the backend is down.  See gk-export-graphite(1).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "export_fold.h"

static struct {
	gk_export *ex;
	gk_econn *conn;
	const char *prefix;
	bool with_pid;
	gk_buf line, tail, cut;
	gk_smap *paths; /* of the snapshot being sent: one point a path */
	/* "proc\0pid" -> struct origin: the paths of a snapshot whose
	 * parts are still coming (metrics.c splits a snapshot into lines a
	 * pipe writes whole, a family's series across parts). */
	gk_smap *origins;
	gk_buf key;
	gk_series *m_points, *m_not_finite, *m_collisions, *m_cut;
} G;

/* Carbon makes a directory of each component of a path and a file
 * COMPONENT.wsp of the last: one past the file system's 255 bytes cannot
 * be made, and carbon drops its points. */
#define MAX_COMPONENT 250
/* Snapshots in progress (some parts read) remembered at most. */
#define MAX_ORIGINS 10000
/* A longer one keeps its start, then "_" and 16 hex digits of a hash of
 * the whole, so that two long values stay two paths. */
#define CUT_KEEP (MAX_COMPONENT - 17)

/* Cut the components of l->data longer than MAX_COMPONENT, counted. */
static void
bound_components(gk_buf *l)
{
	size_t start = 0;
	bool any = false;
	for (size_t i = 0; i <= l->len; i++)
		if (i == l->len || l->data[i] == '.') {
			any |= i - start > MAX_COMPONENT;
			start = i + 1;
		}
	if (!any)
		return;
	gk_buf *c = &G.cut;
	gk_buf_reset(c);
	start = 0;
	for (size_t i = 0; i <= l->len; i++) {
		if (i < l->len && l->data[i] != '.')
			continue;
		size_t n = i - start;
		if (n > MAX_COMPONENT) {
			gk_buf_add(c, l->data + start, CUT_KEEP);
			gk_buf_addf(c, "_%016llx",
			            (unsigned long long)gk__hash_bytes(
			                l->data + start, n));
			gk_counter_add(G.m_cut, 1);
		} else {
			gk_buf_add(c, l->data + start, n);
		}
		if (i < l->len)
			gk_buf_addc(c, '.');
		start = i + 1;
	}
	gk_buf_reset(l);
	gk_buf_add(l, c->data, c->len);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	gk_econn_drain(G.conn);
}

/*
 * One point: PREFIX.NAME[SUFFIX].LABELS[.le.LE] + tail, value, seconds.
 * tail is ".svc.S.proc.P[.pid.N]", the same for the whole event.
 */
static void
point(const char *ts, gk_json name, const char *suffix, gk_json labels,
    const char *le, double value)
{
	if (!isfinite(value)) {
		gk_counter_add(G.m_not_finite, 1);
		return;
	}
	gk_buf *l = &G.line;
	gk_buf_reset(l);
	gk_fold_name(l, G.prefix, name);
	gk_buf_adds(l, suffix);
	gk_fold_labels(l, labels);
	if (le) {
		gk_buf_adds(l, ".le.");
		gk_fold_component(l, le, strlen(le));
	}
	gk_buf_add(l, G.tail.data, G.tail.len);
	bound_components(l);
	/* Two series whose labels fold alike (a.b and a_b) would be one
	 * path, and carbon would keep whichever came last: the first is
	 * sent, the others counted. */
	void **seen = gk_smap_slot(G.paths, l->data, l->len, true);
	if (*seen) {
		gk_counter_add(G.m_collisions, 1);
		return;
	}
	*seen = G.paths; /* any non-NULL mark */
	gk_buf_addc(l, ' ');
	gk_fmt_value(l, value);
	gk_buf_addc(l, ' ');
	gk_buf_adds(l, ts);
	gk_buf_addc(l, '\n');
	gk_counter_add(G.m_points, 1);
	gk_econn_send(G.conn, l->data, l->len);
}

static void
series(const gk_snap_family *f, const gk_snap_series *s, void *arg)
{
	const char *ts = arg;
	if (f->type != GK_HISTOGRAM) {
		point(ts, f->name, "", s->labels, NULL, s->value);
		return;
	}
	gk_json_iter bi;
	gk_json_iter_init(&bi, s->buckets);
	double le, c;
	gk_buf b = {0};
	while (gk_snap_bucket_next(&bi, &le, &c)) {
		gk_buf_reset(&b);
		gk_fmt_float(&b, le);
		point(ts, f->name, "_bucket", s->labels, gk_buf_cstr(&b), c);
	}
	gk_buf_free(&b);
	point(ts, f->name, "_sum", s->labels, NULL, s->sum);
	point(ts, f->name, "_count", s->labels, NULL, s->count);
}

struct origin {
	int64_t seq;
	gk_smap *paths;
};

/* The paths sent so far of the snapshot ev is a part of: a map of its
 * origin's, new at its first part; NULL when too many snapshots are in
 * progress (then *own is a map for this part alone). */
static gk_smap *
snapshot_paths(const gk_event *ev, gk_smap **own)
{
	int64_t seq = 0, part = 1;
	gk_json_int(gk_wire_get(ev->msg, "seq"), &seq);
	gk_json_int(gk_wire_get(ev->msg, "part"), &part);
	gk_buf *k = &G.key;
	gk_buf_reset(k);
	gk_event_text(ev->proc, k);
	gk_buf_addc(k, 0);
	gk_event_text(ev->pid, k);
	struct origin *o = gk_smap_get(G.origins, k->data, k->len);
	if (!o) {
		if (gk_smap_count(G.origins) >= MAX_ORIGINS) {
			*own = gk_smap_new();
			return *own;
		}
		o = gk_xcalloc(1, sizeof *o);
		*gk_smap_slot(G.origins, k->data, k->len, true) = o;
	} else if (o->seq != seq || part <= 1) {
		gk_smap_free(
		    o->paths); /* an earlier snapshot, left unfinished */
		o->paths = NULL;
	}
	if (!o->paths)
		o->paths = gk_smap_new();
	o->seq = seq;
	*own = NULL;
	return o->paths;
}

/* After the part ev: its origin's map is done with at the last part. */
static void
snapshot_part_done(const gk_event *ev)
{
	int64_t part = 1, parts = 1;
	gk_json_int(gk_wire_get(ev->msg, "part"), &part);
	gk_json_int(gk_wire_get(ev->msg, "parts"), &parts);
	if (part < parts)
		return;
	struct origin *o = gk_smap_get(G.origins, G.key.data, G.key.len);
	if (!o)
		return;
	gk_smap_free(o->paths);
	free(o);
	gk_smap_del(G.origins, G.key.data, G.key.len);
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)ex;
	(void)arg;
	if (ev->type != GK_EV_METRICS)
		return;
	uint64_t ms = gk_event_ts_ms(ev);
	if (!ms)
		ms = gk_realtime_ms();
	char ts[32];
	snprintf(ts, sizeof ts, "%llu", (unsigned long long)(ms / 1000));
	gk_buf_reset(&G.tail);
	gk_fold_origin(&G.tail, ev);
	if (G.with_pid && ev->pid.type != GK_JSON_NONE) {
		gk_buf_adds(&G.tail, ".pid.");
		gk_fold_json(&G.tail, ev->pid);
	}
	gk_smap *own;
	G.paths = snapshot_paths(ev, &own);
	gk_snap_walk(ev, series, ts);
	if (own)
		gk_smap_free(own);
	else
		snapshot_part_done(ev);
	G.paths = NULL;
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-graphite [--prefix P] [--pid] [--queue SIZE] "
	    "[ADDR]\n"
	    "Send the metrics snapshots read on stdin to Graphite "
	    "(plaintext: path value timestamp).\n"
	    "  ADDR               host:port, tcp:host:port, udp:host:port or "
	    "unix:PATH (127.0.0.1:2003)\n"
	    "  --prefix P         put P. before every path\n"
	    "  --pid              add .pid.N to every path\n"
	    "  --queue SIZE       bound of the lines held while the backend "
	    "is down (4m)\n"
	    "  --backoff-max DUR  longest wait between reconnections (30s)\n"
	    "  -h, --help         this help\n"
	    "  -V, --version      version\n");
}

int
main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:2003";
	size_t queue = 4u << 20;
	uint64_t backoff_max = 30000;
	static const struct option opts[] = {
	    {"prefix", required_argument, NULL, 'p'},
	    {"pid", no_argument, NULL, 'i'},
	    {"queue", required_argument, NULL, 'q'},
	    {"backoff-max", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
		switch (c) {
		case 'p': G.prefix = optarg; break;
		case 'i': G.with_pid = true; break;
		case 'q':
			if (gk_parse_size(optarg, &queue) < 0 || !queue)
				gk_usage_error("bad --queue: %s (expected a "
				               "size such as 4m)",
				    optarg);
			break;
		case 'b':
			if (gk_parse_duration_ms(optarg, &backoff_max) < 0 ||
			    backoff_max < 100)
				gk_usage_error("bad --backoff-max: %s (expected "
				               "a duration of 100ms or more)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-graphite"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	addr = gk_export_operand(argc, argv, optind, addr, "[ADDR]");
	gk_export_def def = {.name = "graphite", .on_event = on_event,
	                     .on_drain = on_drain};
	G.ex = gk_export_new(&def);
	G.origins = gk_smap_new();
	const char *why = NULL;
	G.conn = gk_econn_new(G.ex, addr, GK_ECONN_TCP, queue, &why);
	if (!G.conn)
		gk_usage_error("bad ADDR: %s (%s)", addr,
		    why ? why : "expected host:port");
	gk_econn_set_backoff(G.conn, 100, backoff_max);
	G.m_points = gk_metric_series(gk_counter_new(
	    "gk_export_graphite_points_total",
	    "Points made from snapshots (sent, queued or dropped)", NULL));
	G.m_not_finite = gk_metric_series(gk_counter_new(
	    "gk_export_graphite_not_finite_total",
	    "NaN or infinite values, not sent", NULL));
	G.m_collisions = gk_metric_series(gk_counter_new(
	    "gk_export_graphite_collisions_total",
	    "Points not sent because an earlier series of the same snapshot "
	    "folded to the same path", NULL));
	G.m_cut = gk_metric_series(gk_counter_new(
	    "gk_export_graphite_cut_total",
	    "Path components longer than 250 bytes cut to a start and a hash",
	    NULL));
	char f[340];
	snprintf(f, sizeof f, "addr=%s", addr);
	gk_log(GK_INFO, "sending metrics to graphite", f);
	int rc = gk_export_run(G.ex);
	size_t pos = 0;
	const char *key;
	void *val;
	while (gk_smap_next(G.origins, &pos, &key, &val)) {
		struct origin *o = val;
		gk_smap_free(o->paths);
		free(o);
	}
	gk_smap_free(G.origins);
	gk_buf_free(&G.key);
	return rc;
}
