/* balancer.c: endpoint choice and per-endpoint state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "tracecontext.h"

#define RING_POINTS 160 /* per unit of weight, as ketama */
#define EWMA_DECAY_US 10e6 /* Finagle's peak EWMA: 10 s decay */

struct ring_point {
	uint32_t hash;
	unsigned backend;
};

struct gk_balancer {
	enum gk_balance how;
	gk_backend **be;
	size_t n;
	struct ring_point *ring;
	size_t nring;
};

int
gk_balance_parse(const char *s, enum gk_balance *out)
{
	static const struct {
		const char *name;
		enum gk_balance how;
	} names[] = {{"round-robin", GK_BALANCE_ROUND_ROBIN},
	    {"rr", GK_BALANCE_ROUND_ROBIN}, {"random", GK_BALANCE_RANDOM},
	    {"least", GK_BALANCE_LEAST}, {"least-outstanding", GK_BALANCE_LEAST},
	    {"p2c-ewma", GK_BALANCE_P2C_EWMA}, {"hash", GK_BALANCE_HASH}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(s, names[i].name)) {
			*out = names[i].how;
			return 0;
		}
	return -1;
}

gk_balancer *
gk_balancer_new(enum gk_balance how)
{
	gk_balancer *b = gk_xcalloc(1, sizeof *b);
	b->how = how;
	return b;
}

void
gk_balancer_free(gk_balancer *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++)
		gk_backend_unref(b->be[i]);
	free(b->be);
	free(b->ring);
	free(b);
}

void
gk_backend_ref(gk_backend *be)
{
	be->refs++;
}

void
gk_backend_unref(gk_backend *be)
{
	if (be && !--be->refs)
		free(be);
}

static uint32_t
fnv32(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	/* Finalise (murmur3 fmix) so that near keys spread on the ring. */
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static int
point_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct ring_point *)a)->hash;
	uint32_t y = ((const struct ring_point *)b)->hash;
	return x < y ? -1 : x > y;
}

static void
build_ring(gk_balancer *b)
{
	free(b->ring);
	b->ring = NULL;
	b->nring = 0;
	size_t total = 0;
	for (size_t i = 0; i < b->n; i++)
		total += (size_t)b->be[i]->ep.weight * RING_POINTS;
	if (!total)
		return;
	b->ring = gk_xmalloc(total * sizeof *b->ring);
	char tmp[300];
	for (size_t i = 0; i < b->n; i++)
		for (unsigned k = 0; k < b->be[i]->ep.weight * RING_POINTS; k++) {
			int len = snprintf(tmp, sizeof tmp, "%s-%u",
			    b->be[i]->ep.addr, k);
			b->ring[b->nring++] = (struct ring_point){
			    fnv32(tmp, (size_t)len), (unsigned)i};
		}
	qsort(b->ring, b->nring, sizeof *b->ring, point_cmp);
}

void
gk_balancer_update(gk_balancer *b, const gk_endpoint *set, size_t n)
{
	gk_backend **be = gk_xcalloc(n ? n : 1, sizeof *be);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < b->n; j++)
			if (b->be[j] && !strcmp(b->be[j]->ep.addr, set[i].addr)) {
				be[i] = b->be[j];
				b->be[j] = NULL;
				break;
			}
		if (!be[i]) {
			be[i] = gk_xcalloc(1, sizeof *be[i]);
			be[i]->refs = 1;
		}
		be[i]->ep = set[i];
		if (!be[i]->ep.weight)
			be[i]->ep.weight = 1;
	}
	for (size_t j = 0; j < b->n; j++)
		gk_backend_unref(b->be[j]); /* NULL when kept */
	free(b->be);
	b->be = be;
	b->n = n;
	if (b->how == GK_BALANCE_HASH)
		build_ring(b);
}

size_t
gk_balancer_size(const gk_balancer *b)
{
	return b->n;
}

gk_backend *
gk_balancer_at(gk_balancer *b, size_t i)
{
	return i < b->n ? b->be[i] : NULL;
}

bool
gk_backend_available(const gk_backend *be, uint64_t now_ms)
{
	return !be->check_failed &&
	    (!be->ejected_until_ms || be->ejected_until_ms <= now_ms);
}

/* The endpoints a request has tried already (a retry goes elsewhere). */
struct avoid {
	gk_backend *const *be;
	size_t n;
};

static bool
avoided(const gk_backend *be, struct avoid avoid)
{
	for (size_t i = 0; i < avoid.n; i++)
		if (avoid.be[i] == be)
			return true;
	return false;
}

