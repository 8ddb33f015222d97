/* listen_conn.c - one client connection of xmpp-listen: reading (rate
 * limited, into the shared buffer), framing the XML stream into
 * top-level elements handed to c2s (one at a time before authentication,
 * DESIGN §3), the commands c2s sends back (write, STARTTLS, reset,
 * close), the output queue with its slow-reader bound, stream errors,
 * orderly closing, and the periodic timeouts and keepalives. */
#include "config.h"
#include "listen.h"
#include "jid.h"
#include "log.h"
#include "trace.h"
#include "util.h"
#include "xml.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Field bounds of CONN_STREAM / CONN_ELEMENT (msg.c's schema): a value
 * beyond them would make the record unsendable, so we check first. */
#define FIELD_JID_MAX 3072u
#define FIELD_ID_MAX 1024u
#define FIELD_NS_MAX 1024u
#define FIELD_VERSION_MAX 16u
#define FIELD_LANG_MAX 64u

#define RESUME_TOKENS 16384 /* read again once this much may be read (or the whole burst) */
#define OUT_KEEP_CAP 2048   /* an emptied output buffer bigger than this is freed */

#define conn_of(ptr, field) ((struct conn *)(void *)((char *)(ptr) - offsetof(struct conn, field)))

static const char proceed_xml[] = "<proceed xmlns='" NS_TLS "'/>";
static const char close_xml[] = "</stream:stream>";

static int on_stream_open(void *arg, xml_node_t *header);
static int on_element(void *arg, xml_node_t *elem);
static void on_stream_close(void *arg);
static const struct xmlstream_cb stream_cbs = { on_stream_open, on_element, on_stream_close };

static void conn_read(struct conn *c);
static void conn_destroy(struct conn *c);
static void conn_close_gracefully(struct conn *c);

static const struct conf *conf_of(const struct conn *c) { return &c->l->d->conf; }
static uint64_t now_ms(const struct conn *c) { return loop_now_ms(c->l->d->loop); }

/* ---------------- epoll interest ---------------- */

static size_t out_pending(const struct conn *c) { return c->out.len - c->out_off; }

static int wants_input(const struct conn *c)
{
    if (c->handshaking) return !c->hs_want_write;
    if (c->lingering || c->wr_want_read) return 1;
    if (c->closing || c->tls_starting || c->rate_blocked || c->link_blocked) return 0;
    return 1;
}

/* May application data be read now? */
static int may_read(const struct conn *c)
{
    return !c->closing && !c->handshaking && !c->tls_starting && !c->rate_blocked && !c->link_blocked;
}

static int wants_output(const struct conn *c)
{
    if (c->handshaking) return c->hs_want_write;
    if (c->rd_want_write) return 1;
    return !c->lingering && out_pending(c) > 0;
}

static void update_events(struct conn *c)
{
    if (c->dead) return;
    uint32_t ev = (wants_input(c) ? EPOLLIN : 0) | (wants_output(c) ? EPOLLOUT : 0);
    if (ev == c->events) return;
    if (loop_mod_fd(c->l->d->loop, c->fd, ev) < 0) log_warn("epoll_ctl for %s: %s", c->addr, strerror(errno));
    c->events = ev;
}

/* ---------------- records to c2s ---------------- */

static void send_open(struct conn *c)
{
    char sni[256];
    struct msg m;
    msg_init(&m, MSG_CONN_OPEN);
    m.num = c->port;
    if (c->direct_tls) m.flags |= MSG_F_TLS;
    tls_sni(c, sni, sizeof sni);
    msg_set(&m, 0, c->addr);
    msg_set(&m, 1, sni);
    c->open_sent = 1;
    listen_send(c, &m);
}

static void send_closed(struct conn *c, unsigned reason, const char *detail)
{
    if (c->closed_sent || !c->open_sent) return;
    c->closed_sent = 1;
    struct msg m;
    msg_init(&m, MSG_CONN_CLOSED);
    m.num = reason;
    msg_set(&m, 0, detail);
    listen_send(c, &m);
}

/* ---------------- output ---------------- */

