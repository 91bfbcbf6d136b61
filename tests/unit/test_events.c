/*
 * test_events.c: the event stream through real fds.  Each test points
 * GK_EVENTS_FD at a pipe (or a SOCK_SEQPACKET socket, which keeps every
 * write(2) as one record, so write boundaries can be checked), reads back
 * what was written, and validates each line with jansson.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

#define MAX_RECORDS 100000

/* A reader thread that keeps everything and the size of each read. */
struct cap {
	int rfd, wfd;
	bool seqpacket;
	pthread_t th;
	pthread_mutex_t mu;
	char *data;
	size_t len, cap;
	size_t *rec;
	size_t nrec;
	bool paused; /* start without reading (to fill the pipe) */
};

static int devnull = -1;

static void *
reader(void *arg)
{
	struct cap *c = arg;
	char buf[65536];
	for (;;) {
		ssize_t n = c->seqpacket ? recv(c->rfd, buf, sizeof buf, 0)
		                         : read(c->rfd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		pthread_mutex_lock(&c->mu);
		if (c->len + (size_t)n > c->cap) {
			c->cap = (c->len + (size_t)n) * 2;
			c->data = realloc(c->data, c->cap);
		}
		memcpy(c->data + c->len, buf, (size_t)n);
		c->len += (size_t)n;
		if (c->nrec < MAX_RECORDS)
			c->rec[c->nrec++] = (size_t)n;
		pthread_mutex_unlock(&c->mu);
	}
	return NULL;
}

static void
cap_reader_start(struct cap *c)
{
	pthread_create(&c->th, NULL, reader, c);
}

/* Point the event stream at a new pipe or seqpacket socket. */
static void
cap_open(struct cap *c, bool seqpacket, bool start_reader)
{
	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	c->rec = calloc(MAX_RECORDS, sizeof *c->rec);
	c->seqpacket = seqpacket;
	int fds[2];
	if (seqpacket)
		socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
	else
		pipe2(fds, O_CLOEXEC);
	c->rfd = fds[0];
	c->wfd = fds[1];
	char v[16];
	snprintf(v, sizeof v, "%d", c->wfd);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events");
	if (start_reader)
		cap_reader_start(c);
}

/* Events to /dev/null again, as the next test expects them. */
static void
events_to_devnull(void)
{
	char v[16];
	snprintf(v, sizeof v, "%d", devnull);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events");
}

/* Flush, move the events to /dev/null, wait for the reader's EOF. */
static void
cap_close(struct cap *c)
{
	gk_events_flush();
	events_to_devnull();
	close(c->wfd);
	pthread_join(c->th, NULL);
	close(c->rfd);
}

static void
cap_free(struct cap *c)
{
	free(c->data);
	free(c->rec);
}

/* The lines of what was read, each parsed; NULL where invalid. */
static size_t
cap_lines(struct cap *c, json_t **out, size_t max)
{
	size_t n = 0, start = 0;
	for (size_t i = 0; i < c->len && n < max; i++) {
		if (c->data[i] != '\n')
			continue;
		json_error_t e;
		out[n] = json_loadb(c->data + start, i - start, 0, &e);
		if (!out[n])
			printf("#   invalid line: %.*s (%s)\n",
			       (int)(i - start > 200 ? 200 : i - start),
			       c->data + start, e.text);
		n++;
		start = i + 1;
	}
	return n;
}

static void
free_lines(json_t **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(v[i]);
}

static const char *
sget(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void
clear_env(void)
{
	unsetenv("GK_LOG_LEVEL");
	unsetenv("GK_SERVICE");
	unsetenv("GK_EVENTS_FORMAT");
	gk_events_set_batching(false);
}

TEST(log_event_shape)
{
	clear_env();
	setenv("GK_SERVICE", "orders", 1);
	struct cap c;
	cap_open(&c, false, true);
	gk_log(GK_WARN, "rate limited", "key=10.0.0.7", "limit=200",
	       "ratio=-1.5e3", "n=null", "t=true", "f=false", "bare",
	       "s=hello world", "big=12345678901234567890", "lead=01",
	       "trail=1.", "plus=+1", "hex=0x10", "empty=", "huge=1e999",
	       "eq=a=b", "msg=x", "ts=y", "pid=3", "svc=z");
	cap_close(&c);
	json_t *v[4];
	size_t n = cap_lines(&c, v, 4);
	CHECK(n == 1);
	json_t *o = v[0];
	CHECK(o != NULL);
	if (!o)
		goto out;
	/* The documented member order, and the common members. */
	CHECK(!strncmp(c.data, "{\"ts\":\"", 7));
	CHECK(strstr(c.data, "\"type\":\"log\",\"level\":\"warn\",\"proc\":"
	                     "\"test-events\",\"pid\":") != NULL);
	const char *ts = sget(o, "ts");
	CHECK(ts && strlen(ts) == 27 && ts[10] == 'T' && ts[19] == '.' &&
	      ts[26] == 'Z');
	if (ts) {
		struct tm tm = {0};
		CHECK(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) == ts + 19);
		time_t t = timegm(&tm);
		CHECK(llabs((long long)(t - time(NULL))) < 5);
	}
	CHECK_STR(sget(o, "type"), "log");
	CHECK_STR(sget(o, "level"), "warn");
	CHECK_STR(sget(o, "proc"), "test-events");
	CHECK(json_integer_value(json_object_get(o, "pid")) == getpid());
	CHECK_STR(sget(o, "svc"), "orders");
	CHECK_STR(sget(o, "msg"), "rate limited");
	CHECK_STR(sget(o, "key"), "10.0.0.7");
	CHECK(json_integer_value(json_object_get(o, "limit")) == 200);
	CHECK(json_real_value(json_object_get(o, "ratio")) == -1500.0);
	CHECK(json_is_null(json_object_get(o, "n")));
	CHECK(json_is_true(json_object_get(o, "t")));
	CHECK(json_is_false(json_object_get(o, "f")));
	CHECK(json_is_true(json_object_get(o, "bare")));
	CHECK_STR(sget(o, "s"), "hello world");
	CHECK_STR(sget(o, "big"), "12345678901234567890");
	CHECK_STR(sget(o, "lead"), "01");
	CHECK_STR(sget(o, "trail"), "1.");
	CHECK_STR(sget(o, "plus"), "+1");
	CHECK_STR(sget(o, "hex"), "0x10");
	CHECK_STR(sget(o, "empty"), "");
	CHECK_STR(sget(o, "huge"), "1e999");
	CHECK_STR(sget(o, "eq"), "a=b");
	/* Reserved names are kept apart, never duplicated. */
	CHECK_STR(sget(o, "field_msg"), "x");
	CHECK_STR(sget(o, "field_ts"), "y");
	CHECK(json_integer_value(json_object_get(o, "field_pid")) == 3);
	CHECK_STR(sget(o, "field_svc"), "z");
	CHECK(json_object_get(o, "truncated") == NULL);
out:
	free_lines(v, n);
	cap_free(&c);
}

TEST(svc_absent_and_trace)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
	gk_log_trace(GK_INFO, "4bf92f3577b34da6", "handled", "trace_id=other",
	             (char *)0);
	gk_log_trace(GK_INFO, NULL, "no trace", "trace_id=mine", (char *)0);
	gk_logf(GK_ERROR, "failed %d times: %s", 3, "boom");
	cap_close(&c);
	json_t *v[4];
	size_t n = cap_lines(&c, v, 4);
	CHECK(n == 3);
	if (n == 3 && v[0] && v[1] && v[2]) {
		CHECK(json_object_get(v[0], "svc") == NULL);
		CHECK_STR(sget(v[0], "trace_id"), "4bf92f3577b34da6");
		CHECK_STR(sget(v[0], "field_trace_id"), "other");
		CHECK_STR(sget(v[1], "trace_id"), "mine");
		CHECK_STR(sget(v[2], "level"), "error");
		CHECK_STR(sget(v[2], "msg"), "failed 3 times: boom");
	}
	free_lines(v, n);
	cap_free(&c);
}

