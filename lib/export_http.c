/*
 * export_http.c: batches of records POSTed with libcurl from a sender
 * thread (see gk_ehttp in export.h).
 *
 * The loop thread adds records to the open batch, which closes past
 * batch_bytes or batch_records, or batch_ms after its first record, and
 * joins the queue of closed batches.  The sender thread sends the oldest
 * closed batch, and only takes it off the queue once the answer's verdict
 * is OK or DROP; on RETRY it waits (Retry-After, else backoff) and sends
 * the same bytes again.  So batches leave in order, and a batch that was
 * acknowledged is never sent again.  Past max_bytes the oldest batch that
 * is not being sent is dropped, its records counted.
 *
 * The sender never touches metrics or events: it leaves counts and log
 * lines in the shared state and wakes the loop through a pipe, and the
 * loop thread reports them.
 *
 * Memory: what is held is the open batch (about batch_bytes), the closed
 * batches (at most max_bytes, the one being sent included) and, with gzip,
 * the compressed copy of the batch being sent.  So that the process's
 * resident size follows that, and not what glibc keeps after a burst, the
 * first gk_ehttp_new() tunes malloc for the whole process (see
 * tune_malloc()).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "export.h"
#include "log_gate.h"

#define MAX_NOTES 32
#define RETRY_AFTER_MAX_MS 60000
/* The defaults of gk_ehttp_opts (export.h); the plugins' man pages give
 * them too. */
#define DEFAULT_BATCH_BYTES (256u << 10)
#define DEFAULT_MAX_BYTES (2u << 20)
/* libcurl's buffer for sending a body (its default is 64 KiB). */
#define UPLOAD_BUFFER 16384
/* What is read of an answer's body: the reason of a rejected batch, an
 * OTLP partialSuccess with its errorMessage (which may come before the
 * counts).  Past it the rest is not read, and the cut counted. */
#define ANSWER_MAX (64u << 10)

struct batch {
	struct batch *next;
	gk_buf body;
	gk_buf gz; /* the gzipped body, made at its first send */
	size_t records;
};

/* A log line the sender leaves for the loop thread. */
struct note {
	enum gk_level level;
	char msg[64];
	char f1[160], f2[96], f3[224];
};

struct gk_ehttp {
	gk_export *ex;
	gk_loop *loop;
	char *url, *method, *sep, *prefix, *suffix;
	struct curl_slist *hdrs;
	bool gzip;
	size_t batch_bytes, batch_records, max_bytes;
	uint64_t batch_ms, timeout_ms;
	enum gk_ehttp_verdict (*verdict)(long, void *);
	size_t (*refused)(long, const char *, size_t, size_t, void *);
	size_t (*partial)(const char *, size_t, size_t, uint64_t *, char *,
	                  size_t, void *);
	void *verdict_arg;
	/* Sender thread only: the answer's body, up to ANSWER_MAX. */
	char *answer;
	size_t answer_len;
	bool answer_cut;

	/* Loop thread only. */
	struct batch *open;
	gk_timer batch_timer;
	int64_t gauge_seen;
	/* Dropped for the bound and not logged yet (a line a second). */
	uint64_t full_records, full_batches, full_told_ms;
	void (*drain_fn)(gk_ehttp *, void *);
	void *drain_arg;

	/* Shared, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct batch *head, *tail;
	size_t qbytes, qrecords;
	bool sending; /* head is being sent */
	bool stop;
	uint64_t r_sent, r_dropped, r_errors, r_reconnects;
	struct note notes[MAX_NOTES];
	size_t nnotes, notes_lost;

	atomic_bool abort_now;
	int wake[2];
	pthread_t thread;
	bool thread_started;
	gk_backoff backoff;
	bool failing;
	/* Partial rejections logged: with records dropped, without. */
	gk_log_gate partial_gate[2];
	long retry_after_ms; /* of the answer being read, -1 when none */
};

static void
batch_free(struct batch *b)
{
	gk_buf_free(&b->body);
	gk_buf_free(&b->gz);
	free(b);
}

