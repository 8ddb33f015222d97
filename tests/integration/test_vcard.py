#!/usr/bin/python3
"""XEP-0054 vcard-temp and XEP-0055 search over the vCards, end to end with
slixmpp clients (xep_0054, xep_0055 with xep_0004 forms) and raw IQs where
the exact answer matters: setting and getting one's own vCard (with and
without 'to'), another user's, a user without one, a set to another user's
JID (forbidden), a vCard over vcard.max_size (not-acceptable), clearing
it; the directory search by each field, case-insensitive substring
matches, several fields at once, the data form, the result cap with its
XEP-0059 <set/> and paging on, an empty search refused, users of another
domain refused, a host without the search module (service-unavailable and
not in disco#info); `xmppctl unregister` taking the vCard away (search no
longer finds it, the same name registered again has none); `xmppctl
vcard`."""
import os
import sys
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (Client, Server, case, check, eq, error_condition, run, tostr)  # noqa: E402

NS_V = "vcard-temp"
NS_S = "jabber:iq:search"
NS_DATA = "jabber:x:data"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_INFO = "http://jabber.org/protocol/disco#info"
OTHER = "other.localhost"
MAX_RESULTS = 3

# the modules of this file only; other.localhost goes without search; two
# shards, so that the users and their vCards are spread over both and every
# search below is merged from two shards' answers (api->ask_shards)
srv = Server(domains=("localhost", OTHER), modules="disco ping vcard search", sm_shards="2",
             **{"vcard.max_size": "2K", "search.max_results": str(MAX_RESULTS)})
with open(srv.conf_path, "a") as f:
    f.write("[host %s]\nmodules_disabled = search\n" % OTHER)

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
PW = {u: "pw-%s-vc" % u for u in USERS}
clients = {}


def shard_of(bare, n=2):
    """jid_shard(): FNV-1a 64 of the bare JID, modulo the shards."""
    h = 14695981039346656037
    for c in bare.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % n


def J(u, domain="localhost"):
    return "%s@%s" % (u, domain)


async def login(user, domain="localhost"):
    c = Client(srv, J(user, domain), PW[user])
    for p in ("xep_0030", "xep_0004", "xep_0054"):
        c.x.register_plugin(p)
    c.x.register_plugin("xep_0055", pconfig={"provide_search": False})
    await c.login()
    return c


def vcard(given="", family="", nick="", email="", fn="", desc="", extra=""):
    """A vCard as XML text (XEP-0054 §3.1 layout)."""
    def esc(s):
        return s.replace("&", "&amp;").replace("<", "&lt;")
    return ("<vCard xmlns='vcard-temp'><FN>%s</FN><N><FAMILY>%s</FAMILY><GIVEN>%s</GIVEN><MIDDLE/></N>"
            "<NICKNAME>%s</NICKNAME><EMAIL><INTERNET/><PREF/><USERID>%s</USERID></EMAIL>"
            "<DESC>%s</DESC>%s</vCard>" % (esc(fn or (given + " " + family).strip()), esc(family), esc(given),
                                            esc(nick), esc(email), esc(desc), extra))


async def publish(c, xml_text):
    """Publish with slixmpp's xep_0054 (raises IqError on an error)."""
    from slixmpp.plugins.xep_0054.stanza import VCardTemp
    await c.x["xep_0054"].publish_vcard(VCardTemp(xml=ET.fromstring(xml_text)))


def fields(vc):
    """(GIVEN, FAMILY, NICKNAME, USERID, DESC) of a <vCard/> element."""
    def t(path):
        e = vc.find(path)
        return e.text if e is not None and e.text is not None else ""
    q = "{%s}" % NS_V
    return (t(q + "N/" + q + "GIVEN"), t(q + "N/" + q + "FAMILY"), t(q + "NICKNAME"),
            t(q + "EMAIL/" + q + "USERID"), t(q + "DESC"))


async def get_raw(c, to=None):
    to_attr = " to='%s'" % to if to else ""
    return await c.iq("<iq type='get'%s><vCard xmlns='vcard-temp'/></iq>" % to_attr)


def expect_error(el, cond, what, etype=None):
    eq(el.get("type"), "error", what + ": type (%s)" % tostr(el))
    t, c = error_condition(el)
    eq(c, cond, what + ": condition")
    if etype:
        eq(t, etype, what + ": error type")


