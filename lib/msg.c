/* msg.c: wire messages that own their line, read and changed in place. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gokit.h"
#include "log_gate.h"
#include "runtime.h"

/*
 * Freed messages are kept for reuse: the index makes a message ~3 KiB, past
 * malloc's per-thread cache, and a stage makes two messages a request, and
 * each stage fused below it one more (stage.c).  A loop turn frees those of
 * a batch of answers before it makes those of the next batch of requests,
 * 200 requests in flight a thousand messages: up to SPARE_MAX are kept, the
 * line buffers of those past SPARE_LINES_MAX only when small, and once a
 * period passes without a message made (gk__msg_trim) only SPARE_LINES_MAX.
 */
#define SPARE_MAX 1024
#define SPARE_LINES_MAX 64
#define SPARE_SMALL_LINE 4096
static _Thread_local gk_msg *spare[SPARE_MAX];
static _Thread_local unsigned nspare;

/* One line buffer kept for gk_msg_set, when no larger than this. */
#define SPARE_LINE_MAX 16384
static _Thread_local gk_buf set_spare;

static _Thread_local uint64_t nmade; /* messages made, for gk__msg_trim */

static gk_msg *
msg_alloc(void)
{
	nmade++;
	if (nspare)
		return spare[--nspare];
	/* Not zeroed: the parse writes the part of the index it uses. */
	gk_msg *m = gk_xmalloc(sizeof *m);
	m->line = (gk_buf){0};
	return m;
}

gk_msg *
gk_msg_new(const char *line, size_t len, gk_wire_error *err)
{
	gk_msg *m = msg_alloc();
	m->line.len = 0;
	gk_buf_add(&m->line, line, len);
	if (gk_wire_parse(&m->wire, m->line.data ? m->line.data : "", len,
	    err) < 0) {
		gk_msg_free(m);
		return NULL;
	}
	return m;
}

/* An empty message (its line buffer recycled) for a caller that writes the
 * line and its index itself. */
gk_msg *
gk__msg_blank(void)
{
	gk_msg *m = msg_alloc();
	m->line.len = 0;
	m->wire.line = "";
	m->wire.len = 0;
	m->wire.nfields = 0;
	m->wire.escaped = 0;
	return m;
}

gk_msg *
gk_msg_adopt(gk_buf *line, gk_wire_error *err)
{
	gk_msg *m = msg_alloc();
	gk_buf_free(&m->line);
	m->line = *line;
	*line = (gk_buf){0};
	if (gk_wire_parse(&m->wire, m->line.data ? m->line.data : "",
	    m->line.len, err) < 0) {
		gk_msg_free(m);
		return NULL;
	}
	return m;
}

/* A copy of m, line and index, without parsing it again: what a fused
 * stage forwards to the stage below it (stage.c). */
gk_msg *
gk__msg_copy(const gk_msg *m)
{
	gk_msg *c = msg_alloc();
	c->line.len = 0;
	/* Room for what a stage adds (gk-tracer's trace member and header):
	 * set in place, not moved. */
	gk_buf_reserve(&c->line, m->line.len + 512);
	gk_buf_add(&c->line, m->line.data, m->line.len);
	const char *ob = m->wire.line, *nb = c->line.data ? c->line.data : "";
	c->wire.line = nb;
	c->wire.len = m->wire.len;
	c->wire.nfields = m->wire.nfields;
	c->wire.escaped = m->wire.escaped;
	for (unsigned i = 0; i < m->wire.nfields; i++) {
		const gk_wire_field *f = &m->wire.field[i];
		gk_wire_field *g = &c->wire.field[i];
		*g = *f;
		g->key.p = nb + (f->key.p - ob);
		g->value.p = nb + (f->value.p - ob);
	}
	return c;
}

void
gk__msg_trim(void)
{
	static _Thread_local uint64_t seen;
	if (nmade == seen)
		while (nspare > SPARE_LINES_MAX) {
			gk_msg *m = spare[--nspare];
			gk_buf_free(&m->line);
			free(m);
		}
	seen = nmade;
}

void
gk_msg_free(gk_msg *m)
{
	if (!m)
		return;
	if (nspare < SPARE_MAX && m->line.cap <= 16384) {
		if (nspare >= SPARE_LINES_MAX && m->line.cap > SPARE_SMALL_LINE)
			gk_buf_free(&m->line);
		m->line.len = 0;
		spare[nspare++] = m;
		return;
	}
	gk_buf_free(&m->line);
	free(m);
}

