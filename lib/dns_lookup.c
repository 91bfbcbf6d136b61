/*
 * dns_lookup.c: a host name to its addresses without blocking the loop
 * (dns_lookup.h).  getaddrinfo(3) would wait for the resolver, up to its
 * timeouts times its attempts, with every request of the process stalled
 * behind it; c-ares asks on non-blocking sockets that the loop watches.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ares_loop.h"
#include "dns_lookup.h"

struct gk_dns {
	gk_ares ares;
	unsigned gen; /* the lookup whose answer is wanted */
	bool dying;   /* in gk__dns_free: answers go nowhere */
	gk_dns_fn *fn;
	void *arg;
};

struct query {
	gk_dns *d;
	unsigned gen;
};

/*
 * c-ares is loaded with dlopen(3) when the first lookup is made, as hiredis
 * is (redis_limit.c): linked, it would sit in the memory of every
 * gk-limiter, most of which never look a name up.
 */
#define GK_LIBCARES "libcares.so.2"

static struct {
	bool loaded;
	gk_ares_api api;
	__typeof__(&ares_getaddrinfo) getaddrinfo;
	__typeof__(&ares_freeaddrinfo) freeaddrinfo;
	__typeof__(&ares_strerror) strerror;
} C;

static int
cares_load(const char **why)
{
	if (C.loaded)
		return 0;
	void *h = dlopen(GK_LIBCARES, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		*why = "unable to load " GK_LIBCARES;
		return -1;
	}
#define SYM(field, name)                                        \
	if (!(*(void **)&C.field = dlsym(h, #name))) {          \
		*why = "unable to find " #name " in " GK_LIBCARES; \
		return -1;                                      \
	}
	SYM(api.library_init, ares_library_init)
	SYM(api.init_options, ares_init_options)
	SYM(api.set_servers_ports_csv, ares_set_servers_ports_csv)
	SYM(api.destroy, ares_destroy)
	SYM(api.process_fd, ares_process_fd)
	SYM(api.timeout, ares_timeout)
	SYM(getaddrinfo, ares_getaddrinfo)
	SYM(freeaddrinfo, ares_freeaddrinfo)
	SYM(strerror, ares_strerror)
#undef SYM
	C.loaded = true; /* h stays open for the life of the process */
	return 0;
}

gk_dns *
gk__dns_new(gk_loop *loop, const char *nameserver, const char **why)
{
	if (cares_load(why) < 0)
		return NULL;
	gk_dns *d = gk_xcalloc(1, sizeof *d);
	/* Short tries: a caller that has a last good address goes on with
	 * it rather than wait long for a resolver that does not answer. */
	if (gk__ares_open(&d->ares, &C.api, loop, 500, 2, nameserver, why) < 0) {
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
		C.freeaddrinfo(res);
	if (!wanted)
		return;
	gk_dns_fn *fn = d->fn;
	d->fn = NULL;
	if (status == ARES_SUCCESS && a.n)
		fn(d->arg, &a, NULL);
	else
		fn(d->arg, NULL,
		   status == ARES_SUCCESS ? "no address"
		                          : C.strerror(status));
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
	C.getaddrinfo(d->ares.ch, name, NULL, &h, on_answer, q);
	gk__ares_arm(&d->ares);
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
	gk__ares_close(&d->ares); /* answers the pending lookups: forgotten */
	free(d);
}
