/*
 * logship.h: what the log-shipping exporter plugins (gk-export-syslog,
 * -file, -loki, -kafka) share, on top of export.h:
 *
 *   logship.c     event timestamps in microseconds, event type filters,
 *                 an event as text (msg then key=value pairs);
 *   syslog_fmt.c  RFC 5424 and RFC 3164 (glibc's /dev/log) messages;
 *   logfile.c     an appending, rotating log file with an fsync policy
 *                 that keeps what it could not write (a full disk) in a
 *                 bounded queue;
 *   loki_push.c   Loki push API entries and the bound on label sets.
 */
#ifndef GK_LOGSHIP_H
#define GK_LOGSHIP_H

#include "export.h"

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

/* ts in microseconds, or the wall clock now when ts is unusable. */
uint64_t gk_event_ts_us_or_now(const gk_event *ev);

/* A set of event types (bits 1 << enum gk_event_type). */
#define GK_EVMASK_ALL 0x1fu
#define GK_EVMASK(t) (1u << (t))
/* "log,access,span,metrics,other" or "all": the mask, -1 if malformed. */
int gk_evmask_parse(const char *s, unsigned *mask);
/* "log", "metrics", "span", "access", "other". */
const char *gk_event_type_name(enum gk_event_type t);

/*
 * Append the members of ev that are not common members, as
 * key=value separated by spaces (a leading space before each): strings
 * bare when they hold no space, quote, backslash, '=' or control
 * character, else JSON-quoted; other values as their JSON text.
 */
void gk_event_kv_text(const gk_event *ev, gk_buf *out);

/* ------------------------------------------------------------------ */
/* Syslog messages                                                     */
/* ------------------------------------------------------------------ */

/* "user", "daemon", "local0".. "local7", ...: the facility code (0-23),
 * -1 if unknown. */
int gk_syslog_facility(const char *name);
const char *gk_syslog_facility_name(int code);
/* debug->7, info->6, warn->4, error->3, fatal->2 (RFC 5424 severities). */
int gk_syslog_severity(const gk_event *ev);

typedef struct gk_syslog_opts {
	int facility;      /* 0-23 */
	const char *ident; /* APP-NAME / TAG; NULL: the event's proc */
	const char *host;  /* HOSTNAME (5424) */
	const char *sd_id; /* "gokit@32473" */
	size_t max_bytes;  /* of a message (0: 8192); longer is cut */
} gk_syslog_opts;

/*
 * RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG.
 * TIMESTAMP from ts (UTC, microseconds), APP-NAME from proc, PROCID
 * from pid, MSGID the event type; SD one element sd_id holding the
 * members that are not common (svc included), PARAM-VALUE escaping '"',
 * '\' and ']'; MSG the msg member.  Returns true when the message had to
 * be cut to max_bytes (SD left out first, then MSG shortened).
 */
bool gk_syslog_5424(const gk_event *ev, const gk_syslog_opts *o, gk_buf *out);
/*
 * RFC 3164 as glibc's syslog(3) writes it to /dev/log:
 * <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG (local time, no hostname), MSG the
 * msg member then the other members as key=value.
 */
bool gk_syslog_3164(const gk_event *ev, const gk_syslog_opts *o, gk_buf *out);

/* ------------------------------------------------------------------ */
/* A rotating log file                                                 */
/* ------------------------------------------------------------------ */

enum gk_fsync_policy {
	GK_FSYNC_NEVER = 0, /* leave it to the kernel */
	GK_FSYNC_BATCH,     /* fdatasync after each batch of writes */
	GK_FSYNC_ALWAYS,    /* fdatasync after each record */
};

typedef struct gk_logfile_opts {
	const char *path;
	uint64_t max_size;  /* rotate past this many bytes (0: never) */
	uint64_t rotate_ms; /* rotate at each multiple of this (0: never) */
	bool daily;         /* rotate at local midnight */
	unsigned keep;      /* PATH.1 .. PATH.keep (1 at least) */
	enum gk_fsync_policy fsync;
	size_t max_buffer; /* bytes held while the file cannot be written */
	unsigned mode;     /* of a new file (0: 0644) */
} gk_logfile_opts;

typedef struct gk_logfile gk_logfile;

/* Opens the file; NULL with errno set when it cannot be opened. */
gk_logfile *gk_logfile_new(gk_export *ex, const gk_logfile_opts *o);
/* Append one record (a line with its newline). */
void gk_logfile_add(gk_logfile *f, const void *p, size_t n);
/* Reopen the file at its path (SIGHUP: after logrotate moved it). */
void gk_logfile_reopen(gk_logfile *f);
/* Rotate now. */
void gk_logfile_rotate(gk_logfile *f);
/* Write what is held, and call fn once nothing is (drain). */
void gk_logfile_drain(gk_logfile *f, void (*fn)(gk_logfile *, void *),
                      void *arg);
size_t gk_logfile_pending(const gk_logfile *f);
void gk_logfile_free(gk_logfile *f);

/* ------------------------------------------------------------------ */
/* Loki                                                                */
/* ------------------------------------------------------------------ */

typedef struct gk_loki gk_loki;

/* labels: the event members whose values become labels ("type" is the
 * event type, "level" a log event's level, read as gk_event_level does);
 * static_labels: "name=value" on every stream; at most
 * max_streams distinct label sets, past that events go to a stream whose
 * chosen labels are all "_overflow" (counted). */
gk_loki *gk_loki_new(const char *const *labels, size_t nlabels,
                     const char *const *static_labels, size_t nstatic,
                     size_t max_streams);
void gk_loki_free(gk_loki *l);
/* Append one streams entry for ev:
 * {"stream":{labels},"values":[["<ns>","<line>"]]}. */
void gk_loki_entry(gk_loki *l, const gk_event *ev, gk_buf *out);
size_t gk_loki_streams(const gk_loki *l);

#endif