gk_json
(gk_msg_get)(const gk_msg *m, const char *key)
{
	return gk_wire_get(&m->wire, key);
}

int
gk_msg_status(const gk_msg *m)
{
	int64_t v;
	gk_json s = gk_wire_get(&m->wire, "status");
	/* Three plain digits, nearly always: read at once (the listener
	 * asks three times an answer). */
	if (s.type == GK_JSON_NUMBER && s.len == 3) {
		unsigned a = (unsigned char)s.p[0] - '1',
		    b = (unsigned char)s.p[1] - '0', c = (unsigned char)s.p[2] - '0';
		if (a < 9 && b < 10 && c < 10)
			return (int)((a + 1) * 100 + b * 10 + c);
	}
	if (!gk_json_int(s, &v))
		return 0;
	return v >= 100 && v <= 999 ? (int)v : 0;
}

gk_json
gk__msg_header_value(const gk_msg *m, const char *name)
{
	gk_json h = gk_wire_get(&m->wire, "headers");
	gk_json v = gk_json_member(h, name);
	/* The wire's names are lowercase; a caller's need not be (HTTP's
	 * are case-blind): "Content-Type" finds content-type.  Lowercased
	 * only when not found as given, so that the usual lowercase name
	 * (a -k header: key, per request) costs nothing more. */
	char low[256];
	size_t n;
	if (v.type == GK_JSON_NONE && (n = strlen(name)) < sizeof low) {
		bool upper = false;
		for (size_t i = 0; i <= n; i++) {
			upper |= name[i] >= 'A' && name[i] <= 'Z';
			low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z'
			    ? name[i] + 32 : name[i]);
		}
		if (upper)
			v = gk_json_member(h, low);
	}
	if (v.type == GK_JSON_ARRAY) {
		/* A repeated header: its first value. */
		gk_json_iter it;
		gk_json_iter_init(&it, v);
		if (!gk_json_iter_next(&it, NULL, &v))
			return (gk_json){0};
	}
	return v;
}

int
gk_msg_header(const gk_msg *m, const char *name, gk_buf *out)
{
	return gk_json_string(gk__msg_header_value(m, name), out);
}

int
gk_msg_body(const gk_msg *m, gk_buf *out, const char **why)
{
	gk_json b = gk_wire_get(&m->wire, "body");
	gk_json b64 = gk_wire_get(&m->wire, "body_b64");
	if (b.type != GK_JSON_NONE && b64.type != GK_JSON_NONE) {
		*why = "both body and body_b64";
		return -1;
	}
	if (b.type != GK_JSON_NONE) {
		if (gk_json_string(b, out) < 0) {
			*why = "body is not a string";
			return -1;
		}
		return 0;
	}
	if (b64.type == GK_JSON_NONE)
		return 0;
	/* Unescaped first: a writer may send '/' as "\/" (PHP does). */
	size_t len = out->len, n;
	const char *p;
	gk_buf tmp = {0};
	int r = gk__json_text(b64, &tmp, &p, &n);
	if (r >= 0)
		r = gk_base64_decode(out, p, n);
	gk_buf_free(&tmp);
	if (r < 0) {
		out->len = len;
		*why = "invalid body_b64";
		return -1;
	}
	return 0;
}

/* wire.c: a value validated at the depth of a top-level member; a splice
 * at a member's index already found. */
int gk__json_validate_member(const char *s, size_t len, gk_wire_error *err);
void gk__wire_splice_at(const gk_wire_msg *m, int i, const char *key,
    size_t klen, const char *raw, size_t rawlen, gk_buf *out);

/* A bug in the calling stage: never send a broken line on. */
static void
misuse(const char *what, const char *key)
{
	static const char pre[] = "gokit: gk_msg_set: ";
	(void)!write(2, pre, sizeof pre - 1);
	(void)!write(2, what, strlen(what));
	(void)!write(2, ": ", 2);
	(void)!write(2, key, strlen(key));
	(void)!write(2, "\n", 1);
	abort();
}

