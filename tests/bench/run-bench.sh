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
#                     [--only xmppd|prosody] [--tls none|starttls|direct]
#                     [--mech SCRAM-SHA-1|SCRAM-SHA-256|PLAIN] [-o FILE]
# See tests/bench/README.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

USERS=1000        # chat / latency users (pairs)
IDLE_USERS=10000  # idle scenario sessions
LOGIN_USERS=5000  # login scenario accounts
DURATION=10
RATE=5000
WINDOW=16
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
for v in USERS IDLE_USERS LOGIN_USERS DURATION RATE WINDOW; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a positive integer"
done
[ $((USERS % 2)) -eq 0 ] || die "-n must be even (users are paired)"
for s in $SCENARIOS; do
	case "$s" in login|idle|chat|latency) ;; *) die "unknown scenario $s" ;; esac
done

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

# Number of accounts the selected scenarios need.
needed_accounts() {
	local n=0 sc c
	for sc in $SCENARIOS; do
		case $sc in login) c=$LOGIN_USERS ;; idle) c=$IDLE_USERS ;; *) c=$USERS ;; esac
		[ "$c" -gt "$n" ] && n=$c
	done
	echo "$n"
}

bench_port() { # tls-mode plain-port tls-port
	if [ "$1" = direct ]; then echo "$3"; else echo "$2"; fi
}

# run_scenario SERVER SCENARIO PORT PIDS
run_scenario() {
	local srv=$1 sc=$2 port=$3 pids=$4 users args=() json rc=0
	case "$sc" in
	login) users=$LOGIN_USERS; args=(--connect-rate 0 --max-pending 200) ;;
	idle) users=$IDLE_USERS; args=(--duration "$DURATION" --connect-rate 2000 --max-pending 200) ;;
	chat) users=$USERS; args=(--duration "$DURATION" --window "$WINDOW") ;;
	latency) users=$USERS; args=(--duration "$DURATION" --rate "$RATE" --window 1000) ;;
	esac
	say "$srv: $sc, $users users, tls $TLS, $MECH"
	local cmd=("${CLI_PIN[@]}" "$BENCH" --host 127.0.0.1 --port "$port" --domain "$DOMAIN"
		--users "$users" --user-prefix "$PREFIX" --password "$PASSWORD" --tls "$TLS"
		--mech "$MECH" --scenario "$sc" --server-pids "$pids" --key-cache "$WORK/keys"
		--json --quiet "${args[@]}")
	echo "${cmd[*]}" >>"$WORK/commands.txt"
	# In the background + wait, so that a signal stops the run at once.
	timeout $((DURATION + 300)) "${cmd[@]}" >"$WORK/$srv-$sc.json" 2>"$WORK/$srv-$sc.err" &
	BENCH_PID=$!
	wait "$BENCH_PID" || rc=$?
	BENCH_PID=""
	json=$(cat "$WORK/$srv-$sc.json")
	if [ -z "$json" ]; then
		say "$srv $sc: no result (exit $rc):"; sed 's/^/    /' "$WORK/$srv-$sc.err" | head -20 >&2
		R[$srv.$sc.ok]=error
		return 0
	fi
	[ $rc -eq 0 ] || { say "$srv $sc: FAILED (exit $rc)"; sed 's/^/    /' "$WORK/$srv-$sc.err" | head -10 >&2; }
	R[$srv.$sc.ok]=$([ "$(jget "$json" ok)" = true ] && echo ok || echo FAILED)
	R[$srv.$sc.users]=$users
	local k
	for k in logins_per_s login_p50_ms login_p99_ms kib_per_session server_rss_after_kib \
		msgs_per_s latency_p50_ms latency_p99_ms latency_max_ms lost reordered sent delivered \
		server_cpu_s server_cpu_s_per_10k client_cpu_run_s client_cpu_s pbkdf2_runs duration_s dropped \
		first_error; do
		R[$srv.$sc.$k]=$(jget "$json" "$k")
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
	R[prosody.version]=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo "?")
	prosody_prepare
	local sc
	for sc in $SCENARIOS; do
		prosody_start || { R[prosody.$sc.ok]=error; continue; }
		run_scenario prosody "$sc" "$PROSODY_PORT" "$PROSODY_PID"
		stop_pid "$PROSODY_PID"
		PROSODY_PID=""
	done
}

