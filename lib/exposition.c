/*
 * exposition.c: snapshots in the Prometheus text exposition format 0.0.4,
 * and snapshots assembled from their parts (see exposition.h).  Moved here
 * from gk-export-prometheus, which it serves unchanged, so that
 * gk-export-pushgateway writes the same text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exposition.h"

struct fam_src {
	const gk_expo_src *src;
	gk_json series;
};

struct fam {
	char name[256];
	gk_json raw; /* the name before sanitising */
	gk_json help;
	enum gk_metric_type type;
	struct fam_src *v;
	size_t n, cap;
	bool has_series;
};

static gk_buf tmp; /* scratch for label values and help */
static gk_buf ident; /* scratch: a series' name and labels, as written */

static void
sanitize(char *out, size_t cap, gk_json v, bool metric)
{
	gk_buf b = {0};
	gk_json_string(v, &b);
	size_t o = 0;
	for (size_t i = 0; i < b.len && o + 2 < cap; i++) {
		unsigned char c = (unsigned char)b.data[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          c == '_' || (metric && c == ':') ||
		          (i > 0 && c >= '0' && c <= '9');
		if (i == 0 && c >= '0' && c <= '9')
			out[o++] = '_';
		out[o++] = ok || (c >= '0' && c <= '9') ? (char)c : '_';
	}
	if (!o)
		out[o++] = '_';
	out[o] = 0;
	gk_buf_free(&b);
}

static void
add_escaped(gk_buf *out, const char *s, size_t n, bool quote)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\\')
			gk_buf_add(out, "\\\\", 2);
		else if (c == '\n')
			gk_buf_add(out, "\\n", 2);
		else if (c == '"' && quote)
			gk_buf_add(out, "\\\"", 2);
		else
			gk_buf_addc(out, c);
	}
}

static void
add_label(gk_buf *out, bool *first, const char *name, const char *v,
    size_t n)
{
	gk_buf_addc(out, *first ? '{' : ',');
	*first = false;
	gk_buf_adds(out, name);
	gk_buf_add(out, "=\"", 2);
	add_escaped(out, v, n, true);
	gk_buf_addc(out, '"');
}

/* True when the labels written from start ("{a=\"x\",b=\"y\"") have
 * one named name.  Values are escaped, so a '"' there is never a value's
 * end. */
static bool
label_written(const gk_buf *out, size_t start, const char *name)
{
	size_t nl = strlen(name);
	const char *p = out->data + start, *end = out->data + out->len;
	while (p < end) {
		p++; /* '{' or ',' */
		if ((size_t)(end - p) > nl && !memcmp(p, name, nl) &&
		    p[nl] == '=')
			return true;
		p = memchr(p, '"', (size_t)(end - p)); /* the value's start */
		if (!p)
			break;
		for (p++; p < end && *p != '"'; p++)
			if (*p == '\\')
				p++;
		p++; /* past its end */
	}
	return false;
}

/* name{labels..., svc, proc, instance[, le]}.  A label whose name, once
 * sanitised, is that of one before it ("a-b" after "a_b") is left out:
 * promtool, and Prometheus, refuse a series with a label twice.  Those
 * are counted in *dropped when it is not NULL. */
static void
add_series_name(gk_buf *out, const char *name, const char *suffix,
    const gk_expo_src *p, gk_json labels, const char *le,
    const gk_expo_opts *o, size_t *dropped)
{
	gk_buf_adds(out, name);
	gk_buf_adds(out, suffix);
	bool first = true;
	gk_json_iter it;
	gk_json k, v;
	gk_json_iter_init(&it, labels);
	gk_buf *val = &tmp;
	size_t start = out->len;
	while (gk_json_iter_next(&it, &k, &v)) {
		char ln[256];
		sanitize(ln, sizeof ln - 9, k, false);
		if (!strcmp(ln, "svc") || !strcmp(ln, "proc") ||
		    !strcmp(ln, "instance") || !strcmp(ln, "le") ||
		    !strncmp(ln, "__", 2) ||
		    (o->rename_job && !strcmp(ln, "job"))) {
			char t[256];
			memcpy(t, ln, sizeof t);
			snprintf(ln, sizeof ln, "exported_%.230s", t);
		}
		if (label_written(out, start, ln)) {
			if (dropped)
				(*dropped)++;
			continue;
		}
		gk_buf_reset(val);
		gk_event_text(v, val);
		add_label(out, &first, ln, val->data ? val->data : "", val->len);
	}
	if (p->svc)
		add_label(out, &first, "svc", p->svc, strlen(p->svc));
	if (p->proc)
		add_label(out, &first, "proc", p->proc, strlen(p->proc));
	if (p->instance)
		add_label(out, &first, "instance", p->instance,
		    strlen(p->instance));
	if (le)
		add_label(out, &first, "le", le, strlen(le));
	if (!first)
		gk_buf_addc(out, '}');
}

