/* check_scram.c - unit tests for scram.c (RFC 5802 / RFC 7677 vectors,
 * authPassword form, PLAIN checks, fake verifiers, SASLprep) and the
 * util.c helpers it uses (base64, constant-time compare, randomness). */
#include "config.h"
#include "scram.h"
#include "util.h"

#include <check.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decode base64 or fail the test; returns the length. */
static size_t b64d(const char *s, unsigned char *out, size_t size)
{
    ssize_t n = util_b64_decode(s, strlen(s), out, size);
    ck_assert_msg(n >= 0, "bad base64 in test: %s", s);
    return (size_t)n;
}

/* Encode for comparison with expected base64 text. */
static const char *b64e(const unsigned char *in, size_t n, char *out, size_t size)
{
    ck_assert(util_b64_encode(in, n, out, size) > 0);
    return out;
}

/* Server side of a SCRAM exchange: does proof verify against v for this
 * AuthMessage, and what ServerSignature does the verifier produce? */
static int server_verify(const struct scram_verifier *v, const char *auth, const unsigned char *proof,
                         unsigned char *server_sig)
{
    const EVP_MD *md = v->mech == SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
    unsigned char sig[EVP_MAX_MD_SIZE], ck[EVP_MAX_MD_SIZE], sk[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ck_assert_ptr_nonnull(HMAC(md, v->stored_key, (int)v->key_len, (const unsigned char *)auth, strlen(auth), sig, &len));
    for (size_t i = 0; i < v->key_len; i++) ck[i] = proof[i] ^ sig[i];
    ck_assert_int_eq(EVP_Digest(ck, v->key_len, sk, &len, md, NULL), 1);
    ck_assert_ptr_nonnull(HMAC(md, v->server_key, (int)v->key_len, (const unsigned char *)auth, strlen(auth), server_sig, &len));
    return memcmp(sk, v->stored_key, v->key_len) == 0;
}

/* RFC 5802 §5: SCRAM-SHA-1, user "user", password "pencil". */
static const char rfc5802_auth[] =
    "n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";

/* RFC 7677 §3: SCRAM-SHA-256, same user and password. */
static const char rfc7677_auth[] =
    "n=user,r=rOprNGfwEbeRWgbNEkqO,"
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

START_TEST(test_rfc5802_sha1)
{
    unsigned char salt[64], proof[32], sig[32], ssig[32];
    char txt[128];
    size_t sl = b64d("QSXCR+Q6sek8bf92", salt, sizeof salt);
    ck_assert_int_eq(scram_client_proof(SCRAM_SHA1, "pencil", salt, sl, 4096, rfc5802_auth, proof, sig), 0);
    ck_assert_str_eq(b64e(proof, 20, txt, sizeof txt), "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
    ck_assert_str_eq(b64e(sig, 20, txt, sizeof txt), "rmF9pqV8S7suAoZWja4dJRkFsKQ=");

    /* The stored verifier accepts that proof and yields the same signature. */
    struct scram_verifier v;
    ck_assert_int_eq(scram_make(SCRAM_SHA1, "pencil", salt, sl, 4096, &v), 0);
    ck_assert_uint_eq(v.key_len, 20);
    ck_assert(server_verify(&v, rfc5802_auth, proof, ssig));
    ck_assert_str_eq(b64e(ssig, 20, txt, sizeof txt), "rmF9pqV8S7suAoZWja4dJRkFsKQ=");

    /* NULL outputs are allowed. */
    ck_assert_int_eq(scram_client_proof(SCRAM_SHA1, "pencil", salt, sl, 4096, rfc5802_auth, NULL, sig), 0);
    ck_assert_int_eq(scram_client_proof(SCRAM_SHA1, "pencil", salt, sl, 4096, rfc5802_auth, proof, NULL), 0);
    /* A wrong password gives a proof the verifier rejects. */
    ck_assert_int_eq(scram_client_proof(SCRAM_SHA1, "pencil2", salt, sl, 4096, rfc5802_auth, proof, sig), 0);
    ck_assert(!server_verify(&v, rfc5802_auth, proof, ssig));
}
END_TEST

START_TEST(test_rfc7677_sha256)
{
    unsigned char salt[64], proof[32], sig[32], ssig[32];
    char txt[128];
    size_t sl = b64d("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof salt);
    ck_assert_int_eq(scram_client_proof(SCRAM_SHA256, "pencil", salt, sl, 4096, rfc7677_auth, proof, sig), 0);
    ck_assert_str_eq(b64e(proof, 32, txt, sizeof txt), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    ck_assert_str_eq(b64e(sig, 32, txt, sizeof txt), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");

    struct scram_verifier v;
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pencil", salt, sl, 4096, &v), 0);
    ck_assert_uint_eq(v.key_len, 32);
    ck_assert(server_verify(&v, rfc7677_auth, proof, ssig));
    ck_assert_str_eq(b64e(ssig, 32, txt, sizeof txt), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}
END_TEST

START_TEST(test_mech_names)
{
    ck_assert_str_eq(scram_mech_name(SCRAM_SHA1), "SCRAM-SHA-1");
    ck_assert_str_eq(scram_mech_name(SCRAM_SHA256), "SCRAM-SHA-256");
    ck_assert_ptr_null(scram_mech_name(SCRAM_MECH_COUNT));
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-1"), SCRAM_SHA1);
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-256"), SCRAM_SHA256);
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-256-PLUS"), -1);
    ck_assert_int_eq(scram_mech_parse("scram-sha-1"), -1);
    ck_assert_int_eq(scram_mech_parse("PLAIN"), -1);
    ck_assert_int_eq(scram_mech_parse(""), -1);
    ck_assert_int_eq(scram_mech_parse(NULL), -1);
}
END_TEST

START_TEST(test_make_params)
{
    struct scram_verifier v;
    unsigned char salt[SCRAM_SALT_MAX + 1] = {1, 2, 3};
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pw", salt, 16, 0, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pw", salt, 16, 10000001, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pw", salt, 0, 4096, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pw", salt, SCRAM_SALT_MAX + 1, 4096, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pw", salt, SCRAM_SALT_MAX, 1, &v), 0);
    ck_assert_int_eq(scram_make(SCRAM_MECH_COUNT, "pw", salt, 16, 4096, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, NULL, salt, 16, 4096, &v), -1);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "", salt, 16, 4096, &v), -1);          /* empty */
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "\xC2\xAD", salt, 16, 4096, &v), -1);  /* empty after SASLprep */
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "a\x07", salt, 16, 4096, &v), -1);     /* prohibited */
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "a\xC3", salt, 16, 4096, &v), -1);     /* bad UTF-8 */
}
END_TEST

