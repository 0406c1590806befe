# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts.  Sourced, not run.
#
# Sets: BENCH_DIR, REPO_ROOT, DATA_ROOT, CHRONOMERGE, SEED, MAX_CLIENTS
# Defines: die, note, require_chronomerge, dataset_dir, ensure_data,
#          manifest_bytes, setup_timer, measure, measure_floor, check_case,
#          parse_flags, require_positive, raise_open_files,
#          track_daemon, pick_ports, write_config, start_daemon, stop_daemon,
#          cpu_ticks, machine_ticks, status_kib, watch_daemon, wait_files,
#          wait_clients, record_case, join_json, run_fanout, report_python,
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

# dataset_dir K N [LAYOUT] -> directory holding K feeds with N records in
# total, of gen_feeds.py's LAYOUT.  The default layout ("bus", or none
# given) keeps the name it had before layouts existed, so data sets
# generated then are still found.
dataset_dir() {
  local layout=${3:-bus}
  printf '%s/k%s-n%s-s%s' "$DATA_ROOT" "$1" "$2" "$SEED"
  [[ $layout == bus ]] || printf -- '-%s' "$layout"
}

# ensure_data K N [LAYOUT]: generate the data set unless it is already
# complete.  gen_feeds.py writes MANIFEST.json last, so an interrupted
# generation is detected (no manifest) and redone instead of benchmarking
# partial files.
ensure_data() {
  local k=$1 n=$2 layout=${3:-bus} dir
  dir=$(dataset_dir "$k" "$n" "$layout")
  if [[ -f $dir/MANIFEST.json ]]; then
    return 0
  fi
  local layout_args=()
  [[ $layout == bus ]] || layout_args=(--layout "$layout")
  note "generating $k feeds / $n records${layout_args[*]:+ ($layout layout)} in $dir ..."
  rm -rf "$dir"
  python3 "$BENCH_DIR/gen_feeds.py" --feeds "$k" --records "$n" \
    --seed "$SEED" "${layout_args[@]}" --out "$dir"
}

# manifest_bytes DIR -> total input size in bytes, as recorded by gen_feeds.
manifest_bytes() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' \
    "$1/MANIFEST.json"
}

# --- one-shot timing (bench/run.sh, bench/validate.sh) -----------------------

