#!/usr/bin/env bash
# TLS: what TLS costs the live daemon, in one run of two cases.
#
#   a. PRODUCERS producers -> daemon -> 1 client, plaintext and TLS (the
#      same records, the two alternated over ROUNDS rounds): records/s to
#      the client and the daemon's CPU per record.
#   b. MEMBERS fleet members with client certificates (mTLS, ECDSA P-256,
#      one certificate and key each, named by the certificate's CN)
#      connecting at once: how long until the daemon counts them all, its
#      peak RSS, and the longest stall of its event loop while they
#      connect, seen from outside; then every member sends a few records,
#      and the output must be complete.
#
# Usage: bash bench/tls.sh [--quick]
#   --quick   1 round, small sizes: a smoke test of the script itself (~40 s)
# Environment:
#   CASES          which cases to run (default "a b")
#   CHRONOMERGE    daemon binary, a Release build (default:
#                  <repo>/build/daemon/chronomerge)
#   LOADGEN        load generator (default: <repo>/build/bench/chronomerge_loadgen)
#   ROUNDS         rounds of case a, each running plaintext and TLS (default
#                  3; --quick 1); the table shows medians
#   PRODUCERS      producers of case a, one tcp-listen feed each (default 8)
#   RECORDS        records per producer in case a (default 1000000;
#                  --quick 100000)
#   MEMBERS        fleet members of case b (default 1000; --quick 100)
#   MEMBER_RATE    records/s from each member (default 1)
#   MEMBER_SECONDS seconds each member sends (default 10: members stay
#                  connected well past the 5 s target, so that the daemon
#                  can count them all at once)
#   PROBE_MS       interval of the loop-stall probe, ms (default 10)
#   B_TLS          a JSON object merged into the fleet's "tls" in case b, e.g.
#                  '{"max_handshakes": 32}' (default: none)
#   JOBS           parallel openssl processes making certificates (default 2)
#
# Certificates (made with the openssl CLI under bench/data/tls/, and kept
# for the next run unless too few or about to expire): an ECDSA P-256 test
# CA; the server's, CN=localhost with SAN DNS:localhost and IP:127.0.0.1;
# one for the producers of case a; one per member of case b, CN bus-NNNNN,
# each with its own key.
#
# Case a reuses run_fanout (bench/common.sh; see bench/clients.sh): a fresh
# daemon per run, PRODUCERS tcp-listen feeds and one tcp-listen output with
# slow_client "block", metrics on plain HTTP; with TLS the feeds and the
# output speak TLS 1.3 only and the feeds require the producers'
# certificate (client_auth "require"). Target: TLS at least 50 % of the
# plaintext records/s.
#
# Case b: one fleet feed (name_from "cert_cn", tls with client_auth
# "require", TLS 1.3), a plain tcp-listen output with slow_client "block"
# and one client, plain metrics. One `chronomerge_loadgen fleet` process
# opens all MEMBERS connections as fast as it can, each presenting its own
# certificate; the script polls chronomerge_fleet_members on /metrics
# every 0.1 s, and `chronomerge_loadgen probe` sends GET /healthz on a new
# plain connection every PROBE_MS ms to the metrics port, which the same
# event loop serves: the longest answer while the members connect bounds
# the longest loop stall. Targets: all members counted in < 5 s, peak RSS
# (VmHWM) < 256 MiB; the output complete and in order; the daemon's open
# descriptors back to where they were once the members have left.
#
# The table is saved under bench/data/results/ (tls-<stamp>.md and
# tls-latest.md); configs, logs and raw reports under bench/data/tls/run/.
#
# Exit status: 0 if every check passed (every record delivered once and in
# order in every run, every member connected and none dropped, the
# daemon's descriptors back to their count before the members, every
# daemon exiting 0 on SIGTERM), 1 if not, 2 on a usage or setup error.
# Missing a performance target does not fail it; the table shows it.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags quick "$@"

AFTER=$CHRONOMERGE
BEFORE=""
LOADGEN=${LOADGEN:-$REPO_ROOT/build/bench/chronomerge_loadgen}
PRODUCERS=${PRODUCERS:-8}
# run_fanout spreads the one client over at most READERS processes.
READERS=1
if ((QUICK)); then
  ROUNDS=${ROUNDS:-1}
  RECORDS=${RECORDS:-100000}
  MEMBERS=${MEMBERS:-100}
else
  ROUNDS=${ROUNDS:-3}
  RECORDS=${RECORDS:-1000000}
  MEMBERS=${MEMBERS:-1000}
