/*
 * event.c: the event stream (gk-events(5)) and logging.
 *
 * Every event is built as one JSON line by one code path (event_open ...
 * gk_event_end) in a per-thread buffer, cut to PIPE_BUF - 1 bytes when it is
 * longer, rendered for a person when the event fd is a terminal (the text is
 * made from the JSON line, never built apart, and cut to PIPE_BUF - 1 bytes
 * in turn: it can be longer), and appended to one
 * process-wide queue.  gk_events_flush writes the queue in chunks that end at
 * a newline and, to a pipe or socket, hold at most PIPE_BUF bytes, so lines
 * of the processes that share one pipe never interleave (a write to a file
 * or a terminal is whole however long: the batch goes in one).
 *
 * Log event:
 *   {"ts":"2026-12-04T09:30:00.123456Z","type":"log","level":"warn",
 *    "proc":"gk-limiter","pid":4242,"svc":"orders","msg":"rate limited",
 *    "trace_id":"...","key":"10.0.0.7"}
 * svc is absent when GK_SERVICE is unset, trace_id when none is given.
 * A field "k=v" is written raw when v is a JSON number (integers only within
 * +-2^53), true, false or null, else as a string; "k" alone is k:true; a
 * field named ts, type, level, proc, pid, svc, msg, truncated (or trace_id
 * when one is given) becomes field_NAME.
 * Other events: ts, type, proc, pid, svc, then what the caller adds.
 * A shortened event ends with "truncated":true; strings lose their tail
 * (marked with U+2026) and, when that is not enough, members from the end.
 *
 * Writing: on EAGAIN a flush waits up to 100 ms for POLLOUT, then keeps the
 * rest queued and stops waiting until a write succeeds again (a stuck reader
 * must not stall the loop every turn); at exit it waits up to 1 s.  Past
 * 1 MiB queued, new events are dropped and counted, then reported as one
 * warn event "events dropped" with count=N.  EPIPE or EBADF ends writing to
 * that fd, with SIGPIPE held off; what is lost from then on is counted in
 * gk_events_lost_total and, where standard error is another file, said
 * there: at once when it happens in a running loop, and the count at exit.
 *
 * gk_event_begin ... gk_event_end use a per-thread buffer: they must not nest
 * (no gk_log between them in the same thread).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"

#define LINE_MAX_BYTES 4095          /* PIPE_BUF - 1, without the newline */
#define WRITE_MAX 4096               /* PIPE_BUF */
#define WRITE_MAX_FILE (64u * 1024)  /* a file or a terminal */
#define QUEUE_FLUSH (64u * 1024)     /* flush even while batching */
#define TURN_HOLD_BYTES (32u * 1024) /* a turn's end writes once this much */
#define TURN_HOLD_MS 10              /* ... or once the oldest waited this */
#define QUEUE_MAX (1024u * 1024)     /* drop new events past this */
#define FLUSH_WAIT_MS 100            /* wait for POLLOUT at most this long */
#define EXIT_WAIT_MS 1000            /* ... and this long at exit */
#define MIN_CUT 16                   /* never shorten a string below this */

/* Settings: written by gk_events_init, which programs call first. */
static struct {
	int fd;
	/* What is written to: fd, or for a blocking pipe our own
	 * non-blocking open of it (O_NONBLOCK on fd would be shared with
	 * every process holding it: a handler's stderr writes would fail). */
	int wfd;
	bool own_wfd;    /* wfd is that open of ours */
	bool sock;       /* send(2) with MSG_DONTWAIT instead of write(2) */
	bool poll_first; /* blocking and no own open: poll before writing */
	enum gk_level level;
	bool text;
	bool colour;
	bool pipe; /* a pipe or socket: PIPE_BUF writes, SIGPIPE held off */
	char proc[128];
	char *svc; /* NULL when GK_SERVICE is unset */
	pid_t pid;
	/* ,"proc":..,"pid":..[,"svc":..] as every event ends its common
	 * members, made when they change (0: too long, written the slow way) */
	char tail[512];
	size_t tail_len;
} cfg = {.fd = 2, .wfd = 2, .level = GK_INFO, .pipe = true};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static atomic_bool inited;
static atomic_bool batching;
static uint64_t queued_at_ms; /* when the queue last became non-empty */

/* The queue and what goes with it, under qlock. */
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static gk_buf queue;
static uint64_t dropped;        /* events dropped since the last notice */
static bool fd_dead;            /* EPIPE or EBADF: the reader is gone */
static bool stalled;            /* the last flush gave up waiting for POLLOUT */
static uint64_t lost;           /* events not written since gk_events_init */
static int lost_errno;          /* why the last of them was not */
static uint64_t gone;           /* of them, lost to the reader gone (fd_dead) */
static uint64_t gone_uncounted; /* not yet in gk_events_lost_total */
static bool exit_told;          /* gk__events_finish's caller says it at exit */

/* The event being built by this thread. */
struct builder {
	gk_buf line;
	gk_buf aux;
	gk_jw jw;
	char type[64]; /* of the event being built, for minimal_event */
	int level;
	bool registered;
};
static _Thread_local struct builder tb;
static pthread_key_t tb_key;

enum flush_mode { FLUSH_AUTO, FLUSH_CALL, FLUSH_EXIT };
static void flush_locked(enum flush_mode mode);
static void count_gone(uint64_t n);
static void tell_stderr(int err, uint64_t n);
static void tell_unread_stderr(uint64_t n);
static void lose_locked(size_t off, int err);

/* Under qlock: the events lost to the reader gone that are not yet in
 * gk_events_lost_total, for count_gone once qlock is released. */
