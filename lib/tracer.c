/*
 * tracer.c: W3C Trace Context and B3 in, one server span out per sampled
 * request.  Parent-based sampling by default, as OpenTelemetry's
 * ParentBased(TraceIdRatioBased) sampler: the caller's decision holds, and
 * traces we start are sampled by the trace id itself, so every service that
 * uses the same ratio makes the same decision for the same trace.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "runtime.h"
#include "tracecontext.h"
#include "tracer.h"

struct gk_tracer {
	gk_tracer_config cfg;
	double tokens; /* --sample-rate bucket */
	uint64_t last_refill_us;
	gk_series *m_sampled, *m_unsampled, *m_started, *m_spans;
	gk_series *m_bad_traceparent, *m_bad_b3, *m_bad_tracestate;
};

struct tstate {
	gk_trace_ctx ctx;  /* this span: the caller's trace id, our span id */
	uint8_t parent[8]; /* the caller's span id */
	bool has_parent;
	bool sampled;
	uint64_t start_us; /* epoch */
	uint64_t start_mono_us;
	char tp[56]; /* our traceparent, answered as traceresponse */
	/* The answer's error.stage and error.reason (a stage below, or the
	 * runtime, answered it), for the span; empty when none. */
	char err_stage[32], err_reason[48];
};

size_t
gk_tracer_state_size(void)
{
	return sizeof(struct tstate);
}

gk_tracer *
gk_tracer_new(const gk_tracer_config *cfg)
{
	gk_tracer *t = gk_xcalloc(1, sizeof *t);
	t->cfg = *cfg;
	/* The bucket starts full, as Jaeger's rate-limiting sampler's: with
	 * a rate below one a second (1/m) the first trace came only after a
	 * whole period. */
	t->tokens = cfg->sample_rate < 1 ? 1 : cfg->sample_rate;
	t->last_refill_us = gk_monotonic_us();
	gk_metric *req = gk_counter_new("gk_tracer_requests_total",
	    "Requests seen, by sampling decision", "decision");
	t->m_sampled = gk_series_get(req, "sampled", (char *)0);
	t->m_unsampled = gk_series_get(req, "unsampled", (char *)0);
	t->m_started = gk_metric_series(gk_counter_new(
	    "gk_tracer_traces_started_total",
	    "Traces started here (no valid context came in)", NULL));
	t->m_spans = gk_metric_series(gk_counter_new("gk_tracer_spans_total",
	    "Span events written", NULL));
	gk_metric *bad = gk_counter_new("gk_tracer_invalid_context_total",
	    "Invalid trace context headers replaced, by header", "header");
	t->m_bad_traceparent = gk_series_get(bad, "traceparent", (char *)0);
	t->m_bad_b3 = gk_series_get(bad, "b3", (char *)0);
	t->m_bad_tracestate = gk_series_get(bad, "tracestate", (char *)0);
	return t;
}

void
gk_tracer_free(gk_tracer *t)
{
	free(t);
}

static bool
rate_allows(gk_tracer *t)
{
	if (t->cfg.sample_rate <= 0)
		return true;
	uint64_t now = gk_monotonic_us();
	t->tokens += (double)(now - t->last_refill_us) / 1e6 * t->cfg.sample_rate;
	t->last_refill_us = now;
	double cap = t->cfg.sample_rate < 1 ? 1 : t->cfg.sample_rate;
	if (t->tokens > cap)
		t->tokens = cap;
	if (t->tokens < 1)
		return false;
	t->tokens -= 1;
	return true;
}

/* TraceIdRatioBased: the low 8 bytes of the trace id against the ratio. */
static bool
ratio_allows(const gk_tracer *t, const uint8_t trace_id[16])
{
	if (t->cfg.sample >= 1)
		return true;
	if (t->cfg.sample <= 0)
		return false;
	uint64_t v = 0;
	for (int i = 8; i < 16; i++)
		v = v << 8 | trace_id[i];
	return (double)(v >> 11) * 0x1.0p-53 < t->cfg.sample;
}