/* Under mu.  A note for the loop thread to log. */
static void
note3(gk_ehttp *h, enum gk_level level, const char *msg, const char *f1,
    const char *f2, const char *f3)
{
	if (h->nnotes == MAX_NOTES) {
		h->notes_lost++;
		return;
	}
	struct note *n = &h->notes[h->nnotes++];
	n->level = level;
	snprintf(n->msg, sizeof n->msg, "%s", msg);
	snprintf(n->f1, sizeof n->f1, "%s", f1 ? f1 : "");
	snprintf(n->f2, sizeof n->f2, "%s", f2 ? f2 : "");
	snprintf(n->f3, sizeof n->f3, "%s", f3 ? f3 : "");
}

static void
note(gk_ehttp *h, enum gk_level level, const char *msg, const char *f1,
    const char *f2)
{
	note3(h, level, msg, f1, f2, NULL);
}

static void
wake_loop(gk_ehttp *h)
{
	char c = 1;
	ssize_t r = write(h->wake[1], &c, 1);
	(void)r; /* a full pipe already wakes the loop */
}

/* "reason=" and the answer's body on one line, bounded, into f (cap):
 * the backend's word on a rejected batch; "" when it said nothing. */
static void
answer_reason(const gk_ehttp *h, char *f, size_t cap)
{
	static const char key[] = "reason=";
	size_t n = h->answer_len, o = sizeof key - 1, i = 0;
	f[0] = 0;
	while (n && (unsigned char)h->answer[n - 1] <= ' ')
		n--;
	if (!n || cap <= sizeof key)
		return;
	memcpy(f, key, o);
	for (; i < n && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)h->answer[i];
		f[o++] = c < ' ' || c == 0x7f ? ' ' : (char)c;
	}
	/* Cut at the bound: no half of a UTF-8 character at the end. */
	if (i < n && (h->answer[i] & 0xc0) == 0x80) {
		while (o > sizeof key - 1 && (f[o - 1] & 0xc0) == 0x80)
			o--;
		if (o > sizeof key - 1)
			o--; /* the lead byte */
	}
	f[o] = 0;
}

/* ------------------------------------------------------------------ */
/* The sender thread                                                   */
/* ------------------------------------------------------------------ */

/* Answers whose body went past ANSWER_MAX, of every sender. */
static gk_series *
answers_cut(void)
{
	static gk_series *m;
	if (!m)
		m = gk_metric_series(gk_counter_new(
		    "gk_export_http_answers_cut_total",
		    "HTTP answers whose body was longer than 64 KiB: only "
		    "the first 64 KiB read",
		    NULL));
	return m;
}

/* The answer's body: its start is kept (the reason of a rejection). */
static size_t
keep_body(char *p, size_t size, size_t n, void *arg)
{
	gk_ehttp *h = arg;
	size_t len = size * n, room = ANSWER_MAX - h->answer_len;
	size_t k = len < room ? len : room;
	if (k < len)
		h->answer_cut = true;
	memcpy(h->answer + h->answer_len, p, k);
	h->answer_len += k;
	return len;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	gk_ehttp *h = arg;
	size_t len = size * n;
	static const char name[] = "retry-after:";
	if (len > sizeof name - 1 && !strncasecmp(p, name, sizeof name - 1)) {
		char v[128];
		size_t vl = len - (sizeof name - 1);
		if (vl >= sizeof v)
			vl = sizeof v - 1;
		memcpy(v, p + sizeof name - 1, vl);
		v[vl] = 0;
		char *s = v;
		while (*s == ' ' || *s == '\t')
			s++;
		char *e = s + strlen(s);
		while (e > s && (e[-1] == '\r' || e[-1] == '\n' ||
		                 e[-1] == ' ' || e[-1] == '\t'))
			*--e = 0;
		char *end;
		errno = 0;
		long secs = strtol(s, &end, 10);
		if (*s && !*end && !errno && secs >= 0) {
			h->retry_after_ms = secs > RETRY_AFTER_MAX_MS / 1000
			    ? RETRY_AFTER_MAX_MS
			    : secs * 1000;
		} else {
			time_t t = curl_getdate(s, NULL);
			if (t != -1) {
				long d = (long)(t - time(NULL));
				if (d < 0)
					d = 0;
				h->retry_after_ms =
				    d > RETRY_AFTER_MAX_MS / 1000
				    ? RETRY_AFTER_MAX_MS
				    : d * 1000;
			}
		}
	}
	return len;
}