# setup_timer: sets TIMER to "gnu" or "python".
# GNU time gives wall time, CPU time and peak RSS of exactly the measured
# process.  If it is missing we install it only when that is cheap and
# allowed (root with apt-get); otherwise a python fallback does the same
# with resource.getrusage(RUSAGE_CHILDREN), which is the same kernel
# counter.
setup_timer() {
  TIMER=python
  if command -v /usr/bin/time > /dev/null; then
    TIMER=gnu
  elif [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
    note "installing GNU time (apt-get install -y time) ..."
    if apt-get install -y -qq time > /dev/null 2>&1 ||
      { apt-get update -qq > /dev/null 2>&1 && apt-get install -y -qq time > /dev/null 2>&1; }; then
      TIMER=gnu
    else
      note "could not install GNU time; using the python fallback timer"
    fi
  fi
}

PY_TIMER='
import resource, subprocess, sys, time
result_file, argv = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.call(argv)          # inherits the stdout/stderr redirections
wall = time.monotonic() - t0
# RUSAGE_CHILDREN: the waited children, i.e. the measured command; python
# itself is not counted.  ru_maxrss is the peak RSS (KiB on Linux) of the
# largest of them; the CPU times are their sums.
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(result_file, "w") as f:
    f.write("%.3f %d %.2f %.2f\n" % (wall, ru.ru_maxrss, ru.ru_utime, ru.ru_stime))
sys.exit(rc)
'

# measure RESULT_FILE ERR_FILE CMD...: run CMD with stdout to /dev/null and
# stderr to ERR_FILE; RESULT_FILE receives "wall_seconds peak_rss_kib
# user_seconds system_seconds".  Needs setup_timer.
# GNU time's %e has 10 ms resolution (and %U, %S too): fine for runs of
# 0.1 s and more.  (A clock read by the shell around /usr/bin/time would be
# finer, but it would include time's own start-up, ~10-20 ms here, a worse
# error for `cat`.)
measure() {
  local result=$1 err=$2
  shift 2
  if [[ $TIMER == gnu ]]; then
    /usr/bin/time -f '%e %M %U %S' -o "$result" "$@" > /dev/null 2> "$err"
  else
    python3 -c "$PY_TIMER" "$result" "$@" > /dev/null 2> "$err"
  fi
}

# measure_floor: sets FLOOR_KIB.  The peak RSS a timer reports can never be
# below the RSS of its own forked child before exec() (the kernel carries
# the high-water mark across exec): ~2 MiB for GNU time, ~10-15 MiB for the
# python fallback.  Measure that floor with `true` so the report can flag
# values that sit on it.  Needs setup_timer and DATA_ROOT/tmp.
# shellcheck disable=SC2034  # FLOOR_KIB is for the scripts that source this
measure_floor() {
  measure "$DATA_ROOT/tmp/floor.res" "$DATA_ROOT/tmp/floor.err" true ||
    die "the timer ($TIMER) cannot run 'true'"
  read -r _ FLOOR_KIB _ < "$DATA_ROOT/tmp/floor.res"
}

# check_case LABEL RECORDS FILE...: chronomerge's output on FILE... against
# `sort -m -s`'s; appends one "LABEL: verdict" line to CHECKS and sets
# FAILED=1 when they differ.  Dies if chronomerge exits non-zero.
# Both tools do a stable merge on the same integer key (ties keep input
# order), so their outputs must be byte-identical.  If they are not, we also
# compare the sorted lines: "same lines, different order" points at a tie
# or ordering bug; "different lines" means lines were lost, added or altered.
# shellcheck disable=SC2034  # FAILED is for the scripts that source this
check_case() {
  local label=$1 records=$2
  shift 2
  local cm_out="$DATA_ROOT/out/chronomerge.ndjson" ref_out="$DATA_ROOT/out/sort-m.ndjson"
  local err="$DATA_ROOT/out/chronomerge.stderr"
  if ! "$CHRONOMERGE" "$@" > "$cm_out" 2> "$err"; then
    # No point timing a binary that cannot process the input.
    head -n 20 "$err" >&2
    die "chronomerge exited non-zero on $label (stderr above, full log: $err)"
  fi
  LC_ALL=C sort -m -s -t: -k2,2n "$@" > "$ref_out"
  local lines
  lines=$(wc -l < "$cm_out")
  if cmp -s "$cm_out" "$ref_out"; then
    if ((lines == records)); then
      CHECKS+=("$label: OK, byte-identical to sort -m ($lines lines)")
    else
      CHECKS+=("$label: FAIL, identical to sort -m but $lines lines instead of $records")
      FAILED=1
    fi
    # Also drop outputs kept by an earlier failed run of this case.
    rm -f "$cm_out" "$ref_out" "$err" "$DATA_ROOT/out/$label".*.ndjson
    return 0
  fi
  local a b
  a=$(LC_ALL=C sort --parallel=1 "$cm_out" | cksum)
  b=$(LC_ALL=C sort --parallel=1 "$ref_out" | cksum)
  if [[ $a == "$b" ]]; then
    local first_diff
    # cmp exits 1 on a difference; that is the expected case here.
    first_diff=$(cmp "$cm_out" "$ref_out" 2>&1 || true)
    CHECKS+=("$label: FAIL, same lines as sort -m but in a different order (first difference at ${first_diff##* differ: })")
  else
    CHECKS+=("$label: FAIL, lines differ from sort -m ($lines lines vs $(wc -l < "$ref_out"))")
  fi
  # Keep both outputs for inspection (bench/data/out/<case>.*.ndjson).
  mv "$cm_out" "$DATA_ROOT/out/$label.chronomerge.ndjson"
  mv "$ref_out" "$DATA_ROOT/out/$label.sort-m.ndjson"
  rm -f "$err"
  FAILED=1
}

# --- arguments -----------------------------------------------------------------

# require_live_binaries: the daemon binaries AFTER (and BEFORE, if set) and
# the load generator LOADGEN exist, and python3 is there; dies saying how
# to build them otherwise.
require_live_binaries() {
  local bin
  for bin in "$AFTER" ${BEFORE:+"$BEFORE"}; do
    [[ -x $bin ]] || die "daemon binary '$bin' not found or not executable (set AFTER / BEFORE; build with
  cmake -S '$REPO_ROOT' -B '$REPO_ROOT/build' -DCMAKE_BUILD_TYPE=Release -DCHRONOMERGE_BUILD_BENCH=ON
  cmake --build '$REPO_ROOT/build' --target chronomerge chronomerge_loadgen)"
  done
  [[ -x $LOADGEN ]] || die "load generator not found at '$LOADGEN' (set LOADGEN, or build the
chronomerge_loadgen target with -DCHRONOMERGE_BUILD_BENCH=ON)"
  command -v python3 > /dev/null || die "python3 is required (config, readiness, report)"
}

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

