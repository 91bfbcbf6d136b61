/*
 * gk-client: the HTTP transport to upstream instances.  Options and
 * callbacks; the logic is lib/client.c.  See gk-client(1).
 */
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "gokit.h"

static gk_client_config cfg = {
    .balance = GK_BALANCE_P2C_EWMA,
    .connect_timeout_ms = 1000,
    .retries = 2,
    .native = true,
    .budget_percent = 0.2,
    .budget_min_per_s = 10,
    .backoff_base_ms = 25,
    .backoff_max_ms = 250,
    .eject_after = 5,
    .eject_base_ms = 30000,
    .max_ejected = 0.5,
    .check_every_ms = 5000,
    .max_response = 8u << 20,
    .via = "gokit",
    .wait_endpoints_ms = 5000,
};
static gk_buf statics;
static gk_client *client;

static double
percent(const char *opt, const char *v)
{
	char *end;
	double p = strtod(v, &end);
	if (end == v || (*end && strcmp(end, "%")) || !(p >= 0 && p <= 100))
		gk_usage_error("bad --%s: %s (expected a percentage: 20%%)", opt, v);
	return p / 100;
}

static int
option(int short_name, const char *name, const char *v, void *arg)
{
	(void)short_name;
	(void)arg;
	if (!strcmp(name, "resolve"))
		cfg.source = v;
	else if (!strcmp(name, "endpoints")) {
		char *s = gk_xmalloc(strlen(v) + 6);
		strcpy(s, "file:");
		strcat(s, v);
		cfg.source = s;
	} else if (!strcmp(name, "endpoint")) {
		if (statics.len)
			gk_buf_addc(&statics, ',');
		gk_buf_adds(&statics, v);
	} else if (!strcmp(name, "balance")) {
		if (gk_balance_parse(v, &cfg.balance) < 0)
			gk_usage_error("bad --balance: %s (expected round-robin, random, least, p2c-ewma or hash)", v);
	} else if (!strcmp(name, "key")) {
		const char *why;
		if (!(cfg.key = gk_key_spec_new(v, &why)))
			gk_usage_error("bad --key: %s (%s)", v, why);
	} else if (!strcmp(name, "connect-timeout"))
		cfg.connect_timeout_ms = gk_opt_duration_ms(name, v, 0);
	else if (!strcmp(name, "try-timeout"))
		cfg.try_timeout_ms = gk_opt_duration_ms(name, v, 0);
	else if (!strcmp(name, "retries")) {
		cfg.retries = (unsigned)gk_opt_uint(name, v, 0,
		    GK_CLIENT_RETRIES_MAX);
	} else if (!strcmp(name, "retry-on")) {
		if (gk_client_parse_retry_on(&cfg, v) < 0)
			gk_usage_error("bad --retry-on: %s (expected statuses: 502,503)", v);
	} else if (!strcmp(name, "retry-budget"))
		cfg.budget_percent = percent(name, v);
	else if (!strcmp(name, "retry-min")) {
		if (gk_parse_rate(v, &cfg.budget_min_per_s) < 0)
			gk_usage_error("bad --retry-min: %s (expected a rate: 10/s)", v);
	} else if (!strcmp(name, "eject-after")) {
		cfg.eject_after = (unsigned)gk_opt_uint(name, v, 0, 1000);
	} else if (!strcmp(name, "eject-time"))
		cfg.eject_base_ms = gk_opt_duration_ms(name, v, 0);
	else if (!strcmp(name, "max-ejected"))
		cfg.max_ejected = percent(name, v);
	else if (!strcmp(name, "check")) {
		/* An origin-form path: it follows host:port in the URL. */
		if (v[0] != '/' || strpbrk(v, " \t\r\n#"))
			gk_usage_error("bad --check: %s (expected a path: /healthz)", v);
		cfg.check_path = v;
	} else if (!strcmp(name, "check-interval"))
		cfg.check_every_ms = gk_opt_duration_ms(name, v, 1);
	else if (!strcmp(name, "nameserver"))
		cfg.ropts.nameserver = v;
	else if (!strcmp(name, "invalidate-after"))
		cfg.ropts.invalidate_after_ms = gk_opt_duration_ms(name, v, 0);
	else if (!strcmp(name, "max-response")) {
		cfg.max_response = gk_opt_size(name, v, 0);
	} else if (!strcmp(name, "via")) {
		/* Via's received-by: a pseudonym (a token) or host:port,
		 * nothing that would end the member or the line. */
		static const char ok[] =
		    "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~:[]";
		if (!*v || strlen(v) > 255 || v[strspn(v, ok)])
			gk_usage_error(
			    "bad --via: %s (expected a name for this "
			    "proxy, a token or host:port: gokit)",
			    v);
		cfg.via = v;
	} else if (!strcmp(name, "preserve-host"))
		cfg.preserve_host = true;
	else if (!strcmp(name, "http2"))
		cfg.http2 = true;
	else if (!strcmp(name, "engine")) {
		if (!strcmp(v, "native"))
			cfg.native = true;
		else if (!strcmp(v, "curl"))
			cfg.native = false;
		else
			gk_usage_error("bad --engine: %s (expected native or curl)", v);
	}
	else if (!strcmp(name, "wait-endpoints"))
		cfg.wait_endpoints_ms = gk_opt_duration_ms(name, v, 0);
	else if (!strcmp(name, "max-conns-per-endpoint")) {
		cfg.max_host_connections = (long)gk_opt_uint(name, v, 1, 100000);
	}
	return 0;
}

