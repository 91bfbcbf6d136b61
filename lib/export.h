/*
 * export.h: what the exporter plugins (exporters/gk-export-NAME) have in
 * common.  A plugin is a small program: it parses its options, calls
 * gk_export_new() with its callbacks, and gk_export_run().  The runtime
 * reads events (gk-events(5)) from stdin on a gk_loop, wraps lines that are
 * not JSON as log events with "raw":true, writes the plugin's own metrics
 * snapshots every GK_METRICS_INTERVAL, handles TERM/INT (drain, then exit 0),
 * HUP and USR1, and offers the pieces every backend needs:
 *
 *   gk_equeue   a bounded queue of records that drops the oldest first and
 *               counts what it dropped;
 *   gk_backoff  exponential backoff with jitter;
 *   gk_econn    a connection to a backend (TCP, UDP, unix stream or
 *               datagram) that reconnects with backoff and keeps what it
 *               could not send yet in a gk_equeue;
 *   gk_ehttp    batches POSTed with libcurl from a sender thread, retried
 *               with backoff in order, never reordered or sent twice once
 *               acknowledged;
 *   snapshot walking: the families and series of a metrics event.
 *
 * Every plugin counts, as metrics of its own (on its event fd):
 *   gk_export_events_total     events read from stdin
 *   gk_export_raw_total        lines that were not JSON, wrapped
 *   gk_export_sent_total       records delivered to the backend
 *   gk_export_dropped_total    records dropped (queue bound, rejected)
 *   gk_export_errors_total     backend errors (send, connect, HTTP status)
 *   gk_export_reconnects_total connections (re)established after a failure
 *   gk_export_queue_bytes      bytes waiting for the backend (gauge)
 *   gk_export_too_long_total   event lines past the bound, dropped
 *   gk_export_lone_surrogates_total  events holding a lone UTF-16
 *                              surrogate escape, read with U+FFFD in its
 *                              place (not wrapped as raw)
 *   gk_export_ts_out_of_range_total  events whose ts nanoseconds since
 *                              the epoch do not hold (before 1970, after
 *                              2554-07-21T23:34:33.709551615Z): read as
 *                              events without ts
 */
#ifndef GK_EXPORT_H
#define GK_EXPORT_H

#include <stdio.h>

#include "gokit.h"

/* ------------------------------------------------------------------ */
/* Events as a plugin sees them                                        */
/* ------------------------------------------------------------------ */

enum gk_event_type {
	GK_EV_LOG = 0,
	GK_EV_METRICS,
	GK_EV_SPAN,
	GK_EV_ACCESS,
	GK_EV_OTHER,
};

typedef struct gk_event {
	const char *line; /* the JSON object, without newline */
	size_t len;
	const gk_wire_msg *msg; /* its top-level members */
	enum gk_event_type type;
	bool raw; /* a line that was not JSON, wrapped as a log event */
	/* Common members (GK_JSON_NONE when absent). */
	gk_json ts, proc, pid, svc, level, text;
} gk_event;

/* The event a parsed line holds: its common members and its type, read
 * from m (which ev points into; raw: a wrapped line that was not JSON). */
void gk_event_read(gk_event *ev, const gk_wire_msg *m, bool raw);

/* ts (RFC 3339, up to nine fraction digits, Z or an offset) in nanoseconds
 * since the epoch; 0 when absent, malformed, or outside what a uint64_t of
 * nanoseconds holds (before 1970, after 2554-07-21T23:34:33.709551615Z). */