/* Queue bytes without the slow-reader check (our own closing words). */
static void conn_append(struct conn *c, const char *p, size_t n)
{
    if (c->dead || n == 0) return;
    if (c->out_off > 0 && c->out_off >= c->out.len / 2) {
        /* compact now rather than memmove on every partial write */
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    buf_add(&c->out, p, n);
    if (c->out.oom) {
        log_err("out of memory queueing output for %s", c->addr);
        conn_abort(c, CLOSE_ERROR, "resource-constraint");
        return;
    }
    c->last_out_ms = now_ms(c);
    if (c->authed && dlist_linked(&c->out_link)) dlist_append(&c->l->authed_out, &c->out_link);
    listen_queue_flush(c);
}

/* RFC 6120 §4.9.1.1: a stream error needs an open stream, so when no
 * response header went out for this stream, send ours first. */
static void ensure_header(struct conn *c)
{
    if (c->header_sent) return;
    const char *domain = c->domain ? c->domain : conf_of(c)->hosts[0].domain;
    struct buf b = { 0 };
    buf_adds(&b, "<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAMS
                 "' version='1.0' from='");
    buf_add_xml_escaped(&b, domain, strlen(domain));
    buf_adds(&b, "'>");
    c->header_sent = 1;
    conn_append(c, b.data, b.len);
    buf_free(&b);
}

/* Can stream-level XML be written now (not before or inside a TLS handshake)? */
static int can_write_stream(const struct conn *c)
{
    return !c->handshaking && !c->tls_starting && !(c->direct_tls && !c->tls_up);
}

static void slow_reader(struct conn *c, size_t more)
{
    c->l->st.slow_readers++;
    log_notice("slow reader %s%s%s: %zu bytes queued and %zu more, closing", c->addr, c->jid ? " " : "",
               c->jid ? c->jid : "", out_pending(c), more);
    /* what is queued is dropped; the error goes out best effort (a TLS
     * record cut in the middle makes that fail, and the socket closes) */
    buf_free(&c->out);
    c->out_off = 0;
    conn_stream_error(c, "policy-violation", "output queue overflow", CLOSE_SLOW_READER);
    conn_flush(c);
    conn_destroy(c);
}

/* Queue bytes for the client, bounded by out_queue_max. */
static void conn_send(struct conn *c, const char *p, size_t n)
{
    if (out_pending(c) + n > conf_of(c)->out_queue_max) {
        slow_reader(c, n);
        return;
    }
    conn_append(c, p, n);
}

static ssize_t plain_write(struct conn *c, const char *p, size_t n)
{
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) return w;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return IO_AGAIN;
    log_debug("write to %s: %s", c->addr, strerror(errno));
    return IO_ERR;
}

static void conn_linger(struct conn *c);
static void begin_tls(struct conn *c);

static void output_drained(struct conn *c)
{
    c->out_off = 0;
    buf_clear(&c->out);
    if (c->out.cap > OUT_KEEP_CAP) buf_free(&c->out); /* idle connections keep no big buffers */
    if (c->tls_starting) begin_tls(c);
    else if (c->closing) conn_linger(c);
    else update_events(c);
}

void conn_flush(struct conn *c)
{
    if (c->dead || c->handshaking || c->lingering) return;
    while (out_pending(c) > 0) {
        const char *p = c->out.data + c->out_off;
        ssize_t n = c->tls_up ? tls_write(c, p, out_pending(c)) : plain_write(c, p, out_pending(c));
        if (n == IO_AGAIN) break;
        if (n <= 0) {
            conn_abort(c, CLOSE_PEER, "write failed");
            return;
        }
        c->out_off += (size_t)n;
        c->l->st.bytes_out += (uint64_t)n;
    }
    if (out_pending(c) == 0) output_drained(c);
    else update_events(c);
}

/* ---------------- closing ---------------- */

static void conn_destroy(struct conn *c)
{
    struct listen *l = c->l;
    if (c->dead) return;
    c->dead = 1;
    c->closing = 1;
    loop_del_fd(l->d->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    if (c->close_timer) loop_timer_cancel(l->d->loop, c->close_timer);
    c->close_timer = NULL;
    dlist_remove(&c->in_link);
    dlist_remove(&c->out_link);
    listen_remove(l, c);
    tls_conn_free(c);
    log_debug("connection %016llx from %s closed", (unsigned long long)c->id, c->addr);
    listen_bury(l, c); /* the parser may be on the stack: free at the turn's end */
}

void conn_abort(struct conn *c, unsigned reason, const char *detail)
{
    if (c->dead) return;
    send_closed(c, reason, detail);
    conn_destroy(c);
}

static void close_timer_fired(loop_t *loop, void *arg)
{
    struct conn *c = arg;
    (void)loop;
    c->close_timer = NULL;
    log_debug("%s: closing after the grace period", c->addr);
    conn_destroy(c);
}

/* Output written: close our side and wait briefly for the client's EOF,
 * so unread input does not turn our last words into a TCP reset. */
static void conn_linger(struct conn *c)
{
    if (c->lingering || c->dead) return;
    c->lingering = 1;
    if (c->tls_up) tls_shutdown(c);
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_destroy(c);
        return;
    }
    update_events(c);
}