async def search(c, to="localhost", rsm="", iq_timeout=5.0, **crit):
    """A plain XEP-0055 search: (iq element, [(jid, first, last, nick, email)], <set/> or None)."""
    body = "".join("<%s>%s</%s>" % (k, v, k) for k, v in crit.items())
    r = await c.iq("<iq type='set' to='%s'><query xmlns='%s'>%s%s</query></iq>" % (to, NS_S, body, rsm),
                   timeout=iq_timeout)
    q = r.find("{%s}query" % NS_S)
    if r.get("type") != "result" or q is None:
        return r, None, None
    items = []
    for it in q.findall("{%s}item" % NS_S):
        items.append((it.get("jid"),) + tuple((it.findtext("{%s}%s" % (NS_S, f)) or "")
                                               for f in ("first", "last", "nick", "email")))
    return r, items, q.find("{%s}set" % NS_RSM)


def jids(items):
    return sorted(i[0] for i in items)


@case("start; vcard-temp on the server and accounts, search only on localhost")
async def start():
    srv.start()
    for u in USERS:
        srv.register(J(u), PW[u])
    srv.register(J("olga", OTHER), "pw-olga-vc")
    PW["olga"] = "pw-olga-vc"
    eq(sorted({shard_of(J(u)) for u in USERS}), [0, 1], "the users of localhost are on both shards")
    for u in ("alice", "bob", "carol", "dave"):
        clients[u] = await login(u)
    clients["olga"] = await login("olga", OTHER)
    c = clients["bob"]
    info = await c.x["xep_0030"].get_info(jid="localhost", cached=False)
    feats, ids = info["disco_info"]["features"], info["disco_info"]["identities"]
    check(NS_V in feats, "vcard-temp not among the server's features", feats)
    check(NS_S in feats, "jabber:iq:search not among the server's features", feats)
    check(any(i[0] == "directory" and i[1] == "user" for i in ids), "no directory/user identity", ids)
    acc = await c.x["xep_0030"].get_info(jid=J("alice"), cached=False)
    check(NS_V in acc["disco_info"]["features"], "vcard-temp not among an account's features",
          acc["disco_info"]["features"])
    other = await clients["olga"].x["xep_0030"].get_info(jid=OTHER, cached=False)
    ofeats, oids = other["disco_info"]["features"], other["disco_info"]["identities"]
    check(NS_V in ofeats, "vcard-temp missing on %s" % OTHER, ofeats)
    check(NS_S not in ofeats, "search advertised on %s, which has it disabled" % OTHER, ofeats)
    check(not any(i[0] == "directory" for i in oids), "directory identity on %s" % OTHER, oids)


@case("own vCard before any: an empty <vCard/> result")
async def own_empty():
    r = await get_raw(clients["alice"])
    eq(r.get("type"), "result", "get of an unset own vCard (%s)" % tostr(r))
    vc = r.find("{%s}vCard" % NS_V)
    check(vc is not None and len(vc) == 0, "expected an empty vCard", tostr(r))


@case("set and get one's own vCard (no 'to', and 'to' = own bare JID)")
async def own_set_get():
    c = clients["alice"]
    desc = "Down the\nrabbit hole & through the looking glass"
    await publish(c, vcard("Alice", "Liddell", "ally", "alice@wonder.land", desc=desc))
    want = ("Alice", "Liddell", "ally", "alice@wonder.land", desc)
    r = await get_raw(c)
    eq(r.get("type"), "result", "own get")
    eq(fields(r.find("{%s}vCard" % NS_V)), want, "own vCard without 'to'")
    r = await get_raw(c, J("alice"))
    eq(r.get("type"), "result", "own get to the bare JID")
    eq(fields(r.find("{%s}vCard" % NS_V)), want, "own vCard to the bare JID")
    # slixmpp's own get (no 'to')
    iq = await c.x["xep_0054"].get_vcard(local=False)
    eq(iq["vcard_temp"]["N"]["FAMILY"], "Liddell", "slixmpp get_vcard: FAMILY")
    # replacing it replaces it whole (XEP-0054 §3.2)
    await publish(c, vcard("Alice", "Liddell", "ally", "alice@wonder.land"))
    r = await get_raw(c)
    eq(fields(r.find("{%s}vCard" % NS_V))[4], "", "DESC after a replacement without it")


