/*
 * dns_lookup.h: one host name to its addresses, as getaddrinfo(3) finds
 * them (the hosts file, then DNS), with c-ares on the caller's loop: the
 * loop never waits on a resolver (internal to libgokit).
 */
#ifndef GK_DNS_LOOKUP_H
#define GK_DNS_LOOKUP_H

#include <netinet/in.h>

#include "gokit.h"

#define GK_DNS_MAX_ADDRS 8

typedef struct gk_dns_addrs {
	char addr[GK_DNS_MAX_ADDRS][INET6_ADDRSTRLEN]; /* numeric, IPv4 first */
	size_t n;
} gk_dns_addrs;

/* a NULL: the lookup failed, err says why. */
typedef void gk_dns_fn(void *arg, const gk_dns_addrs *a, const char *err);

typedef struct gk_dns gk_dns;

/* nameserver "IP:PORT" asks that server instead of resolv.conf's; NULL
 * with *why set when it is malformed or c-ares cannot start. */
gk_dns *gk__dns_new(gk_loop *loop, const char *nameserver, const char **why);
/* Look name up; fn runs later, once, unless a new lookup or
 * gk__dns_free comes first (the earlier one is then forgotten). */
void gk__dns_lookup(gk_dns *d, const char *name, gk_dns_fn *fn, void *arg);
bool gk__dns_busy(const gk_dns *d);
void gk__dns_free(gk_dns *d);

#endif
