/* c2s_sasl.c - SASL for xmpp-c2s (RFC 6120 §6) through cyrus-sasl, the
 * way DESIGN §10 found it safe on this machine:
 *  - exactly SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN (mech_list), never -PLUS;
 *  - our own auxprop plugin, pinned with auxprop_plugin, that hands cyrus
 *    only "*authPassword" (SCRAM verifiers), never userPassword;
 *  - PLAIN checked in SASL_CB_SERVER_USERDB_CHECKPASS against the
 *    SCRAM-SHA-256 verifier, behind a token bucket (a PBKDF2 per try);
 *  - the username taken from the client's first message without cyrus,
 *    the verifiers fetched from the owning sm asynchronously (MSG_AUTH_LOOKUP),
 *    and only then sasl_server_start, so the loop never waits;
 *  - the sasl_conn_t lives only for the exchange (it is big).
 * Cyrus is synchronous and we are single-threaded: the callbacks find the
 * connection being processed in `current`, set around each cyrus call. */
#include "config.h"
#include "c2s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>
#include <sasl/saslplug.h>

#include "jid.h"
#include "log.h"
#include "scram.h"
#include "stanza.h"
#include "util.h"

#define MECH_LIST "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN"
#define AUXPROP_NAME "xmppd"
#define SASL_MSG_MAX 8192   /* decoded client message; real ones are < 1 KiB */
#define PLAIN_PASS_MAX 1024

/* One SASL exchange. Freed as soon as it ends, whatever the outcome. */
struct c2s_auth {
    uint8_t mech;           /* enum c2s_mech */
    uint8_t waiting;        /* MSG_AUTH_LOOKUP outstanding */
    uint64_t deadline;      /* for the lookup */
    char *user;             /* nodeprepped localpart */
    char *user_at_domain;   /* the account: "user@domain" */
    unsigned char *first;   /* the client's first message, until the verifiers arrive */
    size_t first_len;
    char *authpw[SCRAM_MECH_COUNT]; /* authPassword lines, by enum scram_mech */
    sasl_conn_t *sasl;
};

static const char *const mech_names[MECH_COUNT] = { "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN" };

/* The connection whose cyrus call is running (callbacks have no other way
 * to reach it: the auxprop plugin gets no per-connection context). */
static struct c2s_conn *current;
static struct c2s *c2s;
static unsigned mechs_available; /* bit per enum c2s_mech, from sasl_listmech */

/* Token bucket for PLAIN (each check is a PBKDF2). */
static double plain_tokens;
static uint64_t plain_refill_ms;

const char *c2s_mech_name(unsigned mech) { return mech < MECH_COUNT ? mech_names[mech] : "?"; }

static int mech_parse(const char *name)
{
    for (unsigned i = 0; i < MECH_COUNT; i++)
        if (name && strcmp(name, mech_names[i]) == 0) return (int)i;
    return -1;
}

/* ---- cyrus callbacks ---- */

static int cb_getopt(void *context, const char *plugin_name, const char *option, const char **result,
                     unsigned *len)
{
    (void)context;
    (void)plugin_name;
    if (strcmp(option, "mech_list") == 0)
        *result = MECH_LIST;
    else if (strcmp(option, "auxprop_plugin") == 0)
        *result = AUXPROP_NAME; /* PLAIN's fallback path cannot reach sasldb & co */
    else if (strcmp(option, "pwcheck_method") == 0)
        *result = "auxprop";    /* never saslauthd */
    else
        return SASL_FAIL;
    if (len) *len = (unsigned)strlen(*result);
    return SASL_OK;
}

static int cb_log(void *context, int level, const char *message)
{
    (void)context;
    if (!message) return SASL_OK;
    if (level <= SASL_LOG_ERR)
        log_warn("sasl: %s", message);
    else if (level <= SASL_LOG_WARN)
        log_info("sasl: %s", message);
    else
        log_debug("sasl: %s", message);
    return SASL_OK;
}

/* Does a cyrus username ("alice" or, with user_realm set, "alice@domain")
 * name the account of this exchange? */
