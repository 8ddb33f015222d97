#!/usr/bin/python3
"""The small services of the built-in modules, end to end with slixmpp
clients and their plugins: XEP-0049 private XML storage (several
namespaces in one set, replacing, others' data forbidden, reserved
namespaces, the size limit, deleted with the account), XEP-0012 last
activity (server uptime, an offline contact's logout time and status, 0
while online, forbidden for a non-subscriber), XEP-0202 entity time,
XEP-0092 software version (and version.show_os = no on a second server),
XEP-0157 contact addresses in disco#info and in the XEP-0115 hash of the
stream features (and none on the second server)."""
import asyncio
import datetime
import os
import platform
import re
import sys
import time
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (BUILDDIR, Client, Raw, Server, case, check, eq,  # noqa: E402
                       error_condition, run, tostr)

NS_PRIV = "jabber:iq:private"
NS_LAST = "jabber:iq:last"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_DATA = "jabber:x:data"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_PREFS = "xmppd:test:prefs"
ABUSE = "mailto:abuse@localhost xmpp:abuse@localhost"
ADMIN = "https://localhost/admins"

# the modules of this file only (the default list has more)
MODULES = "disco ping version time last private contact_info"
srv = Server(modules=MODULES, **{"private.max_size": "2K", "contact_info.abuse": ABUSE, "contact_info.admin": ADMIN})
# the second server: the OS hidden, no contact addresses
srv2 = Server(modules=MODULES, **{"version.show_os": "no"})
USERS = ("alice", "bob", "carol", "dave", "erin", "pat")
PW = {u: "pw-%s-svc" % u for u in USERS}
clients = {}


def J(u):
    return "%s@localhost" % u


def package_version():
    with open(os.path.join(BUILDDIR, "config.h")) as f:
        m = re.search(r'#define PACKAGE_VERSION "([^"]*)"', f.read())
    return m.group(1)


def prefs_class():
    from slixmpp.xmlstream import ElementBase

    class Prefs(ElementBase):
        """A client's settings, kept in private storage."""
        name = "prefs"
        namespace = NS_PREFS
        plugin_attrib = "prefs"
        interfaces = {"nick"}
        sub_interfaces = interfaces
    return Prefs


async def login(user, server=None, plugins=(), **kw):
    c = Client(server or srv, J(user), PW[user], **kw)
    for p in ("xep_0030", "xep_0004", "xep_0128", "xep_0115", "xep_0049", "xep_0012", "xep_0202", "xep_0092") + tuple(plugins):
        c.x.register_plugin(p)
    c.x["xep_0049"].register(prefs_class())
    await c.login()
    return c


def expect_error(el, cond, what):
    eq(el.get("type"), "error", what + ": type")
    eq(error_condition(el)[1], cond, what + ": condition")


@case("start the servers; the services are in disco#info")
async def start():
    srv.start()
    srv2.start()
    for u in USERS:
        srv.register(J(u), PW[u])
    srv2.register(J("alice"), PW["alice"])
    # alice's roster: bob may see her presence, carol may not (alice sees hers)
    srv.ctl_ok("roster-add", J("alice"), J("bob"), "--subscription", "from")
    srv.ctl_ok("roster-add", J("alice"), J("carol"), "--subscription", "to")
    srv.ctl_ok("roster-add", J("erin"), J("bob"), "--subscription", "both")
    c = clients["bob"] = await login("bob")
    info = await c.x["xep_0030"].get_info(jid="localhost", cached=False)
    feats = info["disco_info"]["features"]
    for f in (NS_LAST, "urn:xmpp:time", "jabber:iq:version"):
        check(f in feats, "%s not among the server's features" % f, feats)
    check(NS_PRIV not in feats, "private storage is the account's, not the server's", feats)
    acc = await c.x["xep_0030"].get_info(jid=J("bob"), cached=False)
    afeats = acc["disco_info"]["features"]
    for f in (NS_PRIV, NS_LAST):
        check(f in afeats, "%s not among the account's features" % f, afeats)


# ---------------------------------------------------------------- XEP-0049

