/*
 * stage_main.c: the options every stage shares, merged with the stage's
 * own, and --help.  Usage errors are one line and exit 64.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

enum {
	OPT_TO = 256,
	OPT_RESTART,
	OPT_NO_RESTART,
	OPT_MAX_INFLIGHT,
	OPT_TIMEOUT,
	OPT_DRAIN_TIMEOUT,
	OPT_MODE,
	OPT_HTTP,
	OPT_MAX_HEADER,
	OPT_MAX_BODY,
	OPT_HEADER_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_LINGERING_TIME,
	OPT_LINGERING_TIMEOUT,
	OPT_MAX_CONNS,
	OPT_HEALTH,
	OPT_NO_ACCESS_LOG,
	OPT_ACCESS_SAMPLE,
	OPT_FUSE,
	OPT_STAGE = 1000,
};

struct common_help {
	int code;
	const char *name, *arg, *help;
	bool http;
};

static const struct common_help common[] = {
    {'l', "listen", "ADDR",
	"north side: listen on HOST:PORT, [IPV6]:PORT, unix:PATH, json:ADDR (repeatable)",
	false},
    {OPT_TO, "to", "ADDR", "south side: connect to a stage listening at ADDR", false},
    {OPT_RESTART, "restart", NULL, "restart the south child when it dies (default)", false},
    {OPT_NO_RESTART, "no-restart", NULL, "exit 75 when the south child dies", false},
    {OPT_MAX_INFLIGHT, "max-inflight", "N", "bound on requests in flight; 503 past it (1024)", false},
    {OPT_TIMEOUT, "timeout", "DUR", "answer 504 when south has not answered within DUR", false},
    {OPT_DRAIN_TIMEOUT, "drain-timeout", "DUR", "longest drain after SIGTERM (30s)", false},
    {OPT_MODE, "mode", "OCTAL", "permissions of unix sockets bound with -l", false},
    {OPT_MAX_HEADER, "max-header", "SIZE", "request line and headers; 431 (414) past it (16k)", true},
    {OPT_MAX_BODY, "max-body", "SIZE", "request body; 413 past it (1m)", true},
    {OPT_HEADER_TIMEOUT, "header-timeout", "DUR", "headers must arrive within DUR; 408 (10s)", true},
    {OPT_IDLE_TIMEOUT, "idle-timeout", "DUR", "close idle keep-alive connections (60s)", true},
    {OPT_LINGERING_TIME, "lingering-time", "DUR", "after a last answer, read and discard up to DUR before close; 0: none (30s)", true},
    {OPT_LINGERING_TIMEOUT, "lingering-timeout", "DUR", "stop lingering once DUR passes with nothing read (5s)", true},
    {OPT_MAX_CONNS, "max-conns", "N", "connections at once; 503 and close past it (16384)", true},
    {OPT_HEALTH, "health", "PATH", "answered by the listener itself (/healthz)", true},
    {OPT_NO_ACCESS_LOG, "no-access-log", NULL, "no access events", true},
    {OPT_ACCESS_SAMPLE, "access-sample", "N", "one access event in N (1)", true},
    {'h', "help", NULL, "this help", false},
    {'V', "version", NULL, "the version", false},
    {0, NULL, NULL, NULL, false},
};

/* Options of the south side: a stage without one (gk-exec, gk-pool) has
 * none of them, rather than taking them and doing nothing. */
static bool
south_only(int code)
{
	return code == OPT_TO || code == OPT_RESTART || code == OPT_NO_RESTART;
}

