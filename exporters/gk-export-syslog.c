/*
 * gk-export-syslog: events to syslog.  Without an address, as syslog(3)
 * does it: RFC 3164 datagrams to the local socket (/dev/log, or
 * --socket); with udp:HOST:PORT, tcp:HOST:PORT (octet counting, RFC 6587)
 * or unix:PATH, RFC 5424 with the events' members as structured data.
 * See gk-export-syslog(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logship.h"

static struct {
	gk_export *ex;
	gk_econn *conn;
	gk_syslog_opts so;
	bool rfc5424;
	unsigned types;
	gk_buf msg, frame;
	gk_series *m_truncated, *m_skipped;
} S;

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)ex;
	(void)arg;
	if (!(S.types & GK_EVMASK(ev->type))) {
		gk_counter_add(S.m_skipped, 1);
		return;
	}
	gk_buf_reset(&S.msg);
	bool cut = S.rfc5424 ? gk_syslog_5424(ev, &S.so, &S.msg)
	                     : gk_syslog_3164(ev, &S.so, &S.msg);
	if (cut)
		gk_counter_add(S.m_truncated, 1);
	enum gk_econn_kind k = gk_econn_kind(S.conn);
	if (k == GK_ECONN_TCP || (k == GK_ECONN_UNIX_STREAM && S.rfc5424)) {
		/* RFC 6587 octet counting: "LEN SP MSG". */
		gk_buf_reset(&S.frame);
		gk_buf_adduint(&S.frame, S.msg.len);
		gk_buf_addc(&S.frame, ' ');
		gk_buf_add(&S.frame, S.msg.data, S.msg.len);
		gk_econn_send(S.conn, S.frame.data, S.frame.len);
	} else if (k == GK_ECONN_UNIX_STREAM) {
		/* glibc ends each message on a stream /dev/log with a NUL. */
		gk_buf_addc(&S.msg, 0);
		gk_econn_send(S.conn, S.msg.data, S.msg.len);
	} else {
		gk_econn_send(S.conn, S.msg.data, S.msg.len);
	}
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	gk_econn_drain(S.conn);
}

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: gk-export-syslog [options] [udp:HOST:PORT | tcp:HOST:PORT "
	    "| unix:PATH]\n"
	    "Send events to syslog: without an address as syslog(3) does "
	    "(RFC 3164 to /dev/log),\n"
	    "with one as RFC 5424 with structured data.\n"
	    "  -f, --facility NAME   user, daemon, local0..local7, ... (user)\n"
	    "  -i, --ident NAME      APP-NAME / tag (each event's proc)\n"
	    "  -s, --socket PATH     the local socket (/dev/log)\n"
	    "      --format FMT      3164 or 5424 (3164 locally, else 5424)\n"
	    "      --sd-id ID        the SD-ID of the structured data "
	    "(gokit@32473)\n"
	    "      --hostname NAME   HOSTNAME in RFC 5424 (this host's)\n"
	    "      --types LIST      event types sent: log,access,span,"
	    "metrics,other or all (log,access)\n"
	    "      --max-message N   bytes of a message, longer is cut "
	    "(8k)\n"
	    "      --buffer SIZE     bytes held while the peer is away (4m)\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n");
}

