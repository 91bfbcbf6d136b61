/*
 * test_metrics.c: the metrics registry and its snapshots, read back from a
 * real pipe and checked with jansson.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

struct cap {
	int rfd, wfd;
	pthread_t th;
	char *data;
	size_t len, cap;
};

static int devnull = -1;

static void *
reader(void *arg)
{
	struct cap *c = arg;
	char buf[65536];
	ssize_t n;
	while ((n = read(c->rfd, buf, sizeof buf)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (c->len + (size_t)n > c->cap) {
			c->cap = (c->len + (size_t)n) * 2;
			c->data = realloc(c->data, c->cap);
		}
		memcpy(c->data + c->len, buf, (size_t)n);
		c->len += (size_t)n;
	}
	return NULL;
}

static void
cap_open(struct cap *c)
{
	memset(c, 0, sizeof *c);
	int fds[2];
	pipe2(fds, O_CLOEXEC);
	c->rfd = fds[0];
	c->wfd = fds[1];
	char v[16];
	snprintf(v, sizeof v, "%d", c->wfd);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-metrics");
	pthread_create(&c->th, NULL, reader, c);
}

static void
cap_close(struct cap *c)
{
	gk_events_flush();
	char v[16];
	snprintf(v, sizeof v, "%d", devnull);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-metrics");
	close(c->wfd);
	pthread_join(c->th, NULL);
	close(c->rfd);
}

/* Snapshot into a pipe; the parsed lines (all must be valid, <= 4095). */
static size_t
snapshot_lines(json_t **out, size_t max, size_t *longest)
{
	struct cap c;
	cap_open(&c);
	gk_metrics_snapshot();
	cap_close(&c);
	size_t n = 0, start = 0;
	*longest = 0;
	for (size_t i = 0; i < c.len && n < max; i++) {
		if (c.data[i] != '\n')
			continue;
		if (i - start > *longest)
			*longest = i - start;
		out[n] = json_loadb(c.data + start, i - start, 0, NULL);
		CHECK(out[n] != NULL);
		n++;
		start = i + 1;
	}
	CHECK(start == c.len);
	free(c.data);
	return n;
}

/* The family named name across the parts; series appended to *series. */
static json_t *
collect_series(json_t **lines, size_t n, const char *name, json_t **fam)
{
	json_t *all = json_array();
	*fam = NULL;
	for (size_t i = 0; i < n; i++) {
		if (!lines[i])
			continue;
		size_t k;
		json_t *f;
		json_array_foreach(json_object_get(lines[i], "metrics"), k, f)
		{
			if (strcmp(
			        json_string_value(json_object_get(f, "name")),
			        name) != 0)
				continue;
			*fam = f;
			json_array_extend(all, json_object_get(f, "series"));
		}
	}
	return all;
}

static void
free_lines(json_t **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(v[i]);
}

TEST(counters_and_gauges)
{
	gk_metric *c =
	    gk_counter_new("t_requests_total", "Requests.", "method,code");
	CHECK(c != NULL);
	CHECK(gk_counter_new("t_requests_total", "again", "method,code") == c);
	gk_series *a = gk_series_get(c, "GET", "200", (char *)0);
	gk_series *b = gk_series_get(c, "GET", "500", (char *)0);
	CHECK(a && b && a != b);
	CHECK(gk_series_get(c, "GET", "200", (char *)0) == a);
	const char *vals[] = {"GET", "500"};
	CHECK(gk_series_getv(c, vals) == b);
	gk_counter_add(a, 2);
	gk_counter_add(a, 0.5);
	gk_counter_add(a, -10); /* counters never go down */
	gk_counter_add(a, NAN);
	CHECK(gk_series_value(a) == 2.5);
	CHECK(gk_series_value(b) == 0);

	gk_metric *g = gk_gauge_new("t_inflight", "In flight.", NULL);
	gk_series *gs = gk_metric_series(g);
	CHECK(gs != NULL);
	CHECK(gk_metric_series(g) == gs);
	gk_gauge_set(gs, 10);
	gk_gauge_add(gs, -3);
	CHECK(gk_series_value(gs) == 7);
}

