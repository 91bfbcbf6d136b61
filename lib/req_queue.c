/* req_queue.c: the FIFO of requests waiting for a worker (req_queue.h). */
#include "req_queue.h"

static gk_req_link *
link_of(const gk_req_queue *q, gk_req *req)
{
	return (gk_req_link *)(void *)((char *)gk_req_state(req) + q->link_off);
}

static void
show(const gk_req_queue *q)
{
	if (q->gauge)
		gk_gauge_set(q->gauge, (double)q->len);
}

void
gk_req_queue_push(gk_req_queue *q, gk_req *req)
{
	gk_req_link *l = link_of(q, req);
	l->queued = true;
	l->next = NULL;
	l->prev = q->tail;
	if (q->tail)
		link_of(q, q->tail)->next = req;
	else
		q->head = req;
	q->tail = req;
	q->len++;
	show(q);
}

void
gk_req_queue_remove(gk_req_queue *q, gk_req *req)
{
	gk_req_link *l = link_of(q, req);
	if (!l->queued)
		return;
	if (l->prev)
		link_of(q, l->prev)->next = l->next;
	else
		q->head = l->next;
	if (l->next)
		link_of(q, l->next)->prev = l->prev;
	else
		q->tail = l->prev;
	l->queued = false;
	l->prev = l->next = NULL;
	q->len--;
	show(q);
}
