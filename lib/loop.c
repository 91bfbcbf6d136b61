/*
 * loop.c: the event loop.
 *
 * A small epoll loop of our own rather than libev or libuv: the property the
 * performance model rests on is the shape of a turn (drain every readable fd,
 * then write each fd once), and that is easiest to guarantee, and to see, in
 * a loop of a few hundred lines.  Timers live in a binary heap of structures
 * the caller owns (one per request, no allocation); signals arrive through
 * a signalfd, so handlers run in the loop like any other event; children are
 * reaped on SIGCHLD.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"

struct watch {
	gk_io_fn *fn;
	void *arg;
	unsigned events;
	bool parked; /* out of the epoll set while events is 0 */
	bool always; /* epoll cannot watch it (a regular file): always ready */
};

struct child {
	pid_t pid;
	gk_child_fn *fn;
	void *arg;
};

struct turn_hook {
	gk_turn_fn *fn;
	void *arg;
};

struct gk_loop {
	int epfd;
	bool stop;
	uint64_t now, now_us, real_ms; /* cached at the start of each turn */
	struct watch *watch;
	int nwatch;
	gk_timer **heap; /* 1-based */
	size_t nheap, capheap;
	int sigfd;
	sigset_t sigmask;
	struct {
		gk_signal_fn *fn;
		void *arg;
	} sig[65];
	struct child *child;
	size_t nchild, capchild;
	struct turn_hook hook[8];
	int nhook;
	int always[8]; /* fds epoll refused, called every turn they want */
	int nalways;
};

uint64_t
gk_monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
gk_monotonic_ms(void)
{
	return gk_monotonic_us() / 1000u;
}

uint64_t
gk_realtime_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
gk_realtime_ms(void)
{
	return gk_realtime_us() / 1000u;
}

static void update_clock(gk_loop *l);

gk_loop *
gk_loop_new(void)
{
	gk_loop *l = gk_xcalloc(1, sizeof *l);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		gk_fatal(GK_EXIT_OSERR, "unable to create epoll: %s",
		    strerror(errno));
	l->sigfd = -1;
	sigemptyset(&l->sigmask);
	update_clock(l);
	return l;
}

void
gk_loop_free(gk_loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	if (l->sigfd >= 0)
		close(l->sigfd);
	free(l->watch);
	free(l->heap);
	free(l->child);
	free(l);
}

static uint32_t
to_epoll(unsigned ev)
{
	return (ev & GK_READ ? EPOLLIN | EPOLLRDHUP : 0) |
	    (ev & GK_WRITE ? EPOLLOUT : 0);
}

static int watch(gk_loop *l, int fd, unsigned events, gk_io_fn *fn,
    void *arg, bool any);

int
gk_loop_watch(gk_loop *l, int fd, unsigned events, gk_io_fn *fn, void *arg)
{
	return watch(l, fd, events, fn, arg, false);
}

int
gk_loop_watch_any(gk_loop *l, int fd, unsigned events, gk_io_fn *fn,
    void *arg)
{
	return watch(l, fd, events, fn, arg, true);
}

static int
watch(gk_loop *l, int fd, unsigned events, gk_io_fn *fn, void *arg, bool any)
{
	if (fd >= l->nwatch) {
		int n = l->nwatch ? l->nwatch : 64;
		while (n <= fd)
			n *= 2;
		l->watch = gk_xrealloc(l->watch, (size_t)n * sizeof *l->watch);
		memset(l->watch + l->nwatch, 0,
		    (size_t)(n - l->nwatch) * sizeof *l->watch);
		l->nwatch = n;
	}
	struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		/*
		 * A regular file (a stage's stdin redirected from one) or
		 * /dev/null: epoll says EPERM, and reading or writing never
		 * blocks.  With gk_loop_watch_any it is called every turn it
		 * has interest, the loop not sleeping meanwhile.
		 */
		if (!any || errno != EPERM || l->nalways ==
		    (int)(sizeof l->always / sizeof l->always[0]))
			return -1;
		l->always[l->nalways++] = fd;
		l->watch[fd] = (struct watch){fn, arg, events, false, true};
		return 0;
	}
	/* Added to learn whether epoll can watch it at all (above), then
	 * parked while nobody wants its events: EPOLLERR and EPOLLHUP come
	 * whatever the interest, so a stdout whose reader exited would wake
	 * every turn (a stage spun at 100% CPU until its stdin closed). */
	bool parked = !events && epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) == 0;
	l->watch[fd] = (struct watch){fn, arg, events, parked, false};
	return 0;
}

