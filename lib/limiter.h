/*
 * limiter.h: the logic of gk-limiter (internal to libgokit), kept apart
 * from fds so that it can run fused inside another stage's process.
 *
 * Two layers: the algorithms (GCRA, Gradient2), pure functions of the time
 * they are given; and the stage layer, which applies them to requests
 * (gk_req) and owns the wait queue, metrics and events.
 */
#ifndef GK_LIMITER_H
#define GK_LIMITER_H

#include "gokit.h"

/* ---- GCRA: the generic cell rate algorithm ---- */

/*
 * The rate is kept exactly as n events per period P ns, the fraction as
 * given reduced to lowest terms ("7/s" is 7 per 1e9 ns, "0.0001/h" 1 per
 * 3.6e16 ns); the emission interval T = P / n is then q + r/n ns and a
 * rate such as 7/s never drifts, however long the limiter runs.  P is at
 * most GK_GCRA_MAX_PERIOD_NS: a rate that needs a longer one (too slow,
 * or given too finely) is refused, never rounded.
 */
#define GK_GCRA_MAX_PERIOD_NS 10000000000000000000ull /* 1e10 s */

typedef struct gk_gcra {
	uint64_t n;	       /* events per period_ns */
	uint64_t period_ns;
	uint64_t t_ns, t_fr;   /* T = t_ns + t_fr / n */
	uint64_t tau_ns, tau_fr; /* tolerance: burst * T */
	uint64_t burst;
} gk_gcra;

/* Per key: the theoretical arrival time, tat_ns + tat_fr / n; 0 is idle. */
typedef struct gk_gcra_state {
	uint64_t tat_ns, tat_fr;
} gk_gcra_state;

/* One decision, with what the RateLimit-* headers say about it. */
typedef struct gk_rate_result {
	bool allowed;
	/* allowed: how long to hold it first (0 unless max_wait allowed a
	 * delay); rejected: how long until it would be admitted. */
	uint64_t delay_ns;
	uint64_t limit;	    /* burst + 1: what an idle key admits at once */
	uint64_t remaining; /* admitted at once after this one */
	uint64_t reset_ns;  /* until the key is idle (full) again */
} gk_rate_result;

/* A rate of num events per den_s seconds (both > 0); burst >= 0.  -1 when
 * the rate cannot be kept exactly (the period would pass the maximum). */
int gk_gcra_init(gk_gcra *g, uint64_t num, uint64_t den_s, uint64_t burst);
/* The greatest common divisor, for the exact fractions of a rate. */
unsigned __int128 gk__gcd128(unsigned __int128 a, unsigned __int128 b);
/*
 * A request at now_ns.  An idle key admits burst + 1 at once, then one per
 * T.  With max_wait_ns > 0 a request that would conform within that long
 * is admitted now for that later time (its slot is reserved): allowed,
 * with delay_ns the time to hold it.  Returns res->allowed.
 */
bool gk_gcra_take(const gk_gcra *g, gk_gcra_state *s, uint64_t now_ns,
    uint64_t max_wait_ns, gk_rate_result *res);

/* ---- Gradient2 adaptive concurrency (Netflix concurrency-limits) ---- */

typedef struct gk_gradient {
	double limit, min, max;
	double long_rtt; /* exponential average over GK_GRADIENT_LONG windows */
	uint64_t nlong;
	/* the current window: GK_GRADIENT_WINDOW samples, averaged */
	double win_sum;
	unsigned win_n, win_inflight;
} gk_gradient;

#define GK_GRADIENT_WINDOW 10	 /* samples per update */
#define GK_GRADIENT_LONG 600	 /* windows in the long-term average */
#define GK_GRADIENT_WARMUP 10	 /* windows averaged plainly first */
#define GK_GRADIENT_TOLERANCE 1.5 /* latency growth taken as no queueing */
#define GK_GRADIENT_SMOOTHING 0.2

void gk_gradient_init(gk_gradient *g, unsigned initial, unsigned min,
    unsigned max);
/*
 * A forwarded request came back after rtt_ns; inflight is how many were in
 * flight when it was sent.  Returns true when a window closed (the limit
 * may have changed).
 */
bool gk_gradient_sample(gk_gradient *g, uint64_t rtt_ns, unsigned inflight);
unsigned gk_gradient_limit(const gk_gradient *g);

/* ---- the stage layer ---- */

enum gk_limiter_mode { GK_LIMIT_REJECT, GK_LIMIT_WAIT, GK_LIMIT_SHADOW };

typedef struct gk_limiter_config {
	double rate;	   /* per second; 0: no rate limit */
	uint64_t rate_num, rate_den_s; /* the rate exactly: num per den_s s */
	uint64_t burst;
	uint64_t concurrency; /* -c; 0: none */
	bool adaptive;
	uint64_t min, max;    /* adaptive bounds */
	const char *key;      /* -k spec, or NULL: one key for all */
	uint64_t max_keys;
	enum gk_limiter_mode mode;
	uint64_t wait_ms; /* --wait */
	uint64_t queue;	  /* --queue */
	const char *redis_host; /* NULL: local only */
	int redis_port;
	const char *redis_nameserver; /* "IP:PORT", or NULL: resolv.conf's */
	const char *redis_prefix;
	uint64_t redis_timeout_ms;
} gk_limiter_config;

typedef struct gk_limiter gk_limiter;

/* Fills a config with the defaults. */
void gk_limiter_defaults(gk_limiter_config *c);
/* Per-request state the stage must reserve (gk_stage_ops.req_state_size). */
size_t gk_limiter_req_state_size(void);
/* NULL with *why set when the config does not hold together. */
gk_limiter *gk_limiter_new(const gk_limiter_config *c, gk_loop *loop,
    const char **why);
void gk_limiter_free(gk_limiter *l);
void gk_limiter_request(gk_limiter *l, gk_req *req);
void gk_limiter_response(gk_limiter *l, gk_req *req, gk_msg *resp);
void gk_limiter_done(gk_limiter *l, gk_req *req, int status);
/* Write a pending rejection summary (at exit). */
void gk_limiter_flush_logs(gk_limiter *l);

#endif
