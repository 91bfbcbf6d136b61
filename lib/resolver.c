/*
 * resolver.c: the resolver core.  Sources push whole endpoint sets; the
 * core keeps the last good one through source errors, as Go kit's
 * Endpointer does, and invalidates it after a configured time.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_source.h"

struct gk_resolver {
	gk_loop *loop;
	gk_resolver_options opts;
	gk_resolver_fn *fn;
	void *arg;
	const gk_resolver_source *src;
	void *state;
	char *uri;
	gk_endpoint *set;
	size_t n;
	bool published, failing, over_bound, conflicting;
	gk_timer invalidate;
	gk_series *m_errors, *m_size, *m_changes, *m_bound, *m_stale, *m_good;
	gk_series *m_dup;
};

gk_loop *gk__resolver_loop(gk_resolver *r) { return r->loop; }
const gk_resolver_options *gk__resolver_options(gk_resolver *r) { return &r->opts; }

/*
 * An address in the one form it is compared by, so that one endpoint
 * spelled two ways is listed once (and a respelling is no change): the
 * port as a number (080 is 80), an IP address as inet_ntop writes it
 * ([0:0::1] is [::1], [::FFFF:1.2.3.4] is [::ffff:1.2.3.4]), a host name
 * in lower case (RFC 4343: DNS names compare without case).  What is not
 * HOST:PORT is left as it is.
 */
void
gk__canon_addr(char *addr, size_t cap)
{
	if (!gk__host_port(addr))
		return;
	const char *colon = strrchr(addr, ':');
	unsigned long port = strtoul(colon + 1, NULL, 10);
	char host[INET6_ADDRSTRLEN + 256], ip[INET6_ADDRSTRLEN], out[300];
	size_t hl = (size_t)(colon - addr);
	if (hl >= sizeof host)
		return;
	memcpy(host, addr, hl);
	host[hl] = 0;
	unsigned char bin[16];
	int n;
	if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = 0;
		/* An IPv6 address inet_pton does not take (with a zone:
		 * fe80::1%eth0) is kept as written, zones having case. */
		const char *v6 = host + 1;
		if (inet_pton(AF_INET6, v6, bin) == 1 &&
		    inet_ntop(AF_INET6, bin, ip, sizeof ip))
			v6 = ip;
		n = snprintf(out, sizeof out, "[%s]:%lu", v6, port);
	} else {
		if (inet_pton(AF_INET, host, bin) != 1)
			for (char *h = host; *h; h++)
				*h = (char)tolower((unsigned char)*h);
		n = snprintf(out, sizeof out, "%s:%lu", host, port);
	}
	if (n > 0 && (size_t)n < cap)
		memcpy(addr, out, (size_t)n + 1);
}

/* Sorted by address, duplicates in the order the source gave them, so
 * that the first of them wins (qsort alone is not stable). */
static int
ep_cmp(const void *a, const void *b, void *arg)
{
	const gk_endpoint *set = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int c = strcmp(set[i].addr, set[j].addr);
	return c ? c : (i > j) - (i < j);
}

static bool
same_set(const gk_endpoint *a, size_t na, const gk_endpoint *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i].addr, b[i].addr) || a[i].weight != b[i].weight ||
		    a[i].priority != b[i].priority || strcmp(a[i].tags, b[i].tags))
			return false;
	return true;
}

