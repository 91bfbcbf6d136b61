/*
 * ares_loop.c: a c-ares channel on a gk_loop (ares_loop.h).  c-ares says
 * which sockets to watch through its socket-state callback and how long it
 * may wait through ares_timeout; both are handed to the loop.
 */
#include <stdlib.h>
#include <sys/time.h>

#include "ares_loop.h"

static void
on_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_ares *a = arg;
	a->api->process_fd(a->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	gk__ares_arm(a);
}

void
gk__ares_arm(gk_ares *a)
{
	struct timeval tv, *t = a->api->timeout(a->ch, NULL, &tv);
	if (t)
		gk_timer_start(a->loop, &a->timer,
		    (uint64_t)t->tv_sec * 1000 + (uint64_t)t->tv_usec / 1000 + 1,
		    on_timer, a);
	else
		gk_timer_stop(a->loop, &a->timer);
}

static void
on_fd(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	gk_ares *a = arg;
	a->api->process_fd(a->ch, ev & GK_READ ? fd : ARES_SOCKET_BAD,
	    ev & GK_WRITE ? fd : ARES_SOCKET_BAD);
	gk__ares_arm(a);
}

static void
sock_state(void *arg, ares_socket_t fd, int readable, int writable)
{
	gk_ares *a = arg;
	unsigned ev = (readable ? GK_READ : 0) | (writable ? GK_WRITE : 0);
	if (!ev) {
		gk_loop_unwatch(a->loop, fd);
		return;
	}
	if (gk_loop_modify(a->loop, fd, ev) < 0)
		gk_loop_watch(a->loop, fd, ev, on_fd, a);
}

int
gk__ares_open(gk_ares *a, const gk_ares_api *api, gk_loop *loop,
    int timeout_ms, int tries, const char *nameserver, const char **why)
{
	static bool lib;
	if (!lib) {
		api->library_init(ARES_LIB_INIT_ALL);
		lib = true;
	}
	a->api = api;
	a->loop = loop;
	a->ch = NULL;
	struct ares_options o = {.sock_state_cb = sock_state,
	    .sock_state_cb_data = a, .timeout = timeout_ms, .tries = tries};
	if (api->init_options(&a->ch, &o, ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS) {
		a->ch = NULL;
		*why = "unable to start c-ares";
		return -1;
	}
	if (nameserver &&
	    api->set_servers_ports_csv(a->ch, nameserver) != ARES_SUCCESS) {
		*why = "bad --nameserver (expected IP:PORT)";
		api->destroy(a->ch);
		a->ch = NULL;
		return -1;
	}
	return 0;
}

void
gk__ares_close(gk_ares *a)
{
	if (!a->ch)
		return;
	gk_timer_stop(a->loop, &a->timer);
	a->api->destroy(a->ch);
	a->ch = NULL;
}
