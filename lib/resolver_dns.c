/*
 * resolver_dns.c: dns:NAME:PORT (A and AAAA) and dns+srv:_svc._tcp.NAME
 * (SRV, priority and weight honoured, each target resolved to its
 * addresses), with c-ares on the caller's loop, re-resolved when the
 * shortest TTL of the answers runs out.  --nameserver asks one server
 * instead of resolv.conf's.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ares_loop.h"
#include "resolver_source.h"

const gk_ares_api gk__ares_direct = {
    ares_library_init, ares_init_options, ares_set_servers_ports_csv,
    ares_destroy,      ares_process_fd,   ares_timeout};

#define MIN_REFRESH_MS 1000
#define MAX_REFRESH_MS 300000
#define ERROR_RETRY_MS 2000

struct target {
	char host[256];
	unsigned port, weight, priority;
};

struct dns_state {
	gk_resolver *r;
	gk_loop *loop;
	gk_ares ares; /* no channel for an IP address */
	bool srv;
	char name[256];
	unsigned port;
	gk_timer refresh;
	/* one round of lookups */
	unsigned pending;
	bool failed;
	int status;      /* the first failure's c-ares status */
	const char *why; /* or the failure in words, when not c-ares's */
	uint32_t min_ttl;
	gk_endpoint *set;
	size_t n, cap;
	gk_series *m_bad;
};

static void start_round(struct dns_state *d);

/* The smallest TTL of the answer section of a raw DNS message. */
static uint32_t
answer_ttl(const unsigned char *buf, int len)
{
	uint32_t best = MAX_REFRESH_MS / 1000;
	if (len < 12)
		return best;
	unsigned qd = buf[4] << 8 | buf[5], an = buf[6] << 8 | buf[7];
	const unsigned char *p = buf + 12, *end = buf + len;
	for (unsigned i = 0; i < qd + an; i++) {
		/* skip a name: labels, or a compression pointer */
		while (p < end && *p) {
			if ((*p & 0xc0) == 0xc0) {
				p++;
				break;
			}
			p += *p + 1;
		}
		p++;
		if (i < qd) {
			p += 4;
			continue;
		}
		if (p + 10 > end)
			break;
		uint32_t ttl = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
		               (uint32_t)p[6] << 8 | p[7];
		unsigned rdlen = p[8] << 8 | p[9];
		if (ttl & 0x80000000u) /* RFC 2181 section 8: as zero */
			ttl = 0;
		if (ttl < best)
			best = ttl;
		p += 10 + rdlen;
	}
	return best;
}

/* The number of records in the answer section of a raw DNS message (at
 * least 1): room for every address, however many the name has (c-ares
 * fills only the room it is given, and leaves the rest out). */
static int
answer_count(const unsigned char *buf, int len)
{
	int an = len >= 12 ? (buf[6] << 8 | buf[7]) : 0;
	return an ? an : 1;
}

static void
add_endpoint(struct dns_state *d, const char *ip, bool v6, unsigned port,
             unsigned weight, unsigned prio)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 16;
		d->set = gk_xrealloc(d->set, d->cap * sizeof *d->set);
	}
	gk_endpoint *e = &d->set[d->n++];
	memset(e, 0, sizeof *e);
	snprintf(e->addr, sizeof e->addr, v6 ? "[%s]:%u" : "%s:%u", ip, port);
	e->weight = weight; /* 0 as the SRV record says: see weigh_zero */
	e->priority = prio;
}

/* How many times over the weights of a priority are written when it has
 * records of weight 0 as well, so that those (written as 1) get a very
 * small share; at most what the endpoints format takes. */
#define ZERO_WEIGHT_SCALE 100
#define MAX_WEIGHT 1000000

/*
 * RFC 2782: records of weight 0 "should have a very small chance of being
 * selected" among records of the same priority with weights above 0, and
 * are picked evenly where all of them have weight 0.  The endpoints format
 * has no weight below 1: a priority that mixes them has its other weights
 * written 100 times over (less where that would pass 1000000), and its
 * records of weight 0 as 1.
 */
