/*
 * test_serve.c: gk_serve(3) with worker threads.  A handler that blocks
 * must not stop the loop: with -j N, N requests run at once and the rest
 * wait; without -j they run one after another on the loop's thread.  The
 * serving process is a child of the test (gk_serve owns its process: loop,
 * signals, exit), fed wire requests on a pipe.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

/* Shared with the child: how many handlers ran at once, at most. */
struct counts {
	atomic_int now, peak, calls;
};
static struct counts *shared;

static void
slow_handler(const gk_request *req, gk_response *resp, void *arg)
{
	(void)arg;
	int n = atomic_fetch_add(&shared->now, 1) + 1;
	int peak = atomic_load(&shared->peak);
	while (n > peak && !atomic_compare_exchange_weak(&shared->peak, &peak, n))
		;
	atomic_fetch_add(&shared->calls, 1);
	/* Long enough that requests given together overlap on a loaded
	 * machine; the assertions count overlap, never time. */
	struct timespec ts = {0, 150 * 1000 * 1000};
	nanosleep(&ts, NULL);
	atomic_fetch_sub(&shared->now, 1);
	gk_response_printf(resp, "%s %s\n", gk_request_method(req),
	    gk_request_path(req));
}

static void
trace_handler(const gk_request *req, gk_response *resp, void *arg)
{
	(void)arg;
	const char *t = gk_request_trace_id(req);
	gk_response_printf(resp, "%s", t ? t : "none");
}

/* Headers as a handler author might set them: one name twice, a name in
 * capitals, names and values HTTP cannot carry; a status by path. */
static void
header_handler(const gk_request *req, gk_response *resp, void *arg)
{
	(void)arg;
	const char *p = gk_request_path(req);
	if (!strcmp(p, "/p0")) {
		gk_response_header(resp, "Set-Cookie", "a=1");
		gk_response_header(resp, "x-one", "1");
		gk_response_header(resp, "set-cookie", "b=2");
		gk_response_header(resp, "SET-COOKIE", "c=3");
	} else if (!strcmp(p, "/p1")) {
		gk_response_header(resp, "x-ok", "fine");
		gk_response_header(resp, "x-a\r\nx-evil", "1");
		gk_response_header(resp, "bad name", "2");
		gk_response_header(resp, "", "3");
		gk_response_header(resp, "x-b", "v\r\nx-evil: 4");
		gk_response_header(resp, "x-tab", "a\tb");
	} else if (!strcmp(p, "/p2"))
		gk_response_status(resp, 101);
	else if (!strcmp(p, "/p3"))
		gk_response_status(resp, 600);
	else if (!strcmp(p, "/p4"))
		gk_response_status(resp, 204);
	gk_response_body(resp, "ok", 2);
}

static gk_handler *handler = slow_handler;
static const char *request_extra = "";
static const char *events_path; /* the child's events, else /dev/null */

/* gk_serve(argc, argv, fn) in a child whose stdin is *to and whose
 * stdout is *from (its events go to /dev/null, off the TAP stream). */
static pid_t
start_serve(char **argv, int argc, gk_handler *fn, int *to, int *from)
{
	int in[2], res[2];
	if (pipe(in) || pipe(res))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(res[1], 1);
		close(in[0]);
		close(in[1]);
		close(res[0]);
		close(res[1]);
		int null = open(events_path ? events_path : "/dev/null",
		    O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (null >= 0)
			dup2(null, 2);
		_exit(gk_serve(argc, argv, fn, NULL));
	}
	close(in[0]);
	close(res[1]);
	*to = in[1];
	*from = res[0];
	return pid;
}

/* Serve REQS wire requests with ARGV; returns the responses read (lines). */
static int
serve_requests(char **argv, int argc, int reqs, char *out, size_t outsz)
{
	int to, from;
	pid_t pid = start_serve(argv, argc, handler, &to, &from);
	if (pid < 0)
		return -1;
	char line[512];
	for (int i = 0; i < reqs; i++) {
		int n = snprintf(line, sizeof line,
		    "{\"id\":\"%d\",\"method\":\"GET\",\"path\":\"/p%d\"%s}\n", i,
		    i, request_extra);
		if (write(to, line, (size_t)n) != n)
			return -1;
	}
	size_t got = 0;
	int lines = 0;
	while (lines < reqs && got < outsz - 1) {
		ssize_t r = read(from, out + got, outsz - 1 - got);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			lines += out[got + (size_t)i] == '\n';
		got += (size_t)r;
	}
	out[got] = 0;
	close(to); /* EOF north: gk_serve drains and exits */
	int status;
	waitpid(pid, &status, 0);
	close(from);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? lines : -1;
}

