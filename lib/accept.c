/*
 * accept.c: accept(2) for the listening sockets of a stage, that keeps
 * working when the process is out of file descriptors.
 *
 * With EMFILE (or ENFILE) accept(2) leaves the connection in the kernel's
 * queue, and the level-triggered loop wakes for it again at once: the
 * process spins at 100% CPU, and the client waits, unanswered, until fds
 * free (or forever).  As libuv and others do, one fd is kept in reserve:
 * when accept fails for want of fds, the reserve is closed, the
 * connection accepted into its place, refused by the caller (a few bytes,
 * then close), and the reserve opened again.  The queue keeps moving, a client
 * past the limit learns so at once, and an error event (at most one a second,
 * with a count) tells the operator that the fd limit is too low for the
 * connections allowed.  When even that fails (ENFILE, or fds taken since),
 * -1 comes back with errno EMFILE or ENFILE, for the caller to stop
 * accepting for a while: the connection is still queued, and the loop would
 * wake for it every turn.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "log_gate.h"
#include "runtime.h"

static int reserve_fd = -1;
static gk_log_gate emfile_gate;

void
gk_accept_reserve(void)
{
	if (reserve_fd < 0)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int
gk_accept(int lfd, struct sockaddr_storage *sa, socklen_t *salen, bool *shed)
{
	*shed = false;
	gk_accept_reserve();
	for (;;) {
		int fd = accept4(lfd, (struct sockaddr *)sa, salen,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if ((errno != EMFILE && errno != ENFILE) || reserve_fd < 0)
			return -1;
		int why = errno;
		close(reserve_fd);
		reserve_fd = -1;
		fd = accept4(lfd, (struct sockaddr *)sa, salen,
		             SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno == EAGAIN ? why : errno;
			gk_accept_reserve();
			errno = e;
			return -1;
		}
		gk_log_gate_error(&emfile_gate,
		                  "out of file descriptors: connection refused",
		                  strerror(why));
		*shed = true;
		return fd;
	}
}

/*
 * Out of fds even with the reserve freed, a connection stays in the
 * kernel's queue and its listening socket, still readable, would wake every
 * turn: 100% CPU for as long as it lasts.  Accepting stops for this long
 * instead, as nginx does.
 */
#define ACCEPT_PAUSE_MS 100

void
gk__accept_pause_init(gk_accept_pause *p, gk_loop *loop, const int *fds,
    const int *nfds, gk_series *pauses)
{
	memset(p, 0, sizeof *p);
	p->loop = loop;
	p->fds = fds;
	p->nfds = nfds;
	p->pauses = pauses;
}

static void
accept_resume(gk_loop *loop, void *arg)
{
	gk_accept_pause *p = arg;
	p->paused = false;
	for (int i = 0; i < *p->nfds; i++)
		gk_loop_modify(loop, p->fds[i], GK_READ);
}

void
gk__accept_pause(gk_accept_pause *p, int why)
{
	if (p->paused)
		return;
	p->paused = true;
	for (int i = 0; i < *p->nfds; i++)
		gk_loop_modify(p->loop, p->fds[i], 0);
	gk_counter_add(p->pauses, 1);
	gk_log_gate_error(&p->gate, "out of file descriptors: accepting paused",
	    strerror(why));
	gk_timer_start(p->loop, &p->timer, ACCEPT_PAUSE_MS, accept_resume, p);
}

void
gk__accept_pause_stop(gk_accept_pause *p)
{
	if (p->loop)
		gk_timer_stop(p->loop, &p->timer);
	p->paused = false;
}

