/*
 * breaker.c: the circuit breaker.  Outcomes go into a sliding window
 * (count-based: a ring of the last N calls; time-based: one bucket per
 * second), as resilience4j keeps them; a run of consecutive failures trips
 * it as gobreaker's default does.  Open intervals double with each trip in
 * a row, up to --open-max.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"

#define MAX_WINDOW 10000
#define KEY_MAX 128

struct bucket {
	uint64_t second;
	unsigned calls, failures, slow;
};

/* One breaker: per key, or the only one. */
struct circuit {
	enum gk_breaker_state state;
	unsigned consecutive;
	unsigned trips; /* in a row, for the growing open interval */
	uint64_t open_until;
	unsigned probes_out, probes_ok;
	/* Which period of which circuit this is (renumbered at each
	 * transition and when a key's circuit is made anew): a call carries
	 * the one it was let through in, and only that period counts it. */
	uint64_t period;
	/* count-based ring */
	uint8_t *ring; /* bit 0 failure, bit 1 slow */
	unsigned ring_len, ring_pos;
	unsigned calls, failures, slow;
	/* time-based buckets */
	struct bucket *buckets;
	unsigned nbuckets;
	gk_series *m_state;
};

struct rstate {
	gk_breaker *b; /* for the timer */
	char key[KEY_MAX];
	gk_timer timer;
	uint64_t start_ms;
	bool passed; /* let through south: the call has an outcome */
	bool probe, counted, timed_out;
	uint64_t period; /* of its circuit when let through */
};

struct gk_breaker {
	gk_breaker_config cfg;
	gk_loop *loop;
	gk_keytable *keys;
	struct circuit *only;
	gk_metric *m_state;
	gk_series *m_to_open, *m_to_half, *m_to_closed;
	gk_series *m_success, *m_failure, *m_timeout, *m_slow, *m_rejected;
	gk_series *m_evictions, *m_open_answer;
	gk_buf keybuf; /* kept: no allocation per request */
	uint64_t periods; /* numbers each period, over every key */
};

size_t
gk_breaker_state_size(void)
{
	return sizeof(struct rstate);
}

int
gk_breaker_parse_fail_on(gk_breaker_config *cfg, const char *s)
{
	cfg->fail_classes = 0;
	cfg->nfail_codes = 0;
	if (!*s)
		return -1;
	for (;;) {
		size_t n = strcspn(s, ",");
		if (n == 3 && s[0] >= '1' && s[0] <= '5' && s[1] == 'x' &&
		    s[2] == 'x')
			cfg->fail_classes |= 1u << (s[0] - '0');
		else {
			/* A status: three digits, 100 to 599. */
			if (n != 3 || s[0] < '1' || s[0] > '5' || s[1] < '0' ||
			    s[1] > '9' || s[2] < '0' || s[2] > '9' ||
			    cfg->nfail_codes >= 16)
				return -1;
			cfg->fail_codes[cfg->nfail_codes++] =
			    (s[0] - '0') * 100 + (s[1] - '0') * 10 + s[2] - '0';
		}
		s += n;
		if (!*s)
			return 0;
		s++; /* the comma: an item must follow */
	}
}

static bool
is_failure(const gk_breaker_config *cfg, int status)
{
	if (status <= 0)
		return true;
	if (cfg->fail_classes & (1u << (status / 100 % 10)))
		return true;
	for (int i = 0; i < cfg->nfail_codes; i++)
		if (cfg->fail_codes[i] == status)
			return true;
	return false;
}

static void
circuit_init(gk_breaker *b, struct circuit *c, const char *key)
{
	memset(c, 0, sizeof *c);
	if (b->cfg.window_calls) {
		c->ring_len = b->cfg.window_calls;
		c->ring = gk_xcalloc(c->ring_len, 1);
	} else if (b->cfg.window_ms) {
		c->nbuckets = (unsigned)((b->cfg.window_ms + 999) / 1000);
		c->buckets = gk_xcalloc(c->nbuckets, sizeof *c->buckets);
	}
	c->period = ++b->periods;
	c->m_state = gk_series_get(b->m_state, key, (char *)0);
	gk_gauge_set(c->m_state, GK_CLOSED);
}

static void
evict_circuit(void *value, void *arg)
{
	gk_breaker *b = arg;
	struct circuit *c = value;
	free(c->ring);
	free(c->buckets);
	/* Forgotten: the key starts closed when it comes back. */
	gk_gauge_set(c->m_state, GK_CLOSED);
	gk_counter_add(b->m_evictions, 1);
}

