/* msg.c - encoder and validating decoder for the internal messages of
 * msg.h. The decoder is the gate every daemon's input passes: a record
 * whose header or any field breaks its type's schema is rejected whole. */
#include "config.h"
#include "msg.h"

#include <string.h>
#include <strings.h>

/* Field content classes. */
enum { F_TEXT = 1, F_BIN = 2 };

struct field_rule {
    uint8_t cls;
    uint8_t required; /* must be non-empty */
    uint32_t max;
};

struct type_schema {
    const char *name;
    uint8_t nfields;
    uint8_t kind_is_role; /* kind holds enum peer_role */
    struct field_rule f[MSG_MAX_FIELDS];
};

#define NAME_MAX_LEN 64u
#define JID_LEN 3072u
#define BODY_MAX (MSG_MAX_RECORD - 64u * 1024u)
#define T(n) { F_TEXT, 0, (n) }
#define TR(n) { F_TEXT, 1, (n) }
#define B(n) { F_BIN, 0, (n) }

/* Routed messages share one shape: from, to, dest, origin, body. */
#define ROUTED(req_from, req_to) \
    { { F_TEXT, req_from, JID_LEN }, { F_TEXT, req_to, JID_LEN }, T(NAME_MAX_LEN), TR(NAME_MAX_LEN), T(BODY_MAX) }

static const struct type_schema schemas[MSG_TYPE_END] = {
    [MSG_HELLO] = { "HELLO", 2, 1, { TR(NAME_MAX_LEN), T(64) } },
    [MSG_HELLO_ACK] = { "HELLO_ACK", 2, 1, { TR(NAME_MAX_LEN), T(64) } },
    [MSG_GOODBYE] = { "GOODBYE", 1, 1, { TR(NAME_MAX_LEN) } },
    [MSG_HEARTBEAT] = { "HEARTBEAT", 1, 1, { TR(NAME_MAX_LEN) } },
    [MSG_PEER_UP] = { "PEER_UP", 1, 1, { TR(NAME_MAX_LEN) } },
    [MSG_PEER_DOWN] = { "PEER_DOWN", 1, 1, { TR(NAME_MAX_LEN) } },
    [MSG_ROUTE_BIND] = { "ROUTE_BIND", 1, 0, { TR(1024) } },
    [MSG_CONN_OPEN] = { "CONN_OPEN", 2, 0, { TR(128), T(1024) } },
    [MSG_CONN_STREAM] = { "CONN_STREAM", 4, 0, { T(JID_LEN), T(JID_LEN), T(16), T(64) } },
    [MSG_CONN_ELEMENT] = { "CONN_ELEMENT", 4, 0, { T(JID_LEN), T(1024), T(1024), TR(BODY_MAX) } },
    [MSG_CONN_CLOSED] = { "CONN_CLOSED", 1, 0, { T(1024) } },
    [MSG_CONN_SEND] = { "CONN_SEND", 1, 0, { T(BODY_MAX) } },
    [MSG_CONN_STARTTLS] = { "CONN_STARTTLS", 0, 0, { { 0, 0, 0 } } },
    [MSG_CONN_RESET] = { "CONN_RESET", 2, 0, { T(BODY_MAX), T(JID_LEN) } },
    [MSG_CONN_CLOSE] = { "CONN_CLOSE", 2, 0, { T(64), T(1024) } },
    [MSG_CONN_NEXT] = { "CONN_NEXT", 0, 0, { { 0, 0, 0 } } },
    [MSG_CONN_BOUND] = { "CONN_BOUND", 1, 0, { TR(JID_LEN) } },
    [MSG_STANZA] = { "STANZA", 5, 0, ROUTED(0, 0) },
    [MSG_DELIVER] = { "DELIVER", 5, 0, ROUTED(0, 1) },
    [MSG_BOUNCE] = { "BOUNCE", 5, 0, ROUTED(0, 0) },
    [MSG_AUTH_LOOKUP] = { "AUTH_LOOKUP", 5, 0, ROUTED(1, 0) },
    [MSG_AUTH_RESULT] = { "AUTH_RESULT", 5, 0, ROUTED(0, 1) },
    [MSG_SESSION_BIND] = { "SESSION_BIND", 5, 0, ROUTED(1, 0) },
    [MSG_SESSION_BOUND] = { "SESSION_BOUND", 5, 0, ROUTED(0, 1) },
    [MSG_SESSION_END] = { "SESSION_END", 5, 0, ROUTED(1, 0) },
    [MSG_SESSION_KICK] = { "SESSION_KICK", 5, 0, ROUTED(0, 1) },
    [MSG_RESYNC_DONE] = { "RESYNC_DONE", 5, 0, ROUTED(0, 0) },
    [MSG_CTL_REQUEST] = { "CTL_REQUEST", 2, 0, { TR(64 * 1024), B(16u << 20) } },
    [MSG_CTL_REPLY] = { "CTL_REPLY", 3, 0, { T(64 * 1024), B(BODY_MAX), T(64 * 1024) } },
    [MSG_ACCOUNT_CHANGE] = { "ACCOUNT_CHANGE", 5, 0, ROUTED(1, 0) },
    [MSG_ACCOUNT_RESULT] = { "ACCOUNT_RESULT", 5, 0, ROUTED(0, 1) },
    [MSG_MODULE_ASK] = { "MODULE_ASK", 5, 0, ROUTED(1, 1) },
    [MSG_MODULE_ANSWER] = { "MODULE_ANSWER", 5, 0, ROUTED(1, 1) },
};

