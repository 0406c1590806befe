// chronomerge_validate_bench: how fast chronomerge validates lines, at every
// instruction-set level this CPU supports, on one thread, two ways:
//   line   RecordParser::parse over each line (the lines cut beforehand):
//          the scalar scanner, whatever the level, so timed once
//   scan   the validator alone, at the vector levels: the vector
//          scanner (RecordParser::scan_lines) over the whole lines of each
//          128 KiB block in one run, each line's verdict and key found
//          (the lines it leaves to the scalar scanner are not parsed)
//   block  LineBatch::frame over the input in 128 KiB blocks, as a feed
//          reads it: framing, validation (a whole run of lines per block
//          at the vector levels) and the records made, all timed
//
// Usage: chronomerge_validate_bench [options] FILE...
//   --reps N         timed passes over all lines per level (default 5); the
//                    median is reported
//   --level L        only this level (scalar | sse2 | avx2 | avx512); may repeat
//   --key K          key field or JSON pointer (default time)
//   --key-type T     integer | number | rfc3339 | string (default integer)
//   --tsv            one tab-separated row per level, with a header row,
//                    instead of the human-readable table
//
// The files are read into memory whole and cut into lines as the daemon's
// framer cuts them ('\n' ends a line, one trailing '\r' is dropped, empty
// lines are skipped), so the timed line loop does nothing but call parse();
// for the block path they are copied into 128 KiB blocks beforehand (a
// feed's read does that copy), and the timed loop frames each block and
// takes its records.
// An untimed pass of parse() first records every line's outcome (its
// error, or its key, the key's offset and length, and the heartbeat flag):
// the reference. Then every level makes an untimed pass of the block path,
// whose records and rejections must be the reference's, record by record.
// Then the levels take turns, one timed pass each, REPS times, so that a
// machine slowing down during the run slows every level alike.
//
// Throughput is input bytes (newlines included, as in the files) per
// nanosecond of wall time of the one thread that parses: GB/s per core.
// The thread's CPU time is measured too; cpu/wall below ~0.95 means other
// work took the core during the run, and the figures are low.
//
// On the scan path, "accepted" counts the lines the vector scanner decided
// itself; the block path gives the rest to the scalar scanner.
//
// Exit status: 0 when every level's block path gave parse()'s outcome for
// every line, 1 when one did not (the first differences go to stderr), 2 on
// a usage or I/O error.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "feeds/line_batch.h"
#include "record/key.h"
#include "record/record_parser.h"
#include "record/simd_level.h"
#include "record/vector_scanner.h"

namespace {

using chronomerge::KeySpec;
using chronomerge::LineError;
using chronomerge::ParsedRecord;
using chronomerge::RecordParser;
using chronomerge::SimdLevel;

// Every level, in the order the benchmark runs them: the reference first.
constexpr SimdLevel all_simd_levels[] = {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2,
                                         SimdLevel::avx512};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "chronomerge_validate_bench: %s\n", message.c_str());
  std::exit(2);
}

std::optional<SimdLevel> level_from(std::string_view name) {
  for (SimdLevel level : all_simd_levels) {
    if (chronomerge::to_string(level) == name) return level;
  }
  return std::nullopt;
}

struct Input {
  std::vector<std::string> names;
  std::vector<std::string> buffers;     // one per file, kept alive for `lines`
  std::vector<std::string_view> lines;  // into buffers
  uint64_t bytes = 0;                   // file sizes, newlines included
};

void read_input(const std::vector<std::string>& paths, Input& in) {
  for (const std::string& path : paths) {
    std::ifstream file(path, std::ios::binary);
    if (!file) fail("cannot open '" + path + "'");
    std::ostringstream content;
    content << file.rdbuf();
    if (file.bad()) fail("cannot read '" + path + "'");
    in.names.push_back(path);
    in.buffers.push_back(std::move(content).str());
  }
  // Cut the lines only once every buffer has its final address.
  for (const std::string& buffer : in.buffers) {
    in.bytes += buffer.size();
    std::string_view rest(buffer);
    while (!rest.empty()) {
      size_t end = rest.find('\n');
      std::string_view line = rest.substr(0, end);
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) in.lines.push_back(line);
    }
  }
}

