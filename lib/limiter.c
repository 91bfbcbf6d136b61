/*
 * limiter.c: rate and concurrency limits for gk-limiter.
 *
 * The rate limit is GCRA (the generic cell rate algorithm of ATM, as
 * redis-cell and Envoy's descendants use it): one theoretical arrival time
 * per key, in integer nanoseconds on CLOCK_MONOTONIC, with the emission
 * interval kept as an exact fraction so that nothing drifts.  Adaptive
 * concurrency is Netflix concurrency-limits' Gradient2.  The stage layer
 * below applies both to requests; it never sees an fd.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "key.h"
#include "limiter.h"
#include "redis_limit.h"

typedef unsigned __int128 u128;

/* ---- GCRA ---- */

u128
gk__gcd128(u128 a, u128 b)
{
	while (b) {
		u128 t = a % b;
		a = b;
		b = t;
	}
	return a;
}

int
gk_gcra_init(gk_gcra *g, uint64_t num, uint64_t den_s, uint64_t burst)
{
	memset(g, 0, sizeof *g);
	if (!num || !den_s)
		return -1;
	u128 n = num, P = (u128)den_s * 1000000000u;
	u128 d = gk__gcd128(n, P);
	n /= d;
	P /= d;
	if (P > GK_GCRA_MAX_PERIOD_NS)
		return -1;
	g->n = (uint64_t)n;
	g->period_ns = (uint64_t)P;
	g->t_ns = g->period_ns / g->n;
	g->t_fr = g->period_ns % g->n;
	g->burst = burst;
	/* tau = burst * T, exactly: burst * P / n. */
	u128 tau = (u128)burst * g->period_ns;
	u128 whole = tau / g->n;
	g->tau_ns = whole > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)whole;
	g->tau_fr = (uint64_t)(tau % g->n);
	return 0;
}

static uint64_t
ceil_div(u128 a, u128 b)
{
	u128 q = (a + b - 1) / b;
	return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
}

bool
gk_gcra_take(const gk_gcra *g, gk_gcra_state *s, uint64_t now_ns,
    uint64_t max_wait_ns, gk_rate_result *res)
{
	/* Every time below is scaled by n, so T is exactly the period P. */
	const u128 n = g->n, T = g->period_ns;
	u128 now = (u128)now_ns * n;
	u128 tat = (u128)s->tat_ns * n + s->tat_fr;
	u128 tau = (u128)g->tau_ns * n + g->tau_fr;
	if (tat < now)
		tat = now;
	u128 allow_at = tat > tau ? tat - tau : 0;
	u128 wait = allow_at > now ? allow_at - now : 0;
	res->limit = g->burst + 1;
	if (wait) {
		uint64_t wait_ns = ceil_div(wait, n);
		if (wait_ns > max_wait_ns) {
			res->allowed = false;
			res->delay_ns = wait_ns;
			res->remaining = 0;
			res->reset_ns = ceil_div(tat - now, n);
			return false;
		}
		res->delay_ns = wait_ns;
	} else
		res->delay_ns = 0;
	u128 next = tat + T;
	s->tat_ns = (uint64_t)(next / n);
	s->tat_fr = (uint64_t)(next % n);
	res->allowed = true;
	res->remaining = now + tau >= next ? (uint64_t)((now + tau - next) / T) + 1
					  : 0;
	res->reset_ns = ceil_div(next - now, n);
	return true;
}

/* ---- Gradient2 ---- */

void
gk_gradient_init(gk_gradient *g, unsigned initial, unsigned min, unsigned max)
{
	memset(g, 0, sizeof *g);
	g->min = min ? min : 1;
	g->max = max < g->min ? g->min : max;
	g->limit = initial < g->min ? g->min : initial > g->max ? g->max
								 : initial;
}

unsigned
gk_gradient_limit(const gk_gradient *g)
{
	return (unsigned)g->limit;
}

