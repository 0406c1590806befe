// The resume protocol's parsers on arbitrary bytes.
//
// Input: the bytes, given whole to parse_resume_line and parse_resume_query
// for every key type, and to parse_event_id.
//
// Checked: every parse gives exactly one of a request and an error; an
// error is one line of printable ASCII naming what it is about; an accepted
// request keeps the promises of ResumeRequest (fields of other starts left
// at their defaults, valid run id and feed names). Then round trips: an
// accepted request written back as a line by the small writer below, and
// as a query string, parses to the same request in both forms; an
// accepted Last-Event-ID is exactly what format_event_id writes for it.
// The length of the input (odd or even) chooses whether the writers spell
// out default values and write spaces as '+'.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "output/resume_request.h"
#include "record/key.h"

namespace {

using chronomerge::Key;
using chronomerge::KeyType;
using chronomerge::ResumeParse;
using chronomerge::ResumeRequest;

constexpr KeyType kKeyTypes[] = {KeyType::integer, KeyType::number, KeyType::rfc3339,
                                 KeyType::string};

void print_bytes(const char* label, std::string_view bytes) {
  std::fprintf(stderr, "%s (%zu bytes): ", label, bytes.size());
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      std::fputc(c, stderr);
    } else {
      std::fprintf(stderr, "\\x%02x", c);
    }
  }
  std::fputc('\n', stderr);
}

[[noreturn]] void fail(const char* what, KeyType key_type, std::string_view input,
                       std::string_view other = {}) {
  std::fprintf(stderr, "resume_request_fuzz: %s (key type %s)\n", what,
               std::string(chronomerge::to_string(key_type)).c_str());
  print_bytes("input", input);
  if (!other.empty()) print_bytes("other", other);
  std::abort();
}

// --- The writers -----------------------------------------------------------

void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

// A key as the text of its type: JSON number syntax for integers and
// numbers (shortest round trip), RFC 3339 and string keys as they are.
std::string key_text(KeyType key_type, const Key& key) {
  switch (key_type) {
    case KeyType::integer:
      return std::to_string(key.ordinal);
    case KeyType::number: {
      char buf[64];
      const auto res = std::to_chars(buf, buf + sizeof buf, chronomerge::key_number_value(key));
      return std::string(buf, res.ptr);
    }
    case KeyType::rfc3339:
      return chronomerge::key_to_string(KeyType::rfc3339, key);
    case KeyType::string:
      return key.text;
  }
  return {};
}

std::string write_line(const ResumeRequest& r, KeyType key_type, bool verbose) {
  std::string out = "{";
  auto field = [&](const char* name) {
    if (out.size() > 1) out += verbose ? ", " : ",";
    out += '"';
    out += name;
    out += verbose ? "\": " : "\":";
  };
  switch (r.from) {
    case ResumeRequest::From::now:
      if (verbose) {
        field("since");
        out += "\"now\"";
      }
      break;
    case ResumeRequest::From::oldest:
      field("since");
      out += "\"oldest\"";
      break;
    case ResumeRequest::From::key:
      field("since");
      if (key_type == KeyType::integer || key_type == KeyType::number) {
        out += key_text(key_type, r.key);
      } else {
        append_json_string(out, key_text(key_type, r.key));
      }
      if (r.skip != 0 || verbose) {
        field("skip");
        out += std::to_string(r.skip);
      }
      break;
    case ResumeRequest::From::after:
      field("after");
      out += "[";
      append_json_string(out, r.run);
      out += "," + std::to_string(r.offset) + "]";
      break;
  }
  if (!r.feeds.empty()) {
    field("feeds");
    out += "[";
    for (size_t i = 0; i < r.feeds.size(); ++i) {
      if (i) out += ",";
      append_json_string(out, r.feeds[i]);
    }
    out += "]";
  }
  if (r.on_gap == ResumeRequest::OnGap::oldest || verbose) {
    field("on_gap");
    out += r.on_gap == ResumeRequest::OnGap::oldest ? "\"oldest\"" : "\"close\"";
  }
  if (!r.token.empty()) {
    field("token");
    append_json_string(out, r.token);
  }
  out += "}";
  if (verbose) out += "\r";
  return out;
}

// Every byte but the unreserved ones as %XY (a space as '+' when `plus`).
void append_encoded(std::string& out, std::string_view text, bool plus) {
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else if (c == ' ' && plus) {
      out.push_back('+');
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
}

std::string write_query(const ResumeRequest& r, KeyType key_type, bool verbose) {
  std::string out;
  auto parameter = [&](const char* name) {
    if (!out.empty() || verbose) out += "&";
    out += name;
    out += "=";
  };
  switch (r.from) {
    case ResumeRequest::From::now:
      if (verbose) {
        parameter("since");
        out += "now";
      }
      break;
    case ResumeRequest::From::oldest:
      parameter("since");
      out += "oldest";
      break;
    case ResumeRequest::From::key:
      parameter("since");
      append_encoded(out, key_text(key_type, r.key), verbose);
      if (r.skip != 0 || verbose) {
        parameter("skip");
        out += std::to_string(r.skip);
      }
      break;
    case ResumeRequest::From::after:
      parameter("after");
      append_encoded(out, chronomerge::format_event_id(r.run, r.offset), verbose);
      break;
  }
  if (!r.feeds.empty()) {
    parameter("feeds");
    for (size_t i = 0; i < r.feeds.size(); ++i) {
      if (i) out += verbose ? "%2C" : ",";
      append_encoded(out, r.feeds[i], verbose);
    }
  }
  if (r.on_gap == ResumeRequest::OnGap::oldest || verbose) {
    parameter("on_gap");
    out += r.on_gap == ResumeRequest::OnGap::oldest ? "oldest" : "close";
  }
  return out;
}

// --- The checks ------------------------------------------------------------

bool is_run_id(std::string_view s) {
  if (s.size() != 16) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_feed_name(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-' || c == '/')) {
      return false;
    }
  }
  return true;
}

