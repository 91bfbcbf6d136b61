/* test_loop.c: the event loop: timers, fds, signals, children, turn order. */
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

static char order[64];
static size_t norder;

static void
mark(gk_loop *l, void *arg)
{
	(void)l;
	order[norder++] = *(const char *)arg;
	order[norder] = 0;
}

static void
stop_loop(gk_loop *l, void *arg)
{
	(void)arg;
	gk_loop_stop(l);
}

TEST(timers_fire_in_deadline_order_and_stopped_ones_do_not)
{
	gk_loop *l = gk_loop_new();
	gk_timer t[5] = {{0}}, end = {0};
	static const char names[] = "abcde";
	uint64_t ms[] = {40, 10, 30, 20, 25};
	norder = 0;
	for (int i = 0; i < 5; i++)
		gk_timer_start(l, &t[i], ms[i], mark, (void *)&names[i]);
	gk_timer_stop(l, &t[4]); /* e never fires */
	CHECK(!gk_timer_armed(&t[4]) && gk_timer_armed(&t[0]));
	gk_timer_start(l, &end, 60, stop_loop, NULL);
	gk_loop_run(l);
	CHECK_STR(order, "bdca");
	gk_loop_free(l);
}

TEST(rearming_a_timer_moves_it)
{
	gk_loop *l = gk_loop_new();
	gk_timer a = {0}, b = {0}, end = {0};
	norder = 0;
	gk_timer_start(l, &a, 10, mark, "a");
	gk_timer_start(l, &b, 20, mark, "b");
	gk_timer_start(l, &a, 30, mark, "a");
	gk_timer_start(l, &end, 50, stop_loop, NULL);
	gk_loop_run(l);
	CHECK_STR(order, "ba");
	gk_loop_free(l);
}

static int fds_read;
static void
on_readable(gk_loop *l, int fd, unsigned ev, void *arg)
{
	(void)l;
	(void)arg;
	char buf[16];
	if (ev & GK_READ && read(fd, buf, sizeof buf) > 0)
		fds_read++;
}

static void
turn_end(gk_loop *l, void *arg)
{
	(void)arg;
	/* Every readable fd was handled before the end of the turn. */
	if (fds_read == 2)
		gk_loop_stop(l);
}

