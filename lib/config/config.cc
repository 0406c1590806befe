#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "config/kafka_properties.h"
#include "record/json_depth.h"
#include "record/record_parser.h"

namespace chronomerge {

namespace {

// ordered_json keeps the members of an object in the order they were
// written, so problems can be reported in the order an operator reads them.
using Json = nlohmann::ordered_json;

constexpr uint64_t kMaxBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxIdleTimeoutMs = 86'400'000;  // one day
constexpr uint64_t kMaxDrainTimeoutMs = 3'600'000;  // one hour
constexpr uint64_t kMaxJitterMs = 3'600'000;        // one hour
constexpr uint64_t kMaxStallTimeoutMs = 86'400'000;
constexpr uint64_t kMaxHelloTimeoutMs = 3'600'000;
constexpr uint64_t kMaxRetentionBytes = uint64_t{1} << 40;
// One segment of the output log: below, a client could not even be one
// segment behind.
constexpr uint64_t kMinRetentionBytes = 64 << 10;
constexpr uint64_t kMaxRetentionMs = uint64_t{366} * 86'400'000;
constexpr size_t kMaxOriginBytes = 1024;
constexpr uint64_t kMinLineBytes = 64;
constexpr uint64_t kMaxClients = 100'000;
constexpr uint64_t kMaxMembers = 1'000'000;
constexpr uint64_t kMaxLingerMs = 86'400'000;
constexpr uint64_t kMaxVehicles = 100'000;
constexpr uint64_t kMaxKafkaPartition = 1'000'000;
constexpr double kMaxRate = 10'000'000;
constexpr size_t kMaxNameLength = 128;
// sizeof(sockaddr_un::sun_path) is 108 on Linux, one of which is the NUL.
constexpr size_t kMaxUnixPathBytes = 107;
// A configuration file is a few kilobytes; refusing absurd sizes keeps a
// wrong path (a log file, a device) from being slurped into memory.
constexpr size_t kMaxConfigFileBytes = 16 << 20;
// Arrays and objects inside each other. The deepest valid configuration is
// four levels deep (/feeds/0/command/0); the limit leaves room and keeps
// nlohmann's recursive copies and destructors far from the stack's end.
constexpr size_t kMaxNesting = 64;

constexpr std::string_view kDemoConfig = R"json({
  "key": "time",
  "key_type": "integer",
  "log_level": "info",
  "feeds": [
    {"name": "bus-101", "type": "simulate", "rate": 10, "jitter_ms": 50, "seed": 101},
    {"name": "bus-102", "type": "simulate", "rate": 5, "jitter_ms": 50, "seed": 102},
    {"name": "bus-103", "type": "simulate", "rate": 20, "jitter_ms": 50, "seed": 103}
  ],
  "outputs": [
    {"name": "clients", "type": "tcp-listen", "listen": "127.0.0.1:7070"},
    {"name": "web", "type": "http-listen", "listen": "127.0.0.1:7090"},
    {"name": "console", "type": "stdout"}
  ],
  "metrics": {"listen": "127.0.0.1:9464"}
}
)json";

// --- JSON pointers ---------------------------------------------------------

std::string escape_pointer_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (const char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string child(const std::string& pointer, std::string_view key) {
  return pointer + "/" + escape_pointer_token(key);
}

std::string child(const std::string& pointer, size_t index) {
  return pointer + "/" + std::to_string(index);
}

std::vector<std::string> split_pointer(std::string_view pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty() || pointer[0] != '/') return tokens;
  size_t start = 1;
  while (true) {
    const size_t end = pointer.find('/', start);
    const std::string_view raw = pointer.substr(start, end - start);
    std::string token;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~' && i + 1 < raw.size()) {
        token += raw[i + 1] == '1' ? '/' : '~';
        ++i;
      } else {
        token += raw[i];
      }
    }
    tokens.push_back(std::move(token));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return tokens;
}

// Where `pointer` appears in the document, as a sortable path of member and
// element indexes. A member that is missing sorts after its siblings, which
// is where an operator would add it.
std::vector<size_t> document_position(const Json& root, std::string_view pointer) {
  std::vector<size_t> position;
  const Json* node = &root;
  for (const std::string& token : split_pointer(pointer)) {
    if (node->is_object()) {
      size_t index = 0;
      const Json* next = nullptr;
      for (auto it = node->begin(); it != node->end(); ++it, ++index) {
        if (it.key() == token) {
          next = &it.value();
          break;
        }
      }
      position.push_back(index);
      if (next == nullptr) break;
      node = next;
    } else if (node->is_array()) {
      size_t index = node->size();
      const auto [end, error] = std::from_chars(token.data(), token.data() + token.size(), index);
      if (error != std::errc{} || end != token.data() + token.size()) index = node->size();
      position.push_back(index);
      if (index >= node->size()) break;
      node = &(*node)[index];
    } else {
      break;
    }
  }
  return position;
}

// --- Parsing with positions ------------------------------------------------

// Builds the document through nlohmann's SAX interface rather than
// Json::parse(), for two reasons: the SAX error callback receives the byte
// position for every error (Json::parse() throws a number overflow without
// one), and the builder sees duplicate member names, which the DOM parser
// silently collapses to the last value.
class DocumentBuilder {
 public:
  explicit DocumentBuilder(std::vector<ConfigProblem>& problems) : problems_(problems) {}

