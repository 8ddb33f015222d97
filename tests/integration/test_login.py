#!/usr/bin/python3
"""Logging in: SASL mechanisms over STARTTLS and direct TLS (XEP-0368),
failures, and what is offered before TLS (RFC 6120 §5, §6)."""
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (NS_SASL, NS_STREAMS, NS_TLS, Client, LoginFailed, Raw, Server,  # noqa: E402
                       case, check, diag, eq, mechanisms, run, tostr)

srv = Server()
plain_srv = Server(allow_plaintext_auth=True)
USERS = {"alice": "alice-Secret-1", "bob": "b0b's pässword"}
ALLOWED = {"SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"}
NEVER = re.compile(r"-PLUS$|^DIGEST-MD5$|^CRAM-MD5$|^ANONYMOUS$|^EXTERNAL$|^OTP$|^GSSAPI$|^NTLM$|^LOGIN$")


def success_line(user, mech, since):
    return srv.wait_log("c2s-1", r"auth-success addr=127\.0\.0\.1\S* user=%s@localhost mech=%s\b"
                        % (re.escape(user), re.escape(mech)), 3, since)


@case("servers start; two users registered with xmppctl")
def _():
    srv.start()
    plain_srv.start()
    for u, p in USERS.items():
        srv.register("%s@localhost" % u, p)
        plain_srv.register("%s@localhost" % u, p)


@case("STARTTLS + SCRAM-SHA-256: both users log in and chat")
async def _():
    since = srv.log_size("c2s-1")
    a = await Client(srv, "alice@localhost/laptop", USERS["alice"], mech="SCRAM-SHA-256").login()
    b = await Client(srv, "bob@localhost/phone", USERS["bob"], mech="SCRAM-SHA-256").login()
    eq(a.mechanism, "SCRAM-SHA-256", "alice's mechanism")
    eq(b.mechanism, "SCRAM-SHA-256", "bob's mechanism")
    eq(a.full, "alice@localhost/laptop", "alice's bound JID")
    check(success_line("alice", "SCRAM-SHA-256", since), "no auth-success ... mech=SCRAM-SHA-256 for alice in c2s-1.log")
    check(success_line("bob", "SCRAM-SHA-256", since), "no auth-success ... mech=SCRAM-SHA-256 for bob in c2s-1.log")
    a.send(b.full, "hello over starttls")
    m = await b.message()
    eq(m["body"], "hello over starttls", "body")
    eq(str(m["from"]), a.full, "from")
    await a.close()
    await b.close()


@case("direct TLS (XEP-0368) + SCRAM-SHA-1: both users log in and chat")
async def _():
    since = srv.log_size("c2s-1")
    a = await Client(srv, "alice@localhost/dtls", USERS["alice"], tls="direct", mech="SCRAM-SHA-1").login()
    b = await Client(srv, "bob@localhost/dtls", USERS["bob"], tls="direct", mech="SCRAM-SHA-1").login()
    eq(a.mechanism, "SCRAM-SHA-1", "alice's mechanism")
    check(success_line("alice", "SCRAM-SHA-1", since), "no auth-success ... mech=SCRAM-SHA-1 for alice in c2s-1.log")
    check(success_line("bob", "SCRAM-SHA-1", since), "no auth-success ... mech=SCRAM-SHA-1 for bob in c2s-1.log")
    b.send(a.full, "hello over direct tls")
    m = await a.message()
    eq(m["body"], "hello over direct tls", "body")
    await a.close()
    await b.close()


@case("PLAIN works over TLS (STARTTLS and direct TLS)")
async def _():
    since = srv.log_size("c2s-1")
    a = await Client(srv, "alice@localhost/plain", USERS["alice"], mech="PLAIN").login()
    eq(a.mechanism, "PLAIN", "mechanism")
    check(success_line("alice", "PLAIN", since), "no auth-success ... mech=PLAIN in c2s-1.log")
    b = await Client(srv, "bob@localhost/plain", USERS["bob"], tls="direct", mech="PLAIN").login()
    eq(b.mechanism, "PLAIN", "mechanism")
    await a.close()
    await b.close()


async def failed_login(user, password, mech):
    c = Client(srv, "%s@localhost/x" % user, password, mech=mech)
    try:
        await c.login()
    except LoginFailed as e:
        return e.condition, c
    raise AssertionError("%s logged in with a wrong password using %s" % (user, mech))


def raw_plain_failure(user, password):
    r = Raw(srv.port)
    try:
        r.open()
        r.starttls()
        r.open()
        st, cond = r.auth_plain(user, password)
        check(st == "failure", "PLAIN with a bad password: %s" % st)
        return cond
    finally:
        r.close()


@case("a wrong password fails with not-authorized (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) and is logged with the address")
async def _():
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        since = srv.log_size("c2s-1")
        cond, c = await failed_login("alice", "not-the-password", mech)
        eq(cond, "not-authorized", "SASL failure condition with %s" % mech)
        m = srv.wait_log("c2s-1", r"auth-failure addr=(\S+) user=alice@localhost mech=%s reason=not-authorized"
                         % mech, 3, since)
        check(m, "no 'auth-failure addr=... user=alice@localhost mech=%s reason=not-authorized' in c2s-1.log" % mech,
              srv.log("c2s-1")[since:][-1500:])
        check(m.group(1).startswith("127.0.0.1"), "logged address is %r, not the client's 127.0.0.1" % m.group(1))
    eq(raw_plain_failure("alice", "wrong"), "not-authorized", "raw PLAIN failure condition")