static void
weigh_zero(gk_endpoint *set, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (set[i].weight)
			continue;
		unsigned prio = set[i].priority, max = 0;
		for (size_t j = 0; j < n; j++)
			if (set[j].priority == prio && set[j].weight > max)
				max = set[j].weight;
		unsigned k = max ? ZERO_WEIGHT_SCALE : 1;
		if (max && (uint64_t)max * k > MAX_WEIGHT)
			k = MAX_WEIGHT / max;
		/* the whole group at once: none of it is 0 after this */
		for (size_t j = 0; j < n; j++)
			if (set[j].priority == prio)
				set[j].weight =
				    set[j].weight ? set[j].weight * k : 1;
	}
}

static void
on_refresh(gk_loop *loop, void *arg)
{
	(void)loop;
	start_round(arg);
}

static void
round_done(struct dns_state *d)
{
	if (--d->pending)
		return;
	uint64_t next;
	/* A round in which any lookup failed (a timeout, SERVFAIL) is a
	 * failure, even when other lookups answered: publishing what did
	 * answer would drop healthy endpoints on every DNS hiccup, where
	 * the last good set is to be kept. */
	if (d->failed) {
		char w[400];
		snprintf(w, sizeof w, "dns: %s: %s", d->name,
		         d->why ? d->why : ares_strerror(d->status));
		gk__resolver_error(d->r, w);
		next = ERROR_RETRY_MS;
	} else {
		weigh_zero(d->set, d->n);
		gk__resolver_publish(d->r, d->set, d->n);
		next = (uint64_t)d->min_ttl * 1000;
		uint64_t floor = gk__resolver_options(d->r)->min_refresh_ms;
		if (!floor)
			floor = MIN_REFRESH_MS;
		if (next < floor)
			next = floor;
		if (next > MAX_REFRESH_MS)
			next = MAX_REFRESH_MS;
	}
	gk_timer_start(d->loop, &d->refresh, next, on_refresh, d);
}

/* The A and AAAA lookups of one name, judged together when both are in:
 * the name failed when neither answered (addresses, or NODATA) and one
 * of them failed (a timeout, SERVFAIL, REFUSED).  A server that answers
 * one family and refuses the other (dnsmasq without an upstream does for
 * a name it has only A records for) gives the addresses it answered. */
struct name_lookup {
	unsigned left;
	bool answered, nxdomain;
	int status; /* the first failure */
};

struct addr_query {
	struct dns_state *d;
	struct name_lookup *name;
	unsigned port, weight, priority;
	bool v6;
};

static void
on_addr(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	struct addr_query *q = arg;
	struct dns_state *d = q->d;
	if (status == ARES_EDESTRUCTION) {
		/* The source is being stopped: no round to finish, no error
		 * to tell (nor a retry to arm in state about to be freed). */
		if (!--q->name->left)
			free(q->name);
		free(q);
		return;
	}
	if (status == ARES_SUCCESS) {
		uint32_t ttl = answer_ttl(abuf, alen);
		if (ttl < d->min_ttl)
			d->min_ttl = ttl;
		char ip[INET6_ADDRSTRLEN];
		if (q->v6) {
			int n = answer_count(abuf, alen);
			struct ares_addr6ttl *a =
			    gk_xcalloc((size_t)n, sizeof *a);
			if (ares_parse_aaaa_reply(abuf, alen, NULL, a, &n) ==
			    ARES_SUCCESS)
				for (int i = 0; i < n; i++) {
					inet_ntop(AF_INET6, &a[i].ip6addr, ip,
					          sizeof ip);
					add_endpoint(d, ip, true, q->port,
					             q->weight, q->priority);
				}
			free(a);
		} else {
			int n = answer_count(abuf, alen);
			struct ares_addrttl *a =
			    gk_xcalloc((size_t)n, sizeof *a);
			if (ares_parse_a_reply(abuf, alen, NULL, a, &n) ==
			    ARES_SUCCESS)
				for (int i = 0; i < n; i++) {
					inet_ntop(AF_INET, &a[i].ipaddr, ip,
					          sizeof ip);
					add_endpoint(d, ip, false, q->port,
					             q->weight, q->priority);
				}
			free(a);
		}
	}
	struct name_lookup *nl = q->name;
	if (status == ARES_SUCCESS || status == ARES_ENODATA)
		nl->answered = true;
	else if (status == ARES_ENOTFOUND)
		nl->nxdomain = true;
	else if (!nl->status)
		nl->status = status;
	if (!--nl->left) {
		/* A name that does not exist is an error for dns:NAME; an SRV
		 * target that does not exist has no addresses, an answer. */
		int st = nl->answered              ? 0
		         : nl->status              ? nl->status
		         : nl->nxdomain && !d->srv ? ARES_ENOTFOUND
		                                   : 0;
		if (st) {
			if (!d->failed)
				d->status = st;
			d->failed = true;
		}
		free(nl);
	}
	free(q);
	round_done(d);
}

