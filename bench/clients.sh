#!/usr/bin/env bash
# Fan-out: PRODUCERS producers over TCP -> chronomerge -> 1, 4 and 100 TCP
# clients, each of which must get every record; two daemon binaries
# alternated in one run.
#
# Usage: bash bench/clients.sh [--quick]
#   --quick   1 round at small sizes: a smoke test of the script itself
# Environment:
#   AFTER      daemon binary under test (default: CHRONOMERGE, or
#              <repo>/build/daemon/chronomerge)
#   BEFORE     optional second binary, e.g. a build from before a change;
#              when set, each round runs both on every case, alternating
#              which goes first
#   LOADGEN    load generator (default: <repo>/build/bench/chronomerge_loadgen)
#   ROUNDS     rounds (default 3; --quick 1); the table shows medians
#   CLIENTS    the cases: clients per case (default "1 4 100")
#   PRODUCERS  producers, one tcp-listen feed each (default 8)
#   RECORDS    records per producer in cases of up to 4 clients (default
#              1000000; --quick 100000). A case of N > 4 clients sends
#              RECORDS*4/N per producer: as many bytes out as 4 clients get
#   READERS    most load-generator processes holding the clients of a case
#              (default 4); more clients share them, each still a
#              connection of its own with its own checks
#   BASELINE_MBS  MB/s out of 4 clients that the target of the larger
#              cases compares with when BEFORE did not run the 4-client
#              case (default 537, the last live.sh run of the binary from
#              before the retained output log)
#
# Every run starts a fresh daemon with a generated config (under
# bench/data/clients/): PRODUCERS tcp-listen feeds, one tcp-listen output
# with slow_client "block" (every client gets every record; the slowest
# client sets the pace) and max_clients 1000, metrics. The clients connect,
# the script waits until the daemon counts them all (metrics), then the
# producers send as fast as the sockets take them, each ending with an end
# marker. Per case and binary it reports the records/s of the slowest
# client, the bytes/s out of all clients together, the daemon's CPU time
# and CPU per record merged, and its peak RSS; then a markdown table (also
# saved under bench/data/results/).
#
# Targets (shown, not enforced): with 1 and 4 clients, AFTER at least as
# many records/s per client as BEFORE; with more clients, AFTER at least as
# many bytes/s out in total as BEFORE with 4 clients.
#
# Exit status: 0 if every client of every run received every record
# exactly once and in order and every daemon exited 0 on SIGTERM, 1 if
# not, 2 on a usage or setup error. Missing a target does not fail it.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags quick "$@"

AFTER=${AFTER:-$CHRONOMERGE}
BEFORE=${BEFORE:-}
LOADGEN=${LOADGEN:-$REPO_ROOT/build/bench/chronomerge_loadgen}
CLIENTS=${CLIENTS:-1 4 100}
PRODUCERS=${PRODUCERS:-8}
READERS=${READERS:-4}
BASELINE_MBS=${BASELINE_MBS:-537}
if ((QUICK)); then
  ROUNDS=${ROUNDS:-1}
  RECORDS=${RECORDS:-100000}
else
  ROUNDS=${ROUNDS:-3}
  RECORDS=${RECORDS:-1000000}
