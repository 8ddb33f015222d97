#!/bin/sh
# man-lint.sh - every manual page must be clean under `mandoc -Tlint -W warning`.
# Speaks TAP (one test per page). Finds the pages in $XMPPD_SRCDIR/man, set by
# `make check` (also from a VPATH build directory), else in ../man beside this
# script. Without mandoc every page is skipped, not failed.
PAGES="xmppctl.8 xmpp-listen.8 xmpp-c2s.8 xmpp-router.8 xmpp-sm.8 xmppd.conf.5 xmppd-protocol.7 xmppd-trace.7 xmppd-modules.7"

if [ -n "${XMPPD_SRCDIR:-}" ]; then
    top=$XMPPD_SRCDIR
else
    top=$(cd "$(dirname "$0")/.." && pwd)
fi

set -- $PAGES
echo "1..$#"
n=0
rc=0
for page in $PAGES; do
    n=$((n + 1))
    f=$top/man/$page
    if ! command -v mandoc >/dev/null 2>&1; then
        echo "ok $n - man/$page # SKIP mandoc is not installed"
        continue
    fi
    if [ ! -f "$f" ]; then
        echo "not ok $n - man/$page"
        echo "# $f: no such file"
        rc=1
        continue
    fi
    out=$(mandoc -Tlint -W warning "$f" 2>&1)
    status=$?
    if [ $status -eq 0 ] && [ -z "$out" ]; then
        echo "ok $n - man/$page"
    else
        echo "not ok $n - man/$page"
        printf '%s\n' "$out" | sed 's/^/# /'
        rc=1
    fi
done
exit $rc
