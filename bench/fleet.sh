#!/usr/bin/env bash
# Fleet feeds: MEMBERS producers connect to one tcp-listen port, and every
# connection becomes a feed of its own in the merge (a fleet member, named
# by its hello line) -> daemon -> 1 client, which must get every record, in
# order.
#
# Usage: bash bench/fleet.sh
# Environment:
#   CHRONOMERGE   daemon binary, a Release build (default:
#                 <repo>/build/daemon/chronomerge)
#   LOADGEN       load generator (default: <repo>/build/bench/chronomerge_loadgen)
#   MEMBERS       fleet members, one connection each (default 10000)
#   RATE          records per second from each member (default 10)
#   DURATION      seconds each member sends (default 30)
#   CONNECT_RATE  new connections per second while the members connect
#                 (default 0: as fast as the load generator opens them)
#   DAEMON_NICE   niceness of the daemon alone (default 0; as root, e.g. -5
#                 serves it ahead of the load generator on the shared cores)
#
# One fresh daemon, with a config generated under bench/data/fleet/: one
# fleet feed "buses" on 127.0.0.1:0 (members named by hello,
# heartbeat_field "heartbeat", max_members 10000 or MEMBERS if more), one
# tcp-listen output with slow_client "block" (the client gets every
# record), metrics on 127.0.0.1:0, everything else the default (retention
# included). The ports are read from the daemon's log. One client
# connects first (`chronomerge_loadgen consume`); then one
# `chronomerge_loadgen fleet` process opens the MEMBERS connections, each
# sending its hello, RATE records a second stamped with the wall clock in
# ms for DURATION s, an end marker, and closing.
#
# Measured: the time until all members are accepted (by the load
# generator: connections made; by the daemon: chronomerge_fleet_members on
# /metrics, polled every 0.1 s), the daemon's peak RSS (VmHWM, and VmRSS
# sampled), its CPU (utime + stime) per second of wall time while every
# member is connected and sending, whether the merge kept up meanwhile
# (records merged against records taken in, and the frontier's lag behind
# the wall clock), and the client's verdict. Targets: all members accepted
# in < 10 s, peak RSS < 512 MiB, CPU < 1 core with the merge keeping up,
# output complete and in order. The table is also saved under
# bench/data/results/.
#
# Exit status: 0 if the client got every record exactly once, in order,
# and every end marker, and the daemon exited 0 on SIGTERM; 1 if not; 2 on
# a usage or setup error. Missing a performance target does not fail it.
set -euo pipefail

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags "" "$@"

LOADGEN=${LOADGEN:-$REPO_ROOT/build/bench/chronomerge_loadgen}
MEMBERS=${MEMBERS:-10000}
RATE=${RATE:-10}
DURATION=${DURATION:-30}
CONNECT_RATE=${CONNECT_RATE:-0}
require_positive MEMBERS RATE DURATION
DAEMON_NICE=${DAEMON_NICE:-0}
[[ $CONNECT_RATE =~ ^[0-9]+$ ]] || die "CONNECT_RATE must be an integer >= 0, got '$CONNECT_RATE'"
[[ $DAEMON_NICE =~ ^-?[0-9]+$ ]] || die "DAEMON_NICE must be an integer, got '$DAEMON_NICE'"
if ((DAEMON_NICE < 0)) && ! nice -n "$DAEMON_NICE" true 2> /dev/null; then
  die "DAEMON_NICE=$DAEMON_NICE needs root (or CAP_SYS_NICE)"
fi
((MEMBERS <= 99999)) || die "MEMBERS must be at most 99999 (member names have 5 digits)"

# Targets.
TARGET_RSS_MIB=512
TARGET_CPU_CORES=1
TARGET_ACCEPT_S=10

require_chronomerge
[[ -x $LOADGEN ]] || die "load generator not found at '$LOADGEN' (set LOADGEN, or build the
chronomerge_loadgen target with -DCHRONOMERGE_BUILD_BENCH=ON)"