static uint64_t
take_gone_locked(void)
{
	uint64_t n = gone_uncounted;
	gone_uncounted = 0;
	return n;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */
/* ------------------------------------------------------------------ */

static void
tb_free(void *p)
{
	struct builder *b = p;
	gk_buf_free(&b->line);
	gk_buf_free(&b->aux);
}

static void
at_exit(void)
{
	pthread_mutex_lock(&qlock);
	flush_locked(FLUSH_EXIT);
	if (queue.len) { /* the reader is there, but took nothing */
		uint64_t before = lost;
		lose_locked(0, EAGAIN);
		queue.len = 0;
		tell_unread_stderr(lost - before);
	}
	if (gone && !exit_told)
		tell_stderr(lost_errno, gone);
	pthread_mutex_unlock(&qlock);
}

/* Fork: keep the child from writing (twice) what the parent queued. */
static void
fork_prepare(void)
{
	pthread_mutex_lock(&qlock);
}

static void
fork_parent(void)
{
	pthread_mutex_unlock(&qlock);
}

static void
fork_child(void)
{
	queue.len = 0;
	dropped = 0;
	cfg.pid = getpid();
	cfg.tail_len = 0; /* it holds the parent's pid: the slow way now (no
	                   * allocation in a fork handler) */
	pthread_mutex_unlock(&qlock);
}

static void
once(void)
{
	pthread_key_create(&tb_key, tb_free);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	atexit(at_exit);
}

static gk_jw *event_open(const char *type, int level);

/*
 * A warning about a bad environment variable, its value a string whatever
 * it looks like.  Once a process for each value: gk_events_init runs again
 * (gk-log sets proc after its options) and the environment is the same.
 */
static void
bad_env(int which, const char *name, const char *value, const char *expected)
{
	static char *said[3];
	if (said[which] && !strcmp(said[which], value))
		return;
	free(said[which]);
	said[which] = gk_xstrdup(value);
	if (!gk_log_enabled(GK_WARN))
		return;
	gk_jw *w = event_open("log", GK_WARN);
	gk_jw_key(w, "msg");
	gk_jw_cstr(w, "bad environment variable");
	gk_jw_key(w, "var");
	gk_jw_cstr(w, name);
	gk_jw_key(w, "value");
	gk_jw_cstr(w, value);
	gk_jw_key(w, "expected");
	gk_jw_cstr(w, expected);
	gk_event_end();
}

static void build_tail(void);

/*
 * Writes must never block: a reader that stops would freeze the process.
 * A socket takes MSG_DONTWAIT per call; a blocking pipe or terminal (one
 * stopped by Ctrl-S, or frozen) gets a descriptor of our own, opened
 * non-blocking through /proc (O_NONBLOCK on the fd would be shared by
 * every process holding it: a shell would read EAGAIN); failing that, each
 * write is preceded by a poll for room.  Not a pty master: opening it
 * anew would make another terminal.
 */
static void
set_write_fd(bool reopen, bool sock)
{
	if (cfg.own_wfd)
		close(cfg.wfd);
	cfg.own_wfd = false;
	cfg.wfd = cfg.fd;
	cfg.sock = sock;
	cfg.poll_first = false;
	int fl = fcntl(cfg.fd, F_GETFL);
	if (!reopen || fl < 0 || (fl & O_NONBLOCK))
		return;
	unsigned ptn;
	if (ioctl(cfg.fd, TIOCGPTN, &ptn) == 0) {
		cfg.poll_first = true; /* a pty master */
		return;
	}
	char path[40];
	snprintf(path, sizeof path, "/proc/self/fd/%d", cfg.fd);
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0) {
		cfg.wfd = fd;
		cfg.own_wfd = true;
	} else
		cfg.poll_first = true;
}

static void
set_proc(const char *proc)
{
	if (!proc || !*proc)
		proc = program_invocation_short_name;
	if (!proc || !*proc)
		proc = "gokit";
	snprintf(cfg.proc, sizeof cfg.proc, "%s", proc);
}

void
gk_events_init(const char *proc)
{
	pthread_once(&init_once, once);
	pthread_mutex_lock(&qlock);
	/* What is queued was meant for the old fd. */
	if (inited)
		flush_locked(FLUSH_CALL);
	queue.len = 0;
	dropped = 0;
	fd_dead = false;
	stalled = false;
	lost = 0;
	lost_errno = 0;
	gone = 0;
	exit_told = false;

	const char *bad_fd = NULL, *bad_level = NULL, *bad_format = NULL;
	set_proc(proc);
	cfg.pid = getpid();
	cfg.fd = 2;
	const char *e = getenv("GK_EVENTS_FD");
	if (e && *e) {
		uint64_t v;
		int fl;
		/* Open, and for writing: a read-only fd (stdin) would
		 * swallow every event with EBADF. */
		if (gk_parse_uint(e, 0, 1 << 30, &v) == 0 &&
		    (fl = fcntl((int)v, F_GETFL)) != -1 &&
		    (fl & O_ACCMODE) != O_RDONLY)
			cfg.fd = (int)v;
		else
			bad_fd = e;
	}
	cfg.level = GK_INFO;
	e = getenv("GK_LOG_LEVEL");
	if (e && *e) {
		int l = gk_level_parse(e);
		if (l >= 0)
			cfg.level = (enum gk_level)l;
		else
			bad_level = e;
	}
	free(cfg.svc);
	cfg.svc = NULL;
	e = getenv("GK_SERVICE");
	if (e && *e)
		cfg.svc = gk_xstrdup(e);
	struct stat sb;
	bool st_ok = fstat(cfg.fd, &sb) == 0;
	cfg.pipe = !st_ok || S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode);
	bool tty = isatty(cfg.fd) == 1;
	set_write_fd(st_ok && (S_ISFIFO(sb.st_mode) || tty),
	             st_ok && S_ISSOCK(sb.st_mode));
	cfg.text = tty;
	e = getenv("GK_EVENTS_FORMAT");
	if (e && *e) {
		if (strcmp(e, "json") == 0)
			cfg.text = false;
		else if (strcmp(e, "text") == 0)
			cfg.text = true;
		else
			bad_format = e;
	}
	/* Colour only for a terminal, and not against NO_COLOR. */
	e = getenv("NO_COLOR");
	cfg.colour = cfg.text && tty && !(e && *e);
	build_tail();
	inited = true;
	pthread_mutex_unlock(&qlock);

	/* Said once set up, so the warning itself goes where it should. */
	if (bad_fd)
		bad_env(0, "GK_EVENTS_FD", bad_fd,
		        "an fd open for writing; using 2");
	if (bad_level)
		bad_env(1, "GK_LOG_LEVEL", bad_level,
		        "debug|info|warn|error|fatal; using info");
	if (bad_format)
		bad_env(2, "GK_EVENTS_FORMAT", bad_format, "json|text");
}

/* Events work before gk_events_init: the environment, proc from argv[0]. */
static void
ensure_init(void)
{
	if (!atomic_load_explicit(&inited, memory_order_acquire))
		gk_events_init(NULL);
}

const char *
gk_proc_name(void)
{
	if (cfg.proc[0])
		return cfg.proc;
	if (program_invocation_short_name && *program_invocation_short_name)
		return program_invocation_short_name;
	return "gokit";
}

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "fatal"};

const char *
gk_level_name(enum gk_level level)
{
	if ((unsigned)level > GK_FATAL)
		return "unknown";
	return level_names[level];
}

int
gk_level_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = 0; i <= GK_FATAL; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return GK_WARN;
	return -1;
}

bool
gk_log_enabled(enum gk_level level)
{
	ensure_init();
	return level >= cfg.level || level >= GK_FATAL;
}

void
gk_events_set_batching(bool on)
{
	atomic_store(&batching, on);
	if (!on)
		gk_events_flush();
}

/* ------------------------------------------------------------------ */
/* Writing the queue                                                   */
/* ------------------------------------------------------------------ */

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for the fd to take more; false when the time is up. */
static bool
wait_writable(uint64_t deadline)
{
	for (;;) {
		uint64_t now = mono_ms();
		int ms = deadline > now ? (int)(deadline - now) : 0;
		struct pollfd p = {.fd = cfg.wfd, .events = POLLOUT};
		int r = poll(&p, 1, ms);
		/* writable, or an error the write tells */
		if (r >= 0 || errno != EINTR)
			return r > 0;
	}
}