@case("private: several namespaces in one set, get each, replace one")
async def private_store():
    c = clients["alice"] = await login("alice")
    Prefs = prefs_class()
    p = Prefs()
    p["nick"] = "Hamlet"
    other = ET.fromstring("<notes xmlns='xmppd:test:notes'><n>a &amp; b</n></notes>")
    from slixmpp.xmlstream import ElementBase

    class Notes(ElementBase):
        name = "notes"
        namespace = "xmppd:test:notes"
        plugin_attrib = "notes"
    c.x["xep_0049"].register(Notes)
    await c.x["xep_0049"].store([p, Notes(xml=other)])
    r = await c.x["xep_0049"].retrieve("prefs")
    eq(r["private"]["prefs"]["nick"], "Hamlet", "stored nick")
    r = await c.iq("<iq type='get'><query xmlns='%s'><notes xmlns='xmppd:test:notes'/></query></iq>" % NS_PRIV)
    eq(r.get("type"), "result", "get notes: " + tostr(r))
    n = r.find("{%s}query/{xmppd:test:notes}notes/{xmppd:test:notes}n" % NS_PRIV)
    check(n is not None and n.text == "a & b", "notes come back as stored", tostr(r))
    p2 = Prefs()
    p2["nick"] = "Macbeth"
    await c.x["xep_0049"].store(p2)
    r = await c.x["xep_0049"].retrieve("prefs")
    eq(r["private"]["prefs"]["nick"], "Macbeth", "replaced nick")
    # the other namespace is untouched, and also reachable with to = own bare JID
    r = await c.iq("<iq type='get' to='%s'><query xmlns='%s'><notes xmlns='xmppd:test:notes'/></query></iq>"
                   % (J("alice"), NS_PRIV))
    check(r.find(".//{xmppd:test:notes}n") is not None, "notes still there", tostr(r))


@case("private: nothing stored gives the element back empty; two elements of one namespace")
async def private_empty_and_multi():
    c = clients["alice"]
    r = await c.iq("<iq type='get'><query xmlns='%s'><storage xmlns='storage:bookmarks'/></query></iq>" % NS_PRIV)
    eq(r.get("type"), "result", "get of an empty namespace")
    s = r.find("{%s}query/{storage:bookmarks}storage" % NS_PRIV)
    check(s is not None and len(s) == 0, "an empty <storage/> back", tostr(r))
    # XEP-0049 §2.3: a set MAY hold several elements of the same namespace
    r = await c.iq("<iq type='set'><query xmlns='%s'><a xmlns='xmppd:test:m'>1</a><b xmlns='xmppd:test:m'>2</b>"
                   "</query></iq>" % NS_PRIV)
    eq(r.get("type"), "result", "set of two elements: " + tostr(r))
    r = await c.iq("<iq type='get'><query xmlns='%s'><a xmlns='xmppd:test:m'/></query></iq>" % NS_PRIV)
    q = r.find("{%s}query" % NS_PRIV)
    eq([(e.tag, e.text) for e in q], [("{xmppd:test:m}a", "1"), ("{xmppd:test:m}b", "2")], "both elements back")


@case("private: others' data forbidden, bad queries not-acceptable")
async def private_errors():
    c = clients["alice"]
    set_bob = ("<iq type='set' to='%s'><query xmlns='%s'><prefs xmlns='%s'><nick>x</nick></prefs></query></iq>"
               % (J("bob"), NS_PRIV, NS_PREFS))
    expect_error(await c.iq(set_bob), "forbidden", "set for bob")
    expect_error(await c.iq("<iq type='get' to='%s'><query xmlns='%s'><prefs xmlns='%s'/></query></iq>"
                            % (J("bob"), NS_PRIV, NS_PREFS)), "forbidden", "get of bob's")
    # bob's data was not written by alice's attempt
    r = await clients["bob"].x["xep_0049"].retrieve("prefs")
    check(not r["private"]["prefs"]["nick"], "bob's prefs are empty", r)
    for what, inner in (("an empty query", ""),
                        ("vcard-temp", "<vCard xmlns='vcard-temp'><FN>H</FN></vCard>"),
                        ("a jabber: namespace", "<query xmlns='jabber:iq:roster'/>"),
                        ("an http://jabber.org/ namespace", "<x xmlns='http://jabber.org/protocol/muc'/>"),
                        ("a child without its own namespace", "<prefs/>")):
        for t in ("get", "set"):
            r = await c.iq("<iq type='%s'><query xmlns='%s'>%s</query></iq>" % (t, NS_PRIV, inner))
            expect_error(r, "not-acceptable", "%s with %s" % (t, what))
    r = await c.iq("<iq type='get'><query xmlns='%s'><a xmlns='x:1'/><b xmlns='x:2'/></query></iq>" % NS_PRIV)
    expect_error(r, "bad-request", "get of two namespaces")
    many = "".join("<e xmlns='x:%d'/>" % i for i in range(33))
    r = await c.iq("<iq type='set'><query xmlns='%s'>%s</query></iq>" % (NS_PRIV, many))
    expect_error(r, "not-acceptable", "a set of 33 namespaces")
    # nothing of these was stored
    r = await c.iq("<iq type='get'><query xmlns='%s'><vCard xmlns='vcard-temp'/></query></iq>" % NS_PRIV)
    expect_error(r, "not-acceptable", "get vcard-temp")


