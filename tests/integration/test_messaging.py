#!/usr/bin/python3
"""Messaging between users (RFC 6121 §8.5), errors for undeliverable
stanzas (RFC 6120 §8.3), resource conflicts (RFC 6120 §7.7.2.2) and the
server's own IQs (XEP-0199, XEP-0030, XEP-0092)."""
import asyncio
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (Client, Raw, Server, case, check, diag, eq,  # noqa: E402
                       error_condition, run, tostr)

srv = Server()
PW = {u: "pw-%s-42" % u for u in ("alice", "bob", "carol", "dave")}
N = 1000


@case("server starts; users registered")
def _():
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)


@case("%d chat messages each way between two full JIDs: none lost, none reordered" % N, timeout=60)
async def _():
    a = await Client(srv, "alice@localhost/bulk", PW["alice"]).login()
    b = await Client(srv, "bob@localhost/bulk", PW["bob"]).login()
    t0 = time.monotonic()
    for i in range(N):
        a.send(b.full, "a2b %04d" % i)
        b.send(a.full, "b2a %04d" % i)

    async def collect(c, prefix, frm):
        got = []
        while len(got) < N:
            try:
                m = await c.message(30)
            except TimeoutError:
                break
            if m["type"] == "error":
                raise AssertionError("%s got an error: %s" % (c.jid, m))
            eq(str(m["from"]), frm, "from of a message to %s" % c.jid)
            got.append(m["body"])
        return got

    got_b, got_a = await asyncio.gather(collect(b, "a2b", a.full), collect(a, "b2a", b.full))
    diag("%d + %d messages in %.2f s" % (len(got_b), len(got_a), time.monotonic() - t0))
    for got, prefix in ((got_b, "a2b"), (got_a, "b2a")):
        want = ["%s %04d" % (prefix, i) for i in range(N)]
        if got != want:
            missing = sorted(set(want) - set(got))
            first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)
            raise AssertionError("%s: received %d of %d; missing %d (first %s); first out of order at %s"
                                 % (prefix, len(got), N, len(missing), missing[:3], first))
    await a.close()
    await b.close()


@case("a message from a client that disconnects right after sending is still delivered")
async def _():
    b = await Client(srv, "bob@localhost/waiting", PW["bob"]).login()
    for i in range(3):
        a = await Client(srv, "alice@localhost/hasty%d" % i, PW["alice"]).login()
        a.send(b.full, "sent and gone %d" % i)
        await a.close()
        m = await b.message(5, lambda m: m["body"].startswith("sent and gone"))
        eq(m["body"], "sent and gone %d" % i, "body")
    await b.close()


@case("a message to a bare JID reaches the highest-priority resource only; equal priorities get both")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    hi = await Client(srv, "bob@localhost/high", PW["bob"], priority=5).login()
    lo = await Client(srv, "bob@localhost/low", PW["bob"], priority=1).login()
    await hi.ping_server()
    await lo.ping_server()
    a.send("bob@localhost", "to the bare JID 1")
    m = await hi.message()
    eq(m["body"], "to the bare JID 1", "body at priority 5")
    extra = await lo.quiet(1.0)
    check(not extra, "the priority-1 resource got the message too", [str(x) for x in extra])
    # now both at priority 5: both get it (RFC 6121 §8.5.2.1.1)
    lo.x.send_presence(ppriority=5)
    await lo.ping_server()
    await a.ping_server()
    a.send("bob@localhost", "to the bare JID 2")
    m1 = await hi.message()
    m2 = await lo.message()
    eq((m1["body"], m2["body"]), ("to the bare JID 2", "to the bare JID 2"), "bodies at equal priority")
    eq(str(m2["to"]).split("/")[0], "bob@localhost", "to")
    # a negative priority never gets bare-JID messages
    lo.x.send_presence(ppriority=-1)
    await lo.ping_server()
    a.send("bob@localhost", "to the bare JID 3")
    m = await hi.message()
    eq(m["body"], "to the bare JID 3", "body")
    extra = await lo.quiet(1.0)
    check(not extra, "the priority -1 resource got a bare-JID message", [str(x) for x in extra])
    for c in (a, hi, lo):
        await c.close()


async def expect_error(c, cond, pred_body, what, timeout=5):
    m = await c.message(timeout, lambda m: m["type"] == "error")
    t, got = error_condition(m.xml)
    eq(got, cond, "%s: error condition (stanza %s)" % (what, m))
    check(m["body"] in ("", pred_body), "%s: error carries another body %r" % (what, m["body"]))
    return m


@case("a message to a user without an available resource is stored offline (XEP-0160), not bounced")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    a.send("dave@localhost", "are you there?")
    # the same for a chat to a full JID of a user without any session
    # (RFC 6121 §8.5.3.2.1: as if to the bare JID)
    a.send("dave@localhost/gone", "and there?")
    errs = await a.quiet(1.0, lambda m: m["type"] == "error")
    check(not errs, "the sender got an error for a stored message", *[str(m) for m in errs])
    d = await Client(srv, "dave@localhost/back", PW["dave"]).login()
    got = [(await d.message())["body"] for _ in range(2)]
    eq(got, ["are you there?", "and there?"], "stored messages at the next login")
    await d.close()
    await a.close()


@case("a message to a non-existent local user gets service-unavailable")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    a.send("nobody-here@localhost", "hello?")
    m = await expect_error(a, "service-unavailable", "hello?", "unknown user")
    eq(str(m["from"]), "nobody-here@localhost", "from of the error")
    await a.close()