bool
gk_gradient_sample(gk_gradient *g, uint64_t rtt_ns, unsigned inflight)
{
	g->win_sum += (double)rtt_ns;
	if (inflight > g->win_inflight)
		g->win_inflight = inflight;
	if (++g->win_n < GK_GRADIENT_WINDOW)
		return false;
	/* One window of samples, averaged, is one Gradient2 update: single
	 * samples are too noisy to steer by. */
	double rtt = g->win_sum / g->win_n;
	unsigned infl = g->win_inflight;
	g->win_sum = 0;
	g->win_n = 0;
	g->win_inflight = 0;
	if (rtt < 1)
		rtt = 1;
	if (g->nlong < GK_GRADIENT_WARMUP) {
		g->long_rtt = (g->long_rtt * (double)g->nlong + rtt) /
		    (double)(g->nlong + 1);
		g->nlong++;
	} else {
		double f = 2.0 / (GK_GRADIENT_LONG + 1);
		g->long_rtt = g->long_rtt * (1 - f) + rtt * f;
	}
	/* Latency back to normal after a long overload: let the long average
	 * catch up faster than its window would. */
	if (g->long_rtt / rtt > 2)
		g->long_rtt *= 0.95;
	/* Application-limited: too little traffic to learn anything. */
	if (infl < g->limit / 2)
		return true;
	double gradient = GK_GRADIENT_TOLERANCE * g->long_rtt / rtt;
	gradient = gradient > 1 ? 1 : gradient < 0.5 ? 0.5 : gradient;
	double queue = 4; /* Gradient2's default queue size */
	double next = g->limit * gradient + queue;
	next = g->limit * (1 - GK_GRADIENT_SMOOTHING) +
	    next * GK_GRADIENT_SMOOTHING;
	g->limit = next < g->min ? g->min : next > g->max ? g->max : next;
	return true;
}

/* ---- the stage layer ---- */

enum { WHY_RATE, WHY_CONC };
static const char *const why_msg[] = {"rate limited", "concurrency limited"};
static const char *const why_label[] = {"rate_limited", "concurrency_limited"};

enum phase { P_NEW, P_REDIS, P_DELAY, P_SLOT, P_FWD };

struct gk_limiter;
static void make_policy(struct gk_limiter *l);

struct lreq {
	gk_limiter *l;
	gk_req *req;
	struct lreq *qprev, *qnext; /* the FIFO of requests waiting a slot */
	gk_timer timer;
	gk_redis_op *op;
	uint64_t arrival_ns, sent_ns;
	unsigned sent_inflight;
	unsigned char phase;
	bool queued; /* counted in the queue length */
};

struct log_throttle {
	uint64_t last_ns, count;
};

struct gk_limiter {
	gk_limiter_config c;
	gk_loop *loop;
	bool rate_on, conc_on;
	gk_gcra gcra;
	gk_gcra_state global;
	gk_key_spec *key;
	gk_keytable *keys;
	uint64_t evictions_seen;
	unsigned limit, inflight;
	gk_gradient grad;
	struct lreq *qhead, *qtail;
	uint64_t queued;
	bool pumping;
	gk_redis_limit *redis;
	gk_buf keybuf;
	struct log_throttle thr[2];
	char policy[48]; /* RateLimit-Policy of rate refusals */

	gk_series *m_allowed, *m_rejected[2], *m_shadow[2], *m_queued;
	gk_series *m_qlen, *m_wait, *m_keys, *m_evictions, *m_limit;
	gk_series *m_inflight;
};

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
gk_limiter_defaults(gk_limiter_config *c)
{
	memset(c, 0, sizeof *c);
	c->min = 20; /* Gradient2's defaults */
	c->max = 200;
	c->max_keys = 10000;
	c->mode = GK_LIMIT_REJECT;
	c->queue = 100;
	c->redis_prefix = "gk-limiter:";
	c->redis_timeout_ms = 50;
}

size_t
gk_limiter_req_state_size(void)
{
	return sizeof(struct lreq);
}

