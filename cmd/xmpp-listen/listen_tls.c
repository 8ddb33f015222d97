/* listen_tls.c - TLS for xmpp-listen with OpenSSL 3: one SSL_CTX per
 * served host (its certificate chain and key), chosen by SNI; ALPN
 * "xmpp-client" on the direct TLS port (XEP-0368); the non-blocking
 * handshake, read and write on the event loop, with WANT_READ and
 * WANT_WRITE recorded on the connection so listen_conn.c waits for the
 * right readiness. Reloading builds new contexts; connections keep a
 * reference to the one they started with. */
#include "config.h"
#include "listen.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* TLS 1.2 suites: forward secret (ECDHE) and AEAD only. TLS 1.3 suites
 * are all forward secret; OpenSSL's defaults for them stay. */
#define TLS12_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:P-384"
#define ALPN_XMPP_CLIENT "xmpp-client"

struct tls_host {
    char *domain;
    SSL_CTX *ctx;
};

struct listen_tls {
    struct tls_host *hosts; /* hosts[0], the first configured domain, is the default */
    size_t n;
};

/* The OpenSSL error queue as one line (and emptied). */
static const char *ssl_errors(char *out, size_t size)
{
    size_t used = 0;
    unsigned long e;
    out[0] = '\0';
    while ((e = ERR_get_error()) != 0 && used + 2 < size) {
        if (used) out[used++] = ';', out[used++] = ' ';
        ERR_error_string_n(e, out + used, size - used);
        used += strlen(out + used);
    }
    if (!used) snprintf(out, size, "no details from OpenSSL");
    return out;
}

/* ---------------- callbacks ---------------- */

/* SNI (RFC 6066 §3): switch to the context of the named host; an unknown
 * name keeps the default host's (the stream's 'to' is checked later). */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct listen *l = arg;
    (void)alert;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !l->tls) return SSL_TLSEXT_ERR_NOACK;
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    for (size_t i = 0; i < l->tls->n; i++) {
        const struct tls_host *h = &l->tls->hosts[i];
        if (strlen(h->domain) != n || strncasecmp(h->domain, name, n) != 0) continue;
        if (SSL_get_SSL_CTX(ssl) != h->ctx) SSL_set_SSL_CTX(ssl, h->ctx);
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ALPN (XEP-0368 §3): a client that names protocols must name
 * "xmpp-client" on the direct TLS port, or the handshake fails with
 * no_application_protocol (RFC 7301 §3.2). On the STARTTLS port ALPN
 * is not part of XMPP: accept xmpp-client if offered, ignore the rest. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    const struct conn *c = SSL_get_app_data(ssl);
    const size_t want = sizeof ALPN_XMPP_CLIENT - 1;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == want && memcmp(in + i + 1, ALPN_XMPP_CLIENT, want) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    if (c && c->direct_tls) {
        log_info("%s: TLS ALPN without xmpp-client refused", c->addr);
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---------------- contexts ---------------- */

static SSL_CTX *ctx_new(struct listen *l, const char *domain, const char *cert, const char *key)
{
    char err[512];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_err("tls: cannot create a context: %s", ssl_errors(err, sizeof err));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                             SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* DESIGN §10: releasing idle buffers takes an idle session from
     * about 46 KiB to 14 KiB; partial and moving writes suit a queue
     * that is compacted between attempts */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* resumption through stateless tickets only: no server-side cache to grow */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
        log_err("tls: cannot set ciphers or groups: %s", ssl_errors(err, sizeof err));
        goto fail;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, l);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, l);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_err("tls: %s: cannot load the certificate chain %s: %s", domain, cert, ssl_errors(err, sizeof err));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_err("tls: %s: cannot load the private key %s: %s", domain, key, ssl_errors(err, sizeof err));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_err("tls: %s: the key %s does not match the certificate %s", domain, key, cert);
        goto fail;
    }
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_release(struct listen_tls *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        SSL_CTX_free(t->hosts[i].ctx); /* connections hold their own references */
        free(t->hosts[i].domain);
    }
    free(t->hosts);
    free(t);
}

