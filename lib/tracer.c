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

#include "tracecontext.h"
#include "tracer.h"

struct gk_tracer {
	gk_tracer_config cfg;
	double tokens; /* --sample-rate bucket */
	uint64_t last_refill_us;
	gk_series *m_sampled, *m_unsampled, *m_started, *m_spans;
	gk_series *m_bad_traceparent, *m_bad_b3;
};

struct tstate {
	gk_trace_ctx ctx;  /* this span: the caller's trace id, our span id */
	uint8_t parent[8]; /* the caller's span id */
	bool has_parent;
	bool sampled;
	uint64_t start_us; /* epoch */
	uint64_t start_mono_us;
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
	t->tokens = cfg->sample_rate;
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
	return t;
}

void
gk_tracer_free(gk_tracer *t)
{
	free(t);
}

/* A header of msg as a C string in buf (first value); NULL if absent. */
static const char *
header(const gk_msg *m, const char *name, gk_buf *buf)
{
	buf->len = 0;
	if (gk_msg_header(m, name, buf) < 0)
		return NULL;
	return gk_buf_cstr(buf);
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

static const char *const propagation_headers[] = {"traceparent",
    "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
    "x-b3-sampled", "x-b3-flags", NULL};

void
gk_tracer_request(gk_tracer *t, gk_req *req)
{
	struct tstate *s = gk_req_state(req);
	gk_msg *m = gk_req_msg(req);
	gk_buf tmp = {0}, tracestate = {0};
	gk_trace_ctx in;
	bool have = false, from_b3 = false;
	int b3_only = -1;

	const char *v = header(m, "traceparent", &tmp);
	if (v) {
		have = gk_traceparent_parse(v, strlen(v), &in) == 0;
		if (!have)
			gk_counter_add(t->m_bad_traceparent, 1);
		else if (gk_msg_header(m, "tracestate", &tracestate) < 0)
			tracestate.len = 0;
	}
	if (!have && (v = header(m, "b3", &tmp))) {
		have = gk_b3_parse(v, strlen(v), &in, &b3_only) == 0;
		if (!have && b3_only < 0)
			gk_counter_add(t->m_bad_b3, 1);
		from_b3 = true;
	}
	if (!have && b3_only < 0) {
		gk_buf a = {0}, b = {0}, c = {0}, d = {0};
		const char *tid = header(m, "x-b3-traceid", &a);
		const char *sid = header(m, "x-b3-spanid", &b);
		if (tid || sid) {
			have = gk_b3_multi_parse(tid, sid,
			    header(m, "x-b3-sampled", &c),
			    header(m, "x-b3-flags", &d), &in) == 0;
			if (!have)
				gk_counter_add(t->m_bad_b3, 1);
			from_b3 = true;
		}
		gk_buf_free(&a), gk_buf_free(&b), gk_buf_free(&c),
		    gk_buf_free(&d);
	}

	memset(s, 0, sizeof *s);
	if (have) {
		memcpy(s->ctx.trace_id, in.trace_id, 16);
		memcpy(s->parent, in.span_id, 8);
		s->has_parent = true;
	} else {
		gk_random_id(s->ctx.trace_id, 16);
		gk_counter_add(t->m_started, 1);
	}
	gk_random_id(s->ctx.span_id, 8);
	if (have && t->cfg.parent_based && in.sampled_known)
		s->sampled = in.sampled || in.debug;
	else if (b3_only >= 0 && t->cfg.parent_based)
		s->sampled = b3_only; /* "b3: 0": the caller said no */
	else
		s->sampled = ratio_allows(t, s->ctx.trace_id);
	if (s->sampled && !(have && in.debug) && !rate_allows(t))
		s->sampled = false;
	gk_counter_add(s->sampled ? t->m_sampled : t->m_unsampled, 1);
	s->start_us = gk_realtime_us();
	s->start_mono_us = gk_monotonic_us();

	/* The headers: ours replace whatever came in, valid or not. */
	char tp[56], b3[80], trace_hex[33], span_hex[17], parent_hex[17];
	gk_traceparent_format(s->ctx.trace_id, s->ctx.span_id, s->sampled, tp);
	gk_hex(s->ctx.trace_id, 16, trace_hex);
	gk_hex(s->ctx.span_id, 8, span_hex);
	gk_hex(s->parent, 8, parent_hex);
	gk_header add[4] = {{"traceparent", tp}};
	int n = 1;
	if (tracestate.len)
		add[n++] = (gk_header){"tracestate", gk_buf_cstr(&tracestate)};
	if (from_b3) {
		/* A B3 caller's services may read B3 only: answer in kind. */
		snprintf(b3, sizeof b3, "%s-%s-%c%s%s", trace_hex, span_hex,
		    s->sampled ? '1' : '0', s->has_parent ? "-" : "",
		    s->has_parent ? parent_hex : "");
		add[n++] = (gk_header){"b3", b3};
	}
	add[n] = (gk_header){0};
	gk_msg_edit_headers(m, propagation_headers, add);

	gk_buf tr = {0};
	gk_jw w;
	gk_jw_init(&w, &tr);
	gk_jw_object(&w);
	gk_jw_key(&w, "trace_id");
	gk_jw_cstr(&w, trace_hex);
	gk_jw_key(&w, "span_id");
	gk_jw_cstr(&w, span_hex);
	if (s->has_parent) {
		gk_jw_key(&w, "parent_id");
		gk_jw_cstr(&w, parent_hex);
	}
	gk_jw_key(&w, "sampled");
	gk_jw_bool(&w, s->sampled);
	gk_jw_object_end(&w);
	gk_msg_set(m, "trace", tr.data, tr.len);
	gk_buf_free(&tr);
	gk_buf_free(&tmp);
	gk_buf_free(&tracestate);
	gk_forward(req);
}

void
gk_tracer_response(gk_tracer *t, gk_req *req, gk_msg *resp)
{
	(void)t;
	struct tstate *s = gk_req_state(req);
	char tr[56];
	gk_traceparent_format(s->ctx.trace_id, s->ctx.span_id, s->sampled, tr);
	gk_header add[] = {{"traceresponse", tr}, {0}};
	gk_msg_edit_headers(resp, NULL, add);
	gk_pass(req, resp);
}

/* Low-cardinality span name: the route, or the path with ids templated. */
static void
route_of(const gk_msg *m, gk_buf *out)
{
	if (gk_json_string(gk_msg_get(m, "route"), out) == 0)
		return;
	gk_buf path = {0};
	if (gk_json_string(gk_msg_get(m, "path"), &path) < 0)
		gk_buf_adds(&path, "/");
	const char *p = gk_buf_cstr(&path);
	while (*p) {
		if (*p != '/') {
			gk_buf_addc(out, *p++);
			continue;
		}
		gk_buf_addc(out, *p++);
		size_t n = strcspn(p, "/");
		size_t digits = 0, hex = 0;
		for (size_t i = 0; i < n; i++) {
			digits += p[i] >= '0' && p[i] <= '9';
			hex += (p[i] >= '0' && p[i] <= '9') ||
			    (p[i] >= 'a' && p[i] <= 'f') || p[i] == '-';
		}
		if (n && (digits == n || (n >= 16 && hex == n)))
			gk_buf_adds(out, "{id}");
		else
			gk_buf_add(out, p, n);
		p += n;
	}
	gk_buf_free(&path);
}

void
gk_tracer_done(gk_tracer *t, gk_req *req, int status)
{
	struct tstate *s = gk_req_state(req);
	bool error = status >= 500 || status == 0;
	if (!s->sampled && !(t->cfg.sample_errors && error))
		return;
	gk_counter_add(t->m_spans, 1);
	const gk_msg *m = gk_req_msg(req);
	gk_buf method = {0}, route = {0}, path = {0}, remote = {0}, name = {0};
	if (gk_json_string(gk_msg_get(m, "method"), &method) < 0)
		gk_buf_adds(&method, "GET");
	route_of(m, &route);
	gk_json_string(gk_msg_get(m, "path"), &path);
	gk_json_string(gk_msg_get(m, "remote"), &remote);
	gk_buf_add(&name, method.data, method.len);
	gk_buf_addc(&name, ' ');
	gk_buf_add(&name, route.data, route.len);

	char hex[33];
	gk_jw *w = gk_event_begin("span");
	gk_hex(s->ctx.trace_id, 16, hex);
	gk_jw_key(w, "trace_id");
	gk_jw_cstr(w, hex);
	gk_hex(s->ctx.span_id, 8, hex);
	gk_jw_key(w, "span_id");
	gk_jw_cstr(w, hex);
	if (s->has_parent) {
		gk_hex(s->parent, 8, hex);
		gk_jw_key(w, "parent_id");
		gk_jw_cstr(w, hex);
	}
	gk_jw_key(w, "name");
	gk_jw_string(w, name.data, name.len);
	gk_jw_key(w, "kind");
	gk_jw_cstr(w, "server");
	gk_jw_key(w, "start_us");
	gk_jw_int(w, (int64_t)s->start_us);
	gk_jw_key(w, "duration_us");
	gk_jw_int(w, (int64_t)(gk_monotonic_us() - s->start_mono_us));
	gk_jw_key(w, "status");
	gk_jw_cstr(w, error ? "error" : "ok");
	gk_jw_key(w, "sampled");
	gk_jw_bool(w, s->sampled);
	gk_jw_key(w, "attrs");
	gk_jw_object(w);
	gk_jw_key(w, "http.request.method");
	gk_jw_string(w, method.data, method.len);
	gk_jw_key(w, "url.path");
	gk_jw_string(w, path.data, path.len);
	gk_jw_key(w, "http.route");
	gk_jw_string(w, route.data, route.len);
	if (status) {
		gk_jw_key(w, "http.response.status_code");
		gk_jw_int(w, status);
	} else {
		gk_jw_key(w, "error.type");
		gk_jw_cstr(w, "client_gone");
	}
	if (remote.len) {
		/* client.address is the address alone; the port apart. */
		char *colon = memrchr(remote.data, ':', remote.len);
		size_t alen = colon ? (size_t)(colon - remote.data) : remote.len;
		const char *a = remote.data;
		if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']')
			a++, alen -= 2;
		gk_jw_key(w, "client.address");
		gk_jw_string(w, a, alen);
		if (colon) {
			gk_jw_key(w, "client.port");
			gk_jw_int(w, atoi(colon + 1));
		}
	}
	gk_jw_object_end(w);
	gk_event_end();
	gk_buf_free(&method), gk_buf_free(&route), gk_buf_free(&path),
	    gk_buf_free(&remote), gk_buf_free(&name);
}
