# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts.  Sourced, not run.
#
# Sets: BENCH_DIR, REPO_ROOT, DATA_ROOT, CHRONOMERGE, SEED
# Defines: die, note, require_chronomerge, dataset_dir, ensure_data,
#          manifest_bytes, parse_flags, require_positive, raise_open_files,
#          track_daemon, pick_ports, write_config, start_daemon, stop_daemon,
#          commit_summary, machine_summary, finish_report

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

# --- arguments -----------------------------------------------------------------

# parse_flags "NAME..." ARG...: each --NAME among the ARGs sets the variable
# NAME in upper case to 1 (0 if absent); --help prints the header comment of
# the script that was run; any other ARG is an error.
parse_flags() {
  local names=$1 name arg known
  shift
  for name in $names; do
    printf -v "${name^^}" 0
  done
  for arg in "$@"; do
    case $arg in
      -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    esac
    known=0
    for name in $names; do
      if [[ $arg == "--$name" ]]; then
        printf -v "${name^^}" 1
        known=1
      fi
    done
    ((known)) || die "unknown argument '$arg' (try --help)"
  done
}

# require_positive VAR...: each named variable must hold a positive integer.
require_positive() {
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
  done
}

# raise_open_files N: lifts the soft open-files limit to N (or, failing
# that, to the hard limit) when it is below N.
raise_open_files() {
  if (($(ulimit -n) < $1)); then
    ulimit -n "$1" 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
  fi
}

# --- live daemon (bench/live.sh, bench/latency.sh) -------------------------

# track_daemon DIR: the sd_notify socket and messages go in DIR; on exit,
# every background job this script still runs is stopped, by PID.
track_daemon() {
  DAEMON_DIR=$1
  DAEMON_PID=""
  trap stop_jobs EXIT
}

# stop_jobs: the EXIT trap of track_daemon.
stop_jobs() {
  local pid
  for pid in $(jobs -pr); do
    kill "$pid" 2> /dev/null || true
  done
  wait 2> /dev/null || true
  rm -f "$DAEMON_DIR/notify.sock"
}

# pick_ports N -> first of N consecutive free TCP ports on 127.0.0.1, below
# the ephemeral range (where the kernel picks the local ports of our own
# producers and clients), so that nothing else takes one before the daemon
# binds it.
pick_ports() {
  python3 - "$1" << 'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    lo, _ = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except OSError:
    lo = 32768
top = lo - n - 1 if lo - n - 1 > 10000 else 65535 - n
for _ in range(500):
    base = random.randint(10000 if top > 10000 else 1024, top)
    socks, ok = [], True
    try:
        for p in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        ok = False
    for s in socks:
        s.close()
    if ok:
        print(base)
        sys.exit(0)
sys.exit(1)
PY
}

# write_config FILE FEEDS BASE_PORT LOG_LEVEL [metrics]: FEEDS tcp-listen
# feeds on BASE_PORT.., one tcp-listen output on BASE_PORT+FEEDS and, with
# "metrics", metrics on the next port.  idle_timeout_ms is 10 minutes: no
# feed is ever declared idle during a run, so the merge always waits for
# every feed and the output must be exactly in order.  Producers end with an
# end-marker record (see bench/loadgen.cc), which releases the last records
# without idling.  Everything else is the default.
write_config() {
  python3 - "$@" << 'PY'
import json, sys
path, feeds, base, level = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
metrics = sys.argv[5:] == ["metrics"]
width = max(4, len(str(feeds - 1)))
config = {
    "key": "time",
    "key_type": "integer",
    "idle_timeout_ms": 600000,
    "drain_timeout_ms": 5000,
    "log_level": level,
    "feeds": [{"name": "p%0*d" % (width, i), "type": "tcp-listen",
               "listen": "127.0.0.1:%d" % (base + i)} for i in range(feeds)],
    "outputs": [{"name": "clients", "type": "tcp-listen",
                 "listen": "127.0.0.1:%d" % (base + feeds)}],
}
if metrics:
    config["metrics"] = {"listen": "127.0.0.1:%d" % (base + feeds + 1)}
with open(path, "w") as f:
    json.dump(config, f, indent=1)
    f.write("\n")
PY
}