/*
 * The propagation headers, read and replaced in one pass over the request's
 * headers object.  Every one is dropped from what goes south: ours replace
 * them, valid or not.
 */
enum { H_TRACEPARENT, H_TRACESTATE, H_B3, H_TRACEID, H_SPANID,
	H_PARENTSPANID, H_SAMPLED, H_FLAGS, H_COUNT };

static const struct {
	const char *name;
	size_t len;
} prop[H_COUNT] = {
#define P(s) {s, sizeof s - 1}
    P("traceparent"), P("tracestate"), P("b3"), P("x-b3-traceid"),
    P("x-b3-spanid"), P("x-b3-parentspanid"), P("x-b3-sampled"),
    P("x-b3-flags"),
#undef P
};

/* Which propagation header key (a JSON string) names; -1 for none. */
static int
prop_index(gk_json key)
{
	const char *b = key.p + 1;
	size_t n = key.len - 2;
	if (key.len < 3 || (*b != 't' && *b != 'b' && *b != 'x' && *b != '\\'))
		return -1;
	if (memchr(b, '\\', n)) {
		for (int i = 0; i < H_COUNT; i++)
			if (gk_json_eqn(key, prop[i].name, prop[i].len))
				return i;
		return -1;
	}
	for (int i = 0; i < H_COUNT; i++)
		if (n == prop[i].len && memcmp(b, prop[i].name, n) == 0)
			return i;
	return -1;
}

/* A header's text: its first value, unescaped (as gk_msg_header reads it). */
struct hval {
	const char *p; /* NULL: absent or not a string */
	size_t n;
	size_t full; /* unescaped length, a NUL included */
	bool plain;  /* p..n is the JSON text between the quotes, as it is */
};

/*
 * Escaped values (rare) are unescaped into per-thread buffers, one per
 * header that is read; read up to the first NUL, as a C string is.  A
 * buffer grown past BUF_KEEP by a huge value is freed once used.
 */
#define BUF_KEEP 16384
static _Thread_local gk_buf unesc[H_COUNT];

static void
trim(gk_buf *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i].cap > BUF_KEEP)
			gk_buf_free(&b[i]);
}

/* A string's text: the wire bytes when they hold no escape, else unescaped
 * into b (NUL-terminated; n counts any NUL inside). */
static struct hval
text_of(gk_json v, gk_buf *b)
{
	struct hval h = {0};
	int r = gk__json_text(v, b, &h.p, &h.n);
	if (r < 0)
		return (struct hval){0};
	h.full = h.n;
	h.plain = r == 0;
	if (!h.plain)
		h.p = gk_buf_cstr(b);
	return h;
}

static struct hval
hval_of(gk_json v, int which)
{
	if (v.type == GK_JSON_NONE) /* the common case: no such header */
		return (struct hval){0};
	if (v.type == GK_JSON_ARRAY) {
		gk_json_iter it;
		gk_json_iter_init(&it, v);
		if (!gk_json_iter_next(&it, NULL, &v))
			return (struct hval){0};
	}
	struct hval h = text_of(v, &unesc[which]);
	if (h.p && !h.plain)
		h.n = strlen(h.p);
	return h;
}

/* How many values a header has: an array is a repeated header. */
static size_t
values_of(gk_json v)
{
	if (v.type != GK_JSON_ARRAY)
		return v.type == GK_JSON_NONE ? 0 : 1;
	gk_json_iter it;
	gk_json e;
	size_t n = 0;
	gk_json_iter_init(&it, v);
	while (gk_json_iter_next(&it, NULL, &e))
		n++;
	return n;
}

/* tracestate: repeated headers are one list, joined with commas (W3C
 * Trace Context: "combined into a single header"). */
