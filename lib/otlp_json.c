/*
 * otlp_json.c: events as OTLP/HTTP JSON records (see otlp.h).
 *
 * The JSON mapping of opentelemetry-proto: lowerCamelCase member names,
 * trace and span ids as lowercase hex strings, 64-bit integers
 * (timeUnixNano, intValue, count, bucketCounts) as decimal strings, enums
 * (kind, severityNumber, aggregationTemporality, status code) as numbers,
 * doubles as JSON numbers or "NaN", "Infinity", "-Infinity".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "otlp.h"

/* opentelemetry-proto enums */
enum {
	SPAN_KIND_UNSPECIFIED = 0,
	SPAN_KIND_INTERNAL = 1,
	SPAN_KIND_SERVER = 2,
	SPAN_KIND_CLIENT = 3,
	SPAN_KIND_PRODUCER = 4,
	SPAN_KIND_CONSUMER = 5,
	STATUS_CODE_UNSET = 0,
	STATUS_CODE_ERROR = 2,
	AGGREGATION_TEMPORALITY_CUMULATIVE = 2,
};

bool
gk_otlp_hex_id(gk_json v, size_t n, char *out)
{
	if (v.type != GK_JSON_STRING || v.len != n + 2)
		return false;
	bool nonzero = false;
	for (size_t i = 0; i < n; i++) {
		char c = v.p[1 + i];
		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		if (c != '0')
			nonzero = true;
		out[i] = c;
	}
	out[n] = 0;
	return nonzero;
}

static void
jw_u64(gk_jw *w, uint64_t v)
{
	char s[32];
	snprintf(s, sizeof s, "\"%llu\"", (unsigned long long)v);
	gk_jw_raw(w, s, strlen(s));
}

static void
jw_otlp_double(gk_jw *w, double v)
{
	if (isnan(v))
		gk_jw_cstr(w, "NaN");
	else if (isinf(v))
		gk_jw_cstr(w, v > 0 ? "Infinity" : "-Infinity");
	else
		gk_jw_double(w, v);
}

void
gk_otlp_anyvalue(gk_jw *w, gk_json v)
{
	gk_jw_object(w);
	int64_t i;
	gk_json_iter it;
	gk_json k, e;
	switch (v.type) {
	case GK_JSON_STRING:
		gk_jw_key(w, "stringValue");
		gk_jw_raw(w, v.p, v.len);
		break;
	case GK_JSON_NUMBER:
		if (gk_json_int(v, &i)) {
			gk_jw_key(w, "intValue");
			char s[32];
			snprintf(s, sizeof s, "\"%lld\"", (long long)i);
			gk_jw_raw(w, s, strlen(s));
		} else {
			/* A number past a double's range (1e400) would be a
			 * JSON number the receiver refuses, and with it the
			 * whole request: it is the double it reads as. */
			double d = 0;
			gk_jw_key(w, "doubleValue");
			if (!gk_json_double(v, &d) && isinf(d))
				jw_otlp_double(w, d);
			else
				gk_jw_raw(w, v.p, v.len);
		}
		break;
	case GK_JSON_TRUE:
	case GK_JSON_FALSE:
		gk_jw_key(w, "boolValue");
		gk_jw_bool(w, v.type == GK_JSON_TRUE);
		break;
	case GK_JSON_ARRAY:
		gk_jw_key(w, "arrayValue");
		gk_jw_object(w);
		gk_jw_key(w, "values");
		gk_jw_array(w);
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, NULL, &e))
			gk_otlp_anyvalue(w, e);
		gk_jw_array_end(w);
		gk_jw_object_end(w);
		break;
	case GK_JSON_OBJECT:
		gk_jw_key(w, "kvlistValue");
		gk_jw_object(w);
		gk_jw_key(w, "values");
		gk_jw_array(w);
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, &k, &e)) {
			gk_jw_object(w);
			gk_jw_key(w, "key");
			gk_jw_raw(w, k.p, k.len);
			gk_jw_key(w, "value");
			gk_otlp_anyvalue(w, e);
			gk_jw_object_end(w);
		}
		gk_jw_array_end(w);
		gk_jw_object_end(w);
		break;
	default: /* null, absent: an empty AnyValue */
		break;
	}
	gk_jw_object_end(w);
}

/* {"key": KEY, "value": {"stringValue": S}} */
static void
kv_cstr(gk_jw *w, const char *key, const char *s, size_t n)
{
	gk_jw_object(w);
	gk_jw_key(w, "key");
	gk_jw_cstr(w, key);
	gk_jw_key(w, "value");
	gk_jw_object(w);
	gk_jw_key(w, "stringValue");
	gk_jw_string(w, s, n);
	gk_jw_object_end(w);
	gk_jw_object_end(w);
}

