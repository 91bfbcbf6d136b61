/* test_limiter.c: GCRA and Gradient2 of lib/limiter.c, on a fake clock. */
#include "key.h"
#include "limiter.h"
#include "redis_limit.h"
#include "unit.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* An arbitrary monotonic start, far from 0. */
static const uint64_t T0 = 123456 * SEC + 789;

static unsigned
take_n(const gk_gcra *g, gk_gcra_state *s, uint64_t now, unsigned n)
{
	unsigned ok = 0;
	gk_rate_result r;
	for (unsigned i = 0; i < n; i++)
		ok += gk_gcra_take(g, s, now, 0, &r);
	return ok;
}

TEST(gcra_idle_key_admits_burst_plus_one_exactly)
{
	gk_gcra g;
	gk_gcra_init(&g, 100, 1, 20);
	gk_gcra_state s = {0};
	CHECK(take_n(&g, &s, T0, 25) == 21);
	/* The next slot opens exactly one interval (10 ms) later. */
	CHECK(take_n(&g, &s, T0 + 10 * MS - 1, 1) == 0);
	CHECK(take_n(&g, &s, T0 + 10 * MS, 1) == 1);
	CHECK(take_n(&g, &s, T0 + 10 * MS, 1) == 0);
	gk_gcra_init(&g, 5, 1, 0);
	gk_gcra_state z = {0};
	CHECK(take_n(&g, &z, T0, 3) == 1);
}

TEST(gcra_headers_describe_the_decision)
{
	gk_gcra g;
	gk_gcra_init(&g, 1, 60, 10); /* 1/m */
	gk_gcra_state s = {0};
	gk_rate_result r;
	CHECK(gk_gcra_take(&g, &s, T0, 0, &r));
	CHECK(r.limit == 11 && r.remaining == 10 && r.delay_ns == 0);
	CHECK(r.reset_ns == 60 * SEC);
	for (int i = 0; i < 10; i++)
		gk_gcra_take(&g, &s, T0, 0, &r);
	CHECK(r.allowed && r.remaining == 0);
	CHECK(!gk_gcra_take(&g, &s, T0 + SEC, 0, &r));
	CHECK(r.delay_ns == 59 * SEC);
	CHECK(r.reset_ns == 11 * 60 * SEC - SEC);
	/* Retry after delay_ns: admitted, not a nanosecond before. */
	CHECK(!gk_gcra_take(&g, &s, T0 + 60 * SEC - 1, 0, &r));
	CHECK(gk_gcra_take(&g, &s, T0 + 60 * SEC, 0, &r));
}

/* Offer 10x the rate for hours; count what is admitted. */
static uint64_t
overload(uint64_t num, uint64_t den_s, uint64_t burst, uint64_t seconds)
{
	gk_gcra g;
	double rate = (double)num / (double)den_s;
	CHECK(gk_gcra_init(&g, num, den_s, burst) == 0);
	gk_gcra_state s = {0};
	gk_rate_result r;
	uint64_t offered = (uint64_t)(rate * 10 * (double)seconds);
	uint64_t ok = 0;
	for (uint64_t i = 0; i <= offered; i++) {
		/* Arrivals spread evenly over [0, seconds], exactly. */
		uint64_t t = (uint64_t)((unsigned __int128)i * seconds * SEC /
		    offered);
		ok += gk_gcra_take(&g, &s, T0 + t, 0, &r);
	}
	return ok;
}

static bool
within_one(uint64_t got, double want)
{
	double d = (double)got - want;
	if (d > 1 || d < -1)
		printf("#   admitted %llu, expected %.3f\n",
		    (unsigned long long)got, want);
	return d <= 1 && d >= -1;
}

TEST(gcra_ten_hours_at_ten_times_overload_does_not_drift)
{
	const uint64_t H10 = 10 * 3600;
	CHECK(within_one(overload(100, 1, 20, H10), 100.0 * H10 + 20));
	/* An interval that is no whole number of nanoseconds. */
	CHECK(within_one(overload(7, 1, 3, H10), 7.0 * H10 + 3));
	CHECK(within_one(overload(6000, 60, 0, H10), 100.0 * H10));
	CHECK(within_one(overload(10, 3600, 2, H10), 100.0 + 2));
	CHECK(within_one(overload(3, 7, 1, H10), 3.0 / 7 * H10 + 1));
}