  bool null() { return add(Json(nullptr)) != nullptr; }
  bool boolean(bool value) { return add(Json(value)) != nullptr; }
  bool number_integer(Json::number_integer_t value) { return add(Json(value)) != nullptr; }
  bool number_unsigned(Json::number_unsigned_t value) { return add(Json(value)) != nullptr; }
  bool number_float(Json::number_float_t value, const Json::string_t& /*text*/) {
    return add(Json(value)) != nullptr;
  }
  bool string(Json::string_t& value) { return add(Json(std::move(value))) != nullptr; }
  bool binary(Json::binary_t& value) { return add(Json::binary(std::move(value))) != nullptr; }
  bool start_object(std::size_t /*size*/) { return open(Json::object()); }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*size*/) { return open(Json::array()); }
  bool end_array() { return close(); }

  bool key(Json::string_t& name) {
    Frame& frame = stack_.back();
    if (frame.node->contains(name)) {
      problems_.push_back({child(pointer(), name), "duplicate field; each field may appear once"});
    }
    frame.key = std::move(name);
    return true;
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const Json::exception& error) {
    error_position_ = position;
    error_message_ = error.what();
    return false;
  }

  Json& root() { return root_; }
  // The parse stopped at a container nested deeper than kMaxNesting.
  bool too_deep() const { return too_deep_; }
  size_t error_position() const { return error_position_; }
  const std::string& error_message() const { return error_message_; }

 private:
  struct Frame {
    Json* node;
    std::string segment;  // this container's token in its parent's pointer
    std::string key;      // objects: the member being read
  };

  std::string pointer() const {
    std::string out;
    for (size_t i = 1; i < stack_.size(); ++i) out += "/" + stack_[i].segment;
    return out;
  }

  // The slot for the next value: the root, the next array element, or the
  // member named by the last key (a duplicate overwrites in place).
  Json* add(Json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& frame = stack_.back();
    if (frame.node->is_array()) {
      frame.node->push_back(std::move(value));
      return &frame.node->back();
    }
    Json& slot = (*frame.node)[frame.key];
    slot = std::move(value);
    return &slot;
  }

  bool open(Json container) {
    // parse_config() has found the place already; this only keeps the
    // document from growing past it.
    if (stack_.size() >= kMaxNesting) {
      too_deep_ = true;
      return false;
    }
    std::string segment;
    if (!stack_.empty()) {
      const Frame& parent = stack_.back();
      segment = parent.node->is_array() ? std::to_string(parent.node->size())
                                        : escape_pointer_token(parent.key);
    }
    // Pointers into the parent stay valid: only the innermost open
    // container ever grows.
    Json* node = add(std::move(container));
    stack_.push_back({node, std::move(segment), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  std::vector<ConfigProblem>& problems_;
  Json root_;
  std::vector<Frame> stack_;
  bool too_deep_ = false;
  size_t error_position_ = 0;
  std::string error_message_;
};

// nlohmann reports the position as the 1-based count of characters read,
// end of input included. Turn it into the line and 1-based column of the
// character the parser stopped at.
std::string line_column(std::string_view text, size_t position) {
  const size_t offset = std::min(position > 0 ? position - 1 : 0, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return fmt::format("{}:{}", line, offset - line_start + 1);
}

// "[json.exception.parse_error.101] parse error at line 1, column 2: syntax
// error while parsing ..." -> "syntax error while parsing ...". The position
// in nlohmann's text is dropped because `where` already holds a better one.
std::string short_parse_message(std::string message) {
  if (message.starts_with("[json.exception.")) {
    const size_t bracket = message.find("] ");
    if (bracket != std::string::npos) message.erase(0, bracket + 2);
  }
  if (message.starts_with("parse error")) {
    const size_t colon = message.find(": ");
    if (colon != std::string::npos) message.erase(0, colon + 2);
  }
  constexpr size_t kMaxMessage = 200;
  if (message.size() > kMaxMessage) message = message.substr(0, kMaxMessage) + "...";
  return message;
}

// --- Values ----------------------------------------------------------------

// A short rendering of a value for "got ..." in messages.
std::string describe(const Json& value) {
  switch (value.type()) {
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::null:
      return "null";
    default: {
      std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
      if (text.size() > 60) text = text.substr(0, 57) + "...";
      return text;
    }
  }
}

template <typename T>
struct Choice {
  std::string_view name;
  T value;
};

constexpr Choice<KeyType> kKeyTypes[] = {{"integer", KeyType::integer},
                                         {"number", KeyType::number},
                                         {"rfc3339", KeyType::rfc3339},
                                         {"string", KeyType::string}};
constexpr Choice<MergeMode> kMergeModes[] = {{"interleave", MergeMode::interleave},
                                             {"combine", MergeMode::combine}};
constexpr Choice<LatePolicy> kLatePolicies[] = {
    {"emit", LatePolicy::emit}, {"drop", LatePolicy::drop}, {"deadletter", LatePolicy::deadletter}};
constexpr Choice<SlowClientPolicy> kSlowClientPolicies[] = {
    {"block", SlowClientPolicy::block}, {"disconnect", SlowClientPolicy::disconnect}};
constexpr Choice<WriteErrorPolicy> kWriteErrorPolicies[] = {{"block", WriteErrorPolicy::block},
                                                            {"skip", WriteErrorPolicy::skip}};
constexpr Choice<KeyUnit> kKeyUnits[] = {
    {"s", KeyUnit::s}, {"ms", KeyUnit::ms}, {"us", KeyUnit::us}, {"ns", KeyUnit::ns}};
constexpr Choice<LogFormat> kLogFormats[] = {{"text", LogFormat::text}, {"json", LogFormat::json}};
constexpr Choice<LogLevel> kLogLevels[] = {{"error", LogLevel::error},
                                           {"warn", LogLevel::warn},
                                           {"info", LogLevel::info},
                                           {"debug", LogLevel::debug}};
constexpr Choice<FeedType> kFeedTypes[] = {
    {"file", FeedType::file},
    {"stdin", FeedType::stdin_},
    {"tcp-listen", FeedType::tcp_listen},
    {"tcp-connect", FeedType::tcp_connect},
    {"unix-listen", FeedType::unix_listen},
    {"unix-connect", FeedType::unix_connect},
    {"exec", FeedType::exec},
    {"simulate", FeedType::simulate},
    {"kafka", FeedType::kafka},
};
constexpr Choice<KafkaConfig::Start> kKafkaStarts[] = {{"committed", KafkaConfig::Start::committed},
                                                       {"earliest", KafkaConfig::Start::earliest},
                                                       {"latest", KafkaConfig::Start::latest}};
constexpr Choice<OutputType> kOutputTypes[] = {
    {"stdout", OutputType::stdout_},          {"file", OutputType::file},
    {"tcp-listen", OutputType::tcp_listen},   {"unix-listen", OutputType::unix_listen},
    {"http-listen", OutputType::http_listen}, {"kafka", OutputType::kafka}};

template <typename T, size_t N>
std::optional<T> find_choice(const Choice<T> (&choices)[N], std::string_view name) {
  for (const auto& choice : choices) {
    if (choice.name == name) return choice.value;
  }
  return std::nullopt;
}

template <typename T, size_t N>
std::string_view choice_name(const Choice<T> (&choices)[N], T value) {
  for (const auto& choice : choices) {
    if (choice.value == value) return choice.name;
  }
  return "?";
}

template <typename T, size_t N>
std::string choice_list(const Choice<T> (&choices)[N]) {
  std::string out;
  for (const auto& choice : choices) {
    if (!out.empty()) out += ", ";
    out += fmt::format("\"{}\"", choice.name);
  }
  return out;
}

bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Addresses compared the way bind() would: by their binary form.
struct IpAddress {
  int family = 0;
  unsigned char bytes[16] = {};
  bool operator==(const IpAddress& other) const {
    return family == other.family && std::memcmp(bytes, other.bytes, sizeof bytes) == 0;
  }
};

std::optional<IpAddress> parse_ip(const std::string& host) {
  IpAddress address;
  if (inet_pton(AF_INET, host.c_str(), address.bytes) == 1) {
    address.family = AF_INET;
    return address;
  }
  if (inet_pton(AF_INET6, host.c_str(), address.bytes) == 1) {
    address.family = AF_INET6;
    return address;
  }
  return std::nullopt;
}

bool is_wildcard(const IpAddress& address) {
  const unsigned char zeros[16] = {};
  const size_t size = address.family == AF_INET ? 4 : 16;
  return std::memcmp(address.bytes, zeros, size) == 0;
}

// Whether two listeners would collide on bind(). Port 0 never collides (the
// kernel picks a free port). 0.0.0.0 takes the port for every IPv4 address;
// "::" takes it for everything, because libuv binds IPv6 sockets dual-stack.
bool addresses_collide(const HostPort& a, const HostPort& b) {
  if (a.port == 0 || a.port != b.port) return false;
  const auto ip_a = parse_ip(a.host);
  const auto ip_b = parse_ip(b.host);
  if (!ip_a || !ip_b) return a.host == b.host;
  if (*ip_a == *ip_b) return true;
  for (const auto& [any, other] : {std::pair{*ip_a, *ip_b}, std::pair{*ip_b, *ip_a}}) {
    if (!is_wildcard(any)) continue;
    if (any.family == AF_INET6 || other.family == AF_INET) return true;
  }
  return false;
}

// --- Validation ------------------------------------------------------------

// Walks a parsed document, filling a Config and collecting every problem.
// Each check reports at the JSON pointer of the value to change; the
// problems are sorted into document order at the end, so the checks can run
// in whatever order their dependencies need.
class Validator {
 public:
  explicit Validator(const Json& root) : root_(root) {}

  ConfigResult run(std::vector<ConfigProblem> problems);

 private:
  struct FeedEntry {
    std::string pointer;
    FeedConfig feed;
    std::optional<FeedType> type;  // nullopt when the type was invalid
  };
  struct OutputEntry {
    std::string pointer;
    OutputConfig output;
    std::optional<OutputType> type;
  };
  // A socket address or path the daemon would bind, or a file it writes.
  struct Claim {
    std::string pointer;
    std::optional<HostPort> address;
    std::string path;
  };

  void problem(std::string where, std::string message) {
    problems_.push_back({std::move(where), std::move(message)});
  }

  void read_top_level();
  bool check_list(const Json* list, const std::string& pointer, std::string_view noun);
  void read_feeds();
  void read_feed(const Json& value, const std::string& pointer);
  std::optional<FleetConfig> read_fleet(const Json& value, const std::string& pointer,
                                        FeedType type);
  // A list of SHA-256 hashes: 64 hex digits each, stored lowercase.
  std::optional<std::vector<std::string>> read_token_hashes(const Json& value,
                                                            const std::string& pointer);
  // `server`: a listener's TLS (certificate required); else a client's.
  std::optional<TlsConfig> read_tls(const Json& value, const std::string& pointer, bool server);
  void read_outputs();
  void read_output(const Json& value, const std::string& pointer);
  static KafkaConfig& kafka_of(std::optional<KafkaConfig>& kafka) {
    if (!kafka) kafka.emplace();
    return *kafka;
  }
  // One of the kafka fields of a feed (`feed`) or an output.
  void read_kafka_field(const std::string& name, const Json& value, const std::string& pointer,
                        bool feed, KafkaConfig& kafka);
  void read_kafka_properties(const Json& value, const std::string& pointer, bool feed,
                             KafkaConfig& kafka);
  std::optional<HeartbeatsConfig> read_heartbeats(const Json& value, const std::string& pointer);
  void read_socket_access(const std::string& name, const Json& value, const std::string& pointer,
                          SocketAccess& access);
  void read_deadletter(const Json& value, const std::string& pointer);
  void read_metrics(const Json& value, const std::string& pointer);
  void check_feed_against_globals(const FeedEntry& entry, const Json& value);
  void check_names_and_singletons();
  void check_listeners();
  void check_files();
  std::vector<size_t> position(std::string_view pointer) const {
    return document_position(root_, pointer);
  }
  bool before(std::string_view a, std::string_view b) const { return position(a) < position(b); }

  std::optional<std::string> read_string(const Json& value, const std::string& pointer);
  std::optional<std::string> read_nonempty_string(const Json& value, const std::string& pointer);
  std::optional<bool> read_bool(const Json& value, const std::string& pointer);
  std::optional<uint64_t> read_integer(const Json& value, const std::string& pointer, uint64_t min,
                                       uint64_t max);
  std::optional<double> read_number(const Json& value, const std::string& pointer);
  std::optional<double> read_max_lag(const Json& value, const std::string& pointer);
  std::optional<std::string> read_path(const Json& value, const std::string& pointer,
                                       size_t max_bytes);
  std::optional<HostPort> read_host_port(const Json& value, const std::string& pointer);
  std::optional<std::string> read_name(const Json& value, const std::string& pointer);
  template <typename T, size_t N>
  std::optional<T> read_choice(const Json& value, const std::string& pointer,
                               const Choice<T> (&choices)[N]);

  const Json& root_;
  std::vector<ConfigProblem> problems_;
  Config config_;
  bool key_type_valid_ = true;
  bool water_marks_valid_ = true;  // the global feed marks passed their checks
  bool has_deadletter_section_ = false;
  const Json* feeds_ = nullptr;
  const Json* outputs_ = nullptr;
  std::vector<FeedEntry> feed_entries_;
  std::vector<OutputEntry> output_entries_;
  std::vector<Claim> listeners_;
  std::vector<Claim> written_files_;
  // The first output with heartbeats: its pointer and field.
  std::optional<std::pair<std::string, std::string>> first_heartbeats_;
};

std::optional<std::string> Validator::read_string(const Json& value, const std::string& pointer) {
  if (!value.is_string()) {
    problem(pointer, fmt::format("expected a string, got {}", describe(value)));
    return std::nullopt;
  }
  return value.get<std::string>();
}

std::optional<std::string> Validator::read_nonempty_string(const Json& value,
                                                           const std::string& pointer) {
  auto text = read_string(value, pointer);
  if (text && text->empty()) {
    problem(pointer, "must not be empty");
    return std::nullopt;
  }
  return text;
}

std::optional<bool> Validator::read_bool(const Json& value, const std::string& pointer) {
  if (!value.is_boolean()) {
    problem(pointer, fmt::format("expected a boolean, got {}", describe(value)));
    return std::nullopt;
  }
  return value.get<bool>();
}

std::optional<uint64_t> Validator::read_integer(const Json& value, const std::string& pointer,
                                                uint64_t min, uint64_t max) {
  const auto out_of_range = [&] {
    if (max == std::numeric_limits<uint64_t>::max()) {
      problem(pointer, fmt::format("must be at least {}", min));
    } else {
      problem(pointer, fmt::format("must be between {} and {}", min, max));
    }
    return std::nullopt;
  };
  uint64_t result = 0;
  if (value.is_number_unsigned()) {
    result = value.get<uint64_t>();
  } else if (value.is_number_integer()) {
    // Signed only when negative: nlohmann stores non-negatives as unsigned.
    if (value.get<int64_t>() < 0) return out_of_range();
    result = static_cast<uint64_t>(value.get<int64_t>());
  } else if (value.is_number_float()) {
    // 1e6 or 5.0 are integers written as floats; 1.5 is not an integer.
    const double number = value.get<double>();
    if (!std::isfinite(number) || number != std::trunc(number)) {
      problem(pointer, fmt::format("expected an integer, got {}", describe(value)));
      return std::nullopt;
    }
    if (number < 0 || number >= 18446744073709551616.0) return out_of_range();
    result = static_cast<uint64_t>(number);
  } else {
    problem(pointer, fmt::format("expected an integer, got {}", describe(value)));
    return std::nullopt;
  }
  if (result < min || result > max) return out_of_range();
  return result;
}

std::optional<double> Validator::read_number(const Json& value, const std::string& pointer) {
  if (!value.is_number()) {
    problem(pointer, fmt::format("expected a number, got {}", describe(value)));
    return std::nullopt;
  }
  const double number = value.get<double>();
  if (!std::isfinite(number)) {
    problem(pointer, "must be a finite number");
    return std::nullopt;
  }
  return number;
}

std::optional<std::string> Validator::read_path(const Json& value, const std::string& pointer,
                                                size_t max_bytes) {
  auto path = read_nonempty_string(value, pointer);
  if (!path) return std::nullopt;
  if (path->find('\0') != std::string::npos) {
    problem(pointer, "must not contain a NUL character");
    return std::nullopt;
  }
  if (path->size() > max_bytes) {
    problem(pointer, fmt::format("must be at most {} bytes (the sun_path limit), got {}", max_bytes,
                                 path->size()));
    return std::nullopt;
  }
  return path;
}

std::optional<HostPort> Validator::read_host_port(const Json& value, const std::string& pointer) {
  const auto text = read_string(value, pointer);
  if (!text) return std::nullopt;
  auto address = parse_host_port(*text);
  if (!address) {
    problem(pointer, fmt::format("expected \"host:port\", got {}", describe(value)));
  }
  return address;
}

std::optional<std::string> Validator::read_name(const Json& value, const std::string& pointer) {
  auto name = read_nonempty_string(value, pointer);
  if (!name) return std::nullopt;
  if (!std::all_of(name->begin(), name->end(), is_name_char)) {
    problem(pointer, fmt::format("may contain only letters, digits, '_', '.' and '-', got {}",
                                 describe(value)));
    return std::nullopt;
  }
  if (name->size() > kMaxNameLength) {
    problem(pointer, fmt::format("must be at most {} characters", kMaxNameLength));
    return std::nullopt;
  }
  return name;
}

template <typename T, size_t N>
std::optional<T> Validator::read_choice(const Json& value, const std::string& pointer,
                                        const Choice<T> (&choices)[N]) {
  if (value.is_string()) {
    if (auto choice = find_choice(choices, value.get<std::string>())) return choice;
  }
  problem(pointer,
          fmt::format("expected one of {}, got {}", choice_list(choices), describe(value)));
  return std::nullopt;
}

void Validator::read_top_level() {
  for (auto it = root_.begin(); it != root_.end(); ++it) {
    const std::string& name = it.key();
    const Json& value = it.value();
    const std::string pointer = child("", name);
    if (name == "key") {
      if (auto key = read_nonempty_string(value, pointer)) {
        if (key->front() == '/') {
          try {
            (void)Json::json_pointer(*key);
            config_.key = *key;
          } catch (const Json::exception&) {
            problem(pointer, fmt::format("is not a valid JSON pointer: {}", describe(value)));
          }
        } else {
          config_.key = *key;
        }
      }
    } else if (name == "key_type") {
      const auto type = read_choice(value, pointer, kKeyTypes);
      key_type_valid_ = type.has_value();
      if (type) config_.key_type = *type;
    } else if (name == "mode") {
      if (auto mode = read_choice(value, pointer, kMergeModes)) config_.mode = *mode;
    } else if (name == "late") {
      if (auto late = read_choice(value, pointer, kLatePolicies)) config_.late = *late;
    } else if (name == "idle_timeout_ms") {
      if (auto ms = read_integer(value, pointer, 1, kMaxIdleTimeoutMs))
        config_.idle_timeout_ms = *ms;
    } else if (name == "max_line_bytes") {
      if (auto bytes = read_integer(value, pointer, kMinLineBytes, kMaxBytes)) {
        config_.max_line_bytes = *bytes;
      }
    } else if (name == "feed_high_water_mark") {
      const auto bytes = read_integer(value, pointer, 1, kMaxBytes);
      if (bytes) config_.feed_high_water_mark = *bytes;
      water_marks_valid_ = water_marks_valid_ && bytes.has_value();
    } else if (name == "feed_low_water_mark") {
      const auto bytes = read_integer(value, pointer, 1, kMaxBytes);
      if (bytes) config_.feed_low_water_mark = *bytes;
      water_marks_valid_ = water_marks_valid_ && bytes.has_value();
    } else if (name == "output_high_water_mark") {
      if (auto bytes = read_integer(value, pointer, 1, kMaxBytes)) {
        config_.output_high_water_mark = *bytes;
      }
    } else if (name == "retention_bytes") {
      if (auto bytes = read_integer(value, pointer, kMinRetentionBytes, kMaxRetentionBytes)) {
        config_.retention_bytes = *bytes;
      }
    } else if (name == "retention_ms") {
      if (auto ms = read_integer(value, pointer, 1, kMaxRetentionMs)) config_.retention_ms = *ms;
    } else if (name == "drain_timeout_ms") {
      if (auto ms = read_integer(value, pointer, 0, kMaxDrainTimeoutMs)) {
        config_.drain_timeout_ms = *ms;
      }
    } else if (name == "max_lag") {
      config_.max_lag = read_max_lag(value, pointer);
    } else if (name == "log_level") {
      if (auto level = read_choice(value, pointer, kLogLevels)) config_.log_level = *level;
    } else if (name == "key_unit") {
      if (auto unit = read_choice(value, pointer, kKeyUnits)) {
        if (key_type_valid_ && config_.key_type != KeyType::integer &&
            config_.key_type != KeyType::number) {
          problem(pointer, fmt::format("only for key_type \"integer\" or \"number\" ({} keys {})",
                                       to_string(config_.key_type),
                                       config_.key_type == KeyType::rfc3339 ? "are times already"
                                                                            : "are not times"));
        } else {
          config_.key_unit = *unit;
        }
      }
    } else if (name == "log_format") {
      if (auto format = read_choice(value, pointer, kLogFormats)) config_.log_format = *format;
    } else if (name == "feeds") {
      feeds_ = &value;
    } else if (name == "outputs") {
      outputs_ = &value;
    } else if (name == "deadletter") {
      has_deadletter_section_ = true;
      read_deadletter(value, pointer);
    } else if (name == "metrics") {
      read_metrics(value, pointer);
    } else {
      problem(pointer, "unknown field");
    }
  }

  // Both marks are checked once all top-level fields are read, whatever
  // their order in the file; a mark that failed its own check is reported
  // already and not compared.
  if (!water_marks_valid_ || config_.feed_low_water_mark < config_.feed_high_water_mark) {
    // Ordered.
  } else if (root_.contains("feed_low_water_mark")) {
    problem("/feed_low_water_mark", fmt::format("must be less than feed_high_water_mark ({})",
                                                config_.feed_high_water_mark));
  } else {
    problem("/feed_high_water_mark", fmt::format("must be greater than feed_low_water_mark ({})",
                                                 config_.feed_low_water_mark));
  }
  if (config_.late == LatePolicy::deadletter && !has_deadletter_section_) {
    problem("/late", "\"deadletter\" requires a deadletter section ({\"path\": ...})");
  }
}

// max_lag: a distance in key units, so string keys (which have none) may
// not use it. Top-level fields are read in document order, so the key type
// is looked up in the document rather than in what was read so far.
std::optional<double> Validator::read_max_lag(const Json& value, const std::string& pointer) {
  auto lag = read_number(value, pointer);
  if (!lag) return std::nullopt;
  const Json* type = root_.contains("key_type") ? &root_["key_type"] : nullptr;
  if (*lag <= 0) {
    problem(pointer, "must be greater than 0 (leave it out to turn it off)");
  } else if (type && type->is_string() && type->get<std::string>() == "string") {
    problem(pointer, "not allowed with key_type \"string\" (string keys have no distance)");
  } else {
    return lag;
  }
  return std::nullopt;
}

void Validator::read_deadletter(const Json& value, const std::string& pointer) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return;
  }
  DeadletterConfig deadletter;
  bool valid = true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    if (it.key() == "path") {
      auto path = read_path(it.value(), field, std::numeric_limits<size_t>::max());
      valid = valid && path.has_value();
      if (path) {
        deadletter.path = *path;
        written_files_.push_back({field, std::nullopt, *path});
      }
    } else if (it.key() == "max_buffer") {
      auto bytes = read_integer(it.value(), field, 1, kMaxBytes);
      valid = valid && bytes.has_value();
      if (bytes) deadletter.max_buffer = *bytes;
    } else {
      problem(field, "unknown field");
    }
  }
  if (!value.contains("path")) {
    problem(child(pointer, "path"), "required");
    valid = false;
  }
  if (valid) config_.deadletter = deadletter;
}

