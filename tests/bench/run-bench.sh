#!/bin/bash
# run-bench.sh -- run the same xmppd-bench scenarios against xmppd and Prosody,
# one after the other, on this machine, and print a side-by-side table.
#
# All server processes run pinned to CPU 0, the bench client to CPU 1.  Each
# scenario gets a freshly started server so that memory figures of one
# scenario are not polluted by the previous one.  Everything listens on
# 127.0.0.1 only, on free ports; everything started is stopped on exit.
#
# usage: run-bench.sh [-n USERS] [-i IDLE_USERS] [-l LOGIN_USERS] [-d SECONDS]
#                     [-r RATE] [-w WINDOW] [-s "login idle chat latency"]
#                     [-p PRESENCE_USERS] [-c CONTACTS] [-R CHANGES_PER_S]
#                     [-W CHANGES_IN_FLIGHT] [-L ROSTER_LOGIN_USERS]
#                     [-k ROSTER_ITEMS] [--only xmppd|prosody]
#                     [--tls none|starttls|direct]
#                     [--mech SCRAM-SHA-1|SCRAM-SHA-256|PLAIN] [-o FILE]
# Scenarios: login idle chat latency (both servers), presence and
# roster-login (xmppd only: they need rosters loaded in bulk, done with
# xmppctl roster-import).  See tests/bench/README.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

USERS=1000        # chat / latency users (pairs)
IDLE_USERS=10000  # idle scenario sessions
LOGIN_USERS=5000  # login scenario accounts
DURATION=10
RATE=5000
WINDOW=16
PRES_USERS=5000   # presence: users online
CONTACTS=50       # presence: contacts per user (a ring, subscription both)
PRES_RATE=1000    # presence: changes/s of the paced run
PRES_WINDOW=200   # presence: changes in flight in the capacity run
RL_USERS=2000     # roster-login: accounts of each of the two runs
RL_ITEMS=200      # roster-login: roster items of the second run
SCENARIOS="login idle chat latency"
ONLY=""
TLS=starttls
MECH=SCRAM-SHA-1
OUT=""
PASSWORD=benchpass
PREFIX=bench
DOMAIN=localhost
XMPPCTL=${XMPPCTL:-$ROOT/cmd/xmppctl/xmppctl}
PROSODY=${PROSODY:-/usr/bin/prosody}

die() { echo "run-bench: $*" >&2; exit 2; }
say() { echo "run-bench: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case "$1" in
	-n) USERS=$2; shift 2 ;;
	-i) IDLE_USERS=$2; shift 2 ;;
	-l) LOGIN_USERS=$2; shift 2 ;;
	-d) DURATION=$2; shift 2 ;;
	-r) RATE=$2; shift 2 ;;
	-w) WINDOW=$2; shift 2 ;;
	-p) PRES_USERS=$2; shift 2 ;;
	-c) CONTACTS=$2; shift 2 ;;
	-R) PRES_RATE=$2; shift 2 ;;
	-W) PRES_WINDOW=$2; shift 2 ;;
	-L) RL_USERS=$2; shift 2 ;;
	-k) RL_ITEMS=$2; shift 2 ;;
	-s) SCENARIOS=$2; shift 2 ;;
	-o) OUT=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--tls) TLS=$2; shift 2 ;;
	--mech) MECH=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see -h)" ;;
	esac
done
case "$TLS" in none|starttls|direct) ;; *) die "--tls must be none, starttls or direct" ;; esac
case "$ONLY" in ""|xmppd|prosody) ;; *) die "--only must be xmppd or prosody" ;; esac
case "$MECH" in SCRAM-SHA-1|SCRAM-SHA-256|PLAIN) ;; *) die "bad --mech" ;; esac
for v in USERS IDLE_USERS LOGIN_USERS DURATION RATE WINDOW PRES_USERS CONTACTS PRES_RATE PRES_WINDOW \
	RL_USERS RL_ITEMS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a positive integer"
done
[ $((USERS % 2)) -eq 0 ] || die "-n must be even (users are paired)"
[ $((CONTACTS % 2)) -eq 0 ] && [ "$CONTACTS" -ge 2 ] && [ "$CONTACTS" -lt "$PRES_USERS" ] ||
	die "-c must be even, at least 2 and less than -p"