@case("another user's vCard: get to the bare JID, answered by the server")
async def other_get():
    iq = await clients["bob"].x["xep_0054"].get_vcard(J("alice"))
    eq(iq["from"].bare, J("alice"), "from of the answer")
    vc = iq["vcard_temp"]
    eq((vc["N"]["GIVEN"], vc["N"]["FAMILY"]), ("Alice", "Liddell"), "alice's name as bob sees it")
    r = await get_raw(clients["bob"], J("alice"))
    eq(fields(r.find("{%s}vCard" % NS_V))[:4], ("Alice", "Liddell", "ally", "alice@wonder.land"), "raw get")


@case("a user without a vCard, and no user at all: service-unavailable alike")
async def other_none():
    r = await get_raw(clients["bob"], J("carol"))
    expect_error(r, "service-unavailable", "get of carol's unset vCard")
    r = await get_raw(clients["bob"], J("nobody"))
    expect_error(r, "service-unavailable", "get of a missing account's vCard")


@case("a set to another user's JID: forbidden, theirs unchanged")
async def set_other():
    r = await clients["bob"].iq("<iq type='set' to='%s'>%s</iq>" % (J("alice"), vcard("Evil", "Bob")))
    expect_error(r, "forbidden", "bob setting alice's vCard", "auth")
    r = await get_raw(clients["alice"])
    eq(fields(r.find("{%s}vCard" % NS_V))[:2], ("Alice", "Liddell"), "alice's vCard after bob's attempt")


@case("a vCard over vcard.max_size (2K): not-acceptable, the old one kept")
async def too_big():
    c = clients["alice"]
    r = await c.iq("<iq type='set'>%s</iq>" % vcard("Alice", "Liddell", desc="x" * 2100))
    expect_error(r, "not-acceptable", "a 2.1K vCard", "modify")
    r = await get_raw(c)
    eq(fields(r.find("{%s}vCard" % NS_V))[:2], ("Alice", "Liddell"), "alice's vCard after the refused set")
    # just under the limit is stored
    r = await c.iq("<iq type='set'>%s</iq>" % vcard("Alice", "Liddell", "ally", "alice@wonder.land",
                                                     desc="y" * 1700))
    eq(r.get("type"), "result", "a vCard under 2K (%s)" % tostr(r)[:300])
    await publish(c, vcard("Alice", "Liddell", "ally", "alice@wonder.land"))


@case("an empty <vCard/> set clears it")
async def clear():
    c = clients["dave"]
    await publish(c, vcard("Temp", "Orary", "tmp", "tmp@example.com"))
    r = await get_raw(clients["bob"], J("dave"))
    eq(r.get("type"), "result", "dave's vCard is there")
    await publish(c, "<vCard xmlns='vcard-temp'/>")
    r = await get_raw(clients["bob"], J("dave"))
    expect_error(r, "service-unavailable", "dave's cleared vCard")
    r = await get_raw(c)
    vc = r.find("{%s}vCard" % NS_V)
    check(r.get("type") == "result" and vc is not None and len(vc) == 0, "dave's own cleared vCard", tostr(r))


@case("search: the fields, instructions and the data form (get)")
async def search_fields():
    r = await clients["bob"].iq("<iq type='get' to='localhost'><query xmlns='%s'/></iq>" % NS_S)
    eq(r.get("type"), "result", "search get (%s)" % tostr(r))
    q = r.find("{%s}query" % NS_S)
    check(q.findtext("{%s}instructions" % NS_S), "no instructions", tostr(r))
    for f in ("first", "last", "nick", "email"):
        check(q.find("{%s}%s" % (NS_S, f)) is not None, "no <%s/> field" % f, tostr(r))
    x = q.find("{%s}x" % NS_DATA)
    check(x is not None and x.get("type") == "form", "no data form", tostr(r))
    vars_ = {f.get("var"): f for f in x.findall("{%s}field" % NS_DATA)}
    eq(vars_["FORM_TYPE"].findtext("{%s}value" % NS_DATA), NS_S, "FORM_TYPE")
    eq(sorted(v for v in vars_ if v != "FORM_TYPE"), ["email", "first", "last", "nick"], "form fields")


