#!/usr/bin/env python3
"""Generate K sorted NDJSON feeds of electric-bus telemetry for benchmarks.

Usage:
    python3 bench/gen_feeds.py --feeds K --records N --out DIR [--seed S]
                               [--layout bus|telemetry|strings|numbers|nested]

Writes DIR/feed-0000.ndjson ... DIR/feed-{K-1}.ndjson, N records in total
(spread evenly across the feeds), then DIR/MANIFEST.json.  MANIFEST.json is
written last, so its presence means the data set is complete; bench/run.sh
relies on that to decide whether to regenerate.

Properties the benchmark relies on:
  * "time" is the FIRST key of every line, as an integer in milliseconds, so
    `sort -t: -k2,2n` sorts on it exactly like chronomerge's default key.
  * Every feed is sorted by time (non-decreasing).
  * All feeds cover the same time span, so they interleave finely.
  * There are equal timestamps within a feed (explicit zero gaps) and across
    feeds (timestamps are whole milliseconds on a shared grid), so the
    stability of the merge (ties keep input order) is actually exercised.
  * Lines are ~110-130 bytes, like real telemetry.
  * Output is a pure function of (feeds, records, seed, layout).

Layouts (what the fields after "time" are; the time sequence is generated
the same way in all of them):
  bus        the default, and the only layout before --layout existed (its
             output is unchanged): a mix of six record shapes with a vehicle
             name, coordinates, speed, charge and a boolean, route, stop,
             HVAC power or driver state; 113-128 bytes.
  telemetry  one shape, decimal numbers in every field after "time":
             lat, lon, speed, soc, temp, volt, amp; 117-120 bytes, about
             half of them inside numbers.
  strings    one shape, six short ASCII string fields (no escapes) after
             "time"; 111-130 bytes, ~121 on average.
  numbers    the number grammar at its densest: an array of eleven numbers
             (integers, negative decimals, exponents) under one short key,
             so that ~77 % of a line's bytes are inside numbers; 109-119
             bytes.
  nested     objects inside the record (position, battery, motor), as a
             JSON-logging vehicle might write it: every line is one the
             vector validator leaves to the scalar one; 129-131 bytes.
(Lengths include the newline.)

Python stdlib only.  Speed: everything is formatted with one %-format per
line and written in large batches; 2,000,000 records take a few seconds.
"""

import argparse
import itertools
import json
import math
import os
import random
import sys
import time

START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
# Mean time between two records of the merged stream, in ms.  Per feed the
# mean gap is K times this, so the merged stream has a constant density no
# matter how many feeds there are.  With whole-millisecond timestamps this
# makes cross-feed ties common enough to matter but not dominant.
MERGED_MEAN_GAP_MS = 5.0
# Probability that a record has exactly the same time as the previous record
# of the same feed (two sensors of one bus reporting in the same ms).
SAME_FEED_TIE_P = 0.01
BATCH_LINES = 65536  # lines joined per write(): few syscalls, bounded memory

ROUTES = ["1", "2", "5", "12", "13", "17", "18", "21", "22", "48", "N81", "N85"]