START_TEST(test_make_all_and_check)
{
    struct scram_verifier v[SCRAM_MECH_COUNT];
    ck_assert_int_eq(scram_make_all("s3cret \xC3\xA9t\xC3\xA9", 4096, v), 0);
    ck_assert_int_eq(v[SCRAM_SHA1].mech, SCRAM_SHA1);
    ck_assert_int_eq(v[SCRAM_SHA256].mech, SCRAM_SHA256);
    ck_assert_uint_eq(v[SCRAM_SHA1].key_len, 20);
    ck_assert_uint_eq(v[SCRAM_SHA256].key_len, 32);
    for (int m = 0; m < SCRAM_MECH_COUNT; m++) {
        ck_assert_uint_eq(v[m].salt_len, 16);
        ck_assert_uint_eq(v[m].iterations, 4096);
        ck_assert_int_eq(scram_check_password(&v[m], "s3cret \xC3\xA9t\xC3\xA9"), 1);
        ck_assert_int_eq(scram_check_password(&v[m], "s3cret ete"), 0);
        ck_assert_int_eq(scram_check_password(&v[m], ""), 0);
        ck_assert_int_eq(scram_check_password(&v[m], "\xC3"), 0);
        /* SASLprep-equivalent spellings match: soft hyphen dropped,
         * U+2000 EN QUAD mapped to space, decomposed é composed (NFKC). */
        ck_assert_int_eq(scram_check_password(&v[m], "s3c\xC2\xADret \xC3\xA9t\xC3\xA9"), 1);
        ck_assert_int_eq(scram_check_password(&v[m], "s3cret\xE2\x80\x80\xC3\xA9t\xC3\xA9"), 1);
        ck_assert_int_eq(scram_check_password(&v[m], "s3cret e\xCC\x81te\xCC\x81"), 1);
    }
    ck_assert(memcmp(v[0].salt, v[1].salt, 16) != 0);

    /* Fresh salts each time. */
    struct scram_verifier w[SCRAM_MECH_COUNT];
    ck_assert_int_eq(scram_make_all("s3cret \xC3\xA9t\xC3\xA9", 4096, w), 0);
    ck_assert(memcmp(v[1].salt, w[1].salt, 16) != 0);
    ck_assert(memcmp(v[1].stored_key, w[1].stored_key, 32) != 0);

    ck_assert_int_eq(scram_make_all("x", 0, w), -1);
    ck_assert_int_eq(scram_make_all("", 4096, w), -1);

    /* Broken verifiers are errors, not mismatches. */
    struct scram_verifier bad = v[SCRAM_SHA256];
    bad.key_len = 20;
    ck_assert_int_eq(scram_check_password(&bad, "x"), -1);
    bad = v[SCRAM_SHA256];
    bad.iterations = 0;
    ck_assert_int_eq(scram_check_password(&bad, "x"), -1);
    bad = v[SCRAM_SHA256];
    bad.salt_len = 0;
    ck_assert_int_eq(scram_check_password(&bad, "x"), -1);
    ck_assert_int_eq(scram_check_password(NULL, "x"), -1);
    ck_assert_int_eq(scram_check_password(&v[0], NULL), -1);

    /* A changed StoredKey byte makes the right password fail. */
    bad = v[SCRAM_SHA1];
    bad.stored_key[19] ^= 1;
    ck_assert_int_eq(scram_check_password(&bad, "s3cret \xC3\xA9t\xC3\xA9"), 0);
}
END_TEST