TEST(without_workers_a_blocking_handler_runs_one_at_a_time)
{
	memset(shared, 0, sizeof *shared);
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	CHECK(serve_requests(argv, 1, 4, out, sizeof out) == 4);
	CHECK(atomic_load(&shared->calls) == 4);
	CHECK(atomic_load(&shared->peak) == 1);
}

TEST(with_j_4_blocking_handlers_overlap_but_never_more_than_4)
{
	memset(shared, 0, sizeof *shared);
	char *argv[] = {"test_serve", "-j", "4", NULL};
	char out[8192];
	CHECK(serve_requests(argv, 3, 12, out, sizeof out) == 12);
	CHECK(atomic_load(&shared->calls) == 12);
	CHECK(atomic_load(&shared->peak) >= 2);
	CHECK(atomic_load(&shared->peak) <= 4);
	/* Every request got its own answer, matched by id. */
	for (int i = 0; i < 12; i++) {
		char want[64];
		snprintf(want, sizeof want, "\"id\":\"%d\"", i);
		CHECK(strstr(out, want) != NULL);
		snprintf(want, sizeof want, "GET /p%d\\n", i);
		CHECK(strstr(out, want) != NULL);
	}
}

TEST(a_handler_reads_the_trace_id_a_tracer_gave_the_request)
{
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	handler = trace_handler;
	request_extra = ",\"trace\":{\"trace_id\":"
	                "\"0af7651916cd43dd8448eb211c80319c\",\"sampled\":true}";
	CHECK(serve_requests(argv, 1, 1, out, sizeof out) == 1);
	CHECK(strstr(out, "\"body\":\"0af7651916cd43dd8448eb211c80319c\"") != NULL);
	request_extra = "";
	CHECK(serve_requests(argv, 1, 1, out, sizeof out) == 1);
	CHECK(strstr(out, "\"body\":\"none\"") != NULL);
	handler = slow_handler;
}

static void
content_type_handler(const gk_request *req, gk_response *resp, void *arg)
{
	(void)arg;
	const char *a = gk_request_header(req, "Content-Type");
	const char *b = gk_request_header(req, "content-type");
	gk_response_printf(resp, "%s|%s", a ? a : "none", b ? b : "none");
}

/* HTTP header names are case-blind (RFC 9110 5.1): a handler asking for
 * "Content-Type" gets the wire's content-type, not NULL. */
TEST(a_header_is_found_by_its_name_in_any_case)
{
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	handler = content_type_handler;
	request_extra = ",\"headers\":{\"content-type\":\"text/plain\"}";
	CHECK(serve_requests(argv, 1, 1, out, sizeof out) == 1);
	CHECK(strstr(out, "\"body\":\"text/plain|text/plain\"") != NULL);
	request_extra = "";
	handler = slow_handler;
}

/*
 * The wire has a repeated header as one member whose value is an array
 * (gk-wire(5)); the same name twice in one object is read as the last one
 * alone by jq and most JSON readers.  gk_response_header() used to write
 * the name twice.
 */
TEST(a_header_set_twice_goes_as_one_member_with_an_array)
{
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	handler = header_handler;
	CHECK(serve_requests(argv, 1, 1, out, sizeof out) == 1);
	CHECK(strstr(out, "\"headers\":{\"set-cookie\":[\"a=1\",\"b=2\","
	                  "\"c=3\"],\"x-one\":\"1\"}") != NULL);
	handler = slow_handler;
}

/*
 * A name that is not an HTTP token, or a value with CR, LF or another
 * control character, is dropped (as Go's net/http does) rather than make
 * the whole response one gk-listener must refuse (502).
 */
TEST(a_header_http_cannot_carry_is_dropped_and_the_rest_goes)
{
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	handler = header_handler;
	CHECK(serve_requests(argv, 1, 2, out, sizeof out) == 2);
	CHECK(strstr(out, "\"headers\":{\"x-ok\":\"fine\",\"x-tab\":"
	                  "\"a\\tb\"}") != NULL);
	CHECK(strstr(out, "evil") == NULL);
	handler = slow_handler;
}

