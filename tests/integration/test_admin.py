#!/usr/bin/python3
"""Run-time administration (issue 3): `xmppctl backup DIR` while clients
chat and accounts are being registered restores into a fresh server where
every account that existed logs in; `restore` into a running server ends the
sessions of accounts the backup does not hold and keeps the others; bad
backup directories and shard counts are refused; SIGHUP and `xmppctl
reload` serve a new certificate to the next connection while sessions stay
up; a reload that changes sm_shards is refused; `loglevel` works without a
restart. Both servers of the backup cases run two shards."""
import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import Client, LoginFailed, Server, case, check, diag, eq, json_ok, loop, run  # noqa: E402

srv = Server(sm_shards=2)
CERT = os.path.join(srv.dir, "localhost.crt")
KEY = os.path.join(srv.dir, "localhost.key")
PW = {u: "pw-%s-admin" % u for u in ("alice", "bob", "carol", "dave")}
BK = {}       # name -> backup directory
SHARED = {}   # what one case leaves for a later one


def jid(user):
    return "%s@localhost" % user


def make_cert(cert=CERT, key=KEY):
    """A new self-signed P-256 certificate written over cert and key (each
    replaced by a rename, as a certificate renewal tool does); returns the
    SHA-256 fingerprint of its DER form."""
    tmpc, tmpk = cert + ".new", key + ".new"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout", tmpk, "-out", tmpc],
                   check=True, capture_output=True, timeout=30)
    os.replace(tmpk, key)
    os.replace(tmpc, cert)
    with open(cert) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def served_fingerprint(port=None):
    """SHA-256 of the certificate a fresh direct-TLS connection is shown."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port or srv.tls_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def expect_rc(server, want, *args, input=None, timeout=60):
    rc, o, e = server.ctl(*args, input=input, timeout=timeout)
    check(rc == want, "xmppctl %s: exit %d, want %d" % (" ".join(args), rc, want), "stdout: " + o, "stderr: " + e)
    return o, e


def users(server):
    o, _ = expect_rc(server, 0, "users")
    return set(l for l in o.splitlines() if l)


def manifest(d):
    """The manifest of a backup: {"sm_shards": N, "files": {name: (records, bytes)}}."""
    res = {"files": {}}
    with open(os.path.join(d, "xmppd-backup.txt")) as f:
        lines = f.read().splitlines()
    eq(lines[0], "xmppd-backup 1", "manifest format line")
    for l in lines[1:]:
        p = l.split()
        if p and p[0] == "sm_shards":
            res["sm_shards"] = int(p[1])
        elif p and p[0] == "file":
            res["files"][p[1]] = (int(p[2]), int(p[3]))
    return res


async def in_thread(fn, *args):
    return await loop().run_in_executor(None, fn, *args)


async def logins(server, creds, batch=12):
    """Log every (jid, password) in (slixmpp, SCRAM over STARTTLS);
    returns the JIDs that could not."""
    failed = []

    async def one(j, pw):
        c = Client(server, j + "/restored", pw, presence=False)
        try:
            await c.login()
        except LoginFailed as e:
            failed.append("%s (%s)" % (j, e))
            return
        await c.close()

    creds = list(creds)
    for i in range(0, len(creds), batch):
        await asyncio.gather(*(one(j, pw) for j, pw in creds[i:i + batch]))
    return failed


def log_since(server, instance, since):
    return server.log(instance)[since:]


def sizes(server, instances=None):
    return {i: server.log_size(i) for i in (instances or server.pids())}


def hup(server, pids):
    """SIGHUP to each of pids ({instance: pid}), as `systemctl reload` does."""
    for inst, pid in pids.items():
        check(server._ours(pid), "pid %d is not our %s" % (pid, inst))
        os.kill(pid, signal.SIGHUP)


@case("a server with sm_shards = 2 and its own certificate for [host localhost] starts; users registered")
def _():
    SHARED["fp0"] = make_cert()
    with open(srv.conf_path, "a") as f:
        f.write("[host localhost]\ntls_cert = %s\ntls_key = %s\n" % (CERT, KEY))
    srv.start()
    eq(sorted(srv.pids()), ["c2s-1", "listen-1", "router-1", "sm-0", "sm-1"], "instances")
    for u, pw in PW.items():
        srv.register(jid(u), pw)
    eq(served_fingerprint(), SHARED["fp0"], "the configured certificate is served")


# ---------------------------------------------------------------- (a)

@case("backup under traffic (two clients chatting, accounts registered in a loop) restores into a fresh "
      "server where every account of the backup logs in", timeout=150)
async def _():
    a = await Client(srv, jid("alice") + "/chat", PW["alice"]).login()
    b = await Client(srv, jid("bob") + "/chat", PW["bob"]).login()
    stop_chat = asyncio.Event()
    sent = {"a": 0, "b": 0}

    async def chatter():
        while not stop_chat.is_set():
            sent["a"] += 1
            a.send(b.full, "a->b %d" % sent["a"])
            sent["b"] += 1
            b.send(a.full, "b->a %d" % sent["b"])
            await asyncio.sleep(0.01)

    stop_reg = threading.Event()
    regs = []  # (jid, password, t_start, t_end, rc)

    def register_loop():
        for i in range(150):
            if stop_reg.is_set():
                return
            j, pw = jid("reg%03d" % i), "pw-reg-%d" % i
            t0 = time.monotonic()
            rc, o, e = srv.ctl("register", j, input=pw + "\n")
            regs.append((j, pw, t0, time.monotonic(), rc))

    BK["a"] = os.path.join(srv.dir, "backup-a")
    chat = asyncio.ensure_future(chatter())
    reg = loop().run_in_executor(None, register_loop)
    try:
        await asyncio.sleep(1.0)
        t_b0 = time.monotonic()
        rc, o, e = await in_thread(lambda: srv.ctl("--header", "backup", BK["a"]))
        t_b1 = time.monotonic()
        await asyncio.sleep(0.5)
    finally:
        stop_reg.set()
        stop_chat.set()
        await chat
        await reg
    check(rc == 0, "backup: exit %d" % rc, o, e)
    diag("backup took %.0f ms seen from xmppctl; shards said:" % ((t_b1 - t_b0) * 1000))
    diag(o.rstrip())
    bad = [r for r in regs if r[4] != 0]
    check(not bad, "registrations failed during the backup", bad[:5])
    before = [(j, pw) for j, pw, t0, t1, rc in regs if t1 < t_b0]
    after = [j for j, pw, t0, t1, rc in regs if t0 > t_b1]
    diag("%d registrations: %d before the backup, %d during it, %d after it"
         % (len(regs), len(before), len(regs) - len(before) - len(after), len(after)))
    check(len(before) >= 3 and after, "the registration loop was too slow to overlap the backup", regs[:3])

    # nothing lost on the message path while the shards copied their files
    for c, other, key in ((b, "a", "a"), (a, "b", "b")):
        want = ["%s->%s %d" % (key, "b" if key == "a" else "a", n) for n in range(1, sent[key] + 1)]
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(want) and time.monotonic() < deadline:
            try:
                m = await c.message(max(0.1, deadline - time.monotonic()),
                                    lambda m: m["body"].startswith(key + "->"))
            except TimeoutError:
                break
            got.append(m["body"])
        eq(got, want, "messages %s->%s during the backup (%d sent)" % (key, other, len(want)))
    check(not a.disconnected.is_set() and not b.disconnected.is_set(), "a chatting client was disconnected")
    await a.close()
    await b.close()

    man = manifest(BK["a"])
    eq(man.get("sm_shards"), 2, "sm_shards in the manifest")
    files = sorted(man["files"])
    check("sm-0/accounts.tdb" in files and "sm-1/accounts.tdb" in files, "accounts.tdb missing", files)
    eq(sorted(f[5:] for f in files if f.startswith("sm-0/")), sorted(f[5:] for f in files if f.startswith("sm-1/")),
       "the two shards' files (every store of each)")
    diag("files: " + ", ".join(files))
    for name, (records, size) in man["files"].items():
        eq(os.path.getsize(os.path.join(BK["a"], name)), size, "size of %s" % name)

    fresh = Server(sm_shards=2)
    SHARED["fresh"] = fresh
    await in_thread(fresh.start)
    check(not users(fresh), "the fresh server has accounts before the restore")
    o, e = await in_thread(lambda: expect_rc(fresh, 0, "restore", BK["a"]))
    diag("restore into the fresh server: " + o.strip().replace("\n", "; "))
    got = users(fresh)
    base = set(jid(u) for u in PW)
    missing = (base | set(j for j, pw in before)) - got
    check(not missing, "accounts of the backup missing after the restore", sorted(missing))
    late = set(after) & got
    check(not late, "accounts registered after the backup are in it", sorted(late))
    unknown = got - base - set(r[0] for r in regs)
    check(not unknown, "accounts that never existed", sorted(unknown))
    # each shard holds its accounts plus two records of its own (secret, generation counter)
    eq(sum(r for f, (r, s) in man["files"].items() if f.endswith("/accounts.tdb")), len(got) + 4,
       "records of the accounts files in the manifest vs accounts restored")
    failed = await logins(fresh, [(jid(u), pw) for u, pw in PW.items()] + before)
    check(not failed, "%d accounts of the backup cannot log in on the fresh server" % len(failed), *failed[:10])
    diag("%d accounts log in on the fresh server" % (len(PW) + len(before)))
    await in_thread(fresh.stop)


# ---------------------------------------------------------------- (b)

@case("restore into the running server: an account made after the backup is gone and its session ended; a "
      "session of an account in the backup stays up; a removed account comes back", timeout=60)
async def _():
    BK["b"] = os.path.join(srv.dir, "backup-b")
    expect_rc(srv, 0, "backup", BK["b"])
    since = {i: srv.log_size(i) for i in ("sm-0", "sm-1")}
    srv.register(jid("late"), "late-pw")
    gen_first = re.search(r"account late@localhost registered \(generation (\d+)\)",
                          "".join(log_since(srv, i, since[i]) for i in since))
    check(gen_first, "no registration line for late@localhost")
    expect_rc(srv, 0, "unregister", jid("carol"))
    keep = await Client(srv, jid("alice") + "/keep", PW["alice"]).login()
    peer = await Client(srv, jid("bob") + "/peer", PW["bob"]).login()
    gone = await Client(srv, jid("late") + "/doomed", "late-pw").login()
    o, e = await in_thread(lambda: expect_rc(srv, 0, "restore", BK["b"]))
    diag("restore: " + (o + e).strip().replace("\n", "; "))
    check(await gone.wait_disconnected(5), "the session of the account made after the backup goes on")
    eq(gone.stream_errors, ["not-authorized"], "stream error of the removed account's session")
    u = users(srv)
    check(jid("late") not in u, "late@localhost still listed after the restore", sorted(u)[:10])
    check(jid("carol") in u, "carol@localhost (removed after the backup) did not come back")
    await asyncio.sleep(0.3)
    check(not keep.disconnected.is_set(), "the session of an account in the backup was ended", keep.stream_errors)
    await keep.ping_server()
    keep.send(peer.full, "still here after the restore")
    m = await peer.message(5, lambda m: m["body"] == "still here after the restore")
    eq(m["type"], "chat", "type of the message after the restore")
    jids = [r[0] for r in srv.sessions()]
    check(keep.full in jids and peer.full in jids, "kept sessions not listed", jids)
    check(gone.full not in jids, "the ended session is still listed", jids)
    failed = await logins(srv, [(jid("late"), "late-pw")])
    check(failed, "late@localhost still logs in after the restore")
    failed = await logins(srv, [(jid("carol"), PW["carol"])])
    check(not failed, "carol cannot log in after the restore", failed)
    # generations are never handed out twice, even after a restore
    since = {i: srv.log_size(i) for i in ("sm-0", "sm-1")}
    srv.register(jid("late"), "late-pw-2")
    gen_second = re.search(r"account late@localhost registered \(generation (\d+)\)",
                           "".join(log_since(srv, i, since[i]) for i in since))
    check(gen_second and int(gen_second.group(1)) > int(gen_first.group(1)),
          "re-registered late@localhost got generation %s, the removed one had %s"
          % (gen_second and gen_second.group(1), gen_first.group(1)))
    for c in (keep, peer):
        await c.close()


# ---------------------------------------------------------------- (c)

@case("backup into a non-empty directory -> 1 (--force -> 0); restore without a manifest -> 2; a damaged "
      "copy -> 1 and nothing changes; another shard count -> refused", timeout=60)
def _():
    o, e = expect_rc(srv, 1, "backup", BK["b"])
    check("not empty" in e, "no reason given for the refusal", e)
    other = os.path.join(srv.dir, "not-empty")
    os.makedirs(other)
    with open(os.path.join(other, "notes.txt"), "w") as f:
        f.write("something else\n")
    expect_rc(srv, 1, "backup", other)
    with open(os.path.join(other, "notes.txt")) as f:
        eq(f.read(), "something else\n", "a file of the refused directory")
    o, e = expect_rc(srv, 0, "--json", "backup", "--force", other)
    rows = json_ok(o, "backup --json")
    eq(sorted(r.get("file") for r in rows), sorted(manifest(BK["a"])["files"]), "files in backup --json")
    check(os.path.exists(os.path.join(other, "xmppd-backup.txt")), "--force wrote no manifest")

    empty = os.path.join(srv.dir, "empty")
    os.makedirs(empty)
    o, e = expect_rc(srv, 2, "restore", empty)
    diag("restore of an empty directory: " + e.strip())
    nomani = os.path.join(srv.dir, "no-manifest")
    shutil.copytree(BK["b"], nomani)
    os.unlink(os.path.join(nomani, "xmppd-backup.txt"))
    expect_rc(srv, 2, "restore", nomani)
    expect_rc(srv, 2, "restore", os.path.join(srv.dir, "does-not-exist"))

    before = users(srv)
    damaged = os.path.join(srv.dir, "damaged")
    shutil.copytree(BK["b"], damaged)
    p = os.path.join(damaged, "sm-1", "accounts.tdb")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:   # same size, records zeroed: only tdb_check can tell
        f.seek(256)
        f.write(b"\0" * (size - 512))
    o, e = expect_rc(srv, 1, "restore", damaged)
    check("damaged" in e, "no word of the damage", e)
    eq(users(srv), before, "accounts after a refused restore of a damaged copy (sm-0 must not restore either)")

    one = Server(sm_shards=1)
    one.start()
    try:
        one.register(jid("solo"), "solo-pw")
        o, e = expect_rc(one, 1, "restore", BK["b"])
        check("sm_shards" in e, "the refusal does not name sm_shards", e)
        diag("restore into one shard: " + e.strip())
        eq(users(one), {jid("solo")}, "accounts of the one-shard server after the refused restore")
    finally:
        one.stop()


# ---------------------------------------------------------------- (d)

async def still_chatting(a, b, tag):
    a.send(b.full, tag)
    m = await b.message(5, lambda m: m["body"] == tag)
    eq(m["type"], "chat", "type of %r" % tag)
    check(not a.disconnected.is_set() and not b.disconnected.is_set(), "a session ended (%s)" % tag,
          a.stream_errors, b.stream_errors)


@case("SIGHUP with a new certificate at the same path: the next TLS connection gets it, sessions stay up",
      timeout=60)
async def _():
    a = await Client(srv, jid("alice") + "/tls", PW["alice"]).login()
    b = await Client(srv, jid("bob") + "/tls", PW["bob"], tls="direct").login()
    SHARED["ab"] = (a, b)
    pids_before = srv.pids()
    old = served_fingerprint()
    new = make_cert()
    check(new != old, "openssl made the same certificate twice")
    eq(served_fingerprint(), old, "served before the reload")
    since = sizes(srv)
    hup(srv, pids_before)
    check(await srv.await_log("listen-1", r"certificates reloaded", 5, since["listen-1"]),
          "listen-1 did not log the reload")
    for inst in pids_before:
        check(await srv.await_log(inst, r"configuration reloaded", 5, since[inst]), "%s did not reload" % inst)
    eq(served_fingerprint(), new, "certificate served to a new connection after SIGHUP")
    await still_chatting(a, b, "after SIGHUP a->b")
    await still_chatting(b, a, "after SIGHUP b->a")
    eq(srv.pids(), pids_before, "pids (a daemon restarted?)")


@case("xmppctl reload with another new certificate -> 0, served next; a key that does not match -> 1 and the "
      "previous certificate stays", timeout=60)
async def _():
    a, b = SHARED["ab"]
    new = make_cert()
    await in_thread(lambda: expect_rc(srv, 0, "reload"))
    eq(served_fingerprint(), new, "certificate served after xmppctl reload")
    await still_chatting(a, b, "after reload a->b")
    # a certificate whose key is another one's
    spare_c, spare_k = CERT + ".spare", KEY + ".spare"
    make_cert(spare_c, spare_k)
    shutil.copy(spare_c, CERT)
    o, e = await in_thread(lambda: expect_rc(srv, 1, "reload"))
    check("listen-1" in e, "the failure does not name listen-1", e)
    eq(served_fingerprint(), new, "certificate served after a failed reload")
    check(srv.wait_log("listen-1", r"certificates not reloaded, the previous ones stay in use"),
          "no log line about the refused certificate")
    new = make_cert()
    await in_thread(lambda: expect_rc(srv, 0, "reload"))
    eq(served_fingerprint(), new, "certificate served after the fix")
    await still_chatting(b, a, "after the fixed reload b->a")


# ---------------------------------------------------------------- (e)

@case("a reload that changes sm_shards is refused (xmppctl reload -> 1, SIGHUP logged); the server goes on",
      timeout=60)
async def _():
    a, b = SHARED["ab"]
    with open(srv.conf_path) as f:
        good = f.read()
    check("sm_shards = 2" in good, "sm_shards = 2 not in the configuration", good)
    pids = srv.pids()
    try:
        with open(srv.conf_path, "w") as f:
            f.write(good.replace("sm_shards = 2", "sm_shards = 1"))
        since = sizes(srv)
        o, e = await in_thread(lambda: expect_rc(srv, 1, "reload"))
        diag(e.strip())
        for inst in ("router-1", "sm-0", "c2s-1", "listen-1"):
            check(re.search(r"^%s: reload refused: sm_shards changed from 2 to 1" % inst, e, re.M),
                  "%s's answer does not say why" % inst, e)
            check(await srv.await_log(inst, r"<3>%s: reload refused, the running configuration is kept: "
                                      r"sm_shards changed from 2 to 1" % inst, 3, since[inst]),
                  "%s logged no refusal" % inst)
        # SIGHUP to every daemon, sm-1 too (which xmppctl, reading sm_shards = 1, did not ask)
        since = sizes(srv, pids)
        hup(srv, pids)
        for inst in pids:
            check(await srv.await_log(inst, r"reload refused.*sm_shards changed from 2 to 1", 5, since[inst]),
                  "%s did not refuse the SIGHUP reload" % inst)
        # another key that needs a restart
        with open(srv.conf_path, "w") as f:
            f.write(good.replace("c2s_listen = 127.0.0.1:%d" % srv.port,
                                 "c2s_listen = 127.0.0.1:%d" % srv.port + "\nc2s_listen = 127.0.0.2:%d" % srv.port))
        o, e = await in_thread(lambda: expect_rc(srv, 1, "reload"))
        check("c2s_listen" in e, "the refusal does not name c2s_listen", e)
    finally:
        with open(srv.conf_path, "w") as f:
            f.write(good)
    eq(srv.pids(), pids, "pids after the refused reloads")
    # still two shards everywhere: users of both shards log in, talk, new accounts work
    await still_chatting(a, b, "after the refused reload a->b")
    failed = await logins(srv, [(jid(u), PW[u]) for u in ("carol", "dave")] + [(jid("late"), "late-pw-2")])
    check(not failed, "logins after the refused reload", failed)
    srv.register(jid("after-refusal"), "x-pw")
    failed = await logins(srv, [(jid("after-refusal"), "x-pw")])
    check(not failed, "an account made after the refused reload cannot log in", failed)
    await in_thread(lambda: expect_rc(srv, 0, "reload"))


# ---------------------------------------------------------------- (f)

@case("loglevel sm-0 debug: debug lines appear in sm-0's log at once, without a restart; reload goes back "
      "to log_level", timeout=60)
async def _():
    a, b = SHARED["ab"]
    pid = srv.pids()["sm-0"]
    # messages to unknown users: the recipient's shard answers with an error and
    # logs it at debug; among sixteen names some belong to sm-0
    names = ["nobody-%02d@localhost" % i for i in range(16)]

    async def debug_lines():
        since = srv.log_size("sm-0")
        for n in names:
            a.send(n, "provoke a debug line")
        for _ in names:
            await a.message(5, lambda m: m["type"] == "error")
        await asyncio.sleep(0.3)
        return [l for l in log_since(srv, "sm-0", since).splitlines() if l.startswith("<7>")]

    check(not await debug_lines(), "debug lines at level info")
    await in_thread(lambda: expect_rc(srv, 0, "loglevel", "sm-0", "debug"))
    lines = await debug_lines()
    check(lines, "no debug line in sm-0.log after `xmppctl loglevel sm-0 debug`")
    diag("debug line: " + lines[0][:200])
    o, _ = expect_rc(srv, 0, "loglevel")
    levels = dict(l.split("\t")[:2] for l in o.splitlines() if "\t" in l)
    eq((levels.get("sm-0"), levels.get("sm-1")), ("debug", "info"), "levels of sm-0 and sm-1")
    eq(srv.pids()["sm-0"], pid, "sm-0's pid")
    await in_thread(lambda: expect_rc(srv, 0, "reload"))
    o, _ = expect_rc(srv, 0, "loglevel", "sm-0")
    check("info" in o, "the level after a reload is not log_level (info)", o)
    check(not await debug_lines(), "debug lines after the reload")
    for c in (a, b):
        await c.close()


if __name__ == "__main__":
    run(file_timeout=400)