static void drain_until_eof(struct conn *c)
{
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(c->fd, c->l->rbuf, LISTEN_READ_BUF, 0);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        conn_destroy(c);
        return;
    }
}

/* Stop reading, write what is queued (bounded by a short timer), close. */
static void conn_close_gracefully(struct conn *c)
{
    if (c->closing) return;
    c->closing = 1;
    dlist_remove(&c->in_link);
    dlist_remove(&c->out_link);
    c->close_timer = loop_timer_add(c->l->d->loop, LISTEN_CLOSE_GRACE_MS, close_timer_fired, c);
    if (out_pending(c) == 0) conn_linger(c);
    else update_events(c);
}

void conn_stream_error(struct conn *c, const char *cond, const char *text, unsigned reason)
{
    if (c->closing) return;
    listen_count_stream_error(c->l, cond);
    log_notice("stream error %s%s%s%s to %s%s%s", cond, text ? " (" : "", text ? text : "", text ? ")" : "",
               c->addr, c->jid ? " " : "", c->jid ? c->jid : "");
    if (!can_write_stream(c)) {
        conn_abort(c, reason, cond);
        return;
    }
    ensure_header(c);
    struct buf b = { 0 };
    stream_error_xml(&b, cond, text);
    buf_adds(&b, close_xml);
    conn_append(c, b.data, b.len);
    buf_free(&b);
    send_closed(c, reason, cond);
    conn_close_gracefully(c);
}

/* ---------------- the parser's callbacks ---------------- */

/* Drop what was received but not parsed, and start a fresh parser: after
 * <starttls/> and SASL success nothing sent earlier may be read as if it
 * came later (RFC 6120 §5.4.3.3, DESIGN §3). */
static void discard_input(struct conn *c)
{
    buf_free(&c->in);
    xmlstream_reset(c->xs);
    xmlstream_set_pause(c->xs, !c->authed);
    c->waiting = 0;
    c->stream_seen = 0;
    c->header_sent = 0;
}

/* RFC 6120 §4.7.5: "major.minor"; a major version above ours (1) is
 * refused. No version at all means a pre-1.0 client: c2s decides. */
static int version_supported(const char *v)
{
    if (!v) return 1;
    const char *dot = strchr(v, '.');
    if (!dot || dot == v || !dot[1] || strspn(v, "0123456789") != (size_t)(dot - v) ||
        strspn(dot + 1, "0123456789") != strlen(dot + 1) || strlen(v) > FIELD_VERSION_MAX)
        return 0;
    return strtoul(v, NULL, 10) <= 1;
}

/* The stream's 'to' (RFC 6120 §4.7.2) as a served domain, or NULL. */
static const struct conf_host *served_host(struct conn *c, const char *to)
{
    struct jid j;
    if (!to || jid_parse(to, strlen(to), &j) < 0 || j.has_local || j.has_resource) return NULL;
    return conf_host(conf_of(c), j.domain, strlen(j.domain));
}

