/*
 * xmppd-bench -- load and benchmark client for XMPP servers (any server).
 *
 * It is used to measure xmppd and to compare it with other servers (Prosody)
 * on the same machine.  It logs in N accounts (PREFIX1..PREFIXN) over TCP,
 * STARTTLS or direct TLS, authenticates with SASL SCRAM-SHA-1/SCRAM-SHA-256
 * or PLAIN, binds resource "b", sends initial presence, and then runs one of
 * these scenarios:
 *
 *   login    log in all users, report logins/s, close
 *   idle     keep all sessions open for --duration s, report server KiB/session
 *   chat     pairs (1<->2, 3<->4, ...) exchange messages as fast as the server
 *            delivers them, at most --window unacknowledged per sender;
 *            report throughput, loss, reordering, latency, server CPU
 *   latency  like chat but paced at --rate messages/s in total
 *   presence users whose rosters form a ring (user i has the contacts
 *            i+-1..i+-K/2, subscription both) change presence at --rate
 *            changes/s; report broadcasts/s, deliveries/s, latency, loss
 *
 * With --roster-get every session fetches its roster after bind and waits
 * for it before initial presence (login then ends at the roster result).
 * --print-roster prints the contact ring as `xmppctl roster-import` lines.
 *
 * Design: one thread, one epoll set, edge-triggered non-blocking sockets,
 * OpenSSL 3 for TLS and for the SCRAM primitives.  The XML handling is not a
 * full parser: it splits the byte stream into complete top-level elements
 * (tracking depth, quotes, PIs, comments and CDATA) and then inspects those
 * elements with small search helpers.  Only loopback addresses are accepted
 * as targets: this tool must never send traffic to another machine.
 *
 * Build: make tests/bench/xmppd-bench   (links -lssl -lcrypto)
 * See tests/bench/README for usage and for what each reported figure means.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_DIRECT };
enum mech { MECH_SCRAM_SHA256, MECH_SCRAM_SHA1, MECH_PLAIN };
enum scenario { SC_LOGIN, SC_IDLE, SC_CHAT, SC_LATENCY, SC_PRESENCE };

static const char *const mech_names[] = { "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN" };
static const char *const tls_names[] = { "none", "starttls", "direct" };
static const char *const scenario_names[] = { "login", "idle", "chat", "latency", "presence" };

#define MAX_PIDS 64
#define IN_CHUNK 16384               /* minimum free space for one read */
#define MAX_ELEMENT (4u << 20)       /* refuse top-level elements above 4 MiB */
#define MAX_READS_PER_EVENT 32       /* fairness bound for one connection */
#define MAX_ERRORS_PRINTED 20

static struct config {
	const char *host;
	int port;
	const char *domain;
	unsigned users;
	const char *prefix;
	const char *password;
	enum tls_mode tls;
	enum mech mech;
	enum scenario scenario;
	double duration;
	double rate;
	unsigned window;
	double connect_rate;
	unsigned max_pending;
	double login_timeout;
	double drain_timeout;
	int npids;
	int pids[MAX_PIDS];
	bool json;
	bool quiet;
	bool do_register;
	bool roster_get;      /* fetch the roster after bind, before presence */
	bool print_roster;    /* print the contact ring and exit */
	bool window_given;
	unsigned contacts;    /* presence: contacts per user (even) */
	double settle_quiet;  /* presence: seconds without presence = storm over */
	double settle_timeout;
} cfg = {
	.host = "127.0.0.1",
	.port = 5222,
	.domain = "localhost",
	.users = 100,
	.prefix = "bench",
	.password = "bench",
	.tls = TLS_STARTTLS,
	.mech = MECH_SCRAM_SHA1,
	.scenario = SC_LOGIN,
	.duration = 10,
	.rate = 1000,
	.window = 16,
	.connect_rate = 500,
	.max_pending = 200,
	.login_timeout = 120,
	.drain_timeout = 5,
	.contacts = 50,
	.settle_quiet = 1,
	.settle_timeout = 300,
};

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */
/* ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("xmppd-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

static char *xstrndup(const char *s, size_t n)
{
	char *r = xmalloc(n + 1);
	memcpy(r, s, n);
	r[n] = 0;
	return r;
}

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	return s;
}

/* Growable byte buffer; data[off..len) is live. */
struct buf {
	char *data;
	size_t off, len, cap;
};

static void buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Make room for at least `extra` more bytes at the tail. */
static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->off > 0 && (b->off == b->len || b->cap - b->len < extra)) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->cap - b->len >= extra)
		return;
	size_t ncap = b->cap ? b->cap : 1024;
	while (ncap - b->len < extra)
		ncap *= 2;
	b->data = xrealloc(b->data, ncap);
	b->cap = ncap;
}

