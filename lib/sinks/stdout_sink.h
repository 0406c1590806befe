// StdoutSink and FileSink: the merged stream to standard output or to a
// file (append). Standard output uses a stream writer when it is a pipe,
// socket or terminal, and the thread pool when it is a file or /dev/null.
//
// A file output that cannot write (disk full) holds the merge and retries,
// or drops and counts, by its on_error policy (see FileWriter). Standard
// output stops at its first failed write, as a one-shot run must: a
// command writing to a full disk exits with an error instead of waiting.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>

#include "output/output_log.h"
#include "sinks/file_writer.h"
#include "sinks/sink.h"
#include "sinks/stream_writer.h"

namespace chronomerge {

class StdoutSink final : public Sink {
 public:
  // `changed` runs when the sink finishes or fails (from a loop callback).
  StdoutSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
             std::function<void()> changed);
  ~StdoutSink() override;
  bool start() override;
  void close() override;
  bool finished() const override { return finished_; }
  SinkCounters counters() const override;
  // A one-shot run: a reader that goes away (EPIPE) is not an error to log;
  // the run then ends as if killed by SIGPIPE (see broken_pipe()).
  void set_one_shot() { one_shot_ = true; }
  // The reader of standard output went away before the end.
  bool broken_pipe() const { return broken_pipe_; }

 private:
  uv_loop_t* loop_;
  OutputLog& output_;
  std::function<void()> changed_;
  std::unique_ptr<StreamWriter> stream_;
  std::unique_ptr<FileWriter> file_;
  bool finished_ = false;
  bool failed_ = false;
  bool one_shot_ = false;
  bool broken_pipe_ = false;
};

class FileSink final : public Sink {
 public:
  FileSink(uv_loop_t* loop, OutputLog& output, OutputConfig config, std::function<void()> changed);
  ~FileSink() override;
  bool start() override;
  void close() override;
  bool finished() const override { return finished_; }
  SinkCounters counters() const override;
  void reopen() override;
  void retry() override;

 private:
  std::unique_ptr<FileWriter> file_;
  std::function<void()> changed_;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace chronomerge
