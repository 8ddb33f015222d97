#!/usr/bin/python3
"""The per-step stanza trace (DESIGN §2, §5; xmppd-trace(7)): rules set at
run time on every daemon, the eight steps of a message under one id in
`xmppctl trace` and in the daemons' logs, the decisions of sm and the
router (service-unavailable with its caused error reply, the bounce of a
remote domain), tracing one JID leaves others untraced, `trace off`,
--bodies, --count, --json, and the rule list."""
import asyncio
import atexit
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmppdtest import (XMPPCTL, Client, Server, case, check, diag, eq,  # noqa: E402
                       error_condition, json_ok, run)

srv = Server()
PW = {u: "pw-%s-7" % u for u in ("alice", "bob", "carol", "dave", "erin")}
DAEMONS = ["c2s-1", "listen-1", "router-1", "sm-0"]
LINE = re.compile(r"trace id=([0-9a-f]{16}) step=(\d) daemon=(\w+) instance=(\S+) kind=(\S+) type=(\S+) "
                  r"from=(\S+) to=(\S+) action=(.*?)(?: cause=([0-9a-f]{16}))?(?: body=(\S*))?$")
clients = {}
follows = []


@atexit.register
def _stop_follows():
    """A failed case may leave `xmppctl trace` running: it would outlive the server."""
    for f in follows:
        if f.p.poll() is None:
            f.p.kill()


def parse(text):
    """Trace lines of text as dicts (other lines ignored)."""
    out = []
    for l in text.splitlines():
        m = LINE.search(l)
        if m:
            out.append(dict(zip(("id", "step", "daemon", "instance", "kind", "type", "from", "to", "action",
                                 "cause", "body"), m.groups())))
    return out


def rules():
    rc, o, e = srv.ctl("trace", "list")
    eq(rc, 0, "trace list exit code")
    return sorted(tuple(l.split("\t")) for l in o.splitlines() if l)


def log_lines():
    """Every daemon's trace lines from its log."""
    return {d: parse(srv.log(d)) for d in DAEMONS}


