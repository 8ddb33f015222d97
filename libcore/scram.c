/* scram.c - SCRAM verifiers (see scram.h): derivation per RFC 5802 §3 with
 * SHA-1 and SHA-256 (RFC 7677), the cyrus-sasl authPassword text form, fake
 * verifiers for unknown users, PLAIN checks against a verifier. */
#include "config.h"
#include "scram.h"
#include "util.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#define SCRAM_ITER_MIN 1u
#define SCRAM_ITER_MAX 10000000u
#define SCRAM_NEW_SALT_LEN 16
/* Longest password accepted before SASLprep: bounds the preparation work a
 * PLAIN login can cause; far above anything a person types. */
#define SCRAM_PASSWORD_RAW_MAX 4096

static const char *const mech_names[SCRAM_MECH_COUNT] = {"SCRAM-SHA-1", "SCRAM-SHA-256"};
static const char *const mech_digests[SCRAM_MECH_COUNT] = {"SHA1", "SHA256"};
static const size_t mech_key_lens[SCRAM_MECH_COUNT] = {20, 32};

const char *scram_mech_name(enum scram_mech m)
{
    if ((unsigned)m >= SCRAM_MECH_COUNT) return NULL;
    return mech_names[m];
}

int scram_mech_parse(const char *name)
{
    if (!name) return -1;
    /* SASL mechanism names are upper case (RFC 4422 §3.1): exact match. */
    for (int m = 0; m < SCRAM_MECH_COUNT; m++)
        if (strcmp(name, mech_names[m]) == 0) return m;
    return -1;
}

static const EVP_MD *mech_md(enum scram_mech m)
{
    return m == SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

static int mech_ok(enum scram_mech m)
{
    return (unsigned)m < SCRAM_MECH_COUNT;
}

static int iterations_ok(unsigned i)
{
    return i >= SCRAM_ITER_MIN && i <= SCRAM_ITER_MAX;
}

/* HMAC over the concatenation of nparts buffers; out gets the full MAC
 * (at most SCRAM_KEY_MAX bytes). 0 or -1. */
static int hmac_parts(const char *digest, const void *key, size_t key_len, size_t nparts,
                      const void *const parts[], const size_t lens[], unsigned char *out)
{
    int rc = -1;
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) goto out;
    ctx = EVP_MAC_CTX_new(mac);
    if (!ctx) goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(ctx, key, key_len, params)) goto out;
    for (size_t i = 0; i < nparts; i++)
        if (!EVP_MAC_update(ctx, parts[i], lens[i])) goto out;
    if (!EVP_MAC_final(ctx, out, &outl, SCRAM_KEY_MAX)) goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

/* HMAC of one buffer. */
static int hmac1(enum scram_mech m, const void *key, size_t key_len, const void *data, size_t len,
                 unsigned char *out)
{
    const void *parts[1] = {data};
    size_t lens[1] = {len};
    return hmac_parts(mech_digests[m], key, key_len, 1, parts, lens, out);
}

/* SASLprep into a new string the caller must cleanse and free. RFC 5802
 * §2.2 (Normalize): the password is prepared as a stored string,
 * so unassigned code points are prohibited (RFC 3454 §7). */
