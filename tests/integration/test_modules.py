#!/usr/bin/python3
"""The module machinery (xmppd-modules(7)) with the example external module
examples/bridge: the header and xmppd.pc installed by the build's own
install rules (make install-... DESTDIR=) are enough to build it, with cc
-Werror and with its Makefile through pkg-config; xmpp-sm and xmpp-c2s load
it from module_dir (its IQ, store, disco feature, option read per host,
account removal hook); a module built for another ABI is refused at
start-up with both numbers in the log; modules_disabled in a [host]
section takes a module away from that host only (disco#info, the IQ gets
service-unavailable); the XEP-0115 'ver' in the stream features is the
hash slixmpp computes from disco#info, per host; an unknown module option
fails the start naming file:line; `xmppctl modules [HOST]`; the module's
administrator command through `xmppctl mod`; and the trace line of a
stanza stopped by a module hook."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (BUILDDIR, SRCDIR, Client, Raw, Server, case, check, eq,  # noqa: E402
                       error_condition, run, tostr)

NS_BRIDGE = "urn:xmppd:example:bridge:0"
NS_VERSION = "jabber:iq:version"
NS_CAPS = "http://jabber.org/protocol/caps"
BRIDGE_C = os.path.join(SRCDIR, "examples", "bridge", "bridge.c")
BLOCKED = "spam@irc.example.net"

TMP = tempfile.mkdtemp(prefix="xmppd-modules-")
DESTDIR = os.path.join(TMP, "destdir")    # `make install-... DESTDIR=`
MODDIR = os.path.join(TMP, "modules")     # module_dir of the servers
os.makedirs(MODDIR)
built = {}                                # what the first case found and made

# a.test has every module of the list; b.test has no version and its own
# bridge.network (a [host] option wins over the global one); bridge.blocked
# in capitals: the module compares it with normalized JIDs
MODULES = "disco ping version time last private bridge"
srv = Server(domains=("a.test", "b.test"), modules=MODULES, module_dir=MODDIR,
             **{"bridge.network": "IRC", "bridge.rooms": "xmppd dev", "bridge.blocked": BLOCKED.upper()})
with open(srv.conf_path, "a") as f:
    f.write("[host b.test]\nmodules_disabled = version\nbridge.network = Matrix\n")

USERS = {"alice@a.test": "pw-alice-mod", "bob@a.test": "pw-bob-mod", "carol@a.test": "pw-carol-mod",
         "dave@b.test": "pw-dave-mod"}
clients = {}


def submake_env(**extra):
    """The environment for a make of our own: without the variables of the
    `make check` we may run under (TESTS=..., -j, the jobserver)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(extra)
    return env


