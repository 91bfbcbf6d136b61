/*
 * test_balancer: gk-client's balancer (lib/balancer.c) honours the
 * weights and priorities of an endpoint set.
 *
 * Without arguments: unit tests on a set built here (SRV-like weights
 * 50/30/20 at priority 1, a backup at priority 2).
 *
 * With "--picks N FILE": the set is read from FILE through the file:
 * resolver source, exactly as gk-client --endpoints FILE reads it (the
 * gk-resolver bats suite writes FILE with gk-resolver -o from a real
 * dnsmasq's SRV records), N picks are made with each weighted policy, and
 * one line per endpoint is printed: "POLICY ADDR WEIGHT PRIORITY PICKS".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "resolver.h"
#include "unit.h"

#define PICKS 10000

static const gk_endpoint srv_set[] = {
    {.addr = "127.0.0.11:8001", .weight = 50, .priority = 1},
    {.addr = "127.0.0.12:8002", .weight = 30, .priority = 1},
    {.addr = "127.0.0.13:8003", .weight = 20, .priority = 1},
    {.addr = "127.0.0.14:8004", .weight = 100, .priority = 2},
};
#define NSRV (sizeof srv_set / sizeof srv_set[0])

/* counts[i]: picks of set[i] in n picks from b; with answered, each pick
 * is a request answered in 1 ms before the next one (none in flight). */
static void
count_picks(gk_balancer *b, const gk_endpoint *set, size_t nset,
    unsigned n, bool answered, unsigned *counts)
{
	memset(counts, 0, nset * sizeof *counts);
	for (unsigned i = 0; i < n; i++) {
		gk_backend *be = gk_balancer_pick(b, 1000, NULL, 0, NULL, 0);
		if (!be)
			continue;
		if (answered) {
			gk_balancer_started(be);
			gk_balancer_finished(be, gk_monotonic_us(), 1000);
		}
		for (size_t k = 0; k < nset; k++)
			if (!strcmp(be->ep.addr, set[k].addr))
				counts[k]++;
	}
}

/* counts[i]: picks of set[i] in n picks with policy how. */
static void
pick_counts(enum gk_balance how, const gk_endpoint *set, size_t nset,
    unsigned n, unsigned *counts)
{
	gk_balancer *b = gk_balancer_new(how);
	gk_balancer_update(b, set, nset);
	count_picks(b, set, nset, n, false, counts);
	gk_balancer_free(b);
}

/* Each endpoint of priority 1 got its weight's share of PICKS picks of
 * srv_set within tol (a fraction of all picks), the backup none. */
static void
check_counts(const unsigned *counts, double tol)
{
	double total = 50 + 30 + 20;
	for (size_t k = 0; k < 3; k++) {
		double want = srv_set[k].weight / total;
		double got = (double)counts[k] / PICKS;
		if (fabs(got - want) > tol)
			printf("#   %s: %u picks, want %.0f\n", srv_set[k].addr,
			    counts[k], want * PICKS);
		CHECK(fabs(got - want) <= tol);
	}
	CHECK(counts[3] == 0);
}

static void
check_shares(enum gk_balance how, double tol)
{
	unsigned counts[NSRV];
	pick_counts(how, srv_set, NSRV, PICKS, counts);
	check_counts(counts, tol);
}

TEST(round_robin_weights_within_5_percent_backup_unused)
{
	/* Smooth weighted round robin is exact: 5% of each share. */
	unsigned counts[NSRV];
	pick_counts(GK_BALANCE_ROUND_ROBIN, srv_set, NSRV, PICKS, counts);
	for (size_t k = 0; k < 3; k++) {
		double want = PICKS * srv_set[k].weight / 100.0;
		CHECK(fabs(counts[k] - want) <= 0.05 * want);
	}
	CHECK(counts[3] == 0);
}

TEST(random_weights_within_5_points_backup_unused)
{
	check_shares(GK_BALANCE_RANDOM, 0.05);
}

