/*
 * cgi.c: gk-exec's logic.  Each request runs the CGI program (RFC 3875) in
 * a child of its own: the request's meta-variables in its environment, the
 * body on its stdin, the response read from its stdout until EOF and
 * turned into a wire response.  Children are started with posix_spawn (so
 * a spawn costs the same whatever our size) in a process group of their
 * own, so that a timeout or a cancel kills the script and whatever it
 * started.  At most cfg.jobs children run at once; the other requests wait
 * in a FIFO, bounded by the runtime's --max-inflight.
 *
 * A child is finished when it has been reaped and its stdout has reached
 * EOF (or, once we killed it, as soon as it has been reaped).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgi.h"
#include "req_queue.h"

extern char **environ;

/* Output larger than this is not a response we can pass on: 502. */
#define MAX_OUTPUT (8u << 20)
#define MAX_HEADERS 100
/*
 * A script that closed its stdout but has not exited this long after is
 * answered from what it wrote, and goes on running in its slot.  Shorter,
 * and a script that is merely in the middle of exiting (its stdout
 * closes a moment before it can be reaped) would be answered before its
 * exit status is known.
 */
#define EOF_GRACE_MS 250

enum kill_reason { K_NONE, K_TIMEOUT, K_CANCEL, K_OVERSIZE };

struct job {
	gk_req *req; /* NULL once the request is gone */
	pid_t pid;
	int in_fd, out_fd;
	gk_buf in;
	size_t in_off;
	gk_buf out;
	bool reaped, eof;
	bool malformed; /* answered 502 at EOF, before the exit */
	int ws;
	enum kill_reason killed;
	gk_timer timer;
	gk_timer grace; /* from EOF until the exit */
	uint64_t start_us;
};

/* Per-request state: the job running it, or its place in the queue. */
struct rstate {
	struct job *job;
	gk_req_link link; /* waiting for a child slot */
};

static struct {
	gk_stage *st;
	gk_loop *loop;
	gk_cgi_config cfg;
	int devnull;
	unsigned running;
	gk_req_queue queue;
	gk_series *m_children, *m_duration;
	gk_series *m_ok, *m_error, *m_timeout, *m_killed;
} cgi;

size_t
gk_cgi_req_state_size(void)
{
	return sizeof(struct rstate);
}

static struct rstate *
rs(gk_req *req)
{
	return gk_req_state(req);
}

/* ---- the environment ---- */

/* Grows with the request: the listener passes up to 256 headers, and a
 * fixed table once dropped what did not fit (CONTENT_LENGTH, PATH). */
struct env {
	gk_buf text; /* "NAME=value\0" ... */
	size_t *off;
	size_t n, cap;
};

static void
env_begin(struct env *e, const char *name)
{
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 64;
		e->off = gk_xrealloc(e->off, e->cap * sizeof *e->off);
	}
	e->off[e->n++] = e->text.len;
	gk_buf_adds(&e->text, name);
	gk_buf_addc(&e->text, '=');
}

static void
env_end(struct env *e)
{
	gk_buf_addc(&e->text, 0);
}

static void
env_add(struct env *e, const char *name, const char *v, size_t n)
{
	env_begin(e, name);
	/* A value holds no NUL: it would end the string early. */
	const char *nul = memchr(v, 0, n);
	gk_buf_add(&e->text, v, nul ? (size_t)(nul - v) : n);
	env_end(e);
}

static void
env_adds(struct env *e, const char *name, const char *v)
{
	env_add(e, name, v, strlen(v));
}

/* The unescaped string member key of the request, or dflt. */
static void
env_member(struct env *e, const char *name, const gk_msg *m, const char *key,
    const char *dflt)
{
	gk_json v = gk_msg_get(m, key);
	env_begin(e, name);
	if (v.type != GK_JSON_STRING || gk_json_string(v, &e->text) < 0)
		gk_buf_adds(&e->text, dflt);
	env_end(e);
}

