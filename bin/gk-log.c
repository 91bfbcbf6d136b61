/*
 * gk-log: write one event from a shell script, with libgokit's event API,
 * to the event fd (GK_EVENTS_FD, else stderr).
 *
 *	gk-log [-l LEVEL] [-p PROC] [-t TYPE] MESSAGE [key=value ...]
 *
 * Values are typed as gk_log(3) types them: a JSON number (within 2^53),
 * true, false or null is written as such, anything else as a string.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"

/* Readers take at most 64 members (gk-wire(5)): the fields, and ts, type,
 * level, proc, pid, svc, msg, trace_id and truncated. */
#define MAX_FIELDS (GK_WIRE_MAX_FIELDS - 9)

static void
usage(void)
{
	printf("gk-log: write one event, for shell scripts\n\n"
	       "usage: gk-log [options] MESSAGE [KEY=VALUE ...]\n\n"
	       "  -l, --level LEVEL      debug, info, warn, error, fatal (info)\n"
	       "  -p, --proc PROC        the proc member (gk-log)\n"
	       "  -t, --type TYPE        the type member (log)\n"
	       "      --trace-id ID      the trace id the event concerns\n"
	       "  -h, --help             this help\n"
	       "  -V, --version          the version\n\n"
	       "Numbers, true, false and null stay typed; other values are "
	       "strings.\nSee gk-log(1) and gk-events(5).\n");
}

/* As gk_log types a value: a JSON scalar that readers keep exact. */
static bool
scalar(const char *v)
{
	size_t n = strlen(v);
	if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null"))
		return true;
	if (!n || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) ||
	    gk_json_validate(v, n, NULL) < 0)
		return false;
	gk_json j = {GK_JSON_NUMBER, v, n};
	int64_t i;
	double d;
	/* An integer within +-2^53 (gk_json_int compares it exactly), any
	 * other number below 2^53: the double a reader makes of
	 * 9.007199254740993e15 is another number. */
	if (strpbrk(v, ".eE"))
		return gk_json_double(j, &d) && d - d == 0 &&
		    d < 9007199254740992.0 && d > -9007199254740992.0;
	return gk_json_int(j, &i);
}

static bool
reserved(const char *k, size_t n)
{
	static const char *const names[] = {"ts", "type", "level", "proc",
	    "pid", "svc", "msg", "truncated", "trace_id", NULL};
	for (int i = 0; names[i]; i++)
		if (strlen(names[i]) == n && !memcmp(names[i], k, n))
			return true;
	return false;
}

/*
 * Exit 1 when the event was not written (a full disk, a closed or read-only
 * fd, a reader gone, a pipe still full after 1 s): a script must be able to
 * tell.  Said on stderr, which may be the very fd that failed.
 */
static int
finish(void)
{
	int fd = 2, err = 0;
	if (!gk__events_finish(&fd, &err))
		return 0;
	fprintf(stderr,
	        "gk-log: fatal: unable to write the event to fd %d: %s\n", fd,
	        err == EAGAIN ? "still full after 1 s" : strerror(err));
	return 1;
}

/* A trace id as gk-events(5) has it: 32 lowercase hex, not all zero. */
static bool
trace_id_ok(const char *t)
{
	size_t n = 0;
	bool nonzero = false;
	for (; t[n]; n++) {
		if (!((t[n] >= '0' && t[n] <= '9') ||
		      (t[n] >= 'a' && t[n] <= 'f')))
			return false;
		nonzero |= t[n] != '0';
	}
	return n == 32 && nonzero;
}

/* The member name of field f, into buf (64 bytes) when renamed. */
static void
field_key(const char *f, char *buf, const char **k, size_t *kn)
{
	const char *eq = strchr(f, '=');
	size_t n = eq ? (size_t)(eq - f) : strlen(f);
	if (!n) {
		*k = "_";
		*kn = 1;
	} else if (reserved(f, n)) {
		*kn = (size_t)snprintf(buf, 64, "field_%.*s", (int)n, f);
		*k = buf;
	} else {
		*k = f;
		*kn = n;
	}
}

