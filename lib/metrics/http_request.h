// HttpRequest: the request head of the metrics port, read from the bytes a
// client has sent so far.
//
// Pure (no I/O, no libuv), so that it can be tested and fuzzed on its own;
// HttpServer feeds it its connection buffer after every read. The rules are
// the server's (see http_server.h): GET (and HEAD, when the caller
// accepts it) only, else 405; a head of at most
// `max_head_bytes` after any empty lines that precede it (431), a
// malformed request line, header field or target is 400, an HTTP major
// version other than 1 is 505. Header fields are checked; three are kept
// (Accept, Last-Event-ID, Origin), and one of those given twice is 400,
// the last refusal checked (any other would come first).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chronomerge {

struct HttpRequest {
  enum class Outcome {
    incomplete,  // the head has not all arrived: read more
    get,         // a well-formed GET (or HEAD): `method` and `path` say what
    refused,     // answer `status` with `message`
  };
  Outcome outcome = Outcome::incomplete;
  // incomplete: how many leading bytes are empty lines (CR and LF), which
  // RFC 9112 §2.2 says to ignore; the caller may drop them, so that a
  // client sending nothing but line ends cannot grow its buffer.
  size_t blank_prefix = 0;
  // refused: 400, 405, 431 or 505, and a one-line body ending in '\n'.
  int status = 0;
  std::string message;
  // get: "GET" or "HEAD" (a static string).
  std::string_view method;
  // get: the path of the target, query string removed; "/" for an
  // absolute-form target without one. A view into `data` (or a static
  // string), valid as long as the bytes parsed.
  std::string_view path;
  // get: the query of the target, after its '?' (not included), still
  // percent-encoded; empty if none. A view into `data`.
  std::string_view query;
  // get: the values of these header fields (names matched without regard
  // to case), without the whitespace around them; empty when absent. Not
  // otherwise checked: any bytes but CR and LF. Views into `data`.
  std::string_view accept;
  std::string_view last_event_id;
  std::string_view origin;
  std::string_view authorization;
};

// Reads the request at the start of `data`. Whatever follows the head (a
// body, pipelined requests) is ignored. `accept_head`: HEAD is served like
// GET (the server then sends no body); otherwise it is refused with 405 like
// every method but GET.
HttpRequest parse_http_request(std::string_view data, size_t max_head_bytes,
                               bool accept_head = false);

// The standard reason phrase for `status` ("Not Found"); "Unknown" for
// codes these servers never send.
std::string_view http_reason(int status);

// Headers a response with `status` must carry (RFC 9110 §15.5.2, RFC 6750
// §3): a 401 names the Bearer scheme. Empty for other statuses.
std::string_view http_status_headers(int status);

}  // namespace chronomerge