static int
start(gk_stage *st, void *arg)
{
	(void)arg;
	if (statics.len) {
		if (cfg.source)
			gk_usage_error("give --endpoint, --endpoints or --resolve, not several");
		gk_buf s = {0};
		gk_buf_adds(&s, "static:");
		gk_buf_add(&s, statics.data, statics.len);
		cfg.source = gk_buf_cstr(&s);
	}
	if (!cfg.source)
		gk_usage_error("no endpoints: give --endpoint ADDR, --endpoints FILE or --resolve URI");
	if (cfg.balance == GK_BALANCE_HASH && !cfg.key)
		gk_usage_error("--balance hash needs -k KEY");
	const char *why = NULL;
	client = gk_client_new(st, &cfg, &why);
	if (!client)
		gk_usage_error("bad endpoint source: %s (%s)", cfg.source, why);
	return 0;
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)st;
	(void)arg;
	gk_client_request(client, req);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)st;
	(void)arg;
	gk_client_done(client, req, status);
}

int
main(int argc, char **argv)
{
	static const gk_stage_option opts[] = {
	    {"endpoint", 'e', true, "ADDR", "an upstream HOST:PORT (repeatable)"},
	    {"endpoints", 0, true, "FILE", "endpoints from FILE, watched"},
	    {"resolve", 0, true, "URI", "endpoints from a resolver source"},
	    {"balance", 'b', true, "HOW", "round-robin, random, least, p2c-ewma, hash (p2c-ewma)"},
	    {"key", 'k', true, "KEY", "hash key: remote, path, header:NAME, jq:EXPR"},
	    {"connect-timeout", 0, true, "DUR", "connect timeout (1s)"},
	    {"try-timeout", 0, true, "DUR", "timeout of each try (the deadline)"},
	    {"retries", 0, true, "N", "extra tries when safe (2)"},
	    {"retry-on", 0, true, "LIST", "statuses retried for idempotent methods"},
	    {"retry-budget", 0, true, "PCT", "retries at most PCT of requests (20%)"},
	    {"retry-min", 0, true, "RATE", "plus this many retries (10/s)"},
	    {"eject-after", 0, true, "N", "eject after N failures in a row; 0 off (5)"},
	    {"eject-time", 0, true, "DUR", "ejection time, times the ejections (30s)"},
	    {"max-ejected", 0, true, "PCT", "never eject more of the set (50%)"},
	    {"check", 0, true, "PATH", "active health check path"},
	    {"check-interval", 0, true, "DUR", "between active checks (5s)"},
	    {"wait-endpoints", 0, true, "DUR", "wait for a first set at start (5s)"},
	    {"nameserver", 0, true, "ADDR", "DNS server for dns: sources"},
	    {"invalidate-after", 0, true, "DUR", "drop the last good set after DUR of errors"},
	    {"max-response", 0, true, "SIZE", "largest upstream body; 502 past it (8m)"},
	    {"preserve-host", 0, false, NULL, "pass the client's Host header upstream"},
	    {"via", 0, true, "NAME", "this proxy's name in Via (gokit)"},
	    {"http2", 0, false, NULL, "HTTP/2 (prior knowledge) to every endpoint"},
	    {"engine", 0, true, "NAME", "HTTP/1.1 engine: native or curl (native)"},
	    {"max-conns-per-endpoint", 0, true, "N", "connections per endpoint at most"},
	    {0},
	};
	gk_stage_def def = {
	    .ops = {.name = "gk-client",
		.req_state_size = gk_client_state_size(),
		.start = start,
		.on_request = on_request,
		.on_done = on_done},
	    .summary = "HTTP to upstream instances: balancing, retries, ejection",
	    .options = opts,
	    .option = option,
	    .no_south = true,
	};
	return gk_stage_main(argc, argv, &def);
}