def sh(argv, what, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    check(p.returncode == 0, "%s: exit %d" % (what, p.returncode), " ".join(argv), p.stdout[-2000:],
          p.stderr[-2000:])
    return p.stdout


def find_file(top, tail):
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            if p.endswith(tail):
                return p
    return None


async def login(jid, plugins=()):
    c = Client(srv, jid + "/mod", USERS[jid])
    for p in ("xep_0030", "xep_0004", "xep_0128", "xep_0115") + tuple(plugins):
        c.x.register_plugin(p)
    await c.login()
    return c


def bridge_iq(typ, to, inner=""):
    return "<iq type='%s' to='%s'><query xmlns='%s'>%s</query></iq>" % (typ, to, NS_BRIDGE, inner)


def expect_error(el, cond, what):
    eq(el.get("type"), "error", what + ": type (%s)" % tostr(el))
    eq(error_condition(el)[1], cond, what + ": condition")


def send(c, to, body, ident):
    m = c.x.make_message(mto=to, mbody=body, mtype="chat")
    m["id"] = ident
    m.send()


def start_fails(s, what):
    """Start s, which must fail; returns xmppctl's output and the logs of
    sm-0 and c2s-1."""
    rc, o, e = s.ctl("start", timeout=60)
    s.started = True  # stop() also ends what did start
    logs = s.log("sm-0") + s.log("c2s-1")
    s.stop()
    check(rc != 0, "xmppctl start succeeded with %s" % what, o, e)
    return o + e + logs


@case("the build's install rules install xmppd/module.h and xmppd.pc; bridge.c builds against them "
      "with cc -Werror and with its Makefile via pkg-config")
def build():
    env = submake_env()
    sh(["make", "-s", "-C", BUILDDIR, "install-xmppdincludeHEADERS", "install-pkgconfigDATA", "DESTDIR=" + DESTDIR],
       "make install-xmppdincludeHEADERS install-pkgconfigDATA", env=env)
    header = find_file(DESTDIR, "/xmppd/module.h")
    pc = find_file(DESTDIR, "/xmppd.pc")
    check(header and pc, "installed files", header, pc, sh(["find", DESTDIR], "find"))
    incdir = os.path.dirname(os.path.dirname(header))
    with open(header) as f:
        built["abi"] = int(re.search(r"#define XMPPD_MODULE_ABI (\d+)", f.read()).group(1))
    # by hand, as examples/bridge/README shows
    sh(["cc", "-shared", "-fPIC", "-I" + incdir, "-Wall", "-Wextra", "-Werror", "-o",
        os.path.join(MODDIR, "bridge.so"), BRIDGE_C], "cc bridge.c")
    # and with its Makefile: pkg-config finds the installed xmppd.pc
    mk = os.path.join(TMP, "mk")
    os.makedirs(mk)
    pcenv = submake_env(PKG_CONFIG_PATH=os.path.dirname(pc), PKG_CONFIG_SYSROOT_DIR=DESTDIR,
                        PKG_CONFIG_ALLOW_SYSTEM_CFLAGS="1")
    cflags = sh(["pkg-config", "--cflags", "xmppd"], "pkg-config --cflags xmppd", env=pcenv).split()
    eq(cflags, ["-I" + incdir], "pkg-config --cflags xmppd")
    out = sh(["make", "-f", os.path.join(SRCDIR, "examples", "bridge", "Makefile"), "CFLAGS=-O2 -Werror"],
             "make -f examples/bridge/Makefile", cwd=mk, env=pcenv)
    check("-I" + incdir in out, "the Makefile used pkg-config's -I", out)
    syms = sh(["nm", "-D", "--defined-only", os.path.join(mk, "bridge.so")], "nm bridge.so")
    check(re.search(r"\bxmppd_module$", syms, re.M), "bridge.so exports xmppd_module", syms)


@case("a server loads bridge.so from module_dir; a slixmpp client gets the network and rooms, links "
      "itself, sees its link (and only its own); the host's option wins on b.test")
async def bridge_iq_case():
    check(os.path.exists(os.path.join(MODDIR, "bridge.so")), "bridge.so was built")
    srv.start()
    for j, p in USERS.items():
        srv.register(j, p)
    for j in USERS:
        clients[j] = await login(j)
    a, b, d = clients["alice@a.test"], clients["bob@a.test"], clients["dave@b.test"]
    r = await a.iq(bridge_iq("get", "a.test"))
    eq(r.get("type"), "result", "get: type (%s)" % tostr(r))
    q = r.find("{%s}query" % NS_BRIDGE)
    check(q is not None, "a <query/> in the result", tostr(r))
    eq(q.get("network"), "IRC", "network")
    eq([x.get("name") for x in q.findall("{%s}room" % NS_BRIDGE)], ["xmppd", "dev"], "rooms")
    eq(q.findall("{%s}link" % NS_BRIDGE), [], "no link yet")

    r = await a.iq(bridge_iq("set", "a.test", "<link jid='alice@irc.example.net'/>"))
    eq(r.get("type"), "result", "set link: type (%s)" % tostr(r))
    r = await a.iq(bridge_iq("get", "a.test"))
    links = [x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)]
    eq(links, ["alice@irc.example.net"], "alice's link after the set")
    r = await b.iq(bridge_iq("get", "a.test"))
    eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], [], "bob does not see alice's link")

    # refused sets change nothing
    expect_error(await a.iq(bridge_iq("set", "a.test", "<link jid='two words'/>")), "jid-malformed", "a bad link")
    expect_error(await a.iq(bridge_iq("set", "a.test")), "bad-request", "a set without <link/>")
    # a user of b.test has nothing to do with a.test's bridge
    expect_error(await d.iq(bridge_iq("set", "a.test", "<link jid='x@y'/>")), "forbidden", "dave on a.test")
    r = await a.iq(bridge_iq("get", "a.test"))
    eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], ["alice@irc.example.net"], "alice's link kept")

    r = await d.iq(bridge_iq("get", "b.test"))
    eq(r.find("{%s}query" % NS_BRIDGE).get("network"), "Matrix", "b.test's network ([host] option)")

    # <link/> without jid removes it
    r = await b.iq(bridge_iq("set", "a.test", "<link jid='bob@irc.example.net'/>"))
    eq(r.get("type"), "result", "bob links")
    r = await b.iq(bridge_iq("set", "a.test", "<link/>"))
    eq(r.get("type"), "result", "bob unlinks")
    r = await b.iq(bridge_iq("get", "a.test"))
    eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], [], "bob's link after <link/>")


