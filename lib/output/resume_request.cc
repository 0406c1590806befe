#include "output/resume_request.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "record/json_depth.h"

namespace chronomerge {

namespace {

// Values of the line. The request object's fields are kept apart, in the
// order written (LineBuilder), so the first problem reported is the first
// one a reader of the line meets.
using Json = nlohmann::json;

constexpr size_t kRunIdLength = 16;

ResumeParse refuse(std::string message) {
  ResumeParse result;
  result.error = std::move(message);
  return result;
}

// Untrusted text (a field name, nlohmann's message quoting the input) made
// fit for an error message: printable ASCII only, at most `max` bytes.
std::string printable(std::string_view text, size_t max) {
  std::string out;
  for (char c : text.substr(0, max)) {
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (text.size() > max) out += "...";
  return out;
}

// A field or parameter name as an error message starts with it: bare if
// it is a short plain word, else in double quotes (escaping quotes and
// backslashes), so that a name holding ": " cannot blur where it ends.
std::string field_name(std::string_view name) {
  constexpr size_t kMax = 40;
  const bool plain =
      !name.empty() && name.size() <= kMax && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
      });
  if (plain) return std::string(name);
  std::string out = "\"";
  for (char c : printable(name, kMax)) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

bool is_run_id(std::string_view text) {
  return text.size() == kRunIdLength && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Configured feed names use A-Z a-z 0-9 _ . - (config.cc); generated ones
// join two of them with '/' ("<fleet>/<member>"), which a client may ask
// for too.
bool is_feed_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxResumeFeedNameBytes &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-' || c == '/';
         });
}

// Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF), the rule nlohmann applies to the strings of a line, so that a
// string key means the same in a query.
bool is_utf8(std::string_view text) {
  size_t i = 0;
  const auto byte = [&](size_t at) { return static_cast<unsigned char>(text[at]); };
  while (i < text.size()) {
    const unsigned char c = byte(i);
    size_t length = 0;
    unsigned char low = 0x80, high = 0xbf;  // the range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      if (c == 0xe0) low = 0xa0;
      if (c == 0xed) high = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      if (c == 0xf0) low = 0x90;
      if (c == 0xf4) high = 0x8f;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    if (byte(i + 1) < low || byte(i + 1) > high) return false;
    for (size_t k = 2; k < length; ++k) {
      if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return false;
    }
    i += length;
  }
  return true;
}

// --- Numbers written as text (queries, event ids) ---------------------------

enum class NumberText { ok, malformed, out_of_range };

// A JSON integer without sign: "0" or digits without a leading zero.
NumberText read_unsigned(std::string_view text, uint64_t& out) {
  if (text.empty() || (text[0] == '0' && text.size() > 1)) return NumberText::malformed;
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return NumberText::malformed;
  }
  const auto result = std::from_chars(text.data(), text.data() + text.size(), out);
  return result.ec == std::errc() ? NumberText::ok : NumberText::out_of_range;
}

// A JSON integer: an optional '-', then as above ("-0" is 0).
NumberText read_integer(std::string_view text, int64_t& out) {
  const bool negative = !text.empty() && text[0] == '-';
  std::string_view digits = negative ? text.substr(1) : text;
  uint64_t magnitude = 0;
  const NumberText read = read_unsigned(digits, magnitude);
  if (read != NumberText::ok) return read;
  constexpr uint64_t max = uint64_t{std::numeric_limits<int64_t>::max()};
  if (magnitude > (negative ? max + 1 : max)) return NumberText::out_of_range;
  out = static_cast<int64_t>(negative ? 0 - magnitude : magnitude);
  return NumberText::ok;
}

