/*
 * resolver_register.h: registration, the other half of service discovery
 * (internal; gk-resolver register).  This instance is put into etcd under
 * a lease, or into the local Consul agent with a TTL check, kept alive at
 * a third of the TTL while it runs (and, with a check URL, only while a
 * GET of it answers 2xx), and taken out on request (SIGTERM).
 */
#ifndef GK_RESOLVER_REGISTER_H
#define GK_RESOLVER_REGISTER_H

#include "gokit.h"
#include "resolver_http.h"

typedef struct gk_register_options {
	const char *uri;       /* etcd:http://H:P/PREFIX or consul:http://H:P */
	const char *name;      /* the service */
	const char *addr;      /* this instance, HOST:PORT */
	const char *tags;      /* comma-separated, or NULL */
	const char *check_url; /* keep alive only while it answers 2xx */
	unsigned weight;       /* 0: 1 */
	uint64_t ttl_ms;
} gk_register_options;

typedef struct gk_register gk_register;

/* NULL with *why on a bad URI or option.  Registers at once. */
gk_register *gk_register_new(gk_loop *loop, const gk_register_options *o,
    const char **why);
/* Deregister; done runs once it is done (ok) or failed or took 5 s. */
void gk_register_stop(gk_register *g, void (*done)(bool ok, void *arg),
    void *arg);
void gk_register_free(gk_register *g);

/* What a backend (etcd, consul) implements. */
typedef struct gk_register_backend {
	const char *scheme;
	int (*init)(gk_register *g, const char *rest, void **state,
	    const char **why);
	/* Register when !registered, else keep alive; ends with
	 * gk__register_result. */
	void (*step)(void *state, bool registered);
	/* Take the registration out; ends with gk__register_stopped. */
	void (*deregister)(void *state);
	void (*free)(void *state);
} gk_register_backend;

extern const gk_register_backend gk_register_etcd;
extern const gk_register_backend gk_register_consul;

enum gk_register_outcome {
	GK_REG_OK,     /* registered, or kept alive */
	GK_REG_LOST,   /* the registration is gone (lease expired, agent
	                  restarted): register again */
	GK_REG_FAILED, /* could not reach or use the registry */
};
void gk__register_result(gk_register *g, enum gk_register_outcome r,
    const char *what);
void gk__register_stopped(gk_register *g, bool ok, const char *what);
const gk_register_options *gk__register_options(gk_register *g);
gk_curl *gk__register_curl(gk_register *g);

#endif
