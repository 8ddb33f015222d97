/* scram.h - SCRAM account verifiers (RFC 5802, RFC 7677): derivation from a
 * password, the cyrus-sasl authPassword text form, fake verifiers for
 * unknown users, PLAIN checks, and the client-side proof for tests. */
#ifndef XMPPD_SCRAM_H
#define XMPPD_SCRAM_H

#include <stddef.h>

enum scram_mech { SCRAM_SHA1 = 0, SCRAM_SHA256 = 1, SCRAM_MECH_COUNT = 2 };

#define SCRAM_SALT_MAX 64
#define SCRAM_KEY_MAX 32
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_AUTHPW_MAX 256 /* buffer size for one authPassword line */

struct scram_verifier {
    enum scram_mech mech;
    unsigned iterations;
    unsigned char salt[SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned char stored_key[SCRAM_KEY_MAX];
    unsigned char server_key[SCRAM_KEY_MAX];
    size_t key_len; /* 20 or 32 */
};

/* SASL name of a mechanism ("SCRAM-SHA-1", "SCRAM-SHA-256"); NULL if out of range. */
const char *scram_mech_name(enum scram_mech m);
/* Mechanism for an exact SASL name, -1 if unknown. */
int scram_mech_parse(const char *name);
/* SASLprep (RFC 4013) as a stored string (unassigned code points prohibited); 0 or -1. */
int scram_saslprep(const char *in, char *out, size_t size);
/* Verifier for a password: SASLprep, PBKDF2 to SaltedPassword, then StoredKey and ServerKey; 0 or -1. */
int scram_make(enum scram_mech m, const char *password, const unsigned char *salt, size_t salt_len,
               unsigned iterations, struct scram_verifier *out);
/* One verifier per mechanism, each with a fresh random 16-byte salt; 0 or -1. */
int scram_make_all(const char *password, unsigned iterations, struct scram_verifier out[SCRAM_MECH_COUNT]);
/* Deterministic fake verifiers for an unknown username, shaped like real ones, no PBKDF2; 0 or -1. */
int scram_fake(const unsigned char *secret, size_t secret_len, const char *username, unsigned iterations,
               struct scram_verifier out[SCRAM_MECH_COUNT]);
/* PLAIN check of a password against a verifier: 1 match, 0 mismatch, -1 error. */
int scram_check_password(const struct scram_verifier *v, const char *password);
/* Format "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>"; 0 or -1. */
int scram_to_authpassword(const struct scram_verifier *v, char *out, size_t size);
/* Strict parse of the authPassword form; -1 on anything malformed. */
int scram_from_authpassword(const char *s, size_t len, struct scram_verifier *out);
/* Client side (tests, tools): ClientProof and ServerSignature for an AuthMessage; 0 or -1. */
int scram_client_proof(enum scram_mech m, const char *password, const unsigned char *salt, size_t salt_len,
                       unsigned iterations, const char *auth_message, unsigned char *proof_out,
                       unsigned char *server_sig_out);

#endif