gk_limiter *
gk_limiter_new(const gk_limiter_config *c, gk_loop *loop, const char **why)
{
	if (c->rate <= 0 && !c->concurrency && !c->adaptive) {
		*why = "nothing to limit: give -r RATE, -c N or --adaptive";
		return NULL;
	}
	if ((c->key || c->redis_host) && c->rate <= 0) {
		*why = "-k and --redis apply to the rate limit: give -r RATE";
		return NULL;
	}
	if (c->adaptive && c->min > c->max) {
		*why = "--min is above --max";
		return NULL;
	}
	gk_limiter *l = gk_xcalloc(1, sizeof *l);
	l->c = *c;
	l->loop = loop;
	if (c->rate > 0) {
		l->rate_on = true;
		if (gk_gcra_init(&l->gcra, c->rate_num, c->rate_den_s,
		    c->burst) < 0) {
			*why = "the rate cannot be kept exactly";
			free(l);
			return NULL;
		}
		make_policy(l);
	}
	if (c->key) {
		l->key = gk_key_spec_new(c->key, why);
		if (!l->key) {
			free(l);
			return NULL;
		}
		l->keys = gk_keytable_new(c->max_keys, sizeof(gk_gcra_state),
		    NULL, NULL);
	}
	if (c->adaptive) {
		l->conc_on = true;
		gk_gradient_init(&l->grad,
		    c->concurrency ? (unsigned)c->concurrency : 20,
		    (unsigned)c->min, (unsigned)c->max);
		l->limit = gk_gradient_limit(&l->grad);
	} else if (c->concurrency) {
		l->conc_on = true;
		l->limit = (unsigned)c->concurrency;
	}

	l->m_allowed = gk_metric_series(gk_counter_new(
	    "gk_limiter_allowed_total", "Requests let through south", NULL));
	gk_metric *rej = gk_counter_new("gk_limiter_rejected_total",
	    "Requests answered 429, by reason", "reason");
	gk_metric *sh = gk_counter_new("gk_limiter_shadow_rejected_total",
	    "Requests over a limit let through by --shadow, by reason",
	    "reason");
	for (int i = 0; i < 2; i++) {
		l->m_rejected[i] = gk_series_get(rej, why_label[i], (char *)0);
		l->m_shadow[i] = gk_series_get(sh, why_label[i], (char *)0);
	}
	l->m_queued = gk_metric_series(gk_counter_new("gk_limiter_queued_total",
	    "Requests held by --wait before a decision", NULL));
	l->m_qlen = gk_metric_series(gk_gauge_new("gk_limiter_queue_length",
	    "Requests held by --wait now", NULL));
	static const double wb[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	    0.1, 0.25, 0.5, 1, 2.5, 5, 10};
	l->m_wait = gk_metric_series(gk_histogram_new("gk_limiter_wait_seconds",
	    "Time requests were held by --wait", NULL, wb,
	    sizeof wb / sizeof wb[0]));
	l->m_keys = gk_metric_series(gk_gauge_new("gk_limiter_keys",
	    "Keys in the rate limit table", NULL));
	l->m_evictions = gk_metric_series(gk_counter_new(
	    "gk_limiter_evictions_total",
	    "Keys dropped from the full table, least recently used first",
	    NULL));
	l->m_limit = gk_metric_series(gk_gauge_new(
	    "gk_limiter_concurrency_limit",
	    "The concurrency limit now (0: none)", NULL));
	l->m_inflight = gk_metric_series(gk_gauge_new("gk_limiter_inflight",
	    "Requests forwarded south and not yet answered", NULL));
	gk_gauge_set(l->m_limit, l->conc_on ? l->limit : 0);

	if (c->redis_host) {
		l->redis = gk_redis_limit_new(loop, c->redis_host,
		    c->redis_port, c->redis_nameserver, c->redis_prefix,
		    c->redis_timeout_ms, &l->gcra, why);
		if (!l->redis) {
			gk_limiter_free(l);
			return NULL;
		}
	}
	return l;
}

void
gk_limiter_free(gk_limiter *l)
{
	if (!l)
		return;
	gk_redis_limit_free(l->redis);
	gk_keytable_free(l->keys);
	gk_key_spec_free(l->key);
	gk_buf_free(&l->keybuf);
	free(l);
}

/* ---- events: rejections are logged at most once a second per reason ---- */

static void
log_over(gk_limiter *l, struct lreq *lr, int why, bool shadow)
{
	struct log_throttle *t = &l->thr[why];
	uint64_t now = now_ns();
	t->count++;
	if (t->last_ns && now - t->last_ns < 1000000000u)
		return;
	char count[40];
	snprintf(count, sizeof count, "count=%llu",
	    (unsigned long long)t->count);
	gk_buf k = {0};
	if (l->key && why == WHY_RATE) {
		gk_buf_adds(&k, "key=");
		gk_key_of(l->key, gk_req_msg(lr->req), &k);
	}
	gk_log_trace(shadow ? GK_INFO : GK_WARN, gk_req_trace_id(lr->req),
	    why_msg[why], count, shadow ? "shadow=true" : "mode=enforce",
	    k.len ? gk_buf_cstr(&k) : NULL, (char *)0);
	gk_buf_free(&k);
	t->last_ns = now;
	t->count = 0;
}

