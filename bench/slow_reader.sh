#!/usr/bin/env bash
# Memory of chronomerge when its consumer is slow.
#
# Usage: bash bench/slow_reader.sh [--quick]
# Environment:
#   CHRONOMERGE  binary under test (default: <repo>/build/daemon/chronomerge)
#   DURATION     seconds to observe (default 20; 3 with --quick)
#   RATE         reader speed in bytes/s (default 3145728 = 3 MiB/s)
#   LIMIT_MIB    target for chronomerge's peak RSS (default 64)
#
# Two ~120 MB feeds are merged into a FIFO that is drained at RATE, far below
# chronomerge's speed.  A merger that respects back-pressure blocks on the
# full pipe and keeps a small, constant footprint; one that keeps reading
# its inputs into an unbounded output queue grows by ~100+ MB/s.  We sample
# VmRSS from /proc/PID/status every 0.5 s, also read the kernel's own
# high-water mark (VmHWM), print the peak, then kill chronomerge.
#
# Exit status: 0 if the peak is below LIMIT_MIB, 1 if not (or chronomerge
# died early), 2 on a setup error.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags quick "$@"

if ((QUICK)); then
  RECORDS=200000  # same data set as run.sh --quick
  DURATION=${DURATION:-3}
else
  RECORDS=2000000  # 2 feeds x ~120 MB, the K=2 data set of run.sh
  DURATION=${DURATION:-20}
fi
RATE=${RATE:-3145728}
LIMIT_MIB=${LIMIT_MIB:-64}
INTERVAL=0.5

require_chronomerge
ensure_data 2 "$RECORDS"
dir=$(dataset_dir 2 "$RECORDS")
files=("$dir"/feed-*.ndjson)
# Warm the page cache: with cold files chronomerge would be disk-bound and
# could not outrun the reader, which is what this case is about.
cat "${files[@]}" > /dev/null

# Reader: pv if present (-L is bytes/s), else python reading 64 KiB at a
# time and sleeping whenever it is ahead of the target rate.
PY_READER='
import os, sys, time
rate = float(sys.argv[1])
total, t0 = 0, time.monotonic()
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    total += len(chunk)
    ahead = total / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
'

mkdir -p "$DATA_ROOT/tmp"
fifo="$DATA_ROOT/tmp/slow_reader.$$.fifo"
err="$DATA_ROOT/tmp/slow_reader.$$.stderr"
rm -f "$fifo"
mkfifo "$fifo"
reader_pid=""
cm_pid=""
cleanup() {
  # Kill only what we started, by PID: chronomerge first, so that it does
  # not report a broken pipe when the reader goes away.
  if [[ -n $cm_pid ]]; then kill "$cm_pid" 2> /dev/null || true; fi
  if [[ -n $reader_pid ]]; then kill "$reader_pid" 2> /dev/null || true; fi
  wait 2> /dev/null || true
  rm -f "$fifo"
}
trap cleanup EXIT

if command -v pv > /dev/null; then
  reader="pv -L $RATE"
  pv -q -L "$RATE" < "$fifo" > /dev/null &
else
  reader="python (64 KiB reads, paced)"
  python3 -c "$PY_READER" "$RATE" < "$fifo" > /dev/null &
fi
reader_pid=$!
# A plain background command (not a pipeline), so that $! is chronomerge's
# own PID and /proc/$cm_pid/status describes chronomerge, not a shell.
"$CHRONOMERGE" "${files[@]}" > "$fifo" 2> "$err" &
cm_pid=$!

note "slow reader: merging ${#files[@]} feeds ($(($(manifest_bytes "$dir") / 1000000)) MB) into $reader at $((RATE / 1024)) KiB/s for ${DURATION}s ..."
samples=$(awk -v d="$DURATION" -v i="$INTERVAL" 'BEGIN { printf "%d", d / i }')
peak_kib=0
last_kib=0
hwm_kib=0
alive=1
for ((s = 0; s < samples; s++)); do
  sleep "$INTERVAL"
  # Read the file once per sample; the process may exit between two reads.
  if ! status=$(cat "/proc/$cm_pid/status" 2> /dev/null) || [[ -z $status ]]; then
    alive=0
    break
  fi
  last_kib=$(awk '/^VmRSS:/ { print $2 }' <<< "$status")
  hwm_kib=$(awk '/^VmHWM:/ { print $2 }' <<< "$status")
  last_kib=${last_kib:-0}
  hwm_kib=${hwm_kib:-0}
  ((last_kib > peak_kib)) && peak_kib=$last_kib
done
if ((alive)) && ! kill -0 "$cm_pid" 2> /dev/null; then alive=0; fi

# VmHWM is the kernel's exact peak; the sampled VmRSS can miss short spikes.
worst_kib=$((hwm_kib > peak_kib ? hwm_kib : peak_kib))
to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo "## Slow reader memory"
echo
echo "- input: 2 feeds, $RECORDS records, reader: $reader at $(to_mib $((RATE / 1024))) MiB/s, observed ${DURATION}s"
echo "- chronomerge peak VmRSS (sampled every ${INTERVAL}s): $(to_mib "$peak_kib") MiB; last: $(to_mib "$last_kib") MiB; VmHWM: $(to_mib "$hwm_kib") MiB"
if ((!alive)); then
  # It cannot have finished legitimately: the reader needs far longer than
  # DURATION to drain the output (~240 MB; ~24 MB with --quick).
  echo "- FAIL: chronomerge exited before the end of the observation; stderr:"
  sed 's/^/    /' "$err" | head -n 20
  rm -f "$err"
  exit 1
fi
rm -f "$err"
if ((worst_kib < LIMIT_MIB * 1024)); then
  echo "- target < $LIMIT_MIB MiB: MET"
else
  echo "- target < $LIMIT_MIB MiB: NOT MET"
  exit 1
fi
