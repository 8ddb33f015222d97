#!/usr/bin/python3
"""Hostile and broken streams: nothing is processed before authentication,
plaintext injected before TLS is discarded (DESIGN §3), and each stream
error of RFC 6120 §4.9.3 ends only the offending connection: a session of
another user carries on and still gets messages afterwards."""
import base64
import os
import select
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (NS_SASL, NS_STREAMS, NS_TLS, Client, Raw, Server, case, check,  # noqa: E402
                       diag, eq, mechanisms, run, tostr)

srv = Server()
PW = {u: "pw-%s-7" % u for u in ("alice", "bob", "mallory")}
W = {}  # the witnesses: alice and bob, connected all along


@case("server starts; alice and bob connected as witnesses")
async def _():
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)
    W["a"] = await Client(srv, "alice@localhost/witness", PW["alice"]).login()
    W["b"] = await Client(srv, "bob@localhost/witness", PW["bob"]).login()


_n = [0]


async def witness_ok(forbidden=()):
    """bob still gets alice's messages, and nothing else got through."""
    a, b = W["a"], W["b"]
    _n[0] += 1
    body = "still alive %d" % _n[0]
    a.send(b.full, body)
    got = []
    while True:
        m = await b.message(5)
        if m["body"] == body:
            break
        got.append(m)
    bad = [m for m in got if m["body"] in forbidden or str(m["from"]).split("/")[0] != "alice@localhost"]
    check(not bad, "bob received stanzas that must never be delivered", *[str(m) for m in bad])
    check(not a.disconnected.is_set() and not b.disconnected.is_set(), "a witness lost its connection")


def raw_tls_stream():
    r = Raw(srv.port)
    r.open()
    r.starttls()
    return r


# ---------------------------------------------------------------- pre-auth

@case("a <message> before authentication is not delivered: stream error not-authorized (before and after TLS)")
async def _():
    for tls in (False, True):
        r = raw_tls_stream() if tls else Raw(srv.port)
        try:
            if tls:
                f = r.open()
                check(mechanisms(f), "no mechanisms after TLS", tostr(f))
            else:
                r.open()
            r.send("<message to='bob@localhost' type='chat'><body>pre-auth %s</body></message>" % tls)
            cond = r.stream_error(5)
            eq(cond, "not-authorized", "stream error for a message before auth (tls=%s)" % tls)
        finally:
            r.close()
    await witness_ok(forbidden=("pre-auth False", "pre-auth True"))


@case("a <message> after SASL but before resource binding is not delivered: not-authorized")
async def _():
    r = raw_tls_stream()
    try:
        r.open()
        st, cond = r.auth_plain("mallory", PW["mallory"])
        eq(st, "success", "PLAIN")
        r.open()
        r.send("<message to='bob@localhost' type='chat'><body>before bind</body></message>")
        # RFC 6120 §7.1: not processed, stream closed with not-authorized
        eq(r.stream_error(5), "not-authorized", "stream error for a message before binding")
    finally:
        r.close()
    await witness_ok(forbidden=("before bind",))


@case("bytes sent with <starttls/> in the same write are discarded; a fresh stream follows TLS")
async def _():
    since = srv.log_size("c2s-1")
    r = Raw(srv.port)
    try:
        r.open()
        # one TCP write: the STARTTLS request and an injected stanza (and a
        # stream restart with an auth attempt, as a man-in-the-middle would)
        r.send("<starttls xmlns='%s'/>"
               "<message to='bob@localhost' type='chat'><body>injected</body></message>" % NS_TLS)
        r.expect("{%s}proceed" % NS_TLS)
        r._wrap()
        r._new_parser()
        f = r.open()
        eq([c.tag for c in f], ["{%s}mechanisms" % NS_SASL], "features of the fresh stream after TLS")
        st, cond = r.auth_plain("mallory", PW["mallory"])
        eq(st, "success", "login on the fresh stream")
        r.open()
        jid = r.bind("inject")
        before = r.ping("after-inject")
        check(not before, "unexpected stanzas", *[tostr(e) for e in before])
        eq(jid, "mallory@localhost/inject", "bound JID")
    finally:
        r.close()
    await witness_ok(forbidden=("injected",))
    check("injected" not in srv.log("c2s-1")[since:], "the injected message shows in c2s-1.log")
    check(not srv.wait_log("c2s-1", r"message before authentication", 0.1, since),
          "c2s processed the injected <message/> (logged 'message before authentication')")