void
gk_limiter_flush_logs(gk_limiter *l)
{
	for (int i = 0; i < 2; i++) {
		if (!l->thr[i].count)
			continue;
		char count[40];
		snprintf(count, sizeof count, "count=%llu",
		    (unsigned long long)l->thr[i].count);
		gk_log(GK_WARN, why_msg[i], count);
		l->thr[i].count = 0;
	}
}

/* ---- the queue ---- */

static void
unqueue(gk_limiter *l, struct lreq *lr)
{
	if (lr->phase == P_SLOT) {
		if (lr->qprev)
			lr->qprev->qnext = lr->qnext;
		else
			l->qhead = lr->qnext;
		if (lr->qnext)
			lr->qnext->qprev = lr->qprev;
		else
			l->qtail = lr->qprev;
		lr->qprev = lr->qnext = NULL;
	}
	gk_timer_stop(l->loop, &lr->timer);
	if (lr->queued) {
		lr->queued = false;
		l->queued--;
		gk_gauge_set(l->m_qlen, (double)l->queued);
		gk_histogram_observe(l->m_wait,
		    (double)(now_ns() - lr->arrival_ns) / 1e9);
	}
	lr->phase = P_NEW;
}

static void
enqueue_count(gk_limiter *l, struct lreq *lr)
{
	if (lr->queued)
		return;
	lr->queued = true;
	l->queued++;
	gk_counter_add(l->m_queued, 1);
	gk_gauge_set(l->m_qlen, (double)l->queued);
}

/* Time left of lr's --wait budget, in ms. */
static uint64_t
wait_left_ms(const gk_limiter *l, const struct lreq *lr)
{
	uint64_t spent = (now_ns() - lr->arrival_ns) / 1000000u;
	return spent >= l->c.wait_ms ? 0 : l->c.wait_ms - spent;
}

/* ---- answers ---- */

/*
 * RateLimit-Policy, "q;w=W": q requests per W whole seconds, with q / W
 * the configured rate, so that a client pacing itself by it runs at the
 * rate.  W is the smallest whole number of seconds at least (burst + 1) T
 * (the window an idle key's burst spans) in which the rate admits a whole
 * number of requests.  The rate is n per P ns, n * 1e9 per P seconds: W
 * must be a multiple of P / gcd(n * 1e9, P).
 */
static void
make_policy(gk_limiter *l)
{
	const u128 P = l->gcra.period_ns, n = (u128)l->gcra.n * 1000000000u;
	uint64_t limit = l->gcra.burst + 1;
	u128 step = P / gk__gcd128(n, P);
	/* The burst window, in whole seconds, rounded up. */
	uint64_t w = ceil_div((u128)limit * P, n);
	if (!w)
		w = 1;
	/* A whole count in a window not much longer than the burst's;
	 * otherwise that window, with the count rounded down. */
	u128 wm = (w + step - 1) / step * step;
	if (wm <= (u128)w * 2 || wm <= 3600)
		w = (uint64_t)wm;
	u128 q = (u128)w * n / P;
	if (!q)
		q = 1;
	snprintf(l->policy, sizeof l->policy, "%llu;w=%llu",
	    (unsigned long long)(q > UINT64_MAX ? UINT64_MAX : (uint64_t)q),
	    (unsigned long long)w);
}

static void
reject(gk_limiter *l, struct lreq *lr, int why, const gk_rate_result *res)
{
	unqueue(l, lr);
	gk_counter_add(l->m_rejected[why], 1);
	log_over(l, lr, why, false);
	char retry[24], lim[24], rem[24], reset[24];
	uint64_t retry_s = 1, reset_s = 1, limit = l->limit;
	if (res) {
		retry_s = (res->delay_ns + 999999999u) / 1000000000u;
		reset_s = (res->reset_ns + 999999999u) / 1000000000u;
		limit = res->limit;
	}
	if (!retry_s)
		retry_s = 1;
	snprintf(retry, sizeof retry, "%llu", (unsigned long long)retry_s);
	snprintf(lim, sizeof lim, "%llu", (unsigned long long)limit);
	snprintf(rem, sizeof rem, "%u", 0u);
	snprintf(reset, sizeof reset, "%llu", (unsigned long long)reset_s);
	gk_header h[6] = {{"retry-after", retry}, {"ratelimit-limit", lim},
	    {"ratelimit-remaining", rem}, {"ratelimit-reset", reset}};
	if (res && why == WHY_RATE)
		h[4] = (gk_header){"ratelimit-policy", l->policy};
	gk_answer(lr->req, 429, h, "too many requests\n", why_msg[why]);
}

