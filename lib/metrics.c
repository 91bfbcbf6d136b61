/*
 * metrics.c: counters, gauges and histograms with labels, and snapshots of
 * them as events.
 *
 * A snapshot is one or more events of type "metrics", each line at most
 * PIPE_BUF - 1 bytes.  Families are split across events, and a family's
 * series across events when needed (its name, type and help repeated in each
 * part); a single series is never split.  All parts of one snapshot share its
 * seq (1, 2, ... per process); a reader holds a complete snapshot when it has
 * parts 1..parts of one seq.
 *
 *   {"ts":"2026-12-04T09:30:00.123456Z","type":"metrics","proc":"gk-listener",
 *    "pid":4242,"svc":"orders","seq":7,"part":1,"parts":2,"metrics":[
 *     {"name":"gk_http_requests_total","type":"counter","help":"Requests.",
 *      "series":[{"labels":{"method":"GET","code":"200"},"value":12}]},
 *     {"name":"gk_http_request_duration_seconds","type":"histogram",
 *      "help":"Latency.","series":[{"labels":{},
 *       "buckets":[[0.005,3],[0.01,5],...,[10,12],["+Inf",12]],
 *       "sum":0.42,"count":12}]}]}
 *
 * - type is "counter", "gauge" or "histogram"; help is "" when none given.
 * - labels holds every label name of the family, in registration order.
 * - value, sum and bucket bounds are JSON numbers (shortest text that reads
 *   back as the same double); a value that is not finite is the string
 *   "NaN", "+Inf" or "-Inf", as Prometheus writes them.
 * - buckets are cumulative (count of observations <= bound), ascending,
 *   ending with ["+Inf",count].
 * - A family with no series yet is written with "series":[].
 * - Every snapshot carries the process metrics: process_cpu_seconds_total
 *   (counter), process_resident_memory_bytes, process_open_fds,
 *   process_start_time_seconds (gauges), and gk_metrics_series_dropped_total
 *   (counter, label "metric": lookups sent to a family's "_overflow" series
 *   because it had GK_METRIC_MAX_SERIES series already).
 *
 * Threads: updates are lock-free atomics; series creation, registration and
 * snapshots take one mutex.  Lookups of an existing series take no lock.
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gokit.h"

#define MAX_LABELS 16
#define MAX_HELP 1024
/* A series is never split across parts: the widest must fit one line
 * (65 buckets of at most 47 bytes, "[-2.2250738585072014e-308,<20 digits>],"). */
#define MAX_BUCKETS 64
#define LINE_MAX_BYTES 4095

struct gk_series {
	gk_metric *m;
	char **values;
	uint64_t hash;
	char *labels_json; /* {"k":"v",...}, made once */
	size_t labels_len;
	_Atomic uint64_t bits;     /* counter or gauge: a double */
	_Atomic uint64_t sum_bits; /* histogram sum: a double */
	_Atomic uint64_t *buckets; /* histogram: nb + 1, not cumulative */
};

struct table {
	size_t mask;
	struct table *retired; /* older tables, kept for lock-free readers */
	_Atomic(gk_series *) slot[];
};

struct gk_metric {
	char *name;
	char *help;
	enum gk_metric_type type;
	size_t nlabels;
	char **label_names;
	double *bounds;
	size_t nb;
	gk_series **series; /* creation order, under lock */
	size_t nseries, cap;
	gk_series *overflow;
	_Atomic(struct table *) table;
	_Atomic(gk_series *) last; /* last hit: repeated lookups are cheap */
	gk_series *unlabelled;
	gk_metric *next;
};

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static gk_metric *families, **families_tail = &families;
static _Atomic uint64_t snapshot_seq;
static gk_metric *dropped_family;

static const double default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,    2.5,   5,    10};

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

static inline uint64_t
d2u(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof u);
	return u;
}

static inline double
u2d(uint64_t u)
{
	double d;
	memcpy(&d, &u, sizeof d);
	return d;
}

static inline void
atomic_add_double(_Atomic uint64_t *a, double v)
{
	uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(
	    a, &old, d2u(u2d(old) + v), memory_order_relaxed,
	    memory_order_relaxed))
		;
}

