/*
 * zipkin_json.c: span events as Zipkin v2 JSON span objects (see otlp.h),
 * as zipkin-api's zipkin2-api.yaml describes them: lowercase hex ids,
 * timestamp and duration in microseconds (JSON numbers), kind in upper
 * case (absent for a local span), localEndpoint.serviceName, tags a map of
 * strings.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "otlp.h"

/* A JSON value as a Zipkin tag value: a string. */
static void
tag_value(gk_jw *w, gk_json v)
{
	if (v.type == GK_JSON_STRING)
		gk_jw_raw(w, v.p, v.len);
	else
		gk_jw_string(w, v.p, v.len); /* its JSON text */
}

/* The other side of the connection: the server of a client span
 * (server.address, as gk-client gives it), the client of any other. */
static void
remote_endpoint(gk_jw *w, gk_json attrs, bool client_side)
{
	const char *ak = client_side ? "server.address" : "client.address";
	const char *pk = client_side ? "server.port" : "client.port";
	gk_json addr = gk_json_member(attrs, ak);
	gk_json port = gk_json_member(attrs, pk);
	gk_buf a = {0};
	if (addr.type == GK_JSON_STRING)
		gk_json_string(addr, &a);
	/* An IPv6 address may come bracketed, as in a URL ("[::1]"). */
	if (a.len > 2 && a.data[0] == '[' && a.data[a.len - 1] == ']') {
		memmove(a.data, a.data + 1, a.len - 2);
		a.len -= 2;
	}
	const char *s = gk_buf_cstr(&a);
	unsigned char bin[16];
	const char *key = NULL;
	if (inet_pton(AF_INET, s, bin) == 1)
		key = "ipv4";
	else if (inet_pton(AF_INET6, s, bin) == 1)
		key = "ipv6";
	int64_t p = 0;
	bool has_port = gk_json_int(port, &p) && p > 0 && p < 65536;
	if (key) {
		gk_jw_key(w, "remoteEndpoint");
		gk_jw_object(w);
		gk_jw_key(w, key);
		gk_jw_cstr(w, s);
		if (has_port) {
			gk_jw_key(w, "port");
			gk_jw_int(w, p);
		}
		gk_jw_object_end(w);
	}
	gk_buf_free(&a);
}

int
gk_zipkin_span(const gk_event *ev, gk_buf *out, const char **why)
{
	static const char *const kinds[][2] = {
	    {"server", "SERVER"},     {"client", "CLIENT"},
	    {"producer", "PRODUCER"}, {"consumer", "CONSUMER"},
	    {"SERVER", "SERVER"},     {"CLIENT", "CLIENT"},
	    {"PRODUCER", "PRODUCER"}, {"CONSUMER", "CONSUMER"}};
	const gk_wire_msg *m = ev->msg;
	gk_otlp_span_ids ids;
	if (gk_otlp_span_ids_get(m, 1, &ids, why) < 0)
		return -1;
	const char *trace = ids.trace, *span = ids.span, *parent = ids.parent;
	bool has_parent = ids.has_parent;
	int64_t start_us = ids.start_us, dur_us = ids.dur_us;
	gk_json name = gk_wire_get(m, "name");
	gk_json kind = gk_wire_get(m, "kind");
	gk_json attrs = gk_wire_get(m, "attrs");
	if (attrs.type != GK_JSON_OBJECT)
		attrs = (gk_json){GK_JSON_OBJECT, "{}", 2};

	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	gk_jw_key(&w, "traceId");
	gk_jw_cstr(&w, trace);
	gk_jw_key(&w, "id");
	gk_jw_cstr(&w, span);
	if (has_parent) {
		gk_jw_key(&w, "parentId");
		gk_jw_cstr(&w, parent);
	}
	if (name.type == GK_JSON_STRING) {
		gk_jw_key(&w, "name");
		gk_jw_raw(&w, name.p, name.len);
	}
	const char *zkind = NULL;
	for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
		if (gk_json_eq(kind, kinds[i][0])) {
			zkind = kinds[i][1];
			gk_jw_key(&w, "kind");
			gk_jw_cstr(&w, zkind);
			break;
		}
	}
	gk_jw_key(&w, "timestamp");
	gk_jw_int(&w, start_us);
	/* Zipkin rounds a duration under 1 us up to 1. */
	gk_jw_key(&w, "duration");
	gk_jw_int(&w, dur_us < 1 ? 1 : dur_us);
	gk_jw_key(&w, "localEndpoint");
	gk_jw_object(&w);
	gk_jw_key(&w, "serviceName");
	if (ev->svc.type == GK_JSON_STRING && ev->svc.len > 2)
		gk_jw_raw(&w, ev->svc.p, ev->svc.len);
	else if (ev->proc.type == GK_JSON_STRING)
		gk_jw_raw(&w, ev->proc.p, ev->proc.len);
	else
		gk_jw_cstr(&w, "unknown");
	gk_jw_object_end(&w);
	/* A producer's and a consumer's other side is the broker: the
	 * server, as for a client. */
	remote_endpoint(&w, attrs,
	                zkind && (!strcmp(zkind, "CLIENT") ||
	                          !strcmp(zkind, "PRODUCER") ||
	                          !strcmp(zkind, "CONSUMER")));
	gk_jw_key(&w, "tags");
	gk_jw_object(&w);
	gk_json_iter it;
	gk_json k, v;
	bool failed = gk_json_eq(gk_wire_get(m, "status"), "error");
	bool has_error_tag = false, has_code_tag = false;
	gk_json_iter_init(&it, attrs);
	while (gk_json_iter_next(&it, &k, &v)) {
		if (v.type == GK_JSON_NULL)
			continue;
		/* Zipkin reads an error tag's presence as a failure, whatever
		 * its value: an "error" attribute of false is left out, as
		 * OpenTelemetry's Zipkin mapping asks. */
		if (gk_json_eq(k, "error")) {
			if (v.type == GK_JSON_FALSE || gk_json_eq(v, "false"))
				continue;
			has_error_tag = true;
		}
		if (gk_json_eq(k, "otel.status_code"))
			has_code_tag = true;
		gk_jw_raw(&w, k.p, k.len);
		gk_buf_addc(out, ':');
		w.after_key = true;
		tag_value(&w, v);
	}
	/* OpenTelemetry's status mapping: otel.status_code ERROR, and
	 * Zipkin's "error" tag holding the error's description.  "ok"
	 * stays unset, as in OTLP (otlp_json.c): no tag. */
	if (failed && !has_code_tag) {
		gk_jw_key(&w, "otel.status_code");
		gk_jw_cstr(&w, "ERROR");
	}
	if (failed && !has_error_tag) {
		gk_json et = gk_json_member(attrs, "error.type");
		gk_jw_key(&w, "error");
		if (et.type == GK_JSON_STRING)
			gk_jw_raw(&w, et.p, et.len);
		else
			gk_jw_cstr(&w, "error");
	}
	gk_jw_object_end(&w);
	gk_jw_object_end(&w);
	return 0;
}