static inline bool
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* The checks gk_msg_set makes of what it is given. */
static void
check_member(const char *key, size_t klen, const char *raw, size_t rawlen)
{
	gk_wire_error e;
	/* Checked at the depth of a member, so that the line needs no new
	 * pass: the index moves by a known amount. */
	if (gk__json_validate_member(raw, rawlen, &e) < 0)
		misuse(strcmp(e.reason, "too deep") == 0 &&
		    gk_json_validate(raw, rawlen, &e) == 0 ? "too deep" :
		    "invalid JSON value", key);
	if (!gk_utf8_valid(key, klen))
		misuse("key is not UTF-8", key);
}

static void set_member(gk_msg *m, const char *key, size_t klen,
    const char *raw, size_t rawlen);

static pthread_once_t full_once = PTHREAD_ONCE_INIT;
static gk_metric *full_family;
static _Thread_local gk_log_gate full_gate;

static void
full_init(void)
{
	full_family = gk_counter_new(
	    "gk_wire_members_dropped_total",
	    "Members a stage set on a message already at the wire's 64, "
	    "left out so that the next stage can read the line",
	    "key");
}

/*
 * A new member would make the line one the next stage rejects (more than
 * GK_WIRE_MAX_FIELDS members): the line stays as it was, and that is
 * counted and logged (once a second, with a count) rather than silent.
 */
static void
members_full(const char *key)
{
	pthread_once(&full_once, full_init);
	const char *v[1] = {key};
	gk_counter_add(gk_series_getv(full_family, v), 1);
	uint64_t held;
	if (!gk_log_gate_pass(&full_gate, &held))
		return;
	char f1[160], f2[64];
	snprintf(f1, sizeof f1, "key=%s", key);
	snprintf(f2, sizeof f2, "count=%llu", (unsigned long long)(held + 1));
	gk_log(GK_ERROR, "message at 64 members: member not added", f1, f2);
}

void
gk_msg_set(gk_msg *m, const char *key, const char *raw, size_t rawlen)
{
	size_t klen = strlen(key);
	check_member(key, klen, raw, rawlen);
	set_member(m, key, klen, raw, rawlen);
}

/*
 * For the library's own stages, whose value is built only of members of a
 * validated line and text they quoted themselves: the check is the largest
 * part of a set, and cannot fail.  Sanitizer builds (the test suite's
 * `make asan`) check all the same.
 */
void
gk__msg_set_trusted(gk_msg *m, const char *key, const char *raw,
    size_t rawlen)
{
	size_t klen = strlen(key);
#if defined(__SANITIZE_ADDRESS__)
	check_member(key, klen, raw, rawlen);
#endif
	set_member(m, key, klen, raw, rawlen);
}

/*
 * The set made inside the line's own buffer, when it has the room and raw
 * is not in it: nothing before the member moves, so only the members after
 * it are re-indexed, and an append re-indexes none.  lead and vlen place
 * the value inside raw.
 */
static bool
set_in_place(gk_msg *m, int i, const char *key, size_t klen, const char *raw,
    size_t rawlen, size_t lead, size_t vlen)
{
	gk_wire_msg *w = &m->wire;
	char *l = m->line.data;
	size_t len = w->len, cap = m->line.cap;
	uintptr_t r = (uintptr_t)raw, b = (uintptr_t)l;
	if (!l || w->line != l || len != m->line.len || (r >= b && r < b + cap))
		return false;
	if (i >= 0) {
		gk_wire_field *f = &w->field[i];
		char *vp = l + (f->value.p - l);
		size_t old = f->value.len, after = len - (size_t)(vp + old - l);
		if (len - old + rawlen >= cap)
			return false;
		memmove(vp + rawlen, vp + old, after);
		memcpy(vp, raw, rawlen);
		for (unsigned j = (unsigned)i + 1; j < w->nfields; j++) {
			w->field[j].key.p = w->field[j].key.p - old + rawlen;
			w->field[j].value.p = w->field[j].value.p - old + rawlen;
		}
		f->value = (gk_json){gk_json_type_of(raw[lead]), vp + lead, vlen};
		w->len = m->line.len = len - old + rawlen;
		return true;
	}
	/* Appended as `,"key":raw` before the closing brace; a key that
	 * quoting would change goes the other way. */
	for (size_t k = 0; k < klen; k++) {
		unsigned char c = (unsigned char)key[k];
		if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80)
			return false;
	}
	size_t brace = len;
	while (brace > 0 && is_ws(l[brace - 1]))
		brace--;
	if (brace > 0)
		brace--;
	size_t comma = w->nfields ? 1 : 0, ins = comma + klen + 3 + rawlen;
	if (len + ins >= cap)
		return false;
	memmove(l + brace + ins, l + brace, len - brace);
	char *o = l + brace;
	if (comma)
		*o++ = ',';
	*o++ = '"';
	memcpy(o, key, klen);
	o += klen;
	*o++ = '"';
	*o++ = ':';
	memcpy(o, raw, rawlen);
	gk_wire_field *f = &w->field[w->nfields++];
	f->key = (gk_json){GK_JSON_STRING, l + brace + comma, klen + 2};
	f->value = (gk_json){gk_json_type_of(raw[lead]), o + lead, vlen};
	w->len = m->line.len = len + ins;
	return true;
}