static int saslprep_alloc(const char *in, char **res)
{
    *res = NULL;
    if (!in || strlen(in) > SCRAM_PASSWORD_RAW_MAX) return -1;
    /* libidn rejects invalid UTF-8 here as well. */
    if (stringprep_profile(in, res, "SASLprep", STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK) {
        free(*res);
        *res = NULL;
        return -1;
    }
    return 0;
}

/* Cleanse and free a prepared password. */
static void free_secret(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

int scram_saslprep(const char *in, char *out, size_t size)
{
    int rc = -1;
    char *res = NULL;
    if (!out || saslprep_alloc(in, &res) < 0) goto out;
    size_t n = strlen(res);
    if (n >= size) goto out;
    memcpy(out, res, n + 1);
    rc = 0;
out:
    free_secret(res);
    return rc;
}

/* RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i) (Hi is
 * PBKDF2 with HMAC), ClientKey := HMAC(SaltedPassword, "Client Key"),
 * StoredKey := H(ClientKey), ServerKey := HMAC(SaltedPassword, "Server Key").
 * pw is already prepared. client_key may be NULL. */
static int derive(enum scram_mech m, const char *pw, const unsigned char *salt, size_t salt_len,
                  unsigned iterations, unsigned char *client_key, unsigned char *stored_key,
                  unsigned char *server_key)
{
    int rc = -1;
    unsigned char sp[SCRAM_KEY_MAX], ck[SCRAM_KEY_MAX];
    size_t klen = mech_key_lens[m];
    unsigned int dlen = 0;

    if (PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, (int)salt_len, (int)iterations, mech_md(m),
                          (int)klen, sp) != 1)
        goto out;
    if (hmac1(m, sp, klen, "Client Key", 10, ck) < 0) goto out;
    if (EVP_Digest(ck, klen, stored_key, &dlen, mech_md(m), NULL) != 1 || dlen != klen) goto out;
    if (hmac1(m, sp, klen, "Server Key", 10, server_key) < 0) goto out;
    if (client_key) memcpy(client_key, ck, klen);
    rc = 0;
out:
    OPENSSL_cleanse(sp, sizeof sp);
    OPENSSL_cleanse(ck, sizeof ck);
    return rc;
}

int scram_make(enum scram_mech m, const char *password, const unsigned char *salt, size_t salt_len,
               unsigned iterations, struct scram_verifier *out)
{
    int rc = -1;
    char *pw = NULL;
    if (!out || !salt || !mech_ok(m) || salt_len == 0 || salt_len > SCRAM_SALT_MAX ||
        !iterations_ok(iterations))
        goto out;
    if (saslprep_alloc(password, &pw) < 0 || pw[0] == '\0') goto out;
    memset(out, 0, sizeof *out);
    out->mech = m;
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->key_len = mech_key_lens[m];
    if (derive(m, pw, salt, salt_len, iterations, NULL, out->stored_key, out->server_key) < 0) {
        memset(out, 0, sizeof *out);
        goto out;
    }
    rc = 0;
out:
    free_secret(pw);
    return rc;
}

int scram_make_all(const char *password, unsigned iterations, struct scram_verifier out[SCRAM_MECH_COUNT])
{
    int rc = -1;
    unsigned char salt[SCRAM_NEW_SALT_LEN];
    if (!out) goto out;
    for (int m = 0; m < SCRAM_MECH_COUNT; m++) {
        if (util_random(salt, sizeof salt) < 0) goto out;
        if (scram_make((enum scram_mech)m, password, salt, sizeof salt, iterations, &out[m]) < 0) goto out;
    }
    rc = 0;
out:
    return rc;
}

int scram_fake(const unsigned char *secret, size_t secret_len, const char *username, unsigned iterations,
               struct scram_verifier out[SCRAM_MECH_COUNT])
{
    /* Each value is HMAC-SHA-256(secret, label 0x00 mech 0x00 username),
     * truncated: the label and the mechanism name hold no NUL, so the
     * message is unambiguous. Same salt length and iteration count as
     * fresh real verifiers, so the server-first message of an unknown user
     * looks like any other. */
    static const char *const labels[3] = {"xmppd scram-fake salt", "xmppd scram-fake stored-key",
                                          "xmppd scram-fake server-key"};
    int rc = -1;
    unsigned char mac[SCRAM_KEY_MAX];
    if (!secret || secret_len == 0 || !username || !out || !iterations_ok(iterations)) goto out;
    for (int m = 0; m < SCRAM_MECH_COUNT; m++) {
        struct scram_verifier *v = &out[m];
        memset(v, 0, sizeof *v);
        v->mech = (enum scram_mech)m;
        v->iterations = iterations;
        v->salt_len = SCRAM_NEW_SALT_LEN;
        v->key_len = mech_key_lens[m];
        for (int k = 0; k < 3; k++) {
            const void *parts[5] = {labels[k], "", mech_names[m], "", username};
            size_t lens[5] = {strlen(labels[k]), 1, strlen(mech_names[m]), 1, strlen(username)};
            if (hmac_parts("SHA256", secret, secret_len, 5, parts, lens, mac) < 0) goto out;
            unsigned char *dst = k == 0 ? v->salt : k == 1 ? v->stored_key : v->server_key;
            memcpy(dst, mac, k == 0 ? v->salt_len : v->key_len);
        }
    }
    rc = 0;
out:
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

/* Internal consistency of a verifier. */
static int verifier_ok(const struct scram_verifier *v)
{
    return v && mech_ok(v->mech) && v->key_len == mech_key_lens[v->mech] && v->salt_len > 0 &&
           v->salt_len <= SCRAM_SALT_MAX && iterations_ok(v->iterations);
}

int scram_check_password(const struct scram_verifier *v, const char *password)
{
    int rc = -1;
    char *pw = NULL;
    unsigned char stored[SCRAM_KEY_MAX], server[SCRAM_KEY_MAX];
    if (!verifier_ok(v) || !password) goto out;
    /* A password that SASLprep refuses (or that prepares to nothing) can
     * never have produced a verifier: a mismatch, not an error. */
    if (saslprep_alloc(password, &pw) < 0 || pw[0] == '\0') {
        rc = 0;
        goto out;
    }
    if (derive(v->mech, pw, v->salt, v->salt_len, v->iterations, NULL, stored, server) < 0) goto out;
    rc = util_ct_equal(stored, v->stored_key, v->key_len);
out:
    free_secret(pw);
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(server, sizeof server);
    return rc;
}

int scram_to_authpassword(const struct scram_verifier *v, char *out, size_t size)
{
    int rc = -1;
    if (!verifier_ok(v) || !out || size == 0) goto out;
    int n = snprintf(out, size, "%s$%u:", mech_names[v->mech], v->iterations);
    if (n < 0 || (size_t)n >= size) goto out;
    size_t pos = (size_t)n, w;
    if ((w = util_b64_encode(v->salt, v->salt_len, out + pos, size - pos)) == 0) goto out;
    pos += w;
    if (pos + 1 >= size) goto out;
    out[pos++] = '$';
    if ((w = util_b64_encode(v->stored_key, v->key_len, out + pos, size - pos)) == 0) goto out;
    pos += w;
    if (pos + 1 >= size) goto out;
    out[pos++] = ':';
    if ((w = util_b64_encode(v->server_key, v->key_len, out + pos, size - pos)) == 0) goto out;
    rc = 0;
out:
    if (rc < 0 && out && size > 0) out[0] = '\0';
    return rc;
}

int scram_from_authpassword(const char *s, size_t len, struct scram_verifier *out)
{
    int rc = -1;
    struct scram_verifier v;
    memset(&v, 0, sizeof v);
    if (!s || !out) goto out;
    const char *end = s + len;

    /* <mech>$ */
    const char *d = memchr(s, '$', len);
    if (!d) goto out;
    int m = -1;
    for (int i = 0; i < SCRAM_MECH_COUNT; i++)
        if ((size_t)(d - s) == strlen(mech_names[i]) && memcmp(s, mech_names[i], (size_t)(d - s)) == 0) m = i;
    if (m < 0) goto out;
    v.mech = (enum scram_mech)m;
    v.key_len = mech_key_lens[m];

    /* <iterations>: decimal, no sign, no leading zero, 1..10000000 */
    const char *p = d + 1;
    const char *c = memchr(p, ':', (size_t)(end - p));
    if (!c || c == p || c - p > 8 || *p == '0') goto out;
    unsigned long it = 0;
    for (const char *q = p; q < c; q++) {
        if (*q < '0' || *q > '9') goto out;
        it = it * 10 + (unsigned long)(*q - '0');
    }
    if (it < SCRAM_ITER_MIN || it > SCRAM_ITER_MAX) goto out;
    v.iterations = (unsigned)it;

    /* <b64 salt>$ */
    p = c + 1;
    d = memchr(p, '$', (size_t)(end - p));
    if (!d) goto out;
    ssize_t r = util_b64_decode(p, (size_t)(d - p), v.salt, sizeof v.salt);
    if (r <= 0) goto out;
    v.salt_len = (size_t)r;

    /* <b64 StoredKey>:<b64 ServerKey> */
    p = d + 1;
    c = memchr(p, ':', (size_t)(end - p));
    if (!c) goto out;
    r = util_b64_decode(p, (size_t)(c - p), v.stored_key, sizeof v.stored_key);
    if (r < 0 || (size_t)r != v.key_len) goto out;
    p = c + 1;
    r = util_b64_decode(p, (size_t)(end - p), v.server_key, sizeof v.server_key);
    if (r < 0 || (size_t)r != v.key_len) goto out;

    *out = v;
    rc = 0;
out:
    return rc;
}

int scram_client_proof(enum scram_mech m, const char *password, const unsigned char *salt, size_t salt_len,
                       unsigned iterations, const char *auth_message, unsigned char *proof_out,
                       unsigned char *server_sig_out)
{
    int rc = -1;
    char *pw = NULL;
    unsigned char ck[SCRAM_KEY_MAX], sk[SCRAM_KEY_MAX], svk[SCRAM_KEY_MAX], sig[SCRAM_KEY_MAX];
    if (!mech_ok(m) || !salt || salt_len == 0 || salt_len > SCRAM_SALT_MAX || !iterations_ok(iterations) ||
        !auth_message)
        goto out;
    if (saslprep_alloc(password, &pw) < 0 || pw[0] == '\0') goto out;
    size_t klen = mech_key_lens[m], alen = strlen(auth_message);
    if (derive(m, pw, salt, salt_len, iterations, ck, sk, svk) < 0) goto out;
    /* RFC 5802 §3: ClientSignature := HMAC(StoredKey, AuthMessage),
     * ClientProof := ClientKey XOR ClientSignature,
     * ServerSignature := HMAC(ServerKey, AuthMessage). */
    if (proof_out) {
        if (hmac1(m, sk, klen, auth_message, alen, sig) < 0) goto out;
        for (size_t i = 0; i < klen; i++) proof_out[i] = ck[i] ^ sig[i];
    }
    if (server_sig_out && hmac1(m, svk, klen, auth_message, alen, server_sig_out) < 0) goto out;
    rc = 0;
out:
    free_secret(pw);
    OPENSSL_cleanse(ck, sizeof ck);
    OPENSSL_cleanse(sk, sizeof sk);
    OPENSSL_cleanse(svk, sizeof svk);
    OPENSSL_cleanse(sig, sizeof sig);
    return rc;
}
