/*
 * tracer.h: the request tracing stage's logic (internal), apart from its
 * program so that it can run fused with other stages.
 */
#ifndef GK_TRACER_H
#define GK_TRACER_H

#include "gokit.h"

typedef struct gk_tracer_config {
	double sample;      /* probability for traces we start (1.0) */
	double sample_rate; /* sampled traces per second at most; 0: no cap */
	bool sample_errors; /* a span for every 5xx, sampled or not */
	bool parent_based;  /* honour the caller's sampled flag (true) */
} gk_tracer_config;

typedef struct gk_tracer gk_tracer;

gk_tracer *gk_tracer_new(const gk_tracer_config *cfg);
void gk_tracer_free(gk_tracer *t);
/* Bytes of per-request state the tracer needs. */
size_t gk_tracer_state_size(void);
/* Continue or start the trace; write it into the request; forward it. */
void gk_tracer_request(gk_tracer *t, gk_req *req);
/* Add traceresponse; pass it north. */
void gk_tracer_response(gk_tracer *t, gk_req *req, gk_msg *resp);
/* Add traceresponse to an answer made here (a deadline's, a dead south's). */
void gk_tracer_answer(gk_tracer *t, gk_req *req, gk_msg *resp);
/* Emit the span of a finished request when it is sampled. */
void gk_tracer_done(gk_tracer *t, gk_req *req, int status);

#endif
