/*
 * filter.c: gk-filter, a jq program (libjq, compiled once) over each event
 * of a stream.
 *
 * Input is read with read(2) in large chunks; every complete line of a chunk
 * is parsed here (strict RFC 8259, straight into jq's jv values: faster than
 * jq's own parser, and it sees every number literal), run through the
 * program, and its outputs are dumped compactly into one buffer per
 * destination, written once per chunk.  So bulk input goes fast and a live
 * stream is never held back: whatever a read returned is answered before the
 * next read.
 *
 * - A line that is not a JSON object (or not strict JSON) is wrapped as a
 *   log event {"ts","type":"log","level":"info","proc":RAW_PROC,"msg":LINE,
 *   "raw":true} and goes through the program like any event.  Blank lines
 *   are skipped.
 * - A number jq 1.6 would round (an integer literal, or the integer part of
 *   a number without exponent, beyond +-2^53; or a number beyond the range
 *   of a double) refuses the event: an error event with the offset and the
 *   first bytes, counted, never output altered.
 * - A jq runtime error on an event: an error event (rate-limited per kind:
 *   one a second, with the count of those suppressed in between); the
 *   outputs it made before the error stand, and the stream goes on.
 * - Routes: each output goes to the first route whose expression's first
 *   output is truthy; the command is spawned with libpipeline (argv split
 *   as pipecmd_new_argstr does: no shell).  A route command that dies is
 *   reported, restarted on the next event routed to it (with backoff), and
 *   what could not be delivered meanwhile is counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <jq.h>
#include <libgen.h>
#include <math.h>
#include <pipeline.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "filter.h"
#include "log_gate.h"

#define READ_CHUNK (256u * 1024)
#define MAX_DEPTH 256          /* as jq's parser */
#define SNIPPET 120            /* bytes of an event quoted in an error */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STABLE_MS 10000 /* a route up this long restarts at once again */
/* Outputs waiting for a route command that does not read: past this, they
 * are dropped (counted) rather than stall every other output. */
#define ROUTE_BACKLOG (1u << 20)

enum err_kind {
	ERR_RUNTIME,
	ERR_NUMBER,
	ERR_TOO_LONG,
	ERR_ROUTE_EXPR,
	ERR_ROUTE,
	ERR_ROUTE_FULL,
	ERR_KINDS
};
static const char *const kind_names[ERR_KINDS] = {"runtime", "number",
    "too_long", "route_expr", "route", "route_full"};

struct route {
	char *expr;
	char *cmd;
	jq_state *jq;
	pipeline *p;
	int fd; /* -1 when not running */
	gk_buf out;	/* whole lines; the first sent bytes of it written */
	size_t sent;
	size_t out_lines;
	bool ever_started;
	uint64_t started_ms;
	uint64_t next_start_ms;
	uint64_t backoff_ms;
	uint64_t undelivered; /* since it last died */
	char label[24];
	gk_series *routed, *lost, *restarts;
};

struct gk_filter {
	jq_state *jq;
	struct route *routes;
	size_t nroutes;
	char *raw_proc;
	gk_buf out;
	gk_buf tmp; /* string unescaping */
	int out_fd;
	bool out_dead;
	bool ending; /* routes_drain: writes to routes block */
	int out_errno; /* why writing stdout failed, other than EPIPE */
	const char *cur_line; /* the event being processed, for reports */
	size_t cur_len;
	gk_log_gate rl[ERR_KINDS];
	gk_series *in, *outc, *raw, *err[ERR_KINDS];
};

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t got_stop, got_usr1;

static void
on_signal(int signo)
{
	if (signo == SIGUSR1)
		got_usr1 = 1;
	else
		got_stop = 1;
}