static int on_stream_open(void *arg, xml_node_t *h)
{
    struct conn *c = arg;
    if (c->closing) goto out;
    const char *to = xml_attr(h, "to"), *from = xml_attr(h, "from"), *version = xml_attr(h, "version");
    const char *lang = xml_attr_ns(h, XML_NS_XML, "lang");
    const char *content_ns = xmlstream_content_ns(c->xs);
    if (!content_ns || strcmp(content_ns, NS_CLIENT) != 0) {
        /* RFC 6120 §4.8.2, §4.9.3.10: this port speaks jabber:client only */
        conn_stream_error(c, "invalid-namespace", NULL, CLOSE_ERROR);
        goto out;
    }
    if (!version_supported(version)) {
        /* RFC 6120 §4.9.3.25 */
        conn_stream_error(c, "unsupported-version", NULL, CLOSE_ERROR);
        goto out;
    }
    const struct conf_host *host = served_host(c, to);
    if (!host) {
        /* RFC 6120 §4.9.3.6 */
        conn_stream_error(c, "host-unknown", NULL, CLOSE_ERROR);
        goto out;
    }
    char *domain = strdup(host->domain);
    if (!domain) {
        conn_stream_error(c, "resource-constraint", NULL, CLOSE_ERROR);
        goto out;
    }
    free(c->domain);
    c->domain = domain;
    /* 'from' is only a hint (RFC 6120 §4.7.1) and a language tag this long
     * is no language: pass neither rather than refuse the client */
    if (from && strlen(from) > FIELD_JID_MAX) from = NULL;
    if (lang && strlen(lang) > FIELD_LANG_MAX) lang = NULL;
    struct msg m;
    msg_init(&m, MSG_CONN_STREAM);
    if (c->tls_up) m.flags |= MSG_F_TLS;
    msg_set(&m, 0, domain);
    msg_set(&m, 1, from);
    msg_set(&m, 2, version);
    msg_set(&m, 3, lang);
    if (listen_send(c, &m) < 0) {
        conn_stream_error(c, "bad-format", NULL, CLOSE_ERROR);
        goto out;
    }
    c->stream_seen = 1;
    c->header_sent = 0;
    if (!c->authed) c->waiting = 1;
out:
    xml_free(h);
    return c->closing ? -1 : 0; /* stop parsing a stream we are closing */
}

static unsigned element_kind(const xml_node_t *e)
{
    if (!e->ns || strcmp(e->ns, NS_CLIENT) != 0) return KIND_OTHER;
    if (strcmp(e->name, "message") == 0) return KIND_MESSAGE;
    if (strcmp(e->name, "presence") == 0) return KIND_PRESENCE;
    if (strcmp(e->name, "iq") == 0) return KIND_IQ;
    return KIND_OTHER;
}

/* Trace step 1: the element as parsed, from the session's full JID. */
static void trace_in(struct conn *c, const struct msg *m, const char *to, const char *action)
{
    char norm[JID_STR_MAX];
    if (to && jid_normalize(to, strlen(to), norm, sizeof norm) == 0) to = norm;
    trace_line(1, m->kind, m->stype, c->jid, to, m->trace, 0, &m->f[3], "%s", action);
}

/* Hand one top-level element to c2s in its canonical serialization
 * (DESIGN §3 "parse once"), without the 'from' a client never chooses
 * (RFC 6120 §8.1.2.1: the server stamps it). */
static void forward_element(struct conn *c, xml_node_t *e)
{
    struct buf body = { 0 };
    unsigned kind = element_kind(e);
    xml_set_attr(e, "from", NULL);
    const char *to = xml_attr(e, "to"), *id = xml_attr(e, "id");
    const xml_node_t *child = xml_first_elem(e);
    const char *ns = child && child->ns ? child->ns : "";
    if ((to && strlen(to) > FIELD_JID_MAX) || (id && strlen(id) > FIELD_ID_MAX) || strlen(ns) > FIELD_NS_MAX) {
        conn_stream_error(c, "policy-violation", "attribute too long", CLOSE_ERROR);
        goto out;
    }
    if (xml_serialize(e, &body, NULL) < 0 || body.oom) {
        conn_stream_error(c, "resource-constraint", NULL, CLOSE_ERROR);
        goto out;
    }
    struct msg m;
    msg_init(&m, MSG_CONN_ELEMENT);
    m.kind = (uint8_t)kind;
    m.stype = (uint8_t)(kind == KIND_OTHER ? STYPE_NONE : stanza_type_parse(kind, xml_attr(e, "type")));
    msg_set(&m, 0, to);
    msg_set(&m, 1, id);
    msg_set(&m, 2, ns);
    msg_setn(&m, 3, body.data, body.len);
    /* DESIGN §5: whether a client stanza is traced is decided here, once */
    if (trace_active() && c->bound && kind != KIND_OTHER && trace_match_raw(c->jid, to, to ? strlen(to) : 0)) {
        m.flags |= MSG_F_TRACED;
        m.trace = trace_new_id();
    }
    if (listen_send(c, &m) < 0) {
        /* bigger than a record may carry (max_stanza_size above it) */
        if (m.flags & MSG_F_TRACED) trace_in(c, &m, to, "drop: too large for a record, stream closed");
        conn_stream_error(c, "policy-violation", "stanza too large", CLOSE_ERROR);
        goto out;
    }
    if (m.flags & MSG_F_TRACED) {
        char action[32];
        snprintf(action, sizeof action, "->c2s-%u", c->link->number);
        trace_in(c, &m, to, action);
    }
    c->l->st.elements_in++;
    if (!c->authed) c->waiting = 1;
out:
    buf_free(&body);
}