// Whether `text` is a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(std::string_view text) {
  size_t i = 0;
  const auto digits = [&] {
    const size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i > start;
  };
  if (i < text.size() && text[i] == '-') ++i;
  if (i < text.size() && text[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == text.size();
}

// A JSON number as a double, rounded as nlohmann (strtod) and the record
// parser (from_chars) round it. Beyond the doubles it is out of range;
// closer to zero than any double it is 0, as in records.
NumberText read_number(std::string_view text, double& out) {
  if (!is_json_number(text)) return NumberText::malformed;
  const char* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, out);
  if (result.ec == std::errc::result_out_of_range) {
    // from_chars says the same for overflow and underflow. The decimal
    // position of the first significant digit plus the exponent tells
    // them apart: positive only for large magnitudes (as in
    // record_parser.cc).
    const size_t exponent_at = text.find_first_of("eE");
    int64_t magnitude = 0;
    bool significant = false, fraction = false;
    for (char c : text.substr(0, exponent_at)) {
      if (c == '.') {
        fraction = true;
      } else if (c == '-') {
        continue;
      } else if (!significant && c != '0') {
        significant = true;
        if (!fraction) ++magnitude;
      } else if (!significant && fraction) {
        --magnitude;
      } else if (significant && !fraction) {
        ++magnitude;
      }
    }
    // The exponent, saturated far beyond any double's range.
    if (exponent_at != std::string_view::npos) {
      size_t i = exponent_at + 1;
      const bool negative = text[i] == '-';
      if (text[i] == '-' || text[i] == '+') ++i;
      int64_t exponent = 0;
      for (; i < text.size(); ++i) {
        exponent = std::min<int64_t>(exponent * 10 + (text[i] - '0'), 1'000'000'000);
      }
      magnitude += negative ? -exponent : exponent;
    }
    if (magnitude > 0) return NumberText::out_of_range;
    out = 0.0;
    return NumberText::ok;
  }
  if (result.ec != std::errc() || result.ptr != end || !std::isfinite(out)) {
    return NumberText::out_of_range;
  }
  return NumberText::ok;
}

// --- What both forms share ---------------------------------------------------

// The fields of a request as read, before the rules that join them.
struct Fields {
  std::optional<std::pair<std::string, uint64_t>> after;
  std::optional<ResumeRequest::From> since;  // now, oldest or key
  Key key;
  std::optional<uint64_t> skip;
  std::optional<std::vector<std::string>> feeds;
  std::optional<ResumeRequest::OnGap> on_gap;
};

std::string since_expected(KeyType key_type) {
  switch (key_type) {
    case KeyType::integer:
      return "since: expected \"now\", \"oldest\" or an integer key";
    case KeyType::number:
      return "since: expected \"now\", \"oldest\" or a number key";
    case KeyType::rfc3339:
      return "since: expected \"now\", \"oldest\" or an RFC 3339 time";
    case KeyType::string:
      return "since: expected \"now\", \"oldest\" or a string key";
  }
  return "since: expected \"now\" or \"oldest\"";
}

// "now" and "oldest" name positions for every key type: a string key
// spelled that way cannot be asked for.
std::optional<ResumeRequest::From> since_word(std::string_view text) {
  if (text == "now") return ResumeRequest::From::now;
  if (text == "oldest") return ResumeRequest::From::oldest;
  return std::nullopt;
}

std::optional<ResumeRequest::OnGap> on_gap_word(std::string_view text) {
  if (text == "close") return ResumeRequest::OnGap::close;
  if (text == "oldest") return ResumeRequest::OnGap::oldest;
  return std::nullopt;
}

constexpr const char* kOnGapExpected = "on_gap: expected \"close\" or \"oldest\"";
constexpr const char* kSkipExpected = "skip: expected an unsigned integer";
constexpr const char* kSkipRange = "skip: out of range";

// `skip` read by either form: its number, or the error to report.
std::optional<std::string> take_skip(NumberText read, uint64_t skip, Fields& fields) {
  switch (read) {
    case NumberText::ok:
      fields.skip = skip;
      return std::nullopt;
    case NumberText::malformed:
      return kSkipExpected;
    case NumberText::out_of_range:
      return kSkipRange;
  }
  return kSkipExpected;
}
constexpr const char* kIntegerRange = "since: integer key out of range";
constexpr const char* kNumberRange = "since: number key out of range";

// The names of "feeds", in either form: an error message or nothing.
std::optional<std::string> check_feeds(const std::vector<std::string>& names) {
  if (names.empty()) return "feeds: expected at least one feed name";
  if (names.size() > kMaxResumeFeeds) {
    return fmt::format("feeds: more than {} feed names", kMaxResumeFeeds);
  }
  std::map<std::string_view, size_t> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!is_feed_name(names[i])) {
      return fmt::format(
          "feeds[{}]: expected a feed name, 1 to {} characters of A-Z a-z 0-9 _ . - /", i,
          kMaxResumeFeedNameBytes);
    }
    const auto [it, inserted] = seen.emplace(names[i], i);
    if (!inserted) return fmt::format("feeds[{}]: repeats feeds[{}]", i, it->second);
  }
  return std::nullopt;
}