static void
signals_setup(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: a blocked read returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* In a route command, before exec: the dispositions a program expects. */
static void
post_fork(void)
{
	signal(SIGPIPE, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* ------------------------------------------------------------------ */
/* Reports                                                             */
/* ------------------------------------------------------------------ */

/* The first bytes of s, cut at a character boundary, NULs as spaces. */
static void
snippet(gk_buf *out, const char *s, size_t n)
{
	size_t k = n < SNIPPET ? n : SNIPPET;
	while (k < n && k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
		k--;
	size_t start = out->len;
	gk_buf_add(out, s, k);
	for (size_t i = start; i < out->len; i++)
		if (!out->data[i])
			out->data[i] = ' ';
	if (k < n)
		gk_buf_adds(out, "\xe2\x80\xa6");
	gk_buf_cstr(out);
}

/*
 * An error of a kind: counted always, reported at most once a second per
 * kind (with the number suppressed since the last report).  extra: one more
 * key=value field, or NULL.
 */
static void
report(gk_filter *f, enum err_kind kind, const char *msg, const char *why,
    const char *extra)
{
	gk_counter_add(f->err[kind], 1);
	uint64_t held;
	if (!gk_log_gate_pass(&f->rl[kind], &held))
		return;
	gk_buf k = {0}, e = {0}, ev = {0}, sup = {0};
	gk_buf_addf(&k, "kind=%s", kind_names[kind]);
	gk_buf_adds(&e, "error=");
	gk_buf_adds(&e, why ? why : "");
	const char *fields[3] = {NULL, NULL, NULL};
	int nf = 0;
	if (f->cur_line) {
		gk_buf_adds(&ev, "event=");
		snippet(&ev, f->cur_line, f->cur_len);
		fields[nf++] = ev.data;
	}
	if (held) {
		gk_buf_addf(&sup, "suppressed=%llu", (unsigned long long)held);
		fields[nf++] = sup.data;
	}
	if (extra)
		fields[nf++] = extra;
	gk_log(GK_ERROR, msg, gk_buf_cstr(&k), gk_buf_cstr(&e),
	    nf > 0 ? fields[0] : NULL, nf > 1 ? fields[1] : NULL,
	    nf > 2 ? fields[2] : NULL);
	gk_buf_free(&k);
	gk_buf_free(&e);
	gk_buf_free(&ev);
	gk_buf_free(&sup);
}

/* At the end: what the rate limit held back since the last report. */
static void
report_suppressed(gk_filter *f)
{
	for (int i = 0; i < ERR_KINDS; i++) {
		if (!f->rl[i].suppressed)
			continue;
		gk_buf k = {0}, c = {0};
		gk_buf_addf(&k, "kind=%s", kind_names[i]);
		gk_buf_addf(&c, "suppressed=%llu",
		    (unsigned long long)f->rl[i].suppressed);
		gk_log(GK_ERROR, "errors not reported one by one",
		    gk_buf_cstr(&k), gk_buf_cstr(&c));
		f->rl[i].suppressed = 0;
		gk_buf_free(&k);
		gk_buf_free(&c);
	}
}

/* jv error message as text (it may be any value: error({...})). */
static void
jv_message(jv msg, gk_buf *out)
{
	if (jv_get_kind(msg) == JV_KIND_STRING) {
		gk_buf_add(out, jv_string_value(msg),
		    (size_t)jv_string_length_bytes(jv_copy(msg)));
		jv_free(msg);
	} else {
		jv s = jv_dump_string(msg, 0);
		gk_buf_adds(out, jv_string_value(s));
		jv_free(s);
		gk_buf_adds(out, " (not a string)");
	}
	gk_buf_cstr(out);
}

/* ------------------------------------------------------------------ */
/* Parsing: strict JSON text straight into jv                          */
/* ------------------------------------------------------------------ */

struct jp {
	const char *p, *end, *start;
	const char *why; /* first failure */
	size_t off;
	bool number; /* the failure is a refused number */
	gk_buf *tmp;
};

static jv
jp_fail(struct jp *s, const char *at, const char *why)
{
	if (!s->why) {
		s->why = why;
		s->off = (size_t)(at - s->start);
	}
	return jv_invalid();
}

static inline void
jp_ws(struct jp *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
	    *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int
hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static void
add_utf8(gk_buf *b, unsigned cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	gk_buf_add(b, u, n);
}

/* At the opening quote.  Invalid UTF-8 becomes U+FFFD (as in jq). */
static jv
jp_string(struct jp *s)
{
	const char *p = s->p + 1, *e = s->end, *q = p;
	while (q < e && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
		q++;
	if (q < e && *q == '"') {
		s->p = q + 1;
		return jv_string_sized(p, (int)(q - p));
	}
	gk_buf *t = s->tmp;
	gk_buf_reset(t);
	gk_buf_add(t, p, (size_t)(q - p));
	while (q < e) {
		unsigned char c = (unsigned char)*q;
		if (c == '"') {
			s->p = q + 1;
			return jv_string_sized(t->len ? t->data : "",
			    (int)t->len);
		}
		if (c < 0x20)
			return jp_fail(s, q, "control character in a string");
		if (c != '\\') {
			const char *r = q;
			while (r < e && *r != '"' && *r != '\\' &&
			    (unsigned char)*r >= 0x20)
				r++;
			gk_buf_add(t, q, (size_t)(r - q));
			q = r;
			continue;
		}
		if (q + 1 >= e)
			break;
		char x = q[1];
		q += 2;
		switch (x) {
		case '"': gk_buf_addc(t, '"'); break;
		case '\\': gk_buf_addc(t, '\\'); break;
		case '/': gk_buf_addc(t, '/'); break;
		case 'b': gk_buf_addc(t, '\b'); break;
		case 'f': gk_buf_addc(t, '\f'); break;
		case 'n': gk_buf_addc(t, '\n'); break;
		case 'r': gk_buf_addc(t, '\r'); break;
		case 't': gk_buf_addc(t, '\t'); break;
		case 'u': {
			int v = e - q >= 4 ? hex4(q) : -1;
			if (v < 0)
				return jp_fail(s, q - 2, "bad \\u escape");
			q += 4;
			unsigned cp = (unsigned)v;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return jp_fail(s, q - 6, "lone surrogate");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				int lo = e - q >= 6 && q[0] == '\\' &&
				        q[1] == 'u' ? hex4(q + 2) : -1;
				if (lo < 0xdc00 || lo > 0xdfff)
					return jp_fail(s, q - 6,
					    "lone surrogate");
				q += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				    ((unsigned)lo - 0xdc00);
			}
			add_utf8(t, cp);
			break;
		}
		default:
			return jp_fail(s, q - 2, "bad escape");
		}
	}
	return jp_fail(s, s->p, "unterminated string");
}

static inline bool
digit(char c)
{
	return c >= '0' && c <= '9';
}

static jv
jp_number(struct jp *s)
{
	const char *b = s->p, *p = b, *e = s->end;
	bool neg = false;
	if (*p == '-') {
		neg = true;
		p++;
	}
	const char *ip = p;
	if (p < e && *p == '0')
		p++;
	else if (p < e && *p >= '1' && *p <= '9')
		while (p < e && digit(*p))
			p++;
	else
		return jp_fail(s, b, "bad number");
	size_t nint = (size_t)(p - ip);
	bool frac = false, exp = false;
	if (p < e && *p == '.') {
		p++;
		if (p >= e || !digit(*p))
			return jp_fail(s, b, "bad number");
		while (p < e && digit(*p))
			p++;
		frac = true;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < e && (*p == '+' || *p == '-'))
			p++;
		if (p >= e || !digit(*p))
			return jp_fail(s, b, "bad number");
		while (p < e && digit(*p))
			p++;
		exp = true;
	}
	s->p = p;
	if (!exp && (nint > 16 ||
	    (nint == 16 && memcmp(ip, "9007199254740992", 16) > 0))) {
		s->number = !s->why;
		return jp_fail(s, b, "number beyond 2^53 (jq would round it)");
	}
	if (!frac && !exp && nint <= 15) {
		int64_t v = 0;
		for (const char *d = ip; d < p; d++)
			v = v * 10 + (*d - '0');
		return jv_number(neg ? -(double)v : (double)v);
	}
	char small[64], *txt = small;
	size_t n = (size_t)(p - b);
	if (n >= sizeof small)
		txt = gk_xmalloc(n + 1);
	memcpy(txt, b, n);
	txt[n] = 0;
	double d = strtod(txt, NULL);
	if (txt != small)
		free(txt);
	if (isinf(d)) {
		s->number = !s->why;
		return jp_fail(s, b, "number beyond the range of a double");
	}
	return jv_number(d);
}

static jv jp_value(struct jp *s, int depth);

static jv
jp_object(struct jp *s, int depth)
{
	if (depth > MAX_DEPTH)
		return jp_fail(s, s->p, "nested too deep");
	s->p++;
	jv o = jv_object();
	jp_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return o;
	}
	for (;;) {
		jp_ws(s);
		if (s->p >= s->end || *s->p != '"') {
			jv_free(o);
			return jp_fail(s, s->p, "expected a key");
		}
		jv k = jp_string(s);
		if (!jv_is_valid(k)) {
			jv_free(o);
			return k;
		}
		jp_ws(s);
		if (s->p >= s->end || *s->p != ':') {
			jv_free(k);
			jv_free(o);
			return jp_fail(s, s->p, "expected ':'");
		}
		s->p++;
		jv v = jp_value(s, depth);
		if (!jv_is_valid(v)) {
			jv_free(k);
			jv_free(o);
			return v;
		}
		o = jv_object_set(o, k, v);
		jp_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			return o;
		}
		jv_free(o);
		return jp_fail(s, s->p, "expected ',' or '}'");
	}
}

static jv
jp_array(struct jp *s, int depth)
{
	if (depth > MAX_DEPTH)
		return jp_fail(s, s->p, "nested too deep");
	s->p++;
	jv a = jv_array();
	jp_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return a;
	}
	for (;;) {
		jv v = jp_value(s, depth);
		if (!jv_is_valid(v)) {
			jv_free(a);
			return v;
		}
		a = jv_array_append(a, v);
		jp_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == ']') {
			s->p++;
			return a;
		}
		jv_free(a);
		return jp_fail(s, s->p, "expected ',' or ']'");
	}
}