FLEET_DIR="$DATA_ROOT/fleet"
rm -rf "$FLEET_DIR"
mkdir -p "$FLEET_DIR" "$DATA_ROOT/results"
# One descriptor per member in the daemon and in the load generator.
raise_open_files $((MEMBERS + 1024))
(($(ulimit -n) > MEMBERS + 64)) ||
  die "open-files limit $(ulimit -n) is too low for $MEMBERS members (hard limit $(ulimit -Hn))"
CLK_TCK=$(getconf CLK_TCK)
PER_MEMBER=$((RATE * DURATION))
TOTAL=$((MEMBERS * PER_MEMBER))

track_daemon "$FLEET_DIR"

# --- daemon ----------------------------------------------------------------------
CFG="$FLEET_DIR/config.json"
LOG="$FLEET_DIR/daemon.log"
python3 - "$CFG" "$MEMBERS" << 'PY'
import json, sys
path, members = sys.argv[1], int(sys.argv[2])
config = {
    "key": "time",
    "key_type": "integer",
    "log_level": "info",
    "feeds": [{"name": "buses", "type": "tcp-listen", "listen": "127.0.0.1:0",
               "heartbeat_field": "heartbeat",
               "fleet": {"name_from": "hello", "max_members": max(10000, members)}}],
    # block: the client gets every record, however far behind it falls.
    "outputs": [{"name": "clients", "type": "tcp-listen", "listen": "127.0.0.1:0",
                 "slow_client": "block"}],
    "metrics": {"listen": "127.0.0.1:0"},
}
with open(path, "w") as f:
    json.dump(config, f, indent=1)
    f.write("\n")
PY

note "[fleet] $MEMBERS members x $RATE records/s for ${DURATION}s -> daemon -> 1 client ..."
start_daemon "$CHRONOMERGE" "$CFG" "$LOG" nice -n "$DAEMON_NICE"

# port_from_log WHAT: the port of the daemon's "WHAT: listening on ADDR"
# line ("feed buses", "output clients", "metrics"; the metrics address is
# http://HOST:PORT). Every listener is bound before READY=1, so the line
# is there.
port_from_log() {
  local line i
  for ((i = 0; i < 50; i++)); do
    if line=$(grep -m1 -o "$1: listening on [^ ]*" "$LOG"); then
      echo "${line##*:}"
      return 0
    fi
    sleep 0.1
  done
  die "no '$1: listening on' line in $LOG"
}
FEED_PORT=$(port_from_log "feed buses")
OUT_PORT=$(port_from_log "output clients")
METRICS_PORT=$(port_from_log "metrics")
note "[fleet] daemon $DAEMON_PID: fleet on port $FEED_PORT, output on $OUT_PORT, metrics on $METRICS_PORT"

# --- client ----------------------------------------------------------------------
# Done at the first end marker, which follows every data record; it stays
# connected until the SIGTERM drain has delivered the other markers and
# closed the connection. Keys tie (every member stamps the same clock), so
# the check is "never backwards", and equal keys in member-name order.
"$LOADGEN" consume --connect "127.0.0.1:$OUT_PORT" --expect "$TOTAL" --expect-markers 1 \
  --until-eof --ties-by-vehicle --timeout $((DURATION * 2 + 300)) \
  --ready-file "$FLEET_DIR/client.ready" --done-file "$FLEET_DIR/client.done" \
  > "$FLEET_DIR/client.json" 2> "$FLEET_DIR/client.err" &
CONSUMER=$!
wait_files "$FLEET_DIR/client.ready"
wait_clients "$METRICS_PORT" 1