[ $((RL_ITEMS % 2)) -eq 0 ] && [ "$RL_ITEMS" -ge 2 ] && [ "$RL_ITEMS" -lt "$RL_USERS" ] &&
	[ "$RL_ITEMS" -le 1000 ] || die "-k must be even, 2..1000 and less than -L"
[ "$PRES_RATE" -gt 0 ] && [ "$PRES_WINDOW" -gt 0 ] || die "-R and -W must be positive"
for s in $SCENARIOS; do
	case "$s" in login|idle|chat|latency|presence|roster-login) ;; *) die "unknown scenario $s" ;; esac
done
# Result rows of a scenario: presence and roster-login run twice each.
tags_of() {
	case $1 in
	presence) echo "presence presence-max" ;;
	roster-login) echo "roster-login-0 roster-login-k" ;;
	*) echo "$1" ;;
	esac
}
xmppd_only() { [ "$1" = presence ] || [ "$1" = roster-login ]; }

# ---------------------------------------------------------------- CPUs
NCPU=$(nproc)
SRV_PIN=(taskset -c 0)
CLI_PIN=(taskset -c 1)
if [ "$NCPU" -lt 2 ]; then
	say "warning: only $NCPU CPU; the client is not pinned apart from the server"
	CLI_PIN=()
fi

# ---------------------------------------------------------------- bench tool
WORK=$(mktemp -d /tmp/run-bench.XXXXXX)
SERVER_PIDS=()        # processes we started and must stop
XMPPD_CONF=""         # set while an xmppd instance may be running
BENCH_PID=""          # running xmppd-bench (under timeout)

cleanup() {
	local rc=$?
	set +e
	if [ -n "$BENCH_PID" ]; then
		kill -TERM "$BENCH_PID" 2>/dev/null
		wait "$BENCH_PID" 2>/dev/null
	fi
	if [ -n "$XMPPD_CONF" ] && [ -x "$XMPPCTL" ]; then
		timeout 30 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1
	fi
	for p in "${SERVER_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${SERVER_PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	if [ -n "${KEEP_WORK:-}" ]; then
		say "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH=${BENCH:-$HERE/xmppd-bench}
if [ ! -x "$BENCH" ] || [ "$HERE/xmppd-bench.c" -nt "$BENCH" ]; then
	BENCH=$WORK/xmppd-bench
	say "building $BENCH"
	gcc -O2 -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wshadow -Werror \
		"$HERE/xmppd-bench.c" -o "$BENCH" -lssl -lcrypto -lm || die "cannot build xmppd-bench"
fi

# ---------------------------------------------------------------- helpers
# Listening ports are taken below the ephemeral range, so that they cannot
# collide with the source ports of the benchmark's own connections.
EPH_LO=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPH_LO" -gt 12000 ] || EPH_LO=32768
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
port_used() { ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }
free_port() {
	local p
	for _ in $(seq 500); do
		p=$((10000 + RANDOM % (EPH_LO - 10000)))
		if ! port_used "$p"; then
			echo "$p"; return 0
		fi
	done
	die "no free port found"
}
wait_port() { # port timeout_s pid
	local i
	for i in $(seq $(($2 * 10))); do
		if listening "$1"; then return 0; fi
		if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
		sleep 0.1
	done
	return 1
}
stop_pid() {
	local p=$1
	kill -TERM "$p" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	local keep=()
	for q in "${SERVER_PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
	SERVER_PIDS=("${keep[@]+"${keep[@]}"}")
}
# jget JSON KEY -> value (numbers, true/false, or string without quotes)
jget() {
	printf '%s' "$1" | sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" | tr -d '"'
}

declare -A R   # R[server.key] = value

# Number of PREFIXn accounts the selected scenarios need (presence and
# roster-login have their own accounts, see run_xmppd).
needed_accounts() {
	local n=0 sc c
	for sc in $SCENARIOS; do
		case $sc in login) c=$LOGIN_USERS ;; idle) c=$IDLE_USERS ;; presence|roster-login) c=0 ;; *) c=$USERS ;; esac
		[ "$c" -gt "$n" ] && n=$c
	done
	echo "$n"
}