static jv
jp_literal(struct jp *s, const char *word, size_t n, jv v)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n)) {
		jv_free(v);
		return jp_fail(s, s->p, "bad literal");
	}
	s->p += n;
	return v;
}

static jv
jp_value(struct jp *s, int depth)
{
	jp_ws(s);
	if (s->p >= s->end)
		return jp_fail(s, s->p, "expected a value");
	switch (*s->p) {
	case '{': return jp_object(s, depth + 1);
	case '[': return jp_array(s, depth + 1);
	case '"': return jp_string(s);
	case 't': return jp_literal(s, "true", 4, jv_true());
	case 'f': return jp_literal(s, "false", 5, jv_false());
	case 'n': return jp_literal(s, "null", 4, jv_null());
	default:
		if (*s->p == '-' || digit(*s->p))
			return jp_number(s);
		return jp_fail(s, s->p, "unexpected character");
	}
}

/* One whole text; invalid with s->why on failure. */
static jv
jp_parse(struct jp *s, const char *p, size_t n)
{
	s->p = s->start = p;
	s->end = p + n;
	s->why = NULL;
	s->number = false;
	jv v = jp_value(s, 0);
	if (!jv_is_valid(v))
		return v;
	jp_ws(s);
	if (s->p != s->end) {
		jv_free(v);
		return jp_fail(s, s->p, "extra data after the value");
	}
	return v;
}

/* ------------------------------------------------------------------ */
/* Raw lines                                                           */
/* ------------------------------------------------------------------ */

static jv
now_ts(void)
{
	static time_t last_sec = -1;
	static char last[24];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(last, sizeof last, "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = ts.tv_sec;
	}
	char out[48];
	snprintf(out, sizeof out, "%s.%06ldZ", last,
	    (long)(ts.tv_nsec / 1000) % 1000000);
	return jv_string(out);
}

