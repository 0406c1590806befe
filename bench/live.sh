#!/usr/bin/env bash
# Live benchmark of the chronomerge daemon: producers over TCP -> daemon ->
# TCP clients, with backpressure.
#
# Usage: bash bench/live.sh [--quick]
#   --quick   small sizes: a smoke test of the script itself (~30 s)
# Environment:
#   CHRONOMERGE      daemon binary (default: <repo>/build/daemon/chronomerge)
#   LOADGEN          load generator (default: <repo>/build/bench/chronomerge_loadgen)
#   JOBS             parallel jobs when the script has to build (default 2)
#   PRODUCERS        producers in cases 1, 2 and 4 (default 8)
#   RECORDS          records per producer in cases 1 and 2 (default 1000000)
#   CLIENTS          clients in case 2 (default 4)
#   VEHICLES         slow vehicles in case 3 (default 1000)
#   VEHICLE_RECORDS  records per vehicle in case 3 (default 20)
#   FREEZE_SECONDS   how long case 4 pushes into a frozen client (default 15)
#   IGNORE_SIGPIPE   1: start the daemon with SIGPIPE ignored, as systemd does
#                    (IgnoreSIGPIPE=yes); default 0, as from a shell
#
# Cases, each on a fresh daemon started with a generated config under
# bench/data/live/ (readiness: READY=1 on NOTIFY_SOCKET, as under systemd):
#   1. PRODUCERS producers -> daemon -> 1 client, as fast as possible
#   2. the same with CLIENTS clients, each of which must get every record
#   3. VEHICLES producer connections at once (one tcp-listen feed each),
#      each a slow vehicle sending a record every 0.1-1 s
#   4. a frozen client (connected, never reads) while PRODUCERS producers
#      push as fast as they can for FREEZE_SECONDS: memory must stay flat
#      and the producers must end up blocked
# then prints a markdown table (also saved under bench/data/results/).
#
# Exit status: 0 if every correctness check passed (all records delivered,
# exactly once, in order), 1 if one failed, 2 on a usage or setup error.
# Missing a speed or memory target does not fail the script; the table
# shows it.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags quick "$@"

LOADGEN=${LOADGEN:-$REPO_ROOT/build/bench/chronomerge_loadgen}
JOBS=${JOBS:-2}
# shellcheck disable=SC2034  # read by start_daemon (bench/common.sh)
DAEMON_IGNORE_SIGPIPE=${IGNORE_SIGPIPE:-0}
PRODUCERS=${PRODUCERS:-8}
CLIENTS=${CLIENTS:-4}
if ((QUICK)); then
  RECORDS=${RECORDS:-100000}
  VEHICLES=${VEHICLES:-100}
  VEHICLE_RECORDS=${VEHICLE_RECORDS:-5}
  FREEZE_SECONDS=${FREEZE_SECONDS:-4}
else
  RECORDS=${RECORDS:-1000000}
  VEHICLES=${VEHICLES:-1000}
  VEHICLE_RECORDS=${VEHICLE_RECORDS:-20}
  FREEZE_SECONDS=${FREEZE_SECONDS:-15}
fi
require_positive PRODUCERS CLIENTS RECORDS VEHICLES VEHICLE_RECORDS FREEZE_SECONDS JOBS
((PRODUCERS <= 16)) || die "PRODUCERS must be at most 16 (the key stride keeps keys unique)"

# Targets.
TARGET_RPS=1000000    # records/s to each client (cases 1 and 2)
TARGET_MANY_MIB=256   # peak RSS with VEHICLES connections (case 3)
# RSS at the end of the frozen-client case (case 4): what the backpressure
# bounds (32 MiB) plus the retained output log (retention_bytes, 64 MiB by
# default), which a daemon keeps whatever its clients do.
TARGET_FROZEN_MIB=96

# --- build -------------------------------------------------------------------
# Build only what is missing; an existing binary is used as it is (rebuild
# it yourself after changing the code).
if [[ ! -x $LOADGEN || ! -x $CHRONOMERGE ]]; then
  note "building chronomerge and chronomerge_loadgen in $REPO_ROOT/build ..."
  build_type=()
  [[ -f $REPO_ROOT/build/CMakeCache.txt ]] || build_type=(-DCMAKE_BUILD_TYPE=Release)
  (cd "$REPO_ROOT" &&
    cmake -S . -B build -DCHRONOMERGE_BUILD_BENCH=ON "${build_type[@]}" > /dev/null &&
    cmake --build build -j"$JOBS" --target chronomerge_loadgen chronomerge) >&2 ||
    die "build failed"
fi
require_chronomerge
[[ -x $LOADGEN ]] || die "load generator not found at '$LOADGEN' (set LOADGEN, or build with -DCHRONOMERGE_BUILD_BENCH=ON)"