# --- monitor ---------------------------------------------------------------------
# Every 0.1 s until all members are accepted, then every 0.5 s: the
# daemon's CPU ticks (in all and per thread), VmRSS, fleet metrics and a
# few of the merge's and the output's, and the machine's busy and total
# jiffies, one JSON object a line.
python3 - "$METRICS_PORT" "$DAEMON_PID" "$MEMBERS" "$FLEET_DIR/timeline.jsonl" \
  "$FLEET_DIR/monitor.stop" << 'PY' &
import json, os, re, sys, time, urllib.request
port, pid, members, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
fleet = re.compile(r'^chronomerge_fleet_(\w+)\{fleet="buses"(?:,reason="(\w+)")?\} (\S+)$', re.M)
merge = re.compile(r'^chronomerge_(records_out_total|frontier_lag_seconds|output_log_retained_bytes'
                   r'|output_sink_blocked_seconds_total|output_sink_queue_bytes)(?:\{output="clients"\})? (\S+)$', re.M)
holding = re.compile(r'^chronomerge_feed_holding_seconds\{feed="([^"]+)"\} (\S+)$', re.M)


def ticks(path):
    text = open(path).read()
    stat = text.rsplit(")", 1)[1].split()
    return text[text.index("(") + 1:text.rindex(")")], int(stat[11]) + int(stat[12])


accepted = False
with open(out, "w") as f:
    while not os.path.exists(stop):
        t = time.time()
        try:
            cpu = ticks("/proc/%s/stat" % pid)[1]
            status = open("/proc/%s/status" % pid).read()
        except OSError:
            break  # the daemon is gone
        threads = {}
        for tid in os.listdir("/proc/%s/task" % pid):
            try:
                threads[tid] = ticks("/proc/%s/task/%s/stat" % (pid, tid))
            except OSError:
                pass
        rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
        with open("/proc/stat") as s:
            v = [int(x) for x in s.readline().split()[1:]]
        m, hold = {}, None
        try:
            body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=2).read().decode()
            for name, reason, value in fleet.findall(body):
                m[name + ("." + reason if reason else "")] = float(value)
            for name, value in merge.findall(body):
                m[name] = float(value)
            held = [(float(v), feed) for feed, v in holding.findall(body)]
            if held:
                hold = max(held)
        except (OSError, ValueError):
            pass
        f.write(json.dumps({"t": t, "cpu": cpu, "threads": threads, "rss_kib": rss,
                            "busy": sum(v) - v[3] - v[4], "total": sum(v), "m": m,
                            "holding": hold}) + "\n")
        f.flush()
        accepted = accepted or m.get("members", 0) >= members
        time.sleep(max(0.0, (0.5 if accepted else 0.1) - (time.time() - t)))
PY
MONITOR=$!

# --- run -------------------------------------------------------------------------
# tcp_counters: the kernel's counts of connections lost or delayed at a full
# listen queue (TcpExt of /proc/net/netstat; for the whole machine), as
# NAME=VALUE words.
tcp_counters() {
  awk '/^TcpExt:/ {
    if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1; next }
    for (i = 2; i <= NF; i++)
      if (k[i] ~ /^(ListenOverflows|ListenDrops|SyncookiesSent|SyncookiesFailed|TCPReqQFullDoCookies|TCPReqQFullDrop)$/)
        printf "%s=%s ", k[i], $i
  }' /proc/net/netstat 2> /dev/null || true
}
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
TCP_BEFORE=$(tcp_counters)
"$LOADGEN" fleet --connect "127.0.0.1:$FEED_PORT" --members "$MEMBERS" --rate "$RATE" \
  --duration "$DURATION" --connect-rate "$CONNECT_RATE" \
  > "$FLEET_DIR/fleet.json" 2> "$FLEET_DIR/fleet.err" &
FLEET=$!
# The load generator ends by itself: every member done, or its deadline.
while kill -0 "$FLEET" 2> /dev/null; do
  kill -0 "$DAEMON_PID" 2> /dev/null || break
  sleep 0.2
