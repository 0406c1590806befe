#!/usr/bin/env bash
# Throughput benchmark of chronomerge against `sort -m` and `cat`.
#
# Usage: bash bench/run.sh [--quick] [--memory]
#   --quick   small data sets and 1 run: a smoke test of the script itself
#   --memory  also run the slow-reader memory case (bench/slow_reader.sh)
# Environment:
#   CHRONOMERGE  binary under test (default: <repo>/build/daemon/chronomerge)
#   RUNS         timed runs per tool and case; the median is reported (default 5)
#   SEED         data generator seed (default 1)
#
# For every case (K feeds, N records in total) it
#   1. generates the data under bench/data/ if it is not there yet,
#   2. checks that chronomerge's output equals `sort -m -s`'s output,
#   3. times chronomerge, sort -m and cat, RUNS times each, round-robin,
# then prints a markdown table (also saved under bench/data/results/).
#
# Exit status: 0 if every correctness check (and the memory target, with
# --memory) passed, 1 if one failed, 2 on a usage or setup error.  Missing
# the speed targets does not fail the script; the table shows them.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags "quick memory" "$@"

# Cases as K:N (feeds : total records).  The full sizes are large enough
# (~240 MB) that start-up cost is noise and the merge loop dominates.
if ((QUICK)); then
  CASES=(2:200000 8:200000 1000:100000)
  RUNS=1
else
  CASES=(2:2000000 8:2000000 1000:1000000)
  RUNS=${RUNS:-5}
fi
require_positive RUNS

require_chronomerge

# --- timer -------------------------------------------------------------------
# GNU time, or its python fallback (setup_timer and measure in common.sh).
setup_timer

# --- setup -------------------------------------------------------------------
mkdir -p "$DATA_ROOT/tmp" "$DATA_ROOT/out" "$DATA_ROOT/results"
# sort -m merges at most 16 files at once and spills the rest into temporary
# files; keep those with the rest of the benchmark data, not in /tmp.
export TMPDIR="$DATA_ROOT/tmp"
# K=1000 needs ~1000 descriptors in both tools; raise the soft limit if the
# hard limit allows it (default soft limits of 1024 are too tight).
raise_open_files 4096

# The timer's own RSS floor (FLOOR_KIB; see measure_floor in common.sh).
measure_floor

STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_TSV="$DATA_ROOT/results/$STAMP.tsv"
RESULTS_MD="$DATA_ROOT/results/$STAMP.md"
printf 'case\tfeeds\trecords\tbytes\ttool\trun\tseconds\trss_kib\n' > "$RESULTS_TSV"
CHECKS=()  # one "case: verdict" line per case
FAILED=0

# Generate everything first, so that generation does not heat the machine
# between timed runs.
for c in "${CASES[@]}"; do
  ensure_data "${c%%:*}" "${c##*:}"
done

# --- correctness -------------------------------------------------------------
# check_case (common.sh): chronomerge's output must be byte-identical to
# `LC_ALL=C sort -m -s -t: -k2,2n`'s, with N lines.

