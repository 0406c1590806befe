// ResumeRequest: where a client of the retained output log wants to start,
// and the parsers of the three ways it can say so.
//
// Every merged record has an offset (0, 1, 2, ... in this run) and the run
// has an id, 16 lowercase hex digits, new at every start. A client of a
// `tcp-listen`/`unix-listen` output with `"resume": true` sends one request
// line first; `http-listen` takes the same request from the query string of
// `GET /stream` or from the `Last-Event-ID` header of Server-Sent Events,
// whose `id:` lines carry "R:N" (format_event_id).
//
// Pure: no I/O, no libuv. Every input is untrusted network data; the
// parsers bound their work by the limits below and never throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "record/key.h"

namespace chronomerge {

struct ResumeRequest {
  enum class From {
    now,     // only records merged from now on
    oldest,  // the oldest record still retained
    key,     // the first record with key >= `key`, after `skip` equal ones
    after,   // the record after offset `offset` of run `run`
  };
  From from = From::now;
  std::string run;      // From::after: the run id R (16 lowercase hex digits)
  uint64_t offset = 0;  // From::after: continue after offset N (first record sent is N+1)
  Key key;              // From::key: start at the first record with key >= K
  uint64_t skip = 0;    // From::key: skip the first n records whose key equals K
  // Empty: every feed; else only records of these feeds, each named once.
  std::vector<std::string> feeds;
  // When the start lies outside the retained log: refuse (close) or start
  // at the oldest retained record.
  enum class OnGap { close, oldest };
  OnGap on_gap = OnGap::close;
  // The line's "token" (outputs with tokens_sha256); empty if none. Never
  // taken from a query string.
  std::string token;

  friend bool operator==(const ResumeRequest&, const ResumeRequest&) = default;
};

// The outcome of a parse: exactly one of `request` and `error` is set (the
// error is non-empty exactly when there is no request).
struct ResumeParse {
  std::optional<ResumeRequest> request;
  // One line of printable ASCII (safe to put into a JSON string or an HTTP
  // body unescaped but for quotes and backslashes), starting with the field
  // or parameter it is about and ": ": "since: expected \"now\", \"oldest\"
  // or an integer key". A name the client made up is quoted unless it is a
  // short plain word ("\"a: b\": unknown field"). Problems of the whole
  // input start with "request:" (a line), "query:" or "Last-Event-ID:".
  std::string error;
};

// Limits on what a client may send.
inline constexpr size_t kMaxResumeLineBytes = 64 * 1024;  // also the longest query
inline constexpr size_t kMaxResumeFeeds = 1024;
inline constexpr size_t kMaxResumeFeedNameBytes = 255;
// A valid request nests two levels ({"after": [...]}); a little more is
// let through so that a wrong value gets a message about its field.
inline constexpr size_t kMaxResumeNesting = 4;

// One request line, without its '\n' (one trailing '\r' is tolerated): a
// JSON object with
//   "after": [R, N]   R a run id, N an unsigned 64-bit integer
//   "since": "now" | "oldest" | K
//   "skip": n         an unsigned integer; only with a key K
//   "feeds": [names]  1 to kMaxResumeFeeds distinct feed names
//   "on_gap": "close" | "oldest"
// every field optional, each at most once, no others; "after" and "since"
// exclude each other; neither is From::now. K is typed by `key_type`:
//   integer: a JSON integer in int64 (Key::from_integer);
//   number:  any JSON number (Key::from_number; one too large for a double
//            is refused, one too small is 0, as in records);
//   rfc3339: a JSON string that parse_rfc3339_nanos reads (Key{nanos});
//   string:  a JSON string (Key::from_string of its decoded text).
// "now" and "oldest" are always the words, never a string key. A feed name
// is 1 to kMaxResumeFeedNameBytes of A-Z a-z 0-9 _ . - and '/' (configured
// names and generated ones such as "<fleet>/<member>"). Lines over
// kMaxResumeLineBytes and JSON nested deeper than kMaxResumeNesting are
// refused before the JSON parser runs, so hostile input cannot exhaust the
// stack. Problems are reported in the order the fields are written; a sixth
// field, unknown or repeated by its name alone, ends the reading there.
ResumeParse parse_resume_line(std::string_view line, KeyType key_type);

// The query string of GET /stream, without the '?': '&'-separated
// parameters `name=value`, '+' a space and %XY a byte in both names and
// values (an invalid escape or a decoded NUL is refused); empty parameters
// ("a=1&&b=2", a trailing '&') are skipped, a name without '=' has an
// empty value. The parameters mean what the line's fields mean:
//   after=R:N  since=now|oldest|K  skip=n  feeds=a,b,c  on_gap=close|oldest
// Numbers are written as in JSON: N, n and integer keys as JSON integers
// (no sign on N and n), number keys in JSON number syntax; rfc3339 and
// string keys as plain text (a string key must be valid UTF-8). Unknown and
// repeated parameters are refused; the empty query is From::now. At most
// kMaxResumeLineBytes.
ResumeParse parse_resume_query(std::string_view query, KeyType key_type);

// A Last-Event-ID value: "R:N" exactly (as format_event_id writes it) gives
// the request {"after": [R, N]}; anything else an error.
ResumeParse parse_event_id(std::string_view value);

// "R:N": the id of the record at offset `offset` of run `run`, as written
// in SSE `id:` lines and accepted by the parsers above.
std::string format_event_id(std::string_view run, uint64_t offset);

}  // namespace chronomerge