static void
usage(const gk_stage_def *def, bool http)
{
	const char *name = def->ops.name;
	printf("%s: %s\n\nusage: %s [options] %s\n\n", name,
	    def->summary ? def->summary : "",
	    name, def->no_south ? (def->operands_usage ? def->operands_usage : "")
				: "(-- CMD [ARGS...] | --to ADDR)");
	for (const gk_stage_option *o = def->options; o && o->name; o++) {
		char left[64];
		/* "-x, --name" or "    --name", as the common ones below */
		snprintf(left, sizeof left, "%c%c%s--%s%s%s",
		    o->short_name ? '-' : ' ', o->short_name ? o->short_name : ' ',
		    o->short_name ? ", " : "  ", o->name, o->has_arg ? " " : "",
		    o->has_arg ? o->arg_name : "");
		printf("  %-30s %s\n", left, o->help);
	}
	for (const struct common_help *c = common; c->name; c++) {
		if (c->http && !http)
			continue;
		if (south_only(c->code) && def->no_south)
			continue;
		char left[64];
		if (c->code < 256)
			snprintf(left, sizeof left, "-%c, --%s%s%s", c->code,
			    c->name, c->arg ? " " : "", c->arg ? c->arg : "");
		else
			snprintf(left, sizeof left, "    --%s%s%s", c->name,
			    c->arg ? " " : "", c->arg ? c->arg : "");
		printf("  %-30s %s\n", left, c->help);
	}
	if (def->http_option)
		printf("  %-30s %s\n", "    --http",
		    "-l addresses speak HTTP/1.1 instead of the wire protocol");
	if (def->fusable)
		printf("  %-30s %s\n", "    --fuse",
		    "run gk-tracer, gk-limiter, gk-breaker below in this process");
	printf("\nSee %s(1).\n", name);
}

