#!/usr/bin/python3
"""A second, independent client implementation (go-sendxmpp, Go's
xmpp library) talks with slixmpp through the server, both ways, over
STARTTLS and direct TLS."""
import asyncio
import os
import re
import shutil
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import Client, Server, Skip, case, check, diag, eq, loop, run  # noqa: E402

GO = shutil.which("go-sendxmpp") or "/usr/bin/go-sendxmpp"
srv = Server()
PW = {"gopher": "g0pher-pw", "snake": "sn4ke-pw"}
S = {}


def have_go():
    if not os.access(GO, os.X_OK):
        raise Skip("go-sendxmpp is not installed")


async def go(*args, stdin=None, timeout=20):
    """Run go-sendxmpp as gopher; returns (rc, stdout, stderr)."""
    env = dict(os.environ, HOME=srv.dir)  # never read the user's sendxmpprc
    p = await asyncio.create_subprocess_exec(
        GO, "-u", "gopher@localhost", "-p", PW["gopher"], "-n", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        o, e = await asyncio.wait_for(p.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise AssertionError("go-sendxmpp %s did not finish within %d s" % (" ".join(args), timeout))
    return p.returncode, o.decode(errors="replace"), e.decode(errors="replace")


@case("server starts; gopher (go-sendxmpp) and snake (slixmpp) registered; snake online")
async def _():
    have_go()
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)
    S["snake"] = await Client(srv, "snake@localhost/py", PW["snake"]).login()
    # wait until the server routes (see test_restart: it may hold stanzas for a while after a start)
    other = await Client(srv, "snake@localhost/warmup", PW["snake"]).login()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        other.send(S["snake"].full, "warmup")
        try:
            await S["snake"].message(0.5, lambda m: m["body"] == "warmup")
            break
        except TimeoutError:
            pass
    await other.close()
    S["snake"].drain()


@case("go-sendxmpp (STARTTLS) sends a message that slixmpp receives")
async def _():
    have_go()
    since = srv.log_size("c2s-1")
    rc, o, e = await go("-j", "127.0.0.1:%d" % srv.port, "snake@localhost", stdin=b"hello from Go over STARTTLS\n")
    eq(rc, 0, "go-sendxmpp exit code (stderr: %s)" % e.strip())
    m = await S["snake"].message(10, lambda m: m["type"] != "error")
    eq(m["body"].strip(), "hello from Go over STARTTLS", "body")
    eq(str(m["from"]).split("/")[0], "gopher@localhost", "from")
    mech = re.search(r"auth-success addr=\S+ user=gopher@localhost mech=(\S+)", srv.log("c2s-1")[since:])
    diag("go-sendxmpp logged in with %s" % (mech.group(1) if mech else "?"))


@case("go-sendxmpp --tls (direct TLS, XEP-0368) sends a message that slixmpp receives")
async def _():
    have_go()
    rc, o, e = await go("-t", "-j", "127.0.0.1:%d" % srv.tls_port, "snake@localhost",
                        stdin=b"hello from Go over direct TLS\n")
    eq(rc, 0, "go-sendxmpp exit code (stderr: %s)" % e.strip())
    m = await S["snake"].message(10, lambda m: m["type"] != "error")
    eq(m["body"].strip(), "hello from Go over direct TLS", "body")
    eq(str(m["from"]).split("/")[0], "gopher@localhost", "from")


@case("go-sendxmpp -l (listen mode) receives messages sent by slixmpp (to its bare and its full JID)", timeout=45)
async def _():
    have_go()
    env = dict(os.environ, HOME=srv.dir)
    p = await asyncio.create_subprocess_exec(
        GO, "-l", "-u", "gopher@localhost", "-p", PW["gopher"], "-n", "-j", "127.0.0.1:%d" % srv.port,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        full = None
        t0 = time.monotonic()
        while not full and time.monotonic() - t0 < 10:
            rows = await loop().run_in_executor(None, srv.sessions)
            full = next((r[0] for r in rows if r[0].startswith("gopher@localhost/")), None)
            if not full:
                await asyncio.sleep(0.2)
        check(full, "go-sendxmpp -l never got a session")
        await asyncio.sleep(0.3)  # its initial presence
        lines = []

        async def expect_line(text):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    line = await asyncio.wait_for(p.stdout.readline(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if not line:
                    break
                lines.append(line.decode(errors="replace").rstrip())
                if text in lines[-1]:
                    return lines[-1]
            raise AssertionError("go-sendxmpp -l did not print %r; printed %r" % (text, lines))

        S["snake"].send("gopher@localhost", "slither to the bare JID")
        line = await expect_line("slither to the bare JID")
        check("snake@localhost" in line, "the sender is not shown", line)
        S["snake"].send(full, "slither to the full JID")
        await expect_line("slither to the full JID")
    finally:
        if p.returncode is None:
            p.kill()
        await p.wait()


@case("go-sendxmpp with a wrong password fails and delivers nothing")
async def _():
    have_go()
    env = dict(os.environ, HOME=srv.dir)
    p = await asyncio.create_subprocess_exec(
        GO, "-u", "gopher@localhost", "-p", "wrong", "-n", "-j", "127.0.0.1:%d" % srv.port, "snake@localhost",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    o, e = await asyncio.wait_for(p.communicate(b"must not arrive\n"), 20)
    check(p.returncode != 0, "go-sendxmpp succeeded with a wrong password")
    diag("go-sendxmpp said: %s" % e.decode(errors="replace").strip()[:200])
    got = await S["snake"].quiet(1.0, lambda m: "must not arrive" in m["body"])
    check(not got, "the message arrived")
    await S["snake"].close()


if __name__ == "__main__":
    run()
