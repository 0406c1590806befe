// The status page on the metrics port: GET / serves a plain HTML page
// (served from the binary: no CDN, no build step) whose script reads
// GET /status every second and shows feeds, fleets and outputs in tables,
// and, when the metrics port has `"tail": true`, the newest records of the
// merged stream (GET /tail). Everything from the daemon is put on the page
// with textContent, never as HTML.
#pragma once

#include <string>
#include <string_view>

#include "metrics/metrics_snapshot.h"

namespace chronomerge {

std::string_view status_page_html();

// GET /status: the snapshot as JSON (feeds, fleets, outputs, the frontier,
// and whether the tail is on).
std::string render_status_json(const MetricsSnapshot& snapshot, double wall_clock_seconds,
                               bool tail);

}  // namespace chronomerge
