/*
 * resolver_source.h: what a resolver source (static, file, dns, dns+srv,
 * consul, etcd) implements and what the resolver core gives it
 * (internal).  A source publishes whole sets; the core writes each address
 * in one form (080 is 80, [0:0::1] is [::1]), sorts them, drops
 * duplicates, tells the user only about changes, keeps the last good set
 * through source errors and drops it after --invalidate-after.
 */
#ifndef GK_RESOLVER_SOURCE_H
#define GK_RESOLVER_SOURCE_H

#include "resolver.h"

typedef struct gk_resolver_source {
	const char *scheme; /* "file" for "file:/run/x" */
	/* Start on the text after "scheme:"; -1 with *why on a bad URI. */
	int (*start)(gk_resolver *r, const char *rest, void **state,
	    const char **why);
	void (*stop)(void *state);
} gk_resolver_source;

extern const gk_resolver_source gk_resolver_static;
extern const gk_resolver_source gk_resolver_file;
extern const gk_resolver_source gk_resolver_dns;
extern const gk_resolver_source gk_resolver_dns_srv;
extern const gk_resolver_source gk_resolver_consul;
extern const gk_resolver_source gk_resolver_etcd;
/* Registered by the sources that exist; the core looks them up by name. */
const gk_resolver_source *gk__resolver_source(const char *scheme);

/* A good set from the source (copied). */
void gk__resolver_publish(gk_resolver *r, const gk_endpoint *set, size_t n);
/* The source failed: keep the last good set, say so, start the clock. */
void gk__resolver_error(gk_resolver *r, const char *what);
gk_loop *gk__resolver_loop(gk_resolver *r);
const gk_resolver_options *gk__resolver_options(gk_resolver *r);
/* HOST:PORT or [V6]:PORT: a host, and a port from 1 to 65535 in digits. */
bool gk__host_port(const char *s);
/* addr (HOST:PORT) rewritten in place in the one form addresses are
 * compared by: port 080 is 80, [0:0::1] is [::1], host names lower case. */
void gk__canon_addr(char *addr, size_t cap);
/* "host:port [weight] [tags]" lines; '#' comments.  -1 on a bad line. */
int gk__resolver_parse_line(const char *line, size_t len, gk_endpoint *ep);
/* ep->tags from a comma-separated list, whole tags only (at most 255 bytes). */
void gk__resolver_set_tags(gk_endpoint *ep, const char *tags, size_t len);

#endif