/* Read the common and the stage's options into *out. */
static void
parse_options(int argc, char **argv, const gk_stage_def *def,
    gk_stage_config *out)
{
	gk_stage_config cfg = {
	    .restart = true,
	    .max_inflight = 1024,
	    .timeout_ms = def->default_timeout_ms,
	    .drain_timeout_ms = 30000,
	    .http = def->north_http,
	    .limits = {.max_header = 16384, .max_body = 1u << 20},
	    .header_timeout_ms = 10000,
	    .idle_timeout_ms = 60000,
	    .lingering_time_ms = 30000,
	    .lingering_timeout_ms = 5000,
	    .max_conns = 16384,
	    .health_path = "/healthz",
	    .access_log = true,
	    .access_sample = 1,
	};
	bool http_opts = def->north_http || def->http_option;

	struct option lo[64];
	char shorts[128] = "+l:hV";
	int n = 0;
	for (const struct common_help *c = common; c->name; c++) {
		if ((c->http && !http_opts) || (south_only(c->code) && def->no_south))
			continue;
		lo[n++] = (struct option){c->name,
		    c->arg ? required_argument : no_argument, NULL, c->code};
	}
	if (def->http_option)
		lo[n++] = (struct option){"http", no_argument, NULL, OPT_HTTP};
	if (def->fusable)
		lo[n++] = (struct option){"fuse", no_argument, NULL, OPT_FUSE};
	int i = 0;
	for (const gk_stage_option *o = def->options; o && o->name; o++, i++) {
		lo[n++] = (struct option){o->name,
		    o->has_arg ? required_argument : no_argument, NULL,
		    OPT_STAGE + i};
		if (o->short_name) {
			size_t k = strlen(shorts);
			shorts[k++] = (char)o->short_name;
			if (o->has_arg)
				shorts[k++] = ':';
			shorts[k] = 0;
		}
	}
	lo[n] = (struct option){0};

	opterr = 0;
	optind = 0; /* getopt starts afresh: a fused stage's options come second */
	int c;
	while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		const char *v = optarg;
		const char *why;
		switch (c) {
		case 'l':
			if (cfg.nlisten >= GK_MAX_LISTEN)
				gk_usage_error("too many -l (at most %d)",
				    GK_MAX_LISTEN);
			if (gk_addr_parse(v, &cfg.listen[cfg.nlisten], &why) < 0)
				gk_usage_error("bad -l: %s (%s)", v, why);
			cfg.nlisten++;
			break;
		case OPT_TO:
			if (gk_addr_parse(v, &cfg.to, &why) < 0)
				gk_usage_error("bad --to: %s (%s)", v, why);
			cfg.have_to = true;
			break;
		case OPT_RESTART: cfg.restart = true; break;
		case OPT_NO_RESTART: cfg.restart = false; break;
		case OPT_MAX_INFLIGHT:
			cfg.max_inflight = gk_opt_uint("max-inflight", v, 1, 1000000);
			break;
		case OPT_TIMEOUT:
			cfg.timeout_ms = gk_opt_duration_ms("timeout", v, 0);
			cfg.timeout_given = true;
			break;
		case OPT_DRAIN_TIMEOUT:
			cfg.drain_timeout_ms = gk_opt_duration_ms("drain-timeout", v, 0);
			break;
		case OPT_MODE: {
			char *end;
			long m = strtol(v, &end, 8);
			if (!*v || *end || m < 0 || m > 07777)
				gk_usage_error("bad --mode: %s (expected octal, e.g. 0660)", v);
			cfg.mode = (unsigned)m;
			break;
		}
		case OPT_HTTP: cfg.http = true; break;
		case OPT_FUSE: cfg.fuse = true; break;
		/* Zero would mean the default to the parser (sizes) or close
		 * at once (timers): refused rather than misread. */
		case OPT_MAX_HEADER:
			cfg.limits.max_header = gk_opt_size("max-header", v, 1);
			break;
		case OPT_MAX_BODY:
			cfg.limits.max_body = gk_opt_size("max-body", v, 1);
			break;
		case OPT_HEADER_TIMEOUT:
			cfg.header_timeout_ms = gk_opt_duration_ms("header-timeout", v, 1);
			break;
		case OPT_IDLE_TIMEOUT:
			cfg.idle_timeout_ms = gk_opt_duration_ms("idle-timeout", v, 1);
			break;
		/* 0 turns lingering off; a 0 timeout would be the same,
		 * said less plainly: refused. */
		case OPT_LINGERING_TIME:
			cfg.lingering_time_ms = gk_opt_duration_ms("lingering-time", v, 0);
			break;
		case OPT_LINGERING_TIMEOUT:
			cfg.lingering_timeout_ms = gk_opt_duration_ms("lingering-timeout", v, 1);
			break;
		case OPT_MAX_CONNS:
			cfg.max_conns = gk_opt_uint("max-conns", v, 1, 1000000);
			break;
		case OPT_HEALTH:
			if (v[0] != '/')
				gk_usage_error("bad --health: %s (expected a path starting with /)", v);
			cfg.health_path = v;
			break;
		case OPT_NO_ACCESS_LOG: cfg.access_log = false; break;
		case OPT_ACCESS_SAMPLE:
			cfg.access_sample = (unsigned)gk_opt_uint("access-sample", v, 1, 1000000000);
			break;
		case 'h': usage(def, http_opts); exit(0);
		case 'V': printf("%s %s\n", def->ops.name, GK_VERSION); exit(0);
		case '?':
			gk_usage_bad_option(argv);
		case ':':
			gk_usage_error("option %s needs a value", argv[optind - 1]);
		default: {
			const gk_stage_option *o = NULL;
			if (c >= OPT_STAGE)
				o = &def->options[c - OPT_STAGE];
			else
				for (const gk_stage_option *p = def->options; p && p->name; p++)
					if (p->short_name == c)
						o = p;
			if (!o)
				gk_usage_error("unknown option (see --help)");
			if (!def->option ||
			    def->option(o->short_name, o->name, v, def->arg) < 0)
				gk_usage_error("bad --%s: %s", o->name, v ? v : "");
		}
		}
	}
	if (def->no_south && def->operands) {
		if (def->operands(argc - optind, argv + optind, def->arg) < 0)
			gk_usage_error("bad operands: expected %s (see --help)",
			    def->operands_usage ? def->operands_usage : "none");
		optind = argc;
	}
	if (optind < argc) {
		if (def->no_south)
			gk_usage_error("unexpected argument: %s", argv[optind]);
		cfg.south_argv = argv + optind;
	}
	if (!def->no_south && !cfg.south_argv && !cfg.have_to)
		gk_usage_error("no south side: give -- CMD [ARGS...] or --to ADDR");
	if (cfg.south_argv && cfg.have_to)
		gk_usage_error("give either -- CMD or --to ADDR, not both");
	if (cfg.http && !def->north_http && !cfg.nlisten && !getenv("LISTEN_FDS"))
		gk_usage_error("--http needs an address: give -l HOST:PORT (or LISTEN_FDS)");
	if (def->north_http && !cfg.nlisten && !getenv("LISTEN_FDS"))
		gk_usage_error("no address: give -l HOST:PORT (or LISTEN_FDS)");
	*out = cfg;
}

