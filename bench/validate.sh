#!/usr/bin/env bash
# Validation benchmark: how fast chronomerge validates NDJSON lines, at each
# instruction-set level of the validator, and what that buys end to end.
#
# Usage: bash bench/validate.sh [--quick]
#   --quick   small data sets, 1 run, 2 passes: a smoke test of the script
# Environment:
#   CHRONOMERGE_VALIDATE_BENCH  the microbenchmark (default:
#                <repo>/build-bench/bench/chronomerge_validate_bench)
#   CHRONOMERGE  binary under test (default: <repo>/build-bench/daemon/chronomerge)
#   RUNS         one-shot runs per command and case; the median is reported
#                (default 5)
#   REPS         timed passes per level in the microbenchmark; the median
#                is reported (default 7)
#   SEED         data generator seed (default 1)
# CHRONOMERGE_SIMD is ignored: the default rows run at the default level
# (the widest of AVX-512 and AVX2 the CPU has), the scalar rows with
# CHRONOMERGE_SIMD=scalar.
#
# It builds nothing: build both binaries first, e.g.
#   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release \
#     -DCHRONOMERGE_BUILD_BENCH=ON -DCHRONOMERGE_BUILD_TESTS=OFF
#   cmake --build build-bench -j1
#
# 1. Microbenchmark (chronomerge_validate_bench, one thread, files in
#    memory): one data set per gen_feeds.py layout (bus, telemetry,
#    strings, numbers, nested), at every level the CPU supports, three
#    ways: "line", RecordParser::parse over every line (the scalar
#    validator); "scan", the vector validator alone over the whole lines
#    of each 128 KiB block; and "block", LineBatch over the input in
#    128 KiB blocks as a feed reads it (framing, validation of each
#    block's whole lines at once, the rest parsed, records made); GB/s per
#    core and ns per line, against the target of 2 GB/s per core for the
#    vector validator.  Every level must accept the same lines with the
#    same keys as scalar on the block path.
# 2. One-shot: `chronomerge FILES` on the telemetry layout at K=2, 8 and
#    1000, beside `sort -m`, after the correctness check of run.sh (output
#    byte-identical to `LC_ALL=C sort -m -s -t: -k2,2n`); chronomerge at its
#    default level, chronomerge with CHRONOMERGE_SIMD=scalar, and sort -m
#    take turns, RUNS times; median wall and CPU (user+sys) seconds, worst
#    peak RSS, and the ratios chronomerge / sort -m against the targets.
# The report is printed and saved as bench/data/results/validate-<stamp>.md
# (and validate-latest.md).
#
# Exit status: 0 if every check passed, 1 if one failed (the levels
# disagree on a line, or an output differs from sort -m's), 2 on a usage or
# setup error.  Missing a target does not fail the script; the tables
# show it.
set -euo pipefail

USER_CHRONOMERGE=${CHRONOMERGE:-}
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Both binaries come from the benchmark build (-DCHRONOMERGE_BUILD_BENCH=ON).
CHRONOMERGE=${USER_CHRONOMERGE:-$REPO_ROOT/build-bench/daemon/chronomerge}
VALIDATE_BENCH=${CHRONOMERGE_VALIDATE_BENCH:-$REPO_ROOT/build-bench/bench/chronomerge_validate_bench}

parse_flags "quick" "$@"

# The default rows run without CHRONOMERGE_SIMD (the caller's would force a
# level); the scalar rows set it to scalar.
unset CHRONOMERGE_SIMD
if grep -qw avx512bw /proc/cpuinfo 2> /dev/null; then
  VECTOR_LEVEL=avx512
elif grep -qw avx2 /proc/cpuinfo 2> /dev/null; then
  VECTOR_LEVEL=avx2
else
  VECTOR_LEVEL=sse2
fi

# Microbenchmark data sets: one feed of MICRO_RECORDS records per layout
# (~60 MB each: far larger than any cache, so the passes stream from
# memory as the daemon's do).  One-shot cases: K:N (feeds : total records)
# on the telemetry layout, the sizes of run.sh.
LAYOUTS=(bus telemetry strings numbers nested)
if ((QUICK)); then
  MICRO_RECORDS=50000
  CASES=(2:200000 8:200000 1000:100000)
  RUNS=1
  REPS=2
else
  MICRO_RECORDS=500000
  CASES=(2:2000000 8:2000000 1000:1000000)
  RUNS=${RUNS:-5}
  REPS=${REPS:-7}
fi
require_positive RUNS REPS
ONE_SHOT_LAYOUT=telemetry
# Targets (also in bench/README.md).
TARGET_GBPS=2
TARGET_RSS_MIB=64