// The input as a feed reads it: consecutive blocks of at most block_bytes
// (a file's last block shorter), each file ending its own.
constexpr size_t block_bytes = 128 * 1024;
struct Block {
  std::shared_ptr<chronomerge::RecordBlock> block;
  size_t size;
  bool file_end;
};
std::vector<Block> blocks_of(const Input& in) {
  std::vector<Block> blocks;
  for (const std::string& buffer : in.buffers) {
    for (size_t at = 0; at < buffer.size(); at += block_bytes) {
      const size_t size = std::min(block_bytes, buffer.size() - at);
      auto block = std::make_shared<chronomerge::RecordBlock>(block_bytes);
      std::memcpy(block->data.get(), buffer.data() + at, size);
      blocks.push_back({std::move(block), size, at + size == buffer.size()});
    }
  }
  return blocks;
}

// One line's outcome.
struct Outcome {
  std::optional<LineError> error;
  ParsedRecord record;  // meaningful only without error
};

bool same_outcome(const Outcome& a, const Outcome& b) {
  if (a.error != b.error) return false;
  if (a.error) return true;
  return a.record.key == b.record.key && a.record.key_offset == b.record.key_offset &&
         a.record.key_length == b.record.key_length && a.record.heartbeat == b.record.heartbeat;
}

std::string describe(const Outcome& o, chronomerge::KeyType type) {
  if (o.error) return "error " + std::string(chronomerge::to_string(*o.error));
  return "key " + chronomerge::key_to_string(type, o.record.key) + " at " +
         std::to_string(o.record.key_offset) + "+" + std::to_string(o.record.key_length) +
         (o.record.heartbeat ? ", heartbeat" : "");
}

int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Pass {
  int64_t wall_ns = 0;
  int64_t cpu_ns = 0;
  uint64_t accepted = 0;
};

// The timed loop: parse() over every line, nothing else but a count and a
// checksum that keep the results alive.
Pass timed_pass(const RecordParser& parser, const std::vector<std::string_view>& lines,
                uint64_t& checksum) {
  ParsedRecord record;
  uint64_t accepted = 0;
  uint64_t sum = 0;
  int64_t cpu0 = thread_cpu_ns();
  auto t0 = std::chrono::steady_clock::now();
  for (std::string_view line : lines) {
    if (!parser.parse(line, record)) {
      ++accepted;
      sum += static_cast<uint64_t>(record.key.ordinal) + record.key_offset;
    }
  }
  auto t1 = std::chrono::steady_clock::now();
  int64_t cpu1 = thread_cpu_ns();
  checksum += sum;
  return {std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), cpu1 - cpu0,
          accepted};
}

// The runs the scan path scans: the whole lines of each block of a file,
// the line a block cuts carried to the next, as a feed's framer does.
std::vector<std::string_view> runs_of(const Input& in) {
  std::vector<std::string_view> runs;
  for (const std::string& buffer : in.buffers) {
    const std::string_view all(buffer);
    for (size_t at = 0; at < all.size();) {
      const size_t limit = std::min(all.size(), at + block_bytes);
      size_t end = limit == all.size() ? limit : all.rfind('\n', limit - 1) + 1;
      if (end <= at) end = limit;  // a line longer than a block: cut it
      runs.push_back(all.substr(at, end - at));
      at = end;
    }
  }
  return runs;
}

// The scan path: the vector scanner over each run, the keys of the lines
// it accepted summed.
Pass scan_pass(const RecordParser& parser, const std::vector<std::string_view>& runs,
               uint64_t& checksum) {
  std::vector<chronomerge::ScannedLine> scanned;
  scanned.reserve(block_bytes / 32);
  uint64_t accepted = 0;
  uint64_t sum = 0;
  int64_t cpu0 = thread_cpu_ns();
  auto t0 = std::chrono::steady_clock::now();
  for (std::string_view run : runs) {
    scanned.clear();
    parser.scan_lines(run, scanned);
    for (const chronomerge::ScannedLine& line : scanned) {
      if (!line.accepted) continue;
      ++accepted;
      sum += static_cast<uint64_t>(line.scan.key.end - line.scan.key.begin) + line.begin;
    }
  }
  auto t1 = std::chrono::steady_clock::now();
  int64_t cpu1 = thread_cpu_ns();
  checksum += sum;
  return {std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), cpu1 - cpu0,
          accepted};
}