@case("a message to a remote domain gets remote-server-not-found")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    a.send("someone@remote.example", "over there")
    m = await expect_error(a, "remote-server-not-found", "over there", "remote domain")
    eq(str(m["from"]), "someone@remote.example", "from of the error")
    await a.close()


@case("a second login with the same full JID: the first gets <conflict/>, the second works")
async def _():
    first = await Client(srv, "carol@localhost/same", PW["carol"]).login()
    second = await Client(srv, "carol@localhost/same", PW["carol"]).login()
    check(await first.wait_disconnected(5), "the first session was not disconnected")
    eq(first.stream_errors, ["conflict"], "stream errors of the first session")
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    a.send("carol@localhost/same", "which one?")
    m = await second.message()
    eq(m["body"], "which one?", "body at the second session")
    eq(second.stream_errors, [], "stream errors of the second session")
    await second.ping_server()
    for c in (a, second):
        await c.close()


@case("XEP-0199 ping to the server gets a result")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    r = await a.ping_server()
    eq(r.get("from"), "localhost", "from of the ping result")
    eq(len(r), 0, "children of the ping result")
    await a.close()


@case("disco#info of the server: identity server/im and exactly what the default modules serve")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    r = await a.iq("<iq xmlns='jabber:client' type='get' to='localhost'>"
                   "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    eq(r.get("type"), "result", "type")
    q = r.find("{http://jabber.org/protocol/disco#info}query")
    check(q is not None, "no disco#info query", tostr(r))
    ids = [(i.get("category"), i.get("type")) for i in q.findall("{http://jabber.org/protocol/disco#info}identity")]
    check(("server", "im") in ids, "no server/im identity", ids)
    feats = sorted(f.get("var") for f in q.findall("{http://jabber.org/protocol/disco#info}feature"))
    # the default modules (xmppd.conf(5)): disco ping version time last
    # vcard private privacy blocking contact_info, and the core's msgoffline;
    # private is an account feature, contact_info has no addresses here
    eq(feats, sorted(["urn:xmpp:ping", "http://jabber.org/protocol/disco#info",
                      "http://jabber.org/protocol/disco#items", "jabber:iq:version", "urn:xmpp:time",
                      "jabber:iq:last", "vcard-temp", "jabber:iq:privacy", "urn:xmpp:blocking",
                      "msgoffline"]), "features")
    r = await a.iq("<iq xmlns='jabber:client' type='get' to='localhost'>"
                   "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    eq(r.get("type"), "result", "disco#items type")
    await a.close()


@case("jabber:iq:version of the server answers name xmppd")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    r = await a.iq("<iq xmlns='jabber:client' type='get' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    eq(r.get("type"), "result", "type")
    name = r.find("{jabber:iq:version}query/{jabber:iq:version}name")
    check(name is not None, "no <name/>", tostr(r))
    eq(name.text, "xmppd", "name")
    ver = r.find("{jabber:iq:version}query/{jabber:iq:version}version")
    check(ver is not None and ver.text, "no <version/>", tostr(r))
    await a.close()


@case("an IQ with an unknown namespace gets service-unavailable (to the server and to a bare JID)")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    for to in ("localhost", "bob@localhost", "alice@localhost"):
        r = await a.iq("<iq xmlns='jabber:client' type='get' to='%s'><query xmlns='urn:example:nothing'/></iq>" % to)
        eq(r.get("type"), "error", "type of the answer from %s" % to)
        eq(error_condition(r)[1], "service-unavailable", "condition from %s (%s)" % (to, tostr(r)))
    r = await a.iq("<iq xmlns='jabber:client' type='set' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
    eq(error_condition(r)[1], "service-unavailable", "condition for a set (%s)" % tostr(r))
    await a.close()


@case("an error stanza is never answered (message, presence and IQ errors; result IQs)")
def _():
    r = Raw(srv.port)
    try:
        r.login("alice", PW["alice"], "raw")
        r.ping("settle")
        stanzas = [
            # errors to nowhere: an unknown user, an offline user, a remote domain, the server
            "<message type='error' to='nobody@localhost'><body>x</body>"
            "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            "<message type='error' to='dave@localhost'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            "<message type='error' to='x@remote.example'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            "<iq type='error' id='e1' to='localhost'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            "<iq type='error' id='e2' to='nobody@localhost'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            "<iq type='result' id='r1' to='localhost'/>",
            "<iq type='result' id='r2' to='nobody@localhost/x'/>",
            "<presence type='error' to='nobody@localhost'><error type='cancel'>"
            "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        ]
        for s in stanzas:
            r.send(s)
        before = r.ping("barrier-1")
        # bounces from remote routing may come a little later: a second barrier
        time.sleep(0.5)
        before += r.ping("barrier-2")
        check(not before, "the server answered error/result stanzas", *[tostr(e) for e in before])
    finally:
        r.close()


@case("a stanza with a forged 'from' is stamped with the sender's full JID")
async def _():
    a = await Client(srv, "alice@localhost/pc", PW["alice"]).login()
    b = await Client(srv, "bob@localhost/pc", PW["bob"]).login()
    a.send_xml("<message xmlns='jabber:client' to='%s' from='carol@localhost/evil' type='chat'>"
               "<body>forged</body></message>" % b.full)
    m = await b.message()
    eq(m["body"], "forged", "body")
    eq(str(m["from"]), a.full, "from")
    await a.close()
    await b.close()


if __name__ == "__main__":
    run()
