/*
 * influx_line.h: events as InfluxDB line protocol (internal; used by
 * gk-export-influx).
 *
 *   measurement[,tag=value...] field=value[,field=value...] timestamp
 *
 * Escaping, as InfluxDB's parser (1.x and 2.x) reads it: in a
 * measurement, commas and spaces take a backslash; in tag keys, tag
 * values and field keys, commas, equals signs and spaces do; any other
 * backslash is itself (the parser never reads two as one); a trailing
 * backslash would escape the separator after it, so it is left out
 * (counted); in a string field value, double quotes and backslashes take
 * a backslash.  A newline cannot be escaped outside a string field
 * value: it is written as a space there.
 * A measurement starting with '#' (a comment line) gains a '_' in front.
 * Tags with an empty key or value, and fields with an empty key, are left
 * out (InfluxDB refuses them).  A label named svc, proc, host, pid or time
 * is the tag label_NAME; a label whose tag key is already in the point is
 * left out (InfluxDB drops a point with a key twice).  Timestamps are
 * nanoseconds.
 */
#ifndef GK_INFLUX_LINE_H
#define GK_INFLUX_LINE_H

#include "export.h"

typedef struct gk_influx_opts {
	const char *host;        /* the host tag; NULL for none */
	bool pid_tag;            /* a pid tag on metric points */
	const char *logs;        /* measurement of log events; NULL: none */
} gk_influx_opts;

/* Counts of what could not be written. */
typedef struct gk_influx_stats {
	uint64_t not_finite; /* NaN or infinite values left out */
	uint64_t empty;      /* points with no field left, not written */
	uint64_t empty_keys; /* fields with an empty key left out, and points
	                        with an empty measurement not written */
	uint64_t dup_tags;   /* labels left out: their tag key was in the
	                        point already (label_svc beside svc) */
	uint64_t backslashes; /* names whose trailing backslashes were cut */
	uint64_t bad_time;    /* events of a ts past what InfluxDB holds
	                         (2262), not written */
	uint64_t bad_pid;     /* log events whose pid, not an integer, was
	                         left out */
} gk_influx_stats;

/* Append to out the escaped text: measurement (is_measurement) or a tag
 * key, tag value or field key, without its trailing backslashes. */
void gk_influx_name(gk_buf *out, const char *s, size_t n,
    bool is_measurement);
/* n without the trailing backslashes of s, which cannot be written. */
size_t gk_influx_name_len(const char *s, size_t n);
/* Append "..." a string field value, escaped. */
void gk_influx_string(gk_buf *out, const char *s, size_t n);

/*
 * The points of one event, each line ended by '\n', appended to out: one
 * per series of a metrics event (counter and gauge: field value;
 * histogram: sum, count, and one field per bucket named by its bound),
 * one for a log event when o->logs is set.  Returns how many.
 */
size_t gk_influx_event(const gk_event *ev, const gk_influx_opts *o,
    gk_buf *out, gk_influx_stats *st);

#endif
