#include "sinks/stdout_sink.h"

#include "log/log.h"
#include "uv/stdio_stream.h"
#include "uv/uv_error.h"

namespace chronomerge {

StdoutSink::StdoutSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
                       std::function<void()> changed)
    : Sink(std::move(config)), loop_(loop), output_(output), changed_(std::move(changed)) {}

StdoutSink::~StdoutSink() {
  close();
}

bool StdoutSink::start() {
  auto done = [this](bool ok, const std::string& reason) {
    finished_ = true;
    if (!ok) {
      failed_ = true;
      // A one-shot run piped into `head` ends quietly, like sort or cat.
      if (!(broken_pipe_ && one_shot_)) {
        log::error("output {}: cannot write standard output: {}", name(), reason);
      }
    }
    if (changed_) changed_();
  };
  uv_handle_type type = uv_guess_handle(1);
  if (type == UV_FILE || type == UV_UNKNOWN_HANDLE) {
    file_ = std::make_unique<FileWriter>(loop_, output_, "output " + name(), std::string(), 1,
                                         config_.max_buffer.value_or(SIZE_MAX),
                                         FileWriter::OnError::stop, done);
    file_->set_heartbeats(config_.heartbeats.has_value());
    return file_->open();
  }
  auto stream = std::make_unique<UvHandle<AnyStream>>();
  int rc = open_stdio_stream(loop_, *stream, 1, nullptr);
  if (rc < 0) {
    log::error("output {}: cannot open standard output: {}", name(), uv_error_text(rc));
    return false;
  }
  stream_ = std::make_unique<StreamWriter>(
      output_,
      OutputLog::ConsumerOptions::lossless(config_.max_buffer.value_or(SIZE_MAX),
                                           config_.heartbeats.has_value()),
      std::move(stream), 0, [this, done](StreamWriter::Outcome outcome, const std::string& reason) {
        broken_pipe_ = outcome == StreamWriter::Outcome::peer_closed;
        done(outcome == StreamWriter::Outcome::finished, reason);
      });
  return true;
}

void StdoutSink::close() {
  if (stream_) stream_->close();
  if (file_) file_->close();
}

SinkCounters StdoutSink::counters() const {
  SinkCounters c;
  c.bytes_out = stream_ ? stream_->bytes_written() : file_ ? file_->bytes_written() : 0;
  c.queue_bytes = stream_ && !stream_->done() ? stream_->lag() : file_ ? file_->lag() : 0;
  c.lag_sum = c.queue_bytes;
  c.held_ms = stream_ ? stream_->held_ms() : file_ ? file_->held_ms() : 0;
  c.failed = failed_;
  if (file_) c.write_errors = file_->counters().write_errors;
  return c;
}

FileSink::FileSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
                   std::function<void()> changed)
    : Sink(std::move(config)), changed_(std::move(changed)) {
  auto on_error = config_.on_error == WriteErrorPolicy::skip ? FileWriter::OnError::skip
                                                             : FileWriter::OnError::block;
  file_ = std::make_unique<FileWriter>(
      loop, output, "output " + name(), config_.path, -1, config_.max_buffer.value_or(SIZE_MAX),
      on_error, [this](bool ok, const std::string& reason) {
        finished_ = true;
        if (!ok) {
          failed_ = true;
          log::error("output {}: cannot write {}: {}", name(), config_.path, reason);
        }
        if (changed_) changed_();
      });
  file_->set_sync(config_.sync);
  file_->set_heartbeats(config_.heartbeats.has_value());
}

FileSink::~FileSink() {
  close();
}
bool FileSink::start() {
  return file_->open();
}
void FileSink::close() {
  file_->close();
}
void FileSink::reopen() {
  file_->reopen();
}
void FileSink::retry() {
  file_->retry();
}

SinkCounters FileSink::counters() const {
  SinkCounters c;
  FileWriter::Counters f = file_->counters();
  c.bytes_out = f.bytes_written;
  c.queue_bytes = file_->lag();
  c.lag_sum = c.queue_bytes;
  c.held_ms = file_->held_ms();
  c.failed = failed_;
  c.failing = f.failing;
  c.blocked_ms = f.blocked_ms;
  c.write_errors = f.write_errors;
  c.dropped_records = f.dropped_records;
  c.dropped_bytes = f.dropped_bytes;
  return c;
}

}  // namespace chronomerge
