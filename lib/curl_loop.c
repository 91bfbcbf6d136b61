/*
 * curl_loop.c: the multi socket API on our loop.  libcurl tells us which
 * fds to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
 * (CURLMOPT_TIMERFUNCTION); we tell it what happened
 * (curl_multi_socket_action) and collect finished transfers.
 *
 * libcurl stops watching a connection's socket when its transfer ends
 * (CURL_POLL_REMOVE) and watches it again when the next transfer reuses
 * it: two epoll_ctl calls a request.  The sockets we open ourselves stay
 * in the epoll set while idle, watched for reading only, so that a peer
 * that closes an idle connection is seen at once; they leave it when
 * libcurl closes them, which it does through our close callback.
 *
 * libcurl has no call that closes an idle connection of its cache (an
 * item of its TODO; CURLOPT_MAXAGE_CONN too is applied only when a
 * connection is looked for): it finds a dead one when it looks for a
 * connection to reuse, or prunes the cache as a transfer starts (at most
 * once a second).  Until then the socket would sit in CLOSE_WAIT, for as
 * long as no request comes.  So when the peer of an idle socket has closed,
 * we shut the socket down ourselves: our FIN ends the TCP connection at
 * once, and libcurl, whose liveness check then sees the hang-up, closes
 * the descriptor through our close callback the next time it looks.
 * An idle HTTP/1.x connection on which bytes arrive (a 408, a body the
 * answer did not announce) is shut down at once too: nothing may come
 * between answers, libcurl would not reuse it, and once we stopped
 * watching it the peer's close that follows would go unseen.
 * The descriptor stays ours until then, so its number cannot be given
 * to another socket behind libcurl's back (closing it here would).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "curl_loop.h"

struct transfer {
	gk_curl_done_fn *done;
	void *arg;
	gk_curl *c;
};

/* FD_IDLE_MUX: idle HTTP/2, on which the peer may speak (a PING).
 * FD_GONE: idle, its peer closed it (or spoke out of turn), shut down by
 * us; libcurl has yet to close it. */
enum { FD_FOREIGN = 0, FD_ACTIVE, FD_IDLE, FD_IDLE_MUX, FD_GONE };

struct gk_curl {
	gk_loop *loop;
	CURLM *multi;
	gk_timer timer;
	int running;
	unsigned char *fdstate; /* by fd: sockets we opened */
	size_t nfd;
	gk_curl_sock_fn *on_open, *on_close;
	void *hook_arg;
};

static unsigned char
fd_state(const gk_curl *c, curl_socket_t s)
{
	return s >= 0 && (size_t)s < c->nfd ? c->fdstate[s] : FD_FOREIGN;
}

static void check_done(gk_curl *c);

/*
 * The peer of a readable idle socket has closed the connection (FIN or
 * reset), rather than sent bytes on one that stays open, such as an
 * HTTP/2 PING, which libcurl reads when it next uses the connection.
 */
static bool
peer_closed(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0)
		return true;
	if (n < 0)
		return errno != EAGAIN && errno != EWOULDBLOCK &&
		       errno != EINTR;
	/* Bytes wait, and perhaps the FIN after them (a 408 and a close). */
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	       ti.tcpi_state == TCP_CLOSE_WAIT;
}

/* Our end of an idle connection, now (see the top); the close hook is
 * told: the connection is gone, whatever libcurl still holds. */
static void
end_idle(gk_curl *c, int fd)
{
	gk_loop_unwatch(c->loop, fd);
	shutdown(fd, SHUT_RDWR);
	c->fdstate[fd] = FD_GONE;
	if (c->on_close)
		c->on_close(c->hook_arg, fd);
}

void
gk_curl_drop_idle(gk_curl *c, bool (*match)(void *arg, int fd), void *arg)
{
	for (size_t fd = 0; fd < c->nfd; fd++)
		if ((c->fdstate[fd] == FD_IDLE ||
		    c->fdstate[fd] == FD_IDLE_MUX) && match(arg, (int)fd))
			end_idle(c, (int)fd);
}

