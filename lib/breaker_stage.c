/*
 * breaker_stage.c: gk-breaker's stage, its options and callbacks, for
 * gk-breaker and for gk-listener --fuse.  The logic is lib/breaker.c.  See
 * gk-breaker(1).
 */
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "gokit.h"
#include "runtime.h"

static gk_breaker_config cfg = {
    .consecutive = 5,
    .window_calls = 100,
    .min_calls = 100,
    .failure_rate = 0.5,
    .slow_rate = 1.0,
    .open_ms = 60000,
    .open_max_ms = 600000,
    .probes = 1,
    .fail_classes = 1u << 5,
    .fallback_status = 503,
    .max_keys = 1000,
};
static bool min_calls_given;
static const char *open_for_given, *open_max_given; /* their text */
static const char *slow_rate_given; /* its text, for the message */
static const char *slow_given, *timeout_given; /* their text */
static gk_breaker *breaker;

static int
percent(const char *opt, const char *v, double *out)
{
	char *end;
	double p = strtod(v, &end);
	/* From 1: "0.5" is a fraction written for 50%, not 0.5%. */
	if (end == v || (*end && strcmp(end, "%")) || !(p >= 1 && p <= 100))
		gk_usage_error("bad --%s: %s (expected a percentage from 1%% to 100%%)",
		    opt, v);
	*out = p / 100;
	return 0;
}

static int
option(int short_name, const char *name, const char *v, void *arg)
{
	(void)short_name;
	(void)arg;
	uint64_t n;
	if (!strcmp(name, "consecutive")) {
		cfg.consecutive = (unsigned)gk_opt_uint(name, v, 0, 1000000);
	} else if (!strcmp(name, "window")) {
		/* A bare count, or a duration with its unit. */
		if (gk_parse_uint(v, 1, 10000, &n) == 0) {
			cfg.window_calls = (unsigned)n;
			cfg.window_ms = 0;
		} else {
			/* Whole seconds: the window is one bucket a second. */
			if (gk_parse_duration_ms(v, &cfg.window_ms) < 0 ||
			    cfg.window_ms < 1000 || cfg.window_ms > 3600000 ||
			    cfg.window_ms % 1000)
				gk_usage_error("bad --window: %s (expected 1 to 10000 calls, or whole seconds from 1s to 1h)", v);
			cfg.window_calls = 0;
		}
	} else if (!strcmp(name, "min-calls")) {
		cfg.min_calls = (unsigned)gk_opt_uint(name, v, 1, 1000000);
		min_calls_given = true;
	} else if (!strcmp(name, "failure-rate"))
		percent(name, v, &cfg.failure_rate);
	else if (!strcmp(name, "slow")) {
		cfg.slow_ms = gk_opt_duration_ms(name, v, 0);
		slow_given = v;
	}
	else if (!strcmp(name, "slow-rate")) {
		percent(name, v, &cfg.slow_rate);
		slow_rate_given = v;
	}
	else if (!strcmp(name, "call-timeout")) {
		cfg.timeout_ms = gk_opt_duration_ms("call-timeout", v, 0);
		timeout_given = v;
	}
	else if (!strcmp(name, "open-for")) {
		cfg.open_ms = gk_opt_duration_ms(name, v, 1);
		open_for_given = v;
	} else if (!strcmp(name, "open-max")) {
		cfg.open_max_ms = gk_opt_duration_ms(name, v, 1);
		open_max_given = v;
	} else if (!strcmp(name, "probes")) {
		cfg.probes = (unsigned)gk_opt_uint(name, v, 1, 10000);
	} else if (!strcmp(name, "fail-on")) {
		if (gk_breaker_parse_fail_on(&cfg, v) < 0)
			gk_usage_error("bad --fail-on: %s (expected classes and codes: 5xx,429)", v);
	} else if (!strcmp(name, "fallback-status")) {
		cfg.fallback_status = (int)gk_opt_uint(name, v, 200, 599);
	} else if (!strcmp(name, "fallback-body"))
		cfg.fallback_body = v;
	else if (!strcmp(name, "key")) {
		const char *why;
		cfg.key = gk_key_spec_new(v, &why);
		if (!cfg.key)
			gk_usage_error("bad --key: %s (%s)", v, why);
	} else if (!strcmp(name, "max-keys")) {
		cfg.max_keys = gk_opt_uint(name, v, 1, 1000000);
	}
	return 0;
}