/*
 * How much of the queue from off goes in one write: whole lines, at most
 * WRITE_MAX bytes (no line is longer: gk_event_end cuts both formats).
 */
static size_t
chunk_len(size_t off)
{
	size_t avail = queue.len - off;
	size_t max = cfg.pipe ? WRITE_MAX : WRITE_MAX_FILE;
	if (avail <= max) {
		if (queue.data[queue.len - 1] == '\n')
			return avail;
	}
	size_t lim = avail < max ? avail : max;
	const char *p = queue.data + off;
	const char *nl = memrchr(p, '\n', lim);
	if (nl)
		return (size_t)(nl - p) + 1;
	nl = memchr(p, '\n', avail);
	return nl ? (size_t)(nl - p) + 1 : avail;
}

static void notice_dropped_locked(void);

/* The lines of the queue from off on are lost, for err (gk-log's status). */
static void
lose_locked(size_t off, int err)
{
	const char *p = queue.data + off, *end = queue.data + queue.len;
	uint64_t n = 0;
	while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) {
		n++;
		p++;
	}
	lost += n;
	if (fd_dead) {
		gone += n;
		gone_uncounted += n;
	}
	lost_errno = err;
}

/*
 * Said on standard error, where it is not the event fd itself (no one
 * would read it there).  SIGPIPE held off, standard error being a pipe
 * too that may have lost its reader.
 */
static void
say_stderr(const char *msg, int len)
{
	struct stat a, b;
	if (len <= 0 || cfg.fd == 2 || fstat(2, &a) < 0 ||
	    (fstat(cfg.fd, &b) == 0 && a.st_dev == b.st_dev &&
	     a.st_ino == b.st_ino))
		return;
	sigset_t pipeset, old;
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeset, &old);
	ssize_t w;
	do
		w = write(2, msg, (size_t)len);
	while (w < 0 && errno == EINTR);
	if (w < 0 && errno == EPIPE && !sigismember(&old, SIGPIPE)) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipeset, NULL, &zero) == SIGPIPE)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The reader gone (n 0), or at exit how many events were lost to it. */
static void
tell_stderr(int err, uint64_t n)
{
	char msg[512];
	int len;
	if (n)
		len = snprintf(msg, sizeof msg,
		               "%s: warning: %llu event%s lost: the reader of "
		               "event fd %d is gone (%s)\n",
		               cfg.proc, (unsigned long long)n,
		               n == 1 ? "" : "s", cfg.fd, strerror(err));
	else
		len = snprintf(msg, sizeof msg,
		               "%s: warning: the reader of event fd %d is gone "
		               "(%s): events are lost, counted in "
		               "gk_events_lost_total\n",
		               cfg.proc, cfg.fd, strerror(err));
	if ((size_t)len >= sizeof msg)
		len = sizeof msg - 1;
	say_stderr(msg, len);
}

/* At exit, n events the reader did not take within the wait. */
static void
tell_unread_stderr(uint64_t n)
{
	char msg[512];
	int len = snprintf(msg, sizeof msg,
	                   "%s: warning: %llu event%s lost: the reader of "
	                   "event fd %d took nothing for %u ms at exit\n",
	                   cfg.proc, (unsigned long long)n, n == 1 ? "" : "s",
	                   cfg.fd, (unsigned)EXIT_WAIT_MS);
	if ((size_t)len >= sizeof msg)
		len = sizeof msg - 1;
	say_stderr(msg, len);
}

static void
flush_locked(enum flush_mode mode)
{
	if (!queue.len)
		return;
	if (fd_dead) {
		lose_locked(0, lost_errno);
		queue.len = 0;
		return;
	}
	uint64_t wait = mode == FLUSH_EXIT ? EXIT_WAIT_MS
	                : stalled          ? 0
	                                   : FLUSH_WAIT_MS;
	uint64_t deadline = mono_ms() + wait;

	/*
	 * A reader that went away must not kill us with SIGPIPE: block it
	 * around the writes to a pipe or socket, and take the one our EPIPE
	 * raised.  (Two system calls a flush: not for files.)
	 */
	sigset_t pipeset, old;
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	sigemptyset(&old);
	bool hold = cfg.pipe && !cfg.sock; /* send has MSG_NOSIGNAL */
	if (hold)
		pthread_sigmask(SIG_BLOCK, &pipeset, &old);
	bool epipe = false;

	size_t off = 0;
	while (off < queue.len) {
		size_t n = chunk_len(off);
		const char *p = queue.data + off;
		size_t done = 0;
		while (done < n) {
			if (cfg.poll_first && !wait_writable(deadline)) {
				stalled = true;
				off += done;
				goto out;
			}
			ssize_t w = cfg.sock
			                ? send(cfg.wfd, p + done, n - done,
			                       MSG_DONTWAIT | MSG_NOSIGNAL)
			                : write(cfg.wfd, p + done, n - done);
			if (w >= 0) {
				done += (size_t)w;
				stalled = false;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_writable(deadline))
					continue;
				stalled = true;
				off += done; /* keep the rest for later */
				goto out;
			}
			/* The event fd is gone or broken: drop, and count. */
			int err = errno;
			if (err == EPIPE)
				epipe = true;
			if (err == EPIPE || err == EBADF) {
				fd_dead = true;
				/* A running loop has long to go: said now. */
				if (atomic_load_explicit(&batching,
				                         memory_order_relaxed))
					tell_stderr(err, 0);
			}
			lose_locked(off + done, err);
			off = queue.len;
			goto out;
		}
		off += n;
	}
out:
	gk_buf_consume(&queue, off);
	if (epipe && !sigismember(&old, SIGPIPE)) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipeset, NULL, &zero) == SIGPIPE)
			;
	}
	if (hold)
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (dropped && !fd_dead)
		notice_dropped_locked();
}

uint64_t
gk__events_finish(int *fd, int *err)
{
	pthread_mutex_lock(&qlock);
	flush_locked(FLUSH_EXIT);
	if (queue.len) { /* still full after the wait at exit */
		lose_locked(0, EAGAIN);
		queue.len = 0; /* counted: at_exit must not wait again */
	}
	uint64_t n = lost;
	*fd = cfg.fd;
	*err = lost_errno;
	exit_told = true;
	pthread_mutex_unlock(&qlock);
	return n;
}

void
gk_events_flush(void)
{
	pthread_mutex_lock(&qlock);
	flush_locked(FLUSH_CALL);
	uint64_t g = take_gone_locked();
	pthread_mutex_unlock(&qlock);
	count_gone(g);
}

/*
 * The end of a loop turn: events are held across turns until TURN_HOLD_BYTES
 * are queued or the oldest has waited TURN_HOLD_MS, so that a busy stage
 * writes its events (a span a request) in a few large writes rather than one
 * small one a turn.  gk__events_due_ms tells the loop how long it may sleep.
 */
