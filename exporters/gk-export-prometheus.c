/*
 * gk-export-prometheus: serve the latest complete metrics snapshot of every
 * process on GET /metrics, in the Prometheus text exposition format 0.0.4.
 * See gk-exporter(1).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "export.h"
#include "exposition.h"
#include "http.h"

#define MAX_CONNS 64
#define MAX_REQ_BYTES 16384

struct proc {
	char *key; /* proc NUL pid, as in the map */
	gk_expo_origin o;
	/* The latest complete snapshot: its lines, each NUL-terminated. */
	gk_buf snap;
	gk_snap_interval iv;
	uint64_t recv_ms; /* monotonic, when it completed */
	uint64_t interval_ms;
	gk_snapasm asm_; /* the snapshot being assembled */
	gk_expo_restarts restarts; /* with the same pid */
};

struct conn {
	int fd;
	gk_http_parser *parser;
	gk_buf out;
	bool close_after;
};

static struct {
	gk_export *ex;
	gk_loop *loop;
	gk_smap *procs;
	uint64_t expire;
	size_t max_procs;
	int lfd;
	size_t nconns;
	char host[256];
	gk_timer sweep;
	gk_series *m_scrapes, *m_procs, *m_expired, *m_incomplete, *m_restarts;
	gk_buf body, tmp;
} P;

/* ------------------------------------------------------------------ */
/* Ingest                                                              */
/* ------------------------------------------------------------------ */

/* The latest snapshot of p, as rendered. */
static gk_expo_src
src_of(const struct proc *p)
{
	return gk_expo_src_of(&p->snap, &p->o, &p->restarts, true);
}

static void
free_proc(struct proc *p)
{
	gk_expo_restarts_free(&p->restarts);
	gk_buf_free(&p->snap);
	gk_snapasm_free(&p->asm_);
	free(p);
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	if (ev->type != GK_EV_METRICS)
		return;
	int64_t pid = 0, seq, part, parts;
	gk_json_int(ev->pid, &pid);
	if (!gk_snap_parts(ev, &seq, &part, &parts)) {
		gk_export_dropped(ex, 1);
		return;
	}
	gk_buf *k = &P.tmp;
	gk_buf_reset(k);
	gk_event_text(ev->proc, k);
	gk_buf_addc(k, 0);
	gk_buf_adduint(k, (uint64_t)pid);
	void **slot = gk_smap_slot(P.procs, k->data, k->len, false);
	struct proc *p = slot ? *slot : NULL;
	if (!p) {
		if (gk_smap_count(P.procs) >= P.max_procs) {
			gk_export_dropped(ex, 1);
			return;
		}
		slot = gk_smap_slot(P.procs, k->data, k->len, true);
		p = gk_xcalloc(1, sizeof *p);
		*slot = p;
		gk_expo_origin_set(&p->o, ev, P.host);
		p->interval_ms = 10000;
		gk_snapasm_init(&p->asm_);
		p->recv_ms = gk_loop_now(P.loop);
		gk_gauge_set(P.m_procs, (double)gk_smap_count(P.procs));
	}
	gk_expo_src last = src_of(p);
	gk_expo_restarts_part(&p->restarts, &last, seq, part);
	uint64_t ts = 0, lost = p->asm_.incomplete;
	enum gk_snapasm_result r = gk_snapasm_add(&p->asm_, ev, &p->snap, &ts);
	if (p->asm_.incomplete != lost)
		gk_counter_add(P.m_incomplete,
		    (double)(p->asm_.incomplete - lost));
	if (r != GK_SNAPASM_COMPLETE)
		return;
	/* Complete: it replaced the one before. */
	if (gk_expo_restarts_complete(&p->restarts, seq, &p->o))
		gk_counter_add(P.m_restarts, 1);
	gk_snap_interval_add(&p->iv, ts);
	p->interval_ms = gk_snap_interval_ms(&p->iv, 10000);
	p->recv_ms = gk_loop_now(P.loop);
	gk_export_sent(ex, (uint64_t)parts);
}

static bool
expired(const struct proc *p, uint64_t now)
{
	return now - p->recv_ms > P.expire * p->interval_ms;
}

static void
sweep(gk_loop *loop, void *arg)
{
	(void)arg;
	uint64_t now = gk_loop_now(loop);
	size_t pos = 0;
	const char *key;
	void *v;
	char *dead[64];
	size_t nd = 0;
	while (nd < 64 && gk_smap_next(P.procs, &pos, &key, &v)) {
		if (expired(v, now))
			dead[nd++] = (char *)key;
	}
	for (size_t i = 0; i < nd; i++) {
		/* The key is "proc\0pid": its length is both parts. */
		size_t n = strlen(dead[i]);
		n += 1 + strlen(dead[i] + n + 1);
		struct proc *p = gk_smap_get(P.procs, dead[i], n);
		/* "proc" and "pid" are the plugin's own members. */
		char f[320];
		snprintf(f, sizeof f, "instance=%s", p->o.instance);
		char g[160];
		snprintf(g, sizeof g, "process=%s", p->o.proc);
		gk_log(GK_INFO, "process gone: its series expired", g, f);
		gk_smap_del(P.procs, dead[i], n);
		free_proc(p);
		gk_counter_add(P.m_expired, 1);
	}
	gk_gauge_set(P.m_procs, (double)gk_smap_count(P.procs));
	gk_timer_start(loop, &P.sweep, 1000, sweep, NULL);
}

