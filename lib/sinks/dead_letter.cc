#include "sinks/dead_letter.h"

#include <nlohmann/json.hpp>

#include <limits>

#include "log/log.h"

namespace chronomerge {

// The dead-letter output never holds anything back: no high-water mark,
// and its writer is never too far behind.
constexpr size_t unbounded = std::numeric_limits<size_t>::max() / 2;

DeadLetter::DeadLetter(uv_loop_t* loop, std::string path, std::function<void()> finished)
    : output_(unbounded) {
  writer_ = std::make_unique<FileWriter>(
      loop, output_, path, -1, unbounded,
      [this, path, finished = std::move(finished)](bool ok, const std::string& reason) {
        if (!ok) log::error("deadletter {}: {}", path, reason);
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
  output_.push(scratch_);
}

}  // namespace chronomerge