static int
on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c,
    curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	gk_ehttp *h = arg;
	return atomic_load(&h->abort_now) ? 1 : 0;
}

static bool
gzip_body(const gk_buf *in, gk_buf *out)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
	        Z_DEFAULT_STRATEGY) != Z_OK)
		return false;
	uLong bound = deflateBound(&z, (uLong)in->len);
	gk_buf_reset(out);
	gk_buf_reserve(out, bound + 1);
	z.next_in = (Bytef *)(in->data ? in->data : "");
	z.avail_in = (uInt)in->len;
	z.next_out = (Bytef *)out->data;
	z.avail_out = (uInt)bound;
	int r = deflate(&z, Z_FINISH);
	if (r == Z_STREAM_END)
		out->len = z.total_out;
	deflateEnd(&z);
	return r == Z_STREAM_END;
}

static enum gk_ehttp_verdict
default_verdict(long status, void *arg)
{
	(void)arg;
	if (status >= 200 && status < 300)
		return GK_EHTTP_OK;
	if (status == 0 || status == 408 || status == 429 || status >= 500)
		return GK_EHTTP_RETRY;
	return GK_EHTTP_DROP;
}

/* Under mu: of a batch of n records acknowledged, those the backend
 * rejected all the same (its answer says so); noted for the log. */
static size_t
partly_rejected(gk_ehttp *h, size_t n)
{
	if (!h->partial)
		return 0;
	uint64_t rejected = 0;
	char msg[200];
	msg[0] = 0;
	size_t drop = h->partial(h->answer, h->answer_len, n, &rejected, msg,
	                         sizeof msg, h->verdict_arg);
	if (drop > n)
		drop = n;
	if (!rejected && !drop && !msg[0])
		return 0;
	uint64_t held;
	if (gk_log_gate_pass(&h->partial_gate[drop ? 0 : 1], &held)) {
		char f1[64], f2[64], f3[224];
		snprintf(f1, sizeof f1, "rejected=%llu",
		         (unsigned long long)rejected);
		snprintf(f2, sizeof f2, "count=%llu",
		         (unsigned long long)(held + 1));
		snprintf(f3, sizeof f3, "reason=%s", msg);
		note3(h, drop ? GK_ERROR : GK_WARN,
		      drop ? "batch partly rejected: dropped"
		           : "batch accepted with a warning",
		      f1, f2, msg[0] ? f3 : NULL);
	}
	return drop;
}

/* Send b once: the HTTP status, or 0 with err set. */
static long
send_once(gk_ehttp *h, CURL *c, struct batch *b, char *err)
{
	const gk_buf *body = &b->body;
	if (h->gzip) {
		if (!b->gz.len && !gzip_body(&b->body, &b->gz)) {
			snprintf(err, CURL_ERROR_SIZE, "gzip failed");
			return 0;
		}
		body = &b->gz;
	}
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data ? body->data : "");
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)body->len);
	h->retry_after_ms = -1;
	err[0] = 0;
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		if (!err[0])
			snprintf(err, CURL_ERROR_SIZE, "%s",
			    curl_easy_strerror(rc));
		return 0;
	}
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (!status)
		snprintf(err, CURL_ERROR_SIZE, "no HTTP status");
	return status;
}

/* Under mu: wait ms, or until stop. */
static void
wait_ms(gk_ehttp *h, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	while (!h->stop) {
		if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) == ETIMEDOUT)
			break;
	}
}

