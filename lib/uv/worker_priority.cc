#include "uv/worker_priority.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace chronomerge {

void lower_worker_priority() {
  thread_local bool lowered = false;
  if (lowered) return;
  lowered = true;
  // Linux keeps a nice value per thread: PRIO_PROCESS with a thread id
  // reads and sets that thread's alone. The process's value is the one
  // the loop thread has; libuv's workers start with it.
  const auto self = static_cast<id_t>(gettid());
  const auto process = static_cast<id_t>(getpid());
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, process);
  if (nice == -1 && errno != 0) return;
  setpriority(PRIO_PROCESS, self, std::min(nice + worker_nice_offset, 19));
}

}  // namespace chronomerge