def generate_feed(path, feed_index, count, seed, feeds):
    """Write one sorted feed of `count` records to `path`."""
    # One RNG per feed, seeded from (seed, feed index) only: deterministic,
    # and a feed's content does not depend on how many feeds came before it.
    rng = random.Random(f"{seed}:{feed_index}")
    rnd = rng.random

    # Each feed is a depot gateway relaying a small fleet.  Per-vehicle state
    # is a random walk so that values look plausible, not uniform noise.
    fleet_size = 1 + int(rnd() * 6)
    fleet = []
    for j in range(fleet_size):
        vid = (feed_index * 7 + j * 131) % 10000
        fleet.append({
            "name": "bus-%04d" % vid,
            "lat": 52.30 + rnd() * 0.12,   # Amsterdam-ish
            "lon": 4.80 + rnd() * 0.20,
            "soc": 0.35 + rnd() * 0.65,
            "speed": rnd() * 50.0,
            "route": ROUTES[int(rnd() * len(ROUTES))],
        })

    mean_gap = MERGED_MEAN_GAP_MS * feeds
    # Random start offset so that feeds do not all begin in lockstep.
    t = START_MS + int(rnd() * mean_gap)

    # Preformatted templates; picking one per record varies the line length
    # (110-130 bytes) without per-record string building logic.
    tpl_basic = ('{"time":%d,"vehicle":"%s","lat":%.5f,"lon":%.5f,'
                 '"speed_kmh":%.1f,"soc":%.3f,"door_open":%s}\n')
    tpl_route = ('{"time":%d,"vehicle":"%s","lat":%.5f,"lon":%.5f,'
                 '"speed_kmh":%.1f,"soc":%.3f,"route":"%s"}\n')
    tpl_stop = ('{"time":%d,"vehicle":"%s","lat":%.5f,"lon":%.5f,'
                '"speed_kmh":%.1f,"soc":%.3f,"route":"%s","stop":%d}\n')
    tpl_hvac = ('{"time":%d,"vehicle":"%s","lat":%.5f,"lon":%.5f,'
                '"speed_kmh":%.1f,"soc":%.3f,"hvac_kw":%.1f}\n')
    tpl_state = ('{"time":%d,"vehicle":"%s","lat":%.5f,"lon":%.5f,'
                 '"speed_kmh":%.1f,"soc":%.3f,"state":"%s"}\n')
    tpl_short = ('{"time":%d,"vehicle":"%s","lat":%.4f,"lon":%.4f,'
                 '"speed_kmh":%.1f,"soc":%.2f,"door_open":%s}\n')

    log = math.log  # local alias: attribute lookups cost in the hot loop
    out = []
    written = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for _ in range(count):
            r = rnd()
            if r >= SAME_FEED_TIE_P:
                # Exponential-ish gap, at least 1 ms, via inverse transform of
                # a cheap uniform (faster than rng.expovariate in a hot loop).
                # log(1 - u) with u in [0, 1) never hits log(0).
                t += 1 + int(-mean_gap * log(1.0 - rnd()))
            v = fleet[int(rnd() * fleet_size)]
            v["lat"] += (rnd() - 0.5) * 0.0004
            v["lon"] += (rnd() - 0.5) * 0.0006
            s = v["speed"] + (rnd() - 0.5) * 8.0
            s = 0.0 if s < 0.0 else (85.0 if s > 85.0 else s)
            v["speed"] = s
            soc = v["soc"] - 0.00002
            if soc < 0.15:
                soc = 0.98  # "recharged at the depot"
            v["soc"] = soc
            # Pick a record shape; the mix gives lengths of ~110-130 bytes
            # (mean ~120) and a few different key sets, as real gateways do.
            k = rnd()
            if k < 0.50:
                line = tpl_basic % (t, v["name"], v["lat"], v["lon"], s, soc,
                                    "true" if s < 1.0 else "false")
            elif k < 0.65:
                line = tpl_route % (t, v["name"], v["lat"], v["lon"], s, soc,
                                    v["route"])
            elif k < 0.75:
                line = tpl_stop % (t, v["name"], v["lat"], v["lon"], s, soc,
                                   v["route"], 100 + int(rnd() * 9900))
            elif k < 0.85:
                line = tpl_hvac % (t, v["name"], v["lat"], v["lon"], s, soc,
                                   rnd() * 25.0)
            elif k < 0.92:
                if s >= 1.0:
                    state = "driving"
                else:
                    state = "boarding" if k < 0.90 else "idle"
                line = tpl_state % (t, v["name"], v["lat"], v["lon"], s, soc,
                                    state)
            else:
                line = tpl_short % (t, v["name"], v["lat"], v["lon"], s, soc,
                                    "true" if s < 1.0 else "false")
            out.append(line)
            if len(out) >= BATCH_LINES:
                chunk = "".join(out)
                f.write(chunk)
                written += len(chunk)
                out.clear()
        if out:
            chunk = "".join(out)
            f.write(chunk)
            written += len(chunk)
    return written


# --- the layouts other than "bus" -----------------------------------------
# They share the time sequence of generate_feed (same mean gap, same
# same-feed tie probability, same start offset) but draw it from their own
# RNG stream, separate from the one for the values, so that every layout of
# a given (feeds, records, seed) has exactly the same timestamps: only the
# bytes after "time" differ between layouts, and a merge costs the same
# ordering work on each.

def time_sequence(feed_index, count, seed, feeds):
    """The `count` timestamps of one feed (non-decreasing), as a list."""
    rng = random.Random(f"{seed}:{feed_index}:time")
    rnd = rng.random
    log = math.log
    mean_gap = MERGED_MEAN_GAP_MS * feeds
    t = START_MS + int(rnd() * mean_gap)
    times = []
    append = times.append
    for _ in range(count):
        if rnd() >= SAME_FEED_TIE_P:
            t += 1 + int(-mean_gap * log(1.0 - rnd()))
        append(t)
    return times


def telemetry_lines(times, rnd):
    """Numbers in every field: one random-walk vehicle state per line."""
    tpl = ('{"time":%d,"lat":%.6f,"lon":%.6f,"speed":%.2f,"soc":%.4f,'
           '"temp":%.2f,"volt":%.1f,"amp":%.2f}\n')
    lat = 52.30 + rnd() * 0.12
    lon = 4.80 + rnd() * 0.20
    speed = rnd() * 50.0
    soc = 0.35 + rnd() * 0.65
    temp = 15.0 + rnd() * 15.0
    for t in times:
        lat += (rnd() - 0.5) * 0.0004
        lon += (rnd() - 0.5) * 0.0006
        speed += (rnd() - 0.5) * 8.0
        speed = 0.0 if speed < 0.0 else (85.0 if speed > 85.0 else speed)
        soc -= 0.00002
        if soc < 0.15:
            soc = 0.98
        temp += (rnd() - 0.5) * 0.2
        volt = 560.0 + soc * 120.0 + (rnd() - 0.5) * 4.0
        # Drawing current when moving, regenerating (negative) now and then.
        amp = speed * 3.2 * (rnd() - 0.25) + (rnd() - 0.5) * 10.0
        yield tpl % (t, lat, lon, speed, soc, temp, volt, amp)