static void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room = b->cap - b->len;
	int n = -1;
	if (room >= 64) {
		va_start(ap, fmt);
		n = vsnprintf(b->data + b->len, room, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
	}
	if (n < 0) {
		va_start(ap, fmt);
		n = vsnprintf(NULL, 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			die("vsnprintf failed");
	}
	buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* XML-escape s into a fresh string. */
static char *xml_escape(const char *s)
{
	struct buf b = { 0 };
	for (; *s; s++) {
		switch (*s) {
		case '&': buf_puts(&b, "&amp;"); break;
		case '<': buf_puts(&b, "&lt;"); break;
		case '>': buf_puts(&b, "&gt;"); break;
		case '\'': buf_puts(&b, "&apos;"); break;
		case '"': buf_puts(&b, "&quot;"); break;
		default: buf_append(&b, s, 1);
		}
	}
	buf_append(&b, "", 1);
	return b.data;
}

/* ------------------------------------------------------------------ */
/* Base64 (RFC 4648, with padding)                                     */
/* ------------------------------------------------------------------ */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* out must hold 4*((n+2)/3)+1 bytes; returns length. */
static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = 0;
	return o;
}

static int b64_val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

/* Decodes ignoring whitespace; returns length or -1. out holds n bytes+1. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	long o = 0;
	bool pad = false;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)in[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad = true;
			continue;
		}
		int v = b64_val(c);
		if (v < 0 || pad)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	out[o] = 0;
	return o;
}

/* ------------------------------------------------------------------ */
/* Latency histogram: log-linear, 128 sub-buckets per power of two,    */
/* values in microseconds (relative error < 0.8 %).                     */
/* ------------------------------------------------------------------ */

#define HIST_SUB 128
#define HIST_BUCKETS (2 * HIST_SUB + 56 * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	int msb = 63 - __builtin_clzll(v);
	int shift = msb - 7;  /* v >> shift in [128, 256) */
	unsigned idx = 2 * HIST_SUB + (unsigned)(shift - 1) * HIST_SUB +
		       (unsigned)((v >> shift) - HIST_SUB);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Upper bound of a bucket's value range. */
static uint64_t hist_value(unsigned idx)
{
	if (idx < 2 * HIST_SUB)
		return idx;
	unsigned shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
	uint64_t sub = (idx - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
	return ((sub + 1) << shift) - 1;
}

static void hist_add(struct hist *h, uint64_t us)
{
	h->b[hist_index(us)]++;
	h->count++;
	if (us > h->max)
		h->max = us;
}

static double hist_pct_ms(const struct hist *h, double pct)
{
	if (!h->count)
		return 0;
	uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->count);
	if (want < 1)
		want = 1;
	uint64_t acc = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want) {
			uint64_t v = hist_value(i);
			if (v > h->max)
				v = h->max;
			return (double)v / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

/* ------------------------------------------------------------------ */
/* Streaming splitter for top-level XML elements                       */
/* ------------------------------------------------------------------ */

enum { PS_TEXT, PS_TAGSTART, PS_TAG, PS_SPECIAL };
enum { TK_OPEN, TK_CLOSE, TK_PI, TK_COMMENT, TK_CDATA };
enum { EV_NONE, EV_HEADER, EV_ELEMENT, EV_STREAM_END, EV_ERROR };

/* Indices are absolute offsets into the connection's input buffer. */
struct xparse {
	size_t pos;        /* next byte to look at */
	size_t tag_start;  /* '<' of the tag being scanned */
	size_t elem_start; /* '<' of the current top-level element */
	int depth;         /* 0 = outside stream, 1 = stream level */
	uint8_t st, kind;
	char quote;
};

static void xp_reset(struct xparse *p, size_t at)
{
	memset(p, 0, sizeof(*p));
	p->pos = at;
	p->elem_start = at;
	p->tag_start = at;
}

/*
 * Advance over d[p->pos..len).  Returns EV_HEADER (stream open tag in
 * [*s,*e)), EV_ELEMENT (complete top-level element in [*s,*e)),
 * EV_STREAM_END, EV_ERROR, or EV_NONE when more input is needed.  Every
 * iteration of the loop consumes at least one byte or returns, so it is
 * bounded by the buffer length.
 */
static int xp_next(struct xparse *p, const char *d, size_t len, size_t *s, size_t *e)
{
	static const char *const term[] = { [TK_PI] = "?>", [TK_COMMENT] = "-->", [TK_CDATA] = "]]>" };
	while (p->pos < len) {
		switch (p->st) {
		case PS_TEXT: {
			const char *lt = memchr(d + p->pos, '<', len - p->pos);
			if (!lt) {
				p->pos = len;
				return EV_NONE;
			}
			p->tag_start = (size_t)(lt - d);
			if (p->depth == 1)
				p->elem_start = p->tag_start;
			p->pos = p->tag_start + 1;
			p->st = PS_TAGSTART;
			break;
		}
		case PS_TAGSTART: {
			char c = d[p->pos];
			p->quote = 0;
			if (c == '/') {
				p->kind = TK_CLOSE;
				p->pos++;
				p->st = PS_TAG;
			} else if (c == '?') {
				p->kind = TK_PI;
				p->pos++;
				p->st = PS_SPECIAL;
			} else if (c == '!') {
				size_t avail = len - p->pos;
				if (avail >= 3 && memcmp(d + p->pos, "!--", 3) == 0) {
					p->kind = TK_COMMENT;
					p->pos += 3;
					p->st = PS_SPECIAL;
				} else if (avail >= 8 && memcmp(d + p->pos, "![CDATA[", 8) == 0) {
					if (p->depth < 2)
						return EV_ERROR;
					p->kind = TK_CDATA;
					p->pos += 8;
					p->st = PS_SPECIAL;
				} else if ((avail < 3 && memcmp(d + p->pos, "!--", avail) == 0) ||
					   (avail < 8 && memcmp(d + p->pos, "![CDATA[", avail) == 0)) {
					return EV_NONE;  /* wait for more bytes */
				} else {
					return EV_ERROR; /* DOCTYPE and friends are not allowed */
				}
			} else {
				p->kind = TK_OPEN;
				p->st = PS_TAG;
			}
			break;
		}
		case PS_SPECIAL: {
			const char *t = term[p->kind];
			size_t tl = strlen(t);
			const char *f = memmem(d + p->pos, len - p->pos, t, tl);
			if (!f) {
				/* keep the last tl-1 bytes: the terminator may be split */
				if (len - p->pos >= tl)
					p->pos = len - (tl - 1);
				return EV_NONE;
			}
			p->pos = (size_t)(f - d) + tl;
			p->st = PS_TEXT;
			break;
		}
		case PS_TAG: {
			size_t i = p->pos;
			char q = p->quote;
			for (; i < len; i++) {
				char c = d[i];
				if (q) {
					if (c == q)
						q = 0;
				} else if (c == '"' || c == '\'') {
					q = c;
				} else if (c == '>') {
					break;
				}
			}
			if (i >= len) {
				p->pos = len;
				p->quote = q;
				return EV_NONE;
			}
			p->quote = 0;
			p->pos = i + 1;
			p->st = PS_TEXT;
			if (p->kind == TK_CLOSE) {
				if (p->depth <= 0)
					return EV_ERROR;
				p->depth--;
				if (p->depth == 0)
					return EV_STREAM_END;
				if (p->depth == 1) {
					*s = p->elem_start;
					*e = p->pos;
					return EV_ELEMENT;
				}
			} else if (i > p->tag_start + 1 && d[i - 1] == '/') {
				if (p->depth == 0)
					return EV_ERROR;
				if (p->depth == 1) {
					*s = p->elem_start;
					*e = p->pos;
					return EV_ELEMENT;
				}
			} else {
				p->depth++;
				if (p->depth == 1) {
					*s = p->tag_start;
					*e = p->pos;
					return EV_HEADER;
				}
			}
			break;
		}
		}
	}
	return EV_NONE;
}

/* ------------------------------------------------------------------ */
/* Helpers to inspect one complete element held in [s, e)              */
/* ------------------------------------------------------------------ */

struct span {
	const char *p;
	size_t n;
};

static bool is_name_end(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '/' || c == '>';
}

/* Local name (prefix stripped) of the tag starting at s ('<'). */
static struct span tag_name(const char *s, const char *e)
{
	const char *p = s + 1, *start = p;
	while (p < e && !is_name_end(*p)) {
		if (*p == ':')
			start = p + 1;
		p++;
	}
	return (struct span){ start, (size_t)(p - start) };
}

static bool span_eq(struct span a, const char *lit)
{
	size_t n = strlen(lit);
	return a.n == n && memcmp(a.p, lit, n) == 0;
}

/* End of the start tag beginning at s: pointer to its '>' (quote aware). */
static const char *tag_end(const char *s, const char *e)
{
	char q = 0;
	for (const char *p = s; p < e; p++) {
		if (q) {
			if (*p == q)
				q = 0;
		} else if (*p == '"' || *p == '\'') {
			q = *p;
		} else if (*p == '>') {
			return p;
		}
	}
	return e;
}

/* Raw (still escaped) value of attribute `name` in the start tag at s. */
static bool get_attr(const char *s, const char *e, const char *name, struct span *out)
{
	const char *te = tag_end(s, e);
	const char *p = s + 1;
	size_t nl = strlen(name);
	while (p < te && !is_name_end(*p))
		p++;
	while (p < te) {
		while (p < te && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '/'))
			p++;
		const char *an = p;
		while (p < te && *p != '=' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			p++;
		size_t anl = (size_t)(p - an);
		while (p < te && *p != '=')
			p++;
		if (p >= te)
			return false;
		p++;
		while (p < te && *p != '"' && *p != '\'')
			p++;
		if (p >= te)
			return false;
		char q = *p++;
		const char *v = p;
		while (p < te && *p != q)
			p++;
		if (anl == nl && memcmp(an, name, nl) == 0) {
			out->p = v;
			out->n = (size_t)(p - v);
			return true;
		}
		p++;
	}
	return false;
}

/*
 * Find the next descendant start tag whose local name is `name` in (from, e).
 * Sets *cs to its '<'; returns false if none.  '<' cannot occur unescaped in
 * attribute values or text, so scanning for '<' is safe outside CDATA.
 */
static bool find_tag(const char *from, const char *e, const char *name, const char **cs)
{
	const char *p = from;
	while (p < e) {
		const char *lt = memchr(p, '<', (size_t)(e - p));
		if (!lt)
			return false;
		if (lt + 1 < e && lt[1] != '/' && lt[1] != '?' && lt[1] != '!') {
			struct span n = tag_name(lt, e);
			if (span_eq(n, name)) {
				*cs = lt;
				return true;
			}
		}
		p = lt + 1;
	}
	return false;
}

/* Text content of the (simple) element starting at cs. */
static struct span elem_text(const char *cs, const char *e)
{
	const char *te = tag_end(cs, e);
	if (te >= e || te[-1] == '/')
		return (struct span){ te, 0 };
	const char *t = te + 1;
	const char *lt = memchr(t, '<', (size_t)(e - t));
	if (!lt)
		lt = e;
	return (struct span){ t, (size_t)(lt - t) };
}

/* First child element's local name other than <text/> (for error conditions). */
static struct span error_condition(const char *s, const char *e)
{
	const char *p = tag_end(s, e);
	while (p < e) {
		const char *lt = memchr(p, '<', (size_t)(e - p));
		if (!lt || lt + 1 >= e)
			break;
		if (lt[1] != '/') {
			struct span n = tag_name(lt, e);
			if (!span_eq(n, "text") && n.n)
				return n;
		}
		p = lt + 1;
	}
	return (struct span){ "unknown", 7 };
}

/* Copy of XML text with the five predefined entities and &#N; decoded. */
static char *xml_unescape(const char *p, size_t n)
{
	char *o = xmalloc(n + 1), *w = o;
	static const struct { const char *ent; char c; } ents[] = {
		{ "&lt;", '<' }, { "&gt;", '>' }, { "&amp;", '&' }, { "&apos;", '\'' }, { "&quot;", '"' },
	};
	for (size_t i = 0; i < n;) {
		bool done = false;
		if (p[i] == '&') {
			for (size_t k = 0; k < sizeof(ents) / sizeof(ents[0]) && !done; k++) {
				size_t l = strlen(ents[k].ent);
				if (i + l <= n && memcmp(p + i, ents[k].ent, l) == 0) {
					*w++ = ents[k].c;
					i += l;
					done = true;
				}
			}
			if (!done && i + 3 < n && p[i + 1] == '#') {
				const char *semi = memchr(p + i, ';', n - i);
				unsigned long v = strtoul(p + i + 2 + (p[i + 2] == 'x'), NULL, p[i + 2] == 'x' ? 16 : 10);
				if (semi && v > 0 && v < 128) {
					*w++ = (char)v;
					i = (size_t)(semi - p) + 1;
					done = true;
				}
			}
		}
		if (!done)
			*w++ = p[i++];
	}
	*w = 0;
	return o;
}

/* "condition (text)" description of an error element, malloc'ed. */
static char *describe_error(const char *s, const char *e)
{
	struct span c = error_condition(s, e);
	const char *t;
	if (find_tag(tag_end(s, e), e, "text", &t)) {
		struct span tx = elem_text(t, e);
		char *u = xml_unescape(tx.p, tx.n > 300 ? 300 : tx.n);
		char *r = xasprintf("%.*s (%s)", (int)c.n, c.p, u);
		free(u);
		return r;
	}
	return xasprintf("%.*s", (int)c.n, c.p);
}

/* ------------------------------------------------------------------ */
/* SCRAM (RFC 5802 / RFC 7677)                                         */
/* ------------------------------------------------------------------ */

struct scram {
	char cnonce[48];
	char *client_first_bare;
	unsigned char server_sig[EVP_MAX_MD_SIZE];
	unsigned sig_len;
	bool verified;
};

/*
 * Cache of derived keys.  PBKDF2 is deliberately slow (about 2.5 ms for
 * 10,000 SHA-1 iterations here), so one client core could otherwise not log
 * in more than a few hundred accounts per second when every account has its
 * own salt, and the login figure would measure the client.  Keys are cached
 * per (mechanism, salt, iteration count) for the run, and with --key-cache
 * FILE across runs (the comparison script does an untimed warm-up login).
 */
struct scram_keys {
	enum mech mech;
	unsigned iter;
	size_t salt_len;
	unsigned char salt[64];
	unsigned char client_key[EVP_MAX_MD_SIZE];
	unsigned char stored_key[EVP_MAX_MD_SIZE];
	unsigned char server_key[EVP_MAX_MD_SIZE];
};
static struct scram_keys **kc_tab;
static size_t kc_cap, kc_n;
static bool kc_changed;
static uint64_t pbkdf2_runs, key_cache_loaded;
static const char *key_cache_file;
static struct buf kc_foreign;  /* cache lines for other passwords, kept as they are */

static const EVP_MD *mech_md(enum mech m)
{
	return m == MECH_SCRAM_SHA256 ? EVP_sha256() : EVP_sha1();
}

static size_t kc_slot(enum mech m, const unsigned char *salt, size_t salt_len, unsigned iter)
{
	uint64_t h = 1469598103934665603ull ^ iter ^ ((uint64_t)m << 40);
	for (size_t i = 0; i < salt_len; i++)
		h = (h ^ salt[i]) * 1099511628211ull;
	return (size_t)(h & (kc_cap - 1));
}

static struct scram_keys *kc_find(enum mech m, const unsigned char *salt, size_t salt_len, unsigned iter)
{
	if (!kc_cap)
		return NULL;
	for (size_t i = kc_slot(m, salt, salt_len, iter), n = 0; n < kc_cap; i = (i + 1) & (kc_cap - 1), n++) {
		struct scram_keys *k = kc_tab[i];
		if (!k)
			return NULL;
		if (k->mech == m && k->iter == iter && k->salt_len == salt_len &&
		    memcmp(k->salt, salt, salt_len) == 0)
			return k;
	}
	return NULL;
}

static void kc_put(struct scram_keys *k)
{
	if (2 * (kc_n + 1) > kc_cap) {
		size_t ocap = kc_cap;
		struct scram_keys **old = kc_tab;
		kc_cap = kc_cap ? 2 * kc_cap : 1024;
		kc_tab = calloc(kc_cap, sizeof(*kc_tab));
		if (!kc_tab)
			die("out of memory");
		for (size_t i = 0; i < ocap; i++) {
			if (!old[i])
				continue;
			size_t j = kc_slot(old[i]->mech, old[i]->salt, old[i]->salt_len, old[i]->iter);
			while (kc_tab[j])
				j = (j + 1) & (kc_cap - 1);
			kc_tab[j] = old[i];
		}
		free(old);
	}
	size_t j = kc_slot(k->mech, k->salt, k->salt_len, k->iter);
	while (kc_tab[j])
		j = (j + 1) & (kc_cap - 1);
	kc_tab[j] = k;
	kc_n++;
}

static const struct scram_keys *scram_derive(enum mech m, const unsigned char *salt,
					     size_t salt_len, unsigned iter)
{
	static struct scram_keys scratch;  /* for salts too long to cache */
	struct scram_keys *k = kc_find(m, salt, salt_len, iter);
	if (k)
		return k;
	k = salt_len <= sizeof(k->salt) ? xmalloc(sizeof(*k)) : &scratch;
	const EVP_MD *md = mech_md(m);
	int hl = EVP_MD_get_size(md);
	unsigned char salted[EVP_MAX_MD_SIZE];
	unsigned int ol;
	if (!PKCS5_PBKDF2_HMAC(cfg.password, (int)strlen(cfg.password), salt, (int)salt_len,
			       (int)iter, md, hl, salted))
		die("PBKDF2 failed");
	pbkdf2_runs++;
	HMAC(md, salted, hl, (const unsigned char *)"Client Key", 10, k->client_key, &ol);
	EVP_Digest(k->client_key, (size_t)hl, k->stored_key, &ol, md, NULL);
	HMAC(md, salted, hl, (const unsigned char *)"Server Key", 10, k->server_key, &ol);
	OPENSSL_cleanse(salted, sizeof(salted));
	if (k == &scratch)
		return k;
	k->mech = m;
	k->iter = iter;
	k->salt_len = salt_len;
	memcpy(k->salt, salt, salt_len);
	kc_put(k);
	kc_changed = true;
	return k;
}

/* Fingerprint of the password, so that a key cache file is only used for
 * the password it was made with. */
static void password_fp(char out[17])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl;
	char *in = xasprintf("xmppd-bench key cache:%s", cfg.password);
	EVP_Digest(in, strlen(in), d, &dl, EVP_sha256(), NULL);
	free(in);
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void hex_put(FILE *f, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", p[i]);
}

static long hex_get(const char *h, unsigned char *out, size_t max)
{
	size_t n = strlen(h);
	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return (long)(n / 2);
}

/* Line format: MECH ITER PWFP SALT_HEX CLIENT_KEY_HEX SERVER_KEY_HEX */
static void key_cache_load(void)
{
	FILE *f = fopen(key_cache_file, "r");
	if (!f)
		return;
	char fp[17], line[1024], mech[32], fpl[32], sh[260], ch[260], vh[260];
	unsigned iter;
	password_fp(fp);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%31s %u %31s %259s %259s %259s", mech, &iter, fpl, sh, ch, vh) != 6)
			continue;
		enum mech m;
		if (!strcmp(mech, "SCRAM-SHA-1"))
			m = MECH_SCRAM_SHA1;
		else if (!strcmp(mech, "SCRAM-SHA-256"))
			m = MECH_SCRAM_SHA256;
		else
			continue;
		if (strcmp(fpl, fp) != 0) {
			if (strchr(line, '\n'))
				buf_puts(&kc_foreign, line);
			continue;
		}
		struct scram_keys *k = xmalloc(sizeof(*k));
		int hl = EVP_MD_get_size(mech_md(m));
		long sl = hex_get(sh, k->salt, sizeof(k->salt));
		unsigned int ol;
		if (sl <= 0 || hex_get(ch, k->client_key, sizeof(k->client_key)) != hl ||
		    hex_get(vh, k->server_key, sizeof(k->server_key)) != hl ||
		    kc_find(m, k->salt, (size_t)sl, iter)) {
			free(k);
			continue;
		}
		k->mech = m;
		k->iter = iter;
		k->salt_len = (size_t)sl;
		EVP_Digest(k->client_key, (size_t)hl, k->stored_key, &ol, mech_md(m), NULL);
		kc_put(k);
		key_cache_loaded++;
	}
	fclose(f);
}

static void key_cache_save(void)
{
	if (!key_cache_file || !kc_changed)
		return;
	char *tmp = xasprintf("%s.tmp.%d", key_cache_file, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		fprintf(stderr, "xmppd-bench: cannot write key cache %s: %s\n", tmp, strerror(errno));
		free(tmp);
		return;
	}
	char fp[17];
	password_fp(fp);
	if (kc_foreign.len)
		fwrite(kc_foreign.data, 1, kc_foreign.len, f);
	for (size_t i = 0; i < kc_cap; i++) {
		struct scram_keys *k = kc_tab[i];
		if (!k)
			continue;
		size_t hl = (size_t)EVP_MD_get_size(mech_md(k->mech));
		fprintf(f, "%s %u %s ", mech_names[k->mech], k->iter, fp);
		hex_put(f, k->salt, k->salt_len);
		fputc(' ', f);
		hex_put(f, k->client_key, hl);
		fputc(' ', f);
		hex_put(f, k->server_key, hl);
		fputc('\n', f);
	}
	if (fclose(f) != 0 || rename(tmp, key_cache_file) != 0) {
		fprintf(stderr, "xmppd-bench: cannot write key cache %s: %s\n", key_cache_file, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
}

/* Value of "x=" attribute in a SCRAM message (comma separated). */
static bool scram_attr(const char *msg, size_t n, char key, struct span *out)
{
	const char *p = msg, *e = msg + n;
	while (p < e) {
		const char *c = memchr(p, ',', (size_t)(e - p));
		if (!c)
			c = e;
		if (c - p >= 2 && p[0] == key && p[1] == '=') {
			out->p = p + 2;
			out->n = (size_t)(c - p - 2);
			return true;
		}
		p = c + 1;
	}
	return false;
}

/* SASLname escaping of the user name ('=' -> =3D, ',' -> =2C). */
static void scram_name(struct buf *b, const char *u)
{
	for (; *u; u++) {
		if (*u == '=')
			buf_puts(b, "=3D");
		else if (*u == ',')
			buf_puts(b, "=2C");
		else
			buf_append(b, u, 1);
	}
}

/* ------------------------------------------------------------------ */
/* Connections and global state                                        */
/* ------------------------------------------------------------------ */

enum cstate {
	CS_INIT,      /* not started */
	CS_CONNECT,   /* TCP connect in progress */
	CS_TLS,       /* TLS handshake in progress */
	CS_STREAM,    /* stream header sent, waiting for header + features */
	CS_STARTTLS,  /* <starttls/> sent */
	CS_REGISTER,  /* XEP-0077 iq set sent */
	CS_AUTH,      /* SASL in progress */
	CS_BIND,      /* bind iq sent */
	CS_SESSION,   /* legacy session iq sent */
	CS_ROSTER,    /* roster get sent (--roster-get) */
	CS_PRESENCE,  /* presence + ping sent; waiting for the ping reply */
	CS_READY,     /* logged in and available */
	CS_DONE,      /* closed by us */
	CS_FAILED,
};

static const char *const state_names[] = {
	"init", "connect", "tls-handshake", "stream-features", "starttls", "register",
	"sasl", "bind", "session", "roster", "presence", "ready", "done", "failed",
};

struct conn {
	int fd;
	uint32_t idx;
	uint8_t state;
	bool tls_on, authed, registered, dirty, readq, session_needed;
	bool mech_offered, register_offered;
	SSL *ssl;
	struct buf in, out;
	struct xparse xp;
	struct scram *scram;
	char *jid;         /* bound full JID */
	char *msg_prefix;  /* "<message type='chat' to='PARTNER'><body>seq:" */
	uint64_t t_start;  /* connect start */
	/* As a sender in chat/latency (one direction per sender): */
	uint64_t sent, delivered, max_seq;
	uint32_t roster_items;  /* items in the roster result (--roster-get) */
};

/* presence scenario: one presence change and what became of it */
struct pchange {
	uint32_t user;
	uint32_t expected;  /* contacts ready when it was sent */
	uint32_t received;  /* deliveries to those contacts */
	uint64_t t_sent;
};

static struct global {
	int ep;
	SSL_CTX *ssl_ctx;
	struct conn *c;
	uint32_t *dirty, ndirty;
	uint32_t *readq, *readq2, nreadq;
	unsigned started, pending, bound, ready, failed, dropped;
	unsigned errors_printed;
	char *first_error;
	uint64_t t_login_start, t_last_bind, t_all_ready;
	struct hist login_lat;
	struct hist lat;
	struct hist bcast_lat;    /* presence: send -> last expected delivery */
	bool sending;
	uint64_t t_run_start, t_run_end, t_drain_end;
	uint64_t total_sent, total_delivered, delivered_in_period, reordered;
	uint64_t error_msgs;
	uint64_t scheduled, skipped, rr;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	size_t domain_len;
	char *hdr;        /* stream header */
	size_t hdr_len;
	/* --roster-get */
	uint64_t roster_items_total;
	uint32_t roster_items_min, roster_items_max;
	unsigned roster_mismatch;          /* presence: roster size != ring */
	/* presence scenario */
	struct pchange *chg;
	size_t nchg, chg_cap;
	uint64_t presence_in;              /* presence stanzas received, all */
	uint64_t presence_in_settle;       /* ... during login + settling */
	uint64_t t_last_presence;
	uint64_t expected_total, deliveries, deliveries_in_period;
	uint64_t completed, completed_in_period, inflight_skipped;
	uint64_t unexpected, extra, self_echo;
	double settle_s;                   /* first connect -> last presence before the run */
	bool settle_timed_out;
} g;

static void mark_dirty(struct conn *c)
{
	if (!c->dirty) {
		c->dirty = true;
		g.dirty[g.ndirty++] = c->idx;
	}
}

static void username_of(unsigned idx, char *out, size_t n)
{
	snprintf(out, n, "%s%u", cfg.prefix, idx + 1);
}

/*
 * The contact ring of the presence scenario (and of --print-roster): users
 * i and j (0-based) are contacts, with subscription both, when their
 * distance around the ring of N users is 1..K/2.
 */
static bool ring_contact(unsigned i, unsigned j)
{
	if (i == j)
		return false;
	unsigned d = i > j ? i - j : j - i;
	if (cfg.users - d < d)
		d = cfg.users - d;
	return d <= cfg.contacts / 2;
}

/* The contacts of user i into out (room for cfg.contacts); their number,
 * min(K, N-1) for every user. */
static unsigned ring_contacts(unsigned i, uint32_t *out)
{
	unsigned n = 0, half = cfg.contacts / 2, nu = cfg.users;
	for (unsigned d = 1; d <= half && d < nu; d++)
		out[n++] = (i + d) % nu;
	for (unsigned d = 1; d <= half && d < nu; d++)
		if (nu - d > half)
			out[n++] = (i + nu - d) % nu;
	return n;
}

static void print_roster(void)
{
	static char obuf[1 << 16];
	uint32_t *ct = xmalloc((cfg.contacts + 1) * sizeof(*ct));
	setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
	for (unsigned i = 0; i < cfg.users; i++) {
		unsigned n = ring_contacts(i, ct);
		for (unsigned k = 0; k < n; k++)
			printf("%s%u@%s\t%s%u@%s\tboth\n", cfg.prefix, i + 1, cfg.domain, cfg.prefix, ct[k] + 1,
			       cfg.domain);
	}
	free(ct);
	if (fflush(stdout) != 0 || ferror(stdout))
		die("writing the roster lines failed: %s", strerror(errno));
}

static void report_error(const char *msg)
{
	if (!g.first_error)
		g.first_error = strdup(msg);
	if (g.errors_printed < MAX_ERRORS_PRINTED)
		fprintf(stderr, "xmppd-bench: %s\n", msg);
	else if (g.errors_printed == MAX_ERRORS_PRINTED)
		fprintf(stderr, "xmppd-bench: (further errors not shown)\n");
	g.errors_printed++;
}

static void conn_close_fd(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);  /* also removes it from the epoll set */
		c->fd = -1;
	}
	buf_free(&c->in);
	buf_free(&c->out);
	if (c->scram) {
		free(c->scram->client_first_bare);
		free(c->scram);
		c->scram = NULL;
	}
}

static bool is_logging_in(const struct conn *c)
{
	return c->state >= CS_CONNECT && c->state <= CS_PRESENCE;
}

__attribute__((format(printf, 2, 3)))
static void conn_fail(struct conn *c, const char *fmt, ...)
{
	if (c->state == CS_FAILED || c->state == CS_DONE)
		return;
	char user[128], *why, *msg;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) < 0)
		die("out of memory");
	va_end(ap);
	username_of(c->idx, user, sizeof(user));
	msg = xasprintf("user %s@%s (state %s): %s", user, cfg.domain, state_names[c->state], why);
	report_error(msg);
	free(why);
	free(msg);
	if (is_logging_in(c))
		g.pending--;
	else if (c->state == CS_READY) {
		g.dropped++;
		g.ready--;
	}
	c->state = CS_FAILED;
	g.failed++;
	conn_close_fd(c);
}