void Validator::read_metrics(const Json& value, const std::string& pointer) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return;
  }
  std::optional<HostPort> address;
  std::optional<TlsConfig> tls;
  std::vector<std::string> tokens;
  bool tail = false;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    if (it.key() == "tail") {
      if (auto on = read_bool(it.value(), field)) tail = *on;
    } else if (it.key() == "listen") {
      address = read_host_port(it.value(), field);
      if (address) listeners_.push_back({field, address, {}});
    } else if (it.key() == "tls") {
      tls = read_tls(it.value(), field, true);
    } else if (it.key() == "tokens_sha256") {
      if (auto hashes = read_token_hashes(it.value(), field)) tokens = *hashes;
    } else {
      problem(field, "unknown field");
    }
  }
  if (!value.contains("listen")) problem(child(pointer, "listen"), "required");
  if (!tokens.empty() && !value.contains("tls")) {
    problem(child(pointer, "tokens_sha256"),
            "needs \"tls\" (a token must not cross the network in clear)");
  }
  if (address) config_.metrics = MetricsConfig{*address, tls, tokens, tail};
}

// The fields only some feed types take, and which types take them.
bool feed_field_applies(std::string_view field, FeedType type) {
  using enum FeedType;
  if (field == "path") return type == file || type == unix_listen || type == unix_connect;
  if (field == "follow") return type == file;
  if (field == "mode") return type == unix_listen;
  // "group": a unix-listen socket's group, or a kafka feed's consumer group.
  if (field == "group") return type == unix_listen || type == kafka;
  if (field == "listen") return type == tcp_listen;
  if (field == "fleet") return type == tcp_listen || type == unix_listen;
  if (field == "tls") return type == tcp_listen || type == tcp_connect;
  if (field == "connect") return type == tcp_connect;
  if (field == "command" || field == "restart") return type == exec;
  if (field == "rate" || field == "jitter_ms" || field == "seed" || field == "count" ||
      field == "vehicles") {
    return type == simulate;
  }
  if (field == "brokers" || field == "topic" || field == "partitions" || field == "start" ||
      field == "group" || field == "properties") {
    return type == kafka;
  }
  return false;
}

