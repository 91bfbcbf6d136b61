/*
 * resolver_register_consul.c: registration with the local Consul agent:
 * PUT /v1/agent/service/register with a TTL check (initially passing),
 * PUT /v1/agent/check/pass/service:ID to keep it passing (any HTTP error
 * there means the agent lost it: register again, which Consul takes as
 * the same service), and PUT /v1/agent/service/deregister/ID to take it
 * out.  The service ID is NAME-HOST-PORT.  CONSUL_HTTP_TOKEN is sent as
 * X-Consul-Token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_register.h"

#define CALL_TIMEOUT_MS 5000
/* Consul reaps a service critical this long (its minimum is 1m). */
#define DEREGISTER_AFTER_MIN_S 60

enum phase { REGISTER, PASS, DEREGISTER };

struct reg_consul {
	gk_register *g;
	gk_rhttp h;
	char *base;
	char id[600];
	gk_buf id_url, reg_body;
	char token[600];
	const char *headers[2];
	enum phase phase;
	bool attempted;
};

static void
call(struct reg_consul *c, enum phase ph, const char *path, const char *body)
{
	c->phase = ph;
	gk_buf url = {0};
	gk_buf_addf(&url, "%s%s%s", c->base, path, ph == REGISTER ? "" :
	    gk_buf_cstr(&c->id_url));
	if (gk__rhttp_start(&c->h, "PUT", gk_buf_cstr(&url), body ? body : "",
	    body ? strlen(body) : 0, CALL_TIMEOUT_MS,
	    c->token[0] ? c->headers : NULL) < 0) {
		if (ph == DEREGISTER)
			gk__register_stopped(c->g, false, "unable to start a request");
		else
			gk__register_result(c->g, GK_REG_FAILED,
			    "unable to start a request");
	}
	gk_buf_free(&url);
}

static void
on_done(gk_rhttp *h, bool ok, void *arg)
{
	struct reg_consul *c = arg;
	char what[400];
	snprintf(what, sizeof what, "consul: %s", ok ? "" : gk__rhttp_error(h));
	switch (c->phase) {
	case REGISTER:
		gk__register_result(c->g, ok ? GK_REG_OK : GK_REG_FAILED, what);
		break;
	case PASS:
		if (ok)
			gk__register_result(c->g, GK_REG_OK, NULL);
		else if (h->result == CURLE_OK) /* the agent answered: lost */
			gk__register_result(c->g, GK_REG_LOST, what);
		else
			gk__register_result(c->g, GK_REG_FAILED, what);
		break;
	case DEREGISTER:
		/* A service the agent does not know (it restarted and forgot
		 * it) is as good as deregistered, as a lease already gone is
		 * for etcd. */
		gk__register_stopped(
		    c->g, ok || (h->result == CURLE_OK && h->status == 404),
		    what);
		break;
	}
}

static void
consul_step(void *state, bool registered)
{
	struct reg_consul *c = state;
	if (!registered) {
		c->attempted = true;
		call(c, REGISTER, "/v1/agent/service/register",
		    gk_buf_cstr(&c->reg_body));
	} else
		call(c, PASS, "/v1/agent/check/pass/service:", NULL);
}

static void
consul_deregister(void *state)
{
	struct reg_consul *c = state;
	gk__rhttp_cancel(&c->h);
	if (!c->attempted) {
		gk__register_stopped(c->g, true, NULL);
		return;
	}
	call(c, DEREGISTER, "/v1/agent/service/deregister/", NULL);
}

static int
consul_init(gk_register *g, const char *rest, void **state, const char **why)
{
	const gk_register_options *o = gk__register_options(g);
	const char *sep = strstr(rest, "://");
	const char *path = sep ? strchr(sep + 3, '/') : NULL;
	if (!sep || (strncmp(rest, "http://", 7) && strncmp(rest, "https://", 8)) ||
	    (path && path[1]) || strchr(rest, '?')) {
		*why = "expected consul:http://HOST:PORT (the local agent)";
		return -1;
	}
	struct reg_consul *c = gk_xcalloc(1, sizeof *c);
	c->g = g;
	size_t blen = path ? (size_t)(path - rest) : strlen(rest);
	c->base = gk_xmalloc(blen + 1);
	memcpy(c->base, rest, blen);
	c->base[blen] = 0;
	/* host and port of --addr, brackets of IPv6 off */
	const char *colon = strrchr(o->addr, ':');
	char host[300];
	size_t hn = (size_t)(colon - o->addr);
	const char *h = o->addr;
	if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']')
		h++, hn -= 2;
	snprintf(host, sizeof host, "%.*s", (int)hn, h);
	int port = atoi(colon + 1);
	snprintf(c->id, sizeof c->id, "%s-%s-%d", o->name, host, port);
	gk__url_escape(&c->id_url, c->id);
	uint64_t ttl_s = (o->ttl_ms + 999) / 1000;
	uint64_t reap = ttl_s * 3 > DEREGISTER_AFTER_MIN_S ? ttl_s * 3 :
	    DEREGISTER_AFTER_MIN_S;
	gk_jw w;
	gk_jw_init(&w, &c->reg_body);
	gk_jw_object(&w);
	gk_jw_key(&w, "ID");
	gk_jw_cstr(&w, c->id);
	gk_jw_key(&w, "Name");
	gk_jw_cstr(&w, o->name);
	gk_jw_key(&w, "Address");
	gk_jw_cstr(&w, host);
	gk_jw_key(&w, "Port");
	gk_jw_int(&w, port);
	gk_jw_key(&w, "Tags");
	gk_jw_comma_list(&w, o->tags ? o->tags : "");
	gk_jw_key(&w, "Weights");
	gk_jw_object(&w);
	gk_jw_key(&w, "Passing");
	gk_jw_int(&w, o->weight);
	gk_jw_key(&w, "Warning");
	gk_jw_int(&w, 1);
	gk_jw_object_end(&w);
	gk_jw_key(&w, "Check");
	gk_jw_object(&w);
	char buf[700];
	snprintf(buf, sizeof buf, "service:%s", c->id);
	gk_jw_key(&w, "CheckID");
	gk_jw_cstr(&w, buf);
	gk_jw_key(&w, "Name");
	gk_jw_cstr(&w, "gk-resolver TTL");
	snprintf(buf, sizeof buf, "%llus", (unsigned long long)ttl_s);
	gk_jw_key(&w, "TTL");
	gk_jw_cstr(&w, buf);
	gk_jw_key(&w, "Status");
	gk_jw_cstr(&w, "passing");
	snprintf(buf, sizeof buf, "%llus", (unsigned long long)reap);
	gk_jw_key(&w, "DeregisterCriticalServiceAfter");
	gk_jw_cstr(&w, buf);
	gk_jw_object_end(&w);
	gk_jw_object_end(&w);
	const char *tok = getenv("CONSUL_HTTP_TOKEN");
	if (tok && *tok && strlen(tok) < sizeof c->token - 20 &&
	    !strpbrk(tok, "\r\n")) {
		snprintf(c->token, sizeof c->token, "X-Consul-Token: %s", tok);
		c->headers[0] = c->token;
	}
	gk__rhttp_init(&c->h, gk__register_curl(g));
	c->h.done = on_done;
	c->h.arg = c;
	*state = c;
	return 0;
}

static void
consul_free(void *state)
{
	struct reg_consul *c = state;
	gk__rhttp_free(&c->h);
	gk_buf_free(&c->id_url);
	gk_buf_free(&c->reg_body);
	free(c->base);
	free(c);
}

const gk_register_backend gk_register_consul = {"consul", consul_init,
    consul_step, consul_deregister, consul_free};