static int user_is_ours(const struct c2s_conn *c, const char *user, size_t len)
{
    const struct c2s_auth *a = c->auth;
    if (!a || !a->user) return 0;
    size_t ul = strlen(a->user);
    if (len == ul && memcmp(user, a->user, ul) == 0) return 1;
    size_t fl = strlen(a->user_at_domain);
    return len == fl && memcmp(user, a->user_at_domain, fl) == 0;
}

/* Normalize a username: "alice" or "alice@domain" for the stream's own
 * domain, nodeprepped (DESIGN §4). Other domains are refused. Writes the
 * localpart into out; 0 or -1. */
static int canon_username(const struct c2s_conn *c, const char *in, size_t len, char *out, size_t size)
{
    char raw[4 * JID_PART_MAX + 1];
    if (len == 0 || len >= sizeof raw || memchr(in, '\0', len)) return -1;
    memcpy(raw, in, len);
    raw[len] = '\0';
    const char *at = strchr(raw, '@');
    if (!at) return jid_nodeprep(raw, out, size);

    struct jid *j = malloc(sizeof *j);
    int rc = -1;
    if (!j) return -1;
    if (jid_parse(raw, len, j) < 0 || !j->has_local || j->has_resource) goto out;
    if (!c->domain || strcmp(j->domain, c->domain) != 0) goto out;
    if (strlen(j->local) >= size) goto out;
    memcpy(out, j->local, strlen(j->local) + 1);
    rc = 0;
out:
    free(j);
    return rc;
}

static int cb_canon_user(sasl_conn_t *conn, void *context, const char *in, unsigned inlen, unsigned flags,
                         const char *user_realm, char *out, unsigned out_max, unsigned *out_len)
{
    (void)conn;
    (void)context;
    (void)flags;
    (void)user_realm;
    char local[JID_PART_MAX + 1];
    if (!current) return SASL_FAIL;
    if (canon_username(current, in, inlen, local, sizeof local) < 0) {
        log_debug("sasl: conn %016llx: username refused by canon_user",
                  (unsigned long long)current->cid);
        return SASL_BADAUTH;
    }
    size_t n = strlen(local);
    if (n >= out_max) return SASL_BUFOVER;
    memcpy(out, local, n + 1);
    *out_len = (unsigned)n;
    return SASL_OK;
}

/* PLAIN: cyrus cannot check a password against authPassword (DESIGN §10),
 * so we do, against the SCRAM-SHA-256 verifier (SASLprep inside scram). */
static int cb_checkpass(sasl_conn_t *conn, void *context, const char *user, const char *pass, unsigned passlen,
                        struct propctx *propctx)
{
    (void)conn;
    (void)context;
    (void)propctx;
    char pw[PLAIN_PASS_MAX + 1];
    struct scram_verifier v;
    int rc = SASL_BADAUTH;
    if (!current || !current->auth || !user || !user_is_ours(current, user, strlen(user))) return SASL_BADAUTH;
    const char *line = current->auth->authpw[SCRAM_SHA256];
    if (!line || passlen > PLAIN_PASS_MAX || memchr(pass, '\0', passlen)) return SASL_BADAUTH;
    if (scram_from_authpassword(line, strlen(line), &v) < 0) return SASL_BADAUTH;
    memcpy(pw, pass, passlen);
    pw[passlen] = '\0';
    if (scram_check_password(&v, pw) == 1) rc = SASL_OK;
    /* volatile-free wipe: explicit_bzero survives dead-store elimination */
    explicit_bzero(pw, sizeof pw);
    return rc;
}

typedef int (*sasl_cb_fn)(void);

static const sasl_callback_t global_callbacks[] = {
    { SASL_CB_GETOPT, (sasl_cb_fn)(void (*)(void))cb_getopt, NULL },
    { SASL_CB_LOG, (sasl_cb_fn)(void (*)(void))cb_log, NULL },
    { SASL_CB_CANON_USER, (sasl_cb_fn)(void (*)(void))cb_canon_user, NULL },
    { SASL_CB_SERVER_USERDB_CHECKPASS, (sasl_cb_fn)(void (*)(void))cb_checkpass, NULL },
    { SASL_CB_LIST_END, NULL, NULL },
};