struct listen_tls *tls_load(struct listen *l, const struct conf *conf)
{
    struct listen_tls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->hosts = calloc(conf->n_hosts, sizeof *t->hosts);
    if (!t->hosts) goto fail;
    for (size_t i = 0; i < conf->n_hosts; i++) {
        const struct conf_host *h = &conf->hosts[i];
        char cert[4096], key[4096];
        conf_tls_paths(conf, h, cert, key, sizeof cert);
        struct tls_host *th = &t->hosts[t->n];
        th->domain = strdup(h->domain);
        if (!th->domain) goto fail;
        th->ctx = ctx_new(l, h->domain, cert, key);
        if (!th->ctx) {
            free(th->domain);
            goto fail;
        }
        t->n++;
        log_info("tls: %s: certificate %s", h->domain, cert);
    }
    if (t->n == 0) goto fail;
    return t;
fail:
    tls_release(t);
    return NULL;
}

/* ---------------- connections ---------------- */

int tls_conn_start(struct conn *c)
{
    char err[256];
    SSL *ssl = SSL_new(c->l->tls->hosts[0].ctx);
    if (!ssl) {
        log_err("tls: SSL_new: %s", ssl_errors(err, sizeof err));
        return -1;
    }
    if (SSL_set_fd(ssl, c->fd) != 1) {
        log_err("tls: SSL_set_fd: %s", ssl_errors(err, sizeof err));
        SSL_free(ssl);
        return -1;
    }
    SSL_set_app_data(ssl, c);
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    return 0;
}

void tls_conn_free(struct conn *c)
{
    if (!c->ssl) return;
    SSL_free(c->ssl);
    c->ssl = NULL;
}

/* Why a TLS operation failed, for the log. */
static const char *failure(int code, char *out, size_t size)
{
    if (code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && !errno)) {
        snprintf(out, size, "connection closed by the client");
        return out;
    }
    if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(out, size, "%s", strerror(errno));
        return out;
    }
    return ssl_errors(out, size);
}

int tls_handshake(struct conn *c)
{
    char err[512];
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->hs_want_write = 0;
        return 1;
    }
    int code = SSL_get_error(c->ssl, r);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = code == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    log_info("%s: TLS handshake failed: %s", c->addr, failure(code, err, sizeof err));
    ERR_clear_error();
    return -1;
}

ssize_t tls_read(struct conn *c, char *buf, size_t len)
{
    char err[512];
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (r > 0) return r;
    int code = SSL_get_error(c->ssl, r);
    switch (code) {
    case SSL_ERROR_WANT_READ:
        return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->rd_want_write = 1;
        return IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return IO_EOF;
    default:
        log_debug("%s: TLS read: %s", c->addr, failure(code, err, sizeof err));
        ERR_clear_error();
        return IO_ERR;
    }
}

ssize_t tls_write(struct conn *c, const char *buf, size_t len)
{
    char err[512];
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (r > 0) return r;
    int code = SSL_get_error(c->ssl, r);
    switch (code) {
    case SSL_ERROR_WANT_WRITE:
        return IO_AGAIN;
    case SSL_ERROR_WANT_READ:
        c->wr_want_read = 1;
        return IO_AGAIN;
    default:
        log_debug("%s: TLS write: %s", c->addr, failure(code, err, sizeof err));
        ERR_clear_error();
        return IO_ERR;
    }
}

int tls_has_pending(struct conn *c) { return c->ssl && SSL_has_pending(c->ssl); }

void tls_shutdown(struct conn *c)
{
    if (!c->ssl) return;
    ERR_clear_error();
    SSL_shutdown(c->ssl); /* best effort: we do not wait for the client's close_notify */
    ERR_clear_error();
}

void tls_sni(struct conn *c, char *out, size_t size)
{
    out[0] = '\0';
    const char *name = c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    if (!name) return;
    size_t n = 0;
    for (; name[n] && n + 1 < size; n++) {
        unsigned char ch = (unsigned char)name[n];
        /* a host name (RFC 6066 §3) is LDH labels; anything else is not passed on */
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_') {
            out[0] = '\0';
            return;
        }
        out[n] = (char)tolower(ch);
    }
    out[n] = '\0';
}

const char *tls_describe(struct conn *c, char *out, size_t size)
{
    if (!c->ssl) return "no TLS";
    snprintf(out, size, "%s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
    return out;
}
