#!/usr/bin/env bash
# Latency the daemon adds to a live merge: FEEDS producers at RATE records/s
# each -> chronomerge -> 1 client, two daemon binaries alternated in one run.
#
# Usage: bash bench/latency.sh [--quick]
#   --quick   1 round of 2 s after a 1 s warm-up: a smoke test of the script
# Environment:
#   AFTER      daemon binary under test (default: CHRONOMERGE, or
#              <repo>/build/daemon/chronomerge)
#   BEFORE     optional second binary, e.g. a build from before a change;
#              when set, each round runs both, alternating which goes first
#   LOADGEN    load generator (default: <repo>/build/bench/chronomerge_loadgen)
#   ROUNDS     rounds (default 3); a round runs each binary once
#   FEEDS      producer connections, one tcp-listen feed each (default 100)
#   RATE       records/s per feed (default 1000)
#   WARMUP     seconds of traffic before the measurement starts (default 2)
#   SECONDS_MEASURED  seconds of traffic measured per run (default 10)
#   TRACE      1: the client also writes trace.txt in each run's directory,
#              one line per measured record (key, feed, seq, send,
#              emittable and receipt times in ns), for a closer look
#   NICE       niceness for the daemon, the producers and the client
#              (default 0; e.g. -10, as root, to put them ahead of other
#              work on a shared machine)
#   PIN        1: the daemon runs on the first CPU, the producers and the
#              client on the others (taskset), so that what is measured is
#              the daemon's own latency, not its wait for a CPU the load
#              generator holds, as when the producers are remote (default
#              0: all share every CPU; needs at least 2 CPUs)
#
# Every run starts a fresh daemon (config under bench/data/latency/), one
# client, and one `chronomerge_loadgen paced` process holding all FEEDS
# producer connections: every 1/RATE s each feed writes its next record
# (one write each, TCP_NODELAY), stamped with CLOCK_MONOTONIC just before
# the write. The client (`chronomerge_loadgen latency`) stamps every read
# with the same clock and derives, per record:
#   emittable -> written: receipt minus the moment the record became
#       emittable (every other feed had sent a record at or past its key)
#   arrival -> written:   receipt minus the record's own send time
# plus the daemon's CPU time (utime + stime) per record over the same window.
# Prints a markdown table (also saved under bench/data/results/).
#
# Exit status: 0 if every run delivered every record in order and the
# daemon exited 0 on SIGTERM, 1 if not, 2 on a usage or setup error.
# Missing the latency target does not fail the script; the table shows it.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags quick "$@"

AFTER=${AFTER:-$CHRONOMERGE}
BEFORE=${BEFORE:-}
LOADGEN=${LOADGEN:-$REPO_ROOT/build/bench/chronomerge_loadgen}
FEEDS=${FEEDS:-100}
RATE=${RATE:-1000}
if ((QUICK)); then
  ROUNDS=${ROUNDS:-1}
  WARMUP=${WARMUP:-1}
  SECONDS_MEASURED=${SECONDS_MEASURED:-2}
else
  ROUNDS=${ROUNDS:-3}
  WARMUP=${WARMUP:-2}
  SECONDS_MEASURED=${SECONDS_MEASURED:-10}
fi
require_positive FEEDS RATE ROUNDS WARMUP SECONDS_MEASURED
NICE=${NICE:-0}
TRACE=${TRACE:-0}
[[ $NICE =~ ^-?[0-9]+$ ]] || die "NICE must be an integer, got '$NICE'"
# nice(1) execs its command, so $! is still the daemon's or loadgen's PID.
RUN=(nice -n "$NICE")
if ((NICE < 0)) && ! nice -n "$NICE" true 2> /dev/null; then
  die "NICE=$NICE needs root (or CAP_SYS_NICE)"
