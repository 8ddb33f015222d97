#!/usr/bin/python3
"""XEP-0077 in-band registration (module "register", served by xmpp-c2s):
registration before authentication on a TLS stream, then login with the
new account (slixmpp's xep_0077 plugin); password change; account removal
(the result, then a not-authorized stream error, every other session
ended, the account's data gone); the errors of the XEP (conflict,
not-acceptable, jid-malformed, unexpected-request); the per-address limit;
and refusals: without TLS, and on a host without the module."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (NS_CLIENT, NS_STANZA_ERR, Client, LoginFailed, Raw, Server,  # noqa: E402
                       case, check, eq, error_condition, loop, run, tostr)

NS_REG = "jabber:iq:register"
NS_REG_FEATURE = "http://jabber.org/features/iq-register"
NS_PRIVATE = "jabber:iq:private"

on = Server(modules="disco ping private register", sm_shards=2, **{"register.per_ip_per_hour": 0})
limited = Server(modules="register", allow_plaintext_auth=True, **{"register.per_ip_per_hour": 2})
off = Server()


def reg_client(srv, jid, password, **kw):
    """A slixmpp client that registers its account through the stream
    feature before it logs in (XEP-0077 §3.1, then SASL on the same
    stream). c.reg is a future: None when registered, else the error."""
    from slixmpp.exceptions import IqError
    c = Client(srv, jid, password, **kw)
    c.x.register_plugin("xep_0077")
    c.reg = loop().create_future()
    # slixmpp 1.8.3 holds back every IQ but bind and session until the
    # session starts, its own xep_0077 registration IQs included (later
    # versions let those through): let them out until registration is done
    c.x._always_send_everything = True

    async def on_register(form):
        if not c.reg.done():
            # the fields asked for, before answering them
            q = form.xml.find("{%s}query" % NS_REG)
            c.reg_form = [e.tag.split("}")[1] for e in q] if q is not None else []
        iq = c.x.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = jid.split("@")[0]
        iq["register"]["password"] = password
        try:
            await iq.send(timeout=5)
            if not c.reg.done():
                c.reg.set_result(None)
        except IqError as e:
            if not c.reg.done():
                c.reg.set_result(e.iq["error"]["condition"])
        c.x._always_send_everything = False
    c.x.add_event_handler("register", on_register)
    return c


def features_after_tls(srv):
    r = Raw(srv.port)
    f = r.open()
    check(f.find("{%s}register" % NS_REG_FEATURE) is None, "register offered before TLS", tostr(f))
    r.starttls()
    return r, r.open()


def reg_iq(r, ident, body, typ="set"):
    r.send("<iq type='%s' id='%s'><query xmlns='%s'>%s</query></iq>" % (typ, ident, NS_REG, body))
    el = r.expect("{%s}iq" % NS_CLIENT)
    eq(el.get("id"), ident, "answer id")
    return el


def err_of(el):
    """(condition, type, legacy code) of an IQ error."""
    e = el.find("{%s}error" % NS_CLIENT)
    check(e is not None, "not an error", tostr(el))
    cond = [c.tag.split("}")[1] for c in e if c.tag.startswith("{%s}" % NS_STANZA_ERR)
            and not c.tag.endswith("}text")]
    return (cond[0] if cond else None), e.get("type"), e.get("code")


async def login_fails(srv, jid, password):
    c = Client(srv, jid, password)
    try:
        await c.login()
    except LoginFailed as e:
        return e.condition
    await c.close()
    raise AssertionError("%s logged in with %r" % (jid, password))


@case("servers start")
def _start():
    on.start()
    limited.start()
    off.start()


@case("the stream feature is offered after TLS, not before; the disco feature too")
async def _feature():
    r, f = features_after_tls(on)
    check(f.find("{%s}register" % NS_REG_FEATURE) is not None, "no register feature after TLS", tostr(f))
    r.close()
    on.register("watcher@localhost", "pw")
    c = await Client(on, "watcher@localhost", "pw").login()
    res = await c.iq("<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    feats = [e.get("var") for e in res.iter("{http://jabber.org/protocol/disco#info}feature")]
    check(NS_REG in feats, "jabber:iq:register not in disco#info", feats)
    await c.close()


@case("slixmpp registers an account through the stream feature and logs in with it")
async def _register():
    c = reg_client(on, "alice@localhost", "s3cret")
    await c.login()
    eq(await c.reg, None, "registration")
    check("username" in c.reg_form and "password" in c.reg_form, "form asks for username and password",
          c.reg_form)
    await c.close()
    # a plain client, a new connection: the account is real
    c2 = await Client(on, "alice@localhost", "s3cret", mech="SCRAM-SHA-1").login()
    await c2.close()
    check(on.wait_log("c2s-1", r"register-success addr=127\.0\.0\.1:\d+ user=alice@localhost"),
          "no register-success log line")
    rc, o, e = on.ctl("users")
    check("alice@localhost" in o, "alice not in xmppctl users", o, e)


@case("XEP-0077 errors: conflict, not-acceptable, jid-malformed, unexpected-request; one account per stream")
def _errors():
    r, _ = features_after_tls(on)
    form = reg_iq(r, "g1", "", typ="get")
    eq(form.get("type"), "result", "form")
    q = form.find("{%s}query" % NS_REG)
    check(q.find("{%s}username" % NS_REG) is not None and q.find("{%s}password" % NS_REG) is not None,
          "fields", tostr(form))
    check(q.find("{%s}registered" % NS_REG) is None, "registered before authentication", tostr(form))
    el = reg_iq(r, "c1", "<username>alice</username><password>other</password>")
    eq(err_of(el), ("conflict", "cancel", "409"), "existing username")
    check("other" not in tostr(el), "the password is echoed back", tostr(el))
    el = reg_iq(r, "c1b", "<username>ALICE</username><password>other</password>")
    eq(err_of(el)[0], "conflict", "nodeprep folds case")
    eq(err_of(reg_iq(r, "n1", "<username>carol</username>"))[0], "not-acceptable", "no password")
    eq(err_of(reg_iq(r, "n2", "<username>carol</username><password/>"))[0], "not-acceptable", "empty password")
    eq(err_of(reg_iq(r, "n3", "<password>x</password>"))[0], "not-acceptable", "no username")
    eq(err_of(reg_iq(r, "m1", "<username>a@b</username><password>x</password>"))[0], "jid-malformed",
       "bad localpart")
    eq(err_of(reg_iq(r, "u1", "<remove/>"))[0], "unexpected-request", "remove before authentication")
    eq(reg_iq(r, "ok", "<username>carol</username><password>pw1</password>").get("type"), "result", "carol")
    eq(err_of(reg_iq(r, "two", "<username>dave</username><password>pw1</password>")),
       ("not-acceptable", "modify", "406"), "second account on one stream")
    # still a live pre-auth stream: SASL works on it, as carol
    st, cond = r.auth_plain("carol", "pw1")
    eq((st, cond), ("success", None), "PLAIN as carol on the registering stream")
    r.close()


@case("password change: the new password works, the old one does not")
async def _passwd():
    c = Client(on, "alice@localhost", "s3cret")
    c.x.register_plugin("xep_0077")
    await c.login()
    form = await c.iq("<iq type='get'><query xmlns='%s'/></iq>" % NS_REG)
    q = form.find("{%s}query" % NS_REG)
    check(q is not None and q.find("{%s}registered" % NS_REG) is not None, "<registered/>", tostr(form))
    eq(q.findtext("{%s}username" % NS_REG), "alice", "username on file")
    err = await c.iq("<iq type='set' to='localhost'><query xmlns='%s'><username>carol</username>"
                     "<password>x</password></query></iq>" % NS_REG)
    eq(error_condition(err)[1], "forbidden", "another user's password")
    err = await c.iq("<iq type='set'><query xmlns='%s'><username>alice</username><password/></query></iq>"
                     % NS_REG)
    eq(error_condition(err)[1], "not-acceptable", "empty password")
    await c.x["xep_0077"].change_password("n3w-pass", timeout=5)
    check(on.wait_log("c2s-1", r"passwd-success addr=\S+ user=alice@localhost"), "no passwd-success line")
    await c.close()
    await (await Client(on, "alice@localhost", "n3w-pass").login()).close()
    eq(await login_fails(on, "alice@localhost", "s3cret"), "not-authorized", "old password")


@case("removal: result, then not-authorized; other sessions end; login fails; data gone on re-registration")
async def _remove():
    on.register("bob@localhost", "bobpw")
    a = await Client(on, "bob@localhost", "bobpw").login()
    b = Client(on, "bob@localhost", "bobpw")
    b.x.register_plugin("xep_0077")
    await b.login()
    res = await b.iq("<iq type='set'><query xmlns='%s'><exodus xmlns='exodus:prefs'>"
                     "<defaultnick>Bob</defaultnick></exodus></query></iq>" % NS_PRIVATE)
    eq(res.get("type"), "result", "private storage set")
    err = await b.iq("<iq type='set'><query xmlns='%s'><remove/><username>bob</username></query></iq>" % NS_REG)
    eq(error_condition(err)[1], "bad-request", "remove with other children (§3.2)")
    await b.x["xep_0077"].cancel_registration(timeout=5)
    check(await b.wait_disconnected(5), "the removing stream stays open")
    check("not-authorized" in b.stream_errors, "no not-authorized stream error", b.stream_errors)
    check(await a.wait_disconnected(5), "the other session stays")
    check("not-authorized" in a.stream_errors, "other session: no not-authorized", a.stream_errors)
    eq(await login_fails(on, "bob@localhost", "bobpw"), "not-authorized", "login after removal")
    rc, o, e = on.ctl("users")
    check("bob@localhost" not in o, "bob still listed", o)
    # the same name again is a new account: nothing of the old one
    c = reg_client(on, "bob@localhost", "again")
    await c.login()
    eq(await c.reg, None, "re-registration")
    res = await c.iq("<iq type='get'><query xmlns='%s'><exodus xmlns='exodus:prefs'/></query></iq>" % NS_PRIVATE)
    check("Bob" not in tostr(res), "private data of the removed account", tostr(res))
    await c.close()


@case("per-address limit: two registrations an hour, a conflict does not count; then not-acceptable (wait)")
def _limit():
    limited.register("taken@localhost", "pw")
    got = []
    for user in ("r1", "taken", "r2", "r3"):
        r, _ = features_after_tls(limited)
        el = reg_iq(r, "x", "<username>%s</username><password>pw</password>" % user)
        got.append("ok" if el.get("type") == "result" else err_of(el)[:2])
        r.close()
    eq(got, ["ok", ("conflict", "cancel"), "ok", ("not-acceptable", "wait")], "outcomes")
    check(limited.wait_log("c2s-1", r"register-failure addr=\S+ user=r3@localhost reason=rate-limit"),
          "no rate-limit log line")
    rc, o, e = limited.ctl("stats")
    check("ibr_refused_rate\t1" in o, "stats", o)


@case("without TLS: refused (allow_plaintext_auth: policy-violation; else the stream closes)")
def _no_tls():
    r = Raw(limited.port)
    f = r.open()
    check(f.find("{%s}register" % NS_REG_FEATURE) is None, "register offered without TLS", tostr(f))
    el = reg_iq(r, "p", "<username>plain</username><password>pw</password>")
    eq(err_of(el)[0], "policy-violation", "registration in the clear")
    r.close()
    r = Raw(on.port)
    r.open()
    r.send("<iq type='set' id='p'><query xmlns='%s'><username>plain</username><password>pw</password>"
           "</query></iq>" % NS_REG)
    eq(r.stream_error(), "not-authorized", "before STARTTLS when TLS is required")
    rc, o, e = limited.ctl("users")
    check("plain@" not in o, "an account was made in the clear", o)


@case("module off: no stream feature, service-unavailable")
async def _off():
    r, f = features_after_tls(off)
    check(f.find("{%s}register" % NS_REG_FEATURE) is None, "register offered with the module off", tostr(f))
    el = reg_iq(r, "g", "", typ="get")
    eq(err_of(el)[0], "service-unavailable", "get")
    el = reg_iq(r, "s", "<username>eve</username><password>pw</password>")
    eq(err_of(el)[0], "service-unavailable", "set")
    r.close()
    # after login: sm answers, no module serves the namespace
    off.register("zed@localhost", "pw")
    c = await Client(off, "zed@localhost", "pw").login()
    res = await c.iq("<iq type='set'><query xmlns='%s'><username>zed</username><password>n</password>"
                     "</query></iq>" % NS_REG)
    eq(error_condition(res)[1], "service-unavailable", "password change with the module off")
    await c.close()
    await (await Client(off, "zed@localhost", "pw").login()).close()


if __name__ == "__main__":
    run()