# --- timing ------------------------------------------------------------------
for c in "${CASES[@]}"; do
  k=${c%%:*}
  n=${c##*:}
  dir=$(dataset_dir "$k" "$n")
  label="k$k"
  files=("$dir"/feed-*.ndjson)
  ((${#files[@]} == k)) || die "$dir holds ${#files[@]} feeds, expected $k; delete it to regenerate"
  bytes=$(manifest_bytes "$dir")

  # Warm the page cache so that every tool, including the first one timed,
  # reads from memory: we measure merging, not the disk.
  cat "${files[@]}" > /dev/null

  note "[$label] correctness check ..."
  check_case "$label" "$n" "${files[@]}"

  # Round-robin over the tools inside each run, so that slow drift of the
  # machine (other tenants, thermal) hits all tools alike.
  for ((run = 1; run <= RUNS; run++)); do
    for tool in chronomerge sort-m cat; do
      note "[$label] run $run/$RUNS: $tool"
      res="$DATA_ROOT/tmp/measure.res"
      err="$DATA_ROOT/tmp/measure.err"
      case $tool in
        chronomerge) cmd=("$CHRONOMERGE" "${files[@]}") ;;
        sort-m) cmd=(env LC_ALL=C sort -m -s -t: "-k2,2n" "${files[@]}") ;;
        cat) cmd=(cat "${files[@]}") ;;
      esac
      if ! measure "$res" "$err" "${cmd[@]}"; then
        head -n 20 "$err" >&2
        die "$tool failed on $label (command: ${cmd[0]} ... ${#files[@]} files)"
      fi
      read -r secs rss _ < "$res"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$k" "$n" "$bytes" \
        "$tool" "$run" "$secs" "$rss" >> "$RESULTS_TSV"
    done
  done
done

# --- report ------------------------------------------------------------------
{
  echo "# chronomerge benchmark ($STAMP)"
  echo
  echo "- binary: \`$CHRONOMERGE\`"
  echo "- commit: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2> /dev/null || echo 'none')"
  echo "- machine: $(machine_summary)"
  echo "- runs per tool: $RUNS (median reported), timer: $TIMER (RSS floor $(awk -v k="$FLOOR_KIB" 'BEGIN { printf "%.1f", k / 1024 }') MiB), seed: $SEED$( ((QUICK)) && echo ', QUICK MODE (smoke test, numbers meaningless)')"
  echo
  python3 - "$RESULTS_TSV" "$FLOOR_KIB" << 'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
floor_mib = int(sys.argv[2]) / 1024
cases = []   # keep the order of first appearance
by = {}
for r in rows:
    key = (r["case"], r["tool"])
    if r["case"] not in cases:
        cases.append(r["case"])
    by.setdefault(key, []).append(r)

print("| case | tool | median s | records/s | MB/s | peak RSS MiB | vs sort -m |")
print("|---|---|---:|---:|---:|---:|---:|")
verdicts = []
for case in cases:
    med = {}
    for tool in ("chronomerge", "sort-m", "cat"):
        rs = by.get((case, tool))
        if not rs:
            continue
        med[tool] = statistics.median(float(r["seconds"]) for r in rs)
    for tool in ("chronomerge", "sort-m", "cat"):
        rs = by.get((case, tool))
        if not rs:
            continue
        feeds, records, nbytes = int(rs[0]["feeds"]), int(rs[0]["records"]), int(rs[0]["bytes"])
        s = med[tool]
        # Peak RSS: the worst run, since a memory bound must hold every time.
        rss_mib = max(int(r["rss_kib"]) for r in rs) / 1024
        name = {"sort-m": "sort -m", "cat": "cat (I/O floor)"}.get(tool, tool)
        label = "K=%d, %s rec, %.0f MB" % (feeds, "{:,}".format(records), nbytes / 1e6)
        if s > 0:
            rps = "{:,.0f}".format(records / s)
            mbs = "%.0f" % (nbytes / 1e6 / s)
            ratio = "%.2fx" % (med["sort-m"] / s) if "sort-m" in med else "n/a"
        else:  # under the 10 ms resolution of GNU time's %e
            rps = mbs = ratio = "n/a (< 0.01 s)"
        # At the timer's floor the true value is unknown but not larger.
        rss = ("<= %.1f" % rss_mib) if rss_mib <= floor_mib + 0.25 else "%.1f" % rss_mib
        print("| %s | %s | %.2f | %s | %s | %s | %s |" % (label, name, s, rps, mbs, rss, ratio))
    if "chronomerge" in med and "sort-m" in med and med["chronomerge"] > 0:
        verdicts.append((case, med["sort-m"] / med["chronomerge"]))
print()
if verdicts:
    worst = min(v for _, v in verdicts)
    print("Speed target (at least as fast as sort -m in every case): %s; goal 2x: %s (worst case %.2fx)."
          % ("MET" if worst >= 1.0 else "NOT MET", "MET" if worst >= 2.0 else "NOT MET", worst))
PY
  echo
  echo "Correctness (chronomerge output vs \`LC_ALL=C sort -m -s -t: -k2,2n\`):"
  for line in "${CHECKS[@]}"; do
    echo "- $line"
  done
} | tee "$RESULTS_MD"

if ((MEMORY)); then
  echo
  mem_args=()
  ((QUICK)) && mem_args+=(--quick)
  if ! bash "$BENCH_DIR/slow_reader.sh" "${mem_args[@]}" | tee -a "$RESULTS_MD"; then
    FAILED=1
  fi
fi

cp "$RESULTS_MD" "$DATA_ROOT/results/latest.md"
note "raw timings: $RESULTS_TSV"
note "report:      $RESULTS_MD (copy at $DATA_ROOT/results/latest.md)"
if ((FAILED)); then
  note "FAILED: see the correctness lines above"
  exit 1
fi