static void
query_addrs(struct dns_state *d, const char *host, unsigned port,
            unsigned weight, unsigned prio)
{
	struct name_lookup *nl = gk_xcalloc(1, sizeof *nl);
	nl->left = 2;
	for (int v6 = 0; v6 < 2; v6++) {
		struct addr_query *q = gk_xcalloc(1, sizeof *q);
		*q = (struct addr_query){d, nl, port, weight, prio, v6};
		d->pending++;
		/* The name given (dns:NAME) is looked up as getaddrinfo(3)
		 * would, through resolv.conf's search list ("orders" in
		 * Kubernetes is orders.NAMESPACE.svc.cluster.local); an SRV
		 * target is a domain name already, absolute (RFC 2782). */
		if (d->srv)
			ares_query(d->ares.ch, host, ns_c_in,
			           v6 ? ns_t_aaaa : ns_t_a, on_addr, q);
		else
			ares_search(d->ares.ch, host, ns_c_in,
			            v6 ? ns_t_aaaa : ns_t_a, on_addr, q);
	}
}

static void
on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	struct dns_state *d = arg;
	struct ares_srv_reply *srv = NULL;
	if (status == ARES_EDESTRUCTION)
		return; /* stopped: see on_addr */
	if (status != ARES_SUCCESS ||
	    ares_parse_srv_reply(abuf, alen, &srv) != ARES_SUCCESS) {
		if (!d->failed)
			d->status =
			    status != ARES_SUCCESS ? status : ARES_EBADRESP;
		d->failed = true;
		round_done(d);
		return;
	}
	uint32_t ttl = answer_ttl(abuf, alen);
	if (ttl < d->min_ttl)
		d->min_ttl = ttl;
	/* A target of "." (RFC 2782): the service is decidedly not available
	 * there; it has no addresses to look up.  Port 0 is no port to
	 * connect to: the record is left out and counted, and an answer of
	 * nothing else is an error (the last good set is kept). */
	unsigned good = 0, bad = 0;
	for (struct ares_srv_reply *s = srv; s; s = s->next) {
		if (!s->host[0] || !strcmp(s->host, "."))
			continue;
		if (!s->port) {
			char t[300];
			snprintf(t, sizeof t, "target=%s", s->host);
			gk_log(GK_WARN,
			       "dns+srv: a record with port 0, left out", t);
			gk_counter_add(d->m_bad, 1);
			bad++;
			continue;
		}
		good++;
		query_addrs(d, s->host, s->port, s->weight, s->priority);
	}
	ares_free_data(srv);
	if (bad && !good) {
		if (!d->failed) {
			d->status = ARES_EBADRESP;
			d->why = "every SRV record has port 0";
		}
		d->failed = true;
	}
	round_done(d);
}