bool is_type_specific_feed_field(std::string_view field) {
  for (const auto& type : kFeedTypes) {
    if (feed_field_applies(field, type.value)) return true;
  }
  return false;
}

// `feeds` and `outputs`: required, arrays, and not empty.
bool Validator::check_list(const Json* list, const std::string& pointer, std::string_view noun) {
  if (list == nullptr) {
    problem(pointer, fmt::format("required: at least one {}", noun));
  } else if (!list->is_array()) {
    problem(pointer, fmt::format("expected an array, got {}", describe(*list)));
  } else if (list->empty()) {
    problem(pointer, fmt::format("must not be empty: at least one {}", noun));
  } else {
    return true;
  }
  return false;
}

void Validator::read_feeds() {
  if (!check_list(feeds_, "/feeds", "feed")) return;
  for (size_t i = 0; i < feeds_->size(); ++i) read_feed((*feeds_)[i], child("/feeds", i));
}

void Validator::read_feed(const Json& value, const std::string& pointer) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return;
  }
  FeedEntry entry{pointer, {}, std::nullopt};
  FeedConfig& feed = entry.feed;
  if (value.contains("type"))
    entry.type = read_choice(value["type"], child(pointer, "type"), kFeedTypes);
  if (entry.type) feed.type = *entry.type;

  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string& name = it.key();
    const Json& field_value = it.value();
    const std::string field = child(pointer, name);
    if (name == "type") {
      // Read above: the type decides which other fields are allowed.
    } else if (name == "name") {
      if (auto text = read_name(field_value, field)) feed.name = *text;
    } else if (name == "high_water_mark") {
      feed.high_water_mark = read_integer(field_value, field, 1, kMaxBytes);
    } else if (name == "low_water_mark") {
      feed.low_water_mark = read_integer(field_value, field, 1, kMaxBytes);
    } else if (name == "idle_timeout_ms") {
      feed.idle_timeout_ms = read_integer(field_value, field, 1, kMaxIdleTimeoutMs);
    } else if (name == "max_line_bytes") {
      feed.max_line_bytes = read_integer(field_value, field, kMinLineBytes, kMaxBytes);
    } else if (name == "heartbeat_field") {
      if (auto text = read_nonempty_string(field_value, field)) {
        if (*text == config_.key || "/" + escape_pointer_token(*text) == config_.key) {
          problem(field, fmt::format("must differ from the key field \"{}\"", config_.key));
        } else {
          feed.heartbeat_field = *text;
        }
      }
    } else if (name == "max_lag") {
      feed.max_lag = read_max_lag(field_value, field);
    } else if (name == "late") {
      if (auto late = read_choice(field_value, field, kLatePolicies)) {
        if (*late == LatePolicy::deadletter && !root_.contains("deadletter")) {
          problem(field, "\"deadletter\" requires a deadletter section ({\"path\": ...})");
        } else {
          feed.late = *late;
        }
      }
    } else if (name == "reorder_window") {
      if (auto window = read_number(field_value, field)) {
        if (*window < 0) {
          problem(field, "must be at least 0");
        } else if (key_type_valid_ && config_.key_type == KeyType::string) {
          problem(field, "not allowed with key_type \"string\" (string keys have no distance)");
        } else {
          feed.reorder_window = *window;
        }
      }
    } else if (!is_type_specific_feed_field(name)) {
      problem(field, "unknown field");
    } else if (!entry.type) {
      // The type is missing or invalid, and that is reported already; which
      // type-specific fields belong is unknowable, so they are not judged.
    } else if (!feed_field_applies(name, *entry.type)) {
      problem(field, fmt::format("unknown field for type \"{}\"", to_string(*entry.type)));
    } else if (name == "path") {
      const bool is_unix = feed.type != FeedType::file;
      if (auto path = read_path(field_value, field,
                                is_unix ? kMaxUnixPathBytes : std::numeric_limits<size_t>::max())) {
        feed.path = *path;
        if (feed.type == FeedType::unix_listen) listeners_.push_back({field, std::nullopt, *path});
      }
    } else if (name == "follow") {
      if (auto follow = read_bool(field_value, field)) feed.follow = *follow;
    } else if ((name == "mode" || name == "group") && *entry.type == FeedType::unix_listen) {
      read_socket_access(name, field_value, field, feed.socket);
    } else if (name == "fleet") {
      feed.fleet = read_fleet(field_value, field, *entry.type);
    } else if (name == "tls") {
      feed.tls = read_tls(field_value, field, *entry.type == FeedType::tcp_listen);
    } else if (name == "listen") {
      if (auto address = read_host_port(field_value, field)) {
        feed.address = *address;
        listeners_.push_back({field, address, {}});
      }
    } else if (name == "connect") {
      if (auto address = read_host_port(field_value, field)) {
        if (address->port == 0) {
          problem(field, "port must not be 0: a connect address names the peer's port");
        } else {
          feed.address = *address;
        }
      }
    } else if (name == "command") {
      if (!field_value.is_array()) {
        problem(field, fmt::format("expected an array of strings, got {}", describe(field_value)));
      } else if (field_value.empty()) {
        problem(field, "must not be empty: the first element is the program");
      } else {
        for (size_t i = 0; i < field_value.size(); ++i) {
          const std::string element = child(field, i);
          auto arg = i == 0 ? read_nonempty_string(field_value[i], element)
                            : read_string(field_value[i], element);
          if (arg && arg->find('\0') != std::string::npos) {
            problem(element, "must not contain a NUL character");
          } else if (arg) {
            feed.command.push_back(*arg);
          }
        }
      }
    } else if (name == "restart") {
      const auto text = read_string(field_value, field);
      if (text && *text != "never" && *text != "on-exit") {
        problem(field,
                fmt::format("expected \"never\" or \"on-exit\", got {}", describe(field_value)));
      } else if (text) {
        feed.restart_on_exit = *text == "on-exit";
      }
    } else if (name == "rate") {
      if (auto rate = read_number(field_value, field)) {
        if (*rate <= 0 || *rate > kMaxRate) {
          problem(field, fmt::format("must be greater than 0 and at most {}", kMaxRate));
        } else {
          feed.rate = *rate;
        }
      }
    } else if (name == "jitter_ms") {
      if (auto ms = read_integer(field_value, field, 0, kMaxJitterMs)) {
        feed.jitter_ms = static_cast<uint32_t>(*ms);
      }
    } else if (name == "seed") {
      if (auto seed = read_integer(field_value, field, 0, std::numeric_limits<uint64_t>::max())) {
        feed.seed = *seed;
      }
    } else if (name == "count") {
      feed.count = read_integer(field_value, field, 0, std::numeric_limits<uint64_t>::max());
    } else if (name == "vehicles") {
      if (auto vehicles = read_integer(field_value, field, 1, kMaxVehicles)) {
        feed.vehicles = static_cast<uint32_t>(*vehicles);
      }
    } else {
      read_kafka_field(name, field_value, field, true, kafka_of(feed.kafka));
    }
  }

  if (!value.contains("name")) problem(child(pointer, "name"), "required");
  if (!value.contains("type")) problem(child(pointer, "type"), "required");
  if (entry.type) {
    const auto require = [&](std::string_view field) {
      if (!value.contains(field)) {
        problem(child(pointer, field),
                fmt::format("required for type \"{}\"", to_string(*entry.type)));
      }
    };
    switch (*entry.type) {
      case FeedType::file:
      case FeedType::unix_listen:
      case FeedType::unix_connect:
        require("path");
        break;
      case FeedType::tcp_listen:
        require("listen");
        break;
      case FeedType::tcp_connect:
        require("connect");
        break;
      case FeedType::exec:
        require("command");
        break;
      case FeedType::kafka:
        require("brokers");
        require("topic");
        require("partitions");
        if (feed.kafka && feed.kafka->group.empty()) feed.kafka->group = feed.name;
        break;
      case FeedType::stdin_:
      case FeedType::simulate:
        break;
    }
  }
  if (feed.fleet &&
      (feed.fleet->name_from == FleetConfig::NameFrom::cert_cn ||
       feed.fleet->name_from == FleetConfig::NameFrom::cert_san) &&
      !(feed.tls && feed.tls->client_auth == TlsConfig::ClientAuth::require)) {
    problem(child(child(pointer, "fleet"), "name_from"),
            fmt::format(
                "\"{}\" needs \"tls\" with \"client_auth\": \"require\" (a verified "
                "certificate to take the name from)",
                feed.fleet->name_from == FleetConfig::NameFrom::cert_cn ? "cert_cn" : "cert_san"));
  }
  if (feed.fleet && !feed.fleet->tokens_sha256.empty() && !feed.tls) {
    problem(child(child(pointer, "fleet"), "tokens_sha256"),
            "needs \"tls\" (a token must not cross the network in clear)");
  }
  check_feed_against_globals(entry, value);
  feed_entries_.push_back(std::move(entry));
}

