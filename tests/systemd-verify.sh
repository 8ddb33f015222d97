#!/bin/sh
# systemd-verify.sh - the systemd units as `make install` installs them, and
# the sd_notify protocol the daemons speak to systemd. Speaks TAP.
#
# 1. `make install DESTDIR=TMP` from the build tree ($XMPPD_BUILDDIR, set by
#    `make check`; else the tree above this script).
# 2. `systemd-analyze verify` on each installed unit. verify resolves
#    ExecStart= literally and fails when the binary does not exist, so it
#    runs on copies whose ExecStart= has the DESTDIR put in front (the only
#    change); everything else is checked as installed. Not --root=TMP: that
#    would also look up ExecReload's /bin/kill and the units ours depend on
#    (sysinit.target, network-online.target...) inside TMP. Documentation=
#    pages are looked up among the installed man pages (MANPATH). verify
#    exits 0 after warnings such as an unknown key, so any output fails.
# 3. What verify does not check: each service is Type=notify with a
#    WatchdogSec=, runs the installed daemon with -c SYSCONFDIR/xmppd/
#    xmppd.conf, and the sysusers.d, tmpfiles.d and example files are there
#    (the example must load in xmppctl, as given and with every key set).
# 4. Without systemd as PID 1 (as in CI) no unit can be started: instead
#    each daemon runs as systemd would run it, with NOTIFY_SOCKET naming a
#    datagram socket of ours and WATCHDOG_USEC=2000000, and must send
#    READY=1 from its own pid (NotifyAccess=main), WATCHDOG=1 about every
#    second from then on, and STOPPING=1 and exit 0 on SIGTERM.
# Without systemd-analyze (or python3, openssl) those tests are skipped.
# Nothing is left behind: TMP is removed and the daemons are stopped.

if [ -n "${XMPPD_BUILDDIR:-}" ]; then
    build=$XMPPD_BUILDDIR
else
    build=$(cd "$(dirname "$0")/.." && pwd)
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)

UNITS="xmpp-router.service xmpp-sm@.service xmpp-c2s@.service xmpp-listen@.service xmppd.target"
SERVICES="xmpp-router.service xmpp-sm@.service xmpp-c2s@.service xmpp-listen@.service"
echo "1..24"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/xmppd-systemd.XXXXXX") || { echo "Bail out! mktemp"; exit 1; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
n=0
rc=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); echo "not ok $n - $*"; rc=1; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /'; }

# ---- 1. install into a DESTDIR (without the make flags of the `make check`
# that runs us: its jobserver is not ours)
dest=$tmp/dest
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$build" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
    ok "make install DESTDIR"
else
    notok "make install DESTDIR"
    tail -20 "$tmp/install.log" | diag
    echo "Bail out! nothing installed"
    exit 1
fi
unitdir=$(dirname "$(find "$dest" -name xmppd.target | head -1)")
sbin_router=$(find "$dest" -type f -name xmpp-router | head -1)
sbindir=${sbin_router%/xmpp-router}          # DESTDIR + sbindir
example=$(find "$dest" -type f -name xmppd.conf.example | head -1)

# ---- 2. systemd-analyze verify
mkdir "$tmp/verify"
for u in $UNITS; do
    sed "s|^ExecStart=/|ExecStart=$dest/|" "$unitdir/$u" >"$tmp/verify/$u" 2>/dev/null
done
if command -v man >/dev/null 2>&1; then
    man_opt=--man=yes
    MANPATH=$(dirname "$(find "$dest" -type d -name man8 | head -1)")
    export MANPATH
else
    man_opt=--man=no
fi
for u in $UNITS; do
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        skip "systemd-analyze verify $u" "systemd-analyze is not installed"
        continue
    fi
    if [ ! -f "$unitdir/$u" ]; then
        notok "systemd-analyze verify $u"
        echo "$unitdir/$u: not installed" | diag
        continue
    fi
    out=$(systemd-analyze verify "$man_opt" "$tmp/verify/$u" 2>&1)
    status=$?
    if [ $status -eq 0 ] && [ -z "$out" ]; then
        ok "systemd-analyze verify $u"
    else
        notok "systemd-analyze verify $u"
        printf '%s\n' "$out" | diag
    fi