static void *
sender(void *arg)
{
	gk_ehttp *h = arg;
	CURL *c = curl_easy_init();
	char err[CURL_ERROR_SIZE];
	if (c) {
		curl_easy_setopt(c, CURLOPT_URL, h->url);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->hdrs);
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		if (h->method && strcmp(h->method, "POST"))
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, h->method);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
		    (long)h->timeout_ms);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
		curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE,
		    (long)UPLOAD_BUFFER);
	}
	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		if (!h->head) {
			pthread_cond_wait(&h->cv, &h->mu);
			continue;
		}
		struct batch *b = h->head;
		h->sending = true;
		pthread_mutex_unlock(&h->mu);
		long status = 0;
		h->answer_len = 0;
		h->answer_cut = false;
		if (c)
			status = send_once(h, c, b, err);
		else
			snprintf(err, sizeof err, "curl_easy_init failed");
		if (h->answer_cut)
			gk_counter_add(answers_cut(), 1); /* atomic */
		enum gk_ehttp_verdict v = h->verdict(status, h->verdict_arg);
		pthread_mutex_lock(&h->mu);
		h->sending = false;
		char f1[160], f2[96];
		if (status)
			snprintf(f1, sizeof f1, "status=%ld", status);
		else
			snprintf(f1, sizeof f1, "error=%.150s", err);
		snprintf(f2, sizeof f2, "records=%zu", b->records);
		if (v == GK_EHTTP_RETRY && h->stop)
			break; /* stays queued: counted dropped at free */
		if (v == GK_EHTTP_OK || v == GK_EHTTP_DROP) {
			h->head = b->next;
			if (!h->head)
				h->tail = NULL;
			h->qbytes -= b->body.len;
			h->qrecords -= b->records;
			if (v == GK_EHTTP_OK) {
				size_t n = partly_rejected(h, b->records);
				h->r_dropped += n;
				h->r_sent += b->records - n;
				if (h->failing) {
					h->r_reconnects++;
					note(h, GK_INFO, "backend accepts "
					     "batches again", NULL, NULL);
				}
				h->failing = false;
				gk_backoff_reset(&h->backoff);
			} else {
				size_t n = b->records;
				if (h->refused) {
					n = h->refused(status, h->answer,
					    h->answer_len, b->records,
					    h->verdict_arg);
					if (n > b->records)
						n = b->records;
				}
				h->r_dropped += n;
				h->r_sent += b->records - n;
				h->r_errors++;
				snprintf(f2, sizeof f2, "records=%zu", n);
				char f3[224];
				answer_reason(h, f3, sizeof f3);
				note3(h, GK_ERROR, "batch rejected: dropped",
				    f1, f2, f3);
			}
			batch_free(b);
			wake_loop(h);
			continue;
		}
		/* RETRY: the same batch again, later. */
		h->r_errors++;
		uint64_t delay = gk_backoff_next(&h->backoff);
		if (h->retry_after_ms >= 0)
			delay = (uint64_t)h->retry_after_ms;
		char f3[96];
		snprintf(f3, sizeof f3, "retry_in_ms=%llu",
		    (unsigned long long)delay);
		if (!h->failing)
			note(h, GK_WARN, "batch not accepted: retrying", f1,
			    f3);
		h->failing = true;
		wake_loop(h);
		wait_ms(h, delay);
	}
	pthread_mutex_unlock(&h->mu);
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The loop thread                                                     */
/* ------------------------------------------------------------------ */

static void check_drain(gk_ehttp *h);
static size_t abandon(void *arg);

static size_t
open_records(const gk_ehttp *h)
{
	return h->open ? h->open->records : 0;
}

