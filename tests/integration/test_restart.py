#!/usr/bin/python3
"""Daemons that die (DESIGN §3 liveness): a killed sm is restarted and the
c2s instances re-announce their sessions, so users carry on without
reconnecting; a killed c2s ends its sessions and contacts who got directed
presence are told (RFC 6121 §4.6.3)."""
import asyncio
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import Client, Server, case, check, diag, eq, loop, run  # noqa: E402

srv = Server(c2s_instances=2, heartbeat_ms=200, peer_timeout_ms=1000)
PW = {u: "pw-%s-restart" % u for u in ("alice", "bob", "carol")}


@case("server with two c2s instances starts; users registered")
def _():
    srv.start()
    p = srv.pids()
    eq(sorted(p), ["c2s-1", "c2s-2", "listen-1", "router-1", "sm-0"], "instances")
    for u, pw in PW.items():
        srv.register("%s@localhost" % u, pw)


async def in_thread(fn, *args):
    return await loop().run_in_executor(None, fn, *args)


async def until_delivered(src, dst, tag, timeout=10.0):
    """Send src -> dst every 0.5 s until one arrives; seconds it took."""
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < timeout:
        n += 1
        body = "%s %d" % (tag, n)
        src.send(dst.full, body)
        try:
            await dst.message(0.5, lambda m: m["body"].startswith(tag + " ") and m["type"] != "error")
            return time.monotonic() - t0
        except TimeoutError:
            pass
    raise AssertionError("%s -> %s: nothing delivered within %.0f s (%s)" % (src.full, dst.full, timeout, tag))


@case("right after `xmppctl start` messages and presence flow at once (not held for seconds)")
async def _():
    t_start = time.monotonic()
    a = await Client(srv, "alice@localhost/early", PW["alice"]).login()
    b = await Client(srv, "bob@localhost/early", PW["bob"]).login()
    t0 = time.monotonic()
    a.send(b.full, "first words")
    try:
        await b.message(8, lambda m: m["body"] == "first words")
    finally:
        dt = time.monotonic() - t0
        diag("delivered after %.2f s (%.2f s after the logins began)" % (dt, time.monotonic() - t_start))
    check(dt < 1.5, "the first message took %.2f s to arrive" % dt)
    for x in (a, b):
        await x.close()


@case("a message sent right after `xmppctl start` by a client that logs out at once is delivered, not dropped")
async def _():
    fresh = Server()
    try:
        fresh.start()
        fresh.register("alice@localhost", PW["alice"])
        fresh.register("bob@localhost", PW["bob"])
        b = await Client(fresh, "bob@localhost/waiting", PW["bob"]).login()
        a = await Client(fresh, "alice@localhost/hasty", PW["alice"]).login()
        a.send(b.full, "sent and gone")
        await a.close()
        m = await b.message(8, lambda m: m["body"] == "sent and gone")
        eq(str(m["from"]), "alice@localhost/hasty", "from")
        await b.close()
    finally:
        fresh.stop()


@case("kill -9 xmpp-sm while two users chat; after `xmppctl start` they chat on without reconnecting", timeout=60)
async def _():
    a = await Client(srv, "alice@localhost/sm", PW["alice"], priority=3).login()
    b = await Client(srv, "bob@localhost/sm", PW["bob"], priority=3).login()
    await until_delivered(a, b, "warmup", 10)
    stop = asyncio.Event()
    sent = [0]

    async def chatter():
        while not stop.is_set():
            sent[0] += 1
            a.send(b.full, "chatter a %d" % sent[0])
            b.send(a.full, "chatter b %d" % sent[0])
            await asyncio.sleep(0.02)

    task = asyncio.ensure_future(chatter())
    await asyncio.sleep(0.3)
    old = srv.kill("sm-0", signal.SIGKILL)
    await asyncio.sleep(0.3)
    p = await in_thread(srv.restart, "sm-0")
    check(p["sm-0"] != old, "sm-0 has the same pid after restart")
    t_restart = time.monotonic()
    try:
        dt_ab = await until_delivered(a, b, "after sm restart a->b", 10)
        dt_ba = await until_delivered(b, a, "after sm restart b->a", 10)
    finally:
        stop.set()
        await task
    diag("after the restart: a->b after %.2f s, b->a %.2f s later (%d chatter messages each way sent)"
         % (dt_ab, dt_ba, sent[0]))
    check(time.monotonic() - t_restart < 15, "too slow")
    check(not a.disconnected.is_set() and not b.disconnected.is_set(), "a client was disconnected",
          a.stream_errors, b.stream_errors)
    eq((a.stream_errors, b.stream_errors), ([], []), "stream errors")
    jids = [r[0] for r in srv.sessions()]
    for c in (a, b):
        check(c.full in jids, "%s is not in xmppctl sessions after the sm restart" % c.full, jids)
    # the re-announced presence counts: a bare-JID message reaches bob
    c = await Client(srv, "carol@localhost/new", PW["carol"]).login()
    c.send("bob@localhost", "to bob's bare JID after the restart")
    m = await b.message(5, lambda m: m["body"] == "to bob's bare JID after the restart")
    eq(m["type"], "chat", "type (an error means bob's presence was not re-announced)")
    # accounts survive: new connections log in
    a2 = await Client(srv, "alice@localhost/second", PW["alice"]).login()
    a2.send(c.full, "hello carol")
    m = await c.message(5)
    eq(m["body"], "hello carol", "body")
    for x in (a, b, c, a2):
        await x.close()