done

# ---- 3. what verify does not check
sysconf_example_dir=${example%/xmppd.conf.example}
conf=${sysconf_example_dir#"$dest"}/xmppd.conf
for u in $SERVICES; do
    f=$unitdir/$u
    daemon=${u%%[@.]*}
    why=""
    grep -qx 'Type=notify' "$f" 2>/dev/null || why="$why no Type=notify;"
    grep -qx 'NotifyAccess=main' "$f" 2>/dev/null || why="$why no NotifyAccess=main;"
    grep -q '^WatchdogSec=[1-9]' "$f" 2>/dev/null || why="$why no WatchdogSec=;"
    exe=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$f" 2>/dev/null)
    [ -n "$exe" ] && [ -x "$dest$exe" ] && [ "${exe##*/}" = "$daemon" ] ||
        why="$why ExecStart= '$exe' is not the installed $daemon;"
    grep -q "^ExecStart=[^ ]* -c $conf -i " "$f" 2>/dev/null || why="$why ExecStart= does not read $conf;"
    if [ -z "$why" ]; then
        ok "$u: Type=notify, WatchdogSec=, runs $exe -c $conf"
    else
        notok "$u:$why"
    fi
done
sysusers=$(find "$dest" -path '*/sysusers.d/xmppd.conf' | head -1)
tmpfiles=$(find "$dest" -path '*/tmpfiles.d/xmppd.conf' | head -1)
if [ -n "$sysusers" ] && grep -q '^u xmppd ' "$sysusers" &&
   [ -n "$tmpfiles" ] && grep -q '^D! /var/lib/xmppd/run ' "$tmpfiles" &&
   grep -qx 'User=xmppd' "$unitdir/xmpp-router.service"; then
    ok "sysusers.d and tmpfiles.d entries installed, for the units' user xmppd"
else
    notok "sysusers.d/xmppd.conf (user xmppd) or tmpfiles.d/xmppd.conf missing or wrong"
fi
# The example must load as it is and with every key uncommented: xmppctl
# exits 1 for a configuration error, 3 when no daemon answers.
if [ -z "$example" ]; then
    notok "xmppd.conf.example installed"
else
    sed -e 's/^#\([a-z_]* = \)/\1/' -e 's/^#\(\[host \)/\1/' "$example" >"$tmp/all-keys.conf"
    why=""
    for c in "$example" "$tmp/all-keys.conf"; do
        out=$("$sbindir/xmppctl" -c "$c" status 2>&1)
        status=$?
        [ $status -eq 0 ] || [ $status -eq 3 ] || why="$why $(basename "$c"): exit $status: $out;"
    done
    keys=$(sed -n 's/^    { "\([a-z_]*\)", V_.*/\1/p' "${XMPPD_SRCDIR:-$build}/libcore/config.c")
    for k in $keys domain tls_cert tls_key; do
        grep -q "^$k = " "$tmp/all-keys.conf" || why="$why key $k not in the example;"
    done
    if [ -z "$why" ]; then
        ok "xmppd.conf.example installed, names every key, loads"
    else
        notok "xmppd.conf.example:$why"
    fi
fi

# ---- 4. sd_notify, as systemd runs the daemons
if ! command -v openssl >/dev/null 2>&1 || ! "$PY" -c 'import socket' >/dev/null 2>&1; then
    for i in 1 2 3 4 5 6 7 8 9 10 11 12; do skip "sd_notify" "python3 or openssl is not installed"; done
    exit $rc
fi
state=$tmp/state
mkdir -p "$state/tls"
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$state/tls/localhost.key" -out "$state/tls/localhost.crt" >"$tmp/openssl.log" 2>&1; then
    diag <"$tmp/openssl.log"
fi
first=$((n + 1))
"$PY" - "$tmp" "$sbindir" "$first" <<'EOF' || rc=1
import os, select, signal, socket, struct, subprocess, sys, time

tmp, sbindir, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = os.path.join(tmp, "state")
n = [first - 1]
failed = [0]

def tap(good, what, details=""):
    n[0] += 1
    print("%s %d - %s" % ("ok" if good else "not ok", n[0], what))
    if not good:
        failed[0] = 1
        for line in details.splitlines():
            print("# " + line)
    sys.stdout.flush()

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

p1 = free_port()
p2 = free_port()
while p2 == p1:
    p2 = free_port()
conf = os.path.join(tmp, "xmppd.conf")
with open(conf, "w") as f:
    f.write("state_dir = %s\nc2s_listen = 127.0.0.1:%d\nc2s_tls_listen = 127.0.0.1:%d\n"
            "heartbeat_ms = 200\npeer_timeout_ms = 1000\n" % (state, p1, p2))

daemons = [("router-1", "xmpp-router"), ("sm-0", "xmpp-sm"), ("c2s-1", "xmpp-c2s"), ("listen-1", "xmpp-listen")]
procs = {}
socks = {}
msgs = {}  # instance -> [(time, pid, text)]

def recv_all(inst, timeout):
    """Read what instance inst sent within timeout seconds."""
    s = socks[inst]
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        r, _, _ = select.select([s], [], [], left)
        if not r:
            return
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        for line in data.decode("utf-8", "replace").split("\n"):
            if line:
                msgs[inst].append((time.monotonic(), pid, line))

def wait_for(inst, text, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(m[2] == text for m in msgs[inst]):
            return True
        recv_all(inst, min(0.2, max(0.0, end - time.monotonic())))
        if procs[inst].poll() is not None:
            recv_all(inst, 0.1)
            return any(m[2] == text for m in msgs[inst])
    return any(m[2] == text for m in msgs[inst])

def log_tail(inst):
    try:
        with open(os.path.join(tmp, inst + ".log"), errors="replace") as f:
            return "".join(f.readlines()[-8:])
    except OSError:
        return ""

try:
    for inst, prog in daemons:
        path = os.path.join(tmp, "notify-" + inst)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        s.bind(path)
        socks[inst] = s
        msgs[inst] = []
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
        env.pop("XMPPD_STATE_DIR", None)
        with open(os.path.join(tmp, inst + ".log"), "w") as log:
            procs[inst] = subprocess.Popen([os.path.join(sbindir, prog), "-c", conf, "-i", inst],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        got = wait_for(inst, "READY=1", 10)
        pids = {m[1] for m in msgs[inst] if m[2] == "READY=1"}
        tap(got and pids == {procs[inst].pid}, "%s: READY=1 from its main pid" % prog,
            "messages: %r\npid %d\n%s" % (msgs[inst], procs[inst].pid, log_tail(inst)))
    # WATCHDOG_USEC=2 s: a WATCHDOG=1 every second from the loop. Watch for
    # 3.5 s after the last daemon is ready: each must have sent at least 3,
    # never more than 1.5 s apart (a stuck loop would be killed at 2 s).
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.5:
        for inst, _ in daemons:
            recv_all(inst, 0.05)
    for inst, prog in daemons:
        wd = [m for m in msgs[inst] if m[2] == "WATCHDOG=1"]
        times = [m[0] for m in wd if m[0] >= t0]
        gaps = [b - a for a, b in zip(times, times[1:])]
        good = len(times) >= 3 and max(gaps) < 1.5 and {m[1] for m in wd} == {procs[inst].pid}
        tap(good, "%s: WATCHDOG=1 every WATCHDOG_USEC/2 from its main pid" % prog,
            "%d since t0, gaps %r, senders %r" % (len(times), gaps, {m[1] for m in wd}))
    for inst, prog in reversed(daemons):
        p = procs[inst]
        p.send_signal(signal.SIGTERM)
        try:
            status = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        recv_all(inst, 0.2)
        stopping = any(m[2] == "STOPPING=1" for m in msgs[inst])
        tap(stopping and status == 0, "%s: STOPPING=1 and exit 0 on SIGTERM" % prog,
            "exit status %r, messages %r\n%s" % (status, [m[2] for m in msgs[inst]][-3:], log_tail(inst)))
finally:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()
    for s in socks.values():
        s.close()
while n[0] < first - 1 + 12:
    tap(False, "sd_notify: not run (see above)")
sys.exit(failed[0])
EOF
exit $rc