std::optional<std::vector<std::string>> Validator::read_token_hashes(const Json& value,
                                                                     const std::string& pointer) {
  if (!value.is_array() || value.empty()) {
    problem(pointer, fmt::format("expected a non-empty array of SHA-256 hashes (64 hex digits; "
                                 "`printf %s TOKEN | sha256sum`), got {}",
                                 describe(value)));
    return std::nullopt;
  }
  std::vector<std::string> hashes;
  bool valid = true;
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& item = value[i];
    const bool hex = item.is_string() && item.get_ref<const std::string&>().size() == 64 &&
                     std::all_of(item.get_ref<const std::string&>().begin(),
                                 item.get_ref<const std::string&>().end(), [](char c) {
                                   return std::isxdigit(static_cast<unsigned char>(c));
                                 });
    if (!hex) {
      problem(child(pointer, i),
              "expected a SHA-256 hash of 64 hex digits (never the token itself)");
      valid = false;
      continue;
    }
    std::string hash = item.get<std::string>();
    std::transform(hash.begin(), hash.end(), hash.begin(), [](char c) {
      return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    });
    hashes.push_back(std::move(hash));
  }
  if (!valid) return std::nullopt;
  return hashes;
}

// TLS options. Only what is structurally wrong is found here; whether the
// files load (and the key matches its certificate) is checked by the io
// layer (check_tls_files()), which opens them.
std::optional<TlsConfig> Validator::read_tls(const Json& value, const std::string& pointer,
                                             bool server) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return std::nullopt;
  }
  TlsConfig tls;
  bool valid = true;
  const auto check = [&](auto result) {
    valid = valid && result.has_value();
    return result;
  };
  const auto server_only = [&](const std::string& field) {
    if (server) return true;
    problem(field, "only for a listener's TLS (a tcp-connect feed is the client)");
    valid = false;
    return false;
  };
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    const Json& v = it.value();
    const std::string& name = it.key();
    if (name == "cert" || name == "key" || name == "ca" || name == "crl") {
      auto path = check(read_path(v, field, std::numeric_limits<size_t>::max()));
      if (!path) continue;
      (name == "cert"  ? tls.cert
       : name == "key" ? tls.key
       : name == "ca"  ? tls.ca
                       : tls.crl) = *path;
    } else if (name == "client_auth") {
      if (!server_only(field)) continue;
      auto text = check(read_string(v, field));
      if (!text) continue;
      if (*text == "none") {
        tls.client_auth = TlsConfig::ClientAuth::none;
      } else if (*text == "request") {
        tls.client_auth = TlsConfig::ClientAuth::request;
      } else if (*text == "require") {
        tls.client_auth = TlsConfig::ClientAuth::require;
      } else {
        problem(field, fmt::format("expected one of \"none\", \"request\", \"require\", got {}",
                                   describe(v)));
        valid = false;
      }
    } else if (name == "min_version") {
      auto text = check(read_string(v, field));
      if (!text) continue;
      if (*text == "1.2" || *text == "1.3") {
        tls.tls13_only = *text == "1.3";
      } else {
        problem(field, fmt::format("expected \"1.2\" or \"1.3\", got {}", describe(v)));
        valid = false;
      }
    } else if (name == "ciphers") {
      if (auto text = check(read_nonempty_string(v, field))) tls.ciphers = *text;
    } else if (name == "handshake_timeout_ms") {
      if (!server_only(field)) continue;
      if (auto n = check(read_integer(v, field, 1, kMaxHelloTimeoutMs))) {
        tls.handshake_timeout_ms = *n;
      }
    } else if (name == "max_handshakes") {
      if (!server_only(field)) continue;
      if (auto n = check(read_integer(v, field, 1, kMaxClients))) {
        tls.max_handshakes = static_cast<uint32_t>(*n);
      }
    } else if (name == "server_name") {
      if (server) {
        problem(field, "only for a tcp-connect feed's TLS (the name it expects of the server)");
        valid = false;
        continue;
      }
      if (auto text = check(read_nonempty_string(v, field))) tls.server_name = *text;
    } else {
      problem(field, "unknown field");
      valid = false;
    }
  }
  if (server && !value.contains("cert")) {
    problem(child(pointer, "cert"), "required for a listener (the certificate it presents)");
    valid = false;
  }
  if (value.contains("cert") != value.contains("key")) {
    problem(child(pointer, value.contains("cert") ? "key" : "cert"),
            "\"cert\" and \"key\" go together");
    valid = false;
  }
  if (value.contains("crl") && !value.contains("ca")) {
    problem(child(pointer, "crl"), "needs \"ca\" (the CA whose revocations it lists)");
    valid = false;
  }
  if (tls.client_auth != TlsConfig::ClientAuth::none && !value.contains("ca")) {
    problem(child(pointer, "ca"),
            "required with client_auth \"request\" or \"require\" (the CA "
            "that signs client certificates)");
    valid = false;
  }
  if (!valid) return std::nullopt;
  return tls;
}

// A fleet's options. Its members are named by a hello line, a JSON pointer
// into their first record, or their peer's address.
std::optional<FleetConfig> Validator::read_fleet(const Json& value, const std::string& pointer,
                                                 FeedType type) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return std::nullopt;
  }
  FleetConfig fleet;
  bool valid = true;
  const auto check = [&](auto result) {
    valid = valid && result.has_value();
    return result;
  };
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    const Json& v = it.value();
    if (it.key() == "name_from") {
      auto text = check(read_nonempty_string(v, field));
      if (!text) continue;
      if (*text == "hello") {
        fleet.name_from = FleetConfig::NameFrom::hello;
      } else if (*text == "cert_cn") {
        fleet.name_from = FleetConfig::NameFrom::cert_cn;
      } else if (*text == "cert_san") {
        fleet.name_from = FleetConfig::NameFrom::cert_san;
      } else if (*text == "peer") {
        if (type != FeedType::tcp_listen) {
          problem(field, "\"peer\" needs a tcp-listen feed (a Unix socket's peer has no address)");
          valid = false;
        }
        fleet.name_from = FleetConfig::NameFrom::peer;
      } else if (text->front() == '/' && RecordParser::valid_key_path(*text)) {
        fleet.name_from = FleetConfig::NameFrom::pointer;
        fleet.name_pointer = *text;
      } else {
        problem(field, fmt::format("expected \"hello\", \"peer\", \"cert_cn\", \"cert_san\" or "
                                   "a JSON pointer such as \"/vehicle\", got {}",
                                   describe(v)));
        valid = false;
      }
    } else if (it.key() == "ack") {
      if (auto ack = check(read_bool(v, field))) fleet.ack = *ack;
    } else if (it.key() == "max_members") {
      if (auto n = check(read_integer(v, field, 1, kMaxMembers))) fleet.max_members = *n;
    } else if (it.key() == "max_bytes") {
      if (auto n = check(read_integer(v, field, 1024, uint64_t{1} << 40))) fleet.max_bytes = *n;
    } else if (it.key() == "hello_timeout_ms") {
      if (auto n = check(read_integer(v, field, 1, kMaxHelloTimeoutMs))) {
        fleet.hello_timeout_ms = *n;
      }
    } else if (it.key() == "linger_ms") {
      if (auto n = check(read_integer(v, field, 0, kMaxLingerMs))) fleet.linger_ms = *n;
    } else if (it.key() == "member_metrics") {
      if (auto on = check(read_bool(v, field))) fleet.member_metrics = *on;
    } else if (it.key() == "tokens_sha256") {
      if (auto hashes = check(read_token_hashes(v, field))) fleet.tokens_sha256 = *hashes;
    } else {
      problem(field, "unknown field");
      valid = false;
    }
  }
  if (!fleet.tokens_sha256.empty() && fleet.name_from != FleetConfig::NameFrom::hello) {
    problem(child(pointer, "tokens_sha256"),
            "needs \"name_from\": \"hello\" (the token comes with the hello)");
    valid = false;
  }
  if (fleet.ack && fleet.name_from != FleetConfig::NameFrom::hello) {
    problem(child(pointer, "ack"), "needs \"name_from\": \"hello\" (the answer follows the hello)");
    valid = false;
  }
  if (config_.mode == MergeMode::combine) {
    problem(pointer,
            "not allowed with mode \"combine\" (its indexes name configured feeds; members have "
            "none)");
    valid = false;
  }
  if (!valid) return std::nullopt;
  return fleet;
}