/* A header value: a string, or the strings of an array joined by sep:
 * ", " (RFC 9110 5.3), but "; " for Cookie (RFC 6265 5.4), whose parsers
 * would read "a=1, b=2" as one cookie. */
static void
header_value(gk_json v, gk_buf *out, const char *sep)
{
	if (v.type == GK_JSON_STRING) {
		gk_json_string(v, out);
		return;
	}
	if (v.type != GK_JSON_ARRAY)
		return;
	gk_json_iter it;
	gk_json e;
	bool first = true;
	gk_json_iter_init(&it, v);
	while (gk_json_iter_next(&it, NULL, &e)) {
		if (e.type != GK_JSON_STRING)
			continue;
		if (!first)
			gk_buf_adds(out, sep);
		first = false;
		gk_json_string(e, out);
	}
}

/* SERVER_NAME and SERVER_PORT from "host:port" or "[v6]:port". */
static void
env_host(struct env *e, const char *h, size_t n)
{
	const char *port = NULL;
	size_t hn = n;
	if (n && h[0] == '[') {
		const char *rb = memchr(h, ']', n);
		if (rb) {
			hn = (size_t)(rb - h) + 1;
			if (hn < n && h[hn] == ':')
				port = h + hn + 1;
		}
	} else {
		const char *c = memchr(h, ':', n);
		if (c) {
			hn = (size_t)(c - h);
			port = c + 1;
		}
	}
	env_add(e, "SERVER_NAME", h, hn);
	if (port && port < h + n)
		env_add(e, "SERVER_PORT", port, (size_t)(h + n - port));
	else
		env_adds(e, "SERVER_PORT", "80");
}

/* REMOTE_ADDR and REMOTE_PORT from "addr:port" or "[v6]:port". */
static void
env_remote(struct env *e, const char *r, size_t n)
{
	const char *c = NULL;
	for (size_t i = n; i > 0; i--)
		if (r[i - 1] == ':') {
			c = r + i - 1;
			break;
		}
	if (!c || (memchr(r, ':', n) != c && r[0] != '[')) {
		env_add(e, "REMOTE_ADDR", r, n);
		return;
	}
	const char *a = r;
	size_t an = (size_t)(c - r);
	if (an >= 2 && a[0] == '[' && a[an - 1] == ']') {
		a++;
		an -= 2;
	}
	env_add(e, "REMOTE_ADDR", a, an);
	env_add(e, "REMOTE_PORT", c + 1, (size_t)(r + n - c - 1));
}