TEST(histogram_buckets)
{
	static const double b[] = {1, 2, 5, INFINITY};
	gk_metric *h =
	    gk_histogram_new("t_latency_seconds", "Latency.", NULL, b, 4);
	gk_series *s = gk_metric_series(h);
	double obs[] = {0.5, 1, 1.5, 3, 10, 2};
	for (size_t i = 0; i < 6; i++)
		gk_histogram_observe(s, obs[i]);
	CHECK(gk_histogram_count(s) == 6);

	gk_metric *d =
	    gk_histogram_new("t_default_seconds", NULL, "route", NULL, 0);
	gk_series *ds = gk_series_get(d, "/x", (char *)0);
	gk_histogram_observe(ds, 0.004);
	gk_histogram_observe(ds, 0.3);
	gk_histogram_observe(ds, 99);

	json_t *v[64];
	size_t longest;
	size_t n = snapshot_lines(v, 64, &longest);
	json_t *fam;
	json_t *ser = collect_series(v, n, "t_latency_seconds", &fam);
	CHECK(json_array_size(ser) == 1);
	CHECK_STR(json_string_value(json_object_get(fam, "type")), "histogram");
	CHECK_STR(json_string_value(json_object_get(fam, "help")), "Latency.");
	json_t *s0 = json_array_get(ser, 0);
	char *got = json_dumps(json_object_get(s0, "buckets"), JSON_COMPACT);
	CHECK_STR(got, "[[1,2],[2,4],[5,5],[\"+Inf\",6]]");
	free(got);
	CHECK(json_number_value(json_object_get(s0, "sum")) == 18);
	CHECK(json_integer_value(json_object_get(s0, "count")) == 6);
	CHECK(json_object_size(json_object_get(s0, "labels")) == 0);
	json_decref(ser);

	ser = collect_series(v, n, "t_default_seconds", &fam);
	CHECK_STR(json_string_value(json_object_get(fam, "help")), "");
	s0 = json_array_get(ser, 0);
	json_t *bk = json_object_get(s0, "buckets");
	CHECK(json_array_size(bk) == 12);
	static const double def[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
	                             0.5,   1,    2.5,   5,    10};
	for (size_t i = 0; i < 11; i++) {
		json_t *pair = json_array_get(bk, i);
		CHECK(json_number_value(json_array_get(pair, 0)) == def[i]);
		json_int_t want = i < 6 ? 1 : 2;
		CHECK(json_integer_value(json_array_get(pair, 1)) == want);
	}
	CHECK_STR(json_string_value(json_array_get(json_array_get(bk, 11), 0)),
	          "+Inf");
	CHECK(json_integer_value(json_array_get(json_array_get(bk, 11), 1)) ==
	      3);
	CHECK_STR(json_string_value(
	              json_object_get(json_object_get(s0, "labels"), "route")),
	          "/x");
	json_decref(ser);
	free_lines(v, n);
}

TEST(number_text)
{
	/* Bounds and values as a person (and Prometheus' le) want them. */
	gk_metric *g = gk_gauge_new("t_text", "", "k");
	gk_gauge_set(gk_series_get(g, "a", (char *)0), 0.1);
	gk_gauge_set(gk_series_get(g, "b", (char *)0), 1e-7);
	gk_gauge_set(gk_series_get(g, "c", (char *)0), NAN);
	gk_gauge_set(gk_series_get(g, "d", (char *)0), -INFINITY);
	gk_gauge_set(gk_series_get(g, "e", (char *)0), 12345678901234567890.0);
	struct cap c;
	cap_open(&c);
	gk_metrics_snapshot();
	cap_close(&c);
	gk_buf b = {0};
	gk_buf_add(&b, c.data, c.len);
	const char *t = gk_buf_cstr(&b);
	CHECK(strstr(t, "[0.005,") != NULL);
	CHECK(strstr(t, "{\"labels\":{\"k\":\"a\"},\"value\":0.1}") != NULL);
	CHECK(strstr(t, "{\"labels\":{\"k\":\"b\"},\"value\":1e-07}") != NULL);
	CHECK(strstr(t, "{\"labels\":{\"k\":\"c\"},\"value\":\"NaN\"}") !=
	      NULL);
	CHECK(strstr(t, "{\"labels\":{\"k\":\"d\"},\"value\":\"-Inf\"}") !=
	      NULL);
	CHECK(strstr(t, "{\"labels\":{\"k\":\"e\"},\"value\":1."
	                "2345678901234567e+19}") != NULL);
	gk_buf_free(&b);
	free(c.data);
}