// The per-feed water marks override the global ones one at a time, so the
// pair that must be ordered is the effective one. The problem goes to the
// feed's own value, because that is what the operator wrote for this feed.
void Validator::check_feed_against_globals(const FeedEntry& entry, const Json& value) {
  const FeedConfig& feed = entry.feed;
  // A per-feed mark that failed its own check is already reported.
  if ((value.contains("high_water_mark") && !feed.high_water_mark) ||
      (value.contains("low_water_mark") && !feed.low_water_mark)) {
    return;
  }
  if (!feed.high_water_mark && !feed.low_water_mark) return;
  // Against globals that failed their own checks, only a feed that sets
  // both marks can be judged.
  if (!water_marks_valid_ && !feed.fleet && !(feed.high_water_mark && feed.low_water_mark)) return;
  // A fleet's members have marks of their own, not the globals.
  const size_t high = feed.high_water_mark.value_or(feed.fleet ? default_member_high_water_mark
                                                               : config_.feed_high_water_mark);
  const size_t low = feed.low_water_mark.value_or(feed.fleet ? default_member_low_water_mark
                                                             : config_.feed_low_water_mark);
  if (low < high) return;
  if (feed.low_water_mark) {
    problem(child(entry.pointer, "low_water_mark"),
            fmt::format("must be less than the feed's high water mark ({})", high));
  } else {
    problem(
        child(entry.pointer, "high_water_mark"),
        fmt::format("must be greater than {} ({})",
                    feed.fleet ? "a fleet member's low water mark" : "feed_low_water_mark", low));
  }
}

bool output_field_applies(std::string_view field, OutputType type) {
  using enum OutputType;
  const bool server = type == tcp_listen || type == unix_listen || type == http_listen;
  if (field == "path") return type == file || type == unix_listen;
  if (field == "listen") return type == tcp_listen || type == http_listen;
  // A file or stdout sink is never dropped: it always blocks the merge.
  if (field == "max_clients" || field == "slow_client" || field == "stall_timeout_ms") {
    return server;
  }
  if (field == "resume" || field == "hello_timeout_ms") {
    return type == tcp_listen || type == unix_listen;
  }
  if (field == "allow_origin") return type == http_listen;
  if (field == "tls" || field == "tokens_sha256") return type == tcp_listen || type == http_listen;
  if (field == "on_error" || field == "sync") return type == file;
  if (field == "mode" || field == "group") return type == unix_listen;
  if (field == "brokers" || field == "topic" || field == "partition" || field == "key" ||
      field == "properties") {
    return type == kafka;
  }
  return false;
}

bool is_type_specific_output_field(std::string_view field) {
  for (const auto& type : kOutputTypes) {
    if (output_field_applies(field, type.value)) return true;
  }
  return false;
}

void Validator::read_outputs() {
  if (!check_list(outputs_, "/outputs", "output")) return;
  for (size_t i = 0; i < outputs_->size(); ++i) read_output((*outputs_)[i], child("/outputs", i));
}

void Validator::read_output(const Json& value, const std::string& pointer) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object, got {}", describe(value)));
    return;
  }
  OutputEntry entry{pointer, {}, std::nullopt};
  OutputConfig& output = entry.output;
  if (value.contains("type")) {
    entry.type = read_choice(value["type"], child(pointer, "type"), kOutputTypes);
  }
  if (entry.type) output.type = *entry.type;

  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string& name = it.key();
    const Json& field_value = it.value();
    const std::string field = child(pointer, name);
    if (name == "type") {
      // Read above.
    } else if (name == "name") {
      if (auto text = read_name(field_value, field)) output.name = *text;
    } else if (name == "max_buffer") {
      if (auto bytes = read_integer(field_value, field, 1, kMaxRetentionBytes)) {
        output.max_buffer = *bytes;
      }
    } else if (name == "heartbeats") {
      output.heartbeats = read_heartbeats(field_value, field);
    } else if (!is_type_specific_output_field(name)) {
      problem(field, "unknown field");
    } else if (!entry.type) {
      // See read_feed().
    } else if (!output_field_applies(name, *entry.type)) {
      problem(field, fmt::format("unknown field for type \"{}\"", to_string(*entry.type)));
    } else if (name == "path") {
      const bool is_unix = output.type == OutputType::unix_listen;
      if (auto path = read_path(field_value, field,
                                is_unix ? kMaxUnixPathBytes : std::numeric_limits<size_t>::max())) {
        output.path = *path;
        if (is_unix) {
          listeners_.push_back({field, std::nullopt, *path});
        } else {
          written_files_.push_back({field, std::nullopt, *path});
        }
      }
    } else if (name == "listen") {
      if (auto address = read_host_port(field_value, field)) {
        output.address = *address;
        listeners_.push_back({field, address, {}});
      }
    } else if (name == "max_clients") {
      if (auto clients = read_integer(field_value, field, 1, kMaxClients)) {
        output.max_clients = static_cast<uint32_t>(*clients);
      }
    } else if (name == "slow_client") {
      if (auto policy = read_choice(field_value, field, kSlowClientPolicies)) {
        output.slow_client = *policy;
      }
    } else if (name == "stall_timeout_ms") {
      if (auto ms = read_integer(field_value, field, 0, kMaxStallTimeoutMs)) {
        output.stall_timeout_ms = *ms;
      }
    } else if (name == "on_error") {
      if (auto policy = read_choice(field_value, field, kWriteErrorPolicies)) {
        output.on_error = *policy;
      }
    } else if (name == "sync") {
      if (auto sync = read_bool(field_value, field)) output.sync = *sync;
    } else if (name == "mode" || name == "group") {
      read_socket_access(name, field_value, field, output.socket);
    } else if (name == "resume") {
      if (auto resume = read_bool(field_value, field)) output.resume = *resume;
    } else if (name == "hello_timeout_ms") {
      if (auto ms = read_integer(field_value, field, 1, kMaxHelloTimeoutMs)) {
        output.hello_timeout_ms = *ms;
      }
    } else if (name == "tls") {
      output.tls = read_tls(field_value, field, true);
    } else if (name == "tokens_sha256") {
      if (auto hashes = read_token_hashes(field_value, field)) output.tokens_sha256 = *hashes;
    } else if (name == "allow_origin") {
      if (!field_value.is_string() || field_value.get<std::string>().empty() ||
          field_value.get<std::string>().size() > kMaxOriginBytes ||
          field_value.get<std::string>().find_first_of("\r\n") != std::string::npos) {
        problem(field, fmt::format("expected an origin such as \"https://dash.example\" or \"*\", "
                                   "got {}",
                                   describe(field_value)));
      } else {
        output.allow_origin = field_value.get<std::string>();
      }
    } else {
      read_kafka_field(name, field_value, field, false, kafka_of(output.kafka));
    }
  }
  if (!output.tokens_sha256.empty() && !value.contains("tls")) {
    problem(child(pointer, "tokens_sha256"),
            "needs \"tls\" (a token must not cross the network in clear)");
  }
  // Network clients default to disconnect: one frozen client must not
  // stall the merge for everyone.
  if (entry.type && output_field_applies("slow_client", *entry.type) &&
      !value.contains("slow_client")) {
    output.slow_client = SlowClientPolicy::disconnect;
  }

  if (value.contains("stall_timeout_ms") && output.slow_client == SlowClientPolicy::disconnect) {
    problem(child(pointer, "stall_timeout_ms"),
            "only applies with slow_client \"block\" (\"disconnect\", the default for network "
            "clients, never waits on a client)");
  }
  if (value.contains("hello_timeout_ms") && !output.resume) {
    problem(child(pointer, "hello_timeout_ms"), "only applies with \"resume\": true");
  }
  if (!value.contains("name")) problem(child(pointer, "name"), "required");
  if (!value.contains("type")) problem(child(pointer, "type"), "required");
  if (entry.type) {
    const auto require = [&](std::string_view field) {
      if (!value.contains(field)) {
        problem(child(pointer, field),
                fmt::format("required for type \"{}\"", to_string(*entry.type)));
      }
    };
    switch (*entry.type) {
      case OutputType::file:
      case OutputType::unix_listen:
        require("path");
        break;
      case OutputType::tcp_listen:
      case OutputType::http_listen:
        require("listen");
        break;
      case OutputType::kafka:
        require("brokers");
        require("topic");
        break;
      case OutputType::stdout_:
        break;
    }
  }
  output_entries_.push_back(std::move(entry));
}

void Validator::read_kafka_field(const std::string& name, const Json& value,
                                 const std::string& pointer, bool feed, KafkaConfig& kafka) {
  if (name == "brokers") {
    if (auto text = read_nonempty_string(value, pointer)) kafka.brokers = *text;
  } else if (name == "topic") {
    auto text = read_nonempty_string(value, pointer);
    const bool legal =
        text && text->size() <= 249 && std::all_of(text->begin(), text->end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
        });
    if (text && !legal) {
      problem(pointer, "expected a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -");
    } else if (text) {
      kafka.topic = *text;
    }
  } else if (name == "partitions") {
    if (value.is_string() && value.get<std::string>() == "all") {
      kafka.all_partitions = true;
      return;
    }
    if (!value.is_array() || value.empty()) {
      problem(pointer, fmt::format("expected \"all\" or a non-empty array of partition numbers, "
                                   "got {}",
                                   describe(value)));
      return;
    }
    for (size_t i = 0; i < value.size(); ++i) {
      auto p = read_integer(value[i], child(pointer, i), 0, kMaxKafkaPartition);
      if (!p) continue;
      const auto partition = static_cast<int32_t>(*p);
      if (std::find(kafka.partitions.begin(), kafka.partitions.end(), partition) !=
          kafka.partitions.end()) {
        problem(child(pointer, i), fmt::format("partition {} is listed twice", partition));
      } else {
        kafka.partitions.push_back(partition);
      }
    }
  } else if (name == "partition") {
    if (auto p = read_integer(value, pointer, 0, kMaxKafkaPartition)) {
      kafka.partition = static_cast<int32_t>(*p);
    }
  } else if (name == "start") {
    if (auto start = read_choice(value, pointer, kKafkaStarts)) kafka.start = *start;
  } else if (name == "group") {
    if (auto text = read_nonempty_string(value, pointer)) kafka.group = *text;
  } else if (name == "key") {
    auto text = read_nonempty_string(value, pointer);
    if (text && (*text)[0] != '/') {
      problem(pointer, "expected a JSON pointer such as \"/vehicle\"");
    } else if (text) {
      kafka.key_pointer = *text;
    }
  } else if (name == "properties") {
    read_kafka_properties(value, pointer, feed, kafka);
  }
}