static void
set_member(gk_msg *m, const char *key, size_t klen, const char *raw,
    size_t rawlen)
{
	gk_wire_msg *w = &m->wire;
	int i = gk__wire_find(w, key, klen);
	if (i < 0 && w->nfields == GK_WIRE_MAX_FIELDS) {
		members_full(key);
		return;
	}

	/* The value's span inside raw, without surrounding whitespace. */
	size_t lead = 0, vlen = rawlen;
	while (is_ws(raw[lead]))
		lead++, vlen--;
	while (is_ws(raw[lead + vlen - 1]))
		vlen--;
	if (set_in_place(m, i, key, klen, raw, rawlen, lead, vlen))
		return;

	/* The new line goes into the buffer an earlier set left over, and
	 * the old line's buffer is kept for the next: no allocation a set
	 * once lines have reached their size. */
	gk_buf nb = set_spare;
	set_spare = (gk_buf){0};
	nb.len = 0;
	gk__wire_splice_at(w, i, key, klen, raw, rawlen, &nb);

	/* Re-index without a pass: every span moves by a known amount. */
	const char *ob = m->line.data, *nbase = nb.data;
	size_t oldv = i >= 0 ? w->field[i].value.len : 0;
	for (unsigned j = 0; j < w->nfields; j++) {
		gk_wire_field *f = &w->field[j];
		size_t ko = (size_t)(f->key.p - ob), vo = (size_t)(f->value.p - ob);
		if (i >= 0 && j > (unsigned)i) {
			ko = ko - oldv + rawlen;
			vo = vo - oldv + rawlen;
		}
		f->key.p = nbase + ko;
		f->value.p = nbase + vo;
		if (i >= 0 && j == (unsigned)i) {
			f->value.p += lead;
			f->value.len = vlen;
			f->value.type = gk_json_type_of(raw[lead]);
		}
	}
	if (i < 0) {
		/* Appended as `,"key":raw` (no comma for the first member)
		 * before the closing brace; the old tail from that brace on
		 * ends the new line. */
		size_t tail = w->len;
		while (tail > 0 && is_ws(ob[tail - 1]))
			tail--;
		tail = w->len - (tail - 1);
		size_t qlen = nb.len - w->len - rawlen - 1 - (w->nfields ? 1 : 0);
		const char *kp = nbase + nb.len - tail - rawlen - 1 - qlen;
		if (qlen != klen + 2) /* the quoted key holds an escape */
			w->escaped |= 1ull << w->nfields;
		gk_wire_field *f = &w->field[w->nfields++];
		f->key = (gk_json){GK_JSON_STRING, kp, qlen};
		f->value = (gk_json){gk_json_type_of(raw[lead]), kp + qlen + 1 + lead,
		    vlen};
	}
	if (m->line.cap <= SPARE_LINE_MAX)
		set_spare = m->line;
	else
		gk_buf_free(&m->line);
	m->line = nb;
	w->line = nb.data;
	w->len = nb.len;
}

void
gk_msg_set_cstr(gk_msg *m, const char *key, const char *value)
{
	gk_buf b = {0};
	if (value)
		gk_json_quote(&b, value, strlen(value));
	else
		gk_buf_adds(&b, "null");
	gk_msg_set(m, key, b.data, b.len);
	gk_buf_free(&b);
}