uint64_t gk_event_ts_ns(gk_json ts);
/* The same in milliseconds and in microseconds. */
uint64_t gk_event_ts_ms(const gk_event *ev);
uint64_t gk_event_ts_us(const gk_event *ev);
/* The level (GK_INFO when absent or unknown). */
enum gk_level gk_event_level(const gk_event *ev);
/* True for the common members (ts, type, level, proc, pid, svc, msg). */
bool gk_event_common_key(gk_json key);
/* Append the unescaped string value v, or the raw text of a non-string. */
void gk_event_text(gk_json v, gk_buf *out);
/*
 * A line that fails to parse may only hold a lone UTF-16 surrogate escape
 * (\ud800 not followed by a low one, or \udc00 alone), which RFC 8259 leaves
 * undefined and JavaScript's and Python's writers let through.  Writes to
 * out the line with each such escape replaced by \ufffd and returns how
 * many there were; 0 (out untouched) when there were none.
 */
size_t gk__event_mend_surrogates(const char *line, size_t len, gk_buf *out);
/* Append line (not JSON) wrapped as a log event with "raw":true: ts now,
 * level info, the text as msg; no newline. */
void gk_event_wrap_raw(gk_buf *out, const char *line, size_t len);

/* ------------------------------------------------------------------ */
/* The plugin runtime                                                  */
/* ------------------------------------------------------------------ */

typedef struct gk_export gk_export;

typedef struct gk_export_def {
	const char *name; /* "prometheus": proc is "gk-export-prometheus" */
	/* Every event, in order. */
	void (*on_event)(gk_export *ex, const gk_event *ev, void *arg);
	/*
	 * stdin reached EOF, or TERM/INT: deliver what is pending, then call
	 * gk_export_done().  Without it the plugin ends at once.  The runtime
	 * ends it anyway after the drain timeout (GK_EXPORT_DRAIN_TIMEOUT,
	 * default 5s), counting what was left as dropped.
	 */
	void (*on_drain)(gk_export *ex, void *arg);
	/* SIGHUP (reopen files). */
	void (*on_hup)(gk_export *ex, void *arg);
	/* Called when stdin reached EOF; return true to keep running (a
	 * server, such as prometheus, that still answers scrapes).  TERM then
	 * ends it. */
	bool (*keep_running)(gk_export *ex, void *arg);
	void *arg;
} gk_export_def;

/* Set up events, the loop, signals, metrics and the stdin reader. */
gk_export *gk_export_new(const gk_export_def *def);
gk_loop *gk_export_loop(gk_export *ex);
/* Run until drained; returns the exit status. */
int gk_export_run(gk_export *ex);
/* Draining is finished (from on_drain or later). */
void gk_export_done(gk_export *ex);
bool gk_export_draining(const gk_export *ex);
/* Stop reading stdin for a while (backpressure), or go on. */
void gk_export_pause(gk_export *ex, bool paused);
/* Lines longer than max (default 4 MiB) are dropped and counted. */
void gk_export_set_max_line(gk_export *ex, size_t max);
/* Feed one line as if read from stdin (tests, benchmarks). */
void gk_export_feed(gk_export *ex, const char *line, size_t len);

void gk_export_sent(gk_export *ex, uint64_t n);
void gk_export_dropped(gk_export *ex, uint64_t n);
void gk_export_error(gk_export *ex, uint64_t n);
void gk_export_reconnected(gk_export *ex);
/* queue_bytes is the sum of every queue's bytes; add a signed change. */
void gk_export_queue_change(gk_export *ex, int64_t delta);
/*
 * Something that holds records for the backend (a gk_econn, a gk_ehttp, a
 * gk_logfile) registers itself: at the drain timeout the runtime calls
 * abandon(arg), which gives up what it holds and returns how many records
 * that was; they are counted dropped, and queue_bytes drops to 0, so that
 * sent + dropped covers every record once the plugin is done.  At most 16.
 */
void gk_export_hold(gk_export *ex, size_t (*abandon)(void *), void *arg);
void gk_export_unhold(gk_export *ex, void *arg);

/*
 * A plugin's command line: the common options --help and --version are
 * handled by the plugin; these print them in the common shape.
 */
