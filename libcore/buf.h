/* buf.h - a growable byte buffer; the one way xmppd builds output. */
#ifndef XMPPD_BUF_H
#define XMPPD_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* set once an allocation failed; later appends are ignored */
};

/* Make room for n more bytes; 0 or -1 (and oom set). */
int buf_reserve(struct buf *b, size_t n);
/* Append n bytes. */
void buf_add(struct buf *b, const void *p, size_t n);
/* Append a NUL-terminated string. */
void buf_adds(struct buf *b, const char *s);
/* Append printf-formatted text. */
void buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s with XML escaping of & < > ' " (for attribute values and text). */
void buf_add_xml_escaped(struct buf *b, const char *s, size_t n);
/* Append little-endian integers. */
void buf_add_u16(struct buf *b, uint16_t v);
void buf_add_u32(struct buf *b, uint32_t v);
void buf_add_u64(struct buf *b, uint64_t v);
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Keep the memory, forget the contents. */
static inline void buf_clear(struct buf *b) { b->len = 0; b->oom = 0; }
/* Free the memory. */
void buf_free(struct buf *b);
/* NUL-terminate (not counted in len) and return data ("" if empty). */
const char *buf_cstr(struct buf *b);

#endif
