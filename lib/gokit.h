/*
 * gokit.h: the public interface of libgokit.
 *
 * Ownership, stated once (as jq's jv.h does): a pointer that a gk_ function
 * returns is borrowed.  It stays valid until the object it came from is
 * changed or freed, and the caller never frees it.  Functions whose name ends
 * in _new return an object the caller owns and releases with the matching
 * _free.  A gk_buf passed in to be filled is appended to, never reset.
 *
 * Out of memory is not an error a stage can recover from: every allocation
 * in libgokit that fails ends the process with exit status 111 and a fatal
 * event, as skalibs does.
 */
#ifndef GOKIT_H
#define GOKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define GK_VERSION "0.1.0"

/* Exit statuses, fixed for every program (sysexits.h where one fits). */
#define GK_EXIT_OK 0
#define GK_EXIT_USAGE 64	/* EX_USAGE: bad option or argument */
#define GK_EXIT_SOFTWARE 70	/* EX_SOFTWARE: internal error */
#define GK_EXIT_OSERR 71	/* EX_OSERR: unable to bind, fork, ... */
#define GK_EXIT_IOERR 74	/* EX_IOERR: stdin or stdout failed */
#define GK_EXIT_CHILD 75	/* EX_TEMPFAIL: south child died, --no-restart */
#define GK_EXIT_NOMEM 111	/* out of memory (as skalibs) */

/* ------------------------------------------------------------------ */
/* Byte buffers                                                        */
/* ------------------------------------------------------------------ */

typedef struct gk_buf {
	char *data;
	size_t len;
	size_t cap;
} gk_buf;

void gk_buf_reserve(gk_buf *b, size_t extra);
void gk_buf_add(gk_buf *b, const void *p, size_t n);
void gk_buf_addc(gk_buf *b, char c);

/* The three above are on every hot path: inline when there is room, the
 * functions (for a pointer, or another language) only grow the buffer. */
static inline void
gk__buf_reserve_inline(gk_buf *b, size_t extra)
{
	if (b->cap - b->len <= extra)
		(gk_buf_reserve)(b, extra);
}

