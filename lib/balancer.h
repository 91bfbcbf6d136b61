/*
 * balancer.h: choosing an endpoint for a request (internal): round robin
 * (smooth weighted, as nginx), random (weighted), least outstanding,
 * power of two choices with peak EWMA latency (Finagle's default), and
 * consistent hashing on a key (a ketama-style ring).  Also the passive
 * health state of each endpoint: outstanding calls, latency, ejection.
 */
#ifndef GK_BALANCER_H
#define GK_BALANCER_H

#include "gokit.h"
#include "resolver.h"

enum gk_balance {
	GK_BALANCE_ROUND_ROBIN,
	GK_BALANCE_RANDOM,
	GK_BALANCE_LEAST,
	GK_BALANCE_P2C_EWMA,
	GK_BALANCE_HASH,
};

typedef struct gk_backend {
	gk_endpoint ep;
	/* balancing */
	int current_weight; /* smooth weighted round robin */
	double current_load; /* the same, on weight / (in flight + 1) */
	unsigned outstanding;
	double ewma_us;      /* peak EWMA of latency */
	uint64_t ewma_stamp_us;
	/* passive health */
	unsigned consecutive_failures;
	unsigned ejections;
	uint64_t ejected_until_ms; /* 0: in rotation */
	bool check_failed;         /* out of rotation by its active check */
	bool check_fails;          /* the last check's verdict */
	bool check_running;        /* a check is in flight */
	/* One reference for the set, one for each request that holds it:
	 * a backend dropped from the set lives on until its last request
	 * is done with it. */
	unsigned refs;
	gk_series *m_requests, *m_errors, *m_ejections, *m_ejected;
	gk_series *m_duration, *m_pool;
} gk_backend;

typedef struct gk_balancer gk_balancer;

gk_balancer *gk_balancer_new(enum gk_balance how);
void gk_balancer_free(gk_balancer *b);
/* Parse "round-robin", "random", "least", "p2c-ewma", "hash". */
int gk_balance_parse(const char *s, enum gk_balance *out);
/* Replace the set; backends for addresses kept keep their state. */
void gk_balancer_update(gk_balancer *b, const gk_endpoint *set, size_t n);
size_t gk_balancer_size(const gk_balancer *b);
gk_backend *gk_balancer_at(gk_balancer *b, size_t i);
/*
 * Pick a backend in rotation at now_ms, other than the ntried of tried (a
 * retry goes to an endpoint not tried yet when there is one, as Envoy's
 * previous_hosts predicate); key is used by GK_BALANCE_HASH.  NULL when
 * none.
 */
gk_backend *gk_balancer_pick(gk_balancer *b, uint64_t now_ms,
    const char *key, size_t keylen, gk_backend *const *tried, size_t ntried);
/* Record a call's start and end: outstanding count, latency for EWMA. */
void gk_balancer_started(gk_backend *be);
void gk_balancer_finished(gk_backend *be, uint64_t now_us, uint64_t took_us);
bool gk_backend_available(const gk_backend *be, uint64_t now_ms);
/* Hold be past a change of the set; release it (freed at the last). */
void gk_backend_ref(gk_backend *be);
void gk_backend_unref(gk_backend *be);

#endif