static struct hval
tracestate_of(gk_json v)
{
	if (v.type != GK_JSON_ARRAY)
		return hval_of(v, H_TRACESTATE);
	gk_buf *b = &unesc[H_TRACESTATE];
	b->len = 0;
	gk_json_iter it;
	gk_json e;
	gk_json_iter_init(&it, v);
	while (gk_json_iter_next(&it, NULL, &e)) {
		size_t at = b->len;
		if (at)
			gk_buf_addc(b, ',');
		if (gk_json_string(e, b) < 0 || b->len == at + (at ? 1 : 0))
			b->len = at; /* not a string, or empty: skipped */
	}
	if (!b->len)
		return (struct hval){0};
	const char *p = gk_buf_cstr(b);
	return (struct hval){p, strlen(p), b->len, false};
}

static _Thread_local gk_buf ts_buf;

/* The caller's tracestate as it goes on: checked, and without optional
 * whitespace or empty members; none when it is invalid, which leaves the
 * traceparent as it was (W3C).  Only a list that came plain off the wire
 * is plain: the members are its bytes. */
static struct hval
tracestate_clean(gk_tracer *t, struct hval v)
{
	if (!v.p)
		return v;
	gk_buf *b = &ts_buf;
	size_t n;
	b->len = 0;
	gk_buf_reserve(b, v.full + 1);
	if (gk_tracestate_clean(v.p, v.full, b->data, &n) < 0) {
		gk_counter_add(t->m_bad_tracestate, 1);
		return (struct hval){0};
	}
	if (!n) /* empty members only: not worth sending */
		return (struct hval){0};
	b->len = n;
	b->data[n] = 0;
	return (struct hval){b->data, n, n, v.plain};
}

/* Whether the B3 headers beside a valid traceparent say debug for the
 * same trace: a b3 "d" (alone or with these ids), or X-B3-Flags: 1. */
static bool
b3_debug(const gk_json *hv, const uint8_t trace_id[16])
{
	struct hval v = hval_of(hv[H_B3], H_B3);
	if (v.p) {
		gk_trace_ctx c;
		int only;
		if ((gk_b3_parse(v.p, v.n, &c, &only) == 0 &&
		    !memcmp(c.trace_id, trace_id, 16)) || only >= 0)
			return c.debug;
	}
	struct hval f = hval_of(hv[H_FLAGS], H_FLAGS);
	return f.p && f.n == 1 && f.p[0] == '1';
}

/* Append s as a JSON string: copied when it came plain off the wire. */
static void
put_str(gk_buf *b, const char *s, size_t n, bool plain)
{
	if (!plain) {
		gk_json_quote(b, s, n);
		return;
	}
	gk_buf_reserve(b, n + 2);
	b->data[b->len++] = '"';
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len++] = '"';
}

/* Appending short known text: inline, so that a literal's copy is a few
 * moves rather than a call. */
static inline void
put(gk_buf *b, const char *s, size_t n)
{
	if (b->cap - b->len <= n)
		gk_buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

#define ADDLIT(b, s) put((b), (s), sizeof(s) - 1)

/* The headers object under construction, kept per thread (see
 * msg_headers.c); freed past BUF_KEEP as the others are. */
static _Thread_local gk_buf hdr_buf;

/* Append "key":value (both raw JSON) to the object open in hb. */
static void
add_member(gk_buf *hb, gk_json key, gk_json val)
{
	gk_buf_reserve(hb, key.len + val.len + 2);
	if (hb->len > 1)
		hb->data[hb->len++] = ',';
	memcpy(hb->data + hb->len, key.p, key.len);
	hb->len += key.len;
	hb->data[hb->len++] = ':';
	memcpy(hb->data + hb->len, val.p, val.len);
	hb->len += val.len;
}

static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* At a quote or backslash q of a headers object: whether what it opens,
 * closes or escapes may be a key that which() numbers.  Without escapes a
 * string is the text between two quotes, and a key is a string that a
 * colon follows; an escape can spell any key, which the member walk reads
 * right. */
static inline bool
at_mark(const char *q, const char *end, const char **open,
    int (*which)(gk_json))
{
	if (*q == '\\')
		return true;
	if (!*open) {
		*open = q;
		return false;
	}
	const char *after = q + 1;
	while (after < end && is_space(*after))
		after++;
	bool hit = after < end && *after == ':' &&
	    which((gk_json){GK_JSON_STRING, *open, (size_t)(q - *open + 1)}) >= 0;
	*open = NULL;
	return hit;
}

/*
 * Whether the object h may hold a member that which() numbers: a scan of
 * its keys, cheaper than walking its members, which is needed only when it
 * may (few requests carry a trace context, few answers a traceresponse).
 */
static bool
may_hold(gk_json h, int (*which)(gk_json))
{
	const char *p = h.p + 1, *end = h.p + h.len, *open = NULL;
#if defined(__SSE2__)
	/* Sixteen bytes a step: only quotes and backslashes matter. */
	const __m128i quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
	for (; end - p >= 16; p += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(
		    _mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bs)));
		for (; m; m &= m - 1)
			if (at_mark(p + __builtin_ctz(m), end, &open, which))
				return true;
	}