TEST(snapshot_splitting)
{
	gk_metric *m = gk_counter_new(
	    "t_split_total", "A family with many series, split across events.",
	    "method,path,code");
	char path[64], code[8];
	for (int i = 0; i < 300; i++) {
		snprintf(path, sizeof path,
		         "/api/v1/resource/%d/with/a/long/path", i);
		snprintf(code, sizeof code, "%d", 200 + i % 5);
		gk_counter_add(gk_series_get(m, i % 2 ? "GET" : "POST", path,
		                             code, (char *)0),
		               i + 1);
	}
	static json_t *v[512];
	size_t longest;
	size_t n = snapshot_lines(v, 512, &longest);
	printf("# %zu parts, longest line %zu bytes\n", n, longest);
	CHECK(longest <= 4095);
	CHECK(n >= 8);
	json_int_t seq = json_integer_value(json_object_get(v[0], "seq"));
	CHECK(seq >= 1);
	for (size_t i = 0; i < n; i++) {
		if (!v[i])
			continue;
		CHECK_STR(json_string_value(json_object_get(v[i], "type")),
		          "metrics");
		CHECK_STR(json_string_value(json_object_get(v[i], "proc")),
		          "test-metrics");
		CHECK(json_integer_value(json_object_get(v[i], "pid")) ==
		      getpid());
		CHECK(json_integer_value(json_object_get(v[i], "seq")) == seq);
		CHECK(json_integer_value(json_object_get(v[i], "part")) ==
		      (json_int_t)i + 1);
		CHECK(json_integer_value(json_object_get(v[i], "parts")) ==
		      (json_int_t)n);
		CHECK(json_object_get(v[i], "truncated") == NULL);
		CHECK(json_is_array(json_object_get(v[i], "metrics")));
	}
	json_t *fam;
	json_t *ser = collect_series(v, n, "t_split_total", &fam);
	CHECK(json_array_size(ser) == 300);
	double sum = 0;
	size_t k;
	json_t *s;
	json_array_foreach(ser, k, s)
	{
		json_t *l = json_object_get(s, "labels");
		CHECK(json_object_size(l) == 3);
		const char *p = json_string_value(json_object_get(l, "path"));
		int idx = -1;
		CHECK(p && sscanf(p, "/api/v1/resource/%d/", &idx) == 1);
		CHECK(idx == (int)k); /* creation order, no series lost */
		CHECK(json_number_value(json_object_get(s, "value")) ==
		      idx + 1);
		sum += json_number_value(json_object_get(s, "value"));
	}
	CHECK(sum == 300 * 301 / 2);
	json_decref(ser);
	free_lines(v, n);

	/* The next snapshot has the next seq. */
	n = snapshot_lines(v, 512, &longest);
	CHECK(json_integer_value(json_object_get(v[0], "seq")) == seq + 1);
	free_lines(v, n);
}

TEST(overflow_series)
{
	gk_metric *m =
	    gk_counter_new("t_overflow_total", "Bounded.", "id,kind");
	char id[16];
	gk_series *first = NULL;
	for (int i = 0; i < GK_METRIC_MAX_SERIES + 5; i++) {
		snprintf(id, sizeof id, "%d", i);
		gk_series *s = gk_series_get(m, id, "x", (char *)0);
		if (!i)
			first = s;
		gk_counter_add(s, 1);
	}
	/* Existing series still found after the bound. */
	CHECK(gk_series_get(m, "0", "x", (char *)0) == first);
	gk_series *o1 = gk_series_get(m, "new1", "x", (char *)0);
	gk_series *o2 = gk_series_get(m, "new2", "y", (char *)0);
	CHECK(o1 == o2);
	CHECK(gk_series_value(o1) == 5);

	static json_t *v[512];
	size_t longest;
	size_t n = snapshot_lines(v, 512, &longest);
	CHECK(longest <= 4095);
	json_t *fam;
	json_t *ser = collect_series(v, n, "t_overflow_total", &fam);
	CHECK(json_array_size(ser) == GK_METRIC_MAX_SERIES + 1);
	json_t *last = json_array_get(ser, GK_METRIC_MAX_SERIES);
	json_t *l = json_object_get(last, "labels");
	CHECK_STR(json_string_value(json_object_get(l, "id")), "_overflow");
	CHECK_STR(json_string_value(json_object_get(l, "kind")), "_overflow");
	CHECK(json_number_value(json_object_get(last, "value")) == 5);
	json_decref(ser);

	ser = collect_series(v, n, "gk_metrics_series_dropped_total", &fam);
	double dropped = -1;
	size_t k;
	json_t *s;
	json_array_foreach(ser, k, s)
	{
		const char *mn = json_string_value(
		    json_object_get(json_object_get(s, "labels"), "metric"));
		if (mn && !strcmp(mn, "t_overflow_total"))
			dropped =
			    json_number_value(json_object_get(s, "value"));
	}
	CHECK(dropped == 7); /* 5 in the loop, new1 and new2 */
	json_decref(ser);
	free_lines(v, n);
}