TEST(gcra_keeps_slow_and_fine_rates_exactly_or_refuses_them)
{
	gk_gcra g;
	gk_rate_result r;
	/* 0.0001/h: one per 10000 hours, not one per 1000. */
	CHECK(gk_gcra_init(&g, 1, 10000 * 3600, 0) == 0);
	gk_gcra_state s = {0};
	CHECK(gk_gcra_take(&g, &s, T0, 0, &r));
	CHECK(!gk_gcra_take(&g, &s, T0 + 9999 * 3600 * SEC, 0, &r));
	CHECK(r.delay_ns == 3600 * SEC);
	CHECK(gk_gcra_take(&g, &s, T0 + 10000 * 3600 * SEC, 0, &r));
	/* 1.0000000001/s: 10000000001 per 1e10 s, kept. */
	CHECK(gk_gcra_init(&g, 10000000001ull, 10000000000ull, 0) == 0);
	CHECK(g.n == 10000000001ull && g.period_ns == 10000000000000000000ull);
	/* One more digit, or slower than one per 1e10 s: refused. */
	CHECK(gk_gcra_init(&g, 100000000001ull, 100000000000ull, 0) == -1);
	CHECK(gk_gcra_init(&g, 1, 10000000001ull, 0) == -1);
	CHECK(gk_gcra_init(&g, 1, 10000000000ull, 0) == 0);
	CHECK(gk_gcra_init(&g, 0, 1, 0) == -1);
	/* Reduced to lowest terms: 6000/m is 1 per 10 ms. */
	CHECK(gk_gcra_init(&g, 6000, 60, 0) == 0);
	CHECK(g.n == 1 && g.period_ns == 10 * MS);
}

TEST(gcra_wait_reserves_slots_within_the_bound)
{
	gk_gcra g;
	gk_gcra_init(&g, 10, 1, 0);
	gk_gcra_state s = {0};
	gk_rate_result r;
	uint64_t want[] = {0, 100 * MS, 200 * MS, 300 * MS};
	for (int i = 0; i < 4; i++) {
		CHECK(gk_gcra_take(&g, &s, T0, 300 * MS, &r));
		CHECK(r.delay_ns == want[i]);
	}
	CHECK(!gk_gcra_take(&g, &s, T0, 300 * MS, &r));
	CHECK(r.delay_ns == 400 * MS);
	/* A rejection reserves nothing. */
	CHECK(gk_gcra_take(&g, &s, T0 + 100 * MS, 300 * MS, &r));
	CHECK(r.delay_ns == 300 * MS);
}

TEST(redis_script_times_are_exact_fractions_of_a_microsecond)
{
	gk_gcra g;
	uint64_t tw, tf, d, uw, uf;
	/* 300000/s: T = 10/3 us, burst 3000: tau = 10000 us. */
	gk_gcra_init(&g, 300000, 1, 3000);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == 0);
	CHECK(tw == 3 && tf == 1 && d == 3 && uw == 10000 && uf == 0);
	/* 8M/s: 1/8 us, under the spacing of doubles near 1.8e15. */
	gk_gcra_init(&g, 8000000, 1, 1001);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == 0);
	CHECK(tw == 0 && tf == 1 && d == 8 && uw == 125 && uf == 1);
	/* 7/m: 60e6/7 us. */
	gk_gcra_init(&g, 7, 60, 2);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == 0);
	CHECK(tw == 8571428 && tf == 4 && d == 7 && uw == 17142857 && uf == 1);
	/* 987654321.0987654321/s: T = 1e16 / 9876543210987654321 us, a
	 * denominator past 2^52; T is rounded up to the next 2^-52 us. */
	gk_gcra_init(&g, 9876543210987654321ull, 10000000000ull, 0);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == 0);
	CHECK(d == 1ull << 52 && tw == 0);
	unsigned __int128 exact = (unsigned __int128)10000000000000000ull << 52;
	CHECK(tf == (uint64_t)(exact / 9876543210987654321ull) + 1);
	/* (burst + 1) * T past 2^52 us: refused, not rounded. */
	gk_gcra_init(&g, 1, 3600, 1000000000);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == -1);
	gk_gcra_init(&g, 1, 3600, 1000000);
	CHECK(gk__redis_script_times(&g, &tw, &tf, &d, &uw, &uf) == 0);
}

