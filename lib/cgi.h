/*
 * cgi.h: running a CGI/1.1 program (RFC 3875) per request, the logic of
 * gk-exec (internal to libgokit).
 */
#ifndef GK_CGI_H
#define GK_CGI_H

#include "gokit.h"

typedef struct gk_cgi_config {
	char **argv;	     /* the script and its arguments */
	unsigned jobs;	     /* children at once; 0: online CPUs */
	uint64_t timeout_ms; /* per child; 0: none */
} gk_cgi_config;

/* Bytes of per-request state the stage must ask for (req_state_size). */
size_t gk_cgi_req_state_size(void);
/* From the stage's start callback: metrics, /dev/null, the config. */
int gk_cgi_start(gk_stage *st, const gk_cgi_config *cfg);
/* The stage's on_request: run the script now, or queue the request. */
void gk_cgi_request(gk_stage *st, gk_req *req);
/* The stage's on_done: a request that is still running or queued is
 * dropped, and its child (its whole process group) killed. */
void gk_cgi_done(gk_stage *st, gk_req *req, int status);

/*
 * Turn a CGI response (header block, blank line, body) into the members
 * of a wire response after "id": appends ,"status":N,"headers":{...} and
 * ,"body" or ,"body_b64" to out.  Returns 0, or -1 with *why set when the
 * document is not a CGI response.
 */
int gk_cgi_parse_response(const char *p, size_t n, gk_buf *out,
    const char **why);

#endif
