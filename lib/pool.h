/*
 * pool.h: a pool of copies of a one-request-at-a-time handler, the logic
 * of gk-pool (internal to libgokit).
 */
#ifndef GK_POOL_H
#define GK_POOL_H

#include "gokit.h"

typedef struct gk_pool_config {
	char **argv; /* the handler and its arguments */
	unsigned n;  /* copies; 0: online CPUs */
} gk_pool_config;

/* Bytes of per-request state the stage must ask for (req_state_size). */
size_t gk_pool_req_state_size(void);
/* From the stage's start callback: metrics, and the copies started. */
int gk_pool_start(gk_stage *st, const gk_pool_config *cfg);
/* The stage's on_request: to an idle copy, or into the queue. */
void gk_pool_request(gk_stage *st, gk_req *req);
/* The stage's on_done: a queued request leaves the queue; a copy still
 * working on the request is killed and restarted. */
void gk_pool_done(gk_stage *st, gk_req *req, int status);
/* The stage's on_drain: EOF on every copy's stdin. */
void gk_pool_drain(gk_stage *st);
/* The stage's stop: until every copy has exited (TERM to the copies'
 * groups after 5s, KILL 2s later). */
void gk_pool_stop(gk_stage *st);

#endif