# ---------------------------------------------------------------- xmppd
run_xmppd() {
	if [ ! -x "$XMPPCTL" ]; then
		say "xmppd: $XMPPCTL not found (not built yet?); skipping xmppd"
		R[xmppd.skipped]=1
		return 0
	fi
	local dir=$WORK/xmppd sc p1 p2 n i pids
	mkdir -p "$dir/state"
	n=$(needed_accounts)
	for sc in $SCENARIOS; do
		p1=$(free_port); p2=$(free_port)
		while [ "$p2" = "$p1" ]; do p2=$(free_port); done
		{
			echo "state_dir = $dir/state"
			echo "c2s_listen = 127.0.0.1:$p1"
			echo "c2s_tls_listen = 127.0.0.1:$p2"
			[ "$TLS" = none ] && echo "allow_plaintext_auth = true"
			echo "domain = $DOMAIN"
		} >"$dir/xmppd.conf"
		XMPPD_CONF=$dir/xmppd.conf
		if ! timeout 60 "${SRV_PIN[@]}" "$XMPPCTL" -c "$XMPPD_CONF" start >"$dir/start.log" 2>&1; then
			say "xmppd: start failed:"; tail -20 "$dir/start.log" >&2
			R[xmppd.$sc.ok]=error
			timeout 30 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1 || true
			XMPPD_CONF=""
			continue
		fi
		if [ ! -e "$dir/imported" ]; then
			say "xmppd: importing $n accounts"
			for ((i = 1; i <= n; i++)); do
				printf '%s%d@%s\t%s\n' "$PREFIX" "$i" "$DOMAIN" "$PASSWORD"
			done | timeout 300 "$XMPPCTL" -c "$XMPPD_CONF" import-users >"$dir/import.log" 2>&1 ||
				{ say "xmppd: import-users failed:"; tail -5 "$dir/import.log" >&2; }
			touch "$dir/imported"
		fi
		pids=$("$XMPPCTL" -c "$XMPPD_CONF" status 2>/dev/null | awk -F'\t' '$3 ~ /^[0-9]+$/ {print $3}' | paste -sd, -)
		[ -n "$pids" ] || say "xmppd: warning: no PIDs from 'xmppctl status'; no RSS/CPU figures"
		R[xmppd.pids]=$pids
		if [ ! -e "$dir/warm" ] && [ "$MECH" != PLAIN ]; then
			# Untimed login of every account so that the client's SCRAM
			# key cache holds each account's salted keys: with per-user
			# salts, client-side PBKDF2 would otherwise limit the login
			# rate.  Then restart the server for a clean measurement.
			say "xmppd: warm-up login of $n accounts (fills the client's SCRAM key cache)"
			"${CLI_PIN[@]}" "$BENCH" --host 127.0.0.1 --port "$(bench_port "$TLS" "$p1" "$p2")" \
				--domain "$DOMAIN" --users "$n" --user-prefix "$PREFIX" --password "$PASSWORD" \
				--tls "$TLS" --mech "$MECH" --scenario login --connect-rate 0 --key-cache "$WORK/keys" \
				--json --quiet >"$dir/warm.json" 2>"$dir/warm.err" ||
				{ say "xmppd: warm-up login failed:"; head -5 "$dir/warm.err" >&2; }
			touch "$dir/warm"
			timeout 60 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1 || say "xmppd: stop failed"
			if ! timeout 60 "${SRV_PIN[@]}" "$XMPPCTL" -c "$XMPPD_CONF" start >"$dir/start.log" 2>&1; then
				say "xmppd: restart failed:"; tail -20 "$dir/start.log" >&2
				R[xmppd.$sc.ok]=error
				XMPPD_CONF=""
				continue
			fi
			pids=$("$XMPPCTL" -c "$XMPPD_CONF" status 2>/dev/null | awk -F'\t' '$3 ~ /^[0-9]+$/ {print $3}' | paste -sd, -)
		fi
		run_scenario xmppd "$sc" "$(bench_port "$TLS" "$p1" "$p2")" "$pids"
		timeout 60 "$XMPPCTL" -c "$XMPPD_CONF" stop >/dev/null 2>&1 || say "xmppd: stop failed"
		XMPPD_CONF=""
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
	[ -n "${R[prosody.version]:-}" ] && echo "prosody ${R[prosody.version]}"
	hdr=$(printf '  %-34s' "")
	for s in "${SERVERS[@]}"; do
		if [ -n "${R[$s.skipped]:-}" ]; then hdr+=$(printf ' %16s' "$s(skipped)"); else hdr+=$(printf ' %16s' "$s"); fi
	done
	echo "$hdr"
	for sc in $SCENARIOS; do
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
			e=${R[$s.$sc.first_error]:-}
			[ -n "$e" ] && [ "$e" != null ] && echo "  $s $sc first error: $e"
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
		[ "${R[$s.$sc.ok]:-}" = ok ] || fail=1
	done
done
exit $fail
