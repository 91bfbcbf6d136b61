/*
 * curl_loop.c: the multi socket API on our loop.  libcurl tells us which
 * fds to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
 * (CURLMOPT_TIMERFUNCTION); we tell it what happened
 * (curl_multi_socket_action) and collect finished transfers.
 */
#include <stdlib.h>
#include <string.h>

#include "curl_loop.h"

struct transfer {
	gk_curl_done_fn *done;
	void *arg;
};

struct gk_curl {
	gk_loop *loop;
	CURLM *multi;
	gk_timer timer;
	int running;
};

static void check_done(gk_curl *c);

static void
on_fd(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	gk_curl *c = arg;
	int what = (ev & GK_READ ? CURL_CSELECT_IN : 0) |
	    (ev & GK_WRITE ? CURL_CSELECT_OUT : 0);
	curl_multi_socket_action(c->multi, fd, what, &c->running);
	check_done(c);
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	(void)socketp;
	gk_curl *c = userp;
	if (what == CURL_POLL_REMOVE) {
		gk_loop_unwatch(c->loop, s);
		return 0;
	}
	unsigned ev = (what & CURL_POLL_IN ? GK_READ : 0) |
	    (what & CURL_POLL_OUT ? GK_WRITE : 0);
	if (gk_loop_modify(c->loop, s, ev) < 0)
		gk_loop_watch(c->loop, s, ev, on_fd, c);
	return 0;
}

static void
on_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_curl *c = arg;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &c->running);
	check_done(c);
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	gk_curl *c = userp;
	if (timeout_ms < 0)
		gk_timer_stop(c->loop, &c->timer);
	else
		gk_timer_start(c->loop, &c->timer, (uint64_t)timeout_ms,
		    on_timer, c);
	return 0;
}

static void
check_done(gk_curl *c)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *easy = m->easy_handle;
		CURLcode result = m->data.result;
		struct transfer *t = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		curl_multi_remove_handle(c->multi, easy);
		if (t) {
			gk_curl_done_fn *done = t->done;
			void *arg = t->arg;
			free(t);
			curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
			done(easy, result, arg);
		}
	}
}

gk_curl *
gk_curl_new(gk_loop *loop, long max_host_connections)
{
	static bool global;
	if (!global) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		global = true;
	}
	gk_curl *c = gk_xcalloc(1, sizeof *c);
	c->loop = loop;
	c->multi = curl_multi_init();
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)GK_CURL_MAX_IDLE);
	if (max_host_connections > 0)
		curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
		    max_host_connections);
	curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	return c;
}

void
gk_curl_free(gk_curl *c)
{
	if (!c)
		return;
	gk_timer_stop(c->loop, &c->timer);
	curl_multi_cleanup(c->multi);
	free(c);
}

int
gk_curl_start(gk_curl *c, CURL *easy, gk_curl_done_fn *done, void *arg)
{
	struct transfer *t = gk_xmalloc(sizeof *t);
	t->done = done;
	t->arg = arg;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
	if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) {
		free(t);
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		return -1;
	}
	return 0;
}

void
gk_curl_cancel(gk_curl *c, CURL *easy)
{
	struct transfer *t = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
	curl_multi_remove_handle(c->multi, easy);
	free(t);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
}

int
gk_curl_running(const gk_curl *c)
{
	return c->running;
}