TEST(keys_are_isolated)
{
	gk_gcra g;
	gk_gcra_init(&g, 10, 1, 4);
	gk_keytable *t = gk_keytable_new(100, sizeof(gk_gcra_state), NULL,
	    NULL);
	gk_gcra_state *a = gk_keytable_get(t, "a", 1, NULL);
	CHECK(take_n(&g, a, T0, 1000) == 5);
	gk_gcra_state *b = gk_keytable_get(t, "b", 1, NULL);
	CHECK(take_n(&g, b, T0, 1000) == 5);
	a = gk_keytable_get(t, "a", 1, NULL);
	CHECK(take_n(&g, a, T0, 1) == 0);
	CHECK(gk_keytable_count(t) == 2);
	gk_keytable_free(t);
}

TEST(gradient_rises_while_latency_holds)
{
	gk_gradient g;
	gk_gradient_init(&g, 20, 1, 200);
	unsigned prev = gk_gradient_limit(&g), rises = 0;
	for (int w = 0; w < 400; w++)
		for (int i = 0; i < GK_GRADIENT_WINDOW; i++)
			if (gk_gradient_sample(&g, 10 * MS,
				gk_gradient_limit(&g))) {
				unsigned now = gk_gradient_limit(&g);
				CHECK(now >= prev);
				rises += now > prev;
				prev = now;
			}
	CHECK(rises > 20);
	CHECK(gk_gradient_limit(&g) == 200);
}

TEST(gradient_falls_when_queueing_starts)
{
	gk_gradient g;
	gk_gradient_init(&g, 20, 1, 1000);
	for (int w = 0; w < 100; w++)
		for (int i = 0; i < GK_GRADIENT_WINDOW; i++)
			gk_gradient_sample(&g, 10 * MS, gk_gradient_limit(&g));
	unsigned peak = gk_gradient_limit(&g);
	CHECK(peak > 60);
	/* A queue builds: each window 5% slower than the last. */
	double rtt = 10 * MS;
	for (int w = 0; w < 40; w++) {
		rtt *= 1.05;
		for (int i = 0; i < GK_GRADIENT_WINDOW; i++)
			gk_gradient_sample(&g, (uint64_t)rtt,
			    gk_gradient_limit(&g));
	}
	unsigned low = gk_gradient_limit(&g);
	CHECK(low < peak / 2);
	/* It never goes below --min. */
	gk_gradient_init(&g, 20, 15, 100);
	rtt = 10 * MS;
	for (int w = 0; w < 200; w++) {
		rtt *= 1.1;
		for (int i = 0; i < GK_GRADIENT_WINDOW; i++)
			gk_gradient_sample(&g, (uint64_t)rtt, 100);
	}
	CHECK(gk_gradient_limit(&g) == 15);
}

TEST(gradient_does_not_grow_when_application_limited)
{
	gk_gradient g;
	gk_gradient_init(&g, 40, 1, 1000);
	for (int i = 0; i < 50 * GK_GRADIENT_WINDOW; i++)
		gk_gradient_sample(&g, 10 * MS, 5);
	CHECK(gk_gradient_limit(&g) == 40);
}

int
main(void)
{
	RUN(gcra_idle_key_admits_burst_plus_one_exactly);
	RUN(gcra_headers_describe_the_decision);
	RUN(gcra_ten_hours_at_ten_times_overload_does_not_drift);
	RUN(gcra_keeps_slow_and_fine_rates_exactly_or_refuses_them);
	RUN(gcra_wait_reserves_slots_within_the_bound);
	RUN(redis_script_times_are_exact_fractions_of_a_microsecond);
	RUN(keys_are_isolated);
	RUN(gradient_rises_while_latency_holds);
	RUN(gradient_falls_when_queueing_starts);
	RUN(gradient_does_not_grow_when_application_limited);
	return UNIT_END();
}