@case("private: private.max_size (2K here) is for all namespaces together")
async def private_limit():
    c = clients["alice"]
    big = "x" * 1200
    r = await c.iq("<iq type='set'><query xmlns='%s'><big xmlns='xmppd:test:big1'>%s</big></query></iq>" % (NS_PRIV, big))
    eq(r.get("type"), "result", "1.2K stored: " + tostr(r))
    r = await c.iq("<iq type='set'><query xmlns='%s'><big xmlns='xmppd:test:big2'>%s</big></query></iq>" % (NS_PRIV, big))
    expect_error(r, "not-acceptable", "another 1.2K")
    r = await c.iq("<iq type='get'><query xmlns='%s'><big xmlns='xmppd:test:big2'/></query></iq>" % NS_PRIV)
    b = r.find(".//{xmppd:test:big2}big")
    check(b is not None and not b.text, "the refused set stored nothing", tostr(r))
    # replacing the first by a smaller one fits
    r = await c.iq("<iq type='set'><query xmlns='%s'><big xmlns='xmppd:test:big1'>y</big></query></iq>" % NS_PRIV)
    eq(r.get("type"), "result", "replaced by a small one")
    r = await c.iq("<iq type='set'><query xmlns='%s'><big xmlns='xmppd:test:big2'>%s</big></query></iq>" % (NS_PRIV, big))
    eq(r.get("type"), "result", "now 1.2K fits: " + tostr(r))


@case("private: the data goes with the account")
async def private_unregister():
    c = await login("pat")
    p = prefs_class()()
    p["nick"] = "Pat"
    await c.x["xep_0049"].store(p)
    await c.close()
    srv.ctl_ok("unregister", J("pat"))
    srv.register(J("pat"), PW["pat"])
    c = await login("pat")
    r = await c.x["xep_0049"].retrieve("prefs")
    check(not r["private"]["prefs"]["nick"], "no prefs after unregister and register", r)
    await c.close()


# ---------------------------------------------------------------- XEP-0012

@case("last: the server's uptime")
async def last_server():
    c = clients["bob"]
    r = await c.x["xep_0012"].get_last_activity("localhost")
    s = r["last_activity"]["seconds"]
    check(0 <= s < 600, "uptime %r" % s)
    check(not r["last_activity"]["status"], "no text from the server", r)


@case("last: an offline contact's logout time and status; 0 while online")
async def last_offline():
    bob = clients["bob"]
    r = await bob.x["xep_0012"].get_last_activity(J("alice"))
    eq(r["last_activity"]["seconds"], 0, "alice online")
    check(not r["last_activity"]["status"], "no status while online", r)
    alice = clients.pop("alice")
    alice.x.send_presence(ptype="unavailable", pstatus="Heading Home")
    await alice.close()
    await asyncio.sleep(1.2)
    r = await bob.x["xep_0012"].get_last_activity(J("alice"))
    s = r["last_activity"]["seconds"]
    check(1 <= s <= 10, "seconds since alice left: %r" % s, r)
    eq(r["last_activity"]["status"], "Heading Home", "status of the last unavailable presence")
    # a connection that drops without unavailable presence counts as well
    a2 = await login("alice")
    r = await bob.x["xep_0012"].get_last_activity(J("alice"))
    eq(r["last_activity"]["seconds"], 0, "alice online again")
    a2.abort()
    deadline = time.monotonic() + 5
    while True:
        r = await bob.x["xep_0012"].get_last_activity(J("alice"))
        if r["last_activity"]["seconds"] != 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    check(r["last_activity"]["status"] != "Heading Home",
          "the dropped session replaced the old status", r)


@case("last: forbidden without a subscription to the user's presence; other errors")
async def last_forbidden():
    carol = clients["carol"] = await login("carol")
    dave = await login("dave")
    q = "<iq type='get' to='%s'><query xmlns='" + NS_LAST + "'/></iq>"
    expect_error(await carol.iq(q % J("alice")), "forbidden", "carol (subscription 'to' in alice's roster)")
    expect_error(await dave.iq(q % J("alice")), "forbidden", "dave (not in alice's roster)")
    # erin never logged out: nothing known
    expect_error(await clients["bob"].iq(q % J("erin")), "item-not-found", "erin, never seen")
    expect_error(await dave.iq(q % J("nobody")), "service-unavailable", "no such account")
    expect_error(await dave.iq("<iq type='set' to='localhost'><query xmlns='%s'/></iq>" % NS_LAST),
                 "bad-request", "a set")
    # one's own: no 'to', online
    r = await dave.iq("<iq type='get'><query xmlns='%s'/></iq>" % NS_LAST)
    eq(r.find("{%s}query" % NS_LAST).get("seconds"), "0", "dave's own last activity")
    await dave.close()


# ---------------------------------------------------------------- XEP-0202, XEP-0092