done
FLEET_RC=0
wait "$FLEET" 2> /dev/null || FLEET_RC=$?
TCP_AFTER=$(tcp_counters)
# Then the client has everything at once: every member's last records
# are followed by its end marker. Up to 30 s for a slow merge.
for ((i = 0; i < 300; i++)); do
  [[ -e $FLEET_DIR/client.done ]] && break
  kill -0 "$CONSUMER" 2> /dev/null || break
  kill -0 "$DAEMON_PID" 2> /dev/null || break
  sleep 0.1
done
HWM_KIB=$(status_kib "$DAEMON_PID" VmHWM)
touch "$FLEET_DIR/monitor.stop"
wait "$MONITOR" 2> /dev/null || true
# Kept for inspection: the metrics and the members' states at the end.
python3 - "$METRICS_PORT" "$FLEET_DIR" << 'PY' || true
import sys, urllib.request
for path, name in (("/metrics", "metrics.txt"), ("/fleet", "fleet-status.json")):
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], path), timeout=5).read()
        open("%s/%s" % (sys.argv[2], name), "wb").write(body)
    except Exception:
        pass
PY
stop_daemon
wait "$CONSUMER" 2> /dev/null || true

# --- report ----------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS_MD="$DATA_ROOT/results/fleet-$STAMP.md"
FAILED=0
{
  echo "# chronomerge fleet benchmark ($STAMP)"
  echo
  echo "- binary: \`$CHRONOMERGE\`, load generator: \`$LOADGEN\`"
  echo "- commit: $(commit_summary)"
  echo "- load: $MEMBERS members (one connection each, one fleet feed) × $RATE records/s for ${DURATION} s$( ((CONNECT_RATE > 0)) && echo ", connecting at $CONNECT_RATE/s"); $TOTAL records in all; 1 client$( ((DAEMON_NICE != 0)) && echo "; daemon niceness $DAEMON_NICE")"
  echo "- machine: $(machine_summary); daemon, load generator and client share them; load average at start: $LOAD_AT_START"
  echo
  report_python "$FLEET_DIR" "$MEMBERS" "$TOTAL" "$HWM_KIB" "$DAEMON_RC" "$FLEET_RC" "$CLK_TCK" \
    "$TARGET_RSS_MIB" "$TARGET_CPU_CORES" "$TARGET_ACCEPT_S" "$TCP_BEFORE" "$TCP_AFTER" << 'PY'
import json, os, sys
from consume_checks import client_problems, daemon_exit, fmt_n, where

d = sys.argv[1]
members, total, hwm_kib, daemon_rc, fleet_rc, clk = (int(x) for x in sys.argv[2:8])
rss_mib, cpu_cores, accept_s = float(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10])
tcp_before, tcp_after = ({k: int(v) for k, v in (w.split("=") for w in a.split())}
                         for a in sys.argv[11:13])


def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return None


lg = load("fleet.json")
client = load("client.json")
timeline = []
try:
    timeline = [json.loads(l) for l in open(os.path.join(d, "timeline.jsonl")) if l.strip()]
except OSError:
    pass
failed = False
checks, notes = [], []
run = {"dir": d, "daemon_rc": daemon_rc}

# Accepting: the load generator's connections made, and the daemon's count.
t0 = lg["wall_start"] if lg else (timeline[0]["t"] if timeline else 0)
lg_accept = lg["establish_s"] if lg and lg["establish_s"] >= 0 else None
t_all = next((s["t"] for s in timeline if s["m"].get("members", 0) >= members), None)
daemon_accept = t_all - t0 if t_all is not None else None
peak_members = max((s["m"].get("members", 0) for s in timeline), default=0)
t_peak = next((s["t"] for s in timeline if s["m"].get("members", 0) >= peak_members), t0)

# Steady state: from 1 s after the daemon counted every member to 1 s
# before the first member sent its end marker.
window = None
if timeline and lg and lg["wall_first_end"] > 0:
    begin = (t_all if t_all is not None else t_peak) + 1
    end = lg["wall_first_end"] - 1
    inside = [s for s in timeline if begin <= s["t"] <= end]
    if len(inside) >= 2 and inside[-1]["t"] - inside[0]["t"] >= 2:
        window = (inside[0], inside[-1])