gk_breaker *
gk_breaker_new(gk_loop *loop, const gk_breaker_config *cfg)
{
	gk_breaker *b = gk_xcalloc(1, sizeof *b);
	b->cfg = *cfg;
	b->loop = loop;
	b->m_state = gk_gauge_new("gk_breaker_state",
	    "Circuit state: 0 closed, 1 half-open, 2 open", "key");
	gk_metric *tr = gk_counter_new("gk_breaker_transitions_total",
	    "State changes, by the state entered", "to");
	b->m_to_open = gk_series_get(tr, "open", (char *)0);
	b->m_to_half = gk_series_get(tr, "half_open", (char *)0);
	b->m_to_closed = gk_series_get(tr, "closed", (char *)0);
	gk_metric *calls = gk_counter_new("gk_breaker_calls_total",
	    "Calls let through, by outcome", "outcome");
	b->m_success = gk_series_get(calls, "success", (char *)0);
	b->m_failure = gk_series_get(calls, "failure", (char *)0);
	b->m_timeout = gk_series_get(calls, "timeout", (char *)0);
	b->m_slow = gk_series_get(calls, "slow", (char *)0);
	b->m_rejected = gk_metric_series(gk_counter_new(
	    "gk_breaker_rejected_total", "Calls answered while open", NULL));
	b->m_evictions = gk_metric_series(gk_counter_new(
	    "gk_breaker_evictions_total",
	    "Per-key breakers dropped to stay within --max-keys", NULL));
	static const double ob[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	    0.005, 0.01, 0.1};
	b->m_open_answer = gk_metric_series(gk_histogram_new(
	    "gk_breaker_open_answer_seconds",
	    "Time from the loop turn that read a request to the breaker's "
	    "answer while open or half-open",
	    NULL, ob, sizeof ob / sizeof ob[0]));
	if (cfg->key)
		b->keys = gk_keytable_new(cfg->max_keys, sizeof(struct circuit),
		    evict_circuit, b);
	else {
		b->only = gk_xcalloc(1, sizeof *b->only);
		circuit_init(b, b->only, "");
	}
	return b;
}

static struct circuit *
circuit_of(gk_breaker *b, const char *key, bool create)
{
	if (!b->keys)
		return b->only;
	size_t n = strlen(key);
	if (!create)
		return gk_keytable_peek(b->keys, key, n);
	bool created;
	struct circuit *c = gk_keytable_get(b->keys, key, n, &created);
	if (created)
		circuit_init(b, c, key);
	return c;
}

static void
reset_window(struct circuit *c)
{
	if (c->ring)
		memset(c->ring, 0, c->ring_len);
	if (c->buckets)
		memset(c->buckets, 0, c->nbuckets * sizeof *c->buckets);
	c->ring_pos = c->calls = c->failures = c->slow = 0;
	c->consecutive = 0;
}

static const char *
state_name(enum gk_breaker_state s)
{
	return s == GK_OPEN ? "open" : s == GK_HALF_OPEN ? "half-open" : "closed";
}

static void
transition(gk_breaker *b, struct circuit *c, gk_req *req, const char *key,
    enum gk_breaker_state to, const char *why)
{
	/* The request that caused it: its trace joins the event. */
	const char *trace = req ? gk_req_trace_id(req) : NULL;
	enum gk_breaker_state from = c->state;
	if (from == to)
		return;
	c->state = to;
	c->period = ++b->periods;
	gk_gauge_set(c->m_state, to);
	char k[KEY_MAX + 8], f[32], r[96], o[48];
	snprintf(k, sizeof k, "key=%s", key);
	snprintf(f, sizeof f, "from=%s", state_name(from));
	snprintf(r, sizeof r, "reason=%s", why);
	if (to == GK_OPEN) {
		gk_counter_add(b->m_to_open, 1);
		uint64_t ms = b->cfg.open_ms;
		for (unsigned i = 0; i < c->trips && ms < b->cfg.open_max_ms; i++)
			ms *= 2;
		if (ms > b->cfg.open_max_ms)
			ms = b->cfg.open_max_ms;
		c->trips++;
		c->open_until = gk_loop_now(b->loop) + ms;
		snprintf(o, sizeof o, "open_for_ms=%llu", (unsigned long long)ms);
		gk_log_trace(GK_WARN, trace, "circuit opened", k, f, r, o,
		    (char *)0);
	} else if (to == GK_HALF_OPEN) {
		gk_counter_add(b->m_to_half, 1);
		c->probes_out = c->probes_ok = 0;
		gk_log_trace(GK_INFO, trace, "circuit half-open", k, f,
		    (char *)0);
	} else {
		gk_counter_add(b->m_to_closed, 1);
		c->trips = 0;
		reset_window(c);
		gk_log_trace(GK_INFO, trace, "circuit closed", k, f, r,
		    (char *)0);
	}
}