/* How long what is queued may still wait, under qlock (-1: nothing to
 * wake for).  A stalled reader is retried every STALL_RETRY_MS, without
 * waiting (flush_locked does not wait while stalled): a stuck pipe must
 * not make the loop spin, and a reader that catches up must not wait for
 * the process's next piece of work (an idle one would hold its last
 * events until its next metrics snapshot). */
#define STALL_RETRY_MS 50
static int
due_locked(uint64_t now)
{
	if (!queue.len || fd_dead)
		return -1;
	if (stalled)
		return STALL_RETRY_MS;
	uint64_t waited = now - queued_at_ms;
	return waited >= TURN_HOLD_MS ? 0 : (int)(TURN_HOLD_MS - waited);
}

int
gk__events_turn_end(void)
{
	pthread_mutex_lock(&qlock);
	uint64_t now = mono_ms();
	if (queue.len && (queue.len >= TURN_HOLD_BYTES ||
	                  now - queued_at_ms >= TURN_HOLD_MS))
		flush_locked(FLUSH_CALL);
	int due = due_locked(now);
	uint64_t g = take_gone_locked();
	pthread_mutex_unlock(&qlock);
	count_gone(g);
	return due;
}

int
gk__events_due_ms(void)
{
	pthread_mutex_lock(&qlock);
	int due = due_locked(mono_ms());
	pthread_mutex_unlock(&qlock);
	return due;
}

/* ------------------------------------------------------------------ */
/* Building events                                                     */
/* ------------------------------------------------------------------ */

/*
 * YYYY-MM-DDTHH:MM:SS of a time in seconds since the epoch, in UTC, by
 * arithmetic (the days-to-civil-date algorithm of H. Hinnant): gmtime_r
 * and strftime would load libc's time zone machinery, about 80 kB of
 * resident memory in every process, for no use.
 */
static void
format_utc_seconds(time_t t, char out[20])
{
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	int64_t secs = t - days * 86400;
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	int64_t doe = days - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t day = doy - (153 * mp + 2) / 5 + 1;
	int64_t month = mp < 10 ? mp + 3 : mp - 9;
	int64_t year = yoe + era * 400 + (month <= 2);
	int64_t v[6] = {year,        month,          day,
	                secs / 3600, secs / 60 % 60, secs % 60};
	static const char sep[6] = "--T::";
	char *o = out;
	for (int k = 0; k < 6; k++) {
		int width = k ? 2 : 4;
		int64_t x = v[k] < 0 ? 0 : v[k];
		for (int d = width - 1; d >= 0; d--, x /= 10)
			o[d] = (char)('0' + x % 10);
		o += width;
		if (k < 5)
			*o++ = sep[k];
	}
	*o = 0;
}

/* "2026-12-04T09:30:00.123456Z", with the date part cached per second. */
static void
format_ts(char out[32])
{
	static _Thread_local time_t last_sec = -1;
	static _Thread_local char last[24];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		format_utc_seconds(ts.tv_sec, last);
		last_sec = ts.tv_sec;
	}
	memcpy(out, last, 19);
	out[19] = '.';
	unsigned us = (unsigned)(ts.tv_nsec / 1000);
	for (int i = 25; i >= 20; i--, us /= 10)
		out[i] = (char)('0' + us % 10);
	out[26] = 'Z';
	out[27] = 0;
}

static void
build_tail(void)
{
	gk_buf b = {0};
	gk_jw w;
	gk_jw_init(&w, &b);
	gk_jw_object(&w);
	gk_jw_key(&w, "x");
	gk_jw_null(&w); /* so that the members below start with a comma */
	gk_jw_key(&w, "proc");
	gk_jw_cstr(&w, cfg.proc);
	gk_jw_key(&w, "pid");
	gk_jw_int(&w, cfg.pid);
	if (cfg.svc) {
		gk_jw_key(&w, "svc");
		gk_jw_cstr(&w, cfg.svc);
	}
	size_t skip = sizeof "{\"x\":null" - 1;
	cfg.tail_len = 0;
	if (b.len - skip <= sizeof cfg.tail) {
		memcpy(cfg.tail, b.data + skip, b.len - skip);
		cfg.tail_len = b.len - skip;
	}
	gk_buf_free(&b);
}

/* The common members, into an open object. level < 0: none. */
static void
write_common(gk_jw *w, const char *type, int level)
{
	/* Names and the timestamp need no escaping: copied as they are
	 * (every event writes these, so they cost no quoting pass). */
#define KEY(w, lit) (gk__jw_raw_plain((w), lit, sizeof lit - 1), (w)->after_key = true)
	/* "ts":"...","type":"..." in one piece when the type needs no
	 * escaping (ours never do): the first member, so no comma before. */
	char head[96];
	const char *t = type;
	while (t - type < 40 && ((*t >= 'a' && *t <= 'z') || *t == '_' ||
	                         (*t >= '0' && *t <= '9')))
		t++;
	size_t tl = (size_t)(t - type);
	if (tl < 40 && !*t) {
		memcpy(head, "\"ts\":\"", 6);
		format_ts(head + 6);
		memcpy(head + 33, "\",\"type\":\"", 10);
		memcpy(head + 43, type, tl);
		head[43 + tl] = '"';
		gk__jw_raw_plain(w, head, 44 + tl);
	} else {
		head[0] = '"';
		format_ts(head + 1);
		head[28] = '"';
		KEY(w, "\"ts\":");
		gk__jw_raw_plain(w, head, 29);
		KEY(w, "\"type\":");
		gk_jw_cstr(w, type);
	}
	if (level >= 0) {
		KEY(w, "\"level\":");
		gk_jw_cstr(w, gk_level_name((enum gk_level)level));
	}
	if (cfg.tail_len) {
		/* The writer's state is as after any value: a comma next. */
		gk_buf_add(w->out, cfg.tail, cfg.tail_len);
		return;
	}
	KEY(w, "\"proc\":");
	gk_jw_cstr(w, cfg.proc);
	KEY(w, "\"pid\":");
	gk_jw_int(w, cfg.pid);
	if (cfg.svc) {
		KEY(w, "\"svc\":");
		gk_jw_cstr(w, cfg.svc);
	}
#undef KEY
}

static struct builder *
builder(void)
{
	struct builder *b = &tb;
	if (!b->registered) {
		/* Frees the buffers when the thread ends. */
		pthread_setspecific(tb_key, b);
		b->registered = true;
	}
	return b;
}

static gk_jw *
event_open(const char *type, int level)
{
	ensure_init();
	struct builder *b = builder();
	gk_buf_reset(&b->line);
	gk_jw_init(&b->jw, &b->line);
	gk_jw_object(&b->jw);
	size_t tl = strnlen(type, sizeof b->type - 1); /* as snprintf cuts */
	memcpy(b->type, type, tl);
	b->type[tl] = 0;
	b->level = level;
	write_common(&b->jw, type, level);
	return &b->jw;
}

gk_jw *
gk_event_begin(const char *type)
{
	return event_open(type && *type ? type : "log", -1);
}

