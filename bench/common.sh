# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/slow_reader.sh.  Sourced, not run.
#
# Sets: BENCH_DIR, REPO_ROOT, DATA_ROOT, CHRONOMERGE, SEED
# Defines: die, note, require_chronomerge, dataset_dir, ensure_data,
#          manifest_bytes

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
# All generated data and outputs live here; /bench/data/ is git-ignored.
DATA_ROOT="$BENCH_DIR/data"
# The binary under test; the CHRONOMERGE environment variable overrides it
# (e.g. to benchmark an installed build or another checkout).
CHRONOMERGE=${CHRONOMERGE:-$REPO_ROOT/build/daemon/chronomerge}
# Data is a pure function of (feeds, records, seed), so a fixed seed makes
# runs on different days and machines compare like with like.
SEED=${SEED:-1}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

note() {
  # Progress goes to stderr so that stdout carries only the report.
  printf '%s\n' "$*" >&2
}

require_chronomerge() {
  # Fail early and clearly: a benchmark of a missing binary would otherwise
  # surface as a confusing error deep inside the timing loop.
  if [[ ! -e $CHRONOMERGE ]]; then
    die "chronomerge binary not found at '$CHRONOMERGE'.
Build it first, e.g.:
  cmake -S '$REPO_ROOT' -B '$REPO_ROOT/build' -DCMAKE_BUILD_TYPE=Release
  cmake --build '$REPO_ROOT/build' --target chronomerge
or point the CHRONOMERGE environment variable at an existing binary."
  fi
  if [[ ! -x $CHRONOMERGE ]]; then
    die "'$CHRONOMERGE' exists but is not executable."
  fi
  command -v python3 > /dev/null || die "python3 is required (data generation, reporting)."
}

# dataset_dir K N -> directory holding K feeds with N records in total.
dataset_dir() {
  printf '%s/k%s-n%s-s%s' "$DATA_ROOT" "$1" "$2" "$SEED"
}

# ensure_data K N: generate the data set unless it is already complete.
# gen_feeds.py writes MANIFEST.json last, so an interrupted generation is
# detected (no manifest) and redone instead of benchmarking partial files.
ensure_data() {
  local k=$1 n=$2 dir
  dir=$(dataset_dir "$k" "$n")
  if [[ -f $dir/MANIFEST.json ]]; then
    return 0
  fi
  note "generating $k feeds / $n records in $dir ..."
  rm -rf "$dir"
  python3 "$BENCH_DIR/gen_feeds.py" --feeds "$k" --records "$n" \
    --seed "$SEED" --out "$dir"
}

# manifest_bytes DIR -> total input size in bytes, as recorded by gen_feeds.
manifest_bytes() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' \
    "$1/MANIFEST.json"
}