/* An event of a type other than log: the same members, built here. */
static void
other_event(const char *type, enum gk_level level, const char *trace,
    const char *msg, char **f, int nf)
{
	gk_jw *w = gk_event_begin(type);
	gk_jw_key(w, "level");
	gk_jw_cstr(w, gk_level_name(level));
	gk_jw_key(w, "msg");
	gk_jw_cstr(w, msg);
	if (trace) {
		gk_jw_key(w, "trace_id");
		gk_jw_cstr(w, trace);
	}
	for (int i = 0; i < nf; i++) {
		char buf[64], buf2[64];
		const char *k, *k2;
		size_t kn, kn2;
		field_key(f[i], buf, &k, &kn);
		/* A key given twice: the last value wins (as for log). */
		bool dup = false;
		for (int j = i + 1; j < nf && !dup; j++) {
			field_key(f[j], buf2, &k2, &kn2);
			dup = kn2 == kn && !memcmp(k2, k, kn);
		}
		if (dup)
			continue;
		gk_jw_keyn(w, k, kn);
		const char *eq = strchr(f[i], '=');
		if (!eq)
			gk_jw_bool(w, true);
		else if (scalar(eq + 1))
			gk_jw_raw(w, eq + 1, strlen(eq + 1));
		else
			gk_jw_cstr(w, eq + 1);
	}
	gk_event_end();
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"level", required_argument, NULL, 'l'},
	    {"proc", required_argument, NULL, 'p'},
	    {"type", required_argument, NULL, 't'},
	    {"trace-id", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	const char *proc = "gk-log", *type = "log", *trace = NULL;
	const char *level_s = "info";
	gk_events_init("gk-log");
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "+l:p:t:hV", lo, NULL)) != -1) {
		switch (c) {
		case 'l': level_s = optarg; break;
		case 'p': proc = optarg; break;
		case 't': type = optarg; break;
		case 'T': trace = optarg; break;
		case 'h': usage(); return 0;
		case 'V': printf("gk-log %s\n", GK_VERSION); return 0;
		default:
			if (optopt && strchr("lpt", optopt))
				gk_usage_error("option -%c needs a value",
				    optopt);
			if (optopt)
				gk_usage_error("unknown option -%c (see --help)",
				    optopt);
			gk_usage_error("unknown option %s (see --help)",
			    argv[optind - 1]);
		}
	}
	int level = gk_level_parse(level_s);
	if (level < 0)
		gk_usage_error("bad -l: %s (expected debug, info, warn, "
			       "error or fatal)", level_s);
	if (!*proc)
		gk_usage_error("bad -p: empty (expected a program name)");
	/* proc is held in 127 bytes (as gk_events_init keeps it): cut, the
	 * name would match nothing a reader looks for. */
	if (strlen(proc) > 127)
		gk_usage_error("bad -p: %zu bytes (at most 127)", strlen(proc));
	if (!*type)
		gk_usage_error("bad -t: empty (expected log, access, ...)");
	if (trace && !trace_id_ok(trace))
		gk_usage_error("bad --trace-id: %s (expected 32 lowercase "
		               "hexadecimal digits, not all 0)",
		               trace);
	if (optind >= argc)
		gk_usage_error("no MESSAGE (see --help)");
	const char *msg = argv[optind++];
	int nf = argc - optind;
	if (nf > MAX_FIELDS)
		gk_usage_error("too many fields: %d (at most %d)", nf,
		    MAX_FIELDS);
	char **f = argv + optind;

	gk_events_init(proc);
	if (!gk_log_enabled((enum gk_level)level))
		return 0;
	if (strcmp(type, "log")) {
		other_event(type, (enum gk_level)level, trace, msg, f, nf);
		return finish();
	}
	/* gk_log_trace stops at the first NULL: pass every slot.  It renames
	 * trace_id only when a trace id is given; gk-log(1) always does. */
	const char *a[64 + 1] = {0}; /* A8 below passes 64 */
	for (int i = 0; i < nf; i++) {
		a[i] = f[i];
		if (!trace && !strncmp(f[i], "trace_id", 8) &&
		    (f[i][8] == '=' || !f[i][8])) {
			char *r = gk_xmalloc(strlen(f[i]) + sizeof "field_");
			strcpy(stpcpy(r, "field_"), f[i]);
			a[i] = r; /* freed at exit */
		}
	}
#define A8(i) a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], \
	    a[i + 6], a[i + 7]
	gk_log_trace((enum gk_level)level, trace, msg, A8(0), A8(8), A8(16),
	    A8(24), A8(32), A8(40), A8(48), A8(56), (char *)0);
#undef A8
	return finish();
}
