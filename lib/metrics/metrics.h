// render_metrics: a MetricsSnapshot in the Prometheus text exposition
// format, version 0.0.4, for `GET /metrics`.
//
// Nothing is cached between scrapes, and the wall clock is passed in, so
// the text is a pure function of the snapshot (tests render it without a
// clock). Series per feed are keyed by the feed's name (see FeedSnapshot).
// (A listening feed's accept errors are kept by its Listener and leave the
// sums when a restarted feed is freed.)
//
// Rendered inside an HttpServer's handler (GET /metrics), the exposition
// also has that server's own families (chronomerge_http_*) and its accept
// errors; elsewhere (tests) they are absent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace chronomerge {

struct MetricsSnapshot;

// What the daemon knows and the pipeline does not.
struct MetricsExtras {
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  uint64_t notify_failures = 0;  // notifications systemd could not be sent
  bool draining = false;
  double start_time_seconds = 0;  // Unix time the daemon started
};

// The Content-Type of render_metrics()'s text.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// The whole exposition. `wall_clock_seconds` is the current Unix time, for
// the frontier lag. Loop thread only.
std::string render_metrics(const MetricsSnapshot& snapshot, const MetricsExtras& extras,
                           double wall_clock_seconds);

// A label value escaped for the text format: backslash, double quote and
// newline become \\, \" and \n; everything else is kept.
std::string escape_label_value(std::string_view value);

// The current Unix time in seconds (system clock), for wall_clock_seconds
// and start_time_seconds.
double unix_time_seconds();

}  // namespace chronomerge