void
gk_counter_add(gk_series *s, double v)
{
	/* Counters only go up. */
	if (!s || !(v > 0))
		return;
	atomic_add_double(&s->bits, v);
}

void
gk_gauge_set(gk_series *s, double v)
{
	if (s)
		atomic_store_explicit(&s->bits, d2u(v), memory_order_relaxed);
}

void
gk_gauge_add(gk_series *s, double v)
{
	if (s)
		atomic_add_double(&s->bits, v);
}

void
gk_histogram_observe(gk_series *s, double v)
{
	if (!s || !s->buckets)
		return;
	const gk_metric *m = s->m;
	/* First bound >= v (Prometheus "le"); nb is +Inf (and NaN). */
	size_t lo = 0, hi = m->nb;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v <= m->bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
	atomic_add_double(&s->sum_bits, v);
}

double
gk_series_value(const gk_series *s)
{
	if (!s)
		return 0;
	return u2d(atomic_load_explicit(&((gk_series *)s)->bits,
	                                memory_order_relaxed));
}

uint64_t
gk_histogram_count(const gk_series *s)
{
	if (!s || !s->buckets)
		return 0;
	uint64_t n = 0;
	for (size_t i = 0; i <= s->m->nb; i++)
		n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
	return n;
}

/* ------------------------------------------------------------------ */
/* Families                                                            */
/* ------------------------------------------------------------------ */