#endif
	for (; p < end; p++)
		if ((*p == '"' || *p == '\\') && at_mark(p, end, &open, which))
			return true;
	return false;
}

/*
 * Open in hb a headers object holding h's members but those that which()
 * numbers (the first value of each is noted in noted[], which the caller
 * zeroed), with room for extra bytes of the caller's own after them.
 */
static void
open_headers(gk_buf *hb, gk_json h, size_t extra, int (*which)(gk_json),
    gk_json *noted)
{
	hb->len = 0;
	gk_buf_reserve(hb, (h.type == GK_JSON_OBJECT ? h.len : 2) + extra);
	hb->data[hb->len++] = '{';
	if (h.type != GK_JSON_OBJECT)
		return;
	if (!may_hold(h, which)) {
		/* Nothing to drop (nearly always): the members as they are,
		 * without the closing brace and any space before it. */
		size_t n = h.len - 1;
		while (n > 1 && is_space(h.p[n - 1]))
			n--;
		memcpy(hb->data, h.p, n);
		hb->len = n;
		return;
	}
	gk_json_iter it;
	gk_json key, val;
	gk_json_iter_init(&it, h);
	while (gk_json_iter_next(&it, &key, &val)) {
		int i = which(key);
		if (i < 0)
			add_member(hb, key, val);
		else if (noted[i].type == GK_JSON_NONE)
			noted[i] = val;
	}
}

static int
traceresponse_index(gk_json key)
{
	return gk_json_eqn(key, "traceresponse", 13) ? 0 : -1;
}