fi
CASES=${CASES:-a b}
[[ $CASES =~ ^\ *(a|b)(\ +(a|b))*\ *$ ]] || die "CASES must be \"a\", \"b\" or \"a b\", got '$CASES'"
RUN_A=0
RUN_B=0
[[ " $CASES " == *" a "* ]] && RUN_A=1
[[ " $CASES " == *" b "* ]] && RUN_B=1
MEMBER_RATE=${MEMBER_RATE:-1}
MEMBER_SECONDS=${MEMBER_SECONDS:-10}
PROBE_MS=${PROBE_MS:-10}
JOBS=${JOBS:-2}
require_positive ROUNDS PRODUCERS RECORDS MEMBERS MEMBER_RATE MEMBER_SECONDS PROBE_MS JOBS
((PRODUCERS <= 16)) || die "PRODUCERS must be at most 16 (the key stride keeps keys unique)"
((MEMBERS <= 99999)) || die "MEMBERS must be at most 99999 (member names have 5 digits)"

# Targets.
TARGET_TLS_SHARE=50   # % of the plaintext records/s (case a)
TARGET_COUNTED_S=5    # all members counted by the daemon (case b)
TARGET_RSS_MIB=256    # daemon VmHWM (case b)

require_live_binaries
command -v openssl > /dev/null || die "the openssl command is required (it makes the test certificates)"

TLS_DIR="$DATA_ROOT/tls"
RUN_DIR="$TLS_DIR/run"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR" "$DATA_ROOT/results"
# A TLS connection is three descriptors in the daemon (the socket and a
# socketpair to the plaintext side), one in the load generator.
raise_open_files $((MEMBERS * 3 + 1024))
(($(ulimit -n) > MEMBERS * 3 + 64)) ||
  die "open-files limit $(ulimit -n) is too low for $MEMBERS TLS members (hard limit $(ulimit -Hn))"
CLK_TCK=$(getconf CLK_TCK)

track_daemon "$RUN_DIR"
RESULTS_JSON="$RUN_DIR/results.jsonl"
: > "$RESULTS_JSON"

# --- certificates ----------------------------------------------------------------

# certs_usable: the certificates of the last run cover MEMBERS members and
# stay valid for another day.
certs_usable() {
  local have f
  [[ -f $TLS_DIR/MANIFEST ]] || return 1
  have=$(awk -F= '$1 == "members" { print $2 }' "$TLS_DIR/MANIFEST")
  [[ $have =~ ^[0-9]+$ ]] && ((have >= MEMBERS)) || return 1
  for f in ca server producer "members/bus-$(printf %05d $((MEMBERS - 1)))"; do
    [[ -f $TLS_DIR/$f.key ]] || return 1
    openssl x509 -checkend 86400 -noout -in "$TLS_DIR/$f.crt" > /dev/null 2>&1 || return 1
  done
}