/* {"key": <raw key>, "value": AnyValue} */
static void
kv_json(gk_jw *w, gk_json key, gk_json v)
{
	gk_jw_object(w);
	gk_jw_key(w, "key");
	gk_jw_raw(w, key.p, key.len);
	gk_jw_key(w, "value");
	gk_otlp_anyvalue(w, v);
	gk_jw_object_end(w);
}

static const char *
host_name(void)
{
	static char host[256];
	if (!host[0] && (gethostname(host, sizeof host - 1) < 0 || !host[0]))
		snprintf(host, sizeof host, "localhost");
	return host;
}

/* "resource": {"attributes": [service.name, process.pid, ...]} */
static void
resource(gk_jw *w, const gk_event *ev)
{
	gk_buf proc = {0}, svc = {0};
	gk_event_text(ev->proc, &proc);
	if (!proc.len)
		gk_buf_adds(&proc, "unknown");
	if (ev->svc.type == GK_JSON_STRING)
		gk_json_string(ev->svc, &svc);
	if (!svc.len) {
		/* The OpenTelemetry default for a service with no name. */
		gk_buf_adds(&svc, "unknown_service:");
		gk_buf_add(&svc, proc.data, proc.len);
	}
	gk_jw_key(w, "resource");
	gk_jw_object(w);
	gk_jw_key(w, "attributes");
	gk_jw_array(w);
	kv_cstr(w, "service.name", svc.data, svc.len);
	kv_cstr(w, "process.executable.name", proc.data, proc.len);
	int64_t pid;
	if (gk_json_int(ev->pid, &pid)) {
		gk_jw_object(w);
		gk_jw_key(w, "key");
		gk_jw_cstr(w, "process.pid");
		gk_jw_key(w, "value");
		gk_otlp_anyvalue(w, ev->pid);
		gk_jw_object_end(w);
	}
	const char *h = host_name();
	kv_cstr(w, "host.name", h, strlen(h));
	gk_jw_array_end(w);
	gk_jw_object_end(w);
	gk_buf_free(&proc);
	gk_buf_free(&svc);
}

static void
scope(gk_jw *w)
{
	gk_jw_key(w, "scope");
	gk_jw_object(w);
	gk_jw_key(w, "name");
	gk_jw_cstr(w, "gokit");
	gk_jw_key(w, "version");
	gk_jw_cstr(w, GK_VERSION);
	gk_jw_object_end(w);
}

/* ------------------------------------------------------------------ */
/* Spans                                                               */
/* ------------------------------------------------------------------ */

static int
span_kind(gk_json k)
{
	static const char *const names[] = {"unspecified", "internal",
	                                    "server", "client", "producer",
	                                    "consumer"};
	int64_t n;
	if (gk_json_int(k, &n) && n >= 0 && n <= 5)
		return (int)n;
	/* In either case: Zipkin writes kinds in upper case, and
	 * gk-export-zipkin reads both. */
	if (k.type != GK_JSON_STRING || k.len < 2)
		return SPAN_KIND_UNSPECIFIED;
	for (int i = 0; i < 6; i++)
		if (strlen(names[i]) == k.len - 2 &&
		    !strncasecmp(k.p + 1, names[i], k.len - 2))
			return i;
	return SPAN_KIND_UNSPECIFIED;
}

int
gk_otlp_span_ids_get(const gk_wire_msg *m, int64_t min_start_us,
    gk_otlp_span_ids *s, const char **why)
{
	s->dur_us = 0;
	if (!gk_otlp_hex_id(gk_wire_get(m, "trace_id"), 32, s->trace)) {
		*why = "trace_id is not 32 hexadecimal digits";
		return -1;
	}
	if (!gk_otlp_hex_id(gk_wire_get(m, "span_id"), 16, s->span)) {
		*why = "span_id is not 16 hexadecimal digits";
		return -1;
	}
	gk_json pj = gk_wire_get(m, "parent_id");
	s->has_parent = pj.type != GK_JSON_NONE && pj.type != GK_JSON_NULL;
	if (s->has_parent && !gk_otlp_hex_id(pj, 16, s->parent)) {
		*why = "parent_id is not 16 hexadecimal digits";
		return -1;
	}
	if (!gk_json_int(gk_wire_get(m, "start_us"), &s->start_us) ||
	    s->start_us < min_start_us) {
		*why = "start_us is not a count of microseconds";
		return -1;
	}
	gk_json dj = gk_wire_get(m, "duration_us");
	if (dj.type != GK_JSON_NONE &&
	    (!gk_json_int(dj, &s->dur_us) || s->dur_us < 0)) {
		*why = "duration_us is not a count of microseconds";
		return -1;
	}
	return 0;
}

