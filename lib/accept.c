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