# Listens on a unix datagram socket for sd_notify messages and writes them
# to a file; exits at READY=1 (or after the timeout).
PY_NOTIFY='
import os, socket, sys, time
path, out, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.2)
deadline = time.monotonic() + timeout
with open(out, "w") as f:
    while time.monotonic() < deadline:
        try:
            msg = s.recv(4096).decode(errors="replace")
        except socket.timeout:
            continue
        f.write(msg.replace("\n", " ") + "\n")
        f.flush()
        if "READY=1" in msg.split("\n"):
            break
os.unlink(path)
'

# start_daemon BINARY CONFIG LOG [PREFIX...]: starts the daemon (behind the
# command PREFIX, e.g. nice -n 5, which must exec it) and waits until it
# says READY=1 on NOTIFY_SOCKET (every listener bound), as under systemd.
# With DAEMON_IGNORE_SIGPIPE=1 it starts with SIGPIPE ignored, as systemd
# does (IgnoreSIGPIPE=yes).  Sets DAEMON_PID.
start_daemon() {
  local bin=$1 config=$2 log=$3 sock="$DAEMON_DIR/notify.sock" msgs="$DAEMON_DIR/notify.txt" i
  shift 3
  "$bin" --check-config "$config" > /dev/null 2> "$log" ||
    die "$bin rejects the generated config $config: $(head -n 5 "$log")"
  rm -f "$sock" "$msgs"
  python3 -c "$PY_NOTIFY" "$sock" "$msgs" 30 &
  local listener=$!
  for ((i = 0; i < 100; i++)); do
    [[ -S $sock ]] && break
    sleep 0.05
  done
  [[ -S $sock ]] || die "the sd_notify listener did not start"
  if [[ ${DAEMON_IGNORE_SIGPIPE:-0} == 1 ]]; then
    # An ignored signal stays ignored across exec; $! is the daemon itself.
    (
      trap '' PIPE
      NOTIFY_SOCKET=$sock exec "$@" "$bin" --config "$config" 2> "$log"
    ) &
  else
    NOTIFY_SOCKET=$sock "$@" "$bin" --config "$config" 2> "$log" &
  fi
  DAEMON_PID=$!
  for ((i = 0; i < 300; i++)); do
    if grep -q '^READY=1' "$msgs" 2> /dev/null; then
      wait "$listener" 2> /dev/null || true
      return 0
    fi
    if ! kill -0 "$DAEMON_PID" 2> /dev/null; then
      sed 's/^/    /' "$log" | tail -n 20 >&2
      die "$bin exited before it was ready (log: $log)"
    fi
    sleep 0.1
  done
  die "$bin was not ready after 30 s (log: $log)"
}

# stop_daemon: SIGTERM, wait up to 20 s, then SIGKILL.  Sets DAEMON_RC.
# shellcheck disable=SC2034  # DAEMON_RC is for the scripts that source this
stop_daemon() {
  local i
  DAEMON_RC=0
  kill -TERM "$DAEMON_PID" 2> /dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$DAEMON_PID" 2> /dev/null || break
    sleep 0.1
  done
  if kill -0 "$DAEMON_PID" 2> /dev/null; then
    note "the daemon did not exit 20 s after SIGTERM; killing it"
    kill -KILL "$DAEMON_PID" 2> /dev/null || true
  fi
  wait "$DAEMON_PID" 2> /dev/null || DAEMON_RC=$?
}

# --- report ------------------------------------------------------------------

# commit_summary -> short HEAD, and a note when lib/ or daemon/ differ from it.
commit_summary() {
  printf '%s%s\n' "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2> /dev/null || echo 'none')" \
    "$(git -C "$REPO_ROOT" diff --quiet HEAD -- lib daemon 2> /dev/null || echo ' (lib/ or daemon/ modified)')"
}

# machine_summary -> CPU model, usable and total cores, kernel.
machine_summary() {
  printf '%s, %s usable of %s cores, %s\n' \
    "$(grep -m1 'model name' /proc/cpuinfo 2> /dev/null | cut -d: -f2- | sed 's/^ *//')" \
    "$(nproc)" "$(nproc --all)" "$(uname -sr)"
}

# finish_report NAME RUN_DIR FAILED: keeps RESULTS_MD as NAME-latest.md too,
# says where everything is, and exits 1 if FAILED is 1.
finish_report() {
  cp "$RESULTS_MD" "$DATA_ROOT/results/$1-latest.md"
  note "configs, logs and raw reports: $2/"
  note "report: $RESULTS_MD (copy at $DATA_ROOT/results/$1-latest.md)"
  if (($3)); then
    note "FAILED: see the correctness lines above"
    exit 1
  fi
}