static const char *const kind_names[KIND_END] = { "none", "message", "presence", "iq", "other" };
static const char *const type_names[STYPE_END] = {
    "", "normal", "chat", "groupchat", "headline", "error", "get", "set", "result",
    "unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "invalid",
};
static const char *const role_names[ROLE_END] = { "none", "listen", "c2s", "router", "sm", "ctl" };
static const char *const close_names[CLOSE_END] = { "peer", "error", "timeout", "slow-reader",
                                                     "shutdown", "kicked" };

static const struct type_schema *schema_of(unsigned type)
{
    if (type == 0 || type >= MSG_TYPE_END || !schemas[type].name) return NULL;
    return &schemas[type];
}

const char *msg_type_name(unsigned type)
{
    const struct type_schema *s = schema_of(type);
    return s ? s->name : "?";
}

int msg_type_fields(unsigned type)
{
    const struct type_schema *s = schema_of(type);
    return s ? s->nfields : -1;
}

void msg_init(struct msg *m, unsigned type)
{
    memset(m, 0, sizeof *m);
    m->type = (uint16_t)type;
    int n = msg_type_fields(type);
    m->nfields = n > 0 ? (uint8_t)n : 0;
    for (unsigned i = 0; i < MSG_MAX_FIELDS; i++) m->f[i].p = "";
}

void msg_set(struct msg *m, unsigned i, const char *s)
{
    msg_setn(m, i, s ? s : "", s ? strlen(s) : 0);
}

void msg_setn(struct msg *m, unsigned i, const char *p, size_t n)
{
    if (i >= MSG_MAX_FIELDS) return;
    m->f[i].p = p;
    m->f[i].n = (uint32_t)n;
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, <= U+10FFFF; no NUL. */
static int valid_text(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == 0) return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; }
        else return 0;
        if (n - i - 1 < need) return 0; /* truncated sequence */
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* Every record every daemon receives passes here, and valid_text's byte
 * loop is most of the router's CPU: aligned so that its speed does not
 * depend on the size of unrelated code linked before it (measured: the
 * router's CPU per message varied by 25% with the function's offset
 * modulo 64, after adding code elsewhere in libcore). */
__attribute__((aligned(64))) static int check_record(const struct msg *m, const char **err)
{
    const struct type_schema *s = schema_of(m->type);
    if (!s) { *err = "unknown type"; return -1; }
    if (m->flags & ~MSG_F_ALL) { *err = "unknown flags"; return -1; }
    if (m->nfields != s->nfields) { *err = "wrong field count"; return -1; }
    if (s->kind_is_role ? (m->kind >= ROLE_END) : (m->kind >= KIND_END)) {
        *err = "kind out of range";
        return -1;
    }
    if (m->stype >= STYPE_END) { *err = "stype out of range"; return -1; }
    for (unsigned i = 0; i < s->nfields; i++) {
        const struct field_rule *r = &s->f[i];
        if (m->f[i].n > r->max) { *err = "field too long"; return -1; }
        if (r->required && m->f[i].n == 0) { *err = "required field empty"; return -1; }
        if (r->cls == F_TEXT && !valid_text((const unsigned char *)m->f[i].p, m->f[i].n)) {
            *err = "field is not UTF-8 text";
            return -1;
        }
    }
    return 0;
}