TEST(backup_priority_is_used_when_the_first_is_unavailable)
{
	gk_balancer *b = gk_balancer_new(GK_BALANCE_RANDOM);
	gk_balancer_update(b, srv_set, NSRV);
	for (size_t i = 0; i < gk_balancer_size(b); i++)
		if (gk_balancer_at(b, i)->ep.priority == 1)
			gk_balancer_at(b, i)->ejected_until_ms = 5000;
	unsigned backup = 0;
	for (int i = 0; i < 100; i++) {
		gk_backend *be = gk_balancer_pick(b, 1000, NULL, 0, NULL, 0);
		if (be && be->ep.priority == 2)
			backup++;
	}
	CHECK(backup == 100);
	gk_balancer_free(b);
}

TEST(p2c_ewma_reaches_every_endpoint_of_a_set_of_100)
{
	enum { N = 100 };
	gk_endpoint set[N];
	memset(set, 0, sizeof set);
	for (int i = 0; i < N; i++) {
		snprintf(set[i].addr, sizeof set[i].addr, "127.0.0.%d:80", i + 1);
		set[i].weight = 1;
	}
	unsigned counts[N], never = 0;
	pick_counts(GK_BALANCE_P2C_EWMA, set, N, 20000, counts);
	for (int i = 0; i < N; i++)
		never += counts[i] == 0;
	if (never)
		printf("#   %u of %d endpoints never picked\n", never, N);
	CHECK(never == 0);
}

/* Requests one at a time, each answered in 1 ms: nothing in flight at a
 * pick, every endpoint measured alike.  p2c-ewma gives each endpoint of
 * priority 1 its weight's share (within 3 points), the backup none. */
TEST(p2c_ewma_weights_give_shares_one_at_a_time)
{
	gk_balancer *b = gk_balancer_new(GK_BALANCE_P2C_EWMA);
	gk_balancer_update(b, srv_set, NSRV);
	unsigned counts[NSRV];
	count_picks(b, srv_set, NSRV, PICKS, true, counts);
	check_counts(counts, 0.03);
	gk_balancer_free(b);
}

/* least too: one at a time, nothing is in flight at a pick, and each
 * endpoint gets its weight's share (smooth weighted round robin: exact
 * within 1 point); under load, one holding many requests gets fewer. */
TEST(least_weights_give_shares_one_at_a_time_and_spare_the_loaded)
{
	gk_balancer *b = gk_balancer_new(GK_BALANCE_LEAST);
	gk_balancer_update(b, srv_set, NSRV);
	unsigned counts[NSRV];
	count_picks(b, srv_set, NSRV, PICKS, true, counts);
	check_counts(counts, 0.01);
	/* the heaviest holds 99 requests: it gets few of the next 100 */
	gk_backend *heavy = gk_balancer_at(b, 0);
	heavy->outstanding = 99;
	unsigned to_heavy = 0;
	for (unsigned i = 0; i < 100; i++)
		to_heavy +=
		    gk_balancer_pick(b, 1000, NULL, 0, NULL, 0) == heavy;
	if (to_heavy > 5)
		printf("#   the loaded one got %u of 100\n", to_heavy);
	CHECK(to_heavy <= 5);
	heavy->outstanding = 0;
	gk_balancer_free(b);
}

/* Under load, among endpoints of one weight, the slow one gets few: the
 * class draw leaves p2c-ewma's latency choice alone. */
TEST(p2c_ewma_avoids_a_slow_endpoint_of_the_same_weight)
{
	gk_balancer *b = gk_balancer_new(GK_BALANCE_P2C_EWMA);
	gk_endpoint set[3];
	memcpy(set, srv_set, sizeof set);
	set[0].weight = set[1].weight = set[2].weight = 10;
	gk_balancer_update(b, set, 3);
	unsigned slow = 0;
	for (unsigned i = 0; i < 3000; i++) {
		gk_backend *be = gk_balancer_pick(b, 1000, NULL, 0, NULL, 0);
		gk_balancer_started(be);
		bool is_slow = be == gk_balancer_at(b, 0);
		slow += is_slow;
		gk_balancer_finished(be, gk_monotonic_us(),
		    is_slow ? 100000 : 1000);
	}
	if (slow > 300)
		printf("#   the slow one got %u of 3000\n", slow);
	CHECK(slow <= 300);
	gk_balancer_free(b);
}

