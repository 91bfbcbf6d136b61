/*
 * ares_loop.h: a c-ares channel driven by a gk_loop: its sockets watched
 * by the loop, its timeouts on a loop timer, so that a lookup never blocks
 * the loop (internal to libgokit).
 */
#ifndef GK_ARES_LOOP_H
#define GK_ARES_LOOP_H

#include <ares.h>

#include "gokit.h"

/*
 * The c-ares functions the glue calls: the library's own for a program that
 * needs c-ares anyway (gk-resolver, gk-client: gk__ares_direct), or found
 * with dlopen(3) by one that only may (gk-limiter, for a --redis name), so
 * that libcares stays out of an idle stage's memory.
 */
typedef struct gk_ares_api {
	__typeof__(&ares_library_init) library_init;
	__typeof__(&ares_init_options) init_options;
	__typeof__(&ares_set_servers_ports_csv) set_servers_ports_csv;
	__typeof__(&ares_destroy) destroy;
	__typeof__(&ares_process_fd) process_fd;
	__typeof__(&ares_timeout) timeout;
} gk_ares_api;

/* Defined with the direct calls in resolver_dns.c, which links c-ares. */
extern const gk_ares_api gk__ares_direct;

typedef struct gk_ares {
	const gk_ares_api *api;
	ares_channel ch; /* NULL until opened */
	gk_loop *loop;
	gk_timer timer;
} gk_ares;

/*
 * Open a channel whose tries wait timeout_ms each, tries times; nameserver
 * "IP:PORT" (or NULL: resolv.conf's servers).  -1 with *why set when
 * c-ares cannot start or nameserver is malformed.  a must not move while
 * open: the channel's callbacks hold it.
 */
int gk__ares_open(gk_ares *a, const gk_ares_api *api, gk_loop *loop,
    int timeout_ms, int tries, const char *nameserver, const char **why);
/* After queries are sent: the channel's next timeout is armed. */
void gk__ares_arm(gk_ares *a);
/* Close the channel: its pending queries are answered ARES_EDESTRUCTION. */
void gk__ares_close(gk_ares *a);

#endif