/* Only the endpoints of the best (lowest) SRV priority that has any. */
static unsigned
best_priority(gk_balancer *b, uint64_t now, struct avoid avoid)
{
	unsigned best = ~0u;
	for (size_t i = 0; i < b->n; i++)
		if (gk_backend_available(b->be[i], now) &&
		    b->be[i]->ep.priority < best && !avoided(b->be[i], avoid))
			best = b->be[i]->ep.priority;
	if (best == ~0u) /* only those tried are left: take them */
		for (size_t i = 0; i < b->n; i++)
			if (gk_backend_available(b->be[i], now) &&
			    b->be[i]->ep.priority < best)
				best = b->be[i]->ep.priority;
	return best;
}

static bool
eligible(gk_balancer *b, size_t i, uint64_t now, unsigned prio,
    struct avoid avoid, bool allow_avoid)
{
	gk_backend *be = b->be[i];
	return gk_backend_available(be, now) && be->ep.priority == prio &&
	    (allow_avoid || !avoided(be, avoid));
}

#define UNMEASURED_PENALTY 1e12 /* as Finagle's PeakEwma penalty */

static double
cost(const gk_backend *be, uint64_t now_us)
{
	/* An unmeasured backend costs nothing while idle, so that new ones
	 * get tried, but a huge penalty once it has a call in flight: until
	 * its first answer nobody knows whether it is fast, and without the
	 * penalty every request of a burst would go to it. */
	if (!be->ewma_stamp_us)
		return be->outstanding ? UNMEASURED_PENALTY * be->outstanding : 0;
	/* Peak EWMA decays toward zero while idle.  No weight: the two
	 * candidates have the same (pick_p2c). */
	double w = be->ewma_us;
	if (be->ewma_stamp_us && now_us > be->ewma_stamp_us)
		w *= exp(-(double)(now_us - be->ewma_stamp_us) / EWMA_DECAY_US);
	return (w + 1) * (be->outstanding + 1);
}

/*
 * Power of two choices by peak EWMA cost, among the eligible endpoints of
 * one weight.  With weights that differ, the weight first chooses the
 * class, as Finagle's TrafficDistributor does: the endpoints of one weight
 * are drawn with a chance in proportion to that weight times their number,
 * so every endpoint's share is its weight's whatever the load (a cost
 * divided by the weight gave the heaviest endpoint every request while
 * they came one at a time).  Latency moves requests among the endpoints
 * of a class only.
 */
static gk_backend *
pick_p2c(gk_balancer *b, uint64_t now, struct avoid avoid, bool allow_avoid,
    unsigned prio, size_t total, bool one_weight, gk_backend *only)
{
	unsigned weight = only->ep.weight;
	if (!one_weight) {
		size_t r = (size_t)(gk_random_unit() * (double)total);
		for (size_t i = 0; i < b->n; i++) {
			if (!eligible(b, i, now, prio, avoid, allow_avoid))
				continue;
			if (r < b->be[i]->ep.weight) {
				weight = b->be[i]->ep.weight;
				break;
			}
			r -= b->be[i]->ep.weight;
		}
	}
	size_t nc = 0;
	for (size_t i = 0; i < b->n; i++)
		if (eligible(b, i, now, prio, avoid, allow_avoid) &&
		    b->be[i]->ep.weight == weight) {
			nc++;
			only = b->be[i];
		}
	if (nc == 1)
		return only;
	/* Two distinct candidates of all nc (the x-th and y-th of the
	 * class), however large the set. */
	size_t x = (size_t)(gk_random_unit() * (double)nc);
	size_t y = (size_t)(gk_random_unit() * (double)(nc - 1));
	if (y >= x)
		y++;
	gk_backend *a = NULL, *c = NULL;
	for (size_t i = 0, k = 0; i < b->n && (!a || !c); i++) {
		if (!eligible(b, i, now, prio, avoid, allow_avoid) ||
		    b->be[i]->ep.weight != weight)
			continue;
		if (k == x)
			a = b->be[i];
		if (k == y)
			c = b->be[i];
		k++;
	}
	if (!a || !c) /* (gk_random_unit is below 1: never) */
		return only;
	uint64_t now_us = gk_monotonic_us();
	return cost(a, now_us) <= cost(c, now_us) ? a : c;
}

