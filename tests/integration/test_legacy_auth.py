#!/usr/bin/python3
"""XEP-0078 non-SASL authentication (module legacy_auth) on pre-1.0
streams (no version in the stream header, RFC 6120 §4.7.5), served only on
the direct TLS port and only for the hosts that enable the module; the
password is checked against the account's SCRAM verifiers, the resource is
bound like an RFC 6120 bind, and the session then works like any other.
Elsewhere such a stream gets <unsupported-version/>."""
import asyncio
import os
import re
import sys
from xml.sax.saxutils import escape

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (NS_CLIENT, NS_STANZA_ERR, NS_STREAMS, Client, Raw, Server, case, check,  # noqa: E402
                       eq, loop, run, tostr)

NS_AUTH = "jabber:iq:auth"
IQ = "{%s}iq" % NS_CLIENT
# legacy_auth on for every host but off.localhost
srv = Server(domains=("localhost", "off.localhost"), modules="disco ping legacy_auth")
PW = {"alice": "alice & <secret>", "bob": "pw-bob-42"}


def conf_append(text):
    with open(srv.conf_path, "a") as f:
        f.write(text)


def legacy_open(to="localhost", port=None, tls=True):
    """A raw stream with a version-less header; returns (raw, header attrs)."""
    r = Raw(port or srv.tls_port, tls=tls)
    r.send(Raw.header(to=to, version=None))
    while r.stream_attrs is None:
        check(r.read_some(), "connection closed before the stream header", r.text[-600:])
    return r, r.stream_attrs


def auth_set(r, user=None, password=None, resource=None, ident="auth2", extra=""):
    fields = "".join("<%s>%s</%s>" % (n, escape(v), n)
                     for n, v in (("username", user), ("password", password), ("resource", resource))
                     if v is not None)
    r.send("<iq type='set' id='%s'><query xmlns='%s'>%s%s</query></iq>" % (ident, NS_AUTH, fields, extra))
    el = r.expect(IQ)
    eq(el.get("id"), ident, "id of the answer")
    return el


def auth_error(el):
    """(code, type, condition) of an error answer."""
    eq(el.get("type"), "error", "type of the answer to jabber:iq:auth set: " + tostr(el))
    e = el.find("{%s}error" % NS_CLIENT)
    check(e is not None, "no <error/>", tostr(el))
    conds = [c.tag.split("}")[1] for c in e if c.tag.startswith("{%s}" % NS_STANZA_ERR)]
    check(el.find("{%s}query" % NS_AUTH) is None, "the error echoes the query (and the password)", tostr(el))
    return e.get("code"), e.get("type"), conds[0] if conds else None


def legacy_login(user, resource, password=None):
    r, _ = legacy_open()
    el = auth_set(r, user, PW[user] if password is None else password, resource)
    eq(el.get("type"), "result", "login of %s/%s: %s" % (user, resource, tostr(el)))
    return r


def expect_skipping(r, tag):
    """The next element with this tag; presences (alice's own broadcast,
    bob's) and other elements before it are skipped."""
    while True:
        el = r.next()
        check(el is not None, "stream closed while waiting for %s" % tag, r.text[-600:])
        if el.tag == tag:
            return el


async def in_thread(fn, *args):
    """Run a blocking Raw call without stopping the shared event loop
    (slixmpp clients keep working meanwhile)."""
    return await loop().run_in_executor(None, fn, *args)


@case("server starts with legacy_auth on localhost only; users registered")
def _():
    conf_append("[host off.localhost]\nmodules_disabled = legacy_auth\n")
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)
    srv.register("carol@off.localhost", "pw-carol")
    check(srv.wait_log("c2s-1", r"XEP-0078 is deprecated: localhost accepts"),
          "no warning about XEP-0078 in the c2s log")
    check(not re.search(r"XEP-0078 is deprecated: off\.localhost", srv.log("c2s-1")),
          "legacy_auth initialised for off.localhost, where it is disabled")


