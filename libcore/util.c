/* util.c - small shared helpers (see util.h): getrandom(2) wrappers,
 * strict base64, constant-time compare, FNV-1a hash, mkdir -p. */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

int util_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        /* getrandom() may return fewer bytes than asked for large requests
         * or when interrupted by a signal: loop until done. */
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

uint64_t util_random_u64(void)
{
    uint64_t v;
    /* A server that cannot get randomness must not go on with a guessable
     * value (nonces, salts, ids): stop instead. */
    if (util_random(&v, sizeof v) < 0) abort();
    return v;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t util_b64_encode(const unsigned char *in, size_t n, char *out, size_t outsize)
{
    if (n > (SIZE_MAX - 1) / 4 * 3 - 3) return 0;
    size_t need = (n + 2) / 3 * 4;
    if (outsize < need + 1) return 0;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* Value of one base64 alphabet character, -1 for anything else. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

ssize_t util_b64_decode(const char *in, size_t n, unsigned char *out, size_t outsize)
{
    /* RFC 4648 §4 with padding (§3.2), no characters outside the alphabet
     * (§3.3), and only the canonical encoding (§3.5: pad bits zero), so a
     * value has exactly one accepted spelling. */
    if (n % 4 != 0) return -1;
    if (n == 0) return 0;
    size_t pad = 0;
    if (in[n - 1] == '=') pad++;
    if (in[n - 2] == '=') pad++;
    size_t outlen = n / 4 * 3 - pad;
    if (outlen > outsize || outlen > (size_t)SSIZE_MAX) return -1;

    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = (i + 4 == n);
        int v[4];
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && last && (size_t)k >= 4 - pad) {
                v[k] = 0;
                continue;
            }
            v[k] = b64_value(c);
            if (v[k] < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (last && pad == 2) {
            if (w & 0xffff) return -1; /* non-zero pad bits */
            break;
        }
        out[o++] = (unsigned char)(w >> 8);
        if (last && pad == 1) {
            if (w & 0xff) return -1;
            break;
        }
        out[o++] = (unsigned char)w;
    }
    return (ssize_t)o;
}

int util_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++) diff |= x[i] ^ y[i];
    /* 1 when diff is 0, without a data-dependent branch. */
    return (int)(1 & (((unsigned)diff - 1) >> 8));
}

uint64_t util_hash64(const void *p, size_t n)
{
    /* FNV-1a 64 (offset basis and prime from the FNV reference). Never
     * change it: which sm shard owns a user depends on this value. */
    const unsigned char *s = p;
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* mkdir one directory; an existing directory counts as success. */
static int mkdir_one(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0) return 0;
    int saved = errno;
    struct stat st;
    if (saved == EEXIST && stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        errno = ENOTDIR;
        return -1;
    }
    errno = saved;
    return -1;
}

int util_mkdir_p(const char *path, mode_t mode)
{
    int rc = -1;
    char *copy = NULL;
    if (!path || !*path) {
        errno = EINVAL;
        goto out;
    }
    copy = strdup(path);
    if (!copy) goto out;
    /* Parents get at least u+wx so that the next level can be created
     * inside them, as mkdir -p does. */
    mode_t parent_mode = mode | S_IWUSR | S_IXUSR;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/') continue;
        if (p[-1] == '/') continue; /* "a//b" */
        *p = '\0';
        int r = mkdir_one(copy, parent_mode);
        *p = '/';
        if (r < 0) goto out;
    }
    rc = mkdir_one(copy, mode);
out:
    if (copy) {
        int saved = errno;
        free(copy);
        errno = saved;
    }
    return rc;
}

char *util_strndup_safe(const char *p, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}
