#!/usr/bin/python3
"""xmppctl(8) round trips against a running server (DESIGN §6): accounts,
sessions, kick, log levels at run time, --json, exit codes 0 ok, 1 failed,
2 usage, 3 daemon unreachable; passwords only on standard input."""
import asyncio
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import Client, LoginFailed, Server, case, check, diag, eq, json_ok, loop, run  # noqa: E402

srv = Server(domains=("localhost", "example.test"))


def rc_of(*args, input=None):
    rc, o, e = srv.ctl(*args, input=input)
    return rc, o, e


def expect_rc(want, *args, input=None):
    rc, o, e = srv.ctl(*args, input=input)
    check(rc == want, "xmppctl %s: exit %d, want %d" % (" ".join(args), rc, want), "stdout: " + o, "stderr: " + e)
    return o, e


def users(domain=None):
    o, _ = expect_rc(0, "users", *([domain] if domain else []))
    return sorted(l for l in o.splitlines() if l)


async def can_login(jid, pw):
    c = Client(srv, jid, pw, presence=False)
    try:
        await c.login()
    except LoginFailed:
        return False
    await c.close()
    return True


@case("start, status: every daemon up with pid, version, epoch, uptime; --json status parses")
def _():
    srv.start()
    rc, rows = srv.status()
    eq(rc, 0, "status exit code")
    eq(sorted(r[0] for r in rows), ["c2s-1", "listen-1", "router-1", "sm-0"], "instances")
    for r in rows:
        check(len(r) >= 6 and r[2].isdigit() and os.path.exists("/proc/%s" % r[2]), "bad status row", r)
        check(r[1] in ("router", "sm", "c2s", "listen"), "role %r" % r[1])
    o, _ = expect_rc(0, "--json", "status")
    j = json_ok(o, "status --json")
    check(isinstance(j, list) and len(j) == 4, "status --json: 4 rows", j)
    o, _ = expect_rc(0, "--header", "status")
    diag("status header: " + o.splitlines()[0])
    o, _ = expect_rc(0, "peers")
    check("sm-0" in o and "c2s-1" in o, "peers lists sm-0 and c2s-1", o)


@case("register (password on stdin) -> 0, twice -> 1; users lists it (per domain too); --json users parses")
async def _():
    expect_rc(0, "register", "alice@localhost", input="alice-pw\n")
    expect_rc(0, "register", "bob@localhost", input="bob-pw\n")
    expect_rc(0, "register", "carol@example.test", input="carol-pw\n")
    o, e = expect_rc(1, "register", "alice@localhost", input="other\n")
    diag("register twice: " + e.strip())
    eq(users(), ["alice@localhost", "bob@localhost", "carol@example.test"], "users")
    eq(users("example.test"), ["carol@example.test"], "users example.test")
    o, _ = expect_rc(0, "--json", "users")
    j = json_ok(o, "users --json")
    eq(sorted(r.get("jid") for r in j), ["alice@localhost", "bob@localhost", "carol@example.test"], "users --json")
    check(await can_login("alice@localhost/t", "alice-pw"), "alice cannot log in")
    check(not await can_login("alice@localhost/t", "other"), "the second register changed the password")
    check(await can_login("carol@example.test/t", "carol-pw"), "carol cannot log in on the second domain")


@case("usage errors -> 2: bad JIDs, missing arguments, unknown commands, no password on stdin")
def _():
    for jid in ("not a jid", "@localhost", "alice@", "a@b@c", "alice@localhost/" + "x" * 1100, ""):
        rc, o, e = rc_of("register", jid, input="pw\n")
        eq(rc, 2, "register %r exit code (stderr %s)" % (jid[:40], e.strip()[:200]))
    expect_rc(2, "register")
    expect_rc(2, "unregister")
    expect_rc(2, "frobnicate")
    expect_rc(2)
    expect_rc(2, "register", "dave@localhost", input="")
    check("dave@localhost" not in users(), "dave registered without a password")


@case("passwords are never accepted on the command line")
def _():
    for args in (("register", "eve@localhost", "secret"), ("register", "--password", "secret", "eve@localhost"),
                 ("register", "-p", "secret", "eve@localhost"), ("passwd", "alice@localhost", "secret"),
                 ("register", "--password=secret", "eve@localhost")):
        rc, o, e = rc_of(*args, input="")
        check(rc == 2, "xmppctl %s: exit %d, want 2 (usage)" % (" ".join(args), rc), e)
    check("eve@localhost" not in users(), "eve got registered from argv")


