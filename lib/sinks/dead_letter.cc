#include "sinks/dead_letter.h"

#include <nlohmann/json.hpp>

#include <limits>

namespace chronomerge {

// The dead-letter output never holds anything back: no high-water mark.
// Its bound is max_buffer, enforced in write() by dropping.
constexpr size_t unbounded = std::numeric_limits<size_t>::max() / 2;

DeadLetter::DeadLetter(uv_loop_t* loop, const DeadletterConfig& config,
                       std::function<void()> finished)
    : loop_(loop), config_(config), output_(unbounded) {
  writer_ = std::make_unique<FileWriter>(
      loop, output_, "dead-letter file", config_.path, -1, unbounded, FileWriter::OnError::block,
      [this, finished = std::move(finished)](bool ok, const std::string& reason) {
        if (!ok) log::error("dead-letter file {}: {}", config_.path, reason);
        finished_ = true;
        if (finished) finished();
      });
}

DeadLetter::~DeadLetter() {
  close();
}

bool DeadLetter::start() {
  return writer_->open();
}

void DeadLetter::end() {
  if (output_.ended()) return;
  output_.end();
  output_.flush();
}

void DeadLetter::write(std::string_view feed, std::string_view reason, std::string_view line) {
  using nlohmann::json;
  // The line may be any bytes: invalid UTF-8 is replaced so the dead-letter
  // file itself stays valid JSON.
  auto quote = [](std::string_view s) {
    return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
  };
  scratch_ = "{\"feed\":" + quote(feed) + ",\"reason\":" + quote(reason) +
             ",\"line\":" + quote(line) + "}";
  size_t bytes = scratch_.size() + 1;  // and its newline
  if (writer_->done() || writer_->lag() + bytes > config_.max_buffer) {
    ++dropped_;
    dropped_bytes_ += bytes;
    uint64_t suppressed = 0;
    if (drop_log_.allow(uv_now(loop_), suppressed)) {
      log::warn("dead-letter file {}: dead letters dropped ({} so far): {}", config_.path, dropped_,
                writer_->done() ? std::string("the file is closed")
                                : fmt::format("{} bytes already wait to be written (max_buffer {})",
                                              writer_->lag(), config_.max_buffer));
    }
    return;
  }
  output_.append(scratch_);
}

DeadLetter::Counters DeadLetter::counters() const {
  FileWriter::Counters f = writer_->counters();
  Counters c;
  c.records = output_.records();
  c.bytes_written = f.bytes_written;
  c.queue_bytes = writer_->lag();
  c.dropped = dropped_;
  c.dropped_bytes = dropped_bytes_;
  c.write_errors = f.write_errors;
  c.failing = f.failing;
  return c;
}

}  // namespace chronomerge
