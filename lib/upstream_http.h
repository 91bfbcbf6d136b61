/*
 * upstream_http.h: gk-client's native HTTP/1.1 engine for plain-http
 * upstreams (internal).  Per endpoint a pool of idle keep-alive
 * connections; a try takes one (or connects, non-blocking), writes the
 * request rendered by the caller in one buffer, and parses the response
 * with http_parser (Content-Length, chunked or close-delimited bodies).
 */
#ifndef GK_UPSTREAM_HTTP_H
#define GK_UPSTREAM_HTTP_H

#include <http_parser.h>

#include "gokit.h"

/* Idle keep-alive connections kept for reuse, at most, per endpoint and
 * in all (a connection past either bound is closed when its try ends). */
#define GK_UH_MAX_IDLE_PER_ENDPOINT 256
#define GK_UH_MAX_IDLE 1024

/* How a try ended. */
enum gk_uh_result {
	GK_UH_OK,          /* a complete response */
	GK_UH_REFUSED,     /* the connect failed: nothing was sent */
	GK_UH_TIMEOUT,     /* connect timeout (nothing sent) or try timeout */
	GK_UH_CLOSED,      /* reset or closed after the request was sent */
	GK_UH_NOT_RESENT,  /* a reused connection closed before any answer:
	                    * not idempotent, so not sent again */
	GK_UH_ABORTED,     /* the body callback refused more, or the
	                    * Content-Length is past max_body */
	GK_UH_BAD,         /* not a valid HTTP/1.x response */
};

typedef struct gk_uh_ops {
	/* A response begins (again, after a 1xx): forget its headers. */
	void (*reset)(void *arg);
	/* <0: no valid answer has this header: the try ends GK_UH_BAD at
	 * the end of the header section, its body not waited for. */
	int (*header)(void *arg, const char *name, size_t nl,
	    const char *value, size_t vl);
	int (*body)(void *arg, const char *p, size_t n); /* <0: abort */
	/* The end: status of the response (0 if none); sent is true when a
	 * byte of the request may have reached the upstream. */
	void (*done)(void *arg, enum gk_uh_result r, int status, bool sent);
} gk_uh_ops;

typedef struct gk_uh gk_uh;
struct gk_uh_pool;
struct gk_uh_conn;

/* One try; lives in the caller's memory (its request state). */
typedef struct gk_uh_xfer {
	gk_uh *uh;
	struct gk_uh_pool *pool;
	struct gk_uh_conn *conn;
	const gk_uh_ops *ops;
	void *arg, *owner;
	const char *req;
	size_t reqlen, off;
	uint64_t deadline_ms; /* loop ms; 0: none */
	/* Set by the caller before gk_uh_start, 0 for none: an answer whose
	 * Content-Length is past it ends GK_UH_ABORTED at its headers. */
	uint64_t max_body;
	gk_timer timer;
	http_parser hp;
	gk_buf field, value;
	enum gk_uh_result pending; /* reported by the timer at 0 ms */
	unsigned connects;         /* connections opened by this try */
	int status;
	bool running, idempotent, head, reused, got_byte, in_value;
	bool in_trailers; /* past the header section: fields are dropped */
	bool connecting, complete, resent, has_pending, in_start;
	bool too_long; /* the Content-Length is past max_body */
	/* A send failed mid-request: only what the upstream sent is read. */
	bool write_failed;
	bool refused; /* the header callback refused the answer */
} gk_uh_xfer;

/* on_open(owner, fd) when a connection is opened for a try whose owner is
 * owner, on_close(hook_arg, fd) just before one is closed. */
typedef void gk_uh_sock_fn(void *arg, int fd);
gk_uh *gk_uh_new(gk_loop *loop, uint64_t connect_timeout_ms,
    gk_uh_sock_fn *on_open, gk_uh_sock_fn *on_close, void *hook_arg);
/* True when addr (HOST:PORT) is a numeric address the engine can reach. */
bool gk_uh_handles(gk_uh *uh, const char *addr);
/* Start a try to addr (gk_uh_handles true): req[0..len) is the whole
 * request, kept alive by the caller until done or cancel.  timeout_ms 0:
 * none.  done is never called from inside this call. */
void gk_uh_start(gk_uh *uh, gk_uh_xfer *x, const char *addr, const char *req,
    size_t len, bool idempotent, bool head, uint64_t timeout_ms,
    const gk_uh_ops *ops, void *arg, void *owner);
/* Close the idle connections to addr (an endpoint that left the set);
 * tries running there finish on theirs.  The engine's record of addr
 * is freed with the last of them (made again if addr comes back). */
void gk_uh_drop_idle(gk_uh *uh, const char *addr);
/* Count the records of addresses the engine holds in gauge. */
void gk_uh_count_pools(gk_uh *uh, gk_series *gauge);
/* Stop a running try (done is not called); its connection is closed. */
void gk_uh_cancel(gk_uh_xfer *x);
/* Free what a finished or cancelled try still holds. */
void gk_uh_xfer_free(gk_uh_xfer *x);

/*
 * Internal, for fuzz/fuzz_upstream.c: a try on no connection, its request
 * taken as written, so that an upstream's bytes can be fed to its parser
 * and callbacks.  uh gives only the loop (for the try's timer).
 * gk__uh_feed hands n bytes to the parser as one read would, n 0 as EOF;
 * it returns false once the try ended (done has been called).  Free x
 * with gk_uh_xfer_free.
 */
void gk__uh_begin(gk_uh *uh, gk_uh_xfer *x, bool head, const gk_uh_ops *ops,
    void *arg);
bool gk__uh_feed(gk_uh_xfer *x, const char *p, size_t n);

#endif
