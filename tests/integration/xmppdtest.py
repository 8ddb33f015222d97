"""xmppdtest - shared helpers of the xmppd integration tests.

* TAP: register cases with @case("name") (plain or async functions), then
  call run(): it prints the plan, runs every case in order (async ones on
  one event loop shared by the whole file, so clients can outlive a case),
  catches exceptions and prints their tracebacks as '# ' lines. A case
  that raises Skip is reported as '# SKIP'. A watchdog bails out of the
  whole file (after stopping the servers) if it runs too long: a test file
  never hangs.
* Server: a private xmppd (temp state dir, free loopback ports) run with
  `xmppctl start`, always stopped again (atexit and run()'s finally).
* Client: a slixmpp client with queues of what it receives.
* Raw: a blocking socket/TLS XMPP stream for checks a library would hide.

Run a test file as `/usr/bin/python3 FILE` (exit status 0 unless it bails
out or XMPPD_TEST_EXIT_STATUS=1 and a case failed); XMPPD_BUILDDIR / XMPPD_SRCDIR
point at the trees (default: two levels above this file). Set
XMPPD_TEST_DEBUG=1 for slixmpp's debug log on stderr and XMPPD_TEST_KEEP=1
to keep every state directory (they are kept anyway when a case failed).
"""

import asyncio
import atexit
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
BUILDDIR = os.environ.get("XMPPD_BUILDDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
SRCDIR = os.environ.get("XMPPD_SRCDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
XMPPCTL = os.path.join(BUILDDIR, "cmd", "xmppctl", "xmppctl")

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

if os.environ.get("XMPPD_TEST_DEBUG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
else:
    logging.basicConfig(level=logging.CRITICAL)


# ---------------------------------------------------------------- TAP

_cases = []
_servers = []
_failed = [0]
_out_lock = threading.Lock()


class Skip(Exception):
    """Raise Skip("reason") in a case to report it as skipped."""


def out(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def diag(*parts):
    """Print diagnostics as TAP comments (one '# ' line per text line)."""
    text = " ".join(str(p) for p in parts)
    for line in text.splitlines() or [""]:
        out("# " + line)


def case(name, timeout=30):
    """Decorator: register fn as the next TAP case."""
    def deco(fn):
        _cases.append((name, fn, timeout))
        return fn
    return deco


_loop = None


def loop():
    """The event loop shared by every async case of this file."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def _watchdog(limit):
    def fire():
        out("Bail out! the test file ran longer than %d s" % limit)
        try:
            _stop_all()
        finally:
            os._exit(1)
    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    return t


def run(file_timeout=110):
    """Run the registered cases as a TAP producer; exits with 0/1."""
    out("1..%d" % len(_cases))
    wd = _watchdog(file_timeout)
    try:
        for n, (name, fn, timeout) in enumerate(_cases, 1):
            t0 = time.monotonic()
            try:
                if asyncio.iscoroutinefunction(fn):
                    loop().run_until_complete(asyncio.wait_for(fn(), timeout))
                else:
                    fn()
            except Skip as e:
                out("ok %d - %s # SKIP %s" % (n, name, e))
                continue
            except BaseException as e:  # noqa: B902 - report everything, go on
                _failed[0] += 1
                out("not ok %d - %s" % (n, name))
                if isinstance(e, (asyncio.TimeoutError, TimeoutError)) and not str(e):
                    diag("timed out (case limit %d s, ran %.1f s)" % (timeout, time.monotonic() - t0))
                diag("".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
                for s in _servers:
                    s.diag_logs()
                if isinstance(e, KeyboardInterrupt):
                    raise
                continue
            out("ok %d - %s" % (n, name))
            if time.monotonic() - t0 > 10:
                diag("(case %d took %.1f s)" % (n, time.monotonic() - t0))
    finally:
        wd.cancel()
        if _loop is not None:
            _close_clients()
        _stop_all()
    if _failed[0]:
        diag("%d of %d cases failed" % (_failed[0], len(_cases)))
    # The TAP lines carry pass/fail; automake's TAP driver would count a
    # non-zero exit as one more ERROR. XMPPD_TEST_EXIT_STATUS=1 makes the
    # exit status 1 when a case failed (for running a file by hand).
    sys.exit(1 if _failed[0] and os.environ.get("XMPPD_TEST_EXIT_STATUS") == "1" else 0)


def check(cond, what, *details):
    """assert with a message and diagnostics."""
    if not cond:
        raise AssertionError(what + ("\n" + "\n".join(str(d) for d in details) if details else ""))


def eq(got, want, what):
    check(got == want, "%s: got %r, want %r" % (what, got, want))


# ---------------------------------------------------------------- server

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _stop_all():
    for s in list(_servers):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            diag("stopping %s: %s" % (s.dir, e))


atexit.register(_stop_all)


class Server:
    """A private xmppd: Server(sm_shards=2, ...) writes the config (extra
    keyword arguments become `key = value` lines), start() runs it."""

    def __init__(self, domains=("localhost",), log_level="info", **conf):
        self.dir = tempfile.mkdtemp(prefix="xmppd-it-")
        self.state = os.path.join(self.dir, "state")
        self.conf_path = os.path.join(self.dir, "xmppd.conf")
        self.port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.port:
            self.tls_port = free_port()
        self.domains = list(domains)
        self.domain = self.domains[0]
        self._seen = {}   # pid -> instance, of every daemon we saw
        self.started = False
        self.stopped = False
        lines = ["state_dir = %s" % self.state,
                 "c2s_listen = 127.0.0.1:%d" % self.port,
                 "c2s_tls_listen = 127.0.0.1:%d" % self.tls_port,
                 "log_level = %s" % log_level]
        lines += ["domain = %s" % d for d in self.domains]
        for k, v in conf.items():
            if isinstance(v, bool):
                v = "yes" if v else "no"
            lines.append("%s = %s" % (k, v))
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        _servers.append(self)

    # -- running xmppctl
    def ctl(self, *args, input=None, timeout=30, conf=True):
        argv = [XMPPCTL] + (["-c", self.conf_path] if conf else []) + list(args)
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    def ctl_ok(self, *args, input=None):
        rc, o, e = self.ctl(*args, input=input)
        check(rc == 0, "xmppctl %s: exit %d" % (" ".join(args), rc), "stdout: " + o, "stderr: " + e)
        return o

    def start(self):
        rc, o, e = self.ctl("start", timeout=60)
        self.started = True
        self._remember_pids()
        check(rc == 0, "xmppctl start: exit %d" % rc, o, e)
        self.pids()
        return self

    def restart(self, instance=None):
        """`xmppctl start` again: it starts only what is not running."""
        rc, o, e = self.ctl("start", timeout=60)
        self._remember_pids()
        check(rc == 0, "xmppctl start (restart %s): exit %d" % (instance or "", rc), o, e)
        p = self.pids()
        if instance:
            check(instance in p, "%s not running after restart" % instance, p)
        return p

    def register(self, jid, password):
        rc, o, e = self.ctl("register", jid, input=password + "\n")
        check(rc == 0, "register %s: exit %d" % (jid, rc), o, e)

    def status(self):
        """Rows of `xmppctl status` as lists of columns."""
        rc, o, e = self.ctl("status")
        return rc, [l.split("\t") for l in o.splitlines() if l.strip()]

    def pids(self):
        """{instance: pid} of the daemons `xmppctl status` reports up."""
        _, rows = self.status()
        res = {}
        for r in rows:
            if len(r) >= 3 and r[2].isdigit():
                res[r[0]] = int(r[2])
                self._seen[int(r[2])] = r[0]
        return res

    def _remember_pids(self):
        run = os.path.join(self.state, "run")
        try:
            names = os.listdir(run)
        except OSError:
            return
        for n in names:
            if n.endswith(".pid"):
                try:
                    with open(os.path.join(run, n)) as f:
                        self._seen[int(f.read().strip())] = n[:-4]
                except (OSError, ValueError):
                    pass

    def _ours(self, pid):
        """pid is alive and is a daemon running with our config file."""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return self.conf_path.encode() in argv

    def kill(self, instance, sig=signal.SIGKILL):
        pid = self.pids().get(instance)
        check(pid is not None, "%s is not running" % instance)
        check(self._ours(pid), "pid %d is not our %s" % (pid, instance))
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 5
            while self._ours(pid) and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        return pid

    def log(self, instance):
        try:
            with open(os.path.join(self.state, "log", instance + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_size(self, instance):
        try:
            return os.path.getsize(os.path.join(self.state, "log", instance + ".log"))
        except OSError:
            return 0

    def wait_log(self, instance, pattern, timeout=5.0, since=0):
        """Wait until the log of instance (from byte offset since) matches
        the regex; returns the match or None."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log(instance)[since:])
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.05)

    async def await_log(self, instance, pattern, timeout=5.0, since=0):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log(instance)[since:])
            if m or time.monotonic() >= deadline:
                return m
            await asyncio.sleep(0.05)

    def sessions(self):
        """Rows of `xmppctl sessions`: jid c2s conn priority state since."""
        rc, o, e = self.ctl("sessions")
        check(rc == 0, "xmppctl sessions: exit %d" % rc, o, e)
        return [l.split("\t") for l in o.splitlines() if l.strip()]

    def rss_kib(self, field="VmRSS"):
        """Sum of a /proc/PID/status field (kB) over our daemons."""
        total = 0
        for inst, pid in self.pids().items():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith(field + ":"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def diag_logs(self, lines=6):
        """Warnings and errors of every daemon log, for a failed case."""
        try:
            names = sorted(os.listdir(os.path.join(self.state, "log")))
        except OSError:
            return
        for n in names:
            text = self.log(n[:-4]).splitlines()
            bad = [l for l in text if l[:3] in ("<0>", "<1>", "<2>", "<3>", "<4>")]
            if bad:
                diag("%s (warnings/errors, last %d):" % (n, lines))
                for l in bad[-lines:]:
                    diag("   " + l[:300])

    def stop(self):
        if self.stopped or not self.started:
            if not self.started and not self.stopped:
                self.stopped = True
                _rmtree_maybe(self)
            return
        self.stopped = True
        self._remember_pids()
        try:
            self.pids()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.ctl("stop", timeout=30)
        except Exception as e:  # noqa: BLE001
            diag("xmppctl stop: %s" % e)
        # whatever is left of ours: SIGKILL, only if it still runs our config
        for pid in list(self._seen):
            if _alive(pid) and self._ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        _rmtree_maybe(self)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st != "Z"
    except (OSError, IndexError):
        return False


def _rmtree_maybe(srv):
    import shutil
    if _failed[0] or os.environ.get("XMPPD_TEST_KEEP"):
        diag("state of the server kept in %s" % srv.dir)
        return
    shutil.rmtree(srv.dir, ignore_errors=True)


# ---------------------------------------------------------------- slixmpp client

_clients = []


class LoginFailed(Exception):
    def __init__(self, what, condition=None):
        super().__init__("%s%s" % (what, " (%s)" % condition if condition else ""))
        self.condition = condition


def _client_class():
    import slixmpp

    class _XC(slixmpp.ClientXMPP):
        # never ask DNS (which would resolve "localhost" with port 5222,
        # possibly someone else's server): connect where we are told
        async def get_dns_records(self, domain, port=None):
            return [(self._it_host, self._it_addr[0], self._it_addr[1])]

    return _XC


class Client:
    """A slixmpp client of srv. tls: 'starttls' (c2s_listen port), 'direct'
    (c2s_tls_listen port, XEP-0368) or 'none' (plaintext; needs
    allow_plaintext_auth). mech forces one SASL mechanism. After login()
    it has bound a resource; presence=True (default) sends initial presence
    with the given priority."""

    def __init__(self, srv, jid, password, tls="starttls", mech=None, presence=True, priority=None):
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        loop()
        self.srv = srv
        self.jid = jid
        self.tls = tls
        self.presence = presence
        self.priority = priority
        self.x = _client_class()(jid, password, sasl_mech=mech)
        x = self.x
        x._it_host = jid.split("@")[-1].split("/")[0]
        x._it_addr = ("127.0.0.1", srv.tls_port if tls == "direct" else srv.port)
        x.ssl_context.check_hostname = False
        x.ssl_context.verify_mode = ssl.CERT_NONE
        if tls == "none":
            x["feature_mechanisms"].unencrypted_plain = True
        x.whitespace_keepalive = False
        x.auto_reconnect = False
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.iqs = asyncio.Queue()
        self.stream_errors = []
        self.auth_failures = []
        self.disconnected = asyncio.Event()
        self._ready = loop().create_future()
        x.register_handler(Callback("it-msg", MatchXPath("{%s}message" % NS_CLIENT),
                                    lambda s: self.messages.put_nowait(s)))
        x.register_handler(Callback("it-pres", MatchXPath("{%s}presence" % NS_CLIENT),
                                    lambda s: self.presences.put_nowait(s)))
        x.add_event_handler("session_start", self._on_session)
        x.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        x.add_event_handler("failed_auth", self._on_failed_auth)
        x.add_event_handler("failed_all_auth", lambda _: self._fail(LoginFailed("authentication failed",
                            self.auth_failures[-1] if self.auth_failures else None)))
        x.add_event_handler("no_auth", lambda _: self._fail(LoginFailed("no usable SASL mechanism")))
        x.add_event_handler("connection_failed", lambda e: self._fail(LoginFailed("connection failed: %s" % e)))
        x.add_event_handler("disconnected", self._on_disconnected)
        _clients.append(self)

    def _on_failed_auth(self, stanza):
        cond = None
        for child in stanza.xml:
            if child.tag.startswith("{%s}" % NS_SASL) and not child.tag.endswith("}text"):
                cond = child.tag.split("}")[1]
        self.auth_failures.append(cond)

    def _fail(self, exc):
        if not self._ready.done():
            self._ready.set_exception(exc)

    def _on_session(self, _):
        if self.presence:
            if self.priority is not None:
                self.x.send_presence(ppriority=self.priority)
            else:
                self.x.send_presence()
        if not self._ready.done():
            self._ready.set_result(True)

    def _on_disconnected(self, reason):
        self.disconnected.set()
        self._fail(LoginFailed("disconnected during login: %s; stream errors %s" % (reason, self.stream_errors)))

    @property
    def full(self):
        return str(self.x.boundjid.full)

    @property
    def mechanism(self):
        m = self.x["feature_mechanisms"].mech
        return m.name if m else None

    async def login(self, timeout=10):
        self.x.connect(self.x._it_addr, use_ssl=self.tls == "direct",
                       force_starttls=self.tls == "starttls", disable_starttls=self.tls != "starttls")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise LoginFailed("no session within %s s (stream errors %s, auth failures %s)"
                              % (timeout, self.stream_errors, self.auth_failures))
        except LoginFailed:
            self.abort()
            raise
        if self.presence:
            await asyncio.sleep(0.05)
        return self

    def send(self, to, body, mtype="chat", **kw):
        self.x.send_message(mto=to, mbody=body, mtype=mtype, **kw)

    def send_xml(self, text):
        self.x.send_raw(text)

    async def message(self, timeout=5.0, pred=None):
        """The next message (matching pred); raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s: no message within %.1f s" % (self.jid, timeout))
            try:
                m = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                raise TimeoutError("%s: no message within %.1f s" % (self.jid, timeout)) from None
            if pred is None or pred(m):
                return m

    async def presence_(self, timeout=5.0, pred=None):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s: no presence within %.1f s" % (self.jid, timeout))
            try:
                p = await asyncio.wait_for(self.presences.get(), left)
            except asyncio.TimeoutError:
                raise TimeoutError("%s: no presence within %.1f s" % (self.jid, timeout)) from None
            if pred is None or pred(p):
                return p

    async def quiet(self, seconds=1.0, pred=None):
        """Messages (matching pred) received within seconds."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                m = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                return got
            if pred is None or pred(m):
                got.append(m)

    def drain(self):
        while not self.messages.empty():
            self.messages.get_nowait()
        while not self.presences.empty():
            self.presences.get_nowait()

    async def iq(self, xml_text, timeout=5.0):
        """Send an IQ given as XML text (its id is set when absent) and
        return the answer (result or error) as an ElementTree element."""
        from slixmpp.stanza import Iq
        from slixmpp.exceptions import IqError, IqTimeout
        el = ET.fromstring(xml_text)
        if el.tag == "iq":
            el.tag = "{%s}iq" % NS_CLIENT
        iq = Iq(self.x, xml=el)
        if not iq["id"]:
            iq["id"] = self.x.new_id()
        try:
            r = await iq.send(timeout=timeout)
        except IqError as e:
            return e.iq.xml
        except IqTimeout:
            raise TimeoutError("no answer to IQ %s within %s s" % (iq["id"], timeout)) from None
        return r.xml

    async def ping_server(self, timeout=5.0):
        r = await self.iq("<iq xmlns='jabber:client' type='get' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                          % self.x.boundjid.domain, timeout)
        check(r.get("type") == "result", "server ping failed", ET.tostring(r).decode())
        return r

    async def close(self, wait=1.0):
        if self.disconnected.is_set() or not self.x.transport:
            self.disconnected.set()
            return
        try:
            self.x.disconnect(wait=wait)
            await asyncio.wait_for(self.disconnected.wait(), wait + 2)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            self.abort()

    def abort(self):
        try:
            self.x.abort()
        except Exception:  # noqa: BLE001
            pass
        self.disconnected.set()

    async def wait_disconnected(self, timeout=5.0):
        try:
            await asyncio.wait_for(self.disconnected.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def _close_clients():
    for c in _clients:
        c.abort()
    try:
        _loop.run_until_complete(asyncio.sleep(0.05))
    except Exception:  # noqa: BLE001
        pass


async def clients(srv, *specs, **kw):
    """Log in several clients: specs are (jid, password) tuples."""
    cs = [Client(srv, j, p, **kw) for j, p in specs]
    await asyncio.gather(*(c.login() for c in cs))
    return cs


def error_condition(el):
    """(type, condition) of the <error/> child of a stanza element."""
    for e in el:
        if e.tag in ("{%s}error" % NS_CLIENT, "error"):
            for c in e:
                if c.tag.startswith("{%s}" % NS_STANZA_ERR) and not c.tag.endswith("}text"):
                    return e.get("type"), c.tag.split("}")[1]
            return e.get("type"), None
    return None, None


# ---------------------------------------------------------------- raw stream

class StreamClosed(Exception):
    pass


class Raw:
    """A raw XMPP stream over a blocking socket (optionally direct TLS).
    Every read has a timeout. Received top-level elements are parsed with
    ElementTree; self.text is everything received (decoded), for regexes."""

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=5.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.tls = False
        if tls:
            self._wrap()
        self.raw = b""
        self.eof = False
        self.stanzas = []
        self.stream_attrs = None
        self.stream_closed = False
        self._new_parser()

    def _wrap(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.tls = True

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None
        self.parse_error = None

    @property
    def text(self):
        return self.raw.decode("utf-8", "replace")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _feed(self, data):
        self.raw += data
        if self.parse_error:
            return
        try:
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    if self.depth == 0:
                        self.root = el
                        self.stream_attrs = dict(el.attrib)
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.stanzas.append(el)
                        self.root.remove(el)
                    elif self.depth == 0:
                        self.stream_closed = True
        except ET.ParseError as e:
            self.parse_error = e

    def read_some(self, timeout=None):
        """Read what is there (waiting up to timeout); False at EOF."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.eof = True
            return False
        self._feed(data)
        return True

    def next(self, timeout=None):
        """The next top-level element; None once the stream is closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.stanzas:
            if self.eof or self.stream_closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no element within %.1f s; received so far: %r" % (
                    self.timeout if timeout is None else timeout, self.text[-600:]))
            try:
                self.read_some(left)
            except socket.timeout:
                pass
        return self.stanzas.pop(0)

    def expect(self, tag, timeout=None):
        """The next element, which must have this {ns}tag."""
        el = self.next(timeout)
        check(el is not None, "stream closed while waiting for %s" % tag, self.text[-600:])
        check(el.tag == tag, "expected %s, got %s" % (tag, el.tag), ET.tostring(el).decode()[:600])
        return el

    def until_closed(self, timeout=None):
        """Read until EOF (or </stream:stream>); returns the elements seen.
        Raises TimeoutError when the server keeps the stream open."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen = []
        while True:
            while self.stanzas:
                seen.append(self.stanzas.pop(0))
            if self.eof:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("stream still open after %.1f s; received: %r" % (
                    self.timeout if timeout is None else timeout, self.text[-600:]))
            try:
                self.read_some(left)
            except socket.timeout:
                pass

    def stream_error(self, timeout=None):
        """Wait for a stream error and the end of the connection; returns
        the condition (None if the stream ended without one)."""
        els = self.until_closed(timeout)
        for el in els:
            if el.tag == "{%s}error" % NS_STREAMS:
                for c in el:
                    if c.tag.startswith("{%s}" % NS_STREAM_ERR) and not c.tag.endswith("}text"):
                        return c.tag.split("}")[1]
        # the parser may have choked on something: look at the text
        m = re.search(r"<(?:\w+:)?error[^>]*>\s*<([\w-]+)[^>]*xmlns=['\"]%s" % re.escape(NS_STREAM_ERR), self.text)
        return m.group(1) if m else None

    @staticmethod
    def header(to="localhost", version="1.0", xmlns=NS_CLIENT, stream_ns=NS_STREAMS, decl=True,
               extra=""):
        s = "<?xml version='1.0'?>" if decl else ""
        s += "<stream:stream xmlns='%s' xmlns:stream='%s'" % (xmlns, stream_ns)
        if to is not None:
            s += " to='%s'" % to
        if version is not None:
            s += " version='%s'" % version
        return s + extra + ">"

    def open(self, to="localhost", **kw):
        """Send a stream header and return <stream:features>."""
        self._new_parser()
        self.send(self.header(to=to, **kw))
        return self.expect("{%s}features" % NS_STREAMS)

    def starttls(self):
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        self.expect("{%s}proceed" % NS_TLS)
        self._wrap()
        self._new_parser()

    def auth_plain(self, user, password, mech="PLAIN"):
        import base64
        blob = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, blob))
        el = self.next()
        check(el is not None, "stream closed after <auth/>", self.text[-600:])
        if el.tag == "{%s}success" % NS_SASL:
            self._new_parser()
            return "success", None
        if el.tag == "{%s}failure" % NS_SASL:
            cond = [c.tag.split("}")[1] for c in el if not c.tag.endswith("}text")]
            return "failure", cond[0] if cond else None
        return "other", el

    def bind(self, resource=None):
        res = "<resource>%s</resource>" % resource if resource else ""
        self.send("<iq type='set' id='bind1'><bind xmlns='%s'>%s</bind></iq>" % (NS_BIND, res))
        el = self.expect("{%s}iq" % NS_CLIENT)
        check(el.get("type") == "result", "bind failed", ET.tostring(el).decode())
        return el.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)).text

    def login(self, user, password, resource=None, presence=True):
        """STARTTLS (unless already TLS), PLAIN, bind; returns the full JID."""
        self.open()
        if not self.tls:
            self.starttls()
            self.open()
        st, cond = self.auth_plain(user, password)
        check(st == "success", "PLAIN login of %s failed: %s" % (user, cond))
        self.open()
        self.jid = self.bind(resource)
        if presence:
            self.send("<presence/>")
        return self.jid

    def ping(self, ident="barrier", to="localhost", timeout=None):
        """Send a ping to the server; return the elements received before
        its answer (the answer itself is dropped)."""
        self.send("<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % (ident, to))
        before = []
        while True:
            el = self.next(timeout)
            check(el is not None, "stream closed before the ping answer", self.text[-600:])
            if el.tag == "{%s}iq" % NS_CLIENT and el.get("id") == ident:
                return before
            before.append(el)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mechanisms(features):
    """SASL mechanisms offered in a <stream:features> element."""
    m = features.find("{%s}mechanisms" % NS_SASL)
    return [] if m is None else [e.text for e in m.findall("{%s}mechanism" % NS_SASL)]


def tostr(el):
    return ET.tostring(el).decode() if el is not None else "None"


def json_ok(text, what):
    try:
        return json.loads(text)
    except ValueError as e:
        raise AssertionError("%s is not JSON: %s\n%s" % (what, e, text))