@case("pre-1.0 stream on direct TLS: header without version, no features; get lists the fields, no digest")
def _():
    r, attrs = legacy_open()
    check("version" not in attrs, "the answer to a version-less header has a version", attrs)
    check(attrs.get("id"), "no stream id", attrs)
    eq(attrs.get("from"), "localhost", "from of the stream header")
    # no <stream:features> may come: the first element is the IQ answer
    r.send("<iq type='get' id='auth1' to='localhost'><query xmlns='%s'><username>nobody</username>"
           "</query></iq>" % NS_AUTH)
    el = r.next()
    check(el is not None and el.tag == IQ, "expected the IQ answer first", tostr(el), r.text[-600:])
    eq(el.get("type"), "result", "type of the answer to the get")
    eq(el.get("id"), "auth1", "id")
    q = el.find("{%s}query" % NS_AUTH)
    check(q is not None, "no query in the result", tostr(el))
    eq(sorted(c.tag.split("}")[1] for c in q), ["password", "resource", "username"], "fields offered")
    r.close()


@case("wrong password and unknown user: 401 not-authorized, logged like SASL failures")
def _():
    since = srv.log_size("c2s-1")
    r, _ = legacy_open()
    eq(auth_error(auth_set(r, "alice", "wrong", "res")), ("401", "auth", "not-authorized"), "wrong password")
    eq(auth_error(auth_set(r, "nobody", "whatever", "res", ident="a3")), ("401", "auth", "not-authorized"),
       "unknown user")
    check(srv.wait_log("c2s-1", r"auth-failure addr=127\.0\.0\.1:\d+ user=alice@localhost mech=IQ-AUTH "
                       r"reason=not-authorized", since=since), "no auth-failure line for alice")
    check(srv.wait_log("c2s-1", r"auth-failure addr=\S+ user=nobody@localhost mech=IQ-AUTH reason=not-authorized",
                       since=since), "no auth-failure line for nobody")
    # the stream stays usable: the third try may still succeed
    el = auth_set(r, "alice", PW["alice"], "third", ident="a4")
    eq(el.get("type"), "result", "login after two failures: " + tostr(el))
    r.close()


@case("missing username, password or resource, or a digest: 406 not-acceptable")
def _():
    r, _ = legacy_open()
    eq(auth_error(auth_set(r, "alice", PW["alice"], None)), ("406", "modify", "not-acceptable"), "no resource")
    eq(auth_error(auth_set(r, None, PW["alice"], "r")), ("406", "modify", "not-acceptable"), "no username")
    eq(auth_error(auth_set(r, "alice", None, "r", extra="<digest>48fc78be9ec8f86d8ce1c39c320c97c21d62334d</digest>")),
       ("406", "modify", "not-acceptable"), "digest instead of a password")
    # none of these counts as a failed login: three of them did not close the stream
    el = auth_set(r, "alice", PW["alice"], "after-406", ident="a5")
    eq(el.get("type"), "result", "login after 406s: " + tostr(el))
    r.close()


@case("three wrong passwords close the stream with policy-violation")
def _():
    r, _ = legacy_open()
    for i in range(2):
        eq(auth_error(auth_set(r, "bob", "nope", "x", ident="f%d" % i))[2], "not-authorized", "try %d" % i)
    r.send("<iq type='set' id='f2'><query xmlns='%s'><username>bob</username><password>nope</password>"
           "<resource>x</resource></query></iq>" % NS_AUTH)
    eq(r.stream_error(), "policy-violation", "stream error after the third failure")


@case("a stanza before authentication closes the stream with not-authorized")
def _():
    r, _ = legacy_open()
    r.send("<message to='bob@localhost'><body>sneaky</body></message>")
    eq(r.stream_error(), "not-authorized", "stream error")