void
gk_tracer_request(gk_tracer *t, gk_req *req)
{
	struct tstate *s = gk_req_state(req);
	gk_msg *m = gk_req_msg(req);
	gk_trace_ctx in;
	bool have = false, from_b3 = false;
	int b3_only = -1;

	/* One pass: the headers we keep go into hb as they are; the
	 * propagation headers (first of each) are noted for reading. */
	gk_json hv[H_COUNT] = {0};
	gk_buf *hb = &hdr_buf;
	open_headers(hb, gk_msg_get(m, "headers"), 320, prop_index, hv);

	struct hval tracestate = {0};
	bool debug = false; /* B3's: sampled whatever the --sample-rate */
	struct hval v = hval_of(hv[H_TRACEPARENT], H_TRACEPARENT);
	if (v.p) {
		/* Two traceparent headers are no context (W3C's test suite
		 * asks for a new trace). */
		have = values_of(hv[H_TRACEPARENT]) == 1 &&
		    gk_traceparent_parse(v.p, v.n, &in) == 0;
		if (!have)
			gk_counter_add(t->m_bad_traceparent, 1);
		else {
			tracestate = tracestate_clean(t,
			    tracestate_of(hv[H_TRACESTATE]));
			/* traceparent has no debug flag: a B3 caller's (or
			 * a tracer's above, which writes both) still holds,
			 * and a caller that sent B3 too is answered in kind. */
			debug = b3_debug(hv, in.trace_id);
			for (int i = H_B3; i < H_COUNT; i++)
				from_b3 |= hv[i].type != GK_JSON_NONE;
		}
	}
	if (!have && (v = hval_of(hv[H_B3], H_B3)).p) {
		have = gk_b3_parse(v.p, v.n, &in, &b3_only) == 0;
		if (!have && b3_only < 0)
			gk_counter_add(t->m_bad_b3, 1);
		debug = in.debug;
		from_b3 = true;
	}
	if (!have && b3_only < 0) {
		struct hval tid = hval_of(hv[H_TRACEID], H_TRACEID);
		struct hval sid = hval_of(hv[H_SPANID], H_SPANID);
		struct hval pid = hval_of(hv[H_PARENTSPANID], H_PARENTSPANID);
		struct hval smp = hval_of(hv[H_SAMPLED], H_SAMPLED);
		struct hval flg = hval_of(hv[H_FLAGS], H_FLAGS);
		if (tid.p || sid.p || smp.p || flg.p) {
			have = gk_b3_multi_parsen(tid.p, tid.n, sid.p, sid.n,
			    pid.p, pid.n, smp.p, smp.n, flg.p, flg.n, &in,
			    &b3_only) == 0;
			if (!have && b3_only < 0)
				gk_counter_add(t->m_bad_b3, 1);
			debug = in.debug;
			from_b3 = true;
		}
	}

	memset(s, 0, sizeof *s);
	if (have) {
		memcpy(s->ctx.trace_id, in.trace_id, 16);
		memcpy(s->parent, in.span_id, 8);
		s->has_parent = true;
		/* W3C Level 2: whoever continues a trace id passes on its
		 * random-trace-id flag as it came (B3 has none). */
		s->ctx.random = in.random;
	} else {
		gk_random_id(s->ctx.trace_id, 16);
		/* Level 2: a trace id made here is random in all its bytes,
		 * and says so to whoever samples by it below. */
		s->ctx.random = true;
		gk_counter_add(t->m_started, 1);
	}
	gk_random_id(s->ctx.span_id, 8);
	if (have && t->cfg.parent_based && in.sampled_known)
		s->sampled = in.sampled || in.debug;
	else if (b3_only >= 0 && t->cfg.parent_based)
		s->sampled = b3_only; /* "b3: 0": the caller said no */
	else
		s->sampled = ratio_allows(t, s->ctx.trace_id);
	if (s->sampled && !debug && !rate_allows(t))
		s->sampled = false;
	gk_counter_add(s->sampled ? t->m_sampled : t->m_unsampled, 1);
	if (s->sampled || t->cfg.sample_errors) { /* a span may follow */
		s->start_us = gk_realtime_us();
		s->start_mono_us = gk_monotonic_us();
	}

	/* Ours after the headers kept, in this order. */
	/* 00-<trace>-<span>-<flags>: the ids' hex is read from it. */
	const char *tp = s->tp, *trace_hex = tp + 3, *span_hex = tp + 36;
	char parent_hex[17];
	gk_traceparent_format_flags(s->ctx.trace_id, s->ctx.span_id,
	    (uint8_t)(s->sampled | s->ctx.random << 1), s->tp);
	if (s->has_parent)
		gk_hex(s->parent, 8, parent_hex);
	if (hb->len > 1)
		gk_buf_addc(hb, ',');
	ADDLIT(hb, "\"traceparent\":\"");
	put(hb, tp, 55);
	gk_buf_addc(hb, '"');
	if (tracestate.full) {
		ADDLIT(hb, ",\"tracestate\":");
		put_str(hb, tracestate.p, tracestate.n, tracestate.plain);
	}
	if (from_b3) {
		/* A B3 caller's services may read B3 only: answer in kind:
		 * {trace}-{span}-{sampled}[-{parent}]. */
		ADDLIT(hb, ",\"b3\":\"");
		put(hb, trace_hex, 32);
		gk_buf_addc(hb, '-');
		put(hb, span_hex, 16);
		gk_buf_addc(hb, '-');
		gk_buf_addc(hb, s->sampled ? debug ? 'd' : '1' : '0');
		if (s->has_parent) {
			gk_buf_addc(hb, '-');
			put(hb, parent_hex, 16);
		}
		gk_buf_addc(hb, '"');
	}
	gk_buf_addc(hb, '}');
	gk__msg_set_trusted(m, "headers", hb->data, hb->len);
	trim(hb, 1);
	trim(unesc, H_COUNT);
	trim(&ts_buf, 1);

	/* {"trace_id":"..","span_id":"..",["parent_id":"..",]"sampled":B
	 * [,"random":true]} */
	char tr[176], *p = tr;
#define PUT(s) (memcpy(p, (s), sizeof(s) - 1), p += sizeof(s) - 1)
	PUT("{\"trace_id\":\"");
	memcpy(p, trace_hex, 32), p += 32;
	PUT("\",\"span_id\":\"");
	memcpy(p, span_hex, 16), p += 16;
	if (s->has_parent) {
		PUT("\",\"parent_id\":\"");
		memcpy(p, parent_hex, 16), p += 16;
	}
	if (s->sampled)
		PUT("\",\"sampled\":true");
	else
		PUT("\",\"sampled\":false");
	if (s->ctx.random)
		PUT(",\"random\":true");
	*p++ = '}';
#undef PUT
	gk__msg_set_trusted(m, "trace", tr, (size_t)(p - tr));
	gk_forward(req);
}