/* ------------------------------------------------------------------ */
/* I/O                                                                  */
/* ------------------------------------------------------------------ */

static const char *ssl_err_string(void)
{
	static char b[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return errno ? strerror(errno) : "unexpected EOF";
	ERR_error_string_n(e, b, sizeof(b));
	ERR_clear_error();
	return b;
}

/* Write as much of c->out as the socket takes.  Returns false if c failed. */
static bool conn_flush(struct conn *c)
{
	if (c->fd < 0 || c->state == CS_CONNECT || c->state == CS_TLS)
		return c->fd >= 0;
	for (int guard = 0; c->out.len > c->out.off && guard < 1024; guard++) {
		size_t n = c->out.len - c->out.off;
		if (c->tls_on) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out.data + c->out.off, n > INT_MAX ? INT_MAX : (int)n);
			if (r <= 0) {
				int err = SSL_get_error(c->ssl, r);
				if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
					return true;
				conn_fail(c, "TLS write failed: %s", ssl_err_string());
				return false;
			}
			c->out.off += (size_t)r;
		} else {
			ssize_t r = write(c->fd, c->out.data + c->out.off, n);
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return true;
				conn_fail(c, "write failed: %s", strerror(errno));
				return false;
			}
			c->out.off += (size_t)r;
		}
	}
	if (c->out.off == c->out.len) {
		c->out.off = c->out.len = 0;
		if (cfg.scenario == SC_IDLE && c->state == CS_READY)
			buf_free(&c->out);
	}
	return true;
}

static void send_stream_header(struct conn *c)
{
	buf_append(&c->out, g.hdr, g.hdr_len);
	xp_reset(&c->xp, c->in.len);
	c->state = CS_STREAM;
	mark_dirty(c);
}

static void tls_step(struct conn *c);
static void conn_read(struct conn *c);

static void tls_begin(struct conn *c)
{
	c->ssl = SSL_new(g.ssl_ctx);
	if (!c->ssl) {
		conn_fail(c, "SSL_new failed: %s", ssl_err_string());
		return;
	}
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, cfg.domain);
	SSL_set_connect_state(c->ssl);
	c->state = CS_TLS;
	/* Plaintext that arrived after <proceed/> would be an injection. */
	c->in.off = c->in.len = 0;
	xp_reset(&c->xp, 0);
	tls_step(c);
}

static void tls_step(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->tls_on = true;
		send_stream_header(c);
		conn_flush(c);
		if (c->fd >= 0)
			conn_read(c);  /* data may already be buffered inside OpenSSL */
		return;
	}
	int err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return;
	conn_fail(c, "TLS handshake failed: %s", ssl_err_string());
}

/* ------------------------------------------------------------------ */
/* XMPP protocol steps                                                 */
/* ------------------------------------------------------------------ */

static void start_auth(struct conn *c)
{
	char user[128];
	username_of(c->idx, user, sizeof(user));
	const char *ns = "urn:ietf:params:xml:ns:xmpp-sasl";
	if (cfg.mech == MECH_PLAIN) {
		struct buf raw = { 0 };
		buf_append(&raw, "", 1);
		buf_puts(&raw, user);
		buf_append(&raw, "", 1);
		buf_puts(&raw, cfg.password);
		char *enc = xmalloc(4 * (raw.len + 2) / 3 + 4);
		b64_encode((unsigned char *)raw.data, raw.len, enc);
		buf_printf(&c->out, "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>", ns, enc);
		free(enc);
		buf_free(&raw);
	} else {
		unsigned char rnd[24];
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			die("RAND_bytes failed");
		struct scram *s = calloc(1, sizeof(*s));
		if (!s)
			die("out of memory");
		b64_encode(rnd, sizeof(rnd), s->cnonce);
		struct buf b = { 0 };
		buf_puts(&b, "n=");
		scram_name(&b, user);
		buf_printf(&b, ",r=%s", s->cnonce);
		buf_append(&b, "", 1);
		s->client_first_bare = b.data;
		size_t gl = strlen(s->client_first_bare) + 3;
		char *first = xasprintf("n,,%s", s->client_first_bare);
		char *enc = xmalloc(4 * (gl + 2) / 3 + 4);
		b64_encode((unsigned char *)first, gl, enc);
		buf_printf(&c->out, "<auth xmlns='%s' mechanism='%s'>%s</auth>", ns,
			   mech_names[cfg.mech], enc);
		free(enc);
		free(first);
		c->scram = s;
	}
	c->state = CS_AUTH;
	mark_dirty(c);
}

static void start_register(struct conn *c)
{
	char user[128];
	username_of(c->idx, user, sizeof(user));
	char *u = xml_escape(user), *p = xml_escape(cfg.password);
	buf_printf(&c->out,
		   "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
		   "<username>%s</username><password>%s</password></query></iq>", u, p);
	free(u);
	free(p);
	c->state = CS_REGISTER;
	mark_dirty(c);
}