/* --- shortening an event that is too long --- */

struct span {
	size_t off, len; /* a string value, quotes included */
};

struct spans {
	struct span *v;
	size_t n, cap;
};

static void
collect(gk_json v, const char *base, struct spans *s, int depth)
{
	if (v.type == GK_JSON_STRING) {
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 32;
			s->v = gk_xrealloc(s->v, s->cap * sizeof *s->v);
		}
		s->v[s->n++] = (struct span){(size_t)(v.p - base), v.len};
		return;
	}
	if ((v.type != GK_JSON_OBJECT && v.type != GK_JSON_ARRAY) ||
	    depth > GK_WIRE_MAX_DEPTH)
		return;
	gk_json_iter it;
	gk_json key, val;
	gk_json_iter_init(&it, v);
	while (gk_json_iter_next(&it, &key, &val))
		collect(val, base, s, depth + 1);
}

static bool
is_hex_surrogate(const char *p, char lo, char hi)
{
	/* p at "\uXXXX": D800-DBFF (lo '8', hi 'b') or DC00-DFFF. */
	if (p[0] != '\\' || p[1] != 'u' || (p[2] != 'd' && p[2] != 'D'))
		return false;
	char c = (char)tolower((unsigned char)p[3]);
	return c >= lo && c <= hi;
}

/*
 * The longest prefix of encoded string content (between the quotes) of at
 * most max bytes that ends neither inside an escape nor a UTF-8 sequence.
 */
static size_t
safe_cut(const char *p, size_t n, size_t max)
{
	size_t i = 0;
	while (i < n) {
		size_t k = 1;
		unsigned char c = (unsigned char)p[i];
		if (c == '\\') {
			k = 2;
			if (i + 1 < n && p[i + 1] == 'u') {
				k = 6;
				/* A surrogate pair is one character. */
				if (i + 12 <= n &&
				    is_hex_surrogate(p + i, '8', 'b') &&
				    is_hex_surrogate(p + i + 6, 'c', 'f'))
					k = 12;
			}
		} else if (c >= 0xf0)
			k = 4;
		else if (c >= 0xe0)
			k = 3;
		else if (c >= 0xc0)
			k = 2;
		if (i + k > max || i + k > n)
			break;
		i += k;
	}
	return i;
}

static const char truncated_member[] = ",\"truncated\":true}";

/* Top-level members that are never shortened. */
static bool
keep_whole(gk_json key)
{
	static const char *const keep[] = {"ts",      "type",      "level",
	                                   "proc",    "svc",       "trace_id",
	                                   "span_id", "parent_id", NULL};
	for (int i = 0; keep[i]; i++)
		if (gk_json_eq(key, keep[i]))
			return true;
	return false;
}

/* Copy line[from, to) with the strings of s longer than cap shortened. */
static void
copy_cut(gk_buf *out, const char *line, size_t from, size_t to,
         const struct spans *s, size_t cap)
{
	size_t at = from;
	for (size_t i = 0; i < s->n; i++) {
		struct span sp = s->v[i];
		size_t c = sp.len - 2;
		if (sp.off < from || sp.off + sp.len > to || c <= cap)
			continue;
		gk_buf_add(out, line + at, sp.off - at);
		/* Content cut to cap - 3, then an ellipsis (3 bytes). */
		size_t k = safe_cut(line + sp.off + 1, c, cap - 3);
		gk_buf_add(out, line + sp.off, k + 1);
		gk_buf_add(out, "\xe2\x80\xa6\"", 4);
		at = sp.off + sp.len;
	}
	gk_buf_add(out, line + at, to - at);
}

/* Last resort (a line that is not valid JSON): the common members. */
static void
minimal_event(struct builder *b)
{
	gk_buf *out = &b->aux;
	gk_buf_reset(out);
	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	write_common(&w, b->type, b->level);
	gk_jw_key(&w, "msg");
	gk_jw_cstr(&w, "event was not valid JSON");
	gk_jw_key(&w, "truncated");
	gk_jw_bool(&w, true);
	gk_jw_object_end(&w);
	gk_buf t = b->line;
	b->line = b->aux;
	b->aux = t;
}

/*
 * b->line is longer than LINE_MAX_BYTES: shorten its longest strings (all
 * of them to one cap, the largest that makes the line fit), and if that is
 * not enough (many members), leave out members from the end.
 */
static void
shorten(struct builder *b)
{
	const char *line = b->line.data;
	size_t len = b->line.len;
	gk_wire_error err;
	if (gk_json_validate(line, len, &err) < 0 || line[0] != '{') {
		minimal_event(b);
		return;
	}
	struct spans s = {0};
	struct member {
		size_t from, to;
	} *mem = NULL;
	size_t nmem = 0, capm = 0;
	gk_json_iter it;
	gk_json key, val;
	/* A "truncated" member already there (gk_log's, past the members
	 * readers take) is left out: the one added below stands for it. */
	size_t omit_from = 0, omit_to = 0;
	gk_json_iter_init(&it, (gk_json){GK_JSON_OBJECT, line, len});
	while (gk_json_iter_next(&it, &key, &val)) {
		if (nmem && !omit_to && gk_json_eq(key, "truncated")) {
			omit_from = mem[nmem - 1].to; /* the comma before */
			omit_to = (size_t)(val.p + val.len - line);
			continue;
		}
		if (nmem == capm) {
			capm = capm ? capm * 2 : 32;
			mem = gk_xrealloc(mem, capm * sizeof *mem);
		}
		mem[nmem++] = (struct member){(size_t)(key.p - line),
		                              (size_t)(val.p + val.len - line)};
		if (!keep_whole(key))
			collect(val, line, &s, 1);
	}

	/* Bytes to lose: the excess, and room for the truncated member. */
	size_t kept = len - 1 - (omit_to - omit_from);
	size_t need =
	    kept + (sizeof truncated_member - 1) > LINE_MAX_BYTES
	        ? kept + (sizeof truncated_member - 1) - LINE_MAX_BYTES
	        : 0;
	size_t maxc = 0;
	for (size_t i = 0; i < s.n; i++)
		if (s.v[i].len - 2 > maxc)
			maxc = s.v[i].len - 2;
	/* Largest cap L with sum(max(0, c - L)) >= need. */
	size_t lo = MIN_CUT, hi = maxc, cap = 0;
	while (lo <= hi) {
		size_t mid = lo + (hi - lo) / 2, gain = 0;
		for (size_t i = 0; i < s.n; i++)
			if (s.v[i].len - 2 > mid)
				gain += s.v[i].len - 2 - mid;
		if (gain >= need) {
			cap = mid;
			lo = mid + 1;
		} else
			hi = mid - 1;
	}
	gk_buf *out = &b->aux;
	gk_buf_reset(out);
	if (cap) {
		/* Everything but the closing brace (and the member left
		 * out). */
		copy_cut(out, line, 0, omit_to ? omit_from : len - 1, &s, cap);
		if (omit_to)
			copy_cut(out, line, omit_to, len - 1, &s, cap);
	} else {
		/* Strings at their shortest, and the members that fit. */
		gk_buf one = {0};
		gk_buf_addc(out, '{');
		for (size_t i = 0; i < nmem; i++) {
			gk_buf_reset(&one);
			copy_cut(&one, line, mem[i].from, mem[i].to, &s,
			         MIN_CUT);
			if (out->len + 1 + one.len + sizeof truncated_member -
			        1 >
			    LINE_MAX_BYTES)
				continue;
			if (out->len > 1)
				gk_buf_addc(out, ',');
			gk_buf_add(out, one.data, one.len);
		}
		gk_buf_free(&one);
	}
	gk_buf_add(out, truncated_member, sizeof truncated_member - 1);
	free(s.v);
	free(mem);
	if (out->len > LINE_MAX_BYTES) {
		minimal_event(b);
		return;
	}
	gk_buf t = b->line;
	b->line = b->aux;
	b->aux = t;
}

