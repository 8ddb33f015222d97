/* jid.h - XMPP addresses (RFC 6122): parsing, stringprep normalization,
 * formatting and the shard a bare JID belongs to. */
#ifndef XMPPD_JID_H
#define XMPPD_JID_H

#include <stddef.h>

#define JID_PART_MAX 1023
#define JID_STR_MAX (3 * JID_PART_MAX + 3) /* buffer size that fits any normalized full JID + NUL */

struct jid {
    char local[JID_PART_MAX + 1];
    char domain[JID_PART_MAX + 1];
    char resource[JID_PART_MAX + 1];
    int has_local;
    int has_resource;
};

/* Split and normalize (Nodeprep/Nameprep/Resourceprep) len bytes of s into out; 0 or -1. */
int jid_parse(const char *s, size_t len, struct jid *out);
/* Write "local@domain" or "domain" into out; 0, or -1 if it does not fit. */
int jid_format_bare(const struct jid *j, char *out, size_t size);
/* Write the bare JID plus "/resource" if there is one; 0 or -1. */
int jid_format_full(const struct jid *j, char *out, size_t size);
/* jid_parse then jid_format_full in one call; 0 or -1. */
int jid_normalize(const char *s, size_t len, char *out, size_t size);
/* Bare part of an already-normalized JID (cut at the first '/'), no stringprep; 0 or -1. */
int jid_bare_of(const char *jid, size_t len, char *out, size_t size);
/* Nodeprep a NUL-terminated localpart (e.g. a SASL username) into out; 0 or -1. */
int jid_nodeprep(const char *in, char *out, size_t size);
/* Resourceprep a NUL-terminated resourcepart into out; 0 or -1. */
int jid_resourceprep(const char *in, char *out, size_t size);
/* Shard owning a bare JID: util_hash64(bare) % nshards, 0 when nshards is 0. */
unsigned jid_shard(const char *bare, size_t len, unsigned nshards);

#endif