TEST(level_filtering)
{
	clear_env();
	CHECK(gk_level_parse("debug") == GK_DEBUG);
	CHECK(gk_level_parse("WARN") == GK_WARN);
	CHECK(gk_level_parse("warning") == GK_WARN);
	CHECK(gk_level_parse("fatal") == GK_FATAL);
	CHECK(gk_level_parse("loud") == -1);
	CHECK(gk_level_parse(NULL) == -1);
	CHECK_STR(gk_level_name(GK_ERROR), "error");
	CHECK_STR(gk_level_name(GK_INFO), "info");

	static const struct {
		const char *env;
		int lines; /* of debug, info, warn, error */
		bool debug;
	} cases[] = {
	    {"debug", 4, true},      {"info", 3, false},  {"warn", 2, false},
	    {"error", 1, false},     {"fatal", 0, false}, {NULL, 3, false},
	    {"bogus", 3 + 1, false}, /* + the warning about it */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (cases[i].env)
			setenv("GK_LOG_LEVEL", cases[i].env, 1);
		else
			unsetenv("GK_LOG_LEVEL");
		struct cap c;
		cap_open(&c, false, true);
		CHECK(gk_log_enabled(GK_FATAL));
		CHECK(gk_log_enabled(GK_DEBUG) == cases[i].debug);
		gk_log(GK_DEBUG, "d");
		gk_log(GK_INFO, "i");
		gk_log(GK_WARN, "w");
		gk_log(GK_ERROR, "e");
		cap_close(&c);
		json_t *v[8];
		size_t n = cap_lines(&c, v, 8);
		CHECK(n == (size_t)cases[i].lines);
		for (size_t k = 0; k < n; k++)
			CHECK(v[k] != NULL);
		if (cases[i].env && !strcmp(cases[i].env, "bogus") && n &&
		    v[0]) {
			CHECK_STR(sget(v[0], "msg"),
			          "bad environment variable");
			CHECK_STR(sget(v[0], "var"), "GK_LOG_LEVEL");
			CHECK_STR(sget(v[0], "value"), "bogus");
		}
		free_lines(v, n);
		cap_free(&c);
	}
	unsetenv("GK_LOG_LEVEL");
}

/* Valid, within 4095 bytes, truncated:true; returns the parsed line. */
static json_t *
one_truncated_line(struct cap *c)
{
	json_t *v[2] = {0};
	size_t n = cap_lines(c, v, 2);
	CHECK(n == 1 && v[0] != NULL);
	CHECK(c->len <= 4096 && c->len > 3000 && c->data[c->len - 1] == '\n');
	CHECK(memchr(c->data, '\n', c->len - 1) == NULL);
	if (n != 1 || !v[0]) {
		free_lines(v, n);
		return NULL;
	}
	CHECK(json_is_true(json_object_get(v[0], "truncated")));
	return v[0];
}

TEST(truncation)
{
	clear_env();
	setenv("GK_SERVICE", "orders", 1);
	/* Plain ASCII. */
	char *msg = malloc(10241);
	for (int i = 0; i < 10240; i++)
		msg[i] = (char)('a' + i % 26);
	msg[10240] = 0;
	struct cap c;
	cap_open(&c, false, true);
	gk_log(GK_ERROR, msg, "key=short");
	cap_close(&c);
	json_t *o = one_truncated_line(&c);
	if (o) {
		const char *m = sget(o, "msg");
		CHECK(m && strlen(m) > 3000 && !strncmp(m, msg, strlen(m) - 3));
		CHECK(m && !strcmp(m + strlen(m) - 3, "\xe2\x80\xa6"));
		CHECK_STR(sget(o, "key"), "short");
		CHECK_STR(sget(o, "svc"), "orders");
		CHECK_STR(sget(o, "level"), "error");
		json_decref(o);
	}
	cap_free(&c);

	/*
	 * Escapes, multi-byte characters and surrogate pairs everywhere, at
	 * every alignment, so a careless cut lands inside one: jansson
	 * rejects a broken escape, UTF-8 sequence or lone surrogate.
	 */
	static const char *const pieces[] = {"\"",
	                                     "\\",
	                                     "\n",
	                                     "\x01",
	                                     "\xc3\xa9",
	                                     "\xe2\x82\xac",
	                                     "\xf0\x9f\x98\x80",
	                                     "x",
	                                     "\x1b"};
	for (int shift = 0; shift < 12; shift++) {
		gk_buf b = {0};
		for (int i = 0; i < shift; i++)
			gk_buf_addc(&b, 'y');
		for (int i = 0; b.len < 10240; i++)
			gk_buf_adds(&b, pieces[(i * 7 + shift) % 9]);
		gk_buf f = {0};
		gk_buf_adds(&f, "detail=");
		gk_buf_add(&f, b.data, 5000);
		cap_open(&c, false, true);
		gk_log(GK_WARN, gk_buf_cstr(&b), gk_buf_cstr(&f), "n=5");
		cap_close(&c);
		o = one_truncated_line(&c);
		if (o) {
			CHECK(json_integer_value(json_object_get(o, "n")) == 5);
			CHECK(json_is_string(json_object_get(o, "detail")));
			json_decref(o);
		}
		cap_free(&c);
		gk_buf_free(&b);
		gk_buf_free(&f);
	}

	/* Escapes that gk_jw_raw passed through: surrogate pairs, \u00e9. */
	for (int shift = 0; shift < 12; shift++) {
		gk_buf b = {0};
		gk_buf_addc(&b, '"');
		for (int i = 0; i < shift; i++)
			gk_buf_addc(&b, 'z');
		for (int i = 0; i < 800; i++)
			gk_buf_adds(&b,
			            i % 3 ? "\\ud83d\\ude00" : "\\u00e9\\t");
		gk_buf_addc(&b, '"');
		cap_open(&c, false, true);
		gk_jw *w = gk_event_begin("span");
		gk_jw_key(w, "name");
		gk_jw_raw(w, b.data, b.len);
		gk_event_end();
		cap_close(&c);
		o = one_truncated_line(&c);
		json_decref(o);
		cap_free(&c);
		gk_buf_free(&b);
	}

	/* Many members and no long string: the first members that fit. */
	cap_open(&c, false, true);
	gk_jw *w = gk_event_begin("access");
	for (int i = 0; i < 600; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		gk_jw_key(w, k);
		gk_jw_int(w, i);
	}
	gk_event_end();
	cap_close(&c);
	o = one_truncated_line(&c);
	if (o) {
		/* The first members, in order, as many as fit. */
		CHECK_STR(sget(o, "type"), "access");
		CHECK(json_integer_value(json_object_get(o, "k0")) == 0);
		CHECK(json_integer_value(json_object_get(o, "k200")) == 200);
		CHECK(json_object_get(o, "k599") == NULL);
		json_decref(o);
	}
	cap_free(&c);
	free(msg);
	unsetenv("GK_SERVICE");
}