static void
forward(gk_limiter *l, struct lreq *lr)
{
	unqueue(l, lr);
	lr->phase = P_FWD;
	l->inflight++;
	lr->sent_inflight = l->inflight;
	lr->sent_ns = now_ns();
	gk_counter_add(l->m_allowed, 1);
	gk_gauge_set(l->m_inflight, l->inflight);
	/* May answer (and free) lr at once when south is down. */
	gk_forward(lr->req);
}

static void
on_slot_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	struct lreq *lr = arg;
	reject(lr->l, lr, WHY_CONC, NULL);
}

/* Past the rate limit: the concurrency limit. */
static void
admit(gk_limiter *l, struct lreq *lr)
{
	if (!l->conc_on || l->inflight < l->limit) {
		forward(l, lr);
		return;
	}
	if (l->c.mode == GK_LIMIT_SHADOW) {
		gk_counter_add(l->m_shadow[WHY_CONC], 1);
		log_over(l, lr, WHY_CONC, true);
		forward(l, lr);
		return;
	}
	uint64_t left = l->c.mode == GK_LIMIT_WAIT ? wait_left_ms(l, lr) : 0;
	if (left && (lr->queued || l->queued < l->c.queue)) {
		enqueue_count(l, lr);
		lr->phase = P_SLOT;
		lr->qprev = l->qtail;
		lr->qnext = NULL;
		if (l->qtail)
			l->qtail->qnext = lr;
		else
			l->qhead = lr;
		l->qtail = lr;
		gk_timer_start(l->loop, &lr->timer, left, on_slot_timeout, lr);
		return;
	}
	reject(l, lr, WHY_CONC, NULL);
}

/* Whether admit() would refuse lr at once for want of a concurrency slot:
 * no slot free, and no --wait queue to hold it. */
static bool
slot_refused_now(const gk_limiter *l, const struct lreq *lr)
{
	if (!l->conc_on || l->inflight < l->limit ||
	    l->c.mode == GK_LIMIT_SHADOW)
		return false;
	return l->c.mode != GK_LIMIT_WAIT || !wait_left_ms(l, lr) ||
	    l->queued >= l->c.queue;
}

/* Whether lr has been held its whole --wait (to the nanosecond). */
static bool
wait_spent(const gk_limiter *l, const struct lreq *lr)
{
	return now_ns() - lr->arrival_ns >= l->c.wait_ms * 1000000u;
}

/*
 * Forward the waiting requests that fit now.  A slot can come free in the
 * same loop turn in which the head's --wait ran out, before its timer has
 * run (fds first, or an earlier timer): the head is then refused, as its
 * timer would have, and never admitted past its bound.
 */
static void
pump(gk_limiter *l)
{
	if (l->pumping) /* a forward failed and finished a request */
		return;
	l->pumping = true;
	while (l->qhead && l->inflight < l->limit) {
		if (wait_spent(l, l->qhead))
			reject(l, l->qhead, WHY_CONC, NULL);
		else
			forward(l, l->qhead);
	}
	l->pumping = false;
}

static void
on_delay_done(gk_loop *loop, void *arg)
{
	(void)loop;
	struct lreq *lr = arg;
	lr->phase = P_NEW;
	admit(lr->l, lr);
}

static void
after_rate(gk_limiter *l, struct lreq *lr, const gk_rate_result *res)
{
	if (!res->allowed) {
		if (l->c.mode == GK_LIMIT_SHADOW) {
			gk_counter_add(l->m_shadow[WHY_RATE], 1);
			log_over(l, lr, WHY_RATE, true);
			admit(l, lr);
			return;
		}
		reject(l, lr, WHY_RATE, res);
		return;
	}
	if (res->delay_ns) {
		/* A reserved slot: hold it until then, within --wait. */
		uint64_t ms = (res->delay_ns + 999999u) / 1000000u;
		uint64_t left = wait_left_ms(l, lr);
		if (ms > left)
			ms = left;
		if (!lr->queued && l->queued >= l->c.queue) {
			reject(l, lr, WHY_RATE, res);
			return;
		}
		enqueue_count(l, lr);
		lr->phase = P_DELAY;
		gk_timer_start(l->loop, &lr->timer, ms, on_delay_done, lr);
		return;
	}
	admit(l, lr);
}