@case("time: UTC and the zone offset of the server")
async def entity_time():
    c = clients["bob"]
    raw = await c.iq("<iq type='get' to='localhost'><time xmlns='urn:xmpp:time'/></iq>")
    tzo = raw.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text
    utc = raw.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    check(re.fullmatch(r"[+-]\d\d:\d\d", tzo), "tzo %r" % tzo)
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc), "utc %r" % utc)
    r = await c.x["xep_0202"].get_entity_time("localhost")
    # slixmpp 1.8's ['utc'] getter appends a second "Z" to the XEP's own
    # format: read the text
    t = datetime.datetime.strptime(r.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text,
                                   "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    # the daemons run in this process's time zone (its tzo getter breaks too)
    off = int(datetime.datetime.now().astimezone().utcoffset().total_seconds()) // 60
    eq(tzo, "%s%02d:%02d" % ("-" if off < 0 else "+", abs(off) // 60, abs(off) % 60), "tzo")
    now = datetime.datetime.now(datetime.timezone.utc)
    check(abs((t - now).total_seconds()) < 5, "server time %s vs ours %s" % (t, now))
    expect_error(await c.iq("<iq type='set' to='localhost'><time xmlns='urn:xmpp:time'/></iq>"),
                 "bad-request", "a set")


@case("version: xmppd, its version, the OS")
async def version():
    r = await clients["bob"].x["xep_0092"].get_version("localhost")
    v = r["software_version"]
    eq(v["name"], "xmppd", "name")
    eq(v["version"], package_version(), "version")
    eq(v["os"], platform.system(), "os")


@case("version: version.show_os = no hides the OS")
async def version_no_os():
    c = await login("alice", server=srv2)
    raw = await c.iq("<iq type='get' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    q = raw.find("{jabber:iq:version}query")
    check(q is not None and q.find("{jabber:iq:version}name").text == "xmppd", "a version answer", tostr(raw))
    check(q.find("{jabber:iq:version}os") is None, "no <os/>", tostr(raw))
    clients["srv2"] = c


# ---------------------------------------------------------------- XEP-0157

def serverinfo_forms(info_el):
    forms = []
    for x in info_el.iter("{%s}x" % NS_DATA):
        fields = {f.get("var"): [v.text for v in f.findall("{%s}value" % NS_DATA)] for f in x.findall("{%s}field" % NS_DATA)}
        if fields.get("FORM_TYPE") == ["http://jabber.org/network/serverinfo"]:
            forms.append(fields)
    return forms


def caps_ver(server, user):
    """The XEP-0115 'ver' of the stream features after authentication."""
    raw = Raw(server.port)
    try:
        raw.open()
        raw.starttls()
        raw.open()
        st, cond = raw.auth_plain(user, PW[user])
        check(st == "success", "login %s: %s" % (user, cond))
        feats = raw.open()
        c = feats.find("{%s}c" % NS_CAPS)
        check(c is not None, "no caps in the stream features", tostr(feats))
        return c.get("hash"), c.get("ver")
    finally:
        raw.close()


def verstring(c, info):
    """XEP-0115 §5.1 by slixmpp's own implementation."""
    return c.x["xep_0115"].generate_verstring(info["disco_info"], "sha-1")


@case("contact_info: the serverinfo form in disco#info and in the caps hash")
async def contact_info():
    c = clients["bob"]
    info = await c.x["xep_0030"].get_info(jid="localhost", cached=False)
    forms = serverinfo_forms(info.xml)
    eq(len(forms), 1, "one serverinfo form")
    f = forms[0]
    eq(f.get("abuse-addresses"), ABUSE.split(), "abuse-addresses")
    eq(f.get("admin-addresses"), [ADMIN], "admin-addresses")
    for k in ("feedback", "sales", "security", "support"):
        check(k + "-addresses" not in f, "%s-addresses unset, so absent" % k, f)
    h, ver = caps_ver(srv, "bob")
    eq(h, "sha-1", "caps hash")
    eq(ver, verstring(c, info), "caps ver = the hash of disco#info with the form")
    # and without contact addresses: no form, and the hash says so too
    c2 = clients["srv2"]
    info2 = await c2.x["xep_0030"].get_info(jid="localhost", cached=False)
    eq(serverinfo_forms(info2.xml), [], "no serverinfo form on the second server")
    h2, ver2 = caps_ver(srv2, "alice")
    eq(ver2, verstring(c2, info2), "caps ver of the second server")
    check(ver2 != ver, "the form changes the hash")


@case("contact_info: a word that is not a URI refuses to start")
def contact_info_bad():
    bad = Server(modules=MODULES, **{"contact_info.support": "mailto:help@localhost not-a-uri"})
    rc, o, e = bad.ctl("start", timeout=60)
    bad.started = True
    check(rc != 0, "xmppctl start succeeded with a bad contact_info.support", o, e)
    logs = "".join(bad.log(n) for n in ("sm-0", "c2s-1")) + o + e
    check("not-a-uri" in logs, "the bad word is named", logs[-2000:])
    bad.stop()


run(file_timeout=150)