/* Every double is written as a JSON number that reads back as itself;
 * whole microseconds (the access event's durations) as plain decimals. */
TEST(double_round_trip)
{
	static const struct {
		double v;
		const char *want;
	} plain[] = {{0.000295, "0.000295"},
	             {0.1, "0.1"},
	             {-2.5, "-2.5"},
	             {1.000001, "1.000001"},
	             {123.45, "123.45"},
	             {3e-6, "0.000003"},
	             {7, "7"},
	             {0.0, "0"}};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
		gk_buf b = {0};
		gk_jw w;
		gk_jw_init(&w, &b);
		gk_jw_double(&w, plain[i].v);
		CHECK_STR(gk_buf_cstr(&b), plain[i].want);
		gk_buf_free(&b);
	}
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double v;
		switch (i % 4) {
		case 0:
			v = (double)(x % 100000000) / 1e6;
			break; /* durations */
		case 1: v = (double)(x >> 11) * 0x1.0p-53 * 1000; break;
		case 2: v = (double)(int64_t)(x % 2000000) / 1e7 - 0.1; break;
		default: memcpy(&v, &x, sizeof v); break; /* any bits */
		}
		if (!isfinite(v))
			continue;
		gk_buf b = {0};
		gk_jw w;
		gk_jw_init(&w, &b);
		gk_jw_double(&w, v);
		gk_wire_error e;
		const char *s = gk_buf_cstr(&b);
		if (strtod(s, NULL) != v ||
		    gk_json_validate(s, b.len, &e) < 0) {
			printf("#   %.17g written as %s\n", v, s);
			CHECK(0);
			gk_buf_free(&b);
			return;
		}
		gk_buf_free(&b);
	}
}

TEST(structured_event)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
	gk_jw *w = gk_event_begin("span");
	gk_jw_key(w, "trace_id");
	gk_jw_cstr(w, "abc");
	gk_jw_key(w, "duration_us");
	gk_jw_int(w, 1234);
	gk_jw_key(w, "attrs");
	gk_jw_object(w);
	gk_jw_key(w, "http.method");
	gk_jw_cstr(w, "GET");
	gk_jw_object_end(w);
	gk_event_end();
	cap_close(&c);
	json_t *v[2];
	size_t n = cap_lines(&c, v, 2);
	CHECK(n == 1);
	if (n == 1 && v[0]) {
		CHECK_STR(sget(v[0], "type"), "span");
		CHECK(json_object_get(v[0], "level") == NULL);
		CHECK_STR(sget(v[0], "proc"), "test-events");
		CHECK(json_integer_value(
		          json_object_get(v[0], "duration_us")) == 1234);
		CHECK_STR(sget(json_object_get(v[0], "attrs"), "http.method"),
		          "GET");
	}
	free_lines(v, n);
	cap_free(&c);

	/* A type that needs quoting (a plugin's own) is quoted; the usual
	 * types are copied with the timestamp in one piece. */
	cap_open(&c, false, true);
	gk_event_begin("my \"kind\"");
	gk_event_end();
	gk_event_begin("a_type_of_thirty_nine_characters_123456");
	gk_event_end();
	cap_close(&c);
	n = cap_lines(&c, v, 2);
	CHECK(n == 2);
	if (n == 2 && v[0] && v[1]) {
		CHECK_STR(sget(v[0], "type"), "my \"kind\"");
		CHECK_STR(sget(v[1], "type"),
		          "a_type_of_thirty_nine_characters_123456");
		CHECK(strlen(sget(v[0], "ts")) == 27);
		CHECK(strlen(sget(v[1], "ts")) == 27);
		CHECK_STR(sget(v[1], "proc"), "test-events");
	}
	free_lines(v, n);
	cap_free(&c);
}

/*
 * gk_event_end closes what the caller left open: an array with "]", not
 * "}", and a key left without a value gets null, so the line is JSON.
 */
TEST(event_end_closes_what_is_open)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
	gk_jw *w = gk_event_begin("span");
	gk_jw_key(w, "attrs");
	gk_jw_object(w);
	gk_jw_key(w, "list");
	gk_jw_array(w);
	gk_jw_cstr(w, "a]\"[{");
	gk_jw_object(w);
	gk_jw_key(w, "k");
	gk_event_end();
	cap_close(&c);
	json_t *v[2];
	size_t n = cap_lines(&c, v, 2);
	CHECK(n == 1 && v[0]);
	if (n == 1 && v[0]) {
		json_t *l =
		    json_object_get(json_object_get(v[0], "attrs"), "list");
		CHECK(json_is_array(l) && json_array_size(l) == 2);
		CHECK_STR(json_string_value(json_array_get(l, 0)), "a]\"[{");
		CHECK(json_is_null(json_object_get(json_array_get(l, 1), "k")));
	}
	free_lines(v, n);
	cap_free(&c);
}

