/* test_units.c: durations, rates, sizes, whole numbers, decimals, usage
 * errors. */
#include <math.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

TEST(durations)
{
	static const struct {
		const char *s;
		uint64_t ms;
	} ok[] = {
	    {"250ms", 250},
	    {"2s", 2000},
	    {"1.5s", 1500},
	    {"1m", 60000},
	    {"1h", 3600000},
	    {"2", 2000},
	    {"0.25", 250},
	    {"0", 0},
	    {"0s", 0},
	    {"100us", 1},
	    {"1us", 1},
	    {"1000us", 1},
	    {"1001us", 2},
	    {"1.0001ms", 2},
	    {"1m30s", 90000},
	    {"1h1m1s1ms", 3661001},
	    {"0.0000000000000000000001s", 1}, /* past 18 digits: rounds up */
	    {"1.000000000000000000000s", 1000},
	    {"18446744073709s", 18446744073709000ull},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint64_t ms = 12345;
		int r = gk_parse_duration_ms(ok[i].s, &ms);
		if (r != 0 || ms != ok[i].ms)
			printf("#   %s -> %d %llu\n", ok[i].s, r,
			       (unsigned long long)ms);
		CHECK(r == 0 && ms == ok[i].ms);
	}
	static const char *const bad[] = {"",
	                                  "ms",
	                                  "s",
	                                  "-1s",
	                                  "+1s",
	                                  "1x",
	                                  "1 s",
	                                  " 1s",
	                                  "1s ",
	                                  "1.",
	                                  ".5s",
	                                  "1..5s",
	                                  "1e3",
	                                  "1sm",
	                                  "1m30",
	                                  "2ss",
	                                  "1d",
	                                  "0x10",
	                                  "inf",
	                                  "nan",
	                                  "18446744073709551616",
	                                  "99999999999999999999s",
	                                  "18446744073710s",
	                                  "1h-1m",
	                                  NULL};
	for (int i = 0; bad[i]; i++) {
		uint64_t ms = 777;
		int r = gk_parse_duration_ms(bad[i], &ms);
		if (r != -1 || ms != 777)
			printf("#   accepted bad duration '%s'\n", bad[i]);
		CHECK(r == -1 && ms == 777);
	}
	uint64_t ms;
	CHECK(gk_parse_duration_ms(NULL, &ms) == -1);
}

TEST(rates)
{
	static const struct {
		const char *s;
		double r;
	} ok[] = {
	    {"100/s", 100}, {"6000/m", 100},   {"10/h", 10.0 / 3600},
	    {"100", 100},   {"0.5/s", 0.5},    {"1.5", 1.5},
	    {"3600/h", 1},  {"1/m", 1.0 / 60},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		double r = -1;
		CHECK(gk_parse_rate(ok[i].s, &r) == 0);
		CHECK(fabs(r - ok[i].r) < 1e-12 * ok[i].r);
	}
	static const char *const bad[] = {
	    "",      "0",    "0/s",   "0.0/m",  "-1/s",  "10/x",
	    "10/ms", "10/",  "/s",    "10/s/s", "1e3/s", "abc",
	    "10 /s", "10/S", "inf/s", "nan",    NULL};
	for (int i = 0; bad[i]; i++) {
		double r = 42;
		int ret = gk_parse_rate(bad[i], &r);
		if (ret != -1)
			printf("#   accepted bad rate '%s'\n", bad[i]);
		CHECK(ret == -1 && r == 42);
	}
}

TEST(rates_exactly)
{
	static const struct {
		const char *s;
		uint64_t num, den;
	} ok[] = {
	    {"100/s", 100, 1},       {"6000/m", 6000, 60},
	    {"0.25/m", 25, 6000},    {"0.0001/h", 1, 36000000},
	    {"1.5", 15, 10},         {"007/s", 7, 1},
	    {"1.000000000000000000", 1000000000000000000ull, 1000000000000000000ull},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		uint64_t n = 0, d = 0;
		CHECK(gk_parse_rate_exact(ok[i].s, &n, &d) == 0);
		CHECK(n == ok[i].num && d == ok[i].den);
	}
	static const char *const bad[] = {"", "0", "0.000/h", "10/x",
	    "1e3/s", "0.0000000000000000001/s", "0.000000000000000001/h",
	    "99999999999999999999/s", NULL};
	for (int i = 0; bad[i]; i++) {
		uint64_t n = 42, d = 42;
		int ret = gk_parse_rate_exact(bad[i], &n, &d);
		if (ret != -1)
			printf("#   accepted bad rate '%s'\n", bad[i]);
		CHECK(ret == -1 && n == 42 && d == 42);
	}
}