for bin in "$VALIDATE_BENCH" "$CHRONOMERGE"; do
  [[ -x $bin ]] || die "'$bin' not found or not executable.  Build it first:
  cmake -S '$REPO_ROOT' -B '$REPO_ROOT/build-bench' -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHRONOMERGE_BUILD_BENCH=ON -DCHRONOMERGE_BUILD_TESTS=OFF
  cmake --build '$REPO_ROOT/build-bench' -j1
or point CHRONOMERGE_VALIDATE_BENCH / CHRONOMERGE at existing binaries."
done
command -v python3 > /dev/null || die "python3 is required (data generation, reporting)"

setup_timer
mkdir -p "$DATA_ROOT/tmp" "$DATA_ROOT/out" "$DATA_ROOT/results"
# sort -m spills merges of more than 16 files into temporary files: keep
# them with the benchmark data.  K=1000 needs ~1000 descriptors.
export TMPDIR="$DATA_ROOT/tmp"
raise_open_files 4096
measure_floor

STAMP=$(date +%Y%m%d-%H%M%S)
RUN_DIR="$DATA_ROOT/validate/$STAMP"
mkdir -p "$RUN_DIR"
MICRO_TSV="$RUN_DIR/micro.tsv"
ONESHOT_TSV="$RUN_DIR/oneshot.tsv"
RESULTS_MD="$DATA_ROOT/results/validate-$STAMP.md"
CHECKS=()
FAILED=0

# Generate everything first, so that generation does not heat the machine
# between timed runs.
for layout in "${LAYOUTS[@]}"; do
  ensure_data 1 "$MICRO_RECORDS" "$layout"
done
for c in "${CASES[@]}"; do
  ensure_data "${c%%:*}" "${c##*:}" "$ONE_SHOT_LAYOUT"
done

# --- 1. microbenchmark ---------------------------------------------------------
: > "$MICRO_TSV"
for layout in "${LAYOUTS[@]}"; do
  dir=$(dataset_dir 1 "$MICRO_RECORDS" "$layout")
  note "[micro $layout] $REPS passes per level ..."
  rc=0
  "$VALIDATE_BENCH" --tsv --reps "$REPS" "$dir"/feed-*.ndjson \
    > "$RUN_DIR/micro-$layout.tsv" 2> "$RUN_DIR/micro-$layout.log" || rc=$?
  # The levels that ran: the TSV's first column, below its header.
  ran=$(awk 'NR > 1 && !seen[$1]++ { printf "%s%s", sep, $1; sep = ", " }' "$RUN_DIR/micro-$layout.tsv")
  case $rc in
    0)
      if [[ $ran == *,* ]]; then
        CHECKS+=("micro $layout: OK, $ran: every level gives the first's outcome on every line")
      else
        CHECKS+=("micro $layout: OK, $ran only (nothing to compare)")
      fi
      ;;
    1)
      CHECKS+=("micro $layout: FAIL, the levels disagree (first lines in $RUN_DIR/micro-$layout.log)")
      FAILED=1
      ;;
    *)
      sed 's/^/    /' "$RUN_DIR/micro-$layout.log" >&2
      die "chronomerge_validate_bench failed on $layout (exit $rc)"
      ;;
  esac
  # One TSV for the report: the data set's layout in front of each row.
  first=1
  [[ -s $MICRO_TSV ]] && first=0
  awk -v l="$layout" -v first="$first" 'NR == 1 { if (first) print "layout\t" $0; next } { print l "\t" $0 }' \
    "$RUN_DIR/micro-$layout.tsv" >> "$MICRO_TSV"
done

# --- 2. one-shot ---------------------------------------------------------------
# A binary without the vector validator does not read CHRONOMERGE_SIMD;
# the report says so, since its scalar row then times the same code.
SIMD_ENV_KNOWN=0
grep -q CHRONOMERGE_SIMD "$CHRONOMERGE" && SIMD_ENV_KNOWN=1