@case("bytes sent with <starttls/> that look like a stream restart and an <auth/> are discarded too")
async def _():
    since = srv.log_size("c2s-1")
    r = Raw(srv.port)
    try:
        r.open()
        blob = base64.b64encode(b"\0mallory\0" + PW["mallory"].encode()).decode()
        r.send("<starttls xmlns='%s'/>" % NS_TLS + r.header() +
               "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, blob))
        r.expect("{%s}proceed" % NS_TLS)
        r._wrap()
        r._new_parser()
        f = r.open()
        eq([c.tag for c in f], ["{%s}mechanisms" % NS_SASL], "features of the fresh stream after TLS")
        check(not r.stanzas, "more than features after the fresh header", *[tostr(e) for e in r.stanzas])
    finally:
        r.close()
    check(not srv.wait_log("c2s-1", r"auth-(success|failure)[^\n]*user=mallory", 0.3, since),
          "the injected <auth/> was processed", srv.log("c2s-1")[since:][-800:])
    await witness_ok()


# ---------------------------------------------------------------- stream errors

def error_for(payload, after_header=True, timeout=5):
    """Open a plaintext stream, send payload, return (condition, seconds, text)."""
    r = Raw(srv.port)
    try:
        if after_header:
            r.open()
        t0 = time.monotonic()
        r.send(payload)
        cond = r.stream_error(timeout)
        return cond, time.monotonic() - t0, r.text
    except TimeoutError:
        return "TIMEOUT", time.monotonic() - t0, r.text
    finally:
        r.close()


@case("garbage bytes -> not-well-formed (inside a stream, and instead of a stream)")
async def _():
    wrong = []
    # ill-formed markup: not-well-formed (RFC 6120 §4.9.3.13), promptly
    for payload, hdr in (("<<<this is not xml>>>", True),
                         ("<message><body>x</wrong></message>", True),
                         (b"<message><body>\xff\xfe\xc0</body></message>", True),
                         ("<message to='bob@localhost' type='chat' <body>x</body></message>", True),
                         ("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
                         (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False)):  # a TLS ClientHello
        cond, dt, text = error_for(payload, after_header=hdr)
        if cond != "not-well-formed":
            wrong.append("%r -> %s%s" % (payload, cond or "no stream error",
                                         " (stream still open after 5 s)" if cond == "TIMEOUT" else ""))
    # ill-formed text between stanzas: not-well-formed, or the generic bad-format
    for payload in ("&&& garbage", "\x01\x02"):
        cond, dt, text = error_for(payload)
        diag("%r -> %s" % (payload, cond))
        if cond not in ("not-well-formed", "bad-format"):
            wrong.append("%r -> %s" % (payload, cond or "no stream error"))
    check(not wrong, "wrong answers to garbage:", *wrong)
    await witness_ok()


@case("a DOCTYPE -> restricted-xml (RFC 6120 §11.1)")
async def _():
    r = Raw(srv.port)
    try:
        r.send("<?xml version='1.0'?><!DOCTYPE stream:stream>" + r.header(decl=False))
        cond = r.stream_error(5)
    finally:
        r.close()
    eq(cond, "restricted-xml", "condition for a DOCTYPE")
    await witness_ok()


@case("an XML comment -> restricted-xml")
async def _():
    cond, _, text = error_for("<!-- a comment -->")
    eq(cond, "restricted-xml", "condition for a comment")
    cond, _, text = error_for("<message to='bob@localhost'><!-- inside --><body>c</body></message>")
    eq(cond, "restricted-xml", "condition for a comment inside a stanza")
    await witness_ok()


@case("a processing instruction -> restricted-xml")
async def _():
    cond, _, text = error_for("<?evil instruction?>")
    eq(cond, "restricted-xml", "condition for a processing instruction")
    await witness_ok()


LAUGHS = ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>" +
          "".join("<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10)
                  for i in range(1, 10)) + "]>")


@case("a billion-laughs document -> restricted-xml, fast, without memory growth")
async def _():
    hwm0 = srv.rss_kib("VmHWM")
    r = Raw(srv.port)
    t0 = time.monotonic()
    try:
        r.send(LAUGHS + "<stream:stream xmlns='jabber:client' xmlns:stream='%s' to='&lol9;' version='1.0'>"
               "<message><body>&lol9;</body></message>" % NS_STREAMS)
        cond = r.stream_error(5)
    finally:
        r.close()
    dt = time.monotonic() - t0
    eq(cond, "restricted-xml", "condition for entity declarations")
    check(dt < 2.0, "the error took %.2f s" % dt)
    grew = srv.rss_kib("VmHWM") - hwm0
    diag("peak RSS over the daemons grew by %d KiB" % grew)
    check(grew < 20 * 1024, "peak RSS grew by %d KiB" % grew)
    # and an entity reference without any declaration inside a stanza
    cond, _, _ = error_for("<message to='bob@localhost'><body>&lol9;</body></message>")
    check(cond in ("restricted-xml", "not-well-formed"), "undeclared entity: %r" % cond)
    await witness_ok()


def blast(r, prefix, total, suffix="", chunk=65536):
    """Send prefix, then total bytes of 'A' in chunks, then suffix, while
    watching for an answer; stops sending when the server answers, stops
    reading or closes. Returns the number of bytes sent."""
    sent = 0
    r.send(prefix)
    block = b"A" * chunk
    r.sock.settimeout(3)
    try:
        while sent < total:
            n = min(chunk, total - sent)
            r.sock.sendall(block[:n])
            sent += n
            pending = r.sock.pending() if isinstance(r.sock, ssl.SSLSocket) else 0
            if pending or select.select([r.sock], [], [], 0)[0]:
                if not r.read_some(0.5) or any(e.tag == "{%s}error" % NS_STREAMS for e in r.stanzas):
                    break
        else:
            r.send(suffix)
    except (socket.timeout, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
        diag("sending stopped after %d bytes: %s" % (sent, type(e).__name__))
    return sent


@case("a 10 MiB stanza after login -> policy-violation; no delivery; daemons' memory does not grow by tens of MB",
      timeout=60)
async def _():
    hwm0, rss0 = srv.rss_kib("VmHWM"), srv.rss_kib()
    r = raw_tls_stream()
    try:
        r.open()
        eq(r.auth_plain("mallory", PW["mallory"])[0], "success", "login")
        r.open()
        r.bind("big")
        t0 = time.monotonic()
        sent = blast(r, "<message to='%s' type='chat'><body>BIG" % W["b"].full, 10 << 20, "</body></message>")
        cond = r.stream_error(15)
        diag("sent %d bytes; answer after %.2f s" % (sent, time.monotonic() - t0))
    finally:
        r.close()
    eq(cond, "policy-violation", "condition for a 10 MiB stanza")
    await witness_ok()
    hwm, rss = srv.rss_kib("VmHWM"), srv.rss_kib()
    diag("daemons: RSS %d -> %d KiB, peak %d -> %d KiB" % (rss0, rss, hwm0, hwm))
    check(hwm - hwm0 < 20 * 1024, "peak RSS grew by %d KiB" % (hwm - hwm0))
    check(rss - rss0 < 20 * 1024, "RSS grew by %d KiB" % (rss - rss0))


@case("a 10 MiB element before authentication -> policy-violation", timeout=60)
async def _():
    hwm0 = srv.rss_kib("VmHWM")
    r = raw_tls_stream()
    try:
        r.open()
        blast(r, "<auth xmlns='%s' mechanism='PLAIN'>" % NS_SASL, 10 << 20, "</auth>")
        cond = r.stream_error(15)
    finally:
        r.close()
    eq(cond, "policy-violation", "condition for a 10 MiB pre-auth element")
    grew = srv.rss_kib("VmHWM") - hwm0
    check(grew < 20 * 1024, "peak RSS grew by %d KiB" % grew)
    await witness_ok()


@case("an unknown 'to' domain in the stream header -> host-unknown")
async def _():
    r = Raw(srv.port)
    try:
        r.send(r.header(to="not-served.example"))
        cond = r.stream_error(5)
    finally:
        r.close()
    eq(cond, "host-unknown", "condition")
    await witness_ok()


@case("a wrong stream namespace -> invalid-namespace (streams namespace and content namespace)")
async def _():
    wrong = []
    for what, hdr in (("streams namespace http://example.com/not-streams",
                       Raw.header(stream_ns="http://example.com/not-streams")),
                      ("content namespace urn:example:bogus", Raw.header(xmlns="urn:example:bogus")),
                      ("content namespace jabber:server on the client port", Raw.header(xmlns="jabber:server"))):
        cond, dt, text = error_for(hdr, after_header=False)
        if cond != "invalid-namespace":
            wrong.append("%s -> %s" % (what, "no stream error; the server answered "
                                       + text[-160:] if cond == "TIMEOUT" else cond))
    check(not wrong, "wrong answers to bad namespaces:", *wrong)
    await witness_ok()


@case("the witnesses are unharmed at the end (sessions listed, messages both ways)")
async def _():
    jids = [row[0] for row in srv.sessions()]
    for c in (W["a"], W["b"]):
        check(c.full in jids, "%s missing from xmppctl sessions" % c.full, jids)
    W["b"].send(W["a"].full, "back to you")
    m = await W["a"].message(5, lambda m: m["body"] == "back to you")
    eq(str(m["from"]), W["b"].full, "from")
    await W["a"].close()
    await W["b"].close()


if __name__ == "__main__":
    run()