/* A string member of an error object into out, cut to fit. */
static void
error_text(gk_json err, const char *key, char *out, size_t size)
{
	gk_json v = gk_json_member(err, key);
	const char *p;
	size_t n;
	gk_buf tmp = {0};
	if (gk__json_text(v, &tmp, &p, &n) >= 0) {
		if (n > size - 1) { /* cut, not inside a UTF-8 sequence */
			n = size - 1;
			while (n && ((unsigned char)p[n] & 0xc0) == 0x80)
				n--;
		}
		n = strnlen(p, n);
		memcpy(out, p, n);
		out[n] = 0;
	}
	gk_buf_free(&tmp);
}

void
gk_tracer_answer(gk_tracer *t, gk_req *req, gk_msg *resp)
{
	struct tstate *s = gk_req_state(req);
	if (!s->tp[0]) /* answered before the trace was known */
		return;
	/* Who answered, when not the handler: only for a span that may be
	 * written, so an unsampled request pays nothing for it. */
	if (s->sampled || t->cfg.sample_errors) {
		gk_json err = gk_msg_get(resp, "error");
		if (err.type == GK_JSON_OBJECT) {
			error_text(err, "stage", s->err_stage,
			    sizeof s->err_stage);
			error_text(err, "reason", s->err_reason,
			    sizeof s->err_reason);
		}
	}
	/* As gk_msg_edit_headers would: the headers but any traceresponse,
	 * then ours. */
	gk_json ours[1] = {0};
	gk_buf *hb = &hdr_buf;
	open_headers(hb, gk_msg_get(resp, "headers"), 80, traceresponse_index,
	    ours);
	if (hb->len > 1)
		gk_buf_addc(hb, ',');
	ADDLIT(hb, "\"traceresponse\":\"");
	put(hb, s->tp, 55);
	/* An unsampled request that fails gets a span with
	 * --sample-errors: the caller is told it was recorded (Level 2:
	 * traceresponse's sampled flag is the callee's recording). */
	if (!s->sampled && t->cfg.sample_errors && gk_msg_status(resp) >= 500)
		hb->data[hb->len - 1] |= 1;
	ADDLIT(hb, "\"}");
	gk__msg_set_trusted(resp, "headers", hb->data, hb->len);
	trim(hb, 1);
}

void
gk_tracer_response(gk_tracer *t, gk_req *req, gk_msg *resp)
{
	gk_tracer_answer(t, req, resp);
	gk_pass(req, resp);
}