void
gk__resolver_publish(gk_resolver *r, const gk_endpoint *set, size_t n)
{
	gk_endpoint *in = gk_xcalloc(n ? n : 1, sizeof *in);
	gk_endpoint *s = gk_xcalloc(n ? n : 1, sizeof *s);
	size_t *order = gk_xcalloc(n ? n : 1, sizeof *order);
	if (n)
		memcpy(in, set, n * sizeof *in);
	for (size_t i = 0; i < n; i++) {
		gk__canon_addr(in[i].addr, sizeof in[i].addr);
		order[i] = i;
	}
	qsort_r(order, n, sizeof *order, ep_cmp, in);
	size_t k = 0, dups = 0;
	const char *conflict = NULL;
	for (size_t i = 0; i < n; i++) {
		const gk_endpoint *e = &in[order[i]];
		if (k && !strcmp(s[k - 1].addr, e->addr)) {
			/* The first of duplicates wins; one that says
			 * something else (a weight, tags, a priority) is told,
			 * as what it says is lost. */
			dups++;
			if (!conflict &&
			    ((e->weight ? e->weight : 1) != s[k - 1].weight ||
			     e->priority != s[k - 1].priority ||
			     strcmp(e->tags, s[k - 1].tags)))
				conflict = s[k - 1].addr;
			continue;
		}
		s[k] = *e;
		if (!s[k].weight)
			s[k].weight = 1;
		k++;
	}
	free(order);
	free(in);
	if (dups)
		gk_counter_add(r->m_dup, (double)dups);
	if (conflict && !r->conflicting) {
		char a[300], u[300];
		snprintf(a, sizeof a, "addr=%s", conflict);
		snprintf(u, sizeof u, "source=%s", r->uri);
		gk_log(GK_WARN,
		       "resolver: an address listed twice, differently: "
		       "the first kept",
		       a, u);
	}
	r->conflicting = conflict != NULL;
	/* The bound, for every source (a file, DNS, static: as much as
	 * Consul and etcd): the first addresses in order are kept, so the
	 * set does not churn from one answer to the next. */
	if (k > GK_RESOLVER_MAX_ENDPOINTS) {
		gk_counter_add(r->m_bound,
		               (double)(k - GK_RESOLVER_MAX_ENDPOINTS));
		if (!r->over_bound) {
			char u[300], m[64];
			snprintf(u, sizeof u, "source=%s", r->uri);
			snprintf(m, sizeof m, "max=%d",
			         GK_RESOLVER_MAX_ENDPOINTS);
			gk_log(GK_WARN,
			       "resolver: more endpoints than the bound, "
			       "the rest left out",
			       u, m);
		}
		r->over_bound = true;
		k = GK_RESOLVER_MAX_ENDPOINTS;
	} else
		r->over_bound = false;
	gk_gauge_set(r->m_good, (double)gk_loop_realtime_ms(r->loop) / 1000);
	gk_gauge_set(r->m_stale, 0);
	if (r->failing) {
		char u[300];
		snprintf(u, sizeof u, "source=%s", r->uri);
		r->failing = false;
		gk_log(GK_INFO, "resolver source recovered", u);
	}
	gk_timer_stop(r->loop, &r->invalidate);
	if (r->published && same_set(r->set, r->n, s, k)) {
		free(s);
		return;
	}
	free(r->set);
	r->set = s;
	r->n = k;
	r->published = true;
	gk_gauge_set(r->m_size, (double)k);
	gk_counter_add(r->m_changes, 1);
	r->fn(r->set, r->n, r->arg);
}

static void
on_invalidate(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_resolver *r = arg;
	char u[300];
	snprintf(u, sizeof u, "source=%s", r->uri);
	gk_log(GK_WARN, "resolver: last good set invalidated", u);
	r->n = 0;
	gk_gauge_set(r->m_size, 0);
	r->fn(r->set, 0, r->arg);
}

void
gk__resolver_error(gk_resolver *r, const char *what)
{
	gk_counter_add(r->m_errors, 1);
	if (!r->failing) {
		char w[300], u[300];
		snprintf(w, sizeof w, "error=%s", what);
		snprintf(u, sizeof u, "source=%s", r->uri);
		gk_log(GK_WARN, r->n ?
		    "resolver source failed: keeping the last good set" :
		    "resolver source failed", w, u);
		r->failing = true;
		/* What is served is no longer what the source says. */
		gk_gauge_set(r->m_stale, 1);
		if (r->opts.invalidate_after_ms && r->n)
			gk_timer_start(r->loop, &r->invalidate,
			    r->opts.invalidate_after_ms, on_invalidate, r);
	}
	if (r->opts.on_error)
		r->opts.on_error(what, r->opts.error_arg);
}

gk_resolver *
gk_resolver_new(gk_loop *loop, const char *uri, const gk_resolver_options *opts,
    gk_resolver_fn *fn, void *arg, const char **why)
{
	const char *colon = strchr(uri, ':');
	if (!colon) {
		*why = "expected SCHEME:...";
		return NULL;
	}
	char scheme[32];
	size_t n = (size_t)(colon - uri);
	if (n >= sizeof scheme) {
		*why = "unknown source";
		return NULL;
	}
	memcpy(scheme, uri, n);
	scheme[n] = 0;
	const gk_resolver_source *src = gk__resolver_source(scheme);
	if (!src) {
		*why = "unknown source (static:, file:, dns:, dns+srv:, consul:, etcd:)";
		return NULL;
	}
	gk_resolver *r = gk_xcalloc(1, sizeof *r);
	r->loop = loop;
	if (opts)
		r->opts = *opts;
	r->fn = fn;
	r->arg = arg;
	r->src = src;
	r->uri = gk_xstrdup(uri);
	r->m_errors = gk_metric_series(gk_counter_new(
	    "gk_resolver_errors_total", "Source errors (lookups, watches)",
	    NULL));
	r->m_size = gk_metric_series(gk_gauge_new("gk_resolver_endpoints",
	    "Endpoints in the current set", NULL));
	r->m_changes = gk_metric_series(gk_counter_new(
	    "gk_resolver_changes_total", "Times the set changed", NULL));
	r->m_bound = gk_series_get(
	    gk_counter_new(
	        "gk_resolver_dropped_total",
	        "Endpoints a source left out: over the bound, or malformed",
	        "reason"),
	    "bound", (char *)0);
	r->m_dup = gk_series_get(
	    gk_counter_new(
	        "gk_resolver_dropped_total",
	        "Endpoints a source left out: over the bound, or malformed",
	        "reason"),
	    "duplicate", (char *)0);
	r->m_stale = gk_metric_series(gk_gauge_new(
	    "gk_resolver_stale",
	    "1 while the source fails and the last good set is kept", NULL));
	r->m_good = gk_metric_series(
	    gk_gauge_new("gk_resolver_last_good_timestamp_seconds",
	                 "When the source last answered with a set", NULL));
	if (src->start(r, colon + 1, &r->state, why) < 0) {
		free(r->set);
		free(r->uri);
		free(r);
		return NULL;
	}
	return r;
}

