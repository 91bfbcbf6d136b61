/*
 * resolver_register.c: the registration loop.  Every third of the TTL it
 * asks the check URL (when given) and then the backend to register or
 * keep alive; a registration found lost is made again at once; stop takes
 * it out within a bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_register.h"
#include "resolver_source.h"

#define STOP_TIMEOUT_MS 5000
#define CHECK_TIMEOUT_MS 5000
#define RETRY_MS 1000

struct gk_register {
	gk_loop *loop;
	gk_curl *curl;
	gk_register_options o;
	char addr[300]; /* o.addr, as the resolver writes it (080 is 80) */
	const gk_register_backend *be;
	void *state;
	gk_rhttp check;
	gk_timer tick, stop_timer;
	uint64_t every_ms;
	bool registered, busy, stopping, check_failing;
	void (*stop_done)(bool ok, void *arg);
	void *stop_arg;
	gk_series *m_registered, *m_registrations, *m_keepalives, *m_errors;
	gk_series *m_check_failures, *m_lost;
};

const gk_register_options *gk__register_options(gk_register *g) { return &g->o; }
gk_curl *gk__register_curl(gk_register *g) { return g->curl; }

static void tick(gk_loop *loop, void *arg);

static void
schedule(gk_register *g, uint64_t ms)
{
	if (!g->stopping)
		gk_timer_start(g->loop, &g->tick, ms, tick, g);
}

void
gk__register_result(gk_register *g, enum gk_register_outcome r,
    const char *what)
{
	if (g->stopping)
		return;
	char w[400];
	snprintf(w, sizeof w, "error=%s", what ? what : "");
	switch (r) {
	case GK_REG_OK:
		g->busy = false;
		if (!g->registered) {
			char n[300], a[300];
			snprintf(n, sizeof n, "name=%s", g->o.name);
			snprintf(a, sizeof a, "addr=%s", g->o.addr);
			gk_log(GK_INFO, "registered", n, a);
			gk_counter_add(g->m_registrations, 1);
		} else
			gk_counter_add(g->m_keepalives, 1);
		g->registered = true;
		gk_gauge_set(g->m_registered, 1);
		schedule(g, g->every_ms);
		return;
	case GK_REG_LOST:
		gk_log(GK_WARN, "registration lost: registering again", w);
		gk_counter_add(g->m_lost, 1);
		g->registered = false;
		gk_gauge_set(g->m_registered, 0);
		g->be->step(g->state, false);
		return;
	case GK_REG_FAILED:
		g->busy = false;
		gk_log(GK_WARN, g->registered ? "registration: keepalive failed" :
		    "registration failed", w);
		gk_counter_add(g->m_errors, 1);
		schedule(g, g->every_ms < RETRY_MS ? g->every_ms : RETRY_MS);
		return;
	}
}

static void
on_check(gk_rhttp *h, bool ok, void *arg)
{
	gk_register *g = arg;
	if (ok) {
		if (g->check_failing)
			gk_log(GK_INFO, "health check passes again: keeping the "
			    "registration alive");
		g->check_failing = false;
		g->be->step(g->state, g->registered);
		return;
	}
	gk_counter_add(g->m_check_failures, 1);
	if (!g->check_failing) {
		char w[400];
		snprintf(w, sizeof w, "error=%s", gk__rhttp_error(h));
		gk_log(GK_WARN, "health check failed: not keeping the "
		    "registration alive", w);
	}
	g->check_failing = true;
	g->busy = false;
	schedule(g, g->every_ms);
}

static void
tick(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_register *g = arg;
	if (g->busy || g->stopping)
		return;
	g->busy = true;
	if (!g->o.check_url) {
		g->be->step(g->state, g->registered);
		return;
	}
	uint64_t t = g->every_ms < CHECK_TIMEOUT_MS ? g->every_ms :
	    CHECK_TIMEOUT_MS;
	if (gk__rhttp_start(&g->check, "GET", g->o.check_url, NULL, 0, t,
	    NULL) < 0) {
		g->busy = false;
		schedule(g, g->every_ms);
	}
}

static gk_series *
counter(const char *name, const char *help)
{
	return gk_metric_series(gk_counter_new(name, help, NULL));
}