/* The request members a span reads. */
enum { F_METHOD, F_ROUTE, F_PATH, F_REMOTE, F_COUNT };

static _Thread_local gk_buf span_unesc[F_COUNT], span_route;


/* Low-cardinality span name: the route, or the path with ids templated. */
static struct hval
route_of(struct hval route, struct hval path)
{
	if (route.p)
		return route;
	if (!path.p)
		path = (struct hval){"/", 1, 1, true};
	gk_buf *out = &span_route;
	out->len = 0;
	gk_buf_reserve(out, path.n + 16);
	/* Templated as a C string: up to a NUL an escape may have made. */
	const char *p = path.p, *end = p + (path.plain ? path.n : strlen(p));
	while (p < end) {
		if (*p != '/') {
			gk_buf_addc(out, *p++);
			continue;
		}
		gk_buf_addc(out, *p++);
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
		size_t digits = 0, hex = 0;
		for (size_t i = 0; i < n; i++) {
			digits += p[i] >= '0' && p[i] <= '9';
			hex += (p[i] >= '0' && p[i] <= '9') ||
			    (p[i] >= 'a' && p[i] <= 'f') || p[i] == '-';
		}
		if (n && (digits == n || (n >= 16 && hex == n)))
			ADDLIT(out, "{id}");
		else
			gk_buf_add(out, p, n);
		p += n;
	}
	return (struct hval){out->data, out->len, out->len, path.plain};
}

static void
put_int(gk_buf *b, int v)
{
	if (v < 0) {
		gk_buf_addc(b, '-');
		gk_buf_adduint(b, (uint64_t)0 - (uint64_t)(int64_t)v);
	} else
		gk_buf_adduint(b, (uint64_t)v);
}

/* ,"key":"<hex>" */
static void
put_hex_member(gk_buf *b, const char *key, size_t klen, const char *hex,
    size_t n)
{
	gk_buf_reserve(b, klen + n + 8);
	char *p = b->data + b->len;
	*p++ = ',';
	*p++ = '"';
	memcpy(p, key, klen), p += klen;
	*p++ = '"', *p++ = ':', *p++ = '"';
	memcpy(p, hex, n), p += n;
	*p++ = '"';
	b->len = (size_t)(p - b->data);
}

/*
 * A request given up from above (status 0) once its deadline has passed
 * was not left by its client: a stage above answered 504 at the same
 * deadline and cancelled it south before this stage's own timer fired
 * (the stages of a stack share the deadline, and which of them answers
 * first is a race).  The few ms of slack cover the deadline's whole ms.
 */
#define DEADLINE_SLACK_MS 5

static bool
cancelled_at_deadline(const gk_req *req)
{
	uint64_t deadline = gk_req_deadline(req);
	return deadline && gk_realtime_ms() + DEADLINE_SLACK_MS >= deadline;
}