/* Whether an fd epoll refused wants a call this turn. */
static bool
always_due(const gk_loop *l)
{
	for (int i = 0; i < l->nalways; i++)
		if (l->watch[l->always[i]].events)
			return true;
	return false;
}

int
gk_loop_modify(gk_loop *l, int fd, unsigned events)
{
	if (fd < 0 || fd >= l->nwatch || !l->watch[fd].fn)
		return -1;
	struct watch *w = &l->watch[fd];
	if (w->events == events)
		return 0;
	if (w->always) {
		w->events = events;
		return 0;
	}
	/*
	 * An fd nobody wants events from leaves the epoll set: epoll reports
	 * EPOLLHUP whatever the interest, so a pipe at EOF left in the set
	 * with no interest would wake every turn (a drain spun at 100% CPU).
	 */
	if (!events) {
		if (!w->parked && epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) < 0)
			return -1;
		w->parked = true;
		w->events = 0;
		return 0;
	}
	struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
	if (epoll_ctl(l->epfd, w->parked ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd,
	        &ev) < 0)
		return -1;
	w->parked = false;
	w->events = events;
	return 0;
}

void
gk_loop_unwatch(gk_loop *l, int fd)
{
	if (fd < 0 || fd >= l->nwatch || !l->watch[fd].fn)
		return;
	if (l->watch[fd].always) {
		for (int i = 0; i < l->nalways; i++)
			if (l->always[i] == fd)
				l->always[i] = l->always[--l->nalways];
	} else if (!l->watch[fd].parked)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	l->watch[fd].fn = NULL;
}

/* Timers: a binary min-heap on when_ms, 1-based, heap_index kept in each. */

static void
heap_set(gk_loop *l, size_t i, gk_timer *t)
{
	l->heap[i] = t;
	t->heap_index = i;
}

static void
heap_up(gk_loop *l, size_t i)
{
	gk_timer *t = l->heap[i];
	while (i > 1 && l->heap[i / 2]->when_ms > t->when_ms) {
		heap_set(l, i, l->heap[i / 2]);
		i /= 2;
	}
	heap_set(l, i, t);
}

static void
heap_down(gk_loop *l, size_t i)
{
	gk_timer *t = l->heap[i];
	for (;;) {
		size_t c = 2 * i;
		if (c > l->nheap)
			break;
		if (c + 1 <= l->nheap &&
		    l->heap[c + 1]->when_ms < l->heap[c]->when_ms)
			c++;
		if (l->heap[c]->when_ms >= t->when_ms)
			break;
		heap_set(l, i, l->heap[c]);
		i = c;
	}
	heap_set(l, i, t);
}

void
gk_timer_stop(gk_loop *l, gk_timer *t)
{
	size_t i = t->heap_index;
	if (!i)
		return;
	t->heap_index = 0;
	gk_timer *last = l->heap[l->nheap--];
	if (i <= l->nheap) {
		heap_set(l, i, last);
		heap_up(l, i);
		heap_down(l, last->heap_index);
	}
}

void
gk_timer_start(gk_loop *l, gk_timer *t, uint64_t ms, gk_timer_fn *fn,
    void *arg)
{
	gk_timer_stop(l, t);
	t->when_ms = gk_loop_now(l) + ms;
	t->fn = fn;
	t->arg = arg;
	if (l->nheap + 1 >= l->capheap) {
		l->capheap = l->capheap ? l->capheap * 2 : 64;
		l->heap = gk_xrealloc(l->heap, l->capheap * sizeof *l->heap);
	}
	l->nheap++;
	heap_set(l, l->nheap, t);
	heap_up(l, l->nheap);
}

bool
gk_timer_armed(const gk_timer *t)
{
	return t->heap_index != 0;
}

uint64_t
gk_loop_now(gk_loop *l)
{
	return l->now;
}

uint64_t
gk_loop_now_us(gk_loop *l)
{
	return l->now_us;
}

uint64_t
gk_loop_realtime_ms(gk_loop *l)
{
	return l->real_ms;
}

static void
update_clock(gk_loop *l)
{
	l->now_us = gk_monotonic_us();
	l->now = l->now_us / 1000u;
	l->real_ms = gk_realtime_ms();
}

static void reap_children(gk_loop *l);

static void
on_signalfd(gk_loop *l, int fd, unsigned events, void *arg)
{
	(void)events;
	(void)arg;
	struct signalfd_siginfo si[16];
	ssize_t n;
	while ((n = read(fd, si, sizeof si)) > 0) {
		for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
			int s = (int)si[i].ssi_signo;
			if (s == SIGCHLD)
				reap_children(l);
			else if (s > 0 && s < 65 && l->sig[s].fn)
				l->sig[s].fn(l, s, l->sig[s].arg);
		}
		if ((size_t)n < sizeof si)
			break;
	}
}