/* ---- our auxprop plugin: the verifiers of the current exchange ---- */

static int auxprop_lookup(void *glob_context, sasl_server_params_t *sp, unsigned flags, const char *user,
                          unsigned ulen)
{
    (void)glob_context;
    /* Authorization-identity lookups need nothing from us. */
    if (flags & SASL_AUXPROP_AUTHZID) return SASL_OK;
    if (!current || !current->auth || !user_is_ours(current, user, ulen)) return SASL_NOUSER;
    const struct c2s_auth *a = current->auth;
    const struct propval *pv = sp->utils->prop_get(sp->propctx);
    for (; pv && pv->name; pv++) {
        /* authid properties arrive as "*name"; we serve only authPassword */
        if (strcmp(pv->name, "*authPassword") != 0) continue;
        if (pv->values) {
            if (!(flags & SASL_AUXPROP_OVERRIDE)) continue; /* the lookup runs twice per login */
            sp->utils->prop_erase(sp->propctx, pv->name);
        }
        const char *name = pv->name;
        for (unsigned m = 0; m < SCRAM_MECH_COUNT; m++) {
            if (!a->authpw[m]) continue;
            /* set on the exact name first, then append with NULL */
            sp->utils->prop_set(sp->propctx, name, a->authpw[m], (int)strlen(a->authpw[m]));
            name = NULL;
        }
    }
    return SASL_OK;
}

static sasl_auxprop_plug_t auxprop_plug = {
    .features = 0,
    .spare_int1 = 0,
    .glob_context = NULL,
    .auxprop_free = NULL,
    .auxprop_lookup = auxprop_lookup,
    .name = (char *)AUXPROP_NAME,
    .auxprop_store = NULL,
};

static int auxprop_init(const sasl_utils_t *utils, int max_version, int *out_version, sasl_auxprop_plug_t **plug,
                        const char *plugname)
{
    (void)utils;
    (void)plugname;
    if (max_version < SASL_AUXPROP_PLUG_VERSION) return SASL_BADVERS;
    *out_version = SASL_AUXPROP_PLUG_VERSION;
    *plug = &auxprop_plug;
    return SASL_OK;
}

/* ---- setup ---- */

/* Security properties: no anonymous mechanisms and no SASL security layer
 * (XMPP protects the stream with TLS, never with a layer). PLAIN over
 * plaintext is our decision (TLS state, allow_plaintext_auth), so cyrus's
 * noplaintext flag stays off: it would hide PLAIN even under TLS. */
static int set_secprops(sasl_conn_t *conn)
{
    sasl_security_properties_t sp;
    memset(&sp, 0, sizeof sp);
    sp.min_ssf = 0;
    sp.max_ssf = 0;
    sp.maxbufsize = 0;
    sp.security_flags = SASL_SEC_NOANONYMOUS;
    return sasl_setprop(conn, SASL_SEC_PROPS, &sp);
}

static int set_external_ssf(sasl_conn_t *conn)
{
    sasl_ssf_t ssf = 256; /* TLS: what the channel itself protects */
    return sasl_setprop(conn, SASL_SSF_EXTERNAL, &ssf);
}

/* Ask cyrus what it would offer; exactly our three, or refuse to start. */
static int check_listmech(void)
{
    sasl_conn_t *conn = NULL;
    const char *list = NULL;
    unsigned len = 0;
    int count = 0, rc = -1;
    if (sasl_server_new("xmpp", "localhost", "localhost", NULL, NULL, NULL, SASL_SUCCESS_DATA, &conn) != SASL_OK)
        goto out;
    if (set_secprops(conn) != SASL_OK || set_external_ssf(conn) != SASL_OK) goto out;
    if (sasl_listmech(conn, NULL, "", " ", "", &list, &len, &count) != SASL_OK) goto out;
    char copy[512];
    if (len >= sizeof copy) goto out;
    memcpy(copy, list, len);
    copy[len] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        int m = mech_parse(tok);
        if (m < 0) {
            log_err("sasl: cyrus offers %s, which is not in mech_list: refusing to start", tok);
            goto out;
        }
        mechs_available |= 1u << m;
    }
    if (!(mechs_available & (1u << MECH_SCRAM_SHA256)) || !(mechs_available & (1u << MECH_SCRAM_SHA1))) {
        log_err("sasl: SCRAM mechanisms missing (offered: %s); is libsasl2-modules installed?", list);
        goto out;
    }
    if (!(mechs_available & (1u << MECH_PLAIN))) log_warn("sasl: PLAIN is not available (offered: %s)", list);
    log_info("sasl: mechanisms offered: %s", list);
    rc = 0;