# make_certs: a fresh CA and every certificate, each with its own ECDSA
# P-256 key, signed in one openssl call each (req -x509 -CA makes the key
# and the signed certificate at once); the members' in JOBS parallel
# batches. MANIFEST is written last: a run interrupted half-way is redone.
make_certs() {
  local started=$EPOCHREALTIME
  rm -rf "$TLS_DIR/members" "$TLS_DIR"/*.crt "$TLS_DIR"/*.key "$TLS_DIR/MANIFEST"
  mkdir -p "$TLS_DIR/members"
  cat > "$TLS_DIR/openssl.cnf" << 'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
CNF
  note "[tls] making a test CA, the server's certificate and $((MEMBERS + 1)) client certificates in $TLS_DIR ..."
  # make_one NAME SECTION CN [SIGNER...]
  make_one() {
    openssl req -x509 -config "$TLS_DIR/openssl.cnf" -extensions "$2" -newkey ec \
      -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -subj "/CN=$3" \
      -keyout "$TLS_DIR/$1.key" -out "$TLS_DIR/$1.crt" "${@:4}" 2> "$TLS_DIR/openssl.err" ||
      die "openssl could not make $TLS_DIR/$1.crt: $(head -n 3 "$TLS_DIR/openssl.err")"
  }
  make_one ca ca "chronomerge bench CA"
  local signer=(-CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key")
  make_one server server localhost "${signer[@]}"
  make_one producer client producer "${signer[@]}"
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  seq 0 $((MEMBERS - 1)) | xargs -P "$JOBS" -n 50 bash -c '
    dir=$1
    shift
    for j; do
      name=$(printf "bus-%05d" "$j")
      openssl req -x509 -config "$dir/openssl.cnf" -extensions client -newkey ec \
        -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -subj "/CN=$name" \
        -keyout "$dir/members/$name.key" -out "$dir/members/$name.crt" \
        -CA "$dir/ca.crt" -CAkey "$dir/ca.key" 2> /dev/null || exit 255
    done' _ "$TLS_DIR" || die "openssl could not make the members' certificates in $TLS_DIR/members"
  # The daemon warns about keys that others can read.
  chmod 600 "$TLS_DIR"/*.key "$TLS_DIR"/members/*.key
  printf 'members=%s\nseconds=%.1f\njobs=%s\nmade=%s\n' "$MEMBERS" \
    "$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$JOBS" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$TLS_DIR/MANIFEST"
}

mkdir -p "$TLS_DIR"
if certs_usable; then
  CERTS_MADE=0
else
  make_certs
  CERTS_MADE=1
fi
CERT_SECONDS=$(awk -F= '$1 == "seconds" { print $2 }' "$TLS_DIR/MANIFEST")
CERT_MEMBERS=$(awk -F= '$1 == "members" { print $2 }' "$TLS_DIR/MANIFEST")
CERT_JOBS=$(awk -F= '$1 == "jobs" { print $2 }' "$TLS_DIR/MANIFEST")
note "[tls] certificates: $TLS_DIR ($CERT_MEMBERS member certificates, made in ${CERT_SECONDS} s with $CERT_JOBS jobs$( ((CERTS_MADE)) || echo ', by an earlier run'))"

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$SECONDS

# --- case a: plaintext vs TLS ------------------------------------------------------

# run_a ROUND TRANSPORT: one run of case a, "plain" or "tls".
run_a() {
  local round=$1 transport=$2 certs=""
  [[ $transport == tls ]] && certs=$TLS_DIR
  FANOUT_TLS=$certs run_fanout "$CHRONOMERGE" "$transport-r$round" 1 "$RECORDS" \
    "$RUN_DIR/a-$transport-r$round" transport="\"$transport\"" round="$round"
}

for ((round = 1; round <= ROUNDS * RUN_A; round++)); do
  # Alternate which goes first, so that a drift in the machine's load does
  # not always favour the same one.
  if ((round % 2)); then
    run_a "$round" plain
    run_a "$round" tls
  else
    run_a "$round" tls
    run_a "$round" plain
  fi
done

# --- case b: an mTLS fleet connecting at once ----------------------------------------

# Descriptors the daemon may hold beyond its count before the members once
# they have left: the monitor's and the probe's short HTTP connections.
FD_SLACK=2

# port_from_log WHAT: the port of the daemon's "WHAT: listening on ADDR"
# line (the metrics address is http://HOST:PORT).
port_from_log() {
  local line i
  for ((i = 0; i < 50; i++)); do
    if line=$(grep -m1 -o "$1: listening on [^ ]*" "$LOG"); then
      echo "${line##*:}"
      return 0
    fi
    sleep 0.1
  done
  die "no '$1: listening on' line in $LOG"
}

# fd_count: the daemon's open descriptors.
fd_count() {
  local fds=("/proc/$DAEMON_PID/fd/"*)
  echo "${#fds[@]}"
}

# run_b: case b. Sets the B_* and FDS_* figures the report reads.
run_b() {
  B_DIR="$RUN_DIR/b-fleet"
  mkdir -p "$B_DIR"
  CFG="$B_DIR/config.json"
  LOG="$B_DIR/daemon.log"
  B_TLS=${B_TLS:-} python3 - "$CFG" "$MEMBERS" "$TLS_DIR" << 'PY'
import json, os, sys
path, members, certs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = {
    "key": "time",
    "key_type": "integer",
    "log_level": "info",
    "feeds": [{"name": "buses", "type": "tcp-listen", "listen": "127.0.0.1:0",
               "tls": {"cert": os.path.join(certs, "server.crt"),
                       "key": os.path.join(certs, "server.key"),
                       "ca": os.path.join(certs, "ca.crt"),
                       "client_auth": "require", "min_version": "1.3"},
               "fleet": {"name_from": "cert_cn", "max_members": max(10000, members)}}],
    # block: the client gets every record.
    "outputs": [{"name": "clients", "type": "tcp-listen", "listen": "127.0.0.1:0",
                 "slow_client": "block"}],
    "metrics": {"listen": "127.0.0.1:0"},
}
config["feeds"][0]["tls"].update(json.loads(os.environ.get("B_TLS") or "{}"))
with open(path, "w") as f:
    json.dump(config, f, indent=1)
    f.write("\n")
PY

  note "[fleet] $MEMBERS mTLS members connecting at once, then $MEMBER_RATE records/s each for ${MEMBER_SECONDS}s -> daemon -> 1 client ..."
  start_daemon "$CHRONOMERGE" "$CFG" "$LOG"

  FEED_PORT=$(port_from_log "feed buses")
  OUT_PORT=$(port_from_log "output clients")
  METRICS_PORT=$(port_from_log "metrics")
  PER_MEMBER=$((MEMBER_RATE * MEMBER_SECONDS))
  TOTAL=$((MEMBERS * PER_MEMBER))

  # The client: done at the first end marker; the SIGTERM drain delivers the
  # others. Members stamp the wall clock, so keys tie: equal keys must come
  # in member-name order.
  "$LOADGEN" consume --connect "127.0.0.1:$OUT_PORT" --expect "$TOTAL" --expect-markers 1 \
    --until-eof --ties-by-vehicle --timeout $((MEMBER_SECONDS * 2 + 120)) \
    --ready-file "$B_DIR/client.ready" --done-file "$B_DIR/client.done" \
    > "$B_DIR/client.json" 2> "$B_DIR/client.err" &
  CONSUMER=$!
  wait_files "$B_DIR/client.ready"
  wait_clients "$METRICS_PORT" 1

  # The monitor: every 0.1 s until the daemon counts every member, then
  # every 0.5 s, one JSON object a line: the fleet's and the listener's TLS
  # metrics, the daemon's VmRSS, open descriptors and CPU ticks, and the
  # machine's busy and total jiffies.
  python3 - "$METRICS_PORT" "$DAEMON_PID" "$MEMBERS" "$B_DIR/timeline.jsonl" "$B_DIR/monitor.stop" << 'PY' &
import json, os, re, sys, time, urllib.request
port, pid, members, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
wanted = re.compile(r'^chronomerge_(fleet_members|fleet_members_joined_total|fleet_members_left_total'
                    r'|tls_connections_total|tls_handshakes_in_flight|tls_refused_total)'
                    r'\{(?:fleet="buses"|listener="feed/buses")(?:,reason="(\w+)")?\} (\S+)$', re.M)
counted = False
with open(out, "w") as f:
    while not os.path.exists(stop):
        t = time.time()
        try:
            status = open("/proc/%s/status" % pid).read()
            fds = len(os.listdir("/proc/%s/fd" % pid))
            stat = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            break  # the daemon is gone
        rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
        with open("/proc/stat") as s:
            v = [int(x) for x in s.readline().split()[1:]]
        m, took = {}, None
        try:
            body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
            took = time.time() - t
            for name, reason, value in wanted.findall(body):
                m[name + ("." + reason if reason else "")] = float(value)
        except (OSError, ValueError):
            pass
        f.write(json.dumps({"t": t, "rss_kib": rss, "fds": fds, "m": m, "metrics_s": took,
                            "cpu": int(stat[11]) + int(stat[12]),
                            "busy": sum(v) - v[3] - v[4], "total": sum(v)}) + "\n")
        f.flush()
        counted = counted or m.get("fleet_members", 0) >= members
        time.sleep(max(0.0, (0.5 if counted else 0.1) - (time.time() - t)))
PY
  MONITOR=$!

  # The probe, from 1 s before the members (a baseline) to their end.
  "$LOADGEN" probe --connect "127.0.0.1:$METRICS_PORT" --path /healthz --interval-ms "$PROBE_MS" \
    --stop-file "$B_DIR/probe.stop" --raw-out "$B_DIR/probe.txt" \
    > "$B_DIR/probe.json" 2> "$B_DIR/probe.err" &
  PROBE=$!
  sleep 1
  FDS_BEFORE=$(fd_count)
  RSS_BEFORE_KIB=$(status_kib "$DAEMON_PID" VmRSS)
  CPU_BEFORE=$(cpu_ticks "$DAEMON_PID")
  "$LOADGEN" fleet --connect "127.0.0.1:$FEED_PORT" --members "$MEMBERS" --rate "$MEMBER_RATE" \
    --duration "$MEMBER_SECONDS" --tls-ca "$TLS_DIR/ca.crt" --tls-cert-dir "$TLS_DIR/members" \
    > "$B_DIR/fleet.json" 2> "$B_DIR/fleet.err" &
  FLEET=$!
  while kill -0 "$FLEET" 2> /dev/null; do
    kill -0 "$DAEMON_PID" 2> /dev/null || break
    sleep 0.2
  done
  FLEET_RC=0
  wait "$FLEET" 2> /dev/null || FLEET_RC=$?
  touch "$B_DIR/probe.stop"
  # Every member has sent its end marker: the client has everything at once.
  for ((i = 0; i < 300; i++)); do
    [[ -e $B_DIR/client.done ]] && break
    kill -0 "$CONSUMER" 2> /dev/null || break
    kill -0 "$DAEMON_PID" 2> /dev/null || break
    sleep 0.1
  done
  CPU_AFTER=$(cpu_ticks "$DAEMON_PID" 2> /dev/null || echo "$CPU_BEFORE")
  # Every member has closed its connection: the daemon's descriptors must
  # come back to their count before the members (up to 10 s), give or take
  # FD_SLACK for the monitor's and the probe's short HTTP connections.
  FDS_AFTER=-1
  for ((i = 0; i < 50; i++)); do
    kill -0 "$DAEMON_PID" 2> /dev/null || break
    FDS_AFTER=$(fd_count)
    ((FDS_AFTER <= FDS_BEFORE + FD_SLACK)) && break
    sleep 0.2
  done
  HWM_KIB=$(status_kib "$DAEMON_PID" VmHWM)
  touch "$B_DIR/monitor.stop"
  wait "$MONITOR" 2> /dev/null || true
  wait "$PROBE" 2> /dev/null || true
  # Kept for inspection: the metrics, and which descriptors were open.
  python3 - "$METRICS_PORT" "$B_DIR" << 'PY' || true
import sys, urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read()
    open("%s/metrics.txt" % sys.argv[2], "wb").write(body)
except Exception:
    pass
PY
  ls -l "/proc/$DAEMON_PID/fd/" > "$B_DIR/fds-after.txt" 2>&1 || true
  stop_daemon
  wait "$CONSUMER" 2> /dev/null || true
}

# What the report reads of case b, when it does not run.
TOTAL=0 HWM_KIB=0 FLEET_RC=0 FDS_BEFORE=0 FDS_AFTER=0 RSS_BEFORE_KIB=0 CPU_BEFORE=0 CPU_AFTER=0
B_RAN=0
if ((RUN_B)); then
  run_b
  B_RAN=1
fi
ELAPSED=$((SECONDS - STARTED))

# --- report ------------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_MD="$DATA_ROOT/results/tls-$STAMP.md"
FAILED=0
{
  echo "# chronomerge TLS benchmark ($STAMP)"
  echo
  echo "- binary: \`$CHRONOMERGE\`, load generator: \`$LOADGEN\`"
  echo "- commit: $(commit_summary)"
  echo "- machine: $(machine_summary); the daemon, the load generators and the client share them; load average at start: $LOAD_AT_START; $ELAPSED s in all$( ((QUICK)) && echo '; QUICK MODE (smoke test, numbers meaningless)')"
  echo "- certificates: ECDSA P-256 test CA, server CN=localhost (SAN DNS:localhost, IP:127.0.0.1), $CERT_MEMBERS member certificates each with its own key, made with the openssl CLI in $CERT_SECONDS s ($CERT_JOBS parallel jobs$( ((CERTS_MADE)) || echo ', by an earlier run; reused'))"
  echo
  report_python "$RESULTS_JSON" "${B_DIR:-}" "$MEMBERS" "$TOTAL" "$HWM_KIB" "$DAEMON_RC" "$FLEET_RC" \
    "$FDS_BEFORE" "$FDS_AFTER" "$RSS_BEFORE_KIB" "$((CPU_AFTER - CPU_BEFORE))" "$CLK_TCK" \
    "$TARGET_TLS_SHARE" "$TARGET_COUNTED_S" "$TARGET_RSS_MIB" "$PRODUCERS" "$RECORDS" "$ROUNDS" \
    "$PROBE_MS" "$MEMBER_RATE" "$MEMBER_SECONDS" "$FD_SLACK" "$B_RAN" << 'PY'
import json, os, statistics, sys
from consume_checks import check_consumers, client_problems, daemon_exit, fmt_n, where

(results, d, members, total, hwm_kib, daemon_rc, fleet_rc, fds_before, fds_after, rss_before_kib,
 cpu_ticks, clk, share, counted_s, rss_mib, producers, records, rounds, probe_ms, member_rate,
 member_seconds, fd_slack, b_ran) = sys.argv[1:]
fd_slack, b_ran = int(fd_slack), int(b_ran)
members, total, hwm_kib, daemon_rc, fleet_rc = int(members), int(total), int(hwm_kib), int(daemon_rc), int(fleet_rc)
fds_before, fds_after, rss_before_kib, cpu_ticks, clk = (int(x) for x in (fds_before, fds_after, rss_before_kib, cpu_ticks, clk))
share, counted_s, rss_mib = float(share), float(counted_s), float(rss_mib)
failed = False
checks = []


def met(ok):
    return "yes" if ok else "NO"


# --- case a --------------------------------------------------------------------
rows = [json.loads(l) for l in open(results) if l.strip()]
runs, notes_a = {}, []
protocols = set()
for r in rows:
    name = "%s, round %d" % ("TLS" if r["transport"] == "tls" else "plaintext", r["round"])
    ok = check_consumers(name, r, r["producers"], checks)
    failed |= not ok
    cs = [c for c in r["consumers"] if c]
    ps = [p for p in r["producer_reports"] if p]
    for x in cs + ps:
        if x.get("tls"):
            protocols.add(x["tls"])
    rate = min((c["records"] / (c["wall_done"] - r["t0"]) for c in cs if c["wall_done"] > r["t0"]), default=0.0)
    secs = max((c["wall_done"] for c in cs), default=r["t0"]) - r["t0"]
    cpu = float(r["cpu_s"])
    lg_cpu = sum(c.get("own_cpu_s", 0) for c in cs) + sum(p.get("own_cpu_s", 0) for p in ps)
    run = {"ok": ok, "rps": rate if ok else 0.0,
           "mbs": sum(c["bytes"] for c in cs) / 1e6 / secs if ok and secs > 0 else 0.0,
           "cpu": cpu, "cpu_us": cpu / r["expected"] * 1e6, "lg_cpu": lg_cpu,
           "rss": max(r["hwm_kib"], r["rss_peak_kib"]) / 1024}
    runs.setdefault(r["transport"], []).append(run)
    closes = sorted({c.get("tls_close") for c in cs if c.get("tls_close")})
    notes_a.append("%s: %s records/s to the client in %.2f s; daemon CPU %.2f s (%.0f%% of one core), %.3f µs per record; load generators' CPU %.2f s; peak RSS %.1f MiB; machine %.0f%% busy%s"
                   % (name, fmt_n(run["rps"]), secs, cpu, 100 * cpu / secs if secs > 0 else 0,
                      run["cpu_us"], lg_cpu, run["rss"], 100 * float(r["machine_busy"]),
                      "; the daemon closed the client with %s" % ", ".join(closes) if closes else ""))
med = {}
for transport, rs in runs.items():
    med[transport] = {k: statistics.median(x[k] for x in rs) for k in ("rps", "mbs", "cpu", "cpu_us", "lg_cpu")}
    med[transport]["rss"] = max(x["rss"] for x in rs)
    med[transport]["n"] = len(rs)
if rows:
    print("## a. %s producers → daemon → 1 client, plaintext and TLS" % producers)
    print()
    print("%s × %s records (about 122 bytes each) per run, %s round(s), medians; with TLS, TLS 1.3 on the feeds (client certificate required) and the output (%s)."
          % (producers, fmt_n(int(records)), rounds, ", ".join(sorted(protocols)) or "no TLS report"))
    print()
    print("| transport | records/s to the client | MB/s | daemon CPU s | CPU µs per record | load generators' CPU s | peak RSS MiB | target | met? |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    plain, tls = med.get("plain"), med.get("tls")
    for transport, label in (("plain", "plaintext"), ("tls", "TLS")):
        m = med.get(transport)
        if m is None:
            continue
        target, ok = "reference", ""
        if transport == "tls":
            if plain and plain["rps"] > 0:
                target = "≥ %g %% of plaintext (%s rec/s)" % (share, fmt_n(plain["rps"] * share / 100))
                ok = met(m["rps"] >= plain["rps"] * share / 100) + " (%.0f %%)" % (100 * m["rps"] / plain["rps"])
            else:
                target, ok = "≥ %g %% of plaintext" % share, "n/a"
        print("| %s | %s | %.0f | %.2f | %.3f | %.2f | %.1f | %s | %s |"
              % (label, fmt_n(m["rps"]), m["mbs"], m["cpu"], m["cpu_us"], m["lg_cpu"], m["rss"], target, ok))
    print()
    if plain and tls and plain["rps"] > 0 and plain["cpu_us"] > 0:
        print("- TLS ÷ plaintext: records/s %.2f, daemon CPU per record %.2f (+%.3f µs), load generators' CPU %.2f"
              % (tls["rps"] / plain["rps"], tls["cpu_us"] / plain["cpu_us"], tls["cpu_us"] - plain["cpu_us"],
                 tls["lg_cpu"] / plain["lg_cpu"] if plain["lg_cpu"] > 0 else 0))
    for n in notes_a:
        print("- " + n)
    print()


# --- case b --------------------------------------------------------------------
def report_b():
    global failed
    try:
        tls_config = json.load(open(os.path.join(d, "config.json")))["feeds"][0]["tls"]
    except (OSError, ValueError, KeyError, IndexError):
        tls_config = {}
    tls_settings = ", ".join(
        "%s %s%s" % (k, tls_config.get(k, v), "" if k in tls_config else " (default)")
        for k, v in (("max_handshakes", 256), ("handshake_timeout_ms", 5000)))
    def load(name):
        try:
            with open(os.path.join(d, name)) as f:
                return json.loads(f.readline())
        except (OSError, ValueError):
            return None

    lg, client, probe = load("fleet.json"), load("client.json"), load("probe.json")
    timeline = []
    try:
        timeline = [json.loads(l) for l in open(os.path.join(d, "timeline.jsonl")) if l.strip()]
    except OSError:
        pass
    probes = []
    try:
        for line in open(os.path.join(d, "probe.txt")):
            w, us, status = line.split()
            probes.append((float(w), int(us), int(status)))
    except (OSError, ValueError):
        pass
    run = {"dir": d, "daemon_rc": daemon_rc}
    notes = []
    t0 = lg["wall_start"] if lg else (timeline[0]["t"] if timeline else 0)
    t_all = next((s["t"] for s in timeline if s["m"].get("fleet_members", 0) >= members), None)
    counted = t_all - t0 if t_all is not None else None
    peak_members = max((s["m"].get("fleet_members", 0) for s in timeline), default=0)
    lg_all = lg["establish_s"] if lg and lg["establish_s"] >= 0 else None
    peak = max([hwm_kib] + [s["rss_kib"] for s in timeline]) / 1024
    fds_peak = max((s["fds"] for s in timeline), default=0)
    in_flight = max((s["m"].get("tls_handshakes_in_flight", 0) for s in timeline), default=0)

    # The storm: from the load generator's first connect() to the daemon
    # counting every member (or, if it never does, its last connection made).
    storm_end = t_all if t_all is not None else (lg["wall_all_connected"] if lg and lg["wall_all_connected"] > 0 else t0 + 5)
    storm = [p for p in probes if t0 <= p[0] <= storm_end]
    before = [p for p in probes if p[0] < t0]
    after = [p for p in probes if p[0] > storm_end]


    def worst(ps):
        return max(ps, key=lambda p: p[1]) if ps else None

    def pct(ps, q):
        v = sorted(p[1] for p in ps)
        return v[min(len(v) - 1, max(0, int(q * len(v) + 0.999999) - 1))] if v else 0


    w = worst(storm)
    stall_text = ("%.1f ms (p99 %.1f ms, p50 %.1f ms; %d probes in %.2f s)"
                  % (w[1] / 1e3, pct(storm, 0.99) / 1e3, pct(storm, 0.5) / 1e3, len(storm), storm_end - t0)
                  if w else "n/a (no probe in the window)")
    storm_failures = sum(1 for p in storm if p[2] != 200)

    # Correctness.
    ok_output = True
    label = "%s mTLS members → 1 client" % fmt_n(members)
    if client is None:
        ok_output = False
        checks.append("%s: FAIL, the client reported nothing (see %s/client.err)" % (label, where(run)))
    else:
        problems = client_problems(client, total, members)
        if client.get("tie_disorder"):
            problems.append("%d records out of member-name order among equal keys" % client["tie_disorder"])
        if problems:
            ok_output = False
            checks.append("%s: FAIL, %s%s" % (label, "; ".join(problems),
                          (" (first: %s)" % client["first_problem"]) if client.get("first_problem") else ""))
        else:
            checks.append("%s: OK, the client received all %s records and %s end markers, keys never going back, equal keys in member-name order, every member's seq complete"
                          % (label, fmt_n(total), fmt_n(members)))
    if lg is None:
        ok_output = False
        checks.append("load generator: FAIL, no report (see %s/fleet.err)" % where(run))
    elif lg["errors"] or lg["unsent_records"] or fleet_rc != 0:
        ok_output = False
        checks.append("load generator: FAIL, %d of %d members connected (TLS handshake done), %d failed to connect, %d dropped by the daemon, %d unfinished; %s of %s records not sent (first error: %s)"
                      % (lg["connected"], members, lg["failed"], lg["dropped"], lg["unfinished"],
                         fmt_n(lg["unsent_records"]), fmt_n(lg["expected"]), lg["first_error"] or "none"))
    else:
        checks.append("load generator: OK, %s members connected over mTLS (%s, no hello: named by their certificates), %s records and %s end markers sent, none refused or dropped"
                      % (fmt_n(lg["connected"]), lg.get("tls") or "?", fmt_n(lg["records"]), fmt_n(lg["markers"])))
    fds_ok = 0 <= fds_after <= fds_before + fd_slack
    if fds_ok:
        checks.append("daemon descriptors: OK, %d before the members, %d at most while they were connected, %d after they left"
                      % (fds_before, fds_peak, fds_after))
    else:
        checks.append("daemon descriptors: FAIL, %d before the members, %d at most while they were connected, still %s 10 s after the last member closed (see %s/fds-after.txt)"
                      % (fds_before, fds_peak, fds_after if fds_after >= 0 else "unknown (the daemon is gone)", where(run)))
    ok_b = daemon_exit(label, run, checks) and ok_output and fds_ok
    failed |= not ok_b

    print("## b. %s mTLS fleet members connecting at once" % fmt_n(members))
    print()
    print("One fleet feed (name_from cert_cn, client_auth require, TLS 1.3, %s); each member presents its own ECDSA P-256 certificate, then sends %s record(s)/s for %s s and an end marker; one plain client."
          % (tls_settings, member_rate, member_seconds))
    print()
    print("| measure | result | target | met? |")
    print("|---|---|---|---|")
    print("| members counted by the daemon (chronomerge_fleet_members, polled every 0.1 s) | %s | all in < %g s | %s |"
          % ("%s after %.2f s" % (fmt_n(members), counted) if counted is not None
             else "at most %s of %s" % (fmt_n(peak_members), fmt_n(members)),
             counted_s, met(counted is not None and counted < counted_s)))
    print("| handshakes done, load generator (connect() to TLS established) | %s | | |"
          % ("%s in %.2f s; per member p50 %.0f ms, max %.0f ms" % (fmt_n(lg["connected"]), lg_all, lg["setup_us"]["p50"] / 1e3, lg["setup_us"]["max"] / 1e3)
             if lg and lg_all is not None else "%s of %s" % (fmt_n(lg["connected"] if lg else 0), fmt_n(members))))
    print("| daemon peak RSS (VmHWM) | %.1f MiB (%.1f MiB before the members) | < %g MiB | %s |"
          % (peak, rss_before_kib / 1024, rss_mib, met(peak < rss_mib)))
    print("| longest GET /healthz (plain, metrics port) while the members connect: a bound on the loop's longest stall | %s%s | none set (measured) | |"
          % (stall_text, "; %d failed" % storm_failures if storm_failures else ""))
    print("| output to the client | %s | complete and in order | %s |"
          % ("complete, in order" if ok_output else "FAILED (see below)", met(ok_output)))
    print("| daemon descriptors after the members left | %s → %d at most → %s | back to %d (± %d) | %s |"
          % (fds_before, fds_peak, fds_after, fds_before, fd_slack, met(fds_ok)))
    print()
    if before:
        notes.append("probe before the members (%d probes): max %.1f ms, p50 %.2f ms; after the storm, while the members sent (%d probes): max %.1f ms, p99 %.1f ms%s"
                     % (len(before), worst(before)[1] / 1e3, pct(before, 0.5) / 1e3, len(after),
                        worst(after)[1] / 1e3 if after else 0, pct(after, 0.99) / 1e3 if after else 0,
                        "; slowest probe of the storm started %.2f s after the first connect()" % (w[0] - t0) if w else ""))
    if probe:
        notes.append("probe: %s probes every %s ms, %s failed, %s started late after a slow one%s"
                     % (fmt_n(probe["probes"]), probe_ms, fmt_n(probe["failures"]), fmt_n(probe["late_starts"]),
                        " (first failure: %s)" % probe["first_error"] if probe.get("first_error") else ""))
    if timeline:
        last = timeline[-1]["m"]
        notes.append("TLS metrics of the fleet's listener: %s handshakes completed, refused %s (handshake) and %s (cert), at most %s in flight in the 0.1 s samples; members joined %s, left %s"
                     % (fmt_n(last.get("tls_connections_total", 0)), fmt_n(last.get("tls_refused_total.handshake", 0)),
                        fmt_n(last.get("tls_refused_total.cert", 0)), fmt_n(in_flight),
                        fmt_n(last.get("fleet_members_joined_total", 0)), fmt_n(last.get("fleet_members_left_total", 0))))
        metrics_s = [s["metrics_s"] for s in timeline if s.get("metrics_s") is not None and t0 <= s["t"] <= storm_end]
        if metrics_s:
            notes.append("GET /metrics by the monitor during the storm: at most %.1f ms" % (max(metrics_s) * 1e3))
        # CPU over the storm: from the last sample before the first
        # connect() to the first that counts every member.
        a = [x for x in timeline if x["t"] <= t0 and "cpu" in x]
        b = [x for x in timeline if x["t"] >= storm_end and "cpu" in x]
        if a and b and b[0]["t"] > a[-1]["t"]:
            a, b = a[-1], b[0]
            secs = b["t"] - a["t"]
            cpu = (b["cpu"] - a["cpu"]) / clk
            done = b["m"].get("tls_connections_total", 0) - a["m"].get("tls_connections_total", 0)
            notes.append("during the storm (%.2f s): daemon CPU %.2f s, %.0f %% of one core, %s per handshake completed; the whole machine was %.0f %% busy"
                         % (secs, cpu, 100 * cpu / secs, "%.2f ms" % (cpu / done * 1e3) if done > 0 else "n/a",
                            100 * (b["busy"] - a["busy"]) / (b["total"] - a["total"]) if b["total"] > a["total"] else 0))
        series, next_t = [], t0
        for s in timeline:
            if s["t"] >= next_t and s["t"] >= t0:
                series.append("%d/%s/%s" % (s["rss_kib"] // 1024, fmt_n(s["m"].get("fleet_members", 0)), fmt_n(s["fds"])))
                next_t = s["t"] + 1
        notes.append("each second from the first connect(): daemon VmRSS MiB / members counted / open descriptors: " + " ".join(series))
    if lg:
        notes.append("load generator: %s members in one process, CPU %.2f s in %.1f s; daemon CPU %.2f s from the first connect() to the client's last record"
                     % (fmt_n(members), lg["own_cpu_s"], lg["seconds"], cpu_ticks / clk))
    for n in notes:
        print("- " + n)


if b_ran:
    report_b()
print()
print("Correctness (case a: every client gets every record once, keys strictly increasing, each producer's seq complete, every end marker by the SIGTERM drain; case b: as bench/fleet.sh, with equal keys in member-name order, and the daemon's descriptors back to their count before the members):")
for c in checks:
    print("- " + c)
sys.exit(1 if failed else 0)
PY
} | tee "$RESULTS_MD" || FAILED=1 # the report exits 1 if a check failed

finish_report tls "$RUN_DIR" "$FAILED"
