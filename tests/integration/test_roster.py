#!/usr/bin/python3
"""Rosters, subscriptions and presence (RFC 6121 §2-§4) and offline
messages (RFC 6121 §8.5.2.2.1, XEP-0160, XEP-0203), with slixmpp clients
whose automatic subscription answers are switched off, so every step is
the test's: the subscription dance both ways with the roster pushes and
states on each side after every step, pre-approval, requests kept for the
next login, roster IQ errors and versioning, probes and broadcasts with
three users of two resources each, unavailable presence when a TCP
connection dies, offline messages across a restart, the xmppctl roster
and offline commands."""
import asyncio
import os
import sys
import time
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (Client, Server, case, check, diag, eq,  # noqa: E402
                       error_condition, run, tostr)

NS_R = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"
srv = Server()
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "p1", "p2", "p3", "olga", "quinn", "vera", "rex")
PW = {u: "pw-%s-7" % u for u in USERS}


def J(u):
    return "%s@localhost" % u


# ---------------------------------------------------------------- helpers

class IM:
    """A slixmpp client that answers nothing by itself and records roster
    pushes, presences and messages in order."""

    def __init__(self, user, resource, priority=None, presence=True):
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        self.c = Client(srv, "%s/%s" % (J(user), resource), PW[user], priority=priority, presence=presence)
        x = self.c.x
        x.auto_authorize = None   # no automatic answer to "subscribe"
        x.auto_subscribe = False
        self.pushes = asyncio.Queue()

        def on_push(iq):
            if iq["type"] == "set":
                self.pushes.put_nowait(iq.xml)
        x.register_handler(Callback("it-push", MatchXPath("{jabber:client}iq/{%s}query" % NS_R), on_push))

    @property
    def full(self):
        return self.c.full

    async def login(self, roster=True):
        await self.c.login()
        if roster:
            await self.roster()
        return self

    async def roster(self, ver=None):
        """(ver, {jid: item dict}) of a roster get; (None, None) for an
        empty result (RFC 6121 §2.6.3)."""
        q = "<query xmlns='%s'%s/>" % (NS_R, "" if ver is None else " ver='%s'" % ver)
        r = await self.c.iq("<iq xmlns='jabber:client' type='get'>%s</iq>" % q)
        eq(r.get("type"), "result", "roster get of %s (%s)" % (self.full, tostr(r)))
        query = r.find("{%s}query" % NS_R)
        if query is None:
            return None, None
        return query.get("ver"), {i.get("jid"): item(i) for i in query.findall("{%s}item" % NS_R)}

    async def push(self, timeout=5.0):
        """The next roster push: (jid, item dict, ver)."""
        try:
            iq = await asyncio.wait_for(self.pushes.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no roster push within %.1f s" % (self.full, timeout)) from None
        q = iq.find("{%s}query" % NS_R)
        items = q.findall("{%s}item" % NS_R)
        eq(len(items), 1, "items in a roster push")
        check(not iq.get("from") or iq.get("from") == self.full.split("/")[0], "push from another entity", tostr(iq))
        return items[0].get("jid"), item(items[0]), q.get("ver")

    async def no_push(self, seconds=0.6):
        await asyncio.sleep(seconds)
        got = []
        while not self.pushes.empty():
            got.append(ET.tostring(self.pushes.get_nowait()).decode())
        check(not got, "%s: unexpected roster push(es)" % self.full, *got)

    async def presence(self, ptype, frm, timeout=5.0, keep_others=True):
        """The next presence of this type from frm (bare: any resource of
        it); others received meanwhile are kept in self.seen."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s presence from %s within %.1f s" % (self.full, ptype, frm, timeout))
            try:
                p = await self.c.presence_(left)
            except TimeoutError:
                continue
            f = str(p["from"])
            if p["type"] == ptype and (f == frm or ("/" not in frm and f.split("/")[0] == frm)):
                return p

    async def presences(self, seconds=0.8):
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(await self.c.presence_(left))
            except TimeoutError:
                return got

    def send_presence(self, to=None, ptype=None, **kw):
        self.c.x.send_presence(pto=to, ptype=ptype, **kw)

    async def close(self):
        await self.c.close()


def item(el):
    return {"subscription": el.get("subscription"), "ask": el.get("ask"), "approved": el.get("approved"),
            "name": el.get("name"), "groups": sorted(g.text or "" for g in el.findall("{%s}group" % NS_R))}


def state(it):
    """'none', 'none+ask', 'to', 'from+ask', 'both', 'none+approved'..."""
    if it is None:
        return None
    s = it["subscription"]
    if it["ask"] == "subscribe":
        s += "+ask"
    if it["approved"] == "true":
        s += "+approved"
    return s


async def expect_push(c, jid, want, what):
    got_jid, it, ver = await c.push()
    eq(got_jid, jid, "%s: jid of the push" % what)
    eq(state(it) if it["subscription"] != "remove" else "remove", want, "%s: pushed state" % what)
    return it, ver


async def roster_state(c, jid):
    _, items = await c.roster()
    return state(items.get(jid))


def ctl_rows(*args):
    rc, o, e = srv.ctl(*args)
    check(rc == 0, "xmppctl %s: exit %d" % (" ".join(args), rc), o, e)
    return [l.split("\t") for l in o.splitlines() if l.strip()]


def delay_of(msg):
    d = msg.xml.find("{%s}delay" % NS_DELAY)
    return None if d is None else (d.get("from"), d.get("stamp"))


# ---------------------------------------------------------------- cases

@case("server starts; users registered")
def _():
    srv.start()
    for u in USERS:
        srv.register(J(u), PW[u])


@case("subscription dance alice <-> bob, both ways, ending in 'both': pushes and states after every step",
      timeout=60)
async def _():
    a = await IM("alice", "pc").login()
    b = await IM("bob", "pc").login()
    ver_a0, items = await a.roster()
    eq(items, {}, "alice's roster at the start")

    # 1. alice subscribes to bob (§3.1.1-§3.1.3)
    a.send_presence(J("bob"), "subscribe")
    await expect_push(a, J("bob"), "none+ask", "1 alice")          # §3.1.2: ask before the request leaves
    p = await b.presence("subscribe", J("alice"))
    eq(str(p["from"]), J("alice"), "1: the request comes from alice's bare JID (§3.1.2)")
    await b.no_push()                                               # §A.1: a pending request is not a roster item
    eq(await roster_state(a, J("bob")), "none+ask", "1: alice's roster")
    eq(await roster_state(b, J("alice")), None, "1: bob's roster")

    # 2. bob approves (§3.1.5)
    b.send_presence(J("alice"), "subscribed")
    await expect_push(b, J("alice"), "from", "2 bob")
    p = await a.presence("subscribed", J("bob"))
    await expect_push(a, J("bob"), "to", "2 alice")
    await a.presence("available", b.full)                          # §3.1.5: bob's presence follows
    eq(await roster_state(a, J("bob")), "to", "2: alice's roster")
    eq(await roster_state(b, J("alice")), "from", "2: bob's roster")

    # 3. bob subscribes back
    b.send_presence(J("alice"), "subscribe")
    await expect_push(b, J("alice"), "from+ask", "3 bob")
    await a.presence("subscribe", J("bob"))
    await a.no_push()                                               # To -> To + Pending In: nothing to show
    eq(await roster_state(a, J("bob")), "to", "3: alice's roster")
    eq(await roster_state(b, J("alice")), "from+ask", "3: bob's roster")

    # 4. alice approves: both
    a.send_presence(J("bob"), "subscribed")
    await expect_push(a, J("bob"), "both", "4 alice")
    await b.presence("subscribed", J("alice"))
    await expect_push(b, J("alice"), "both", "4 bob")
    await b.presence("available", a.full)
    eq(await roster_state(a, J("bob")), "both", "4: alice's roster")
    eq(await roster_state(b, J("alice")), "both", "4: bob's roster")
    await a.no_push()
    await b.no_push()

    # the server side agrees
    rows = {r[0]: r for r in ctl_rows("roster", J("alice"))}
    eq(rows[J("bob")][1], "both", "xmppctl roster alice: subscription")

    # a second "subscribe" from bob (already subscribed) is not delivered
    # to alice: her server answers "subscribed" itself (§A.3.1 [2]), which
    # bob's server does not deliver in "Both" (§A.3.3); no state changes
    b.send_presence(J("alice"), "subscribe")
    got = [p for p in await a.presences(0.6) if p["type"] == "subscribe"]
    check(not got, "alice was asked again", *[str(p) for p in got])
    got = [p for p in await b.presences(0.2) if p["type"] == "subscribed"]
    check(not got, "bob got a subscribed that changes nothing", *[str(p) for p in got])
    await a.no_push()
    await b.no_push()
    eq(await roster_state(b, J("alice")), "both", "bob's roster after the second request")

    # 5. alice unsubscribes from bob (§3.3): alice from, bob to; bob stops
    #    sending presence: alice gets bob's unavailable (§3.3.3)
    a.send_presence(J("bob"), "unsubscribe")
    await expect_push(a, J("bob"), "from", "5 alice")
    await b.presence("unsubscribe", J("alice"))
    await expect_push(b, J("alice"), "to", "5 bob")
    await a.presence("unavailable", b.full)
    # 6. alice cancels bob's subscription to her (§3.2): none both sides;
    #    bob gets alice's unavailable presence (§3.2.2)
    a.send_presence(J("bob"), "unsubscribed")
    await expect_push(a, J("bob"), "none", "6 alice")
    await b.presence("unsubscribed", J("alice"))
    await expect_push(b, J("alice"), "none", "6 bob")
    await b.presence("unavailable", a.full)
    eq(await roster_state(a, J("bob")), "none", "6: alice's roster")
    eq(await roster_state(b, J("alice")), "none", "6: bob's roster")
    # outbound "unsubscribed" without anything to cancel is not routed (§A.2.4)
    b.send_presence(J("alice"), "unsubscribed")
    got = [p for p in await a.presences(0.6) if p["type"] == "unsubscribed"]
    check(not got, "an unsubscribed that changes nothing was routed", *[str(p) for p in got])
    await a.close()
    await b.close()


@case("a subscription request to an offline user is kept and re-delivered at each login until answered (§3.1.3)")
async def _():
    e = await IM("erin", "pc").login()
    e.send_presence(J("dave"), "subscribe")
    await expect_push(e, J("dave"), "none+ask", "erin")
    for n in range(2):
        d = await IM("dave", "login%d" % n).login()
        p = await d.presence("subscribe", J("erin"))
        eq(str(p["to"]).split("/")[0], J("dave"), "to of the kept request")
        eq(await roster_state(d, J("erin")), None, "dave's roster does not show a pending request")
        rows = {r[0]: r for r in ctl_rows("roster", J("dave"))}
        eq(rows[J("erin")][4], "yes", "xmppctl shows the pending request")
        await d.close()
    # dave declines now: erin's ask goes away
    d = await IM("dave", "pc").login()
    await d.presence("subscribe", J("erin"))
    d.send_presence(J("erin"), "unsubscribed")
    await e.presence("unsubscribed", J("dave"))
    await expect_push(e, J("dave"), "none", "erin after the refusal")
    await d.no_push()   # the request never was a roster item
    await d.close()
    d = await IM("dave", "again").login()
    got = [p for p in await d.presences(0.8) if p["type"] == "subscribe"]
    check(not got, "the declined request came again", *[str(p) for p in got])
    await d.close()
    await e.close()


@case("pre-approval (§3.4): carol approves frank before he asks; his request is answered by the server")
async def _():
    c = await IM("carol", "pc").login()
    c.send_presence(J("frank"), "subscribed")
    it, _ = await expect_push(c, J("frank"), "none+approved", "carol pre-approves")
    f = await IM("frank", "pc").login()
    got = [p for p in await f.presences(0.5) if p["type"] == "subscribed"]
    check(not got, "a pre-approval was routed (§A.2.3)", *[str(p) for p in got])
    f.send_presence(J("carol"), "subscribe")
    await expect_push(f, J("carol"), "none+ask", "frank asks")
    await f.presence("subscribed", J("carol"))
    await expect_push(f, J("carol"), "to", "frank approved by the server")
    await f.presence("available", c.full)
    await expect_push(c, J("frank"), "from", "carol's pre-approval used")
    got = [p for p in await c.presences(0.5) if p["type"] == "subscribe"]
    check(not got, "the pre-approved request was delivered to carol", *[str(p) for p in got])
    # cancel a pre-approval with unsubscribed (§A.2.4 [1])
    c.send_presence(J("olga"), "subscribed")
    await expect_push(c, J("olga"), "none+approved", "carol pre-approves olga")
    c.send_presence(J("olga"), "unsubscribed")
    await expect_push(c, J("olga"), "none", "carol cancels the pre-approval")
    await c.close()
    await f.close()


@case("roster set, update, groups, remove (§2.3-§2.5) with pushes to every interested resource only")
async def _():
    q1 = await IM("quinn", "one").login()
    q2 = await IM("quinn", "two").login()
    q3 = await IM("quinn", "nosy").login(roster=False)   # never asked for the roster: not interested (§2.2)
    r = await q1.c.iq("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>"
                      "<item jid='Vera@LocalHost' name='Vera V'><group>Friends</group><group>Work</group></item>"
                      "</query></iq>")
    eq(r.get("type"), "result", "roster set (%s)" % tostr(r))
    for c in (q1, q2):
        it, ver = await expect_push(c, J("vera"), "none", "push to %s" % c.full)
        eq((it["name"], it["groups"]), ("Vera V", ["Friends", "Work"]), "pushed name and groups")
        check(ver, "a push carries the roster version (§2.6)")
    await q3.no_push(0.3)
    # update: name removed, one group
    r = await q2.c.iq("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>"
                      "<item jid='vera@localhost'><group>Work</group></item></query></iq>")
    eq(r.get("type"), "result", "update")
    for c in (q1, q2):
        it, _ = await expect_push(c, J("vera"), "none", "update push")
        eq((it["name"], it["groups"]), (None, ["Work"]), "updated name and groups")
    _, items = await q1.roster()
    eq(sorted(items), [J("vera")], "quinn's roster")
    # subscribe, get approved, then remove: both subscriptions cancelled (§2.5.2)
    v = await IM("vera", "pc").login()
    q1.send_presence(J("vera"), "subscribe")
    await expect_push(q1, J("vera"), "none+ask", "quinn asks")
    await v.presence("subscribe", J("quinn"))
    v.send_presence(J("quinn"), "subscribed")
    await expect_push(v, J("quinn"), "from", "vera approves")
    await expect_push(q1, J("vera"), "to", "quinn approved")
    await expect_push(q2, J("vera"), "none+ask", "q2 sees the ask")
    await expect_push(q2, J("vera"), "to", "q2 sees the approval")
    r = await q1.c.iq("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>"
                      "<item jid='vera@localhost' subscription='remove'/></query></iq>")
    eq(r.get("type"), "result", "remove")
    await expect_push(q1, J("vera"), "remove", "remove push")
    await expect_push(q2, J("vera"), "remove", "remove push to the other resource")
    await v.presence("unsubscribe", J("quinn"))
    await expect_push(v, J("quinn"), "none", "vera: quinn unsubscribed")
    _, items = await q1.roster()
    eq(items, {}, "quinn's roster after the remove")
    # errors (§2.3.3, §2.5.3)
    bad = [
        ("<item jid='a@localhost'/><item jid='b@localhost'/>", "bad-request"),
        ("<item jid='a@localhost'><group>g</group><group>g</group></item>", "bad-request"),
        ("<item jid='a@localhost'><group></group></item>", "not-acceptable"),
        ("<item jid='a@localhost' name='%s'/>" % ("n" * 1100), "not-acceptable"),
        ("<item jid='a@localhost'><group>%s</group></item>" % ("g" * 1100), "not-acceptable"),
        ("<item jid='quinn@localhost'/>", "not-allowed"),
        ("<item jid='nobody-here@localhost' subscription='remove'/>", "item-not-found"),
        ("<item jid='@@bad'/>", "jid-malformed"),
    ]
    for payload, cond in bad:
        r = await q1.c.iq("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>%s</query></iq>"
                          % payload)
        eq(r.get("type"), "error", "answer to %s" % payload[:60])
        eq(error_condition(r)[1], cond, "condition for %s" % payload[:60])
    # someone else's roster is not ours to read
    r = await q1.c.iq("<iq xmlns='jabber:client' type='get' to='vera@localhost'><query xmlns='jabber:iq:roster'/></iq>")
    eq(error_condition(r)[1], "forbidden", "roster get of another user")
    await q1.no_push()
    for c in (q1, q2, q3, v):
        await c.close()


@case("roster versioning (§2.6): current version -> empty result then pushes; stale -> the full roster")
async def _():
    r1 = await IM("rex", "one").login()
    ver0, items = await r1.roster(ver="")
    check(ver0, "a versioned get returns a version")
    eq(items, {}, "empty roster")
    ver, items = await r1.roster(ver=ver0)
    eq((ver, items), (None, None), "get with the current version: empty result")
    r = await r1.c.iq("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'>"
                      "<item jid='alice@localhost'/></query></iq>")
    eq(r.get("type"), "result", "set")
    _, ver1 = await expect_push(r1, J("alice"), "none", "push")
    check(ver1 and ver1 != ver0, "the push has a new version", ver0, ver1)
    ver, items = await r1.roster(ver=ver0)
    eq(ver, ver1, "stale version: the current one comes back")
    eq(sorted(items), [J("alice")], "stale version: the full roster")
    ver, items = await r1.roster(ver=ver1)
    eq((ver, items), (None, None), "get with the newest version: empty result")
    # a new login with the old version is stale too, with the current one not
    r2 = await IM("rex", "two").login(roster=False)
    ver, items = await r2.roster(ver=ver1)
    eq((ver, items), (None, None), "second resource, current version")
    # versions never repeat across accounts of the same name
    await r1.close()
    await r2.close()
    rc, o, e = srv.ctl("unregister", J("rex"))
    check(rc == 0, "unregister", o, e)
    srv.register(J("rex"), PW["rex"])
    r3 = await IM("rex", "three").login(roster=False)
    ver, items = await r3.roster(ver=ver1)
    check(ver is not None and ver != ver1, "the re-registered account has another version", ver, ver1)
    eq(items, {}, "a re-registered name starts with an empty roster")
    await r3.close()


@case("probes and broadcasts: three users, two resources each, all subscribed both ways", timeout=60)
async def _():
    us = ("p1", "p2", "p3")
    for u in us:
        for o in us:
            if o != u:
                ctl_rows("roster-add", J(u), J(o), o.upper(), "Peers", "--subscription", "both")
    cs = {}
    for u in us:
        for res, prio in (("hi", 5), ("lo", 1)):
            c = IM(u, res, priority=prio)
            await c.login(roster=False)
            cs[(u, res)] = c
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.8)
    everyone = {c.full for c in cs.values()}

    async def available_seen(c):
        avail = set()
        for p in await c.presences(0.8):
            f = str(p["from"])
            if p["type"] == "unavailable":
                avail.discard(f)
            elif p["type"] in ("available", "away", "chat", "dnd", "xa"):
                avail.add(f)
        return avail

    # each resource knows every other resource, whether it came before
    # (probe answers, §4.3.2) or after (broadcast, §4.2.2)
    seen = {}
    for k, c in cs.items():
        seen[k] = await available_seen(c)
    # presences already consumed by earlier waits are not lost: the queues
    # were filled since login; check what each saw overall
    for k, c in cs.items():
        want = everyone - {c.full}
        check(want <= seen[k], "%s misses the presence of %s" % (c.full, sorted(want - seen[k])), sorted(seen[k]))
    # an update reaches all contacts' resources and the user's other one
    cs[("p1", "hi")].send_presence(pshow="away", pstatus="at lunch")
    for k, c in cs.items():
        if k == ("p1", "hi"):
            continue
        p = await c.presence("away", cs[("p1", "hi")].full)
        eq(p["status"], "at lunch", "status seen by %s" % c.full)
    # a non-contact hears nothing
    outsider = await IM("olga", "pc").login()
    cs[("p1", "hi")].send_presence(pstatus="back")
    got = [p for p in await outsider.presences(0.8) if str(p["from"]).startswith("p1@")]
    check(not got, "a non-contact got p1's presence", *[str(p) for p in got])
    # unavailable from one resource reaches everyone else
    cs[("p2", "lo")].send_presence(ptype="unavailable", pstatus="bye")
    for k, c in cs.items():
        if k == ("p2", "lo"):
            continue
        p = await c.presence("unavailable", cs[("p2", "lo")].full)
        eq(p["status"], "bye", "unavailable status seen by %s" % c.full)
    # a probe answered while all resources are gone: last unavailable
    for k in (("p3", "hi"), ("p3", "lo")):
        await cs[k].close()
    await cs[("p1", "lo")].presence("unavailable", J("p3"))
    late = IM("p1", "late")
    await late.login(roster=False)
    p = await late.presence("unavailable", J("p3"))
    check(p.xml.find("{%s}delay" % NS_DELAY) is not None, "the last unavailable presence carries a delay stamp",
          str(p))
    for c in list(cs.values()) + [outsider, late]:
        await c.close()


@case("directed presence: the recipient gets unavailable when the session ends (§4.6)")
async def _():
    a = await IM("alice", "directed").login()
    v = await IM("vera", "watch").login()
    a.send_presence(v.full, None, pstatus="just for you")
    p = await v.presence("available", a.full)
    eq(p["status"], "just for you", "directed presence")
    await a.close()
    await v.presence("unavailable", a.full)
    await v.close()


@case("killing a client's TCP connection still sends unavailable presence to its contacts")
async def _():
    ctl_rows("roster-add", J("carol"), J("erin"), "--subscription", "both")
    ctl_rows("roster-add", J("erin"), J("carol"), "--subscription", "both")
    e = await IM("erin", "watcher").login()
    c = await IM("carol", "doomed").login()
    await e.presence("available", c.full)
    c.c.x.transport.abort()   # no </stream:stream>, no unavailable: the socket just dies
    p = await e.presence("unavailable", c.full, timeout=10)
    eq(str(p["from"]), c.full, "from of the unavailable presence")
    c.c.abort()
    await e.close()


@case("offline messages: normal and chat stored in order with delay stamps, headline not; delivered once")
async def _():
    a = await IM("alice", "sender").login()
    a.c.send(J("dave"), "one", mtype="chat")
    a.c.send(J("dave"), "two", mtype="normal")
    a.c.send(J("dave"), "skip me", mtype="headline")
    a.c.send(J("dave") + "/gone", "three", mtype="chat")     # chat to a full JID: as to the bare JID
    await a.c.ping_server()
    errs = await a.c.quiet(0.5, lambda m: m["type"] == "error")
    check(not errs, "the sender got errors", *[str(m) for m in errs])
    eq(ctl_rows("offline", J("dave"))[0][1], "3", "xmppctl offline count")
    # a negative priority does not take them (XEP-0160)
    neg = await IM("dave", "neg", priority=-1).login()
    got = await neg.c.quiet(0.6)
    check(not got, "a negative-priority resource got offline messages", *[str(m) for m in got])
    neg.send_presence(ppriority=3)
    msgs = [await neg.c.message(5) for _ in range(3)]
    eq([m["body"] for m in msgs], ["one", "two", "three"], "bodies in order")
    for m in msgs:
        d = delay_of(m)
        check(d is not None and d[0] == "localhost" and d[1].endswith("Z"), "XEP-0203 delay stamp", str(m))
        eq(str(m["from"]), a.full, "from of a stored message")
    extra = await neg.c.quiet(0.6)
    check(not extra, "more than the stored messages", *[str(m) for m in extra])
    await neg.close()
    await asyncio.sleep(0.3)
    eq(ctl_rows("offline", J("dave"), "count")[0][1], "0", "queue emptied")
    d2 = await IM("dave", "again").login()
    extra = await d2.c.quiet(0.6)
    check(not extra, "offline messages delivered twice", *[str(m) for m in extra])
    await d2.close()
    await a.close()


@case("offline messages survive a restart of all daemons and are delivered once, in order", timeout=90)
async def _():
    a = await IM("alice", "before").login()
    for i in range(5):
        a.c.send(J("erin"), "kept %d" % i, mtype="chat")
    await a.c.ping_server()
    await asyncio.sleep(0.2)
    eq(ctl_rows("offline", J("erin"))[0][1], "5", "stored before the restart")
    rows = ctl_rows("offline", J("erin"), "list")
    eq(len(rows), 5, "xmppctl offline list rows")
    check("kept 0" in rows[0][4], "list shows the stanza", rows[0])
    await a.close()
    rc, o, e = srv.ctl("stop", timeout=60)
    check(rc == 0, "xmppctl stop", o, e)
    srv.restart()
    e1 = await IM("erin", "after").login()
    msgs = [await e1.c.message(10) for _ in range(5)]
    eq([m["body"] for m in msgs], ["kept %d" % i for i in range(5)], "bodies after the restart")
    check(all(delay_of(m) for m in msgs), "delay stamps after the restart", *[str(m) for m in msgs])
    stamps = [delay_of(m)[1] for m in msgs]
    eq(stamps, sorted(stamps), "stamps in order")
    extra = await e1.c.quiet(0.6)
    check(not extra, "extra messages", *[str(m) for m in extra])
    await e1.close()
    await asyncio.sleep(0.3)
    e2 = await IM("erin", "again").login()
    extra = await e2.c.quiet(0.8)
    check(not extra, "delivered twice after the restart", *[str(m) for m in extra])
    await e2.close()


@case("offline quota: the message after the 1000th gets service-unavailable; purge empties", timeout=60)
async def _():
    a = await IM("alice", "flood").login()
    for i in range(1000):
        a.c.send(J("olga"), "flood %d" % i, mtype="normal")
    await a.c.ping_server(timeout=20)
    errs = await a.c.quiet(0.5, lambda m: m["type"] == "error")
    check(not errs, "errors below the quota", *[str(m) for m in errs[:3]])
    a.c.send(J("olga"), "one too many", mtype="chat")
    m = await a.c.message(5, lambda m: m["type"] == "error")
    eq(error_condition(m.xml)[1], "service-unavailable", "condition when the store is full")
    eq(ctl_rows("offline", J("olga"))[0][1], "1000", "count")
    eq(ctl_rows("offline", J("olga"), "purge")[0][1], "1000", "purged")
    eq(ctl_rows("offline", J("olga"))[0][1], "0", "count after the purge")
    await a.close()


@case("xmppctl roster, roster-add, roster-del: server-side changes pushed to the user's interested resources")
async def _():
    b = await IM("bob", "admin-watch").login()
    rows = ctl_rows("roster-add", J("bob"), J("carol"), "Carol C", "Team", "Lunch", "--subscription", "to")
    eq(rows[0][2:], ["to", "added"], "roster-add row")
    it, _ = await expect_push(b, J("carol"), "to", "roster-add push")
    eq((it["name"], it["groups"]), ("Carol C", ["Lunch", "Team"]), "pushed name and groups")
    rows = {r[0]: r for r in ctl_rows("roster", J("bob"))}
    eq(rows[J("carol")][1], "to", "xmppctl roster subscription")
    eq(rows[J("carol")][5], "Carol C", "xmppctl roster name")
    # change only the subscription: name and groups stay
    ctl_rows("roster-add", J("bob"), J("carol"), "--subscription", "both")
    it, _ = await expect_push(b, J("carol"), "both", "second roster-add")
    eq(it["name"], "Carol C", "name kept")
    ctl_rows("roster-del", J("bob"), J("carol"))
    await expect_push(b, J("carol"), "remove", "roster-del push")
    _, items = await b.roster()
    check(J("carol") not in items, "carol still in bob's roster", items)
    for args, code in ((("roster-del", J("bob"), J("carol")), 1),
                       (("roster-add", J("bob"), J("carol"), "--subscription", "sideways"), 2),
                       (("roster-add", J("bob"), "not a jid@@"), 2),
                       (("roster", "nobody-at-all@localhost"), 1),
                       (("offline", J("bob"), "explode"), 2)):
        rc, o, e = srv.ctl(*args)
        eq(rc, code, "exit status of xmppctl %s (%s)" % (" ".join(args), e.strip()))
    rc, o, e = srv.ctl("--json", "roster", J("alice"))
    eq(rc, 0, "json roster")
    check(o.strip().startswith("["), "json output", o)
    await b.close()


def shard_of(bare, n):
    h = 14695981039346656037
    for ch in bare.encode():
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % n


@case("two sm shards: the dance, probes and offline messages across shards (DESIGN §2)", timeout=90)
async def _():
    global srv
    first = srv
    srv = Server(sm_shards=2)
    try:
        srv.start()
        names = ["s%d" % i for i in range(20)]
        on0 = [n for n in names if shard_of(J(n), 2) == 0][:1]
        on1 = [n for n in names if shard_of(J(n), 2) == 1][:2]
        check(on0 and len(on1) == 2, "no users on both shards", names)
        x, y, z = on0[0], on1[0], on1[1]
        for u in (x, y, z):
            PW[u] = "pw-%s" % u
            srv.register(J(u), PW[u])
        a = await IM(x, "pc").login()
        b = await IM(y, "pc").login()
        a.send_presence(J(y), "subscribe")
        await expect_push(a, J(y), "none+ask", "x asks (shard 0)")
        await b.presence("subscribe", J(x))
        b.send_presence(J(x), "subscribed")
        await expect_push(b, J(x), "from", "y approves (shard 1)")
        await a.presence("subscribed", J(y))
        await expect_push(a, J(y), "to", "x approved")
        await a.presence("available", b.full)
        b.send_presence(J(x), "subscribe")
        await expect_push(b, J(x), "from+ask", "y asks")
        await a.presence("subscribe", J(y))
        a.send_presence(J(y), "subscribed")
        await expect_push(a, J(y), "both", "x both")
        await expect_push(b, J(x), "both", "y both")
        await b.presence("available", a.full)
        rows = {r[0]: r for r in ctl_rows("roster", J(x))}
        eq(rows[J(y)][1], "both", "roster of x on shard 0")
        rows = {r[0]: r for r in ctl_rows("roster", J(y))}
        eq(rows[J(x)][1], "both", "roster of y on shard 1")
        # a new resource of y probes x across shards
        b2 = await IM(y, "second").login(roster=False)
        await b2.presence("available", a.full)
        # x's session dies: y's resources learn it
        a.c.x.transport.abort()
        await b.presence("unavailable", a.full, timeout=10)
        a.c.abort()
        # offline message from shard 1 to shard 0
        b.c.send(J(x), "across", mtype="chat")
        await b.c.ping_server()
        await asyncio.sleep(0.3)
        eq(ctl_rows("offline", J(x))[0][1], "1", "stored on x's shard")
        a2 = await IM(x, "back").login(roster=False)
        m = await a2.c.message(5)
        eq(m["body"], "across", "offline message across shards")
        check(delay_of(m), "delay stamp", str(m))
        for c in (a2, b, b2):
            await c.close()
    finally:
        srv.stop()
        srv = first


if __name__ == "__main__":
    run(file_timeout=400)