int
main(int argc, char **argv)
{
	const char *sock = "/dev/log", *format = NULL, *hostname = NULL;
	bool sock_given = false;
	size_t buffer = 4u << 20, max_msg = 8192;
	S.so.facility = 1;
	S.so.sd_id = "gokit@32473";
	S.types = GK_EVMASK(GK_EV_LOG) | GK_EVMASK(GK_EV_ACCESS);
	static const struct option opts[] = {
	    {"facility", required_argument, NULL, 'f'},
	    {"ident", required_argument, NULL, 'i'},
	    {"socket", required_argument, NULL, 's'},
	    {"format", required_argument, NULL, 'F'},
	    {"sd-id", required_argument, NULL, 'D'},
	    {"hostname", required_argument, NULL, 'H'},
	    {"types", required_argument, NULL, 'T'},
	    {"max-message", required_argument, NULL, 'M'},
	    {"buffer", required_argument, NULL, 'B'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:i:s:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			S.so.facility = gk_syslog_facility(optarg);
			if (S.so.facility < 0)
				gk_usage_error("bad --facility: %s (expected "
				               "user, daemon, local0..local7, "
				               "...)",
				               optarg);
			break;
		case 'i':
			if (!*optarg)
				gk_usage_error("bad --ident: empty");
			S.so.ident = optarg;
			break;
		case 's':
			sock = optarg;
			sock_given = true;
			break;
		case 'F':
			if (strcmp(optarg, "3164") && strcmp(optarg, "5424"))
				gk_usage_error("bad --format: %s (expected "
				               "3164 or 5424)",
				               optarg);
			format = optarg;
			break;
		case 'D':
			if (!*optarg || strlen(optarg) > 32 ||
			    strpbrk(optarg, " =]\""))
				gk_usage_error("bad --sd-id: %s (expected up "
				               "to 32 characters, no space, "
				               "'=', ']' or '\"')",
				               optarg);
			S.so.sd_id = optarg;
			break;
		case 'H': hostname = optarg; break;
		case 'T':
			if (gk_evmask_parse(optarg, &S.types) < 0)
				gk_usage_error("bad --types: %s (expected a "
				               "list of log, access, span, "
				               "metrics, other, or all)",
				               optarg);
			break;
		case 'M':
			if (gk_parse_size(optarg, &max_msg) < 0 ||
			    max_msg < 480 || max_msg > 65000)
				gk_usage_error("bad --max-message: %s "
				               "(expected 480 to 65000 bytes)",
				               optarg);
			break;
		case 'B':
			if (gk_parse_size(optarg, &buffer) < 0 ||
			    buffer < 65536)
				gk_usage_error("bad --buffer: %s (expected a "
				               "size of 64k or more)",
				               optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-syslog"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *addr =
	    gk_export_operand(argc, argv, optind, NULL, "one address");
	if (addr && sock_given)
		gk_usage_error("--socket and an address: give one");
	if (addr && strncmp(addr, "udp:", 4) && strncmp(addr, "tcp:", 4) &&
	    strncmp(addr, "unix:", 5))
		gk_usage_error("bad address: %s (expected udp:HOST:PORT, "
		               "tcp:HOST:PORT or unix:PATH)",
		               addr);
	S.rfc5424 = format ? !strcmp(format, "5424") : addr != NULL;
	S.so.max_bytes = max_msg;
	char host[256];
	if (!hostname) {
		if (gethostname(host, sizeof host - 1) < 0 || !host[0])
			snprintf(host, sizeof host, "-");
		host[sizeof host - 1] = 0;
		hostname = host;
	}
	S.so.host = hostname;
	char local[400];
	if (!addr) {
		snprintf(local, sizeof local, "unix:%s", sock);
		addr = local;
	}
	gk_export_def def = {
	    .name = "syslog", .on_event = on_event, .on_drain = on_drain};
	S.ex = gk_export_new(&def);
	S.m_truncated = gk_metric_series(
	    gk_counter_new("gk_export_syslog_truncated_total",
	                   "Messages cut to --max-message", NULL));
	S.m_skipped = gk_metric_series(
	    gk_counter_new("gk_export_syslog_skipped_total",
	                   "Events of a type not in --types", NULL));
	const char *why;
	S.conn = gk_econn_new(S.ex, addr, GK_ECONN_UDP, buffer, &why);
	if (!S.conn)
		gk_usage_error("bad address: %s (%s)", addr, why);
	char f[420], g[40], h[40];
	snprintf(f, sizeof f, "addr=%s", addr);
	snprintf(g, sizeof g, "format=rfc%s", S.rfc5424 ? "5424" : "3164");
	snprintf(h, sizeof h, "facility=%s",
	         gk_syslog_facility_name(S.so.facility));
	gk_log(GK_INFO, "sending events to syslog", f, g, h);
	int rc = gk_export_run(S.ex);
	gk_econn_free(S.conn);
	gk_buf_free(&S.msg);
	gk_buf_free(&S.frame);
	return rc;
}