/* --- rendering for a person --- */

static const char *
level_colour(const char *level)
{
	if (!strcmp(level, "fatal"))
		return "\033[1;31m";
	if (!strcmp(level, "error"))
		return "\033[31m";
	if (!strcmp(level, "warn"))
		return "\033[33m";
	if (!strcmp(level, "info"))
		return "\033[32m";
	if (!strcmp(level, "debug"))
		return "\033[90m";
	return "\033[36m";
}

/* U+0080..U+009F, which JSON leaves as they are and a terminal may obey
 * (U+009B is CSI). */
static bool
is_c1(const char *p, size_t n)
{
	return n >= 2 && (unsigned char)p[0] == 0xc2 &&
	       (unsigned char)p[1] >= 0x80 && (unsigned char)p[1] <= 0x9f;
}

/* DEL and the C1 controls of out from start on as \u00XX (JSON, which
 * quotes the others, leaves them): within a string (text quotes a word
 * that has one), a JSON escape like the others. */
static void
escape_c1(gk_buf *out, size_t start)
{
	const char *p = out->data + start, *end = out->data + out->len;
	const char *c = p;
	while (c < end && *c != 0x7f && !is_c1(c, (size_t)(end - c)))
		c++;
	if (c >= end)
		return;
	gk_buf t = {0};
	while (p < end) {
		if (*p == 0x7f)
			gk_buf_adds(&t, "\\u007f"), p++;
		else if (is_c1(p, (size_t)(end - p))) {
			gk_buf_addf(&t, "\\u00%02x", (unsigned char)p[1]);
			p += 2;
		} else
			gk_buf_addc(&t, *p++);
	}
	out->len = start;
	gk_buf_add(out, t.data, t.len);
	gk_buf_free(&t);
}

/* A string for a person: bare when it is one plain word, else quoted. */
static void
text_string(gk_buf *out, const char *s, size_t n, bool allow_space)
{
	bool plain = n > 0;
	for (size_t i = 0; i < n && plain; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '"' || is_c1(s + i, n - i) ||
		    (!allow_space && (c == ' ' || c == '=')))
			plain = false;
	}
	if (plain || (allow_space && n == 0))
		gk_buf_add(out, s, n);
	else
		gk_json_quote(out, s, n);
}

static void
text_value(gk_buf *out, gk_json v, gk_buf *tmp)
{
	if (v.type == GK_JSON_STRING) {
		gk_buf_reset(tmp);
		gk_json_string(v, tmp);
		text_string(out, tmp->data ? tmp->data : "", tmp->len, false);
	} else
		gk_buf_add(out, v.p, v.len);
}

/* Metrics, compactly: name{k=v,...}=value for each series. */
static void
text_metrics(gk_buf *out, gk_json metrics, gk_buf *tmp)
{
	gk_json_iter fi, si, li;
	gk_json fam, ser, k, v;
	gk_json_iter_init(&fi, metrics);
	while (gk_json_iter_next(&fi, NULL, &fam)) {
		gk_json name = gk_json_member(fam, "name");
		gk_json series = gk_json_member(fam, "series");
		if (name.type != GK_JSON_STRING || series.type != GK_JSON_ARRAY)
			continue;
		gk_buf nm = {0};
		gk_json_string(name, &nm);
		gk_json_iter_init(&si, series);
		while (gk_json_iter_next(&si, NULL, &ser)) {
			gk_buf lab = {0};
			gk_json labels = gk_json_member(ser, "labels");
			if (labels.type == GK_JSON_OBJECT) {
				bool first = true;
				gk_json_iter_init(&li, labels);
				while (gk_json_iter_next(&li, &k, &v)) {
					gk_buf_addc(&lab, first ? '{' : ',');
					first = false;
					gk_buf_reset(tmp);
					gk_json_string(k, tmp);
					gk_buf_add(&lab, tmp->data, tmp->len);
					gk_buf_addc(&lab, '=');
					text_value(&lab, v, tmp);
				}
				if (!first)
					gk_buf_addc(&lab, '}');
			}
			gk_json value = gk_json_member(ser, "value");
			if (value.type != GK_JSON_NONE) {
				gk_buf_addc(out, ' ');
				gk_buf_add(out, nm.data, nm.len);
				gk_buf_add(out, lab.data, lab.len);
				gk_buf_addc(out, '=');
				text_value(out, value, tmp);
			}
			static const char *const hist[] = {"count", "sum"};
			for (int i = 0; i < 2; i++) {
				gk_json hv = gk_json_member(ser, hist[i]);
				if (hv.type == GK_JSON_NONE)
					continue;
				gk_buf_addc(out, ' ');
				gk_buf_add(out, nm.data, nm.len);
				gk_buf_addf(out, "_%s", hist[i]);
				gk_buf_add(out, lab.data, lab.len);
				gk_buf_addc(out, '=');
				text_value(out, hv, tmp);
			}
			gk_buf_free(&lab);
		}
		gk_buf_free(&nm);
	}
}

/*
 * "09:30:00.123 WARN  gk-limiter rate limited key=10.0.0.7": the time (UTC,
 * as in ts), the level (or the type of a non-log event), proc, msg, and the
 * other members as key=value.  pid and svc are left out: noise at a
 * terminal.  Appends a newline.
 */