@case("modules_disabled = version on b.test: its disco#info lacks the feature and the IQ gets "
      "service-unavailable; a.test has both; both list the external module's feature")
async def disabled():
    a, d = clients["alice@a.test"], clients["dave@b.test"]
    ia = await a.x["xep_0030"].get_info(jid="a.test", cached=False)
    ib = await d.x["xep_0030"].get_info(jid="b.test", cached=False)
    fa, fb = ia["disco_info"]["features"], ib["disco_info"]["features"]
    check(NS_VERSION in fa, "a.test lists %s" % NS_VERSION, fa)
    check(NS_VERSION not in fb, "b.test does not list %s" % NS_VERSION, fb)
    check(NS_BRIDGE in fa and NS_BRIDGE in fb, "both list %s" % NS_BRIDGE, fa, fb)
    q = "<iq type='get' to='%s'><query xmlns='" + NS_VERSION + "'/></iq>"
    r = await a.iq(q % "a.test")
    eq(r.get("type"), "result", "version of a.test (%s)" % tostr(r))
    expect_error(await d.iq(q % "b.test"), "service-unavailable", "version of b.test")
    # the same user asking both hosts: the host decides, not the user
    expect_error(await a.iq(q % "b.test"), "service-unavailable", "version of b.test asked by alice@a.test")
    built["info"] = {"a.test": ia, "b.test": ib}


def caps_of(domain, user):
    """hash and ver of the <c/> in the stream features after authentication."""
    raw = Raw(srv.port)
    try:
        raw.open(to=domain)
        raw.starttls()
        raw.open(to=domain)
        st, cond = raw.auth_plain(user.split("@")[0], USERS[user])
        check(st == "success", "login %s: %s" % (user, cond))
        feats = raw.open(to=domain)
        c = feats.find("{%s}c" % NS_CAPS)
        check(c is not None, "no caps in the stream features of %s" % domain, tostr(feats))
        return c.get("hash"), c.get("node"), c.get("ver")
    finally:
        raw.close()


@case("XEP-0115: the ver in each host's stream features is slixmpp's hash of its disco#info; "
      "disabling a module changes it")
async def caps():
    check("info" in built, "disco#info from the case before")
    vers = {}
    for dom, user in (("a.test", "alice@a.test"), ("b.test", "dave@b.test")):
        h, node, ver = caps_of(dom, user)
        eq(h, "sha-1", "caps hash of %s" % dom)
        check(node, "a caps node for %s" % dom)
        want = clients[user].x["xep_0115"].generate_verstring(built["info"][dom]["disco_info"], "sha-1")
        eq(ver, want, "caps ver of %s = slixmpp's verstring of its disco#info" % dom)
        vers[dom] = ver
    check(vers["a.test"] != vers["b.test"], "the hosts' ver differ", vers)


@case("`xmppctl modules` lists every host's modules with their source; `modules HOST` one host's; "
      "an unknown host is an error")
def ctl_modules():
    rc, o, e = srv.ctl("modules")
    eq(rc, 0, "xmppctl modules exit code (%s)" % e)
    rows = [l.split("\t") for l in o.splitlines() if l.strip()]
    check(all(len(r) == 4 for r in rows), "four columns: host, module, source, description", o)
    by_host = {}
    for host, mod, source, desc in rows:
        by_host.setdefault(host, []).append(mod)
        if mod == "bridge":
            eq(source, os.path.join(MODDIR, "bridge.so"), "source of bridge on %s" % host)
            check("example bridge" in desc, "bridge's description", desc)
        else:
            eq(source, "built-in", "source of %s" % mod)
    want = MODULES.split()
    eq([m for m in by_host.get("a.test", []) if m != "core"], want, "a.test's modules, in order")
    eq([m for m in by_host.get("b.test", []) if m != "core"], [m for m in want if m != "version"], "b.test's modules")
    rc, o, e = srv.ctl("modules", "b.test")
    eq(rc, 0, "xmppctl modules b.test exit code (%s)" % e)
    eq(sorted({l.split("\t")[0] for l in o.splitlines() if l.strip()}), ["b.test"], "hosts of `modules b.test`")
    rc, o, e = srv.ctl("modules", "nosuch.test")
    eq(rc, 1, "xmppctl modules nosuch.test exit code (%s%s)" % (o, e))


