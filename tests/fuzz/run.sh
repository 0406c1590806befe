#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, AddressSanitizer + UndefinedBehavior-
# Sanitizer) in their own build directory and runs each for a while.
#
#   tests/fuzz/run.sh [--seconds N | --runs N] [--build-dir DIR] [--no-build] [TARGET...]
#
# TARGET is a name such as fuzz_record_parser (default: every target, the
# network-facing parsers first). Each target starts from the committed seeds
# (tests/fuzz/corpus/<target>) and from its local corpus
# (<build-dir>/corpus/<target>, outside git), where the inputs that reach new
# coverage are kept from run to run. One fuzzer process at a time, niced.
#
# A crash, leak, timeout or out-of-memory fails the script: the reproducer
# lands in <build-dir>/artifacts/<target>/ and its path is printed, with the
# command that replays it. Every run appends a line with its executions and
# coverage to <build-dir>/fuzz-log.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Everything below is one function, read whole before it runs: a long run
# is not thrown off by edits to this file in the meantime.
main() {
  seconds=20
  runs=
  build=build-fuzz
  configure=1
  targets=()
  while (($#)); do
    case "$1" in
      --seconds) seconds=$2; runs=; shift 2 ;;
      --runs) runs=$2; shift 2 ;;
      --build-dir) build=$2; shift 2 ;;
      --no-build) configure=; shift ;;
      -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
      -*) echo "unknown option $1" >&2; exit 2 ;;
      *) targets+=("$1"); shift ;;
    esac
  done
  all=(fuzz_record_parser fuzz_line_framer fuzz_line_batch fuzz_http_request fuzz_resume_request
       fuzz_member_name fuzz_config fuzz_key fuzz_merger fuzz_output_log)
  ((${#targets[@]})) || targets=("${all[@]}")

  if ! command -v clang++-14 >/dev/null; then
    echo "clang++-14 not found: apt-get install clang-14 libfuzzer-14-dev libclang-rt-14-dev" >&2
    exit 2
  fi

  jobs=${JOBS:-2}
  if [ -n "$configure" ]; then
    echo "== fuzz build ($build, clang-14, ASan + UBSan)"
    CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCHRONOMERGE_FUZZ=ON -DCHRONOMERGE_BUILD_TESTS=OFF >/dev/null
    nice -n 19 cmake --build "$build" -j "$jobs" --target fuzz_targets
  fi

  # Per target: the longest input tried. The config loader gets whole files,
  # up to 1 MiB, so that deep nesting is reached.
  max_len() {
    case "$1" in
      fuzz_config) echo 1048576 ;;
      fuzz_merger | fuzz_output_log) echo 8192 ;;
      *) echo 16384 ;;
    esac
  }

  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  log=$build/fuzz-log.txt
  failed=()
  for target in "${targets[@]}"; do
    name=${target#fuzz_}
    binary=$build/tests/fuzz/$target
    corpus=$build/corpus/$target
    artifacts=$build/artifacts/$target
    seeds=tests/fuzz/corpus/$target
    mkdir -p "$corpus" "$artifacts"
    args=(-max_len="$(max_len "$target")" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$artifacts/")
    if [ -n "$runs" ]; then args+=(-runs="$runs"); else args+=(-max_total_time="$seconds"); fi
    [ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
    dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")

    echo "== $target (${runs:+$runs runs}${runs:-$seconds s})"
    output=$build/$target.out
    before=$(ls "$artifacts" | wc -l)
    start=$(date +%s)
    status=0
    # CPU seconds too: on a shared machine a niced fuzzer gets only part of
    # a core, and executions per CPU second are what compare across runs.
    local TIMEFORMAT='%U %S'
    { time nice -n 19 "$binary" "${args[@]}" "${dirs[@]}" >"$output" 2>&1 || status=$?; } \
      2>"$build/$target.time"
    elapsed=$(($(date +%s) - start))
    cpu=$(awk '{printf "%d", $1 + $2}' "$build/$target.time")

    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$output" | tail -1)
    stats=$(grep -E '^#[0-9]+.*cov: ' "$output" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$stats")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")
    size=$(ls "$corpus" | wc -l)
    result=ok
    if ((status != 0)) || (($(ls "$artifacts" | wc -l) > before)); then result=FAILED; fi
    line="$(date -u +%FT%TZ) $target seconds=$elapsed cpu_seconds=$cpu executions=${executions:-?} cov=${cov:-?} ft=${ft:-?} local_corpus=$size result=$result"
    echo "$line" | tee -a "$log"

    if [ "$result" = FAILED ]; then
      failed+=("$target")
      tail -n 60 "$output"
      newest=$(ls -t "$artifacts" | head -1 || true)
      if [ -n "$newest" ]; then
        echo "reproducer: $artifacts/$newest"
        echo "replay:     $binary $artifacts/$newest"
      fi
    fi
  done

  if ((${#failed[@]})); then
    echo "== fuzzing found problems in: ${failed[*]} (full output in $build/<target>.out)" >&2
    exit 1
  fi
}

main "$@"
