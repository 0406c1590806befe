#include "sinks/dead_letter.h"

#include <nlohmann/json.hpp>

#include "log/log.h"

namespace chronomerge {

DeadLetter::DeadLetter(uv_loop_t* loop, std::string path)
    : output_(SIZE_MAX),
      writer_(std::make_unique<FileWriter>(loop, output_, path, -1, SIZE_MAX,
                                           [path](bool ok, const std::string& reason) {
                                             if (!ok) log::error("deadletter {}: {}", path, reason);
                                           })) {}

DeadLetter::~DeadLetter() {
  close();
}

bool DeadLetter::start() {
  return writer_->open();
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