static void
start_round(struct dns_state *d)
{
	d->n = 0;
	d->failed = false;
	d->why = NULL;
	d->min_ttl = MAX_REFRESH_MS / 1000;
	d->pending = 1; /* held by this function until the queries are out */
	if (d->srv) {
		d->pending++;
		ares_search(d->ares.ch, d->name, ns_c_in, ns_t_srv, on_srv, d);
	} else
		query_addrs(d, d->name, d->port, 1, 0);
	gk__ares_arm(&d->ares);
	round_done(d);
}

/* 1 when name is an IP address (IPv4, or IPv6 in brackets), 0 when it is
 * a name to look up, -1 when it is neither (an IPv6 address without its
 * brackets, or brackets around something else). */
static int
ip_literal(const char *name)
{
	unsigned char bin[16];
	size_t n = strlen(name);
	if (n > 2 && name[0] == '[' && name[n - 1] == ']') {
		char v6[256];
		memcpy(v6, name + 1, n - 2);
		v6[n - 2] = 0;
		return inet_pton(AF_INET6, v6, bin) == 1 ? 1 : -1;
	}
	if (strpbrk(name, "[]:"))
		return -1;
	return inet_pton(AF_INET, name, bin) == 1;
}

static int
dns_start_common(gk_resolver *r, const char *rest, void **state,
                 const char **why, bool srv)
{
	struct dns_state *d = gk_xcalloc(1, sizeof *d);
	d->r = r;
	d->loop = gk__resolver_loop(r);
	d->srv = srv;
	d->m_bad = gk_series_get(
	    gk_counter_new(
	        "gk_resolver_dropped_total",
	        "Endpoints a source left out: over the bound, or malformed",
	        "reason"),
	    "bad", (char *)0);
	if (srv) {
		if (!*rest || strlen(rest) >= sizeof d->name) {
			*why = "expected dns+srv:_service._proto.name";
			free(d);
			return -1;
		}
		strcpy(d->name, rest);
	} else {
		const char *colon = strrchr(rest, ':');
		if (!gk__host_port(rest) ||
		    (size_t)(colon - rest) >= sizeof d->name) {
			*why = "expected dns:NAME:PORT";
			free(d);
			return -1;
		}
		memcpy(d->name, rest, (size_t)(colon - rest));
		d->port = (unsigned)strtoul(colon + 1, NULL, 10);
		int lit = ip_literal(d->name);
		if (lit < 0) {
			*why = "expected dns:NAME:PORT, an IPv6 address in "
			       "brackets (dns:[::1]:80)";
			free(d);
			return -1;
		}
		if (lit) {
			/* The address is the answer, as getaddrinfo(3) and Go's
			 * resolver give it: no server is asked, nothing to
			 * refresh.  The core writes it in its usual form. */
			gk_endpoint ep = {.weight = 1};
			snprintf(ep.addr, sizeof ep.addr, "%s:%u", d->name,
			         d->port);
			*state = d;
			gk__resolver_publish(r, &ep, 1);
			return 0;
		}
	}
	const char *ns = gk__resolver_options(r)->nameserver;
	if (gk__ares_open(&d->ares, &gk__ares_direct, d->loop, 1000, 2, ns,
	                  why) < 0) {
		free(d);
		return -1;
	}
	*state = d;
	start_round(d);
	return 0;
}

static int
dns_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	return dns_start_common(r, rest, state, why, false);
}

static int
srv_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	return dns_start_common(r, rest, state, why, true);
}

static void
dns_stop(void *state)
{
	struct dns_state *d = state;
	gk_timer_stop(d->loop, &d->refresh);
	gk__ares_close(&d->ares);
	free(d->set);
	free(d);
}

const gk_resolver_source gk_resolver_dns = {"dns", dns_start, dns_stop};
const gk_resolver_source gk_resolver_dns_srv = {"dns+srv", srv_start, dns_stop};