@case("search by each field: case-insensitive substring, all fields given must match")
async def search_each():
    await publish(clients["bob"], vcard("Robert", "Smith", "bobby", "bob@example.com"))
    await publish(clients["carol"], vcard("Carol", "Goldsmith", "caz", "carol@example.org"))
    # non-ASCII letters fold too
    await publish(clients["dave"], vcard("Dávid", "Ödön", "Δαβίδ", "dave@example.net"))
    c = clients["alice"]
    _, items, _ = await search(c, last="smith")
    eq(jids(items), [J("bob"), J("carol")], "last=smith")
    bob = [i for i in items if i[0] == J("bob")][0]
    eq(bob, (J("bob"), "Robert", "Smith", "bobby", "bob@example.com"), "bob's result item")
    _, items, _ = await search(c, first="ALI")
    eq(jids(items), [J("alice")], "first=ALI")
    _, items, _ = await search(c, nick="obb")
    eq(jids(items), [J("bob")], "nick=obb")
    _, items, _ = await search(c, email="example.org")
    eq(jids(items), [J("carol")], "email=example.org")
    _, items, _ = await search(c, last="smith", first="rob")
    eq(jids(items), [J("bob")], "last=smith and first=rob")
    _, items, _ = await search(c, last="ÖDÖN")
    eq(jids(items), [J("dave")], "last=ÖDÖN (Latin-1 case folding)")
    _, items, _ = await search(c, nick="ΔΑΒ")
    eq(jids(items), [J("dave")], "nick=ΔΑΒ (Greek case folding)")
    r, items, st = await search(c, last="nobody-has-this")
    eq(items, [], "no match")
    q = r.find("{%s}query" % NS_S)
    eq(len(q), 0, "no match is an empty <query/> (XEP-0055 §2)")


@case("search with the data form (slixmpp xep_0055 + xep_0004)")
async def search_form():
    c = clients["alice"]
    iq = c.x["xep_0055"].make_search_iq(ito="localhost")
    iq["search"]["form"].add_field("last", value="Smith")
    r = await iq.send()
    form = r["search"]["form"]
    eq(form["type"], "result", "form type")
    check("jid" in form.get_reported(), "no jid column", form.get_reported())
    items = sorted(form.get_items(), key=lambda i: i["jid"])
    eq([i["jid"] for i in items], [J("bob"), J("carol")], "form search last=Smith")
    eq((items[0]["first"], items[0]["nick"], items[0]["email"]), ("Robert", "bobby", "bob@example.com"),
       "bob's form item")
    # an unknown field is not silently dropped
    bad = await c.iq("<iq type='set' to='localhost'><query xmlns='%s'><x xmlns='%s' type='submit'>"
                     "<field var='FORM_TYPE'><value>%s</value></field><field var='shoe_size'><value>44</value>"
                     "</field></x></query></iq>" % (NS_S, NS_DATA, NS_S))
    expect_error(bad, "bad-request", "a form with an unknown field")


@case("search results capped at search.max_results, with a XEP-0059 <set/>; paging on")
async def search_cap():
    # five users whose email has "@example."
    await publish(clients["alice"], vcard("Alice", "Liddell", "ally", "alice@example.com"))
    c = await login("erin")
    await publish(c, vcard("Erin", "Brockovich", "eb", "erin@example.com"))
    await c.close()
    every = [J(u) for u in ("alice", "bob", "carol", "dave", "erin")]
    r, items, st = await search(clients["bob"], email="@example.")
    eq(jids(items), every[:MAX_RESULTS], "first page: the smallest JIDs")
    check(st is not None, "a capped answer has no <set/>", tostr(r))
    eq(st.findtext("{%s}count" % NS_RSM), "5", "<count/>")
    eq(st.find("{%s}first" % NS_RSM).get("index"), "0", "index of the first page")
    last = st.findtext("{%s}last" % NS_RSM)
    eq(last, every[MAX_RESULTS - 1], "<last/>")
    r, items, st = await search(clients["bob"], email="@example.",
                                rsm="<set xmlns='%s'><max>10</max><after>%s</after></set>" % (NS_RSM, last))
    eq(jids(items), every[MAX_RESULTS:], "the page after <last/>")
    eq(st.find("{%s}first" % NS_RSM).get("index"), str(MAX_RESULTS), "index of the second page")
    r, items, st = await search(clients["bob"], email="@example.",
                                rsm="<set xmlns='%s'><max>2</max><before/></set>" % NS_RSM)
    eq(jids(items), every[-2:], "the last page")
    eq(st.find("{%s}first" % NS_RSM).get("index"), "3", "index of the last page")
    r, items, st = await search(clients["bob"], email="@example.",
                                rsm="<set xmlns='%s'><max>0</max></set>" % NS_RSM)
    eq((items, st.findtext("{%s}count" % NS_RSM)), ([], "5"), "max 0: the count only")
    # not capped: no <set/> unless asked
    r, items, st = await search(clients["bob"], email="example.com")
    eq((jids(items), st), ([J("alice"), J("bob"), J("erin")], None), "three matches, no <set/>")