bench_port() { # tls-mode plain-port tls-port
	if [ "$1" = direct ]; then echo "$3"; else echo "$2"; fi
}

# run_scenario SERVER SCENARIO PORT PIDS [TAG]
# TAG (default SCENARIO) names the run in R[] and selects its arguments:
# presence (paced) and presence-max (capacity), roster-login-0 and
# roster-login-k are the two runs each of presence and roster-login.
run_scenario() {
	local srv=$1 sc=$2 port=$3 pids=$4 tag=${5:-$2} users args=() json rc=0 prefix=$PREFIX bsc=$2
	case "$tag" in
	login) users=$LOGIN_USERS; args=(--connect-rate 0 --max-pending 200) ;;
	idle) users=$IDLE_USERS; args=(--duration "$DURATION" --connect-rate 2000 --max-pending 200) ;;
	chat) users=$USERS; args=(--duration "$DURATION" --window "$WINDOW") ;;
	latency) users=$USERS; args=(--duration "$DURATION" --rate "$RATE" --window 1000) ;;
	presence) users=$PRES_USERS; prefix=pres
		args=(--contacts "$CONTACTS" --duration "$DURATION" --rate "$PRES_RATE" --connect-rate 0
			--max-pending 200 --settle-timeout 120) ;;
	presence-max) users=$PRES_USERS; prefix=pres; bsc=presence
		args=(--contacts "$CONTACTS" --duration "$DURATION" --rate 0 --window "$PRES_WINDOW"
			--connect-rate 0 --max-pending 200 --settle-timeout 120) ;;
	roster-login-0) users=$RL_USERS; prefix=rlz; bsc=login; args=(--roster-get --connect-rate 0 --max-pending 200) ;;
	roster-login-k) users=$RL_USERS; prefix=rlr; bsc=login; args=(--roster-get --connect-rate 0 --max-pending 200) ;;
	esac
	say "$srv: $tag, $users users, tls $TLS, $MECH"
	local cmd=("${CLI_PIN[@]}" "$BENCH" --host 127.0.0.1 --port "$port" --domain "$DOMAIN"
		--users "$users" --user-prefix "$prefix" --password "$PASSWORD" --tls "$TLS"
		--mech "$MECH" --scenario "$bsc" --server-pids "$pids" --key-cache "$WORK/keys"
		--json --quiet "${args[@]}")
	echo "${cmd[*]}" >>"$WORK/commands.txt"
	# In the background + wait, so that a signal stops the run at once.
	timeout $((DURATION + 400)) "${cmd[@]}" >"$WORK/$srv-$tag.json" 2>"$WORK/$srv-$tag.err" &
	BENCH_PID=$!
	wait "$BENCH_PID" || rc=$?
	BENCH_PID=""
	json=$(cat "$WORK/$srv-$tag.json")
	if [ -z "$json" ]; then
		say "$srv $tag: no result (exit $rc):"; sed 's/^/    /' "$WORK/$srv-$tag.err" | head -20 >&2
		R[$srv.$tag.ok]=error
		return 0
	fi
	[ $rc -eq 0 ] || { say "$srv $tag: FAILED (exit $rc)"; sed 's/^/    /' "$WORK/$srv-$tag.err" | head -10 >&2; }
	R[$srv.$tag.ok]=$([ "$(jget "$json" ok)" = true ] && echo ok || echo FAILED)
	R[$srv.$tag.users]=$users
	local k
	for k in logins_per_s login_p50_ms login_p99_ms kib_per_session server_rss_after_kib \
		msgs_per_s latency_p50_ms latency_p99_ms latency_max_ms lost reordered sent delivered \
		server_cpu_s server_cpu_s_per_10k client_cpu_run_s client_cpu_s pbkdf2_runs duration_s dropped \
		login_s roster_items_avg server_cpu_ms_per_login broadcasts_per_s deliveries_per_s bcast_p50_ms \
		bcast_p99_ms settle_s settle_timed_out initial_presence_stanzas changes expected deliveries \
		unexpected extra first_error; do
		R[$srv.$tag.$k]=$(jget "$json" "$k")
	done
}

