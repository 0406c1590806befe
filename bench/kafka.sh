#!/usr/bin/env bash
# Kafka: PARTITIONS partitions of a topic -> chronomerge -> a merged topic
# and one block TCP client, against librdkafka's mock cluster on loopback
# (chronomerge_kafka_mock, a test program) with kcat producing.
#
# Usage: bash bench/kafka.sh
# Environment:
#   CHRONOMERGE             daemon binary, a Release build
#                           (default: <repo>/build/daemon/chronomerge)
#   CHRONOMERGE_KAFKA_MOCK  the mock cluster (default:
#                           <repo>/build/tests/chronomerge_kafka_mock)
#   PARTITIONS              partitions (default 8)
#   PER_PARTITION           records per partition (default 35000: the mock
#                           keeps at most 5 MB per partition and drops the
#                           oldest beyond, so a backlog cannot be larger)
#   RUNS                    runs; the table shows medians (default 5)
#   FETCH_WAIT_MS           fetch.wait.max.ms of the daemon and of kcat
#                           (default 10: the mock answers an empty fetch
#                           only when it runs out, a broker as data comes)
#
# Each run and case: a fresh mock cluster; kcat produces every partition at
# once; the daemon (retention_bytes 1 MiB, the rest default) reads them
# from the earliest offset into a block TCP client, and in two of the four
# cases into a kafka output too (idempotent, acks=all); two cases raise
# librdkafka's per-partition prefetch (queued.max.messages.kbytes, by
# default the feed's high-water mark, 1 MiB) to 4 MiB. The cases take
# turns. Timed from the daemon's start until the client has every record,
# or the brokers acknowledged every record (polled on /metrics every
# 20 ms): records/s, the daemon's CPU (utime + stime) and peak RSS.
# Checked: the client got every record; the merged topic took every record
# (its high watermark) and what the mock keeps of it is in key order.
# Reference: kcat reading the same partitions to /dev/null, one after the
# other.
#
# Exit status: 0 if every run's output was complete and in order, 1 if
# not, 2 on a setup error. The table is also saved under
# bench/data/results/kafka-latest.md.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CHRONOMERGE=${CHRONOMERGE:-$REPO_ROOT/build/daemon/chronomerge}
export CHRONOMERGE_KAFKA_MOCK=${CHRONOMERGE_KAFKA_MOCK:-$REPO_ROOT/build/tests/chronomerge_kafka_mock}
for binary in "$CHRONOMERGE" "$CHRONOMERGE_KAFKA_MOCK"; do
  [[ -x $binary ]] || { echo "error: $binary missing: cmake --build build" >&2; exit 2; }
done
command -v kcat > /dev/null || { echo "error: kcat missing: apt-get install kafkacat" >&2; exit 2; }
export OUT_DIR=$REPO_ROOT/bench/data/kafka
mkdir -p "$OUT_DIR" "$REPO_ROOT/bench/data/results"
status=0
python3 "$REPO_ROOT/bench/kafka.py" | tee "$REPO_ROOT/bench/data/results/kafka-latest.md" || status=$?
rm -rf "${OUT_DIR:?}"/tmp*
exit "$status"