/*
 * Every record (one write(2)) is whole lines, at most 4096 bytes, and as
 * full as whole lines allow.
 */
static void
check_records(struct cap *c, size_t nlines, bool packed)
{
	size_t off = 0, lines = 0, loose = 0;
	for (size_t r = 0; r < c->nrec; r++) {
		size_t n = c->rec[r];
		const char *p = c->data + off;
		CHECK(n <= 4096);
		CHECK(n > 0 && p[n - 1] == '\n');
		size_t start = 0;
		for (size_t i = 0; i < n; i++) {
			if (p[i] != '\n')
				continue;
			json_t *o = json_loadb(p + start, i - start, 0, NULL);
			CHECK(o != NULL);
			json_decref(o);
			lines++;
			start = i + 1;
		}
		if (packed && r + 1 < c->nrec && off + n < c->len) {
			/* The next line did not fit in this write. */
			const char *q = memchr(p + n, '\n', c->len - off - n);
			size_t next = q ? (size_t)(q - (p + n)) + 1 : 0;
			if (n + next <= 4096)
				loose++;
		}
		off += n;
	}
	CHECK(loose == 0);
	CHECK(off == c->len);
	CHECK(lines == nlines);
}

TEST(batching_whole_lines)
{
	clear_env();
	struct cap c;
	cap_open(&c, true, false);
	gk_events_set_batching(true);
	for (int i = 0; i < 300; i++) {
		char f[128];
		snprintf(f, sizeof f, "pad=%.*s", i % 97,
		         "0123456789abcdefghij"
		         "0123456789abcdefghij0123456789abcdefghij0123456789abc"
		         "defghij"
		         "0123456789abcdefghij");
		char k[32];
		snprintf(k, sizeof k, "i=%d", i);
		gk_log(GK_INFO, "batched", k, f);
	}
	/* Nothing written before the flush. */
	char b[16];
	CHECK(recv(c.rfd, b, sizeof b, MSG_DONTWAIT) == -1 && errno == EAGAIN);
	gk_events_flush();
	gk_events_set_batching(false);
	cap_reader_start(&c);
	cap_close(&c);
	check_records(&c, 300, true);
	CHECK(c.nrec >= 8 && c.nrec < 30);
	cap_free(&c);

	/* Unbatched: one write per event. */
	cap_open(&c, true, true);
	for (int i = 0; i < 50; i++)
		gk_log(GK_INFO, "unbatched");
	cap_close(&c);
	check_records(&c, 50, false);
	CHECK(c.nrec == 50);
	cap_free(&c);
}

TEST(batching_flushes_past_64k)
{
	clear_env();
	struct cap c;
	cap_open(&c, true, true);
	gk_events_set_batching(true);
	size_t queued = 0;
	int i = 0;
	for (; queued < 100 * 1024; i++) {
		gk_log(GK_INFO, "filling the queue while batching", "i=1234");
		queued += 140;
	}
	struct timespec ts = {0, 50 * 1000 * 1000};
	nanosleep(&ts, NULL);
	pthread_mutex_lock(&c.mu);
	size_t got = c.len;
	pthread_mutex_unlock(&c.mu);
	CHECK(got >= 64 * 1024 && got < 100 * 1024);
	gk_events_set_batching(false);
	cap_close(&c);
	check_records(&c, (size_t)i, false);
	cap_free(&c);
}

TEST(drops_when_stuck)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, false);
	fcntl(c.wfd, F_SETFL, O_NONBLOCK);
	fcntl(c.wfd, F_SETPIPE_SZ, 4096);
	gk_events_set_batching(true);
	gk_series *m_dropped = gk_metric_series(
	    gk_counter_new("gk_events_dropped_total", NULL, NULL));
	double dropped0 = gk_series_value(m_dropped);
	const int total = 20000;
	for (int i = 0; i < total; i++)
		gk_log(GK_INFO, "stuck reader",
		       "pad=0123456789012345678901234567");
	cap_reader_start(&c);
	/* Drain: each flush writes what the pipe takes now. */
	bool notice = false;
	for (int tries = 0; tries < 20000 && !notice; tries++) {
		gk_events_flush();
		pthread_mutex_lock(&c.mu);
		notice = c.len && memmem(c.data, c.len, "events dropped", 14);
		pthread_mutex_unlock(&c.mu);
		struct timespec ts = {0, 200 * 1000};
		nanosleep(&ts, NULL);
	}
	CHECK(notice);
	for (int tries = 0; tries < 200; tries++) {
		gk_events_flush();
		struct timespec ts = {0, 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	gk_events_set_batching(false);
	cap_close(&c);
	static json_t *v[30000];
	size_t n = cap_lines(&c, v, 30000);
	long delivered = 0, dropped = 0, notices = 0;
	for (size_t i = 0; i < n; i++) {
		CHECK(v[i] != NULL);
		if (!v[i])
			continue;
		const char *m = sget(v[i], "msg");
		if (m && !strcmp(m, "stuck reader"))
			delivered++;
		else if (m && !strcmp(m, "events dropped")) {
			notices++;
			CHECK_STR(sget(v[i], "level"), "warn");
			dropped += (long)json_integer_value(
			    json_object_get(v[i], "count"));
		}
	}
	printf("# delivered %ld dropped %ld notices %ld\n", delivered, dropped,
	       notices);
	CHECK(notices >= 1);
	CHECK(dropped > 0);
	CHECK(delivered + dropped == total);
	/* ... and counted where a scraper sees them. */
	CHECK(gk_series_value(m_dropped) - dropped0 == (double)dropped);
	/* The queue is bounded at 1 MiB. */
	CHECK(delivered * 130 < 1100 * 1024);
	free_lines(v, n);
	cap_free(&c);
}

TEST(reader_gone)
{
	clear_env();
	int p[2];
	CHECK(pipe(p) == 0);
	close(p[0]);
	char v[16];
	snprintf(v, sizeof v, "%d", p[1]);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events");
	double lost0 = gk_series_value(gk_metric_series(
	    gk_counter_new("gk_events_lost_total", NULL, NULL)));
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	CHECK(sa.sa_handler == SIG_DFL); /* so SIGPIPE would kill us */
	for (int i = 0; i < 10; i++)
		gk_log(GK_ERROR, "nobody reads this");
	gk_events_set_batching(true);
	gk_log(GK_ERROR, "nor this");
	gk_events_flush();
	gk_events_set_batching(false);
	sigset_t pend;
	sigpending(&pend);
	CHECK(!sigismember(&pend, SIGPIPE));
	/* Each of them counted. */
	CHECK(gk_series_value(gk_metric_series(
	          gk_counter_new("gk_events_lost_total", NULL, NULL))) -
	          lost0 ==
	      11);
	/* Still alive, and a new fd works again. */
	struct cap c;
	cap_open(&c, false, true);
	gk_log(GK_INFO, "back");
	cap_close(&c);
	CHECK(c.len > 0 && strstr(c.data, "\"back\""));
	cap_free(&c);
	close(p[1]);
}

/* Raw JSON given with whitespace other than spaces (pretty-printed, as a
 * handler may write it) stays one line: a newline would end the event. */
TEST(raw_json_stays_one_line)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
	gk_jw *w = gk_event_begin("span");
	gk_jw_key(w, "attrs");
	static const char pretty[] =
	    "{\n\t\"a\": [1,\r\n\t2],\n\t\"b\": \"x y\"\n}";
	gk_jw_raw(w, pretty, sizeof pretty - 1);
	gk_jw_key(w, "n");
	gk_jw_int(w, 7);
	gk_event_end();
	cap_close(&c);
	json_t *v[4] = {0};
	size_t n = cap_lines(&c, v, 4);
	CHECK(n == 1);
	CHECK(v[0] != NULL);
	if (n == 1 && v[0]) {
		json_t *a =
		    json_object_get(json_object_get(v[0], "attrs"), "a");
		CHECK(json_array_size(a) == 2 &&
		      json_integer_value(json_array_get(a, 1)) == 2);
		CHECK_STR(json_string_value(json_object_get(
		              json_object_get(v[0], "attrs"), "b")),
		          "x y");
		CHECK(json_integer_value(json_object_get(v[0], "n")) == 7);
	}
	free_lines(v, n);
	cap_free(&c);
}

