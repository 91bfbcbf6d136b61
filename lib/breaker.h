/*
 * breaker.h: circuit breaking and timeouts (internal), apart from the
 * program so it can run fused.  States closed, open, half-open, as
 * resilience4j and gobreaker have them.
 */
#ifndef GK_BREAKER_H
#define GK_BREAKER_H

#include "gokit.h"
#include "key.h"

enum gk_breaker_state { GK_CLOSED = 0, GK_HALF_OPEN = 1, GK_OPEN = 2 };

typedef struct gk_breaker_config {
	unsigned consecutive;      /* trip after N failures in a row; 0 off */
	unsigned window_calls;     /* count-based window; 0 when time-based */
	uint64_t window_ms;        /* time-based window; 0 when count-based */
	unsigned min_calls;        /* calls in the window before rates count */
	double failure_rate;       /* 0..1; trip at or above; 0 off */
	uint64_t slow_ms;          /* a call slower than this is slow; 0 off */
	double slow_rate;          /* 0..1 */
	uint64_t timeout_ms;       /* -t: 504 and a failure; 0 off */
	uint64_t open_ms;          /* first open interval */
	uint64_t open_max_ms;      /* growth bound */
	unsigned probes;           /* calls let through half-open */
	uint32_t fail_classes;     /* bit c: status c*100..c*100+99 fails */
	int fail_codes[16];        /* single statuses that fail */
	int nfail_codes;
	int fallback_status;       /* answer while open (503) */
	const char *fallback_body;
	gk_key_spec *key;          /* NULL: one breaker */
	size_t max_keys;
} gk_breaker_config;

typedef struct gk_breaker gk_breaker;

gk_breaker *gk_breaker_new(gk_loop *loop, const gk_breaker_config *cfg);
size_t gk_breaker_state_size(void);
void gk_breaker_request(gk_breaker *b, gk_req *req);
void gk_breaker_response(gk_breaker *b, gk_req *req, gk_msg *resp);
void gk_breaker_done(gk_breaker *b, gk_req *req, int status);
/* Parse "5xx,429" into the config.  -1 when malformed. */
int gk_breaker_parse_fail_on(gk_breaker_config *cfg, const char *s);
/* The state of key ("" without -k), for tests; time as the loop sees it. */
enum gk_breaker_state gk_breaker_state_of(gk_breaker *b, const char *key);

#endif
