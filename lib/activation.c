/*
 * activation.c: systemd socket activation and readiness notification,
 * implemented from the documented protocols (sd_listen_fds(3),
 * sd_notify(3)) rather than linking libsystemd: both are a few lines, and
 * the toolkit then runs the same under s6 or any supervisor that speaks them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gokit.h"

/* A decimal number from 1 to max, digits only; else 0. */
static long
positive(const char *s, long max)
{
	long v = 0;
	if (!*s)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
			return 0;
		v = v * 10 + (*s - '0');
	}
	return v;
}

/*
 * As sd_listen_fds_with_names(3) reads them: LISTEN_PID unset, or another
 * process's, passes nothing (whatever LISTEN_FDS holds); for us, a
 * LISTEN_PID or LISTEN_FDS that is not a number, LISTEN_FDS below 1, and
 * LISTEN_FDNAMES naming more or fewer sockets than LISTEN_FDS passes are
 * errors, as is a passed fd that is not open.  Taking them for something
 * (LISTEN_FDS=1x as 1, a missing name as none) would serve on sockets
 * nobody meant, or with the wrong protocol.
 */
static int
take_fds(char ***names, char *why, size_t whylen)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *fdnames = getenv("LISTEN_FDNAMES");
	if (!pid)
		return 0;
	long p = positive(pid, INT_MAX);
	if (!p) {
		snprintf(why, whylen, "bad LISTEN_PID: %.64s (expected a process "
		    "id)", pid);
		return -1;
	}
	if (p != (long)getpid() || !fds)
		return 0;
	long n = positive(fds, INT_MAX - 3);
	if (!n) {
		snprintf(why, whylen, "bad LISTEN_FDS: %.64s (expected a number "
		    "of sockets from 1)", fds);
		return -1;
	}
	if (fdnames) {
		/* ':' separates names; an empty one is a name ("a::b" is 3),
		 * and "" is none, as systemd splits them. */
		long k = *fdnames ? 1 : 0;
		for (const char *c = fdnames; *c; c++)
			k += *c == ':';
		if (k != n) {
			snprintf(why, whylen, "LISTEN_FDNAMES names %ld socket%s "
			    "and LISTEN_FDS passes %ld: %.64s", k,
			    k == 1 ? "" : "s", n, fdnames);
			return -1;
		}
	}
	for (long i = 0; i < n; i++)
		if (fcntl(3 + (int)i, F_SETFD, FD_CLOEXEC) < 0) {
			snprintf(why, whylen, "LISTEN_FDS passes %ld socket%s "
			    "but fd %ld is not open", n, n == 1 ? "" : "s",
			    3 + i);
			return -1;
		}
	if (names) {
		char **v = gk_xcalloc((size_t)n + 1, sizeof *v);
		const char *s = fdnames;
		for (long i = 0; i < n; i++) {
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
	return (int)n;
}

int
gk_listen_fds(char ***names, char *why, size_t whylen)
{
	if (names)
		*names = NULL;
	int n = take_fds(names, why, whylen);
	/* Unset whatever came of them, so that no child takes them. */
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
	uint64_t u, p;
	/* As sd_watchdog_enabled(3): whole numbers only (WATCHDOG_PID=12x
	 * is not pid 12), another process's variables are not ours. */
	if (!usec || gk_parse_uint(usec, 1, UINT64_MAX, &u) < 0)
		return 0;
	if (pid && (gk_parse_uint(pid, 1, UINT64_MAX, &p) < 0 ||
	    p != (uint64_t)getpid()))
		return 0;
	uint64_t ms = u / 2000u;
	return ms ? ms : 1;
}
