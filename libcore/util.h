/* util.h - small helpers shared by every daemon: randomness, base64,
 * constant-time comparison, a stable hash, mkdir -p, bounded strdup. */
#ifndef XMPPD_UTIL_H
#define XMPPD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fill buf with n bytes from getrandom(2); 0, or -1 with errno set. */
int util_random(void *buf, size_t n);
/* A uniformly random 64-bit value; aborts if the kernel gives no randomness. */
uint64_t util_random_u64(void);
/* Standard base64 with padding, NUL-terminated; the length, 0 if it does not fit (and n > 0). */
size_t util_b64_encode(const unsigned char *in, size_t n, char *out, size_t outsize);
/* Strict base64 decode (RFC 4648 §4, padding required, no whitespace); byte count, -1 if invalid or too big. */
ssize_t util_b64_decode(const char *in, size_t n, unsigned char *out, size_t outsize);
/* Compare n bytes in time independent of their contents; 1 if equal, 0 if not. */
int util_ct_equal(const void *a, const void *b, size_t n);
/* FNV-1a 64 of n bytes: stable forever across builds and machines (shards depend on it). */
uint64_t util_hash64(const void *p, size_t n);
/* Create path and its missing parents like mkdir -p; 0, or -1 with errno set. */
int util_mkdir_p(const char *path, mode_t mode);
/* malloc'd copy of exactly n bytes of p plus a NUL; NULL on OOM. */
char *util_strndup_safe(const char *p, size_t n);

#endif
