/*
 * dns_lookup.c: a host name to its addresses without blocking the loop
 * (dns_lookup.h).  getaddrinfo(3) would wait for the resolver, up to its
 * timeouts times its attempts, with every request of the process stalled
 * behind it; c-ares asks on non-blocking sockets that the loop watches.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "dns_lookup.h"

struct gk_dns {
	gk_loop *loop;
	ares_channel ch;
	gk_timer timer;
	unsigned gen; /* the lookup whose answer is wanted */
	bool dying;   /* in gk__dns_free: answers go nowhere */
	gk_dns_fn *fn;
	void *arg;
};

struct query {
	gk_dns *d;
	unsigned gen;
};

static void arm_timer(gk_dns *d);

static void
on_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_dns *d = arg;
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	arm_timer(d);
}

static void
arm_timer(gk_dns *d)
{
	struct timeval tv, *t = ares_timeout(d->ch, NULL, &tv);
	if (t)
		gk_timer_start(d->loop, &d->timer,
		               (uint64_t)t->tv_sec * 1000 +
		                   (uint64_t)t->tv_usec / 1000 + 1,
		               on_timer, d);
	else
		gk_timer_stop(d->loop, &d->timer);
}

static void
on_fd(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	gk_dns *d = arg;
	ares_process_fd(d->ch, ev & GK_READ ? fd : ARES_SOCKET_BAD,
	                ev & GK_WRITE ? fd : ARES_SOCKET_BAD);
	arm_timer(d);
}

static void
sock_state(void *arg, ares_socket_t fd, int readable, int writable)
{
	gk_dns *d = arg;
	unsigned ev = (readable ? GK_READ : 0) | (writable ? GK_WRITE : 0);
	if (!ev) {
		gk_loop_unwatch(d->loop, fd);
		return;
	}
	if (gk_loop_modify(d->loop, fd, ev) < 0)
		gk_loop_watch(d->loop, fd, ev, on_fd, d);
}

gk_dns *
gk__dns_new(gk_loop *loop, const char *nameserver, const char **why)
{
	static bool lib;
	if (!lib) {
		ares_library_init(ARES_LIB_INIT_ALL);
		lib = true;
	}
	gk_dns *d = gk_xcalloc(1, sizeof *d);
	d->loop = loop;
	/* Short tries: a caller that has a last good address goes on with
	 * it rather than wait long for a resolver that does not answer. */
	struct ares_options o = {.sock_state_cb = sock_state,
	                         .sock_state_cb_data = d,
	                         .timeout = 500,
	                         .tries = 2};
	if (ares_init_options(&d->ch, &o,
	                      ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
	                          ARES_OPT_TRIES) != ARES_SUCCESS) {
		*why = "unable to start c-ares";
		free(d);
		return NULL;
	}
	if (nameserver &&
	    ares_set_servers_ports_csv(d->ch, nameserver) != ARES_SUCCESS) {
		*why = "expected IP:PORT";
		ares_destroy(d->ch);
		free(d);
		return NULL;
	}
	return d;
}

static void
on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	(void)timeouts;
	struct query *q = arg;
	gk_dns *d = q->d;
	bool wanted = !d->dying && q->gen == d->gen && d->fn;
	free(q);
	gk_dns_addrs a = {.n = 0};
	/* IPv4 first: a service on "localhost" listens there far more often
	 * than on ::1. */
	for (int fam = 0; res && fam < 2; fam++)
		for (struct ares_addrinfo_node *n = res->nodes;
		     n && a.n < GK_DNS_MAX_ADDRS; n = n->ai_next) {
			const void *p;
			if (fam == 0 && n->ai_family == AF_INET)
				p = &((struct sockaddr_in *)(void *)n->ai_addr)
				         ->sin_addr;
			else if (fam == 1 && n->ai_family == AF_INET6)
				p = &((struct sockaddr_in6 *)(void *)n->ai_addr)
				         ->sin6_addr;
			else
				continue;
			if (inet_ntop(n->ai_family, p, a.addr[a.n],
			              sizeof a.addr[a.n]))
				a.n++;
		}
	if (res)
		ares_freeaddrinfo(res);
	if (!wanted)
		return;
	gk_dns_fn *fn = d->fn;
	d->fn = NULL;
	if (status == ARES_SUCCESS && a.n)
		fn(d->arg, &a, NULL);
	else
		fn(d->arg, NULL,
		   status == ARES_SUCCESS ? "no address"
		                          : ares_strerror(status));
}

void
gk__dns_lookup(gk_dns *d, const char *name, gk_dns_fn *fn, void *arg)
{
	struct query *q = gk_xcalloc(1, sizeof *q);
	q->d = d;
	q->gen = ++d->gen;
	d->fn = fn;
	d->arg = arg;
	struct ares_addrinfo_hints h = {.ai_family = AF_UNSPEC,
	                                .ai_socktype = SOCK_STREAM};
	/* May answer at once (the hosts file): fn can run inside this call. */
	ares_getaddrinfo(d->ch, name, NULL, &h, on_answer, q);
	arm_timer(d);
}

bool
gk__dns_busy(const gk_dns *d)
{
	return d->fn != NULL;
}

void
gk__dns_free(gk_dns *d)
{
	if (!d)
		return;
	d->dying = true;
	gk_timer_stop(d->loop, &d->timer);
	ares_destroy(d->ch); /* answers the pending lookups: forgotten */
	free(d);
}