/* Rates over the window; slides time buckets first. */
static void
window_counts(gk_breaker *b, struct circuit *c, unsigned *calls,
    unsigned *fails, unsigned *slow)
{
	if (c->buckets) {
		uint64_t now_s = gk_loop_now(b->loop) / 1000;
		*calls = *fails = *slow = 0;
		for (unsigned i = 0; i < c->nbuckets; i++) {
			struct bucket *k = &c->buckets[i];
			if (k->second + c->nbuckets <= now_s)
				continue;
			*calls += k->calls;
			*fails += k->failures;
			*slow += k->slow;
		}
		return;
	}
	*calls = c->calls;
	*fails = c->failures;
	*slow = c->slow;
}

static void
record_outcome(gk_breaker *b, struct circuit *c, bool failed, bool slow)
{
	if (c->ring) {
		uint8_t old = c->ring[c->ring_pos];
		if (c->calls == c->ring_len) {
			c->failures -= old & 1;
			c->slow -= (old >> 1) & 1;
		} else
			c->calls++;
		c->ring[c->ring_pos] = (uint8_t)(failed | slow << 1);
		c->ring_pos = (c->ring_pos + 1) % c->ring_len;
		c->failures += failed;
		c->slow += slow;
	} else if (c->buckets) {
		uint64_t now_s = gk_loop_now(b->loop) / 1000;
		struct bucket *k = &c->buckets[now_s % c->nbuckets];
		if (k->second != now_s)
			*k = (struct bucket){.second = now_s};
		k->calls++;
		k->failures += failed;
		k->slow += slow;
	}
}

/* A probe of the half-open c is in now: one let through in an earlier
 * half-open (since ended, opened again and half-open anew) answering
 * late must neither free a slot of this one nor count toward closing. */
static bool
is_probe_of(const struct circuit *c, const struct rstate *s)
{
	return c->state == GK_HALF_OPEN && s->probe && s->period == c->period;
}

static void
outcome(gk_breaker *b, gk_req *req, int status, bool timed_out)
{
	struct rstate *s = gk_req_state(req);
	struct circuit *c = circuit_of(b, s->key, false);
	if (!c || s->counted)
		return;
	s->counted = true;
	uint64_t took = gk_loop_now(b->loop) - s->start_ms;
	bool failed = timed_out || is_failure(&b->cfg, status);
	bool slow = b->cfg.slow_ms && took >= b->cfg.slow_ms;
	gk_counter_add(timed_out ? b->m_timeout
	    : failed		 ? b->m_failure
				 : b->m_success, 1);
	if (slow)
		gk_counter_add(b->m_slow, 1);

	if (is_probe_of(c, s)) {
		c->probes_out--;
		if (failed || (slow && b->cfg.slow_rate > 0)) {
			transition(b, c, req, s->key, GK_OPEN, "probe failed");
			return;
		}
		if (++c->probes_ok >= b->cfg.probes)
			transition(b, c, req, s->key, GK_CLOSED, "probes succeeded");
		return;
	}
	/* Open, half-open (a call let through before it, or a probe of an
	 * earlier half-open, answering late): no say in it.  Nor has a call
	 * let through in an earlier closed period (before the circuit
	 * opened and closed again, or before its key was forgotten): the
	 * failures of an outage already over would open it again at once,
	 * as gobreaker's generations keep them from doing. */
	if (c->state != GK_CLOSED || s->period != c->period)
		return;
	c->consecutive = failed ? c->consecutive + 1 : 0;
	record_outcome(b, c, failed, slow);
	if (b->cfg.consecutive && c->consecutive >= b->cfg.consecutive) {
		transition(b, c, req, s->key, GK_OPEN, "consecutive failures");
		return;
	}
	unsigned calls, fails, slows;
	window_counts(b, c, &calls, &fails, &slows);
	if (calls < b->cfg.min_calls || !calls)
		return;
	if (b->cfg.failure_rate > 0 &&
	    (double)fails / calls >= b->cfg.failure_rate)
		transition(b, c, req, s->key, GK_OPEN, "failure rate");
	else if (b->cfg.slow_ms && b->cfg.slow_rate > 0 &&
	    (double)slows / calls >= b->cfg.slow_rate)
		transition(b, c, req, s->key, GK_OPEN, "slow call rate");
}

static void
on_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_req *req = arg;
	struct rstate *s = gk_req_state(req);
	gk_breaker *b = s->b;
	s->timed_out = true;
	outcome(b, req, 504, true);
	/* The runtime cancels south and drops the late answer. */
	gk_answer(req, 504, NULL, "gateway timeout\n", "timeout");
}