static int on_element(void *arg, xml_node_t *e)
{
    struct conn *c = arg;
    if (!c->closing) forward_element(c, e);
    xml_free(e);
    return c->closing ? -1 : 0;
}

static void on_stream_close(void *arg)
{
    struct conn *c = arg;
    if (c->closing) return;
    log_debug("%s closed its stream", c->addr);
    ensure_header(c);
    conn_append(c, close_xml, sizeof close_xml - 1);
    send_closed(c, CLOSE_PEER, "");
    conn_close_gracefully(c);
}

static void parse_error(struct conn *c)
{
    enum xmlstream_err e = xmlstream_error(c->xs);
    const char *cond = xmlstream_err_condition(e);
    const char *why = xmlstream_error_text(c->xs);
    log_info("%s: XML stream rejected: %s", c->addr, why && *why ? why : cond);
    conn_stream_error(c, cond, NULL, CLOSE_ERROR);
}

/* ---------------- input ---------------- */

/* DESIGN §10: an idle connection need not keep its libxml2 context
 * (about 15 KiB); xmlstream_idle frees it when no partial element is held
 * and the next bytes recreate it. Doing this after every read costs a
 * busy connection some CPU (a read of one small stanza parses in 4.1 µs
 * instead of 1.6 µs, measured), but deferring it lets a burst of logins
 * hold thousands of contexts at once, and that peak stays in RSS. */
static void parser_rest(struct conn *c)
{
    xmlstream_idle(c->xs);
}

/* Feed what is buffered, one element at a time while c2s must decide. */
static void parse_buffered(struct conn *c)
{
    while (c->in.len > 0 && !c->waiting && !c->closing) {
        ssize_t used = xmlstream_feed(c->xs, c->in.data, c->in.len);
        if (c->closing) return; /* a callback closed it */
        if (used < 0) {
            parse_error(c);
            return;
        }
        buf_consume(&c->in, (size_t)used);
        if (used == 0) break;
    }
    if (c->in.len == 0 && !c->closing) {
        buf_free(&c->in);
        parser_rest(c);
    }
}

static void conn_input(struct conn *c, const char *data, size_t n)
{
    if (!c->authed || c->waiting || c->in.len > 0) {
        /* pre-auth: keep what follows the element c2s is deciding on,
         * bounded like one stanza */
        if (c->in.len + n > conf_of(c)->max_stanza_size) {
            conn_stream_error(c, "policy-violation", "too much unprocessed input", CLOSE_ERROR);
            return;
        }
        buf_add(&c->in, data, n);
        if (c->in.oom) {
            conn_stream_error(c, "resource-constraint", NULL, CLOSE_ERROR);
            return;
        }
        parse_buffered(c);
        return;
    }
    /* authenticated: parse straight from the shared read buffer */
    ssize_t used = xmlstream_feed(c->xs, data, n);
    if (c->closing) return;
    if (used < 0) {
        parse_error(c);
        return;
    }
    if ((size_t)used < n) buf_add(&c->in, data + used, n - (size_t)used);
    else parser_rest(c);
}

int conn_refill(struct conn *c, uint64_t now)
{
    const struct conf *conf = conf_of(c);
    if (now > c->refill_ms) {
        uint64_t elapsed = now - c->refill_ms;
        if (elapsed > 3600000) elapsed = 3600000; /* keeps the product in range */
        c->tokens += (int64_t)(elapsed * conf->read_rate / 1000);
        if (c->tokens > (int64_t)conf->read_burst) c->tokens = (int64_t)conf->read_burst;
        c->refill_ms = now;
    }
    int64_t enough = (int64_t)conf->read_burst < RESUME_TOKENS ? (int64_t)conf->read_burst : RESUME_TOKENS;
    return c->tokens >= enough;
}

static void rate_block(struct conn *c)
{
    c->rate_blocked = 1;
    c->l->st.rate_pauses++;
    log_debug("%s: read rate limit reached, pausing input", c->addr);
    listen_rate_wait(c);
}