TEST(the_turn_reads_every_ready_fd_before_its_end_hook)
{
	gk_loop *l = gk_loop_new();
	int p1[2], p2[2];
	CHECK(pipe(p1) == 0 && pipe(p2) == 0);
	fds_read = 0;
	gk_loop_watch(l, p1[0], GK_READ, on_readable, NULL);
	gk_loop_watch(l, p2[0], GK_READ, on_readable, NULL);
	gk_loop_on_turn_end(l, turn_end, NULL);
	CHECK(write(p1[1], "x", 1) == 1 && write(p2[1], "y", 1) == 1);
	gk_timer guard = {0};
	gk_timer_start(l, &guard, 2000, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(fds_read == 2);
	gk_loop_unwatch(l, p1[0]);
	gk_loop_unwatch(l, p2[0]);
	gk_loop_free(l);
	close(p1[0]), close(p1[1]), close(p2[0]), close(p2[1]);
}

static int got_signal;
static void
on_sig(gk_loop *l, int signo, void *arg)
{
	(void)arg;
	got_signal = signo;
	gk_loop_stop(l);
}

TEST(signals_arrive_as_loop_events)
{
	gk_loop *l = gk_loop_new();
	gk_loop_signal(l, SIGUSR2, on_sig, NULL);
	kill(getpid(), SIGUSR2);
	gk_timer guard = {0};
	gk_timer_start(l, &guard, 2000, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(got_signal == SIGUSR2);
	gk_loop_free(l);
}

static int child_status = -1;
static void
on_child(gk_loop *l, pid_t pid, int ws, void *arg)
{
	(void)pid;
	(void)arg;
	child_status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -2;
	gk_loop_stop(l);
}

TEST(children_are_reaped_with_their_status)
{
	gk_loop *l = gk_loop_new();
	pid_t pid = fork();
	if (pid == 0)
		_exit(7);
	gk_loop_child(l, pid, on_child, NULL);
	gk_timer guard = {0};
	gk_timer_start(l, &guard, 5000, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(child_status == 7);
	CHECK(waitpid(pid, NULL, WNOHANG) < 0); /* already reaped */
	gk_loop_free(l);
}

static uint64_t last_when;
static int out_of_order, nfired;

static void
record_fire(gk_loop *l, void *arg)
{
	(void)l;
	gk_timer *t = arg;
	if (t->when_ms < last_when)
		out_of_order++;
	last_when = t->when_ms;
	nfired++;
}

TEST(many_timers_fire_in_order_with_random_stops)
{
	gk_loop *l = gk_loop_new();
	enum { N = 2000 };
	static gk_timer t[N];
	unsigned s = 12345;
	for (int i = 0; i < N; i++) {
		s = s * 1103515245u + 12345u;
		gk_timer_start(l, &t[i], (s >> 16) % 50, record_fire, &t[i]);
	}
	for (int i = 0; i < N; i += 3)
		gk_timer_stop(l, &t[i]);
	gk_timer end = {0};
	gk_timer_start(l, &end, 120, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(out_of_order == 0);
	CHECK(nfired == N - (N + 2) / 3);
	gk_loop_free(l);
}

static int hup_calls;

static void
on_eof_stop_reading(gk_loop *l, int fd, unsigned events, void *arg)
{
	(void)events;
	(void)arg;
	char b[16];
	hup_calls++;
	if (read(fd, b, sizeof b) == 0)
		gk_loop_modify(l, fd, 0); /* at EOF: no more interest */
}

/*
 * A pipe at EOF that nobody reads any more must not wake the loop: epoll
 * reports EPOLLHUP whatever the interest, and a stage draining with stdin
 * at EOF once spun at 100% CPU.  Modifying back to GK_READ watches it
 * again.
 */
TEST(an_fd_with_no_interest_left_does_not_wake_the_loop)
{
	gk_loop *l = gk_loop_new();
	int p[2];
	CHECK(pipe(p) == 0);
	close(p[1]);
	hup_calls = 0;
	CHECK(gk_loop_watch(l, p[0], GK_READ, on_eof_stop_reading, NULL) == 0);
	gk_timer end = {0};
	gk_timer_start(l, &end, 100, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(hup_calls == 1);
	CHECK(gk_loop_modify(l, p[0], GK_READ) == 0);
	gk_timer_start(l, &end, 50, stop_loop, NULL);
	gk_loop_run(l);
	CHECK(hup_calls == 2);
	gk_loop_unwatch(l, p[0]);
	close(p[0]);
	gk_loop_free(l);
}

/* A regular file (a stage's stdin redirected from one): epoll refuses it,
 * the loop calls it every turn it wants reading, without sleeping, until
 * its end; then it costs nothing. */
static size_t file_bytes;
static int file_calls;

static void
read_file_chunk(gk_loop *l, int fd, unsigned ev, void *arg)
{
	(void)arg;
	file_calls++;
	if (!(ev & GK_READ))
		return;
	char buf[7];
	ssize_t n = read(fd, buf, sizeof buf);
	if (n > 0)
		file_bytes += (size_t)n;
	else
		gk_loop_modify(l, fd, 0); /* at its end: no more interest */
}

TEST(a_regular_file_is_read_to_its_end_without_sleeping)
{
	char path[] = "/tmp/gk-test-loop-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unlink(path);
	CHECK(write(fd, "0123456789abcdefghij", 20) == 20);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	gk_loop *l = gk_loop_new();
	file_bytes = 0;
	file_calls = 0;
	CHECK(gk_loop_watch(l, fd, GK_READ, read_file_chunk, NULL) < 0);
	CHECK(gk_loop_watch_any(l, fd, GK_READ, read_file_chunk, NULL) == 0);
	gk_timer end = {0};
	gk_timer_start(l, &end, 200, stop_loop, NULL);
	clock_t c0 = clock();
	gk_loop_run(l);
	CHECK(file_bytes == 20);
	CHECK(file_calls == 4); /* 7 + 7 + 6, then the end */
	/* then it slept to the timer: a spin would take most of 200 ms */
	CHECK((double)(clock() - c0) / CLOCKS_PER_SEC < 0.05);
	gk_loop_unwatch(l, fd);
	close(fd);
	gk_loop_free(l);
}

int
main(void)
{
	RUN(timers_fire_in_deadline_order_and_stopped_ones_do_not);
	RUN(rearming_a_timer_moves_it);
	RUN(the_turn_reads_every_ready_fd_before_its_end_hook);
	RUN(signals_arrive_as_loop_events);
	RUN(children_are_reaped_with_their_status);
	RUN(many_timers_fire_in_order_with_random_stops);
	RUN(an_fd_with_no_interest_left_does_not_wake_the_loop);
	RUN(a_regular_file_is_read_to_its_end_without_sleeping);
	return UNIT_END();
}
