#!/usr/bin/env python3
"""Soak test of the chronomerge daemon with exact, per-record accounting.

Usage:
  python3 tests/soak/run.py --binary build/daemon/chronomerge \
      [--scenario NAME[,NAME...]] [--records N] [--churn N] [--keep]

Every scenario starts the real daemon with a generated configuration in a
temporary directory: one tcp-listen feed per producer (p0, p1, p2), a
tcp-listen output ("clients") that two reading clients connect to before
any data exists, a file output ("archive") and a metrics endpoint. The
producers are processes (this script in producer mode) writing numbered
records

  {"time":<ms>,"p":<producer>,"seq":<n>,"pad":"xxx..."}

and tracking, byte by byte, which records the kernel accepted ("written":
the write completed) and which the daemon's TCP stack acknowledged. At the
end the daemon gets SIGTERM (it must exit 0 within drain_timeout_ms + 1 s),
every client reads to EOF, and each record is accounted for:

  written = received (at each client and in the file) + counted as dropped

where "counted as dropped" is read from /metrics (every per-feed counter
whose name says malformed, dropped, discarded, partial, lost, skipped,
rejected, and late records when the late policy does not emit them).
Anything else is an uncounted difference and fails the scenario. Also
checked: no record twice at a sink, no line that is not a record, every
sink's stream identical (the same records in the same order), and each
stream in key order except for records counted late.

The script prints one table per scenario and exits 1 if any scenario
failed, 2 on a usage or setup error. See tests/soak/README.md.
"""

import argparse
import array
import bisect
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

PRODUCERS = 3
DRAIN_TIMEOUT_MS = 5000
IDLE_TIMEOUT_MS = 5000
SEND_CHUNK = 256 << 10
PAD = "x" * 128

# A record as producers write it and clients must receive it, byte for byte.
def make_record(p, seq, key):
    return b'{"time":%d,"p":%d,"seq":%d,"pad":"%s"}\n' % (
        key, p, seq, PAD[: 24 + (seq * 7919) % 64].encode())


# The last line of a producer: newer than any record of any producer, so
# every record is released without waiting for a feed to go idle.
def make_marker(p, key):
    return b'{"time":%d,"p":%d,"seq":-1,"end":true}\n' % (key, p)


RECORD_RE = re.compile(rb'\{"time":(-?\d+),"p":(\d+),"seq":(-?\d+)[,}]')


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


class SetupError(Exception):
    """The soak itself could not run (not a finding about the daemon)."""


class Abort(Exception):
    """A scenario cannot continue (daemon died, timeout); it fails."""


# --- child processes -----------------------------------------------------------