void gk_export_version(const char *name);
/* The one optional operand argv[first] (an address, a URL; first is
 * getopt's optind), or dflt when there is none; more is a usage error:
 * "unexpected argument: X (expected EXPECTED)". */
const char *gk_export_operand(int argc, char **argv, int first,
    const char *dflt, const char *expected);

/* ------------------------------------------------------------------ */
/* Bounded queue: drop oldest                                          */
/* ------------------------------------------------------------------ */

typedef struct gk_equeue gk_equeue;

/* max_bytes bounds the bytes of the records held (0: 4 MiB); max_records
 * bounds their count (0: none). */
gk_equeue *gk_equeue_new(size_t max_bytes, size_t max_records);
void gk_equeue_free(gk_equeue *q);
/*
 * Append a record.  Older records are dropped to make room; a record larger
 * than max_bytes is itself dropped.  Returns the count of records dropped.
 */
size_t gk_equeue_push(gk_equeue *q, const void *p, size_t n);
/* The oldest record; false when empty.  Valid until the next push/pop. */
bool gk_equeue_peek(const gk_equeue *q, const char **p, size_t *n);
void gk_equeue_pop(gk_equeue *q);
size_t gk_equeue_count(const gk_equeue *q);
size_t gk_equeue_bytes(const gk_equeue *q);
/* Records dropped since the queue was made. */
uint64_t gk_equeue_dropped(const gk_equeue *q);

/* ------------------------------------------------------------------ */
/* Backoff                                                             */
/* ------------------------------------------------------------------ */

typedef struct gk_backoff {
	uint64_t min_ms, max_ms, cur_ms;
} gk_backoff;

/* min 100ms, max 30s unless set otherwise */
void gk_backoff_init(gk_backoff *b, uint64_t min_ms, uint64_t max_ms);
/* The next delay (doubling, +-20% jitter). */
uint64_t gk_backoff_next(gk_backoff *b);
void gk_backoff_reset(gk_backoff *b);

/* ------------------------------------------------------------------ */
/* Reconnecting connection                                             */
/* ------------------------------------------------------------------ */

enum gk_econn_kind {
	GK_ECONN_TCP = 1,
	GK_ECONN_UDP,
	GK_ECONN_UNIX_STREAM,
	GK_ECONN_UNIX_DGRAM,
};

typedef struct gk_econn gk_econn;

/*
 * addr: "tcp:HOST:PORT", "udp:HOST:PORT", "unix:PATH" (datagram, then
 * stream when the socket is a stream socket), "unixstream:PATH", or
 * "HOST:PORT" of kind dflt.  Returns NULL with *why set when malformed.
 * Records pushed wait in a queue of max_bytes (0: 4 MiB) while the
 * connection is down, the oldest dropped first; on a stream each record is
 * written whole and in order; on a datagram socket each is one datagram.
 */
gk_econn *gk_econn_new(gk_export *ex, const char *addr,
    enum gk_econn_kind dflt, size_t max_bytes, const char **why);
void gk_econn_send(gk_econn *c, const void *p, size_t n);
size_t gk_econn_pending(const gk_econn *c);
bool gk_econn_connected(const gk_econn *c);
enum gk_econn_kind gk_econn_kind(const gk_econn *c);
/* Called once the queue is empty (for drain); NULL to stop. */
void gk_econn_on_empty(gk_econn *c, void (*fn)(gk_econn *, void *),
    void *arg);
/* A plugin's on_drain whose records all go through c: gk_export_done()
 * once c's queue is empty. */
void gk_econn_drain(gk_econn *c);
/* Wait between reconnections from min_ms, doubling up to max_ms (the
 * default is 100ms to 30s). */
void gk_econn_set_backoff(gk_econn *c, uint64_t min_ms, uint64_t max_ms);
void gk_econn_free(gk_econn *c);

/* ------------------------------------------------------------------ */
/* HTTP batches (libcurl, one sender thread)                           */
/* ------------------------------------------------------------------ */