static int
add_signal(gk_loop *l, int signo)
{
	sigaddset(&l->sigmask, signo);
	if (sigprocmask(SIG_BLOCK, &l->sigmask, NULL) < 0)
		return -1;
	int fd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (l->sigfd < 0) {
		l->sigfd = fd;
		if (gk_loop_watch(l, fd, GK_READ, on_signalfd, NULL) < 0)
			return -1;
	}
	return 0;
}

int
gk_loop_signal(gk_loop *l, int signo, gk_signal_fn *fn, void *arg)
{
	if (signo <= 0 || signo >= 65)
		return -1;
	l->sig[signo].fn = fn;
	l->sig[signo].arg = arg;
	return add_signal(l, signo);
}

void
gk_loop_child(gk_loop *l, pid_t pid, gk_child_fn *fn, void *arg)
{
	if (!sigismember(&l->sigmask, SIGCHLD))
		add_signal(l, SIGCHLD);
	if (l->nchild == l->capchild) {
		l->capchild = l->capchild ? l->capchild * 2 : 8;
		l->child = gk_xrealloc(l->child, l->capchild * sizeof *l->child);
	}
	l->child[l->nchild++] = (struct child){pid, fn, arg};
	/* It may have exited before we asked: look now. */
	reap_children(l);
}

static void
reap_children(gk_loop *l)
{
	for (size_t i = 0; i < l->nchild;) {
		int st;
		pid_t pid = waitpid(l->child[i].pid, &st, WNOHANG);
		if (pid == l->child[i].pid) {
			struct child c = l->child[i];
			l->child[i] = l->child[--l->nchild];
			c.fn(l, c.pid, st, c.arg);
			continue;
		}
		i++;
	}
}

void
gk_loop_on_turn_end(gk_loop *l, gk_turn_fn *fn, void *arg)
{
	if (l->nhook < (int)(sizeof l->hook / sizeof l->hook[0]))
		l->hook[l->nhook++] = (struct turn_hook){fn, arg};
}

void
gk_loop_stop(gk_loop *l)
{
	l->stop = true;
}

static void
run_timers(gk_loop *l)
{
	while (l->nheap && l->heap[1]->when_ms <= l->now) {
		gk_timer *t = l->heap[1];
		gk_timer_stop(l, t);
		t->fn(l, t->arg);
	}
}

int
gk_loop_run(gk_loop *l)
{
	struct epoll_event ev[256];
	gk_events_set_batching(true);
	l->stop = false;
	int due = gk__events_due_ms(); /* events held for a batch */
	while (!l->stop) {
		int timeout = -1;
		if (l->nheap) {
			uint64_t now = gk_monotonic_ms();
			uint64_t when = l->heap[1]->when_ms;
			timeout = when <= now ? 0
			    : when - now > 60000 ? 60000
						 : (int)(when - now);
		}
		if (due >= 0 && (timeout < 0 || due < timeout))
			timeout = due;
		if (l->nalways && always_due(l))
			timeout = 0;
		int n = epoll_wait(l->epfd, ev, 256, timeout);
		/* Interrupted: stopped and continued (Ctrl-Z and fg, SIGSTOP,
		 * a debugger).  What came meanwhile is read before the
		 * timers that came due, as after any long turn: an answer
		 * waiting in a pipe is not timed out for the stop. */
		if (n < 0 && errno == EINTR)
			n = epoll_wait(l->epfd, ev, 256, 0);
		if (n < 0 && errno != EINTR) {
			gk_events_set_batching(false);
			return -1;
		}
		update_clock(l);
		for (int i = 0; i < n; i++) {
			int fd = ev[i].data.fd;
			if (fd >= l->nwatch || !l->watch[fd].fn)
				continue;
			unsigned e = 0;
			if (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP |
			    EPOLLERR))
				e |= GK_READ;
			if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				e |= GK_WRITE;
			l->watch[fd].fn(l, fd, e, l->watch[fd].arg);
		}
		for (int i = 0; i < l->nalways; i++) {
			int fd = l->always[i];
			struct watch *w = &l->watch[fd];
			if (w->fn && w->events)
				w->fn(l, fd, w->events & (GK_READ | GK_WRITE),
				    w->arg);
		}
		run_timers(l);
		for (int i = 0; i < l->nhook; i++)
			l->hook[i].fn(l, l->hook[i].arg);
		due = gk__events_turn_end();
	}
	gk_events_set_batching(false);
	gk_events_flush();
	return 0;
}