/*
 * Events lost to a reader gone are counted: gk_events_lost_total, which
 * reaches no one through the dead fd, and on standard error when it is
 * another file: at once in a running loop, and the count at exit.
 */
static int
child_stderr(void (*f)(int dead_fd), char *out, size_t cap)
{
	int e[2], d[2];
	if (pipe(e) < 0 || pipe(d) < 0)
		return -1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(e[0]);
		close(d[0]); /* the reader of the event fd: gone */
		dup2(e[1], 2);
		close(e[1]);
		char v[16];
		snprintf(v, sizeof v, "%d", d[1]);
		setenv("GK_EVENTS_FD", v, 1);
		gk_events_init("child");
		f(d[1]);
		exit(0);
	}
	close(e[1]);
	close(d[0]);
	close(d[1]);
	size_t n = 0;
	ssize_t r;
	while (n < cap - 1 && (r = read(e[0], out + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = 0;
	close(e[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

static void
lose_three(int fd)
{
	(void)fd;
	gk_series *m = gk_metric_series(
	    gk_counter_new("gk_events_lost_total", NULL, NULL));
	double before = gk_series_value(m); /* what the parent lost */
	gk_events_set_batching(true);       /* as in a running loop */
	for (int i = 0; i < 3; i++) {
		gk_log(GK_INFO, "to nobody");
		gk_events_flush();
	}
	if (gk_series_value(m) - before != 3)
		exit(10);
}

static void
lose_three_to_stderr(int fd)
{
	dup2(fd, 2); /* the event fd is standard error: nowhere to say it */
	lose_three(fd);
}

TEST(reader_gone_counted)
{
	clear_env();
	char out[4096];
	int st = child_stderr(lose_three, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	char want[512];
	int fd = -1;
	CHECK(sscanf(out, "child: warning: the reader of event fd %d", &fd) ==
	      1);
	snprintf(want, sizeof want,
	         "child: warning: the reader of event fd %d is gone (Broken "
	         "pipe): events are lost, counted in gk_events_lost_total\n"
	         "child: warning: 3 events lost: the reader of event fd %d is "
	         "gone (Broken pipe)\n",
	         fd, fd);
	CHECK_STR(out, want);
	st = child_stderr(lose_three_to_stderr, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_STR(out, "");
}

/* A reader that is there but takes nothing: what is still queued after
 * the wait at exit is lost, and said on standard error with its count. */
TEST(unread_at_exit_said)
{
	clear_env();
	int e[2], d[2];
	CHECK(pipe(e) == 0 && pipe(d) == 0);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(e[0]);
		close(d[0]);
		dup2(e[1], 2);
		close(e[1]);
		fcntl(d[1], F_SETFL, O_NONBLOCK);
		char v[16];
		snprintf(v, sizeof v, "%d", d[1]);
		setenv("GK_EVENTS_FD", v, 1);
		gk_events_init("child");
		/* 200 events of 1 KiB: the pipe takes 64 KiB of them. */
		char big[1024];
		memset(big, 'x', sizeof big - 1);
		big[sizeof big - 1] = 0;
		for (int i = 0; i < 200; i++)
			gk_log(GK_INFO, big);
		exit(0);
	}
	close(e[1]);
	close(d[1]);
	char out[1024];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof out - 1 && (r = read(e[0], out + n, sizeof out - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = 0;
	int st;
	waitpid(pid, &st, 0);
	close(e[0]);
	/* What the pipe took, plus what was lost, is every event. */
	size_t got = 0;
	char buf[65536];
	fcntl(d[0], F_SETFL, O_NONBLOCK);
	while ((r = read(d[0], buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < r; i++)
			got += buf[i] == '\n';
	close(d[0]);
	unsigned long lostn = 0;
	int fd = -1;
	CHECK(sscanf(out, "child: warning: %lu events lost: the reader of event fd %d took nothing for 1000 ms at exit", &lostn, &fd) == 2);
	CHECK(got > 0 && got < 200);
	if (got + lostn != 200)
		printf("#   %zu written, %lu said lost\n", got, lostn);
	CHECK(got + lostn == 200);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* In a loop, events wait for a batch, but never more than 10 ms: an idle
 * loop wakes to write them (held past their turn is not asserted: a loaded
 * machine may stall a turn that long). */
static bool held_seen_later;

static bool
pipe_has_data(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1;
}

static void
held_emit(gk_loop *l, void *arg)
{
	(void)l;
	(void)arg;
	gk_log(GK_INFO, "held a moment");
}

static void
held_check_later(gk_loop *l, void *arg)
{
	held_seen_later = pipe_has_data(*(int *)arg);
	gk_loop_stop(l);
}

TEST(loop_holds_events_at_most_10ms)
{
	clear_env();
	int p[2];
	CHECK(pipe(p) == 0);
	char v[16];
	snprintf(v, sizeof v, "%d", p[1]);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events");
	gk_loop *l = gk_loop_new();
	gk_timer t1 = {0}, t3 = {0};
	gk_timer_start(l, &t1, 1, held_emit, NULL);
	gk_timer_start(l, &t3, 300, held_check_later, &p[0]);
	CHECK(gk_loop_run(l) == 0);
	CHECK(held_seen_later); /* woken for, long before 300 ms */
	char buf[4096];
	ssize_t n = read(p[0], buf, sizeof buf - 1);
	CHECK(n > 0 && memmem(buf, (size_t)n, "held a moment", 13));
	gk_loop_free(l);
	events_to_devnull();
	close(p[0]);
	close(p[1]);
}

/* A reader that starts late: from 300 ms on (after the 100 ms a flush
 * waits), it drains the pipe into late_got until 900 ms; the loop knows
 * nothing of it. */
static char late_got[1 << 20];
static size_t late_len;

static void *
late_reader(void *arg)
{
	int fd = *(int *)arg;
	struct timespec ts = {0, 300 * 1000 * 1000};
	nanosleep(&ts, NULL);
	uint64_t end = gk_monotonic_us() + 600 * 1000;
	while (gk_monotonic_us() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10) == 1) {
			ssize_t n = read(fd, late_got + late_len,
			                 sizeof late_got - late_len);
			if (n > 0)
				late_len += (size_t)n;
		}
	}
	return NULL;
}

static void
late_fill(gk_loop *l, void *arg)
{
	(void)l;
	(void)arg;
	for (int i = 0; i < 200; i++)
		gk_log(GK_INFO, "filling the pipe",
		       "pad=0123456789012345678901234567890123456789");
	gk_log(GK_INFO, "the last one");
}

static void
late_stop(gk_loop *l, void *arg)
{
	(void)arg;
	gk_loop_stop(l);
}

/* Events held for a reader that was stuck reach it once it reads, with no
 * other work in the process to flush them. */
TEST(stalled_queue_retried_without_other_work)
{
	clear_env();
	int p[2];
	CHECK(pipe(p) == 0);
	fcntl(p[1], F_SETPIPE_SZ, 4096);
	char v[16];
	snprintf(v, sizeof v, "%d", p[1]);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events");
	pthread_t th;
	late_len = 0;
	pthread_create(&th, NULL, late_reader, &p[0]);
	gk_loop *l = gk_loop_new();
	gk_timer t1 = {0}, t2 = {0};
	gk_timer_start(l, &t1, 1, late_fill, NULL);
	gk_timer_start(l, &t2, 1000, late_stop, NULL);
	CHECK(gk_loop_run(l) == 0);
	pthread_join(th, NULL);
	/* Everything came before the reader stopped, at 900 ms, though
	 * the loop had nothing to do from 1 ms to 1000 ms. */
	CHECK(memmem(late_got, late_len, "the last one", 12) != NULL);
	gk_loop_free(l);
	events_to_devnull();
	close(p[0]);
	close(p[1]);
}

/* Readers take at most GK_WIRE_MAX_FIELDS members: gk_log keeps to it,
 * also when the event is too long as well, with one "truncated". */
TEST(many_fields_stay_readable)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
#define F5(p, v) p "1=" v, p "2=" v, p "3=" v, p "4=" v, p "5=" v
#define F70(v)                                                                 \
	F5("a", v), F5("b", v), F5("c", v), F5("d", v), F5("e", v),            \
	    F5("f", v), F5("g", v), F5("h", v), F5("i", v), F5("j", v),        \
	    F5("k", v), F5("l", v), F5("m", v), F5("n", v)
	gk_log(GK_INFO, "many", F70("1"));
	gk_log(GK_INFO, "many and long",
	       F70("0123456789012345678901234567890123456789"
	           "0123456789012345678901234567890123456789"));
#undef F70
#undef F5
	cap_close(&c);
	size_t start = 0, lines = 0;
	for (size_t i = 0; i < c.len; i++) {
		if (c.data[i] != '\n')
			continue;
		gk_wire_msg m;
		gk_wire_error err;
		CHECK(gk_wire_parse(&m, c.data + start, i - start, &err) == 0);
		CHECK(m.nfields == GK_WIRE_MAX_FIELDS);
		CHECK(gk_wire_get(&m, "truncated").type == GK_JSON_TRUE);
		CHECK(gk_wire_get(&m, "a1").type != GK_JSON_NONE);
		lines++;
		start = i + 1;
	}
	CHECK(lines == 2);
	cap_free(&c);
}

TEST(text_format)
{
	clear_env();
	setenv("GK_EVENTS_FORMAT", "text", 1);
	setenv("GK_SERVICE", "orders", 1);
	struct cap c;
	cap_open(&c, false, true);
	gk_log(GK_WARN, "rate limited", "key=10.0.0.7", "s=hello world", "n=3",
	       "nl=a\nb");
	gk_log(GK_INFO, "second");
	gk_jw *w = gk_event_begin("span");
	gk_jw_key(w, "name");
	gk_jw_cstr(w, "GET /");
	gk_jw_key(w, "duration_us");
	gk_jw_int(w, 250);
	gk_event_end();
	cap_close(&c);
	char *text = calloc(1, c.len + 1);
	memcpy(text, c.data, c.len);
	char *l1 = text, *l2 = strchr(l1, '\n');
	CHECK(l2 != NULL);
	if (l2) {
		*l2++ = 0;
		/* HH:MM:SS.mmm */
		CHECK(strlen(l1) > 13 && l1[2] == ':' && l1[5] == ':' &&
		      l1[8] == '.' && l1[12] == ' ');
		CHECK_STR(l1 + 13, "WARN  test-events rate limited "
		                   "key=10.0.0.7 s=\"hello world\" n=3 "
		                   "nl=\"a\\nb\"");
		char *l3 = strchr(l2, '\n');
		CHECK(l3 != NULL);
		if (l3) {
			*l3++ = 0;
			CHECK_STR(l2 + 13, "INFO  test-events second");
			char *end = strchr(l3, '\n');
			if (end)
				*end = 0;
			CHECK_STR(l3 + 13, "SPAN  test-events name=\"GET /\" "
			                   "duration_us=250");
		}
	}
	CHECK(strchr(text, '\033') == NULL); /* no colour on a pipe */
	free(text);
	cap_free(&c);
	unsetenv("GK_EVENTS_FORMAT");
	unsetenv("GK_SERVICE");
}

/*
 * Text is rendered from the JSON line and can be longer than it (a
 * metrics family's name is repeated for each series): on a pipe it must
 * still be one line of at most PIPE_BUF - 1 bytes a write, so that the
 * processes sharing the pipe never interleave, cut with a mark.
 */
TEST(text_line_fits_pipe_buf)
{
	clear_env();
	setenv("GK_EVENTS_FORMAT", "text", 1);
	gk_series *cut = gk_metric_series(
	    gk_counter_new("gk_events_truncated_total", NULL, NULL));
	double cut0 = gk_series_value(cut);
	struct cap c;
	cap_open(&c, true, true);
	char name[201];
	memset(name, 'n', 200);
	name[200] = 0;
	gk_jw *w = gk_event_begin("metrics");
	gk_jw_key(w, "metrics");
	gk_jw_array(w);
	gk_jw_object(w);
	gk_jw_key(w, "name");
	gk_jw_cstr(w, name);
	gk_jw_key(w, "series");
	gk_jw_array(w);
	for (int i = 0; i < 40; i++) {
		char v[16];
		snprintf(v, sizeof v, "%d", i);
		gk_jw_object(w);
		gk_jw_key(w, "labels");
		gk_jw_object(w);
		gk_jw_key(w, "a");
		gk_jw_cstr(w, v);
		gk_jw_object_end(w);
		gk_jw_key(w, "value");
		gk_jw_int(w, i);
		gk_jw_object_end(w);
	}
	gk_jw_array_end(w);
	gk_jw_object_end(w);
	gk_jw_array_end(w);
	gk_event_end();
	gk_log(GK_INFO, "after");
	cap_close(&c);
	CHECK(c.nrec == 2);
	for (size_t i = 0; i < c.nrec; i++)
		CHECK(c.rec[i] <= 4096);
	char *nl = memchr(c.data, '\n', c.len);
	CHECK(nl != NULL && nl - c.data <= 4095);
	static const char mark[] = "\xe2\x80\xa6 truncated=true\n";
	CHECK(nl && nl + 1 - c.data >= (ptrdiff_t)sizeof mark - 1 &&
	      !memcmp(nl + 1 - (sizeof mark - 1), mark, sizeof mark - 1));
	CHECK(nl && memmem(nl, c.len - (size_t)(nl - c.data),
	                   "INFO  test-events after\n", 24));
	CHECK(gk_series_value(cut) == cut0 + 1);
	cap_free(&c);
	unsetenv("GK_EVENTS_FORMAT");
}

/*
 * C1 controls (U+0080..U+009F) and DEL are valid UTF-8 that JSON leaves as
 * they are, but a terminal may obey them (U+009B is CSI): text, which is
 * for a terminal, escapes them, in a bare word as in a nested object.
 */
TEST(text_escapes_c1_controls)
{
	clear_env();
	setenv("GK_EVENTS_FORMAT", "text", 1);
	struct cap c;
	cap_open(&c, false, true);
	gk_log(GK_WARN,
	       "csi \xc2\x9b"
	       "2J",
	       "path=/a\xc2\x9b"
	       "2J",
	       "del=\x7f");
	gk_jw *w = gk_event_begin("span");
	gk_jw_key(w, "attrs");
	gk_jw_object(w);
	gk_jw_key(w, "t");
	gk_jw_cstr(w, "\xc2\x85x");
	gk_jw_object_end(w);
	gk_event_end();
	cap_close(&c);
	CHECK(memmem(c.data, c.len, "\xc2\x9b", 2) == NULL);
	CHECK(memmem(c.data, c.len, "\xc2\x85", 2) == NULL);
	CHECK(memchr(c.data, 0x7f, c.len) == NULL);
	CHECK(memmem(c.data, c.len, "del=\"\\u007f\"", 12) != NULL);
	CHECK(memmem(c.data, c.len, "path=\"/a\\u009b2J\"", 17) != NULL);
	CHECK(memmem(c.data, c.len, "\"csi \\u009b2J\"", 14) != NULL);
	CHECK(memmem(c.data, c.len, "attrs={\"t\":\"\\u0085x\"}", 21) != NULL);
	cap_free(&c);
	unsetenv("GK_EVENTS_FORMAT");
}

TEST(text_colour_on_terminal)
{
	clear_env();
	unsetenv("NO_COLOR");
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	CHECK(m >= 0);
	if (m < 0)
		return;
	grantpt(m);
	unlockpt(m);
	int s = open(ptsname(m), O_RDWR | O_NOCTTY);
	CHECK(s >= 0);
	char v[16];
	snprintf(v, sizeof v, "%d", s);
	setenv("GK_EVENTS_FD", v, 1);
	gk_events_init("test-events"); /* a terminal: text by default */
	gk_log(GK_WARN, "coloured");
	gk_log(GK_ERROR, "red");
	char buf[1024];
	size_t n = 0;
	/* Until the second line is complete (the tty may add a \r). */
	while (n < sizeof buf - 1) {
		char *red = memmem(buf, n, "events red", 10);
		if (red && memchr(red, '\n', n - (size_t)(red - buf)))
			break;
		struct pollfd pf = {.fd = m, .events = POLLIN};
		if (poll(&pf, 1, 2000) <= 0)
			break;
		ssize_t r = read(m, buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = 0;
	CHECK(strstr(buf, "\033[33mWARN\033[0m  test-events coloured") != NULL);
	CHECK(strstr(buf, "\033[31mERROR\033[0m test-events red") != NULL);
	CHECK(strchr(buf, '{') == NULL);
	events_to_devnull();
	close(s);
	close(m);
}

static void *
log_thread(void *arg)
{
	char k[32];
	snprintf(k, sizeof k, "thread=%d", (int)(intptr_t)arg);
	for (int i = 0; i < 2000; i++)
		gk_log(GK_INFO, "from a thread", k,
		       "pad=xxxxxxxxxxxxxxxxxxxxxxx");
	return NULL;
}

TEST(threads)
{
	clear_env();
	struct cap c;
	cap_open(&c, true, true);
	for (int batch = 0; batch < 2; batch++) {
		gk_events_set_batching(batch);
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, log_thread,
			               (void *)(intptr_t)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		gk_events_flush();
	}
	gk_events_set_batching(false);
	cap_close(&c);
	check_records(&c, 16000, false);
	cap_free(&c);
}

static int
child_events(void (*f)(void), char *out, size_t cap)
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
do_fatal(void)
{
	gk_events_set_batching(true);
	gk_fatal(3, "boom %d", 7);
}

static void
do_exit_batched(void)
{
	gk_events_set_batching(true);
	gk_log(GK_INFO, "flushed at exit");
}

TEST(fatal_and_exit)
{
	clear_env();
	char out[4096];
	int st = child_events(do_fatal, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
	json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
	CHECK(o != NULL);
	CHECK_STR(sget(o, "level"), "fatal");
	CHECK_STR(sget(o, "msg"), "boom 7");
	CHECK_STR(sget(o, "proc"), "child");
	CHECK(json_integer_value(json_object_get(o, "pid")) != getpid());
	json_decref(o);
	st = child_events(do_exit_batched, out, sizeof out);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(strstr(out, "flushed at exit") != NULL);
}

TEST(fork_does_not_duplicate)
{
	clear_env();
	struct cap c;
	cap_open(&c, false, true);
	gk_events_set_batching(true);
	gk_log(GK_INFO, "queued before fork");
	pid_t pid = fork();
	if (pid == 0) {
		gk_log(GK_INFO, "from the child");
		exit(0); /* the atexit flush writes only the child's event */
	}
	waitpid(pid, NULL, 0);
	gk_events_set_batching(false);
	cap_close(&c);
	json_t *v[4];
	size_t n = cap_lines(&c, v, 4);
	CHECK(n == 2);
	int before = 0, child = 0;
	for (size_t i = 0; i < n; i++) {
		if (!v[i])
			continue;
		const char *m = sget(v[i], "msg");
		if (m && !strcmp(m, "queued before fork")) {
			before++;
			CHECK(json_integer_value(
			          json_object_get(v[i], "pid")) == getpid());
		}
		if (m && !strcmp(m, "from the child")) {
			child++;
			CHECK(json_integer_value(
			          json_object_get(v[i], "pid")) == pid);
		}
	}
	CHECK(before == 1 && child == 1);
	free_lines(v, n);
	cap_free(&c);
}

/*
 * The event fd a process inherits is usually a blocking pipe (stderr).  A
 * reader that stops must not freeze the process in write(2): past the
 * documented waits (100 ms, then none, 1 s at exit) events are dropped.
 * The child logs into a full pipe that nobody reads and must exit soon.
 */
TEST(blocking_fd_never_stalls)
{
	clear_env();
	int p[2];
	CHECK(pipe(p) == 0); /* blocking, as stderr is */
	fcntl(p[1], F_SETPIPE_SZ, 4096);
	pid_t pid = fork();
	if (pid == 0) {
		char v[16];
		snprintf(v, sizeof v, "%d", p[1]);
		setenv("GK_EVENTS_FD", v, 1);
		gk_events_init("test-events");
		dup2(devnull, 2); /* its "events lost" at exit: see above */
		for (int i = 0; i < 2000; i++)
			gk_log(GK_INFO, "nobody reads this pipe",
			       "pad=0123456789012345678901234567");
		exit(0);
	}
	int st = 0;
	bool done = false;
	for (int i = 0; i < 1000 && !done; i++) { /* 10 s at most */
		done = waitpid(pid, &st, WNOHANG) == pid;
		if (!done) {
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	if (!done) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	CHECK(done && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* What the pipe took is whole lines. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	char buf[8192];
	ssize_t n = read(p[0], buf, sizeof buf);
	CHECK(n > 0 && buf[n - 1] == '\n');
	close(p[0]);
	close(p[1]);
}

/*
 * A terminal whose output is stopped (Ctrl-S, or a frozen terminal) must
 * not freeze the process in write(2) either: the events are held, and
 * written once the terminal resumes.  The child logs to a stopped pty and
 * says when gk_log has returned; then the output resumes and the event
 * must arrive, written at the child's exit.
 */
TEST(stopped_terminal_never_stalls)
{
	clear_env();
	setenv("GK_EVENTS_FORMAT", "text", 1);
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0) {
		printf("# skip: no pseudo-terminal: %s\n", strerror(errno));
		unsetenv("GK_EVENTS_FORMAT");
		return;
	}
	grantpt(m);
	unlockpt(m);
	int s = open(ptsname(m), O_RDWR | O_NOCTTY); /* blocking, as a tty is */
	CHECK(s >= 0);
	CHECK(tcflow(s, TCOOFF) == 0); /* as Ctrl-S does */
	int said[2], go[2];
	CHECK(pipe(said) == 0 && pipe(go) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		char v[16];
		snprintf(v, sizeof v, "%d", s);
		setenv("GK_EVENTS_FD", v, 1);
		gk_events_init("test-events");
		gk_log(GK_INFO, "to a stopped terminal");
		gk_events_flush();
		(void)!write(said[1], "r", 1);
		char c;
		(void)!read(go[0], &c, 1);
		exit(0); /* writes what is held, waiting up to 1 s */
	}
	struct pollfd pf = {.fd = said[0], .events = POLLIN};
	bool returned = poll(&pf, 1, 5000) == 1;
	CHECK(returned); /* else gk_log is stuck in write(2) */
	CHECK(tcflow(s, TCOON) == 0);
	(void)!write(go[1], "g", 1);
	char buf[4096];
	size_t n = 0;
	while (returned && n < sizeof buf - 1 &&
	       !memmem(buf, n, "stopped terminal", 16)) {
		struct pollfd pm = {.fd = m, .events = POLLIN};
		if (poll(&pm, 1, 3000) <= 0)
			break;
		ssize_t r = read(m, buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	CHECK(memmem(buf, n, "test-events to a stopped terminal", 33));
	if (!returned)
		kill(pid, SIGKILL);
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(returned && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(said[0]);
	close(said[1]);
	close(go[0]);
	close(go[1]);
	close(s);
	close(m);
	unsetenv("GK_EVENTS_FORMAT");
}

int
main(void)
{
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	RUN(log_event_shape);
	RUN(svc_absent_and_trace);
	RUN(level_filtering);
	RUN(truncation);
	RUN(structured_event);
	RUN(event_end_closes_what_is_open);
	RUN(double_round_trip);
	RUN(batching_whole_lines);
	RUN(batching_flushes_past_64k);
	RUN(drops_when_stuck);
	RUN(reader_gone);
	RUN(reader_gone_counted);
	RUN(unread_at_exit_said);
	RUN(raw_json_stays_one_line);
	RUN(many_fields_stay_readable);
	RUN(text_format);
	RUN(text_line_fits_pipe_buf);
	RUN(text_escapes_c1_controls);
	RUN(text_colour_on_terminal);
	RUN(threads);
	RUN(fatal_and_exit);
	RUN(fork_does_not_duplicate);
	RUN(loop_holds_events_at_most_10ms);
	RUN(blocking_fd_never_stalls);
	RUN(stopped_terminal_never_stalls);
	RUN(stalled_queue_retried_without_other_work);
	return UNIT_END();
}
