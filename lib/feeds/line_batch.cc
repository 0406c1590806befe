#include "feeds/line_batch.h"

#include <limits>

#include "record/vector_scanner.h"

namespace chronomerge {

namespace {
// owners_ of a line assembled in carry_, until seal() gives it its block.
constexpr uint32_t carried_owner = std::numeric_limits<uint32_t>::max();
}  // namespace

LineBatch::LineBatch(size_t max_line_bytes, RecordParser parser)
    : framer_(max_line_bytes), parser_(std::move(parser)) {}

void LineBatch::frame(std::shared_ptr<RecordBlock>&& block, size_t n, size_t block_bytes) {
  block_ = block.get();
  blocks_.push_back(BlockOwner(std::move(block), block_bytes));
  framer_.push(std::string_view(block_->data.get(), n), *this);
  // Lines of this block are views into it; only the framer's carry (the
  // start of a line the next read completes) is kept beyond this call.
  block_ = nullptr;
}

void LineBatch::finish() {
  framer_.finish(*this);
}

// A run shorter than one step of the vector scanner is parsed line by
// line: the scanner would pad it to a whole step (512 bytes at AVX-512),
// and a read of one record, what a live producer's reads usually are, cost
// about 0.2 µs more user time there than in the scalar scanner
// (bench/latency.sh, 100 feeds x 1,000 records/s: 1.71 against 1.51 µs per
// record).
void LineBatch::lines(std::string_view run) {
  const bool short_run =
      !scan_short_runs_ && run.size() < VectorScanner::step_bytes(parser_.simd_level());
  if (!parser_.scans_runs() || short_run || skip_scans_ > 0) {
    if (skip_scans_ > 0) --skip_scans_;
    for (size_t begin = 0; begin < run.size();) {
      const size_t end = run.find('\n', begin);
      framer_.deliver(run.substr(begin, end - begin), *this);
      begin = end + 1;
    }
    return;
  }
  scanned_.clear();
  parser_.scan_lines(run, scanned_);
  size_t accepted = 0;
  for (const ScannedLine& scanned : scanned_) {
    std::string_view text = run.substr(scanned.begin, scanned.length);
    if (!scanned.accepted) {
      // The scalar scanner decides (line()), and names the error if there is one.
      framer_.deliver(text, *this);
      continue;
    }
    ++accepted;
    // An accepted line holds an object: it is not empty.
    if (text.back() == '\r') text.remove_suffix(1);
    if (text.size() > framer_.max_line_bytes()) {
      framer_.deliver(run.substr(scanned.begin, scanned.length), *this);
      continue;
    }
    framer_.count_line();
    // Made in place: a record is the common case.
    BlockRecord& record = records_.emplace_back();
    std::string* key_text = keeps_texts() ? &texts_.emplace_back() : nullptr;
    if (std::optional<LineError> error = parser_.finish(text, scanned.scan, record, key_text)) {
      records_.pop_back();
      if (key_text != nullptr) texts_.pop_back();
      reject(*error, text);
      continue;
    }
    owners_.push_back(static_cast<uint32_t>(blocks_.size() - 1));
    sealed_ = false;
  }
  // A line the vector scanner leaves to the scalar one costs both scans.
  // When most lines of a run are such (nested records, escapes, errors),
  // the next runs go to the scalar scanner alone; then the vector scanner
  // is tried again, in case the input changed.
  if (accepted * 2 < scanned_.size()) skip_scans_ = skipped_runs;
}

void LineBatch::line(std::string_view text) {
  ParsedRecord parsed;
  if (std::optional<LineError> error = parser_.parse(text, parsed)) {
    reject(*error, text);
    return;
  }
  const char* base = block_ ? block_->data.get() : nullptr;
  if (base != nullptr && text.data() >= base && text.data() < base + block_->capacity) {
    add(text, std::move(parsed), static_cast<uint32_t>(blocks_.size() - 1));
    return;
  }
  // Assembled by the framer from two reads: its bytes last only for this
  // call.
  carried_.push_back(Carried{records_.size(), carry_.size(), text.size()});
  carry_.append(text);
  add(std::string_view(), std::move(parsed), carried_owner);
}

void LineBatch::add(std::string_view text, ParsedRecord&& parsed, uint32_t owner) {
  sealed_ = false;
  BlockRecord& record = records_.emplace_back();
  record.ordinal = parsed.key.ordinal;
  record.data = text.data();
  record.length = static_cast<uint32_t>(text.size());
  record.key_offset = parsed.key_offset;
  record.key_length = parsed.key_length;
  record.heartbeat = parsed.heartbeat;
  if (keeps_texts()) texts_.push_back(std::move(parsed.key.text));
  owners_.push_back(owner);
}

void LineBatch::reject(LineError error, std::string_view text) {
  rejected_.push_back(Rejected{error, std::string(text), text.size(), framer_.line_number()});
}

void LineBatch::overlong(std::string_view head, size_t total) {
  rejected_.push_back(
      Rejected{LineError::too_long, std::string(head), total, framer_.line_number()});
}

void LineBatch::seal() {
  sealed_ = true;
  runs_.clear();
  if (!carried_.empty()) {
    // One exact-size block for every assembled line of the batch, so that
    // it pins no more than those lines.
    std::shared_ptr<RecordBlock> carry = RecordBlock::copy_of(carry_);
    const auto index = static_cast<uint32_t>(blocks_.size());
    for (const Carried& line : carried_) {
      records_[line.record].data = carry->data.get() + line.offset;
      records_[line.record].length = static_cast<uint32_t>(line.length);
      owners_[line.record] = index;
    }
    blocks_.push_back(BlockOwner(std::move(carry), carry_.size()));
    carried_.clear();
    carry_.clear();
  }
  size_t begin = 0;
  for (size_t i = 1; i <= records_.size(); ++i) {
    if (i == records_.size() || owners_[i] != owners_[begin]) {
      Run& run = runs_.emplace_back();
      run.records = std::span<BlockRecord>(records_).subspan(begin, i - begin);
      run.block = blocks_[owners_[begin]];
      if (!texts_.empty()) run.texts = std::span<std::string>(texts_).subspan(begin, i - begin);
      begin = i;
    }
  }
}

std::span<LineBatch::Run> LineBatch::runs() {
  if (!sealed_) seal();
  return runs_;
}

void LineBatch::clear() {
  records_.clear();
  texts_.clear();
  owners_.clear();
  blocks_.clear();
  carry_.clear();
  carried_.clear();
  runs_.clear();
  rejected_.clear();
  sealed_ = true;
}

}  // namespace chronomerge