int
gk_otlp_span(const gk_event *ev, gk_buf *out, const char **why)
{
	const gk_wire_msg *m = ev->msg;
	gk_otlp_span_ids ids;
	if (gk_otlp_span_ids_get(m, 0, &ids, why) < 0)
		return -1;
	const char *trace = ids.trace, *span = ids.span, *parent = ids.parent;
	bool has_parent = ids.has_parent;
	int64_t start_us = ids.start_us, dur_us = ids.dur_us;
	gk_json name = gk_wire_get(m, "name");
	gk_json attrs = gk_wire_get(m, "attrs");
	gk_json status = gk_wire_get(m, "status");

	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	resource(&w, ev);
	gk_jw_key(&w, "scopeSpans");
	gk_jw_array(&w);
	gk_jw_object(&w);
	scope(&w);
	gk_jw_key(&w, "spans");
	gk_jw_array(&w);
	gk_jw_object(&w);
	gk_jw_key(&w, "traceId");
	gk_jw_cstr(&w, trace);
	gk_jw_key(&w, "spanId");
	gk_jw_cstr(&w, span);
	if (has_parent) {
		gk_jw_key(&w, "parentSpanId");
		gk_jw_cstr(&w, parent);
	}
	gk_jw_key(&w, "name");
	if (name.type == GK_JSON_STRING)
		gk_jw_raw(&w, name.p, name.len);
	else
		gk_jw_cstr(&w, "unknown");
	gk_jw_key(&w, "kind");
	gk_jw_int(&w, span_kind(gk_wire_get(m, "kind")));
	gk_jw_key(&w, "startTimeUnixNano");
	jw_u64(&w, (uint64_t)start_us * 1000u);
	gk_jw_key(&w, "endTimeUnixNano");
	jw_u64(&w, (uint64_t)(start_us + dur_us) * 1000u);
	gk_jw_key(&w, "attributes");
	gk_jw_array(&w);
	if (attrs.type == GK_JSON_OBJECT) {
		gk_json_iter it;
		gk_json k, v;
		gk_json_iter_init(&it, attrs);
		while (gk_json_iter_next(&it, &k, &v))
			if (v.type != GK_JSON_NULL)
				kv_json(&w, k, v);
	}
	gk_jw_array_end(&w);
	gk_jw_key(&w, "status");
	gk_jw_object(&w);
	/* "ok" leaves the status unset, as OpenTelemetry's HTTP conventions
	 * ask of instrumentation; "error" is STATUS_CODE_ERROR. */
	gk_jw_key(&w, "code");
	if (gk_json_eq(status, "error")) {
		gk_jw_int(&w, STATUS_CODE_ERROR);
		gk_json et = attrs.type == GK_JSON_OBJECT
		    ? gk_json_member(attrs, "error.type")
		    : (gk_json){0};
		if (et.type == GK_JSON_STRING) {
			gk_jw_key(&w, "message");
			gk_jw_raw(&w, et.p, et.len);
		}
	} else {
		gk_jw_int(&w, STATUS_CODE_UNSET);
	}
	gk_jw_object_end(&w);
	gk_jw_object_end(&w); /* span */
	gk_jw_array_end(&w);
	gk_jw_object_end(&w); /* scopeSpans[0] */
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Logs                                                                */
/* ------------------------------------------------------------------ */

int
gk_otlp_log(const gk_event *ev, gk_buf *out, const char **why)
{
	static const int severity[] = {5, 9, 13, 17, 21}; /* DEBUG..FATAL */
	(void)why;
	const gk_wire_msg *m = ev->msg;
	enum gk_level lv = gk_event_level(ev);
	char trace[33], span[17];
	bool has_trace = gk_otlp_hex_id(gk_wire_get(m, "trace_id"), 32, trace);
	bool has_span = has_trace &&
	    gk_otlp_hex_id(gk_wire_get(m, "span_id"), 16, span);
	gk_json type = gk_wire_get(m, "type");

	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	resource(&w, ev);
	gk_jw_key(&w, "scopeLogs");
	gk_jw_array(&w);
	gk_jw_object(&w);
	scope(&w);
	gk_jw_key(&w, "logRecords");
	gk_jw_array(&w);
	gk_jw_object(&w);
	uint64_t ts = gk_event_ts_ns(ev->ts);
	if (ts) {
		gk_jw_key(&w, "timeUnixNano");
		jw_u64(&w, ts);
	}
	gk_jw_key(&w, "observedTimeUnixNano");
	jw_u64(&w, gk_realtime_us() * 1000u);
	gk_jw_key(&w, "severityNumber");
	gk_jw_int(&w, severity[lv]);
	gk_jw_key(&w, "severityText");
	if (ev->level.type == GK_JSON_STRING)
		gk_jw_raw(&w, ev->level.p, ev->level.len);
	else
		gk_jw_cstr(&w, gk_level_name(lv));
	if (ev->text.type != GK_JSON_NONE) {
		gk_jw_key(&w, "body");
		gk_otlp_anyvalue(&w, ev->text);
	} else if (ev->type == GK_EV_ACCESS) {
		/* "GET /path 200" */
		gk_buf b = {0};
		gk_event_text(gk_wire_get(m, "method"), &b);
		gk_buf_addc(&b, ' ');
		gk_event_text(gk_wire_get(m, "path"), &b);
		gk_buf_addc(&b, ' ');
		gk_event_text(gk_wire_get(m, "status"), &b);
		gk_jw_key(&w, "body");
		gk_jw_object(&w);
		gk_jw_key(&w, "stringValue");
		gk_jw_string(&w, b.data, b.len);
		gk_jw_object_end(&w);
		gk_buf_free(&b);
	}
	gk_jw_key(&w, "attributes");
	gk_jw_array(&w);
	if (ev->type != GK_EV_LOG && type.type == GK_JSON_STRING) {
		gk_jw_object(&w);
		gk_jw_key(&w, "key");
		gk_jw_cstr(&w, "gk.event.type");
		gk_jw_key(&w, "value");
		gk_otlp_anyvalue(&w, type);
		gk_jw_object_end(&w);
	}
	for (unsigned i = 0; i < m->nfields; i++) {
		gk_json k = m->field[i].key, v = m->field[i].value;
		if (gk_event_common_key(k) || v.type == GK_JSON_NULL)
			continue;
		if ((has_trace && gk_json_eq(k, "trace_id")) ||
		    (has_span && gk_json_eq(k, "span_id")))
			continue;
		kv_json(&w, k, v);
	}
	gk_jw_array_end(&w);
	if (has_trace) {
		gk_jw_key(&w, "traceId");
		gk_jw_cstr(&w, trace);
	}
	if (has_span) {
		gk_jw_key(&w, "spanId");
		gk_jw_cstr(&w, span);
	}
	gk_jw_object_end(&w); /* logRecord */
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */
/* ------------------------------------------------------------------ */

bool
gk_otlp_snapshot_start(const gk_event *ev, uint64_t *ns)
{
	gk_snap_iter it;
	gk_snap_family f;
	gk_snap_begin(&it, ev);
	while (gk_snap_next(&it, &f)) {
		if (f.type != GK_GAUGE ||
		    !gk_json_eq(f.name, "process_start_time_seconds"))
			continue;
		gk_json_iter si;
		gk_snap_series s;
		gk_snap_series_begin(&si, &f);
		if (gk_snap_series_next(&si, &f, &s) && isfinite(s.value) &&
		    s.value > 0 && s.value < 1e10) {
			*ns = (uint64_t)(s.value * 1e9);
			return true;
		}
	}
	return false;
}

static void
point_head(gk_jw *w, const gk_snap_series *s, uint64_t start_ns,
    uint64_t ts_ns)
{
	gk_jw_key(w, "attributes");
	gk_jw_array(w);
	gk_json_iter it;
	gk_json k, v;
	gk_json_iter_init(&it, s->labels);
	while (gk_json_iter_next(&it, &k, &v))
		kv_json(w, k, v);
	gk_jw_array_end(w);
	if (start_ns) {
		gk_jw_key(w, "startTimeUnixNano");
		jw_u64(w, start_ns);
	}
	gk_jw_key(w, "timeUnixNano");
	jw_u64(w, ts_ns);
}

static uint64_t
count_u64(double c)
{
	if (!(c > 0))
		return 0;
	if (c > 1.8e19)
		return UINT64_MAX;
	/* llround() for c > 0, without linking libm (half a MiB resident
	 * for this one call): c - i is exact below 2^53, and from there c
	 * is a whole number already. */
	uint64_t i = (uint64_t)c;
	return c - (double)i >= 0.5 ? i + 1 : i;
}

static void
histogram_point(gk_jw *w, const gk_snap_series *s)
{
	gk_jw_key(w, "count");
	jw_u64(w, count_u64(s->count));
	gk_jw_key(w, "sum");
	jw_otlp_double(w, s->sum);
	/* Cumulative [le, count] pairs become per-bucket counts and the
	 * finite bounds; the last bucket is (last bound, +Inf). */
	gk_buf bounds = {0}, counts = {0};
	gk_jw bw, cw;
	gk_jw_init(&bw, &bounds);
	gk_jw_init(&cw, &counts);
	gk_jw_array(&bw);
	gk_jw_array(&cw);
	/* explicitBounds must be strictly increasing: in le order, a
	 * repeated le once (gk_snap_buckets). */
	static gk_snap_bucket *bk;
	static size_t bkcap;
	size_t nb = gk_snap_buckets(s, &bk, &bkcap, NULL);
	double prev = 0;
	bool inf = false;
	for (size_t j = 0; j < nb && !inf; j++) {
		double le = bk[j].le, c = bk[j].count;
		jw_u64(&cw, count_u64(c - prev));
		if (c > prev)
			prev = c;
		if (isinf(le) && le > 0)
			inf = true;
		else
			jw_otlp_double(&bw, le);
	}
	if (!inf) /* no +Inf bucket: what is left of count */
		jw_u64(&cw, count_u64(s->count - prev));
	gk_jw_array_end(&bw);
	gk_jw_array_end(&cw);
	gk_jw_key(w, "bucketCounts");
	gk_jw_raw(w, counts.data, counts.len);
	gk_jw_key(w, "explicitBounds");
	gk_jw_raw(w, bounds.data, bounds.len);
	gk_buf_free(&bounds);
	gk_buf_free(&counts);
}

int
gk_otlp_metrics(const gk_event *ev, uint64_t start_ns, gk_buf *out,
    const char **why)
{
	uint64_t ts_ns = gk_event_ts_ns(ev->ts);
	if (!ts_ns) {
		*why = "ts is missing or malformed";
		return -1;
	}
	size_t mark = out->len;
	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	resource(&w, ev);
	gk_jw_key(&w, "scopeMetrics");
	gk_jw_array(&w);
	gk_jw_object(&w);
	scope(&w);
	gk_jw_key(&w, "metrics");
	gk_jw_array(&w);
	size_t nmetrics = 0;
	gk_snap_iter it;
	gk_snap_family f;
	gk_snap_begin(&it, ev);
	while (gk_snap_next(&it, &f)) {
		gk_json_iter si;
		gk_snap_series s;
		gk_snap_series_begin(&si, &f);
		if (!gk_snap_series_next(&si, &f, &s))
			continue; /* no series yet */
		nmetrics++;
		gk_jw_object(&w);
		gk_jw_key(&w, "name");
		gk_jw_raw(&w, f.name.p, f.name.len);
		if (f.help.type == GK_JSON_STRING && f.help.len > 2) {
			gk_jw_key(&w, "description");
			gk_jw_raw(&w, f.help.p, f.help.len);
		}
		static const char *const kind[] = {"sum", "gauge",
		                                   "histogram"};
		gk_jw_key(&w, kind[f.type]);
		gk_jw_object(&w);
		gk_jw_key(&w, "dataPoints");
		gk_jw_array(&w);
		gk_snap_series_begin(&si, &f);
		while (gk_snap_series_next(&si, &f, &s)) {
			gk_jw_object(&w);
			point_head(&w, &s, f.type == GK_GAUGE ? 0 : start_ns,
			    ts_ns);
			if (f.type == GK_HISTOGRAM) {
				histogram_point(&w, &s);
			} else {
				gk_jw_key(&w, "asDouble");
				jw_otlp_double(&w, s.value);
			}
			gk_jw_object_end(&w);
		}
		gk_jw_array_end(&w);
		if (f.type != GK_GAUGE) {
			gk_jw_key(&w, "aggregationTemporality");
			gk_jw_int(&w, AGGREGATION_TEMPORALITY_CUMULATIVE);
		}
		if (f.type == GK_COUNTER) {
			gk_jw_key(&w, "isMonotonic");
			gk_jw_bool(&w, true);
		}
		gk_jw_object_end(&w);
		gk_jw_object_end(&w);
	}
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
	if (!nmetrics) {
		out->len = mark;
		return 1;
	}
	return 0;
}