/* The wire carries 200 to 599 only: 1xx and past 599 become 500. */
TEST(a_status_the_wire_cannot_carry_becomes_500)
{
	char *argv[] = {"test_serve", NULL};
	char out[4096];
	handler = header_handler;
	CHECK(serve_requests(argv, 1, 5, out, sizeof out) == 5);
	CHECK(strstr(out, "{\"id\":\"2\",\"status\":500,") != NULL);
	CHECK(strstr(out, "{\"id\":\"3\",\"status\":500,") != NULL);
	CHECK(strstr(out, "{\"id\":\"4\",\"status\":204,") != NULL);
	handler = slow_handler;
}

/*
 * SIGTERM while a worker runs the handler: the program drains (the
 * request in flight is answered) and exits 0.  The workers were created
 * before the loop blocked the signals it takes through its signalfd, so
 * they left TERM unblocked, the kernel gave it to one of them, and its
 * default action ended the process (status 143, the answer lost).
 */
/* Until a worker is in the handler (shared->now set), at most 5 s. */
static void
wait_in_handler(void)
{
	for (int i = 0; i < 500 && !atomic_load(&shared->now); i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

/* What the child writes on fd until its EOF (it exits; its stdin stays
 * open), at most cap - 1 bytes and 10 s without a byte; NUL-ended. */
static void
read_to_eof(int fd, char *out, size_t cap)
{
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			break;
		ssize_t r = read(fd, out + got, cap - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	out[got] = 0;
}

TEST(with_j_sigterm_during_a_handler_drains_and_exits_0)
{
	memset(shared, 0, sizeof *shared);
	int to, from;
	char *argv[] = {"test_serve", "-j", "2", NULL};
	pid_t pid = start_serve(argv, 3, slow_handler, &to, &from);
	CHECK(pid > 0);
	const char *req = "{\"id\":\"t\",\"method\":\"GET\",\"path\":\"/t\"}\n";
	CHECK(write(to, req, strlen(req)) == (ssize_t)strlen(req));
	/* Wait (at most 5 s) until a worker is in the handler. */
	wait_in_handler();
	CHECK(atomic_load(&shared->now) == 1);
	kill(pid, SIGTERM);
	char out[1024];
	read_to_eof(from, out, sizeof out);
	int status = 0;
	waitpid(pid, &status, 0);
	close(to);
	close(from);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(strstr(out, "\"id\":\"t\"") != NULL);
	CHECK(strstr(out, "GET /t\\n") != NULL);
}

/* A handler that never returns, on /hang; the others answer at once. */
static void
hang_handler(const gk_request *req, gk_response *resp, void *arg)
{
	(void)arg;
	if (!strcmp(gk_request_path(req), "/hang")) {
		atomic_fetch_add(&shared->now, 1);
		for (;;)
			pause();
	}
	gk_response_body(resp, "ok", 2);
}

/*
 * With -j, a handler stuck for good (a deadlock, a peer that never
 * answers): the drain timeout answers its request 503 and the program
 * exits, leaving the worker to end with the process.  It used to join
 * every worker after the drain and so never exited at all: systemd had
 * to kill it, past the drain timeout it had been told.
 */
TEST(with_j_a_stuck_handler_does_not_keep_the_program_past_the_drain)
{
	memset(shared, 0, sizeof *shared);
	int to, from;
	char *argv[] = {"test_serve", "-j", "2", "--drain-timeout", "200ms",
	    NULL};
	pid_t pid = start_serve(argv, 5, hang_handler, &to, &from);
	CHECK(pid > 0);
	const char *req =
	    "{\"id\":\"h\",\"method\":\"GET\",\"path\":\"/hang\"}\n"
	    "{\"id\":\"o\",\"method\":\"GET\",\"path\":\"/o\"}\n";
	CHECK(write(to, req, strlen(req)) == (ssize_t)strlen(req));
	wait_in_handler();
	CHECK(atomic_load(&shared->now) == 1);
	kill(pid, SIGTERM);
	char out[4096];
	read_to_eof(from, out, sizeof out);
	int status = 0;
	pid_t w = 0;
	for (int i = 0; i < 500 && !(w = waitpid(pid, &status, WNOHANG)); i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (!w) { /* still there after 5 s more: the bug */
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	close(to);
	close(from);
	CHECK(w == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(strstr(out, "{\"id\":\"o\",\"status\":200,") != NULL);
	CHECK(strstr(out, "{\"id\":\"h\",\"status\":503,") != NULL);
}

/*
 * With -j, a request answered by the runtime (--timeout) while it waits
 * for a worker leaves the queue at once: it kept its place, and its copy
 * of the request, until a worker came to it, so with every worker stuck
 * the queue grew past --max-inflight for as long as requests came.
 */
TEST(with_j_a_request_answered_while_it_waits_leaves_the_queue)
{
	memset(shared, 0, sizeof *shared);
	char events[] = "/tmp/test_serve_events.XXXXXX";
	int efd = mkstemp(events);
	CHECK(efd >= 0);
	close(efd);
	events_path = events;
	int to, from;
	char *argv[] = {"test_serve", "-j", "1", "--timeout", "200ms",
	    "--drain-timeout", "200ms", NULL};
	pid_t pid = start_serve(argv, 7, hang_handler, &to, &from);
	events_path = NULL;
	CHECK(pid > 0);
	char line[128];
	int n = snprintf(line, sizeof line,
	    "{\"id\":\"h\",\"method\":\"GET\",\"path\":\"/hang\"}\n");
	CHECK(write(to, line, (size_t)n) == n);
	wait_in_handler();
	CHECK(atomic_load(&shared->now) == 1);
	for (int i = 0; i < 20; i++) {
		n = snprintf(line, sizeof line,
		    "{\"id\":\"%d\",\"method\":\"GET\",\"path\":\"/q\"}\n", i);
		CHECK(write(to, line, (size_t)n) == n);
	}
	/* All 21 answered 504 by the runtime. */
	char out[8192];
	size_t got = 0;
	int lines = 0;
	while (lines < 21 && got < sizeof out - 1) {
		struct pollfd p = {.fd = from, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			break;
		ssize_t r = read(from, out + got, sizeof out - 1 - got);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			lines += out[got + (size_t)i] == '\n';
		got += (size_t)r;
	}
	out[got] = 0;
	CHECK(lines == 21);
	close(to); /* EOF: nothing in flight; the last snapshot, then exit */
	int status = 0;
	pid_t w = 0;
	for (int i = 0; i < 1000 && !(w = waitpid(pid, &status, WNOHANG)); i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (!w) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	close(from);
	CHECK(w == pid);
	/* The last metrics event says how many wait: none. */
	FILE *f = fopen(events, "r");
	CHECK(f != NULL);
	char *ev = NULL, *last = NULL;
	size_t cap = 0;
	while (f && getline(&ev, &cap, f) > 0)
		if (strstr(ev, "\"gk_serve_queued\"")) {
			free(last);
			last = strdup(ev);
		}
	if (f)
		fclose(f);
	free(ev);
	unlink(events);
	CHECK(last != NULL);
	if (last) {
		const char *g = strstr(last, "\"gk_serve_queued\"");
		const char *v = strstr(g, "\"value\":");
		CHECK(v && !strncmp(v, "\"value\":0}", 10));
		if (v && strncmp(v, "\"value\":0}", 10))
			printf("#   queued: %.20s\n", v);
	}
	free(last);
}

int
main(void)
{
	shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return 1;
	RUN(without_workers_a_blocking_handler_runs_one_at_a_time);
	RUN(with_j_4_blocking_handlers_overlap_but_never_more_than_4);
	RUN(a_handler_reads_the_trace_id_a_tracer_gave_the_request);
	RUN(with_j_sigterm_during_a_handler_drains_and_exits_0);
	RUN(a_header_is_found_by_its_name_in_any_case);
	RUN(a_header_set_twice_goes_as_one_member_with_an_array);
	RUN(a_header_http_cannot_carry_is_dropped_and_the_rest_goes);
	RUN(a_status_the_wire_cannot_carry_becomes_500);
	RUN(with_j_a_stuck_handler_does_not_keep_the_program_past_the_drain);
	RUN(with_j_a_request_answered_while_it_waits_leaves_the_queue);
	return UNIT_END();
}