// The block path: each block framed by a LineBatch (one per file), its
// records and rejected lines taken. `outcomes`, if not null, receives the
// outcome of every line in order.
Pass block_pass(const RecordParser& parser, const std::vector<Block>& blocks, uint64_t& checksum,
                std::vector<Outcome>* outcomes) {
  uint64_t accepted = 0;
  uint64_t sum = 0;
  int64_t cpu0 = thread_cpu_ns();
  auto t0 = std::chrono::steady_clock::now();
  auto batch = std::make_unique<chronomerge::LineBatch>(size_t{1} << 20, parser);
  auto take = [&] {
    for (const chronomerge::LineBatch::Run& run : batch->runs()) {
      for (size_t i = 0; i < run.size(); ++i) {
        sum += static_cast<uint64_t>(run.records[i].ordinal) + run.records[i].key_offset;
        if (outcomes) outcomes->push_back({std::nullopt, run.parsed(i)});
      }
      accepted += run.records.size();
    }
    if (outcomes) {
      // Rejected lines go after the records of the same block: order
      // within a block is compared by the caller per kind.
      for (const auto& rejected : batch->rejected()) outcomes->push_back({rejected.error, {}});
    }
    batch->clear();
  };
  for (const Block& b : blocks) {
    std::shared_ptr<chronomerge::RecordBlock> block = b.block;
    batch->frame(std::move(block), b.size, b.size);
    if (b.file_end) batch->finish();
    take();
    if (b.file_end) batch = std::make_unique<chronomerge::LineBatch>(size_t{1} << 20, parser);
  }
  auto t1 = std::chrono::steady_clock::now();
  int64_t cpu1 = thread_cpu_ns();
  checksum += sum;
  return {std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), cpu1 - cpu0,
          accepted};
}

template <typename T>
T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct LevelResult {
  SimdLevel level;
  RecordParser parser;
  uint64_t accepted = 0;  // from the untimed pass
  std::vector<int64_t> wall_ns, cpu_ns;
  std::vector<int64_t> block_wall_ns, block_cpu_ns;
  uint64_t scan_accepted = 0;  // lines the vector scanner decided itself
  std::vector<int64_t> scan_wall_ns, scan_cpu_ns;
};