static bool
valid_name(const char *s, bool colon)
{
	if (!s || !*s)
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          c == '_' || (colon && c == ':') ||
		          (p > s && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

static size_t
split_labels(const char *labels, char **out, const char *metric,
             enum gk_metric_type type)
{
	size_t n = 0;
	if (!labels || !*labels)
		return 0;
	const char *p = labels;
	for (;;) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (n == MAX_LABELS)
			gk_fatal(GK_EXIT_SOFTWARE, "metric %s: too many labels",
			         metric);
		char *name = gk_xmalloc(len + 1);
		memcpy(name, p, len);
		name[len] = 0;
		if (!valid_name(name, false) || !strncmp(name, "__", 2) ||
		    (type == GK_HISTOGRAM && !strcmp(name, "le")))
			gk_fatal(GK_EXIT_SOFTWARE,
			         "metric %s: bad label name '%s'", metric,
			         name);
		for (size_t i = 0; i < n; i++)
			if (!strcmp(out[i], name))
				gk_fatal(GK_EXIT_SOFTWARE,
				         "metric %s: label '%s' given twice",
				         metric, name);
		out[n++] = name;
		if (!c)
			break;
		p = c + 1;
	}
	return n;
}

static gk_series *series_create_locked(gk_metric *m, const char *const *values);

static const char *const type_names[] = {"counter", "gauge", "histogram"};

static gk_metric *
family_new(const char *name, const char *help, const char *labels,
           enum gk_metric_type type, const double *buckets, size_t nbuckets)
{
	if (!valid_name(name, true))
		gk_fatal(GK_EXIT_SOFTWARE, "bad metric name '%s'",
		         name ? name : "(null)");
	char *lnames[MAX_LABELS];
	size_t nl = split_labels(labels, lnames, name, type);

	pthread_mutex_lock(&mlock);
	for (gk_metric *m = families; m; m = m->next) {
		if (strcmp(m->name, name) != 0)
			continue;
		bool same = m->type == type && m->nlabels == nl;
		for (size_t i = 0; same && i < nl; i++)
			same = !strcmp(m->label_names[i], lnames[i]);
		pthread_mutex_unlock(&mlock);
		for (size_t i = 0; i < nl; i++)
			free(lnames[i]);
		if (!same)
			gk_fatal(GK_EXIT_SOFTWARE,
			         "metric %s registered twice, as %s and %s",
			         name, type_names[m->type], type_names[type]);
		return m;
	}

	gk_metric *m = gk_xcalloc(1, sizeof *m);
	m->name = gk_xstrdup(name);
	help = help ? help : "";
	size_t hl = strlen(help);
	if (hl > MAX_HELP)
		hl = MAX_HELP; /* gk_json_quote mends a cut UTF-8 sequence */
	m->help = gk_xmalloc(hl + 1);
	memcpy(m->help, help, hl);
	m->help[hl] = 0;
	m->type = type;
	m->nlabels = nl;
	m->label_names = gk_xcalloc(nl ? nl : 1, sizeof *m->label_names);
	memcpy(m->label_names, lnames, nl * sizeof *lnames);
	if (type == GK_HISTOGRAM) {
		if (!buckets) {
			buckets = default_buckets;
			nbuckets =
			    sizeof default_buckets / sizeof *default_buckets;
		}
		/* +Inf is implicit: drop it when given. */
		while (nbuckets && isinf(buckets[nbuckets - 1]) &&
		       buckets[nbuckets - 1] > 0)
			nbuckets--;
		if (nbuckets > MAX_BUCKETS) {
			pthread_mutex_unlock(&mlock);
			gk_fatal(GK_EXIT_SOFTWARE,
			         "metric %s: %zu buckets, at most %d", name,
			         nbuckets, MAX_BUCKETS);
		}
		for (size_t i = 0; i < nbuckets; i++)
			if (isnan(buckets[i]) ||
			    (i && !(buckets[i] > buckets[i - 1]))) {
				pthread_mutex_unlock(&mlock);
				gk_fatal(GK_EXIT_SOFTWARE,
				         "metric %s: buckets not ascending",
				         name);
			}
		m->nb = nbuckets;
		m->bounds =
		    gk_xmalloc((nbuckets ? nbuckets : 1) * sizeof(double));
		memcpy(m->bounds, buckets, nbuckets * sizeof(double));
	}
	size_t tsize = nl ? 16 : 1;
	struct table *t = gk_xcalloc(1, sizeof *t + tsize * sizeof t->slot[0]);
	t->mask = tsize - 1;
	atomic_init(&m->table, t);
	if (!nl) {
		static const char *const none[1] = {""};
		m->unlabelled = series_create_locked(m, none);
	}
	*families_tail = m;
	families_tail = &m->next;
	pthread_mutex_unlock(&mlock);
	return m;
}

gk_metric *
gk_counter_new(const char *name, const char *help, const char *labels)
{
	return family_new(name, help, labels, GK_COUNTER, NULL, 0);
}

gk_metric *
gk_gauge_new(const char *name, const char *help, const char *labels)
{
	return family_new(name, help, labels, GK_GAUGE, NULL, 0);
}

gk_metric *
gk_histogram_new(const char *name, const char *help, const char *labels,
                 const double *buckets, size_t nbuckets)
{
	return family_new(name, help, labels, GK_HISTOGRAM, buckets, nbuckets);
}

/* ------------------------------------------------------------------ */
/* Series                                                              */
/* ------------------------------------------------------------------ */

static uint64_t
hash_values(const char *const *v, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		for (const unsigned char *p = (const unsigned char *)v[i]; *p;
		     p++)
			h = (h ^ *p) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	return h;
}

static bool
same_values(const gk_series *s, const char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s->values[i], v[i]) != 0)
			return false;
	return true;
}

static gk_series *
table_find(struct table *t, uint64_t h, const char *const *v, size_t n)
{
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		gk_series *s =
		    atomic_load_explicit(&t->slot[i], memory_order_acquire);
		if (!s)
			return NULL;
		if (s->hash == h && same_values(s, v, n))
			return s;
	}
}

static void
table_put(struct table *t, gk_series *s)
{
	size_t i = s->hash & t->mask;
	while (atomic_load_explicit(&t->slot[i], memory_order_relaxed))
		i = (i + 1) & t->mask;
	atomic_store_explicit(&t->slot[i], s, memory_order_release);
}