LIVE_DIR="$DATA_ROOT/live"
mkdir -p "$LIVE_DIR" "$DATA_ROOT/results"
# One descriptor per connection: 1000 vehicles need more than the usual 1024.
raise_open_files 8192
(($(ulimit -n) > VEHICLES + 64)) ||
  die "open-files limit $(ulimit -n) is too low for $VEHICLES connections"
CLK_TCK=$(getconf CLK_TCK)
# run_fanout (bench/common.sh): one consume process per client.
READERS=$CLIENTS

# --- process bookkeeping -----------------------------------------------------
track_daemon "$LIVE_DIR"

# Results, one JSON object per case, for the report.
RESULTS_JSON="$LIVE_DIR/results.jsonl"
: > "$RESULTS_JSON"
FAILED=0

# --- case 3: many slow producers ----------------------------------------------
run_vehicles() {
  local label=vehicles total=$((VEHICLES * VEHICLE_RECORDS)) base out cfg log t0 cpu0 cpu1 hwm
  local dir="$LIVE_DIR/$label"
  rm -rf "$dir"
  mkdir -p "$dir"
  base=$(pick_ports $((VEHICLES + 2))) || die "no $((VEHICLES + 2)) free consecutive ports"
  out=$((base + VEHICLES))
  cfg="$dir/config.json"
  log="$dir/daemon.log"
  write_config "$cfg" "$VEHICLES" "$base" info metrics
  note "[$label] $VEHICLES vehicles x $VEHICLE_RECORDS records (one every 0.1-1 s) -> daemon -> 1 client ..."
  start_daemon "$CHRONOMERGE" "$cfg" "$log"

  "$LOADGEN" consume --connect "127.0.0.1:$out" --expect "$total" \
    --expect-markers 1 --until-eof --done-file "$dir/client0.done" \
    --timeout $((60 + VEHICLE_RECORDS * 2)) --ready-file "$dir/client0.ready" \
    > "$dir/client0.json" 2> "$dir/client0.err" &
  local consumer=$!
  wait_files "$dir/client0.ready"
  sleep 0.3
  cpu0=$(cpu_ticks "$DAEMON_PID")
  t0=$EPOCHREALTIME
  "$LOADGEN" vehicles --connect-base "127.0.0.1:$base" --count "$VEHICLES" \
    --records "$VEHICLE_RECORDS" --interval-ms 100:1000 \
    > "$dir/vehicles.json" 2> "$dir/vehicles.err" &
  local vehicles=$!
  watch_daemon "$consumer:$dir/client0.done"
  cpu1=$(cpu_ticks "$DAEMON_PID")
  hwm=$(status_kib "$DAEMON_PID" VmHWM)
  kill -0 "$vehicles" 2> /dev/null && kill "$vehicles" 2> /dev/null
  wait "$vehicles" 2> /dev/null || true
  stop_daemon
  wait "$consumer" 2> /dev/null || true

  record_case case="\"$label\"" kind='"vehicles"' dir="\"$dir\"" vehicles="$VEHICLES" expected="$total" \
    t0="$t0" cpu_s="$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" \
    hwm_kib="$hwm" rss_peak_kib="$RSS_PEAK_KIB" rss_series="\"$RSS_SERIES\"" \
    daemon_rc="$DAEMON_RC" consumers="$(join_json "$dir/client0.json")" \
    vehicle_report="$(join_json "$dir/vehicles.json")"
}

# --- case 4: frozen client ----------------------------------------------------
run_frozen() {
  local label=frozen base out cfg log t0 cpu0 cpu1 hwm i
  local dir="$LIVE_DIR/$label"
  rm -rf "$dir"
  mkdir -p "$dir"
  base=$(pick_ports $((PRODUCERS + 2))) || die "no $((PRODUCERS + 2)) free consecutive ports"
  out=$((base + PRODUCERS))
  cfg="$dir/config.json"
  log="$dir/daemon.log"
  # debug: pauses and resumes are logged at debug level; they are the
  # evidence that backpressure reached the feeds.
  write_config "$cfg" "$PRODUCERS" "$base" debug metrics
  note "[$label] frozen client, $PRODUCERS producers pushing for ${FREEZE_SECONDS}s ..."
  start_daemon "$CHRONOMERGE" "$cfg" "$log"

  "$LOADGEN" consume --connect "127.0.0.1:$out" --freeze --timeout $((FREEZE_SECONDS + 60)) \
    --ready-file "$dir/client0.ready" > "$dir/client0.json" 2> "$dir/client0.err" &
  local consumer=$!
  wait_files "$dir/client0.ready"
  sleep 0.3
  local producers=()
  cpu0=$(cpu_ticks "$DAEMON_PID")
  t0=$EPOCHREALTIME
  for ((i = 0; i < PRODUCERS; i++)); do
    "$LOADGEN" produce --connect "127.0.0.1:$((base + i))" --count 100000000000 \
      --feed-index "$i" --duration "$FREEZE_SECONDS" \
      > "$dir/producer$i.json" 2> "$dir/producer$i.err" &
    producers+=($!)
  done
  watch_daemon "${producers[@]}"
  cpu1=$(cpu_ticks "$DAEMON_PID")
  hwm=$(status_kib "$DAEMON_PID" VmHWM)
  # Metrics, if the daemon serves them: kept for inspection.
  python3 - "$((base + PRODUCERS + 1))" "$dir/metrics.txt" << 'PY' || true
import sys, urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=2).read()
    open(sys.argv[2], "wb").write(body)