// librdkafka settings: every name and value is checked by librdkafka
// itself, here, so that a typo fails the config check and not the start.
void Validator::read_kafka_properties(const Json& value, const std::string& pointer, bool feed,
                                      KafkaConfig& kafka) {
  if (!value.is_object()) {
    problem(pointer,
            fmt::format("expected an object of librdkafka settings, got {}", describe(value)));
    return;
  }
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    std::string text;
    if (it.value().is_string()) {
      text = it.value().get<std::string>();
    } else if (it.value().is_boolean()) {
      text = it.value().get<bool>() ? "true" : "false";
    } else if (it.value().is_number_integer()) {
      text = it.value().dump();
    } else {
      problem(field,
              fmt::format("expected a string, integer or boolean, got {}", describe(it.value())));
      continue;
    }
    if (auto why = kafka_property_refused(it.key(), feed)) {
      problem(field, std::string(*why));
    } else if (auto error = kafka_property_error(it.key(), text, feed)) {
      problem(field, *error);
    } else {
      kafka.properties.emplace_back(it.key(), std::move(text));
    }
  }
}

std::optional<HeartbeatsConfig> Validator::read_heartbeats(const Json& value,
                                                           const std::string& pointer) {
  if (!value.is_object()) {
    problem(pointer, fmt::format("expected an object such as {{\"field\": \"heartbeat\", "
                                 "\"interval_ms\": 100}}, got {}",
                                 describe(value)));
    return std::nullopt;
  }
  HeartbeatsConfig heartbeats;
  bool valid = true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string field = child(pointer, it.key());
    if (it.key() == "field") {
      auto text = read_nonempty_string(it.value(), field);
      if (text && (*text == config_.key || "/" + escape_pointer_token(*text) == config_.key)) {
        problem(field, fmt::format("must differ from the key field \"{}\"", config_.key));
        valid = false;
      } else if (text) {
        heartbeats.field = *text;
      } else {
        valid = false;
      }
    } else if (it.key() == "interval_ms") {
      if (auto ms = read_integer(it.value(), field, 1, kMaxIdleTimeoutMs)) {
        heartbeats.interval_ms = *ms;
      } else {
        valid = false;
      }
    } else {
      problem(field, "unknown field");
      valid = false;
    }
  }
  if (!valid) return std::nullopt;
  if (!first_heartbeats_) {
    first_heartbeats_ = {pointer, heartbeats.field};
  } else if (first_heartbeats_->second != heartbeats.field) {
    problem(child(pointer, "field"),
            fmt::format("must be \"{}\" as at {}: heartbeat records are shared by the outputs "
                        "that take them",
                        first_heartbeats_->second, first_heartbeats_->first));
    return std::nullopt;
  }
  return heartbeats;
}

void Validator::read_socket_access(const std::string& name, const Json& value,
                                   const std::string& pointer, SocketAccess& access) {
  auto text = read_nonempty_string(value, pointer);
  if (!text) return;
  if (name == "group") {
    const bool valid =
        text->size() <= 32 && std::all_of(text->begin(), text->end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
        });
    if (!valid) {
      problem(pointer, "expected a group name such as \"telemetry\"");
    } else if (!group_id(*text)) {
      problem(pointer, fmt::format("no group \"{}\" on this machine", *text));
    } else {
      access.group = *text;
    }
    return;
  }
  // An octal string, as chmod takes it: a JSON number would be read in
  // decimal ("mode": 660 is not 0660).
  const bool octal = text->size() <= 4 && std::all_of(text->begin(), text->end(),
                                                      [](char c) { return c >= '0' && c <= '7'; });
  if (!octal) {
    problem(pointer,
            fmt::format("expected an octal mode such as \"0660\", got {}", describe(value)));
    return;
  }
  const auto mode = static_cast<uint32_t>(std::stoul(*text, nullptr, 8));
  if (mode > 0777) {
    problem(pointer, "only permission bits (at most \"0777\")");
    return;
  }
  access.mode = mode;
}

void Validator::check_names_and_singletons() {
  std::map<std::string, std::string, std::less<>> feed_names;
  std::optional<std::string> first_stdin;
  for (const FeedEntry& entry : feed_entries_) {
    if (!entry.feed.name.empty()) {
      const auto [it, inserted] = feed_names.emplace(entry.feed.name, entry.pointer);
      if (!inserted) {
        problem(
            child(entry.pointer, "name"),
            fmt::format("duplicate feed name \"{}\" (first at {})", entry.feed.name, it->second));
      }
    }
    if (entry.type == FeedType::stdin_) {
      if (first_stdin) {
        problem(child(entry.pointer, "type"),
                fmt::format("only one stdin feed is allowed (first at {})", *first_stdin));
      } else {
        first_stdin = entry.pointer;
      }
    }
  }

  std::map<std::string, std::string, std::less<>> output_names;
  std::optional<std::string> first_stdout;
  for (const OutputEntry& entry : output_entries_) {
    if (!entry.output.name.empty()) {
      const auto [it, inserted] = output_names.emplace(entry.output.name, entry.pointer);
      if (!inserted) {
        problem(child(entry.pointer, "name"),
                fmt::format("duplicate output name \"{}\" (first at {})", entry.output.name,
                            it->second));
      }
    }
    if (entry.type == OutputType::stdout_) {
      if (first_stdout) {
        problem(child(entry.pointer, "type"),
                fmt::format("only one stdout output is allowed (first at {})", *first_stdout));
      } else {
        first_stdout = entry.pointer;
      }
    }
  }
}

// Two listeners on one address (or one socket path) cannot both bind; the
// one that comes second in the file is reported.
void Validator::check_listeners() {
  std::stable_sort(listeners_.begin(), listeners_.end(),
                   [&](const Claim& a, const Claim& b) { return before(a.pointer, b.pointer); });
  for (size_t i = 0; i < listeners_.size(); ++i) {
    const Claim& claim = listeners_[i];
    for (size_t j = 0; j < i; ++j) {
      const Claim& first = listeners_[j];
      if (claim.address && first.address && addresses_collide(*claim.address, *first.address)) {
        problem(claim.pointer,
                fmt::format("address {} is already used by {} ({})", to_string(*claim.address),
                            first.pointer, to_string(*first.address)));
        break;
      }
      if (!claim.address && !first.address && claim.path == first.path) {
        problem(claim.pointer,
                fmt::format("socket path \"{}\" is already used by {}", claim.path, first.pointer));
        break;
      }
    }
  }
}

// Files the daemon writes must be distinct from each other and from socket
// paths, and a file feed must not read one of them: that would feed the
// merged stream back into itself.
void Validator::check_files() {
  std::stable_sort(written_files_.begin(), written_files_.end(),
                   [&](const Claim& a, const Claim& b) { return before(a.pointer, b.pointer); });
  for (size_t i = 0; i < written_files_.size(); ++i) {
    const Claim& claim = written_files_[i];
    for (size_t j = 0; j < i; ++j) {
      if (written_files_[j].path == claim.path) {
        problem(claim.pointer, fmt::format("file \"{}\" is already written by {}", claim.path,
                                           written_files_[j].pointer));
        break;
      }
    }
    for (const Claim& listener : listeners_) {
      if (!listener.address && listener.path == claim.path) {
        problem(claim.pointer,
                fmt::format("\"{}\" is also a socket path ({})", claim.path, listener.pointer));
        break;
      }
    }
  }
  for (const FeedEntry& entry : feed_entries_) {
    if (entry.type != FeedType::file || entry.feed.path.empty()) continue;
    for (const Claim& claim : written_files_) {
      if (claim.path == entry.feed.path) {
        problem(child(entry.pointer, "path"),
                fmt::format("reads the file written by {}; the merged stream would feed itself",
                            claim.pointer));
        break;
      }
    }
  }
}

ConfigResult Validator::run(std::vector<ConfigProblem> problems) {
  problems_ = std::move(problems);
  if (!root_.is_object()) {
    problem("", fmt::format("expected an object, got {}", describe(root_)));
  } else {
    read_top_level();
    read_feeds();
    read_outputs();
    check_names_and_singletons();
    check_listeners();
    check_files();
  }

  // Document order; problems at one place keep the order they were found.
  std::vector<std::pair<std::vector<size_t>, ConfigProblem>> ordered;
  ordered.reserve(problems_.size());
  for (ConfigProblem& p : problems_) ordered.emplace_back(position(p.where), std::move(p));
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });

  ConfigResult result;
  for (auto& [pos, p] : ordered) result.problems.push_back(std::move(p));
  if (result.problems.empty()) {
    for (FeedEntry& entry : feed_entries_) {
      if (entry.feed.type == FeedType::kafka && !entry.feed.kafka->all_partitions) {
        std::vector<FeedConfig> partitions =
            expand_kafka_feed(entry.feed, entry.feed.kafka->partitions);
        std::move(partitions.begin(), partitions.end(), std::back_inserter(config_.feeds));
      } else {
        // "all" stays one entry until resolve_kafka_partitions() lists them.
        config_.feeds.push_back(std::move(entry.feed));
      }
    }
    for (OutputEntry& entry : output_entries_) config_.outputs.push_back(std::move(entry.output));
    result.config = std::move(config_);
  }
  return result;
}

}  // namespace