void
gk_tracer_done(gk_tracer *t, gk_req *req, int status)
{
	struct tstate *s = gk_req_state(req);
	bool error = status >= 500 || status == 0;
	if (!s->sampled && !(t->cfg.sample_errors && error))
		return;
	/* Refused by the runtime before it was traced (overloaded,
	 * draining): it has no ids to write, only zero bytes. */
	if (!s->tp[0])
		return;
	gk_counter_add(t->m_spans, 1);
	const gk_msg *m = gk_req_msg(req);
	gk_json fv[F_COUNT] = {gk_msg_get(m, "method"), gk_msg_get(m, "route"),
	    gk_msg_get(m, "path"), gk_msg_get(m, "remote")};
	struct hval method = text_of(fv[F_METHOD], &span_unesc[F_METHOD]);
	struct hval path = text_of(fv[F_PATH], &span_unesc[F_PATH]);
	struct hval remote = text_of(fv[F_REMOTE], &span_unesc[F_REMOTE]);
	struct hval route = route_of(text_of(fv[F_ROUTE], &span_unesc[F_ROUTE]), path);
	if (!method.p)
		method = (struct hval){"GET", 3, 3, true};

	/* Past the common members (gk_event_begin wrote them, so every
	 * member here follows a comma): known-safe text is copied, the
	 * request's strings copied when the wire held them unescaped. */
	gk_jw *w = gk_event_begin("span");
	gk_buf *b = w->out;
	put_hex_member(b, "trace_id", 8, s->tp + 3, 32);
	put_hex_member(b, "span_id", 7, s->tp + 36, 16);
	if (s->has_parent) {
		char parent_hex[17];
		gk_hex(s->parent, 8, parent_hex);
		put_hex_member(b, "parent_id", 9, parent_hex, 16);
	}
	ADDLIT(b, ",\"name\":");
	if (method.plain && route.plain) {
		gk_buf_reserve(b, method.n + route.n + 3);
		b->data[b->len++] = '"';
		memcpy(b->data + b->len, method.p, method.n);
		b->len += method.n;
		b->data[b->len++] = ' ';
		memcpy(b->data + b->len, route.p, route.n);
		b->len += route.n;
		b->data[b->len++] = '"';
	} else {
		gk_buf name = {0};
		gk_buf_add(&name, method.p, method.n);
		gk_buf_addc(&name, ' ');
		gk_buf_add(&name, route.p, route.n);
		gk_json_quote(b, name.data, name.len);
		gk_buf_free(&name);
	}
	ADDLIT(b, ",\"kind\":\"server\",\"start_us\":");
	gk_buf_adduint(b, s->start_us);
	ADDLIT(b, ",\"duration_us\":");
	gk_buf_adduint(b, gk_monotonic_us() - s->start_mono_us);
	if (error)
		ADDLIT(b, ",\"status\":\"error\",\"sampled\":");
	else
		ADDLIT(b, ",\"status\":\"ok\",\"sampled\":");
	if (s->sampled)
		ADDLIT(b, "true");
	else
		ADDLIT(b, "false");
	ADDLIT(b, ",\"attrs\":{\"http.request.method\":");
	put_str(b, method.p, method.n, method.plain);
	ADDLIT(b, ",\"url.path\":");
	put_str(b, path.p ? path.p : "", path.n, path.plain || !path.p);
	ADDLIT(b, ",\"http.route\":");
	put_str(b, route.p, route.n, route.plain);
	if (status) {
		ADDLIT(b, ",\"http.response.status_code\":");
		put_int(b, status);
	} else if (cancelled_at_deadline(req))
		ADDLIT(b, ",\"error.type\":\"timeout\"");
	else
		ADDLIT(b, ",\"error.type\":\"client_gone\"");
	if (status && s->err_stage[0]) {
		ADDLIT(b, ",\"gk.error.stage\":");
		gk_json_quote(b, s->err_stage, strlen(s->err_stage));
		if (s->err_reason[0]) {
			ADDLIT(b, ",\"gk.error.reason\":");
			gk_json_quote(b, s->err_reason, strlen(s->err_reason));
		}
	}
	if (remote.n) {
		/* client.address is the address alone; the port apart. */
		const char *colon = memrchr(remote.p, ':', remote.n);
		size_t alen = colon ? (size_t)(colon - remote.p) : remote.n;
		const char *a = remote.p;
		if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']')
			a++, alen -= 2;
		ADDLIT(b, ",\"client.address\":");
		put_str(b, a, alen, remote.plain);
		if (colon) {
			/* The port's digits end at the closing quote or NUL. */
			ADDLIT(b, ",\"client.port\":");
			int port = 0;
			for (const char *d = colon + 1;
			    d < remote.p + remote.n && *d >= '0' && *d <= '9' &&
			    port < 100000; d++)
				port = port * 10 + (*d - '0');
			put_int(b, port);
		}
	}
	gk_buf_addc(b, '}');
	gk_event_end();
	trim(span_unesc, F_COUNT);
	trim(&span_route, 1);
}
