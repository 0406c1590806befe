// The CPU priority of the threads of libuv's pool that run this program's
// work.
//
// That work (reading a file feed and validating its lines, framing a
// stream feed's batch, a client library's blocking call) only feeds the
// loop thread, which alone merges and writes: the loop is the pipeline's
// critical path. With fewer free cores than runnable threads, the
// scheduler let a worker woken with its next read preempt the loop
// thread, which then waited while the merge had records to emit. A
// worker runs a few nice levels below the process instead, as RocksDB
// runs its background threads (Env::LowerThreadPoolCPUPriority): it still
// gets every idle core, and yields to the loop on a busy one. A one-shot
// merge of two files took 10 % less time (bench/README.md).
#pragma once

namespace chronomerge {

// Nice levels a pool worker runs below the process (at most to 19).
inline constexpr int worker_nice_offset = 5;

// Lowers the calling thread's CPU priority to the process's nice value
// plus worker_nice_offset; later calls on the same thread do nothing.
// Call it first thing in every job queued on libuv's pool (uv_queue_work),
// never on the loop thread. A failure (none is expected: anyone may lower
// a thread's priority) leaves the priority as it was.
void lower_worker_priority();

}  // namespace chronomerge