static double
gauge_in(json_t **v, size_t n, const char *name, const char *type)
{
	json_t *fam;
	json_t *ser = collect_series(v, n, name, &fam);
	CHECK(fam != NULL);
	CHECK(json_array_size(ser) == 1);
	if (fam)
		CHECK_STR(json_string_value(json_object_get(fam, "type")),
		          type);
	double d =
	    json_number_value(json_object_get(json_array_get(ser, 0), "value"));
	json_decref(ser);
	return d;
}

TEST(process_metrics)
{
	/* Burn a little CPU so the counter is not zero. */
	volatile double x = 0;
	for (int i = 0; i < 20000000; i++)
		x += i * 0.5;
	static json_t *v[512];
	size_t longest;
	size_t n = snapshot_lines(v, 512, &longest);
	double cpu = gauge_in(v, n, "process_cpu_seconds_total", "counter");
	double rss = gauge_in(v, n, "process_resident_memory_bytes", "gauge");
	double fds = gauge_in(v, n, "process_open_fds", "gauge");
	double start = gauge_in(v, n, "process_start_time_seconds", "gauge");
	printf("# cpu %g rss %g fds %g start %.3f\n", cpu, rss, fds, start);
	CHECK(cpu > 0 && cpu < 600);
	CHECK(rss > 512 * 1024 && rss < 4e9);
	/* What is open now, the two ends of the snapshot's pipe, and the
	 * event stream's own non-blocking open of its write end. */
	int expect = 3;
	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			expect++;
	CHECK(fds == expect);
	double now = (double)time(NULL);
	CHECK(start <= now + 1 && start > now - 600);
	free_lines(v, n);
}

struct worker {
	gk_metric *c, *h;
	int id;
};

static void *
work(void *arg)
{
	struct worker *w = arg;
	char label[16];
	for (int i = 0; i < 100000; i++) {
		snprintf(label, sizeof label, "t%d", i % 50);
		gk_counter_add(gk_series_get(w->c, label, (char *)0), 1);
		gk_histogram_observe(gk_metric_series(w->h), 0.001 * (i % 10));
	}
	return NULL;
}

TEST(threads)
{
	gk_metric *c = gk_counter_new("t_threads_total", "", "slot");
	gk_metric *h = gk_histogram_new("t_threads_seconds", "", NULL, NULL, 0);
	pthread_t t[4];
	struct worker w[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){c, h, i};
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	double total = 0;
	char label[16];
	for (int i = 0; i < 50; i++) {
		snprintf(label, sizeof label, "t%d", i);
		double v = gk_series_value(gk_series_get(c, label, (char *)0));
		CHECK(v == 4 * 100000 / 50);
		total += v;
	}
	CHECK(total == 400000);
	CHECK(gk_histogram_count(gk_metric_series(h)) == 400000);
	static json_t *v[512];
	size_t longest;
	size_t n = snapshot_lines(v, 512, &longest);
	json_t *fam;
	json_t *ser = collect_series(v, n, "t_threads_total", &fam);
	CHECK(json_array_size(ser) == 50); /* each created once */
	json_decref(ser);
	free_lines(v, n);
}

TEST(text_rendering)
{
	gk_metric *c = gk_counter_new("t_text_total", "", "method");
	gk_counter_add(gk_series_get(c, "GET", (char *)0), 3);
	setenv("GK_EVENTS_FORMAT", "text", 1);
	struct cap cp;
	cap_open(&cp);
	gk_metrics_snapshot();
	cap_close(&cp);
	unsetenv("GK_EVENTS_FORMAT");
	gk_buf b = {0};
	gk_buf_add(&b, cp.data, cp.len);
	const char *t = gk_buf_cstr(&b);
	CHECK(strstr(t, " METRICS test-metrics seq=") != NULL);
	CHECK(strstr(t, " t_text_total{method=GET}=3") != NULL);
	CHECK(
	    strstr(t, " t_latency_seconds_count=6 t_latency_seconds_sum=18") !=
	    NULL);
	CHECK(strstr(t, "{\"") == NULL);
	gk_buf_free(&b);
	free(cp.data);
}