/* " value\n" for the series whose name and labels were written to out
 * from mark on, plus its offset in p's offsets (a process restarted). */
static void
add_value(gk_buf *out, size_t mark, const gk_expo_src *p, double v)
{
	if (p->offsets) {
		const double *d =
		    gk_smap_get(p->offsets, out->data + mark, out->len - mark);
		if (d)
			v += *d;
	}
	gk_buf_addc(out, ' ');
	gk_fmt_float(out, v);
	gk_buf_addc(out, '\n');
}

static void
render_family(gk_buf *out, const struct fam *f, const gk_expo_opts *o,
    size_t *dropped)
{
	static const char *const tn[] = {"counter", "gauge", "histogram"};
	gk_buf_adds(out, "# HELP ");
	gk_buf_adds(out, f->name);
	gk_buf_addc(out, ' ');
	gk_buf *h = &tmp;
	gk_buf_reset(h);
	if (f->help.type == GK_JSON_STRING)
		gk_json_string(f->help, h);
	if (h->len)
		add_escaped(out, h->data, h->len, false);
	else
		gk_buf_addf(out, "Metric %s.", f->name);
	gk_buf_addf(out, "\n# TYPE %s %s\n", f->name, tn[f->type]);
	/* Series whose labels are the same once written (a.b and a_b, proc
	 * and exported_proc, or a producer's repeat): the first only.  The
	 * Pushgateway refuses a push that holds one twice, Prometheus drops
	 * the sample. */
	gk_smap *seen = gk_smap_new();
	gk_snap_bucket *bk = NULL;
	size_t bkcap = 0;
	for (size_t i = 0; i < f->n; i++) {
		gk_snap_family sf = {.type = f->type, .series = f->v[i].series};
		gk_json_iter it;
		gk_snap_series s;
		gk_snap_series_begin(&it, &sf);
		while (gk_snap_series_next(&it, &sf, &s)) {
			const gk_expo_src *p = f->v[i].src;
			gk_buf_reset(&ident);
			add_series_name(&ident, "", "", p, s.labels, NULL, o,
			                NULL);
			const char *id = gk_buf_cstr(&ident);
			if (gk_smap_slot(seen, id, ident.len, false)) {
				if (dropped)
					(*dropped)++;
				continue;
			}
			gk_smap_slot(seen, id, ident.len, true);
			size_t mark = out->len;
			if (f->type != GK_HISTOGRAM) {
				add_series_name(out, f->name, "", p, s.labels,
				    NULL, o, dropped);
				if (f->type == GK_COUNTER) {
					add_value(out, mark, p, s.value);
					continue;
				}
				gk_buf_addc(out, ' ');
				gk_fmt_float(out, s.value);
				gk_buf_addc(out, '\n');
				continue;
			}
			size_t nb = gk_snap_buckets(&s, &bk, &bkcap, dropped);
			bool inf = false;
			/* The labels once a series: on its _sum line. */
			for (size_t j = 0; j < nb; j++) {
				double le = bk[j].le, c = bk[j].count;
				char les[64];
				gk_buf lb = {0};
				gk_fmt_float(&lb, le);
				snprintf(les, sizeof les, "%s", gk_buf_cstr(&lb));
				gk_buf_free(&lb);
				if (le > 0 && le == le * 2) /* +Inf */
					inf = true;
				mark = out->len;
				add_series_name(out, f->name, "_bucket", p,
				    s.labels, les, o, NULL);
				add_value(out, mark, p, c);
			}
			if (!inf) {
				mark = out->len;
				add_series_name(out, f->name, "_bucket", p,
				    s.labels, "+Inf", o, NULL);
				add_value(out, mark, p, s.count);
			}
			mark = out->len;
			add_series_name(out, f->name, "_sum", p, s.labels, NULL,
			    o, dropped);
			add_value(out, mark, p, s.sum);
			mark = out->len;
			add_series_name(out, f->name, "_count", p, s.labels,
			    NULL, o, NULL);
			add_value(out, mark, p, s.count);
		}
	}
	gk_smap_free(seen);
	free(bk);
}

