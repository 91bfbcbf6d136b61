/*
 * tracecontext.h: W3C Trace Context and B3 propagation (internal): parsing
 * traceparent, b3 and X-B3-* into one context, making ids, formatting.
 */
#ifndef GK_TRACECONTEXT_H
#define GK_TRACECONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gk_trace_ctx {
	uint8_t trace_id[16];
	uint8_t span_id[8];
	bool sampled;
	bool sampled_known; /* the caller decided (B3 may leave it open) */
	bool debug;         /* B3 "d" / X-B3-Flags: 1 */
	bool random;        /* W3C Level 2: the trace id's right 7 bytes are */
} gk_trace_ctx;

/*
 * traceparent (W3C, version 00 exactly; higher versions read by their
 * 00 prefix, as the spec asks; ff, all-zero ids, bad hex: invalid).
 * Returns 0 or -1.
 */
int gk_traceparent_parse(const char *s, size_t n, gk_trace_ctx *c);
/* b3 single header: {trace}-{span}[-{sampling}[-{parent}]] or a lone
 * sampling state "0", "1", "d" (then -1 with *sampling_only filled). */
int gk_b3_parse(const char *s, size_t n, gk_trace_ctx *c, int *sampling_only);
/* X-B3-TraceId (16 or 32 hex; 16 is left-padded), X-B3-SpanId,
 * X-B3-Sampled, X-B3-Flags; any may be NULL. */
int gk_b3_multi_parse(const char *trace, const char *span, const char *sampled,
    const char *flags, gk_trace_ctx *c);
/* The same with each value's length given (they need no NUL), and
 * X-B3-ParentSpanId (NULL when absent; 16 hex when present); without
 * either id, a valid X-B3-Sampled or X-B3-Flags alone is a decision: -1
 * with *sampling_only filled, as gk_b3_parse does for a lone "0". */
int gk_b3_multi_parsen(const char *trace, size_t tn, const char *span,
    size_t sn, const char *parent, size_t pn, const char *sampled, size_t smn,
    const char *flags, size_t fn, gk_trace_ctx *c, int *sampling_only);

/*
 * tracestate (W3C Trace Context, the key grammar of Level 1): the list in
 * s..n checked, and written into out (n bytes at most) without optional
 * whitespace or empty members; *outlen 0 is a list of none.  -1 for an
 * invalid list (a key or value outside the grammar, more than 32 members,
 * a key twice), which is dropped whole.
 */
int gk_tracestate_clean(const char *s, size_t n, char *out, size_t *outlen);

/* "00-<32 hex>-<16 hex>-<01|00>" into out (56 bytes with NUL). */
void gk_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8],
    bool sampled, char out[56]);
/* The same with the flags known to W3C Trace Context Level 2 (sampled,
 * random-trace-id) of flags; the others are written zero. */
void gk_traceparent_format_flags(const uint8_t trace_id[16],
    const uint8_t span_id[8], uint8_t flags, char out[56]);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void gk_hex(const uint8_t *p, size_t n, char *out);
bool gk_id_zero(const uint8_t *p, size_t n);
/* Random non-zero ids (xoshiro256** seeded from getrandom). */
void gk_random_id(uint8_t *p, size_t n);
/* Uniform in [0, 1). */
double gk_random_unit(void);

#endif
