// DeadLetter: malformed and late records, one JSON object per line, in a
// file: {"feed":"bus-a","reason":"not_json","line":"<the original line>"}.
//
// It has its own small Output, so a slow disk never holds back the merge;
// the file is appended to and reopened on SIGUSR1 like file outputs. What
// waits to be written is bounded by `max_buffer` bytes: a dead letter that
// would go over is dropped, counted and logged (rate-limited), so a stuck
// file (a FIFO nobody reads, a full disk) costs at most that much memory.
// A failed write is retried like a file output under on_error: block
// (see FileWriter), with the bound above as the only limit.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.h"
#include "log/log.h"
#include "output/output_log.h"
#include "sinks/file_writer.h"

namespace chronomerge {

class DeadLetter {
 public:
  struct Counters {
    uint64_t records = 0;        // dead letters queued for the file
    uint64_t bytes_written = 0;  // bytes the file has taken
    size_t queue_bytes = 0;      // queued, not yet written
    uint64_t dropped = 0;        // dead letters dropped: over max_buffer, or after close
    uint64_t dropped_bytes = 0;
    uint64_t write_errors = 0;
    bool failing = false;
  };

  // `finished` runs once everything was written after end() (or writing
  // failed for good).
  DeadLetter(uv_loop_t* loop, const DeadletterConfig& config, std::function<void()> finished);
  ~DeadLetter();
  DeadLetter(const DeadLetter&) = delete;
  DeadLetter& operator=(const DeadLetter&) = delete;

  bool start();
  void write(std::string_view feed, std::string_view reason, std::string_view line);
  void flush() { output_.flush(); }
  void reopen() { writer_->reopen(); }
  void retry() { writer_->retry(); }
  void close() { writer_->close(); }
  // Nothing more will be written (the merge is over): finish the file.
  void end();
  bool finished() const { return finished_; }
  uint64_t records() const { return output_.records(); }
  Counters counters() const;
  const std::string& path() const { return config_.path; }

 private:
  uv_loop_t* loop_;
  DeadletterConfig config_;
  OutputLog output_;
  std::unique_ptr<FileWriter> writer_;
  std::string scratch_;
  bool finished_ = false;
  uint64_t dropped_ = 0;
  uint64_t dropped_bytes_ = 0;
  log::RateLimiter drop_log_{1, 10000};
};

}  // namespace chronomerge