static void
free_offsets(gk_smap *m)
{
	size_t pos = 0;
	const char *k;
	void *v;
	while (gk_smap_next(m, &pos, &k, &v))
		free(v);
	gk_smap_free(m);
}

void
gk_expo_offsets_free(gk_smap *offsets)
{
	if (offsets)
		free_offsets(offsets);
}

gk_smap *
gk_expo_offsets_restart(const gk_expo_src *last)
{
	/* The last snapshot as served (its own offsets added): every counter
	 * and histogram line's value is where the next life starts from. */
	gk_buf text = {0};
	gk_expo_render(&text, last, 1, NULL);
	gk_smap *m = gk_smap_new();
	/* A series the last snapshot lacked keeps the offset it had. */
	size_t pos = 0;
	const char *k;
	void *v;
	while (last->offsets && gk_smap_next(last->offsets, &pos, &k, &v)) {
		double *d = gk_xmalloc(sizeof *d);
		*d = *(const double *)v;
		*gk_smap_slot(m, k, strlen(k), true) = d;
	}
	bool cumulative = false;
	const char *p = text.data, *end = text.data + text.len;
	while (p && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
		if (!strncmp(p, "# TYPE ", 7)) {
			const char *t = memrchr(p, ' ', (size_t)(nl - p));
			cumulative = t && (!strncmp(t, " counter\n", 9) ||
			                   !strncmp(t, " histogram\n", 11));
		} else if (*p != '#' && cumulative) {
			const char *sp = memrchr(p, ' ', (size_t)(nl - p));
			if (sp) {
				double *d = gk_xmalloc(sizeof *d);
				*d = strtod(sp + 1, NULL);
				void **slot =
				    gk_smap_slot(m, p, (size_t)(sp - p), true);
				free(*slot);
				*slot = d;
			}
		}
		p = nl + 1;
	}
	gk_buf_free(&text);
	return m;
}

static int
fam_cmp(const void *a, const void *b)
{
	const struct fam *x = *(struct fam *const *)a;
	const struct fam *y = *(struct fam *const *)b;
	return strcmp(x->name, y->name);
}

/* A family of another type whose name is one a histogram's lines take
 * (h_bucket, h_count, h_sum beside the histogram h). */
static bool
shadowed(const gk_smap *fams, const struct fam *f)
{
	static const char *const sfx[] = {"_bucket", "_count", "_sum"};
	size_t n = strlen(f->name);
	for (int i = 0; i < 3; i++) {
		size_t sl = strlen(sfx[i]);
		if (n <= sl || strcmp(f->name + n - sl, sfx[i]))
			continue;
		const struct fam *h = gk_smap_get(fams, f->name, n - sl);
		if (h && h->type == GK_HISTOGRAM && h->has_series)
			return true;
	}
	return false;
}