@case("passwd -> 0: the new password works, the old one not; passwd of an unknown user -> 1")
async def _():
    expect_rc(0, "passwd", "bob@localhost", input="bob-new-pw\n")
    check(await can_login("bob@localhost/p", "bob-new-pw"), "the new password does not work")
    check(not await can_login("bob@localhost/p", "bob-pw"), "the old password still works")
    expect_rc(1, "passwd", "nobody@localhost", input="x\n")
    check("nobody@localhost" not in users(), "passwd created an account")


@case("unregister -> 0 (gone from users, login fails), unknown -> 1, and register again works fresh")
async def _():
    expect_rc(0, "register", "temp@localhost", input="temp-pw\n")
    check(await can_login("temp@localhost/x", "temp-pw"), "temp cannot log in")
    expect_rc(0, "unregister", "temp@localhost")
    check("temp@localhost" not in users(), "temp still listed")
    check(not await can_login("temp@localhost/x", "temp-pw"), "temp logs in after unregister")
    expect_rc(1, "unregister", "temp@localhost")
    expect_rc(1, "unregister", "never-was@localhost")
    expect_rc(0, "register", "temp@localhost", input="temp-pw2\n")
    check(await can_login("temp@localhost/x", "temp-pw2"), "re-registered temp cannot log in")
    check(not await can_login("temp@localhost/x", "temp-pw"), "re-registered temp logs in with the old password")


@case("unregister of a user who is online ends the session")
async def _():
    expect_rc(0, "register", "online@localhost", input="online-pw\n")
    c = await Client(srv, "online@localhost/here", "online-pw").login()
    await loop().run_in_executor(None, expect_rc, 0, "unregister", "online@localhost")
    ended = await c.wait_disconnected(5)
    jids = [r[0] for r in srv.sessions()]
    check(ended, "the deleted user's session goes on (stream errors %s)" % c.stream_errors)
    check("online@localhost/here" not in jids, "the deleted user's session is still listed", jids)


@case("import-users: JID<TAB>PASSWORD lines on stdin are imported")
async def _():
    o, e = expect_rc(0, "import-users", input="imp1@localhost\tpw-one\nimp2@localhost\tpw-two\n# comment\n\n")
    check(await can_login("imp2@localhost/i", "pw-two"), "an imported user cannot log in")
    u = users()
    check("imp1@localhost" in u and "imp2@localhost" in u, "imports missing", u)


@case("import-users with a malformed line and an existing account: exit 1 (not 3), the rest imported", timeout=40)
async def _():
    t0 = time.monotonic()
    rc, o, e = rc_of("import-users", input="imp3@localhost\tpw3\nno-tab-here\nimp1@localhost\tdup\n")
    dt = time.monotonic() - t0
    u = users()
    check("imp3@localhost" in u, "imp3 not imported", u)
    check(await can_login("imp1@localhost/i", "pw-one"), "a duplicate import changed the password")
    check(rc == 1, "exit %d after %.1f s, want 1" % (rc, dt), "stderr: " + e)


@case("register answers promptly (each under 0.5 s, the default heartbeat being 1 s)")
def _():
    slow = []
    for i in range(6):
        t0 = time.monotonic()
        expect_rc(0, "register", "quick%d@localhost" % i, input="pw\n")
        dt = time.monotonic() - t0
        if dt > 0.5:
            slow.append("%.2f s" % dt)
    check(not slow, "%d of 6 registrations were slow: %s" % (len(slow), ", ".join(slow)))


@case("sessions lists full JIDs with their c2s instance; --json sessions parses")
async def _():
    a = await Client(srv, "alice@localhost/desk", "alice-pw", priority=7).login()
    await a.ping_server()
    rows = srv.sessions()
    row = [r for r in rows if r[0] == "alice@localhost/desk"]
    check(row, "alice@localhost/desk not in sessions", rows)
    eq(row[0][1], "c2s-1", "c2s column")
    diag("session row: %s" % row[0])
    o, _ = expect_rc(0, "--json", "sessions")
    j = json_ok(o, "sessions --json")
    r = [x for x in j if x.get("jid") == "alice@localhost/desk"]
    check(r, "alice@localhost/desk not in sessions --json", j)
    eq(r[0].get("c2s"), "c2s-1", "c2s in JSON")
    eq(r[0].get("priority"), "7", "priority in JSON")
    await a.close()
    time.sleep(0.3)
    check("alice@localhost/desk" not in [x[0] for x in srv.sessions()], "closed session still listed")


