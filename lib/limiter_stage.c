/*
 * limiter_stage.c: gk-limiter's stage, its options and callbacks, for
 * gk-limiter and for gk-listener --fuse.  The logic is lib/limiter.c.  See
 * gk-limiter(1).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"
#include "runtime.h"
#include "limiter.h"

static gk_limiter_config cfg;
static gk_limiter *lim;
static bool min_given, max_given, mode_given, burst_given;
static bool queue_given, max_keys_given, redis_opts_given;
static char *redis_host;

static const gk_stage_option options[] = {
    {"rate", 'r', true, "RATE", "rate limit per key: 100/s, 6000/m, 10/h"},
    {"burst", 'b', true, "N", "requests over the rate an idle key admits (rate x 1s - 1)"},
    {"concurrency", 'c', true, "N",
	"at most N requests in flight south (initial limit with --adaptive)"},
    {"adaptive", 0, false, NULL, "find the concurrency limit from latency"},
    {"min", 0, true, "N", "lowest adaptive limit (20)"},
    {"max", 0, true, "N", "highest adaptive limit (200)"},
    {"key", 'k', true, "SPEC",
	"rate per key: remote, path, header:NAME, jq:EXPR"},
    {"max-keys", 0, true, "N", "keys kept, least recently used evicted (10000)"},
    {"reject", 0, false, NULL, "past the limit answer 429 (default)"},
    {"wait", 0, true, "DUR", "past the limit hold requests up to DUR, then 429"},
    {"queue", 0, true, "N", "at most N requests held by --wait (100)"},
    {"shadow", 0, false, NULL, "count and log, let everything through"},
    {"redis", 0, true, "HOST:PORT", "global rate limit kept in Redis"},
    {"redis-prefix", 0, true, "STR", "prefix of the Redis keys (gk-limiter:)"},
    {"redis-timeout", 0, true, "DUR",
	"Redis reply deadline, then the local limit (50ms)"},
    {"nameserver", 0, true, "IP:PORT",
	"DNS server for the --redis host name (resolv.conf's)"},
    {0},
};

static void
set_mode(enum gk_limiter_mode m, const char *name)
{
	if (mode_given && cfg.mode != m)
		gk_usage_error("--%s: give one of --reject, --wait, --shadow",
		    name);
	mode_given = true;
	cfg.mode = m;
}

static void
parse_redis(const char *v)
{
	const char *colon = strrchr(v, ':');
	uint64_t port;
	if (!colon || colon == v || gk_parse_uint(colon + 1, 1, 65535, &port) < 0)
		gk_usage_error("bad --redis: %s (expected HOST:PORT)", v);
	size_t n = (size_t)(colon - v);
	if (v[0] == '[' && n > 2 && v[n - 1] == ']') {
		v++;
		n -= 2;
	}
	free(redis_host);
	redis_host = gk_xmalloc(n + 1);
	memcpy(redis_host, v, n);
	redis_host[n] = 0;
	cfg.redis_host = redis_host;
	cfg.redis_port = (int)port;
}

/* IPv4:PORT or [IPv6]:PORT, as c-ares takes it. */
static void
check_nameserver(const char *v)
{
	const char *colon = strrchr(v, ':');
	uint64_t port;
	char ip[64];
	unsigned char bin[16];
	size_t n = colon ? (size_t)(colon - v) : 0;
	bool ok = colon && n < sizeof ip &&
	    gk_parse_uint(colon + 1, 1, 65535, &port) == 0;
	if (ok && n > 2 && v[0] == '[' && v[n - 1] == ']') {
		memcpy(ip, v + 1, n - 2);
		ip[n - 2] = 0;
		ok = inet_pton(AF_INET6, ip, bin) == 1;
	} else if (ok) {
		memcpy(ip, v, n);
		ip[n] = 0;
		ok = inet_pton(AF_INET, ip, bin) == 1;
	}
	if (!ok)
		gk_usage_error("bad --nameserver: %s (expected IP:PORT, "
			       "[IPv6]:PORT)",
		    v);
}