if window:
    a, b = window
    secs = b["t"] - a["t"]
    cpu = (b["cpu"] - a["cpu"]) / clk / secs
    rec_in = (b["m"].get("records_total", 0) - a["m"].get("records_total", 0)) / secs
    rec_out = (b["m"].get("records_out_total", 0) - a["m"].get("records_out_total", 0)) / secs
    busy = (b["busy"] - a["busy"]) / (b["total"] - a["total"]) if b["total"] > a["total"] else 0
    # The busiest thread: the event loop, if one thread is what limits it.
    per_thread = sorted(((b["threads"][tid][1] - a["threads"][tid][1]) / clk / secs, a["threads"][tid][0])
                        for tid in a.get("threads", {}) if tid in b.get("threads", {}))
    inside = [s for s in timeline if a["t"] <= s["t"] <= b["t"]]
    lags = [s["m"]["frontier_lag_seconds"] for s in inside if "frontier_lag_seconds" in s["m"]]
    queued = [s["m"].get("queue_bytes", 0) for s in inside]
    cpu_text = "%.2f cores (%.1f s window)" % (cpu, secs)
    notes.append("steady state (%.1f s, %.1f–%.1f s after the load generator started): the daemon took in %s records/s (chronomerge_fleet_records_total) and merged %s records/s (chronomerge_records_out_total), using %.0f%% of one core, %.2f µs per record in; its busiest thread (%s) used %.0f%% of one core; the whole machine was %.0f%% busy"
                 % (secs, a["t"] - t0, b["t"] - t0, fmt_n(rec_in), fmt_n(rec_out), 100 * cpu,
                    cpu / rec_in * 1e6 if rec_in > 0 else 0,
                    per_thread[-1][1] if per_thread else "n/a",
                    100 * per_thread[-1][0] if per_thread else 0, 100 * busy))
    if lags and queued:
        notes.append("steady state: merge frontier behind the wall clock (chronomerge_frontier_lag_seconds, keys are wall-clock ms) %.2f s at the start, %.2f s at the end, %.2f s at most; the members' queues held %.1f MiB at the start, %.1f MiB at the end"
                     % (lags[0], lags[-1], max(lags), queued[0] / 2**20, queued[-1] / 2**20))
    holds = [s["holding"] for s in inside if s.get("holding")]
    if holds:
        h = max(holds)
        notes.append("steady state: the longest hold of the merge seen was %.2f s, by %s (chronomerge_feed_holding_seconds)" % tuple(h))
else:
    cpu, rec_in, rec_out, lags = None, 0, 0, []
    cpu_text = "n/a (no steady window of 2 s or more)"
if timeline:
    first, last = timeline[0], timeline[-1]
    if last["t"] > first["t"]:
        notes.append("whole run (%.1f s): daemon CPU %.2f s, %.0f%% of one core"
                     % (last["t"] - first["t"], (last["cpu"] - first["cpu"]) / clk,
                        100 * (last["cpu"] - first["cpu"]) / clk / (last["t"] - first["t"])))

peak_kib = max([hwm_kib] + [s["rss_kib"] for s in timeline])
peak = peak_kib / 1024

# The client's verdict.
ok_output = True
label = "%s members → 1 client" % fmt_n(members)
if client is None:
    ok_output = False
    checks.append("%s: FAIL, the client reported nothing (crashed? see %s/client.err)" % (label, where(run)))