// The rules across fields, then the request.
ResumeParse finish(Fields fields) {
  if (fields.after && fields.since) return refuse("since: not allowed together with after");
  if (fields.skip && fields.since != ResumeRequest::From::key) {
    return refuse("skip: allowed only with a key in since");
  }
  ResumeRequest request;
  if (fields.after) {
    request.from = ResumeRequest::From::after;
    request.run = std::move(fields.after->first);
    request.offset = fields.after->second;
  } else if (fields.since) {
    request.from = *fields.since;
    if (request.from == ResumeRequest::From::key) {
      request.key = std::move(fields.key);
      request.skip = fields.skip.value_or(0);
    }
  }
  if (fields.feeds) request.feeds = std::move(*fields.feeds);
  if (fields.on_gap) request.on_gap = *fields.on_gap;
  ResumeParse result;
  result.request = std::move(request);
  return result;
}

// "R:N" of a query's `after` and of Last-Event-ID.
std::optional<std::pair<std::string, uint64_t>> read_event_id(std::string_view text) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || !is_run_id(text.substr(0, colon))) return std::nullopt;
  uint64_t offset = 0;
  if (read_unsigned(text.substr(colon + 1), offset) != NumberText::ok) return std::nullopt;
  return std::pair{std::string(text.substr(0, colon)), offset};
}

// --- The line ----------------------------------------------------------------

constexpr std::string_view kFieldNames[] = {"after", "since", "skip", "feeds", "on_gap"};
// The line also carries a token (never the query string: it would end up
// in logs and browser histories; HTTP clients send Authorization).
constexpr std::string_view kLineFieldNames[] = {"after", "since",  "skip",
                                                "feeds", "on_gap", "token"};
constexpr size_t kMaxTokenBytes = 1024;

