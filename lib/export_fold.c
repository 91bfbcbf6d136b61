/*
 * export_fold.c: dotted metric paths, plain numbers and counter deltas for
 * the statsd and Graphite plugins (see export_fold.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_fold.h"

void
gk_fold_component(gk_buf *out, const char *s, size_t n)
{
	if (!n) {
		gk_buf_addc(out, '_');
		return;
	}
	gk_buf_reserve(out, n);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '_' || c == '-';
		gk_buf_addc(out, ok ? (char)c : '_');
	}
}

void
gk_fold_json(gk_buf *out, gk_json v)
{
	gk_buf t = {0};
	gk_event_text(v, &t);
	gk_fold_component(out, t.data ? t.data : "", t.len);
	gk_buf_free(&t);
}

void
gk_fold_labels(gk_buf *out, gk_json labels)
{
	gk_json_iter it;
	gk_json k, v;
	gk_json_iter_init(&it, labels);
	while (gk_json_iter_next(&it, &k, &v)) {
		gk_buf_addc(out, '.');
		gk_fold_json(out, k);
		gk_buf_addc(out, '.');
		gk_fold_json(out, v);
	}
}

void
gk_fold_name(gk_buf *out, const char *prefix, gk_json name)
{
	if (prefix && *prefix) {
		gk_fold_component(out, prefix, strlen(prefix));
		gk_buf_addc(out, '.');
	}
	gk_fold_json(out, name);
}

void
gk_fold_origin(gk_buf *out, const gk_event *ev)
{
	if (ev->svc.type != GK_JSON_NONE) {
		gk_buf_adds(out, ".svc.");
		gk_fold_json(out, ev->svc);
	}
	gk_buf_adds(out, ".proc.");
	if (ev->proc.type != GK_JSON_NONE)
		gk_fold_json(out, ev->proc);
	else
		gk_buf_adds(out, "unknown");
}

void
gk_fmt_value(gk_buf *out, double v)
{
	if (isfinite(v) && v == floor(v) && fabs(v) < 9007199254740992.0) {
		char t[32];
		snprintf(t, sizeof t, "%.0f", v == 0 ? 0.0 : v); /* no "-0" */
		gk_buf_adds(out, t);
		return;
	}
	gk_fmt_float(out, v);
}

/* ------------------------------------------------------------------ */
/* Deltas                                                              */
/* ------------------------------------------------------------------ */

struct last {
	double value;
	uint64_t seen_ms;
};

struct gk_deltas {
	gk_smap *m;
	size_t max;
};

gk_deltas *
gk_deltas_new(size_t max_series)
{
	gk_deltas *d = gk_xcalloc(1, sizeof *d);
	d->m = gk_smap_new();
	d->max = max_series ? max_series : 100000;
	return d;
}

void
gk_deltas_free(gk_deltas *d)
{
	if (!d)
		return;
	size_t pos = 0;
	const char *k;
	void *v;
	while (gk_smap_next(d->m, &pos, &k, &v))
		free(v);
	gk_smap_free(d->m);
	free(d);
}

enum gk_delta_result
gk_deltas_update(gk_deltas *d, const char *key, size_t n, double value,
    bool from_zero, uint64_t now_ms, double *delta)
{
	void **slot = gk_smap_slot(d->m, key, n, false);
	if (!slot) {
		if (gk_smap_count(d->m) >= d->max)
			return GK_DELTA_FULL;
		slot = gk_smap_slot(d->m, key, n, true);
		struct last *l = gk_xcalloc(1, sizeof *l);
		l->value = value;
		l->seen_ms = now_ms;
		*slot = l;
		*delta = value;
		return from_zero ? GK_DELTA_OK : GK_DELTA_BASELINE;
	}
	struct last *l = *slot;
	*delta = value >= l->value ? value - l->value : value;
	l->value = value;
	l->seen_ms = now_ms;
	return GK_DELTA_OK;
}

size_t
gk_deltas_expire(gk_deltas *d, uint64_t before_ms)
{
	size_t pos = 0, n = 0;
	const char *k;
	void *v;
	while (gk_smap_next(d->m, &pos, &k, &v)) {
		struct last *l = v;
		if (l->seen_ms >= before_ms)
			continue;
		/* Keys hold no NUL (see export_fold.h). */
		free(l);
		gk_smap_del(d->m, k, strlen(k));
		n++;
	}
	return n;
}

size_t
gk_deltas_forget(gk_deltas *d, const char *prefix, size_t n)
{
	size_t pos = 0, gone = 0;
	const char *k;
	void *v;
	while (gk_smap_next(d->m, &pos, &k, &v)) {
		size_t kl = strlen(k);
		if (kl < n || memcmp(k, prefix, n))
			continue;
		free(v);
		gk_smap_del(d->m, k, kl);
		gone++;
	}
	return gone;
}

size_t
gk_deltas_count(const gk_deltas *d)
{
	return gk_smap_count(d->m);
}
