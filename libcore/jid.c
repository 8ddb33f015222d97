/* jid.c - XMPP addresses per RFC 6122 (see jid.h): split a JID at its
 * separators, prepare each part with libidn's stringprep profiles
 * (Nodeprep, Nameprep, Resourceprep), check the limits, format it back. */
#include "config.h"
#include "jid.h"
#include "util.h"

#include <arpa/inet.h>
#include <idna.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

/* Raw (unprepared) bytes accepted for one part. The RFC 6122 §2.1 limit of
 * 1023 bytes applies after preparation, which can only shrink a string by
 * dropping "mapped to nothing" characters or composing; this cap keeps a
 * hostile input from buying unbounded stringprep work. */
#define JID_RAW_PART_MAX (4 * JID_PART_MAX)

/* Prepare len bytes of in with a stringprep profile into out (size bytes).
 * The result must be 1..JID_PART_MAX bytes. Unassigned code points are
 * allowed (RFC 3454 §7 "query" semantics): JIDs of remote entities may use
 * characters newer than Unicode 3.2, emoji in resources above all. */
static int prep_part(const char *in, size_t len, const char *profile, char *out, size_t size)
{
    int rc = -1;
    char *tmp = NULL, *res = NULL;
    if (len == 0 || len > JID_RAW_PART_MAX) goto out;
    /* stringprep works on C strings: an embedded NUL would silently cut. */
    if (memchr(in, '\0', len)) goto out;
    tmp = util_strndup_safe(in, len);
    if (!tmp) goto out;
    /* libidn rejects invalid UTF-8 (overlong forms, surrogates, values
     * above U+10FFFF, truncated sequences) with STRINGPREP_ICONV_ERROR. */
    if (stringprep_profile(tmp, &res, profile, 0) != STRINGPREP_OK) goto out;
    size_t n = strlen(res);
    if (n == 0 || n > JID_PART_MAX || n >= size) goto out;
    memcpy(out, res, n + 1);
    rc = 0;
out:
    free(tmp);
    free(res);
    return rc;
}

/* "[IPv6]" literal (RFC 6122 §2.2, IP-literal of RFC 3986 §3.2.2): checked
 * with inet_pton and kept as written except for lowercase hex digits. */
static int prep_ipv6_literal(const char *in, size_t len, char *out, size_t size)
{
    char addr[INET6_ADDRSTRLEN + 1];
    unsigned char bin[16];
    if (len < 3 || in[len - 1] != ']') return -1;
    size_t alen = len - 2;
    if (alen >= sizeof addr || len >= size) return -1;
    memcpy(addr, in + 1, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET6, addr, bin) != 1) return -1;
    out[0] = '[';
    for (size_t i = 0; i < alen; i++) {
        char c = addr[i];
        out[i + 1] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    out[alen + 1] = ']';
    out[alen + 2] = '\0';
    return 0;
}

/* Length of an IDNA2003 label separator at p (RFC 3490 §3.1: U+002E,
 * U+3002, U+FF0E, U+FF61), 0 if there is none. */
static size_t dot_len(const unsigned char *p, size_t left)
{
    if (left >= 1 && p[0] == '.') return 1;
    if (left >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x82) return 3;
    if (left >= 3 && p[0] == 0xEF && p[1] == 0xBC && p[2] == 0x8E) return 3;
    if (left >= 3 && p[0] == 0xEF && p[1] == 0xBD && p[2] == 0xA1) return 3;
    return 0;
}

/* Prepare a domainpart (RFC 6122 §2.2) into out. */
static int prep_domain(const char *in, size_t len, char *out, size_t size)
{
    int rc = -1;
    char *tmp = NULL, *res = NULL, *ace = NULL;
    unsigned char v4[4];
    if (len == 0 || len > JID_RAW_PART_MAX) goto out;
    if (memchr(in, '\0', len)) goto out;
    if (in[0] == '[') {
        rc = prep_ipv6_literal(in, len, out, size);
        goto out;
    }

    /* Map every label separator to '.', then strip one final dot: §2.2
     * says a trailing label separator MUST be stripped before the JID is
     * used for routing or comparison. */
    tmp = malloc(len + 1);
    if (!tmp) goto out;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t d = dot_len((const unsigned char *)in + i, len - i);
        if (d) {
            tmp[n++] = '.';
            i += d;
        } else {
            tmp[n++] = in[i++];
        }
    }
    if (n > 0 && tmp[n - 1] == '.') n--;
    tmp[n] = '\0';
    if (n == 0) goto out;

    /* IPv4address: taken as is. */
    if (inet_pton(AF_INET, tmp, v4) == 1) {
        if (n >= size) goto out;
        memcpy(out, tmp, n + 1);
        rc = 0;
        goto out;
    }

    /* ifqdn: Nameprep (which lowercases), then every label must be
     * non-empty and pass IDNA2003 ToASCII with UseSTD3ASCIIRules (letters,
     * digits, hyphens, no hyphen at either end, 1..63 octets in ACE form). */
    if (stringprep_profile(tmp, &res, "Nameprep", 0) != STRINGPREP_OK) goto out;
    size_t rlen = strlen(res);
    if (rlen == 0 || rlen > JID_PART_MAX || rlen >= size) goto out;
    if (res[0] == '.' || res[rlen - 1] == '.' || strstr(res, "..")) goto out;
    if (idna_to_ascii_8z(res, &ace, IDNA_USE_STD3_ASCII_RULES | IDNA_ALLOW_UNASSIGNED) != IDNA_SUCCESS)
        goto out;
    for (const char *l = ace; *l;) {
        const char *e = strchr(l, '.');
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        if (ll == 0 || ll > 63) goto out;
        l += ll + (e ? 1 : 0);
    }
    memcpy(out, res, rlen + 1);
    rc = 0;