static jv
raw_event(gk_filter *f, const char *line, size_t len)
{
	jv o = jv_object();
	o = jv_object_set(o, jv_string("ts"), now_ts());
	o = jv_object_set(o, jv_string("type"), jv_string("log"));
	o = jv_object_set(o, jv_string("level"), jv_string("info"));
	o = jv_object_set(o, jv_string("proc"), jv_string(f->raw_proc));
	o = jv_object_set(o, jv_string("msg"),
	    jv_string_sized(len ? line : "", (int)len));
	o = jv_object_set(o, jv_string("raw"), jv_true());
	gk_counter_add(f->raw, 1);
	return o;
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

static bool
route_start(gk_filter *f, struct route *r)
{
	r->p = pipeline_new();
	pipeline_command(r->p, pipecmd_new_argstr(r->cmd));
	pipeline_want_in(r->p, -1);
	pipeline_ignore_signals(r->p, 0);
	pipeline_start(r->p);
	FILE *in = pipeline_get_infile(r->p);
	r->fd = in ? fileno(in) : -1;
	if (r->fd < 0) {
		pipeline_free(r->p);
		r->p = NULL;
		return false;
	}
	/* Later routes must not hold this pipe open; a command that does
	 * not read must not block the others (ROUTE_BACKLOG), but at the
	 * end its backlog is written whole. */
	fcntl(r->fd, F_SETFD, FD_CLOEXEC);
	if (!f->ending)
		fcntl(r->fd, F_SETFL, O_NONBLOCK);
	r->started_ms = gk_monotonic_ms();
	if (r->ever_started) {
		gk_counter_add(r->restarts, 1);
		gk_buf a = {0}, b = {0}, c = {0};
		gk_buf_addf(&a, "route=%s", r->label);
		gk_buf_adds(&b, "cmd=");
		gk_buf_adds(&b, r->cmd);
		gk_buf_addf(&c, "undelivered=%llu",
		    (unsigned long long)r->undelivered);
		gk_log(GK_INFO, "route command restarted", gk_buf_cstr(&a),
		    gk_buf_cstr(&b), gk_buf_cstr(&c));
		gk_buf_free(&a);
		gk_buf_free(&b);
		gk_buf_free(&c);
	}
	r->ever_started = true;
	r->undelivered = 0;
	return true;
}

/* The command is gone (EPIPE, or reaped): say so, plan the restart. */
static void
route_died(gk_filter *f, struct route *r, size_t lost_lines)
{
	int status = pipeline_wait(r->p); /* closes our end, reaps */
	pipeline_free(r->p);
	r->p = NULL;
	r->fd = -1;
	r->undelivered += lost_lines;
	gk_counter_add(r->lost, (double)lost_lines);
	uint64_t now = gk_monotonic_ms();
	if (now - r->started_ms >= STABLE_MS)
		r->backoff_ms = 0;
	r->next_start_ms = now + r->backoff_ms;
	gk_buf why = {0}, a = {0}, b = {0};
	gk_buf_addf(&why, "status=%d", status);
	gk_buf_addf(&a, "route=%s", r->label);
	gk_buf_adds(&b, "restart_in_ms=");
	gk_buf_adduint(&b, r->backoff_ms);
	const char *save = f->cur_line;
	f->cur_line = NULL;
	/* Not rate-limited as errors are: each death is worth a line. */
	gk_counter_add(f->err[ERR_ROUTE], 1);
	gk_buf c = {0};
	gk_buf_adds(&c, "cmd=");
	gk_buf_adds(&c, r->cmd);
	gk_log(GK_ERROR, "route command exited", gk_buf_cstr(&a),
	    gk_buf_cstr(&c), gk_buf_cstr(&why), gk_buf_cstr(&b));
	f->cur_line = save;
	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (r->backoff_ms > BACKOFF_MAX_MS)
		r->backoff_ms = BACKOFF_MAX_MS;
	gk_buf_free(&why);
	gk_buf_free(&a);
	gk_buf_free(&b);
	gk_buf_free(&c);
}

/* Reaped by libpipeline's SIGCHLD handler already? */
static void
route_check(gk_filter *f, struct route *r)
{
	if (r->fd >= 0 && pipeline_get_pid(r->p, 0) == -1)
		route_died(f, r, 0);
}

static size_t
count_lines(const char *p, size_t n)
{
	size_t k = 0;
	for (const char *e = p + n; p < e; p++) {
		p = memchr(p, '\n', (size_t)(e - p));
		if (!p)
			break;
		k++;
	}
	return k;
}

static void
route_flush(gk_filter *f, struct route *r)
{
	if (!r->out.len)
		return;
	route_check(f, r);
	size_t off = r->sent;
	bool retried = false;
	while (r->fd >= 0 && off < r->out.len) {
		ssize_t w = write(r->fd, r->out.data + off, r->out.len - off);
		if (w >= 0) {
			off += (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			/* Its pipe is full: the rest waits, from the start
			 * of the line being written. */
			size_t keep = off;
			while (keep > 0 && r->out.data[keep - 1] != '\n')
				keep--;
			r->out_lines -= count_lines(r->out.data, keep);
			gk_buf_consume(&r->out, keep);
			r->sent = off - keep;
			return;
		}
		/*
		 * EPIPE: the command is gone.  Once per flush, when its
		 * backoff allows, it is started again and given the rest from
		 * the start of the line being written; otherwise the rest is
		 * lost, counted.
		 */
		size_t lines = count_lines(r->out.data + off, r->out.len - off);
		if (retried) {
			route_died(f, r, lines);
			off = r->out.len;
			break;
		}
		retried = true;
		route_died(f, r, 0);
		if (gk_monotonic_ms() >= r->next_start_ms && route_start(f, r)) {
			while (off > 0 && r->out.data[off - 1] != '\n')
				off--;
			continue;
		}
		r->undelivered += lines;
		gk_counter_add(r->lost, (double)lines);
		off = r->out.len;
	}
	/* Gone before it could take them (reaped since they were routed). */
	if (off < r->out.len) {
		size_t lines = count_lines(r->out.data + off, r->out.len - off);
		r->undelivered += lines;
		gk_counter_add(r->lost, (double)lines);
	}
	gk_buf_reset(&r->out);
	r->sent = 0;
	r->out_lines = 0;
}

/* An output for this route: start the command if it should run. */
static bool
route_ready(gk_filter *f, struct route *r)
{
	route_check(f, r);
	if (r->fd >= 0)
		return true;
	if (gk_monotonic_ms() < r->next_start_ms)
		return false;
	return route_start(f, r);
}

static bool
route_matches(gk_filter *f, struct route *r, jv v)
{
	jq_start(r->jq, jv_copy(v), 0);
	jv x = jq_next(r->jq);
	if (jv_is_valid(x)) {
		jv_kind k = jv_get_kind(x);
		jv_free(x);
		return k != JV_KIND_NULL && k != JV_KIND_FALSE;
	}
	if (jv_invalid_has_msg(jv_copy(x))) {
		gk_buf m = {0}, a = {0};
		jv_message(jv_invalid_get_msg(x), &m);
		gk_buf_addf(&a, "route=%s", r->label);
		report(f, ERR_ROUTE_EXPR, "route expression failed", m.data,
		    a.data);
		gk_buf_free(&m);
		gk_buf_free(&a);
	} else
		jv_free(x);
	return false;
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

static void
dump_into(gk_buf *b, jv v)
{
	jv s = jv_dump_string(v, 0);
	gk_buf_add(b, jv_string_value(s),
	    (size_t)jv_string_length_bytes(jv_copy(s)));
	gk_buf_addc(b, '\n');
	jv_free(s);
}

static void
emit(gk_filter *f, jv v, bool use_routes)
{
	gk_counter_add(f->outc, 1);
	if (use_routes) {
		for (size_t i = 0; i < f->nroutes; i++) {
			struct route *r = &f->routes[i];
			if (!route_matches(f, r, v))
				continue;
			gk_counter_add(r->routed, 1);
			if (!route_ready(f, r)) {
				r->undelivered++;
				gk_counter_add(r->lost, 1);
				jv_free(v);
				return;
			}
			if (r->out.len >= ROUTE_BACKLOG) {
				char a[32];
				snprintf(a, sizeof a, "route=%s", r->label);
				report(f, ERR_ROUTE_FULL,
				    "route command not reading: outputs dropped",
				    "backlog of 1 MiB full", a);
				r->undelivered++;
				gk_counter_add(r->lost, 1);
				jv_free(v);
				return;
			}
			dump_into(&r->out, v);
			r->out_lines++;
			return;
		}
	}
	dump_into(&f->out, v);
}

static int halted_status = -1;

static void
run_event(gk_filter *f, jv in, bool use_routes, gk_buf *out)
{
	jq_start(f->jq, in, 0);
	jv v;
	while (jv_is_valid(v = jq_next(f->jq))) {
		if (out) {
			gk_counter_add(f->outc, 1);
			dump_into(out, v);
		} else
			emit(f, v, use_routes);
	}
	if (jq_halted(f->jq)) {
		jv code = jq_get_exit_code(f->jq);
		halted_status = jv_get_kind(code) == JV_KIND_NUMBER
		    ? (int)jv_number_value(code)
		    : 0;
		jv_free(code);
		/* halt_error's value, as jq writes it: a string raw, any
		 * other value as JSON; none after halt. */
		jv msg = jq_get_error_message(f->jq);
		gk_buf m = {0}, st = {0};
		gk_buf_addf(&st, "status=%d", halted_status);
		if (jv_get_kind(msg) == JV_KIND_STRING) {
			gk_buf_adds(&m, "message=");
			gk_buf_add(&m, jv_string_value(msg),
			    (size_t)jv_string_length_bytes(jv_copy(msg)));
		} else if (jv_is_valid(msg)) {
			jv d = jv_dump_string(jv_copy(msg), 0);
			gk_buf_adds(&m, "message=");
			gk_buf_adds(&m, jv_string_value(d));
			jv_free(d);
		}
		jv_free(msg);
		gk_log(GK_INFO, "program halted", gk_buf_cstr(&st),
		    m.len ? gk_buf_cstr(&m) : NULL);
		gk_buf_free(&m);
		gk_buf_free(&st);
		jv_free(v);
		return;
	}
	if (jv_invalid_has_msg(jv_copy(v))) {
		gk_buf m = {0};
		jv_message(jv_invalid_get_msg(v), &m);
		report(f, ERR_RUNTIME, "jq error", m.data, NULL);
		gk_buf_free(&m);
	} else
		jv_free(v);
}

static void
process_line(gk_filter *f, const char *line, size_t len, bool use_routes,
    gk_buf *out)
{
	if (len && line[len - 1] == '\r')
		len--;
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t' ||
	    line[i] == '\r'))
		i++;
	if (i == len)
		return; /* blank */
	gk_counter_add(f->in, 1);
	f->cur_line = line;
	f->cur_len = len;
	jv in;
	if (line[i] != '{') {
		in = raw_event(f, line, len);
	} else {
		struct jp s = {.tmp = &f->tmp};
		in = jp_parse(&s, line, len);
		if (!jv_is_valid(in)) {
			if (s.number) {
				gk_buf w = {0}, o = {0};
				gk_buf_adds(&w, s.why);
				gk_buf_addf(&o, "offset=%zu", s.off);
				report(f, ERR_NUMBER, "event refused",
				    gk_buf_cstr(&w), gk_buf_cstr(&o));
				gk_buf_free(&w);
				gk_buf_free(&o);
				f->cur_line = NULL;
				return;
			}
			in = raw_event(f, line, len);
		}
	}
	run_event(f, in, use_routes, out);
	f->cur_line = NULL;
}

void
gk_filter_line(gk_filter *f, const char *line, size_t len, gk_buf *out)
{
	process_line(f, line, len, false, out);
}

static void
write_out(gk_filter *f)
{
	size_t off = 0;
	while (!f->out_dead && off < f->out.len) {
		ssize_t w = write(f->out_fd, f->out.data + off,
		    f->out.len - off);
		if (w >= 0) {
			off += (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd p = {.fd = f->out_fd, .events = POLLOUT};
			poll(&p, 1, -1);
			continue;
		}
		/*
		 * The reader is gone (EPIPE): stop quietly, as a filter in
		 * a pipeline to head(1) should.  Any other failure (ENOSPC,
		 * EIO, EBADF) loses the outputs: said once, and the exit
		 * status tells the caller (as jq's does).
		 */
		f->out_dead = true;
		if (errno != EPIPE) {
			f->out_errno = errno;
			gk_buf e = {0};
			gk_buf_addf(&e, "error=%s", strerror(errno));
			gk_log(GK_ERROR, "writing output failed",
			    gk_buf_cstr(&e));
			gk_buf_free(&e);
		}
	}
	gk_buf_reset(&f->out);
}

static void
flush_all(gk_filter *f)
{
	write_out(f);
	for (size_t i = 0; i < f->nroutes; i++)
		route_flush(f, &f->routes[i]);
}

/* A line past GK_FILTER_MAX_LINE (or the start of one): skipped, said. */
static void
too_long(gk_filter *f, const char *line, size_t len)
{
	f->cur_line = line;
	f->cur_len = len;
	report(f, ERR_TOO_LONG, "line too long, skipped", "longer than 16 MiB",
	    NULL);
	f->cur_line = NULL;
	gk_counter_add(f->in, 1);
}

/*
 * Wait until input is readable, for at most ms (-1: no limit), meanwhile
 * writing their backlog to the route commands that take it.  false when
 * there is no input yet (time's up, or a signal).
 */
static bool
wait_input(gk_filter *f, int in_fd, int ms)
{
	struct pollfd p[1 + 64];
	struct route *who[1 + 64];
	nfds_t n = 0;
	p[n++] = (struct pollfd){.fd = in_fd, .events = POLLIN};
	for (size_t i = 0; i < f->nroutes && n < 1 + 64; i++)
		if (f->routes[i].out.len && f->routes[i].fd >= 0) {
			who[n] = &f->routes[i];
			p[n++] = (struct pollfd){.fd = f->routes[i].fd,
			    .events = POLLOUT};
		}
	if (n == 1 && ms < 0)
		return true; /* nothing to wait for but input: read blocks */
	if (poll(p, n, ms) <= 0)
		return false;
	for (nfds_t i = 1; i < n; i++)
		if (p[i].revents)
			route_flush(f, who[i]);
	return p[0].revents != 0;
}

/* At the end: the backlogs written whole, the commands given time. */
static void
routes_drain(gk_filter *f)
{
	f->ending = true;
	for (size_t i = 0; i < f->nroutes; i++) {
		struct route *r = &f->routes[i];
		if (r->fd >= 0)
			fcntl(r->fd, F_SETFL, 0);
		route_flush(f, r);
	}
}

static uint64_t
metrics_interval(void)
{
	const char *e = getenv("GK_METRICS_INTERVAL");
	uint64_t ms = 0;
	if (e && *e && gk_parse_duration_ms(e, &ms) < 0)
		ms = 0;
	return ms;
}

int
gk_filter_run(gk_filter *f, int in_fd, int out_fd)
{
	f->out_fd = out_fd;
	signals_setup();
	pipeline_install_post_fork(post_fork);
	for (size_t i = 0; i < f->nroutes; i++)
		route_start(f, &f->routes[i]);

	uint64_t every = metrics_interval();
	uint64_t next_snap = every ? gk_monotonic_ms() + every : 0;
	gk_buf in = {0};
	size_t scanned = 0; /* bytes of in known to hold no newline */
	bool skipping = false, eof = false;
	int status = GK_EXIT_OK;

	while (!eof && !got_stop && !f->out_dead && halted_status < 0) {
		if (got_usr1) {
			got_usr1 = 0;
			gk_metrics_snapshot();
		}
		int wait_ms = -1;
		if (every) {
			uint64_t now = gk_monotonic_ms();
			if (now >= next_snap) {
				gk_metrics_snapshot();
				next_snap = now + every;
			}
			wait_ms = (int)(next_snap - now);
		}
		if (!wait_input(f, in_fd, wait_ms))
			continue; /* time to snapshot, a signal, a backlog */
		gk_buf_reserve(&in, READ_CHUNK);
		ssize_t n = read(in_fd, in.data + in.len, READ_CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = {.fd = in_fd, .events = POLLIN};
				poll(&p, 1, -1);
				continue;
			}
			gk_logf(GK_ERROR, "reading input: %s", strerror(errno));
			status = GK_EXIT_IOERR;
			break;
		}
		if (n == 0) {
			eof = true;
		} else
			in.len += (size_t)n;

		size_t start = 0;
		for (;;) {
			char *nl = memchr(in.data + scanned, '\n',
			    in.len - scanned);
			if (!nl)
				break;
			size_t end = (size_t)(nl - in.data);
			if (skipping)
				skipping = false;
			else if (end - start > GK_FILTER_MAX_LINE)
				/* Whole in this buffer (its newline came in the
				 * read that crossed the bound): the bound holds
				 * all the same. */
				too_long(f, in.data + start, end - start);
			else
				process_line(f, in.data + start, end - start,
				    true, NULL);
			start = end + 1;
			scanned = start;
			if (halted_status >= 0)
				break;
		}
		if (eof && start < in.len && !skipping && halted_status < 0) {
			if (in.len - start > GK_FILTER_MAX_LINE)
				too_long(f, in.data + start, in.len - start);
			else
				process_line(f, in.data + start,
				    in.len - start, true, NULL);
			start = in.len;
		}
		gk_buf_consume(&in, start);
		scanned = in.len;
		if (!skipping && in.len > GK_FILTER_MAX_LINE) {
			too_long(f, in.data, in.len);
			skipping = true;
		}
		if (skipping) {
			in.len = 0;
			scanned = 0;
		}
		flush_all(f);
	}
	/* Stopped by a signal: what was read is answered.  Not after halt:
	 * the program asked that no event follow the one that halted. */
	if (!eof && in.len && !skipping && !f->out_dead &&
	    halted_status < 0) {
		size_t start = 0;
		char *nl;
		while ((nl = memchr(in.data + start, '\n', in.len - start))) {
			size_t end = (size_t)(nl - in.data);
			process_line(f, in.data + start, end - start, true,
			    NULL);
			start = end + 1;
		}
		flush_all(f);
	}
	gk_buf_free(&in);
	routes_drain(f);
	for (size_t i = 0; i < f->nroutes; i++) {
		struct route *r = &f->routes[i];
		if (r->p) {
			int st = pipeline_wait(r->p);
			if (st != 0) {
				gk_buf a = {0}, b = {0};
				gk_buf_addf(&a, "route=%s", r->label);
				gk_buf_addf(&b, "status=%d", st);
				gk_log(GK_WARN, "route command ended badly",
				    gk_buf_cstr(&a), gk_buf_cstr(&b));
				gk_buf_free(&a);
				gk_buf_free(&b);
			}
			pipeline_free(r->p);
			r->p = NULL;
			r->fd = -1;
		}
	}
	report_suppressed(f);
	gk_metrics_snapshot();
	gk_events_flush();
	if (halted_status >= 0 && status == GK_EXIT_OK)
		status = halted_status;
	if (f->out_errno && status == GK_EXIT_OK)
		status = GK_EXIT_IOERR;
	return status;
}

/* ------------------------------------------------------------------ */
/* Setting up                                                          */
/* ------------------------------------------------------------------ */

struct compile_err {
	gk_buf *err;
	bool have;
};

static void
on_jq_error(void *arg, jv msg)
{
	struct compile_err *ce = arg;
	if (!ce || ce->have || !ce->err) {
		jv_free(msg);
		return;
	}
	gk_buf m = {0};
	jv_message(msg, &m);
	const char *s = m.data ? m.data : "";
	if (!strncmp(s, "jq: error: ", 11))
		s += 11;
	size_t n = strcspn(s, "\n");
	while (n && (s[n - 1] == ':' || s[n - 1] == ' '))
		n--;
	gk_buf_add(ce->err, s, n);
	gk_buf_cstr(ce->err);
	ce->have = true;
	gk_buf_free(&m);
}

static void
on_jq_debug(void *arg, jv msg)
{
	(void)arg;
	jv s = jv_dump_string(msg, 0);
	gk_buf m = {0};
	gk_buf_adds(&m, "value=");
	gk_buf_adds(&m, jv_string_value(s));
	gk_log(GK_DEBUG, "jq debug", gk_buf_cstr(&m));
	gk_buf_free(&m);
	jv_free(s);
}

static jq_state *
compile(const char *what, const char *text, const gk_filter_config *cfg,
    jv args, gk_buf *err)
{
	jq_state *jq = jq_init();
	if (!jq) {
		gk_buf_adds(err, "unable to start jq");
		jv_free(args);
		return NULL;
	}
	struct compile_err ce = {err, false};
	jq_set_error_cb(jq, on_jq_error, &ce);
	jq_set_debug_cb(jq, on_jq_debug, NULL);
	jq_set_attr(jq, jv_string("JQ_LIBRARY_PATH"),
	    JV_ARRAY(jv_string("~/.jq"), jv_string("$ORIGIN/../lib/jq"),
	        jv_string("$ORIGIN/../lib")));
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		jq_set_attr(jq, jv_string("JQ_ORIGIN"),
		    jv_string(dirname(self)));
	}
	if (cfg->program_file) {
		char *copy = gk_xstrdup(cfg->program_file);
		jq_set_attr(jq, jv_string("PROGRAM_ORIGIN"),
		    jv_string(dirname(copy)));
		free(copy);
	} else
		jq_set_attr(jq, jv_string("PROGRAM_ORIGIN"), jv_string("."));
	size_t before = err->len;
	gk_buf_addf(err, "%s does not compile: ", what);
	size_t mark = err->len;
	int ok = jq_compile_args(jq, text, args);
	if (!ok) {
		if (err->len == mark)
			gk_buf_adds(err, "jq compile error");
		jq_teardown(&jq);
		return NULL;
	}
	err->len = before;
	gk_buf_cstr(err);
	jq_set_error_cb(jq, on_jq_error, NULL);
	return jq;
}