@case("kick JID ends the session: the client gets a stream error; kick of nobody -> 1")
async def _():
    a = await Client(srv, "alice@localhost/kickme", "alice-pw").login()
    b = await Client(srv, "alice@localhost/stays", "alice-pw").login()
    await loop().run_in_executor(None, expect_rc, 0, "kick", "alice@localhost/kickme")
    check(await a.wait_disconnected(5), "the kicked client is still connected")
    check(a.stream_errors, "the kicked client got no stream error")
    diag("kicked with <%s/>" % a.stream_errors[0])
    jids = [r[0] for r in srv.sessions()]
    check("alice@localhost/kickme" not in jids, "kicked session still listed", jids)
    check("alice@localhost/stays" in jids, "the other resource was kicked too", jids)
    await b.ping_server()
    # a bare JID kicks every resource
    await loop().run_in_executor(None, expect_rc, 0, "kick", "alice@localhost")
    check(await b.wait_disconnected(5), "kick of the bare JID left a resource connected")
    expect_rc(1, "kick", "alice@localhost/not-online")
    expect_rc(2, "kick", "not a jid")


@case("loglevel sm-0 debug takes effect without a restart; loglevel shows it")
async def _():
    pid = srv.pids()["sm-0"]
    c = await Client(srv, "bob@localhost/log", "bob-new-pw").login()

    async def debug_lines():
        since = srv.log_size("sm-0")
        c.send("nobody-%d@localhost" % time.monotonic_ns(), "provoke a debug line")
        await c.message(5, lambda m: m["type"] == "error")
        await asyncio.sleep(0.3)
        return [l for l in srv.log("sm-0")[since:].splitlines() if l.startswith("<7>")]

    check(not await debug_lines(), "debug lines at level info")
    expect_rc(0, "loglevel", "sm-0", "debug")
    o, _ = expect_rc(0, "loglevel")
    levels = dict(l.split("\t")[:2] for l in o.splitlines() if "\t" in l)
    eq(levels.get("sm-0"), "debug", "sm-0's level")
    eq(levels.get("c2s-1"), "info", "c2s-1's level (unchanged)")
    o, _ = expect_rc(0, "loglevel", "sm-0")
    check("debug" in o, "loglevel sm-0 does not show debug", o)
    check(await debug_lines(), "no debug line in sm-0.log after switching to debug")
    eq(srv.pids()["sm-0"], pid, "sm-0 pid (restarted?)")
    expect_rc(0, "loglevel", "sm-0", "info")
    o, _ = expect_rc(0, "loglevel", "sm-0")
    check("info" in o, "back to info", o)
    check(not await debug_lines(), "debug lines after going back to info")
    rc, o, e = rc_of("loglevel", "sm-0", "chatty")
    check(rc in (1, 2), "loglevel sm-0 chatty: exit %d" % rc, e)
    await c.close()


STOPPED_CMDS = ((("users",), None), (("sessions",), None), (("register", "late@localhost"), "pw\n"),
                (("unregister", "bob@localhost"), None), (("kick", "bob@localhost"), None),
                (("loglevel",), None), (("status",), None), (("peers",), None))
_stopped = {}


@case("with the server stopped every command that needs a daemon exits 3", timeout=60)
def _():
    from concurrent.futures import ThreadPoolExecutor
    expect_rc(0, "stop")

    def one(spec):
        t0 = time.monotonic()
        rc, o, e = rc_of(*spec[0], input=spec[1])
        return spec[0], rc, o, e, time.monotonic() - t0

    with ThreadPoolExecutor(len(STOPPED_CMDS)) as ex:
        res = list(ex.map(one, STOPPED_CMDS))
    _stopped["res"] = res
    bad = ["xmppctl %s: exit %d" % (" ".join(a), rc) for a, rc, o, e, dt in res if rc != 3]
    check(not bad, "with the server stopped:", *bad)
    st = [r for r in res if r[0] == ("status",)][0]
    check(all(l.endswith("down") for l in st[2].splitlines() if l), "status rows not 'down'", st[2])


@case("... and fails fast (each command within 2 s, not a reply timeout per daemon)")
def _():
    res = _stopped.get("res")
    check(res, "the previous case did not run")
    slow = ["xmppctl %s: %.1f s" % (" ".join(a), dt) for a, rc, o, e, dt in res if dt > 2]
    if slow:
        diag("left in the run directory after stop: %s" % sorted(os.listdir(os.path.join(srv.state, "run"))))
    check(not slow, "slow answers with the server stopped:", *slow)


@case("the server starts again with its accounts")
def _():
    srv.start()
    check("bob@localhost" in users(), "accounts lost over stop/start")


if __name__ == "__main__":
    run()
