/*
 * curl_loop.h: libcurl's multi interface driven by a gk_loop (internal).
 * Transfers run concurrently on the stage's loop; connections are reused
 * by the multi handle's cache.
 */
#ifndef GK_CURL_LOOP_H
#define GK_CURL_LOOP_H

#include <curl/curl.h>

#include "gokit.h"

/* Idle connections the multi handle keeps for reuse, at most. */
#define GK_CURL_MAX_IDLE 1024

typedef struct gk_curl gk_curl;
/* A transfer ended: result and the easy handle (still owned by the
 * caller, who frees or reuses it). */
typedef void gk_curl_done_fn(CURL *easy, CURLcode result, void *arg);

gk_curl *gk_curl_new(gk_loop *loop, long max_host_connections);
void gk_curl_free(gk_curl *c);
/* Start easy; done runs when it ends (never from inside this call). */
int gk_curl_start(gk_curl *c, CURL *easy, gk_curl_done_fn *done, void *arg);
/* Stop a transfer early (done is not called). */
void gk_curl_cancel(gk_curl *c, CURL *easy);
/*
 * The sockets of transfers started here are opened and closed by this
 * module (CURLOPT_OPENSOCKETFUNCTION and CURLOPT_CLOSESOCKETFUNCTION are
 * set by gk_curl_start).  on_open runs with the arg of the transfer that
 * opened fd, on_close with hook_arg, just before it is closed, or when
 * its connection ends before (an idle one its peer closed: shut down,
 * the descriptor left for libcurl to close), once a socket.  Either may
 * be NULL.
 */
typedef void gk_curl_sock_fn(void *arg, int fd);
void gk_curl_socket_hooks(gk_curl *c, gk_curl_sock_fn *on_open,
    gk_curl_sock_fn *on_close, void *hook_arg);
/* Shut down the idle connections whose socket match says is one to drop
 * (an endpoint that left the set), as one whose peer closed: libcurl has
 * no call for it, and closes the descriptor the next time it looks. */
void gk_curl_drop_idle(gk_curl *c, bool (*match)(void *arg, int fd),
    void *arg);
/* Transfers running now. */
int gk_curl_running(const gk_curl *c);

#endif