START_TEST(test_authpassword_roundtrip)
{
    unsigned char salt[64];
    size_t sl = b64d("QSXCR+Q6sek8bf92", salt, sizeof salt);
    struct scram_verifier v, p;
    char line[SCRAM_AUTHPW_MAX];

    ck_assert_int_eq(scram_make(SCRAM_SHA1, "pencil", salt, sl, 4096, &v), 0);
    ck_assert_int_eq(scram_to_authpassword(&v, line, sizeof line), 0);
    ck_assert_msg(strncmp(line, "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$", 34) == 0, "%s", line);
    ck_assert_int_eq(scram_from_authpassword(line, strlen(line), &p), 0);
    ck_assert_int_eq(p.mech, SCRAM_SHA1);
    ck_assert_uint_eq(p.iterations, 4096);
    ck_assert_uint_eq(p.salt_len, sl);
    ck_assert_uint_eq(p.key_len, 20);
    ck_assert(memcmp(p.salt, v.salt, sl) == 0);
    ck_assert(memcmp(p.stored_key, v.stored_key, 20) == 0);
    ck_assert(memcmp(p.server_key, v.server_key, 20) == 0);
    ck_assert_int_eq(scram_check_password(&p, "pencil"), 1);

    /* The longest form (64-byte salt, SHA-256, 10^7 iterations) fits. */
    unsigned char big[SCRAM_SALT_MAX];
    memset(big, 0xA5, sizeof big);
    ck_assert_int_eq(scram_make(SCRAM_SHA256, "pencil", big, sizeof big, 1, &v), 0);
    v.iterations = 10000000;
    ck_assert_int_eq(scram_to_authpassword(&v, line, sizeof line), 0);
    ck_assert_uint_lt(strlen(line), SCRAM_AUTHPW_MAX);
    ck_assert_int_eq(scram_from_authpassword(line, strlen(line), &p), 0);
    ck_assert_int_eq(p.mech, SCRAM_SHA256);
    ck_assert_uint_eq(p.iterations, 10000000);
    ck_assert_uint_eq(p.salt_len, 64);
    ck_assert(memcmp(p.stored_key, v.stored_key, 32) == 0);
    ck_assert(memcmp(p.server_key, v.server_key, 32) == 0);

    /* Buffer one byte short, and invalid verifiers. */
    size_t need = strlen(line) + 1;
    ck_assert_int_eq(scram_to_authpassword(&v, line, need), 0);
    ck_assert_int_eq(scram_to_authpassword(&v, line, need - 1), -1);
    ck_assert_int_eq(scram_to_authpassword(&v, line, 0), -1);
    v.key_len = 20;
    ck_assert_int_eq(scram_to_authpassword(&v, line, sizeof line), -1);
}
END_TEST