@case("the module's command: `xmppctl mod bridge USER` shows the link, `... unlink` removes it, "
      "bad arguments are a usage error, a user without a link a failure")
async def command():
    rc, o, e = srv.ctl("mod", "bridge", "alice@a.test")
    eq((rc, o), (0, "alice@a.test\tIRC\talice@irc.example.net\n"), "mod bridge alice (stderr %r)" % e)
    rc, o, e = srv.ctl("mod", "bridge", "alice@a.test", "nonsense")
    eq(rc, 2, "mod bridge alice nonsense exit code (%s%s)" % (o, e))
    rc, o, e = srv.ctl("mod", "bridge", "alice@a.test", "unlink")
    eq((rc, o), (0, "alice@a.test\tunlinked\n"), "mod bridge alice unlink (stderr %r)" % e)
    rc, o, e = srv.ctl("mod", "bridge", "alice@a.test")
    eq(rc, 1, "mod bridge alice after unlink exit code (%s)" % o)
    check("no bridge link" in e, "the reason", e)
    r = await clients["alice@a.test"].iq(bridge_iq("get", "a.test"))
    eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], [], "alice's link after the unlink")


@case("user_removed: unregistering an account deletes its link (a new account of that name has none)")
async def removed():
    jid = "carol@a.test"
    c = clients.pop(jid)
    r = await c.iq(bridge_iq("set", "a.test", "<link jid='carol@irc.example.net'/>"))
    eq(r.get("type"), "result", "carol links")
    await c.close()
    srv.ctl_ok("unregister", jid)
    srv.register(jid, USERS[jid])
    c = clients[jid] = await login(jid)
    r = await c.iq(bridge_iq("get", "a.test"))
    eq(r.get("type"), "result", "get after re-registering (%s)" % tostr(r))
    eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], [], "the new carol's link")


@case("a user_send_packet hook stops a message to bridge.blocked with not-acceptable; the trace shows "
      "'hook user_send_packet: module bridge stopped it'; other messages pass")
async def hook_trace():
    a, b = clients["alice@a.test"], clients["bob@a.test"]
    a.drain()
    b.drain()
    srv.ctl_ok("trace", "on", "alice@a.test")
    try:
        since = srv.log_size("sm-0")
        send(a, BLOCKED + "/home", "to the blocked address", "blk1")
        m = await a.message(pred=lambda m: m["id"] == "blk1")
        eq(m["type"], "error", "the answer to the blocked message")
        eq(error_condition(m.xml)[1], "not-acceptable", "its condition")
        line = await srv.await_log(
            "sm-0", r"trace id=(\S+) step=\d daemon=sm .*from=alice@a\.test/mod to=%s/home "
                    r"action=hook user_send_packet: module bridge stopped it: error not-acceptable"
                    % re.escape(BLOCKED), since=since)
        check(line, "the hook's trace line in sm-0.log", srv.log("sm-0")[since:][-3000:])
        send(a, b.full, "to bob", "ok1")
        m = await b.message(pred=lambda m: m["id"] == "ok1")
        eq(m["body"], "to bob", "a message to someone else is delivered")
        stops = [l.split("\t") for l in srv.ctl_ok("stats").splitlines() if "\thook_stops\t" in l]
        check(stops and int(stops[0][2]) >= 1, "xmppctl stats counts the hook's stop", stops)
    finally:
        srv.ctl_ok("trace", "off", "alice@a.test")


@case("a module built for another ABI is refused: `xmppctl start` fails and the sm log names both numbers")
def bad_abi():
    check("abi" in built, "the installed header from the first case")
    d = os.path.join(TMP, "badabi")
    os.makedirs(d)
    src = os.path.join(d, "badabi.c")
    with open(src, "w") as f:
        f.write("#include <xmppd/module.h>\n"
                "static int init(xm_host *h, const struct xm_api *api) { (void)h; (void)api; return 0; }\n"
                "const struct xm_module xmppd_module = { 99, \"badabi\", \"built for ABI 99\", init, 0 };\n")
    inc = os.path.dirname(os.path.dirname(find_file(DESTDIR, "/xmppd/module.h")))
    sh(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I" + inc, "-o", os.path.join(d, "badabi.so"), src],
       "cc badabi.c")
    bad = Server(modules="disco ping badabi", module_dir=d)
    rc, o, e = bad.ctl("start", timeout=60)
    bad.started = True
    sm_log = bad.log("sm-0")
    bad.stop()
    check(rc != 0, "xmppctl start succeeded with badabi.so", o, e)
    check(re.search(r"badabi\.so was built for module ABI 99\b.*has ABI %d\b" % built["abi"], sm_log),
          "sm-0.log names ABI 99 and ABI %d" % built["abi"], sm_log[-2000:], o, e)