static gk_series *
series_alloc(gk_metric *m, const char *const *values, uint64_t h)
{
	gk_series *s = gk_xcalloc(1, sizeof *s);
	s->m = m;
	s->hash = h;
	s->values = gk_xcalloc(m->nlabels ? m->nlabels : 1, sizeof *s->values);
	gk_buf lj = {0};
	gk_jw w;
	gk_jw_init(&w, &lj);
	gk_jw_object(&w);
	for (size_t i = 0; i < m->nlabels; i++) {
		s->values[i] = gk_xstrdup(values[i]);
		gk_jw_key(&w, m->label_names[i]);
		gk_jw_cstr(&w, values[i]);
	}
	gk_jw_object_end(&w);
	s->labels_json = lj.data;
	s->labels_len = lj.len;
	if (m->type == GK_HISTOGRAM) {
		s->buckets = gk_xcalloc(m->nb + 1, sizeof *s->buckets);
		for (size_t i = 0; i <= m->nb; i++)
			atomic_init(&s->buckets[i], 0);
	}
	atomic_init(&s->bits, d2u(0));
	atomic_init(&s->sum_bits, d2u(0));
	return s;
}

/* A new series, listed and findable; under mlock. */
static gk_series *
series_create_locked(gk_metric *m, const char *const *values)
{
	uint64_t h = hash_values(values, m->nlabels);
	gk_series *s = series_alloc(m, values, h);
	if (m->nseries == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 8;
		m->series = gk_xrealloc(m->series, m->cap * sizeof *m->series);
	}
	m->series[m->nseries++] = s;
	if (!m->nlabels)
		return s;
	struct table *t = atomic_load_explicit(&m->table, memory_order_relaxed);
	if ((m->nseries + 1) * 2 > t->mask + 1) {
		/* Grow; readers may still be probing t, so it stays. */
		size_t size = (t->mask + 1) * 2;
		struct table *nt =
		    gk_xcalloc(1, sizeof *nt + size * sizeof nt->slot[0]);
		nt->mask = size - 1;
		nt->retired = t;
		for (size_t i = 0; i <= t->mask; i++) {
			gk_series *x = atomic_load_explicit(
			    &t->slot[i], memory_order_relaxed);
			if (x)
				table_put(nt, x);
		}
		atomic_store_explicit(&m->table, nt, memory_order_release);
		t = nt;
	}
	table_put(t, s);
	return s;
}

static void count_dropped(const gk_metric *m);

/* The series of values with what is not UTF-8 replaced as JSON writes it. */
static gk_series *
series_get_mended(gk_metric *m, const char *const *values)
{
	const char *v[MAX_LABELS];
	gk_buf mended[MAX_LABELS];
	gk_buf q = {0};
	for (size_t i = 0; i < m->nlabels; i++) {
		mended[i] = (gk_buf){0};
		gk_buf_reset(&q);
		gk_json_quote(&q, values[i], strlen(values[i]));
		gk_json_string((gk_json){GK_JSON_STRING, q.data, q.len},
		               &mended[i]);
		v[i] = gk_buf_cstr(&mended[i]);
	}
	gk_series *s = gk_series_getv(m, v);
	for (size_t i = 0; i < m->nlabels; i++)
		gk_buf_free(&mended[i]);
	gk_buf_free(&q);
	return s;
}

gk_series *
gk_series_getv(gk_metric *m, const char *const *values)
{
	if (!m)
		return NULL;
	size_t n = m->nlabels;
	if (!n)
		return m->unlabelled;
	gk_series *s = atomic_load_explicit(&m->last, memory_order_acquire);
	if (s && same_values(s, values, n))
		return s;
	uint64_t h = hash_values(values, n);
	s = table_find(atomic_load_explicit(&m->table, memory_order_acquire), h,
	               values, n);
	if (s) {
		atomic_store_explicit(&m->last, s, memory_order_release);
		return s;
	}
	/* Snapshots write a value's bytes that are not UTF-8 as U+FFFD:
	 * such values are looked up as written, so that two of them are
	 * never two series with the same labels.  (Not on the fast path:
	 * a series is created from the mended values.) */
	for (size_t i = 0; i < n; i++)
		if (!gk_utf8_valid(values[i], strlen(values[i])))
			return series_get_mended(m, values);
	bool overflowed = false;
	pthread_mutex_lock(&mlock);
	s = table_find(atomic_load_explicit(&m->table, memory_order_relaxed), h,
	               values, n);
	if (!s) {
		if (m->nseries < GK_METRIC_MAX_SERIES)
			s = series_create_locked(m, values);
		else {
			if (!m->overflow) {
				const char *ov[MAX_LABELS];
				for (size_t i = 0; i < n; i++)
					ov[i] = "_overflow";
				/* Listed for snapshots, never in the table. */
				m->overflow =
				    series_alloc(m, ov, hash_values(ov, n));
			}
			s = m->overflow;
			overflowed = true;
		}
	}
	pthread_mutex_unlock(&mlock);
	if (overflowed)
		count_dropped(m);
	else
		atomic_store_explicit(&m->last, s, memory_order_release);
	return s;
}

