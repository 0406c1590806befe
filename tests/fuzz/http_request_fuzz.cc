// The metrics port's request parser on arbitrary bytes.
//
// Input, read by FuzzedDataProvider from the end: one byte choosing the
// head limit (odd: the server's 8 KiB; even: a small one, so that short
// inputs reach the 431 paths), one byte for how many read sizes follow, the
// read sizes; the bytes before them are what the client sends.
//
// Checked: the result is the same whether the bytes arrive at once or in
// reads, as HttpServer feeds them (dropping leading empty lines while the
// head is incomplete); it agrees with a reference written from the rules in
// http_server.h and http_request.h (query, Accept, Last-Event-ID and Origin
// included); and each outcome keeps its promises (a GET's path starts with
// '/' and has no query, its query and kept fields are views into the
// input, a refusal is one of the documented statuses).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/http_request.h"

namespace {

using chronomerge::HttpRequest;
using chronomerge::parse_http_request;
using Outcome = HttpRequest::Outcome;

// A GET as one comparable string: each part preceded by its length, as
// header values may hold any byte but CR and LF.
std::string describe_get(std::string_view path, std::string_view query, std::string_view accept,
                         std::string_view last_event_id, std::string_view origin) {
  std::string out = "GET";
  for (std::string_view part : {path, query, accept, last_event_id, origin}) {
    out += " " + std::to_string(part.size()) + ":";
    out += part;
  }
  return out;
}

// What a result says, as one comparable string.
std::string describe(const HttpRequest& r) {
  switch (r.outcome) {
    case Outcome::incomplete:
      return "incomplete";
    case Outcome::get:
      return describe_get(r.path, r.query, r.accept, r.last_event_id, r.origin);
    case Outcome::refused:
      return std::to_string(r.status) + " " + r.message;
  }
  return "?";
}

[[noreturn]] void fail(const char* what, std::string_view data, const std::string& ours,
                       const std::string& other) {
  std::fprintf(stderr, "http_request_fuzz: %s\nours:  %s\nother: %s\ninput (%zu bytes):\n", what,
               ours.c_str(), other.c_str(), data.size());
  for (unsigned char c : data) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      std::fputc(c, stderr);
    } else {
      std::fprintf(stderr, "\\x%02x", c);
    }
  }
  std::fputc('\n', stderr);
  std::abort();
}

bool token_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != '\0' && std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos);
}

bool token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!token_char(c)) return false;
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  return out;
}

// The rules of http_server.h, line by line: the outcome as describe() puts
// it.
std::string reference(std::string_view data, size_t max_head_bytes) {
  size_t start = 0;
  while (start < data.size() && (data[start] == '\r' || data[start] == '\n')) ++start;
  std::string_view rest = data.substr(start);

  // Lines terminated by '\n'; the head ends with the first empty one (or a
  // lone '\r') after the request line.
  std::vector<std::string_view> lines;
  size_t head = 0;
  for (size_t from = 0;;) {
    const size_t nl = rest.find('\n', from);
    if (nl == std::string_view::npos) break;
    std::string_view line = rest.substr(from, nl - from);
    from = nl + 1;
    if (!lines.empty() && (line.empty() || line == "\r")) {
      head = from;
      break;
    }
    lines.push_back(line);
  }
  if (head == 0) {
    return rest.size() <= max_head_bytes
               ? "incomplete"
               : "431 request head over " + std::to_string(max_head_bytes) + " bytes\n";
  }
  if (head > max_head_bytes) {
    return "431 request head over " + std::to_string(max_head_bytes) + " bytes\n";
  }
  for (std::string_view& line : lines) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  }

  const std::string_view request_line = lines[0];
  std::vector<std::string_view> parts;
  for (size_t from = 0;;) {
    const size_t sp = request_line.find(' ', from);
    parts.push_back(request_line.substr(from, sp == std::string_view::npos ? sp : sp - from));
    if (sp == std::string_view::npos) break;
    from = sp + 1;
  }
  const std::string bad_line = "400 bad request line\n";
  if (request_line.find('\r') != std::string_view::npos || parts.size() != 3) return bad_line;
  const std::string_view method = parts[0], target = parts[1], version = parts[2];
  if (!token(method) || target.empty()) return bad_line;
  for (unsigned char c : target) {
    if (c <= ' ' || c >= 0x7f) return bad_line;
  }
  if (version.size() != 8 || !version.starts_with("HTTP/") || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return bad_line;
  }
  // The kept fields: the last value of each and how often it was given.
  const char* const kept_names[] = {"accept", "last-event-id", "origin"};
  const char* const kept_spelling[] = {"Accept", "Last-Event-ID", "Origin"};
  std::string_view kept_values[3];
  int kept_counts[3] = {};
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view field = lines[i];
    const size_t colon = field.find(':');
    if (field.find('\r') != std::string_view::npos || colon == std::string_view::npos ||
        !token(field.substr(0, colon))) {
      return "400 bad header field\n";
    }
    for (int k = 0; k < 3; ++k) {
      if (lower(field.substr(0, colon)) != kept_names[k]) continue;
      std::string_view value = field.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
        value.remove_suffix(1);
      }
      kept_values[k] = value;
      ++kept_counts[k];
    }
  }
  if (version[5] != '1') return "505 only HTTP/1.x is supported\n";
  if (method != "GET") return "405 only GET is supported\n";
  // The query is whatever follows the first '?', in either form.
  const size_t question = target.find('?');
  std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  const std::string scheme = lower(path.substr(0, 8));
  if (scheme.starts_with("http://") || scheme.starts_with("https://")) {
    const size_t authority = path.find("//") + 2;
    const size_t slash = path.find('/', authority);
    path = slash == std::string_view::npos ? "/" : path.substr(slash);
  } else if (path.empty() || path[0] != '/') {
    return "400 bad request target\n";
  }
  for (int k = 0; k < 3; ++k) {
    if (kept_counts[k] > 1) {
      return "400 repeated " + std::string(kept_spelling[k]) + " header field\n";
    }
  }
  return describe_get(path, query, kept_values[0], kept_values[1], kept_values[2]);
}