gk_filter *
gk_filter_new(const gk_filter_config *cfg, gk_buf *err)
{
	/* Named arguments, first one of a name wins (as jq). */
	jv named = jv_object();
	for (size_t i = 0; i < cfg->nargs; i++) {
		const gk_filter_arg *a = &cfg->args[i];
		jv v;
		if (a->json) {
			v = jv_parse(a->value);
			if (!jv_is_valid(v)) {
				gk_buf m = {0};
				jv_message(jv_invalid_get_msg(v), &m);
				gk_buf_addf(err, "--argjson %s: not JSON: %s",
				    a->name, m.data);
				gk_buf_free(&m);
				jv_free(named);
				return NULL;
			}
		} else
			v = jv_string(a->value);
		if (jv_object_has(jv_copy(named), jv_string(a->name)))
			jv_free(v);
		else
			named = jv_object_set(named, jv_string(a->name), v);
	}
	jv args = jv_copy(named);
	args = jv_object_set(args, jv_string("ARGS"),
	    JV_OBJECT(jv_string("positional"), jv_array(), jv_string("named"),
	        jv_copy(named)));
	jv_free(named);

	gk_filter *f = gk_xcalloc(1, sizeof *f);
	f->out_fd = 1;
	f->raw_proc = gk_xstrdup(cfg->raw_proc && *cfg->raw_proc
	    ? cfg->raw_proc
	    : "unknown");
	f->jq = compile("program", cfg->program, cfg, jv_copy(args), err);
	if (!f->jq)
		goto fail;
	f->routes = gk_xcalloc(cfg->nroutes ? cfg->nroutes : 1,
	    sizeof *f->routes);
	for (size_t i = 0; i < cfg->nroutes; i++) {
		struct route *r = &f->routes[i];
		r->fd = -1;
		r->expr = gk_xstrdup(cfg->routes[i].expr);
		r->cmd = gk_xstrdup(cfg->routes[i].cmd);
		f->nroutes = i + 1;
		snprintf(r->label, sizeof r->label, "%zu", i + 1);
		char what[48];
		snprintf(what, sizeof what, "--route %zu expression", i + 1);
		r->jq = compile(what, r->expr, cfg, jv_copy(args), err);
		if (!r->jq)
			goto fail;
		/* An empty command: pipecmd_new_argstr would abort. */
		if (!r->cmd[strspn(r->cmd, " \t")]) {
			gk_buf_addf(err, "--route %zu: empty command", i + 1);
			goto fail;
		}
	}
	jv_free(args);

	f->in = gk_metric_series(gk_counter_new("gk_filter_events_in_total",
	    "Events read (lines that are not blank).", NULL));
	f->outc = gk_metric_series(gk_counter_new(
	    "gk_filter_events_out_total",
	    "Outputs of the program, to stdout or a route.", NULL));
	f->raw = gk_metric_series(gk_counter_new("gk_filter_raw_total",
	    "Lines that were not JSON objects, wrapped as raw log events.",
	    NULL));
	gk_metric *em = gk_counter_new("gk_filter_errors_total",
	    "Errors by kind: runtime, number, too_long, route_expr, route, "
	    "route_full.",
	    "kind");
	for (int i = 0; i < ERR_KINDS; i++)
		f->err[i] = gk_series_get(em, kind_names[i], (char *)0);
	if (f->nroutes) {
		gk_metric *rm = gk_counter_new("gk_filter_routed_total",
		    "Outputs routed, by route number (from 1).", "route");
		gk_metric *lm = gk_counter_new(
		    "gk_filter_route_undelivered_total",
		    "Routed outputs lost: the route command was down, or its "
		    "backlog full.",
		    "route");
		gk_metric *sm = gk_counter_new(
		    "gk_filter_route_restarts_total",
		    "Route commands restarted after they exited.", "route");
		for (size_t i = 0; i < f->nroutes; i++) {
			struct route *r = &f->routes[i];
			r->routed = gk_series_get(rm, r->label, (char *)0);
			r->lost = gk_series_get(lm, r->label, (char *)0);
			r->restarts = gk_series_get(sm, r->label, (char *)0);
		}
	}
	return f;
fail:
	jv_free(args);
	gk_filter_free(f);
	return NULL;
}

void
gk_filter_free(gk_filter *f)
{
	if (!f)
		return;
	if (f->jq)
		jq_teardown(&f->jq);
	for (size_t i = 0; i < f->nroutes; i++) {
		struct route *r = &f->routes[i];
		if (r->jq)
			jq_teardown(&r->jq);
		if (r->p) {
			pipeline_wait(r->p);
			pipeline_free(r->p);
		}
		free(r->expr);
		free(r->cmd);
		gk_buf_free(&r->out);
	}
	free(f->routes);
	free(f->raw_proc);
	gk_buf_free(&f->out);
	gk_buf_free(&f->tmp);
	free(f);
}