static ssize_t plain_read(struct conn *c, char *buf, size_t len)
{
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0) return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return IO_AGAIN;
    log_debug("read from %s: %s", c->addr, strerror(errno));
    return IO_ERR;
}

static void note_input(struct conn *c, size_t n, uint64_t now)
{
    c->tokens -= (int64_t)n;
    c->l->st.bytes_in += n;
    c->last_in_ms = now;
    if (dlist_linked(&c->in_link)) dlist_append(c->authed ? &c->l->authed_in : &c->l->preauth_in, &c->in_link);
}

static void conn_read(struct conn *c)
{
    struct listen *l = c->l;
    uint64_t now = now_ms(c);
    size_t total = 0;
    if (c->link->blocked && !c->link_blocked) {
        c->link_blocked = 1;
        listen_link_wait(c);
    }
    while (may_read(c)) {
        conn_refill(c, now);
        if (c->tokens <= 0) {
            rate_block(c);
            break;
        }
        size_t want = (uint64_t)c->tokens < LISTEN_READ_BUF ? (size_t)c->tokens : LISTEN_READ_BUF;
        ssize_t n = c->tls_up ? tls_read(c, l->rbuf, want) : plain_read(c, l->rbuf, want);
        if (n == IO_AGAIN) break;
        if (n == IO_EOF || n < 0) {
            log_debug("%s: %s", c->addr, n == IO_EOF ? "end of file" : "read error");
            conn_abort(c, CLOSE_PEER, "");
            return;
        }
        note_input(c, (size_t)n, now);
        conn_input(c, l->rbuf, (size_t)n);
        if (c->closing) return;
        total += (size_t)n;
        /* plain sockets come back through level-triggered epoll; TLS
         * records read ahead must be drained here (or queued below) */
        if (!c->tls_up || total >= LISTEN_READ_BUF) break;
    }
    if (c->tls_up && may_read(c) && tls_has_pending(c)) listen_queue_read(c);
    update_events(c);
}

void conn_read_ready(struct conn *c)
{
    if (!c->dead && may_read(c)) conn_read(c);
}

void conn_resume_read(struct conn *c)
{
    if (c->dead) return;
    update_events(c);
    /* OpenSSL may hold decrypted bytes that epoll will never announce */
    if (may_read(c)) listen_queue_read(c);
}

/* ---------------- TLS ---------------- */

static void handshake_step(struct conn *c)
{
    int r = tls_handshake(c);
    if (r == 0) {
        update_events(c);
        return;
    }
    if (r < 0) {
        /* OpenSSL wrote its alert; a lingering close lets the client read
         * it instead of a TCP reset caused by its unread bytes */
        c->l->st.tls_failed++;
        c->handshaking = 0;
        send_closed(c, CLOSE_ERROR, "tls-handshake-failed");
        conn_close_gracefully(c);
        return;
    }
    char desc[128];
    c->handshaking = 0;
    c->tls_up = 1;
    c->l->st.tls_ok++;
    log_debug("%s: TLS up (%s)", c->addr, tls_describe(c, desc, sizeof desc));
    if (!c->open_sent) send_open(c);
    update_events(c);
    /* the client's first stream header may have come with its Finished */
    listen_queue_read(c);
}

/* <proceed/> is on the wire: only TLS records may follow (RFC 6120 §5.4.3.3). */
static void begin_tls(struct conn *c)
{
    c->tls_starting = 0;
    if (tls_conn_start(c) < 0) {
        conn_abort(c, CLOSE_ERROR, "internal-server-error");
        return;
    }
    c->handshaking = 1;
    handshake_step(c);
}

/* ---------------- commands from c2s ---------------- */

/* Pre-auth: c2s is done with the element; parse the next one. */
static void release_next(struct conn *c)
{
    if (!c->waiting) return;
    c->waiting = 0;
    parse_buffered(c);
    if (!c->closing) update_events(c);
}

/* Trace step 8: a traced stanza queued for the client's socket (written
 * at the end of this loop turn), or why not. */
static void trace_out(struct conn *c, const struct msg *m, const char *dropped)
{
    xml_node_t *e = xml_parse(m->f[0].p, m->f[0].n, NS_CLIENT); /* our own canonical XML */
    const char *from = e ? xml_attr(e, "from") : NULL;
    if (dropped) trace_line(8, m->kind, m->stype, from, c->jid, m->trace, 0, &m->f[0], "drop: %s", dropped);
    else trace_line(8, m->kind, m->stype, from, c->jid, m->trace, 0, &m->f[0], "written %u bytes", m->f[0].n);
    xml_free(e);
}