static const gk_endpoint *loaded;
static size_t nloaded;

static void
on_set(const gk_endpoint *set, size_t n, void *arg)
{
	(void)arg;
	gk_endpoint *copy = gk_xcalloc(n ? n : 1, sizeof *copy);
	memcpy(copy, set, n * sizeof *copy);
	free((void *)loaded);
	loaded = copy;
	nloaded = n;
}

static int
picks_main(const char *nstr, const char *file)
{
	unsigned n = (unsigned)atoi(nstr);
	char uri[4200];
	snprintf(uri, sizeof uri, "file:%s", file);
	gk_loop *loop = gk_loop_new();
	const char *why = NULL;
	gk_resolver *r = gk_resolver_new(loop, uri, NULL, on_set, NULL, &why);
	if (!r || !loaded) {
		fprintf(stderr, "test_balancer: unable to read %s: %s\n", file,
		    why ? why : "no set");
		return 1;
	}
	static const struct {
		const char *name;
		enum gk_balance how;
	} pol[] = {{"round-robin", GK_BALANCE_ROUND_ROBIN},
	    {"random", GK_BALANCE_RANDOM}};
	unsigned *counts = gk_xcalloc(nloaded ? nloaded : 1, sizeof *counts);
	for (size_t p = 0; p < 2; p++) {
		pick_counts(pol[p].how, loaded, nloaded, n, counts);
		for (size_t k = 0; k < nloaded; k++)
			printf("%s %s %u %u %u\n", pol[p].name, loaded[k].addr,
			    loaded[k].weight, loaded[k].priority, counts[k]);
	}
	free(counts);
	gk_resolver_free(r);
	free((void *)loaded);
	gk_loop_free(loop);
	return 0;
}

/* A retry's pick avoids every endpoint the request tried, under every
 * policy, while one is left; with all tried it still picks one. */
TEST(every_policy_avoids_all_the_endpoints_tried)
{
	static const enum gk_balance how[] = {GK_BALANCE_ROUND_ROBIN,
	    GK_BALANCE_RANDOM, GK_BALANCE_LEAST, GK_BALANCE_P2C_EWMA,
	    GK_BALANCE_HASH};
	for (size_t h = 0; h < sizeof how / sizeof how[0]; h++) {
		gk_balancer *b = gk_balancer_new(how[h]);
		gk_balancer_update(b, srv_set, 3);
		gk_backend *tried[2] = {gk_balancer_at(b, 0),
		    gk_balancer_at(b, 1)};
		unsigned third = 0, any = 0;
		for (int i = 0; i < 200; i++) {
			char key[16];
			int n = snprintf(key, sizeof key, "k%d", i);
			gk_backend *be = gk_balancer_pick(b, 1000, key,
			    (size_t)n, tried, 2);
			third += be == gk_balancer_at(b, 2);
			gk_backend *all[3] = {tried[0], tried[1],
			    gk_balancer_at(b, 2)};
			any += gk_balancer_pick(b, 1000, key, (size_t)n, all,
			    3) != NULL;
		}
		if (third != 200)
			printf("#   policy %zu: %u of 200 to the untried\n", h,
			    third);
		CHECK(third == 200);
		CHECK(any == 200);
		gk_balancer_free(b);
	}
}

int
main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--picks"))
		return picks_main(argv[2], argv[3]);
	RUN(round_robin_weights_within_5_percent_backup_unused);
	RUN(random_weights_within_5_points_backup_unused);
	RUN(backup_priority_is_used_when_the_first_is_unavailable);
	RUN(p2c_ewma_reaches_every_endpoint_of_a_set_of_100);
	RUN(p2c_ewma_weights_give_shares_one_at_a_time);
	RUN(p2c_ewma_avoids_a_slow_endpoint_of_the_same_weight);
	RUN(least_weights_give_shares_one_at_a_time_and_spare_the_loaded);
	RUN(every_policy_avoids_all_the_endpoints_tried);
	return UNIT_END();
}