/* A header name that maps to HTTP_NAME one to one. */
static bool
cgi_name(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * PATH_INFO: the wire's path (as sent) percent-decoded, as RFC 3875 4.1.5
 * has it and Apache, nginx and Go give it.  -1 for an escape that is not
 * two hex digits, or one of a NUL, which the environment cannot hold and
 * which, cut there, would name another file: 400, as those servers answer.
 */
static int
path_info(const gk_msg *m, gk_buf *out)
{
	gk_buf raw = {0};
	gk_json v = gk_msg_get(m, "path");
	if (v.type != GK_JSON_STRING || gk_json_string(v, &raw) < 0 ||
	    !raw.len)
		gk_buf_addc(&raw, '/');
	int r = 0;
	for (size_t i = 0; i < raw.len && !r; i++) {
		char c = raw.data[i];
		if (c == '%') {
			int hi = i + 2 < raw.len ? hexval(raw.data[i + 1]) : -1;
			int lo = hi >= 0 ? hexval(raw.data[i + 2]) : -1;
			if (lo < 0 || (hi | lo) == 0) {
				r = -1;
				break;
			}
			c = (char)(hi << 4 | lo);
			i += 2;
		} else if (!c)
			r = -1;
		gk_buf_addc(out, c);
	}
	gk_buf_free(&raw);
	return r;
}

static void
build_env(struct env *e, const gk_msg *m, const gk_buf *pinfo,
    size_t body_len)
{
	gk_buf tmp = {0};
	env_adds(e, "GATEWAY_INTERFACE", "CGI/1.1");
	env_adds(e, "SERVER_SOFTWARE", "gokit/" GK_VERSION);
	env_adds(e, "SERVER_PROTOCOL", "HTTP/1.1");
	env_member(e, "REQUEST_METHOD", m, "method", "GET");
	env_adds(e, "SCRIPT_NAME", cgi.cfg.argv[0]);
	env_add(e, "PATH_INFO", pinfo->data, pinfo->len);
	env_member(e, "QUERY_STRING", m, "query", "");

	/* REQUEST_URI: not in RFC 3875, but scripts expect it. */
	env_begin(e, "REQUEST_URI");
	gk_json v = gk_msg_get(m, "path");
	if (v.type != GK_JSON_STRING || gk_json_string(v, &e->text) < 0)
		gk_buf_addc(&e->text, '/');
	v = gk_msg_get(m, "query");
	if (v.type == GK_JSON_STRING && v.len > 2) {
		gk_buf_addc(&e->text, '?');
		gk_json_string(v, &e->text);
	}
	env_end(e);

	v = gk_msg_get(m, "remote");
	if (v.type == GK_JSON_STRING && gk_json_string(v, &tmp) == 0 &&
	    tmp.len)
		env_remote(e, tmp.data, tmp.len);
	tmp.len = 0;

	gk_json hs = gk_msg_get(m, "headers");
	bool have_host = false;
	if (hs.type == GK_JSON_OBJECT) {
		gk_json_iter it;
		gk_json k, hv;
		gk_json_iter_init(&it, hs);
		while (gk_json_iter_next(&it, &k, &hv)) {
			tmp.len = 0;
			if (gk_json_string(k, &tmp) < 0 || !tmp.len)
				continue;
			gk_buf_cstr(&tmp);
			/* As nginx and Apache: a name with anything but
			 * letters, digits and '-' is not passed, or
			 * X_Forwarded_For would pose as X-Forwarded-For
			 * (both HTTP_X_FORWARDED_FOR). */
			if (!cgi_name(tmp.data, tmp.len))
				continue;
			if (!strcasecmp(tmp.data, "content-length"))
				continue;
			if (!strcasecmp(tmp.data, "content-type")) {
				if (body_len) {
					env_begin(e, "CONTENT_TYPE");
					header_value(hv, &e->text, ", ");
					env_end(e);
				}
				continue;
			}
			/* httpoxy: Proxy: must not become HTTP_PROXY. */
			if (!strcasecmp(tmp.data, "proxy"))
				continue;
			if (!strcasecmp(tmp.data, "host")) {
				gk_buf h = {0};
				header_value(hv, &h, ", ");
				env_host(e, h.data ? h.data : "", h.len);
				gk_buf_free(&h);
				have_host = true;
			}
			env_begin(e, "HTTP_");
			e->text.len--; /* the '=' */
			for (size_t i = 0; i < tmp.len; i++) {
				char c = tmp.data[i];
				if (c >= 'a' && c <= 'z')
					c = (char)(c - 32);
				else if (c == '-')
					c = '_';
				gk_buf_addc(&e->text, c);
			}
			gk_buf_addc(&e->text, '=');
			header_value(hv, &e->text,
			    strcasecmp(tmp.data, "cookie") ? ", " : "; ");
			env_end(e);
		}
	}
	if (!have_host) {
		env_adds(e, "SERVER_NAME", "localhost");
		env_adds(e, "SERVER_PORT", "80");
	}
	if (body_len) {
		char n[24];
		snprintf(n, sizeof n, "%zu", body_len);
		env_adds(e, "CONTENT_LENGTH", n);
	}
	const char *path = getenv("PATH");
	env_adds(e, "PATH", path ? path : "/usr/local/bin:/usr/bin:/bin");
	/* So that gk-log in a script writes to the same event stream. */
	static const char *const pass[] = {"GK_SERVICE", "GK_EVENTS_FD",
	    "GK_EVENTS_FORMAT", "GK_LOG_LEVEL", "TZ", NULL};
	for (int i = 0; pass[i]; i++) {
		const char *val = getenv(pass[i]);
		if (val)
			env_adds(e, pass[i], val);
	}
	gk_buf_free(&tmp);
}

/* ---- the CGI response ---- */

static bool
tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

struct hdr {
	const char *name, *value;
	size_t nn, vn;
};

static bool
ieqn(const char *a, size_t n, const char *b)
{
	return strlen(b) == n && !strncasecmp(a, b, n);
}

/* The code of "nnn [reason]", 200 to 599 (the wire carries no interim
 * (1xx) response, nor a status past 599), or -1. */
static int
status_code(const char *v, const char *ve)
{
	if (ve - v < 3 || v[0] < '2' || v[0] > '5' || v[1] < '0' ||
	    v[1] > '9' || v[2] < '0' || v[2] > '9' ||
	    (ve - v > 3 && v[3] != ' '))
		return -1;
	return (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
}

int
gk_cgi_parse_response(const char *p, size_t n, gk_buf *out,
    const char **why)
{
	struct hdr h[MAX_HEADERS];
	size_t nh = 0, pos = 0;
	int status = 0;
	bool location = false;
	const char *body = NULL;
	/* Fields seen, Status among them: "Status: 204" alone is a whole
	 * response (RFC 3875 6.2: at least one field, any of them). */
	size_t nfields = 0;
	for (;;) {
		const char *nl = memchr(p + pos, '\n', n - pos);
		if (!nl) {
			*why = nfields ? "no blank line after the headers"
				       : "no CGI header block";
			return -1;
		}
		size_t end = (size_t)(nl - p), len = end - pos;
		const char *line = p + pos;
		if (len && line[len - 1] == '\r')
			len--;
		pos = end + 1;
		if (!len) {
			if (!nfields) {
				*why = "no CGI header block";
				return -1;
			}
			body = p + pos;
			break;
		}
		/* An nph- script writes a whole HTTP response (RFC 3875 5):
		 * its status line sets the status as Status would.  The
		 * rest still goes through the wire, which has no room for
		 * a response passed as is. */
		if (line == p && len >= 5 && !memcmp(line, "HTTP/", 5)) {
			const char *sp = memchr(line, ' ', len);
			if (!sp ||
			    (status = status_code(sp + 1, line + len)) < 0) {
				*why = "malformed status line";
				return -1;
			}
			nfields++;
			continue;
		}
		const char *colon = memchr(line, ':', len);
		if (!colon || colon == line) {
			*why = "malformed header line";
			return -1;
		}
		size_t nn = (size_t)(colon - line);
		for (size_t i = 0; i < nn; i++)
			if (!tchar((unsigned char)line[i])) {
				*why = "malformed header name";
				return -1;
			}
		const char *v = colon + 1, *ve = line + len;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				*why = "control character in a header";
				return -1;
			}
		if (nh == MAX_HEADERS) {
			*why = "too many headers";
			return -1;
		}
		nfields++;
		if (ieqn(line, nn, "status")) {
			if ((status = status_code(v, ve)) < 0) {
				*why = "malformed Status";
				return -1;
			}
			continue;
		}
		if (ieqn(line, nn, "location"))
			location = true;
		h[nh++] = (struct hdr){line, v, nn, (size_t)(ve - v)};
	}
	if (!status)
		status = location ? 302 : 200;
	gk_buf_adds(out, ",\"status\":");
	gk_buf_adduint(out, (uint64_t)status);
	gk_buf_adds(out, ",\"headers\":{");
	bool first = true;
	gk_buf lower = {0}; /* as long as the name: none is cut */
	for (size_t i = 0; i < nh; i++) {
		bool seen = false;
		size_t count = 0;
		for (size_t j = 0; j < nh; j++)
			if (h[j].nn == h[i].nn &&
			    !strncasecmp(h[j].name, h[i].name, h[i].nn)) {
				if (j < i)
					seen = true;
				count++;
			}
		if (seen)
			continue;
		lower.len = 0;
		for (size_t k = 0; k < h[i].nn; k++) {
			char c = h[i].name[k];
			gk_buf_addc(&lower,
			    (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
		}
		if (!first)
			gk_buf_addc(out, ',');
		first = false;
		gk_json_quote(out, lower.data, lower.len);
		gk_buf_addc(out, ':');
		if (count > 1)
			gk_buf_addc(out, '[');
		bool vfirst = true;
		for (size_t j = i; j < nh; j++)
			if (h[j].nn == h[i].nn &&
			    !strncasecmp(h[j].name, h[i].name, h[i].nn)) {
				if (!vfirst)
					gk_buf_addc(out, ',');
				vfirst = false;
				gk_json_quote(out, h[j].value, h[j].vn);
			}
		if (count > 1)
			gk_buf_addc(out, ']');
	}
	gk_buf_addc(out, '}');
	gk_buf_free(&lower);
	size_t bn = (size_t)(p + n - body);
	if (bn) {
		if (gk_utf8_valid(body, bn)) {
			gk_buf_adds(out, ",\"body\":");
			gk_json_quote(out, body, bn);
		} else {
			gk_buf_adds(out, ",\"body_b64\":\"");
			gk_base64_encode(out, body, bn);
			gk_buf_addc(out, '"');
		}
	}
	return 0;
}

/* ---- children ---- */

static void start_next(void);

static void
close_fd(int *fd)
{
	if (*fd < 0)
		return;
	gk_loop_unwatch(cgi.loop, *fd);
	close(*fd);
	*fd = -1;
}

/*
 * Kill the script's process group: it and whatever it started, even once
 * the script itself has exited and been reaped, as a process it left in
 * the background may still hold its stdout.  The group's id is not given
 * to another process while a member of the group lives.
 */
static void
kill_job(struct job *j, enum kill_reason why)
{
	if (!j->killed)
		j->killed = why;
	if (kill(-j->pid, SIGKILL) < 0 && !j->reaped)
		kill(j->pid, SIGKILL);
}

static void
log_outcome(const struct job *j, enum gk_level level, const char *msg,
    const char *k2, const char *v2)
{
	char script[512], pid[32], f2[512];
	snprintf(script, sizeof script, "script=%s", cgi.cfg.argv[0]);
	snprintf(pid, sizeof pid, "child_pid=%d", (int)j->pid);
	if (k2)
		snprintf(f2, sizeof f2, "%s=%s", k2, v2);
	const char *trace = j->req ? gk_req_trace_id(j->req) : NULL;
	gk_log_trace(level, trace, msg, script, pid, k2 ? f2 : NULL,
	    (char *)0);
}

/*
 * Answer the job's request from the script's output: what it wrote, or
 * 502 when that is not a CGI response (and then true).
 */
static bool
answer_output(struct job *j)
{
	gk_req *req = j->req;
	gk_buf line = {0};
	gk_json id = gk_msg_get(gk_req_msg(req), "id");
	const char *why = NULL;
	bool bad = false;
	gk_buf_adds(&line, "{\"id\":");
	gk_buf_add(&line, id.p, id.len);
	if (gk_cgi_parse_response(j->out.data ? j->out.data : "", j->out.len,
		&line, &why) < 0) {
		log_outcome(j, GK_ERROR, "malformed CGI response", "reason",
		    why);
		bad = true;
	} else
		gk_buf_addc(&line, '}');
	rs(req)->job = NULL;
	j->req = NULL;
	gk_wire_error err;
	gk_msg *m = bad ? NULL : gk_msg_new(line.data, line.len, &err);
	if (m)
		gk_pass(req, m);
	else
		gk_answer(req, 502, NULL, "bad gateway\n", "malformed response");
	gk_buf_free(&line);
	return bad;
}

/* Answer the job's request (if it is still there) and free the job. */
static void
complete(struct job *j)
{
	gk_timer_stop(cgi.loop, &j->timer);
	gk_timer_stop(cgi.loop, &j->grace);
	close_fd(&j->in_fd);
	close_fd(&j->out_fd);
	gk_histogram_observe(cgi.m_duration,
	    (double)(gk_monotonic_us() - j->start_us) / 1e6);

	int status = 0;
	const char *reason = NULL;
	gk_series *outcome = j->malformed ? cgi.m_error : cgi.m_ok;
	char num[64];
	if (j->killed == K_TIMEOUT) {
		outcome = cgi.m_timeout;
		status = 504;
		reason = "timeout";
		log_outcome(j, GK_WARN, "CGI script timed out: killed", NULL,
		    NULL);
	} else if (j->killed == K_CANCEL) {
		outcome = cgi.m_killed;
	} else if (j->killed == K_OVERSIZE) {
		outcome = cgi.m_error;
		status = 502;
		reason = "response too large";
		log_outcome(j, GK_ERROR, "CGI response too large: killed",
		    NULL, NULL);
	} else if (WIFSIGNALED(j->ws)) {
		outcome = cgi.m_killed;
		status = 502;
		reason = "script killed";
		const char *sig = sigabbrev_np(WTERMSIG(j->ws));
		snprintf(num, sizeof num, "%s", sig ? sig : "?");
		log_outcome(j, GK_ERROR, "CGI script killed by a signal",
		    "signal", num);
	} else if (WEXITSTATUS(j->ws) != 0) {
		outcome = cgi.m_error;
		status = 502;
		reason = "script failed";
		snprintf(num, sizeof num, "%d", WEXITSTATUS(j->ws));
		log_outcome(j, GK_ERROR, "CGI script failed", "status", num);
	} else if (j->req && answer_output(j))
		outcome = cgi.m_error;
	gk_counter_add(outcome, 1);

	gk_req *req = j->req;
	if (req) {
		rs(req)->job = NULL;
		j->req = NULL;
		gk_answer(req, status, NULL,
		    status == 504 ? "gateway timeout\n" : "bad gateway\n",
		    reason);
	}
	gk_buf_free(&j->in);
	gk_buf_free(&j->out);
	free(j);
	cgi.running--;
	gk_gauge_set(cgi.m_children, (double)cgi.running);
	start_next();
}

static void
on_exit_child(gk_loop *loop, pid_t pid, int ws, void *arg)
{
	(void)loop;
	(void)pid;
	struct job *j = arg;
	j->reaped = true;
	j->ws = ws;
	/* Once killed, do not wait for an EOF a stray process may hold. */
	if (j->eof || j->killed)
		complete(j);
}

/* The script closed its stdout and goes on running: its output is all
 * there is, so answer it now; its exit is only logged. */
static void
on_grace(gk_loop *loop, void *arg)
{
	(void)loop;
	struct job *j = arg;
	if (j->req && !j->killed)
		j->malformed = answer_output(j);
}

static void
on_readable(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)ev;
	struct job *j = arg;
	for (;;) {
		gk_buf_reserve(&j->out, 65536);
		size_t room = j->out.cap - j->out.len;
		ssize_t n = read(fd, j->out.data + j->out.len, room);
		if (n > 0) {
			j->out.len += (size_t)n;
			if (j->out.len > MAX_OUTPUT) {
				kill_job(j, K_OVERSIZE);
				close_fd(&j->out_fd);
				/* No exit is left to wait for. */
				if (j->reaped)
					complete(j);
				return;
			}
			if ((size_t)n < room)
				return; /* drained: level-triggered */
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		break; /* EOF or an error */
	}
	close_fd(&j->out_fd);
	j->eof = true;
	if (j->reaped)
		complete(j);
	else if (j->req)
		gk_timer_start(cgi.loop, &j->grace, EOF_GRACE_MS, on_grace, j);
}

static bool
write_body(struct job *j)
{
	while (j->in_off < j->in.len) {
		ssize_t n = write(j->in_fd, j->in.data + j->in_off,
		    j->in.len - j->in_off);
		if (n > 0) {
			j->in_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return false;
		break; /* EPIPE: the script does not read its stdin */
	}
	return true;
}

static void
on_writable(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)fd;
	(void)ev;
	struct job *j = arg;
	if (write_body(j))
		close_fd(&j->in_fd);
}

static void
on_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	struct job *j = arg;
	kill_job(j, K_TIMEOUT);
	if (j->reaped) /* exited, but its stdout is held open */
		complete(j);
}

/* posix_spawn the script: stdin in_r (or /dev/null), stdout out_w. */
static int
spawn(char **envp, int in_r, int out_w, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_r >= 0 ? in_r : cgi.devnull,
	    0);
	posix_spawn_file_actions_adddup2(&fa, out_w, 1);
	posix_spawnattr_init(&at);
	sigset_t none, dfl;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE); /* the stage ignores it */
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	int e = posix_spawnp(pid, cgi.cfg.argv[0], &fa, &at, cgi.cfg.argv,
	    envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return e;
}

static void
run(gk_req *req)
{
	const gk_msg *m = gk_req_msg(req);
	struct job *j = gk_xcalloc(1, sizeof *j);
	j->in_fd = j->out_fd = -1;
	const char *why;
	if (gk_msg_body(m, &j->in, &why) < 0) {
		gk_buf_free(&j->in);
		free(j);
		gk_answer(req, 400, NULL, "bad request\n", why);
		return;
	}

	gk_buf pinfo = {0};
	if (path_info(m, &pinfo) < 0) {
		gk_buf_free(&pinfo);
		gk_buf_free(&j->in);
		free(j);
		gk_answer(req, 400, NULL, "bad request\n", "invalid path");
		return;
	}
	struct env e = {0};
	build_env(&e, m, &pinfo, j->in.len);
	gk_buf_free(&pinfo);
	char **envp = gk_xcalloc(e.n + 1, sizeof *envp);
	for (size_t i = 0; i < e.n; i++)
		envp[i] = e.text.data + e.off[i];

	int in[2] = {-1, -1}, out[2] = {-1, -1};
	int err = 0;
	if (pipe2(out, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    (j->in.len && pipe2(in, O_CLOEXEC) < 0))
		err = errno;
	/* Our ends nonblocking, the child's as a program expects. */
	if (!err && out[1] >= 0)
		fcntl(out[1], F_SETFL, 0);
	if (!err)
		err = spawn(envp, in[0], out[1], &j->pid);
	gk_buf_free(&e.text);
	free(e.off);
	free(envp);
	if (in[0] >= 0)
		close(in[0]);
	if (out[1] >= 0)
		close(out[1]);
	if (err) {
		if (in[1] >= 0)
			close(in[1]);
		if (out[0] >= 0)
			close(out[0]);
		char a[512], b2[256];
		snprintf(a, sizeof a, "script=%s", cgi.cfg.argv[0]);
		snprintf(b2, sizeof b2, "error=%s", strerror(err));
		gk_log_trace(GK_ERROR, gk_req_trace_id(req),
		    "unable to spawn the CGI script", a, b2, (char *)0);
		gk_counter_add(cgi.m_error, 1);
		gk_buf_free(&j->in);
		free(j);
		gk_answer(req, 502, NULL, "bad gateway\n", "spawn failed");
		return;
	}
	j->req = req;
	j->start_us = gk_monotonic_us();
	j->out_fd = out[0];
	j->in_fd = in[1];
	rs(req)->job = j;
	cgi.running++;
	gk_gauge_set(cgi.m_children, (double)cgi.running);
	gk_loop_watch(cgi.loop, j->out_fd, GK_READ, on_readable, j);
	if (j->in_fd >= 0) {
		fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
		if (write_body(j))
			close_fd(&j->in_fd);
		else
			gk_loop_watch(cgi.loop, j->in_fd, GK_WRITE, on_writable,
			    j);
	}
	if (cgi.cfg.timeout_ms)
		gk_timer_start(cgi.loop, &j->timer, cgi.cfg.timeout_ms,
		    on_timeout, j);
	gk_loop_child(cgi.loop, j->pid, on_exit_child, j);
}

static void
start_next(void)
{
	while (cgi.queue.head && cgi.running < cgi.cfg.jobs) {
		gk_req *req = cgi.queue.head;
		gk_req_queue_remove(&cgi.queue, req);
		run(req);
	}
}

void
gk_cgi_request(gk_stage *st, gk_req *req)
{
	(void)st;
	if (cgi.running < cgi.cfg.jobs && !cgi.queue.head)
		run(req);
	else
		gk_req_queue_push(&cgi.queue, req);
}

void
gk_cgi_done(gk_stage *st, gk_req *req, int status)
{
	(void)st;
	struct rstate *s = rs(req);
	gk_req_queue_remove(&cgi.queue, req);
	struct job *j = s->job;
	if (!j)
		return;
	s->job = NULL;
	j->req = NULL;
	enum kill_reason why = status == 504 ? K_TIMEOUT : K_CANCEL;
	kill_job(j, why);
	if (j->reaped)
		complete(j);
}

int
gk_cgi_start(gk_stage *st, const gk_cgi_config *cfg)
{
	cgi.st = st;
	cgi.loop = gk_stage_loop(st);
	cgi.cfg = *cfg;
	if (!cgi.cfg.jobs) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cgi.cfg.jobs = n > 0 ? (unsigned)n : 1;
	}
	cgi.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (cgi.devnull < 0)
		gk_fatal(GK_EXIT_OSERR, "unable to open /dev/null: %s",
		    strerror(errno));
	/* Spawned afresh at every request (it may be put in place later),
	 * but a script that cannot run now is worth a word at the start. */
	const char *script = cgi.cfg.argv[0];
	if (strchr(script, '/') && access(script, X_OK) != 0) {
		char a[512], b[256];
		snprintf(a, sizeof a, "script=%s", script);
		snprintf(b, sizeof b, "error=%s", strerror(errno));
		gk_log(GK_WARN, "the CGI script cannot be run now", a, b);
	}
	cgi.m_children = gk_metric_series(gk_gauge_new("gk_exec_children",
	    "CGI children running", NULL));
	cgi.queue.link_off = offsetof(struct rstate, link);
	cgi.queue.gauge = gk_metric_series(gk_gauge_new("gk_exec_queue",
	    "Requests waiting for a child slot", NULL));
	gk_metric *runs = gk_counter_new("gk_exec_runs_total",
	    "CGI runs, by outcome", "outcome");
	cgi.m_ok = gk_series_get(runs, "ok", (char *)0);
	cgi.m_error = gk_series_get(runs, "error", (char *)0);
	cgi.m_timeout = gk_series_get(runs, "timeout", (char *)0);
	cgi.m_killed = gk_series_get(runs, "killed", (char *)0);
	cgi.m_duration = gk_metric_series(gk_histogram_new(
	    "gk_exec_duration_seconds", "Time from spawn to the end of a CGI run",
	    NULL, NULL, 0));
	gk_gauge_set(gk_metric_series(gk_gauge_new("gk_exec_jobs",
	    "The bound on CGI children at once (-j)", NULL)),
	    (double)cgi.cfg.jobs);
	return 0;
}