else:
    problems = client_problems(client, total, members)
    if client.get("tie_disorder"):
        problems.append("%d records out of member-name order among equal keys" % client["tie_disorder"])
    late = timeline[-1]["m"].get("late_total", 0) if timeline else 0
    if client["out_of_order"] and late:
        problems.append("the daemon counted %s late records (chronomerge_fleet_late_total): keys behind what the merge had already emitted, emitted anyway (late policy emit)" % fmt_n(late))
    if problems:
        ok_output = False
        checks.append("%s: FAIL, %s%s" % (label, "; ".join(problems),
                      (" (first: %s)" % client["first_problem"]) if client.get("first_problem") else ""))
    else:
        checks.append("%s: OK, the client received all %s records and %s end markers, keys never going back, equal keys in member-name order, every member's seq complete"
                      % (label, fmt_n(total), fmt_n(members)))
if lg is None:
    ok_output = False
    checks.append("load generator: FAIL, no report (see %s/fleet.err)" % where(run))
elif lg["errors"] or lg["unsent_records"] or fleet_rc != 0:
    ok_output = False
    checks.append("load generator: FAIL, %d of %d members connected, %d failed to connect, %d dropped by the daemon, %d unfinished; %s of %s records not sent (first error: %s)"
                  % (lg["connected"], members, lg["failed"], lg["dropped"], lg["unfinished"],
                     fmt_n(lg["unsent_records"]), fmt_n(lg["expected"]), lg["first_error"] or "none"))
else:
    checks.append("load generator: OK, %s members connected, %s records and %s end markers sent, none refused or dropped"
                  % (fmt_n(lg["connected"]), fmt_n(lg["records"]), fmt_n(lg["markers"])))
ok_output = daemon_exit(label, run, checks) and ok_output
failed = not ok_output

def met(ok):
    return "yes" if ok else "NO"


kept_up = bool(window and rec_in > 0 and rec_out >= 0.98 * rec_in and lags and lags[-1] < 1)