@case("an unknown user fails exactly like a wrong password (not-authorized, logged)")
async def _():
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        since = srv.log_size("c2s-1")
        cond, c = await failed_login("nosuchuser", "whatever", mech)
        eq(cond, "not-authorized", "SASL failure condition for an unknown user with %s" % mech)
        check(srv.wait_log("c2s-1", r"auth-failure addr=127\.0\.0\.1\S* user=nosuchuser@localhost mech=%s "
                           r"reason=not-authorized" % mech, 3, since),
              "no auth-failure line for nosuchuser with %s" % mech, srv.log("c2s-1")[since:][-1500:])
    eq(raw_plain_failure("nosuchuser", "whatever"), "not-authorized", "raw PLAIN failure condition")


@case("before TLS only <starttls><required/></starttls> is offered; <auth/> before TLS is refused")
def _():
    r = Raw(srv.port)
    try:
        f = r.open()
        kids = [c.tag for c in f]
        eq(kids, ["{%s}starttls" % NS_TLS], "features before TLS")
        check(f.find("{%s}starttls/{%s}required" % (NS_TLS, NS_TLS)) is not None,
              "<starttls/> is not <required/>", tostr(f))
        check(f.find("{%s}mechanisms" % NS_SASL) is None, "mechanisms offered before TLS", tostr(f))
        # a client that tries anyway must not get in
        since = srv.log_size("c2s-1")
        import base64
        blob = base64.b64encode(b"\0alice\0" + USERS["alice"].encode()).decode()
        r.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, blob))
        try:
            el = r.next(3)
        except TimeoutError:
            el = None
        check(el is None or el.tag != "{%s}success" % NS_SASL, "PLAIN succeeded before TLS", tostr(el))
        check(not srv.wait_log("c2s-1", r"auth-success", 0.3, since), "auth-success logged for a login before TLS")
    finally:
        r.close()


def check_mechs(features, where):
    ms = mechanisms(features)
    bad = [m for m in ms if NEVER.search(m) or m not in ALLOWED]
    check(not bad, "%s: offers %s" % (where, bad), tostr(features))
    for want in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        check(want in ms, "%s: %s is not offered" % (where, want), tostr(features))
    return ms


@case("after TLS exactly SCRAM-SHA-256, SCRAM-SHA-1, PLAIN are offered (no -PLUS, DIGEST-MD5, CRAM-MD5, ANONYMOUS)")
def _():
    r = Raw(srv.port)
    r.open()
    r.starttls()
    diag("STARTTLS:", check_mechs(r.open(), "after STARTTLS"))
    r.close()
    r = Raw(srv.tls_port, tls=True)
    diag("direct TLS:", check_mechs(r.open(), "direct TLS"))
    r.close()


@case("allow_plaintext_auth = yes: mechanisms without TLS (same safe list), and a login works")
async def _():
    r = Raw(plain_srv.port)
    f = r.open()
    r.close()
    check(f.find("{%s}starttls" % NS_TLS) is not None, "STARTTLS no longer offered", tostr(f))
    check(f.find("{%s}starttls/{%s}required" % (NS_TLS, NS_TLS)) is None,
          "STARTTLS still required with allow_plaintext_auth", tostr(f))
    diag("plaintext:", check_mechs(f, "plaintext stream"))
    since = plain_srv.log_size("c2s-1")
    a = await Client(plain_srv, "alice@localhost/clear", USERS["alice"], tls="none", mech="SCRAM-SHA-256").login()
    b = await Client(plain_srv, "bob@localhost/clear", USERS["bob"], tls="none", mech="PLAIN").login()
    check(plain_srv.wait_log("c2s-1", r"auth-success addr=127\.0\.0\.1\S* user=bob@localhost mech=PLAIN", 3, since),
          "no auth-success for the plaintext PLAIN login")
    check(a.x.transport.get_extra_info("sslcontext") is None, "the stream is TLS after all")
    a.send(b.full, "in the clear")
    m = await b.message()
    eq(m["body"], "in the clear", "body")
    await a.close()
    await b.close()


@case("the STARTTLS feature is advertised by the server name and a second <starttls/> after TLS is refused")
def _():
    r = Raw(srv.port)
    try:
        r.open()
        check(r.stream_attrs.get("from") == "localhost", "stream from=%r" % r.stream_attrs.get("from"))
        check(r.stream_attrs.get("version") == "1.0", "stream version=%r" % r.stream_attrs.get("version"))
        r.starttls()
        f = r.open()
        check(f.find("{%s}starttls" % NS_TLS) is None, "STARTTLS offered again after TLS", tostr(f))
        r.send("<starttls xmlns='%s'/>" % NS_TLS)
        els = r.until_closed(3)
        check(not any(e.tag == "{%s}proceed" % NS_TLS for e in els), "a second <proceed/>", r.text[-500:])
        check(any(e.tag in ("{%s}error" % NS_STREAMS, "{%s}failure" % NS_TLS) for e in els),
              "no stream error / failure for a second STARTTLS", r.text[-500:])
    finally:
        r.close()


if __name__ == "__main__":
    run()
