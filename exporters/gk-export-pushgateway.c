/*
 * gk-export-pushgateway: PUT the latest complete metrics snapshot of each
 * process, in the text exposition format, to a Prometheus Pushgateway
 * group URL/metrics/job/JOB/instance/HOST:PID, replacing the group, at
 * most once per --min-interval per process; DELETE the group of a process
 * gone quiet.  See gk-export-pushgateway(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "curl_loop.h"
#include "export.h"
#include "exposition.h"

struct proc {
	char *key; /* the map's copy: proc US pid */
	gk_expo_origin o;
	char *url;
	gk_snapasm asm_;
	gk_buf snap;   /* the latest complete snapshot */
	gk_expo_restarts restarts; /* with the same pid */
	bool dirty;    /* snap not pushed yet */
	bool busy;     /* a request in flight */
	bool deleting; /* expired: DELETE in flight, then freed */
	bool retrying; /* the timer is a retry after a failure */
	CURL *easy;
	gk_buf body, resp;
	uint64_t last_push_ms, recv_ms, interval_ms;
	gk_snap_interval iv;
	gk_timer timer;
	gk_backoff backoff;
	bool failing;
};

static struct {
	gk_export *ex;
	gk_loop *loop;
	gk_curl *curl;
	gk_smap *procs;
	const char *base, *job;
	uint64_t min_interval_ms, expire, timeout_ms;
	size_t max_procs;
	bool keep, draining;
	char host[256];
	struct curl_slist *headers;
	gk_buf tmp;
	gk_timer sweep;
	gk_series *m_pushes, *m_coalesced, *m_deleted, *m_incomplete,
	    *m_procs, *m_rejected, *m_restarts;
} U;

static void maybe_push(struct proc *p);
static void check_drain(void);

/* ------------------------------------------------------------------ */
/* Group URLs                                                          */
/* ------------------------------------------------------------------ */

/* "/NAME/VALUE", or "/NAME@base64/BASE64URL" when VALUE is not plain. */
static void
add_group_label(gk_buf *u, const char *name, const char *v)
{
	bool plain = *v != 0;
	for (const char *c = v; *c && plain; c++)
		plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		        (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' ||
		        *c == '.' || *c == ':';
	/* "." and ".." are dot segments: the URL would lose them (curl
	 * removes them, RFC 3986 5.2.4) and name another path. */
	if (!strcmp(v, ".") || !strcmp(v, ".."))
		plain = false;
	gk_buf_addc(u, '/');
	gk_buf_adds(u, name);
	if (plain) {
		gk_buf_addc(u, '/');
		gk_buf_adds(u, v);
		return;
	}
	gk_buf_adds(u, "@base64/");
	if (!*v) {
		gk_buf_addc(u, '=');
		return;
	}
	size_t at = u->len;
	gk_base64_encode(u, v, strlen(v));
	for (size_t i = at; i < u->len; i++) {
		if (u->data[i] == '+')
			u->data[i] = '-';
		else if (u->data[i] == '/')
			u->data[i] = '_';
	}
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

static size_t
on_body(char *ptr, size_t size, size_t n, void *arg)
{
	struct proc *p = arg;
	size_t len = size * n;
	if (p->resp.len < 512)
		gk_buf_add(&p->resp, ptr,
		    len < 512 - p->resp.len ? len : 512 - p->resp.len);
	return len;
}

static void
free_proc(struct proc *p)
{
	gk_timer_stop(U.loop, &p->timer);
	if (p->busy)
		gk_curl_cancel(U.curl, p->easy);
	if (p->easy)
		curl_easy_cleanup(p->easy);
	gk_snapasm_free(&p->asm_);
	gk_expo_restarts_free(&p->restarts);
	gk_buf_free(&p->snap);
	gk_buf_free(&p->body);
	gk_buf_free(&p->resp);
	free(p->url);
	free(p);
}

static void
forget(struct proc *p)
{
	gk_smap_del(U.procs, p->key, strlen(p->key));
	free(p->key);
	free_proc(p);
	gk_gauge_set(U.m_procs, (double)gk_smap_count(U.procs));
}

static void
on_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	struct proc *p = arg;
	p->retrying = false;
	maybe_push(p);
}

static void
log_failure(struct proc *p, const char *what, long status, CURLcode rc)
{
	char u[600], s[40], e[600];
	snprintf(u, sizeof u, "url=%s", p->url);
	snprintf(s, sizeof s, "status=%ld", status);
	if (rc != CURLE_OK)
		snprintf(e, sizeof e, "error=%s", curl_easy_strerror(rc));
	else
		snprintf(e, sizeof e, "error=%.500s", gk_buf_cstr(&p->resp));
	gk_log(status >= 400 && status < 500 ? GK_ERROR : GK_WARN, what, u,
	    s, e);
}

static void
on_done(CURL *easy, CURLcode rc, void *arg)
{
	struct proc *p = arg;
	long status = 0;
	if (rc == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	p->busy = false;
	gk_buf_reset(&p->body);
	if (p->deleting) {
		if (status >= 200 && status < 300) {
			gk_counter_add(U.m_deleted, 1);
		} else {
			gk_export_error(U.ex, 1);
			log_failure(p, "cannot delete the group of a process "
			               "gone quiet", status, rc);
		}
		forget(p);
		check_drain();
		return;
	}
	if (status >= 200 && status < 300) {
		gk_export_sent(U.ex, 1);
		gk_counter_add(U.m_pushes, 1);
		gk_backoff_reset(&p->backoff);
		if (p->failing) {
			gk_export_reconnected(U.ex);
			char u[600];
			snprintf(u, sizeof u, "url=%s", p->url);
			gk_log(GK_INFO, "the pushgateway accepts pushes again",
			    u);
		}
		p->failing = false;
	} else if (status == 0 || status == 408 || status == 429 ||
	           status >= 500) {
		/* Try again, with the newest snapshot by then. */
		gk_export_error(U.ex, 1);
		if (!p->failing)
			log_failure(p, "push failed: retrying", status, rc);
		p->failing = true;
		p->dirty = true;
		p->retrying = true;
		gk_timer_start(U.loop, &p->timer, gk_backoff_next(&p->backoff),
		    on_timer, p);
	} else {
		/* Rejected (400: inconsistent metrics): the pushgateway says
		 * why; the next snapshot is tried as usual. */
		gk_export_error(U.ex, 1);
		gk_export_dropped(U.ex, 1);
		gk_counter_add(U.m_rejected, 1);
		log_failure(p, "push rejected", status, rc);
	}
	if (p->dirty)
		maybe_push(p);
	check_drain();
}

static void
start(struct proc *p, const char *method, bool with_body)
{
	if (!p->easy)
		p->easy = curl_easy_init();
	CURL *e = p->easy;
	if (!e)
		gk_fatal(GK_EXIT_SOFTWARE, "curl_easy_init failed");
	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, p->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)U.timeout_ms);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, U.headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
	if (with_body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS,
		    p->body.data ? p->body.data : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)p->body.len);
	}
	gk_buf_reset(&p->resp);
	p->busy = true;
	if (gk_curl_start(U.curl, e, on_done, p) < 0) {
		p->busy = false;
		gk_export_error(U.ex, 1);
		gk_log(GK_ERROR, "cannot start an HTTP request");
	}
}