def c2s_of(jid):
    for r in srv.sessions():
        if r[0] == jid:
            return r[1]
    return None


async def login_on(jid, pw, avoid=None, want=None, tries=20):
    """Log in until the session is on another c2s instance than avoid (or on want)."""
    for _ in range(tries):
        c = await Client(srv, jid, pw).login()
        inst = await in_thread(c2s_of, c.full)
        if inst and (avoid is None or inst != avoid) and (want is None or inst == want):
            return c, inst
        await c.close()
    raise AssertionError("%s never landed on %s in %d logins" % (jid, want or "another instance than " + avoid, tries))


@case("kill -9 the c2s of a user: a contact with its directed presence gets unavailable from its full JID", timeout=60)
async def _():
    a, inst_a = await login_on("alice@localhost/doomed", PW["alice"])
    b, inst_b = await login_on("bob@localhost/survivor", PW["bob"], avoid=inst_a)
    diag("alice on %s, bob on %s" % (inst_a, inst_b))
    a.x.send_presence(pto=b.full)
    p = await b.presence_(5, lambda p: str(p["from"]) == a.full)
    eq(p["type"], "available", "directed presence type")
    b.drain()
    t0 = time.monotonic()
    await in_thread(srv.kill, inst_a, signal.SIGKILL)
    p = await b.presence_(8, lambda p: str(p["from"]) == a.full and p["type"] == "unavailable")
    diag("unavailable presence %.2f s after the kill" % (time.monotonic() - t0))
    check(await a.wait_disconnected(8), "alice's connection was not closed after her c2s died")
    jids = [r[0] for r in await in_thread(srv.sessions)]
    check(a.full not in jids, "alice's dead session is still listed", jids)
    check(b.full in jids, "bob's session is gone", jids)
    # bob carries on
    await b.ping_server()
    c, _ = await login_on("carol@localhost/c", PW["carol"], want=inst_b)
    c.send(b.full, "still there?")
    m = await b.message(5, lambda m: m["body"] == "still there?")
    eq(m["type"], "chat", "type")
    # a message to alice's dead full JID bounces instead of vanishing (type
    # normal: a chat would be stored offline, RFC 6121 8.5.3.2.1 / XEP-0160)
    c.send(a.full, "to the dead", mtype="normal")
    m = await c.message(5, lambda m: m["type"] == "error")
    eq(str(m["from"]), a.full, "from of the bounce")
    for x in (b, c):
        await x.close()


@case("the killed c2s restarts with `xmppctl start` and serves logins again", timeout=60)
async def _():
    before = srv.pids()
    dead = [i for i in ("c2s-1", "c2s-2") if i not in before]
    eq(len(dead), 1, "instances down before the restart (%s)" % sorted(before))
    await in_thread(srv.restart, dead[0])
    b, _ = await login_on("bob@localhost/r", PW["bob"], want=dead[0])
    a, _ = await login_on("alice@localhost/r", PW["alice"], avoid=dead[0])
    a.send(b.full, "across instances")
    m = await b.message(5)
    eq(m["body"], "across instances", "body")
    b.send(a.full, "and back")
    m = await a.message(5)
    eq(m["body"], "and back", "body")
    for x in (a, b):
        await x.close()


@case("kill -9 the router; after `xmppctl start` the users chat on without reconnecting", timeout=60)
async def _():
    a, inst_a = await login_on("alice@localhost/rt", PW["alice"])
    b, _ = await login_on("bob@localhost/rt", PW["bob"], avoid=inst_a)
    await until_delivered(a, b, "before", 10)
    old = await in_thread(srv.kill, "router-1", signal.SIGKILL)
    await asyncio.sleep(0.3)
    p = await in_thread(srv.restart, "router-1")
    check(p["router-1"] != old, "router-1 has the same pid after restart")
    dt = await until_delivered(a, b, "after router restart a->b", 10)
    dt2 = await until_delivered(b, a, "after router restart b->a", 10)
    diag("delivered again %.2f s / %.2f s after the router restart" % (dt, dt2))
    check(not a.disconnected.is_set() and not b.disconnected.is_set(), "a client was disconnected")
    c = await Client(srv, "carol@localhost/rt", PW["carol"]).login()
    c.send(a.full, "new login after router restart")
    m = await a.message(5, lambda m: m["body"] == "new login after router restart")
    eq(str(m["from"]), c.full, "from")
    for x in (a, b, c):
        await x.close()


if __name__ == "__main__":
    run()