static void
report(gk_ehttp *h)
{
	struct note notes[MAX_NOTES];
	pthread_mutex_lock(&h->mu);
	uint64_t sent = h->r_sent, dropped = h->r_dropped;
	uint64_t errors = h->r_errors, rec = h->r_reconnects;
	size_t nn = h->nnotes, lost = h->notes_lost;
	memcpy(notes, h->notes, nn * sizeof *notes);
	h->r_sent = h->r_dropped = h->r_errors = h->r_reconnects = 0;
	h->nnotes = h->notes_lost = 0;
	int64_t bytes = (int64_t)h->qbytes;
	pthread_mutex_unlock(&h->mu);
	if (h->open)
		bytes += (int64_t)h->open->body.len;
	gk_export_queue_change(h->ex, bytes - h->gauge_seen);
	h->gauge_seen = bytes;
	if (sent)
		gk_export_sent(h->ex, sent);
	if (dropped)
		gk_export_dropped(h->ex, dropped);
	if (errors)
		gk_export_error(h->ex, errors);
	while (rec--)
		gk_export_reconnected(h->ex);
	char u[300];
	snprintf(u, sizeof u, "url=%s", h->url);
	for (size_t i = 0; i < nn; i++)
		gk_log(notes[i].level, notes[i].msg, u,
		    notes[i].f1[0] ? notes[i].f1 : NULL,
		    notes[i].f2[0] ? notes[i].f2 : NULL,
		    notes[i].f3[0] ? notes[i].f3 : NULL);
	if (lost) {
		char f[64];
		snprintf(f, sizeof f, "count=%zu", lost);
		gk_log(GK_WARN, "backend messages not logged", u, f);
	}
}

static void
on_wake(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)events;
	gk_ehttp *h = arg;
	char buf[256];
	while (read(fd, buf, sizeof buf) > 0)
		;
	report(h);
	check_drain(h);
}

/* Say what the queue bound dropped: at most a line a second (a backend
 * that is down drops a batch for every batch read), the rest at the end
 * (force). */
static void
tell_full(gk_ehttp *h, bool force)
{
	uint64_t now = gk_monotonic_ms();
	if (!h->full_records ||
	    (!force && h->full_told_ms && now - h->full_told_ms < 1000))
		return;
	h->full_told_ms = now;
	char f1[64], f2[64], f3[64], f4[300];
	snprintf(f1, sizeof f1, "records=%llu",
	    (unsigned long long)h->full_records);
	snprintf(f2, sizeof f2, "batches=%llu",
	    (unsigned long long)h->full_batches);
	snprintf(f3, sizeof f3, "max_bytes=%zu", h->max_bytes);
	snprintf(f4, sizeof f4, "url=%s", h->url);
	gk_log(GK_WARN, "queue full: oldest batch dropped", f4, f1, f2, f3);
	h->full_records = h->full_batches = 0;
}

/* Close the open batch: it joins the queue, older ones dropped past the
 * bound. */
