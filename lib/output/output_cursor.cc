#include "output/output_cursor.h"

namespace chronomerge {

void OutputCursor::close() {
  if (log_ == nullptr) return;
  OutputLog* log = log_;
  log_ = nullptr;
  log->unsubscribe(id_);  // may run the demand callback
}

size_t OutputCursor::peek(std::vector<OutputLog::Slice>& out, size_t max_bytes) {
  if (log_ == nullptr) return 0;
  peeked_bytes_ = log_->peek(id_, out, max_bytes, &peeked_end_);
  return peeked_bytes_;
}

void OutputCursor::consume(size_t bytes) {
  if (log_ == nullptr || bytes == 0) return;
  log_->consume_to(id_, bytes == peeked_bytes_ ? peeked_end_ : log_->position(id_) + bytes);
  peeked_bytes_ = 0;
}

size_t OutputCursor::lag() const {
  return log_ != nullptr ? log_->lag(id_) : 0;
}

DropReason OutputCursor::dropped() const {
  return log_ != nullptr ? log_->dropped(id_) : DropReason::none;
}

uint64_t OutputCursor::held_ms() const {
  return log_ != nullptr ? log_->held_ms(id_) : 0;
}

bool OutputCursor::output_ended() const {
  return log_ != nullptr && log_->ended();
}

bool OutputCursor::at_end() const {
  return output_ended() && lag() == 0;
}

}  // namespace chronomerge