static void
reject_open(gk_breaker *b, struct circuit *c, gk_req *req, const char *why)
{
	gk_counter_add(b->m_rejected, 1);
	uint64_t now = gk_loop_now(b->loop);
	uint64_t left = c->open_until > now ? c->open_until - now : 0;
	char retry[24];
	snprintf(retry, sizeof retry, "%llu",
	    (unsigned long long)((left + 999) / 1000 ? (left + 999) / 1000 : 1));
	gk_header h[] = {{"retry-after", retry}, {0}};
	gk_answer(req, b->cfg.fallback_status, h,
	    b->cfg.fallback_body ? b->cfg.fallback_body
				 : "service unavailable: circuit open\n",
	    why);
	/* From the start of the turn that read it: an upper bound of the
	 * time the request spent in this process. */
	uint64_t now_us = gk_monotonic_us(), read_us = gk_loop_now_us(b->loop);
	gk_histogram_observe(b->m_open_answer,
	    now_us > read_us ? (double)(now_us - read_us) / 1e6 : 0);
}

/*
 * The key into KEY_MAX bytes with its NUL.  A longer one keeps its start
 * and ends in "~" and 16 hex digits of a hash of the whole, so
 * that keys alike in their first bytes (long paths) keep breakers of
 * their own.
 */
#define KEY_HEAD (KEY_MAX - 1 - 17)
static void
key_fit(char out[KEY_MAX], const char *k, size_t n)
{
	if (n < KEY_MAX) {
		if (n)
			memcpy(out, k, n);
		out[n] = 0;
		return;
	}
	memcpy(out, k, KEY_HEAD);
	snprintf(out + KEY_HEAD, KEY_MAX - KEY_HEAD, "~%016llx",
	    (unsigned long long)gk__hash_bytes(k, n));
}

void
gk_breaker_request(gk_breaker *b, gk_req *req)
{
	struct rstate *s = gk_req_state(req);
	s->start_ms = gk_loop_now(b->loop);
	if (b->cfg.key) {
		gk_buf *k = &b->keybuf;
		gk_buf_reset(k);
		gk_key_of(b->cfg.key, gk_req_msg(req), k);
		key_fit(s->key, k->data, k->len);
	}
	struct circuit *c = circuit_of(b, s->key, true);
	if (c->state == GK_OPEN) {
		if (gk_loop_now(b->loop) < c->open_until) {
			reject_open(b, c, req, "open");
			return;
		}
		transition(b, c, req, s->key, GK_HALF_OPEN, "open interval over");
	}
	if (c->state == GK_HALF_OPEN) {
		if (c->probes_out + c->probes_ok >= b->cfg.probes) {
			reject_open(b, c, req, "half-open");
			return;
		}
		c->probes_out++;
		s->probe = true;
	}
	s->period = c->period;
	s->passed = true;
	if (b->cfg.timeout_ms) {
		s->b = b;
		gk_timer_start(b->loop, &s->timer, b->cfg.timeout_ms, on_timeout,
		    req);
	}
	gk_forward(req);
}

#define DEADLINE_SLACK_MS 5

/* A call that ends without an outcome: a probe frees its slot. */
static void
no_outcome(gk_breaker *b, gk_req *req)
{
	struct rstate *s = gk_req_state(req);
	if (s->counted)
		return;
	if (s->probe) {
		struct circuit *c = circuit_of(b, s->key, false);
		if (c && is_probe_of(c, s) && c->probes_out)
			c->probes_out--;
	}
	s->counted = true;
}

void
gk_breaker_response(gk_breaker *b, gk_req *req, gk_msg *resp)
{
	struct rstate *s = gk_req_state(req);
	gk_timer_stop(b->loop, &s->timer);
	int status = gk_msg_status(resp);
	uint64_t deadline = gk_req_deadline(req);
	/* A 504 once the request's deadline has passed is a stage below
	 * keeping the caller's budget (it has the same deadline and its
	 * timer fired first): no outcome, as when our own runtime answers
	 * it (gk_breaker_done).  Its timer runs on the monotonic clock in
	 * whole ms, the deadline on the real one: a few ms of slack. */
	if (status == 504 && deadline &&
	    gk_realtime_ms() + DEADLINE_SLACK_MS >= deadline)
		no_outcome(b, req);
	else
		outcome(b, req, status, false);
	gk_pass(req, resp);
}

void
gk_breaker_done(gk_breaker *b, gk_req *req, int status)
{
	struct rstate *s = gk_req_state(req);
	gk_timer_stop(b->loop, &s->timer);
	/* Only a call that was let through has an outcome: not one answered
	 * while open, nor one the runtime refused before the breaker saw it.
	 * Answered by the runtime after it went south (the south side died,
	 * or is down): that is its outcome.  The runtime's own deadline
	 * (--timeout, or the request's) is the caller's budget running out,
	 * not a failure of the south side: only -t counts timeouts.  The
	 * client left: no outcome either; a probe frees its slot. */
	if (!s->passed || s->counted)
		return;
	if (status != 0 && status != 504)
		outcome(b, req, status, false);
	else
		no_outcome(b, req);
}

enum gk_breaker_state
gk_breaker_state_of(gk_breaker *b, const char *key)
{
	struct circuit *c = circuit_of(b, key, false);
	return c ? c->state : GK_CLOSED;
}