START_TEST(test_authpassword_malformed)
{
    /* A valid SHA-1 line (salt "abc" -> YWJj, keys 20 bytes of 0x00 / 0xff)
     * and SHA-256 line, then variants of them that must all fail. */
    static const char k20a[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    static const char k20b[] = "//////////////////////////8=";
    static const char k32[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    char good1[256], good256[256];
    snprintf(good1, sizeof good1, "SCRAM-SHA-1$4096:YWJj$%s:%s", k20a, k20b);
    snprintf(good256, sizeof good256, "SCRAM-SHA-256$4096:YWJj$%s:%s", k32, k32);
    struct scram_verifier v;
    ck_assert_int_eq(scram_from_authpassword(good1, strlen(good1), &v), 0);
    ck_assert_uint_eq(v.salt_len, 3);
    ck_assert(memcmp(v.salt, "abc", 3) == 0);
    ck_assert_uint_eq(v.server_key[0], 0xff);
    ck_assert_int_eq(scram_from_authpassword(good256, strlen(good256), &v), 0);

    char bad[64][256];
    int n = 0;
#define BAD(...) snprintf(bad[n++], sizeof bad[0], __VA_ARGS__)
    BAD("%s", "");
    BAD("SCRAM-SHA-1");
    BAD("SCRAM-SHA-1$");
    BAD("SCRAM-SHA-512$4096:YWJj$%s:%s", k32, k32);
    BAD("scram-sha-1$4096:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1-PLUS$4096:YWJj$%s:%s", k20a, k20b);
    BAD("$4096:YWJj$%s:%s", k20a, k20b);
    BAD(" SCRAM-SHA-1$4096:YWJj$%s:%s", k20a, k20b);
    /* iterations */
    BAD("SCRAM-SHA-1$:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$0:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$04096:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$+4096:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$-1:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$ 4096:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096 :YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$10000001:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$99999999999999999999:YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096$YWJj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$0x10:YWJj$%s:%s", k20a, k20b);
    /* salt */
    BAD("SCRAM-SHA-1$4096:$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJ$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJk=$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YW==$%s:%s", k20a, k20b);  /* non-zero pad bits */
    BAD("SCRAM-SHA-1$4096:YQ$%s:%s", k20a, k20b);    /* missing padding */
    BAD("SCRAM-SHA-1$4096:YW Jj$%s:%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YW-j$%s:%s", k20a, k20b);  /* base64url */
    BAD("SCRAM-SHA-1$4096:%s%s$%s:%s", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAA", k20a, k20b); /* 66-byte salt */
    BAD("SCRAM-SHA-1$4096:YWJj:%s:%s", k20a, k20b);
    /* keys */
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s", k32, k32);     /* 32-byte keys for SHA-1 */
    BAD("SCRAM-SHA-256$4096:YWJj$%s:%s", k20a, k20b); /* 20-byte keys for SHA-256 */
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s", k20a, k32);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s", k32, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s", k20a);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:", k20a);
    BAD("SCRAM-SHA-1$4096:YWJj$:%s", k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s%s", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s:", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s:%s", k20a, k20b, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s$", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s\n", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s ", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%s=", k20a, k20b);
    BAD("SCRAM-SHA-1$4096:YWJj$AAAAAAAAAAAAAAAAAAAAAAAAAAB=:%s", k20b); /* non-zero pad bits */
    BAD("SCRAM-SHA-1$4096:YWJj$%s:%.27s", k20a, k20b); /* cut short */
#undef BAD
    for (int i = 0; i < n; i++) {
        memset(&v, 0x5a, sizeof v);
        ck_assert_msg(scram_from_authpassword(bad[i], strlen(bad[i]), &v) == -1, "accepted: \"%s\"", bad[i]);
    }

    /* len is honoured: a valid prefix is not enough, an embedded NUL fails. */
    ck_assert_int_eq(scram_from_authpassword(good1, strlen(good1) - 1, &v), -1);
    char withnul[300];
    size_t gl = strlen(good1);
    memcpy(withnul, good1, gl);
    withnul[gl] = '\0';
    withnul[gl + 1] = 'A';
    ck_assert_int_eq(scram_from_authpassword(withnul, gl + 2, &v), -1);
    withnul[20] = '\0';
    ck_assert_int_eq(scram_from_authpassword(withnul, gl, &v), -1);
    ck_assert_int_eq(scram_from_authpassword(NULL, 0, &v), -1);
}
END_TEST

START_TEST(test_fake)
{
    static const unsigned char secret1[32] = "0123456789abcdef0123456789abcde";
    static const unsigned char secret2[32] = "0123456789abcdef0123456789abcdX";
    struct scram_verifier a[2], b[2], c[2], d[2];
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, "alice", 4096, a), 0);
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, "alice", 4096, b), 0);
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, "bob", 4096, c), 0);
    ck_assert_int_eq(scram_fake(secret2, sizeof secret2, "alice", 4096, d), 0);
    for (int m = 0; m < SCRAM_MECH_COUNT; m++) {
        /* deterministic */
        ck_assert_int_eq(a[m].mech, m);
        ck_assert_int_eq(b[m].mech, m);
        ck_assert_uint_eq(a[m].salt_len, b[m].salt_len);
        ck_assert(memcmp(a[m].salt, b[m].salt, a[m].salt_len) == 0);
        ck_assert(memcmp(a[m].stored_key, b[m].stored_key, a[m].key_len) == 0);
        ck_assert(memcmp(a[m].server_key, b[m].server_key, a[m].key_len) == 0);
        /* same shape as scram_make_all's */
        ck_assert_uint_eq(a[m].salt_len, 16);
        ck_assert_uint_eq(a[m].iterations, 4096);
        ck_assert_uint_eq(a[m].key_len, m == SCRAM_SHA1 ? 20 : 32);
        /* per user and per secret */
        ck_assert(memcmp(a[m].salt, c[m].salt, 16) != 0);
        ck_assert(memcmp(a[m].stored_key, c[m].stored_key, a[m].key_len) != 0);
        ck_assert(memcmp(a[m].server_key, c[m].server_key, a[m].key_len) != 0);
        ck_assert(memcmp(a[m].salt, d[m].salt, 16) != 0);
        ck_assert(memcmp(a[m].stored_key, d[m].stored_key, a[m].key_len) != 0);
        /* parse like real ones */
        char line[SCRAM_AUTHPW_MAX];
        struct scram_verifier p;
        ck_assert_int_eq(scram_to_authpassword(&a[m], line, sizeof line), 0);
        ck_assert_int_eq(scram_from_authpassword(line, strlen(line), &p), 0);
        ck_assert_int_eq(p.mech, a[m].mech);
        ck_assert(memcmp(p.salt, a[m].salt, 16) == 0);
        ck_assert(memcmp(p.stored_key, a[m].stored_key, a[m].key_len) == 0);
        /* no password matches in practice */
        ck_assert_int_eq(scram_check_password(&a[m], "alice"), 0);
        ck_assert_int_eq(scram_check_password(&a[m], ""), 0);
    }
    /* per mechanism */
    ck_assert(memcmp(a[0].salt, a[1].salt, 16) != 0);
    ck_assert(memcmp(a[0].stored_key, a[1].stored_key, 20) != 0);
    /* the other fields differ from each other */
    ck_assert(memcmp(a[1].stored_key, a[1].server_key, 32) != 0);
    /* a user name that is a prefix of another gives different values */
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, "alic", 4096, c), 0);
    ck_assert(memcmp(a[1].salt, c[1].salt, 16) != 0);
    /* Hardcoded value (HMAC-SHA-256(secret1, "xmppd scram-fake salt" 0x00
     * "SCRAM-SHA-256" 0x00 "alice"), first 16 bytes): fake salts must stay
     * the same across releases, or a user's salt changing with an upgrade
     * would tell that the account never existed. */
    char txt[64];
    ck_assert_str_eq(b64e(a[SCRAM_SHA256].salt, 16, txt, sizeof txt), "KJtPUxz7sFTID8JKl+LcaQ==");

    ck_assert_int_eq(scram_fake(NULL, 0, "alice", 4096, a), -1);
    ck_assert_int_eq(scram_fake(secret1, 0, "alice", 4096, a), -1);
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, NULL, 4096, a), -1);
    ck_assert_int_eq(scram_fake(secret1, sizeof secret1, "alice", 0, a), -1);
}
END_TEST