printf 'case\tfeeds\trecords\tbytes\ttool\trun\tseconds\trss_kib\tuser\tsys\n' > "$ONESHOT_TSV"
for c in "${CASES[@]}"; do
  k=${c%%:*}
  n=${c##*:}
  dir=$(dataset_dir "$k" "$n" "$ONE_SHOT_LAYOUT")
  label="$ONE_SHOT_LAYOUT-k$k"
  files=("$dir"/feed-*.ndjson)
  ((${#files[@]} == k)) || die "$dir holds ${#files[@]} feeds, expected $k; delete it to regenerate"
  bytes=$(manifest_bytes "$dir")
  # Warm the page cache: we measure merging, not the disk.
  cat "${files[@]}" > /dev/null

  note "[$label] correctness check ..."
  check_case "$label" "$n" "${files[@]}"
  CHRONOMERGE_SIMD=scalar check_case "$label-scalar" "$n" "${files[@]}"

  # Round-robin, as in run.sh: drift of the machine hits every command alike.
  for ((run = 1; run <= RUNS; run++)); do
    for tool in chronomerge chronomerge-scalar sort-m; do
      note "[$label] run $run/$RUNS: $tool"
      res="$DATA_ROOT/tmp/measure.res"
      err="$DATA_ROOT/tmp/measure.err"
      case $tool in
        chronomerge) cmd=("$CHRONOMERGE" "${files[@]}") ;;
        chronomerge-scalar) cmd=(env CHRONOMERGE_SIMD=scalar "$CHRONOMERGE" "${files[@]}") ;;
        sort-m) cmd=(env LC_ALL=C sort -m -s -t: "-k2,2n" "${files[@]}") ;;
      esac
      if ! measure "$res" "$err" "${cmd[@]}"; then
        head -n 20 "$err" >&2
        die "$tool failed on $label (command: ${cmd[*]:0:3} ... ${#files[@]} files)"
      fi
      read -r secs rss user sys < "$res"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$k" "$n" "$bytes" \
        "$tool" "$run" "$secs" "$rss" "$user" "$sys" >> "$ONESHOT_TSV"
    done
  done
done

# --- report --------------------------------------------------------------------
# The level chronomerge runs at unless told otherwise, as the
# microbenchmark's library reports it.
DEFAULT_LEVEL=$(sed -n 's/.*; default level \([a-z0-9]*\);.*/\1/p' "$RUN_DIR/micro-${LAYOUTS[0]}.log")
{
  echo "# chronomerge validation benchmark ($STAMP)"
  echo
  echo "- binaries: \`$VALIDATE_BENCH\`, \`$CHRONOMERGE\`"
  echo "- commit: $(commit_summary)"
  echo "- machine: $(machine_summary)"
  echo "- microbenchmark: $REPS timed passes per level (median), one thread; one-shot: $RUNS runs per command (median), timer: $TIMER (RSS floor $(awk -v k="$FLOOR_KIB" 'BEGIN { printf "%.1f", k / 1024 }') MiB), seed: $SEED$( ((QUICK)) && echo ', QUICK MODE (smoke test, numbers meaningless)')"
  echo "- validator level by default: ${DEFAULT_LEVEL:-unknown}; widest vector level of this CPU: $VECTOR_LEVEL"
  # The levels the microbenchmark skipped, and why (once each).
  cat "$RUN_DIR"/micro-*.log | sed -n 's/^level \(.*\), skipped$/- microbenchmark: level \1, skipped/p' | awk '!seen[$0]++'
  if ((!SIMD_ENV_KNOWN)); then
    echo "- \`$CHRONOMERGE\` does not read CHRONOMERGE_SIMD (no vector validator in it): its two chronomerge rows time the same code"
  fi
  echo
  python3 - "$MICRO_TSV" "$ONESHOT_TSV" "$FLOOR_KIB" "$TARGET_GBPS" "$TARGET_RSS_MIB" "$VECTOR_LEVEL" << 'PY'
import csv, statistics, sys
micro_tsv, oneshot_tsv = sys.argv[1], sys.argv[2]
floor_mib = int(sys.argv[3]) / 1024
target_gbps, target_rss = float(sys.argv[4]), float(sys.argv[5])
vector_level = sys.argv[6]

def fmt_int(n):
    return "{:,}".format(n)

# --- microbenchmark
rows = list(csv.DictReader(open(micro_tsv), delimiter="\t"))
print("## Validator microbenchmark (one thread, in memory)")
print()
print("line: RecordParser::parse per line (the scalar validator); scan: the vector validator")
print("alone (the vector scanner over the whole lines of each 128 KiB block; accepted = the")
print("lines it decided itself, the rest go to the scalar one); block: LineBatch over 128 KiB")
print("blocks (framing, the scan, the rest parsed, records made), as a feed reads.")
print()
# The target is for the validator: the vector scanner at the widest level
# the CPU has.
print("| data set | level | path | GB/s per core | ns/line | accepted lines | vs scalar line | target ≥ %g GB/s per core (vector validator, widest level) |" % target_gbps)
print("|---|---|---|---:|---:|---:|---:|---|")
scalar = {r["layout"]: float(r["gb_per_s"]) for r in rows
          if r["level"] == "scalar" and r["path"] == "line"}
def target_verdict(r):
    # A scan that hands most lines to the scalar scanner (nested records)
    # validates little itself: its speed says nothing of the target.
    decided = int(r["accepted"]) / max(int(r["lines"]), 1)
    if decided < 0.5:
        return "n/a (decides %.0f%% of the lines)" % (100 * decided)
    return "met" if float(r["gb_per_s"]) >= target_gbps else "NOT MET"
for r in rows:
    lines, nbytes = int(r["lines"]), int(r["bytes"])
    label = "%s, %s lines, %.0f B/line" % (r["layout"], fmt_int(lines), nbytes / lines)
    gbps = float(r["gb_per_s"])
    vs = "%.2fx" % (gbps / scalar[r["layout"]]) if scalar.get(r["layout"]) else "n/a"
    # cpu/wall well below 1: the thread lost the core to other work.
    busy = "" if float(r["cpu_per_wall"]) >= 0.95 else " (cpu/wall %.2f)" % float(r["cpu_per_wall"])
    print("| %s | %s | %s | %.3f%s | %.1f | %s | %s | %s |" % (
        label, r["level"], r["path"], gbps, busy, float(r["ns_per_line"]),
        fmt_int(int(r["accepted"])), vs,
        target_verdict(r) if r["level"] == vector_level and r["path"] == "scan" else ""))
print()

# --- one-shot
rows = list(csv.DictReader(open(oneshot_tsv), delimiter="\t"))
cases, by = [], {}
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
    by.setdefault((r["case"], r["tool"]), []).append(r)
names = {"chronomerge": "chronomerge",
         "chronomerge-scalar": "chronomerge, CHRONOMERGE_SIMD=scalar",
         "sort-m": "sort -m"}
print("## One-shot merge, telemetry layout (chronomerge / sort -m: lower is better)")
print()
print("| case | command | median wall s | median CPU s (user+sys) | peak RSS MiB | CPU vs sort -m | wall vs sort -m |")
print("|---|---|---:|---:|---:|---:|---:|")
med = {}
for case in cases:
    for tool in ("chronomerge", "chronomerge-scalar", "sort-m"):
        rs = by.get((case, tool))
        if not rs:
            continue
        wall = statistics.median(float(r["seconds"]) for r in rs)
        cpu = statistics.median(float(r["user"]) + float(r["sys"]) for r in rs)
        # Peak RSS: the worst run, since a memory bound must hold every time.
        rss = max(int(r["rss_kib"]) for r in rs) / 1024
        med[(case, tool)] = (wall, cpu, rss)
    sw, sc, _ = med.get((case, "sort-m"), (0, 0, 0))
    for tool in ("chronomerge", "chronomerge-scalar", "sort-m"):
        if (case, tool) not in med:
            continue
        wall, cpu, rss = med[(case, tool)]
        r0 = by[(case, tool)][0]
        label = "K=%s, %s rec, %.0f MB" % (r0["feeds"], fmt_int(int(r0["records"])), int(r0["bytes"]) / 1e6)
        rss_s = ("<= %.1f" % rss) if rss <= floor_mib + 0.25 else "%.1f" % rss
        cpu_r = "%.2fx" % (cpu / sc) if sc > 0 else "n/a"
        wall_r = "%.2fx" % (wall / sw) if sw > 0 else "n/a"
        print("| %s | %s | %.2f | %.2f | %s | %s | %s |" % (label, names[tool], wall, cpu, rss_s, cpu_r, wall_r))
print()

# --- targets (chronomerge at its default level)
def ratio(case, i):
    cm, so = med.get((case, "chronomerge")), med.get((case, "sort-m"))
    if not cm or not so or so[i] <= 0:
        return None
    return cm[i] / so[i]

targets = []  # (what, value text, met)
for case in cases:
    k = int(by[(case, "sort-m")][0]["feeds"])
    if k in (2, 8):
        v = ratio(case, 1)
        targets.append(("K=%d CPU ≤ 1.0× sort -m" % k, v, 1.0, "%.2fx"))
    limit = 0.7 if k == 2 else 0.5
    targets.append(("K=%d wall ≤ %.1f× sort -m" % (k, limit), ratio(case, 0), limit, "%.2fx"))
    if k == 1000:
        rss = med[(case, "chronomerge")][2] if (case, "chronomerge") in med else None
        targets.append(("K=1000 peak RSS ≤ %g MiB" % target_rss, rss, target_rss, "%.1f MiB"))
print("| target (chronomerge at its default level) | result | met? |")
print("|---|---:|---|")
for what, v, limit, fmt in targets:
    if v is None:
        print("| %s | n/a (< 0.01 s) | ? |" % what)
    else:
        print("| %s | %s | %s |" % (what, fmt % v, "met" if v <= limit else "NOT MET"))
PY
  echo
  echo "Correctness (microbenchmark: every level against scalar, line by line; one-shot: output vs \`LC_ALL=C sort -m -s -t: -k2,2n\`):"
  for line in "${CHECKS[@]}"; do
    echo "- $line"
  done
} | tee "$RESULTS_MD"

finish_report validate "$RUN_DIR" "$FAILED"