# --- live daemon (bench/live.sh, bench/clients.sh, bench/latency.sh) -------

# The max_clients of every generated config: room for the largest case of
# bench/clients.sh (100 clients) and more.
MAX_CLIENTS=1000

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
# without idling.  The output says slow_client "block" (lossless: every
# client gets every record, and a client that does not read stops the
# merge), which network clients no longer get by default, and allows
# MAX_CLIENTS clients.  Everything else is the default, and only fields
# that binaries from before the retained output log accept are used, so
# the same config runs an old and a new binary alike.  EXTRA_CONFIG, a JSON
# object, is merged into the top level (e.g. '{"retention_bytes": 65536}'
# to see what retention costs; only for binaries that know its fields).
# With FANOUT_TLS set to a directory of certificates (bench/tls.sh makes
# them: ca.crt, server.crt/.key), the feeds and the output speak TLS 1.3
# only, and the feeds require a client certificate from that CA; metrics
# stay plain HTTP.
write_config() {
  EXTRA_CONFIG=${EXTRA_CONFIG:-} FANOUT_TLS=${FANOUT_TLS:-} python3 - "$MAX_CLIENTS" "$@" << 'PY'
import json, os, sys
max_clients = int(sys.argv[1])
path, feeds, base, level = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
metrics = sys.argv[6:] == ["metrics"]
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
                 "listen": "127.0.0.1:%d" % (base + feeds),
                 "slow_client": "block", "max_clients": max_clients}],
}
if metrics:
    config["metrics"] = {"listen": "127.0.0.1:%d" % (base + feeds + 1)}
tls_dir = os.environ.get("FANOUT_TLS")
if tls_dir:
    server = {"cert": os.path.join(tls_dir, "server.crt"),
              "key": os.path.join(tls_dir, "server.key"), "min_version": "1.3"}
    for feed in config["feeds"]:
        feed["tls"] = dict(server, ca=os.path.join(tls_dir, "ca.crt"), client_auth="require")
    config["outputs"][0]["tls"] = dict(server)
config.update(json.loads(os.environ.get("EXTRA_CONFIG") or "{}"))
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