out:
    free(tmp);
    free(res);
    free(ace);
    return rc;
}

int jid_parse(const char *s, size_t len, struct jid *out)
{
    int rc = -1;
    if (!out) return -1;
    out->local[0] = out->domain[0] = out->resource[0] = '\0';
    out->has_local = out->has_resource = 0;
    if (!s) goto out;

    /* RFC 6122 §2.1: jid = [ localpart "@" ] domainpart [ "/" resourcepart ].
     * The separators are found before any preparation (§2.1 implementation
     * note: U+FE6B could otherwise decompose to '@'). The first '/' starts
     * the resourcepart, which may itself contain '@' and '/'; an '@' before
     * that '/' ends the localpart. */
    const char *slash = memchr(s, '/', len);
    size_t head = slash ? (size_t)(slash - s) : len;
    const char *at = memchr(s, '@', head);
    const char *dom = at ? at + 1 : s;
    size_t dom_len = head - (size_t)(dom - s);

    if (at) {
        if (prep_part(s, (size_t)(at - s), "Nodeprep", out->local, sizeof out->local) < 0) goto out;
        out->has_local = 1;
    }
    if (prep_domain(dom, dom_len, out->domain, sizeof out->domain) < 0) goto out;
    if (slash) {
        if (prep_part(slash + 1, len - head - 1, "Resourceprep", out->resource,
                      sizeof out->resource) < 0)
            goto out;
        out->has_resource = 1;
    }
    rc = 0;
out:
    if (rc < 0) {
        out->local[0] = out->domain[0] = out->resource[0] = '\0';
        out->has_local = out->has_resource = 0;
    }
    return rc;
}

int jid_format_bare(const struct jid *j, char *out, size_t size)
{
    if (!j || !out) return -1;
    size_t ll = j->has_local ? strnlen(j->local, sizeof j->local) : 0;
    size_t dl = strnlen(j->domain, sizeof j->domain);
    if (dl == 0 || dl > JID_PART_MAX) return -1;
    if (j->has_local && (ll == 0 || ll > JID_PART_MAX)) return -1;
    size_t total = (j->has_local ? ll + 1 : 0) + dl;
    if (total >= size) return -1;
    char *p = out;
    if (j->has_local) {
        memcpy(p, j->local, ll);
        p += ll;
        *p++ = '@';
    }
    memcpy(p, j->domain, dl);
    p[dl] = '\0';
    return 0;
}

int jid_format_full(const struct jid *j, char *out, size_t size)
{
    if (jid_format_bare(j, out, size) < 0) return -1;
    if (!j->has_resource) return 0;
    size_t bl = strlen(out);
    size_t rl = strnlen(j->resource, sizeof j->resource);
    if (rl == 0 || rl > JID_PART_MAX || bl + 1 + rl >= size) {
        out[0] = '\0';
        return -1;
    }
    out[bl] = '/';
    memcpy(out + bl + 1, j->resource, rl);
    out[bl + 1 + rl] = '\0';
    return 0;
}

int jid_normalize(const char *s, size_t len, char *out, size_t size)
{
    struct jid j;
    if (jid_parse(s, len, &j) < 0) return -1;
    return jid_format_full(&j, out, size);
}

int jid_bare_of(const char *jid, size_t len, char *out, size_t size)
{
    if (!jid || !out) return -1;
    const char *slash = memchr(jid, '/', len);
    size_t bl = slash ? (size_t)(slash - jid) : len;
    if (bl == 0 || bl >= size || memchr(jid, '\0', bl)) return -1;
    memcpy(out, jid, bl);
    out[bl] = '\0';
    return 0;
}

int jid_nodeprep(const char *in, char *out, size_t size)
{
    if (!in || !out) return -1;
    return prep_part(in, strlen(in), "Nodeprep", out, size);
}

int jid_resourceprep(const char *in, char *out, size_t size)
{
    if (!in || !out) return -1;
    return prep_part(in, strlen(in), "Resourceprep", out, size);
}

unsigned jid_shard(const char *bare, size_t len, unsigned nshards)
{
    if (nshards == 0) return 0;
    return (unsigned)(util_hash64(bare, len) % nshards);
}