out:
    if (conn) sasl_dispose(&conn);
    return rc;
}

int c2s_sasl_init(struct c2s *s)
{
    c2s = s;
    int r = sasl_server_init(global_callbacks, "xmppd");
    if (r != SASL_OK) {
        log_err("sasl: sasl_server_init: %s", sasl_errstring(r, NULL, NULL));
        return -1;
    }
    r = sasl_auxprop_add_plugin(AUXPROP_NAME, auxprop_init);
    if (r != SASL_OK) {
        log_err("sasl: sasl_auxprop_add_plugin: %s", sasl_errstring(r, NULL, NULL));
        return -1;
    }
    plain_tokens = s->d->conf.plain_logins_per_sec;
    plain_refill_ms = loop_now_ms(s->d->loop);
    return check_listmech();
}

void c2s_sasl_done(void)
{
    sasl_server_done();
}

void c2s_sasl_features(struct c2s_conn *c, struct buf *out)
{
    (void)c;
    buf_adds(out, "<mechanisms xmlns='" NS_SASL "'>");
    for (unsigned m = 0; m < MECH_COUNT; m++)
        if (mechs_available & (1u << m)) buf_addf(out, "<mechanism>%s</mechanism>", mech_names[m]);
    buf_adds(out, "</mechanisms>");
}

/* ---- helpers ---- */

const char *c2s_logsafe(const char *s, char *out, size_t size)
{
    size_t o = 0;
    if (!s || !*s) s = "-";
    for (; *s && o + 1 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        /* one token per field for fail2ban: no blanks, controls, quotes or '=' */
        out[o++] = (ch <= ' ' || ch == 0x7f || ch == '"' || ch == '\'' || ch == '=') ? '?' : (char)ch;
    }
    out[o] = '\0';
    return out;
}

void c2s_auth_free(struct c2s_conn *c)
{
    struct c2s_auth *a = c->auth;
    if (!a) return;
    if (a->sasl) sasl_dispose(&a->sasl);
    free(a->user);
    free(a->user_at_domain);
    if (a->first) explicit_bzero(a->first, a->first_len); /* PLAIN carries the password */
    free(a->first);
    for (unsigned m = 0; m < SCRAM_MECH_COUNT; m++) free(a->authpw[m]);
    free(a);
    c->auth = NULL;
}

int c2s_sasl_waiting(const struct c2s_conn *c, uint64_t *deadline)
{
    if (!c->auth || !c->auth->waiting) return 0;
    *deadline = c->auth->deadline;
    return 1;
}

static void log_failure(const struct c2s_conn *c, int mech, const char *reason)
{
    char addr[130], user[2 * JID_PART_MAX + 2];
    const char *who = c->auth && c->auth->user_at_domain ? c->auth->user_at_domain : NULL;
    /* One stable line for fail2ban: auth-failure addr=IP user=USER mech=MECH reason=COND */
    log_notice("auth-failure addr=%s user=%s mech=%s reason=%s", c2s_logsafe(c->addr, addr, sizeof addr),
               c2s_logsafe(who, user, sizeof user), mech >= 0 ? c2s_mech_name((unsigned)mech) : "-", reason);
}

/* End the exchange with <failure/> (RFC 6120 §6.4.5). counted: a real
 * authentication failure, which uses up one of the allowed retries. */