// Builds the request's fields through nlohmann's SAX interface, as the
// configuration loader builds its document: the error callback gets a
// position for every error, and the fields are kept in the order written,
// repeats included, which the DOM parser would collapse to the last value.
//
// The work stays linear in the line, however hostile: a sixth field is an
// unknown one or a repeat, known from its name alone, so the parse stops
// there; nested objects, wrong for every field, are std::map based.
class LineBuilder {
 public:
  LineBuilder() { fields_.reserve(std::size(kFieldNames) + 1); }

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool value) { return add(Json(value)); }
  bool number_integer(Json::number_integer_t value) { return add(Json(value)); }
  bool number_unsigned(Json::number_unsigned_t value) { return add(Json(value)); }
  bool number_float(Json::number_float_t value, const Json::string_t& /*text*/) {
    return add(Json(value));
  }
  bool string(Json::string_t& value) { return add(Json(std::move(value))); }
  bool binary(Json::binary_t& value) { return add(Json::binary(std::move(value))); }
  bool start_object(std::size_t /*size*/) {
    if (stack_.empty()) {
      object_ = true;
      stack_.push_back({nullptr, {}});
      return true;
    }
    return open(Json::object());
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*size*/) { return open(Json::array()); }
  bool end_array() { return close(); }

  bool key(Json::string_t& name) {
    if (stack_.size() == 1) {
      fields_.emplace_back(std::move(name), Json());
      if (fields_.size() > std::size(kLineFieldNames)) {
        stopped_ = true;
        return false;
      }
    } else {
      stack_.back().key = std::move(name);
    }
    return true;
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const Json::exception& error) {
    error_position_ = position;
    error_message_ = error.what();
    return false;
  }

  // The line is an object: its fields in order, else `root`.
  bool object() const { return object_; }
  const std::vector<std::pair<std::string, Json>>& fields() const { return fields_; }
  // The parse stopped at a seventh field, one that is a problem by its name.
  bool stopped() const { return stopped_; }
  bool too_deep() const { return too_deep_; }
  size_t error_position() const { return error_position_; }
  const std::string& error_message() const { return error_message_; }

 private:
  struct Frame {
    Json* node;       // nullptr: the request object itself (`fields_`)
    std::string key;  // objects: the member being read
  };

  // Stores the next value: the root, a field of the request, the next
  // array element or the member named by the last key. Returns where it
  // went.
  Json* place(Json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& frame = stack_.back();
    if (frame.node == nullptr) {
      fields_.back().second = std::move(value);
      return &fields_.back().second;
    }
    if (frame.node->is_array()) {
      frame.node->push_back(std::move(value));
      return &frame.node->back();
    }
    Json& slot = (*frame.node)[frame.key];
    slot = std::move(value);
    return &slot;
  }

  bool add(Json value) {
    place(std::move(value));
    return true;
  }

  bool open(Json container) {
    // find_excess_nesting() has refused deeper lines already; this only
    // keeps the document from growing past the limit should the two ever
    // disagree.
    if (stack_.size() >= kMaxResumeNesting) {
      too_deep_ = true;
      return false;
    }
    // Pointers into the parent stay valid: only the innermost open
    // container grows, and `fields_` only while no container is open in it.
    stack_.push_back({place(std::move(container)), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  Json root_;
  bool object_ = false;
  std::vector<std::pair<std::string, Json>> fields_;
  std::vector<Frame> stack_;
  bool stopped_ = false;
  bool too_deep_ = false;
  size_t error_position_ = 0;
  std::string error_message_;
};

// "[json.exception.parse_error.101] parse error at line 1, column 2: syntax
// error while parsing ..." -> "syntax error while parsing ...", printable
// and short: it quotes the client's bytes.
std::string short_parse_message(std::string_view message) {
  if (message.starts_with("[json.exception.")) {
    const size_t bracket = message.find("] ");
    if (bracket != std::string_view::npos) message.remove_prefix(bracket + 2);
  }
  if (message.starts_with("parse error")) {
    const size_t colon = message.find(": ");
    if (colon != std::string_view::npos) message.remove_prefix(colon + 2);
  }
  return printable(message, 200);
}

// An unsigned integer of the line: `out_of_range` for an integral value
// beyond uint64 (nlohmann makes those doubles), `malformed` for anything
// else that is not an integer >= 0.
NumberText json_unsigned(const Json& value, uint64_t& out) {
  if (value.is_number_unsigned()) {
    out = value.get<uint64_t>();
    return NumberText::ok;
  }
  if (value.is_number_integer() && value.get<int64_t>() == 0) {  // "-0"
    out = 0;
    return NumberText::ok;
  }
  if (value.is_number_float() && value.get<double>() >= 0x1p64) return NumberText::out_of_range;
  return NumberText::malformed;
}

std::optional<std::string> read_after(const Json& value, Fields& fields) {
  if (!value.is_array() || value.size() != 2) return "after: expected [run id, offset]";
  if (!value[0].is_string() || !is_run_id(value[0].get_ref<const std::string&>())) {
    return "after: the run id must be 16 lowercase hex digits";
  }
  uint64_t offset = 0;
  switch (json_unsigned(value[1], offset)) {
    case NumberText::ok:
      break;
    case NumberText::malformed:
      return "after: the offset must be an unsigned integer";
    case NumberText::out_of_range:
      return "after: the offset is out of range";
  }
  fields.after = std::pair{value[0].get<std::string>(), offset};
  return std::nullopt;
}

std::optional<std::string> read_since(const Json& value, KeyType key_type, Fields& fields) {
  if (value.is_string()) {
    if (auto word = since_word(value.get_ref<const std::string&>())) {
      fields.since = word;
      return std::nullopt;
    }
  }
  switch (key_type) {
    case KeyType::integer:
      if (value.is_number_unsigned() &&
          value.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
        return kIntegerRange;
      }
      if (value.is_number_float() && std::fabs(value.get<double>()) >= 0x1p63) {
        return kIntegerRange;
      }
      if (!value.is_number_integer()) return since_expected(key_type);
      fields.key = Key::from_integer(value.get<int64_t>());
      break;
    case KeyType::number:
      // nlohmann refuses numbers beyond the doubles, so every number here
      // is finite.
      if (!value.is_number()) return since_expected(key_type);
      fields.key = Key::from_number(value.get<double>());
      break;
    case KeyType::rfc3339: {
      if (!value.is_string()) return since_expected(key_type);
      const auto nanos = parse_rfc3339_nanos(value.get_ref<const std::string&>());
      if (!nanos) return since_expected(key_type);
      fields.key = Key{*nanos, {}};
      break;
    }
    case KeyType::string:
      if (!value.is_string()) return since_expected(key_type);
      fields.key = Key::from_string(value.get<std::string>());
      break;
  }
  fields.since = ResumeRequest::From::key;
  return std::nullopt;
}

std::optional<std::string> read_feeds(const Json& value, Fields& fields) {
  if (!value.is_array()) return "feeds: expected an array of feed names";
  // The line limit bounds the array already (every element takes at least
  // two bytes), so nothing is copied that could not be sent.
  std::vector<std::string> names;
  names.reserve(std::min(value.size(), kMaxResumeFeeds + 1));
  for (const Json& name : value) {
    // A non-string fails the name check below, with its index.
    names.push_back(name.is_string() ? name.get<std::string>() : std::string());
    if (names.size() > kMaxResumeFeeds) break;
  }
  if (auto error = check_feeds(names)) return error;
  fields.feeds = std::move(names);
  return std::nullopt;
}

}  // namespace

ResumeParse parse_resume_line(std::string_view line, KeyType key_type) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > kMaxResumeLineBytes) {
    return refuse(fmt::format("request: line over {} bytes", kMaxResumeLineBytes));
  }
  const std::string too_deep =
      fmt::format("request: arrays and objects nested deeper than {} levels", kMaxResumeNesting);
  if (find_excess_nesting(line, kMaxResumeNesting)) return refuse(too_deep);

  LineBuilder builder;
  bool parsed = false;
  try {
    parsed = Json::sax_parse(line.begin(), line.end(), &builder);
  } catch (const Json::exception& error) {
    // The SAX interface reports errors through the builder; this is a
    // safety net for anything nlohmann still throws.
    return refuse("request: invalid JSON: " + short_parse_message(error.what()));
  }
  if (!parsed && builder.too_deep()) return refuse(too_deep);
  if (!parsed && !builder.stopped()) {
    // nlohmann counts the characters read, the one it stopped at included.
    const size_t position = builder.error_position();
    const size_t column = std::min(position > 0 ? position - 1 : 0, line.size()) + 1;
    return refuse(fmt::format("request: invalid JSON at column {}: {}", column,
                              short_parse_message(builder.error_message())));
  }
  if (!builder.object()) return refuse("request: expected a JSON object");

  Fields fields;
  std::string token;
  bool seen[std::size(kLineFieldNames)] = {};
  for (const auto& [name, value] : builder.fields()) {
    const auto known = std::find(std::begin(kLineFieldNames), std::end(kLineFieldNames), name);
    if (known == std::end(kLineFieldNames)) return refuse(field_name(name) + ": unknown field");
    bool& given = seen[known - std::begin(kLineFieldNames)];
    if (given) return refuse(name + ": given twice");
    given = true;

    std::optional<std::string> error;
    if (name == "token") {
      if (!value.is_string() || value.get_ref<const std::string&>().empty() ||
          value.get_ref<const std::string&>().size() > kMaxTokenBytes) {
        error = fmt::format("token: expected a string of 1 to {} bytes", kMaxTokenBytes);
      } else {
        token = value.get<std::string>();
      }
    } else if (name == "after") {
      error = read_after(value, fields);
    } else if (name == "since") {
      error = read_since(value, key_type, fields);
    } else if (name == "skip") {
      uint64_t skip = 0;
      const NumberText read = json_unsigned(value, skip);
      error = take_skip(read, skip, fields);
    } else if (name == "feeds") {
      error = read_feeds(value, fields);
    } else {  // on_gap
      fields.on_gap =
          value.is_string() ? on_gap_word(value.get_ref<const std::string&>()) : std::nullopt;
      if (!fields.on_gap) error = kOnGapExpected;
    }
    if (error) return refuse(std::move(*error));
  }
  // A stopped parse read seven fields, and at most six were known and new.
  assert(!builder.stopped());
  ResumeParse result = finish(std::move(fields));
  if (result.request) result.request->token = std::move(token);
  return result;
}