static void
on_fd(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	gk_curl *c = arg;
	unsigned char state = fd_state(c, fd);
	if (state == FD_IDLE || state == FD_IDLE_MUX) {
		/* Readable while idle: stop watching either way (libcurl
		 * reads an HTTP/2 peer's frames when it next uses the
		 * connection).  When the peer closed it, or sent bytes on an
		 * HTTP/1.x one, end our side now. */
		if (state == FD_IDLE || peer_closed(fd))
			end_idle(c, fd);
		else
			gk_loop_unwatch(loop, fd);
		return;
	}
	int what = (ev & GK_READ ? CURL_CSELECT_IN : 0) |
	    (ev & GK_WRITE ? CURL_CSELECT_OUT : 0);
	curl_multi_socket_action(c->multi, fd, what, &c->running);
	check_done(c);
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)socketp;
	gk_curl *c = userp;
	if (what == CURL_POLL_REMOVE) {
		if (fd_state(c, s) == FD_FOREIGN)
			gk_loop_unwatch(c->loop, s);
		else if (fd_state(c, s) != FD_GONE) {
			/* The version of the transfer that used it last; when
			 * unknown, HTTP/1.x: at worst an HTTP/2 connection is
			 * closed on a PING, and opened again. */
			long v = 0;
			if (easy)
				curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION,
				    &v);
			c->fdstate[s] =
			    v >= CURL_HTTP_VERSION_2_0 ? FD_IDLE_MUX : FD_IDLE;
			gk_loop_modify(c->loop, s, GK_READ);
		}
		return 0;
	}
	if (fd_state(c, s) == FD_IDLE || fd_state(c, s) == FD_IDLE_MUX)
		c->fdstate[s] = FD_ACTIVE;
	unsigned ev = (what & CURL_POLL_IN ? GK_READ : 0) |
	    (what & CURL_POLL_OUT ? GK_WRITE : 0);
	if (gk_loop_modify(c->loop, s, ev) < 0)
		gk_loop_watch(c->loop, s, ev, on_fd, c);
	return 0;
}

static void
on_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_curl *c = arg;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &c->running);
	check_done(c);
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	gk_curl *c = userp;
	if (timeout_ms < 0)
		gk_timer_stop(c->loop, &c->timer);
	else
		gk_timer_start(c->loop, &c->timer, (uint64_t)timeout_ms,
		    on_timer, c);
	return 0;
}

static void
check_done(gk_curl *c)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *easy = m->easy_handle;
		CURLcode result = m->data.result;
		struct transfer *t = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		curl_multi_remove_handle(c->multi, easy);
		if (t) {
			gk_curl_done_fn *done = t->done;
			void *arg = t->arg;
			free(t);
			curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
			done(easy, result, arg);
		}
	}
}

gk_curl *
gk_curl_new(gk_loop *loop, long max_host_connections)
{
	static bool global;
	if (!global) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		global = true;
	}
	gk_curl *c = gk_xcalloc(1, sizeof *c);
	c->loop = loop;
	c->multi = curl_multi_init();
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)GK_CURL_MAX_IDLE);
	if (max_host_connections > 0)
		curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
		    max_host_connections);
	curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	return c;
}

void
gk_curl_free(gk_curl *c)
{
	if (!c)
		return;
	gk_timer_stop(c->loop, &c->timer);
	curl_multi_cleanup(c->multi);
	free(c->fdstate);
	free(c);
}

static curl_socket_t
open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	(void)purpose;
	struct transfer *t = arg;
	gk_curl *c = t->c;
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd < 0)
		return CURL_SOCKET_BAD;
	if ((size_t)fd >= c->nfd) {
		size_t n = c->nfd ? c->nfd : 64;
		while (n <= (size_t)fd)
			n *= 2;
		c->fdstate = gk_xrealloc(c->fdstate, n);
		memset(c->fdstate + c->nfd, 0, n - c->nfd);
		c->nfd = n;
	}
	c->fdstate[fd] = FD_ACTIVE;
	if (c->on_open)
		c->on_open(t->arg, fd);
	return fd;
}

static int
close_socket(void *arg, curl_socket_t fd)
{
	gk_curl *c = arg;
	unsigned char state = fd_state(c, fd);
	if (state != FD_FOREIGN) {
		gk_loop_unwatch(c->loop, fd);
		c->fdstate[fd] = FD_FOREIGN;
	}
	/* (a socket shut down while idle was reported then) */
	if (c->on_close && state != FD_GONE)
		c->on_close(c->hook_arg, fd);
	return close(fd);
}

void
gk_curl_socket_hooks(gk_curl *c, gk_curl_sock_fn *on_open,
    gk_curl_sock_fn *on_close, void *hook_arg)
{
	c->on_open = on_open;
	c->on_close = on_close;
	c->hook_arg = hook_arg;
}

int
gk_curl_start(gk_curl *c, CURL *easy, gk_curl_done_fn *done, void *arg)
{
	struct transfer *t = gk_xmalloc(sizeof *t);
	t->done = done;
	t->arg = arg;
	t->c = c;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, t);
	curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
	curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, c);
	if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) {
		free(t);
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		return -1;
	}
	return 0;
}

void
gk_curl_cancel(gk_curl *c, CURL *easy)
{
	struct transfer *t = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
	curl_multi_remove_handle(c->multi, easy);
	free(t);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
}

int
gk_curl_running(const gk_curl *c)
{
	return c->running;
}