static void fail(struct c2s_conn *c, int mech, const char *cond, int counted)
{
    char xml[160];
    log_failure(c, mech, cond);
    if (mech >= 0 && mech < MECH_COUNT) c2s->st.auth_failed[mech]++;
    c2s_auth_free(c);
    c->state = C2S_WAIT_FEATURE;
    snprintf(xml, sizeof xml, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    if (counted && ++c->auth_failures >= C2S_AUTH_MAX_FAILURES) {
        /* RFC 6120 §6.4.5: past the retries, close with policy-violation */
        c2s_sends(c, xml, 0);
        c2s_close(c, "policy-violation", "too many authentication failures", CLOSE_ERROR);
        return;
    }
    c2s_sends(c, xml, 1);
}

/* Map a cyrus error to an RFC 6120 §6.5 condition; *counted set for those
 * that are the client's fault (retries are limited). */
static const char *failure_condition(int r, int *counted)
{
    *counted = 1;
    switch (r) {
    case SASL_BADPROT:
    case SASL_BADPARAM: return "malformed-request";
    case SASL_NOAUTHZ: return "invalid-authzid";
    case SASL_NOMECH: *counted = 0; return "invalid-mechanism";
    case SASL_ENCRYPT: *counted = 0; return "encryption-required";
    case SASL_TOOWEAK: *counted = 0; return "mechanism-too-weak";
    case SASL_NOMEM:
    case SASL_TRYAGAIN:
    case SASL_UNAVAIL: *counted = 0; return "temporary-auth-failure";
    default: return "not-authorized"; /* BADAUTH, NOUSER, NOVERIFY, FAIL...: one answer, no enumeration */
    }
}

/* Decode the base64 of <auth/> or <response/>: "=" and empty mean zero
 * length (RFC 6120 §6.4.2). Returns the length or -1. */
static ssize_t decode_b64(const char *text, unsigned char *out, size_t size)
{
    if (!text || !*text || strcmp(text, "=") == 0) return 0;
    return util_b64_decode(text, strlen(text), out, size);
}

/* ---- username from the client's first message, without cyrus ---- */

/* SCRAM client-first-message (RFC 5802 §7): gs2-header "n=saslname,r=...".
 * Returns 0 with the decoded saslname, -1 malformed, -2 channel binding
 * asked for ('p='): we offer no -PLUS (DESIGN §10). */
static int scram_username(const unsigned char *p, size_t n, char *out, size_t size)
{
    size_t i = 0, o = 0;
    if (n < 2) return -1;
    if (p[0] == 'p') return -2;
    if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',') return -1;
    i = 2;
    if (i < n && p[i] == 'a') { /* authzid: "a=..." up to the comma */
        while (i < n && p[i] != ',') i++;
    }
    if (i >= n || p[i] != ',') return -1;
    i++;
    /* RFC 5802 §5.1: a mandatory extension 'm' is not understood */
    if (i + 2 > n || p[i] != 'n' || p[i + 1] != '=') return -1;
    for (i += 2; i < n && p[i] != ','; i++) {
        unsigned char ch = p[i];
        if (ch == '\0') return -1;
        if (ch == '=') { /* saslname escapes: =2C is ',' and =3D is '=' */
            if (i + 2 >= n) return -1;
            if (p[i + 1] == '2' && p[i + 2] == 'C') ch = ',';
            else if (p[i + 1] == '3' && p[i + 2] == 'D') ch = '=';
            else return -1;
            i += 2;
        }
        if (o + 1 >= size) return -1;
        out[o++] = (char)ch;
    }
    if (i >= n || o == 0) return -1; /* ",r=nonce" must follow */
    out[o] = '\0';
    return 0;
}

/* PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd. */
static int plain_username(const unsigned char *p, size_t n, char *out, size_t size)
{
    const unsigned char *nul1 = memchr(p, '\0', n);
    if (!nul1) return -1;
    const unsigned char *authcid = nul1 + 1;
    size_t rest = n - (size_t)(authcid - p);
    const unsigned char *nul2 = memchr(authcid, '\0', rest);
    if (!nul2) return -1;
    size_t len = (size_t)(nul2 - authcid);
    size_t passlen = rest - len - 1;
    if (len == 0 || len >= size || passlen == 0 || memchr(nul2 + 1, '\0', passlen)) return -1;
    memcpy(out, authcid, len);
    out[len] = '\0';
    return 0;
}