size_t
gk_expo_render(gk_buf *out, const gk_expo_src *src, size_t nsrc,
    const gk_expo_opts *o)
{
	static const gk_expo_opts dflt;
	size_t dropped = 0;
	if (!o)
		o = &dflt;
	gk_smap *fams = gk_smap_new();
	/* Parsed lines must stay put while we render: one index each. */
	size_t nmsgs = 0, capmsgs = 0;
	gk_wire_msg **msgs = NULL;
	for (size_t si_ = 0; si_ < nsrc; si_++) {
		const gk_expo_src *p = &src[si_];
		for (size_t off = 0; off < p->len;) {
			const char *line = p->snap + off;
			size_t n = strlen(line);
			off += n + 1;
			if (nmsgs == capmsgs) {
				capmsgs = capmsgs ? capmsgs * 2 : 16;
				msgs = gk_xrealloc(msgs,
				    capmsgs * sizeof *msgs);
			}
			gk_wire_msg *m = gk_xmalloc(sizeof *m);
			gk_wire_error err;
			if (gk_wire_parse(m, line, n, &err)) {
				free(m);
				continue;
			}
			msgs[nmsgs++] = m;
			gk_event ev = {.line = line, .len = n, .msg = m};
			gk_snap_iter si;
			gk_snap_family f;
			gk_snap_begin(&si, &ev);
			while (gk_snap_next(&si, &f)) {
				char name[256];
				sanitize(name, sizeof name - 8, f.name, true);
				size_t nl = strlen(name);
				if (f.type == GK_COUNTER &&
				    (nl < 6 || strcmp(name + nl - 6, "_total")))
					strcat(name, "_total");
				void **slot = gk_smap_slot(fams, name,
				    strlen(name), true);
				struct fam *fm = *slot;
				if (!fm) {
					fm = gk_xcalloc(1, sizeof *fm);
					snprintf(fm->name, sizeof fm->name,
					    "%s", name);
					fm->type = f.type;
					fm->raw = f.name;
					fm->help = f.help;
					*slot = fm;
				}
				/* Same name and another type, or another name
				 * that sanitises to the same ("a.b", "a_b"):
				 * its series would be duplicates. */
				if (fm->type != f.type ||
				    fm->raw.len != f.name.len ||
				    memcmp(fm->raw.p, f.name.p, f.name.len)) {
					if (f.series.len > 2)
						dropped++;
					continue;
				}
				if (fm->help.type != GK_JSON_STRING ||
				    fm->help.len <= 2)
					fm->help = f.help;
				if (fm->n == fm->cap) {
					fm->cap = fm->cap ? fm->cap * 2 : 4;
					fm->v = gk_xrealloc(fm->v,
					    fm->cap * sizeof *fm->v);
				}
				fm->v[fm->n++] = (struct fam_src){p, f.series};
				if (f.series.len > 2)
					fm->has_series = true;
			}
		}
	}
	size_t nf = gk_smap_count(fams), i = 0, pos = 0;
	const char *key;
	void *v;
	struct fam **list = gk_xcalloc(nf + 1, sizeof *list);
	while (gk_smap_next(fams, &pos, &key, &v))
		list[i++] = v;
	qsort(list, nf, sizeof *list, fam_cmp);
	for (i = 0; i < nf; i++) {
		if (list[i]->has_series && list[i]->type != GK_HISTOGRAM &&
		    shadowed(fams, list[i]))
			dropped++;
		else if (list[i]->has_series)
			render_family(out, list[i], o, &dropped);
	}
	for (i = 0; i < nf; i++) {
		free(list[i]->v);
		free(list[i]);
	}
	free(list);
	gk_smap_free(fams);
	for (i = 0; i < nmsgs; i++)
		free(msgs[i]);
	free(msgs);
	if (tmp.cap > 65536)
		gk_buf_free(&tmp);
	if (ident.cap > 65536)
		gk_buf_free(&ident);
	return dropped;
}

/* ------------------------------------------------------------------ */
/* Parts                                                               */
/* ------------------------------------------------------------------ */

void
gk_expo_origin_set(gk_expo_origin *o, const gk_event *ev, const char *host)
{
	int64_t pid = 0;
	gk_json_int(ev->pid, &pid);
	memset(o, 0, sizeof *o);
	gk_buf b = {0};
	gk_event_text(ev->proc, &b);
	snprintf(o->proc, sizeof o->proc, "%s",
	    b.len ? gk_buf_cstr(&b) : "unknown");
	b.len = 0;
	if (ev->svc.type != GK_JSON_NONE) {
		gk_event_text(ev->svc, &b);
		snprintf(o->svc, sizeof o->svc, "%s", gk_buf_cstr(&b));
		o->has_svc = b.len > 0;
	}
	gk_buf_free(&b);
	snprintf(o->instance, sizeof o->instance, "%s:%lld", host,
	    (long long)pid);
}

void
gk_snapasm_init(gk_snapasm *a)
{
	memset(a, 0, sizeof *a);
	a->seq = -1;
}

void
gk_snapasm_free(gk_snapasm *a)
{
	gk_buf_free(&a->pend);
}

bool
gk_snap_parts(const gk_event *ev, int64_t *seq, int64_t *part,
    int64_t *parts)
{
	*seq = 0;
	*part = *parts = 1;
	gk_json_int(gk_wire_get(ev->msg, "seq"), seq);
	gk_json_int(gk_wire_get(ev->msg, "part"), part);
	gk_json_int(gk_wire_get(ev->msg, "parts"), parts);
	return *parts >= 1 && *part >= 1 && *part <= *parts;
}

