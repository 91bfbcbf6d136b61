/*
 * req_queue.h: requests waiting for a worker (a CGI slot, a handler copy),
 * first in, first out, and each taken out at once when it is cancelled
 * while it waits.  The links live in the request's own state (at link_off
 * in gk_req_state()), so queueing allocates nothing.
 */
#ifndef GK_REQ_QUEUE_H
#define GK_REQ_QUEUE_H

#include "gokit.h"

typedef struct gk_req_link {
	gk_req *prev, *next;
	bool queued;
} gk_req_link;

typedef struct gk_req_queue {
	gk_req *head, *tail;
	size_t len;
	size_t link_off;  /* offsetof(the state, its gk_req_link) */
	gk_series *gauge; /* shows len; NULL for none */
} gk_req_queue;

void gk_req_queue_push(gk_req_queue *q, gk_req *req);
/* Take req out wherever it is in the queue; nothing when it is not queued. */
void gk_req_queue_remove(gk_req_queue *q, gk_req *req);

#endif
