/*
 * export_fold.h: what the plugins for flat metric namespaces (statsd,
 * Graphite) and for cumulative-to-delta conversion share (internal).
 *
 *   gk_fold_*    labels folded into a dotted metric path, the way
 *                Prometheus's Graphite bridge does it:
 *                PREFIX.NAME.LABEL1.VALUE1.LABEL2.VALUE2, each component
 *                reduced to [A-Za-z0-9_-] ('.' and anything else becomes
 *                '_'), an empty one written "_";
 *   gk_fmt_value a number as plain decimal digits when it is a whole
 *                number below 2^53, else as gk_fmt_float writes it;
 *   gk_deltas    the increase of each counter since the last snapshot of
 *                its process: a counter that went down was reset (the
 *                process restarted it), so its value is the increase.
 */
#ifndef GK_EXPORT_FOLD_H
#define GK_EXPORT_FOLD_H

#include "export.h"

/* Append s reduced to [A-Za-z0-9_-] ("_" when empty). */
void gk_fold_component(gk_buf *out, const char *s, size_t n);
/* Append the string (or the raw text) of a JSON value, reduced. */
void gk_fold_json(gk_buf *out, gk_json v);
/* Append ".KEY.VALUE" for every label of the object labels. */
void gk_fold_labels(gk_buf *out, gk_json labels);
/* Append "PREFIX.NAME", or "NAME" when prefix is NULL or empty. */
void gk_fold_name(gk_buf *out, const char *prefix, gk_json name);
/* Append ".svc.SVC" (when the event has a svc) and ".proc.PROC" ("unknown"
 * when it has none). */
void gk_fold_origin(gk_buf *out, const gk_event *ev);

void gk_fmt_value(gk_buf *out, double v);

typedef struct gk_deltas gk_deltas;

gk_deltas *gk_deltas_new(size_t max_series);
void gk_deltas_free(gk_deltas *d);
enum gk_delta_result {
	GK_DELTA_OK,       /* *delta is the increase */
	GK_DELTA_BASELINE, /* first value of a series, kept as the baseline */
	GK_DELTA_FULL,     /* the table is full: not tracked, dropped */
};
/*
 * The increase of the series at key, now worth value.  A series seen for
 * the first time counts from zero (*delta = value) when from_zero, else
 * its value is only kept as the baseline.  A value below the last one is a
 * reset: *delta = value.  A key holds no NUL byte: build it from the raw
 * JSON text of the event (which holds no control character) joined by
 * '\x1f'.
 */
enum gk_delta_result gk_deltas_update(gk_deltas *d, const char *key,
    size_t n, double value, bool from_zero, uint64_t now_ms, double *delta);
/* Forget the series not updated since before_ms; returns how many. */
size_t gk_deltas_expire(gk_deltas *d, uint64_t before_ms);
/* Forget the series whose key starts with prefix (a process that
 * restarted); returns how many. */
size_t gk_deltas_forget(gk_deltas *d, const char *prefix, size_t n);
size_t gk_deltas_count(const gk_deltas *d);

#endif