static void
close_batch(gk_ehttp *h)
{
	struct batch *b = h->open;
	if (!b)
		return;
	h->open = NULL;
	gk_timer_stop(h->loop, &h->batch_timer);
	if (h->suffix)
		gk_buf_adds(&b->body, h->suffix);
	size_t dropped = 0, dropped_batches = 0;
	pthread_mutex_lock(&h->mu);
	/* Make room: the oldest batches that are not being sent go. */
	while (h->qbytes + b->body.len > h->max_bytes) {
		struct batch **pp = &h->head;
		if (*pp && h->sending)
			pp = &(*pp)->next;
		struct batch *old = *pp;
		if (!old)
			break;
		*pp = old->next;
		if (h->tail == old) {
			h->tail = h->head;
			while (h->tail && h->tail->next)
				h->tail = h->tail->next;
		}
		h->qbytes -= old->body.len;
		h->qrecords -= old->records;
		dropped += old->records;
		dropped_batches++;
		batch_free(old);
	}
	if (h->qbytes + b->body.len > h->max_bytes && (h->head || h->sending)) {
		/* Only the batch being sent is left, and this one does not
		 * fit beside it. */
		dropped += b->records;
		dropped_batches++;
		batch_free(b);
		b = NULL;
	}
	if (b) {
		if (h->tail)
			h->tail->next = b;
		else
			h->head = b;
		h->tail = b;
		h->qbytes += b->body.len;
		h->qrecords += b->records;
		pthread_cond_signal(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	if (dropped) {
		gk_export_dropped(h->ex, dropped);
		h->full_records += dropped;
		h->full_batches += dropped_batches;
		tell_full(h, false);
	}
	report(h);
}

static void
on_batch_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	close_batch(arg);
}

void
gk_ehttp_add(gk_ehttp *h, const void *p, size_t n)
{
	if (n + 64 > h->max_bytes) {
		gk_export_dropped(h->ex, 1);
		char f[64];
		snprintf(f, sizeof f, "bytes=%zu", n);
		gk_log(GK_WARN, "record larger than the queue: dropped", f);
		return;
	}
	if (h->open && h->open->body.len + n > h->batch_bytes)
		close_batch(h);
	if (!h->open) {
		h->open = gk_xcalloc(1, sizeof *h->open);
		if (h->prefix)
			gk_buf_adds(&h->open->body, h->prefix);
		gk_timer_start(h->loop, &h->batch_timer, h->batch_ms,
		    on_batch_timer, h);
	} else if (h->sep) {
		gk_buf_adds(&h->open->body, h->sep);
	}
	gk_buf_add(&h->open->body, p, n);
	h->open->records++;
	int64_t d = (int64_t)n + (h->sep ? (int64_t)strlen(h->sep) : 0);
	gk_export_queue_change(h->ex, d);
	h->gauge_seen += d;
	if (h->open->records >= h->batch_records ||
	    h->open->body.len >= h->batch_bytes)
		close_batch(h);
}

void
gk_ehttp_flush(gk_ehttp *h)
{
	close_batch(h);
}

static void
check_drain(gk_ehttp *h)
{
	if (!h->drain_fn || h->open)
		return;
	pthread_mutex_lock(&h->mu);
	bool empty = !h->head && !h->sending;
	pthread_mutex_unlock(&h->mu);
	if (!empty)
		return;
	void (*fn)(gk_ehttp *, void *) = h->drain_fn;
	h->drain_fn = NULL;
	fn(h, h->drain_arg);
}

void
gk_ehttp_drain(gk_ehttp *h, void (*fn)(gk_ehttp *, void *), void *arg)
{
	close_batch(h);
	h->drain_fn = fn;
	h->drain_arg = arg;
	check_drain(h);
}

static void
drained_export(gk_ehttp *h, void *ex)
{
	(void)h;
	gk_export_done(ex);
}

void
gk_ehttp_drain_export(gk_ehttp *h, gk_export *ex)
{
	gk_ehttp_drain(h, drained_export, ex);
}

char *
gk_ehttp_header_arg(const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return NULL;
	for (const char *p = arg; p < eq; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c >= 127 || strchr("()<>@,;:\\\"/[]?={}", c))
			return NULL;
	}
	if (strpbrk(eq + 1, "\r\n"))
		return NULL;
	gk_buf b = {0};
	gk_buf_add(&b, arg, (size_t)(eq - arg));
	gk_buf_adds(&b, ": ");
	gk_buf_adds(&b, eq + 1);
	return gk_buf_cstr(&b);
}

size_t
gk_ehttp_pending(gk_ehttp *h)
{
	pthread_mutex_lock(&h->mu);
	size_t n = h->qrecords;
	pthread_mutex_unlock(&h->mu);
	return n + open_records(h);
}

/*
 * glibc's defaults suit a process that keeps what it allocates; batches
 * come and go, a few hundred KiB each, allocated by the loop thread and
 * freed by a sender.  Left alone, the first batch freed raises the mmap
 * threshold to its size (glibc's dynamic threshold), so later batches are
 * carved from the heap, which fragments and is only trimmed past twice
 * that size; and each sender thread gets a malloc arena of its own.  A
 * fixed threshold (which turns the dynamic one off) gives every batch its
 * own mapping, returned whole when the batch is done; one arena serves
 * every thread (a sender allocates little, and seldom).
 */
static void
tune_malloc(void)
{
	mallopt(M_MMAP_THRESHOLD, 64 << 10);
	mallopt(M_TRIM_THRESHOLD, 256 << 10);
	mallopt(M_ARENA_MAX, 1);
}