/* ------------------------------------------------------------------ */
/* Exposition (lib/exposition.c)                                       */
/* ------------------------------------------------------------------ */

static void
render(gk_buf *out)
{
	uint64_t now = gk_loop_now(P.loop);
	size_t n = 0, cap = gk_smap_count(P.procs) + 1;
	gk_expo_src *src = gk_xcalloc(cap, sizeof *src);
	size_t pos = 0;
	const char *key;
	void *v;
	while (gk_smap_next(P.procs, &pos, &key, &v)) {
		struct proc *p = v;
		if (!p->snap.len || expired(p, now))
			continue;
		src[n++] = src_of(p);
	}
	size_t dropped = gk_expo_render(out, src, n, NULL);
	free(src);
	if (dropped)
		gk_expo_left_out(P.ex, dropped);
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

static void
conn_close(struct conn *c)
{
	gk_loop_unwatch(P.loop, c->fd);
	close(c->fd);
	gk_http_parser_free(c->parser);
	gk_buf_free(&c->out);
	free(c);
	P.nconns--;
}

static void
respond(struct conn *c, int status, const char *ctype, const char *body,
    size_t n, bool head, bool keep)
{
	gk_buf_addf(&c->out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
	    gk_http_reason(status), gk_http_date());
	gk_buf_addf(&c->out, "Content-Type: %s\r\nContent-Length: %zu\r\n",
	    ctype, n);
	if (!keep)
		gk_buf_adds(&c->out, "Connection: close\r\n");
	gk_buf_adds(&c->out, "\r\n");
	if (!head)
		gk_buf_add(&c->out, body, n);
	c->close_after = !keep;
}

static void
handle(struct conn *c)
{
	const gk_http_info *info = gk_http_parser_info(c->parser);
	gk_buf *w = &P.tmp;
	gk_buf_reset(w);
	gk_http_parser_encode(c->parser, "1", "", 0, w);
	gk_wire_msg m;
	gk_wire_error err;
	gk_buf path = {0};
	if (gk_wire_parse(&m, w->data, w->len, &err) == 0)
		gk_json_string(gk_wire_get(&m, "path"), &path);
	bool get = !strcmp(info->method, "GET") || info->head;
	const char *p = gk_buf_cstr(&path);
	if (get && !strcmp(p, "/metrics")) {
		gk_counter_add(P.m_scrapes, 1);
		gk_buf_reset(&P.body);
		render(&P.body);
		respond(c, 200, "text/plain; version=0.0.4; charset=utf-8",
		    P.body.data ? P.body.data : "", P.body.len, info->head,
		    info->keep_alive);
		if (P.body.cap > (1u << 20))
			gk_buf_free(&P.body);
	} else if (get && !strcmp(p, "/")) {
		static const char idx[] = "gk-export-prometheus: see /metrics\n";
		respond(c, 200, "text/plain; charset=utf-8", idx,
		    sizeof idx - 1, info->head, info->keep_alive);
	} else if (!get) {
		respond(c, 405, "text/plain; charset=utf-8",
		    "method not allowed\n", 19, info->head, false);
	} else {
		respond(c, 404, "text/plain; charset=utf-8", "not found\n", 10,
		    info->head, info->keep_alive);
	}
	gk_buf_free(&path);
}

static bool
flush_conn(struct conn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				gk_loop_modify(P.loop, c->fd, GK_READ | GK_WRITE);
				return true;
			}
			conn_close(c);
			return false;
		}
		gk_buf_consume(&c->out, (size_t)n);
	}
	if (c->close_after) {
		conn_close(c);
		return false;
	}
	gk_loop_modify(P.loop, c->fd, GK_READ);
	return true;
}