/* The program cmd names, as execvp(3) finds it, resolved; NULL if none. */
static char *
command_path(const char *cmd)
{
	if (strchr(cmd, '/'))
		return realpath(cmd, NULL);
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path, *e; *p; p = *e ? e + 1 : e) {
		e = strchrnul(p, ':');
		char f[4096];
		int k = snprintf(f, sizeof f, "%.*s/%s", (int)(e - p), p, cmd);
		if (k > 0 && (size_t)k < sizeof f && access(f, X_OK) == 0)
			return realpath(f, NULL);
	}
	return NULL;
}

/* Whether file a and file b are in one directory. */
static bool
same_directory(const char *a, const char *b)
{
	const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
	return sa && sb && sa - a == sb - b && !memcmp(a, b, (size_t)(sa - a));
}

/*
 * The stage cmd runs, when it can run in this process: a built-in stage,
 * the program installed beside this one, self (another version elsewhere
 * runs as its own process), not fused already (its options live in one
 * place).
 */
static const gk_stage_def *
fusable_stage(const gk_stage_def *def, const char *cmd, const char *self,
    const gk_stage_def **used, int nused)
{
	const char *base = strrchr(cmd, '/');
	const gk_stage_def *d = def->fusable(base ? base + 1 : cmd);
	for (int i = 0; d && i < nused; i++)
		if (used[i] == d)
			return NULL;
	if (!d)
		return NULL;
	char *path = command_path(cmd);
	bool beside = path && self && same_directory(path, self);
	free(path);
	return beside ? d : NULL;
}

/*
 * --fuse: read the options of each built-in stage below as that stage
 * would, and chain them below this one in cfg, down to the first command
 * that is not one (the handler), which stays the last stage's south child.
 * A stage that listens itself (-l, --http) runs as its own process.
 */
static void
fuse_chain(const gk_stage_def *def, gk_stage_config *cfg)
{
	const gk_stage_def *used[8];
	int nused = 0;
	char *self = realpath("/proc/self/exe", NULL);
	for (gk_stage_config *c = cfg; c->south_argv && c->south_argv[0] &&
	    nused < 8;) {
		const gk_stage_def *d = fusable_stage(def, c->south_argv[0],
		    self, used, nused);
		if (!d)
			break;
		int argc = 0;
		while (c->south_argv[argc])
			argc++;
		gk_stage_config *below = gk_xcalloc(1, sizeof *below);
		gk__usage_name = d->ops.name;
		parse_options(argc, c->south_argv, d, below);
		gk__usage_name = NULL;
		if (below->nlisten || below->http) {
			free(below);
			break;
		}
		used[nused++] = d;
		c->fused_def = d;
		c->fused = below;
		c = below;
	}
	free(self);
}

int
gk_stage_main(int argc, char **argv, const gk_stage_def *def)
{
	gk_events_init(def->ops.name);
	gk_stage_config cfg;
	parse_options(argc, argv, def, &cfg);
	const char *env = getenv("GK_FUSE");
	if (def->fusable && (cfg.fuse || (env && !strcmp(env, "1"))))
		fuse_chain(def, &cfg);
	return gk__stage_run(def, &cfg);
}
