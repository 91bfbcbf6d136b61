/*
 * tracer_stage.c: gk-tracer's stage, its options and callbacks, for
 * gk-tracer and for gk-listener --fuse.  The logic is lib/tracer.c.  See
 * gk-tracer(1).
 */
#include <stdlib.h>
#include <string.h>

#include "gokit.h"
#include "runtime.h"
#include "tracer.h"

static gk_tracer_config cfg = {.sample = 1.0, .parent_based = true};
static gk_tracer *tracer;

static int
option(int short_name, const char *name, const char *v, void *arg)
{
	(void)short_name;
	(void)arg;
	if (!strcmp(name, "sample")) {
		char *end;
		double p = strtod(v, &end);
		if (!*v || *end || !(p >= 0 && p <= 1))
			gk_usage_error("bad --sample: %s (expected a probability from 0 to 1)", v);
		cfg.sample = p;
	} else if (!strcmp(name, "sample-rate")) {
		if (gk_parse_rate(v, &cfg.sample_rate) < 0 ||
		    !(cfg.sample_rate > 0))
			gk_usage_error("bad --sample-rate: %s (expected a rate above 0: 100/s, 6000/m)", v);
	} else if (!strcmp(name, "sample-errors"))
		cfg.sample_errors = true;
	else if (!strcmp(name, "no-parent"))
		cfg.parent_based = false;
	return 0;
}

static int
start(gk_stage *st, void *arg)
{
	(void)st;
	(void)arg;
	tracer = gk_tracer_new(&cfg);
	return 0;
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)st;
	(void)arg;
	gk_tracer_request(tracer, req);
}

static void
on_response(gk_stage *st, gk_req *req, gk_msg *resp, void *arg)
{
	(void)st;
	(void)arg;
	gk_tracer_response(tracer, req, resp);
}

static void
on_answer(gk_stage *st, gk_req *req, gk_msg *resp, void *arg)
{
	(void)st;
	(void)arg;
	gk_tracer_answer(tracer, req, resp);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)st;
	(void)arg;
	gk_tracer_done(tracer, req, status);
}

const gk_stage_def *
gk__tracer_stage(void)
{
	static gk_stage_def def;
	if (def.ops.name)
		return &def;
	static const gk_stage_option opts[] = {
	    {"sample", 's', true, "P", "sample traces started here with probability P (1)"},
	    {"sample-rate", 0, true, "RATE", "at most RATE sampled traces (no cap)"},
	    {"sample-errors", 0, false, NULL, "a span for every 5xx, sampled or not"},
	    {"no-parent", 0, false, NULL, "decide here; ignore the caller's sampled flag"},
	    {0},
	};
	def = (gk_stage_def){
	    .ops = {.name = "gk-tracer",
		.req_state_size = gk_tracer_state_size(),
		.start = start,
		.on_request = on_request,
		.on_response = on_response,
		.on_answer = on_answer,
		.on_done = on_done},
	    .summary = "W3C Trace Context and B3 tracing, span events",
	    .options = opts,
	    .option = option,
	    .http_option = true,
	};
	return &def;
}