rows = [
    ("members accepted, load generator (connections made)",
     "%s in %.2f s" % (fmt_n(lg["connected"]), lg_accept) if lg_accept is not None
     else "%s of %s" % (fmt_n(lg["connected"] if lg else 0), fmt_n(members)),
     "all in < %g s" % accept_s, met(lg_accept is not None and lg_accept < accept_s)),
    ("members accepted, daemon (chronomerge_fleet_members)",
     "%s after %.2f s" % (fmt_n(members), daemon_accept) if daemon_accept is not None
     else "at most %s of %s (after %.2f s)" % (fmt_n(peak_members), fmt_n(members), t_peak - t0),
     "all in < %g s" % accept_s, met(daemon_accept is not None and daemon_accept < accept_s)),
    ("daemon peak RSS", "%.1f MiB" % peak, "< %g MiB" % rss_mib, met(peak < rss_mib)),
    # CPU under the target says little if the merge fell behind: the daemon
    # then needed more than it got (one thread saturated, or shared cores).
    ("daemon CPU, steady state", cpu_text, "< %g core, keeping up" % cpu_cores,
     met(cpu is not None and cpu < cpu_cores and kept_up)
     + ("" if cpu is None or cpu >= cpu_cores or kept_up else " (the merge fell behind)")),
    ("merge kept up, steady state: records merged ÷ taken in; frontier behind the wall clock at the end",
     "%.0f%%; %.2f s" % (100 * rec_out / rec_in if rec_in > 0 else 0, lags[-1] if lags else -1)
     if window else "n/a", "~100%, under 1 s", met(kept_up)),
    ("output to the client",
     "complete, in order" if ok_output else "FAILED (see below)",
     "complete and in order", met(ok_output)),
]
print("| measure | result | target | met? |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()

if lg:
    notes.append("load generator: sends lagged their schedule by p50 %.1f ms, p99 %.1f ms, max %.1f ms; %s writes found the socket full; it used %.1f s of CPU in %.1f s"
                 % (lg["lag_us"]["p50"] / 1e3, lg["lag_us"]["p99"] / 1e3,
                    lg["lag_us"]["max"] / 1e3, fmt_n(lg["deferred"]), lg["own_cpu_s"], lg["seconds"]))
    if lg["dropped"]:
        notes.append("load generator: %s members dropped (their connection closed or reset), %.2f–%.2f s after the start; first: %s"
                     % (fmt_n(lg["dropped"]), lg["first_drop_s"], lg["last_drop_s"], lg["first_error"]))
if client:
    complete = client["records"] == total
    notes.append("client: %s records, %.1f MB, %s end markers; %s %.2f s after the load generator started; %s members' first records came after an equal key of a member later in name order (they joined when the merge had emitted that key)"
                 % (fmt_n(client["records"]), client["bytes"] / 1e6, fmt_n(client["markers"]),
                    "last data record" if complete else "incomplete: it stopped reading (the daemon closed it)",
                    client["wall_done"] - t0, fmt_n(client.get("tie_joins", 0))))
delta = {k: tcp_after[k] - tcp_before.get(k, 0) for k in tcp_after if tcp_after[k] != tcp_before.get(k, 0)}
if delta:
    notes.append("kernel, whole machine, while the members ran (/proc/net/netstat TcpExt): "
                 + ", ".join("%s +%s" % (k, fmt_n(v)) for k, v in sorted(delta.items()))
                 + ". A full accept queue drops the handshake's last ACK (ListenOverflows); past the SYN queue the kernel answers with syncookies, and a connection whose first ACK was dropped is reset at its next segment (SyncookiesFailed)")
if timeline:
    last = timeline[-1]["m"]
    def g(k):
        return fmt_n(last.get(k, 0))
    refused = ", ".join("%s %s" % (k.split(".")[1], fmt_n(v)) for k, v in sorted(last.items())
                        if k.startswith("refused_total.") and v) or "none"
    notes.append("daemon fleet metrics at the end: members %s, known %s, joined %s, left %s, replaced %s, records %s, malformed %s, late %s; refused: %s"
                 % (g("members"), g("members_known"), g("members_joined_total"),
                    g("members_left_total"), g("members_replaced_total"), g("records_total"),
                    g("malformed_total"), g("late_total"), refused))
    steady = [s["m"] for s in timeline if s["m"]]
    if steady:
        notes.append("during the run: at most %s members paused, %s idle; queued bytes at most %.1f MiB; oldest member lag at most %s key units (ms)"
                     % (fmt_n(max(m.get("members_paused", 0) for m in steady)),
                        fmt_n(max(m.get("members_idle", 0) for m in steady)),
                        max(m.get("queue_bytes", 0) for m in steady) / 2**20,
                        fmt_n(max(m.get("oldest_member_lag", 0) for m in steady))))
    # One sample a second: RSS, connected members, frontier lag.
    series, next_t = [], timeline[0]["t"]
    for s in timeline:
        if s["t"] >= next_t and s["t"] <= (lg["wall_last_end"] + 5 if lg and lg["wall_last_end"] else 1e20):
            lag = s["m"].get("frontier_lag_seconds")
            series.append("%d/%s/%s" % (s["rss_kib"] // 1024, fmt_n(s["m"].get("members", 0)),
                                        "%.1f" % lag if lag is not None and 0 <= lag < 1e6 else "-"))
            next_t = s["t"] + 1
    notes.append("each second until 5 s after the last member ended, daemon VmRSS MiB / members connected / merge frontier behind the wall clock, s: " + " ".join(series))
for n in notes:
    print("- " + n)
print()
print("Correctness (the client checks that keys never go back, that records with equal keys come in member-name order (a member's first record may follow its key, see the client note), that every member's seq runs 0, 1, 2, ... with no gap or repeat, and that every end marker arrives by the SIGTERM drain):")
for c in checks:
    print("- " + c)
sys.exit(1 if failed else 0)
PY
} | tee "$RESULTS_MD" || FAILED=1 # the report exits 1 if a check failed

finish_report fleet "$FLEET_DIR" "$FAILED"