typedef struct gk_ehttp gk_ehttp;

/* What to do with an answer (status 0: no answer, a network error). */
enum gk_ehttp_verdict {
	GK_EHTTP_OK,    /* acknowledged: the batch is done */
	GK_EHTTP_RETRY, /* send the same batch again after backoff */
	GK_EHTTP_DROP,  /* rejected for good: count its records dropped */
};

typedef struct gk_ehttp_opts {
	const char *url;
	const char *method;       /* NULL: POST */
	const char *content_type; /* "text/plain; charset=utf-8" */
	const char *const *headers; /* "Name: value", NULL-terminated */
	bool gzip;                  /* Content-Encoding: gzip */
	size_t batch_bytes;         /* close a batch past this (0: 256 KiB) */
	size_t batch_records;       /* ... or this many records (0: 5000) */
	uint64_t batch_ms;          /* ... or this long after its first (1s) */
	size_t max_bytes;           /* bound of the batches waiting (2 MiB) */
	uint64_t timeout_ms;        /* per request (10s) */
	/* NULL: 2xx OK; 408, 429, 5xx and network errors RETRY; else DROP */
	enum gk_ehttp_verdict (*verdict)(long status, void *arg);
	void *verdict_arg;
	/* For a batch of n records DROPped: how many the backend refused,
	 * from its answer (the first 64 KiB of the body; NULL: all n).  The
	 * others were written (InfluxDB's partial write) and count as sent.
	 * Called on the sender thread with verdict_arg. */
	size_t (*refused)(long status, const char *body, size_t len, size_t n,
	    void *arg);
	/* For a batch of n records acknowledged (OK): how many of them the
	 * backend rejected all the same, from its answer (the first 64 KiB
	 * of the body; one longer is counted in
	 * gk_export_http_answers_cut_total), such as OTLP's partialSuccess
	 * (NULL: none).  It sets *rejected to the items the backend says it
	 * rejected (in its unit) and its reason into msg (cap bytes; "" for
	 * none).  The records returned count as dropped, not sent, and are not
	 * sent again; the rejection is logged, at most once a second (an error
	 * when records were dropped, else a warning).  On the sender thread,
	 * with verdict_arg. */
	size_t (*partial)(const char *body, size_t len, size_t n,
	                  uint64_t *rejected, char *msg, size_t cap, void *arg);
	/* Between records of one batch (NULL: nothing; "\n" for lines). */
	const char *separator;
	/* Around a batch ("[" and "]" for a JSON array), NULL for none. */
	const char *prefix, *suffix;
	/* Backoff between retries of a batch (0: 100ms and 30s).  A
	 * Retry-After in the answer (seconds or an HTTP date) is honoured
	 * instead, up to 60s.  verdict is called on the sender thread. */
	uint64_t backoff_min_ms, backoff_max_ms;
} gk_ehttp_opts;

gk_ehttp *gk_ehttp_new(gk_export *ex, const gk_ehttp_opts *o);
/* Add one record to the open batch. */
void gk_ehttp_add(gk_ehttp *h, const void *p, size_t n);
/* Close the open batch now (drain calls it). */
void gk_ehttp_flush(gk_ehttp *h);
/* Close the open batch and call fn once every batch is done (drain). */
void gk_ehttp_drain(gk_ehttp *h, void (*fn)(gk_ehttp *, void *), void *arg);
/* The on_drain of a plugin with one sender: drain h, then gk_export_done. */
void gk_ehttp_drain_export(gk_ehttp *h, gk_export *ex);
/* Records not yet acknowledged (open batch, queued, in flight). */
size_t gk_ehttp_pending(gk_ehttp *h);
/* A command line's "Name=value" as a header line "Name: value" (malloc'd);
 * NULL when the name is not an HTTP token or the value holds CR or LF. */
char *gk_ehttp_header_arg(const char *arg);
void gk_ehttp_free(gk_ehttp *h);