int msg_encode(const struct msg *m, struct buf *out)
{
    const char *err;
    if (check_record(m, &err) < 0) return -1;
    size_t len = MSG_HEADER_LEN;
    for (unsigned i = 0; i < m->nfields; i++) len += 4 + m->f[i].n;
    if (len > MSG_MAX_RECORD) return -1;
    if (buf_reserve(out, len) < 0) return -1;
    buf_add_u32(out, (uint32_t)len);
    buf_add_u16(out, m->type);
    buf_add_u16(out, m->flags);
    buf_add_u64(out, m->trace);
    buf_add_u64(out, m->id);
    buf_add_u32(out, m->num);
    unsigned char tail[4] = { m->kind, m->stype, m->nfields, 0 };
    buf_add(out, tail, 4);
    for (unsigned i = 0; i < m->nfields; i++) {
        buf_add_u32(out, m->f[i].n);
        buf_add(out, m->f[i].p, m->f[i].n);
    }
    return out->oom ? -1 : 0;
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

int msg_decode(const char *data, size_t len, struct msg *m, size_t *used, const char **err)
{
    const unsigned char *p = (const unsigned char *)data;
    *err = NULL;
    if (len < MSG_HEADER_LEN) { *err = "truncated header"; return -1; }
    uint32_t rlen = rd32(p);
    if (rlen < MSG_HEADER_LEN || rlen > len || rlen > MSG_MAX_RECORD) {
        *err = "bad record length";
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->type = rd16(p + 4);
    m->flags = rd16(p + 6);
    m->trace = rd64(p + 8);
    m->id = rd64(p + 16);
    m->num = rd32(p + 24);
    m->kind = p[28];
    m->stype = p[29];
    m->nfields = p[30];
    if (p[31] != 0) { *err = "reserved byte set"; return -1; }
    if (m->nfields > MSG_MAX_FIELDS) { *err = "too many fields"; return -1; }
    size_t off = MSG_HEADER_LEN;
    for (unsigned i = 0; i < m->nfields; i++) {
        if (rlen - off < 4) { *err = "truncated field length"; return -1; }
        uint32_t n = rd32(p + off);
        off += 4;
        if (n > rlen - off) { *err = "field overruns record"; return -1; }
        m->f[i].p = data + off;
        m->f[i].n = n;
        off += n;
    }
    for (unsigned i = m->nfields; i < MSG_MAX_FIELDS; i++) m->f[i].p = "";
    if (off != rlen) { *err = "trailing bytes in record"; return -1; }
    if (check_record(m, err) < 0) return -1;
    *used = rlen;
    return 0;
}

char *msg_str(const struct msg *m, unsigned i, char *dst, size_t size)
{
    if (i >= MSG_MAX_FIELDS || m->f[i].n >= size) return NULL;
    memcpy(dst, m->f[i].p, m->f[i].n);
    dst[m->f[i].n] = '\0';
    return dst;
}

int msg_eq(const struct msg *m, unsigned i, const char *s)
{
    size_t n = strlen(s);
    return i < MSG_MAX_FIELDS && m->f[i].n == n && memcmp(m->f[i].p, s, n) == 0;
}

const char *stanza_kind_name(unsigned kind) { return kind < KIND_END ? kind_names[kind] : "?"; }
const char *stanza_type_name(unsigned st) { return st < STYPE_END ? type_names[st] : "?"; }
const char *peer_role_name(unsigned role) { return role < ROLE_END ? role_names[role] : "?"; }
const char *close_reason_name(unsigned r) { return r < CLOSE_END ? close_names[r] : "?"; }

unsigned stanza_type_parse(unsigned kind, const char *v)
{
    if (!v) return STYPE_NONE;
    /* RFC 6120 §8.2.3 (iq), RFC 6121 §5.2.2 (message), §4.7.1.3 (presence) */
    static const unsigned msg_types[] = { STYPE_NORMAL, STYPE_CHAT, STYPE_GROUPCHAT, STYPE_HEADLINE, STYPE_ERROR };
    static const unsigned iq_types[] = { STYPE_GET, STYPE_SET, STYPE_RESULT, STYPE_ERROR };
    static const unsigned pres_types[] = { STYPE_UNAVAILABLE, STYPE_SUBSCRIBE, STYPE_SUBSCRIBED,
                                           STYPE_UNSUBSCRIBE, STYPE_UNSUBSCRIBED, STYPE_PROBE, STYPE_ERROR };
    const unsigned *set;
    size_t n;
    switch (kind) {
    case KIND_MESSAGE: set = msg_types; n = sizeof msg_types / sizeof *msg_types; break;
    case KIND_IQ: set = iq_types; n = sizeof iq_types / sizeof *iq_types; break;
    case KIND_PRESENCE: set = pres_types; n = sizeof pres_types / sizeof *pres_types; break;
    default: return STYPE_NONE;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, type_names[set[i]]) == 0) return set[i];
    return STYPE_INVALID;
}