static void
curl_init(void)
{
	tune_malloc();
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

gk_ehttp *
gk_ehttp_new(gk_export *ex, const gk_ehttp_opts *o)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	gk_ehttp *h = gk_xcalloc(1, sizeof *h);
	h->answer = gk_xmalloc(ANSWER_MAX);
	answers_cut(); /* made on this thread */
	h->ex = ex;
	h->loop = gk_export_loop(ex);
	h->url = gk_xstrdup(o->url);
	h->method = o->method ? gk_xstrdup(o->method) : NULL;
	h->sep = o->separator ? gk_xstrdup(o->separator) : NULL;
	h->prefix = o->prefix ? gk_xstrdup(o->prefix) : NULL;
	h->suffix = o->suffix ? gk_xstrdup(o->suffix) : NULL;
	h->gzip = o->gzip;
	h->batch_bytes = o->batch_bytes ? o->batch_bytes : DEFAULT_BATCH_BYTES;
	h->batch_records = o->batch_records ? o->batch_records : 5000;
	h->batch_ms = o->batch_ms ? o->batch_ms : 1000;
	h->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
	h->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
	h->verdict = o->verdict ? o->verdict : default_verdict;
	h->verdict_arg = o->verdict_arg;
	h->refused = o->refused;
	h->partial = o->partial;
	gk_backoff_init(&h->backoff, o->backoff_min_ms, o->backoff_max_ms);
	pthread_once(&once, curl_init);
	char ct[256];
	snprintf(ct, sizeof ct, "Content-Type: %s",
	    o->content_type ? o->content_type : "text/plain; charset=utf-8");
	h->hdrs = curl_slist_append(h->hdrs, ct);
	h->hdrs = curl_slist_append(h->hdrs, "Expect:");
	if (h->gzip)
		h->hdrs = curl_slist_append(h->hdrs, "Content-Encoding: gzip");
	for (const char *const *p = o->headers; p && *p; p++)
		h->hdrs = curl_slist_append(h->hdrs, *p);
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pipe2(h->wake, O_NONBLOCK | O_CLOEXEC) < 0)
		gk_fatal(GK_EXIT_OSERR, "unable to make a pipe: %s",
		    strerror(errno));
	gk_loop_watch(h->loop, h->wake[0], GK_READ, on_wake, h);
	if (pthread_create(&h->thread, NULL, sender, h))
		gk_fatal(GK_EXIT_OSERR, "unable to start the sender thread");
	h->thread_started = true;
	gk_export_hold(ex, abandon, h);
	return h;
}

/* Stop the sender (a request in flight is aborted: its batch stays
 * queued) and free every batch not acknowledged; returns their records. */
static size_t
stop_and_clear(gk_ehttp *h)
{
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	atomic_store(&h->abort_now, true);
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (h->thread_started)
		pthread_join(h->thread, NULL);
	h->thread_started = false;
	report(h);
	size_t left = open_records(h) + h->qrecords;
	if (h->open)
		batch_free(h->open);
	h->open = NULL;
	gk_timer_stop(h->loop, &h->batch_timer);
	while (h->head) {
		struct batch *b = h->head;
		h->head = b->next;
		batch_free(b);
	}
	h->tail = NULL;
	h->qbytes = h->qrecords = 0;
	tell_full(h, true);
	h->drain_fn = NULL;
	gk_export_queue_change(h->ex, -h->gauge_seen);
	h->gauge_seen = 0;
	return left;
}

/* The drain timeout (export.h, gk_export_hold): the runtime counts what
 * is left dropped. */
static size_t
abandon(void *arg)
{
	return stop_and_clear(arg);
}

void
gk_ehttp_free(gk_ehttp *h)
{
	if (!h)
		return;
	gk_export_unhold(h->ex, h);
	size_t left = stop_and_clear(h);
	if (left) {
		gk_export_dropped(h->ex, left);
		char f1[64], f2[300];
		snprintf(f1, sizeof f1, "records=%zu", left);
		snprintf(f2, sizeof f2, "url=%s", h->url);
		gk_log(GK_WARN, "exiting: records not delivered, dropped", f2,
		    f1);
	}
	gk_loop_unwatch(h->loop, h->wake[0]);
	close(h->wake[0]);
	close(h->wake[1]);
	curl_slist_free_all(h->hdrs);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h->url);
	free(h->method);
	free(h->sep);
	free(h->prefix);
	free(h->suffix);
	free(h->answer);
	free(h);
}