static void cmd_send(struct conn *c, const struct msg *m)
{
    if (c->stream_seen) c->header_sent = 1; /* the first send answers the stream header */
    conn_send(c, m->f[0].p, m->f[0].n);
    if (m->flags & MSG_F_TRACED) trace_out(c, m, c->closing ? "slow reader, connection closed" : NULL);
    if (!c->closing && (m->flags & MSG_F_NEXT)) release_next(c);
}

static void cmd_starttls(struct conn *c)
{
    if (c->ssl || c->tls_starting) {
        conn_stream_error(c, "policy-violation", "TLS is already active", CLOSE_ERROR);
        return;
    }
    conn_append(c, proceed_xml, sizeof proceed_xml - 1);
    if (c->dead) return;
    discard_input(c);
    c->tls_starting = 1; /* no reading until <proceed/> is written and TLS begins */
    update_events(c);
}

static void mark_authed(struct conn *c, const struct msg_str *jid)
{
    struct listen *l = c->l;
    c->authed = 1;
    free(c->jid);
    c->jid = util_strndup_safe(jid->p, jid->n);
    xmlstream_set_pause(c->xs, 0);
    if (dlist_linked(&c->in_link)) dlist_append(&l->authed_in, &c->in_link);
    dlist_append(&l->authed_out, &c->out_link);
    log_info("%s authenticated as %s", c->addr, c->jid ? c->jid : "?");
}

static void cmd_reset(struct conn *c, const struct msg *m)
{
    if (m->f[0].n) conn_send(c, m->f[0].p, m->f[0].n);
    if (c->closing) return;
    if ((m->flags & MSG_F_AUTHED) && !c->authed) mark_authed(c, &m->f[1]);
    discard_input(c);
    update_events(c);
}

static void cmd_close(struct conn *c, const struct msg *m)
{
    char cond[65], text[1025];
    if (!msg_str(m, 0, cond, sizeof cond)) cond[0] = '\0';
    if (!msg_str(m, 1, text, sizeof text)) text[0] = '\0';
    if (!cond[0]) {
        if (can_write_stream(c)) {
            ensure_header(c);
            conn_append(c, close_xml, sizeof close_xml - 1);
        }
        send_closed(c, CLOSE_PEER, "");
        conn_close_gracefully(c);
        return;
    }
    if (stream_error_parse(cond, strlen(cond)) == STE_NONE) {
        log_warn("c2s asked to close %s with unknown condition '%s'", c->addr, cond);
        strcpy(cond, "undefined-condition");
    }
    conn_stream_error(c, cond, text[0] ? text : NULL,
                      strcmp(cond, "conflict") == 0 ? CLOSE_KICKED : CLOSE_ERROR);
}

static void cmd_bound(struct conn *c, const struct msg *m)
{
    /* XEP-0078 (protocol 3): authenticated and bound at once, and no
     * stream restart follows, so the parser is kept */
    if ((m->flags & MSG_F_AUTHED) && !c->authed) mark_authed(c, &m->f[0]);
    char *jid = util_strndup_safe(m->f[0].p, m->f[0].n);
    if (!jid) return;
    free(c->jid);
    c->jid = jid;
    c->bound = 1;
}

void conn_command(struct conn *c, const struct msg *m)
{
    if (c->closing) {
        if (m->flags & MSG_F_TRACED) trace_out(c, m, "connection closing");
        log_debug("%s for closing connection %s ignored", msg_type_name(m->type), c->addr);
        return;
    }
    switch (m->type) {
    case MSG_CONN_SEND: cmd_send(c, m); break;
    case MSG_CONN_STARTTLS: cmd_starttls(c); break;
    case MSG_CONN_RESET: cmd_reset(c, m); break;
    case MSG_CONN_CLOSE: cmd_close(c, m); break;
    case MSG_CONN_NEXT: release_next(c); break;
    case MSG_CONN_BOUND: cmd_bound(c, m); break;
    default: break;
    }
}

/* ---------------- life cycle ---------------- */