gk_series *
gk_series_get(gk_metric *m, ...)
{
	const char *v[MAX_LABELS + 1];
	size_t n = 0;
	va_list ap;
	va_start(ap, m);
	const char *x;
	while ((x = va_arg(ap, const char *))) {
		if (n == MAX_LABELS)
			break;
		v[n++] = x;
	}
	va_end(ap);
	if (!m)
		return NULL;
	if (n != m->nlabels)
		gk_fatal(GK_EXIT_SOFTWARE,
		         "metric %s: %zu label values given, %zu expected",
		         m->name, n, m->nlabels);
	return gk_series_getv(m, v);
}

gk_series *
gk_metric_series(gk_metric *m)
{
	if (m && !m->unlabelled)
		gk_fatal(GK_EXIT_SOFTWARE,
		         "metric %s has labels: use gk_series_get", m->name);
	return m ? m->unlabelled : NULL;
}

static void
ensure_dropped_family(void)
{
	if (!dropped_family)
		dropped_family = gk_counter_new(
		    "gk_metrics_series_dropped_total",
		    "Label sets sent to the _overflow series because a family "
		    "had GK_METRIC_MAX_SERIES series.",
		    "metric");
}

static void
count_dropped(const gk_metric *m)
{
	ensure_dropped_family();
	if (m == dropped_family)
		return;
	const char *v[1] = {m->name};
	gk_counter_add(gk_series_getv(dropped_family, v), 1);
}

/* ------------------------------------------------------------------ */
/* Process metrics                                                     */
/* ------------------------------------------------------------------ */

static struct {
	gk_metric *cpu, *rss, *fds, *start;
	double start_time;
} proc;

static double
realtime_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Epoch seconds of process start, from /proc/self/stat starttime. */
static double
process_start_time(void)
{
	char buf[1024];
	double start = 0;
	FILE *f = fopen("/proc/self/stat", "re");
	if (f) {
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = 0;
		/* comm may hold spaces and parens: fields follow the last ')'.
		 */
		char *p = strrchr(buf, ')');
		unsigned long long ticks = 0;
		int field = 2;
		for (; p && *p && field < 22; p++)
			if (*p == ' ')
				field++;
		if (p && field == 22 && sscanf(p, "%llu", &ticks) == 1) {
			/*
			 * starttime counts clock ticks since boot; now minus
			 * (uptime - starttime) is precise to a tick, where
			 * btime from /proc/stat is whole seconds.
			 */
			struct timespec boot;
			long hz = sysconf(_SC_CLK_TCK);
			if (hz > 0 &&
			    clock_gettime(CLOCK_BOOTTIME, &boot) == 0) {
				double up = (double)boot.tv_sec +
				            (double)boot.tv_nsec / 1e9;
				start = realtime_now() -
				        (up - (double)ticks / (double)hz);
			}
		}
	}
	return start > 0 ? start : realtime_now();
}

static void
ensure_process_metrics(void)
{
	if (proc.cpu)
		return;
	proc.start_time = process_start_time();
	proc.cpu = gk_counter_new(
	    "process_cpu_seconds_total",
	    "Total user and system CPU time spent in seconds.", NULL);
	proc.rss = gk_gauge_new("process_resident_memory_bytes",
	                        "Resident memory size in bytes.", NULL);
	proc.fds = gk_gauge_new("process_open_fds",
	                        "Number of open file descriptors.", NULL);
	proc.start = gk_gauge_new(
	    "process_start_time_seconds",
	    "Start time of the process since unix epoch in seconds.", NULL);
	ensure_dropped_family();
}