static void handle_features(struct conn *c, const char *s, const char *e)
{
	const char *t;
	if (!c->tls_on && cfg.tls == TLS_STARTTLS) {
		if (!find_tag(s + 1, e, "starttls", &t)) {
			conn_fail(c, "server does not offer STARTTLS");
			return;
		}
		buf_puts(&c->out, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
		c->state = CS_STARTTLS;
		mark_dirty(c);
		return;
	}
	if (!c->authed) {
		c->mech_offered = false;
		c->register_offered = find_tag(s + 1, e, "register", &t);
		const char *p = s + 1;
		struct buf offered = { 0 };
		while (find_tag(p, e, "mechanism", &t)) {
			struct span m = elem_text(t, e);
			if (span_eq(m, mech_names[cfg.mech]))
				c->mech_offered = true;
			if (offered.len)
				buf_puts(&offered, " ");
			buf_append(&offered, m.p, m.n);
			p = t + 1;
		}
		buf_append(&offered, "", 1);
		if (!c->mech_offered) {
			conn_fail(c, "server does not offer SASL mechanism %s (offered: %s)%s",
				  mech_names[cfg.mech], offered.data,
				  offered.len > 1 ? "" : "; does it require TLS or allow_plaintext_auth?");
			buf_free(&offered);
			return;
		}
		buf_free(&offered);
		if (cfg.do_register && !c->registered) {
			start_register(c);
			return;
		}
		start_auth(c);
		return;
	}
	/* Authenticated stream: bind. */
	if (!find_tag(s + 1, e, "bind", &t)) {
		conn_fail(c, "server does not offer resource binding");
		return;
	}
	/* RFC 3921 session establishment only if offered without <optional/>. */
	c->session_needed = false;
	if (find_tag(s + 1, e, "session", &t)) {
		const char *te = tag_end(t, e);
		c->session_needed = true;
		if (te < e && te[-1] != '/') {
			const char *close = memmem(te, (size_t)(e - te), "</", 2);
			const char *o;
			if (close && find_tag(te, close, "optional", &o))
				c->session_needed = false;
		}
	}
	buf_puts(&c->out, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			  "<resource>b</resource></bind></iq>");
	c->state = CS_BIND;
	mark_dirty(c);
}

static void scram_challenge(struct conn *c, const char *s, const char *e)
{
	struct span txt = elem_text(s, e);
	unsigned char *dec = xmalloc(txt.n + 1);
	long dl = b64_decode(txt.p, txt.n, dec);
	struct scram *sc = c->scram;
	if (dl < 0) {
		conn_fail(c, "undecodable SASL challenge");
		goto out;
	}
	if (!sc) {
		conn_fail(c, "unexpected SASL challenge");
		goto out;
	}
	if (sc->sig_len) {
		/* Server-final-message sent as a challenge (RFC 6120 6.3.10 style). */
		struct span v;
		unsigned char sig[2 * EVP_MAX_MD_SIZE + 4];
		if (!scram_attr((char *)dec, (size_t)dl, 'v', &v) || v.n > 2 * EVP_MAX_MD_SIZE ||
		    b64_decode(v.p, v.n, sig) != (long)sc->sig_len ||
		    CRYPTO_memcmp(sig, sc->server_sig, sc->sig_len) != 0) {
			conn_fail(c, "SCRAM server signature mismatch (server-final: %.*s)", (int)dl, dec);
			goto out;
		}
		sc->verified = true;
		buf_puts(&c->out, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
		mark_dirty(c);
		goto out;
	}
	struct span r, salt_b64, it;
	if (scram_attr((char *)dec, (size_t)dl, 'm', &r)) {
		conn_fail(c, "SCRAM: unsupported mandatory extension");
		goto out;
	}
	if (!scram_attr((char *)dec, (size_t)dl, 'r', &r) || !scram_attr((char *)dec, (size_t)dl, 's', &salt_b64) ||
	    !scram_attr((char *)dec, (size_t)dl, 'i', &it)) {
		conn_fail(c, "malformed SCRAM server-first-message: %.*s", (int)dl, dec);
		goto out;
	}
	size_t cnl = strlen(sc->cnonce);
	if (r.n <= cnl || memcmp(r.p, sc->cnonce, cnl) != 0) {
		conn_fail(c, "SCRAM server nonce does not extend the client nonce");
		goto out;
	}
	char itbuf[16];
	if (it.n == 0 || it.n >= sizeof(itbuf)) {
		conn_fail(c, "bad SCRAM iteration count");
		goto out;
	}
	memcpy(itbuf, it.p, it.n);
	itbuf[it.n] = 0;
	char *end;
	unsigned long iter = strtoul(itbuf, &end, 10);
	if (*end || iter < 1 || iter > 10000000) {
		conn_fail(c, "bad SCRAM iteration count %s", itbuf);
		goto out;
	}
	unsigned char *salt = xmalloc(salt_b64.n + 1);
	long saltl = b64_decode(salt_b64.p, salt_b64.n, salt);
	if (saltl <= 0) {
		free(salt);
		conn_fail(c, "bad SCRAM salt");
		goto out;
	}
	const struct scram_keys *k = scram_derive(cfg.mech, salt, (size_t)saltl, (unsigned)iter);
	free(salt);
	const EVP_MD *md = mech_md(cfg.mech);
	int hl = EVP_MD_get_size(md);
	/* client-final-message-without-proof; "biws" = base64("n,,") */
	struct buf fin = { 0 };
	buf_puts(&fin, "c=biws,r=");
	buf_append(&fin, r.p, r.n);
	struct buf am = { 0 };
	buf_puts(&am, sc->client_first_bare);
	buf_puts(&am, ",");
	buf_append(&am, dec, (size_t)dl);
	buf_puts(&am, ",");
	buf_append(&am, fin.data + fin.off, fin.len - fin.off);
	unsigned char csig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	unsigned int ol;
	HMAC(md, k->stored_key, hl, (unsigned char *)am.data, am.len, csig, &ol);
	for (int i = 0; i < hl; i++)
		proof[i] = k->client_key[i] ^ csig[i];
	HMAC(md, k->server_key, hl, (unsigned char *)am.data, am.len, sc->server_sig, &sc->sig_len);
	char pb[2 * EVP_MAX_MD_SIZE];
	b64_encode(proof, (size_t)hl, pb);
	buf_printf(&fin, ",p=%s", pb);
	char *enc = xmalloc(4 * (fin.len + 2) / 3 + 4);
	b64_encode((unsigned char *)fin.data, fin.len, enc);
	buf_printf(&c->out, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", enc);
	free(enc);
	buf_free(&fin);
	buf_free(&am);
	mark_dirty(c);
out:
	free(dec);
}

static void sasl_success(struct conn *c, const char *s, const char *e)
{
	struct scram *sc = c->scram;
	if (sc) {
		struct span txt = elem_text(s, e);
		if (txt.n && !(txt.n == 1 && txt.p[0] == '=')) {
			unsigned char *dec = xmalloc(txt.n + 1);
			long dl = b64_decode(txt.p, txt.n, dec);
			struct span v;
			unsigned char sig[2 * EVP_MAX_MD_SIZE + 4];
			bool ok = dl > 0 && scram_attr((char *)dec, (size_t)dl, 'v', &v) &&
				  v.n <= 2 * EVP_MAX_MD_SIZE &&
				  b64_decode(v.p, v.n, sig) == (long)sc->sig_len && sc->sig_len &&
				  CRYPTO_memcmp(sig, sc->server_sig, sc->sig_len) == 0;
			if (!ok) {
				conn_fail(c, "SCRAM server signature in <success/> does not verify (%.*s)",
					  dl > 0 ? (int)dl : 0, dec);
				free(dec);
				return;
			}
			free(dec);
			sc->verified = true;
		}
		if (!sc->verified) {
			conn_fail(c, "SASL <success/> without SCRAM server signature");
			return;
		}
		free(sc->client_first_bare);
		free(sc);
		c->scram = NULL;
	}
	c->authed = true;
	/* Stream restart: a new parser from the byte after </success>. */
	send_stream_header(c);
	xp_reset(&c->xp, (size_t)(e - c->in.data));
}

static void send_ready_probe(struct conn *c)
{
	/* Initial presence, then a ping to the server: the server handles one
	 * session's stanzas in order, so its reply tells that the presence was
	 * processed.  Any reply (result or error) counts. */
	buf_printf(&c->out, "<presence/><iq type='get' id='rdy' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>",
		   cfg.domain);
	c->state = CS_PRESENCE;
	mark_dirty(c);
}

static void on_logged_in(struct conn *c)
{
	uint64_t t = now_ns();
	g.bound++;
	g.t_last_bind = t;
	hist_add(&g.login_lat, (t - c->t_start) / 1000);
	if (cfg.scenario == SC_LOGIN) {
		/* Login scenario ends at the bind result. */
		g.pending--;
		g.ready++;
		c->state = CS_READY;
		return;
	}
	send_ready_probe(c);
}

/* Bound (and the legacy session made): with --roster-get, ask for the
 * roster first; the login ends at its result. */
static void on_bound(struct conn *c)
{
	if (!cfg.roster_get) {
		on_logged_in(c);
		return;
	}
	buf_puts(&c->out, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
	c->state = CS_ROSTER;
	mark_dirty(c);
}

static void roster_result(struct conn *c, const char *s, const char *e)
{
	uint32_t n = 0;
	const char *q, *p;
	if (find_tag(tag_end(s, e), e, "query", &q))
		for (p = tag_end(q, e); find_tag(p, e, "item", &p); p++)
			n++;
	c->roster_items = n;
	g.roster_items_total += n;
	if (!g.roster_items_max || n > g.roster_items_max)
		g.roster_items_max = n;
	if (g.bound == 0 || n < g.roster_items_min)
		g.roster_items_min = n;
	if (cfg.scenario == SC_PRESENCE) {
		uint32_t want = cfg.contacts < cfg.users - 1 ? cfg.contacts : cfg.users - 1;
		if (n != want) {
			char user[128];
			username_of(c->idx, user, sizeof(user));
			char *m = xasprintf("user %s@%s has %u roster items, the contact ring gives %u (were the "
					    "--print-roster lines imported with xmppctl roster-import?)",
					    user, cfg.domain, n, want);
			if (!g.roster_mismatch)
				report_error(m);
			free(m);
			g.roster_mismatch++;
		}
	}
	on_logged_in(c);
}

static void handle_iq(struct conn *c, const char *s, const char *e)
{
	struct span type, id;
	if (!get_attr(s, e, "type", &type))
		type = (struct span){ "", 0 };
	if (!get_attr(s, e, "id", &id))
		id = (struct span){ "", 0 };
	if (span_eq(type, "get") || span_eq(type, "set")) {
		/* Answer server pings; refuse anything else politely. */
		struct span from;
		bool has_from = get_attr(s, e, "from", &from);
		char q = memchr(id.p, '\'', id.n) ? '"' : '\'';
		const char *x;
		struct span ns;
		bool ping = find_tag(tag_end(s, e), e, "ping", &x);
		/* roster pushes (RFC 6121 2.1.6) are acknowledged */
		bool push = span_eq(type, "set") && find_tag(tag_end(s, e), e, "query", &x) &&
			    get_attr(x, e, "xmlns", &ns) && span_eq(ns, "jabber:iq:roster");
		ping = ping || push;
		buf_printf(&c->out, "<iq type='%s' id=%c%.*s%c", ping ? "result" : "error", q, (int)id.n, id.p, q);
		if (has_from) {
			char fq = memchr(from.p, '\'', from.n) ? '"' : '\'';
			buf_printf(&c->out, " to=%c%.*s%c", fq, (int)from.n, from.p, fq);
		}
		if (ping)
			buf_puts(&c->out, "/>");
		else
			buf_puts(&c->out, "><error type='cancel'><service-unavailable "
					  "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
		mark_dirty(c);
		return;
	}
	bool is_err = span_eq(type, "error");
	switch (c->state) {
	case CS_REGISTER:
		if (!span_eq(id, "reg"))
			return;
		if (is_err) {
			const char *er;
			bool has_err = find_tag(s + 1, e, "error", &er);
			/* conflict: the account already exists, which is fine. */
			if (!has_err || !span_eq(error_condition(er, e), "conflict")) {
				char *d = has_err ? describe_error(er, e) : strdup("no <error/> child");
				conn_fail(c, "in-band registration failed: %s", d);
				free(d);
				return;
			}
		}
		c->registered = true;
		start_auth(c);
		return;
	case CS_BIND:
		if (!span_eq(id, "bind"))
			return;
		if (is_err) {
			const char *er;
			char *d = find_tag(s + 1, e, "error", &er) ? describe_error(er, e) : strdup("?");
			conn_fail(c, "resource bind failed: %s", d);
			free(d);
			return;
		}
		{
			const char *j;
			if (!find_tag(s + 1, e, "jid", &j)) {
				conn_fail(c, "bind result without <jid/>");
				return;
			}
			struct span jt = elem_text(j, e);
			free(c->jid);
			c->jid = xstrndup(jt.p, jt.n);
		}
		if (c->session_needed) {
			buf_puts(&c->out, "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
			c->state = CS_SESSION;
			mark_dirty(c);
			return;
		}
		on_bound(c);
		return;
	case CS_SESSION:
		if (!span_eq(id, "sess"))
			return;
		if (is_err) {
			const char *er;
			char *d = find_tag(s + 1, e, "error", &er) ? describe_error(er, e) : strdup("?");
			conn_fail(c, "session establishment failed: %s", d);
			free(d);
			return;
		}
		on_bound(c);
		return;
	case CS_ROSTER:
		if (!span_eq(id, "roster"))
			return;
		if (is_err) {
			const char *er;
			char *d = find_tag(s + 1, e, "error", &er) ? describe_error(er, e) : strdup("?");
			conn_fail(c, "roster get failed: %s", d);
			free(d);
			return;
		}
		roster_result(c, s, e);
		return;
	case CS_PRESENCE:
		if (!span_eq(id, "rdy"))
			return;
		c->state = CS_READY;
		g.pending--;
		g.ready++;
		return;
	default:
		return;
	}
}

static void send_one(struct conn *c)
{
	c->sent++;
	g.total_sent++;
	buf_printf(&c->out, "%s%" PRIu64 " t:%" PRIu64 "</body></message>", c->msg_prefix, c->sent, now_ns());
}

static void handle_message(struct conn *c, const char *s, const char *e)
{
	struct span type;
	if (get_attr(s, e, "type", &type) && span_eq(type, "error")) {
		g.error_msgs++;
		const char *er;
		if (g.error_msgs <= 5) {
			char user[128];
			username_of(c->idx, user, sizeof(user));
			char *d = find_tag(s + 1, e, "error", &er) ? describe_error(er, e) : strdup("?");
			char *m = xasprintf("user %s got a message error: %s", user, d);
			report_error(m);
			free(m);
			free(d);
		}
		return;
	}
	const char *b;
	if (!find_tag(tag_end(s, e), e, "body", &b))
		return;
	struct span t = elem_text(b, e);
	if (t.n < 4 || memcmp(t.p, "seq:", 4) != 0)
		return;
	uint64_t seq = 0, ts = 0;
	size_t i = 4;
	while (i < t.n && t.p[i] >= '0' && t.p[i] <= '9')
		seq = seq * 10 + (uint64_t)(t.p[i++] - '0');
	if (i + 3 > t.n || memcmp(t.p + i, " t:", 3) != 0)
		return;
	for (i += 3; i < t.n && t.p[i] >= '0' && t.p[i] <= '9'; i++)
		ts = ts * 10 + (uint64_t)(t.p[i] - '0');
	struct conn *snd = &g.c[c->idx ^ 1u];
	uint64_t now = now_ns();
	if (seq < snd->max_seq)
		g.reordered++;
	else
		snd->max_seq = seq;
	snd->delivered++;
	g.total_delivered++;
	if (g.sending)
		g.delivered_in_period++;
	if (now > ts)
		hist_add(&g.lat, (now - ts) / 1000);
	else
		hist_add(&g.lat, 0);
	if (cfg.scenario == SC_CHAT && g.sending)
		mark_dirty(snd);
}

/*
 * Presence scenario: a presence whose <status/> is "t:NS seq:N" is change
 * N; a delivery to a contact of its sender counts, with latency now - NS.
 */
static void handle_presence(struct conn *c, const char *s, const char *e)
{
	uint64_t now = now_ns();
	g.presence_in++;
	g.t_last_presence = now;
	if (cfg.scenario != SC_PRESENCE || !g.nchg)
		return;
	const char *st;
	if (!find_tag(tag_end(s, e), e, "status", &st))
		return;
	struct span t = elem_text(st, e);
	if (t.n < 2 || memcmp(t.p, "t:", 2) != 0)
		return;
	uint64_t ts = 0, seq = 0;
	size_t i = 2;
	while (i < t.n && t.p[i] >= '0' && t.p[i] <= '9')
		ts = ts * 10 + (uint64_t)(t.p[i++] - '0');
	if (i + 5 > t.n || memcmp(t.p + i, " seq:", 5) != 0)
		return;
	for (i += 5; i < t.n && t.p[i] >= '0' && t.p[i] <= '9'; i++)
		seq = seq * 10 + (uint64_t)(t.p[i] - '0');
	if (seq >= g.nchg)
		return;
	struct pchange *ch = &g.chg[seq];
	if (ch->user == c->idx) {
		g.self_echo++;  /* RFC 6121 4.4.2: also to the sender's own resources */
		return;
	}
	if (!ring_contact(ch->user, c->idx)) {
		g.unexpected++;  /* to someone without a subscription: a leak */
		return;
	}
	if (ch->received >= ch->expected) {
		g.extra++;       /* duplicate, or a contact that was not ready */
		return;
	}
	ch->received++;
	g.deliveries++;
	if (g.sending)
		g.deliveries_in_period++;
	hist_add(&g.lat, now > ts ? (now - ts) / 1000 : 0);
	if (ch->received == ch->expected) {
		g.completed++;
		if (g.sending)
			g.completed_in_period++;
		hist_add(&g.bcast_lat, (now - ch->t_sent) / 1000);
	}
}

static void handle_element(struct conn *c, const char *s, const char *e)
{
	struct span name = tag_name(s, e);
	if (c->state == CS_READY || c->state == CS_PRESENCE) {
		if (span_eq(name, "message")) {
			handle_message(c, s, e);
			return;
		}
		if (span_eq(name, "presence")) {
			handle_presence(c, s, e);
			return;
		}
	}
	if (span_eq(name, "iq")) {
		handle_iq(c, s, e);
		return;
	}
	if (span_eq(name, "error")) {
		char *d = describe_error(s, e);
		conn_fail(c, "stream error from server: %s", d);
		free(d);
		return;
	}
	switch (c->state) {
	case CS_STREAM:
		if (span_eq(name, "features"))
			handle_features(c, s, e);
		return;
	case CS_STARTTLS:
		if (span_eq(name, "proceed"))
			tls_begin(c);
		else if (span_eq(name, "failure"))
			conn_fail(c, "server refused STARTTLS (<failure/>)");
		return;
	case CS_AUTH:
		if (span_eq(name, "challenge")) {
			scram_challenge(c, s, e);
		} else if (span_eq(name, "success")) {
			sasl_success(c, s, e);
		} else if (span_eq(name, "failure")) {
			char *d = describe_error(s, e);
			conn_fail(c, "SASL %s authentication failed: %s", mech_names[cfg.mech], d);
			free(d);
		}
		return;
	default:
		return;
	}
}

/* Run the splitter over newly received bytes and dispatch elements. */
static void conn_parse(struct conn *c)
{
	for (int guard = 0; guard < 1000000 && c->fd >= 0 && c->state != CS_TLS; guard++) {
		size_t s = 0, e = 0;
		int ev = xp_next(&c->xp, c->in.data, c->in.len, &s, &e);
		switch (ev) {
		case EV_NONE:
			/* Whitespace keepalives and PIs between elements are dropped. */
			if (c->xp.st == PS_TEXT && c->xp.depth <= 1)
				c->in.off = c->xp.pos;
			else if (c->xp.depth == 1 && c->in.off < c->xp.elem_start)
				c->in.off = c->xp.elem_start;
			if (c->in.len - c->in.off > MAX_ELEMENT)
				conn_fail(c, "top-level element larger than %u bytes", MAX_ELEMENT);
			return;
		case EV_HEADER: {
			c->in.off = e;
			struct span v;
			if (!get_attr(c->in.data + s, c->in.data + e, "version", &v) || !span_eq(v, "1.0")) {
				conn_fail(c, "server stream header lacks version='1.0': %.*s",
					  (int)(e - s > 300 ? 300 : e - s), c->in.data + s);
				return;
			}
			break;
		}
		case EV_ELEMENT:
			c->in.off = e;
			handle_element(c, c->in.data + s, c->in.data + e);
			break;
		case EV_STREAM_END:
			c->in.off = c->xp.pos;
			conn_fail(c, "server closed the stream");
			return;
		default:
			conn_fail(c, "malformed XML from server near: %.*s",
				  (int)(c->in.len - c->xp.tag_start > 200 ? 200 : c->in.len - c->xp.tag_start),
				  c->in.data + c->xp.tag_start);
			return;
		}
	}
}

/* Shift the input buffer so that in.off becomes 0, fixing parser offsets. */
static void in_compact(struct conn *c)
{
	size_t off = c->in.off;
	if (!off)
		return;
	memmove(c->in.data, c->in.data + off, c->in.len - off);
	c->in.len -= off;
	c->in.off = 0;
	struct xparse *p = &c->xp;
	p->pos = p->pos >= off ? p->pos - off : 0;
	p->tag_start = p->tag_start >= off ? p->tag_start - off : 0;
	p->elem_start = p->elem_start >= off ? p->elem_start - off : 0;
}

static void conn_read(struct conn *c)
{
	for (int n = 0; n < MAX_READS_PER_EVENT; n++) {
		if (c->fd < 0 || c->state == CS_CONNECT || c->state == CS_TLS)
			return;
		if (c->in.off == c->in.len && c->in.len) {
			in_compact(c);
		} else if (c->in.cap - c->in.len < IN_CHUNK) {
			in_compact(c);
		}
		if (c->in.cap - c->in.len < IN_CHUNK)
			buf_reserve(&c->in, IN_CHUNK);  /* off is 0 here: no hidden compaction */
		char *dst = c->in.data + c->in.len;
		size_t room = c->in.cap - c->in.len;
		ssize_t r;
		if (c->tls_on) {
			ERR_clear_error();
			int rr = SSL_read(c->ssl, dst, room > INT_MAX ? INT_MAX : (int)room);
			if (rr <= 0) {
				int err = SSL_get_error(c->ssl, rr);
				if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
					goto drained;
				if (err == SSL_ERROR_ZERO_RETURN) {
					conn_fail(c, "server closed the TLS connection");
					return;
				}
				conn_fail(c, "TLS read failed: %s", ssl_err_string());
				return;
			}
			r = rr;
		} else {
			r = read(c->fd, dst, room);
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					goto drained;
				conn_fail(c, "read failed: %s", strerror(errno));
				return;
			}
			if (r == 0) {
				conn_fail(c, "server closed the connection");
				return;
			}
		}
		c->in.len += (size_t)r;
		conn_parse(c);
	}
	/* Fairness bound reached: come back after the other connections. */
	if (c->fd >= 0 && !c->readq) {
		c->readq = true;
		g.readq[g.nreadq++] = c->idx;
	}
	return;
drained:
	/* Idle sessions give their input buffer back; the parser keeps its depth. */
	if (cfg.scenario == SC_IDLE && c->state == CS_READY && c->in.off == c->in.len &&
	    c->xp.st == PS_TEXT) {
		buf_free(&c->in);
		c->xp.pos = c->xp.tag_start = c->xp.elem_start = 0;
	}
}

static void conn_connected(struct conn *c)
{
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg.tls == TLS_DIRECT) {
		tls_begin(c);
	} else {
		send_stream_header(c);
		conn_flush(c);
	}
}

static void conn_start(struct conn *c)
{
	c->t_start = now_ns();
	c->state = CS_CONNECT;
	g.pending++;
	g.started++;
	int fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		conn_fail(c, "socket: %s", strerror(errno));
		return;
	}
	c->fd = fd;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = c->idx };
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		conn_fail(c, "epoll_ctl: %s", strerror(errno));
		return;
	}
	if (connect(fd, (struct sockaddr *)&g.addr, g.addrlen) == 0) {
		conn_connected(c);
	} else if (errno != EINPROGRESS) {
		conn_fail(c, "connect to %s port %d: %s", cfg.host, cfg.port, strerror(errno));
	}
}

static void conn_event(struct conn *c, uint32_t events)
{
	if (c->fd < 0)
		return;
	if (c->state == CS_CONNECT) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			conn_fail(c, "connect to %s port %d: %s", cfg.host, cfg.port, strerror(err));
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLIN)))
			return;
		conn_connected(c);
		if (c->fd < 0)
			return;
	}
	if (c->state == CS_TLS) {
		tls_step(c);
		return;
	}
	if (events & EPOLLOUT)
		if (!conn_flush(c))
			return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		conn_read(c);
}