# cpu_ticks PID: utime + stime (fields 14 and 15 of /proc/PID/stat, after
# the parenthesised command name).
cpu_ticks() {
  local stat
  stat=$(< "/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))
}

# machine_ticks: "busy total" jiffies of the whole machine (/proc/stat), to
# show how much of the CPU other work took during a case.
machine_ticks() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# status_kib PID FIELD: VmRSS / VmHWM in KiB (0 if gone).
status_kib() {
  awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' \
    "/proc/$1/status" 2> /dev/null || echo 0
}

# watch_daemon PID[:FILE]...: waits until every PID has exited or created
# its FILE, sampling the daemon's VmRSS every 0.5 s.  Sets RSS_PEAK_KIB,
# RSS_LAST_KIB, RSS_SERIES (one sample per second, MiB).
watch_daemon() {
  local target alive n=0 kib
  RSS_PEAK_KIB=0
  RSS_LAST_KIB=0
  RSS_SERIES=""
  for ((;;)); do
    alive=0
    for target in "$@"; do
      if [[ $target == *:* && -e ${target#*:} ]]; then continue; fi
      kill -0 "${target%%:*}" 2> /dev/null && alive=1 && break
    done
    ((alive)) || break
    sleep 0.1
    if ((++n % 5 == 0)); then
      kib=$(status_kib "$DAEMON_PID" VmRSS)
      RSS_LAST_KIB=$kib
      ((kib > RSS_PEAK_KIB)) && RSS_PEAK_KIB=$kib
      ((n % 10 == 0)) && RSS_SERIES+="$((kib / 1024)) "
    fi
  done
  return 0
}

# wait_files FILE...: the consumers' ready files, up to 10 s.
wait_files() {
  local i f missing
  for ((i = 0; i < 100; i++)); do
    missing=0
    for f in "$@"; do
      [[ -e $f ]] || missing=1
    done
    ((missing)) || return 0
    sleep 0.1
  done
  die "clients did not connect within 10 s"
}

# wait_clients PORT N: until the daemon's metrics on 127.0.0.1:PORT count N
# clients on the output "clients", up to 10 s.  A client's connect()
# returns once the kernel has queued the connection; the daemon accepts it
# on a later loop turn, and a client accepted after the first record would
# miss it.
wait_clients() {
  python3 - "$@" << 'PY' || die "the daemon did not accept $2 clients within 10 s"
import re, sys, time, urllib.request
port, want = sys.argv[1], int(sys.argv[2])
pattern = re.compile(r'^chronomerge_output_sink_clients\{output="clients"\} (\d+)', re.M)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=2).read().decode()
        m = pattern.search(body)
        if m and int(m.group(1)) >= want:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
PY
}

# record_case KEY=JSON...: the pairs, as one JSON object, appended to
# RESULTS_JSON (one object a line).
record_case() {
  python3 -c '
import json, sys
out = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    out[k] = json.loads(v)
open(sys.argv[1], "a").write(json.dumps(out) + "\n")
' "$RESULTS_JSON" "$@"
}

# join_json FILE...: the JSON objects the loadgen printed, one a line, as
# one array; a missing or empty file (a crashed process) is one null.
join_json() {
  local f line sep=''
  printf '['
  for f in "$@"; do
    if [[ -s $f ]]; then
      while IFS= read -r line; do
        [[ -n $line ]] || continue
        printf '%s%s' "$sep" "$line"
        sep=','
      done < "$f"
    else
      printf '%snull' "$sep"
      sep=','
    fi
  done
  printf ']'
}

# run_fanout BINARY LABEL CLIENTS RECORDS DIR [KEY=JSON...]: PRODUCERS
# producers x RECORDS records each, as fast as the sockets take them -> a
# fresh daemon (BINARY) -> CLIENTS clients, each of which must get every
# record once and in order.  The clients are `chronomerge_loadgen consume`
# connections, spread over at most READERS processes.  Configs, logs and
# every loadgen report go in DIR; the case (with the extra KEY=JSON fields)
# is appended to RESULTS_JSON.  Needs LOADGEN, PRODUCERS, READERS,
# RESULTS_JSON, CLK_TCK and track_daemon.  With FANOUT_TLS (see
# write_config) every connection is TLS: the clients verify the daemon
# against FANOUT_TLS/ca.crt, and the producers present
# FANOUT_TLS/producer.crt.
run_fanout() {
  local bin=$1 label=$2 clients=$3 records=$4 dir=$5
  shift 5
  local total=$((PRODUCERS * records)) base out cfg log i pid t0 cpu0 cpu1 hwm m0 m1
  local tls_client=() tls_producer=()
  if [[ -n ${FANOUT_TLS:-} ]]; then
    tls_client=(--tls-ca "$FANOUT_TLS/ca.crt")
    tls_producer=("${tls_client[@]}" --tls-cert "$FANOUT_TLS/producer.crt" --tls-key "$FANOUT_TLS/producer.key")
  fi
  ((clients <= MAX_CLIENTS)) || die "at most $MAX_CLIENTS clients (max_clients of the config)"
  rm -rf "$dir"
  mkdir -p "$dir"
  base=$(pick_ports $((PRODUCERS + 2))) || die "no $((PRODUCERS + 2)) free consecutive ports"
  out=$((base + PRODUCERS))
  cfg="$dir/config.json"
  log="$dir/daemon.log"
  write_config "$cfg" "$PRODUCERS" "$base" info metrics
  note "[$label] $PRODUCERS producers x $records records -> daemon -> $clients client(s) ..."
  start_daemon "$bin" "$cfg" "$log"

  # Each client is done at the first end marker, which comes after every
  # data record; it then stays connected until the SIGTERM drain closes it
  # (and delivers the other markers), so no client leaves a running daemon.
  local readers=() ready=() targets=() procs conns
  procs=$((clients < READERS ? clients : READERS))
  for ((i = 0; i < procs; i++)); do
    conns=$((clients / procs + (i < clients % procs ? 1 : 0)))
    "$LOADGEN" consume --connect "127.0.0.1:$out" --connections "$conns" "${tls_client[@]}" \
      --expect "$total" --strict --expect-markers 1 --until-eof \
      --timeout $((60 + total * clients / 500000)) \
      --ready-file "$dir/reader$i.ready" --done-file "$dir/reader$i.done" \
      > "$dir/reader$i.json" 2> "$dir/reader$i.err" &
    readers+=($!)
    targets+=("$!:$dir/reader$i.done")
    ready+=("$dir/reader$i.ready")
  done
  wait_files "${ready[@]}"
  # Every client must see the stream from its first record.
  wait_clients "$((out + 1))" "$clients"

  local producers=()
  m0=$(machine_ticks)
  cpu0=$(cpu_ticks "$DAEMON_PID")
  t0=$EPOCHREALTIME
  for ((i = 0; i < PRODUCERS; i++)); do
    "$LOADGEN" produce --connect "127.0.0.1:$((base + i))" --count "$records" "${tls_producer[@]}" \
      --feed-index "$i" > "$dir/producer$i.json" 2> "$dir/producer$i.err" &
    producers+=($!)
  done
  watch_daemon "${targets[@]}"
  cpu1=$(cpu_ticks "$DAEMON_PID")
  m1=$(machine_ticks)
  hwm=$(status_kib "$DAEMON_PID" VmHWM)
  # The producers are done once the clients have everything; a producer
  # still running means records went missing (the clients timed out).
  for pid in "${producers[@]}"; do
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
  done
  stop_daemon
  for pid in "${readers[@]}"; do wait "$pid" 2> /dev/null || true; done

  record_case "$@" case="\"$label\"" kind='"fanout"' dir="\"$dir\"" binary="\"$bin\"" \
    clients="$clients" producers="$PRODUCERS" records="$records" expected="$total" t0="$t0" \
    cpu_s="$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" \
    hwm_kib="$hwm" rss_peak_kib="$RSS_PEAK_KIB" daemon_rc="$DAEMON_RC" \
    machine_busy="$(awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f", (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) : 0 }')" \
    consumers="$(join_json "$dir"/reader*.json)" \
    producer_reports="$(join_json "$dir"/producer*.json)"
}

# --- report ------------------------------------------------------------------

# report_python ARG...: python3 running the program on its standard input,
# which can import the bench/*.py helpers (no bytecode files are written).
report_python() {
  PYTHONPATH="$BENCH_DIR${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 python3 - "$@"
}

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
