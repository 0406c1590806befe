#include "daemon/one_shot.h"

#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include <nlohmann/json.hpp>

#include "daemon/pipeline.h"
#include "feeds/file_feed.h"
#include "log/log.h"
#include "sinks/file_writer.h"
#include "sinks/stdout_sink.h"
#include "sinks/stream_writer.h"

namespace chronomerge {
namespace {

// Files can be read at any pace, so a one-shot run needs only enough queued
// per feed to keep the merge from stalling on a read. All feeds together get
// one budget instead of the daemon's 1 MiB each (a thousand files would
// otherwise hold a thousand MiB); the floor keeps reads large enough to be
// efficient. A file feed's read size follows from its marks.
// 4 MiB: every byte of it is a page the kernel must first hand over, and
// at K=8 and K=16 a budget of 16 MiB (1 MiB per feed) took 3-11 % more CPU
// for the same wall time and 1.4-2 times the peak RSS (bench/README.md,
// "A smaller one-shot budget"). K <= 4 keeps 1 MiB per feed, whose reads
// keep a two-file merge fed; K=1000 is at the floor either way.
constexpr size_t one_shot_budget = 4 << 20;
constexpr size_t min_feed_high_water_mark = 16 << 10;
constexpr size_t max_feed_high_water_mark = 1 << 20;
static_assert(min_feed_high_water_mark % FileFeed::min_read_bytes == 0);

// When every line of a file failed on its key, what the first line's key
// looked like and which option would read it; nullopt if nothing fits.
std::optional<std::string> key_hint(const OneShotOptions& options, const std::string& line,
                                    LineError error) {
  const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
  if (!record.is_object()) return std::nullopt;
  const std::string pointer = options.key[0] == '/' ? options.key : "/" + options.key;
  if (error == LineError::missing_key) {
    static const char* const names[] = {"time", "ts",       "timestamp",  "@timestamp", "t",
                                        "date", "datetime", "event_time", "created_at"};
    std::vector<std::string> paths;
    for (const char* name : names) paths.push_back(std::string("/") + name);
    for (const auto& [field, value] : record.items()) {
      if (!value.is_object()) continue;
      for (const char* name : names) paths.push_back("/" + field + "/" + name);
    }
    for (const std::string& path : paths) {
      if (record.contains(nlohmann::json::json_pointer(path))) {
        return fmt::format("the first line has no {} but has {}: --key {} would read it",
                           options.key, path, path);
      }
    }
    return std::nullopt;
  }
  const nlohmann::json::json_pointer at(pointer);
  if (!record.contains(at)) return std::nullopt;
  const nlohmann::json& value = record[at];
  const std::string shown = log::excerpt(value.dump(), 40);
  if (value.is_string()) {
    const bool time = parse_rfc3339_nanos(value.get<std::string>()).has_value();
    return fmt::format("the first line's key is a string ({}): --key-type {} would read it", shown,
                       time ? "rfc3339" : "string");
  }
  if (value.is_number_float()) {
    return fmt::format(
        "the first line's key is a decimal number ({}): --key-type number would "
        "read it",
        shown);
  }
  return std::nullopt;
}

}  // namespace

Config one_shot_config(const OneShotOptions& options) {
  Config config;
  config.key = options.key;
  config.key_type = options.key_type;
  config.mode = options.mode;
  config.max_line_bytes = options.max_line_bytes;
  // A record older than what was already written cannot be put in order
  // any more: it is skipped and counted (exit status 1), never misplaced.
  config.late = LatePolicy::drop;
  // The merge stops once standard output's writer is the output's mark
  // behind, and each of its writes takes up to a batch (on the thread
  // pool, for a file or /dev/null). With a mark of one batch, every write
  // in flight held the merge until it was back: at K=8, 683 of 704 merge
  // runs ended so. With two, the merge fills one while the other is
  // written (K=8 with 1 MiB batches: wall 0.262 -> 0.201 s, CPU 13 %
  // less).
  config.output_high_water_mark =
      2 * std::max(FileWriter::max_batch_bytes, StreamWriter::max_batch_bytes);
  // A whole number of the smallest reads: a feed is paused once its
  // blocks reach the mark, and a mark a little past two reads lets a third
  // one in (at K=1000 the share is 16,777 bytes: 8 MiB more for nothing).
  constexpr size_t read_size = FileFeed::min_read_bytes;
  const size_t share = one_shot_budget / std::max<size_t>(options.files.size(), 1);
  const size_t high =
      std::clamp(share, min_feed_high_water_mark, max_feed_high_water_mark) / read_size * read_size;
  for (const std::string& file : options.files) {
    FeedConfig feed;
    feed.high_water_mark = high;
    feed.low_water_mark = high / 4;
    feed.name = file == "-" ? "stdin" : file;
    feed.type = file == "-" ? FeedType::stdin_ : FeedType::file;
    feed.path = file == "-" ? "" : file;
    config.feeds.push_back(std::move(feed));
  }
  OutputConfig out;
  out.name = "stdout";
  out.type = OutputType::stdout_;
  config.outputs.push_back(out);
  return config;
}

int run_one_shot(const OneShotOptions& options) {
  // Every input is readable before anything is written, as sort -m checks.
  // Looked at, not opened: opening a FIFO (or /dev/fd/N of a pipe) would
  // meet its writer, and closing it again could lose what it wrote.
  bool unreadable = false;
  for (const std::string& file : options.files) {
    if (file == "-") continue;
    if (::access(file.c_str(), R_OK) != 0) {
      log::error("cannot read {}: {}", file, std::strerror(errno));
      unreadable = true;
    }
  }
  if (unreadable) return exit_error;
  bool broken_pipe = false;
  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = exit_ok;
  {
    Pipeline pipeline(&loop, one_shot_config(options), false);
    pipeline.on_finished([&] { pipeline.close(); });
    if (!pipeline.start()) status = exit_error;
    uv_run(&loop, UV_RUN_DEFAULT);
    for (const auto& sink : pipeline.sinks()) {
      if (const auto* out = dynamic_cast<const StdoutSink*>(sink.get())) {
        broken_pipe = broken_pipe || out->broken_pipe();
      }
    }
    if (status == exit_ok && !broken_pipe) {
      bool io_error = pipeline.sink_failed() || !pipeline.finished();
      uint64_t skipped_total = 0;
      const Merger& merger = pipeline.merger();
      for (const auto& feed : pipeline.feeds()) {
        const FeedCounters& counters = feed->counters();
        const FeedStats& stats = merger.stats(feed->id());
        io_error = io_error || counters.io_error;
        uint64_t skipped = counters.malformed + stats.late;
        skipped_total += skipped;
        if (skipped == 0) continue;
        std::string detail;
        for (LineError e : line_errors) {
          const uint64_t count = counters.malformed_by[static_cast<size_t>(e)];
          if (count > 0) detail += fmt::format(", {} {}", count, to_string(e));
        }
        if (stats.late) detail += fmt::format(", {} late (out of order, skipped)", stats.late);
        log::warn("{}: {} of {} lines skipped{}", feed->name(), skipped,
                  stats.records_in + counters.malformed, detail);
        // Every line failed on its key: most likely the key options, not
        // the file.
        for (LineError error : {LineError::wrong_key_type, LineError::missing_key}) {
          const uint64_t count = counters.malformed_by[static_cast<size_t>(error)];
          if (stats.records_in == 0 && count > 0 && count == counters.malformed) {
            std::optional<std::string> hint;
            try {
              hint = key_hint(options, feed->first_rejected(), error);
            } catch (const nlohmann::json::exception&) {
              // A key path nlohmann does not take: no hint, nothing lost.
            }
            if (hint) log::warn("hint: {}: {}", feed->name(), *hint);
          }
        }
      }
      status = io_error ? exit_error : skipped_total > 0 ? exit_skipped : exit_ok;
    }
    pipeline.close();
    uv_run(&loop, UV_RUN_DEFAULT);  // let close callbacks free the handles
  }
  if (broken_pipe) {
    // As `sort | head` ends: killed by SIGPIPE (status 141 under a shell),
    // which the daemon ignores elsewhere so that a client cannot kill it.
    uv_loop_close(&loop);
    std::signal(SIGPIPE, SIG_DFL);
    std::raise(SIGPIPE);
  }
  if (uv_loop_close(&loop) != 0) {
    log::error("internal: handles left open at exit");
    uv_walk(
        &loop,
        [](uv_handle_t* h, void*) {
          log::error("  open handle: {}", uv_handle_type_name(h->type));
        },
        nullptr);
  }
  return status;
}

}  // namespace chronomerge