/* ------------------------------------------------------------------ */
/* Server process statistics (/proc)                                   */
/* ------------------------------------------------------------------ */

/* Sum of VmRSS in KiB over --server-pids; -1 if unavailable. */
static long server_rss_kib(void)
{
	long total = 0;
	for (int i = 0; i < cfg.npids; i++) {
		char path[64], line[256];
		snprintf(path, sizeof(path), "/proc/%d/status", cfg.pids[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		long v = -1;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
				break;
		fclose(f);
		if (v < 0)
			return -1;
		total += v;
	}
	return total;
}

/* Sum of utime+stime in seconds over --server-pids; -1 if unavailable. */
static double server_cpu_s(void)
{
	double total = 0;
	long tck = sysconf(_SC_CLK_TCK);
	for (int i = 0; i < cfg.npids; i++) {
		char path[64], line[2048];
		snprintf(path, sizeof(path), "/proc/%d/stat", cfg.pids[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		size_t n = fread(line, 1, sizeof(line) - 1, f);
		fclose(f);
		line[n] = 0;
		char *p = strrchr(line, ')');
		if (!p)
			return -1;
		unsigned long long ut = 0, st = 0;
		/* fields after ")": state ppid pgrp session tty tpgid flags minflt
		 * cminflt majflt cmajflt utime stime */
		if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
			return -1;
		total += (double)(ut + st) / (double)tck;
	}
	return total;
}

static double self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: xmppd-bench [options]\n"
		"  --host ADDR          server address, loopback only (127.0.0.1)\n"
		"  --port N             server port (5222)\n"
		"  --domain D           XMPP domain (localhost)\n"
		"  --users N            number of accounts PREFIX1..PREFIXN (100)\n"
		"  --user-prefix P      account name prefix (bench)\n"
		"  --password PW        password of every account (bench)\n"
		"  --tls MODE           starttls | direct | none (starttls)\n"
		"  --mech M             SCRAM-SHA-256 | SCRAM-SHA-1 | PLAIN (SCRAM-SHA-1)\n"
		"  --scenario S         login | idle | chat | latency | presence (login)\n"
		"  --duration S         seconds to hold/send (10)\n"
		"  --rate R             latency: messages/s in total; presence: changes/s,\n"
		"                       0 = unpaced, --window changes in flight (1000)\n"
		"  --window W           chat: max in-flight messages per sender (16);\n"
		"                       presence: max incomplete changes in total (no cap)\n"
		"  --roster-get         fetch the roster after bind, before initial presence\n"
		"                       (implied by presence; login then ends at the roster)\n"
		"  --contacts K         presence: contacts per user, ring i+-1..i+-K/2 (50)\n"
		"  --print-roster       print the ring as xmppctl roster-import lines, exit\n"
		"  --settle S           presence: storm over after S s without presence (1)\n"
		"  --settle-timeout S   presence: stop waiting for quiet after S s (300)\n"
		"  --connect-rate C     new connections per second, 0 = unlimited (500)\n"
		"  --max-pending P      max logins in progress at once (200)\n"
		"  --login-timeout S    give up logging in after S seconds (120)\n"
		"  --register           register each account with XEP-0077 before login\n"
		"  --key-cache FILE     keep derived SCRAM keys in FILE across runs\n"
		"  --server-pids P,P    server processes to sample for RSS and CPU\n"
		"  --json               print one JSON object on stdout\n"
		"  --quiet              no progress output on stderr\n");
}

static double parse_num(const char *opt, const char *v, double min, double max)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || end == v || *end || !(d >= min && d <= max))
		die("invalid value for --%s: %s (must be %g..%g)", opt, v, min, max);
	return d;
}