struct conn *conn_new(struct listen *l, int fd, const char *addr, uint16_t port, int direct_tls,
                      struct c2s_link *link)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    uint64_t now = loop_now_ms(l->d->loop);
    c->l = l;
    c->id = listen_next_id(l);
    c->fd = fd;
    c->link = link;
    c->port = port;
    c->direct_tls = direct_tls ? 1 : 0;
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->last_in_ms = c->last_out_ms = c->refill_ms = now;
    c->tokens = (int64_t)l->d->conf.read_burst;
    c->xs = xmlstream_new(&l->limits, &stream_cbs, c);
    if (!c->xs) goto fail;
    xmlstream_set_pause(c->xs, 1);
    if (direct_tls && tls_conn_start(c) < 0) goto fail;
    if (listen_add(l, c) < 0) goto fail;
    if (loop_add_fd(l->d->loop, fd, EPOLLIN, conn_io, c) < 0) {
        listen_remove(l, c);
        goto fail;
    }
    c->events = EPOLLIN;
    c->handshaking = c->direct_tls;
    dlist_append(&l->preauth_in, &c->in_link);
    l->st.conns_total++;
    log_debug("connection %016llx from %s on port %u (c2s-%u)", (unsigned long long)c->id, addr, port,
              link->number);
    if (!direct_tls) send_open(c); /* a direct TLS connection is announced once TLS is up */
    return c;
fail:
    tls_conn_free(c);
    if (c->xs) xmlstream_free(c->xs);
    free(c);
    return NULL;
}

void conn_free(struct conn *c)
{
    xmlstream_free(c->xs);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c->domain);
    free(c->jid);
    free(c);
}

void conn_io(loop_t *loop, int fd, uint32_t events, void *arg)
{
    struct conn *c = arg;
    (void)loop;
    (void)fd;
    if (c->dead) return;
    if (c->handshaking) {
        handshake_step(c);
        return;
    }
    if (c->lingering) {
        drain_until_eof(c);
        return;
    }
    /* epoll reports a hang-up or error even when we do not ask for input */
    if ((events & (EPOLLHUP | EPOLLERR)) && !wants_input(c)) {
        log_debug("%s: connection reset", c->addr);
        conn_abort(c, CLOSE_PEER, "");
        return;
    }
    if ((events & EPOLLOUT) || (c->wr_want_read && (events & EPOLLIN))) {
        c->wr_want_read = 0;
        conn_flush(c);
        if (c->dead || c->lingering) return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || (c->rd_want_write && (events & EPOLLOUT))) {
        c->rd_want_write = 0;
        conn_read(c);
    }
}

void conn_keepalive(struct conn *c)
{
    /* RFC 6120 §4.6.1: whitespace between elements keeps NATs open and
     * lets a dead TCP peer be noticed */
    if (!c->closing && c->authed) conn_send(c, " ", 1);
}

static void conn_timeout(struct conn *c, const char *why)
{
    c->l->st.timeouts++;
    log_info("%s: %s, closing", c->addr, why);
    /* RFC 6120 §4.9.3.4 */
    conn_stream_error(c, "connection-timeout", NULL, CLOSE_TIMEOUT);
    dlist_remove(&c->in_link); /* progress even if it could not close */
}

/* The in lists are ordered by last input and the out list by last
 * output, so each sweep stops at the first connection not yet due. */
void conn_sweep(struct listen *l, uint64_t now)
{
    const struct conf *conf = &l->d->conf;
    uint64_t hs = (uint64_t)conf->handshake_timeout_secs * 1000;
    uint64_t idle = (uint64_t)conf->idle_timeout_secs * 1000;
    uint64_t ka = (uint64_t)conf->keepalive_secs * 1000;
    while (l->preauth_in.next != &l->preauth_in) {
        struct conn *c = conn_of(l->preauth_in.next, in_link);
        if (now - c->last_in_ms < hs) break;
        conn_timeout(c, "nothing received before authentication");
    }
    while (idle && l->authed_in.next != &l->authed_in) {
        struct conn *c = conn_of(l->authed_in.next, in_link);
        if (now - c->last_in_ms < idle) break;
        conn_timeout(c, "idle");
    }
    while (ka && l->authed_out.next != &l->authed_out) {
        struct conn *c = conn_of(l->authed_out.next, out_link);
        if (now - c->last_out_ms < ka) break;
        conn_keepalive(c);
        if (now - c->last_out_ms >= ka) dlist_remove(&c->out_link); /* progress, whatever happened */
    }
}