except Exception:
    pass
PY
  local pauses
  pauses=$(grep -c 'paused' "$log" || true)
  for pid in "${producers[@]}"; do wait "$pid" 2> /dev/null || true; done
  # The frozen client goes away (its unread data makes its side send a
  # reset); the daemon must drop it and keep running.
  kill "$consumer" 2> /dev/null || true
  wait "$consumer" 2> /dev/null || true
  sleep 0.5
  local survived=true
  kill -0 "$DAEMON_PID" 2> /dev/null || survived=false
  stop_daemon

  record_case case="\"$label\"" kind='"frozen"' dir="\"$dir\"" producers="$PRODUCERS" seconds="$FREEZE_SECONDS" \
    t0="$t0" cpu_s="$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" \
    hwm_kib="$hwm" rss_peak_kib="$RSS_PEAK_KIB" rss_last_kib="$RSS_LAST_KIB" \
    rss_series="\"$RSS_SERIES\"" pause_lines="${pauses:-0}" daemon_rc="$DAEMON_RC" \
    survived_client_exit="$survived" \
    producer_reports="$(join_json "$dir"/producer*.json)"
}

# --- run -----------------------------------------------------------------------
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
run_fanout "$CHRONOMERGE" fanout1 1 "$RECORDS" "$LIVE_DIR/fanout1"
run_fanout "$CHRONOMERGE" "fanout$CLIENTS" "$CLIENTS" "$RECORDS" "$LIVE_DIR/fanout$CLIENTS"
run_vehicles
run_frozen