@case("an unknown option (ping.foo = 1) fails the start with file:line in the message")
def unknown_option():
    bad = Server(modules="disco ping", **{"ping.foo": "1"})
    with open(bad.conf_path) as f:
        line = [n for n, l in enumerate(f.read().splitlines(), 1) if l.startswith("ping.foo")][0]
    text = start_fails(bad, "ping.foo = 1")
    want = "%s:%d: module ping has no option 'foo'" % (bad.conf_path, line)
    check(want in text, "the message %r" % want, text[-2000:])


def store_commits(s):
    """sm-0's commits per store file, from `xmppctl stats`."""
    out = {}
    for line in s.ctl_ok("stats").splitlines():
        f = line.split("\t")
        if len(f) >= 3 and f[0] == "sm-0" and f[1].startswith("store_commits_"):
            out[f[1][len("store_commits_"):]] = int(f[2])
    return out


@case("unregistering removes every module's data of the user: one user_removed walk, one commit per store "
      "(vcard, private, privacy/blocking, bridge), and a new account of that name starts empty", timeout=60)
async def removal_everywhere():
    check(os.path.exists(os.path.join(MODDIR, "bridge.so")), "bridge.so from the earlier cases")
    full = Server(modules="disco vcard private privacy blocking bridge", module_dir=MODDIR)
    full.start()
    try:
        jid, pw = "zed@localhost", "pw-zed-mod"
        full.register(jid, pw)

        async def zed():
            c = Client(full, jid + "/mod", pw)
            await c.login()
            return c

        def ok(r, what):
            eq(r.get("type"), "result", "%s (%s)" % (what, tostr(r)))

        c = await zed()
        ok(await c.iq("<iq type='set'><vCard xmlns='vcard-temp'><FN>Zed</FN></vCard></iq>"), "vcard set")
        ok(await c.iq("<iq type='set'><query xmlns='jabber:iq:private'><z xmlns='urn:test:z'>1</z></query></iq>"),
           "private set")
        ok(await c.iq("<iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.net'/></block></iq>"),
           "block")
        ok(await c.iq(bridge_iq("set", "localhost", "<link jid='zed@irc.example.net'/>")), "bridge link")
        await c.close()
        time.sleep(0.5)  # zed's last presence written: nothing else moves now
        before = store_commits(full)
        for f in ("accounts", "vcard", "private", "privacy", "bridge"):
            check(f in before, "store_commits_%s in xmppctl stats" % f, before)
        full.ctl_ok("unregister", jid)
        time.sleep(0.3)
        after = store_commits(full)
        for f in ("accounts", "vcard", "private", "privacy", "bridge"):
            eq(after[f] - before[f], 1, "commits of %s.tdb for the removal" % f)
        full.register(jid, pw)
        c = await zed()
        r = await c.iq("<iq type='get'><vCard xmlns='vcard-temp'/></iq>")
        eq([e.tag for e in r.iter("{vcard-temp}FN")], [], "the new zed's vCard (%s)" % tostr(r))
        r = await c.iq("<iq type='get'><query xmlns='jabber:iq:private'><z xmlns='urn:test:z'/></query></iq>")
        eq([e.text for e in r.iter("{urn:test:z}z")], [None], "the new zed's private data (%s)" % tostr(r))
        r = await c.iq("<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        eq(list(r.iter("{urn:xmpp:blocking}item")), [], "the new zed's blocklist (%s)" % tostr(r))
        r = await c.iq(bridge_iq("get", "localhost"))
        eq([x.get("jid") for x in r.iter("{%s}link" % NS_BRIDGE)], [], "the new zed's link")
        await c.close()
    finally:
        full.stop()


@case("the server stops; its logs have no module errors")
async def stop():
    for c in clients.values():
        await c.close()
    log = srv.log("sm-0") + srv.log("c2s-1")
    bad = [l for l in log.splitlines() if l.startswith("<3>") and "module" in l]
    eq(bad, [], "module errors in the logs")
    srv.stop()
    shutil.rmtree(TMP, ignore_errors=True)


run(file_timeout=170)
