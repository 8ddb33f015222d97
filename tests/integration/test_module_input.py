#!/usr/bin/python3
"""Bad input to every module's IQ namespace: each of a set of malformed,
odd or hostile payloads (empty, unknown children, wrong element names,
deep nesting, huge attributes and texts, wrong types, other users' JIDs,
broken data forms, bad JIDs in items) gets an answer -- a result or a
stanza error, never silence -- and no daemon dies or logs an error
(RFC 6120 §8.3: bad input gets the error, the server stays up). Run under
ASan/UBSan by CI like every test. Every module of the server is loaded,
the ones that are off by default too."""
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import Client, Server, case, check, eq, run, tostr  # noqa: E402

MODULES = "disco ping version time last vcard private privacy blocking contact_info search register"
srv = Server(modules=MODULES, **{"contact_info.admin": "mailto:admin@localhost"})
PW = {"alice": "pw-alice-in", "bob": "pw-bob-in"}
C = {}

DEEP = "<a>" * 20 + "x" + "</a>" * 20  # within max_depth (32) with the iq and its payload
BIG_ATTR = "v" * 20000
BIG_TEXT = "t" * 60000

# namespace -> (element, payload variants); each variant is the inside of the element
NAMESPACES = {
    "vcard-temp": ("vCard", ["", "<FN/>", "<FN>" + BIG_TEXT + "</FN>", DEEP, "<N><GIVEN><x/></GIVEN></N>",
                             "<EMAIL><USERID>a@b@c</USERID></EMAIL>", "<BINVAL>%%%</BINVAL>"]),
    "jabber:iq:private": ("query", ["", "<x/>", "<x xmlns='jabber:iq:private'/>", "<x xmlns=''/>",
                                    "<a xmlns='urn:t:a'/><a xmlns='urn:t:a'/>", "<a xmlns='urn:t:%s'/>" % BIG_ATTR[:900],
                                    "<a xmlns='urn:t:a'>" + DEEP + "</a>"]),
    "jabber:iq:privacy": ("query", ["", "<list/>", "<list name=''/>", "<active/><default/>",
                                    "<list name='l'><item/></list>",
                                    "<list name='l'><item action='deny' order='x'/></list>",
                                    "<list name='l'><item action='deny' order='1' type='jid' value='a@@b'/></list>",
                                    "<list name='l'><item action='allow' order='-1'/></list>",
                                    "<list name='l'><item action='deny' order='99999999999999999999'/></list>",
                                    "<list name='l'><item action='deny' order='1' type='group' value=''/></list>",
                                    "<list name='l'><item action='maybe' order='1'/></list>",
                                    "<list name='%s'><item action='deny' order='1'/></list>" % BIG_ATTR,
                                    "<active name='nosuch'/>", "<default name='nosuch'/>",
                                    "<list name='l'><item action='deny' order='1'><message/><message/>%s</item></list>"
                                    % DEEP]),
    "urn:xmpp:blocking": ("block", ["", "<item/>", "<item jid=''/>", "<item jid='a@b/c/d@e'/>",
                                    "<item jid='%s'/>" % BIG_ATTR, "<item jid='x@y'>" + DEEP + "</item>"]),
    "jabber:iq:last": ("query", ["", "<x/>", DEEP]),
    "urn:xmpp:time": ("time", ["", "<tzo>+99:99</tzo>"]),
    "jabber:iq:version": ("query", ["", "<name>x</name>"]),
    "jabber:iq:search": ("query", ["", "<first/>", "<first>" + BIG_TEXT[:3000] + "</first>",
                                   "<x xmlns='jabber:x:data'/>", "<x xmlns='jabber:x:data' type='submit'><field/></x>",
                                   "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>nope</value>"
                                   "</field></x>",
                                   "<nick>a</nick><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>",
                                   "<nick>a</nick><set xmlns='http://jabber.org/protocol/rsm'><max>99999999999999999999"
                                   "</max><after/><before/></set>",
                                   "<nick>a</nick><set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set>"]),
    "http://jabber.org/protocol/disco#info": ("query", ["", "<x/>"]),
    "http://jabber.org/protocol/disco#items": ("query", ["", "<x/>"]),
    "jabber:iq:register": ("query", ["", "<username/>", "<password/>", "<remove/><username>x</username>",
                                     "<x xmlns='jabber:x:data' type='submit'/>"]),
    "urn:xmpp:ping": ("ping", ["", "<x/>"]),
}


def node_attrs(ns):
    # disco nodes are part of the protocol: a long or odd one too
    return [" node='%s'" % BIG_ATTR[:3000], " node='urn:xmppd#nope'"] if "disco" in ns else [""]


@case("start; two users")
async def start():
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)
    for u in PW:
        C[u] = await Client(srv, "%s@localhost/in" % u, PW[u]).login()


@case("every variant to every namespace, as get and set, to the server, to the sender's account, to another "
      "user's account: always an answer, result or error", timeout=150)
async def barrage():
    a = C["alice"]
    sent = answered = 0
    targets = ["", " to='localhost'", " to='bob@localhost'", " to='nobody@localhost'"]
    for ns, (elem, variants) in NAMESPACES.items():
        for inner in variants:
            for attrs in node_attrs(ns):
                for typ in ("get", "set"):
                    for to in targets:
                        xml = "<iq type='%s'%s><%s xmlns='%s'%s>%s</%s></iq>" % (typ, to, elem, ns, attrs, inner, elem)
                        r = await a.iq(xml, timeout=10)
                        sent += 1
                        t = r.get("type")
                        check(t in ("result", "error"), "an answer to %s" % xml[:300], tostr(r)[:300])
                        answered += 1
    eq(answered, sent, "answers")
    # two payloads, none, and a payload in no namespace (RFC 6120 §8.2.3)
    for inner in ("<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>", "", "<query/>"):
        r = await a.iq("<iq type='get' to='localhost'>%s</iq>" % inner, timeout=10)
        eq(r.get("type"), "error", "an IQ with %r" % inner)


@case("after the barrage: every daemon still runs, nothing logged at err, and the server still serves")
async def alive():
    pids = srv.pids()
    for inst in ("router-1", "sm-0", "c2s-1", "listen-1"):
        check(inst in pids, "%s is not running" % inst, srv.diag_logs())
    for inst in ("sm-0", "c2s-1"):
        errs = [l for l in srv.log(inst).splitlines() if l.startswith("<3>") or "runtime error" in l
                or "AddressSanitizer" in l]
        eq(errs, [], "error lines in %s.log" % inst)
    await C["alice"].ping_server()
    C["alice"].send("bob@localhost/in", "still here")
    m = await C["bob"].message()
    eq(m["body"], "still here", "a message after the barrage")
    for c in C.values():
        await c.close()
    srv.stop()


if __name__ == "__main__":
    run(file_timeout=200)