# ---------------------------------------------------------------- Prosody
PROSODY_DIR=""
prosody_prepare() {
	PROSODY_DIR=$WORK/prosody
	mkdir -p "$PROSODY_DIR/data/localhost/accounts"
	# Self-signed P-256 certificate for localhost.
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$PROSODY_DIR/localhost.key" -out "$PROSODY_DIR/localhost.crt" \
		-days 2 -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" >/dev/null 2>&1 ||
		die "openssl req failed"
	# Accounts are written directly in Prosody's internal_hashed format
	# (data/<host>/accounts/<user>.dat), with one salt shared by all
	# accounts: SCRAM StoredKey/ServerKey are computed once with openssl.
	local md keylen hash_name salt iter=10000 sp ck sk svk
	if [ "$MECH" = SCRAM-SHA-256 ]; then md=sha256; keylen=32; hash_name=SHA-256
	else md=sha1; keylen=20; hash_name=SHA-1; fi
	PROSODY_HASH=$hash_name
	salt=$(cat /proc/sys/kernel/random/uuid)
	sp=$(openssl kdf -keylen $keylen -kdfopt digest:${md^^} -kdfopt "pass:$PASSWORD" \
		-kdfopt "salt:$salt" -kdfopt iter:$iter PBKDF2 | tr -d ':\n' | tr 'A-F' 'a-f')
	[ ${#sp} -eq $((keylen * 2)) ] || die "PBKDF2 with openssl kdf failed"
	ck=$(printf 'Client Key' | openssl dgst -$md -mac HMAC -macopt "hexkey:$sp" -binary | xxd -p -c 256)
	sk=$(printf '%s' "$ck" | xxd -r -p | openssl dgst -$md -binary | xxd -p -c 256)
	svk=$(printf 'Server Key' | openssl dgst -$md -mac HMAC -macopt "hexkey:$sp" -binary | xxd -p -c 256)
	local n i
	n=$(needed_accounts)
	say "prosody: writing $n accounts"
	local body
	body=$(printf 'return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};\n' \
		$iter "$salt" "$svk" "$sk")
	for ((i = 1; i <= n; i++)); do
		printf '%s\n' "$body" >"$PROSODY_DIR/data/localhost/accounts/$PREFIX$i.dat"
	done
}

prosody_config() { # plain_port tls_port
	local req=true plain=false
	if [ "$TLS" = none ]; then req=false; plain=true; fi
	cat >"$PROSODY_DIR/prosody.cfg.lua" <<EOF
-- Generated by tests/bench/run-bench.sh; see tests/bench/README.
pidfile = "$PROSODY_DIR/prosody.pid"
data_path = "$PROSODY_DIR/data"
run_as_root = true
daemonize = false
log = { warn = "$PROSODY_DIR/prosody.log" }
admins = { }
plugin_paths = { }
-- The modules of Debian's default prosody.cfg.lua, minus dialback (no s2s),
-- limits (rate limiting would throttle the benchmark) and the invites and
-- admin modules (not used, need extra set-up).
modules_enabled = {
	"disco"; "roster"; "saslauth"; "tls"; "blocklist"; "bookmarks"; "carbons";
	"pep"; "private"; "smacks"; "vcard4"; "vcard_legacy"; "csi_simple"; "ping";
	"register"; "time"; "uptime"; "version"; "posix";
}
modules_disabled = { "s2s"; "s2s_auth_certs"; "dialback"; "limits" }
limits = { }
allow_registration = false
gc = { mode = "generational" }
network_settings = { tcp_backlog = 1024 }
interfaces = { "127.0.0.1" }
c2s_ports = { $1 }
c2s_direct_tls_ports = { $2 }
http_ports = { }
https_ports = { }
s2s_ports = { }
c2s_require_encryption = $req
allow_unencrypted_plain_auth = $plain
authentication = "internal_hashed"
password_hash = "$PROSODY_HASH"
storage = "internal"
certificates = "$PROSODY_DIR"
ssl = { certificate = "$PROSODY_DIR/localhost.crt"; key = "$PROSODY_DIR/localhost.key" }
VirtualHost "$DOMAIN"
	ssl = { certificate = "$PROSODY_DIR/localhost.crt"; key = "$PROSODY_DIR/localhost.key" }
EOF
}

PROSODY_PID=""
prosody_start() {
	local p1 p2 try port
	for try in 1 2; do
		p1=$(free_port); p2=$(free_port)
		while [ "$p2" = "$p1" ]; do p2=$(free_port); done
		port=$(bench_port "$TLS" "$p1" "$p2")
		prosody_config "$p1" "$p2"
		echo "--- start $(date -u +%T) ports $p1 $p2" >>"$PROSODY_DIR/console.log"
		"${SRV_PIN[@]}" "$PROSODY" -F --config "$PROSODY_DIR/prosody.cfg.lua" \
			>>"$PROSODY_DIR/console.log" 2>&1 &
		PROSODY_PID=$!
		SERVER_PIDS+=("$PROSODY_PID")
		if wait_port "$port" 30 "$PROSODY_PID"; then
			PROSODY_PORT=$port
			return 0
		fi
		if kill -0 "$PROSODY_PID" 2>/dev/null; then
			say "prosody (pid $PROSODY_PID) is not listening on $port after 30 s (try $try)"
		else
			say "prosody exited during start-up (try $try)"
		fi
		stop_pid "$PROSODY_PID"
		say "console output and log:"
		tail -n 15 "$PROSODY_DIR/console.log" >&2 || true
		tail -n 15 "$PROSODY_DIR/prosody.log" >&2 || true
	done
	return 1
}

run_prosody() {
	[ -x "$PROSODY" ] || { say "prosody: $PROSODY not found; skipping"; R[prosody.skipped]=1; return 0; }
	if [ "$(needed_accounts)" = 0 ]; then
		local sc t
		for sc in $SCENARIOS; do for t in $(tags_of "$sc"); do R[prosody.$t.ok]="n/a"; done; done
		say "prosody: presence and roster-login are xmppd only; skipping prosody"
		return 0
	fi
	R[prosody.version]=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo "?")
	prosody_prepare
	local sc t
	for sc in $SCENARIOS; do
		if xmppd_only "$sc"; then
			for t in $(tags_of "$sc"); do R[prosody.$t.ok]="n/a"; done
			continue
		fi
		prosody_start || { R[prosody.$sc.ok]=error; continue; }
		run_scenario prosody "$sc" "$PROSODY_PORT" "$PROSODY_PID"
		stop_pid "$PROSODY_PID"
		PROSODY_PID=""
	done
}

# ---------------------------------------------------------------- xmppd
XMPPD_DIR=$WORK/xmppd
XMPPD_PORT=""
XMPPD_PIDS=""
NEED_RESTART=0

# Start xmppd on fresh ports (config rewritten, state kept); 0 or 1.
xmppd_start() {
	local p1 p2
	p1=$(free_port); p2=$(free_port)
	while [ "$p2" = "$p1" ]; do p2=$(free_port); done
	{
		echo "state_dir = $XMPPD_DIR/state"
		echo "c2s_listen = 127.0.0.1:$p1"
		echo "c2s_tls_listen = 127.0.0.1:$p2"
		[ "$TLS" = none ] && echo "allow_plaintext_auth = true"
		echo "domain = $DOMAIN"
		# extra lines (e.g. a "modules" line), to compare configurations
		[ -n "${XMPPD_EXTRA_CONF:-}" ] && printf '%s\n' "$XMPPD_EXTRA_CONF"
	} >"$XMPPD_DIR/xmppd.conf"
	XMPPD_CONF=$XMPPD_DIR/xmppd.conf
	if ! timeout 60 "${SRV_PIN[@]}" "$XMPPCTL" -c "$XMPPD_CONF" start >"$XMPPD_DIR/start.log" 2>&1; then
		say "xmppd: start failed:"; tail -20 "$XMPPD_DIR/start.log" >&2
		timeout 30 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1 || true
		XMPPD_CONF=""
		return 1
	fi
	XMPPD_PORT=$(bench_port "$TLS" "$p1" "$p2")
	XMPPD_PIDS=$("$XMPPCTL" -c "$XMPPD_CONF" status 2>/dev/null | awk -F'\t' '$3 ~ /^[0-9]+$/ {print $3}' | paste -sd, -)
	[ -n "$XMPPD_PIDS" ] || say "xmppd: warning: no PIDs from 'xmppctl status'; no RSS/CPU figures"
	R[xmppd.pids]=$XMPPD_PIDS
	return 0
}

xmppd_stop() {
	timeout 60 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1 || say "xmppd: stop failed"
	XMPPD_CONF=""
}

# xmppd_accounts PREFIX N K: once per run, with the server up: accounts
# PREFIX1..PREFIXN, with K > 0 the contact ring of xmppd-bench
# --print-roster loaded with xmppctl roster-import (timed), and an untimed
# login of every account so that the client's SCRAM key cache holds each
# account's salted keys (with per-user salts, client-side PBKDF2 would
# otherwise limit the login rate).  Sets NEED_RESTART=1 when it did
# anything, for a clean measurement on a freshly started server.
xmppd_accounts() {
	local prefix=$1 n=$2 k=$3 i t0 t1
	[ "$n" -gt 0 ] && [ ! -e "$XMPPD_DIR/accounts-$prefix" ] || return 0
	NEED_RESTART=1
	say "xmppd: importing $n accounts ${prefix}1..$prefix$n"
	for ((i = 1; i <= n; i++)); do
		printf '%s%d@%s\t%s\n' "$prefix" "$i" "$DOMAIN" "$PASSWORD"
	done | timeout 300 "$XMPPCTL" -c "$XMPPD_CONF" import-users >"$XMPPD_DIR/import-$prefix.log" 2>&1 ||
		{ say "xmppd: import-users failed:"; tail -5 "$XMPPD_DIR/import-$prefix.log" >&2; }
	if [ "$k" -gt 0 ]; then
		say "xmppd: roster-import of the contact ring of $prefix ($k contacts each, $((n * k)) items)"
		t0=$(date +%s.%N)
		"$BENCH" --users "$n" --user-prefix "$prefix" --domain "$DOMAIN" --contacts "$k" --print-roster |
			timeout 300 "${CLI_PIN[@]}" "$XMPPCTL" -c "$XMPPD_CONF" roster-import >"$XMPPD_DIR/roster-$prefix.log" 2>&1 ||
			{ say "xmppd: roster-import failed:"; tail -5 "$XMPPD_DIR/roster-$prefix.log" >&2; }
		t1=$(date +%s.%N)
		R[xmppd.import.$prefix]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
		echo "$BENCH --users $n --user-prefix $prefix --domain $DOMAIN --contacts $k --print-roster |" \
			"${CLI_PIN[*]} $XMPPCTL -c CONF roster-import   # ${R[xmppd.import.$prefix]} s" >>"$WORK/commands.txt"
	fi
	if [ "$MECH" != PLAIN ]; then
		say "xmppd: warm-up login of $n accounts $prefix* (fills the client's SCRAM key cache)"
		"${CLI_PIN[@]}" "$BENCH" --host 127.0.0.1 --port "$XMPPD_PORT" \
			--domain "$DOMAIN" --users "$n" --user-prefix "$prefix" --password "$PASSWORD" \
			--tls "$TLS" --mech "$MECH" --scenario login --connect-rate 0 --key-cache "$WORK/keys" \
			--json --quiet >"$XMPPD_DIR/warm-$prefix.json" 2>"$XMPPD_DIR/warm-$prefix.err" ||
			{ say "xmppd: warm-up login failed:"; head -5 "$XMPPD_DIR/warm-$prefix.err" >&2; }
	fi
	touch "$XMPPD_DIR/accounts-$prefix"
}

run_xmppd() {
	if [ ! -x "$XMPPCTL" ]; then
		say "xmppd: $XMPPCTL not found (not built yet?); skipping xmppd"
		R[xmppd.skipped]=1
		return 0
	fi
	local sc n t
	mkdir -p "$XMPPD_DIR/state"
	n=$(needed_accounts)
	for sc in $SCENARIOS; do
		if ! xmppd_start; then
			for t in $(tags_of "$sc"); do R[xmppd.$t.ok]=error; done
			continue
		fi
		NEED_RESTART=0
		case $sc in
		presence) xmppd_accounts pres "$PRES_USERS" "$CONTACTS" ;;
		roster-login) xmppd_accounts rlz "$RL_USERS" 0; xmppd_accounts rlr "$RL_USERS" "$RL_ITEMS" ;;
		*) xmppd_accounts "$PREFIX" "$n" 0 ;;
		esac
		if [ "$NEED_RESTART" = 1 ]; then
			xmppd_stop
			if ! xmppd_start; then
				for t in $(tags_of "$sc"); do R[xmppd.$t.ok]=error; done
				continue
			fi
		fi
		# each run of a scenario on a freshly started server
		local first=1
		for t in $(tags_of "$sc"); do
			if [ $first = 0 ]; then
				xmppd_stop
				xmppd_start || { R[xmppd.$t.ok]=error; continue; }
			fi
			first=0
			run_scenario xmppd "$sc" "$XMPPD_PORT" "$XMPPD_PIDS" "$t"
		done
		xmppd_stop
		if [ "$sc" = roster-login ]; then
			R[xmppd.roster-login.ratio]=$(awk -v a="${R[xmppd.roster-login-k.logins_per_s]:-0}" \
				-v b="${R[xmppd.roster-login-0.logins_per_s]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
		fi
	done
}

