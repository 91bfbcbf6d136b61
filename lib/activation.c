/*
 * activation.c: systemd socket activation and readiness notification,
 * implemented from the documented protocols (sd_listen_fds(3),
 * sd_notify(3)) rather than linking libsystemd: both are a few lines, and
 * the toolkit then runs the same under s6 or any supervisor that speaks them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gokit.h"

int
gk_listen_fds(char ***names)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *fdnames = getenv("LISTEN_FDNAMES");
	int n = 0;
	if (names)
		*names = NULL;
	if (pid && fds) {
		char *end;
		long p = strtol(pid, &end, 10);
		long k = strtol(fds, NULL, 10);
		if (*end == 0 && p == (long)getpid() && k > 0 && k < 1024)
			n = (int)k;
	}
	if (n && names) {
		char **v = gk_xcalloc((size_t)n + 1, sizeof *v);
		const char *s = fdnames;
		for (int i = 0; i < n; i++) {
			const char *colon = s ? strchr(s, ':') : NULL;
			size_t len = s ? (colon ? (size_t)(colon - s) : strlen(s)) : 0;
			v[i] = gk_xmalloc(len + 1);
			if (len)
				memcpy(v[i], s, len);
			v[i][len] = 0;
			s = colon ? colon + 1 : NULL;
		}
		*names = v;
	}
	for (int i = 0; i < n; i++)
		fcntl(3 + i, F_SETFD, FD_CLOEXEC);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return n;
}

/* Taken from the environment once, so children do not notify for us. */
static char *notify_path;
static bool notify_taken;

void
gk_notify_take(void)
{
	if (notify_taken)
		return;
	notify_taken = true;
	const char *p = getenv("NOTIFY_SOCKET");
	if (p && *p)
		notify_path = gk_xstrdup(p);
	unsetenv("NOTIFY_SOCKET");
}

int
gk_notify(const char *state)
{
	const char *path = notify_taken ? notify_path : getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	if (len >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
		return -1;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = 0; /* abstract namespace */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	ssize_t r = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
	    (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	int e = errno;
	close(fd);
	errno = e;
	return r < 0 ? -1 : 1;
}

uint64_t
gk_watchdog_interval_ms(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	if (!usec)
		return 0;
	if (pid && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	unsigned long long u = strtoull(usec, NULL, 10);
	if (!u)
		return 0;
	uint64_t ms = u / 2000u;
	return ms ? ms : 1;
}