fi
require_positive PRODUCERS RECORDS ROUNDS READERS BASELINE_MBS
((PRODUCERS <= 16)) || die "PRODUCERS must be at most 16 (the key stride keeps keys unique)"
read -r -a CASES <<< "$CLIENTS"
((${#CASES[@]} > 0)) || die "CLIENTS must name at least one case"
for n in "${CASES[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must hold positive integers, got '$n'"
  ((n <= MAX_CLIENTS)) || die "at most $MAX_CLIENTS clients a case, got $n"
done

require_live_binaries

CLIENTS_DIR="$DATA_ROOT/clients"
rm -rf "$CLIENTS_DIR"
mkdir -p "$CLIENTS_DIR" "$DATA_ROOT/results"
# One descriptor per connection, in the daemon and in the load generator.
raise_open_files 8192
MOST=0
for n in "${CASES[@]}"; do
  if ((n > MOST)); then MOST=$n; fi
done
(($(ulimit -n) > MOST + PRODUCERS + 64)) ||
  die "open-files limit $(ulimit -n) is too low for $MOST clients"
CLK_TCK=$(getconf CLK_TCK)

track_daemon "$CLIENTS_DIR"
RESULTS_JSON="$CLIENTS_DIR/results.jsonl"
: > "$RESULTS_JSON"

# case_records N: records per producer in the case of N clients.
case_records() {
  if (($1 <= 4)); then echo "$RECORDS"; else echo $((RECORDS * 4 / $1)); fi
}

# run_pair ROUND N FIRST SECOND: the case of N clients with each binary
# label in turn ("before" or "after").
run_pair() {
  local round=$1 n=$2 label bin records
  shift 2
  records=$(case_records "$n")
  for label in "$@"; do
    bin=$AFTER
    [[ $label == before ]] && bin=$BEFORE
    run_fanout "$bin" "$label-c$n-r$round" "$n" "$records" "$CLIENTS_DIR/$label-c$n-r$round" \
      label="\"$label\"" round="$round"
  done
}

# --- run -----------------------------------------------------------------------
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  for n in "${CASES[@]}"; do
    if [[ -z $BEFORE ]]; then
      run_pair "$round" "$n" after
    elif ((round % 2)); then
      # Alternate which binary goes first, so a drift in the machine's load
      # over the run does not always favour the same one.
      run_pair "$round" "$n" before after
    else
      run_pair "$round" "$n" after before
    fi
  done
done
ELAPSED=$((SECONDS - STARTED))

# --- report --------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_MD="$DATA_ROOT/results/clients-$STAMP.md"
FAILED=0
{
  echo "# chronomerge clients benchmark ($STAMP)"
  echo
  echo "- after: \`$AFTER\`${BEFORE:+; before: \`$BEFORE\`}; load generator: \`$LOADGEN\`"
  echo "- commit: $(commit_summary)"
  echo "- load: $PRODUCERS producers as fast as the sockets take them; cases of ${CLIENTS// /, } clients, $RECORDS records per producer up to 4 clients (RECORDS×4/N above); $ROUNDS round(s); clients in at most $READERS load-generator processes; $ELAPSED s in all"
  echo "- machine: $(machine_summary); daemon, producers and clients share them; load average at start: $LOAD_AT_START$( ((QUICK)) && echo '; QUICK MODE (smoke test, numbers meaningless)')"
  echo
  report_python "$RESULTS_JSON" "$BASELINE_MBS" << 'PY'
import json, statistics, sys
from consume_checks import check_consumers, fmt_n
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
baseline_default = float(sys.argv[2])
failed = False
checks, notes = [], []

# Per run: the slowest client's records/s (producers' start -> its last
# record), bytes/s out of all clients (-> the last client's last record),
# daemon CPU, peak RSS.
runs = {}
for r in rows:
    n, label = r["clients"], r["label"]
    name = "%s, %d client%s, round %d" % (label, n, "" if n == 1 else "s", r["round"])
    ok = check_consumers(name, r, r["producers"], checks, n)
    failed |= not ok
    cs = [c for c in r["consumers"] if c]
    done = max((c["wall_done"] for c in cs), default=r["t0"])
    secs = done - r["t0"]
    rates = [c["records"] / (c["wall_done"] - r["t0"]) for c in cs if c["wall_done"] > r["t0"]]
    cpu = float(r["cpu_s"])
    run = {
        "ok": ok,
        "rps": min(rates) if ok and rates else 0.0,
        "rps_max": max(rates, default=0.0),
        "mbs": sum(c["bytes"] for c in cs) / 1e6 / secs if ok and secs > 0 else 0.0,
        "cpu": cpu,
        "cpu_us": cpu / r["expected"] * 1e6,
        "cpu_ns_out": cpu / (r["expected"] * n) * 1e9,
        "rss": max(r["hwm_kib"], r["rss_peak_kib"]) / 1024,
    }
    runs.setdefault((n, label), []).append(run)
    prods = [p for p in r["producer_reports"] if p]
    notes.append("%s: slowest client %s, fastest %s records/s; %.0f MB/s out; daemon CPU %.2f s (%.0f%% of one core), %.1f ns per record delivered; peak RSS %.1f MiB; producers done after %s s; machine %.0f%% busy"
                 % (name, fmt_n(run["rps"]), fmt_n(run["rps_max"]), run["mbs"], cpu,
                    100 * cpu / secs if secs > 0 else 0, run["cpu_ns_out"], run["rss"],
                    "%.2f–%.2f" % (min(p["seconds"] for p in prods), max(p["seconds"] for p in prods)) if prods else "n/a",
                    100 * float(r["machine_busy"])))

# Medians over the rounds; peak RSS is the largest, since a memory limit
# has to hold on every run.
med = {}
for key, rs in runs.items():
    med[key] = {
        "rps": statistics.median(x["rps"] for x in rs),
        "mbs": statistics.median(x["mbs"] for x in rs),
        "cpu": statistics.median(x["cpu"] for x in rs),
        "cpu_us": statistics.median(x["cpu_us"] for x in rs),
        "rss": max(x["rss"] for x in rs),
        "runs": len(rs),
        "ok": all(x["ok"] for x in rs),
    }

cases = sorted({n for n, _ in runs})
labels = [l for l in ("before", "after") if any(l == k[1] for k in runs)]
baseline = med.get((4, "before"), {}).get("mbs")
baseline_from = "before, 4 clients, this run"
if baseline is None:
    baseline, baseline_from = baseline_default, "4 clients, before the retained log, recorded"

print("| clients | binary | records/s per client | MB/s out, all clients | daemon CPU s | CPU µs per record merged | peak RSS MiB | target | met? |")
print("|---:|---|---:|---:|---:|---:|---:|---|---|")
for n in cases:
    for label in labels:
        m = med.get((n, label))
        if m is None:
            continue
        target, met = "", ""
        if label == "after":
            if n <= 4:
                b = med.get((n, "before"))
                if b is None:
                    target, met = "≥ before's records/s per client", "n/a (no BEFORE)"
                else:
                    target = "≥ %s rec/s per client (before)" % fmt_n(b["rps"])
                    met = "yes" if m["ok"] and m["rps"] >= b["rps"] else "NO"
            else:
                target = "≥ %.0f MB/s out (%s)" % (baseline, baseline_from)
                met = "yes" if m["ok"] and m["mbs"] >= baseline else "NO"
        elif "after" in labels:
            target = "reference"
        print("| %d | %s | %s | %.0f | %.2f | %.3f | %.1f | %s | %s |"
              % (n, label, fmt_n(m["rps"]), m["mbs"], m["cpu"], m["cpu_us"], m["rss"], target, met))
print()
if "before" in labels and "after" in labels:
    for n in cases:
        a, b = med.get((n, "after")), med.get((n, "before"))
        if a and b and b["rps"] > 0 and b["mbs"] > 0 and b["cpu"] > 0:
            print("- %d client%s: after ÷ before: records/s per client %.2f, MB/s out %.2f, CPU %.2f, peak RSS %+.1f MiB"
                  % (n, "" if n == 1 else "s", a["rps"] / b["rps"], a["mbs"] / b["mbs"],
                     a["cpu"] / b["cpu"], a["rss"] - b["rss"]))
for line in notes:
    print("- " + line)
print()
print("Correctness (each client counts records, checks that keys strictly increase and that every vehicle's seq runs 0, 1, 2, ... with no gap or repeat, and gets every end marker by the SIGTERM drain):")
for c in checks:
    print("- " + c)
sys.exit(1 if failed else 0)
PY
} | tee "$RESULTS_MD" || FAILED=1 # the report exits 1 if a check failed

finish_report clients "$CLIENTS_DIR" "$FAILED"
