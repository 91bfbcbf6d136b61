/*
 * otlp.h: gokit events (gk-events(5)) as the JSON records of tracing
 * backends: OTLP/HTTP JSON (opentelemetry-proto's JSON mapping) and
 * Zipkin v2.  Used by exporters/gk-export-otlp and gk-export-zipkin.
 *
 * Each function appends one record to out and returns 0; or returns -1
 * with *why set (a static string) when the event cannot be encoded, and
 * appends nothing.  gk_otlp_metrics returns 1 when a snapshot holds no
 * series (nothing to send).
 */
#ifndef GK_OTLP_H
#define GK_OTLP_H

#include "export.h"

/* Lowercase hex of exactly n digits, not all zero, into out (n + 1). */
bool gk_otlp_hex_id(gk_json v, size_t n, char *out);

/* The ids and times of a span event (gk-events(5)), as both encoders
 * check them. */
typedef struct gk_otlp_span_ids {
	char trace[33], span[17], parent[17]; /* lowercase hex */
	bool has_parent;                      /* parent_id given, not null */
	int64_t start_us, dur_us;             /* dur_us 0 when absent */
} gk_otlp_span_ids;

/* 0; or -1 with *why when an id is not hex of its length, start_us is
 * below min_start_us or duration_us is negative. */
int gk_otlp_span_ids_get(const gk_wire_msg *m, int64_t min_start_us,
    gk_otlp_span_ids *s, const char **why);

/* A JSON value as an OTLP AnyValue. */
void gk_otlp_anyvalue(gk_jw *w, gk_json v);

/* A span event as one ResourceSpans (resource, one scope, one span). */
int gk_otlp_span(const gk_event *ev, gk_buf *out, const char **why);

/* Any other event (log, access, raw, ...) as one ResourceLogs. */
int gk_otlp_log(const gk_event *ev, gk_buf *out, const char **why);

/*
 * The process_start_time_seconds of a metrics event, in nanoseconds;
 * false when this part does not carry it.
 */
bool gk_otlp_snapshot_start(const gk_event *ev, uint64_t *ns);

/*
 * A metrics event (one part of a snapshot) as one ResourceMetrics:
 * counters as cumulative monotonic sums, gauges, histograms with
 * per-bucket counts.  start_ns: the process's start (0: unknown).
 */
int gk_otlp_metrics(const gk_event *ev, uint64_t start_ns, gk_buf *out,
    const char **why);

/* A span event as one Zipkin v2 span object. */
int gk_zipkin_span(const gk_event *ev, gk_buf *out, const char **why);

#endif