@case("legacy session works: messages both ways with a slixmpp client, roster, pipelined presence", timeout=40)
async def _():
    bob = await Client(srv, "bob@localhost/slix", PW["bob"]).login()
    r, _ = legacy_open()
    # presence and a roster get pipelined right behind the auth IQ: held by
    # the server until the login is done, then processed, not discarded
    r.send("<iq type='set' id='login'><query xmlns='%s'><username>alice</username><password>%s</password>"
           "<resource>legacy</resource></query></iq><presence/><iq type='get' id='ros'>"
           "<query xmlns='jabber:iq:roster'/></iq>" % (NS_AUTH, escape(PW["alice"])))
    el = await in_thread(expect_skipping, r, IQ)
    eq((el.get("id"), el.get("type")), ("login", "result"), "login answer " + tostr(el))
    el = await in_thread(expect_skipping, r, IQ)
    eq((el.get("id"), el.get("type")), ("ros", "result"), "roster answer " + tostr(el))
    check(el.find("{jabber:iq:roster}query") is not None, "no roster query", tostr(el))
    check(re.search(r"<presence [^>]*from=.alice@localhost/legacy", r.text),
          "the pipelined presence was not broadcast (alice gets her own)", r.text[-600:])
    sessions = [row[0] for row in srv.sessions()]
    check("alice@localhost/legacy" in sessions, "alice's legacy session is not in xmppctl sessions", sessions)

    r.send("<message to='bob@localhost/slix' type='chat' id='m1'><body>hello from 1999</body></message>")
    m = await bob.message(5, pred=lambda m: m["body"] == "hello from 1999")
    eq(str(m["from"]), "alice@localhost/legacy", "from of alice's message (stamped by the server)")

    bob.send("alice@localhost/legacy", "hello from now")
    el = await in_thread(expect_skipping, r, "{%s}message" % NS_CLIENT)
    eq(el.findtext("{%s}body" % NS_CLIENT), "hello from now", "body received by alice")
    eq(el.get("from"), bob.full, "from of bob's message")
    # to the bare JID too (RFC 6121 §8.5.2.1.1: the only available resource)
    bob.send("alice@localhost", "to your bare JID")
    el = await in_thread(expect_skipping, r, "{%s}message" % NS_CLIENT)
    eq(el.findtext("{%s}body" % NS_CLIENT), "to your bare JID", "message to the bare JID")
    r.close()
    await bob.close()


@case("same resource again: the new legacy login replaces the old session (<conflict/>)", timeout=30)
def _():
    old = legacy_login("bob", "twice")
    new = legacy_login("bob", "twice")
    eq(old.stream_error(), "conflict", "stream error of the replaced session")
    new.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = new.expect(IQ)
    eq((el.get("id"), el.get("type")), ("p1", "result"), "ping on the new session " + tostr(el))
    new.close()


@case("pre-1.0 stream on the STARTTLS port: <unsupported-version/>, header without version")
def _():
    r, attrs = legacy_open(port=srv.port, tls=False)
    check("version" not in attrs, "version in the answer to a version-less header", attrs)
    eq(r.stream_error(), "unsupported-version", "stream error")
    # nor after STARTTLS: the restarted stream must be 1.0 too
    r = Raw(srv.port)
    r.open()
    r.starttls()
    r.send(Raw.header(version=None))
    eq(r.stream_error(), "unsupported-version", "stream error after STARTTLS")


@case("pre-1.0 stream to a host without legacy_auth: <unsupported-version/>")
def _():
    since = srv.log_size("c2s-1")
    r, _ = legacy_open(to="off.localhost")
    eq(r.stream_error(), "unsupported-version", "stream error")
    check(srv.wait_log("c2s-1", r"pre-1\.0 stream to off\.localhost refused: legacy_auth is not enabled",
                       since=since), "no log line saying why")


@case("1.0 streams are unchanged: SASL and bind on direct TLS; stats count XEP-0078 logins")
def _():
    r = Raw(srv.tls_port, tls=True)
    eq(r.login("alice", PW["alice"], resource="sasl"), "alice@localhost/sasl", "bound JID")
    r.close()
    rc, o, e = srv.ctl("stats")
    check(rc == 0, "xmppctl stats: exit %d" % rc, o, e)
    stats = {f[1]: f[2] for f in (l.split("\t") for l in o.splitlines()) if len(f) >= 3 and f[0] == "c2s-1"}
    check(int(stats.get("auth_ok_IQ-AUTH", "0")) >= 4, "auth_ok_IQ-AUTH", o)
    check(int(stats.get("auth_failed_IQ-AUTH", "0")) >= 5, "auth_failed_IQ-AUTH", o)


if __name__ == "__main__":
    run(file_timeout=150)