class Follow:
    """`xmppctl trace ARGS` in the background."""

    def __init__(self, *args):
        for f in follows:  # left running by a failed case: its rule would confuse ready()
            if f.p.poll() is None:
                f.p.send_signal(signal.SIGINT)
                try:
                    f.p.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    f.p.kill()
        follows.append(self)
        self.args = args
        self.p = subprocess.Popen([XMPPCTL, "-c", srv.conf_path, "trace"] + list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    async def ready(self, target, timeout=10):
        """Wait until the rule is in force on every daemon (xmppctl turns
        it on after subscribing to the streams)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([r for r in rules() if r[2] == target]) == len(DAEMONS):
                return
            if self.p.poll() is not None:
                raise AssertionError("xmppctl trace exited early: %r" % (self.p.communicate(),))
            await asyncio.sleep(0.05)
        raise AssertionError("the rule for %s is not on every daemon: %s" % (target, rules()))

    async def finish(self, sig=None, timeout=15):
        if sig:
            await asyncio.sleep(0.6)  # past the 250 ms hold
            self.p.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.p.poll() is None:
            self.p.kill()
            raise AssertionError("xmppctl trace %s did not exit" % " ".join(self.args))
        self.out, self.err = self.p.communicate()
        self.rc = self.p.returncode
        return self.out


def walk(lines, ident):
    return [l for l in lines if l["id"] == ident]


@case("server starts; users registered; no rules; `trace on` with a bad target is a usage error")
async def _():
    srv.start()
    for u, p in PW.items():
        srv.register("%s@localhost" % u, p)
    eq(rules(), [], "rules at start")
    rc, o, e = srv.ctl("trace", "on", "not a jid")
    eq(rc, 2, "trace on 'not a jid'")
    rc, o, e = srv.ctl("trace", "--count", "x")
    eq(rc, 2, "trace --count x")
    for u in ("alice", "bob", "carol", "dave"):
        clients[u] = await Client(srv, "%s@localhost/res" % u, PW[u]).login()


@case("alice -> bob traced by JID: steps 1..8 in order under one id, in `xmppctl trace` and in the logs; "
      "Ctrl-C turns it off")
async def _():
    a, b = clients["alice"], clients["bob"]
    f = Follow("alice@localhost")
    await f.ready("alice@localhost")
    a.send(b.full, "hello bob")
    m = await b.message()
    eq(m["body"], "hello bob", "bob's message")
    out = await f.finish(signal.SIGINT)
    eq(f.rc, 0, "xmppctl trace exit code after SIGINT (stderr %r)" % f.err)
    eq(rules(), [], "rules after Ctrl-C")
    lines = parse(out)
    first = [l for l in lines if l["step"] == "1" and l["kind"] == "message" and l["to"] == b.full]
    check(len(first) == 1, "one step-1 line for the message", out)
    w = walk(lines, first[0]["id"])
    eq([l["step"] for l in w], [str(i) for i in range(1, 9)], "steps of the walk, in order")
    eq([l["daemon"] for l in w], ["listen", "c2s", "router", "sm", "sm", "router", "c2s", "listen"], "daemons")
    for l in w:
        eq((l["kind"], l["type"], l["from"]), ("message", "chat", a.full), "kind, type, from of step " + l["step"])
        check(l["body"] is None, "a body without --bodies", l)
    acts = [l["action"] for l in w]
    eq(acts[0], "->c2s-1", "step 1 action")
    eq(acts[1], "->router", "step 2 action")
    eq(acts[2], "route->sm-0", "step 3 action")
    eq(acts[3], "->inbound sm-0", "step 4 action")
    check(acts[4].startswith("deliver->c2s-1/conn "), "step 5 action", acts[4])
    eq(acts[5], "deliver->c2s-1", "step 6 action")
    check(acts[6].startswith("->listen-1 conn "), "step 7 action", acts[6])
    check(re.match(r"written \d+ bytes$", acts[7]), "step 8 action", acts[7])
    diag("\n".join(l for l in out.splitlines() if first[0]["id"] in l))
    # the same walk from the logs: grep id=
    logs = log_lines()
    from_logs = sorted((int(l["step"]), d) for d, ls in logs.items() for l in ls if l["id"] == first[0]["id"])
    eq(from_logs, [(1, "listen-1"), (2, "c2s-1"), (3, "router-1"), (4, "sm-0"), (5, "sm-0"), (6, "router-1"),
                   (7, "c2s-1"), (8, "listen-1")], "steps found in the logs")
    check("hello bob" not in "".join(srv.log(d) for d in DAEMONS), "the body is in a log")


@case("messages to a user with no available resource and to one that does not exist: sm's decisions; "
      "the error reply as a caused stanza (--json)")
async def _():
    a = clients["alice"]
    f = Follow("alice@localhost", "--json")
    await f.ready("alice@localhost")
    a.send("erin@localhost", "are you there?")
    a.send("nobody@localhost", "anyone?")
    err = await a.message(pred=lambda m: m["type"] == "error" and str(m["from"]) == "nobody@localhost")
    eq(error_condition(err.xml)[1], "service-unavailable", "error to alice")
    out = await f.finish(signal.SIGTERM)
    eq(f.rc, 0, "xmppctl trace exit code after SIGTERM")
    objs = [json_ok(l, "a --json trace line") for l in out.splitlines() if l.strip()]
    # erin exists but is offline: offline storage (or, without it, service-unavailable)
    erin = [o for o in objs if o["step"] == 5 and o["daemon"] == "sm" and o["to"] == "erin@localhost"]
    check(len(erin) == 1, "one sm step-5 line for the message to erin", out)
    check(re.match(r"offline: stored for erin@localhost|error: service-unavailable \(no available resource",
                   erin[0]["action"]), "sm's decision for erin", erin[0]["action"])
    diag("erin: " + erin[0]["action"])
    sm5 = [o for o in objs if o["step"] == 5 and o["daemon"] == "sm" and o["to"] == "nobody@localhost"]
    check(len(sm5) == 1, "one sm step-5 line for the message to nobody", out)
    check(sm5[0]["action"].startswith("error: service-unavailable (no such user"), "sm's decision for nobody",
          sm5[0]["action"])
    caused = [o for o in objs if o.get("cause") == sm5[0]["id"]]
    check(len(caused) == 1, "one line names the message as its cause", out)
    eq(caused[0]["action"], "created: error service-unavailable", "the caused stanza")
    eq((caused[0]["from"], caused[0]["to"], caused[0]["type"]), ("nobody@localhost", a.full, "error"),
       "the error reply's addresses")
    steps = [o["step"] for o in objs if o["id"] == caused[0]["id"]]
    eq(steps, [4, 4, 5, 6, 7, 8], "steps of the error reply")
    diag("\n".join("%s %s %s %s" % (o["id"], o["step"], o["daemon"], o["action"]) for o in objs
                   if o["id"] in (sm5[0]["id"], caused[0]["id"])))


@case("message to a remote domain: the router says why it bounced")
async def _():
    a = clients["alice"]
    f = Follow("alice@localhost")
    await f.ready("alice@localhost")
    a.send("someone@remote.example", "hi")
    err = await a.message(pred=lambda m: m["type"] == "error")
    eq(error_condition(err.xml)[1], "remote-server-not-found", "error to alice")
    out = await f.finish(signal.SIGINT)
    lines = parse(out)
    r = [l for l in lines if l["daemon"] == "router" and l["to"] == "someone@remote.example"
         and l["action"].startswith("bounce:")]
    check(len(r) == 1, "one router bounce line", out)
    check(r[0]["action"].startswith("bounce: remote-server-not-found (remote domain"), "bounce reason", r[0])
    check(any(l["cause"] == r[0]["id"] and "remote-server-not-found" in l["action"] for l in lines),
          "the error reply names the bounced message as its cause", out)
    diag(r[0]["action"])


@case("tracing alice does not trace carol <-> dave")
async def _():
    c, d, a, b = clients["carol"], clients["dave"], clients["alice"], clients["bob"]
    srv.ctl_ok("trace", "on", "alice@localhost")
    eq(rules(), [(dn, "bare", "alice@localhost", "no") for dn in sorted(DAEMONS)], "rules: alice's only")
    before = {dn: len(ls) for dn, ls in log_lines().items()}
    c.send(d.full, "carol to dave")
    await d.message()
    d.send(c.full, "dave to carol")
    await c.message()
    a.send(b.full, "alice to bob, traced")
    await b.message()
    await asyncio.sleep(0.3)
    new = [l for dn, ls in log_lines().items() for l in ls[before[dn]:]]
    check(new, "alice's message left no trace line")
    for l in new:
        check("alice@localhost" in l["from"] + l["to"], "a line not about alice", l)
        check("carol" not in l["from"] + l["to"] + l["action"], "carol traced", l)
        check("dave" not in l["from"] + l["to"] + l["action"], "dave traced", l)
    eq(sorted(int(l["step"]) for l in new if l["kind"] == "message"), list(range(1, 9)), "alice's message steps")


@case("after `trace off` nothing more is traced")
async def _():
    a, b = clients["alice"], clients["bob"]
    srv.ctl_ok("trace", "off", "alice@localhost")
    eq(rules(), [], "rules after trace off")
    before = sum(len(ls) for ls in log_lines().values())
    a.send(b.full, "untraced now")
    await b.message()
    await a.ping_server()
    await asyncio.sleep(0.3)
    after = sum(len(ls) for ls in log_lines().values())
    eq(after, before, "trace lines in the logs")


@case("bodies appear only with --bodies")
async def _():
    a, b = clients["alice"], clients["bob"]
    f = Follow("bob@localhost", "--bodies")
    await f.ready("bob@localhost")
    eq([r[3] for r in rules()], ["yes"] * len(DAEMONS), "bodies flag of the rules")
    a.send(b.full, "the secret words")
    await b.message()
    out = await f.finish(signal.SIGINT)
    lines = [l for l in parse(out) if l["kind"] == "message" and l["to"] == b.full]
    eq(sorted(int(l["step"]) for l in lines), list(range(1, 9)), "steps of the message")
    for l in lines:
        check(l["body"] and "the\\x20secret\\x20words" in l["body"], "no body in step " + l["step"], l)
    eq(rules(), [], "rules after --bodies")
    check("body=" not in "".join(l["body"] or "" for ls in [parse(srv.log(d)) for d in DAEMONS] for l in ls
                                 if l["id"] not in {x["id"] for x in lines}),
          "a body in a line not asked for")


@case("`xmppctl trace --count 1` exits by itself after one stanza")
async def _():
    a, b = clients["alice"], clients["bob"]
    f = Follow("alice@localhost", "--count", "1")
    await f.ready("alice@localhost")
    a.send(b.full, "count me")
    await b.message()
    out = await f.finish(timeout=10)
    eq(f.rc, 0, "exit code")
    ids = {l["id"] for l in parse(out)}
    eq(len(ids), 1, "stanza ids printed")
    eq(rules(), [], "rules after --count")


@case("trace on/off: rules listed (TSV and --json) on every daemon; domain and full-JID rules; `trace off all`")
async def _():
    a, b = clients["alice"], clients["bob"]
    srv.ctl_ok("trace", "on", "Bob@LOCALHOST", "--bodies")
    srv.ctl_ok("trace", "on", "localhost")
    srv.ctl_ok("trace", "on", "carol@localhost/res")
    got = rules()
    want = sorted((dn, k, t, bo) for dn in DAEMONS for k, t, bo in
                  (("bare", "bob@localhost", "yes"), ("domain", "localhost", "no"),
                   ("full", "carol@localhost/res", "no")))
    eq(got, want, "rules")
    o = srv.ctl_ok("--json", "trace", "list")
    j = json_ok(o, "trace list --json")
    eq(len(j), 3 * len(DAEMONS), "rows of trace list --json")
    check(all(set(r) == {"instance", "rule", "target", "bodies"} for r in j), "json keys", j)
    # a domain rule traces every local user
    n0 = len(parse(srv.log("sm-0")))
    clients["dave"].send(clients["carol"].full, "domain traced")
    await clients["carol"].message()
    await asyncio.sleep(0.3)
    check(len(parse(srv.log("sm-0"))) > n0, "the domain rule traced dave -> carol")
    srv.ctl_ok("trace", "off", "all")
    eq(rules(), [], "rules after trace off all")
    rc, o, e = srv.ctl("stats")
    check(re.search(r"sm-0\ttrace_lines\t[1-9]", o), "trace_lines in stats", o)


if __name__ == "__main__":
    run(file_timeout=170)
