#!/usr/bin/python3
"""XEP-0016 privacy lists and XEP-0191 blocking command (the modules
"privacy" and "blocking", one machinery), end to end with slixmpp clients.

The core is a table: every item type (jid, group, subscription,
fall-through) times every stanza kind an item can select (message, iq,
presence-in, presence-out, none = everything), each checked with six probes
in both directions (message, IQ and presence notification, to and from the
user) for a contact the item matches and one it does not. Then: the
jabber:iq:privacy protocol and its errors, pushes and conflicts, active
versus default lists, the fan-out of presence, the unavailable presence
and presence again that list changes send (every item type; the default
list, active lists set, edited, declined), group items naming no roster
group, offline storage; the
blocking command (get, block, unblock, unblock all, pushes only to the
resources that asked for the blocklist, unavailable presence to a blocked
contact, <blocked/> errors), its identity with the default privacy list,
the xmppctl commands, deletion with the account, and a server with the
privacy protocol switched off."""
import asyncio
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (Client, Server, case, check, eq, error_condition, run, tostr)  # noqa: E402

NS_PRIVACY = "jabber:iq:privacy"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKED = "urn:xmpp:blocking:errors"
NS_CLIENT = "jabber:client"
NS_PING = "urn:xmpp:ping"

srv = Server(modules="disco ping privacy blocking")
# blocking without the deprecated privacy protocol
srv2 = Server(modules="disco ping blocking")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
PW = {u: "pw-%s-priv" % u for u in USERS}
C = {}          # logged-in clients by name
_seq = [0]


def J(u):
    return "%s@localhost" % u


def mark(prefix):
    _seq[0] += 1
    return "%s-%d" % (prefix, _seq[0])


async def login(user, resource=None, server=None, **kw):
    jid = J(user) + ("/" + resource if resource else "")
    c = Client(server or srv, jid, PW[user], **kw)
    for p in ("xep_0030", "xep_0199", "xep_0191"):
        c.x.register_plugin(p)
    c.pushes = asyncio.Queue()
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    def on_iq(iq):
        if iq["type"] == "set" and (iq.xml.find("{%s}query" % NS_PRIVACY) is not None or
                                    iq.xml.find("{%s}block" % NS_BLOCKING) is not None or
                                    iq.xml.find("{%s}unblock" % NS_BLOCKING) is not None):
            c.pushes.put_nowait(iq.xml)
            iq.reply().send()
    c.x.register_handler(Callback("privacy-push", MatchXPath("{%s}iq" % NS_CLIENT), on_iq))
    await c.login()
    return c


def expect_error(el, cond, what, etype=None):
    eq(el.get("type"), "error", what + ": type (%s)" % tostr(el))
    t, c = error_condition(el)
    eq(c, cond, what + ": condition")
    if etype:
        eq(t, etype, what + ": error type")


def ok(el, what):
    eq(el.get("type"), "result", what + ": " + tostr(el))


def item_xml(order, action, itype=None, value=None, kinds=()):
    a = " type='%s' value='%s'" % (itype, value) if itype else ""
    inner = "".join("<%s/>" % k for k in kinds)
    return "<item%s action='%s' order='%d'>%s</item>" % (a, action, order, inner)


async def set_list(c, name, items):
    return await c.iq("<iq type='set'><query xmlns='%s'><list name='%s'>%s</list></query></iq>"
                      % (NS_PRIVACY, name, "".join(items)))


async def privacy(c, inner, t="set", to=None):
    a = " to='%s'" % to if to else ""
    return await c.iq("<iq type='%s'%s><query xmlns='%s'>%s</query></iq>" % (t, a, NS_PRIVACY, inner))


async def next_push(c, timeout=5.0):
    return await asyncio.wait_for(c.pushes.get(), timeout)


async def push_of(c, tag, timeout=5.0):
    """The next push whose child is tag ({ns}name); a privacy push on the
    way (the default list changed) is checked and skipped."""
    while True:
        p = await next_push(c, timeout)
        if p.find(tag) is not None:
            return p
        check(p.find("{%s}query" % NS_PRIVACY) is not None, "an unexpected push", tostr(p))


