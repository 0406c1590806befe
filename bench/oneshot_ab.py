#!/usr/bin/env python3
"""Alternated one-shot runs of several binaries on one data set, timed finely.

Usage: python3 bench/oneshot_ab.py DATA_DIR RUNS BINARY...

Runs every BINARY on DATA_DIR/feed-*.ndjson (standard output to
/dev/null), RUNS rounds, the binaries taking turns within each round so
that a drift in the machine's load does not favour one of them, and
prints the median and minimum wall and CPU (user + system) seconds of
each. CPU comes from the run's own resource usage (os.wait4), in
microseconds, where GNU time reports 10 ms steps: two binaries a few per
cent apart on a 0.3 s run need the finer figure. A BINARY may be any
command taking the files as arguments, e.g. a script running `sort -m`.
Peak RSS is not reported: a child forked from python starts from
python's own (see bench/common.sh, measure_floor); bench/validate.sh
measures it.

Exit status: 0, or 1 if a run failed.
"""
import glob
import os
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    data, runs, binaries = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    files = sorted(glob.glob(os.path.join(data, "feed-*.ndjson")))
    if not files:
        sys.exit(f"no feed-*.ndjson in {data}")
    # Warm the page cache, so that the first binary does not pay for it.
    subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
    results = {b: [] for b in binaries}
    with open(os.devnull, "w") as null:
        for _ in range(runs):
            for binary in binaries:
                start = time.perf_counter()
                child = subprocess.Popen([binary] + files, stdout=null)
                _, status, usage = os.wait4(child.pid, 0)
                wall = time.perf_counter() - start
                if status != 0:
                    print(f"{binary}: exit status {status}", file=sys.stderr)
                    sys.exit(1)
                results[binary].append((wall, usage.ru_utime + usage.ru_stime))
    for binary in binaries:
        wall = [w for w, _ in results[binary]]
        cpu = [c for _, c in results[binary]]
        print(f"{binary}: {runs} runs, wall median {statistics.median(wall):.3f} "
              f"min {min(wall):.3f} s, CPU median {statistics.median(cpu):.3f} "
              f"min {min(cpu):.3f} s")


if __name__ == "__main__":
    main()