static int
start(gk_stage *st, void *arg)
{
	(void)arg;
	/* Options that would be taken and do nothing. */
	if (slow_rate_given && !cfg.slow_ms)
		gk_usage_error("--slow-rate %s needs --slow", slow_rate_given);
	/* -t answers first: the slow-call rate would stay 0. */
	if (cfg.slow_ms && cfg.timeout_ms && cfg.slow_ms > cfg.timeout_ms)
		gk_usage_error("bad --slow: %s (longer than the -t of %s: no "
			       "call could be slow)",
		    slow_given, timeout_given);
	if (cfg.window_calls && cfg.min_calls > cfg.window_calls) {
		if (min_calls_given)
			gk_usage_error("bad --min-calls: %u (more than the --window of %u calls holds)",
			    cfg.min_calls, cfg.window_calls);
		cfg.min_calls = cfg.window_calls;
	}
	if (cfg.open_max_ms < cfg.open_ms) {
		/* The default bound gives way; one given is a mistake. */
		if (open_max_given)
			gk_usage_error("bad --open-max: %s (below the --open-for "
				       "of %s)",
			    open_max_given,
			    open_for_given ? open_for_given : "60s");
		cfg.open_max_ms = cfg.open_ms;
	}
	breaker = gk_breaker_new(gk_stage_loop(st), &cfg);
	return 0;
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)st;
	(void)arg;
	gk_breaker_request(breaker, req);
}

static void
on_response(gk_stage *st, gk_req *req, gk_msg *resp, void *arg)
{
	(void)st;
	(void)arg;
	gk_breaker_response(breaker, req, resp);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)st;
	(void)arg;
	gk_breaker_done(breaker, req, status);
}

const gk_stage_def *
gk__breaker_stage(void)
{
	static gk_stage_def def;
	if (def.ops.name)
		return &def;
	static const gk_stage_option opts[] = {
	    {"consecutive", 0, true, "N", "trip after N failures in a row; 0 off (5)"},
	    {"window", 0, true, "N|DUR", "sliding window: N calls, or a duration (100)"},
	    {"min-calls", 0, true, "N", "calls in the window before rates count (100)"},
	    {"failure-rate", 0, true, "PCT", "trip at this failure rate (50%)"},
	    {"slow", 0, true, "DUR", "a call slower than DUR is slow (off)"},
	    {"slow-rate", 0, true, "PCT", "trip at this slow-call rate (100%)"},
	    {"call-timeout", 't', true, "DUR", "answer 504 and count a failure after DUR"},
	    {"open-for", 0, true, "DUR", "first open interval (60s)"},
	    {"open-max", 0, true, "DUR", "bound of the doubling open interval (10m)"},
	    {"probes", 0, true, "N", "calls let through half-open (1)"},
	    {"fail-on", 0, true, "LIST", "statuses that fail: 5xx,429 (5xx)"},
	    {"fallback-status", 0, true, "N", "status answered while open (503)"},
	    {"fallback-body", 0, true, "TEXT", "body answered while open"},
	    {"key", 'k', true, "KEY", "one breaker per key: remote, path, header:NAME, jq:EXPR"},
	    {"max-keys", 0, true, "N", "bound of the per-key table (1000)"},
	    {0},
	};
	def = (gk_stage_def){
	    .ops = {.name = "gk-breaker",
		.req_state_size = gk_breaker_state_size(),
		.start = start,
		.on_request = on_request,
		.on_response = on_response,
		.on_done = on_done},
	    .summary = "circuit breaking and timeouts",
	    .options = opts,
	    .option = option,
	    .http_option = true,
	};
	return &def;
}