// Whether `view` lies inside `bytes` (an empty view anywhere).
bool inside(std::string_view view, const std::string& bytes) {
  return view.empty() ||
         (view.data() >= bytes.data() && view.data() + view.size() <= bytes.data() + bytes.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const uint8_t limit = input.ConsumeIntegral<uint8_t>();
  const size_t max_head_bytes = limit & 1 ? 8192 : 8 + limit;
  std::vector<size_t> sizes(input.ConsumeIntegral<uint8_t>() % 16);
  for (size_t& s : sizes) s = size_t{input.ConsumeIntegral<uint8_t>()} + 1;
  const std::string bytes = input.ConsumeRemainingBytesAsString();

  const HttpRequest whole = parse_http_request(bytes, max_head_bytes);
  const std::string ours = describe(whole);

  const std::string expected = reference(bytes, max_head_bytes);
  if (ours != expected) fail("differs from the reference", bytes, ours, expected);

  // Promises of each outcome.
  switch (whole.outcome) {
    case Outcome::incomplete:
      if (whole.blank_prefix > bytes.size() ||
          bytes.find_first_not_of("\r\n") < whole.blank_prefix) {
        fail("the blank prefix is not blank", bytes, ours, std::to_string(whole.blank_prefix));
      }
      break;
    case Outcome::get:
      if (whole.path.empty() || whole.path[0] != '/' ||
          whole.path.find('?') != std::string_view::npos) {
        fail("a GET path must start with '/' and have no query", bytes, ours, "");
      }
      if (!inside(whole.query, bytes) || !inside(whole.accept, bytes) ||
          !inside(whole.last_event_id, bytes) || !inside(whole.origin, bytes) ||
          (whole.path != "/" && !inside(whole.path, bytes))) {
        fail("a view that is not into the input", bytes, ours, "");
      }
      break;
    case Outcome::refused:
      if ((whole.status != 400 && whole.status != 405 && whole.status != 431 &&
           whole.status != 505) ||
          whole.message.empty() || whole.message.back() != '\n') {
        fail("an undocumented refusal", bytes, ours, "");
      }
      break;
  }

  // The same bytes in reads, as the server buffers them.
  if (!sizes.empty()) {
    std::string buffer;
    std::string incremental = "incomplete";
    size_t at = 0;
    for (size_t i = 0; at < bytes.size(); ++i) {
      const size_t n = std::min(sizes[i % sizes.size()], bytes.size() - at);
      buffer.append(bytes, at, n);
      at += n;
      const HttpRequest partial = parse_http_request(buffer, max_head_bytes);
      if (partial.outcome == Outcome::incomplete) {
        buffer.erase(0, partial.blank_prefix);
        if (buffer.size() > max_head_bytes) {
          fail("the buffer outgrew the head limit", bytes, ours, std::to_string(buffer.size()));
        }
        continue;
      }
      incremental = describe(partial);
      break;
    }
    if (incremental != ours) fail("reads change the outcome", bytes, ours, incremental);
  }
  return 0;
}
