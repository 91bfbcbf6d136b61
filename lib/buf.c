/* buf.c: growable byte buffers and allocation that cannot fail. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gokit.h"

static void
out_of_memory(void)
{
	static const char msg[] = "gokit: fatal: out of memory\n";
	(void)!write(2, msg, sizeof msg - 1);
	_exit(GK_EXIT_NOMEM);
}

void *
gk_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *
gk_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *
gk_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

char *
gk_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(gk_xmalloc(n), s, n);
}

void
(gk_buf_reserve)(gk_buf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len <= extra)
		cap *= 2;
	b->data = gk_xrealloc(b->data, cap);
	b->cap = cap;
}

void
(gk_buf_add)(gk_buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	gk_buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
(gk_buf_addc)(gk_buf *b, char c)
{
	gk_buf_reserve(b, 1);
	b->data[b->len++] = c;
}

void
gk_buf_adds(gk_buf *b, const char *s)
{
	gk_buf_add(b, s, strlen(s));
}

void
gk_buf_addf(gk_buf *b, const char *fmt, ...)
{
	va_list ap;
	gk_buf_reserve(b, 64);
	va_start(ap, fmt);
	int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		gk_buf_reserve(b, (size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void
gk_buf_adduint(gk_buf *b, uint64_t v)
{
	/* Two digits a step (timestamps in µs have 16), written in place
	 * once the count is known. */
#define D10(x) #x "0" #x "1" #x "2" #x "3" #x "4" #x "5" #x "6" #x "7" \
	#x "8" #x "9"
	static const char pairs[201] = D10(0) D10(1) D10(2) D10(3) D10(4)
	    D10(5) D10(6) D10(7) D10(8) D10(9);
#undef D10
	static const uint64_t pow10[20] = {1ull, 10ull, 100ull, 1000ull,
	    10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
	    1000000000ull, 10000000000ull, 100000000000ull,
	    1000000000000ull, 10000000000000ull, 100000000000000ull,
	    1000000000000000ull, 10000000000000000ull,
	    100000000000000000ull, 1000000000000000000ull,
	    10000000000000000000ull};
	/* log10 from the bit length (1233/4096 is just above log10 2),
	 * then one compare: the number of digits. */
	unsigned bits = 64 - (unsigned)__builtin_clzll(v | 1);
	unsigned n = (bits * 1233) >> 12;
	n += n < 20 && v >= pow10[n];
	if (n == 0)
		n = 1;
	gk_buf_reserve(b, n);
	char *o = b->data + b->len + n;
	b->len += n;
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		o -= 2;
		memcpy(o, pairs + 2 * r, 2);
	}
	if (v >= 10)
		memcpy(o - 2, pairs + 2 * v, 2);
	else
		o[-1] = (char)('0' + v);
}

void
gk_buf_consume(gk_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void
gk_buf_reset(gk_buf *b)
{
	b->len = 0;
}

void
gk_buf_free(gk_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *
gk_buf_cstr(gk_buf *b)
{
	gk_buf_reserve(b, 1);
	b->data[b->len] = 0;
	return b->data;
}