gk_register *
gk_register_new(gk_loop *loop, const gk_register_options *o, const char **why)
{
	const gk_register_backend *be = NULL;
	const char *rest = NULL;
	if (!strncmp(o->uri, "etcd:", 5))
		be = &gk_register_etcd, rest = o->uri + 5;
	else if (!strncmp(o->uri, "consul:", 7))
		be = &gk_register_consul, rest = o->uri + 7;
	else {
		*why = "expected etcd:http://HOST:PORT/PREFIX or "
		       "consul:http://HOST:PORT";
		return NULL;
	}
	if (o->ttl_ms < 1000) {
		*why = "the TTL is at least 1s";
		return NULL;
	}
	if (!gk__host_port(o->addr) || strpbrk(o->addr, " \t\r\n/#")) {
		*why = "bad --addr (expected HOST:PORT)";
		return NULL;
	}
	if (!*o->name || strpbrk(o->name, " \t\r\n/#?&")) {
		*why = "bad --name (a word: no blanks, '/', '#', '?' or '&')";
		return NULL;
	}
	if (o->tags && strpbrk(o->tags, " \t\r\n#")) {
		*why = "bad --tags (comma-separated words)";
		return NULL;
	}
	gk_register *g = gk_xcalloc(1, sizeof *g);
	g->loop = loop;
	g->o = *o;
	/* Registered as every resolver lists it, so that one instance
	 * spelled two ways is one key. */
	snprintf(g->addr, sizeof g->addr, "%s", o->addr);
	gk__canon_addr(g->addr, sizeof g->addr);
	g->o.addr = g->addr;
	if (!g->o.weight)
		g->o.weight = 1;
	g->be = be;
	g->every_ms = o->ttl_ms / 3;
	g->curl = gk_curl_new(loop, 0);
	if (be->init(g, rest, &g->state, why) < 0) {
		gk_curl_free(g->curl);
		free(g);
		return NULL;
	}
	gk__rhttp_init(&g->check, g->curl);
	g->check.done = on_check;
	g->check.arg = g;
	g->m_registered = gk_metric_series(gk_gauge_new("gk_register_registered",
	    "1 while this instance is registered", NULL));
	g->m_registrations = counter("gk_register_registrations_total",
	    "Registrations made (the first, and after one was lost)");
	g->m_keepalives = counter("gk_register_keepalives_total",
	    "Lease keepalives or TTL check passes");
	g->m_errors = counter("gk_register_errors_total",
	    "Calls to the registry that failed");
	g->m_check_failures = counter("gk_register_check_failures_total",
	    "Health checks (--check) that did not answer 2xx");
	g->m_lost = counter("gk_register_lost_total",
	    "Registrations found gone (lease expired, agent restarted)");
	schedule(g, 0);
	return g;
}

void
gk__register_stopped(gk_register *g, bool ok, const char *what)
{
	if (!g->stop_done)
		return;
	gk_timer_stop(g->loop, &g->stop_timer);
	char n[300];
	snprintf(n, sizeof n, "name=%s", g->o.name);
	if (ok)
		gk_log(GK_INFO, "deregistered", n);
	else {
		char w[400];
		snprintf(w, sizeof w, "error=%s", what ? what : "timed out");
		gk_log(GK_ERROR, "unable to deregister", n, w);
	}
	g->registered = false;
	gk_gauge_set(g->m_registered, 0);
	void (*done)(bool, void *) = g->stop_done;
	g->stop_done = NULL;
	done(ok, g->stop_arg);
}

static void
on_stop_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk__register_stopped(arg, false, "timed out");
}

void
gk_register_stop(gk_register *g, void (*done)(bool ok, void *arg), void *arg)
{
	g->stopping = true;
	gk_timer_stop(g->loop, &g->tick);
	gk__rhttp_cancel(&g->check);
	g->stop_done = done;
	g->stop_arg = arg;
	gk_timer_start(g->loop, &g->stop_timer, STOP_TIMEOUT_MS, on_stop_timeout,
	    g);
	/* Even when no registration was confirmed: one may be in flight. */
	g->be->deregister(g->state);
}

void
gk_register_free(gk_register *g)
{
	if (!g)
		return;
	gk_timer_stop(g->loop, &g->tick);
	gk_timer_stop(g->loop, &g->stop_timer);
	gk__rhttp_free(&g->check);
	g->be->free(g->state);
	gk_curl_free(g->curl);
	free(g);
}