void
gk_resolver_free(gk_resolver *r)
{
	if (!r)
		return;
	gk_timer_stop(r->loop, &r->invalidate);
	if (r->src->stop)
		r->src->stop(r->state);
	free(r->set);
	free(r->uri);
	free(r);
}

const gk_endpoint *
gk_resolver_set(const gk_resolver *r, size_t *n)
{
	*n = r->n;
	return r->set;
}

/* What a host name or IPv4 address is made of (RFC 952/1123, and '_',
 * which internal names use). */
#define HOST_CHARS                                                             \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"

bool
gk__host_port(const char *s)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || !colon[1])
		return false;
	unsigned long port = 0;
	for (const char *d = colon + 1; *d; d++) {
		if (*d < '0' || *d > '9')
			return false;
		port = port * 10 + (unsigned long)(*d - '0');
		if (port > 65535)
			return false;
	}
	if (!port)
		return false;
	/* The host: what a client can connect to, so that a source that
	 * gives a URL ("http://10.0.0.1:80") or an IPv6 address without
	 * brackets is told, not passed on as an endpoint. */
	size_t hl = (size_t)(colon - s);
	if (s[0] != '[')
		return strspn(s, HOST_CHARS) == hl;
	char v6[INET6_ADDRSTRLEN + 64];
	if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= sizeof v6)
		return false;
	memcpy(v6, s + 1, hl - 2);
	v6[hl - 2] = 0;
	char *zone = strchr(v6, '%'); /* fe80::1%eth0 */
	if (zone) {
		if (!zone[1] || zone[1 + strspn(zone + 1, HOST_CHARS)])
			return false;
		*zone = 0;
	}
	unsigned char bin[16];
	return inet_pton(AF_INET6, v6, bin) == 1;
}

void
gk__resolver_set_tags(gk_endpoint *ep, const char *tags, size_t len)
{
	/* Whole tags only: past the room, cut before the last comma that
	 * fits, never inside a tag (which would make one nobody gave). */
	if (len >= sizeof ep->tags) {
		len = sizeof ep->tags - 1;
		while (len && tags[len] != ',')
			len--;
	}
	memcpy(ep->tags, tags, len);
	ep->tags[len] = 0;
}

int
gk__resolver_parse_line(const char *line, size_t len, gk_endpoint *ep)
{
	memset(ep, 0, sizeof *ep);
	ep->weight = 1;
	char buf[600];
	const char *hash = memchr(line, '#', len);
	if (hash) /* a comment, however long, is not looked at */
		len = (size_t)(hash - line);
	if (len >= sizeof buf)
		return -1;
	memcpy(buf, line, len);
	buf[len] = 0;
	char *save, *tok[5];
	int n = 0;
	for (char *t = strtok_r(buf, " \t\r", &save); t;
	     t = strtok_r(NULL, " \t\r", &save)) {
		if (n == 5)
			return -1;
		tok[n++] = t;
	}
	if (!n)
		return 1; /* blank */
	if (strlen(tok[0]) >= sizeof ep->addr || !gk__host_port(tok[0]))
		return -1;
	strcpy(ep->addr, tok[0]);
	/* WEIGHT, then TAGS ("-": none), then priority=N, each optional
	 * from the right.  priority=N is the last word only: a tag that
	 * reads "priority=high" (Consul's tags are anyone's words) is a tag,
	 * and the writer adds priority=0 after it so that it stays one. */
	char *end;
	if (n > 1 && !strncmp(tok[n - 1], "priority=", 9)) {
		long p = strtol(tok[n - 1] + 9, &end, 10);
		if (end == tok[n - 1] + 9 || *end || p < 0 || p > 65535)
			return -1;
		ep->priority = (unsigned)p;
		n--;
	}
	if (n > 3)
		return -1;
	if (n > 1) {
		long w = strtol(tok[1], &end, 10);
		if (end == tok[1] || *end || w < 1 || w > 1000000)
			return -1;
		ep->weight = (unsigned)w;
	}
	if (n > 2 && strcmp(tok[2], "-"))
		gk__resolver_set_tags(ep, tok[2], strlen(tok[2]));
	return 0;
}