// --- The query string ----------------------------------------------------------

namespace {

enum class Decoded { ok, bad_escape, nul };

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded: '+' is a space, %XY the byte 0xXY.
Decoded percent_decode(std::string_view text, std::string& out) {
  out.clear();
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (text.size() - i < 3) return Decoded::bad_escape;
      const int high = hex_value(text[i + 1]);
      const int low = hex_value(text[i + 2]);
      if (high < 0 || low < 0) return Decoded::bad_escape;
      c = static_cast<char>(high * 16 + low);
      i += 2;
    }
    if (c == '\0') return Decoded::nul;
    out.push_back(c);
  }
  return Decoded::ok;
}

std::optional<std::string> read_query_since(const std::string& value, KeyType key_type,
                                            Fields& fields) {
  if (auto word = since_word(value)) {
    fields.since = word;
    return std::nullopt;
  }
  switch (key_type) {
    case KeyType::integer: {
      int64_t integer = 0;
      switch (read_integer(value, integer)) {
        case NumberText::ok:
          break;
        case NumberText::malformed:
          return since_expected(key_type);
        case NumberText::out_of_range:
          return kIntegerRange;
      }
      fields.key = Key::from_integer(integer);
      break;
    }
    case KeyType::number: {
      double number = 0;
      switch (read_number(value, number)) {
        case NumberText::ok:
          break;
        case NumberText::malformed:
          return since_expected(key_type);
        case NumberText::out_of_range:
          return kNumberRange;
      }
      fields.key = Key::from_number(number);
      break;
    }
    case KeyType::rfc3339: {
      const auto nanos = parse_rfc3339_nanos(value);
      if (!nanos) return since_expected(key_type);
      fields.key = Key{*nanos, {}};
      break;
    }
    case KeyType::string:
      if (!is_utf8(value)) return "since: the string key is not valid UTF-8";
      fields.key = Key::from_string(value);
      break;
  }
  fields.since = ResumeRequest::From::key;
  return std::nullopt;
}