static gk_gcra_state *
state_for(gk_limiter *l, const char *key, size_t len)
{
	if (!l->keys)
		return &l->global;
	gk_gcra_state *s = gk_keytable_get(l->keys, key, len, NULL);
	uint64_t ev = gk_keytable_evictions(l->keys);
	if (ev != l->evictions_seen) {
		gk_counter_add(l->m_evictions, (double)(ev - l->evictions_seen));
		l->evictions_seen = ev;
	}
	gk_gauge_set(l->m_keys, (double)gk_keytable_count(l->keys));
	return s;
}

/*
 * How long lr may be held for a rate slot: what is left of --wait, and no
 * later than just before the request's deadline.  A slot that comes after
 * the deadline is no use to the request (the runtime answers 504 at the
 * deadline, and the stages above it at the same moment), and taking it
 * would push every later request's slot further out: under load every
 * held request timed out and nothing went south.  Refused at once instead,
 * the request gets 429 with the true Retry-After and the slot stays free.
 */
static uint64_t
max_wait_ns(const gk_limiter *l, const struct lreq *lr)
{
	if (l->c.mode != GK_LIMIT_WAIT || (!lr->queued &&
	    l->queued >= l->c.queue))
		return 0;
	uint64_t ns = wait_left_ms(l, lr) * 1000000u;
	uint64_t dl = gk_req_deadline(lr->req);
	if (dl) {
		/* The deadline is whole ms of the wall clock: a slot must
		 * come a millisecond before it at least. */
		uint64_t now = gk_realtime_ms();
		uint64_t left = dl > now + 1 ? (dl - now - 1) * 1000000u : 0;
		if (left < ns)
			ns = left;
	}
	return ns;
}

static void
local_rate(gk_limiter *l, struct lreq *lr)
{
	gk_gcra_state *s = state_for(l, l->keybuf.data ? l->keybuf.data : "",
	    l->keybuf.len);
	gk_rate_result res;
	gk_gcra_take(&l->gcra, s, now_ns(), max_wait_ns(l, lr), &res);
	after_rate(l, lr, &res);
}

static void
take_key(gk_limiter *l, struct lreq *lr)
{
	gk_buf_reset(&l->keybuf);
	if (l->key)
		gk_key_of(l->key, gk_req_msg(lr->req), &l->keybuf);
}

static void
on_redis(void *arg, const gk_rate_result *res)
{
	struct lreq *lr = arg;
	gk_limiter *l = lr->l;
	lr->op = NULL;
	lr->phase = P_NEW;
	if (res) {
		after_rate(l, lr, res);
		return;
	}
	/* Redis is unavailable: this request gets the local limit. */
	take_key(l, lr);
	local_rate(l, lr);
}

void
gk_limiter_request(gk_limiter *l, gk_req *req)
{
	struct lreq *lr = gk_req_state(req);
	lr->l = l;
	lr->req = req;
	lr->arrival_ns = now_ns();
	if (!l->rate_on || slot_refused_now(l, lr)) {
		/* A request the concurrency limit refuses at once goes no
		 * further: it must not spend a rate slot it never uses. */
		admit(l, lr);
		return;
	}
	take_key(l, lr);
	if (l->redis) {
		lr->op = gk_redis_limit_check(l->redis,
		    l->keybuf.data ? l->keybuf.data : "", l->keybuf.len,
		    max_wait_ns(l, lr), on_redis, lr);
		if (lr->op) {
			lr->phase = P_REDIS;
			return;
		}
	}
	local_rate(l, lr);
}

void
gk_limiter_response(gk_limiter *l, gk_req *req, gk_msg *resp)
{
	struct lreq *lr = gk_req_state(req);
	if (l->c.adaptive && lr->phase == P_FWD &&
	    gk_gradient_sample(&l->grad, now_ns() - lr->sent_ns,
		lr->sent_inflight)) {
		unsigned limit = gk_gradient_limit(&l->grad);
		if (limit != l->limit) {
			l->limit = limit;
			gk_gauge_set(l->m_limit, limit);
		}
	}
	gk_pass(req, resp);
}

void
gk_limiter_done(gk_limiter *l, gk_req *req, int status)
{
	(void)status;
	struct lreq *lr = gk_req_state(req);
	if (!lr->l) /* answered by the runtime before we saw it */
		return;
	if (lr->op) {
		gk_redis_op_cancel(lr->op);
		lr->op = NULL;
	}
	bool was_fwd = lr->phase == P_FWD;
	unqueue(l, lr);
	if (was_fwd) {
		l->inflight--;
		gk_gauge_set(l->m_inflight, l->inflight);
		if (l->conc_on)
			pump(l);
	}
}