fi
# DAEMON_RUN starts the daemon, LOAD_RUN the producers and the client.
PIN=${PIN:-0}
[[ $PIN == 0 || $PIN == 1 ]] || die "PIN must be 0 or 1, got '$PIN'"
DAEMON_RUN=("${RUN[@]}")
LOAD_RUN=("${RUN[@]}")
CPU_NOTE="daemon, producers and client share them"
if ((PIN)); then
  command -v taskset > /dev/null || die "PIN=1 needs taskset (util-linux)"
  read -r first rest < <(python3 -c 'import os
cpus = sorted(os.sched_getaffinity(0))
print(cpus[0], ",".join(map(str, cpus[1:])))')
  [[ -n $rest ]] || die "PIN=1 needs at least 2 CPUs (this process may use only CPU $first)"
  DAEMON_RUN=(taskset -c "$first" "${RUN[@]}")
  LOAD_RUN=(taskset -c "$rest" "${RUN[@]}")
  CPU_NOTE="the daemon pinned to CPU $first, producers and client to CPU $rest"
fi

# Target: p99 of emittable -> written, in microseconds.
TARGET_P99_US=1000

# Records per feed: warm-up, the measured window [FROM_SEQ, TO_SEQ), and a
# short tail so that every measured record has a successor on every feed
# (which is what makes it emittable) before the end markers.
FROM_SEQ=$((WARMUP * RATE))
TO_SEQ=$(((WARMUP + SECONDS_MEASURED) * RATE))
TAIL=$(((RATE + 4) / 5)) # 0.2 s
RECORDS=$((TO_SEQ + TAIL))

require_live_binaries

LAT_DIR="$DATA_ROOT/latency"
rm -rf "$LAT_DIR"
mkdir -p "$LAT_DIR" "$DATA_ROOT/results"
raise_open_files $((FEEDS + 64))
(($(ulimit -n) > FEEDS + 32)) || die "open-files limit $(ulimit -n) is too low for $FEEDS feeds"

track_daemon "$LAT_DIR"

# wait_file FILE SECONDS PID: until FILE exists, PID has exited, or the time
# is up.
wait_file() {
  local file=$1 limit=$(($2 * 10)) pid=$3 i
  for ((i = 0; i < limit; i++)); do
    [[ -e $file ]] && return 0
    kill -0 "$pid" 2> /dev/null || return 1
    sleep 0.1
  done
  return 1
}

RESULTS_JSON="$LAT_DIR/results.jsonl"
: > "$RESULTS_JSON"

# run_one LABEL BINARY ROUND: one measured run on a fresh daemon.
run_one() {
  local label=$1 bin=$2 round=$3 base out cfg log dir
  dir="$LAT_DIR/$label-r$round"
  mkdir -p "$dir"
  base=$(pick_ports $((FEEDS + 1))) || die "no $((FEEDS + 1)) free consecutive ports"
  out=$((base + FEEDS))
  cfg="$dir/config.json"
  log="$dir/daemon.log"
  write_config "$cfg" "$FEEDS" "$base" info
  note "[round $round, $label] $FEEDS feeds x $RATE records/s, ${WARMUP}s warm-up + ${SECONDS_MEASURED}s measured ..."
  start_daemon "$bin" "$cfg" "$log" "${DAEMON_RUN[@]}"

  local trace=()
  [[ $TRACE == 1 ]] && trace=(--trace-out "$dir/trace.txt")
  "${LOAD_RUN[@]}" "$LOADGEN" latency --connect "127.0.0.1:$out" --feeds "$FEEDS" \
    --from-seq "$FROM_SEQ" --to-seq "$TO_SEQ" --raw-out "$dir/latency.bin" \
    "${trace[@]}" \
    --timeout $((RECORDS / RATE + 60)) --ready-file "$dir/client.ready" \
    --done-file "$dir/client.done" > "$dir/client.json" 2> "$dir/client.err" &
  local client=$!
  wait_file "$dir/client.ready" 10 "$client" || die "the client did not connect (see $dir/client.err)"
  # The daemon accepts on its next loop turn; give it that turn before any
  # data exists, so the client sees the stream from its first record.
  sleep 0.3

  "${LOAD_RUN[@]}" "$LOADGEN" paced --connect-base "127.0.0.1:$base" --feeds "$FEEDS" --rate "$RATE" \
    --records "$RECORDS" --cpu-pid "$DAEMON_PID" --cpu-from "$FROM_SEQ" --cpu-to "$TO_SEQ" \
    > "$dir/producers.json" 2> "$dir/producers.err" &
  local producers=$!
  # The client is done at the first end marker, which comes after every
  # data record; the SIGTERM drain then delivers the rest and closes it.
  wait_file "$dir/client.done" $((RECORDS / RATE + 60)) "$client" || true
  wait "$producers" 2> /dev/null || true
  stop_daemon
  wait "$client" 2> /dev/null || true

  python3 - "$RESULTS_JSON" "$label" "$bin" "$round" "$DAEMON_RC" "$dir" << 'PY'
import json, os, sys
path, label, binary, rnd, rc, d = sys.argv[1:]
def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
row = {"label": label, "binary": binary, "round": int(rnd), "daemon_rc": int(rc), "dir": d,
       "client": load("client.json"), "producers": load("producers.json")}
with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
PY
}

# --- run -----------------------------------------------------------------------
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
  if [[ -z $BEFORE ]]; then
    run_one after "$AFTER" "$round"
  elif ((round % 2)); then
    # Alternate which binary goes first, so a drift in the machine's load
    # over the run does not always favour the same one.
    run_one before "$BEFORE" "$round"
    run_one after "$AFTER" "$round"
  else
    run_one after "$AFTER" "$round"
    run_one before "$BEFORE" "$round"
  fi
done

# --- report --------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_MD="$DATA_ROOT/results/latency-$STAMP.md"
FAILED=0
{
  echo "# chronomerge latency benchmark ($STAMP)"
  echo
  echo "- after: \`$AFTER\`${BEFORE:+; before: \`$BEFORE\`}"
  echo "- commit: $(commit_summary)"
  echo "- load: $FEEDS feeds × $RATE records/s = $((FEEDS * RATE)) records/s, 1 client; $ROUNDS round(s) of ${WARMUP} s warm-up + ${SECONDS_MEASURED} s measured per binary; niceness $NICE"
  echo "- machine: $(machine_summary); $CPU_NOTE; load average at start: $LOAD_AT_START$( ((QUICK)) && echo '; QUICK MODE (smoke test, numbers meaningless)')"
  echo
  python3 - "$RESULTS_JSON" "$TARGET_P99_US" << 'PY'
import array, json, math, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
target = float(sys.argv[2])
labels = [l for l in ("before", "after") if any(r["label"] == l for r in rows)]
failed = False
checks, notes = [], []

def pct(sorted_values, q):
    # Nearest rank, as loadgen computes it.
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]

table = []
cpu_rows = []
for label in labels:
    runs = [r for r in rows if r["label"] == label]
    emit, arrive = [], []
    utime = stime = records = 0
    clk = 100
    busy = total = 0
    window = 0.0
    for r in runs:
        c, p = r["client"], r["producers"]
        name = "%s round %d" % (label, r["round"])
        problems = []
        if c is None:
            problems.append("no client report")
        else:
            if not c["ok"]:
                problems.append("client: %d of %d records measured, %d out of order, %d missing, %d repeated, %d unstamped, %d lines without a key%s%s"
                                % (c["measured"], c["expected"], c["out_of_order"], c["seq_gaps"],
                                   c["seq_repeats"], c["unstamped"], c["unparsed"],
                                   ("; " + c["error"]) if c["error"] else "",
                                   (" (first: %s)" % c["first_problem"]) if c["first_problem"] else ""))
            if c["negative"]:
                problems.append("%d records received before they were emittable (the merge did not wait for every feed)" % c["negative"])
        if p is None:
            problems.append("no producer report")
        elif p["ticks"] * p["feeds"] != p["records"] or p["unsent_at_end"]:
            problems.append("producers did not send everything")
        if r["daemon_rc"] != 0:
            problems.append("daemon exit status %d on SIGTERM" % r["daemon_rc"])
        if problems:
            failed = True
            checks.append("%s: FAIL, %s (files: %s)" % (name, "; ".join(problems), os.path.relpath(r["dir"])))
        else:
            checks.append("%s: OK, %s records measured, all in order, each feed's seq complete, daemon exit 0"
                          % (name, "{:,}".format(c["measured"])))
        raw = array.array("q")
        try:
            with open(os.path.join(r["dir"], "latency.bin"), "rb") as f:
                raw.frombytes(f.read())
        except OSError:
            pass
        emit.extend(raw[0::2])
        arrive.extend(raw[1::2])
        if c is not None:
            notes.append("%s: emittable → written p50/p99/p99.9/max %.0f/%.0f/%.0f/%.0f µs; arrival → written p99 %.0f µs"
                         % (name, c["emittable_us"]["p50"], c["emittable_us"]["p99"],
                            c["emittable_us"]["p999"], c["emittable_us"]["max"], c["arrival_us"]["p99"]))
        if p is not None:
            if p["daemon_utime_ticks"] >= 0:
                utime += p["daemon_utime_ticks"]
                stime += p["daemon_stime_ticks"]
                records += p["feeds"] * (p["cpu_to"] - p["cpu_from"])
                window += p["window_s"]
                clk = p["clk_tck"]
            if p["machine_total_ticks"] > 0:
                busy += p["machine_busy_ticks"]
                total += p["machine_total_ticks"]
            notes.append("%s: producers' tick lag behind schedule p50/p99/max %.0f/%.0f/%.0f µs, one tick (%d writes) took p50/p99 %.0f/%.0f µs, %d writes found a full socket; the whole machine was %.0f%% busy"
                         % (name, p["tick_lag_us"]["p50"], p["tick_lag_us"]["p99"], p["tick_lag_us"]["max"],
                            p["feeds"], p["tick_length_us"]["p50"], p["tick_length_us"]["p99"], p["deferred"],
                            100.0 * p["machine_busy_ticks"] / p["machine_total_ticks"] if p["machine_total_ticks"] > 0 else float("nan")))
    emit.sort()
    arrive.sort()
    us = lambda v: "{:,.0f}".format(v / 1e3) if v == v else "n/a"
    p99 = pct(emit, 0.99)
    met = "yes" if emit and p99 / 1e3 < target else "NO"
    table.append((label, "emittable → written", "{:,}".format(len(emit)), us(pct(emit, 0.5)), us(p99),
                  us(pct(emit, 0.999)), us(emit[-1] if emit else float("nan")), met))
    table.append((label, "arrival → written", "{:,}".format(len(arrive)), us(pct(arrive, 0.5)),
                  us(pct(arrive, 0.99)), us(pct(arrive, 0.999)), us(arrive[-1] if arrive else float("nan")), ""))
    if records:
        cpu_s = (utime + stime) / clk
        cpu_rows.append((label, "{:,}".format(records), "%.2f" % cpu_s, "%.2f" % (cpu_s / records * 1e6),
                         "%.2f" % (utime / clk / records * 1e6), "%.2f" % (stime / clk / records * 1e6),
                         "%.0f%%" % (100 * cpu_s / window) if window else "n/a",
                         "%.0f%%" % (100.0 * busy / total) if total else "n/a"))

print("Latency in µs, all measured records of all rounds pooled (target: p99 of emittable → written < %.0f µs):" % target)
print()
print("| binary | figure | records | p50 | p99 | p99.9 | max | p99 < %.0f µs? |" % target)
print("|---|---|---:|---:|---:|---:|---:|---|")
for row in table:
    print("| " + " | ".join(row) + " |")
print()
print("Daemon CPU over the same windows (utime + stime from /proc/PID/stat):")
print()
print("| binary | records | CPU s | CPU µs/record | user µs/record | sys µs/record | of one core | machine busy |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for row in cpu_rows:
    print("| " + " | ".join(row) + " |")
print()
for n in notes:
    print("- " + n)
print()
print("Correctness (every record delivered once, in key order; each feed's seq complete):")
for c in checks:
    print("- " + c)
sys.exit(1 if failed else 0)
PY
} | tee "$RESULTS_MD" || FAILED=1 # the report exits 1 if a check failed

finish_report latency "$LAT_DIR" "$FAILED"
