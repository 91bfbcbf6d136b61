/*
 * filter.h: gk-filter's engine, a jq program over a stream of events.
 * See gk-filter(1).
 */
#ifndef GK_FILTER_H
#define GK_FILTER_H

#include "gokit.h"

/* The longest line taken; longer ones are skipped and counted. */
#define GK_FILTER_MAX_LINE (16u * 1024 * 1024)

typedef struct gk_filter gk_filter;

typedef struct gk_filter_arg {
	const char *name;
	const char *value; /* text, or JSON text when json */
	bool json;
} gk_filter_arg;

typedef struct gk_filter_route {
	const char *expr; /* a jq program: its first output truthy routes */
	const char *cmd;  /* split into argv as pipecmd_new_argstr does */
} gk_filter_route;

typedef struct gk_filter_config {
	const char *program;
	const char *program_file; /* -f FILE, for jq's imports; may be NULL */
	const gk_filter_arg *args;
	size_t nargs;
	const gk_filter_route *routes;
	size_t nroutes;
	const char *raw_proc; /* proc of wrapped raw lines (NULL: "unknown") */
} gk_filter_config;

/*
 * Compile the program and the route expressions.  Returns NULL with a
 * one-line reason in *err (a bad --argjson value, or jq's compile message).
 */
gk_filter *gk_filter_new(const gk_filter_config *cfg, gk_buf *err);

/*
 * Run over in_fd until end of input (or SIGTERM/SIGINT), writing outputs to
 * out_fd and routed events to the route commands; starts the routes, snapshots
 * metrics at the end.  Returns the exit status.
 */
int gk_filter_run(gk_filter *f, int in_fd, int out_fd);

/*
 * One line (without its newline) through the program, outputs appended to
 * out as lines; routes are not consulted.  For tests.
 */
void gk_filter_line(gk_filter *f, const char *line, size_t len, gk_buf *out);

void gk_filter_free(gk_filter *f);

#endif
