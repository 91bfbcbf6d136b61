/*
 * key.h: per-key state for stages (internal): how a key is taken from a
 * request (-k remote, -k path, -k header:NAME, -k 'jq:EXPR'), and a bounded
 * table of per-key state with least-recently-used eviction.
 */
#ifndef GK_KEY_H
#define GK_KEY_H

#include "gokit.h"

typedef struct gk_key_spec gk_key_spec;

/* Parse a -k value.  NULL with *why set when it is not one. */
gk_key_spec *gk_key_spec_new(const char *spec, const char **why);
void gk_key_spec_free(gk_key_spec *k);
/*
 * Append the key of msg to out.  "remote" is the client's address without
 * its port.  A request without the key (no such header, jq gives null or
 * an error) gets the empty key, and the function returns -1.
 */
int gk_key_of(const gk_key_spec *k, const gk_msg *msg, gk_buf *out);

typedef struct gk_keytable gk_keytable;

/* At most max_keys entries of value_size zeroed bytes each; evict (may be
 * NULL) runs on a value before it is dropped to make room. */
gk_keytable *gk_keytable_new(size_t max_keys, size_t value_size,
    void (*evict)(void *value, void *arg), void *arg);
void gk_keytable_free(gk_keytable *t);
/* The value of key, created (zeroed, *created = true) when absent; the
 * entry becomes the most recently used. */
void *gk_keytable_get(gk_keytable *t, const char *key, size_t len,
    bool *created);
/* The value of key if present, without touching its recency. */
void *gk_keytable_peek(gk_keytable *t, const char *key, size_t len);
size_t gk_keytable_count(const gk_keytable *t);
uint64_t gk_keytable_evictions(const gk_keytable *t);
/* The key of a value handed out by the table. */
const char *gk_keytable_key(const void *value);
/* Visit every entry (order unspecified); fn must not add or remove. */
void gk_keytable_each(gk_keytable *t, void (*fn)(const char *key, void *value,
    void *arg), void *arg);

#endif
