/*
 * client.h: the upstream transport's logic (internal): a request from north
 * goes out as HTTP/1.1 (HTTP/2 where offered) to one endpoint of a live
 * set, with balancing, timeouts, safe retries under a budget, outlier
 * ejection and active checks.
 */
#ifndef GK_CLIENT_H
#define GK_CLIENT_H

#include "balancer.h"
#include "gokit.h"
#include "key.h"
#include "resolver.h"

typedef struct gk_client_config {
	enum gk_balance balance;
	gk_key_spec *key;           /* for hash balancing */
	const char *source;         /* resolver URI (static:, file:, dns:...) */
	gk_resolver_options ropts;
	uint64_t connect_timeout_ms; /* 1 s */
	uint64_t try_timeout_ms;    /* per try; 0: only the deadline */
	unsigned retries;           /* extra tries at most (2) */
#define GK_CLIENT_RETRIES_MAX 10
	int retry_on[16];           /* statuses retried for idempotent methods */
	int nretry_on;
	double budget_percent;      /* 0.2 */
	double budget_min_per_s;    /* 10 */
	uint64_t backoff_base_ms;   /* 25 */
	uint64_t backoff_max_ms;    /* 250 */
	unsigned eject_after;       /* consecutive failures (5); 0 off */
	uint64_t eject_base_ms;     /* 30 s, times the ejection count */
	double max_ejected;         /* 0.5 */
	const char *check_path;     /* active checks, or NULL */
	uint64_t check_every_ms;
	size_t max_response;        /* bytes (8 MiB) */
	bool preserve_host;
	const char *via;            /* this proxy in Via (RFC 9110 7.6.3) */
	bool http2;                 /* HTTP/2 with prior knowledge, every endpoint */
	long max_host_connections;  /* 0: no bound */
	bool native;                /* plain-http tries on the native engine */
	uint64_t wait_endpoints_ms; /* for the first set at start (5 s) */
} gk_client_config;

/* An ejection lasts --eject-time times the endpoint's ejections, at most: */
#define GK_CLIENT_MAX_EJECT_MS 300000

typedef struct gk_client gk_client;

gk_client *gk_client_new(gk_stage *st, const gk_client_config *cfg,
    const char **why);
size_t gk_client_state_size(void);
void gk_client_request(gk_client *c, gk_req *req);
void gk_client_done(gk_client *c, gk_req *req, int status);
/* Parse "502,503,504" into cfg->retry_on. */
int gk_client_parse_retry_on(gk_client_config *cfg, const char *s);

/*
 * Internal, for fuzz/fuzz_upstream.c: one request's state with no stage
 * around it.  ops gets the native engine's reset, header and body
 * callbacks (done is the caller's), to be called with arg; the probe
 * then makes the wire line answer_from_upstream would make of what they
 * collected (-1: a line too long, answered 502 instead).
 */
typedef struct gk__client_probe gk__client_probe;
struct gk_uh_ops;
gk__client_probe *gk__client_probe_new(const char *method,
    size_t max_response, struct gk_uh_ops *ops, void **arg);
int gk__client_probe_line(gk__client_probe *p, gk_json id, int status,
    gk_buf *out);
bool gk__client_probe_too_big(const gk__client_probe *p);
void gk__client_probe_free(gk__client_probe *p);

#endif