static gk_backend *
pick_from(gk_balancer *b, uint64_t now, const char *key, size_t keylen,
    struct avoid avoid, bool allow_avoid, unsigned prio)
{
	size_t total = 0;
	gk_backend *only = NULL;
	bool one_weight = true;
	for (size_t i = 0; i < b->n; i++)
		if (eligible(b, i, now, prio, avoid, allow_avoid)) {
			total += b->be[i]->ep.weight;
			if (only && only->ep.weight != b->be[i]->ep.weight)
				one_weight = false;
			only = b->be[i];
		}
	if (!total)
		return NULL;
	switch (b->how) {
	case GK_BALANCE_ROUND_ROBIN: {
		/* nginx's smooth weighted round robin */
		gk_backend *best = NULL;
		for (size_t i = 0; i < b->n; i++) {
			if (!eligible(b, i, now, prio, avoid, allow_avoid))
				continue;
			gk_backend *be = b->be[i];
			be->current_weight += (int)be->ep.weight;
			if (!best || be->current_weight > best->current_weight)
				best = be;
		}
		if (best) /* always: total > 0 means one was eligible */
			best->current_weight -= (int)total;
		return best;
	}
	case GK_BALANCE_RANDOM: {
		size_t r = (size_t)(gk_random_unit() * (double)total);
		for (size_t i = 0; i < b->n; i++) {
			if (!eligible(b, i, now, prio, avoid, allow_avoid))
				continue;
			if (r < b->be[i]->ep.weight)
				return b->be[i];
			r -= b->be[i]->ep.weight;
		}
		return only;
	}
	case GK_BALANCE_LEAST: {
		gk_backend *best = NULL;
		if (!one_weight) {
			/* Weights that differ: smooth weighted round robin on
			 * weight / (in flight + 1), as Envoy's least_request
			 * with weights.  The fewest in flight relative to
			 * weight alone gave the heaviest every request while
			 * they came one at a time; this gives each its share
			 * then, and fewer to one that holds many. */
			double sum = 0;
			for (size_t i = 0; i < b->n; i++) {
				gk_backend *be = b->be[i];
				if (!eligible(b, i, now, prio, avoid,
				    allow_avoid))
					continue;
				double w = (double)be->ep.weight /
				    (be->outstanding + 1);
				sum += w;
				be->current_load += w;
				if (!best ||
				    be->current_load > best->current_load)
					best = be;
			}
			best->current_load -= sum;
			return best;
		}
		double bc = 0;
		size_t ties = 0;
		for (size_t i = 0; i < b->n; i++) {
			if (!eligible(b, i, now, prio, avoid, allow_avoid))
				continue;
			gk_backend *be = b->be[i];
			double c = (double)(be->outstanding + 1) / be->ep.weight;
			if (!best || c < bc) {
				best = be, bc = c, ties = 1;
			} else if (c == bc && gk_random_unit() * (double)++ties < 1)
				best = be; /* break ties at random */
		}
		return best;
	}
	case GK_BALANCE_P2C_EWMA:
		return pick_p2c(b, now, avoid, allow_avoid, prio, total,
		    one_weight, only);
	case GK_BALANCE_HASH: {
		if (!b->nring)
			return only;
		uint32_t h = fnv32(key ? key : "", key ? keylen : 0);
		size_t lo = 0, hi = b->nring;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (b->ring[mid].hash < h)
				lo = mid + 1;
			else
				hi = mid;
		}
		/* Walk on past unavailable backends: their keys move to the
		 * next point, nobody else's do. */
		for (size_t k = 0; k < b->nring; k++) {
			size_t i = b->ring[(lo + k) % b->nring].backend;
			if (eligible(b, i, now, prio, avoid, allow_avoid))
				return b->be[i];
		}
		return NULL;
	}
	}
	return NULL;
}

gk_backend *
gk_balancer_pick(gk_balancer *b, uint64_t now_ms, const char *key,
    size_t keylen, gk_backend *const *tried, size_t ntried)
{
	struct avoid avoid = {tried, ntried};
	unsigned prio = best_priority(b, now_ms, avoid);
	if (prio == ~0u)
		return NULL;
	gk_backend *be = pick_from(b, now_ms, key, keylen, avoid, false, prio);
	if (!be)
		be = pick_from(b, now_ms, key, keylen, avoid, true, prio);
	return be;
}

void
gk_balancer_started(gk_backend *be)
{
	be->outstanding++;
}

void
gk_balancer_finished(gk_backend *be, uint64_t now_us, uint64_t took_us)
{
	if (be->outstanding)
		be->outstanding--;
	/* Peak EWMA: a slower sample takes over at once, faster ones decay
	 * in, so a backend that turns slow is avoided quickly. */
	double rtt = (double)took_us;
	if (rtt > be->ewma_us || !be->ewma_stamp_us)
		be->ewma_us = rtt;
	else {
		double dt = (double)(now_us - be->ewma_stamp_us);
		double w = exp(-dt / EWMA_DECAY_US);
		be->ewma_us = be->ewma_us * w + rtt * (1 - w);
	}
	be->ewma_stamp_us = now_us;
}
