#include "metrics/status_page.h"

#include <nlohmann/json.hpp>

namespace chronomerge {

namespace {

nlohmann::json key_json(KeyType type, const std::optional<Key>& key) {
  if (!key) return nullptr;
  return key_to_string(type, *key);
}

}  // namespace

std::string render_status_json(const MetricsSnapshot& snapshot, double wall_clock_seconds,
                               bool tail) {
  using nlohmann::json;
  json feeds = json::array();
  for (const FeedSnapshot& f : snapshot.feeds) {
    uint64_t malformed = 0;
    for (uint64_t n : f.malformed_by) malformed += n;
    feeds.push_back({{"name", f.name},
                     {"state", to_string(f.state)},
                     {"paused", f.paused},
                     {"connected", f.connected},
                     {"records", f.records_in},
                     {"late", f.late},
                     {"malformed", malformed},
                     {"queue_bytes", f.queue_bytes},
                     {"last_key", key_json(snapshot.key_type, f.last_key)}});
  }
  json fleets = json::array();
  for (const FleetSnapshot& f : snapshot.fleets) {
    fleets.push_back({{"name", f.name},
                      {"connected", f.connected},
                      {"known", f.known},
                      {"records", f.records_in},
                      {"paused", f.paused},
                      {"idle", f.idle},
                      {"queue_bytes", f.queue_bytes}});
  }
  json outputs = json::array();
  for (const auto& [name, c] : snapshot.sinks) {
    json output = {{"name", name},
                   {"bytes", c.bytes_out},
                   {"lag_bytes", c.queue_bytes},
                   {"disconnects", c.disconnects},
                   {"failed", c.failed},
                   {"failing", c.failing}};
    if (c.server) output["clients"] = c.clients;
    outputs.push_back(std::move(output));
  }
  json status = {{"time", wall_clock_seconds},
                 {"records_out", snapshot.records_out},
                 {"frontier", key_json(snapshot.key_type, snapshot.frontier)},
                 {"holder", snapshot.holder ? json(*snapshot.holder) : json(nullptr)},
                 {"tail", tail},
                 {"feeds", std::move(feeds)},
                 {"fleets", std::move(fleets)},
                 {"outputs", std::move(outputs)}};
  return status.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string_view status_page_html() {
  return R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>chronomerge</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.warn { color: #b35900; } .bad { color: #b00; }
pre { background: #f6f6f6; padding: .5em; max-height: 30em; overflow: auto; }
</style>
</head>
<body>
<h1>chronomerge</h1>
<p id="summary">loading&hellip;</p>
<h2>Feeds</h2>
<table><thead><tr><th>feed</th><th>state</th><th>paused</th><th>records</th><th>records/s</th><th>late</th><th>malformed</th><th>queue bytes</th><th>last key</th></tr></thead><tbody id="feeds"></tbody></table>
<h2>Fleets</h2>
<table><thead><tr><th>fleet</th><th>connected</th><th>known</th><th>records</th><th>records/s</th><th>paused</th><th>idle</th></tr></thead><tbody id="fleets"></tbody></table>
<h2>Outputs and clients</h2>
<table><thead><tr><th>output</th><th>clients</th><th>bytes</th><th>bytes/s</th><th>slowest reader's lag</th><th>disconnects</th><th>state</th></tr></thead><tbody id="outputs"></tbody></table>
<div id="tail-section" hidden>
<h2>Live tail</h2>
<pre id="tail"></pre>
</div>
<script>
"use strict";
let previous = null;
let lastOffset = -1;
const tailLines = [];

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
}

function rate(now, before, field, name, key) {
  if (!before) return "";
  const old = before[key].find((x) => x.name === name);
  const dt = now.time - before.time;
  if (!old || dt <= 0) return "";
  return Math.max(0, (now[key].find((x) => x.name === name)[field] - old[field]) / dt).toFixed(1);
}

function fill(id, rows) {
  const body = document.getElementById(id);
  body.replaceChildren(...rows);
}

function render(s) {
  document.getElementById("summary").textContent =
    s.records_out + " records merged; frontier " + (s.frontier === null ? "none yet" : s.frontier) +
    (s.holder ? "; waiting for feed " + s.holder : "");
  fill("feeds", s.feeds.map((f) => {
    const tr = document.createElement("tr");
    tr.id = "feed-" + f.name;
    cell(tr, f.name);
    cell(tr, f.state, f.state === "waiting" ? "warn" : "");
    cell(tr, f.paused ? "yes" : "", f.paused ? "warn" : "");
    const records = document.createElement("td");
    records.className = "records";
    records.textContent = String(f.records);
    tr.appendChild(records);
    cell(tr, rate(s, previous, "records", f.name, "feeds"));
    cell(tr, f.late, f.late ? "warn" : "");
    cell(tr, f.malformed, f.malformed ? "warn" : "");
    cell(tr, f.queue_bytes);
    cell(tr, f.last_key);
    return tr;
  }));
  fill("fleets", s.fleets.map((f) => {
    const tr = document.createElement("tr");
    cell(tr, f.name); cell(tr, f.connected); cell(tr, f.known); cell(tr, f.records);
    cell(tr, rate(s, previous, "records", f.name, "fleets")); cell(tr, f.paused); cell(tr, f.idle);
    return tr;
  }));
  fill("outputs", s.outputs.map((o) => {
    const tr = document.createElement("tr");
    cell(tr, o.name); cell(tr, o.clients === undefined ? "" : o.clients); cell(tr, o.bytes);
    cell(tr, rate(s, previous, "bytes", o.name, "outputs")); cell(tr, o.lag_bytes); cell(tr, o.disconnects);
    cell(tr, o.failed ? "failed" : o.failing ? "failing" : "ok", o.failed || o.failing ? "bad" : "");
    return tr;
  }));
  previous = s;
  document.getElementById("tail-section").hidden = !s.tail;
}

async function refresh() {
  try {
    const s = await (await fetch("status", {cache: "no-store"})).json();
    render(s);
    if (s.tail) {
      const t = await (await fetch("tail", {cache: "no-store"})).json();
      for (const r of t.records) {
        if (r.offset <= lastOffset) continue;
        lastOffset = r.offset;
        tailLines.push(r.record);
      }
      tailLines.splice(0, Math.max(0, tailLines.length - 200));
      document.getElementById("tail").textContent = tailLines.join("\n");
    }
  } catch (e) {
    document.getElementById("summary").textContent = "cannot reach the daemon: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
)html";
}

}  // namespace chronomerge
