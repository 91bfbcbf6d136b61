/*
 * resolver.h: names to live endpoint sets (internal; gk-resolver and
 * gk-client in-process).  A source is a URI: static:, file:, dns:,
 * dns+srv:, consul:, etcd:.  The resolver runs on the caller's loop and
 * calls back with the whole set on every change.
 */
#ifndef GK_RESOLVER_H
#define GK_RESOLVER_H

#include "gokit.h"

typedef struct gk_endpoint {
	char addr[262]; /* "host:port", "[v6]:port" */
	unsigned weight; /* >= 1; 1 when the source says nothing */
	unsigned priority; /* SRV priority; 0 otherwise (lower is preferred) */
	char tags[256];   /* comma-separated, may be empty */
} gk_endpoint;

typedef struct gk_resolver_options {
	const char *nameserver;      /* "HOST:PORT" for dns sources, or NULL */
	uint64_t invalidate_after_ms; /* drop the last good set after a source
	                                 error lasting this long; 0: never */
	uint64_t min_refresh_ms;     /* floor for re-resolution (DNS TTL 0)
	                                and between Consul queries */
	/* Called on every source error, after the core has logged it (the
	 * last good set is kept); NULL for none. */
	void (*on_error)(const char *what, void *arg);
	void *error_arg;
} gk_resolver_options;

/* At most this many endpoints in a set; a source drops the rest and
 * counts them in gk_resolver_dropped_total{reason="bound"}. */
#define GK_RESOLVER_MAX_ENDPOINTS 10000

/* The set, sorted by addr; n may be 0 (no endpoints). */
typedef void gk_resolver_fn(const gk_endpoint *set, size_t n, void *arg);

typedef struct gk_resolver gk_resolver;

/* NULL with *why set when the URI is not one we know or is malformed. */
gk_resolver *gk_resolver_new(gk_loop *loop, const char *uri,
    const gk_resolver_options *opts, gk_resolver_fn *fn, void *arg,
    const char **why);
void gk_resolver_free(gk_resolver *r);
/* The last good set (borrowed until the next callback). */
const gk_endpoint *gk_resolver_set(const gk_resolver *r, size_t *n);

/*
 * The endpoints format (what file: reads, what gk-resolver -o writes):
 * one endpoint a line, "HOST:PORT WEIGHT TAGS", TAGS comma-separated or
 * "-" for none, then " priority=N" when the SRV priority is not 0.
 */
void gk_resolver_format_lines(gk_buf *out, const gk_endpoint *set, size_t n);
/* One JSON object: {"endpoints":[{"addr","host","port","weight",
 * "priority","tags":[...]}]}, no newline. */
void gk_resolver_format_json(gk_buf *out, const gk_endpoint *set, size_t n);
/* Replace path atomically with data: a temporary file in the same
 * directory, fsync, rename.  -1 with errno set. */
int gk_write_file_atomic(const char *path, const char *data, size_t len);

#endif
