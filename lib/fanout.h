/*
 * fanout.h: one event stream fed to several exporter plugin processes
 * (gk-exporter --to; see gk-exporter(1)).  Internal to gokit.
 *
 * Each sink is a plugin process gk-export-NAME with a bounded buffer of
 * its own (a gk_equeue: past its bound the oldest events are dropped,
 * counted and told), so a slow, stuck or dead plugin never holds up the
 * others.  A plugin that exits is started again with backoff; what it left
 * unread in its pipe is counted as lost.  At the end of the input, or on
 * TERM, each sink gets what it holds, then EOF, within the drain timeout.
 * Everything runs on the caller's gk_loop.
 *
 * Metrics, each labelled {sink}: gk_exporter_sent_total,
 * gk_exporter_dropped_total, gk_exporter_restarts_total,
 * gk_exporter_lost_total, gk_exporter_queue_bytes; and
 * gk_exporter_raw_total (lines wrapped as raw log events).
 */
#ifndef GK_FANOUT_H
#define GK_FANOUT_H

#include "gokit.h"

#define GK_FANOUT_MAX_SINKS 32

typedef struct gk_fanout gk_fanout;

typedef struct gk_fanout_opts {
	size_t buffer_bytes;  /* per-sink bound in bytes (0: 4 MiB) */
	size_t buffer_events; /* per-sink bound in events (0: none) */
	uint64_t drain_ms;    /* time given to the sinks at the end */
} gk_fanout_opts;

gk_fanout *gk_fanout_new(gk_loop *loop, const gk_fanout_opts *o);
void gk_fanout_free(gk_fanout *f);
/*
 * Add a sink from "NAME[:ARG,ARG...]" (arguments split on commas, "\,"
 * for a comma, "\\" for a backslash).  Returns -1 with *why set (a hint
 * for a usage error) when malformed or past GK_FANOUT_MAX_SINKS.
 */
int gk_fanout_add(gk_fanout *f, const char *spec, const char **why);
/* Start every sink's plugin and read the events from fd (non-blocking, a
 * pipe, or a regular file read as fast as the sinks take it). */
void gk_fanout_start(gk_fanout *f, int fd);
/* One line, its newline included, to every sink. */
void gk_fanout_push(gk_fanout *f, const char *line, size_t len);
/* TERM or INT: drain, then stop the plugins; a second one kills them. */
void gk_fanout_term(gk_fanout *f);
/* Pass a signal on to every running plugin. */
void gk_fanout_signal(gk_fanout *f, int signo);
/* After the loop stopped: say what was dropped, last. */
void gk_fanout_finish(gk_fanout *f);

/* ------------------------------------------------------------------ */
/* Between the fan-out and its input (fanout_input.c)                  */
/* ------------------------------------------------------------------ */

typedef struct gk_fanout_input gk_fanout_input;

/* Read lines from fd into f, each at most max_line bytes. */
gk_fanout_input *gk_fanout_input_new(gk_fanout *f, gk_loop *loop, int fd,
                                     size_t max_line);
/* Watch fd, or read it from a timer when it is a regular file. */
void gk_fanout_input_start(gk_fanout_input *in);
/* No more reading: a last line without newline is pushed. */
void gk_fanout_input_stop(gk_fanout_input *in);
void gk_fanout_input_free(gk_fanout_input *in);

/* True while a live sink holds more than half its bound (pacing a file). */
bool gk_fanout_busy(const gk_fanout *f);
/* Let every sink write what it can now. */
void gk_fanout_pump(gk_fanout *f);
/* A line longer than the bound was skipped: counted dropped everywhere. */
void gk_fanout_too_long(gk_fanout *f);
/* The input ended: drain. */
void gk_fanout_end(gk_fanout *f);

#endif
