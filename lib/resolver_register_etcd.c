/*
 * resolver_register_etcd.c: registration in etcd (v3 JSON gateway): grant
 * a lease of the TTL (POST /v3/lease/grant), put PREFIX/NAME/ADDR = "ADDR
 * WEIGHT [TAGS]" with it (/v3/kv/put), keep it alive (/v3/lease/keepalive;
 * an answer without a TTL means the lease is gone: grant and put again),
 * and revoke it to deregister (/v3/lease/revoke), which deletes the key.
 * Lease IDs are int64: kept as the decimal strings etcd writes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_register.h"

#define CALL_TIMEOUT_MS 5000

enum phase { GRANT, PUT, KEEPALIVE, REVOKE };

struct reg_etcd {
	gk_register *g;
	gk_rhttp h;
	char *base;
	gk_buf key64, val64;
	char lease[24]; /* "" when none */
	uint64_t ttl_s;
	enum phase phase;
};

static void
call(struct reg_etcd *e, enum phase ph, const char *path, const char *body)
{
	e->phase = ph;
	gk_buf url = {0};
	gk_buf_addf(&url, "%s%s", e->base, path);
	if (gk__rhttp_start(&e->h, "POST", gk_buf_cstr(&url), body,
	    strlen(body), CALL_TIMEOUT_MS, NULL) < 0) {
		if (ph == REVOKE)
			gk__register_stopped(e->g, false, "unable to start a request");
		else
			gk__register_result(e->g, GK_REG_FAILED,
			    "unable to start a request");
	}
	gk_buf_free(&url);
}

static void
grant(struct reg_etcd *e)
{
	char body[64];
	snprintf(body, sizeof body, "{\"TTL\":%llu}", (unsigned long long)e->ttl_s);
	call(e, GRANT, "/v3/lease/grant", body);
}

static void
on_done(gk_rhttp *h, bool ok, void *arg)
{
	struct reg_etcd *e = arg;
	char what[400];
	if (!ok) {
		snprintf(what, sizeof what, "etcd: %s", gk__rhttp_error(h));
		if (e->phase == REVOKE) {
			/* A lease already gone is as good as revoked. */
			bool gone = h->result == CURLE_OK && h->status == 404;
			gk__register_stopped(e->g, gone, what);
		} else if (e->phase == PUT && h->result == CURLE_OK &&
		    h->status == 404) {
			e->lease[0] = 0; /* expired between grant and put */
			gk__register_result(e->g, GK_REG_FAILED, what);
		} else
			gk__register_result(e->g, GK_REG_FAILED, what);
		return;
	}
	/* The keepalive endpoint is a stream: its answer is one line. */
	size_t len = strcspn(gk_buf_cstr(&h->body), "\n");
	jv doc = jv_parse_sized(h->body.data, (int)len);
	switch (e->phase) {
	case GRANT:
		if (!gk__jv_strcpy(doc, "ID", e->lease, sizeof e->lease) ||
		    strspn(e->lease, "0123456789") != strlen(e->lease) ||
		    !e->lease[0]) {
			e->lease[0] = 0;
			gk__register_result(e->g, GK_REG_FAILED,
			    "etcd: lease grant answered no ID");
		} else {
			gk_buf body = {0};
			gk_buf_addf(&body, "{\"key\":\"%s\",\"value\":\"%s\","
			    "\"lease\":\"%s\"}", gk_buf_cstr(&e->key64),
			    gk_buf_cstr(&e->val64), e->lease);
			call(e, PUT, "/v3/kv/put", gk_buf_cstr(&body));
			gk_buf_free(&body);
		}
		break;
	case PUT:
		gk__register_result(e->g, GK_REG_OK, NULL);
		break;
	case KEEPALIVE: {
		jv ttl = gk__jv_path(doc, "result", "TTL", (char *)0);
		uint64_t t = 0;
		if (gk__jv_uint(ttl, &t) && t > 0)
			gk__register_result(e->g, GK_REG_OK, NULL);
		else {
			jv err = gk__jv_get(doc, "error");
			if (jv_get_kind(err) != JV_KIND_NULL)
				gk__register_result(e->g, GK_REG_FAILED,
				    "etcd: keepalive answered an error");
			else {
				e->lease[0] = 0;
				gk__register_result(e->g, GK_REG_LOST,
				    "etcd: the lease expired");
			}
			jv_free(err);
		}
		jv_free(ttl);
		break;
	}
	case REVOKE:
		e->lease[0] = 0;
		gk__register_stopped(e->g, true, NULL);
		break;
	}
	jv_free(doc);
}

static void
etcd_step(void *state, bool registered)
{
	struct reg_etcd *e = state;
	if (!registered || !e->lease[0]) {
		grant(e);
		return;
	}
	char body[64];
	snprintf(body, sizeof body, "{\"ID\":\"%s\"}", e->lease);
	call(e, KEEPALIVE, "/v3/lease/keepalive", body);
}

static void
etcd_deregister(void *state)
{
	struct reg_etcd *e = state;
	gk__rhttp_cancel(&e->h);
	if (!e->lease[0]) {
		gk__register_stopped(e->g, true, NULL);
		return;
	}
	char body[64];
	snprintf(body, sizeof body, "{\"ID\":\"%s\"}", e->lease);
	call(e, REVOKE, "/v3/lease/revoke", body);
}

static int
etcd_init(gk_register *g, const char *rest, void **state, const char **why)
{
	const gk_register_options *o = gk__register_options(g);
	gk_buf prefix = {0}, val = {0};
	char *base;
	if (gk__etcd_parse_url(rest, &base, &prefix) < 0) {
		gk_buf_free(&prefix);
		*why = "expected etcd:http://HOST:PORT/PREFIX";
		return -1;
	}
	struct reg_etcd *e = gk_xcalloc(1, sizeof *e);
	e->g = g;
	e->base = base;
	e->ttl_s = (o->ttl_ms + 999) / 1000;
	/* PREFIX/NAME/ADDR: a watch of PREFIX/NAME/ sees every instance. */
	while (prefix.len && prefix.data[prefix.len - 1] == '/')
		prefix.len--;
	gk_buf_addf(&prefix, "/%s/%s", o->name, o->addr);
	gk_base64_encode(&e->key64, prefix.data, prefix.len);
	gk_buf_addf(&val, "%s %u", o->addr, o->weight);
	if (o->tags && *o->tags)
		gk_buf_addf(&val, " %s", o->tags);
	gk_base64_encode(&e->val64, val.data, val.len);
	gk_buf_free(&prefix);
	gk_buf_free(&val);
	gk__rhttp_init(&e->h, gk__register_curl(g));
	e->h.done = on_done;
	e->h.arg = e;
	*state = e;
	return 0;
}

static void
etcd_free(void *state)
{
	struct reg_etcd *e = state;
	gk__rhttp_free(&e->h);
	gk_buf_free(&e->key64);
	gk_buf_free(&e->val64);
	free(e->base);
	free(e);
}

const gk_register_backend gk_register_etcd = {"etcd", etcd_init, etcd_step,
    etcd_deregister, etcd_free};