/* Take a token for a PLAIN or XEP-0078 (c2s_legacy.c) login: each check
 * costs a PBKDF2 (DESIGN §10). */
int c2s_plain_rate_ok(void)
{
    unsigned rate = c2s->d->conf.plain_logins_per_sec;
    if (rate == 0) return 1; /* 0: not limited */
    uint64_t now = loop_now_ms(c2s->d->loop);
    plain_tokens += (double)(now - plain_refill_ms) * rate / 1000.0;
    plain_refill_ms = now;
    if (plain_tokens > rate) plain_tokens = rate; /* burst of one second */
    if (plain_tokens < 1.0) return 0;
    plain_tokens -= 1.0;
    return 1;
}

/* ---- the exchange ---- */

static void send_lookup(struct c2s_conn *c)
{
    struct c2s_auth *a = c->auth;
    struct msg m;
    msg_init(&m, MSG_AUTH_LOOKUP);
    m.id = c->cid; /* one lookup per connection at a time: the id maps back */
    msg_set(&m, 0, a->user_at_domain);
    msg_set(&m, 3, c2s->d->instance);
    c2s_to_router(&m);
    a->waiting = 1;
    a->deadline = loop_now_ms(c2s->d->loop) + C2S_LOOKUP_TIMEOUT_MS;
}

/* The client's first message is here: find the account, ask its sm for
 * the verifiers. The connection now waits (no NEXT), the loop does not. */
static void first_message(struct c2s_conn *c, const unsigned char *data, size_t len)
{
    struct c2s_auth *a = c->auth;
    char raw[4 * JID_PART_MAX + 1], local[JID_PART_MAX + 1];
    int r = a->mech == MECH_PLAIN ? plain_username(data, len, raw, sizeof raw)
                                  : scram_username(data, len, raw, sizeof raw);
    if (r == -2) {
        fail(c, a->mech, "not-authorized", 1); /* channel binding without -PLUS on offer */
        return;
    }
    if (r < 0) {
        fail(c, a->mech, "malformed-request", 1);
        return;
    }
    if (canon_username(c, raw, strlen(raw), local, sizeof local) < 0) {
        char safe[128];
        log_info("conn %016llx: SASL username %s does not normalize or names another domain",
                 (unsigned long long)c->cid, c2s_logsafe(raw, safe, sizeof safe));
        fail(c, a->mech, "not-authorized", 1);
        return;
    }
    size_t ul = strlen(local) + 1 + strlen(c->domain) + 1;
    a->user = strdup(local);
    a->user_at_domain = malloc(ul);
    a->first = malloc(len ? len : 1);
    if (!a->user || !a->user_at_domain || !a->first) {
        fail(c, a->mech, "temporary-auth-failure", 0);
        return;
    }
    snprintf(a->user_at_domain, ul, "%s@%s", local, c->domain);
    memcpy(a->first, data, len);
    a->first_len = len;
    if (a->mech == MECH_PLAIN && !c2s_plain_rate_ok()) {
        log_warn("PLAIN rate limit (%u/s) reached", c2s->d->conf.plain_logins_per_sec);
        fail(c, a->mech, "temporary-auth-failure", 0);
        return;
    }
    send_lookup(c);
}