/*
 * The command-line options every gk_ehttp plugin takes (export_http_opts.c):
 * -H/--header, -z/--gzip, --batch-bytes, --batch-records, --batch-interval,
 * --max-queue, --timeout, --retry-max and, unless no_retry_min,
 * --retry-min.  A plugin puts GK_EHTTP_SHORTOPTS in its getopt string and
 * GK_EHTTP_LONGOPTS (and GK_EHTTP_LONGOPT_RETRY_MIN) in its option array,
 * fills a gk_ehttp_cli with gk_ehttp_cli_init() after its defaults are in
 * *o, and hands every option to gk_ehttp_option() before its own switch.
 * Bad values are usage errors (one line, exit 64).
 */
enum {
	GK_EHTTP_OPT_BATCH_BYTES = 0x4800,
	GK_EHTTP_OPT_BATCH_RECORDS,
	GK_EHTTP_OPT_BATCH_INTERVAL,
	GK_EHTTP_OPT_MAX_QUEUE,
	GK_EHTTP_OPT_TIMEOUT,
	GK_EHTTP_OPT_RETRY_MIN,
	GK_EHTTP_OPT_RETRY_MAX,
};
#define GK_EHTTP_SHORTOPTS "H:z"
#define GK_EHTTP_LONGOPTS                                                    \
	{"header", required_argument, NULL, 'H'},                            \
	    {"gzip", no_argument, NULL, 'z'},                                \
	    {"batch-bytes", required_argument, NULL, GK_EHTTP_OPT_BATCH_BYTES}, \
	    {"batch-records", required_argument, NULL,                       \
	        GK_EHTTP_OPT_BATCH_RECORDS},                                 \
	    {"batch-interval", required_argument, NULL,                      \
	        GK_EHTTP_OPT_BATCH_INTERVAL},                                \
	    {"max-queue", required_argument, NULL, GK_EHTTP_OPT_MAX_QUEUE},  \
	    {"timeout", required_argument, NULL, GK_EHTTP_OPT_TIMEOUT},      \
	    {"retry-max", required_argument, NULL, GK_EHTTP_OPT_RETRY_MAX}
#define GK_EHTTP_LONGOPT_RETRY_MIN                                           \
	{"retry-min", required_argument, NULL, GK_EHTTP_OPT_RETRY_MIN}

/* Most --header options a plugin may allow (it may allow fewer). */
#define GK_EHTTP_MAX_HEADERS 32

typedef struct gk_ehttp_cli {
	gk_ehttp_opts *o;        /* what the options set */
	gk_ehttp_opts dflt;      /* *o before the options: --help's defaults */
	/* "Name: value" lines of -H (malloc'd) and of the plugin (it may add
	 * one more past max_headers); NULL-terminated for o->headers. */
	const char *headers[GK_EHTTP_MAX_HEADERS + 2];
	bool owned[GK_EHTTP_MAX_HEADERS + 2]; /* from -H: freed by _free */
	size_t nheaders, max_headers;
	size_t min_queue;  /* least --max-queue, bytes */
	bool no_retry_min; /* no --retry-min: --retry-max lowers the first */
} gk_ehttp_cli;

/* c->o = o, its defaults kept; at most max_headers -H (<= 32). */
void gk_ehttp_cli_init(gk_ehttp_cli *c, gk_ehttp_opts *o, size_t max_headers,
    size_t min_queue);
/* Handle a common option: 1 when opt was one (arg parsed into c), 0 when
 * it is the plugin's own; a bad value is a usage error. */
int gk_ehttp_option(gk_ehttp_cli *c, int opt, const char *arg);
/* After the options: --retry-max not shorter than --retry-min, and, with
 * check_batch, --batch-bytes not larger than --max-queue (usage errors).
 * Points c->o->headers at c->headers. */
