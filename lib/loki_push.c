/*
 * loki_push.c: events as entries of Loki's push API (POST
 * /loki/api/v1/push, JSON), and the bound on distinct label sets (see
 * gk_loki in logship.h).
 *
 * Each event is one element of "streams":
 *   {"stream":{"svc":"orders","level":"warn"},
 *    "values":[["1796376600123456000","<the event's JSON line>"]]}
 * Loki groups the elements of a push that share a label set into one
 * stream, in the order they came.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logship.h"

/* Loki's default max_label_value_length: a longer value costs the push
 * (400, "label value too long"). */
#define MAX_LABEL_VALUE 2048

struct gk_loki {
	char **labels;
	size_t nlabels;
	char **static_kv; /* "name\0value" each */
	size_t nstatic;
	size_t max_streams;
	gk_smap *seen;
	gk_buf key, val;
	gk_series *m_streams, *m_overflow, *m_cut;
};

gk_loki *
gk_loki_new(const char *const *labels, size_t nlabels,
            const char *const *static_labels, size_t nstatic,
            size_t max_streams)
{
	gk_loki *l = gk_xcalloc(1, sizeof *l);
	l->labels = gk_xcalloc(nlabels + 1, sizeof *l->labels);
	for (size_t i = 0; i < nlabels; i++)
		l->labels[i] = gk_xstrdup(labels[i]);
	l->nlabels = nlabels;
	l->static_kv = gk_xcalloc(nstatic + 1, sizeof *l->static_kv);
	for (size_t i = 0; i < nstatic; i++) {
		/* "name=value" -> "name\0value" */
		l->static_kv[i] = gk_xstrdup(static_labels[i]);
		char *eq = strchr(l->static_kv[i], '=');
		if (eq)
			*eq = 0;
	}
	l->nstatic = nstatic;
	l->max_streams = max_streams ? max_streams : 1000;
	l->seen = gk_smap_new();
	l->m_streams = gk_metric_series(gk_gauge_new(
	    "gk_export_loki_streams",
	    "Distinct label sets seen (bounded by --max-streams)", NULL));
	l->m_overflow = gk_metric_series(gk_counter_new(
	    "gk_export_loki_overflow_total",
	    "Events sent to the _overflow stream: past --max-streams label "
	    "sets",
	    NULL));
	l->m_cut = gk_metric_series(
	    gk_counter_new("gk_export_loki_label_cut_total",
	                   "Label values cut to Loki's 2048-byte limit", NULL));
	return l;
}

void
gk_loki_free(gk_loki *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nlabels; i++)
		free(l->labels[i]);
	for (size_t i = 0; i < l->nstatic; i++)
		free(l->static_kv[i]);
	free(l->labels);
	free(l->static_kv);
	gk_smap_free(l->seen);
	gk_buf_free(&l->key);
	gk_buf_free(&l->val);
	free(l);
}

size_t
gk_loki_streams(const gk_loki *l)
{
	return gk_smap_count(l->seen);
}

/* The value of label i for ev into l->val, cut to MAX_LABEL_VALUE bytes
 * on a character boundary (counted when count); false when the event has
 * no such member (or it is empty). */
static bool
label_value(gk_loki *l, const gk_event *ev, size_t i, bool count)
{
	gk_buf_reset(&l->val);
	gk_json v;
	if (!strcmp(l->labels[i], "type"))
		gk_buf_adds(&l->val, gk_event_type_name(ev->type));
	else if (!strcmp(l->labels[i], "level") && ev->type == GK_EV_LOG)
		gk_buf_adds(&l->val, gk_level_name(gk_event_level(ev)));
	else if ((v = gk_wire_get(ev->msg, l->labels[i])).type !=
	             GK_JSON_NONE &&
	         v.type != GK_JSON_NULL)
		gk_event_text(v, &l->val);
	if (l->val.len > MAX_LABEL_VALUE) {
		size_t n = MAX_LABEL_VALUE;
		while (n && ((unsigned char)l->val.data[n] & 0xc0) == 0x80)
			n--;
		l->val.len = n;
		if (count)
			gk_counter_add(l->m_cut, 1);
	}
	return l->val.len > 0;
}

void
gk_loki_entry(gk_loki *l, const gk_event *ev, gk_buf *out)
{
	/* The label set, as a key: values NUL-separated, absent as \1. */
	gk_buf_reset(&l->key);
	bool any = l->nstatic > 0;
	for (size_t i = 0; i < l->nlabels; i++) {
		if (label_value(l, ev, i, true)) {
			gk_buf_add(&l->key, l->val.data, l->val.len);
			any = true;
		} else {
			gk_buf_addc(&l->key, 1);
		}
		gk_buf_addc(&l->key, 0);
	}
	/* Loki refuses a stream without labels, and with it the whole push:
	 * an event that has none of the labels gets its type as one. */
	const char *fallback = NULL;
	if (!any) {
		fallback = gk_event_type_name(ev->type);
		gk_buf_adds(&l->key, "\2type=");
		gk_buf_adds(&l->key, fallback);
	}
	bool overflow = false;
	if (!gk_smap_get(l->seen, l->key.data ? l->key.data : "", l->key.len)) {
		if (gk_smap_count(l->seen) >= l->max_streams) {
			overflow = true;
			gk_counter_add(l->m_overflow, 1);
		} else {
			void **slot = gk_smap_slot(
			    l->seen, l->key.data ? l->key.data : "", l->key.len,
			    true);
			*slot = l; /* any non-NULL: seen */
			gk_gauge_set(l->m_streams,
			             (double)gk_smap_count(l->seen));
		}
	}
	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	gk_jw_key(&w, "stream");
	gk_jw_object(&w);
	for (size_t i = 0; i < l->nstatic; i++) {
		const char *k = l->static_kv[i];
		gk_jw_key(&w, k);
		gk_jw_cstr(&w, k + strlen(k) + 1);
	}
	for (size_t i = 0; i < l->nlabels; i++) {
		if (overflow) {
			gk_jw_key(&w, l->labels[i]);
			gk_jw_cstr(&w, "_overflow");
		} else if (label_value(l, ev, i, false)) {
			gk_jw_key(&w, l->labels[i]);
			gk_jw_string(&w, l->val.data, l->val.len);
		}
	}
	if (fallback && !overflow) {
		gk_jw_key(&w, "type");
		gk_jw_cstr(&w, fallback);
	}
	gk_jw_object_end(&w);
	gk_jw_key(&w, "values");
	gk_jw_array(&w);
	gk_jw_array(&w);
	char ns[32];
	snprintf(ns, sizeof ns, "%llu000",
	         (unsigned long long)gk_event_ts_us_or_now(ev));
	gk_jw_cstr(&w, ns);
	gk_jw_string(&w, ev->line, ev->len);
	gk_jw_array_end(&w);
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
}