static void
render_text(const char *line, size_t len, gk_buf *out, bool colour)
{
	gk_wire_msg m;
	gk_wire_error err;
	size_t start = out->len;
	if (gk_wire_parse(&m, line, len, &err) < 0) {
		gk_buf_add(out, line, len);
		escape_c1(out, start);
		gk_buf_addc(out, '\n');
		return;
	}
	gk_buf tmp = {0}, word = {0};
	gk_json ts = gk_wire_get(&m, "ts");
	if (ts.type == GK_JSON_STRING && ts.len >= 25)
		gk_buf_add(out, ts.p + 12, 12); /* HH:MM:SS.mmm */
	gk_json type = gk_wire_get(&m, "type");
	gk_json level = gk_wire_get(&m, "level");
	bool is_log = type.type == GK_JSON_NONE || gk_json_eq(type, "log");
	gk_json label = is_log ? level : type;
	if (label.type == GK_JSON_STRING)
		gk_json_string(label, &word);
	else
		gk_buf_adds(&word, "log");
	gk_buf_cstr(&word);
	const char *col = is_log ? level_colour(word.data) : "\033[36m";
	for (size_t i = 0; i < word.len; i++)
		word.data[i] = (char)toupper((unsigned char)word.data[i]);
	gk_buf_addc(out, ' ');
	if (colour)
		gk_buf_adds(out, col);
	text_string(out, word.data, word.len, false);
	if (colour)
		gk_buf_adds(out, "\033[0m");
	for (size_t i = word.len; i < 5; i++)
		gk_buf_addc(out, ' ');
	gk_json proc = gk_wire_get(&m, "proc");
	if (proc.type == GK_JSON_STRING) {
		gk_buf_addc(out, ' ');
		text_value(out, proc, &tmp);
	}
	gk_json msg = gk_wire_get(&m, "msg");
	if (msg.type == GK_JSON_STRING) {
		gk_buf_reset(&tmp);
		gk_json_string(msg, &tmp);
		gk_buf_addc(out, ' ');
		text_string(out, tmp.data ? tmp.data : "", tmp.len, true);
	}
	for (unsigned i = 0; i < m.nfields; i++) {
		gk_json k = m.field[i].key, v = m.field[i].value;
		if (gk_json_eq(k, "ts") || gk_json_eq(k, "type") ||
		    gk_json_eq(k, "level") || gk_json_eq(k, "proc") ||
		    gk_json_eq(k, "pid") || gk_json_eq(k, "svc") ||
		    gk_json_eq(k, "msg"))
			continue;
		if (!is_log && gk_json_eq(k, "metrics") &&
		    v.type == GK_JSON_ARRAY) {
			text_metrics(out, v, &tmp);
			continue;
		}
		gk_buf_addc(out, ' ');
		gk_buf_reset(&tmp);
		gk_json_string(k, &tmp);
		text_string(out, tmp.data ? tmp.data : "", tmp.len, false);
		gk_buf_addc(out, '=');
		text_value(out, v, &tmp);
	}
	escape_c1(out, start);
	gk_buf_addc(out, '\n');
	gk_buf_free(&tmp);
	gk_buf_free(&word);
}

/* --- the queue --- */

/* One finished line (no newline) into the queue, under qlock; false when
 * it was dropped, the queue full. */
static bool
enqueue_locked(const char *line, size_t len)
{
	if (fd_dead) {
		lost++;
		gone++;
		gone_uncounted++;
		return true; /* the reader gone: not a full queue's drop */
	}
	if (dropped)
		notice_dropped_locked();
	if (queue.len + len + 1 > QUEUE_MAX) {
		dropped++;
		lost++;
		lost_errno = EAGAIN;
		if (queue.len > QUEUE_FLUSH)
			flush_locked(FLUSH_AUTO);
		return false;
	}
	if (!queue.len)
		queued_at_ms = mono_ms();
	gk_buf_reserve(&queue, len + 1);
	memcpy(queue.data + queue.len, line, len);
	queue.len += len;
	queue.data[queue.len++] = '\n';
	if (!atomic_load_explicit(&batching, memory_order_relaxed) ||
	    queue.len > QUEUE_FLUSH)
		flush_locked(FLUSH_AUTO);
	return true;
}

/* The "events dropped" notice once there is room for it, under qlock. */
static void
notice_dropped_locked(void)
{
	gk_buf json = {0}, text = {0};
	gk_jw w;
	gk_jw_init(&w, &json);
	gk_jw_object(&w);
	write_common(&w, "log", GK_WARN);
	gk_jw_key(&w, "msg");
	gk_jw_cstr(&w, "events dropped");
	gk_jw_key(&w, "count");
	gk_jw_int(&w, (int64_t)dropped);
	gk_jw_object_end(&w);
	const gk_buf *line = &json;
	if (cfg.text) {
		render_text(json.data, json.len, &text, cfg.colour);
		text.len--; /* the newline is added below */
		line = &text;
	}
	if (queue.len + line->len + 1 <= QUEUE_MAX) {
		gk_buf_add(&queue, line->data, line->len);
		gk_buf_addc(&queue, '\n');
		dropped = 0;
	}
	gk_buf_free(&json);
	gk_buf_free(&text);
}

/*
 * Text can be longer than the JSON line it is made from (a metrics family's
 * name is repeated for each series): cut it to LINE_MAX_BYTES too, at a
 * character's start, marked, so that a line is one atomic write to a pipe.
 * Returns the new length.
 */
static const char text_cut_mark[] = "\xe2\x80\xa6 truncated=true";

static size_t
cut_text(char *p, size_t len)
{
	if (len <= LINE_MAX_BYTES)
		return len;
	size_t keep = LINE_MAX_BYTES - (sizeof text_cut_mark - 1);
	while (keep > 0 && ((unsigned char)p[keep] & 0xc0) == 0x80)
		keep--;
	memcpy(p + keep, text_cut_mark, sizeof text_cut_mark - 1);
	return keep + sizeof text_cut_mark - 1;
}

/* Not under qlock: metrics.c writes events of its own. */
static _Atomic(gk_series *) m_truncated, m_dropped;

static void
count_metric(_Atomic(gk_series *) *series, const char *name, const char *help)
{
	gk_series *s = atomic_load_explicit(series, memory_order_acquire);
	if (!s) {
		s = gk_metric_series(gk_counter_new(name, help, NULL));
		atomic_store_explicit(series, s, memory_order_release);
	}
	gk_counter_add(s, 1);
}

static _Atomic(gk_series *) m_lost;

static void
count_gone(uint64_t n)
{
	if (!n)
		return;
	gk_series *s = atomic_load_explicit(&m_lost, memory_order_acquire);
	if (!s) {
		s = gk_metric_series(gk_counter_new(
		    "gk_events_lost_total",
		    "Events not written because the event fd's reader was gone "
		    "(EPIPE) or the fd closed (EBADF).",
		    NULL));
		atomic_store_explicit(&m_lost, s, memory_order_release);
	}
	gk_counter_add(s, (double)n);
}

static void
count_truncated(void)
{
	count_metric(&m_truncated, "gk_events_truncated_total",
	             "Events shortened to fit one line of PIPE_BUF bytes.");
}

/*
 * What the caller left open, closed: a key without its value gets null,
 * and each open array or object its own bracket (the writer keeps no
 * record of which is which: the line tells, read outside strings).
 */