enum gk_snapasm_result
gk_snapasm_add(gk_snapasm *a, const gk_event *ev, gk_buf *snap,
    uint64_t *ts_ms)
{
	int64_t seq, part, parts;
	if (!gk_snap_parts(ev, &seq, &part, &parts))
		return GK_SNAPASM_INVALID;
	enum gk_snapasm_result r = GK_SNAPASM_PENDING;
	if (part == 1) {
		if (a->seq >= 0 && a->pend.len) {
			r = GK_SNAPASM_INCOMPLETE;
			a->incomplete++;
		}
		gk_buf_reset(&a->pend);
		a->seq = seq;
		a->next = 1;
		a->parts = parts;
		a->ts_ms = gk_event_ts_ms(ev);
	}
	if (seq != a->seq || part != a->next || parts != a->parts) {
		/* A part is missing: this snapshot cannot complete. */
		if (a->pend.len) {
			r = GK_SNAPASM_INCOMPLETE;
			a->incomplete++;
		}
		gk_buf_reset(&a->pend);
		a->seq = -1;
		return r;
	}
	gk_buf_add(&a->pend, ev->line, ev->len);
	gk_buf_addc(&a->pend, 0);
	a->next++;
	if (part < parts)
		return r;
	gk_buf t = *snap;
	*snap = a->pend;
	a->pend = t;
	gk_buf_reset(&a->pend);
	if (a->pend.cap > 65536)
		gk_buf_free(&a->pend);
	*ts_ms = a->ts_ms;
	a->seq = -1;
	return GK_SNAPASM_COMPLETE;
}

void
gk_snap_interval_add(gk_snap_interval *iv, uint64_t ts_ms)
{
	if (iv->last_ts_ms && ts_ms > iv->last_ts_ms)
		iv->gap[iv->n++ % GK_SNAP_GAPS] = ts_ms - iv->last_ts_ms;
	if (ts_ms > iv->last_ts_ms)
		iv->last_ts_ms = ts_ms;
}

uint64_t
gk_snap_interval_ms(const gk_snap_interval *iv, uint64_t dflt_ms)
{
	if (!iv->n)
		return dflt_ms;
	uint64_t m = 0;
	for (unsigned i = 0; i < GK_SNAP_GAPS && i < iv->n; i++)
		if (iv->gap[i] > m)
			m = iv->gap[i];
	return m;
}

void
gk_expo_left_out(gk_export *ex, size_t n)
{
	static uint64_t untold, told_ms;
	gk_export_dropped(ex, n);
	untold += n;
	uint64_t now = gk_monotonic_ms();
	if (!untold || (told_ms && now - told_ms < 1000))
		return;
	told_ms = now;
	char f[64];
	snprintf(f, sizeof f, "count=%llu", (unsigned long long)untold);
	gk_log(GK_WARN,
	       "metric families, series or labels left out: their names "
	       "collide once sanitised, or the types differ",
	       f);
	untold = 0;
}

gk_expo_src
gk_expo_src_of(const gk_buf *snap, const gk_expo_origin *o,
    const gk_expo_restarts *r, bool with_instance)
{
	return (gk_expo_src){.snap = snap->data,
	    .len = snap->len,
	    .svc = o->has_svc ? o->svc : NULL,
	    .proc = o->proc,
	    .instance = with_instance ? o->instance : NULL,
	    .offsets = r->offsets};
}

void
gk_expo_restarts_part(gk_expo_restarts *r, const gk_expo_src *last,
    int64_t seq, int64_t part)
{
	if (last && last->len && part == 1 && seq <= r->last_seq &&
	    !r->pending)
		r->pending = gk_expo_offsets_restart(last);
}

bool
gk_expo_restarts_complete(gk_expo_restarts *r, int64_t seq,
    const gk_expo_origin *o)
{
	r->last_seq = seq;
	if (!r->pending)
		return false;
	gk_expo_offsets_free(r->offsets);
	r->offsets = r->pending;
	r->pending = NULL;
	char f[320], g[160];
	snprintf(f, sizeof f, "instance=%s", o->instance);
	snprintf(g, sizeof g, "process=%s", o->proc);
	gk_log(GK_INFO,
	    "process restarted with the same pid: its counters go on from "
	    "their last values",
	    g, f);
	return true;
}

void
gk_expo_restarts_free(gk_expo_restarts *r)
{
	gk_expo_offsets_free(r->offsets);
	gk_expo_offsets_free(r->pending);
	r->offsets = r->pending = NULL;
}