std::optional<std::string> read_query_feeds(std::string_view value, Fields& fields) {
  std::vector<std::string> names;
  if (!value.empty()) {
    for (size_t start = 0;;) {
      const size_t comma = value.find(',', start);
      names.emplace_back(value.substr(start, comma - start));
      if (comma == std::string_view::npos || names.size() > kMaxResumeFeeds) break;
      start = comma + 1;
    }
  }
  if (auto error = check_feeds(names)) return error;
  fields.feeds = std::move(names);
  return std::nullopt;
}

}  // namespace

ResumeParse parse_resume_query(std::string_view query, KeyType key_type) {
  if (query.size() > kMaxResumeLineBytes) {
    return refuse(fmt::format("query: over {} bytes", kMaxResumeLineBytes));
  }
  Fields fields;
  bool seen[std::size(kFieldNames)] = {};
  std::string name, value;
  for (size_t start = 0; start <= query.size();) {
    size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    const std::string_view parameter = query.substr(start, end - start);
    start = end + 1;
    if (parameter.empty()) continue;

    const size_t equals = parameter.find('=');
    switch (percent_decode(parameter.substr(0, equals), name)) {
      case Decoded::ok:
        break;
      case Decoded::bad_escape:
        return refuse("query: invalid percent escape in a parameter name");
      case Decoded::nul:
        return refuse("query: NUL byte in a parameter name");
    }
    const auto known = std::find(std::begin(kFieldNames), std::end(kFieldNames), name);
    if (known == std::end(kFieldNames)) return refuse(field_name(name) + ": unknown parameter");
    bool& given = seen[known - std::begin(kFieldNames)];
    if (given) return refuse(name + ": given twice");
    given = true;
    const std::string_view raw =
        equals == std::string_view::npos ? std::string_view() : parameter.substr(equals + 1);
    switch (percent_decode(raw, value)) {
      case Decoded::ok:
        break;
      case Decoded::bad_escape:
        return refuse(name + ": invalid percent escape");
      case Decoded::nul:
        return refuse(name + ": NUL byte");
    }

    std::optional<std::string> error;
    if (name == "after") {
      fields.after = read_event_id(value);
      if (!fields.after) {
        error = "after: expected R:N, a run id of 16 lowercase hex digits and an offset";
      }
    } else if (name == "since") {
      error = read_query_since(value, key_type, fields);
    } else if (name == "skip") {
      uint64_t skip = 0;
      const NumberText read = read_unsigned(value, skip);
      error = take_skip(read, skip, fields);
    } else if (name == "feeds") {
      error = read_query_feeds(value, fields);
    } else {  // on_gap
      fields.on_gap = on_gap_word(value);
      if (!fields.on_gap) error = kOnGapExpected;
    }
    if (error) return refuse(std::move(*error));
  }
  return finish(std::move(fields));
}

ResumeParse parse_event_id(std::string_view value) {
  auto after = read_event_id(value);
  if (!after) {
    return refuse("Last-Event-ID: expected R:N, a run id of 16 lowercase hex digits and an offset");
  }
  Fields fields;
  fields.after = std::move(after);
  return finish(std::move(fields));
}

std::string format_event_id(std::string_view run, uint64_t offset) {
  return fmt::format("{}:{}", run, offset);
}

}  // namespace chronomerge
