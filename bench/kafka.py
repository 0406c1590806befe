#!/usr/bin/env python3
"""Kafka partitions -> chronomerge -> one TCP client and a merged topic.

Run by bench/kafka.sh, which documents the settings. Each run starts a
fresh mock cluster (chronomerge_kafka_mock), produces PER_PARTITION
records to each of PARTITIONS partitions with kcat (all at once), then
starts the daemon reading them from the earliest offset into a kafka
output and a block TCP client, and times until the brokers acknowledged
every record. A reference row times kcat reading the same partitions to
/dev/null: what the mock cluster serves without any merging.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CHRONOMERGE = os.environ["CHRONOMERGE"]
MOCK = os.environ["CHRONOMERGE_KAFKA_MOCK"]
PARTITIONS = int(os.environ.get("PARTITIONS", "8"))
PER_PARTITION = int(os.environ.get("PER_PARTITION", "35000"))
RUNS = int(os.environ.get("RUNS", "5"))
OUT = os.environ["OUT_DIR"]
# The mock cluster answers a fetch with no new data only when this runs
# out, which a real broker does as soon as data comes; short, so that the
# mock's timing does not dominate.
FETCH_WAIT_MS = int(os.environ.get("FETCH_WAIT_MS", "10"))
TICK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def make_data(directory):
    """Bus-like records, keys interleaved across partitions, ties included."""
    files = []
    for p in range(PARTITIONS):
        path = os.path.join(directory, f"p{p}.ndjson")
        with open(path, "w") as f:
            for i in range(PER_PARTITION):
                record = {"time": 1_700_000_000_000 + i * 10 + (p % 4), "vehicle": f"bus-{p:03}",
                          "seq": i, "lat": 52.37 + i * 1e-6, "lon": 4.89 + p * 1e-4,
                          "speed": round(10 + (i % 70) * 0.5, 1), "soc": round(0.9 - i * 1e-6, 6)}
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
        files.append(path)
    return files


class Mock:
    def __init__(self):
        self.proc = subprocess.Popen([MOCK, "--topic", f"in:{PARTITIONS}", "--topic", "out:1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bootstraps = self.proc.stdout.readline().strip()

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def produce(mock, files):
    procs = [subprocess.Popen(["kcat", "-P", "-q", "-b", mock.bootstraps, "-t", "in", "-p", str(p),
                               "-l", path]) for p, path in enumerate(files)]
    for proc in procs:
        if proc.wait(timeout=300) != 0:
            sys.exit("kcat failed to produce")


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return cpu, hwm / 1024


def scrape(port, name):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    for line in data.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_port(log_path, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log_path) as f:
            for line in f:
                if what in line and "listening on" in line:
                    return int(line.rsplit(":", 1)[1].split()[0].strip("/"))
        time.sleep(0.02)
    sys.exit(f"no {what} port in {log_path}")


def one_run(run, files, directory, to_topic, properties):
    mock = Mock()
    produce(mock, files)
    total = PARTITIONS * PER_PARTITION

    # The reference: what the mock serves, read by kcat alone.
    t0 = time.monotonic()
    for p in range(PARTITIONS):
        subprocess.run(["kcat", "-C", "-q", "-b", mock.bootstraps, "-t", "in", "-p", str(p),
                        "-X", f"fetch.wait.max.ms={FETCH_WAIT_MS}", "-o", "beginning", "-e"],
                       stdout=subprocess.DEVNULL, check=True)
    reference = time.monotonic() - t0

    config = {"retention_bytes": 1 << 20,
              "feeds": [{"name": "k", "type": "kafka", "brokers": mock.bootstraps, "topic": "in",
                         "partitions": list(range(PARTITIONS)), "start": "earliest",
                         "group": f"bench{run}", "idle_timeout_ms": 100,
                         "properties": {"fetch.wait.max.ms": FETCH_WAIT_MS, **properties}}],
              "outputs": [{"name": "client", "type": "tcp-listen", "listen": "127.0.0.1:0",
                           "slow_client": "block"}],
              "metrics": {"listen": "127.0.0.1:0"}}
    if to_topic:
        config["outputs"].append({"name": "merged", "type": "kafka", "brokers": mock.bootstraps,
                                  "topic": "out"})
    config_path = os.path.join(directory, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    log_path = os.path.join(directory, f"daemon-{run}.log")
    with open(log_path, "w") as err:
        daemon = subprocess.Popen([CHRONOMERGE, "--config", config_path], stderr=err,
                                  stdout=subprocess.DEVNULL)
    start = time.monotonic()
    client_port = wait_port(log_path, "output client")
    metrics_port = wait_port(log_path, "metrics")
    received = [0]

    def read_client():
        with socket.create_connection(("127.0.0.1", client_port)) as s:
            while chunk := s.recv(1 << 20):
                received[0] += chunk.count(b"\n")

    reader = threading.Thread(target=read_client)
    reader.start()
    while True:
        done = (scrape(metrics_port, "chronomerge_kafka_output_delivered_total") or 0
                if to_topic else received[0])
        if done >= total or daemon.poll() is not None:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    cpu, hwm = proc_stat(daemon.pid)
    daemon.terminate()
    daemon.wait(timeout=30)
    reader.join(timeout=30)
    ok = received[0] == total
    high, keys = total, []
    if to_topic:
        # The mock keeps only the newest 5 MB of a partition: the merged
        # topic must have taken every record (its high watermark), and what
        # it keeps must be in key order.
        low, high = (int(x) for x in mock.command("watermarks out 0").split())
        merged = subprocess.run(["kcat", "-C", "-q", "-b", mock.bootstraps, "-t", "out", "-p",
                                 "0", "-X", f"fetch.wait.max.ms={FETCH_WAIT_MS}", "-o",
                                 "beginning", "-e"], capture_output=True, check=True).stdout
        keys = [json.loads(line)["time"] for line in merged.splitlines()]
        ok = ok and high == total and len(keys) == high - low and keys == sorted(keys)
    mock.close()
    log(f"run {run} ({'topic + client' if to_topic else 'client'}, {properties}): "
        f"{elapsed:.2f} s, {total / elapsed:,.0f} records/s, CPU {cpu:.2f} s, "
        f"peak RSS {hwm:.1f} MiB, topic {high} (kept {len(keys)}), client {received[0]}, "
        f"{'ok' if ok else 'WRONG'}; kcat alone {reference:.2f} s")
    return {"elapsed": elapsed, "cpu": cpu, "hwm": hwm, "ok": ok, "reference": reference}


def main():
    directory = tempfile.mkdtemp(dir=OUT)
    files = make_data(directory)
    size = sum(os.path.getsize(f) for f in files)
    total = PARTITIONS * PER_PARTITION
    prefetch = {"queued.max.messages.kbytes": 4096}
    cases = [("1 TCP client", False, {}),
             ("1 TCP client, prefetch 4 MiB per partition", False, prefetch),
             ("merged topic + 1 TCP client", True, {}),
             ("merged topic + 1 TCP client, prefetch 4 MiB per partition", True, prefetch)]
    results = {name: [] for name, _, _ in cases}
    for run in range(RUNS):  # the cases take turns
        for name, to_topic, properties in cases:
            results[name].append(one_run(run, files, directory, to_topic, properties))
    print(f"Kafka: {PARTITIONS} partitions x {PER_PARTITION:,} records ({size / 1e6:.0f} MB), "
          f"mock cluster on loopback, median of {RUNS} runs\n")
    print("| chronomerge reads the partitions into | wall s | records/s | daemon CPU s "
          "| CPU us/record | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in cases:
        rs = results[name]
        wall = statistics.median(r["elapsed"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        print(f"| {name} | {wall:.2f} | {total / wall:,.0f} | {cpu:.2f} | "
              f"{cpu / total * 1e6:.2f} | {max(r['hwm'] for r in rs):.1f} |")
    reference = statistics.median(r["reference"] for rs in results.values() for r in rs)
    print(f"| (reference: kcat -C, each partition to /dev/null) | {reference:.2f} "
          f"| {total / reference:,.0f} | | | |")
    ok = all(r["ok"] for rs in results.values() for r in rs)
    print(f"\nOutput complete and in order in every run: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
