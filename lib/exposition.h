/*
 * exposition.h: metrics snapshots (gk-events(5)) in the Prometheus text
 * exposition format 0.0.4, and snapshots assembled from their parts
 * (internal; used by gk-export-prometheus and gk-export-pushgateway).
 */
#ifndef GK_EXPOSITION_H
#define GK_EXPOSITION_H

#include "export.h"

/*
 * The complete snapshot of one process: its metrics events (all the parts
 * of one seq), each line NUL-terminated, laid end to end in snap, and the
 * labels added to each of its series (NULL for none).
 */
typedef struct gk_expo_src {
	const char *snap;
	size_t len;
	const char *svc, *proc, *instance;
	/* Added to the values of its counter and histogram lines, keyed by
	 * the line's name and labels as written (NULL: none): what a process
	 * restarted with the same pid had counted before
	 * (gk_expo_offsets_restart). */
	const gk_smap *offsets;
} gk_expo_src;

typedef struct gk_expo_opts {
	/* Also rename a series label "job" to "exported_job" (a label the
	 * Pushgateway owns).  Labels named svc, proc, instance, le or
	 * starting with "__" always are. */
	bool rename_job;
} gk_expo_opts;

/*
 * Append the exposition of the sources to out: families merged across
 * sources and sorted by name (a counter's name gains "_total" when it
 * lacks it); in each, the series of each source in the order given.  A
 * family with no series is left out.  So that the text passes promtool,
 * these are left out too, and counted in what it returns: a family of the
 * same name as the first seen, once sanitised, but another type or
 * another name ("a.b" after "a_b"); a family whose name is one of a
 * histogram's lines (h_count beside the histogram h); a label of a series
 * whose sanitised name it already has ("a-b" after "a_b"); a series of a
 * family whose labels, as written, are those of one before it ({a.b="1"}
 * after {a_b="1"}): the Pushgateway refuses a push with such a repeat.
 */
size_t gk_expo_render(gk_buf *out, const gk_expo_src *src, size_t n,
    const gk_expo_opts *o);

/*
 * A process restarted under the same labels (the same pid: its seq went
 * back): the offsets under which its counters and histograms go on from
 * where its last snapshot, as served with its offsets, left them, so that
 * Prometheus sees no decrease and loses no increase, whenever it scrapes.
 * Free with gk_expo_offsets_free.
 */
gk_smap *gk_expo_offsets_restart(const gk_expo_src *last);
void gk_expo_offsets_free(gk_smap *offsets);

/* The process a snapshot comes from, named as its series are labelled:
 * proc ("unknown" when the event has none), svc (has_svc when the event
 * has a non-empty one) and instance "HOST:PID". */
typedef struct gk_expo_origin {
	char proc[128], svc[128], instance[300];
	bool has_svc;
} gk_expo_origin;

void gk_expo_origin_set(gk_expo_origin *o, const gk_event *ev,
    const char *host);

/*
 * A process restarted with the same pid (a container, say) counts from
 * zero under the same labels: Prometheus sees a reset only if it reads a
 * lower value, and loses the increase when the counters climbed past the
 * old ones first.  Each process numbers its snapshots from 1, so a seq
 * that goes back tells the restart; its counters and histograms then go
 * on from where its last snapshot as served left them (offsets).
 */
typedef struct gk_expo_restarts {
	int64_t last_seq; /* of the last complete snapshot */
	gk_smap *offsets; /* in force: the gk_expo_src's */
	gk_smap *pending; /* for the first snapshot since a restart */
} gk_expo_restarts;

/* A process's latest snapshot as gk_expo_render reads it: its origin's
 * labels (instance only when with_instance) and r's offsets. */
gk_expo_src gk_expo_src_of(const gk_buf *snap, const gk_expo_origin *o,
    const gk_expo_restarts *r, bool with_instance);

/* Before part `part` of snapshot seq is added; last: the latest complete
 * snapshot as served (with r's offsets), NULL when there is none yet. */
void gk_expo_restarts_part(gk_expo_restarts *r, const gk_expo_src *last,
    int64_t seq, int64_t part);
/* Snapshot seq is complete: true when it is the first since a restart
 * (its offsets are in force now, and an info event of o said so). */
bool gk_expo_restarts_complete(gk_expo_restarts *r, int64_t seq,
    const gk_expo_origin *o);
void gk_expo_restarts_free(gk_expo_restarts *r);

/* Assembling a snapshot from its parts (seq, part, parts). */
typedef struct gk_snapasm {
	gk_buf pend;
	int64_t seq, next, parts;
	uint64_t ts_ms;
	/* Snapshots abandoned because a part was missing, every one (a call
	 * that returns COMPLETE may also have abandoned the one before). */
	uint64_t incomplete;
} gk_snapasm;

enum gk_snapasm_result {
	GK_SNAPASM_PENDING,    /* more parts to come */
	GK_SNAPASM_COMPLETE,   /* *snap now holds the whole snapshot */
	GK_SNAPASM_INCOMPLETE, /* a part was missing: what was held is gone */
	GK_SNAPASM_INVALID,    /* part/parts out of range: ignored */
};

/* The seq, part and parts of a metrics event; false when part and parts
 * are out of range (what gk_snapasm_add calls INVALID). */
bool gk_snap_parts(const gk_event *ev, int64_t *seq, int64_t *part,
    int64_t *parts);
void gk_snapasm_init(gk_snapasm *a);
void gk_snapasm_free(gk_snapasm *a);
/* Feed one metrics event of the process; on COMPLETE, snap is replaced by
 * the snapshot (lines NUL-terminated) and *ts_ms set to its time. */
enum gk_snapasm_result gk_snapasm_add(gk_snapasm *a, const gk_event *ev,
    gk_buf *snap, uint64_t *ts_ms);

/*
 * The interval between a process's snapshots, learnt from their ts: the
 * longest of the last GK_SNAP_GAPS gaps, so that a snapshot written out
 * of turn (on SIGUSR1, or at exit) does not make it look short and its
 * series expire while it lives.
 */
#define GK_SNAP_GAPS 4
typedef struct gk_snap_interval {
	uint64_t last_ts_ms;
	uint64_t gap[GK_SNAP_GAPS];
	unsigned n; /* gaps recorded, all time */
} gk_snap_interval;

/* A snapshot of ts_ms completed. */
void gk_snap_interval_add(gk_snap_interval *iv, uint64_t ts_ms);
/* The interval now: dflt_ms until two snapshots were seen. */
uint64_t gk_snap_interval_ms(const gk_snap_interval *iv, uint64_t dflt_ms);

/* The families and labels gk_expo_render left out (n): counted dropped
 * now, and told in a warning at most once a second with the count since. */
void gk_expo_left_out(gk_export *ex, size_t n);

#endif
