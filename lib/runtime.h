/*
 * runtime.h: what the transports (the HTTP server, the wire sockets, stdio)
 * and gk_serve share with the stage runtime (internal to libgokit).
 */
#ifndef GK_RUNTIME_H
#define GK_RUNTIME_H

#include "addr.h"
#include "gokit.h"
#include "http.h"

/* A north connection: where a request came from, where its answer goes. */
typedef struct gk_north gk_north;
struct gk_north_ops {
	/* Deliver the response to req's client; takes resp. */
	void (*respond)(gk_north *n, gk_req *req, gk_msg *resp);
};
struct gk_north {
	const struct gk_north_ops *ops;
	/* Ids from this connection are unique in the whole stage (the HTTP
	 * server makes them; stdio is one connection): no prefix south. */
	bool unique_ids;
	unsigned serial; /* prefix for ids south otherwise */
	unsigned inflight; /* its requests in the table (kept by the runtime) */
};

#define GK_MAX_LISTEN 16

typedef struct gk_stage_config {
	gk_addr listen[GK_MAX_LISTEN];
	int nlisten;
	unsigned mode; /* unix socket permissions, 0: umask */
	gk_addr to;
	bool have_to;
	char **south_argv;
	bool restart;
	size_t max_inflight;
	uint64_t timeout_ms;
	bool timeout_given; /* --timeout was given: no default replaces it */
	uint64_t drain_timeout_ms;
	bool http; /* -l without prefix speaks HTTP */
	gk_http_limits limits;
	uint64_t header_timeout_ms;
	uint64_t idle_timeout_ms;
	/* After the last answer of a connection: read and discard at most
	 * this long in all (0: close at once), and no longer than
	 * lingering_timeout_ms without a byte. */
	uint64_t lingering_time_ms;
	uint64_t lingering_timeout_ms;
	size_t max_conns;
	const char *health_path;
	bool access_log;
	unsigned access_sample;
	bool fuse; /* --fuse: run the built-in stages below in this process */
	/* With fuse: the stage below, run here (its options read), and its
	 * configuration, which may name another below it. */
	const gk_stage_def *fused_def;
	struct gk_stage_config *fused;
} gk_stage_config;

const gk_stage_config *gk__stage_config(const gk_stage *st);
/* A copy of m, its index kept (no second parse). */
gk_msg *gk__msg_copy(const gk_msg *m);
/* Free the messages kept for reuse past the first 64 when none was made
 * since the last call (the stage runtime's idle trim). */
void gk__msg_trim(void);

/* The built-in stages, for their programs and for gk-listener --fuse. */
const gk_stage_def *gk__tracer_stage(void);
const gk_stage_def *gk__limiter_stage(void);
const gk_stage_def *gk__breaker_stage(void);
/* The one of them a program name names (gk-limiter), or NULL. */
const gk_stage_def *gk__builtin_stage(const char *name);
/* Set while a fused stage's options are read: the name usage errors
 * give (else the process's). */
extern const char *gk__usage_name;
/* gk_msg_set without checking raw and key (msg.c says when that is safe). */
void gk__msg_set_trusted(gk_msg *m, const char *key, const char *raw,
    size_t rawlen);
/* The first value of header name (any case) of m; GK_JSON_NONE if none. */
gk_json gk__msg_header_value(const gk_msg *m, const char *name);
/* South up and not draining: what /healthz reports. */
bool gk__stage_healthy(const gk_stage *st);
/* Next request id for transports that make their own. */
uint64_t gk__stage_next_id(gk_stage *st);

/*
 * A request from north: msg is a validated wire request with a string id
 * (the runtime takes msg).  Runs the bounds, arms the deadline, and calls
 * the stage.  May answer at once (north's respond runs before it returns).
 */
void gk__request(gk_stage *st, gk_north *n, void *cookie, gk_msg *msg);
/* The same, storing the request in *slot before the stage sees it. */
void gk__request_with(gk_stage *st, gk_north *n, void *cookie, gk_msg *msg,
    gk_req **slot);
void *gk__req_cookie(const gk_req *req);
const char *gk__req_id(const gk_req *req);
/* The client of req went away: cancel south, drop the answer. */
void gk__req_abandon(gk_req *req);
/* A wire {"id":..,"cancel":true} from north connection n. */
void gk__cancel(gk_stage *st, gk_north *n, const char *id);

/* North transports count themselves, so drain knows when all are gone. */
void gk__north_opened(gk_stage *st);
void gk__north_closed(gk_stage *st);

/* The HTTP transport. */
typedef struct gk_http_server gk_http_server;
gk_http_server *gk_http_server_new(gk_stage *st, gk_loop *loop);
int gk_http_server_add(gk_http_server *srv, int listen_fd);
/* Stop accepting; close idle connections; close the rest when answered. */
void gk_http_server_drain(gk_http_server *srv);
void gk_http_server_free(gk_http_server *srv);

/* gk_serve: answer req with a response built in-process. */
void gk__serve_setup(gk_stage *st);

/* Run a stage with parsed options (stage.c); returns the exit status. */
int gk__stage_run(const gk_stage_def *def, const gk_stage_config *cfg);

#endif