static int
child_status(void (*f)(void), char *out, size_t cap)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	fflush(stdout); /* or the child writes our buffered TAP again */
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		char v[16];
		snprintf(v, sizeof v, "%d", p[1]);
		setenv("GK_EVENTS_FD", v, 1);
		gk_events_init("child");
		f();
		exit(0);
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
type_clash(void)
{
	gk_counter_new("t_clash", "", NULL);
	gk_gauge_new("t_clash", "", NULL);
}

static void
bad_name(void)
{
	gk_counter_new("2bad-name", "", NULL);
}

static void
wrong_arity(void)
{
	gk_metric *m = gk_counter_new("t_arity_total", "", "a,b");
	gk_series_get(m, "only-one", (char *)0);
}

/* A series longer than an event line could only be written cut, its
 * buckets lost ("metrics" left out of the part): refused up front. */
static void
too_many_buckets(void)
{
	double b[400];
	for (int i = 0; i < 400; i++)
		b[i] = 0.001 * (i + 1);
	gk_histogram_new("t_wide_seconds", "", NULL, b, 400);
}

TEST(programming_errors)
{
	char out[4096];
	void (*fs[])(void) = {type_clash, bad_name, wrong_arity,
	                      too_many_buckets};
	for (int i = 0; i < 4; i++) {
		int st = child_status(fs[i], out, sizeof out);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == GK_EXIT_SOFTWARE);
		json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
		CHECK(o != NULL);
		CHECK_STR(json_string_value(json_object_get(o, "level")),
		          "fatal");
		printf("# %s\n", json_string_value(json_object_get(o, "msg")));
		json_decref(o);
	}
}

/*
 * Label values are written as JSON strings, where bytes that are not UTF-8
 * become U+FFFD: two values that differ only there must be one series, or a
 * family holds two series with the same labels (Prometheus rejects the
 * whole scrape for a duplicate series).
 */
TEST(label_values_not_utf8_are_one_series)
{
	/* The widest histogram allowed fits a line whole. */
	double wb[64];
	for (int i = 0; i < 64; i++)
		wb[i] = -2.2250738585072014e-308 * (64 - i); /* widest text */
	gk_series *w = gk_metric_series(
	    gk_histogram_new("t_widest_seconds", "", NULL, wb, 64));
	for (int i = 0; i < 64; i++)
		gk_histogram_observe(w, wb[i]);
	gk_metric *c = gk_counter_new("t_bad_utf8_total", "Bad.", "path");
	gk_series *a = gk_series_get(c, "/x\xff", (char *)0);
	gk_series *b = gk_series_get(c, "/x\xfe", (char *)0);
	gk_series *d = gk_series_get(c, "/x\xef\xbf\xbd", (char *)0);
	CHECK(a && a == b && a == d);
	CHECK(gk_series_get(c, "/x\xff", (char *)0) == a);
	gk_counter_add(a, 1);
	gk_counter_add(b, 2);
	static json_t *v[512];
	size_t longest;
	size_t n = snapshot_lines(v, 512, &longest);
	json_t *fam;
	for (size_t i = 0; i < n; i++)
		CHECK(v[i] && !json_object_get(v[i], "truncated"));
	json_t *wide = collect_series(v, n, "t_widest_seconds", &fam);
	CHECK(json_array_size(wide) == 1);
	json_decref(wide);
	json_t *all = collect_series(v, n, "t_bad_utf8_total", &fam);
	CHECK(json_array_size(all) == 1);
	json_t *s0 = json_array_get(all, 0);
	CHECK_STR(json_string_value(json_object_get(
	              json_object_get(s0, "labels"), "path")),
	          "/x\xef\xbf\xbd");
	CHECK(json_number_value(json_object_get(s0, "value")) == 3);
	json_decref(all);
	free_lines(v, n);
}

int
main(void)
{
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	RUN(counters_and_gauges);
	RUN(histogram_buckets);
	RUN(number_text);
	RUN(snapshot_splitting);
	RUN(overflow_series);
	RUN(process_metrics);
	RUN(threads);
	RUN(text_rendering);
	RUN(programming_errors);
	RUN(label_values_not_utf8_are_one_series);
	return UNIT_END();
}
