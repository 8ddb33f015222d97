/* stanza.h - what several daemons need to know about stanzas: XMPP
 * namespaces, the stanza and stream error conditions of RFC 6120, error
 * replies, and stamping the server-chosen 'from' onto a canonical stanza. */
#ifndef XMPPD_STANZA_H
#define XMPPD_STANZA_H

#include <stddef.h>

#include "buf.h"

#define NS_CLIENT "jabber:client"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_PING "urn:xmpp:ping"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_VERSION "jabber:iq:version"
#define NS_DELAY "urn:xmpp:delay"

/* RFC 6120 §8.3.3 stanza error conditions. */
enum stanza_error {
    SE_NONE = 0,
    SE_BAD_REQUEST, SE_CONFLICT, SE_FEATURE_NOT_IMPLEMENTED, SE_FORBIDDEN, SE_GONE,
    SE_INTERNAL_SERVER_ERROR, SE_ITEM_NOT_FOUND, SE_JID_MALFORMED, SE_NOT_ACCEPTABLE,
    SE_NOT_ALLOWED, SE_NOT_AUTHORIZED, SE_POLICY_VIOLATION, SE_RECIPIENT_UNAVAILABLE,
    SE_REDIRECT, SE_REGISTRATION_REQUIRED, SE_REMOTE_SERVER_NOT_FOUND,
    SE_REMOTE_SERVER_TIMEOUT, SE_RESOURCE_CONSTRAINT, SE_SERVICE_UNAVAILABLE,
    SE_SUBSCRIPTION_REQUIRED, SE_UNDEFINED_CONDITION, SE_UNEXPECTED_REQUEST,
    SE_END
};

/* RFC 6120 §4.9.3 stream error conditions. */
enum stream_error {
    STE_NONE = 0,
    STE_BAD_FORMAT, STE_BAD_NAMESPACE_PREFIX, STE_CONFLICT, STE_CONNECTION_TIMEOUT,
    STE_HOST_GONE, STE_HOST_UNKNOWN, STE_IMPROPER_ADDRESSING, STE_INTERNAL_SERVER_ERROR,
    STE_INVALID_FROM, STE_INVALID_NAMESPACE, STE_INVALID_XML, STE_NOT_AUTHORIZED,
    STE_NOT_WELL_FORMED, STE_POLICY_VIOLATION, STE_REMOTE_CONNECTION_FAILED, STE_RESET,
    STE_RESOURCE_CONSTRAINT, STE_RESTRICTED_XML, STE_SEE_OTHER_HOST, STE_SYSTEM_SHUTDOWN,
    STE_UNDEFINED_CONDITION, STE_UNSUPPORTED_ENCODING, STE_UNSUPPORTED_FEATURE,
    STE_UNSUPPORTED_STANZA_TYPE, STE_UNSUPPORTED_VERSION,
    STE_END
};

/* Element name of a stanza error condition ("service-unavailable"). */
const char *stanza_error_name(unsigned e);
/* Its default error type per RFC 6120 §8.3.3 ("cancel", "wait"...). */
const char *stanza_error_type(unsigned e);
/* Its legacy numeric code (XEP-0086 §3, still wanted by XEP-0077 and
 * XEP-0078 clients), 0 for a condition XEP-0086 does not map. */
unsigned stanza_error_code(unsigned e);
/* Condition by name; SE_NONE if unknown. */
unsigned stanza_error_parse(const char *name, size_t len);
/* Element name of a stream error condition. */
const char *stream_error_name(unsigned e);
/* Condition by name; STE_NONE if unknown. */
unsigned stream_error_parse(const char *name, size_t len);

/* Append <stream:error><COND xmlns=...streams/>[<text>]</stream:error>. */
void stream_error_xml(struct buf *out, const char *cond, const char *text);

/* Build the error reply to a canonical stanza (RFC 6120 §8.3.1): from and
 * to swapped, type='error', the original children kept, and an <error/>
 * with the condition. When the stanza had no 'from' (the server itself sent
 * it on a client's behalf), fallback_to is used as the reply's 'to'.
 * Returns -1, writing nothing, for a stanza of type 'error' (an error is
 * never answered with an error) or one that does not parse. */
int stanza_error_reply(const char *body, size_t len, unsigned cond, const char *text,
                       const char *fallback_to, struct buf *out);
/* Copy canonical stanza body to out with from='from' inserted after the
 * element name (the server stamps every client stanza, RFC 6120 §8.1.2.1);
 * if the canonical body already has a 'from' on the root it is replaced. */
int stanza_stamp_from(const char *body, size_t len, const char *from, struct buf *out);

#endif