// The accepted lines' outcomes, in order, and how many lines failed for
// each reason: what the block path must reproduce.
std::pair<std::vector<Outcome>, std::vector<int>> summary(const std::vector<Outcome>& outcomes) {
  std::pair<std::vector<Outcome>, std::vector<int>> s;
  s.second.resize(chronomerge::line_errors.size());
  for (const Outcome& o : outcomes) {
    if (o.error) {
      ++s.second[static_cast<size_t>(*o.error)];
    } else {
      s.first.push_back(o);
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool tsv = false;
  std::vector<SimdLevel> wanted;
  KeySpec spec;  // time, integer, no heartbeat field
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) fail(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--reps") {
      std::string v(value());
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1000)
        fail("--reps wants 1..1000, got '" + v + "'");
      reps = static_cast<int>(n);
    } else if (arg == "--level") {
      std::string_view v = value();
      auto level = level_from(v);
      if (!level) fail("unknown level '" + std::string(v) + "' (scalar | sse2 | avx2 | avx512)");
      if (std::find(wanted.begin(), wanted.end(), *level) == wanted.end()) wanted.push_back(*level);
    } else if (arg == "--key") {
      spec.path = std::string(value());
      if (spec.path.empty() || !RecordParser::valid_key_path(spec.path)) {
        fail("--key '" + spec.path + "' is neither a field name nor a JSON pointer");
      }
    } else if (arg == "--key-type") {
      std::string_view v = value();
      auto type = chronomerge::parse_key_type(v);
      if (!type) fail("unknown key type '" + std::string(v) + "'");
      spec.type = *type;
    } else if (arg == "--tsv") {
      tsv = true;
    } else if (arg == "-h" || arg == "--help") {
      std::puts(
          "usage: chronomerge_validate_bench [--reps N] [--level L]... [--key K] [--key-type T] "
          "[--tsv] FILE...");
      return 0;
    } else if (arg.starts_with("--")) {
      fail("unknown option '" + std::string(arg) + "'");
    } else {
      paths.emplace_back(arg);
    }
  }
  if (paths.empty()) fail("no input files (try --help)");
  if (wanted.empty()) {
    wanted.assign(std::begin(all_simd_levels), std::end(all_simd_levels));
  }

  // The levels to run, in the order of all_simd_levels: scalar, when it is
  // among them, is the reference.
  std::vector<LevelResult> levels;
  for (SimdLevel level : all_simd_levels) {
    if (std::find(wanted.begin(), wanted.end(), level) == wanted.end()) continue;
    if (!chronomerge::simd_level_supported(level)) {
      std::fprintf(stderr, "level %s: not supported here%s, skipped\n",
                   std::string(chronomerge::to_string(level)).c_str(), " by this CPU");
      continue;
    }
    levels.push_back({level, RecordParser(spec, level), 0, {}, {}, {}, {}, 0, {}, {}});
  }
  if (levels.empty()) fail("none of the requested levels is supported here");

  Input in;
  read_input(paths, in);
  if (in.lines.empty()) fail("the input holds no lines");
  std::fprintf(
      stderr, "%zu file(s), %zu lines, %.1f MB; default level %s; %d timed passes per level\n",
      in.names.size(), in.lines.size(), static_cast<double>(in.bytes) / 1e6,
      std::string(chronomerge::to_string(chronomerge::default_simd_level())).c_str(), reps);

  // Untimed passes: the reference outcomes, then every other level against
  // them. They also warm the caches and branch predictors for the timed
  // passes.
  std::vector<Outcome> reference(in.lines.size());
  uint64_t mismatches = 0;
  constexpr uint64_t shown_mismatches = 10;
  // parse() is the scalar scanner at every level: the reference.
  {
    Outcome o;
    uint64_t accepted = 0;
    for (size_t i = 0; i < in.lines.size(); ++i) {
      o.error = levels[0].parser.parse(in.lines[i], o.record);
      if (!o.error) ++accepted;
      reference[i] = o;
    }
    for (LevelResult& lr : levels) lr.accepted = accepted;
  }
  // The block path at every level against the line path's reference.
  const std::vector<Block> blocks = blocks_of(in);
  const std::vector<std::string_view> runs = runs_of(in);
  {
    const auto expected = summary(reference);
    uint64_t unused = 0;
    for (const LevelResult& lr : levels) {
      std::vector<Outcome> outcomes;
      block_pass(lr.parser, blocks, unused, &outcomes);
      const auto got = summary(outcomes);
      const std::string level(chronomerge::to_string(lr.level));
      if (got.second != expected.second || got.first.size() != expected.first.size()) {
        ++mismatches;
        std::fprintf(stderr,
                     "MISMATCH: the block path at %s made %zu records, parse() %zu, or another "
                     "count of rejected lines by reason\n",
                     level.c_str(), got.first.size(), expected.first.size());
        continue;
      }
      for (size_t i = 0; i < got.first.size(); ++i) {
        if (same_outcome(got.first[i], expected.first[i])) continue;
        if (++mismatches <= shown_mismatches) {
          std::fprintf(stderr, "MISMATCH: record %zu: the block path at %s gives %s, parse() %s\n",
                       i + 1, level.c_str(), describe(got.first[i], spec.type).c_str(),
                       describe(expected.first[i], spec.type).c_str());
        }
      }
    }
  }
  reference = {};

  uint64_t checksum = 0;
  for (int rep = 0; rep < reps; ++rep) {
    for (LevelResult& lr : levels) {
      if (&lr == &levels[0]) {
        Pass p = timed_pass(lr.parser, in.lines, checksum);
        if (p.accepted != lr.accepted) {
          fail("parse() accepted " + std::to_string(p.accepted) + " lines in a timed pass but " +
               std::to_string(lr.accepted) + " before: it is not deterministic");
        }
        lr.wall_ns.push_back(p.wall_ns);
        lr.cpu_ns.push_back(p.cpu_ns);
      }
      Pass b = block_pass(lr.parser, blocks, checksum, nullptr);
      if (b.accepted != lr.accepted) {
        fail("level " + std::string(chronomerge::to_string(lr.level)) + " accepted " +
             std::to_string(b.accepted) + " lines on the block path but " +
             std::to_string(lr.accepted) + " line by line");
      }
      lr.block_wall_ns.push_back(b.wall_ns);
      lr.block_cpu_ns.push_back(b.cpu_ns);
      if (lr.parser.scans_runs()) {
        Pass v = scan_pass(lr.parser, runs, checksum);
        if (!lr.scan_wall_ns.empty() && v.accepted != lr.scan_accepted) {
          fail("the vector scanner at " + std::string(chronomerge::to_string(lr.level)) +
               " accepted another number of lines in another pass");
        }
        lr.scan_accepted = v.accepted;
        lr.scan_wall_ns.push_back(v.wall_ns);
        lr.scan_cpu_ns.push_back(v.cpu_ns);
      }
    }
  }

  bool counts_differ = false;
  for (const LevelResult& lr : levels) counts_differ |= lr.accepted != levels[0].accepted;

  double bytes = static_cast<double>(in.bytes);
  double lines = static_cast<double>(in.lines.size());
  if (tsv) {
    std::puts(
        "level\tpath\tfiles\tlines\tbytes\taccepted\trejected\treps\t"
        "median_wall_ns\tmedian_cpu_ns\tgb_per_s\tns_per_line\tcpu_per_wall");
  } else {
    std::printf("%-8s %-6s %10s %9s %12s %10s %9s\n", "level", "path", "GB/s/core", "ns/line",
                "accepted", "rejected", "cpu/wall");
  }
  for (const LevelResult& lr : levels) {
    for (const std::string_view path : {"line", "scan", "block"}) {
      const bool line = path == "line";
      const bool scan = path == "scan";
      if (line && lr.wall_ns.empty()) continue;       // parse(): timed once, as scalar
      if (scan && lr.scan_wall_ns.empty()) continue;  // no vector scanner at this level
      const auto& walls = line ? lr.wall_ns : scan ? lr.scan_wall_ns : lr.block_wall_ns;
      const auto& cpus = line ? lr.cpu_ns : scan ? lr.scan_cpu_ns : lr.block_cpu_ns;
      double wall = static_cast<double>(median(walls));
      double cpu = static_cast<double>(median(cpus));
      std::string name(chronomerge::to_string(line ? SimdLevel::scalar : lr.level));
      const uint64_t accepted = scan ? lr.scan_accepted : lr.accepted;
      uint64_t rejected = in.lines.size() - accepted;
      if (tsv) {
        std::printf("%s\t%s\t%zu\t%zu\t%llu\t%llu\t%llu\t%d\t%.0f\t%.0f\t%.4f\t%.2f\t%.3f\n",
                    name.c_str(), std::string(path).c_str(), in.names.size(), in.lines.size(),
                    static_cast<unsigned long long>(in.bytes),
                    static_cast<unsigned long long>(accepted),
                    static_cast<unsigned long long>(rejected), reps, wall, cpu,
                    wall > 0 ? bytes / wall : 0.0, wall / lines, wall > 0 ? cpu / wall : 0.0);
      } else {
        std::printf("%-8s %-6s %10.3f %9.2f %12llu %10llu %9.3f\n", name.c_str(),
                    std::string(path).c_str(), wall > 0 ? bytes / wall : 0.0, wall / lines,
                    static_cast<unsigned long long>(accepted),
                    static_cast<unsigned long long>(rejected), wall > 0 ? cpu / wall : 0.0);
      }
    }
  }
  std::fprintf(stderr, "checksum %llu\n", static_cast<unsigned long long>(checksum));

  if (counts_differ || mismatches > 0) {
    std::fprintf(stderr, "FAIL: the levels disagree: %llu line(s) with another outcome than %s%s\n",
                 static_cast<unsigned long long>(mismatches),
                 std::string(chronomerge::to_string(levels[0].level)).c_str(),
                 counts_differ ? ", and the accepted counts differ" : "");
    return 1;
  }
  return 0;
}