# --- report --------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_MD="$DATA_ROOT/results/live-$STAMP.md"
{
  echo "# chronomerge live benchmark ($STAMP)"
  echo
  echo "- binary: \`$CHRONOMERGE\`, load generator: \`$LOADGEN\`"
  echo "- commit: $(commit_summary)"
  echo "- machine: $(machine_summary)"
  echo "- every process (daemon, producers, clients) shares those cores; load average at start: $LOAD_AT_START$( ((QUICK)) && echo '; QUICK MODE (smoke test, numbers meaningless)')"
  echo
  report_python "$RESULTS_JSON" "$TARGET_RPS" "$TARGET_MANY_MIB" "$TARGET_FROZEN_MIB" "$FREEZE_SECONDS" << 'PY'
import json, sys
from consume_checks import check_consumers, daemon_exit, fmt_n
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
target_rps, many_mib, frozen_mib, freeze_s = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
mib = lambda kib: kib / 1024
table, notes, checks = [], [], []
failed = False

for r in rows:
    kind = r["kind"]
    if kind == "fanout":
        n = r["clients"]
        label = "%d producers → daemon → %d client%s" % (r["producers"], n, "" if n == 1 else "s")
        ok = check_consumers(label, r, r["producers"], checks, n)
        failed |= not ok
        cs = [c for c in r["consumers"] if c]
        done = max((c["wall_done"] for c in cs), default=r["t0"])
        secs = done - r["t0"]
        rps = r["expected"] / secs if secs > 0 else 0
        out_bytes = sum(c["bytes"] for c in cs)
        per_client = [c["records"] / (c["wall_done"] - r["t0"]) for c in cs if c["wall_done"] > r["t0"]]
        slowest = min(per_client, default=0)
        met = ok and slowest >= target_rps
        table.append((label, fmt_n(r["expected"]) + ("" if n == 1 else " to each"), "%.2f" % secs,
                      fmt_n(rps) if n == 1 else "%s per client" % fmt_n(slowest),
                      "%.0f" % (out_bytes / 1e6 / secs) + ("" if n == 1 else " total out"),
                      "%.2f" % float(r["cpu_s"]), "%.1f" % mib(r["hwm_kib"]),
                      "≥ %s rec/s%s" % (fmt_n(target_rps), "" if n == 1 else " per client, all complete"),
                      "yes" if met else "NO"))
        if n > 1:
            notes.append("%s: per-client records/s (producers' start → that client's last record): %s"
                         % (label, ", ".join(fmt_n(x) for x in per_client)))
        prods = [p for p in r["producer_reports"] if p]
        if prods:
            notes.append("%s: the producers finished sending after %.2f–%.2f s; daemon CPU %.2f s of %.2f s wall (%.0f%% of one core); the whole machine was %.0f%% busy"
                         % (label, min(p["seconds"] for p in prods), max(p["seconds"] for p in prods),
                            float(r["cpu_s"]), secs, 100 * float(r["cpu_s"]) / secs if secs > 0 else 0,
                            100 * float(r["machine_busy"])))
    elif kind == "vehicles":
        label = "%s slow vehicles (1 connection each) → 1 client" % fmt_n(r["vehicles"])
        ok = check_consumers(label, r, r["vehicles"], checks)
        failed |= not ok
        v = r["vehicle_report"][0]
        if v is None or v["failed"] or v["dropped"] or v["connected"] != r["vehicles"]:
            ok = False
            failed = True
            checks.append("%s: FAIL, vehicles: %s" % (label, json.dumps(v)))
        else:
            checks.append("%s: OK, %s connections up, none refused or dropped" % (label, fmt_n(v["connected"])))
        c = r["consumers"][0] or {"records": 0, "bytes": 0, "wall_done": r["t0"]}
        secs = c["wall_done"] - r["t0"]
        peak = max(r["hwm_kib"], r["rss_peak_kib"])
        met = ok and mib(peak) < many_mib
        table.append((label, fmt_n(c["records"]), "%.2f" % secs,
                      fmt_n(c["records"] / secs) if secs > 0 else "n/a",
                      "%.2f" % (c["bytes"] / 1e6 / secs) if secs > 0 else "n/a",
                      "%.2f" % float(r["cpu_s"]), "%.1f" % mib(peak),
                      "< %d MiB, every record delivered" % many_mib, "yes" if met else "NO"))
        notes.append("%s: daemon VmRSS each second (MiB): %s" % (label, r["rss_series"].strip() or "n/a"))
    elif kind == "frozen":
        label = "frozen client, %d producers pushing %.0f s" % (r["producers"], freeze_s)
        prods = [p for p in r["producer_reports"] if p]
        sent = sum(p["records"] for p in prods)
        sent_bytes = sum(p["bytes"] for p in prods)
        # Blocked: no byte accepted during the last third of the run.
        blocked = len(prods) == r["producers"] and all(p["stalled_s"] >= freeze_s / 3 for p in prods)
        last = mib(r["rss_last_kib"])
        peak = max(r["hwm_kib"], r["rss_peak_kib"])
        met = blocked and last < frozen_mib
        table.append((label, fmt_n(sent) + " sent", "%.0f" % freeze_s, fmt_n(sent / freeze_s),
                      "%.2f" % (sent_bytes / 1e6 / freeze_s), "%.2f" % float(r["cpu_s"]),
                      "%.1f peak, %.1f last" % (mib(peak), last),
                      "last < %d MiB, producers blocked" % frozen_mib, "yes" if met else "NO"))
        notes.append("%s: daemon VmRSS each second (MiB): %s" % (label, r["rss_series"].strip() or "n/a"))
        if prods:
            notes.append("%s: producers accepted %.1f MB in all (%.1f–%.1f MB each); each made its last progress %.2f–%.2f s into the run, then stayed blocked for %.1f–%.1f s; %s 'paused' lines in the daemon's debug log"
                         % (label, sent_bytes / 1e6, min(p["bytes"] for p in prods) / 1e6,
                            max(p["bytes"] for p in prods) / 1e6,
                            min(p["last_progress_s"] for p in prods), max(p["last_progress_s"] for p in prods),
                            min(p["stalled_s"] for p in prods), max(p["stalled_s"] for p in prods),
                            r["pause_lines"]))
        if not r["survived_client_exit"]:
            checks.append("%s: FAIL, the daemon died when the frozen client disconnected" % label)
        else:
            checks.append("%s: OK, the daemon dropped the frozen client when it disconnected and kept running" % label)
        failed |= not daemon_exit(label, r, checks)

print("| case | records | seconds | records/s | MB/s | daemon CPU s | daemon peak RSS MiB | target | met? |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|")
for row in table:
    print("| " + " | ".join(row) + " |")
print()
for n in notes:
    print("- " + n)
print()
print("Correctness (each client counts records, checks keys never go back, and checks every vehicle's seq runs 0, 1, 2, ... with no gap or repeat):")
for c in checks:
    print("- " + c)
sys.exit(1 if failed else 0)
PY
} | tee "$RESULTS_MD" || FAILED=1  # the report exits 1 if a check failed

finish_report live "$LIVE_DIR" "$FAILED"