STREETS = ["Damrak", "Rokin", "Spui", "Leidseplein", "Dam", "Weesperplein",
           "Wibautstraat", "Museumplein", "Amstel", "Sloterdijk", "Zuid",
           "Osdorp", "Noord", "Bijlmer"]
STATES = ["driving", "boarding", "idle", "charging", "depot", "detour"]
DIRECTIONS = ["inbound", "outbound", "loop"]


def strings_lines(times, rnd):
    """Six short ASCII string fields after "time", no escapes."""
    tpl = ('{"time":%d,"vehicle":"%04d","route":"%s","stop":"%s",'
           '"state":"%s","dir":"%s","trip":"%08x"}\n')
    n_streets, n_states, n_dirs = len(STREETS), len(STATES), len(DIRECTIONS)
    n_routes = len(ROUTES)
    for t in times:
        yield tpl % (t, int(rnd() * 10000), ROUTES[int(rnd() * n_routes)],
                     STREETS[int(rnd() * n_streets)],
                     STATES[int(rnd() * n_states)],
                     DIRECTIONS[int(rnd() * n_dirs)], int(rnd() * 2**32))


def numbers_lines(times, rnd):
    """An array of eleven numbers of several shapes under one short key."""
    tpl = ('{"time":%d,"v":[%.6f,%.6f,%.2f,%.4f,%d,%d,%.3e,%.2f,%.1f,'
           '%.3e,%d]}\n')
    for t in times:
        yield tpl % (t, 52.30 + rnd() * 0.12, 4.80 + rnd() * 0.20,
                     (rnd() - 0.5) * 200.0, rnd(), int(rnd() * 100000),
                     -int(rnd() * 1000), (rnd() - 0.5) * 1e-3,
                     (rnd() - 0.3) * 400.0, 500.0 + rnd() * 200.0,
                     rnd() * 6e23, int(rnd() * 2**31))


def nested_lines(times, rnd):
    """Three small objects inside the record."""
    tpl = ('{"time":%d,"pos":{"lat":%.6f,"lon":%.6f},"bat":{"soc":%.4f,'
           '"volt":%.1f},"motor":{"amp":%.2f,"temp":%.1f}}\n')
    for t in times:
        soc = 0.15 + rnd() * 0.83
        yield tpl % (t, 52.30 + rnd() * 0.12, 4.80 + rnd() * 0.20, soc,
                     560.0 + soc * 120.0, (rnd() - 0.25) * 250.0,
                     20.0 + rnd() * 60.0)


LINE_MAKERS = {
    "telemetry": telemetry_lines,
    "strings": strings_lines,
    "numbers": numbers_lines,
    "nested": nested_lines,
}
LAYOUTS = ["bus"] + list(LINE_MAKERS)
DEFAULT_LAYOUT = "bus"


def generate_layout_feed(path, feed_index, count, seed, feeds, layout):
    """Write one sorted feed of `count` records of `layout` to `path`."""
    rng = random.Random(f"{seed}:{feed_index}:{layout}")
    lines = LINE_MAKERS[layout](time_sequence(feed_index, count, seed, feeds),
                                rng.random)
    written = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        while True:
            chunk = "".join(itertools.islice(lines, BATCH_LINES))
            if not chunk:
                break
            f.write(chunk)
            written += len(chunk)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--feeds", type=int, required=True, help="number of feeds K")
    ap.add_argument("--records", type=int, required=True,
                    help="total records across all feeds")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                    help="what the records hold (default %s)" % DEFAULT_LAYOUT)
    args = ap.parse_args(argv)
    if args.feeds < 1 or args.records < 0:
        ap.error("--feeds must be >= 1 and --records >= 0")

    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "MANIFEST.json")
    # Remove a stale manifest first: if we are interrupted, the directory
    # must not look complete.
    if os.path.exists(manifest_path):
        os.remove(manifest_path)

    t0 = time.monotonic()
    base, extra = divmod(args.records, args.feeds)
    total_bytes = 0
    files = []
    for i in range(args.feeds):
        name = "feed-%04d.ndjson" % i
        count = base + (1 if i < extra else 0)
        path = os.path.join(args.out, name)
        if args.layout == DEFAULT_LAYOUT:
            total_bytes += generate_feed(path, i, count, args.seed, args.feeds)
        else:
            total_bytes += generate_layout_feed(path, i, count, args.seed,
                                                args.feeds, args.layout)
        files.append(name)

    manifest = {
        "feeds": args.feeds,
        "records": args.records,
        "seed": args.seed,
        "bytes": total_bytes,
        "files": files,
        "generator": "bench/gen_feeds.py v1",
    }
    # The default layout's manifest stays as it was before --layout, like
    # its feeds.
    if args.layout != DEFAULT_LAYOUT:
        manifest["layout"] = args.layout
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, manifest_path)
    print("gen_feeds: %d feeds, %d records (%s), %.1f MB in %.1f s -> %s"
          % (args.feeds, args.records, args.layout, total_bytes / 1e6,
             time.monotonic() - t0, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