static void
update_process_metrics(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		double cpu = (double)ru.ru_utime.tv_sec +
		             (double)ru.ru_utime.tv_usec / 1e6 +
		             (double)ru.ru_stime.tv_sec +
		             (double)ru.ru_stime.tv_usec / 1e6;
		/* A counter set from outside: stored, not added. */
		atomic_store(&proc.cpu->unlabelled->bits, d2u(cpu));
	}
	FILE *f = fopen("/proc/self/statm", "re");
	if (f) {
		unsigned long long size, res;
		if (fscanf(f, "%llu %llu", &size, &res) == 2)
			gk_gauge_set(proc.rss->unlabelled,
			             (double)res *
			                 (double)sysconf(_SC_PAGESIZE));
		fclose(f);
	}
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		long n = 0;
		struct dirent *e;
		while ((e = readdir(d)))
			if (e->d_name[0] != '.')
				n++;
		closedir(d);
		gk_gauge_set(proc.fds->unlabelled,
		             (double)(n - 1)); /* d's own */
	}
	gk_gauge_set(proc.start->unlabelled, proc.start_time);
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

/* Shortest text that reads back as v; non-finite as Prometheus spells it. */
static void
add_number(gk_buf *b, double v)
{
	if (isnan(v)) {
		gk_buf_adds(b, "\"NaN\"");
		return;
	}
	if (isinf(v)) {
		gk_buf_adds(b, v > 0 ? "\"+Inf\"" : "\"-Inf\"");
		return;
	}
	if (v == 0) {
		gk_buf_addc(b, '0'); /* also -0 */
		return;
	}
	if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
		gk_buf_addf(b, "%lld", (long long)v);
		return;
	}
	char tmp[40];
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	gk_buf_adds(b, tmp);
}

static void
family_header(gk_buf *b, const gk_metric *m)
{
	gk_buf_adds(b, "{\"name\":");
	gk_json_quote(b, m->name, strlen(m->name));
	gk_buf_addf(b, ",\"type\":\"%s\",\"help\":", type_names[m->type]);
	gk_json_quote(b, m->help, strlen(m->help));
	gk_buf_adds(b, ",\"series\":[");
}

static void
series_fragment(gk_buf *b, const gk_series *s)
{
	gk_buf_adds(b, "{\"labels\":");
	gk_buf_add(b, s->labels_json, s->labels_len);
	if (!s->buckets) {
		gk_buf_adds(b, ",\"value\":");
		add_number(b, gk_series_value(s));
		gk_buf_addc(b, '}');
		return;
	}
	const gk_metric *m = s->m;
	uint64_t cum = 0;
	gk_buf_adds(b, ",\"buckets\":[");
	for (size_t i = 0; i <= m->nb; i++) {
		cum += atomic_load_explicit(&((gk_series *)s)->buckets[i],
		                            memory_order_relaxed);
		gk_buf_adds(b, i ? ",[" : "[");
		if (i < m->nb)
			add_number(b, m->bounds[i]);
		else
			gk_buf_adds(b, "\"+Inf\"");
		gk_buf_addc(b, ',');
		gk_buf_adduint(b, cum);
		gk_buf_addc(b, ']');
	}
	gk_buf_adds(b, "],\"sum\":");
	add_number(b, u2d(atomic_load_explicit(&((gk_series *)s)->sum_bits,
	                                       memory_order_relaxed)));
	/* count from the same loads as +Inf, so they always agree */
	gk_buf_adds(b, ",\"count\":");
	gk_buf_adduint(b, cum);
	gk_buf_addc(b, '}');
}

struct parts {
	gk_buf *v;
	size_t n;
};

static gk_buf *
part_new(struct parts *p)
{
	p->v = gk_xrealloc(p->v, (p->n + 1) * sizeof *p->v);
	p->v[p->n] = (gk_buf){0};
	return &p->v[p->n++];
}

