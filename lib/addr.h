/* addr.h: listening and connecting addresses (internal). */
#ifndef GK_ADDR_H
#define GK_ADDR_H

#include <sys/socket.h>

#include "gokit.h"
#include "log_gate.h"

enum gk_addr_proto {
	GK_PROTO_DEFAULT = 0, /* what the stage speaks by default */
	GK_PROTO_HTTP,        /* http:HOST:PORT */
	GK_PROTO_WIRE,        /* json:HOST:PORT, or unix:PATH on a wire stage */
};

typedef struct gk_addr {
	enum gk_addr_proto proto;
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[300]; /* as the user wrote it, without the proto prefix */
	char path[108]; /* unix socket path, or "" */
} gk_addr;

/*
 * "unix:/run/x.sock", "127.0.0.1:8080", ":8080" (all IPv4 addresses),
 * "[::1]:8080", "localhost:80", with an optional "json:" or "http:" prefix.
 * Returns 0, or -1 with *why set.
 */
int gk_addr_parse(const char *s, gk_addr *a, const char **why);
/*
 * A nonblocking, close-on-exec listening socket; -1 with errno.  With
 * share_port, other sockets that ask the same may bind the port too
 * (SO_REUSEPORT: a stack per CPU on one port); without, the port is ours
 * alone and a second binder gets EADDRINUSE.
 */
int gk_addr_listen(const gk_addr *a, int backlog, unsigned mode,
    bool share_port);
/* Start a nonblocking connect; -1 with errno (EINPROGRESS is success). */
int gk_addr_connect(const gk_addr *a);
/*
 * accept4(2) a connection from listening socket lfd, nonblocking and
 * close-on-exec (sa and salen may be NULL); -1 when there is none (or
 * another error).  Out of file descriptors, the connection is accepted
 * into the fd kept in reserve, an error event says so (at most one a
 * second) and *shed is set: the caller refuses it (a 503, or nothing),
 * closes it and calls gk_accept_reserve() before it accepts again
 * (accept.c).
 */
int gk_accept(int lfd, struct sockaddr_storage *sa, socklen_t *salen,
    bool *shed);
/* Keep one fd in reserve for gk_accept; call before fds run out. */
void gk_accept_reserve(void);
/*
 * When gk_accept fails with EMFILE or ENFILE: the listening sockets
 * fds[0..*nfds) (the caller's, read at each pause and resume) are not
 * watched for 100 ms, the pause counted in pauses and logged at most once
 * a second.  Stop it before those sockets are closed.
 */
typedef struct gk_accept_pause {
	gk_loop *loop;
	const int *fds;
	const int *nfds;
	gk_timer timer;
	bool paused;
	gk_series *pauses;
	gk_log_gate gate;
} gk_accept_pause;
void gk__accept_pause_init(gk_accept_pause *p, gk_loop *loop, const int *fds,
    const int *nfds, gk_series *pauses);
void gk__accept_pause(gk_accept_pause *p, int why);
void gk__accept_pause_stop(gk_accept_pause *p);
/* "127.0.0.1:5555" of a peer, into buf. */
void gk_addr_peer(const struct sockaddr_storage *sa, char *buf, size_t len);

#endif