def _install_stop_flag():
    stop = [False]

    def handler(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _bytes_acked(sock):
    """Data bytes the peer's TCP stack acknowledged on this connection
    (tcpi_bytes_acked counts the SYN too)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) >= 128:
            return max(0, struct.unpack_from("<Q", info, 120)[0] - 1)
    except OSError:
        pass
    return None


TCP_CLOSE = 7


def _tcp_state(sock):
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return None


class ProducerState:
    """One producer's stream and what became of every byte of it.

    The stream is the concatenation of the records in order; ends[i] is the
    offset just past record i. `off` is how far the kernel accepted the
    stream (send() returned). After a connection fails, the producer
    reconnects and resends from the first record not wholly accepted: a
    record is accepted whole exactly once, so the daemon can never get two
    whole copies of it. A record cut by a failed connection is "attempted".
    """

    def __init__(self, spec, stop):
        self.spec = spec
        self.stop = stop
        self.p = spec["p"]
        self.port = spec["port"]
        self.buf = bytearray()
        self.ends = array.array("q")
        self.n_data = 0          # data records added to the stream
        self.marker_index = None  # index of the end marker in ends, if added
        self.off = 0
        self.completed = 0       # records (data or marker) wholly accepted
        self.sock = None
        self.conn = None
        self.conns = []
        self.timeline = []       # [monotonic time, data records completed]
        self.partial_cuts = 0    # connections that ended inside a record
        self.cuts_reached = 0    # ... whose cut record the daemon got part of
        self.error = None
        self.half_line = False
        self.wrong_keys = 0      # records written with a wrong (old) key

    def add(self, record):
        self.buf += record
        self.ends.append(len(self.buf))
        self.n_data += 1

    def add_marker(self, key):
        self.buf += make_marker(self.p, key)
        self.ends.append(len(self.buf))
        self.marker_index = len(self.ends) - 1

    def start_of(self, i):
        return self.ends[i - 1] if i > 0 else 0

    def data_completed(self):
        if self.marker_index is not None and self.completed > self.marker_index:
            return self.completed - 1
        return self.completed

    def connect(self, deadline):
        delay = 0.01
        while not self.stop[0]:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            except OSError as e:
                if time.monotonic() >= deadline:
                    self.error = "connect: %s" % e
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            if self.spec.get("sndbuf"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.spec["sndbuf"])
            s.settimeout(0.25)
            self.sock = s
            self.off = self.start_of(self.completed)
            self.conn = {"first": self.completed, "start_off": self.off,
                         "t_open": time.monotonic()}
            return True
        return False

    def close_conn(self, reason):
        if self.sock is None:
            return
        c = self.conn
        sent = self.off - c["start_off"]
        acked = _bytes_acked(self.sock)
        if acked is None:
            acked = 0
        acked = min(acked, sent)
        c["acked_upto"] = bisect.bisect_right(self.ends, c["start_off"] + acked)
        c["completed_upto"] = self.completed
        c["partial_bytes"] = self.off - self.start_of(self.completed)
        c["reason"] = reason
        c["t_close"] = time.monotonic()
        if c["partial_bytes"] > 0:
            self.partial_cuts += 1
            # The cut line counts at the daemon only if some of it got there.
            if c["start_off"] + acked > self.start_of(self.completed):
                self.cuts_reached += 1
        del c["start_off"]
        self.conns.append(c)
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None
        self.conn = None

    def send_to(self, target, reconnect_s=20.0):
        """Sends the stream up to offset `target`; reconnects on failure."""
        if self.error is not None:
            return False  # gave up reconnecting
        deadline = None
        with memoryview(self.buf) as view:  # released before buf grows again
            while self.off < target and not self.stop[0]:
                if self.sock is None:
                    if deadline is None:
                        deadline = time.monotonic() + reconnect_s
                    if not self.connect(deadline):
                        return False
                    deadline = None
                try:
                    n = self.sock.send(view[self.off:min(target, self.off + SEND_CHUNK)])
                except socket.timeout:
                    continue
                except OSError as e:
                    self.close_conn("send: %s" % (e.strerror or e))
                    continue
                self.off += n
                c = bisect.bisect_right(self.ends, self.off)
                if c != self.completed:
                    self.completed = c
                    if len(self.timeline) < 200000:
                        self.timeline.append([time.monotonic(), self.data_completed()])
        return self.off >= target

    def finish(self):
        """Half-closes and waits (up to 10 s) until the daemon's TCP stack
        acknowledged everything, so the report says what reached it."""
        if self.sock is None:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sent = self.off - self.conn["start_off"]
        deadline = time.monotonic() + 10
        reason = "done"
        while not self.stop[0]:
            acked = _bytes_acked(self.sock)
            if acked is None or acked >= sent:
                break
            if _tcp_state(self.sock) == TCP_CLOSE:
                reason = "reset by the daemon after the last write, before it was acknowledged"
                break
            if time.monotonic() > deadline:
                reason = "not acknowledged 10 s after the last write"
                break
            time.sleep(0.01)
        self.close_conn(reason)

    def report(self, t_start):
        attempted = self.data_completed()
        if self.off > self.start_of(self.completed) or self.half_line:
            attempted += 1
        attempted = min(attempted, self.n_data) if not self.half_line else attempted
        return {
            "p": self.p, "planned": self.n_data, "completed": self.data_completed(),
            "attempted": attempted,
            "marker": self.marker_index is not None and self.completed > self.marker_index,
            "timeline": self.timeline, "connections": self.conns,
            "partial_cuts": self.partial_cuts, "cuts_reached": self.cuts_reached,
            "half_line": self.half_line,
            "wrong_keys": self.wrong_keys,
            "error": self.error, "t_start": t_start, "t_end": time.monotonic(),
        }


def producer_main(spec):
    stop = _install_stop_flag()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    st = ProducerState(spec, stop)
    t_start = time.monotonic()
    mode = spec["mode"]
    if mode == "fast":
        n, base = spec["n"], spec["base"]
        kill_at = spec.get("kill_at")
        last = n if kill_at is None else kill_at
        for seq in range(last):
            st.add(make_record(st.p, seq, base + seq))
        if kill_at is not None:
            # Every record before kill_at, then the first half of record
            # kill_at; then the parent kills us with SIGKILL.
            st.send_to(len(st.buf))
            half = make_record(st.p, kill_at, base + kill_at)
            st.buf += half[: len(half) // 2]
            st.half_line = True
            st.send_to(len(st.buf))
            _write_json(spec["report"], st.report(t_start))
            sys.stdout.write("half\n")
            sys.stdout.flush()
            t_end = time.monotonic() + 120
            while not stop[0] and time.monotonic() < t_end:
                time.sleep(0.1)
            return 0
        if spec.get("end_key") is not None:
            st.add_marker(spec["end_key"])
        rate = spec.get("rate")
        if rate:
            # The same stream, spread over time: rate records/s.
            t0 = time.monotonic()
            while not stop[0] and st.completed < st.n_data and st.error is None:
                due = min(st.n_data, int((time.monotonic() - t0) * rate) + 1)
                if due > st.completed:
                    st.send_to(st.ends[due - 1])
                time.sleep(0.005)
        st.send_to(len(st.buf))
    elif mode == "paced":
        # rate records/s with the wall clock as key; with wrong_after_s,
        # after that many seconds one record per wrong_interval_s whose key
        # is wrong_offset_ms in the past (a producer with a wrong clock).
        rate = spec["rate"]
        duration = spec["duration_s"]
        wrong_after = spec.get("wrong_after_s")
        seq, last_key = 0, 0
        t0 = time.monotonic()
        wrong_next = wrong_after
        while not stop[0] and st.error is None:
            now = time.monotonic() - t0
            if now >= duration:
                break
            if wrong_after is not None and now >= wrong_after:
                if now >= wrong_next:
                    key = int(time.time() * 1000) - spec["wrong_offset_ms"]
                    st.add(make_record(st.p, seq, key))
                    st.wrong_keys += 1
                    seq += 1
                    wrong_next += spec["wrong_interval_s"]
                    st.send_to(len(st.buf))
                time.sleep(min(0.05, max(0.0, wrong_next - now)))
                continue
            due = int(now * rate) + 1
            while seq < due:
                last_key = max(last_key, int(time.time() * 1000))
                st.add(make_record(st.p, seq, last_key))
                seq += 1
            st.send_to(len(st.buf))
            time.sleep(0.005)
        if spec.get("end_key") is not None and not stop[0]:
            st.add_marker(spec["end_key"])
        st.send_to(len(st.buf))
    st.finish()
    _write_json(spec["report"], st.report(t_start))
    return 0


def client_main(spec):
    """Connects to the output, says "connected", and copies everything it
    reads to a file until EOF (optionally freezing for a while)."""
    stop = _install_stop_flag()
    deadline = time.monotonic() + spec["timeout_s"]
    s = None
    while s is None and not stop[0]:
        try:
            s = socket.socket()
            if spec.get("rcvbuf"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec["rcvbuf"])
            s.connect(("127.0.0.1", spec["port"]))
        except OSError:
            s.close()
            s = None
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.05)
    sys.stdout.write("connected\n")
    sys.stdout.flush()
    s.settimeout(0.25)
    meta = {"bytes": 0, "eof": False, "error": None, "timed_out": False,
            "freeze_start": None, "freeze_end": None, "stopped": False}
    freeze_after = spec.get("freeze_after_bytes")
    with open(spec["out"], "wb") as out:
        while True:
            if stop[0]:
                meta["stopped"] = True
                break
            if time.monotonic() > deadline:
                meta["timed_out"] = True
                break
            if freeze_after is not None and meta["freeze_start"] is None \
                    and meta["bytes"] >= freeze_after:
                meta["freeze_start"] = time.monotonic()
                until = meta["freeze_start"] + spec["freeze_s"]
                while time.monotonic() < until and not stop[0]:
                    time.sleep(0.05)
                meta["freeze_end"] = time.monotonic()
            try:
                b = s.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                meta["error"] = e.strerror or str(e)
                break
            if not b:
                meta["eof"] = True
                break
            out.write(b)
            meta["bytes"] += len(b)
    s.close()
    _write_json(spec["meta"], meta)
    return 0


# --- metrics -------------------------------------------------------------------

SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(port, path, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body.decode("utf-8", "replace")


class Metrics:
    def __init__(self, text):
        self.samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = SAMPLE_RE.match(line)
            if not m:
                continue
            labels = dict(LABEL_RE.findall(m.group(2) or ""))
            try:
                value = float(m.group(3))
            except ValueError:
                continue
            self.samples.append((m.group(1), labels, value))

    def get(self, name, default=None, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total, found = 0.0, False
        for n, l, v in self.samples:
            if n == name and all(l.get(k) == want for k, want in labels.items()):
                total += v
                found = True
        return total if found else default

    def names(self):
        return sorted({n for n, _, _ in self.samples})


DROP_WORDS = ("malformed", "dropped", "discarded", "partial", "lost", "skipped",
              "rejected", "truncated", "late")
BYTE_DROP_WORDS = ("dropped", "discarded", "lost", "skipped", "truncated")
NOT_RECORDS = ("bytes", "connections", "refused", "seconds", "heartbeats", "pauses")
LATE_ACTION_LABELS = ("action", "outcome", "policy", "result", "fate")


class Drops:
    """What the daemon says it did not forward for one feed."""

    def __init__(self):
        self.records = 0   # records (lines) counted as dropped
        self.bytes = 0     # bytes counted as dropped (e.g. left unread at a restart)
        self.partial = 0   # cut lines (already among malformed)
        self.late = 0      # late records, whatever the policy did with them
        self.details = {}  # metric -> value, for the report


def feed_drops(metrics, feed, late_policy):
    """Every per-feed counter that names a loss, whatever metrics exist.

    Records: counters whose name says malformed, dropped, discarded,
    partial, lost, skipped, rejected, truncated. chronomerge_feed_malformed
    _total already includes the partial lines (chronomerge_feed_partial
    _lines_total says so), so those are not added twice. Late records are
    dropped only when the late policy does not emit them, or when a counter
    (a "late ... dropped" name) or a label (action/outcome/...) says so.
    Bytes: counters of bytes dropped, discarded, lost, skipped, truncated
    (bytes a reload or drain left unread); see Run.account for how they are
    matched with missing records."""
    families, byte_families = {}, {}
    for n, l, v in metrics.samples:
        if l.get("feed") != feed or not n.endswith("_total"):
            continue
        if "bytes" in n and any(w in n for w in BYTE_DROP_WORDS):
            byte_families[n] = byte_families.get(n, 0) + v
            continue
        if not any(w in n for w in DROP_WORDS) or any(w in n for w in NOT_RECORDS):
            continue
        families.setdefault(n, []).append((l, v))
    d = Drops()
    has_malformed = any("malformed" in n for n in families)
    explicit_late_drop = any("late" in n and ("drop" in n or "discard" in n or "dead" in n)
                             for n in families)
    for n, samples in sorted(families.items()):
        v = int(sum(x for _, x in samples))
        if "late" in n:
            if "drop" in n or "discard" in n or "dead" in n:
                d.records += v
                d.details[n] = v
                continue
            d.late += v
            action = [k for k in LATE_ACTION_LABELS if any(k in l for l, _ in samples)]
            if action:
                k = action[0]
                dropped = int(sum(x for l, x in samples if not l.get(k, "").startswith("emit")))
                d.records += dropped
                d.details[n + "{%s!=emit*}" % k] = dropped
            elif not explicit_late_drop and late_policy != "emit":
                d.records += v
                d.details[n + " (late policy %s)" % late_policy] = v
            continue
        if "partial" in n:
            d.partial += v
            if has_malformed:
                d.details[n + " (in malformed)"] = v
                continue
        d.records += v
        d.details[n] = v
    for n, v in sorted(byte_families.items()):
        d.bytes += int(v)
        d.details[n] = int(v)
    return d


def drop_families(metrics):
    """Names of the loss counters present, per feed or global, for the report."""
    per_feed, other = set(), {}
    for n, l, v in metrics.samples:
        if not n.endswith("_total") or not any(w in n for w in DROP_WORDS):
            continue
        if "feed" in l:
            per_feed.add(n)
        elif "output" not in l:
            other[n] = other.get(n, 0) + v
    return sorted(per_feed), other


def record_size(p, seq):
    """Bytes of record seq of producer p (keys have 13 digits: epoch ms)."""
    return len(make_record(p, seq, 10 ** 12))


# --- the daemon ----------------------------------------------------------------

def pick_ports(n):
    """n distinct free loopback ports below the ephemeral range (where the
    kernel picks our own clients' local ports)."""
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    top = lo - n - 1 if lo - n - 1 > 12000 else 65535 - n
    bottom = 10000 if top > 12000 else 1024
    for _ in range(500):
        base = random.randint(bottom, top)
        socks, ok = [], True
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            ok = False
        for s in socks:
            s.close()
        if ok:
            return list(range(base, base + n))
    raise SetupError("no %d free consecutive loopback ports" % n)


class Daemon:
    def __init__(self, binary, workdir, config):
        self.binary = binary
        self.dir = workdir
        self.config_path = os.path.join(workdir, "config.json")
        self.log_path = os.path.join(workdir, "daemon.log")
        self.metrics_port = int(config["metrics"]["listen"].rsplit(":", 1)[1])
        self.proc = None
        self.rc = None
        self.log_offset = 0
        self.reload_lines = 0
        self.write_config(config)
        chk = subprocess.run([binary, "--check-config", self.config_path],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise SetupError("generated config is invalid: %s" % (chk.stderr.strip()[:2000]))
        sock_path = os.path.join(workdir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(sock_path)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS")}
        env["NOTIFY_SOCKET"] = sock_path
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log_file, env=env)
        deadline = time.monotonic() + 20
        ready = False
        try:
            while time.monotonic() < deadline and not ready:
                if self.proc.poll() is not None:
                    break
                r, _, _ = select.select([notify], [], [], 0.1)
                if r:
                    msg = notify.recv(4096).decode(errors="replace")
                    ready = "READY=1" in msg.split("\n")
        finally:
            notify.close()
            os.unlink(sock_path)
        if not ready:
            status = self.proc.poll()
            self.kill()
            raise Abort("daemon not ready (%s)\n%s" % (
                "exited %s" % status if status is not None else "no READY=1 within 20 s",
                self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid

    def write_config(self, config):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.config_path)

    def alive(self):
        if self.proc is None or self.rc is not None:
            return False
        rc = self.proc.poll()
        if rc is not None:
            self.rc = rc
            return False
        return True

    def check_alive(self):
        if not self.alive():
            raise Abort("the daemon exited unexpectedly (status %s)\n%s" % (
                self.rc, self.log_tail()))

    def signal(self, signum):
        if self.alive():
            os.kill(self.proc.pid, signum)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.rc = self.proc.poll()
        self.log_file.close()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=25):
        lines = self.log_text().splitlines()
        return "\n".join("    | " + l for l in lines[-n:])

    def reloads_logged(self):
        """Reloads finished so far (succeeded, rejected or failed), from the
        log, read incrementally."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.log_offset += cut
        for line in data[:cut].split(b"\n"):
            if b": reloaded " in line or b": reload of " in line:
                self.reload_lines += 1
        return self.reload_lines

    def reload(self, config=None, timeout=10.0):
        """Rewrites the config (if given), sends SIGHUP and waits until the
        daemon logs the end of the reload. Returns its duration."""
        before = self.reloads_logged()
        if config is not None:
            self.write_config(config)
        t0 = time.monotonic()
        self.signal(signal.SIGHUP)
        deadline = t0 + timeout
        while self.reloads_logged() <= before:
            self.check_alive()
            if time.monotonic() > deadline:
                raise Abort("no reload logged %.0f s after SIGHUP\n%s" % (timeout, self.log_tail()))
            time.sleep(0.0005)
        return time.monotonic() - t0

    def metrics(self, timeout=5.0):
        status, body = http_get(self.metrics_port, "/metrics", timeout)
        if status != 200:
            raise Abort("GET /metrics answered %d" % status)
        return Metrics(body)

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def terminate(self, drain_ms):
        """SIGTERM; scrapes /metrics as long as it answers (the drain's own
        counts); waits for the exit. Returns (status, seconds, metrics)."""
        last = None
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        limit = t0 + drain_ms / 1000 + 1
        while self.proc.poll() is None and time.monotonic() < limit + 15:
            try:
                last = self.metrics(timeout=0.5)
            except (OSError, Abort):
                time.sleep(0.01)
            else:
                time.sleep(0.02)
        if self.proc.poll() is None:
            self.kill()
            return None, time.monotonic() - t0, last
        took = time.monotonic() - t0
        self.rc = self.proc.returncode
        self.log_file.close()
        return self.rc, took, last


# --- a scenario run ------------------------------------------------------------

class Child:
    """A producer or client process running this script."""

    def __init__(self, role, spec, workdir, name):
        self.name = name
        self.spec = spec
        self.err_path = os.path.join(workdir, name + ".err")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", role, json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err)
        self.lines = []
        self.pending = b""

    def wait_line(self, text, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while text not in self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if r:
                b = os.read(fd, 4096)
                if not b:
                    if text not in self.lines:
                        return False
                    break
                self.pending += b
                *done, self.pending = self.pending.split(b"\n")
                self.lines += [d.decode() for d in done]
        return True

    def running(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if not self.err.closed:
            self.err.close()

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""


class Sink:
    """What one reader (client or file) received, parsed."""

    def __init__(self, name, path, meta, reports, bases):
        self.name = name
        self.meta = meta or {}
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
            self.meta.setdefault("error", "no output file %s" % path)
        self.bytes = len(data)
        cut = data.rfind(b"\n") + 1
        self.partial_tail = len(data) - cut
        n = len(reports)
        self.seen = [bytearray(max(r["attempted"], r["planned"]) + 1) for r in reports]
        self.dups = [0] * n
        self.phantom = [0] * n
        self.corrupt = [0] * n
        self.ooo = [0] * n
        self.records = [0] * n
        self.markers = 0
        self.unparsed = 0
        self.first_problem = None
        self.ids = array.array("q")
        maxkey = None
        match = RECORD_RE.match
        for line in data[:cut].split(b"\n")[:-1]:
            m = match(line)
            p = int(m.group(2)) if m else -1
            if m is None or p >= n:
                self.unparsed += 1
                if self.first_problem is None:
                    self.first_problem = "not a record: %r" % line[:120]
                continue
            key, seq = int(m.group(1)), int(m.group(3))
            if maxkey is not None and key < maxkey:
                self.ooo[p] += 1
            else:
                maxkey = key
            if seq < 0:
                self.markers += 1
                self.ids.append((p << 32) | 0xFFFFFFFF)
                continue
            self.ids.append((p << 32) | seq)
            if seq >= len(self.seen[p]) or seq >= reports[p]["attempted"]:
                self.phantom[p] += 1
                if self.first_problem is None:
                    self.first_problem = "p%d seq %d was never written" % (p, seq)
                continue
            if bases[p] is not None and line + b"\n" != make_record(p, seq, bases[p] + seq):
                self.corrupt[p] += 1
                if self.first_problem is None:
                    self.first_problem = "p%d seq %d altered: %r" % (p, seq, line[:120])
            if self.seen[p][seq]:
                self.dups[p] += 1
                if self.first_problem is None:
                    self.first_problem = "p%d seq %d received twice" % (p, seq)
            else:
                self.seen[p][seq] = 1
                self.records[p] += 1
        del data

    def received_in(self, p, lo, hi):
        return self.seen[p][lo:hi].count(1)


class Run:
    """One scenario: a daemon, its clients, its producers, and the checks."""

    def __init__(self, args, name):
        self.args = args
        self.name = name
        self.n = args.records
        self.dir = tempfile.mkdtemp(prefix="soak-%s-" % name)
        self.ports = pick_ports(PRODUCERS + 3)
        self.feed_ports = self.ports[:PRODUCERS]
        self.out_port = self.ports[PRODUCERS]
        self.metrics_port = self.ports[PRODUCERS + 1]
        self.extra_port = self.ports[PRODUCERS + 2]
        self.daemon = None
        self.clients = {}
        self.producers = []
        self.failures = []
        self.notes = []
        self.required_sinks = []   # sinks that must have every written record
        self.prefix_sinks = []     # sinks that must have a gap-free prefix
        self.base = int(time.time() * 1000)
        self.end_key = None
        self.written_override = None  # {p: count} (sigterm-under-load)
        self.final_metrics = None
        self.late_policy = "emit"
        self.sinks = {}
        self.reports = []
        self.expect_partial = {}      # feed -> minimum partial lines counted
        self.rows = []

    # -- configuration

    def config(self, idle_p1=None, hwm_p2=None, idle_global=IDLE_TIMEOUT_MS, extra_feed=None,
               stall_timeout_ms=None):
        feeds = []
        for i, port in enumerate(self.feed_ports):
            f = {"name": "p%d" % i, "type": "tcp-listen", "listen": "127.0.0.1:%d" % port}
            if i == 1 and idle_p1 is not None:
                f["idle_timeout_ms"] = idle_p1
            if i == 2 and hwm_p2 is not None:
                f["high_water_mark"] = hwm_p2
            feeds.append(f)
        if extra_feed is not None:
            feeds.append(extra_feed)
        clients = {"name": "clients", "type": "tcp-listen",
                   "listen": "127.0.0.1:%d" % self.out_port, "max_clients": 16,
                   "slow_client": "block"}
        if stall_timeout_ms is not None:
            clients["stall_timeout_ms"] = stall_timeout_ms
        return {
            "key": "time",
            "key_type": "integer",
            "idle_timeout_ms": idle_global,
            "drain_timeout_ms": DRAIN_TIMEOUT_MS,
            "log_level": "info",
            "feeds": feeds,
            "outputs": [clients,
                        {"name": "archive", "type": "file",
                         "path": os.path.join(self.dir, "archive.ndjson")}],
            "metrics": {"listen": "127.0.0.1:%d" % self.metrics_port},
        }

    # -- processes

    def start_daemon(self, config):
        self.daemon = Daemon(self.args.binary, self.dir, config)

    def start_clients(self, n=2, freeze=None):
        """n clients; freeze = (client index, after bytes, seconds)."""
        for i in range(n):
            name = "c%d" % i
            spec = {"port": self.out_port, "out": os.path.join(self.dir, name + ".ndjson"),
                    "meta": os.path.join(self.dir, name + ".json"),
                    "timeout_s": self.args.timeout}
            if freeze is not None and freeze[0] == i:
                spec["freeze_after_bytes"], spec["freeze_s"] = freeze[1], freeze[2]
                # A small window: the kernel buffers do not absorb the stream.
                spec["rcvbuf"] = 64 << 10
            self.clients[name] = Child("client", spec, self.dir, name)
        for name, c in self.clients.items():
            if not c.wait_line("connected", 15):
                raise Abort("client %s did not connect: %s" % (name, c.stderr_text()))
        # The daemon accepts on its next loop turn: wait until it counts them.
        deadline = time.monotonic() + 10
        while True:
            self.daemon.check_alive()
            m = self.daemon.metrics()
            if m.get("chronomerge_output_sink_clients", 0, output="clients") >= n:
                break
            if time.monotonic() > deadline:
                raise Abort("the daemon did not count %d clients within 10 s" % n)
            time.sleep(0.02)
        self.required_sinks = list(self.clients) + ["archive"]

    def start_producers(self, specs):
        for i, extra in enumerate(specs):
            spec = {"p": i, "port": self.feed_ports[i],
                    "report": os.path.join(self.dir, "p%d.json" % i)}
            spec.update(extra)
            self.producers.append(Child("producer", spec, self.dir, "p%d" % i))
        self.t_producers = time.monotonic()

    def fast_producers(self, per_producer=None, seconds=None):
        """Every producer at full speed (or spread over `seconds`), keys
        base+seq (ms), end markers."""
        self.end_key = self.base + self.n + 1000
        specs = []
        for i in range(PRODUCERS):
            s = {"mode": "fast", "n": self.n, "base": self.base, "end_key": self.end_key}
            if seconds:
                s["rate"] = self.n / float(seconds)
            s.update((per_producer or {}).get(i, {}))
            specs.append(s)
        self.start_producers(specs)

    def progress(self, m):
        got = sum(m.get("chronomerge_feed_records_total", 0, feed="p%d" % i)
                  for i in range(PRODUCERS))
        return got / float(max(1, self.planned_total()))

    def planned_total(self):
        return sum(p.spec.get("n", 0) for p in self.producers) or 1

    def watch(self, tick=None, interval=0.05, timeout=None):
        """Until every producer has exited: checks the daemon is alive and
        calls tick(metrics) every `interval` seconds."""
        timeout = timeout or self.args.timeout
        deadline = time.monotonic() + timeout
        while any(p.running() for p in self.producers):
            self.daemon.check_alive()
            if time.monotonic() > deadline:
                raise Abort("producers still running after %.0f s" % timeout)
            if tick is not None:
                tick(self.daemon.metrics())
            time.sleep(interval)
        for p in self.producers:
            if p.proc.returncode not in (0, -signal.SIGKILL):
                self.fail("producer %s exited %s: %s" % (p.name, p.proc.returncode,
                                                         p.stderr_text()))

    def load_reports(self):
        self.reports = []
        for i, p in enumerate(self.producers):
            try:
                with open(p.spec["report"]) as f:
                    self.reports.append(json.load(f))
            except (OSError, ValueError):
                raise Abort("producer p%d wrote no report: %s" % (i, p.stderr_text()))
        for r in self.reports:
            if r["error"]:
                self.note("p%d: %s" % (r["p"], r["error"]))

    def quiesce(self):
        """After the producers: until every written record is merged and
        every sink has written it, or nothing moves for idle timeout + 3 s."""
        self.load_reports()
        written = sum(r["completed"] for r in self.reports)
        quiet_s = IDLE_TIMEOUT_MS / 1000 + 3
        last, last_change = None, time.monotonic()
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            self.daemon.check_alive()
            m = self.daemon.metrics()
            dropped = sum(feed_drops(m, "p%d" % i, self.late_policy).records
                          for i in range(PRODUCERS))
            out = m.get("chronomerge_records_out_total", 0)
            queued = sum(v for n, l, v in m.samples
                         if n == "chronomerge_output_sink_queue_bytes")
            state = (out, queued)
            if out >= written - dropped and queued == 0:
                return
            if state != last:
                last, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > quiet_s:
                self.note("output quiet for %.0f s with %d of %d written records out "
                          "(%d counted dropped): stopping anyway" % (
                              quiet_s, out, written, dropped))
                return
            time.sleep(0.1)
        self.note("output did not quiesce within %.0f s" % self.args.timeout)

    def stop_daemon(self):
        try:
            self.final_metrics = self.daemon.metrics()
        except (OSError, Abort):
            pass
        rc, took, last = self.daemon.terminate(DRAIN_TIMEOUT_MS)
        if last is not None:
            self.final_metrics = last
        limit = DRAIN_TIMEOUT_MS / 1000 + 1
        if rc is None:
            self.fail("the daemon did not exit within %.1f s of SIGTERM (killed)" % took)
        elif rc != 0:
            self.fail("the daemon exited %d after SIGTERM" % rc)
        elif took > limit:
            self.fail("the daemon took %.1f s to exit after SIGTERM (limit %.1f s)" % (took, limit))
        else:
            self.note("SIGTERM: exit 0 after %.2f s" % took)
        if "handles left open at exit" in self.daemon.log_text():
            self.fail("the daemon reported handles left open at exit")
        if self.final_metrics is None:
            raise Abort("no metrics could be read")

    def finish_clients(self):
        metas = {}
        for name, c in self.clients.items():
            deadline = time.monotonic() + 30
            while c.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if c.running():
                self.note("client %s still reading 30 s after the daemon exited: stopped" % name)
                c.stop()
            else:
                c.err.close()
            try:
                with open(c.spec["meta"]) as f:
                    metas[name] = json.load(f)
            except (OSError, ValueError):
                metas[name] = None
                self.fail("client %s wrote no report: %s" % (name, c.stderr_text()))
        return metas

    def collect(self):
        for p in self.producers:
            if p.running():
                p.stop()
            else:
                p.kill()
        self.load_reports()
        metas = self.finish_clients()
        bases = [self.base if p.spec["mode"] == "fast" else None for p in self.producers]
        for name in self.clients:
            self.sinks[name] = Sink(name, self.clients[name].spec["out"], metas.get(name),
                                    self.reports, bases)
        self.sinks["archive"] = Sink("archive", os.path.join(self.dir, "archive.ndjson"),
                                     None, self.reports, bases)

    # -- verdicts

    def fail(self, text):
        self.failures.append(text)

    def note(self, text):
        self.notes.append(text)

    def account(self):
        m = self.final_metrics
        ref = self.sinks["archive"]
        per_feed, other = drop_families(m)
        self.note("loss counters in /metrics: %s%s" % (
            ", ".join(per_feed) or "none",
            "; global: " + ", ".join("%s=%d" % kv for kv in sorted(other.items()))
            if other else ""))
        for name in self.required_sinks:
            s = self.sinks[name]
            if name in self.clients:
                meta = s.meta
                if not meta.get("eof"):
                    self.fail("%s: stream did not end with EOF (%s)" % (
                        name, meta.get("error") or ("timed out" if meta.get("timed_out")
                                                    else "stopped")))
            if s.unparsed or s.partial_tail:
                self.fail("%s: %d lines that are not records, %d bytes of a cut last line; %s" % (
                    name, s.unparsed, s.partial_tail, s.first_problem))
            if name != "archive" and s.ids != ref.ids:
                k = next((i for i, (a, b) in enumerate(zip(s.ids, ref.ids)) if a != b),
                         min(len(s.ids), len(ref.ids)))
                self.fail("%s: stream differs from the archive file's at record %d "
                          "(%d vs %d records)" % (name, k, len(s.ids), len(ref.ids)))
        for name in self.prefix_sinks:
            s = self.sinks[name]
            if s.unparsed:
                self.fail("%s: %d lines that are not records; %s" % (name, s.unparsed,
                                                                    s.first_problem))
            if s.ids != ref.ids[:len(s.ids)]:
                k = next((i for i, (a, b) in enumerate(zip(s.ids, ref.ids)) if a != b),
                         len(s.ids))
                self.fail("%s: not a gap-free prefix of the merged stream (differs at "
                          "record %d of %d)" % (name, k, len(s.ids)))
            else:
                self.note("%s: a gap-free prefix of the merged stream, %d of %d records%s" % (
                    name, len(s.ids), len(ref.ids),
                    ", plus %d bytes of a cut line" % s.partial_tail if s.partial_tail else ""))
        for i, r in enumerate(self.reports):
            feed = "p%d" % i
            written = r["completed"]
            if self.written_override is not None:
                written = self.written_override[i]
            d = feed_drops(m, feed, self.late_policy)
            # Lines the producer itself cut (a failed connection, the kill)
            # are counted as partial but are no written record.
            cut = r["cuts_reached"] + (1 if r["half_line"] else 0)
            counted = d.records - min(d.partial, cut)
            row = {"producer": feed, "written": written, "recv": {}, "uncounted": {},
                   "ooo": {}, "counted": counted, "late": d.late, "ok": True}
            for name in self.required_sinks + self.prefix_sinks:
                s = self.sinks[name]
                got = s.received_in(i, 0, written)
                row["recv"][name] = got
                row["ooo"][name] = s.ooo[i]
                problems = []
                if name in self.required_sinks:
                    by_bytes = self.covered_by_bytes(i, r, s, written, d.bytes)
                    if by_bytes:
                        row["counted"] = "%d+%d" % (counted, by_bytes)
                    unc = written - got - counted - by_bytes
                    row["uncounted"][name] = unc
                    if unc > 0:
                        problems.append("%d written records neither received nor counted" % unc)
                    # Every counted drop is a record no sink received.
                    not_received = r["attempted"] - s.records[i]
                    if counted > not_received:
                        problems.append("%d drops counted but only %d records missing" % (
                            counted, not_received))
                if s.dups[i]:
                    problems.append("%d records received twice" % s.dups[i])
                if s.phantom[i]:
                    problems.append("%d records never written" % s.phantom[i])
                if s.corrupt[i]:
                    problems.append("%d records altered" % s.corrupt[i])
                if s.ooo[i] > d.late:
                    problems.append("%d records out of key order, %d counted late" % (
                        s.ooo[i], d.late))
                for pr in problems:
                    self.fail("%s %s: %s" % (feed, name, pr))
                    row["ok"] = False
            if any(v > 0 for v in row["uncounted"].values()):
                self.explain_loss(i, r, written)
            if any(d.details.values()):
                self.note("%s counted: %s" % (feed, ", ".join(
                    "%s=%d" % (k, v) for k, v in d.details.items() if v)))
            if feed in self.expect_partial and d.partial < self.expect_partial[feed]:
                self.fail("%s: the cut line is not counted (partial lines %d)" % (feed, d.partial))
                row["ok"] = False
            elif feed in self.expect_partial:
                self.note("%s: cut line counted (partial lines %d, malformed includes it)" % (
                    feed, d.partial))
            self.rows.append(row)

    def acked_missing(self, i, r, s, written):
        """Seqs of written records that the daemon's TCP stack acknowledged
        (so the daemon had them) but sink s did not receive."""
        out = []
        for c in r["connections"]:
            lo, hi = c["first"], min(c["acked_upto"], written)
            if hi > lo:
                seen = s.seen[i]
                out += [q for q in range(lo, hi) if not seen[q]]
        return out

    def covered_by_bytes(self, i, r, s, written, dropped_bytes):
        """Missing records accounted for by a byte counter (bytes a restart
        or drain left unread): the daemon had them (acknowledged), and the
        counted bytes cover them whole, newest first (the unread tail)."""
        if dropped_bytes <= 0:
            return 0
        left, n = dropped_bytes, 0
        for q in reversed(self.acked_missing(i, r, s, written)):
            size = record_size(i, q)
            if size > left:
                break
            left -= size
            n += 1
        return n

    def explain_loss(self, i, r, written):
        """Where the missing records of producer i were: in the daemon's
        socket or process (acknowledged by its TCP stack), or still in the
        producer's send queue when the daemon closed the connection."""
        s = self.sinks["archive"]
        acked_missing = len(self.acked_missing(i, r, s, written))
        unacked_missing = 0
        for c in r["connections"]:
            lo, hi = max(c["acked_upto"], c["first"]), min(c["completed_upto"], written)
            if hi > lo:
                unacked_missing += (hi - lo) - s.received_in(i, lo, hi)
        first_missing = s.seen[i][:written].find(0)
        self.note("p%d: archive misses %d written records (first seq %d): %d acknowledged by "
                  "the daemon's TCP stack, %d still unacknowledged in the producer's send queue "
                  "when their connection ended; %d connections (%s)" % (
                      i, written - s.received_in(i, 0, written), first_missing, acked_missing,
                      unacked_missing, len(r["connections"]),
                      "; ".join(sorted({c["reason"] for c in r["connections"]}))))

    def cleanup(self):
        for c in list(self.clients.values()) + self.producers:
            c.kill()
        if self.daemon is not None:
            self.daemon.kill()
        if self.failures or self.args.keep:
            self.note("files kept in %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def standard_end(self):
        """Producers done: quiesce, SIGTERM, collect, account."""
        self.quiesce()
        self.stop_daemon()
        self.collect()
        self.account()


# --- scenarios -----------------------------------------------------------------

def at_progress(run, fractions, action):
    """A tick that calls action(k) once progress passes fractions[k]; the
    actions left when the producers are done run afterwards."""
    state = {"k": 0}

    def tick(m):
        while state["k"] < len(fractions) and run.progress(m) >= fractions[state["k"]]:
            action(state["k"])
            state["k"] += 1

    def rest():
        done_mid = state["k"]
        while state["k"] < len(fractions):
            action(state["k"])
            state["k"] += 1
        return done_mid

    return tick, rest


def sc_reload_tuning(run):
    """20 SIGHUPs while the producers stream, each toggling p1's
    idle_timeout_ms 5000 <-> 5001: a tuning change, applied in place."""
    run.start_daemon(run.config(idle_p1=5000))
    run.start_clients(2)
    run.fast_producers(seconds=run.args.stream_seconds)
    durations = []

    def toggle(k):
        durations.append(run.daemon.reload(run.config(idle_p1=5001 if k % 2 == 0 else 5000)))

    fractions = [0.04 + 0.045 * k for k in range(20)]
    tick, rest = at_progress(run, fractions, toggle)
    run.watch(tick, interval=0.02)
    mid = rest()
    run.note("%d of 20 reloads while the producers were writing; longest reload %.1f ms" % (
        mid, 1000 * max(durations)))
    run.standard_end()


def sc_wrong_clock(run):
    """p0, p1 at 1000 records/s; p2 in order for 3 s, then one record per
    second 60 s old. The frontier lag must stay bounded (p2 goes idle after
    idle_timeout_ms, late records do not keep it alive) and the late records
    must be counted."""
    duration = run.args.wrong_clock_seconds
    run.start_daemon(run.config())
    run.start_clients(2)
    end_key = int(time.time() * 1000) + int((duration + 10) * 1000)
    run.end_key = end_key
    common = {"mode": "paced", "rate": 1000, "duration_s": duration, "end_key": end_key,
              "n": int(1000 * duration)}
    wrong = dict(common, wrong_after_s=3.0, wrong_interval_s=1.0, wrong_offset_ms=60000,
                 n=3000 + int(duration))
    run.start_producers([common, common, wrong])
    lags = []
    holding = {}

    def tick(m):
        lag = m.get("chronomerge_frontier_lag_seconds")
        if lag is not None:
            lags.append((time.monotonic() - run.t_producers, lag))
        for n, l, v in m.samples:  # which feed holds the merge, if exposed
            if n == "chronomerge_feed_holding_seconds" and "feed" in l:
                holding[l["feed"]] = max(holding.get(l["feed"], 0), v)

    run.watch(tick, interval=0.25)
    bound = IDLE_TIMEOUT_MS / 1000 + 2.5
    if not lags:
        run.fail("no chronomerge_frontier_lag_seconds metric during the run")
    else:
        worst = max(lags, key=lambda x: x[1])
        series = " ".join("%.0f" % lag for t, lag in lags[::4])
        run.note("frontier lag (s, every ~1 s): %s" % series)
        if worst[1] > bound:
            run.fail("frontier lag reached %.1f s at t=%.1f s (bound: idle_timeout %.0f s + "
                     "2.5 s)" % (worst[1], worst[0], IDLE_TIMEOUT_MS / 1000))
        else:
            run.note("frontier lag at most %.1f s (bound %.1f s)" % (worst[1], bound))
    if holding:
        run.note("longest hold of the merge (chronomerge_feed_holding_seconds): %s" % ", ".join(
            "%s %.1f s" % kv for kv in sorted(holding.items())))
    run.standard_end()
    wrong = run.reports[2]["wrong_keys"]
    late = run.rows[2]["late"] if len(run.rows) > 2 else 0
    run.note("p2 wrote %d records with a 60 s old key; late counted for p2: %d" % (wrong, late))
    if late < wrong:
        run.fail("p2: %d records 60 s old, only %d counted late" % (wrong, late))


def sc_sigterm_under_load(run):
    """SIGTERM while every producer writes at full speed. Every record whose
    write completed before the SIGTERM must reach the clients or be counted."""
    run.start_daemon(run.config())
    run.start_clients(2)
    run.fast_producers()
    t_term = None
    deadline = time.monotonic() + run.args.timeout
    while t_term is None:
        run.daemon.check_alive()
        if time.monotonic() > deadline:
            raise Abort("no progress to 40% within the timeout")
        m = run.daemon.metrics()
        if run.progress(m) >= 0.4 or not any(p.running() for p in run.producers):
            t_term = time.monotonic()
            break
        time.sleep(0.02)
    run.stop_daemon()
    run.collect()
    run.written_override = {}
    for i, r in enumerate(run.reports):
        times = [t for t, _ in r["timeline"]]
        k = bisect.bisect_left(times, t_term)
        run.written_override[i] = r["timeline"][k - 1][1] if k > 0 else 0
    run.note("SIGTERM after %s records written in all (40%% of the records read); 'written' "
             "counts the records whose write completed before it" % (
                 sum(run.written_override.values())))
    run.account()


def sc_kill_producer(run):
    """p2 writes half of a record and is killed with SIGKILL halfway through
    its records: the cut line is counted, everything else is delivered."""
    run.start_daemon(run.config())
    run.start_clients(2)
    run.fast_producers({2: {"kill_at": run.n // 2}})
    victim = run.producers[2]
    if not victim.wait_line("half", run.args.timeout):
        raise Abort("p2 never wrote its half line: %s" % victim.stderr_text())
    victim.kill()
    run.note("p2 killed (SIGKILL) after %d records and half a line" % (run.n // 2))
    run.expect_partial["p2"] = 1
    run.watch(interval=0.1)
    run.standard_end()


def sc_frozen_client(run, stall_timeout_ms=None):
    """Client c1 stops reading for 20 s after 10% of the stream. With the
    default (block, no stall timeout) everyone waits and everyone gets
    everything; with stall_timeout_ms the frozen client is disconnected and
    what it got must be a gap-free prefix of the merged stream."""
    run.start_daemon(run.config(stall_timeout_ms=stall_timeout_ms))
    approx = PRODUCERS * run.n * 100
    run.start_clients(2, freeze=(1, approx // 10, run.args.freeze_seconds))
    if stall_timeout_ms is not None:
        run.required_sinks = ["c0", "archive"]
        run.prefix_sinks = ["c1"]
    run.fast_producers()
    run.watch(interval=0.2, timeout=run.args.timeout + run.args.freeze_seconds)
    run.standard_end()
    disconnects = run.final_metrics.get("chronomerge_output_sink_disconnects_total", 0,
                                        output="clients")
    meta = run.sinks["c1"].meta
    if meta.get("freeze_start") is None:
        run.fail("c1 never froze (the stream was shorter than the freeze point)")
    else:
        run.note("c1 froze for %.1f s" % (meta["freeze_end"] - meta["freeze_start"]))
    if stall_timeout_ms is None:
        if disconnects:
            run.fail("%d clients disconnected (slow_client block, no stall timeout)" % disconnects)
    elif disconnects >= 1:
        run.note("disconnects counted: %d" % disconnects)
    elif len(run.sinks["c1"].ids) == len(run.sinks["archive"].ids):
        run.note("c1 was not disconnected, but the whole stream fit into the socket buffers "
                 "while it was frozen (nothing stalled): use more --records")
    else:
        run.fail("the frozen client lost its connection without a counted disconnect")


def sc_frozen_client_stall(run):
    sc_frozen_client(run, stall_timeout_ms=3000)


def sc_hup_storm(run):
    """100 SIGHUPs in 2 s during the stream, a mix of no-op reloads and
    tuning changes (p1 idle_timeout_ms, p2 high_water_mark, the global
    idle_timeout_ms, which every other feed inherits)."""
    run.start_daemon(run.config(idle_p1=5000))
    run.start_clients(2)
    run.fast_producers(seconds=run.args.stream_seconds)
    sent = {"n": 0}
    # Every fifth SIGHUP toggles one of three tuning settings; the others
    # reload an unchanged file.
    toggles = {2: ("idle_p1", 5000, 5001), 3: ("hwm_p2", None, 2 << 20),
               4: ("idle_global", IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS + 2)}
    state = {"idle_p1": 5000, "hwm_p2": None, "idle_global": IDLE_TIMEOUT_MS}

    def storm(k):
        for j in range(100):
            if j % 5 in toggles:
                key, a, b = toggles[j % 5]
                state[key] = b if state[key] == a else a
                run.daemon.write_config(run.config(**state))
            run.daemon.signal(signal.SIGHUP)
            sent["n"] += 1
            time.sleep(0.02)

    tick, rest = at_progress(run, [0.2], storm)
    run.watch(tick, interval=0.02)
    mid = rest()
    # Let the folded reloads finish.
    time.sleep(0.5)
    m = run.daemon.metrics()
    run.note("%d SIGHUPs (%s the producers were writing): %d reloads succeeded, %d failed" % (
        sent["n"], "while" if mid else "after", m.get("chronomerge_reloads_total", 0,
                                                       result="success"),
        m.get("chronomerge_reloads_total", 0, result="failure")))
    run.standard_end()


def sc_churn(run):
    """2000 reloads that add and remove a feed (a tcp-listen feed nobody
    connects to, or a simulate feed of zero records), before the stream:
    RSS and /metrics latency at the start and the end; RSS growth over
    2 MiB fails. Then the producers stream as usual (accounted)."""
    base = run.config()
    run.start_daemon(base)
    run.start_clients(2)

    def with_feed(k):
        if k % 2 == 0:
            extra = {"name": "churn", "type": "tcp-listen",
                     "listen": "127.0.0.1:%d" % run.extra_port}
        else:
            extra = {"name": "churn", "type": "simulate", "count": 0}
        return run.config(extra_feed=extra)

    def latency():
        samples = []
        for _ in range(7):
            t0 = time.monotonic()
            run.daemon.metrics()
            samples.append(time.monotonic() - t0)
        return sorted(samples)[3] * 1000

    def cycle(k):
        return run.daemon.reload(with_feed(k // 2) if k % 2 == 0 else base)

    for k in range(20):  # warm-up: one-time allocations are not growth
        cycle(k)
    rss0, lat0 = run.daemon.rss_kib(), latency()
    times = [cycle(k) for k in range(run.args.churn)]
    rss1, lat1 = run.daemon.rss_kib(), latency()
    m = run.daemon.metrics()
    first = sorted(times[:100])[len(times[:100]) // 2] * 1000
    last = sorted(times[-100:])[len(times[-100:]) // 2] * 1000
    run.note("%d reloads: RSS %d -> %d KiB (%+d KiB); GET /metrics %.2f -> %.2f ms; reload "
             "%.2f -> %.2f ms (median of first/last 100); reloads ok %d, failed %d" % (
                 run.args.churn, rss0, rss1, rss1 - rss0, lat0, lat1, first, last,
                 m.get("chronomerge_reloads_total", 0, result="success"),
                 m.get("chronomerge_reloads_total", 0, result="failure")))
    if rss1 - rss0 > 2048:
        run.fail("RSS grew by %d KiB over %d reloads (limit 2048 KiB)" % (rss1 - rss0,
                                                                          run.args.churn))
    if m.get("chronomerge_reloads_total", 0, result="failure"):
        run.fail("some reloads failed")
    run.fast_producers()
    run.watch(interval=0.1)
    run.standard_end()
    late = ["%s (%d)" % (r["producer"], r["late"]) for r in run.rows if r["late"]]
    if late:
        run.note("late: %s. The reloads outlast idle_timeout_ms, so every feed is idle when "
                 "the producers connect: records that arrive behind the frontier another "
                 "feed set are late (counted, emitted out of order)" % ", ".join(late))


SCENARIOS = [
    ("reload-tuning", sc_reload_tuning),
    ("wrong-clock", sc_wrong_clock),
    ("sigterm-under-load", sc_sigterm_under_load),
    ("kill-producer", sc_kill_producer),
    ("frozen-client", sc_frozen_client),
    ("frozen-client-stall", sc_frozen_client_stall),
    ("hup-storm", sc_hup_storm),
    ("churn", sc_churn),
]


# --- report --------------------------------------------------------------------

def print_table(run, verdict, seconds):
    sinks = run.required_sinks + run.prefix_sinks
    head = ["scenario", "producer", "written"] + ["recv " + s for s in sinks] + \
        ["dropped", "uncounted", "late", "out of order", "result"]
    rows = []
    for r in run.rows:
        unc = "/".join(str(r["uncounted"].get(s, "-")) for s in sinks)
        ooo = "/".join(str(r["ooo"].get(s, 0)) for s in sinks)
        rows.append([run.name, r["producer"], str(r["written"])] +
                    [str(r["recv"].get(s, "-")) for s in sinks] +
                    [str(r["counted"]), unc, str(r["late"]), ooo, "ok" if r["ok"] else "FAIL"])
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    print()
    print("== %s: %s (%.0f s)" % (run.name, verdict, seconds))
    if rows:
        print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for row in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        print("  (uncounted and out of order: per sink, %s)" % "/".join(sinks))
    for n in run.notes:
        print("  - " + n)
    for f in run.failures:
        print("  FAIL: " + f)
    sys.stdout.flush()


def run_scenario(args, name, fn):
    run = Run(args, name)
    t0 = time.monotonic()
    say("[%s] running in %s ..." % (name, run.dir))
    try:
        fn(run)
    except Abort as e:
        run.fail(str(e))
    except SetupError:
        run.cleanup()
        raise
    except KeyboardInterrupt:
        run.cleanup()
        raise
    except Exception as e:  # a bug here must not leave processes behind
        import traceback
        run.fail("soak error: %s\n%s" % (e, traceback.format_exc()))
    finally:
        run.cleanup()
    verdict = "FAIL" if run.failures else "PASS"
    if run.failures and run.daemon is not None and args.verbose:
        run.note("daemon log tail:\n" + run.daemon.log_tail())
    print_table(run, verdict, time.monotonic() - t0)
    return not run.failures


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[3])
        return producer_main(spec) if sys.argv[2] == "producer" else client_main(spec)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(
        description="chronomerge soak test with exact accounting (see tests/soak/README.md)")
    ap.add_argument("--binary", default=os.path.join(repo, "build/daemon/chronomerge"),
                    help="the chronomerge binary (default: build/daemon/chronomerge)")
    ap.add_argument("--scenario", action="append", default=[],
                    help="scenario(s) to run, comma-separated or repeated (default: all): " +
                    ", ".join(n for n, _ in SCENARIOS))
    ap.add_argument("--records", type=int, default=200000,
                    help="records per full-speed producer (default 200000)")
    ap.add_argument("--churn", type=int, default=2000, help="reloads in 'churn' (default 2000)")
    ap.add_argument("--freeze-seconds", type=float, default=20.0,
                    help="how long the frozen client stops reading (default 20)")
    ap.add_argument("--stream-seconds", type=float, default=8.0,
                    help="how long the producers of reload-tuning and hup-storm take to "
                    "write their records (default 8), so the reloads meet a live stream")
    ap.add_argument("--wrong-clock-seconds", type=float, default=15.0,
                    help="length of the wrong-clock run (default 15)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="limit for each phase of a scenario, in seconds (default 180)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the scenarios this many times (timing-dependent losses)")
    ap.add_argument("--keep", action="store_true", help="keep every temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the daemon's log tail of a failed scenario")
    args = ap.parse_args()
    if args.records < 10:
        ap.error("--records must be at least 10")
    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        say("soak: no executable at %s (build it, or pass --binary)" % args.binary)
        return 2
    wanted = [s for arg in args.scenario for s in arg.split(",") if s]
    known = dict(SCENARIOS)
    for w in wanted:
        if w not in known:
            ap.error("unknown scenario %r (known: %s)" % (w, ", ".join(known)))
    todo = [(n, f) for n, f in SCENARIOS if not wanted or n in wanted] * max(1, args.repeat)
    # A SIGTERM to the soak stops it like Ctrl-C: every process it started
    # is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = []
    t0 = time.monotonic()
    try:
        for name, fn in todo:
            results.append((name, run_scenario(args, name, fn)))
    except SetupError as e:
        say("soak: %s" % e)
        return 2
    except KeyboardInterrupt:
        say("soak: interrupted")
        return 2
    print()
    print("summary (%.0f s): %s" % (time.monotonic() - t0, ", ".join(
        "%s %s" % (n, "PASS" if ok else "FAIL") for n, ok in results)))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