// The promises of ResumeParse and ResumeRequest.
void check_result(const ResumeParse& p, KeyType key_type, std::string_view input) {
  if (p.request.has_value() == !p.error.empty()) {
    fail("not exactly one of request and error", key_type, input, p.error);
  }
  if (!p.request) {
    for (char c : p.error) {
      if (c < 0x20 || c >= 0x7f) fail("an error that is not printable ASCII", key_type, input);
    }
    // What it is about: a quoted name (with \" and \\ escapes) or a plain
    // word such as since, feeds[2] or Last-Event-ID, then ": ".
    size_t end = 0;
    if (p.error[0] == '"') {
      for (end = 1; end < p.error.size() && p.error[end] != '"'; ++end) {
        if (p.error[end] == '\\') ++end;
      }
      ++end;
    } else {
      while (end < p.error.size() &&
             (is_feed_name(p.error.substr(end, 1)) || p.error[end] == '[' || p.error[end] == ']')) {
        ++end;
      }
    }
    if (end == 0 || end > p.error.size() || p.error.compare(end, 2, ": ") != 0) {
      fail("an error that does not start with what it is about", key_type, input, p.error);
    }
    return;
  }
  const ResumeRequest& r = *p.request;
  if (r.from != ResumeRequest::From::after && (!r.run.empty() || r.offset != 0)) {
    fail("a run or offset without after", key_type, input);
  }
  if (r.from == ResumeRequest::From::after && !is_run_id(r.run)) {
    fail("after with an invalid run id", key_type, input, r.run);
  }
  if (r.from != ResumeRequest::From::key && (r.key != Key{} || r.skip != 0)) {
    fail("a key or skip without since", key_type, input);
  }
  if (r.from == ResumeRequest::From::key && key_type == KeyType::string &&
      (r.key.text == "now" || r.key.text == "oldest")) {
    fail("a string key that is one of the words", key_type, input);
  }
  if (r.from == ResumeRequest::From::key && key_type != KeyType::string && !r.key.text.empty()) {
    fail("text in a key that is not a string", key_type, input);
  }
  if (r.feeds.size() > 1024) fail("too many feeds", key_type, input);
  for (size_t i = 0; i < r.feeds.size(); ++i) {
    if (!is_feed_name(r.feeds[i])) fail("an invalid feed name", key_type, input, r.feeds[i]);
    for (size_t j = 0; j < i; ++j) {
      if (r.feeds[i] == r.feeds[j]) fail("a repeated feed name", key_type, input, r.feeds[i]);
    }
  }
}

// An accepted request, written back in both forms, must parse to itself.
void check_round_trip(const ResumeRequest& r, KeyType key_type, std::string_view input,
                      bool verbose) {
  const std::string line = write_line(r, key_type, verbose);
  const ResumeParse again = chronomerge::parse_resume_line(line, key_type);
  if (!again.request) fail("a written line is refused", key_type, input, line + " " + again.error);
  if (!(*again.request == r)) fail("a written line reads differently", key_type, input, line);

  // Queries cannot carry a NUL byte, which a line's string key can, nor a
  // token (they are never taken from a query string).
  if (r.key.text.find('\0') != std::string::npos) return;
  ResumeRequest without_token = r;
  without_token.token.clear();
  const std::string query = write_query(without_token, key_type, verbose);
  const ResumeParse from_query = chronomerge::parse_resume_query(query, key_type);
  if (!from_query.request) {
    fail("a written query is refused", key_type, input, query + " " + from_query.error);
  }
  if (!(*from_query.request == without_token))
    fail("a written query reads differently", key_type, input, query);
  if (!from_query.request->token.empty()) fail("a query gave a token", key_type, input, query);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const bool verbose = size % 2 == 1;

  for (KeyType key_type : kKeyTypes) {
    const ResumeParse line = chronomerge::parse_resume_line(input, key_type);
    check_result(line, key_type, input);
    if (line.request) check_round_trip(*line.request, key_type, input, verbose);

    const ResumeParse query = chronomerge::parse_resume_query(input, key_type);
    check_result(query, key_type, input);
    if (query.request) check_round_trip(*query.request, key_type, input, verbose);
  }

  const ResumeParse event = chronomerge::parse_event_id(input);
  check_result(event, KeyType::integer, input);
  if (event.request) {
    const ResumeRequest& r = *event.request;
    if (r.from != ResumeRequest::From::after || !r.feeds.empty() ||
        r.on_gap != ResumeRequest::OnGap::close) {
      fail("an event id that asks for more than after", KeyType::integer, input);
    }
    if (chronomerge::format_event_id(r.run, r.offset) != input) {
      fail("an event id that format_event_id would not write", KeyType::integer, input);
    }
    check_round_trip(r, KeyType::integer, input, verbose);
  }
  return 0;
}