async def no_push(c, seconds=0.4):
    try:
        p = await asyncio.wait_for(c.pushes.get(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected push to %s: %s" % (c.full, tostr(p)))


def drain_all():
    for c in C.values():
        c.drain()
        while not c.pushes.empty():
            c.pushes.get_nowait()


class Seen:
    """Everything clients received, by stanza id, collected while probes
    run."""

    def __init__(self, clients):
        self.clients = clients
        self.got = {}   # id -> list of (client name, kind, element)

    def pump(self):
        for name, c in self.clients.items():
            for q, kind in ((c.messages, "message"), (c.presences, "presence")):
                while not q.empty():
                    st = q.get_nowait()
                    self.got.setdefault(st["id"], []).append((name, kind, st.xml))

    async def until(self, pred, timeout=5.0, settle=0.3):
        """Pump until pred() holds (or the timeout), then settle a little
        more so that what should not arrive has had its chance to."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while not pred() and loop.time() < deadline:
            await asyncio.sleep(0.02)
            self.pump()
        await asyncio.sleep(settle)
        self.pump()

    def of(self, ident):
        return self.got.get(ident, [])


# ---------------------------------------------------------------- start

@case("start; the features are in the server's disco#info; the roster for the table")
async def start():
    srv.start()
    srv2.start()
    for u in USERS:
        srv.register(J(u), PW[u])
    for u in ("alice", "bob"):
        srv2.register(J(u), PW[u])
    # bob: in alice's roster, group Friends, subscription both; erin the same
    # in group Others (a control for the broadcast); carol: unknown to alice
    srv.ctl_ok("roster-add", J("alice"), J("bob"), "Bob", "Friends", "--subscription", "both")
    srv.ctl_ok("roster-add", J("bob"), J("alice"), "--subscription", "both")
    srv.ctl_ok("roster-add", J("alice"), J("erin"), "Erin", "Others", "--subscription", "both")
    srv.ctl_ok("roster-add", J("erin"), J("alice"), "--subscription", "both")
    for u in ("alice", "bob", "carol", "erin"):
        C[u] = await login(u, "r1")
    info = await C["bob"].x["xep_0030"].get_info(jid="localhost", cached=False)
    feats = info["disco_info"]["features"]
    for f in (NS_PRIVACY, NS_BLOCKING):
        check(f in feats, "%s among the server's features" % f, feats)


# ---------------------------------------------------------------- the table

ITEMS = [("jid", J("bob")), ("group", "Friends"), ("subscription", "both"), (None, None)]
KINDS = [(), ("message",), ("iq",), ("presence-in",), ("presence-out",)]
PROBES = ("msg-in", "iq-in", "pres-in", "msg-out", "iq-out", "pres-out")
SELECTS = {"message": "msg-in", "iq": "iq-in", "presence-in": "pres-in", "presence-out": "pres-out"}


def expect_blocked(kinds, probe, matched):
    """XEP-0016 §2.1, §2.9-2.14: an item without children blocks every
    stanza both ways; with children only the incoming messages, IQs,
    presence notifications or the outgoing presence notifications. An
    <iq/> item lets alice's IQ out but blocks the contact's answer, which
    is an incoming IQ too: "unanswered"."""
    if not matched:
        return False
    if not kinds:
        return True
    if probe == "iq-out" and "iq" in kinds:
        return "unanswered"
    return any(SELECTS[k] == probe for k in kinds)


async def iq_or_none(c, text, timeout):
    try:
        return await c.iq(text, timeout=timeout)
    except TimeoutError:
        return None


async def probe_all(row, contacts, iq_out_timeout=5.0):
    """Fire the six probes between alice and each contact; returns
    {(contact, probe): blocked?} as observed (for iq-out: True, False or
    "unanswered")."""
    a = C["alice"]
    seen = Seen(C)
    ids = {}
    iq_tasks = {}
    expected_signals = []
    for x in contacts:
        xc = C[x]
        for p in PROBES:
            ids[(x, p)] = mark("%s-%s-%s" % (row, x, p))
        i = ids
        xc.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>in</body></message>"
                    % (J("alice"), i[(x, "msg-in")]))
        xc.send_xml("<presence xmlns='jabber:client' to='%s' id='%s'><status>in</status></presence>"
                    % (a.full, i[(x, "pres-in")]))
        a.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>out</body></message>"
                   % (J(x), i[(x, "msg-out")]))
        a.send_xml("<presence xmlns='jabber:client' to='%s' id='%s'><status>out</status></presence>"
                   % (xc.full, i[(x, "pres-out")]))
        iq_tasks[(x, "iq-in")] = asyncio.ensure_future(xc.iq(
            "<iq type='get' to='%s' id='%s'><ping xmlns='%s'/></iq>" % (a.full, i[(x, "iq-in")], NS_PING)))
        iq_tasks[(x, "iq-out")] = asyncio.ensure_future(iq_or_none(
            a, "<iq type='get' to='%s' id='%s'><ping xmlns='%s'/></iq>" % (xc.full, i[(x, "iq-out")], NS_PING),
            iq_out_timeout))
        # the signals that always come (delivery or an error), all but a
        # blocked presence-in, which is silent
        expected_signals += [i[(x, "msg-in")], i[(x, "msg-out")], i[(x, "pres-out")]]
    iqs = {k: await t for k, t in iq_tasks.items()}
    await seen.until(lambda: all(seen.of(s) for s in expected_signals))
    res, why = {}, {}
    for x in contacts:
        i = ids
        got = {p: seen.of(i[(x, p)]) for p in PROBES}
        # message in: alice gets it, or the contact gets service-unavailable
        m = got["msg-in"]
        res[(x, "msg-in")] = any(n == x and error_condition(e)[1] == "service-unavailable" for n, k, e in m)
        check(res[(x, "msg-in")] != any(n == "alice" for n, k, e in m), "msg-in %s: exactly one outcome" % x, m)
        # presence in: alice gets it or nothing happens
        res[(x, "pres-in")] = not any(n == "alice" for n, k, e in got["pres-in"])
        check(not any(n == x for n, k, e in got["pres-in"]), "a blocked presence is never answered", got["pres-in"])
        # message out: the contact gets it, or alice gets not-acceptable
        m = got["msg-out"]
        res[(x, "msg-out")] = any(n == "alice" and error_condition(e)[1] == "not-acceptable" for n, k, e in m)
        check(res[(x, "msg-out")] != any(n == x for n, k, e in m), "msg-out %s: exactly one outcome" % x, m)
        # presence out: the contact gets it, or alice gets not-acceptable
        m = got["pres-out"]
        res[(x, "pres-out")] = any(n == "alice" and error_condition(e)[1] == "not-acceptable" for n, k, e in m)
        check(res[(x, "pres-out")] != any(n == x for n, k, e in m), "pres-out %s: exactly one outcome" % x, m)
        # IQs: a result from the other client, or an error from the server
        r = iqs[(x, "iq-in")]
        res[(x, "iq-in")] = r.get("type") == "error"
        if res[(x, "iq-in")]:
            eq(error_condition(r)[1], "service-unavailable", "iq-in %s blocked: condition" % x)
        r = iqs[(x, "iq-out")]
        res[(x, "iq-out")] = "unanswered" if r is None else r.get("type") == "error"
        if res[(x, "iq-out")] is True:
            eq(error_condition(r)[1], "not-acceptable", "iq-out %s blocked: condition" % x)
        for p in PROBES:
            # who got what, for the failure report
            why[(x, p)] = [(n, k, e.get("type"), error_condition(e)[1]) for n, k, e in got.get(p, [])]
    return res, why


@case("table: item types x stanza kinds x directions, for a matching and a non-matching contact", timeout=90)
async def table():
    a = C["alice"]
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "create the list")
    ok(await privacy(a, "<default name='table'/>"), "make it the default")
    failures = []
    for itype, value in ITEMS:
        for kinds in KINDS:
            row = "%s.%s" % (itype or "fall-through", "+".join(kinds) or "all")
            r = await set_list(a, "table", [item_xml(5, "deny", itype, value, kinds)])
            ok(r, "set list for " + row)
            drain_all()
            # where the answer to alice's IQ is expected to be dropped, wait less for it
            res, why = await probe_all(row, ("bob", "carol"), 2.0 if "iq" in kinds else 5.0)
            for x in ("bob", "carol"):
                matched = x == "bob" or itype is None
                for p in PROBES:
                    want = expect_blocked(kinds, p, matched)
                    if res[(x, p)] != want:
                        failures.append("%s: %s with %s: %s, want %s (%s)" % (
                            row, p, x, {True: "blocked", False: "passed"}.get(res[(x, p)], res[(x, p)]),
                            {True: "blocked", False: "passed"}.get(want, want), why[(x, p)]))
    check(not failures, "%d of %d checks wrong" % (len(failures), len(ITEMS) * len(KINDS) * 12), *failures)


@case("an allow item before a deny wins (order decides); a higher order loses")
async def order_decides():
    a = C["alice"]
    ok(await set_list(a, "table", [item_xml(20, "deny", kinds=("message",)),
                                   item_xml(10, "allow", "jid", J("bob"), ("message",))]), "allow bob, deny all")
    drain_all()
    res, _ = await probe_all("order", ("bob", "carol"))
    eq(res[("bob", "msg-in")], False, "bob's message (allowed at order 10)")
    eq(res[("carol", "msg-in")], True, "carol's message (denied by the fall-through)")
    ok(await set_list(a, "table", [item_xml(1, "deny", "subscription", "none")]), "deny subscription none")
    drain_all()
    res, _ = await probe_all("none", ("bob", "carol"))
    eq(res[("carol", "msg-in")], True, "carol has no roster item: subscription none")
    eq(res[("bob", "msg-in")], False, "bob has 'both'")


@case("presence-out: the broadcast fan-out skips a denied contact, reaches the others")
async def broadcast_out():
    a, b, e = C["alice"], C["bob"], C["erin"]
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "allow all")
    drain_all()
    ok(await set_list(a, "table", [item_xml(1, "deny", "jid", J("bob"), ("presence-out",))]), "deny bob presence-out")
    # XEP-0016 §2.11: bob, who saw alice online, is told she is unavailable
    p = await b.presence_(pred=lambda p: p["from"] == a.full and p["type"] == "unavailable")
    check(p is not None, "bob gets unavailable presence")
    drain_all()
    st = mark("away")
    a.send_xml("<presence xmlns='jabber:client'><show>away</show><status>%s</status></presence>" % st)
    p = await e.presence_(pred=lambda p: p["status"] == st)
    eq(p["type"], "away", "erin sees alice away")
    await asyncio.sleep(0.4)
    got = [p for p in list(b.presences._queue) if p["status"] == st]
    eq(got, [], "bob got nothing of the broadcast")
    # presence-in: bob's broadcast does not reach alice, erin's does
    ok(await set_list(a, "table", [item_xml(1, "deny", "group", "Friends", ("presence-in",))]), "deny Friends presence-in")
    drain_all()
    sb, se = mark("bob-st"), mark("erin-st")
    b.send_xml("<presence xmlns='jabber:client'><status>%s</status></presence>" % sb)
    e.send_xml("<presence xmlns='jabber:client'><status>%s</status></presence>" % se)
    await a.presence_(pred=lambda p: p["status"] == se)
    await asyncio.sleep(0.3)
    eq([p for p in list(a.presences._queue) if p["status"] == sb], [], "bob's broadcast did not reach alice")
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "reset the list")
    a.send_xml("<presence xmlns='jabber:client'/>")


async def pres_from(c, frm, ptype, what, timeout=5.0):
    """The next presence to c from frm (a full JID) of type ptype."""
    try:
        return await c.presence_(timeout, pred=lambda p: p["from"] == frm and p["type"] == ptype)
    except TimeoutError:
        raise AssertionError("%s: no %s presence from %s to %s" % (what, ptype, frm, c.full)) from None


async def no_pres_from(c, frms, what, seconds=0.5):
    """Nothing from the full JIDs frms reaches c within seconds (what came
    before was awaited or drained)."""
    await asyncio.sleep(seconds)
    got = [(str(p["from"]), p["type"]) for p in list(c.presences._queue) if p["from"] in frms]
    eq(got, [], what + ": presence to " + c.full)


@case("presence-out: group, subscription and fall-through items of the default list send unavailable "
      "presence, and the presence again when they stop denying (XEP-0016 §2.11)")
async def presence_out_roster_items():
    a = C["alice"]
    try:
        await _presence_out_roster_items()
    finally:  # what follows expects the default list 'table' allowing all
        await set_list(a, "table", [item_xml(1, "allow")])
        await privacy(a, "<default name='table'/>")
        await asyncio.sleep(0.3)
        drain_all()


async def _presence_out_roster_items():
    a, b, e = C["alice"], C["bob"], C["erin"]
    await asyncio.sleep(0.3)
    drain_all()
    # bob is in group Friends, erin in Others; both have subscription both
    ok(await set_list(a, "table", [item_xml(1, "deny", "group", "Friends", ("presence-out",))]), "deny Friends")
    await pres_from(b, a.full, "unavailable", "group item")
    await no_pres_from(e, [a.full], "erin is not in Friends")
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "allow all")
    await pres_from(b, a.full, "available", "the group item is gone")
    await no_pres_from(e, [a.full], "erin was never denied")
    # an item that does not select presence-out changes nothing for presence
    ok(await set_list(a, "table", [item_xml(1, "deny", "group", "Friends", ("message",))]), "deny Friends messages")
    await no_pres_from(b, [a.full], "a message item")
    # an item without children selects presence-out too
    ok(await set_list(a, "table", [item_xml(1, "deny", "subscription", "both")]), "deny subscription both")
    await pres_from(b, a.full, "unavailable", "subscription item, bob")
    await pres_from(e, a.full, "unavailable", "subscription item, erin")
    # denied before and after: nothing is sent again
    ok(await set_list(a, "table", [item_xml(1, "deny", None, None, ("presence-out",))]), "deny all presence-out")
    await no_pres_from(b, [a.full], "still denied")
    await no_pres_from(e, [a.full], "still denied", 0)
    ok(await set_list(a, "table", [item_xml(1, "allow", "jid", J("erin"), ("presence-out",)),
                                   item_xml(2, "deny", None, None, ("presence-out",))]), "allow erin first")
    await pres_from(e, a.full, "available", "erin allowed before the fall-through")
    await no_pres_from(b, [a.full], "bob still denied by the fall-through")
    # declining the default list ends the denial too
    ok(await privacy(a, "<default/>"), "no default list")
    await pres_from(b, a.full, "available", "the default list declined")
    await no_pres_from(e, [a.full], "erin was allowed already")
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "allow all")
    ok(await privacy(a, "<default name='table'/>"), "the default list again")
    await no_pres_from(b, [a.full], "a default list that allows all")
    # a jid item naming one resource: that resource is told (the broadcast
    # to the bare JID still reaches bob's other resources)
    ok(await set_list(a, "table", [item_xml(1, "deny", "jid", b.full, ("presence-out",))]), "deny bob/r1")
    await pres_from(b, a.full, "unavailable", "full JID item")
    await no_pres_from(e, [a.full], "erin is not bob/r1", 0)
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "allow all")
    await pres_from(b, a.full, "available", "full JID item gone")


@case("presence-out: setting, editing or declining a session's active list sends presence from that "
      "session only (XEP-0016 §2.4, §2.11)")
async def presence_out_active():
    try:
        await _presence_out_active()
    finally:  # no second session and no extra list left behind
        if "alice2" in C:
            await C.pop("alice2").close()
        for name in ("quiet", "friendly"):
            await privacy(C["alice"], "<list name='%s'/>" % name)
        drain_all()


async def _presence_out_active():
    a, b, e = C["alice"], C["bob"], C["erin"]
    a2 = C["alice2"] = await login("alice", "r2")
    await b.presence_(pred=lambda p: p["from"] == a2.full and p["type"] == "available")
    await e.presence_(pred=lambda p: p["from"] == a2.full and p["type"] == "available")
    drain_all()
    ok(await set_list(a2, "quiet", [item_xml(1, "deny", "group", "Friends", ("presence-out",))]), "list quiet")
    await no_pres_from(b, [a.full, a2.full], "a list no session uses")
    ok(await privacy(a2, "<active name='quiet'/>"), "alice2 makes quiet active")
    await pres_from(b, a2.full, "unavailable", "active group item")
    await no_pres_from(b, [a.full], "alice1 still uses the default list")
    await no_pres_from(e, [a.full, a2.full], "erin is not in Friends", 0)
    # XEP-0016 §2.2 rule 8: an edit of the active list applies at once
    ok(await set_list(a, "quiet", [item_xml(1, "deny", "subscription", "both", ("presence-out",))]),
       "alice1 edits quiet")
    await pres_from(e, a2.full, "unavailable", "active list edited")
    await no_pres_from(b, [a.full, a2.full], "bob was denied already")
    await no_pres_from(e, [a.full], "only alice2 uses quiet", 0)
    ok(await privacy(a2, "<active/>"), "alice2 declines")
    await pres_from(b, a2.full, "available", "declined, bob")
    await pres_from(e, a2.full, "available", "declined, erin")
    await no_pres_from(b, [a.full], "alice1 was never denied")
    ok(await privacy(a2, "<active name='quiet'/>"), "alice2 makes quiet active again")
    await pres_from(b, a2.full, "unavailable", "active again, bob")
    await pres_from(e, a2.full, "unavailable", "active again, erin")
    # changing to another active list that allows bob
    ok(await set_list(a2, "friendly", [item_xml(1, "deny", "group", "Others", ("presence-out",))]), "list friendly")
    ok(await privacy(a2, "<active name='friendly'/>"), "alice2 switches to friendly")
    await pres_from(b, a2.full, "available", "switched, bob")
    await no_pres_from(e, [a2.full], "switched, erin still denied")
    # removing one's own active list: the default list (allows all) applies
    ok(await privacy(a2, "<list name='friendly'/>"), "alice2 removes friendly")
    await pres_from(e, a2.full, "available", "active list removed")
    await no_pres_from(b, [a.full, a2.full], "bob was allowed already")
    ok(await privacy(a2, "<list name='quiet'/>"), "remove quiet")


@case("privacy: a group item naming a group not in the roster is item-not-found (XEP-0016 §2.1)")
async def group_not_in_roster():
    try:
        await _group_not_in_roster()
    finally:
        srv.ctl("roster-del", J("alice"), J("frank"))
        for name in ("g", "h"):
            await privacy(C["alice"], "<list name='%s'/>" % name)
        drain_all()


async def _group_not_in_roster():
    a = C["alice"]
    expect_error(await set_list(a, "g", [item_xml(1, "allow", "group", "Friends"),
                                         item_xml(2, "deny", "group", "Nobody")]),
                 "item-not-found", "group Nobody", "cancel")
    expect_error(await privacy(a, "<list name='g'/>", "get"), "item-not-found", "nothing stored")
    srv.ctl_ok("roster-add", J("alice"), J("frank"), "Frank", "Temp")
    ok(await set_list(a, "g", [item_xml(1, "deny", "group", "Temp", ("message",))]), "group Temp exists")
    srv.ctl_ok("roster-del", J("alice"), J("frank"))
    # the group is gone, but the list is sent whole: its item stays editable
    ok(await set_list(a, "g", [item_xml(1, "deny", "group", "Temp", ("message",)),
                               item_xml(2, "deny", "jid", J("carol"), ("message",))]), "the old group item kept")
    expect_error(await set_list(a, "h", [item_xml(1, "deny", "group", "Temp")]), "item-not-found",
                 "group Temp in a new list")
    expect_error(await set_list(a, "g", [item_xml(1, "deny", "group", "Temp", ("message",)),
                                         item_xml(2, "deny", "group", "Enemies")]),
                 "item-not-found", "a new group item in an edit")
    ok(await privacy(a, "<list name='g'/>"), "remove g")


# ---------------------------------------------------------------- the protocol

@case("privacy: names, a list back as set (JIDs normalized), default and active shown")
async def protocol_basics():
    a = C["alice"]
    r = await set_list(a, "work", [item_xml(3, "deny", "jid", "Carol@LocalHost", ("message", "presence-in")),
                                   item_xml(1, "allow", "group", "Friends"),
                                   item_xml(7, "deny")])
    ok(r, "set work")
    r = await privacy(a, "<list name='work'/>", "get")
    ok(r, "get work")
    items = r.findall("{%s}query/{%s}list/{%s}item" % (NS_PRIVACY, NS_PRIVACY, NS_PRIVACY))
    got = [(i.get("order"), i.get("action"), i.get("type"), i.get("value"),
            sorted(c.tag.split("}")[1] for c in i)) for i in items]
    eq(got, [("1", "allow", "group", "Friends", []),
             ("3", "deny", "jid", J("carol"), ["message", "presence-in"]),
             ("7", "deny", None, None, [])], "items by order")
    ok(await privacy(a, "<active name='work'/>"), "active work")
    r = await privacy(a, "", "get")
    q = r.find("{%s}query" % NS_PRIVACY)
    eq(q.find("{%s}active" % NS_PRIVACY).get("name"), "work", "active named")
    eq(q.find("{%s}default" % NS_PRIVACY).get("name"), "table", "default named")
    eq(sorted(l.get("name") for l in q.findall("{%s}list" % NS_PRIVACY)), ["table", "work"], "list names")
    ok(await privacy(a, "<active/>"), "decline the active list")
    r = await privacy(a, "", "get")
    check(r.find("{%s}query/{%s}active" % (NS_PRIVACY, NS_PRIVACY)) is None, "no active list after <active/>", tostr(r))


@case("privacy: the errors of XEP-0016 (item-not-found, bad-request, forbidden)")
async def protocol_errors():
    a = C["alice"]
    expect_error(await privacy(a, "<list name='nope'/>", "get"), "item-not-found", "get a missing list")
    expect_error(await privacy(a, "<list name='work'/><list name='table'/>", "get"), "bad-request", "get two lists")
    expect_error(await privacy(a, "<active name='nope'/>"), "item-not-found", "activate a missing list")
    expect_error(await privacy(a, "<default name='nope'/>"), "item-not-found", "default a missing list")
    expect_error(await privacy(a, "<list name='nope'/>"), "item-not-found", "remove a missing list")
    expect_error(await privacy(a, "<active name='work'/><default name='work'/>"), "bad-request", "two children in a set")
    expect_error(await privacy(a, ""), "bad-request", "an empty set")
    bad = [("duplicate order", [item_xml(1, "deny"), item_xml(1, "allow")]),
           ("bad action", ["<item action='maybe' order='1'/>"]),
           ("no order", ["<item action='deny'/>"]),
           ("negative order", ["<item action='deny' order='-1'/>"]),
           ("order over unsignedInt", ["<item action='deny' order='4294967296'/>"]),
           ("bad type", ["<item type='color' value='red' action='deny' order='1'/>"]),
           ("bad subscription", [item_xml(1, "deny", "subscription", "sometimes")]),
           ("bad jid", [item_xml(1, "deny", "jid", "a@b@c")]),
           ("typed item without value", ["<item type='jid' action='deny' order='1'/>"]),
           ("unknown child", ["<item action='deny' order='1'><chat/></item>"])]
    for what, items in bad:
        expect_error(await set_list(a, "bad", items), "bad-request", what)
    expect_error(await privacy(a, "<list name='bad'/>", "get"), "item-not-found", "nothing stored by bad sets")
    expect_error(await privacy(a, "", "get", to=J("bob")), "forbidden", "bob's lists")
    expect_error(await privacy(a, "<list name='x'>%s</list>" % item_xml(1, "deny"), to=J("bob")), "forbidden",
                 "a list for bob")


@case("privacy: pushes to every resource; conflicts when a list applies to another resource")
async def pushes_and_conflicts():
    a = C["alice"]
    a2 = C["alice2"] = await login("alice", "r2")
    drain_all()
    ok(await set_list(a, "work", [item_xml(1, "deny", "jid", J("dave"))]), "edit work")
    for c in (a, a2):
        p = await next_push(c)
        eq([l.get("name") for l in p.findall("{%s}query/{%s}list" % (NS_PRIVACY, NS_PRIVACY))], ["work"],
           "push names the list, to " + c.full)
        eq(len(p.find("{%s}query/{%s}list" % (NS_PRIVACY, NS_PRIVACY))), 0, "a push carries the name only")
    # alice2 uses the default list: alice1 may not change or decline it
    expect_error(await privacy(a, "<default name='work'/>"), "conflict", "change the default", "cancel")
    expect_error(await privacy(a, "<default/>"), "conflict", "decline the default")
    expect_error(await privacy(a, "<list name='table'/>"), "conflict", "remove the default list")
    # once alice2 has an active list, it no longer uses the default
    ok(await privacy(a2, "<active name='work'/>"), "alice2 active work")
    expect_error(await privacy(a, "<list name='work'/>"), "conflict", "remove alice2's active list")
    ok(await privacy(a, "<default name='work'/>"), "change the default now")
    ok(await privacy(a, "<default name='table'/>"), "and back")
    # editing a list in use by another resource is allowed (rule 8)
    ok(await set_list(a, "work", [item_xml(1, "deny", "jid", J("carol"), ("message",))]), "edit alice2's active list")
    drain_all()


@case("privacy: an active list applies to its session only; the default to the others")
async def active_vs_default():
    a, a2, carol = C["alice"], C["alice2"], C["carol"]
    # alice2's active list 'work' denies carol's messages; the default (table) allows all
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "table allows all")
    drain_all()
    m1, m2 = mark("to-a1"), mark("to-a2")
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>1</body></message>" % (a.full, m1))
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>2</body></message>" % (a2.full, m2))
    got = await a.message(pred=lambda m: m["id"] == m1)
    eq(got["body"], "1", "alice1 (default list) gets carol's message")
    await asyncio.sleep(0.4)
    eq([m for m in list(a2.messages._queue) if m["id"] == m2], [], "alice2 (active list) does not")
    # declining the active list: the default applies again
    ok(await privacy(a2, "<active/>"), "alice2 declines")
    m3 = mark("to-a2")
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>3</body></message>" % (a2.full, m3))
    await a2.message(pred=lambda m: m["id"] == m3)
    # an active list lasts as long as its session
    ok(await privacy(a2, "<active name='work'/>"), "alice2 active again")
    await a2.close()
    a2 = C["alice2"] = await login("alice", "r2")
    r = await privacy(a2, "", "get")
    check(r.find("{%s}query/{%s}active" % (NS_PRIVACY, NS_PRIVACY)) is None, "a new session has no active list",
          tostr(r))
    await a2.close()
    del C["alice2"]


@case("privacy: an active list and a message to the bare JID")
async def active_bare():
    a, carol = C["alice"], C["carol"]
    a2 = await login("alice", "r3")
    try:
        ok(await privacy(a2, "<active name='work'/>"), "alice3 active work (denies carol's messages)")
        # both resources have priority 0, so the message goes to both (RFC
        # 6121 §8.5.2.1.1); alice3's active list keeps it from her, without
        # an error to carol since alice1 got it
        drain_all()
        m = mark("to-bare")
        carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>4</body></message>"
                       % (J("alice"), m))
        await a.message(pred=lambda x: x["id"] == m)
        await asyncio.sleep(0.4)
        eq([x for x in list(a2.messages._queue) if x["id"] == m], [], "alice3 (active list) does not get it")
        eq([x for x in list(carol.messages._queue) if x["id"] == m], [], "carol gets no error")
    finally:
        await a2.close()


@case("privacy: removing a list; the default list filters what is stored offline")
async def offline_default():
    a = C["alice"]
    ok(await set_list(a, "gone", [item_xml(1, "deny")]), "a list to remove")
    ok(await privacy(a, "<list name='gone'/>"), "remove it")
    expect_error(await privacy(a, "<list name='gone'/>", "get"), "item-not-found", "removed")
    ok(await set_list(a, "table", [item_xml(1, "deny", "jid", J("carol"), ("message",))]), "deny carol's messages")
    await a.close()
    del C["alice"]
    await asyncio.sleep(0.2)
    dave = C["dave"] = await login("dave", "r1")
    carol = C["carol"]
    drain_all()
    mc, md = mark("off-c"), mark("off-d")
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>c</body></message>" % (J("alice"), mc))
    dave.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>d</body></message>" % (J("alice"), md))
    err = await carol.message(pred=lambda m: m["id"] == mc)
    eq(error_condition(err.xml)[1], "service-unavailable", "carol's offline message refused")
    await asyncio.sleep(0.3)
    out = srv.ctl_ok("offline", J("alice"), "count")
    eq(out.split(), [J("alice"), "1"], "only dave's message is stored")
    C["alice"] = await login("alice", "r1")
    m = await C["alice"].message(pred=lambda m: m["id"] == md)
    eq(m["body"], "d", "dave's message delivered at login")


# ---------------------------------------------------------------- XEP-0191

@case("blocking: blocklist, block with pushes to the resources that asked, unavailable presence to the blocked")
async def blocking_basics():
    a, b = C["alice"], C["bob"]
    ok(await set_list(a, "table", [item_xml(1, "allow")]), "reset the default list")
    ok(await privacy(a, "<default/>"), "no default list")
    a2 = C["alice2"] = await login("alice", "r2")
    r = await a.x["xep_0191"].get_blocked()
    eq(list(r["blocklist"]["items"]), [], "empty blocklist")
    drain_all()
    # bob sees alice (subscription both): blocking him sends unavailable from her
    await a.x["xep_0191"].block(J("bob"))
    p = await push_of(a, "{%s}block" % NS_BLOCKING)
    eq([i.get("jid") for i in p.findall("{%s}block/{%s}item" % (NS_BLOCKING, NS_BLOCKING))], [J("bob")], "block push")
    un = await b.presence_(pred=lambda p: p["type"] == "unavailable" and p["from"].bare == J("alice"))
    check(un is not None, "bob gets unavailable presence")
    # alice2 never asked for the blocklist: a privacy push (the default list changed), no block push
    p = await next_push(a2)
    check(p.find("{%s}query" % NS_PRIVACY) is not None, "alice2 gets only the privacy push", tostr(p))
    await no_push(a2)
    r = await a.x["xep_0191"].get_blocked()
    eq(sorted(str(j) for j in r["blocklist"]["items"]), [J("bob")], "bob in the blocklist")
    # outbound: not-acceptable with <blocked/>; inbound: service-unavailable
    drain_all()
    mo, mi = mark("blk-out"), mark("blk-in")
    a.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>x</body></message>" % (J("bob"), mo))
    b.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>y</body></message>" % (J("alice"), mi))
    e = await a.message(pred=lambda m: m["id"] == mo)
    eq(error_condition(e.xml)[1], "not-acceptable", "alice to bob: condition")
    check(e.xml.find("{%s}error/{%s}blocked" % (NS_CLIENT, NS_BLOCKED)) is not None, "with <blocked/>", tostr(e.xml))
    e = await b.message(pred=lambda m: m["id"] == mi)
    eq(error_condition(e.xml)[1], "service-unavailable", "bob to alice: condition")
    # the blocklist is the default privacy list: a jid/deny item with no child
    r = await privacy(a, "", "get")
    d = r.find("{%s}query/{%s}default" % (NS_PRIVACY, NS_PRIVACY))
    check(d is not None, "a default list was created", tostr(r))
    r = await privacy(a, "<list name='%s'/>" % d.get("name"), "get")
    it = r.findall(".//{%s}item" % NS_PRIVACY)
    eq([(i.get("type"), i.get("value"), i.get("action"), len(i)) for i in it], [("jid", J("bob"), "deny", 0)],
       "the blocked JID as a privacy item")


@case("blocking: unblock one, then all; pushes; stanzas flow again; the errors")
async def unblocking():
    a, b, carol = C["alice"], C["bob"], C["carol"]
    await a.x["xep_0191"].block([J("carol"), "Dave@LocalHost"])
    p = await push_of(a, "{%s}block" % NS_BLOCKING)
    eq(sorted(i.get("jid") for i in p.findall(".//{%s}item" % NS_BLOCKING)), [J("carol"), J("dave")],
       "push of two (normalized)")
    drain_all()
    await a.x["xep_0191"].unblock(J("bob"))
    p = await push_of(a, "{%s}unblock" % NS_BLOCKING)
    eq([i.get("jid") for i in p.findall("{%s}unblock/{%s}item" % (NS_BLOCKING, NS_BLOCKING))], [J("bob")],
       "unblock push")
    # XEP-0191 §3.4: bob (subscription both) gets alice's current presence again
    pr = await b.presence_(pred=lambda x: x["type"] == "available" and x["from"].bare == J("alice"))
    check(pr is not None, "bob gets alice's presence after the unblock")
    m = mark("unblocked")
    b.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>hi</body></message>" % (a.full, m))
    await a.message(pred=lambda x: x["id"] == m)
    r = await a.iq("<iq type='set'><unblock xmlns='%s'/></iq>" % NS_BLOCKING)
    ok(r, "unblock all")
    p = await push_of(a, "{%s}unblock" % NS_BLOCKING)
    u = p.find("{%s}unblock" % NS_BLOCKING)
    check(u is not None and len(u) == 0, "unblock-all push is an empty <unblock/>", tostr(p))
    r = await a.x["xep_0191"].get_blocked()
    eq(list(r["blocklist"]["items"]), [], "empty again")
    m = mark("unblocked")
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>hi</body></message>" % (a.full, m))
    await a.message(pred=lambda x: x["id"] == m)
    expect_error(await a.iq("<iq type='set'><block xmlns='%s'/></iq>" % NS_BLOCKING), "bad-request", "empty block")
    expect_error(await a.iq("<iq type='set'><block xmlns='%s'><item jid='a@b@c'/></block></iq>" % NS_BLOCKING),
                 "jid-malformed", "bad JID")
    expect_error(await a.iq("<iq type='set'><blocklist xmlns='%s'/></iq>" % NS_BLOCKING), "bad-request",
                 "blocklist set")
    expect_error(await a.iq("<iq type='get' to='%s'><blocklist xmlns='%s'/></iq>" % (J("bob"), NS_BLOCKING)),
                 "forbidden", "bob's blocklist")


@case("blocking: a privacy edit of the default list is a blocklist change (pushes both ways)")
async def privacy_edits_blocklist():
    a = C["alice"]
    r = await privacy(a, "", "get")
    name = r.find("{%s}query/{%s}default" % (NS_PRIVACY, NS_PRIVACY)).get("name")
    drain_all()
    ok(await set_list(a, name, [item_xml(1, "deny", "jid", J("frank")), item_xml(2, "allow")]), "deny frank")
    pushes = [await next_push(a), await next_push(a)]
    blk = [p for p in pushes if p.find("{%s}block" % NS_BLOCKING) is not None]
    eq(len(blk), 1, "one block push among %s" % [tostr(p) for p in pushes])
    eq([i.get("jid") for i in blk[0].iter("{%s}item" % NS_BLOCKING)], [J("frank")], "frank blocked")
    ok(await set_list(a, name, [item_xml(2, "allow")]), "frank's item gone")
    pushes = [await next_push(a), await next_push(a)]
    unb = [p for p in pushes if p.find("{%s}unblock" % NS_BLOCKING) is not None]
    eq([i.get("jid") for i in unb[0].iter("{%s}item" % NS_BLOCKING)], [J("frank")], "frank unblocked")


@case("blocking: a blocked JID's message to an offline user is not stored; xmppctl block/blocklist/unblock")
async def offline_and_ctl():
    for c in list(C):
        if c.startswith("alice"):
            await C[c].close()
            del C[c]
    srv.ctl_ok("offline", J("alice"), "purge")
    out = srv.ctl_ok("block", J("alice"), J("carol"))
    eq(out.split(), [J("alice"), J("carol"), "blocked"], "xmppctl block")
    eq(srv.ctl_ok("blocklist", J("alice")).split(), [J("carol")], "xmppctl blocklist")
    carol, dave = C["carol"], C["dave"]
    drain_all()
    mc, md = mark("off-c"), mark("off-d")
    carol.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>c</body></message>" % (J("alice"), mc))
    dave.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>d</body></message>" % (J("alice"), md))
    e = await carol.message(pred=lambda m: m["id"] == mc)
    eq(error_condition(e.xml)[1], "service-unavailable", "carol's message refused")
    await asyncio.sleep(0.3)
    eq(srv.ctl_ok("offline", J("alice"), "count").split(), [J("alice"), "1"], "only dave's message stored")
    out = srv.ctl_ok("unblock", J("alice"), J("carol"))
    eq(out.split(), [J("alice"), J("carol"), "unblocked"], "xmppctl unblock")
    eq(srv.ctl_ok("blocklist", J("alice")).split(), [], "empty blocklist")
    srv.ctl_ok("block", J("alice"), J("bob"))
    srv.ctl_ok("block", J("alice"), J("erin"))
    out = srv.ctl_ok("unblock", J("alice"))
    eq(sorted(out.split()), sorted([J("alice"), J("bob"), "unblocked", J("alice"), J("erin"), "unblocked"]),
       "xmppctl unblock all")
    rc, o, e = srv.ctl("block", J("alice"), "a@b@c")
    check(rc != 0, "xmppctl block of a bad JID fails", o, e)
    rc, o, e = srv.ctl("blocklist", J("nobody"))
    check(rc != 0, "xmppctl blocklist of an unknown user fails", o, e)


@case("the lists are deleted with the account")
async def deleted_with_account():
    srv.ctl_ok("block", J("frank"), J("carol"))
    eq(srv.ctl_ok("blocklist", J("frank")).split(), [J("carol")], "frank blocks carol")
    srv.ctl_ok("unregister", J("frank"))
    srv.register(J("frank"), PW["frank"])
    eq(srv.ctl_ok("blocklist", J("frank")).split(), [], "a new frank blocks nobody")
    f = await login("frank", "r1")
    r = await privacy(f, "", "get")
    eq(len(r.find("{%s}query" % NS_PRIVACY)), 0, "and has no privacy lists")
    await f.close()


@case("blocking without privacy: no jabber:iq:privacy, the blocklist still works")
async def blocking_only():
    a = await login("alice", "r1", server=srv2)
    b = await login("bob", "r1", server=srv2)
    info = await a.x["xep_0030"].get_info(jid="localhost", cached=False)
    feats = info["disco_info"]["features"]
    check(NS_BLOCKING in feats and NS_PRIVACY not in feats, "features of srv2", feats)
    expect_error(await privacy(a, "", "get"), "service-unavailable", "privacy get on srv2")
    await a.x["xep_0191"].get_blocked()
    await a.x["xep_0191"].block(J("bob"))
    p = await next_push(a)
    check(p.find("{%s}block" % NS_BLOCKING) is not None, "a block push, no privacy push", tostr(p))
    m = mark("srv2")
    b.send_xml("<message xmlns='jabber:client' type='chat' to='%s' id='%s'><body>x</body></message>" % (a.full, m))
    e = await b.message(pred=lambda x: x["id"] == m)
    eq(error_condition(e.xml)[1], "service-unavailable", "blocked on srv2")
    await no_push(a)
    await a.close()
    await b.close()


if __name__ == "__main__":
    run(file_timeout=240)