TEST(sizes)
{
	static const struct {
		const char *s;
		size_t n;
	} ok[] = {
	    {"4096", 4096},
	    {"0", 0},
	    {"64k", 65536},
	    {"64K", 65536},
	    {"64KiB", 65536},
	    {"16KB", 16384},
	    {"16kb", 16384},
	    {"1m", 1048576},
	    {"1M", 1048576},
	    {"1MiB", 1048576},
	    {"2g", 2147483648u},
	    {"1GiB", 1073741824},
	    {"1t", 1099511627776ull},
	    {"10b", 10},
	    {"10B", 10},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		size_t n = 1;
		int r = gk_parse_size(ok[i].s, &n);
		if (r != 0 || n != ok[i].n)
			printf("#   %s -> %d %zu\n", ok[i].s, r, n);
		CHECK(r == 0 && n == ok[i].n);
	}
	static const char *const bad[] = {"",
	                                  "k",
	                                  "-1",
	                                  "1.5k",
	                                  "64 k",
	                                  "64kk",
	                                  "64x",
	                                  "64KiBs",
	                                  "0x10",
	                                  "18446744073709551616",
	                                  "17179869184g",
	                                  "99999999999999999999",
	                                  " 1",
	                                  NULL};
	for (int i = 0; bad[i]; i++) {
		size_t n = 9;
		int r = gk_parse_size(bad[i], &n);
		if (r != -1)
			printf("#   accepted bad size '%s'\n", bad[i]);
		CHECK(r == -1 && n == 9);
	}
}

TEST(uints)
{
	uint64_t v = 0;
	CHECK(gk_parse_uint("0", 0, 10, &v) == 0 && v == 0);
	CHECK(gk_parse_uint("10", 0, 10, &v) == 0 && v == 10);
	CHECK(gk_parse_uint("007", 0, 10, &v) == 0 && v == 7);
	CHECK(gk_parse_uint("18446744073709551615", 0, UINT64_MAX, &v) == 0 &&
	      v == UINT64_MAX);
	v = 5;
	static const char *const bad[] = {
	    "",    "11",  "-1",  "+1",  " 1",
	    "1 ",  "1.0", "1e2", "0x1", "18446744073709551616",
	    "abc", NULL};
	for (int i = 0; bad[i]; i++)
		CHECK(gk_parse_uint(bad[i], 0, 10, &v) == -1);
	CHECK(v == 5);
	CHECK(gk_parse_uint("0", 1, 10, &v) == -1);
	CHECK(gk_parse_uint(NULL, 0, 10, &v) == -1);
}

/* Run f in a child with stderr on a pipe; its output and wait status. */
static int
in_child(void (*f)(void), char *out, size_t cap)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	fflush(stdout); /* or the child writes our buffered TAP again */
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], 2);
		f();
		_exit(0);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while (n < cap - 1 && (r = read(p[0], out + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = 0;
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

static void
usage_named(void)
{
	gk_events_init("gk-test");
	gk_usage_error("bad --rate: %s (expected N/s, N/m or N/h)", "10/x");
}

static void
usage_multiline(void)
{
	gk_events_init("gk-test");
	gk_usage_error("two\nlines");
}

TEST(decimal)
{
	/* gk_buf_adduint against printf, at every power of ten and either
	 * side of it, and the ends of the range. */
	gk_buf b = {0};
	char want[32];
	uint64_t p = 1;
	for (int k = 0; k < 20; k++, p *= 10)
		for (int d = -1; d <= 1; d++) {
			uint64_t v = p + (uint64_t)(int64_t)d;
			b.len = 0;
			gk_buf_adds(&b, "x");
			gk_buf_adduint(&b, v);
			snprintf(want, sizeof want, "x%llu", (unsigned long long)v);
			CHECK_STR(gk_buf_cstr(&b), want);
		}
	b.len = 0;
	gk_buf_adduint(&b, UINT64_MAX);
	CHECK_STR(gk_buf_cstr(&b), "18446744073709551615");
	b.len = 0;
	gk_buf_adduint(&b, 0);
	CHECK_STR(gk_buf_cstr(&b), "0");
	gk_buf_free(&b);
}

TEST(usage_error)
{
	char out[512];
	int st = in_child(usage_named, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 64);
	CHECK_STR(out, "gk-test: usage: bad --rate: 10/x (expected N/s, N/m "
	               "or N/h)\n");
	st = in_child(usage_multiline, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 64);
	CHECK_STR(out, "gk-test: usage: two lines\n");
}

int
main(void)
{
	RUN(durations);
	RUN(rates);
	RUN(rates_exactly);
	RUN(sizes);
	RUN(uints);
	RUN(decimal);
	RUN(usage_error);
	return UNIT_END();
}
