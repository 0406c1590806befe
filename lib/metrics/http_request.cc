#include "metrics/http_request.h"

#include <utility>

namespace chronomerge {

namespace {

// RFC 9110 token characters, for methods and header field names.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// A request target may hold only visible ASCII (RFC 9112 §3.2; anything
// else must be percent-encoded).
bool is_visible_ascii(std::string_view text) {
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

// Optional whitespace around a field value (RFC 9110 §5.5).
std::string_view trim_ows(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// A header field the caller gets to see: its value if given once.
struct KeptField {
  std::string_view lower_name;
  std::string_view name;  // as messages spell it
  int count = 0;
  std::string_view value;
};

// Splits off the next line of the head (CRLF or a bare LF, which RFC 9112
// lets a server accept). A CR anywhere else makes the head invalid.
bool next_line(std::string_view& rest, std::string_view& line) {
  size_t end = rest.find('\n');
  line = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line.find('\r') == std::string_view::npos;
}

// The length of the head including its terminating empty line, or 0 when
// it has not all arrived yet.
size_t head_length(std::string_view data) {
  for (size_t pos = data.find('\n'); pos != std::string_view::npos;
       pos = data.find('\n', pos + 1)) {
    if (pos + 1 < data.size() && data[pos + 1] == '\n') return pos + 2;
    if (pos + 2 < data.size() && data[pos + 1] == '\r' && data[pos + 2] == '\n') return pos + 3;
  }
  return 0;
}

HttpRequest refuse(int status, std::string message) {
  HttpRequest request;
  request.outcome = HttpRequest::Outcome::refused;
  request.status = status;
  request.message = std::move(message);
  return request;
}

// A complete head: the request line, then header fields up to the empty
// line.
HttpRequest parse_head(std::string_view head, bool accept_head) {
  std::string_view rest = head;
  std::string_view line;
  if (!next_line(rest, line)) return refuse(400, "bad request line\n");
  // request-line = method SP request-target SP HTTP-version
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return refuse(400, "bad request line\n");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || target.empty() || !is_visible_ascii(target) || version.size() != 8 ||
      version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
      version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return refuse(400, "bad request line\n");
  }
  // Four header fields are kept; every one is checked, as a malformed one
  // means the request is not what it seems: no whitespace before the
  // colon, no obsolete line folding (RFC 9112 §5).
  KeptField kept[] = {{"accept", "Accept", 0, {}},
                      {"last-event-id", "Last-Event-ID", 0, {}},
                      {"origin", "Origin", 0, {}},
                      {"authorization", "Authorization", 0, {}}};
  while (!rest.empty()) {
    if (!next_line(rest, line)) return refuse(400, "bad header field\n");
    if (line.empty()) break;  // the end of the head
    size_t colon = line.find(':');
    const std::string_view name = line.substr(0, colon);
    if (colon == std::string_view::npos || !is_token(name)) {
      return refuse(400, "bad header field\n");
    }
    for (KeptField& field : kept) {
      if (name.size() == field.lower_name.size() && starts_with_nocase(name, field.lower_name)) {
        ++field.count;
        field.value = trim_ows(line.substr(colon + 1));
      }
    }
  }
  if (version[5] != '1') return refuse(505, "only HTTP/1.x is supported\n");
  if (method != "GET" && !(accept_head && method == "HEAD")) {
    return refuse(405,
                  accept_head ? "only GET and HEAD are supported\n" : "only GET is supported\n");
  }
  // origin-form ("/metrics?x") or absolute-form ("http://host/metrics?x").
  // The query ends the target either way (a fragment is not sent).
  std::string_view path = target;
  std::string_view query;
  const size_t question = target.find('?');
  if (question != std::string_view::npos) {
    path = target.substr(0, question);
    query = target.substr(question + 1);
  }
  if (starts_with_nocase(path, "http://") || starts_with_nocase(path, "https://")) {
    // The authority ends at the path or the query (RFC 3986 §3.2).
    size_t slash = path.find('/', path.find("//") + 2);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  } else if (path.empty() || path.front() != '/') {
    return refuse(400, "bad request target\n");
  }
  // Checked last, so that every request refused before keeps its answer.
  for (const KeptField& field : kept) {
    if (field.count > 1) {
      return refuse(400, "repeated " + std::string(field.name) + " header field\n");
    }
  }
  HttpRequest request;
  request.outcome = HttpRequest::Outcome::get;
  request.method = method == "GET" ? std::string_view("GET") : std::string_view("HEAD");
  request.path = path;
  request.query = query;
  request.accept = kept[0].value;
  request.last_event_id = kept[1].value;
  request.origin = kept[2].value;
  request.authorization = kept[3].value;
  return request;
}

}  // namespace

HttpRequest parse_http_request(std::string_view data, size_t max_head_bytes, bool accept_head) {
  // RFC 9112 §2.2: empty lines before the request line are ignored.
  size_t skip = data.find_first_not_of("\r\n");
  if (skip == std::string_view::npos) skip = data.size();
  std::string_view rest = data.substr(skip);
  size_t length = head_length(rest);
  if (length == 0 && rest.size() <= max_head_bytes) {
    HttpRequest request;
    request.blank_prefix = skip;
    return request;  // wait for more
  }
  if (length == 0 || length > max_head_bytes) {
    return refuse(431, "request head over " + std::to_string(max_head_bytes) + " bytes\n");
  }
  return parse_head(rest.substr(0, length), accept_head);
}

std::string_view http_status_headers(int status) {
  return status == 401 ? "WWW-Authenticate: Bearer realm=\"chronomerge\"\r\n" : "";
}

std::string_view http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 410:
      return "Gone";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace chronomerge