# ---------------------------------------------------------------- run
SERVERS=()
[ "$ONLY" != prosody ] && SERVERS+=(xmppd)
[ "$ONLY" != xmppd ] && SERVERS+=(prosody)
for s in "${SERVERS[@]}"; do
	"run_$s"
done

# ---------------------------------------------------------------- table
v() { local x=${R[$1]:-}; echo "${x:--}"; }
fmt() { # key scenario -> value per server
	local line
	line=$(printf '  %-34s' "$1")
	for s in "${SERVERS[@]}"; do
		line+=$(printf ' %16s' "$(v "$s.$2")")
	done
	echo "$line"
}
{
	echo "xmppd vs Prosody -- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $NCPU CPUs, servers on CPU 0, client on CPU 1"
	echo "tls=$TLS mech=$MECH users=$USERS idle=$IDLE_USERS login=$LOGIN_USERS duration=${DURATION}s rate=$RATE window=$WINDOW"
	case " $SCENARIOS " in *" presence "*|*" roster-login "*)
		echo "presence: users=$PRES_USERS contacts=$CONTACTS rate=$PRES_RATE/s window=$PRES_WINDOW;" \
			"roster-login: users=$RL_USERS items=$RL_ITEMS (both xmppd only)" ;;
	esac
	[ -n "${R[prosody.version]:-}" ] && echo "prosody ${R[prosody.version]}"
	hdr=$(printf '  %-34s' "")
	for s in "${SERVERS[@]}"; do
		if [ -n "${R[$s.skipped]:-}" ]; then hdr+=$(printf ' %16s' "$s(skipped)"); else hdr+=$(printf ' %16s' "$s"); fi
	done
	echo "$hdr"
	for sc in $SCENARIOS; do
		case $sc in
		presence)
			echo " presence (xmppd only): $PRES_USERS users online, $CONTACTS contacts each (ring, both)"
			fmt "roster-import of $((PRES_USERS * CONTACTS)) items s" "import.pres"
			echo "  paced, $PRES_RATE presence changes/s:"
			fmt "result" "presence.ok"
			fmt "initial presence stanzas received" "presence.initial_presence_stanzas"
			fmt "logins (all users) s" "presence.login_s"
			fmt "storm: last stanza at s" "presence.settle_s"
			fmt "broadcasts/s (complete)" "presence.broadcasts_per_s"
			fmt "deliveries/s" "presence.deliveries_per_s"
			fmt "delivery latency p50 ms" "presence.latency_p50_ms"
			fmt "delivery latency p99 ms" "presence.latency_p99_ms"
			fmt "delivery latency max ms" "presence.latency_max_ms"
			fmt "broadcast complete p99 ms" "presence.bcast_p99_ms"
			fmt "lost deliveries" "presence.lost"
			fmt "to non-contacts" "presence.unexpected"
			fmt "server CPU s / 10k deliveries" "presence.server_cpu_s_per_10k"
			fmt "client CPU s (of ${DURATION}+ s)" "presence.client_cpu_run_s"
			echo "  capacity, unpaced, $PRES_WINDOW changes in flight:"
			fmt "result" "presence-max.ok"
			fmt "broadcasts/s (complete)" "presence-max.broadcasts_per_s"
			fmt "deliveries/s" "presence-max.deliveries_per_s"
			fmt "delivery latency p50 ms" "presence-max.latency_p50_ms"
			fmt "delivery latency p99 ms" "presence-max.latency_p99_ms"
			fmt "lost deliveries" "presence-max.lost"
			fmt "server CPU s / 10k deliveries" "presence-max.server_cpu_s_per_10k"
			fmt "client CPU s (of ${DURATION}+ s)" "presence-max.client_cpu_run_s"
			continue ;;
		roster-login)
			echo " roster-login (xmppd only): $RL_USERS logins each, roster fetched before the login counts"
			fmt "roster-import of $((RL_USERS * RL_ITEMS)) items s" "import.rlr"
			fmt "result, 0-item rosters" "roster-login-0.ok"
			fmt "logins/s, 0-item rosters" "roster-login-0.logins_per_s"
			fmt "login latency p50 ms" "roster-login-0.login_p50_ms"
			fmt "server CPU ms / login" "roster-login-0.server_cpu_ms_per_login"
			fmt "result, $RL_ITEMS-item rosters" "roster-login-k.ok"
			fmt "logins/s, $RL_ITEMS-item rosters" "roster-login-k.logins_per_s"
			fmt "login latency p50 ms" "roster-login-k.login_p50_ms"
			fmt "server CPU ms / login" "roster-login-k.server_cpu_ms_per_login"
			fmt "items fetched per login" "roster-login-k.roster_items_avg"
			fmt "ratio $RL_ITEMS-item / 0-item (> 0.5)" "roster-login.ratio"
			continue ;;
		esac
		echo " $sc"
		fmt "result" "$sc.ok"
		case $sc in
		login)
			fmt "logins/s" "$sc.logins_per_s"
			fmt "login latency p50 ms" "$sc.login_p50_ms"
			fmt "login latency p99 ms" "$sc.login_p99_ms"
			fmt "client CPU s" "$sc.client_cpu_s"
			fmt "PBKDF2 runs in client" "$sc.pbkdf2_runs" ;;
		idle)
			fmt "sessions" "$sc.users"
			fmt "server RSS after login KiB" "$sc.server_rss_after_kib"
			fmt "KiB per session" "$sc.kib_per_session"
			fmt "sessions dropped" "$sc.dropped" ;;
		chat|latency)
			fmt "delivered msgs/s" "$sc.msgs_per_s"
			fmt "sent" "$sc.sent"
			fmt "lost" "$sc.lost"
			fmt "reordered" "$sc.reordered"
			fmt "latency p50 ms" "$sc.latency_p50_ms"
			fmt "latency p99 ms" "$sc.latency_p99_ms"
			fmt "latency max ms" "$sc.latency_max_ms"
			fmt "server CPU s" "$sc.server_cpu_s"
			fmt "server CPU s / 10k msgs" "$sc.server_cpu_s_per_10k"
			fmt "client CPU s (of ${DURATION}+ s)" "$sc.client_cpu_run_s" ;;
		esac
	done
	for s in "${SERVERS[@]}"; do
		for sc in $SCENARIOS; do
			for t in $(tags_of "$sc"); do
				e=${R[$s.$t.first_error]:-}
				[ -n "$e" ] && [ "$e" != null ] && echo "  $s $t first error: $e"
			done
		done
	done
	echo "commands:"
	sed 's/^/  /' "$WORK/commands.txt" 2>/dev/null || true
} | tee "$WORK/table.txt"
[ -n "$OUT" ] && cp "$WORK/table.txt" "$OUT"
fail=0
for s in "${SERVERS[@]}"; do
	[ -n "${R[$s.skipped]:-}" ] && continue
	for sc in $SCENARIOS; do
		for t in $(tags_of "$sc"); do
			case "${R[$s.$t.ok]:-}" in ok|n/a) ;; *) fail=1 ;; esac
		done
	done
done
exit $fail