static int
option(int short_name, const char *name, const char *v, void *arg)
{
	(void)short_name;
	(void)arg;
	if (!strcmp(name, "rate")) {
		if (gk_parse_rate(v, &cfg.rate) < 0 || cfg.rate <= 0 ||
		    cfg.rate > 1e9)
			gk_usage_error("bad --rate: %s (expected a rate: 100/s, "
				       "6000/m, 10/h)",
			    v);
		/* Kept as given or refused: a rate silently rounded is a
		 * different limit from the one the user wrote. */
		gk_gcra probe;
		if (gk_parse_rate_exact(v, &cfg.rate_num, &cfg.rate_den_s) < 0 ||
		    gk_gcra_init(&probe, cfg.rate_num, cfg.rate_den_s, 0) < 0)
			gk_usage_error("bad --rate: %s (not kept exactly: a "
				       "rate must admit a whole number of "
				       "requests in some span of at most 1e10s)",
			    v);
	} else if (!strcmp(name, "burst")) {
		cfg.burst = gk_opt_uint(name, v, 0, 1000000000);
		burst_given = true;
	} else if (!strcmp(name, "concurrency"))
		cfg.concurrency = gk_opt_uint(name, v, 1, 1000000);
	else if (!strcmp(name, "adaptive"))
		cfg.adaptive = true;
	else if (!strcmp(name, "min")) {
		cfg.min = gk_opt_uint(name, v, 1, 1000000);
		min_given = true;
	} else if (!strcmp(name, "max")) {
		cfg.max = gk_opt_uint(name, v, 1, 1000000);
		max_given = true;
	} else if (!strcmp(name, "key")) {
		cfg.key = v;
	} else if (!strcmp(name, "max-keys")) {
		cfg.max_keys = gk_opt_uint(name, v, 1, 10000000);
		max_keys_given = true;
	} else if (!strcmp(name, "reject"))
		set_mode(GK_LIMIT_REJECT, name);
	else if (!strcmp(name, "wait")) {
		set_mode(GK_LIMIT_WAIT, name);
		cfg.wait_ms = gk_opt_duration_ms(name, v, 1);
	} else if (!strcmp(name, "queue")) {
		cfg.queue = gk_opt_uint(name, v, 1, 1000000);
		queue_given = true;
	}
	else if (!strcmp(name, "shadow"))
		set_mode(GK_LIMIT_SHADOW, name);
	else if (!strcmp(name, "redis"))
		parse_redis(v);
	else if (!strcmp(name, "redis-prefix")) {
		cfg.redis_prefix = v;
		redis_opts_given = true;
	} else if (!strcmp(name, "redis-timeout")) {
		cfg.redis_timeout_ms = gk_opt_duration_ms(name, v, 1);
		redis_opts_given = true;
	} else if (!strcmp(name, "nameserver")) {
		check_nameserver(v);
		cfg.redis_nameserver = v;
		redis_opts_given = true;
	} else
		return -1;
	return 0;
}

static int
start(gk_stage *st, void *arg)
{
	(void)arg;
	/*
	 * Default burst: one second's worth in all (as Guava's SmoothBursty),
	 * so that requests arriving together in one read are not refused
	 * for being nanoseconds apart.
	 */
	if (!burst_given && cfg.rate > 0) {
		uint64_t per_s = (uint64_t)cfg.rate;
		if ((double)per_s < cfg.rate)
			per_s++;
		cfg.burst = per_s ? per_s - 1 : 0;
	}
	/* An option that would change nothing is a mistake worth saying:
	 * the user meant something the command line does not do. */
	if (burst_given && cfg.rate <= 0)
		gk_usage_error("--burst needs --rate");
	if (queue_given && cfg.mode != GK_LIMIT_WAIT)
		gk_usage_error("--queue needs --wait");
	if ((min_given || max_given) && !cfg.adaptive)
		gk_usage_error("--min and --max need --adaptive");
	if (max_keys_given && !cfg.key)
		gk_usage_error("--max-keys needs --key");
	if (redis_opts_given && !cfg.redis_host)
		gk_usage_error("--redis-prefix, --redis-timeout and --nameserver "
			       "need --redis");
	/* One bound given: the other default gives way. */
	if (min_given && !max_given && cfg.max < cfg.min)
		cfg.max = cfg.min;
	if (max_given && !min_given && cfg.min > cfg.max)
		cfg.min = cfg.max;
	const char *why = NULL;
	lim = gk_limiter_new(&cfg, gk_stage_loop(st), &why);
	if (!lim) {
		/* The key spec's own faults name no option; the others
		 * ("-k and --redis ...", "--min is above --max", "nothing to
		 * limit") are not the key's. */
		if (cfg.key && why[0] != '-' && strncmp(why, "nothing", 7))
			gk_usage_error("bad --key: %s (%s)", cfg.key, why);
		gk_usage_error("%s", why);
	}
	return 0;
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)st;
	(void)arg;
	gk_limiter_request(lim, req);
}

static void
on_response(gk_stage *st, gk_req *req, gk_msg *resp, void *arg)
{
	(void)st;
	(void)arg;
	gk_limiter_response(lim, req, resp);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)st;
	(void)arg;
	gk_limiter_done(lim, req, status);
}

static void
stop(gk_stage *st, void *arg)
{
	(void)st;
	(void)arg;
	gk_limiter_flush_logs(lim);
	gk_limiter_free(lim);
	lim = NULL;
}

const gk_stage_def *
gk__limiter_stage(void)
{
	static gk_stage_def def;
	if (def.ops.name)
		return &def;
	gk_limiter_defaults(&cfg);
	def = (gk_stage_def){
	    .ops = {.name = "gk-limiter",
		.req_state_size = gk_limiter_req_state_size(),
		.start = start,
		.on_request = on_request,
		.on_response = on_response,
		.on_done = on_done,
		.stop = stop},
	    .summary = "rate limits, concurrency limits and backpressure",
	    .options = options,
	    .option = option,
	    .http_option = true,
	};
	return &def;
}