static void resolve_host(void)
{
	const char *h = cfg.host;
	if (strcmp(h, "localhost") == 0)
		h = "127.0.0.1";
	struct sockaddr_in *a4 = (struct sockaddr_in *)&g.addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&g.addr;
	memset(&g.addr, 0, sizeof(g.addr));
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
			die("refusing to connect to %s: only loopback addresses (127.0.0.0/8, ::1) are allowed", cfg.host);
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)cfg.port);
		g.addrlen = sizeof(*a4);
	} else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			die("refusing to connect to %s: only loopback addresses (127.0.0.0/8, ::1) are allowed", cfg.host);
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)cfg.port);
		g.addrlen = sizeof(*a6);
	} else {
		die("--host must be a numeric loopback address (127.0.0.1 or ::1), got %s", cfg.host);
	}
}

static void parse_args(int argc, char **argv)
{
	enum { O_HOST = 256, O_PORT, O_DOMAIN, O_USERS, O_PREFIX, O_PASSWORD, O_TLS, O_MECH,
	       O_SCENARIO, O_DURATION, O_RATE, O_WINDOW, O_CRATE, O_PENDING, O_LTIMEOUT,
	       O_PIDS, O_JSON, O_QUIET, O_REGISTER, O_KEYCACHE, O_ROSTER_GET, O_CONTACTS, O_PRINT_ROSTER,
	       O_SETTLE, O_SETTLE_TIMEOUT, O_HELP };
	static const struct option opts[] = {
		{ "host", required_argument, 0, O_HOST },
		{ "port", required_argument, 0, O_PORT },
		{ "domain", required_argument, 0, O_DOMAIN },
		{ "users", required_argument, 0, O_USERS },
		{ "user-prefix", required_argument, 0, O_PREFIX },
		{ "password", required_argument, 0, O_PASSWORD },
		{ "tls", required_argument, 0, O_TLS },
		{ "mech", required_argument, 0, O_MECH },
		{ "scenario", required_argument, 0, O_SCENARIO },
		{ "duration", required_argument, 0, O_DURATION },
		{ "rate", required_argument, 0, O_RATE },
		{ "window", required_argument, 0, O_WINDOW },
		{ "connect-rate", required_argument, 0, O_CRATE },
		{ "max-pending", required_argument, 0, O_PENDING },
		{ "login-timeout", required_argument, 0, O_LTIMEOUT },
		{ "server-pids", required_argument, 0, O_PIDS },
		{ "register", no_argument, 0, O_REGISTER },
		{ "key-cache", required_argument, 0, O_KEYCACHE },
		{ "roster-get", no_argument, 0, O_ROSTER_GET },
		{ "contacts", required_argument, 0, O_CONTACTS },
		{ "print-roster", no_argument, 0, O_PRINT_ROSTER },
		{ "settle", required_argument, 0, O_SETTLE },
		{ "settle-timeout", required_argument, 0, O_SETTLE_TIMEOUT },
		{ "json", no_argument, 0, O_JSON },
		{ "quiet", no_argument, 0, O_QUIET },
		{ "help", no_argument, 0, O_HELP },
		{ 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case O_HOST: cfg.host = optarg; break;
		case O_PORT: cfg.port = (int)parse_num("port", optarg, 1, 65535); break;
		case O_DOMAIN: cfg.domain = optarg; break;
		case O_USERS: cfg.users = (unsigned)parse_num("users", optarg, 1, 1000000); break;
		case O_PREFIX: cfg.prefix = optarg; break;
		case O_PASSWORD: cfg.password = optarg; break;
		case O_TLS:
			if (!strcmp(optarg, "none")) cfg.tls = TLS_NONE;
			else if (!strcmp(optarg, "starttls")) cfg.tls = TLS_STARTTLS;
			else if (!strcmp(optarg, "direct")) cfg.tls = TLS_DIRECT;
			else die("--tls must be starttls, direct or none");
			break;
		case O_MECH:
			if (!strcasecmp(optarg, "SCRAM-SHA-256")) cfg.mech = MECH_SCRAM_SHA256;
			else if (!strcasecmp(optarg, "SCRAM-SHA-1")) cfg.mech = MECH_SCRAM_SHA1;
			else if (!strcasecmp(optarg, "PLAIN")) cfg.mech = MECH_PLAIN;
			else die("--mech must be SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN");
			break;
		case O_SCENARIO:
			if (!strcmp(optarg, "login")) cfg.scenario = SC_LOGIN;
			else if (!strcmp(optarg, "idle")) cfg.scenario = SC_IDLE;
			else if (!strcmp(optarg, "chat")) cfg.scenario = SC_CHAT;
			else if (!strcmp(optarg, "latency")) cfg.scenario = SC_LATENCY;
			else if (!strcmp(optarg, "presence")) cfg.scenario = SC_PRESENCE;
			else die("--scenario must be login, idle, chat, latency or presence");
			break;
		case O_DURATION: cfg.duration = parse_num("duration", optarg, 0, 86400); break;
		case O_RATE: cfg.rate = parse_num("rate", optarg, 0, 1e7); break;
		case O_WINDOW:
			cfg.window = (unsigned)parse_num("window", optarg, 1, 1000000);
			cfg.window_given = true;
			break;
		case O_CRATE: cfg.connect_rate = parse_num("connect-rate", optarg, 0, 1e7); break;
		case O_PENDING: cfg.max_pending = (unsigned)parse_num("max-pending", optarg, 1, 1000000); break;
		case O_LTIMEOUT: cfg.login_timeout = parse_num("login-timeout", optarg, 1, 86400); break;
		case O_PIDS: {
			char *s = optarg, *tok, *save = NULL;
			cfg.npids = 0;
			for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (!*tok)
					continue;
				if (cfg.npids >= MAX_PIDS)
					die("too many --server-pids (max %d)", MAX_PIDS);
				cfg.pids[cfg.npids++] = (int)parse_num("server-pids", tok, 1, INT_MAX);
			}
			break;
		}
		case O_REGISTER: cfg.do_register = true; break;
		case O_KEYCACHE: key_cache_file = optarg; break;
		case O_ROSTER_GET: cfg.roster_get = true; break;
		case O_CONTACTS: cfg.contacts = (unsigned)parse_num("contacts", optarg, 2, 100000); break;
		case O_PRINT_ROSTER: cfg.print_roster = true; break;
		case O_SETTLE: cfg.settle_quiet = parse_num("settle", optarg, 0.01, 3600); break;
		case O_SETTLE_TIMEOUT: cfg.settle_timeout = parse_num("settle-timeout", optarg, 1, 86400); break;
		case O_JSON: cfg.json = true; break;
		case O_QUIET: cfg.quiet = true; break;
		case O_HELP: case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
		die("unexpected argument: %s", argv[optind]);
	if ((cfg.scenario == SC_CHAT || cfg.scenario == SC_LATENCY) && cfg.users % 2)
		die("chat and latency scenarios need an even number of users");
	if (cfg.contacts % 2)
		die("--contacts must be even (K/2 neighbours on each side of the ring)");
	if (cfg.rate == 0 && (cfg.scenario != SC_PRESENCE || !cfg.window_given))
		die("--rate 0 (unpaced) needs --scenario presence and --window");
	if (cfg.scenario == SC_PRESENCE) {
		cfg.roster_get = true;  /* initial presence only after the roster */
		if (!cfg.window_given)
			cfg.window = UINT_MAX;  /* no cap on changes in flight */
		if (cfg.users < 2)
			die("the presence scenario needs at least 2 users");
	}
	if (strpbrk(cfg.domain, "'\"<>& ") || !*cfg.domain)
		die("invalid --domain");
	if (strpbrk(cfg.prefix, "'\"<>&@/ ") || !*cfg.prefix)
		die("invalid --user-prefix");
	resolve_host();
}

/* ------------------------------------------------------------------ */
/* Reporting                                                            */
/* ------------------------------------------------------------------ */

struct results {
	double login_s, logins_per_s;
	long rss_before, rss_after;
	double kib_per_session;
	double run_s, msgs_per_s;
	double srv_cpu, srv_cpu_per_10k, cli_cpu, cli_cpu_run;
	double bcasts_per_s;
	double login_srv_cpu;  /* server CPU s from the first connect to the last login */
	unsigned dropped;
	bool have_rss, have_cpu, have_login_cpu;
};

/* chat/latency: messages sent but not received; presence: deliveries
 * expected (contacts ready when the change was sent) but not received */
static uint64_t lost_count(void)
{
	if (cfg.scenario == SC_PRESENCE)
		return g.expected_total > g.deliveries ? g.expected_total - g.deliveries : 0;
	return g.total_sent > g.total_delivered ? g.total_sent - g.total_delivered : 0;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void print_results(const struct results *r, bool ok)
{
	bool msgs = cfg.scenario == SC_CHAT || cfg.scenario == SC_LATENCY;
	bool pres = cfg.scenario == SC_PRESENCE;
	uint64_t lost = lost_count();
	if (cfg.json) {
		FILE *f = stdout;
		fprintf(f, "{\"scenario\":\"%s\",\"host\":", scenario_names[cfg.scenario]);
		json_str(f, cfg.host);
		fprintf(f, ",\"port\":%d,\"domain\":", cfg.port);
		json_str(f, cfg.domain);
		fprintf(f, ",\"tls\":\"%s\",\"mech\":\"%s\",\"users\":%u,\"ok\":%s,"
			"\"logins_ok\":%u,\"logins_failed\":%u,\"login_s\":%.3f,\"logins_per_s\":%.1f,"
			"\"login_p50_ms\":%.3f,\"login_p99_ms\":%.3f,\"login_max_ms\":%.3f",
			tls_names[cfg.tls], mech_names[cfg.mech], cfg.users, ok ? "true" : "false",
			g.bound, cfg.users - g.bound, r->login_s, r->logins_per_s,
			hist_pct_ms(&g.login_lat, 50), hist_pct_ms(&g.login_lat, 99),
			(double)g.login_lat.max / 1000.0);
		fprintf(f, ",\"roster_get\":%s", cfg.roster_get ? "true" : "false");
		if (cfg.roster_get)
			fprintf(f, ",\"roster_items_min\":%u,\"roster_items_max\":%u,\"roster_items_avg\":%.1f",
				g.roster_items_min, g.roster_items_max,
				g.bound ? (double)g.roster_items_total / g.bound : 0.0);
		if (r->have_login_cpu)
			fprintf(f, ",\"login_server_cpu_s\":%.2f,\"server_cpu_ms_per_login\":%.3f", r->login_srv_cpu,
				g.bound ? r->login_srv_cpu * 1000.0 / g.bound : 0.0);
		if (pres) {
			fprintf(f, ",\"contacts\":%u,\"rate\":%.1f,\"window\":%u,\"skipped\":%" PRIu64 ",\"settle_s\":%.3f,"
				"\"settle_timed_out\":%s,\"initial_presence_stanzas\":%" PRIu64 ",\"duration_s\":%.3f,"
				"\"changes\":%zu,\"broadcasts_completed\":%" PRIu64 ",\"broadcasts_per_s\":%.1f,"
				"\"expected\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"deliveries_per_s\":%.1f,"
				"\"lost\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"extra\":%" PRIu64
				",\"self_echo\":%" PRIu64 ",\"dropped\":%u,"
				"\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,\"latency_max_ms\":%.3f,"
				"\"bcast_p50_ms\":%.3f,\"bcast_p99_ms\":%.3f,\"bcast_max_ms\":%.3f",
				cfg.contacts, cfg.rate, cfg.window, g.skipped, g.settle_s, g.settle_timed_out ? "true" : "false",
				g.presence_in_settle, r->run_s, g.nchg, g.completed, r->bcasts_per_s, g.expected_total,
				g.deliveries, r->msgs_per_s, lost, g.unexpected, g.extra, g.self_echo, r->dropped,
				hist_pct_ms(&g.lat, 50), hist_pct_ms(&g.lat, 99), (double)g.lat.max / 1000.0,
				hist_pct_ms(&g.bcast_lat, 50), hist_pct_ms(&g.bcast_lat, 99),
				(double)g.bcast_lat.max / 1000.0);
			if (r->have_cpu)
				fprintf(f, ",\"server_cpu_s\":%.2f,\"server_cpu_s_per_10k\":%.4f", r->srv_cpu,
					r->srv_cpu_per_10k);
			fprintf(f, ",\"client_cpu_run_s\":%.2f", r->cli_cpu_run);
		}
		if (cfg.scenario == SC_IDLE) {
			fprintf(f, ",\"duration_s\":%.3f,\"dropped\":%u", cfg.duration, r->dropped);
			if (r->have_rss)
				fprintf(f, ",\"server_rss_before_kib\":%ld,\"server_rss_after_kib\":%ld,"
					"\"kib_per_session\":%.2f", r->rss_before, r->rss_after, r->kib_per_session);
		}
		if (msgs) {
			fprintf(f, ",\"window\":%u", cfg.window);
			if (cfg.scenario == SC_LATENCY)
				fprintf(f, ",\"rate\":%.1f,\"skipped\":%" PRIu64, cfg.rate, g.skipped);
			fprintf(f, ",\"duration_s\":%.3f,\"sent\":%" PRIu64 ",\"delivered\":%" PRIu64
				",\"lost\":%" PRIu64 ",\"reordered\":%" PRIu64 ",\"error_messages\":%" PRIu64
				",\"dropped\":%u,\"msgs_per_s\":%.1f,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,"
				"\"latency_max_ms\":%.3f",
				r->run_s, g.total_sent, g.total_delivered, lost, g.reordered, g.error_msgs,
				r->dropped, r->msgs_per_s, hist_pct_ms(&g.lat, 50), hist_pct_ms(&g.lat, 99),
				(double)g.lat.max / 1000.0);
			if (r->have_cpu)
				fprintf(f, ",\"server_cpu_s\":%.2f,\"server_cpu_s_per_10k\":%.4f", r->srv_cpu,
					r->srv_cpu_per_10k);
			fprintf(f, ",\"client_cpu_run_s\":%.2f", r->cli_cpu_run);
		}
		fprintf(f, ",\"client_cpu_s\":%.2f,\"pbkdf2_runs\":%" PRIu64 ",\"keys_loaded\":%" PRIu64
			",\"first_error\":", r->cli_cpu, pbkdf2_runs, key_cache_loaded);
		if (g.first_error)
			json_str(f, g.first_error);
		else
			fputs("null", f);
		fputs("}\n", f);
		fflush(f);
		return;
	}
	FILE *f = stdout;
	fprintf(f, "xmppd-bench %s: %s port %d, domain %s, tls %s, %s, %u users\n",
		scenario_names[cfg.scenario], cfg.host, cfg.port, cfg.domain, tls_names[cfg.tls],
		mech_names[cfg.mech], cfg.users);
	fprintf(f, "  %-28s %u ok, %u failed\n", "logins", g.bound, cfg.users - g.bound);
	fprintf(f, "  %-28s %.3f s  (%.1f logins/s)\n", "login time", r->login_s, r->logins_per_s);
	fprintf(f, "  %-28s p50 %.2f  p99 %.2f  max %.2f ms%s\n", "login latency",
		hist_pct_ms(&g.login_lat, 50), hist_pct_ms(&g.login_lat, 99), (double)g.login_lat.max / 1000.0,
		cfg.roster_get ? " (connect to roster result)" : "");
	if (cfg.roster_get)
		fprintf(f, "  %-28s min %u  max %u  avg %.1f items\n", "roster fetched at login", g.roster_items_min,
			g.roster_items_max, g.bound ? (double)g.roster_items_total / g.bound : 0.0);
	if (r->have_login_cpu)
		fprintf(f, "  %-28s %.2f s  (%.3f ms per login)\n", "server CPU during logins", r->login_srv_cpu,
			g.bound ? r->login_srv_cpu * 1000.0 / g.bound : 0.0);
	if (pres) {
		fprintf(f, "  %-28s %u per user (ring), %u users online\n", "contacts", cfg.contacts, g.ready);
		fprintf(f, "  %-28s %" PRIu64 " presence stanzas received, the last %.2f s after the first "
			"connect%s\n", "initial presence", g.presence_in_settle, g.settle_s,
			g.settle_timed_out ? " (NOT quiet: settle timeout)" : "");
		if (cfg.rate > 0)
			fprintf(f, "  %-28s %.1f changes/s (%" PRIu64 " ticks skipped)\n", "target rate", cfg.rate,
				g.skipped);
		else
			fprintf(f, "  %-28s unpaced, %u incomplete changes in flight\n", "target rate", cfg.window);
		fprintf(f, "  %-28s %.3f s\n", "sending period", r->run_s);
		fprintf(f, "  %-28s %zu sent, %" PRIu64 " complete (every ready contact got it)\n", "presence changes",
			g.nchg, g.completed);
		fprintf(f, "  %-28s %.1f broadcasts/s\n", "completed during sending", r->bcasts_per_s);
		fprintf(f, "  %-28s %" PRIu64 " expected, %" PRIu64 " received, %" PRIu64 " lost, %" PRIu64
			" to non-contacts, %" PRIu64 " extra, %" PRIu64 " echoes to the sender\n", "deliveries",
			g.expected_total, g.deliveries, lost, g.unexpected, g.extra, g.self_echo);
		fprintf(f, "  %-28s %.1f deliveries/s\n", "delivered during sending", r->msgs_per_s);
		fprintf(f, "  %-28s p50 %.3f  p99 %.3f  max %.3f ms\n", "delivery latency", hist_pct_ms(&g.lat, 50),
			hist_pct_ms(&g.lat, 99), (double)g.lat.max / 1000.0);
		fprintf(f, "  %-28s p50 %.3f  p99 %.3f  max %.3f ms\n", "broadcast complete after",
			hist_pct_ms(&g.bcast_lat, 50), hist_pct_ms(&g.bcast_lat, 99), (double)g.bcast_lat.max / 1000.0);
		if (r->have_cpu)
			fprintf(f, "  %-28s %.2f s  (%.4f s per 10,000 deliveries)\n", "server CPU", r->srv_cpu,
				r->srv_cpu_per_10k);
		fprintf(f, "  %-28s %.2f s during the sending period + drain\n", "client CPU (run)", r->cli_cpu_run);
		if (r->dropped)
			fprintf(f, "  %-28s %u\n", "sessions dropped", r->dropped);
	}
	if (cfg.scenario == SC_IDLE) {
		fprintf(f, "  %-28s %.1f s, %u dropped\n", "held", cfg.duration, r->dropped);
		if (r->have_rss)
			fprintf(f, "  %-28s %ld KiB -> %ld KiB = %.2f KiB/session\n", "server RSS",
				r->rss_before, r->rss_after, r->kib_per_session);
	}
	if (msgs) {
		if (cfg.scenario == SC_LATENCY)
			fprintf(f, "  %-28s %.1f msgs/s (%" PRIu64 " not sent: window full)\n", "target rate",
				cfg.rate, g.skipped);
		else
			fprintf(f, "  %-28s %u per sender\n", "window", cfg.window);
		fprintf(f, "  %-28s %.3f s\n", "sending period", r->run_s);
		fprintf(f, "  %-28s %" PRIu64 " sent, %" PRIu64 " delivered, %" PRIu64 " lost, %" PRIu64
			" reordered, %" PRIu64 " errors\n", "messages", g.total_sent, g.total_delivered,
			lost, g.reordered, g.error_msgs);
		fprintf(f, "  %-28s %.1f msgs/s\n", "delivered throughput", r->msgs_per_s);
		fprintf(f, "  %-28s p50 %.3f  p99 %.3f  max %.3f ms\n", "latency", hist_pct_ms(&g.lat, 50),
			hist_pct_ms(&g.lat, 99), (double)g.lat.max / 1000.0);
		if (r->have_cpu)
			fprintf(f, "  %-28s %.2f s  (%.4f s per 10,000 msgs)\n", "server CPU", r->srv_cpu,
				r->srv_cpu_per_10k);
		fprintf(f, "  %-28s %.2f s during the sending period + drain\n", "client CPU (run)", r->cli_cpu_run);
		if (r->dropped)
			fprintf(f, "  %-28s %u\n", "sessions dropped", r->dropped);
	}
	fprintf(f, "  %-28s %.2f s in total, %" PRIu64 " PBKDF2 runs (%" PRIu64 " keys from cache file)\n",
		"client CPU", r->cli_cpu, pbkdf2_runs, key_cache_loaded);
	fprintf(f, "  %-28s %s\n", "result", ok ? "OK" : "FAILED");
	if (!ok && g.first_error)
		fprintf(f, "  %-28s %s\n", "first error", g.first_error);
	fflush(f);
}

/* ------------------------------------------------------------------ */
/* Main loop                                                            */
/* ------------------------------------------------------------------ */

enum phase { PH_LOGIN, PH_SETTLE, PH_QUIET, PH_HOLD, PH_RUN, PH_DRAIN, PH_END };

static void progress(const char *fmt, ...)
{
	if (cfg.quiet)
		return;
	va_list ap;
	fputs("xmppd-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void build_chat_prefixes(void)
{
	for (unsigned i = 0; i < cfg.users; i++) {
		struct conn *c = &g.c[i], *peer = &g.c[i ^ 1u];
		char *to = xml_escape(peer->jid ? peer->jid : "");
		c->msg_prefix = xasprintf("<message type='chat' to='%s'><body>seq:", to);
		free(to);
	}
}

static void pace(uint64_t now)
{
	double el = (double)(now - g.t_run_start) / 1e9;
	uint64_t due = (uint64_t)(el * cfg.rate);
	uint64_t cap = cfg.window;
	uint64_t budget = (uint64_t)(cfg.rate / 10) + 100;
	while (g.scheduled < due && budget--) {
		struct conn *c = &g.c[g.rr];
		g.rr = (g.rr + 1) % cfg.users;
		g.scheduled++;
		if (c->state != CS_READY || c->sent - c->delivered >= cap) {
			g.skipped++;
			continue;
		}
		send_one(c);
		mark_dirty(c);
	}
}

/* Presence scenario: user c announces change number g.nchg to its
 * contacts; the ones ready now are expected to get it. */
static void send_change(struct conn *c)
{
	static uint32_t *ct;
	if (!ct)
		ct = xmalloc((cfg.contacts + 1) * sizeof(*ct));
	if (g.nchg == g.chg_cap) {
		g.chg_cap = g.chg_cap ? 2 * g.chg_cap : 65536;
		g.chg = xrealloc(g.chg, g.chg_cap * sizeof(*g.chg));
	}
	unsigned n = ring_contacts(c->idx, ct), ready = 0;
	for (unsigned k = 0; k < n; k++)
		ready += g.c[ct[k]].state == CS_READY;
	struct pchange *ch = &g.chg[g.nchg];
	ch->user = c->idx;
	ch->expected = ready;
	ch->received = 0;
	ch->t_sent = now_ns();
	g.expected_total += ready;
	if (!ready) {
		g.completed++;
		g.completed_in_period++;
	}
	buf_printf(&c->out, "<presence><status>t:%" PRIu64 " seq:%zu</status></presence>", ch->t_sent, g.nchg);
	g.nchg++;
	g.total_sent++;
	mark_dirty(c);
}

/* --rate changes/s in total, users round robin (1 ms ticks); a tick is
 * skipped when its user is not ready or --window changes are incomplete.
 * --rate 0: no pacing, a new change whenever fewer than --window are
 * incomplete (a closed loop that measures the server's capacity). */
static void pace_presence(uint64_t now)
{
	if (cfg.rate == 0) {
		for (unsigned tries = 0; g.nchg - g.completed < cfg.window && tries < cfg.users; tries++) {
			struct conn *c = &g.c[g.rr];
			g.rr = (g.rr + 1) % cfg.users;
			if (c->state == CS_READY)
				send_change(c);
		}
		return;
	}
	double el = (double)(now - g.t_run_start) / 1e9;
	uint64_t due = (uint64_t)(el * cfg.rate);
	uint64_t budget = (uint64_t)(cfg.rate / 10) + 100;
	while (g.scheduled < due && budget--) {
		struct conn *c = &g.c[g.rr];
		g.rr = (g.rr + 1) % cfg.users;
		g.scheduled++;
		if (c->state != CS_READY || g.nchg - g.completed >= cfg.window) {
			g.skipped++;
			continue;
		}
		send_change(c);
	}
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	if (cfg.print_roster) {
		print_roster();
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	if (key_cache_file)
		key_cache_load();

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)cfg.users + 64)
		die("open-file limit %llu is too low for %u users (raise the hard limit: ulimit -Hn)",
		    (unsigned long long)rl.rlim_cur, cfg.users);

	if (cfg.tls != TLS_NONE) {
		g.ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (!g.ssl_ctx)
			die("SSL_CTX_new failed");
		SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);  /* self-signed test servers */
		SSL_CTX_set_min_proto_version(g.ssl_ctx, TLS1_2_VERSION);
		long mode = SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
		if (cfg.scenario == SC_IDLE)
			mode |= SSL_MODE_RELEASE_BUFFERS;
		SSL_CTX_set_mode(g.ssl_ctx, mode);
		SSL_CTX_set_options(g.ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
		SSL_CTX_set_session_cache_mode(g.ssl_ctx, SSL_SESS_CACHE_OFF);
	}
	g.hdr = xasprintf("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
			  "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
			  cfg.domain);
	g.hdr_len = strlen(g.hdr);

	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.ep < 0)
		die("epoll_create1: %s", strerror(errno));
	g.c = calloc(cfg.users, sizeof(*g.c));
	g.dirty = calloc(cfg.users, sizeof(*g.dirty));
	g.readq = calloc(cfg.users, sizeof(*g.readq));
	g.readq2 = calloc(cfg.users, sizeof(*g.readq2));
	if (!g.c || !g.dirty || !g.readq || !g.readq2)
		die("out of memory");
	for (unsigned i = 0; i < cfg.users; i++) {
		g.c[i].fd = -1;
		g.c[i].idx = i;
	}

	struct results res = { 0 };
	double cli_cpu0 = 0, srv_cpu0 = -1;
	if (cfg.npids) {
		res.rss_before = server_rss_kib();
		if (res.rss_before < 0)
			fprintf(stderr, "xmppd-bench: warning: cannot read /proc of --server-pids\n");
		res.login_srv_cpu = server_cpu_s();
	}

	enum phase ph = PH_LOGIN;
	bool aborted = false;
	uint64_t t0 = now_ns();
	g.t_login_start = t0;
	uint64_t login_deadline = t0 + (uint64_t)(cfg.login_timeout * 1e9);
	uint64_t phase_end = 0, next_progress = t0 + 1000000000ull;
	struct epoll_event evs[1024];

	while (ph != PH_END) {
		uint64_t now = now_ns();
		/* --- timeout for epoll_wait --- */
		int timeout = 100;
		if (g.nreadq || g.ndirty)
			timeout = 0;
		else if (ph == PH_LOGIN && g.started < cfg.users && g.pending < cfg.max_pending)
			timeout = 1;
		else if (ph == PH_RUN && (cfg.scenario == SC_LATENCY || cfg.scenario == SC_PRESENCE))
			timeout = 1;
		else if (phase_end && phase_end > now) {
			uint64_t ms = (phase_end - now) / 1000000 + 1;
			if (ms < (uint64_t)timeout)
				timeout = (int)ms;
		}
		int n = epoll_wait(g.ep, evs, 1024, timeout);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			conn_event(&g.c[evs[i].data.u32], evs[i].events);
		/* connections that hit the per-event read bound */
		uint32_t nrq = g.nreadq;
		for (uint32_t i = 0; i < nrq; i++) {
			struct conn *c = &g.c[g.readq[i]];
			c->readq = false;
		}
		if (nrq) {
			memcpy(g.readq2, g.readq, nrq * sizeof(*g.readq2));
			g.nreadq = 0;
			for (uint32_t i = 0; i < nrq; i++)
				conn_read(&g.c[g.readq2[i]]);
		}
		now = now_ns();

		/* --- start new connections --- */
		if (ph == PH_LOGIN) {
			uint64_t allowed = cfg.users;
			if (cfg.connect_rate > 0) {
				allowed = (uint64_t)((double)(now - t0) / 1e9 * cfg.connect_rate) + 1;
				if (allowed > cfg.users)
					allowed = cfg.users;
			}
			while (g.started < allowed && g.pending < cfg.max_pending)
				conn_start(&g.c[g.started]);
		}
		if (ph == PH_RUN && cfg.scenario == SC_LATENCY && g.sending)
			pace(now);
		if (ph == PH_RUN && cfg.scenario == SC_PRESENCE && g.sending)
			pace_presence(now);

		/* --- flush everything that has output --- */
		for (uint32_t i = 0; i < g.ndirty; i++) {
			struct conn *c = &g.c[g.dirty[i]];
			c->dirty = false;
			if (c->fd < 0)
				continue;
			if (cfg.scenario == SC_CHAT && g.sending && c->state == CS_READY)
				while (c->sent - c->delivered < cfg.window)
					send_one(c);
			conn_flush(c);
		}
		g.ndirty = 0;

		/* --- phase transitions --- */
		now = now_ns();
		if (!cfg.quiet && now >= next_progress) {
			next_progress = now + 1000000000ull;
			if (ph == PH_LOGIN)
				progress("login: %u started, %u ready, %u failed", g.started, g.ready, g.failed);
			else if (ph == PH_QUIET)
				progress("settling: %" PRIu64 " presence stanzas received", g.presence_in);
			else if (ph == PH_RUN && cfg.scenario == SC_PRESENCE)
				progress("run: %zu changes sent, %" PRIu64 " complete, %" PRIu64 " deliveries", g.nchg,
					 g.completed, g.deliveries);
			else if (ph == PH_RUN)
				progress("run: %" PRIu64 " sent, %" PRIu64 " delivered", g.total_sent, g.total_delivered);
		}
		switch (ph) {
		case PH_LOGIN:
			if (now > login_deadline) {
				for (unsigned i = 0; i < cfg.users; i++) {
					struct conn *c = &g.c[i];
					if (c->state == CS_INIT) {
						c->state = CS_CONNECT;
						g.pending++;
						conn_fail(c, "not started before the login timeout");
					} else if (is_logging_in(c)) {
						conn_fail(c, "login timed out after %.0f s", cfg.login_timeout);
					}
				}
			}
			if (g.ready + g.failed < cfg.users)
				break;
			res.login_s = (double)((g.t_last_bind > t0 ? g.t_last_bind : now) - t0) / 1e9;
			res.logins_per_s = res.login_s > 0 ? g.bound / res.login_s : 0;
			g.t_all_ready = now;
			if (res.login_srv_cpu >= 0 && cfg.npids) {
				double c1 = server_cpu_s();
				res.have_login_cpu = c1 >= 0;
				res.login_srv_cpu = c1 - res.login_srv_cpu;
			}
			progress("login: %u of %u users logged in in %.2f s (%.1f/s)", g.bound, cfg.users,
				 res.login_s, res.logins_per_s);
			if (g.failed) {
				aborted = cfg.scenario != SC_LOGIN;
				ph = PH_END;
				break;
			}
			if (cfg.scenario == SC_LOGIN) {
				ph = PH_END;
			} else if (cfg.scenario == SC_IDLE) {
				ph = PH_SETTLE;
				phase_end = now + 2000000000ull;
			} else if (cfg.scenario == SC_PRESENCE) {
				/* the initial-presence storm (broadcasts, probes and
				 * their answers) must be over before measuring */
				ph = PH_QUIET;
				phase_end = now + (uint64_t)(cfg.settle_timeout * 1e9);
			} else {
				build_chat_prefixes();
				ph = PH_RUN;
				g.sending = true;
				g.t_run_start = now_ns();
				phase_end = g.t_run_start + (uint64_t)(cfg.duration * 1e9);
				srv_cpu0 = cfg.npids ? server_cpu_s() : -1;
				cli_cpu0 = self_cpu_s();
				if (cfg.scenario == SC_CHAT)
					for (unsigned i = 0; i < cfg.users; i++)
						mark_dirty(&g.c[i]);
			}
			break;
		case PH_QUIET: {
			uint64_t last = g.t_last_presence > g.t_all_ready ? g.t_last_presence : g.t_all_ready;
			bool quiet = now - last >= (uint64_t)(cfg.settle_quiet * 1e9);
			if (!quiet && now < phase_end)
				break;
			g.settle_timed_out = !quiet;
			g.settle_s = (double)(last - g.t_login_start) / 1e9;
			g.presence_in_settle = g.presence_in;
			progress("initial presence: %" PRIu64 " presence stanzas received, the last %.2f s after the "
				 "first connect%s", g.presence_in, g.settle_s, quiet ? "" : " (still not quiet: timeout)");
			ph = PH_RUN;
			g.sending = true;
			g.t_run_start = now_ns();
			phase_end = g.t_run_start + (uint64_t)(cfg.duration * 1e9);
			srv_cpu0 = cfg.npids ? server_cpu_s() : -1;
			cli_cpu0 = self_cpu_s();
			break;
		}
		case PH_SETTLE:
			if (now < phase_end)
				break;
			if (cfg.npids) {
				res.rss_after = server_rss_kib();
				res.have_rss = res.rss_before >= 0 && res.rss_after >= 0;
				if (res.have_rss)
					res.kib_per_session = (double)(res.rss_after - res.rss_before) / cfg.users;
			}
			ph = PH_HOLD;
			phase_end = g.t_all_ready + (uint64_t)((cfg.duration > 2 ? cfg.duration : 2) * 1e9);
			break;
		case PH_HOLD:
			if (now >= phase_end)
				ph = PH_END;
			break;
		case PH_RUN:
			if (now < phase_end)
				break;
			g.sending = false;
			g.t_run_end = now;
			ph = PH_DRAIN;
			phase_end = now + (uint64_t)(cfg.drain_timeout * 1e9);
			break;
		case PH_DRAIN:
			if ((cfg.scenario == SC_PRESENCE ? g.completed >= g.nchg
							 : g.total_delivered + g.error_msgs >= g.total_sent) ||
			    now >= phase_end) {
				g.t_drain_end = now;
				ph = PH_END;
			}
			break;
		case PH_END:
			break;
		}
	}

	/* --- results --- */
	res.cli_cpu = self_cpu_s();
	if (cfg.scenario == SC_CHAT || cfg.scenario == SC_LATENCY || cfg.scenario == SC_PRESENCE) {
		bool pres = cfg.scenario == SC_PRESENCE;
		if (g.t_run_end > g.t_run_start) {
			res.run_s = (double)(g.t_run_end - g.t_run_start) / 1e9;
			res.msgs_per_s = (pres ? g.deliveries_in_period : g.delivered_in_period) / res.run_s;
			res.bcasts_per_s = g.completed_in_period / res.run_s;
		}
		res.cli_cpu_run = g.t_run_start ? res.cli_cpu - cli_cpu0 : 0;
		if (srv_cpu0 >= 0) {
			double c1 = server_cpu_s();
			if (c1 >= 0) {
				res.have_cpu = true;
				res.srv_cpu = c1 - srv_cpu0;
				uint64_t dl = pres ? g.deliveries : g.total_delivered;
				res.srv_cpu_per_10k = dl ? res.srv_cpu * 10000.0 / dl : 0;
			}
		}
	}
	res.dropped = g.dropped;
	uint64_t lost = lost_count();
	bool ok = !aborted && g.failed == 0 && g.bound == cfg.users && lost == 0 && g.dropped == 0 &&
		  g.unexpected == 0 && g.roster_mismatch == 0;
	if (aborted)
		fprintf(stderr, "xmppd-bench: %u of %u logins failed; scenario %s not run\n", g.failed,
			cfg.users, scenario_names[cfg.scenario]);
	if (lost)
		fprintf(stderr, "xmppd-bench: %" PRIu64 " %s lost\n", lost,
			cfg.scenario == SC_PRESENCE ? "presence deliveries" : "messages");
	if (g.unexpected)
		fprintf(stderr, "xmppd-bench: %" PRIu64 " presence deliveries to users who are not contacts\n",
			g.unexpected);
	if (g.roster_mismatch)
		fprintf(stderr, "xmppd-bench: %u rosters differ from the contact ring\n", g.roster_mismatch);

	/* --- close everything (best effort stream close, no waiting) --- */
	for (unsigned i = 0; i < cfg.users; i++) {
		struct conn *c = &g.c[i];
		bool can_write = c->state != CS_CONNECT && c->state != CS_TLS;
		if (c->state != CS_FAILED)
			c->state = CS_DONE;
		if (c->fd >= 0 && can_write) {
			c->out.off = c->out.len = 0;
			buf_puts(&c->out, "</stream:stream>");
			conn_flush(c);
		}
		conn_close_fd(c);
		free(c->jid);
		free(c->msg_prefix);
	}
	print_results(&res, ok);
	key_cache_save();
	close(g.ep);
	if (g.ssl_ctx)
		SSL_CTX_free(g.ssl_ctx);
	free(g.c);
	free(g.dirty);
	free(g.readq);
	free(g.readq2);
	free(g.hdr);
	free(g.first_error);
	return ok ? 0 : 1;
}
