/* addr.c: parsing, binding and connecting addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"

int
gk_addr_parse(const char *s, gk_addr *a, const char **why)
{
	memset(a, 0, sizeof *a);
	if (!strncmp(s, "json:", 5)) {
		a->proto = GK_PROTO_WIRE;
		s += 5;
	} else if (!strncmp(s, "http:", 5) && strncmp(s, "http://", 7)) {
		a->proto = GK_PROTO_HTTP;
		s += 5;
	}
	snprintf(a->text, sizeof a->text, "%s", s);
	if (!strncmp(s, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
		const char *p = s + 5;
		if (!*p || strlen(p) >= sizeof un->sun_path) {
			*why = "unix socket path empty or too long";
			return -1;
		}
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, p);
		strcpy(a->path, p);
		a->salen = sizeof *un;
		return 0;
	}
	char host[256];
	const char *port;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			*why = "expected [IPV6]:PORT";
			return -1;
		}
		size_t n = (size_t)(close - s - 1);
		if (n >= sizeof host) {
			*why = "host too long";
			return -1;
		}
		memcpy(host, s + 1, n);
		host[n] = 0;
		port = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon) {
			*why = "expected HOST:PORT or unix:PATH";
			return -1;
		}
		size_t n = (size_t)(colon - s);
		if (n >= sizeof host) {
			*why = "host too long";
			return -1;
		}
		memcpy(host, s, n);
		host[n] = 0;
		port = colon + 1;
	}
	char *end;
	long p = strtol(port, &end, 10);
	if (!*port || *end || p < 0 || p > 65535) {
		*why = "port must be 0-65535";
		return -1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *res;
	int e = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (e) {
		*why = gai_strerror(e);
		return -1;
	}
	/* ":8080" means every IPv4 address, as nginx's "listen 8080" does. */
	struct addrinfo *pick = res;
	if (!*host)
		for (struct addrinfo *r = res; r; r = r->ai_next)
			if (r->ai_family == AF_INET) {
				pick = r;
				break;
			}
	memcpy(&a->sa, pick->ai_addr, pick->ai_addrlen);
	a->salen = pick->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
gk_addr_listen(const gk_addr *a, int backlog, unsigned mode,
    bool share_port)
{
	int fam = a->sa.ss_family;
	int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (fam != AF_UNIX) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (share_port)
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
			    sizeof one);
		if (fam == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			    sizeof one);
	} else {
		/* A stale socket file from an earlier run: remove it, but
		 * only if nothing answers on it. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0) {
			if (connect(probe, (const struct sockaddr *)&a->sa,
			    a->salen) < 0 && errno == ECONNREFUSED)
				unlink(a->path);
			close(probe);
		}
	}
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 ||
	    (fam == AF_UNIX && mode && chmod(a->path, mode) < 0) ||
	    listen(fd, backlog) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int
gk_addr_connect(const gk_addr *a)
{
	int fd = socket(a->sa.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (a->sa.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (connect(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 &&
	    errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

void
gk_addr_peer(const struct sockaddr_storage *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else
		snprintf(buf, len, "unix");
}
