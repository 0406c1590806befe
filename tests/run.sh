#!/usr/bin/env bash
# Sets up and runs every test: installs the build dependencies (Debian
# bookworm, as root), builds with warnings as errors, runs the whole suite
# (the unit, io and e2e test binaries, under ctest), then runs the three
# binaries again built with AddressSanitizer and
# UndefinedBehaviorSanitizer, checks formatting, verifies the systemd unit,
# and fuzzes every network-facing parser and the merger for a short while
# (FUZZ_SECONDS per target, 20 by default; see tests/fuzz/run.sh). This is
# the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config git
          libuv1-dev nlohmann-json3-dev doctest-dev libfmt-dev libssl-dev libsimdjson-dev librdkafka-dev libcli11-dev kafkacat
          systemd clang-format curl python3 openssl clang-14 libfuzzer-14-dev libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (or install: apt-get install ${missing[*]})" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# promtool checks the metrics exposition and the alert rules, and headless
# Chromium runs the status page, when Debian's prometheus and chromium
# packages are installed; they are large, so only CI installs them (the
# tests that need them say so and skip where they are missing).
if [ "${CI:-}" = "true" ]; then
  ci_extras=()
  command -v promtool >/dev/null || ci_extras+=(prometheus)
  command -v chromium >/dev/null || ci_extras+=(chromium)
  if ((${#ci_extras[@]})); then
    apt-get install -y -qq --no-install-recommends "${ci_extras[@]}" >/dev/null || true
  fi
fi

jobs=${JOBS:-2}

echo "== build (Release, warnings as errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHRONOMERGE_WERROR=ON >/dev/null
cmake --build build -j "$jobs"

echo "== tests"
(cd build && ctest --output-on-failure -j "$jobs" --timeout 300)

echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCHRONOMERGE_WERROR=ON \
      -DCHRONOMERGE_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j "$jobs"
# The end-to-end cases start the daemon; under the sanitizers they also
# check its shutdown path, but the heaviest (memory under load) are skipped
# because the sanitizers' own memory would dominate the measurement.
for binary in chronomerge_unit_tests chronomerge_io_tests chronomerge_e2e_tests; do
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "./build-sanitize/tests/$binary" --test-case-exclude='*RSS*'
done

echo "== formatting (.clang-format)"
files=$(git ls-files '*.cc' '*.h' '*.inc' 2>/dev/null || find daemon lib tests -name '*.cc' -o -name '*.h' -o -name '*.inc')
clang-format --dry-run -Werror $files

echo "== systemd unit"
unit=$(mktemp --suffix=.service)
sed "s|/usr/bin/chronomerge|$PWD/build/daemon/chronomerge|g" systemd/chronomerge.service >"$unit"
cp "$unit" "$(dirname "$unit")/chronomerge.service"
systemd-analyze verify "$(dirname "$unit")/chronomerge.service"
rm -f "$unit" "$(dirname "$unit")/chronomerge.service"

# libFuzzer targets, built by clang-14 in build-fuzz; a crash fails the run
# and leaves its reproducer in build-fuzz/artifacts/<target>/.
echo "== fuzzing (${FUZZ_SECONDS:-20} s per target)"
JOBS=$jobs bash tests/fuzz/run.sh --seconds "${FUZZ_SECONDS:-20}"

echo "== all tests passed"