@case("search refusals: no field, another domain's user, a host without search")
async def search_refused():
    r, _, _ = await search(clients["bob"])
    expect_error(r, "not-acceptable", "a search with no field")
    r, _, _ = await search(clients["bob"], first="   ")
    expect_error(r, "not-acceptable", "a search with only blanks")
    r, _, _ = await search(clients["olga"], last="smith")
    expect_error(r, "forbidden", "olga@%s searching localhost" % OTHER)
    r, _, _ = await search(clients["olga"], to=OTHER, last="smith")
    expect_error(r, "service-unavailable", "search on %s (module disabled)" % OTHER)
    r = await clients["olga"].iq("<iq type='get' to='%s'><query xmlns='%s'/></iq>" % (OTHER, NS_S))
    expect_error(r, "service-unavailable", "search fields on %s" % OTHER)


@case("xmppctl unregister removes the vCard; the name registered again has none")
async def unregister():
    c = await login("frank")
    await publish(c, vcard("Frank", "Zappa", "fz", "frank@example.com"))
    await c.close()
    _, items, _ = await search(clients["bob"], last="zappa")
    eq(jids(items), [J("frank")], "frank found before")
    srv.ctl_ok("unregister", J("frank"))
    _, items, _ = await search(clients["bob"], last="zappa")
    eq(items, [], "frank after unregister")
    r = await get_raw(clients["bob"], J("frank"))
    expect_error(r, "service-unavailable", "frank's vCard after unregister")
    srv.register(J("frank"), PW["frank"])
    r = await get_raw(clients["bob"], J("frank"))
    expect_error(r, "service-unavailable", "the new frank's vCard")
    c = await login("frank")
    r = await get_raw(c)
    vc = r.find("{%s}vCard" % NS_V)
    check(r.get("type") == "result" and vc is not None and len(vc) == 0, "the new frank's own vCard is empty",
          tostr(r))
    await c.close()


@case("xmppctl vcard USER [delete]")
async def ctl_vcard():
    out = srv.ctl_ok("vcard", J("bob"))
    cols = out.rstrip("\n").split("\t")
    eq((len(out.splitlines()), cols[0]), (1, J("bob")), "one row: user, vcard")
    vc = ET.fromstring(cols[1])
    eq(fields(vc)[:4], ("Robert", "Smith", "bobby", "bob@example.com"), "the printed vCard")
    rc, o, e = srv.ctl("vcard", J("gina"))
    eq(rc, 1, "xmppctl vcard of a user without one: exit status (%s %s)" % (o, e))
    rc, o, e = srv.ctl("vcard", J("nobody"))
    eq(rc, 1, "xmppctl vcard of a user that does not exist: exit status (%s %s)" % (o, e))
    rc, o, e = srv.ctl("vcard", J("bob"), "bogus")
    eq(rc, 2, "xmppctl vcard with a bad argument: exit status (%s %s)" % (o, e))
    eq(srv.ctl_ok("vcard", J("bob"), "delete"), "%s\tdeleted\n" % J("bob"), "xmppctl vcard delete")
    rc, o, e = srv.ctl("vcard", J("bob"))
    eq(rc, 1, "xmppctl vcard after delete")
    _, items, _ = await search(clients["alice"], last="smith")
    eq(jids(items), [J("carol")], "search after bob's vCard was deleted")


@case("a shard that does not answer: the search is refused as incomplete, not answered with part of "
      "the directory", timeout=30)
async def shard_down():
    # alice and the domain's IQs are on sm-0: the search runs there and asks sm-1
    eq((shard_of("localhost"), shard_of(J("alice"))), (0, 0), "the shards of localhost and alice")
    srv.kill("sm-1")
    # the searching shard waits five seconds for the others
    r, items, _ = await search(clients["alice"], last="smith", iq_timeout=15.0)
    expect_error(r, "internal-server-error", "a search with sm-1 down")
    check("incomplete" in (r.findtext(".//{urn:ietf:params:xml:ns:xmpp-stanzas}text") or ""),
          "the error text says why", tostr(r))


if __name__ == "__main__":
    run()