START_TEST(test_saslprep)
{
    char out[64];
    /* RFC 4013 §3 examples */
    ck_assert_int_eq(scram_saslprep("I\xC2\xADX", out, sizeof out), 0); /* soft hyphen */
    ck_assert_str_eq(out, "IX");
    ck_assert_int_eq(scram_saslprep("user", out, sizeof out), 0);
    ck_assert_str_eq(out, "user");
    ck_assert_int_eq(scram_saslprep("USER", out, sizeof out), 0); /* case preserved */
    ck_assert_str_eq(out, "USER");
    ck_assert_int_eq(scram_saslprep("\xC2\xAA", out, sizeof out), 0); /* U+00AA -> a */
    ck_assert_str_eq(out, "a");
    ck_assert_int_eq(scram_saslprep("\xE2\x85\xA8", out, sizeof out), 0); /* U+2168 -> IX */
    ck_assert_str_eq(out, "IX");
    ck_assert_int_eq(scram_saslprep("\x07", out, sizeof out), -1);          /* prohibited */
    ck_assert_int_eq(scram_saslprep("\xD8\xA7" "1", out, sizeof out), -1);  /* bidi */
    /* non-ASCII space to SPACE (RFC 4013 §2.1) */
    ck_assert_int_eq(scram_saslprep("a\xE2\x80\x80" "b", out, sizeof out), 0);
    ck_assert_str_eq(out, "a b");
    /* stored string: unassigned code points (U+1F600 in Unicode 3.2) fail */
    ck_assert_int_eq(scram_saslprep("a\xF0\x9F\x98\x80", out, sizeof out), -1);
    /* invalid UTF-8 */
    ck_assert_int_eq(scram_saslprep("a\xC3", out, sizeof out), -1);
    ck_assert_int_eq(scram_saslprep("\xC0\x80", out, sizeof out), -1);
    /* empty stays empty; buffer sizes */
    ck_assert_int_eq(scram_saslprep("", out, sizeof out), 0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(scram_saslprep("I\xC2\xADX", out, 3), 0);
    ck_assert_int_eq(scram_saslprep("I\xC2\xADX", out, 2), -1);
    ck_assert_int_eq(scram_saslprep(NULL, out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64)
{
    /* RFC 4648 §10 vectors */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char out[16];
    unsigned char dec[16];
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        ck_assert_uint_eq(util_b64_encode((const unsigned char *)plain[i], n, out, sizeof out), strlen(enc[i]));
        ck_assert_str_eq(out, enc[i]);
        ck_assert_int_eq(util_b64_decode(enc[i], strlen(enc[i]), dec, sizeof dec), (ssize_t)n);
        ck_assert(memcmp(dec, plain[i], n) == 0);
    }
    /* sizes: exact fit, one short */
    ck_assert_uint_eq(util_b64_encode((const unsigned char *)"foo", 3, out, 5), 4);
    ck_assert_uint_eq(util_b64_encode((const unsigned char *)"foo", 3, out, 4), 0);
    ck_assert_int_eq(util_b64_decode("Zm9vYmFy", 8, dec, 6), 6);
    ck_assert_int_eq(util_b64_decode("Zm9vYmFy", 8, dec, 5), -1);
    ck_assert_int_eq(util_b64_decode("Zm9vYg==", 8, dec, 4), 4);
    ck_assert_int_eq(util_b64_decode("Zm9vYg==", 8, dec, 3), -1);
    /* strictness */
    static const char *const bad[] = {"Zg", "Zg=", "Zg===", "Z===", "====", "Zm9", "Zm9v\n", " Zm9v",
                                      "Zm 9v", "Zh==", "Zm9=", "Zg==Zg==", "Z=g=", "=Zg=", "Zm9-", "Zm9_",
                                      "Zm9v=", "Zm\0v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(util_b64_decode(bad[i], strlen(bad[i]) ? strlen(bad[i]) : 4, dec, sizeof dec) == -1,
                      "accepted \"%s\"", bad[i]);
    /* all byte values round trip */
    unsigned char all[256], back[256];
    char txt[400];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    ck_assert_uint_eq(util_b64_encode(all, 256, txt, sizeof txt), 344);
    ck_assert_int_eq(util_b64_decode(txt, 344, back, sizeof back), 256);
    ck_assert(memcmp(all, back, 256) == 0);
}
END_TEST

START_TEST(test_ct_equal_random)
{
    ck_assert_int_eq(util_ct_equal("abcd", "abcd", 4), 1);
    ck_assert_int_eq(util_ct_equal("abcd", "abce", 4), 0);
    ck_assert_int_eq(util_ct_equal("\x80", "\x00", 1), 0);
    ck_assert_int_eq(util_ct_equal("\xff", "\xfe", 1), 0);
    ck_assert_int_eq(util_ct_equal("x", "y", 0), 1);

    unsigned char a[300], b[300];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    ck_assert_int_eq(util_random(a, sizeof a), 0);
    ck_assert_int_eq(util_random(b, sizeof b), 0);
    ck_assert(memcmp(a, b, sizeof a) != 0);
    ck_assert(util_random_u64() != util_random_u64());
    ck_assert_int_eq(util_random(a, 0), 0);
}
END_TEST

static Suite *scram_suite(void)
{
    Suite *s = suite_create("scram");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_rfc5802_sha1);
    tcase_add_test(tc, test_rfc7677_sha256);
    tcase_add_test(tc, test_mech_names);
    tcase_add_test(tc, test_make_params);
    tcase_add_test(tc, test_make_all_and_check);
    tcase_add_test(tc, test_authpassword_roundtrip);
    tcase_add_test(tc, test_authpassword_malformed);
    tcase_add_test(tc, test_fake);
    tcase_add_test(tc, test_saslprep);
    tcase_add_test(tc, test_base64);
    tcase_add_test(tc, test_ct_equal_random);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(scram_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