static void
close_open(struct builder *b)
{
	if (b->jw.after_key)
		gk_jw_null(&b->jw);
	char open[GK_WIRE_MAX_DEPTH + 1];
	size_t n = 0;
	bool in_str = false;
	for (size_t i = 0; i < b->line.len; i++) {
		char c = b->line.data[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
		} else if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[') {
			if (n < sizeof open)
				open[n] = c;
			n++;
		} else if ((c == '}' || c == ']') && n)
			n--;
	}
	while (b->jw.depth > 0) {
		if (n && n <= sizeof open && open[n - 1] == '[')
			gk_jw_array_end(&b->jw);
		else
			gk_jw_object_end(&b->jw);
		if (n)
			n--;
	}
}

void
gk_event_end(void)
{
	struct builder *b = &tb;
	if (!b->line.len)
		return; /* no gk_event_begin */
	if (b->jw.depth == 1 && !b->jw.after_key)
		gk_jw_object_end(&b->jw);
	else if (b->jw.depth > 0)
		close_open(b);
	bool cut = b->line.len > LINE_MAX_BYTES;
	if (cut) {
		shorten(b);
		count_truncated();
	}
	const char *line = b->line.data;
	size_t len = b->line.len;
	if (cfg.text) {
		gk_buf_reset(&b->aux);
		render_text(line, len, &b->aux, cfg.colour);
		line = b->aux.data;
		len = b->aux.len - 1;
		if (len > LINE_MAX_BYTES) {
			len = cut_text(b->aux.data, len);
			if (!cut)
				count_truncated();
		}
	}
	pthread_mutex_lock(&qlock);
	bool queued = enqueue_locked(line, len);
	uint64_t g = take_gone_locked();
	pthread_mutex_unlock(&qlock);
	count_gone(g);
	b->line.len = 0;
	if (!queued)
		count_metric(&m_dropped, "gk_events_dropped_total",
		             "Events dropped, the event queue (1 MiB) full.");
}

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

/* A value given as key=value is raw JSON when it is one of these. */
static bool
json_scalar(const char *v)
{
	if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null"))
		return true;
	/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
	const char *p = v;
	bool integral = true;
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (*p == '.') {
		integral = false;
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		integral = false;
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p)
		return false;
	/* Readers use doubles: keep what they would mangle as a string.  An
	 * integer is compared by its digits (9007199254740993 reads as the
	 * double 2^53); any other number must lie below 2^53. */
	if (integral) {
		const char *dig = v + (*v == '-');
		size_t nd = strlen(dig);
		return nd < 16 ||
		       (nd == 16 && strcmp(dig, "9007199254740992") <= 0);
	}
	double d = strtod(v, NULL);
	return isfinite(d) && fabs(d) < 9007199254740992.0;
}

static bool
reserved(const char *k, size_t n, bool have_trace)
{
	static const char *const names[] = {"ts",   "type",      "level",
	                                    "proc", "pid",       "svc",
	                                    "msg",  "truncated", NULL};
	for (int i = 0; names[i]; i++)
		if (strlen(names[i]) == n && !memcmp(names[i], k, n))
			return true;
	return have_trace && n == 8 && !memcmp(k, "trace_id", 8);
}

/*
 * The member name of field f ("k=v" or "k"): "_" for an empty key,
 * field_NAME for a common member's name, else the key.  *k may point into
 * buf (at least 32 bytes).
 */
static void
field_key(const char *f, bool have_trace, char *buf, const char **k, size_t *kn)
{
	const char *eq = strchr(f, '=');
	size_t n = eq ? (size_t)(eq - f) : strlen(f);
	if (!n) {
		*k = "_";
		*kn = 1;
	} else if (reserved(f, n, have_trace)) {
		*kn = (size_t)snprintf(buf, 32, "field_%.*s", (int)n, f);
		*k = buf;
	} else {
		*k = f;
		*kn = n;
	}
}

/* Whether a field after those read from *ap has member name k. */
static bool
given_later(va_list *ap, const char *k, size_t kn, bool have_trace)
{
	const char *f;
	while ((f = va_arg(*ap, const char *))) {
		char buf[32];
		const char *k2;
		size_t kn2;
		field_key(f, have_trace, buf, &k2, &kn2);
		if (kn2 == kn && !memcmp(k2, k, kn))
			return true;
	}
	return false;
}

static void
log_va(enum gk_level level, const char *trace_id, const char *msg, va_list ap)
{
	gk_jw *w = event_open("log", (int)level);
	gk_jw_key(w, "msg");
	gk_jw_cstr(w, msg ? msg : "");
	if (trace_id) {
		gk_jw_key(w, "trace_id");
		gk_jw_cstr(w, trace_id);
	}
	/* Readers take at most GK_WIRE_MAX_FIELDS members: ts, type,
	 * level, proc, pid, msg, svc and trace_id when set, the fields that
	 * fit, and room for "truncated" (which shorten may add too). */
	int room =
	    GK_WIRE_MAX_FIELDS - 7 - (cfg.svc != NULL) - (trace_id != NULL);
	bool cut = false;
	const char *f;
	while ((f = va_arg(ap, const char *))) {
		char buf[32];
		const char *k;
		size_t kn;
		if (room == 0) {
			cut = true;
			break;
		}
		field_key(f, trace_id != NULL, buf, &k, &kn);
		/* A key given twice: the last value wins, as jq reads it;
		 * readers that keep the first would see another event. */
		va_list later;
		va_copy(later, ap);
		bool dup = given_later(&later, k, kn, trace_id != NULL);
		va_end(later);
		if (dup)
			continue;
		gk_jw_keyn(w, k, kn);
		const char *eq = strchr(f, '=');
		if (!eq)
			gk_jw_bool(w, true);
		else if (json_scalar(eq + 1))
			gk_jw_raw(w, eq + 1, strlen(eq + 1));
		else
			gk_jw_cstr(w, eq + 1);
		room--;
	}
	if (cut) {
		gk_jw_key(w, "truncated");
		gk_jw_bool(w, true);
		count_truncated();
	}
	gk_event_end();
}

void
gk_log_trace(enum gk_level level, const char *trace_id, const char *msg, ...)
{
	if (!gk_log_enabled(level))
		return;
	va_list ap;
	va_start(ap, msg);
	log_va(level, trace_id, msg, ap);
	va_end(ap);
}

static void
logf_va(enum gk_level level, const char *fmt, va_list ap)
{
	char small[512];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	char *msg = small;
	if (n >= (int)sizeof small) {
		msg = gk_xmalloc((size_t)n + 1);
		vsnprintf(msg, (size_t)n + 1, fmt, ap2);
	}
	va_end(ap2);
	gk_log_trace(level, NULL, n < 0 ? fmt : msg, (char *)0);
	if (msg != small)
		free(msg);
}

void
gk_logf(enum gk_level level, const char *fmt, ...)
{
	if (!gk_log_enabled(level))
		return;
	va_list ap;
	va_start(ap, fmt);
	logf_va(level, fmt, ap);
	va_end(ap);
}

void
gk_fatal(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	logf_va(GK_FATAL, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&qlock);
	flush_locked(FLUSH_EXIT);
	pthread_mutex_unlock(&qlock);
	exit(status);
}