/* Pack every family into parts of at most budget bytes; under mlock. */
static void
pack_locked(struct parts *p, size_t budget)
{
	gk_buf hdr = {0}, frag = {0};
	gk_buf *cur = part_new(p);
	for (gk_metric *m = families; m; m = m->next) {
		gk_buf_reset(&hdr);
		family_header(&hdr, m);
		size_t total = m->nseries + (m->overflow ? 1 : 0);
		if (!total) {
			size_t need = (cur->len ? 1 : 0) + hdr.len + 2;
			if (cur->len && cur->len + need > budget)
				cur = part_new(p);
			if (cur->len)
				gk_buf_addc(cur, ',');
			gk_buf_add(cur, hdr.data, hdr.len);
			gk_buf_adds(cur, "]}");
			continue;
		}
		bool open = false;
		for (size_t i = 0; i < total; i++) {
			const gk_series *s =
			    i < m->nseries ? m->series[i] : m->overflow;
			gk_buf_reset(&frag);
			series_fragment(&frag, s);
			/* +2: room for the "]}" that closes the family. */
			size_t need =
			    open ? 1 + frag.len + 2
			         : (cur->len ? 1 : 0) + hdr.len + frag.len + 2;
			if (cur->len && cur->len + need > budget) {
				if (open)
					gk_buf_adds(cur, "]}");
				cur = part_new(p);
				open = false;
			}
			if (!open) {
				if (cur->len)
					gk_buf_addc(cur, ',');
				gk_buf_add(cur, hdr.data, hdr.len);
				open = true;
			} else
				gk_buf_addc(cur, ',');
			gk_buf_add(cur, frag.data, frag.len);
		}
		gk_buf_adds(cur, "]}");
	}
	gk_buf_free(&hdr);
	gk_buf_free(&frag);
}

void
gk_metrics_snapshot(void)
{
	ensure_process_metrics();
	update_process_metrics();
	uint64_t seq = atomic_fetch_add(&snapshot_seq, 1) + 1;

	/*
	 * The first event's common members tell how much room is left:
	 * later events differ only in the (fixed-width) ts.
	 */
	gk_jw *w = gk_event_begin("metrics");
	char tail[96];
	int tl =
	    snprintf(tail, sizeof tail,
	             ",\"seq\":%llu,\"part\":%s,\"parts\":%s,\"metrics\":[]}",
	             (unsigned long long)seq, "4294967295", "4294967295");
	size_t overhead = w->out->len + (size_t)tl;
	size_t budget =
	    overhead < LINE_MAX_BYTES ? LINE_MAX_BYTES - overhead : 256;

	struct parts p = {0};
	pthread_mutex_lock(&mlock);
	pack_locked(&p, budget);
	pthread_mutex_unlock(&mlock);

	for (size_t i = 0; i < p.n; i++) {
		if (i)
			w = gk_event_begin("metrics");
		gk_jw_key(w, "seq");
		gk_jw_int(w, (int64_t)seq);
		gk_jw_key(w, "part");
		gk_jw_int(w, (int64_t)i + 1);
		gk_jw_key(w, "parts");
		gk_jw_int(w, (int64_t)p.n);
		gk_jw_key(w, "metrics");
		gk_jw_array(w);
		gk_jw_raw(w, p.v[i].data ? p.v[i].data : "", p.v[i].len);
		gk_jw_array_end(w);
		gk_event_end();
		gk_buf_free(&p.v[i]);
	}
	free(p.v);
}

void
gk_metrics_on_signal(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	(void)arg;
	gk_metrics_snapshot();
}

static void
on_metrics_timer(gk_loop *loop, void *arg)
{
	gk_metrics_timer *m = arg;
	gk_metrics_snapshot();
	gk_timer_start(loop, &m->timer, m->ms, on_metrics_timer, m);
}

void
gk_metrics_every(gk_loop *loop, gk_metrics_timer *m)
{
	const char *e = getenv("GK_METRICS_INTERVAL");
	m->ms = 10000;
	if (e && *e && gk_parse_duration_ms(e, &m->ms) < 0)
		m->ms = 10000;
	if (m->ms)
		gk_timer_start(loop, &m->timer, m->ms, on_metrics_timer, m);
}