// --- Enum names ------------------------------------------------------------

std::string_view to_string(SlowClientPolicy policy) {
  return choice_name(kSlowClientPolicies, policy);
}
std::string_view to_string(WriteErrorPolicy policy) {
  return choice_name(kWriteErrorPolicies, policy);
}
std::string_view to_string(FeedType type) {
  return choice_name(kFeedTypes, type);
}
std::string_view to_string(OutputType type) {
  return choice_name(kOutputTypes, type);
}
std::vector<FeedConfig> expand_kafka_feed(const FeedConfig& feed,
                                          const std::vector<int32_t>& partitions) {
  std::vector<FeedConfig> feeds;
  for (int32_t partition : partitions) {
    FeedConfig one = feed;
    one.name = fmt::format("{}/{}", feed.name, partition);
    one.kafka_source = feed.name;
    one.kafka->partition = partition;
    // Only this partition: listing one more restarts no other on reload.
    one.kafka->partitions.clear();
    one.kafka->all_partitions = false;
    feeds.push_back(std::move(one));
  }
  return feeds;
}

std::string_view to_string(KafkaConfig::Start start) {
  return choice_name(kKafkaStarts, start);
}

std::optional<MergeMode> parse_merge_mode(std::string_view name) {
  return find_choice(kMergeModes, name);
}
std::optional<LatePolicy> parse_late_policy(std::string_view name) {
  return find_choice(kLatePolicies, name);
}
std::optional<SlowClientPolicy> parse_slow_client_policy(std::string_view name) {
  return find_choice(kSlowClientPolicies, name);
}
std::optional<WriteErrorPolicy> parse_write_error_policy(std::string_view name) {
  return find_choice(kWriteErrorPolicies, name);
}
std::string feed_pointer(const Config& config, size_t i) {
  size_t index = 0;
  for (size_t f = 1; f <= i && f < config.feeds.size(); ++f) {
    const FeedConfig& previous = config.feeds[f - 1];
    const FeedConfig& feed = config.feeds[f];
    const bool same_entry =
        !feed.kafka_source.empty() && feed.kafka_source == previous.kafka_source;
    if (!same_entry) ++index;
  }
  return fmt::format("/feeds/{}", index);
}

namespace {

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// A problem if `directory` is not a directory this process may create
// files in.
std::optional<std::string> writable_directory(const std::string& directory) {
  struct stat about {};
  if (::stat(directory.c_str(), &about) != 0) {
    return fmt::format("directory {}: {}", directory, std::strerror(errno));
  }
  if (!S_ISDIR(about.st_mode)) return fmt::format("{} is not a directory", directory);
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    return fmt::format("directory {}: {}", directory, std::strerror(errno));
  }
  return std::nullopt;
}

// A problem if a file written at `path` could not be (its directory, or
// the file itself if it exists).
std::optional<std::string> writable_file(const std::string& path) {
  if (::access(path.c_str(), F_OK) == 0) {
    if (::access(path.c_str(), W_OK) != 0) return fmt::format("{}: {}", path, std::strerror(errno));
    return std::nullopt;
  }
  return writable_directory(directory_of(path));
}

}  // namespace

std::vector<ConfigProblem> check_config_paths(const Config& config) {
  std::vector<ConfigProblem> problems;
  for (size_t i = 0; i < config.feeds.size(); ++i) {
    const FeedConfig& feed = config.feeds[i];
    const std::string pointer = feed_pointer(config, i) + "/path";
    if (feed.type == FeedType::file && !feed.follow) {
      if (::access(feed.path.c_str(), R_OK) != 0) {
        problems.push_back(
            {pointer, fmt::format("cannot read {}: {}", feed.path, std::strerror(errno))});
      }
    } else if (feed.type == FeedType::file) {
      // Followed: it may appear later, in a directory that is there.
      struct stat about {};
      const std::string directory = directory_of(feed.path);
      if (::stat(directory.c_str(), &about) != 0 || !S_ISDIR(about.st_mode)) {
        problems.push_back({pointer, fmt::format("no directory {}", directory)});
      }
    } else if (feed.type == FeedType::unix_listen) {
      if (auto why = writable_directory(directory_of(feed.path)))
        problems.push_back({pointer, *why});
    }
  }
  for (size_t i = 0; i < config.outputs.size(); ++i) {
    const OutputConfig& output = config.outputs[i];
    const std::string pointer = fmt::format("/outputs/{}/path", i);
    if (output.type == OutputType::file) {
      if (auto why = writable_file(output.path)) problems.push_back({pointer, *why});
    } else if (output.type == OutputType::unix_listen) {
      if (auto why = writable_directory(directory_of(output.path)))
        problems.push_back({pointer, *why});
    }
  }
  if (config.deadletter) {
    if (auto why = writable_file(config.deadletter->path))
      problems.push_back({"/deadletter/path", *why});
  }
  return problems;
}

double seconds_per(KeyUnit unit) {
  switch (unit) {
    case KeyUnit::s:
      return 1;
    case KeyUnit::ms:
      return 1e-3;
    case KeyUnit::us:
      return 1e-6;
    case KeyUnit::ns:
      return 1e-9;
  }
  return 1;
}

std::optional<LogFormat> parse_log_format(std::string_view name) {
  return find_choice(kLogFormats, name);
}

std::optional<LogLevel> parse_log_level(std::string_view name) {
  return find_choice(kLogLevels, name);
}

// --- Entry points ----------------------------------------------------------

namespace {

// Replaces "${NAME}" in every string value under `value` (not in member
// names) by the environment variable NAME; "$${" stands for a literal "${".
// A variable that is not set is a problem at the value's pointer, naming
// the variable; values never appear in problems (they may be secrets).
// `substituted`: the strings that took a value from the environment, which
// problem messages must not show.
void substitute_environment(Json& value, const std::string& pointer,
                            std::vector<ConfigProblem>& problems,
                            std::vector<std::string>& substituted) {
  if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      substitute_environment(it.value(), child(pointer, it.key()), problems, substituted);
    }
    return;
  }
  if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      substitute_environment(value[i], child(pointer, i), problems, substituted);
    }
    return;
  }
  if (!value.is_string()) return;
  const std::string& text = value.get_ref<const std::string&>();
  if (text.find('$') == std::string::npos) return;
  std::string out;
  bool changed = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 2;
      changed = true;
    } else if (text.compare(i, 2, "${") == 0) {
      const size_t close = text.find('}', i + 2);
      const std::string name =
          close == std::string::npos ? std::string() : text.substr(i + 2, close - i - 2);
      const bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                         std::all_of(name.begin(), name.end(), [](char c) {
                           return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                         });
      if (!valid) {
        problems.push_back({pointer,
                            "\"${\" must start a variable such as ${BROKERS} (A-Z a-z 0-9 _), "
                            "or be written \"$${\" for a literal \"${\""});
        return;
      }
      const char* found = std::getenv(name.c_str());
      if (found == nullptr) {
        problems.push_back({pointer, fmt::format("environment variable {} is not set", name)});
        return;
      }
      out += found;
      i = close;
      changed = true;
    } else {
      out += text[i];
    }
  }
  if (changed) {
    substituted.push_back(out);
    value = std::move(out);
  }
}

}  // namespace

ConfigResult parse_config(std::string_view text) {
  // Found on the bytes, before anything recursive is built. The parse
  // below still runs, and stops at that bracket: a syntax error before it
  // is the one problem reported, as for any document.
  const std::optional<size_t> too_deep = find_excess_nesting(text, kMaxNesting);
  std::vector<ConfigProblem> duplicates;
  DocumentBuilder builder(duplicates);
  bool parsed = false;
  try {
    parsed = Json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const Json::exception& error) {
    // The SAX interface reports errors through the builder; this is a
    // safety net for anything nlohmann still throws.
    ConfigResult result;
    result.problems.push_back({"1:1", short_parse_message(error.what())});
    return result;
  }
  if (!parsed && builder.too_deep()) {
    ConfigResult result;
    result.problems.push_back(
        {line_column(text, too_deep.value_or(0) + 1),
         fmt::format("arrays and objects nested deeper than {} levels", kMaxNesting)});
    return result;
  }
  if (!parsed) {
    ConfigResult result;
    result.problems.push_back({line_column(text, builder.error_position()),
                               short_parse_message(builder.error_message())});
    return result;
  }
  // "${NAME}" in string values, from the environment, before anything is
  // judged: a substituted value is validated like a written one.
  std::vector<std::string> substituted;
  substitute_environment(builder.root(), "", duplicates, substituted);
  ConfigResult result = Validator(builder.root()).run(std::move(duplicates));
  // What came from the environment may be a secret: problems say where,
  // not what.
  for (ConfigProblem& problem : result.problems) {
    for (const std::string& secret : substituted) {
      for (size_t at;
           !secret.empty() && (at = problem.message.find(secret)) != std::string::npos;) {
        problem.message.replace(at, secret.size(), "(a value from the environment)");
      }
    }
  }
  return result;
}

ConfigResult load_config(const std::string& path) {
  const auto failure = [&](std::string message) {
    ConfigResult result;
    result.problems.push_back({path, std::move(message)});
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failure(std::strerror(errno));
  std::string text;
  char buffer[16384];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return failure(std::strerror(error));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigFileBytes) {
      ::close(fd);
      return failure(
          fmt::format("larger than {} bytes; is this a configuration file?", kMaxConfigFileBytes));
    }
  }
  ::close(fd);
  return parse_config(text);
}

std::string format_problems(const std::vector<ConfigProblem>& problems) {
  std::string out;
  for (const ConfigProblem& p : problems) {
    // The empty pointer is the whole document.
    out += fmt::format("{}: {}\n", p.where.empty() ? "(top level)" : p.where, p.message);
  }
  return out;
}

std::string_view demo_config_text() {
  return kDemoConfig;
}

}  // namespace chronomerge
