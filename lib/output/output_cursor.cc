#include "output/output_cursor.h"

namespace chronomerge {

void OutputCursor::close() {
  if (output_ == nullptr) return;
  Output* output = output_;
  output_ = nullptr;
  output->unsubscribe(id_);  // may run the demand callback
}

size_t OutputCursor::peek(std::vector<Output::Slice>& out, size_t max_bytes) const {
  return output_ != nullptr ? output_->peek(id_, out, max_bytes) : 0;
}

void OutputCursor::consume(size_t bytes) {
  if (output_ != nullptr && bytes > 0) output_->consume(id_, bytes);
}

size_t OutputCursor::lag() const {
  return output_ != nullptr ? output_->lag(id_) : 0;
}

bool OutputCursor::overflowed() const {
  return output_ != nullptr && output_->overflowed(id_);
}

bool OutputCursor::output_ended() const {
  return output_ != nullptr && output_->ended();
}

bool OutputCursor::at_end() const {
  return output_ended() && lag() == 0;
}

}  // namespace chronomerge