/* The latest snapshot of p, as pushed. */
static gk_expo_src
src_of(const struct proc *p)
{
	return gk_expo_src_of(&p->snap, &p->o, &p->restarts, false);
}

static void
maybe_push(struct proc *p)
{
	if (p->busy || p->deleting || !p->dirty ||
	    gk_timer_armed(&p->timer))
		return;
	uint64_t now = gk_loop_now(U.loop);
	if (!U.draining && p->last_push_ms &&
	    now - p->last_push_ms < U.min_interval_ms) {
		gk_timer_start(U.loop, &p->timer,
		    U.min_interval_ms - (now - p->last_push_ms), on_timer, p);
		return;
	}
	gk_buf_reset(&p->body);
	gk_expo_src src = src_of(p);
	gk_expo_opts o = {.rename_job = true};
	size_t dropped = gk_expo_render(&p->body, &src, 1, &o);
	if (dropped)
		gk_expo_left_out(U.ex, dropped);
	p->dirty = false;
	p->last_push_ms = now;
	start(p, "PUT", true);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static struct proc *
find_proc(const gk_event *ev)
{
	int64_t pid = 0;
	gk_json_int(ev->pid, &pid);
	gk_buf *k = &U.tmp;
	gk_buf_reset(k);
	gk_event_text(ev->proc, k);
	gk_buf_addc(k, 0x1f);
	gk_buf_adduint(k, (uint64_t)pid);
	void **slot = gk_smap_slot(U.procs, k->data, k->len, false);
	if (slot)
		return *slot;
	if (gk_smap_count(U.procs) >= U.max_procs)
		return NULL;
	struct proc *p = gk_xcalloc(1, sizeof *p);
	p->key = gk_xmalloc(k->len + 1);
	memcpy(p->key, k->data, k->len);
	p->key[k->len] = 0;
	slot = gk_smap_slot(U.procs, k->data, k->len, true);
	*slot = p;
	gk_expo_origin_set(&p->o, ev, U.host);
	gk_buf u = {0};
	gk_buf_adds(&u, U.base);
	gk_buf_adds(&u, "/metrics");
	add_group_label(&u, "job", U.job ? U.job
	                                 : (p->o.has_svc ? p->o.svc : "gokit"));
	add_group_label(&u, "instance", p->o.instance);
	p->url = gk_xstrdup(gk_buf_cstr(&u));
	gk_buf_free(&u);
	gk_snapasm_init(&p->asm_);
	gk_backoff_init(&p->backoff, 200, 10000);
	p->interval_ms = 10000;
	p->recv_ms = gk_loop_now(U.loop);
	gk_gauge_set(U.m_procs, (double)gk_smap_count(U.procs));
	return p;
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	if (ev->type != GK_EV_METRICS)
		return;
	struct proc *p = find_proc(ev);
	if (!p || p->deleting) {
		gk_export_dropped(ex, 1);
		return;
	}
	int64_t seq = 0, part, parts;
	if (gk_snap_parts(ev, &seq, &part, &parts)) {
		gk_expo_src last = src_of(p);
		gk_expo_restarts_part(&p->restarts, &last, seq, part);
	}
	uint64_t ts = 0, lost = p->asm_.incomplete;
	enum gk_snapasm_result r = gk_snapasm_add(&p->asm_, ev, &p->snap, &ts);
	/* Every snapshot abandoned, also the one a COMPLETE call gave up. */
	if (p->asm_.incomplete != lost)
		gk_counter_add(U.m_incomplete,
		               (double)(p->asm_.incomplete - lost));
	switch (r) {
	case GK_SNAPASM_PENDING: return;
	case GK_SNAPASM_INVALID: gk_export_dropped(ex, 1); return;
	case GK_SNAPASM_INCOMPLETE: return;
	case GK_SNAPASM_COMPLETE: break;
	}
	if (gk_expo_restarts_complete(&p->restarts, seq, &p->o))
		gk_counter_add(U.m_restarts, 1);
	gk_snap_interval_add(&p->iv, ts);
	p->interval_ms = gk_snap_interval_ms(&p->iv, 10000);
	p->recv_ms = gk_loop_now(U.loop);
	if (p->dirty)
		gk_counter_add(U.m_coalesced, 1); /* replaced before pushed */
	p->dirty = true;
	maybe_push(p);
}

static void
sweep(gk_loop *loop, void *arg)
{
	(void)arg;
	uint64_t now = gk_loop_now(loop);
	size_t pos = 0;
	const char *key;
	void *v;
	struct proc *gone[64];
	size_t n = 0;
	while (n < 64 && gk_smap_next(U.procs, &pos, &key, &v)) {
		struct proc *p = v;
		if (p->deleting || p->busy || p->dirty)
			continue;
		if (now - p->recv_ms > U.expire * p->interval_ms)
			gone[n++] = p;
	}
	for (size_t i = 0; i < n; i++) {
		struct proc *p = gone[i];
		char f[340], g[160];
		snprintf(f, sizeof f, "instance=%s", p->o.instance);
		snprintf(g, sizeof g, "process=%s", p->o.proc);
		gk_timer_stop(U.loop, &p->timer);
		if (U.keep) {
			gk_log(GK_INFO, "process gone quiet: its group is kept",
			    g, f);
			forget(p);
			continue;
		}
		gk_log(GK_INFO, "process gone quiet: deleting its group", g, f);
		p->deleting = true;
		start(p, "DELETE", false);
	}
	gk_timer_start(loop, &U.sweep, 1000, sweep, NULL);
}

/* ------------------------------------------------------------------ */
/* Drain                                                               */
/* ------------------------------------------------------------------ */

static void
check_drain(void)
{
	if (!U.draining)
		return;
	size_t pos = 0;
	const char *key;
	void *v;
	while (gk_smap_next(U.procs, &pos, &key, &v)) {
		struct proc *p = v;
		if (p->busy || p->dirty)
			return;
	}
	gk_export_done(U.ex);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	U.draining = true;
	/* The newest snapshot of each process now, whatever the interval. */
	size_t pos = 0;
	const char *key;
	void *v;
	while (gk_smap_next(U.procs, &pos, &key, &v)) {
		struct proc *p = v;
		if (!p->retrying)
			gk_timer_stop(U.loop, &p->timer);
		maybe_push(p);
	}
	check_drain();
}

/* ------------------------------------------------------------------ */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-pushgateway [--job JOB] [--min-interval DUR] "
	    "[OPTIONS] [URL]\n"
	    "PUT the latest metrics snapshot of each process to a Pushgateway "
	    "group\nURL/metrics/job/JOB/instance/HOST:PID (text format "
	    "0.0.4).\n"
	    "  URL                 the Pushgateway (http://127.0.0.1:9091)\n"
	    "  --job JOB           the job label (the process's svc, else "
	    "gokit)\n"
	    "  --min-interval DUR  pushes of one process at most this often "
	    "(1s)\n"
	    "  --expire N          delete the group of a process after N of "
	    "its intervals\n"
	    "                      without a snapshot (3)\n"
	    "  --keep              keep those groups instead\n"
	    "  --max-procs N       processes tracked at most (1000)\n"
	    "  --timeout DUR       per request (10s)\n"
	    "  -h, --help          this help\n"
	    "  -V, --version       version\n");
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-export-pushgateway");
	U.min_interval_ms = 1000;
	U.expire = 3;
	U.max_procs = 1000;
	U.timeout_ms = 10000;
	static const struct option opts[] = {
	    {"job", required_argument, NULL, 'j'},
	    {"min-interval", required_argument, NULL, 'm'},
	    {"expire", required_argument, NULL, 'e'},
	    {"keep", no_argument, NULL, 'k'},
	    {"max-procs", required_argument, NULL, 'p'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (!*optarg)
				gk_usage_error("bad --job: empty");
			U.job = optarg;
			break;
		case 'm':
			if (gk_parse_duration_ms(optarg, &U.min_interval_ms) <
			    0)
				gk_usage_error("bad --min-interval: %s "
				               "(expected a duration such as "
				               "1s)",
				    optarg);
			break;
		case 'e':
			if (gk_parse_uint(optarg, 1, 1000, &U.expire) < 0)
				gk_usage_error("bad --expire: %s (expected 1 "
				               "to 1000 intervals)",
				    optarg);
			break;
		case 'k': U.keep = true; break;
		case 'p':
			if (gk_parse_uint(optarg, 1, 1000000, &v) < 0)
				gk_usage_error("bad --max-procs: %s (expected "
				               "a count)",
				    optarg);
			U.max_procs = (size_t)v;
			break;
		case 't':
			if (gk_parse_duration_ms(optarg, &U.timeout_ms) < 0 ||
			    !U.timeout_ms)
				gk_usage_error("bad --timeout: %s (expected a "
				               "duration such as 10s)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-pushgateway"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *base = gk_export_operand(argc, argv, optind,
	    "http://127.0.0.1:9091", "[URL]");
	if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8))
		gk_usage_error("bad URL: %s (expected http://HOST:PORT or "
		               "https://...)",
		    base);
	char *b = gk_xstrdup(base);
	size_t bl = strlen(b);
	while (bl && b[bl - 1] == '/')
		b[--bl] = 0;
	U.base = b;
	if (gethostname(U.host, sizeof U.host - 1) < 0 || !U.host[0])
		snprintf(U.host, sizeof U.host, "localhost");

	gk_export_def def = {.name = "pushgateway", .on_event = on_event,
	                     .on_drain = on_drain};
	U.ex = gk_export_new(&def);
	U.loop = gk_export_loop(U.ex);
	U.curl = gk_curl_new(U.loop, 4);
	U.procs = gk_smap_new();
	U.headers = curl_slist_append(NULL,
	    "Content-Type: text/plain; version=0.0.4; charset=utf-8");
	U.headers = curl_slist_append(U.headers, "Expect:");
	U.m_pushes = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_pushes_total", "Groups replaced (PUT 2xx)",
	    NULL));
	U.m_coalesced = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_coalesced_total",
	    "Snapshots replaced by a newer one before they were pushed",
	    NULL));
	U.m_deleted = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_deleted_total",
	    "Groups deleted because their process went quiet", NULL));
	U.m_rejected = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_rejected_total",
	    "Pushes the pushgateway refused (4xx)", NULL));
	U.m_incomplete = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_incomplete_total",
	    "Snapshots dropped because a part was missing", NULL));
	U.m_procs = gk_metric_series(gk_gauge_new(
	    "gk_export_pushgateway_processes", "Processes tracked", NULL));
	U.m_restarts = gk_metric_series(gk_counter_new(
	    "gk_export_pushgateway_restarts_total",
	    "Processes restarted with the same pid, their counters carried on",
	    NULL));
	gk_timer_start(U.loop, &U.sweep, 1000, sweep, NULL);
	char f[600];
	snprintf(f, sizeof f, "url=%s", U.base);
	gk_log(GK_INFO, "pushing metrics to the pushgateway", f);
	int status = gk_export_run(U.ex);
	size_t pos = 0;
	const char *key;
	void *pv;
	while (gk_smap_next(U.procs, &pos, &key, &pv)) {
		struct proc *p = pv;
		free(p->key);
		free_proc(p);
	}
	gk_smap_free(U.procs);
	gk_curl_free(U.curl);
	curl_slist_free_all(U.headers);
	gk_buf_free(&U.tmp);
	free(b);
	return status;
}