static void
conn_io(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	struct conn *c = arg;
	if (events & GK_WRITE) {
		if (!flush_conn(c))
			return;
	}
	if (!(events & GK_READ))
		return;
	char buf[8192];
	ssize_t n = recv(fd, buf, sizeof buf, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (n < 0)
		return;
	size_t off = 0;
	while (off < (size_t)n && !c->close_after) {
		size_t used = 0;
		enum gk_http_feed r = gk_http_parser_feed(c->parser, buf + off,
		    (size_t)n - off, &used);
		off += used;
		if (r == GK_HTTP_REQUEST) {
			handle(c);
		} else if (r == GK_HTTP_ERROR) {
			const gk_http_info *info = gk_http_parser_info(c->parser);
			gk_http_render_simple(info->error_status, NULL, false,
			    false, NULL, &c->out);
			c->close_after = true;
		} else if (r == GK_HTTP_CONTINUE) {
			gk_buf_adds(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
		} else if (used == 0) {
			break;
		}
	}
	flush_conn(c);
}

static void
on_accept(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)events;
	(void)arg;
	for (int i = 0; i < 16; i++) {
		/* Out of fds, accept(2) would leave the connection queued
		 * and the loop spin on it: gk_accept takes it into its
		 * reserve fd, to be closed at once (and says so). */
		bool shed;
		int cfd = gk_accept(fd, NULL, NULL, &shed);
		if (cfd < 0)
			return;
		if (shed) {
			close(cfd);
			gk_accept_reserve();
			continue;
		}
		if (P.nconns >= MAX_CONNS) {
			close(cfd);
			gk_log(GK_WARN, "too many scrape connections: refused",
			    "max=64");
			continue;
		}
		struct conn *c = gk_xcalloc(1, sizeof *c);
		c->fd = cfd;
		gk_http_limits lim = {.max_header = MAX_REQ_BYTES,
		                      .max_body = MAX_REQ_BYTES};
		c->parser = gk_http_parser_new(&lim);
		P.nconns++;
		gk_loop_watch(loop, cfd, GK_READ, conn_io, c);
	}
}

static bool
keep_running(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	return true; /* keep serving the last snapshots until TERM */
}

/* ------------------------------------------------------------------ */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-prometheus [-l ADDR] [--expire N] "
	    "[--max-procs N] [ADDR]\n"
	    "Serve the metrics snapshots read on stdin on GET /metrics "
	    "(Prometheus text format 0.0.4).\n"
	    "  -l, --listen ADDR  address to serve on (127.0.0.1:9464)\n"
	    "  --expire N         drop a process's series after N of its "
	    "intervals without a snapshot (3)\n"
	    "  --max-procs N      processes tracked at most (10000)\n"
	    "  --exit-on-eof      stop serving when stdin ends\n"
	    "  -h, --help         this help\n"
	    "  -V, --version      version\n");
}

int
main(int argc, char **argv)
{
	const char *listen_addr = "127.0.0.1:9464";
	bool exit_on_eof = false;
	P.expire = 3;
	P.max_procs = 10000;
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"expire", required_argument, NULL, 'e'},
	    {"max-procs", required_argument, NULL, 'm'},
	    {"exit-on-eof", no_argument, NULL, 'x'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_addr = optarg; break;
		case 'e':
			if (gk_parse_uint(optarg, 1, 1000, &v) < 0)
				gk_usage_error("bad --expire: %s (expected 1 "
				               "to 1000 intervals)",
				    optarg);
			P.expire = v;
			break;
		case 'm':
			if (gk_parse_uint(optarg, 1, 1000000, &v) < 0)
				gk_usage_error("bad --max-procs: %s (expected "
				               "a count)",
				    optarg);
			P.max_procs = v;
			break;
		case 'x': exit_on_eof = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-prometheus"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	/* gk-exporter --to prometheus:ADDR */
	listen_addr =
	    gk_export_operand(argc, argv, optind, listen_addr, "[ADDR]");
	gk_addr a;
	const char *why;
	if (gk_addr_parse(listen_addr, &a, &why) < 0)
		gk_usage_error("bad --listen: %s (%s)", listen_addr, why);
	gk_export_def def = {.name = "prometheus", .on_event = on_event,
	                     .keep_running = exit_on_eof ? NULL : keep_running};
	P.ex = gk_export_new(&def);
	P.loop = gk_export_loop(P.ex);
	P.procs = gk_smap_new();
	if (gethostname(P.host, sizeof P.host - 1) < 0 || !P.host[0])
		snprintf(P.host, sizeof P.host, "localhost");
	P.m_scrapes = gk_metric_series(gk_counter_new(
	    "gk_export_prometheus_scrapes_total", "Scrapes of /metrics", NULL));
	P.m_procs = gk_metric_series(gk_gauge_new(
	    "gk_export_prometheus_processes", "Processes whose series are served",
	    NULL));
	P.m_expired = gk_metric_series(gk_counter_new(
	    "gk_export_prometheus_expired_total",
	    "Processes whose series expired", NULL));
	P.m_incomplete = gk_metric_series(gk_counter_new(
	    "gk_export_prometheus_incomplete_total",
	    "Snapshots dropped because a part was missing", NULL));
	P.m_restarts = gk_metric_series(gk_counter_new(
	    "gk_export_prometheus_restarts_total",
	    "Processes restarted with the same pid, their counters carried on",
	    NULL));
	/* One exporter a port: a second must fail, not split the scrapes. */
	P.lfd = gk_addr_listen(&a, 128, 0, false);
	if (P.lfd < 0)
		gk_fatal(GK_EXIT_OSERR, "unable to bind %s: %s", listen_addr,
		    strerror(errno));
	gk_loop_watch(P.loop, P.lfd, GK_READ, on_accept, NULL);
	gk_timer_start(P.loop, &P.sweep, 1000, sweep, NULL);
	char f[340];
	snprintf(f, sizeof f, "addr=%s", listen_addr);
	gk_log(GK_INFO, "serving /metrics", f);
	return gk_export_run(P.ex);
}