void gk_ehttp_cli_check(gk_ehttp_cli *c, bool check_batch);
/* The usage lines of --batch-bytes to --retry-max, with c's defaults: a
 * batch counts records called `unit` ("point": "... or N points");
 * queue_note follows "batches waiting" (", per signal"). */
void gk_ehttp_usage(FILE *f, const gk_ehttp_cli *c, const char *unit,
    const char *queue_note);
/* The operand left after the options (getopt's optind): the base URL,
 * dflt when none; more than one, or one not http:// or https://, is a
 * usage error. */
const char *gk_ehttp_url_arg(int argc, char **argv, const char *dflt);
/* Free the -H lines (not those the plugin added itself). */
void gk_ehttp_cli_free(gk_ehttp_cli *c);


/* ------------------------------------------------------------------ */
/* Metrics snapshots                                                   */
/* ------------------------------------------------------------------ */

typedef struct gk_snap_family {
	gk_json name, help; /* strings */
	enum gk_metric_type type;
	gk_json series; /* array */
} gk_snap_family;

typedef struct gk_snap_series {
	gk_json labels; /* object of strings */
	double value;   /* counter, gauge */
	double sum;     /* histogram */
	double count;
	gk_json buckets; /* histogram: [[le, count], ...] cumulative */
} gk_snap_series;

/* Iterate the families of a metrics event; false at the end.  Families of
 * an unknown type are skipped. */
typedef struct gk_snap_iter {
	gk_json_iter it;
} gk_snap_iter;
void gk_snap_begin(gk_snap_iter *it, const gk_event *ev);
bool gk_snap_next(gk_snap_iter *it, gk_snap_family *f);
/* Iterate the series of a family. */
void gk_snap_series_begin(gk_json_iter *it, const gk_snap_family *f);
bool gk_snap_series_next(gk_json_iter *it, const gk_snap_family *f,
    gk_snap_series *s);
/* Call fn for every series of every family of a metrics event, in order. */
void gk_snap_walk(const gk_event *ev,
    void (*fn)(const gk_snap_family *f, const gk_snap_series *s, void *arg),
    void *arg);
/* Iterate buckets: le (+Inf as INFINITY), cumulative count. */
bool gk_snap_bucket_next(gk_json_iter *it, double *le, double *count);
/*
 * The buckets of a histogram series in increasing le order, +Inf last, in
 * *v (grown as needed, *cap its size); returns how many.  gk-events(5)
 * lists them so, but another producer may not, and every backend needs
 * the order (Prometheus' text format, OTLP's explicitBounds, deltas per
 * bucket).  A bucket whose le is NaN or repeats one before it is left out
 * and counted in *dropped (when not NULL).
 */
typedef struct gk_snap_bucket {
	double le, count;
} gk_snap_bucket;
size_t gk_snap_buckets(const gk_snap_series *s, gk_snap_bucket **v, size_t *cap,
                       size_t *dropped);
/* A JSON number or "NaN"/"+Inf"/"-Inf" string as a double. */
bool gk_snap_number(gk_json v, double *out);

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* A float as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it (what
 * Prometheus writes): "0.005", "1e-05", "2.5", "1e+06", "+Inf", "NaN". */
void gk_fmt_float(gk_buf *out, double v);

/* A string map (open addressing), values owned by the caller. */
typedef struct gk_smap gk_smap;
gk_smap *gk_smap_new(void);
void gk_smap_free(gk_smap *m);
/* The slot for key, created (NULL) when absent with create. */
void **gk_smap_slot(gk_smap *m, const char *key, size_t n, bool create);
void *gk_smap_get(const gk_smap *m, const char *key, size_t n);
bool gk_smap_del(gk_smap *m, const char *key, size_t n);
size_t gk_smap_count(const gk_smap *m);
/* Iterate: *pos starts at 0; false at the end. */
bool gk_smap_next(const gk_smap *m, size_t *pos, const char **key,
    void **value);

#endif
