/*
 * redis_limit.h: a global GCRA rate limit kept in Redis and shared by every
 * instance (internal to libgokit).  hiredis's async API runs on the
 * gk_loop; one script call per request, atomic in Redis.
 */
#ifndef GK_REDIS_LIMIT_H
#define GK_REDIS_LIMIT_H

#include "limiter.h"

typedef struct gk_redis_limit gk_redis_limit;
typedef struct gk_redis_op gk_redis_op;

/* res NULL: Redis did not answer in time or is gone; decide locally. */
typedef void gk_redis_limit_fn(void *arg, const gk_rate_result *res);

/* Connects at once (asynchronously); reconnects with backoff when lost.
 * A host name is looked up without blocking, at nameserver ("IP:PORT")
 * when given.  The limit is g's, exactly (gk__redis_script_times).  NULL
 * with *why set when nameserver is malformed or Redis cannot keep g
 * exactly. */
gk_redis_limit *gk_redis_limit_new(gk_loop *loop, const char *host, int port,
    const char *nameserver, const char *prefix, uint64_t timeout_ms,
    const gk_gcra *g, const char **why);
void gk_redis_limit_free(gk_redis_limit *r);
/*
 * Ask Redis about one request of key.  NULL when Redis is down now (the
 * caller decides locally); otherwise fn runs later, exactly once, unless
 * the op is cancelled first.  max_wait_ns as in gk_gcra_take.
 */
gk_redis_op *gk_redis_limit_check(gk_redis_limit *r, const char *key,
    size_t len, uint64_t max_wait_ns, gk_redis_limit_fn *fn, void *arg);
/* The caller no longer wants the answer (its request is finished). */
void gk_redis_op_cancel(gk_redis_op *op);
bool gk_redis_limit_up(const gk_redis_limit *r);
/*
 * g's interval T and tau = burst * T in microseconds as the script counts
 * them: T = tw + tf / d, tau = uw + uf / d, every part at most 2^52.
 * Exact unless the reduced d would pass 2^52: then d = 2^52 and tf is
 * rounded up.  -1 when (burst + 1) * T passes 2^52us.
 */
int gk__redis_script_times(const gk_gcra *g, uint64_t *tw, uint64_t *tf,
    uint64_t *d, uint64_t *uw, uint64_t *uf);

#endif