static void succeed(struct c2s_conn *c, const char *out, unsigned outlen)
{
    struct c2s_auth *a = c->auth;
    const void *un = NULL;
    char addr[130], user[2 * JID_PART_MAX + 2];
    /* cyrus authenticated someone: make sure it is the account we looked up */
    if (sasl_getprop(a->sasl, SASL_USERNAME, &un) != SASL_OK || !un ||
        !user_is_ours(c, (const char *)un, strlen((const char *)un))) {
        log_err("conn %016llx: SASL username differs from the account looked up", (unsigned long long)c->cid);
        fail(c, a->mech, "not-authorized", 1);
        return;
    }
    struct buf *x = &c2s->scratch2;
    buf_clear(x);
    if (outlen > 0) {
        /* RFC 6120 §6.3.10: SCRAM's server-final rides in <success/> */
        size_t cap = (size_t)outlen / 3 * 4 + 8;
        char *b64 = malloc(cap);
        if (!b64 || util_b64_encode((const unsigned char *)out, outlen, b64, cap) == 0) {
            free(b64);
            fail(c, a->mech, "temporary-auth-failure", 0);
            return;
        }
        buf_addf(x, "<success xmlns='" NS_SASL "'>%s</success>", b64);
        free(b64);
    } else {
        buf_adds(x, "<success xmlns='" NS_SASL "'/>");
    }
    log_notice("auth-success addr=%s user=%s mech=%s", c2s_logsafe(c->addr, addr, sizeof addr),
               c2s_logsafe(a->user_at_domain, user, sizeof user), c2s_mech_name(a->mech));
    c2s->st.auth_ok[a->mech]++;
    char *who = strdup(a->user_at_domain);
    /* the sasl_conn_t is big: gone before the session starts */
    c2s_auth_free(c);
    if (!who) {
        c2s_close(c, "internal-server-error", NULL, CLOSE_ERROR);
        return;
    }
    c2s_auth_succeeded(c, buf_cstr(x), who);
    free(who);
}

/* Act on what sasl_server_start/step returned. */
static void outcome(struct c2s_conn *c, int r, const char *out, unsigned outlen)
{
    struct c2s_auth *a = c->auth;
    if (r == SASL_OK) {
        succeed(c, out, outlen);
        return;
    }
    if (r == SASL_CONTINUE) {
        struct buf *x = &c2s->scratch2;
        buf_clear(x);
        buf_adds(x, "<challenge xmlns='" NS_SASL "'>");
        if (outlen == 0) {
            buf_adds(x, "="); /* zero-length challenge, RFC 6120 §6.4.3 */
        } else {
            size_t cap = (size_t)outlen / 3 * 4 + 8;
            if (buf_reserve(x, cap + 16) < 0) {
                fail(c, a->mech, "temporary-auth-failure", 0);
                return;
            }
            size_t n = util_b64_encode((const unsigned char *)out, outlen, x->data + x->len, cap);
            x->len += n;
        }
        buf_adds(x, "</challenge>");
        c2s_send(c, x->data, x->len, 1);
        return;
    }
    int counted;
    const char *cond = failure_condition(r, &counted);
    log_debug("conn %016llx: sasl: %s", (unsigned long long)c->cid, sasl_errdetail(a->sasl));
    fail(c, a->mech, cond, counted);
}

/* Verifiers are here: create the cyrus connection and start it. */
static void start_exchange(struct c2s_conn *c)
{
    struct c2s_auth *a = c->auth;
    const char *out = NULL;
    unsigned outlen = 0;
    int r = sasl_server_new("xmpp", c->domain, c->domain, NULL, NULL, NULL, SASL_SUCCESS_DATA, &a->sasl);
    if (r == SASL_OK) r = set_secprops(a->sasl);
    if (r == SASL_OK && (c->flags & CF_TLS)) r = set_external_ssf(a->sasl);
    if (r != SASL_OK) {
        log_err("sasl: cannot create a server connection: %s", sasl_errstring(r, NULL, NULL));
        fail(c, a->mech, "temporary-auth-failure", 0);
        return;
    }
    current = c;
    r = sasl_server_start(a->sasl, c2s_mech_name(a->mech), (const char *)a->first, (unsigned)a->first_len, &out,
                          &outlen);
    current = NULL;
    explicit_bzero(a->first, a->first_len);
    free(a->first);
    a->first = NULL;
    a->first_len = 0;
    outcome(c, r, out, outlen);
}