static inline void
gk__buf_add_inline(gk_buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	gk__buf_reserve_inline(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static inline void
gk__buf_addc_inline(gk_buf *b, char c)
{
	gk__buf_reserve_inline(b, 1);
	b->data[b->len++] = c;
}
#define gk_buf_reserve(b, extra) gk__buf_reserve_inline((b), (extra))
#define gk_buf_add(b, p, n) gk__buf_add_inline((b), (p), (n))
#define gk_buf_addc(b, c) gk__buf_addc_inline((b), (c))
void gk_buf_adds(gk_buf *b, const char *s);
void gk_buf_addf(gk_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void gk_buf_adduint(gk_buf *b, uint64_t v);
/* Drop the first n bytes. */
void gk_buf_consume(gk_buf *b, size_t n);
void gk_buf_reset(gk_buf *b);
void gk_buf_free(gk_buf *b);
/* NUL-terminate without counting the NUL in len; returns data. */
char *gk_buf_cstr(gk_buf *b);

void *gk_xmalloc(size_t n);
void *gk_xcalloc(size_t n, size_t size);
void *gk_xrealloc(void *p, size_t n);
char *gk_xstrdup(const char *s);

/* ------------------------------------------------------------------ */
/* JSON values and the wire codec (gk-wire(5))                         */
/* ------------------------------------------------------------------ */

enum gk_json_type {
	GK_JSON_NONE = 0, /* absent */
	GK_JSON_OBJECT,
	GK_JSON_ARRAY,
	GK_JSON_STRING,
	GK_JSON_NUMBER,
	GK_JSON_TRUE,
	GK_JSON_FALSE,
	GK_JSON_NULL,
};

/*
 * A JSON value as a span of raw text inside an already validated line.
 * For a string, p points at the opening quote and len includes both quotes.
 */
typedef struct gk_json {
	enum gk_json_type type;
	const char *p;
	size_t len;
} gk_json;

/* The type of a validated value, from its first byte. */
static inline enum gk_json_type
gk_json_type_of(char c)
{
	switch (c) {
	case '{': return GK_JSON_OBJECT;
	case '[': return GK_JSON_ARRAY;
	case '"': return GK_JSON_STRING;
	case 't': return GK_JSON_TRUE;
	case 'f': return GK_JSON_FALSE;
	case 'n': return GK_JSON_NULL;
	default: return GK_JSON_NUMBER;
	}
}

/* Where a line was rejected, and why. */
typedef struct gk_wire_error {
	size_t offset;
	const char *reason; /* static string, e.g. "unterminated string" */
} gk_wire_error;

#define GK_WIRE_MAX_FIELDS 64
#define GK_WIRE_MAX_DEPTH 64

/* One top-level member of a message. */
typedef struct gk_wire_field {
	gk_json key; /* always a string */
	gk_json value;
} gk_wire_field;

/* A validated message: the line and an index of its top-level members. */
typedef struct gk_wire_msg {
	const char *line; /* not owned */
	size_t len;       /* without the newline */
	unsigned nfields;
	uint64_t escaped; /* bit i: key i holds an escape (compared slowly) */
	gk_wire_field field[GK_WIRE_MAX_FIELDS];
} gk_wire_msg;

/*
 * Validate one line (strict RFC 8259, UTF-8, top level an object, at most
 * GK_WIRE_MAX_FIELDS members and GK_WIRE_MAX_DEPTH nesting, no duplicate
 * top-level key) and index its top-level members.  The line holds no newline.
 * Returns 0, or -1 with *err filled.
 */
int gk_wire_parse(gk_wire_msg *m, const char *line, size_t len,
    gk_wire_error *err);
/* Validate any single JSON value (used by tests and gk-log). */
int gk_json_validate(const char *p, size_t len, gk_wire_error *err);

/* The value of top-level member key; GK_JSON_NONE when absent. */
gk_json gk_wire_get(const gk_wire_msg *m, const char *key);

/* The hot path's form of gk_wire_get(): inline, so that a literal key's
 * length and compare are known at compile time.  Keys that hold an escape
 * are compared out of line. */
int gk__wire_find_escaped(const gk_wire_msg *m, const char *key, size_t n);
static inline int
gk__wire_find(const gk_wire_msg *m, const char *key, size_t n)
{
	for (unsigned i = 0; i < m->nfields; i++) {
		const gk_json *k = &m->field[i].key;
		if (k->len == n + 2 && __builtin_memcmp(k->p + 1, key, n) == 0 &&
		    !(m->escaped >> i & 1))
			return (int)i;
	}
	return m->escaped ? gk__wire_find_escaped(m, key, n) : -1;
}

static inline gk_json
gk__wire_get_inline(const gk_wire_msg *m, const char *key)
{
	/* strlen of a literal is folded once this is inlined */
	int i = gk__wire_find(m, key, strlen(key));
	return i < 0 ? (gk_json){GK_JSON_NONE, NULL, 0} : m->field[i].value;
}
#define gk_wire_get(m, key) gk__wire_get_inline((m), (key))

/*
 * Internal, for the hot path: the text of a string value in *p, *n: its
 * wire bytes when it holds no escape (0), else unescaped into tmp (1); -1
 * if not a string.
 */
int gk__json_text(gk_json v, gk_buf *tmp, const char **p, size_t *n);
/* Internal: both indexes name the same spans (a check of a built index). */
bool gk__wire_same_index(const gk_wire_msg *a, const gk_wire_msg *b);
/* Append the unescaped contents of a string value to out.  -1 if not a string. */
int gk_json_string(gk_json v, gk_buf *out);
/* True when v is a string equal to s (no allocation when v holds no escapes). */
bool gk_json_eq(gk_json v, const char *s);
bool gk_json_eqn(gk_json v, const char *s, size_t n);
/* An integral number within +-2^53.  False otherwise. */
bool gk_json_int(gk_json v, int64_t *out);
bool gk_json_double(gk_json v, double *out);

/* Iterate the members of an object (key set) or the elements of an array. */
typedef struct gk_json_iter {
	const char *p;
	const char *end;
	bool object;
} gk_json_iter;
void gk_json_iter_init(gk_json_iter *it, gk_json container);
/* key may be NULL for arrays.  Returns false at the end. */
bool gk_json_iter_next(gk_json_iter *it, gk_json *key, gk_json *value);
/* Member of an object value by (unescaped) key name. */
gk_json gk_json_member(gk_json object, const char *key);

/*
 * Splice: append to out the line of m with top-level member key set to the
 * raw JSON text raw (replacing its value in place, or appended as the last
 * member).  Every other byte is kept as it was.  No newline is appended.
 */
void gk_wire_splice(const gk_wire_msg *m, const char *key, const char *raw,
    size_t rawlen, gk_buf *out);
/* Same, with the member removed. */
void gk_wire_remove(const gk_wire_msg *m, const char *key, gk_buf *out);

/* JSON writer: builds objects and arrays into a gk_buf, commas handled. */
typedef struct gk_jw {
	gk_buf *out;
	int depth;
	uint64_t need_comma; /* one bit per nesting level */
	bool after_key;
} gk_jw;

void gk_jw_init(gk_jw *w, gk_buf *out);
void gk_jw_object(gk_jw *w);
void gk_jw_object_end(gk_jw *w);
void gk_jw_array(gk_jw *w);
void gk_jw_array_end(gk_jw *w);
void gk_jw_key(gk_jw *w, const char *key);
void gk_jw_keyn(gk_jw *w, const char *key, size_t n);
void gk_jw_string(gk_jw *w, const char *s, size_t n);
void gk_jw_cstr(gk_jw *w, const char *s);
void gk_jw_int(gk_jw *w, int64_t v);
void gk_jw_double(gk_jw *w, double v);
void gk_jw_bool(gk_jw *w, bool v);
void gk_jw_null(gk_jw *w);
/* Already-encoded JSON text, copied as it is, but for its bytes below
 * 0x20 (whitespace, in valid JSON), written as spaces so that the output
 * stays one line.  p must be one valid JSON value: that is not checked
 * (callers give what they wrote or parsed themselves). */
void gk_jw_raw(gk_jw *w, const char *p, size_t n);
/* gk_jw_raw for text the caller made and knows to hold no byte below
 * 0x20 (literals, a formatted timestamp): not scanned (internal). */
void gk__jw_raw_plain(gk_jw *w, const char *p, size_t n);
/* Bytes as a base64 string. */
void gk_jw_base64(gk_jw *w, const void *p, size_t n);
/* "a,b,,c" as the array ["a","b","c"] (empty items left out). */
void gk_jw_comma_list(gk_jw *w, const char *list);

/* Append s as a quoted, escaped JSON string (invalid UTF-8 becomes U+FFFD). */
void gk_json_quote(gk_buf *out, const char *s, size_t n);
bool gk_utf8_valid(const char *p, size_t n);
void gk_base64_encode(gk_buf *out, const void *p, size_t n);
/* Returns -1 on malformed input. */
int gk_base64_decode(gk_buf *out, const char *p, size_t n);
/* Internal: the string hash of the library's tables (FNV-1a). */
uint64_t gk__hash_bytes(const char *p, size_t n);

/* ------------------------------------------------------------------ */
/* Events (gk-events(5)) and logging                                   */
/* ------------------------------------------------------------------ */

enum gk_level {
	GK_DEBUG = 0,
	GK_INFO,
	GK_WARN,
	GK_ERROR,
	GK_FATAL,
};

/*
 * Set up the event stream for this process: proc name, and GK_EVENTS_FD,
 * GK_LOG_LEVEL, GK_SERVICE, GK_EVENTS_FORMAT from the environment.
 * Programs call it first; the event functions work without it (fd 2, info).
 */
void gk_events_init(const char *proc);
const char *gk_proc_name(void);
bool gk_log_enabled(enum gk_level level);
const char *gk_level_name(enum gk_level level);
int gk_level_parse(const char *s); /* -1 if unknown */

/*
 * gk_log(GK_WARN, "rate limited", "key=10.0.0.7", "limit=200"):
 * a log event with key=value fields; a value that is a JSON number, true,
 * false or null is written as such, anything else as a string.
 */
#define gk_log(level, ...) gk_log_trace(level, NULL, __VA_ARGS__, (char *)0)
/* The same, with the trace id of the request it concerns (may be NULL). */
void gk_log_trace(enum gk_level level, const char *trace_id, const char *msg,
    ...);
/* printf-style message, no fields. */
void gk_logf(enum gk_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Log at fatal level, flush, exit with status. */
void gk_fatal(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/*
 * Structured events of any type: begin writes the common members (ts, type,
 * proc, pid, svc) into an open object and returns the writer; add members,
 * each name once and none of the common ones (nothing checks: gk_log's
 * key=value fields are the way for names from outside), then end.  An event
 * longer than PIPE_BUF - 1 bytes is cut to fit: its longest string members are
 * shortened and "truncated":true is added.
 */
gk_jw *gk_event_begin(const char *type);
void gk_event_end(void);

/*
 * Write queued events now.  A running loop writes them at the end of a turn
 * once 32 KiB are queued or the oldest has waited 10 ms; each write(2) holds
 * whole lines only, at most PIPE_BUF bytes to a pipe or socket.  Outside a
 * loop every event is written at once.
 */
void gk_events_flush(void);
/* When true (set by the loop while it runs), events wait for the turn's end. */
void gk_events_set_batching(bool on);
/* For gk_loop_run: the end of a turn, and how long held events may wait
 * (-1: none held); turn_end returns what due_ms would. */
int gk__events_turn_end(void);
int gk__events_due_ms(void);
/* For gk-log: flush as at exit (waiting up to 1 s for room); how many events
 * since gk_events_init were not written (0: all were), *fd the event fd,
 * *err why the last was not. */
uint64_t gk__events_finish(int *fd, int *err);

/* ------------------------------------------------------------------ */
/* Metrics                                                             */
/* ------------------------------------------------------------------ */

enum gk_metric_type { GK_COUNTER, GK_GAUGE, GK_HISTOGRAM };

typedef struct gk_metric gk_metric; /* a family: name, help, label names */
typedef struct gk_series gk_series; /* one set of label values */

/* labels: comma-separated label names ("method,code") or NULL. */
gk_metric *gk_counter_new(const char *name, const char *help,
    const char *labels);
gk_metric *gk_gauge_new(const char *name, const char *help,
    const char *labels);
/* buckets: upper bounds, ascending; NULL for the Prometheus default buckets. */
gk_metric *gk_histogram_new(const char *name, const char *help,
    const char *labels, const double *buckets, size_t nbuckets);

/*
 * The series with these label values, in the order of the family's label
 * names, created on first use.  At most GK_METRIC_MAX_SERIES per family:
 * past that, values go to one series labelled "_overflow" and
 * gk_metrics_series_dropped_total counts them.
 */
#define GK_METRIC_MAX_SERIES 1000
gk_series *gk_series_get(gk_metric *m, ...); /* NULL-terminated values */
gk_series *gk_series_getv(gk_metric *m, const char *const *values);
gk_series *gk_metric_series(gk_metric *m); /* the unlabelled series */

void gk_counter_add(gk_series *s, double v);
void gk_gauge_set(gk_series *s, double v);
void gk_gauge_add(gk_series *s, double v);
void gk_histogram_observe(gk_series *s, double v);
double gk_series_value(const gk_series *s); /* counter or gauge value */
uint64_t gk_histogram_count(const gk_series *s);

/* Write a snapshot now: one or more events of type "metrics". */
void gk_metrics_snapshot(void);

/* ------------------------------------------------------------------ */
/* Event loop                                                          */
/* ------------------------------------------------------------------ */

typedef struct gk_loop gk_loop;

#define GK_READ 0x1u
#define GK_WRITE 0x4u

typedef void gk_io_fn(gk_loop *loop, int fd, unsigned events, void *arg);
typedef void gk_timer_fn(gk_loop *loop, void *arg);
typedef void gk_signal_fn(gk_loop *loop, int signo, void *arg);
typedef void gk_child_fn(gk_loop *loop, pid_t pid, int wstatus, void *arg);
typedef void gk_turn_fn(gk_loop *loop, void *arg);

/* A timer lives in memory the caller owns (inside its request, say). */
typedef struct gk_timer {
	uint64_t when_ms;
	gk_timer_fn *fn;
	void *arg;
	size_t heap_index; /* 0 when not armed */
} gk_timer;

gk_loop *gk_loop_new(void);
void gk_loop_free(gk_loop *loop);
int gk_loop_watch(gk_loop *loop, int fd, unsigned events, gk_io_fn *fn,
    void *arg);
/* The same, but an fd epoll refuses (a regular file, /dev/null), whose reads
 * and writes never block, is taken too: called every turn it has interest,
 * the loop not sleeping meanwhile (gk_loop_watch fails on it). */
int gk_loop_watch_any(gk_loop *loop, int fd, unsigned events, gk_io_fn *fn,
    void *arg);
int gk_loop_modify(gk_loop *loop, int fd, unsigned events);
void gk_loop_unwatch(gk_loop *loop, int fd);
/* Arm (or re-arm) t to fire after ms milliseconds. */
void gk_timer_start(gk_loop *loop, gk_timer *t, uint64_t ms, gk_timer_fn *fn,
    void *arg);
void gk_timer_stop(gk_loop *loop, gk_timer *t);
bool gk_timer_armed(const gk_timer *t);
int gk_loop_signal(gk_loop *loop, int signo, gk_signal_fn *fn, void *arg);
/* Called with the wait status when pid exits (SIGCHLD, reaped by the loop). */
void gk_loop_child(gk_loop *loop, pid_t pid, gk_child_fn *fn, void *arg);
/* Called at the end of every turn, after all reads: the place to write. */
void gk_loop_on_turn_end(gk_loop *loop, gk_turn_fn *fn, void *arg);
int gk_loop_run(gk_loop *loop);
void gk_loop_stop(gk_loop *loop);
/* Monotonic milliseconds and microseconds, and the wall clock in
 * milliseconds, cached at the start of the turn (one clock read a turn). */
uint64_t gk_loop_now(gk_loop *loop);
uint64_t gk_loop_now_us(gk_loop *loop);
uint64_t gk_loop_realtime_ms(gk_loop *loop);
uint64_t gk_monotonic_ms(void);
uint64_t gk_monotonic_us(void);

/* Metrics snapshots of a program on a loop: a gk_signal_fn for SIGUSR1
 * that writes one now, and one every GK_METRICS_INTERVAL (10s when unset
 * or malformed; 0: none) on a timer the caller owns (zeroed before its
 * first use, as every gk_timer). */
void gk_metrics_on_signal(gk_loop *loop, int signo, void *arg);
typedef struct gk_metrics_timer {
	gk_timer timer;
	uint64_t ms;
} gk_metrics_timer;
void gk_metrics_every(gk_loop *loop, gk_metrics_timer *m);
/* Wall clock, milliseconds and microseconds since the epoch. */
uint64_t gk_realtime_ms(void);
uint64_t gk_realtime_us(void);

/* ------------------------------------------------------------------ */
/* Units: durations and rates                                          */
/* ------------------------------------------------------------------ */

/* "250ms", "2s", "1m", "1h"; a bare number is seconds.  -1 if malformed. */
int gk_parse_duration_ms(const char *s, uint64_t *ms);
/* "100/s", "6000/m", "10/h": events per second. -1 if malformed. */
int gk_parse_rate(const char *s, double *per_second);
/* The same grammar, exactly: num events per den_s seconds, as written
 * ("0.25/m" is 25 per 6000 s).  -1 if malformed, zero, or either part
 * does not fit in 64 bits. */
int gk_parse_rate_exact(const char *s, uint64_t *num, uint64_t *den_s);
/* "64k", "16KiB", "1m", "1MiB", plain bytes.  -1 if malformed. */
int gk_parse_size(const char *s, size_t *bytes);
/* A whole number in [min, max]; -1 if not. */
int gk_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* One-line usage error naming the program, then exit 64. */
void gk_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* getopt_long (with opterr = 0) returned '?': the usage error naming the
 * unknown option, "unknown option -x (see --help)", then exit 64. */
void gk_usage_bad_option(char *const *argv) __attribute__((noreturn));
/* Any other return c of getopt_long (opterr = 0, ':' first in the
 * optstring): ':' is an option without its value, "--queue: expected a
 * value (see --help)", else as gk_usage_bad_option. */
void gk_usage_getopt(int c, char *const *argv) __attribute__((noreturn));
/*
 * For option parsers: the value of --opt, or the usage error that names it
 * and what was expected ("bad --probes: 0 (expected a whole number from 1
 * to 10000)").  min_ms and min of 1 ask for a value above 0; a larger
 * one is named in the message ("of at least 1024 bytes").
 */
uint64_t gk_opt_uint(const char *opt, const char *v, uint64_t min,
    uint64_t max);
uint64_t gk_opt_duration_ms(const char *opt, const char *v, uint64_t min_ms);
size_t gk_opt_size(const char *opt, const char *v, size_t min);

/* ------------------------------------------------------------------ */
/* systemd: socket activation and notification                         */
/* ------------------------------------------------------------------ */

/* Fds passed by LISTEN_FDS (when LISTEN_PID is us), from 3, made
 * close-on-exec; names from LISTEN_FDNAMES ("" each without it).  Unsets
 * the variables.  Returns the count, or -1 with why (a line naming the
 * variable) when they are malformed, as sd_listen_fds_with_names(3) has
 * it: LISTEN_PID or LISTEN_FDS not a number, LISTEN_FDS below 1, a passed
 * fd not open, LISTEN_FDNAMES naming more or fewer sockets. */
int gk_listen_fds(char ***names, char *why, size_t whylen);
/* sd_notify(3): "READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1".
 * A no-op without NOTIFY_SOCKET. */
int gk_notify(const char *state);
/* Keep NOTIFY_SOCKET for this process only and remove it from the
 * environment, so that children started later do not notify systemd. */
void gk_notify_take(void);
/* Half of WATCHDOG_USEC in ms when the watchdog applies to us, else 0. */
uint64_t gk_watchdog_interval_ms(void);

/* ------------------------------------------------------------------ */
/* Messages, requests and the stage runtime                            */
/* ------------------------------------------------------------------ */

/* A wire message: one line it owns, and its index. */
typedef struct gk_msg {
	gk_buf line;
	gk_wire_msg wire;
} gk_msg;

/* Takes a copy of the line; returns NULL (and fills err) when invalid. */
gk_msg *gk_msg_new(const char *line, size_t len, gk_wire_error *err);
/* Internal: an empty message whose line and index the caller writes. */
gk_msg *gk__msg_blank(void);
/* Takes the buffer itself (left empty), saving the copy. */
gk_msg *gk_msg_adopt(gk_buf *line, gk_wire_error *err);
void gk_msg_free(gk_msg *m);
gk_json gk_msg_get(const gk_msg *m, const char *key);
#define gk_msg_get(m, key) gk__wire_get_inline(&(m)->wire, (key))
/* The status of a response (0 when absent or invalid). */
int gk_msg_status(const gk_msg *m);
/* First value of header name (any case) appended unescaped to out; -1 if absent. */
int gk_msg_header(const gk_msg *m, const char *name, gk_buf *out);
/*
 * The body appended to out: body's text, or body_b64 decoded; nothing when
 * the message has neither.  -1, with a static reason in *why, when body is
 * not a string, body_b64 is not a string of padded base64 (RFC 4648 §4),
 * or both are present.
 */
int gk_msg_body(const gk_msg *m, gk_buf *out, const char **why);
/*
 * Set one top-level member to raw JSON text, keeping every other byte.  The
 * line may move: a gk_json read from m before the set is not valid after
 * it (read it again).  raw may be such a span.
 */
void gk_msg_set(gk_msg *m, const char *key, const char *raw, size_t rawlen);
void gk_msg_set_cstr(gk_msg *m, const char *key, const char *value);

/* A header as a stage sets it (lowercase name). */
typedef struct gk_header {
	const char *name;
	const char *value;
} gk_header;

/*
 * Rebuild the "headers" member of m: drop every header named in remove
 * (NULL-terminated, lowercase; NULL for none), then add each of add
 * (terminated by a NULL name; NULL for none).  Other headers keep their
 * bytes and order.
 */
void gk_msg_edit_headers(gk_msg *m, const char *const *remove,
    const gk_header *add);

typedef struct gk_stage gk_stage; /* the runtime of one stage */
typedef struct gk_req gk_req;     /* a request in flight */

/*
 * What a stage is.  Every callback is optional: without on_request a stage
 * forwards everything south, without on_response it passes every response
 * north.  Callbacks never see fds or encodings.
 */
typedef struct gk_stage_ops {
	const char *name;      /* "gk-limiter": proc name and error.stage */
	size_t req_state_size; /* bytes of zeroed per-request state */

	/* After options are parsed, before anything is bound.  Non-zero exits. */
	int (*start)(gk_stage *st, void *arg);
	/* A request arrived from north. Forward it, answer it, or hold it. */
	void (*on_request)(gk_stage *st, gk_req *req, void *arg);
	/* Its response arrived from south: look, change, record, pass. */
	void (*on_response)(gk_stage *st, gk_req *req, gk_msg *resp, void *arg);
	/*
	 * An answer made in this process (gk_answer: the stage's own, or the
	 * runtime's for a deadline or a dead south) is about to go north:
	 * change its headers as on_response may; it goes on by itself.  Only
	 * for requests that on_request saw.
	 */
	void (*on_answer)(gk_stage *st, gk_req *req, gk_msg *resp, void *arg);
	/*
	 * The request is finished, whoever answered it (south, the stage, a
	 * deadline, a vanished client); status 0 when no answer went north.
	 * Its state is freed after this returns.
	 */
	void (*on_done)(gk_stage *st, gk_req *req, int status, void *arg);
	/* Draining begins (SIGTERM), and after the last request. */
	void (*on_drain)(gk_stage *st, void *arg);
	void (*stop)(gk_stage *st, void *arg);
} gk_stage_ops;

/* gk-listener's --timeout unless given: every request a deadline. */
#define GK_HTTP_TIMEOUT_MS 30000

/* Stage-specific options, merged with the common ones by gk_stage_main. */
typedef struct gk_stage_option {
	const char *name; /* long name, without dashes */
	int short_name;   /* 0 for none */
	bool has_arg;
	const char *arg_name; /* for --help: "RATE" */
	const char *help;
} gk_stage_option;

typedef struct gk_stage_def {
	gk_stage_ops ops;
	const char *summary; /* one line for --help */
	const gk_stage_option *options; /* terminated by {0} */
	/* Called for each stage option; return 0, or -1 for a usage error
	 * (the runtime prints "PROG: usage: bad --NAME: VALUE"). */
	int (*option)(int short_name, const char *name, const char *value,
	    void *arg);
	void *arg;
	/* What the north side speaks on -l addresses without a prefix. */
	bool north_http;
	/* Accept --http: -l addresses speak HTTP instead of the wire.  A
	 * stage with a south side then fronts the stack as gk-listener
	 * would, with its default --timeout (GK_HTTP_TIMEOUT_MS). */
	bool http_option;
	/* The stage answers everything itself: no south side. */
	bool no_south;
	/* Default --timeout in ms (0: only the request's own deadline). */
	uint64_t default_timeout_ms;
	/*
	 * With no_south: the stage takes operands (what follows its options,
	 * e.g. a script or -- CMD ARGS), shown in --help as operands_usage.
	 * Called once, before start, with them (argc may be 0); return 0, or
	 * -1 for a usage error.
	 */
	int (*operands)(int argc, char **argv, void *arg);
	const char *operands_usage;
	/* Accept --fuse: the stage a name returns runs in this process,
	 * below this one, instead of as the south child of that name
	 * (gk-listener passes the built-in stages' table). */
	const struct gk_stage_def *(*fusable)(const char *name);
} gk_stage_def;

/*
 * Parse the common and stage options, set up north and south, run the loop
 * until drained; returns the exit status.  Common options:
 *   -l ADDR (repeatable) --to ADDR, -- CMD ARGS..., --restart/--no-restart,
 *   --max-inflight N, --timeout DUR, --drain-timeout DUR, --mode MODE,
 *   -h/--help, -V/--version
 */
int gk_stage_main(int argc, char **argv, const gk_stage_def *def);

gk_loop *gk_stage_loop(gk_stage *st);
const char *gk_stage_name(const gk_stage *st);
bool gk_stage_draining(const gk_stage *st);
/* Requests in flight in this stage now. */
size_t gk_stage_inflight(const gk_stage *st);

/* The request message; a stage may read it and change it with gk_msg_set. */
gk_msg *gk_req_msg(gk_req *req);
void *gk_req_state(gk_req *req);
gk_stage *gk_req_stage(gk_req *req);
/* Milliseconds since the epoch; 0 for none. */
uint64_t gk_req_deadline(const gk_req *req);
/* Monotonic ms when it arrived. */
uint64_t gk_req_arrival(const gk_req *req);
/* The trace id it carries (trace.trace_id), or NULL. */
const char *gk_req_trace_id(gk_req *req);

/* Send it south (with whatever gk_msg_set changed). */
void gk_forward(gk_req *req);
/* Pass a response north.  The runtime takes resp. */
void gk_pass(gk_req *req, gk_msg *resp);
/* Answer it here: status, extra headers (NULL-terminated array or NULL),
 * body (or NULL), and error {stage, reason} (reason NULL: no error member). */
void gk_answer(gk_req *req, int status, const gk_header *headers,
    const char *body, const char *reason);

/* ------------------------------------------------------------------ */
/* Native handlers: gk_serve(3)                                        */
/* ------------------------------------------------------------------ */

typedef struct gk_request gk_request;
typedef struct gk_response gk_response;

const char *gk_request_method(const gk_request *r);
const char *gk_request_path(const gk_request *r);
const char *gk_request_query(const gk_request *r); /* "" when none */
/* Header by lowercase name; the first value when repeated; NULL if absent. */
const char *gk_request_header(const gk_request *r, const char *name);
const char *gk_request_body(const gk_request *r, size_t *len);
const char *gk_request_remote(const gk_request *r);
const char *gk_request_id(const gk_request *r);
/* The trace id a gk-tracer north of the handler gave the request (its
 * trace.trace_id), or NULL: pass it to gk_log_trace() so that the
 * handler's logs join the request's span. */
const char *gk_request_trace_id(const gk_request *r);
/* Any other top-level member of the wire request. */
gk_json gk_request_field(const gk_request *r, const char *key);

void gk_response_status(gk_response *w, int status);
void gk_response_header(gk_response *w, const char *name, const char *value);
void gk_response_body(gk_response *w, const void *p, size_t n);
void gk_response_printf(gk_response *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef void gk_handler(const gk_request *req, gk_response *resp, void *arg);

/*
 * Run handler for every request: on stdin/stdout by default, on -l ADDR
 * sockets speaking the wire protocol, or with --http as an HTTP/1.1 server.
 * -j N runs handlers on N worker threads.  Returns the exit status.
 */
int gk_serve(int argc, char **argv, gk_handler *handler, void *arg);

#endif