void c2s_sasl_auth(struct c2s_conn *c, const char *mech_name, const char *text)
{
    unsigned char data[SASL_MSG_MAX];
    c2s_auth_free(c);
    int mech = mech_parse(mech_name);
    if (mech < 0 || !(mechs_available & (1u << mech))) {
        fail(c, -1, "invalid-mechanism", 0); /* RFC 6120 §6.5.7 */
        return;
    }
    c->auth = calloc(1, sizeof *c->auth);
    if (!c->auth) {
        fail(c, mech, "temporary-auth-failure", 0);
        return;
    }
    c->auth->mech = (uint8_t)mech;
    c->state = C2S_WAIT_SASL;
    if (!text || !*text) {
        /* No initial response: an empty challenge asks for the client's
         * first message (RFC 6120 §6.4.2); the username comes with it. */
        c2s_sends(c, "<challenge xmlns='" NS_SASL "'/>", 1);
        return;
    }
    ssize_t n = decode_b64(text, data, sizeof data);
    if (n < 0) {
        fail(c, mech, "incorrect-encoding", 0); /* RFC 6120 §6.5.5 */
        return;
    }
    first_message(c, data, (size_t)n);
    explicit_bzero(data, sizeof data);
}

void c2s_sasl_response(struct c2s_conn *c, const char *text)
{
    unsigned char data[SASL_MSG_MAX];
    struct c2s_auth *a = c->auth;
    if (!a || a->waiting) {
        /* listen holds elements while we wait: this is a protocol slip */
        c2s_close(c, "not-authorized", "unexpected SASL response", CLOSE_ERROR);
        return;
    }
    ssize_t n = decode_b64(text, data, sizeof data);
    if (n < 0) {
        fail(c, a->mech, "incorrect-encoding", 0);
        return;
    }
    if (!a->sasl) {
        first_message(c, data, (size_t)n);
    } else {
        const char *out = NULL;
        unsigned outlen = 0;
        current = c;
        int r = sasl_server_step(a->sasl, (const char *)data, (unsigned)n, &out, &outlen);
        current = NULL;
        outcome(c, r, out, outlen);
    }
    explicit_bzero(data, sizeof data);
}

void c2s_sasl_abort(struct c2s_conn *c)
{
    int mech = c->auth ? c->auth->mech : -1;
    /* RFC 6120 §6.4.4: <failure><aborted/></failure>; not a failed try */
    fail(c, mech, "aborted", 0);
}

/* authPassword lines from sm: one per mechanism, newline separated. */
static void take_verifiers(struct c2s_auth *a, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t len = nl ? (size_t)(nl - p) : n;
        for (unsigned m = 0; m < SCRAM_MECH_COUNT; m++) {
            const char *name = scram_mech_name((enum scram_mech)m);
            size_t nl2 = strlen(name);
            if (len > nl2 && memcmp(p, name, nl2) == 0 && p[nl2] == '$' && !a->authpw[m])
                a->authpw[m] = util_strndup_safe(p, len);
        }
        if (!nl) break;
        n -= len + 1;
        p += len + 1;
    }
}

void c2s_sasl_lookup_result(struct c2s_conn *c, const struct msg *m)
{
    struct c2s_auth *a = c->auth;
    if (!a || !a->waiting) {
        log_debug("conn %016llx: late AUTH_RESULT ignored", (unsigned long long)c->cid);
        return;
    }
    if (m->f[1].n && !msg_eq(m, 1, a->user_at_domain)) {
        log_warn("conn %016llx: AUTH_RESULT for another account ignored", (unsigned long long)c->cid);
        return;
    }
    a->waiting = 0;
    take_verifiers(a, m->f[4].p, m->f[4].n);
    if (!a->authpw[SCRAM_SHA256] && !a->authpw[SCRAM_SHA1]) {
        /* sm always answers with verifiers (fake ones for unknown users):
         * none at all is a fault on its side, not the client's */
        log_warn("conn %016llx: AUTH_RESULT without verifiers for %s", (unsigned long long)c->cid,
                 a->user_at_domain);
        fail(c, a->mech, "temporary-auth-failure", 0);
        return;
    }
    start_exchange(c);
}

void c2s_sasl_lookup_timeout(struct c2s_conn *c)
{
    struct c2s_auth *a = c->auth;
    if (!a) return;
    log_warn("conn %016llx: no AUTH_RESULT for %s in %u ms", (unsigned long long)c->cid,
             a->user_at_domain ? a->user_at_domain : "-", C2S_LOOKUP_TIMEOUT_MS);
    fail(c, a->mech, "temporary-auth-failure", 0);
}
