// Config: the daemon's JSON configuration, validated strictly.
//
// load_config() reports every problem it finds at once, each with the JSON
// pointer of the offending value (or line:column for syntax errors), so an
// operator fixes a file in one round. Unknown fields are errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "log/log_level.h"
#include "merge/merge_options.h"
#include "net/host_port.h"
#include "net/socket_access.h"
#include "record/key.h"

namespace chronomerge {

enum class SlowClientPolicy { block, disconnect };
// What a file output does while it cannot write (disk full, I/O error).
enum class WriteErrorPolicy { block, skip };

std::string_view to_string(SlowClientPolicy policy);
std::string_view to_string(WriteErrorPolicy policy);
std::optional<MergeMode> parse_merge_mode(std::string_view name);
std::optional<LatePolicy> parse_late_policy(std::string_view name);
std::optional<SlowClientPolicy> parse_slow_client_policy(std::string_view name);
std::optional<WriteErrorPolicy> parse_write_error_policy(std::string_view name);
std::optional<LogLevel> parse_log_level(std::string_view name);
std::optional<LogFormat> parse_log_format(std::string_view name);

enum class FeedType {
  file,
  stdin_,
  tcp_listen,
  tcp_connect,
  unix_listen,
  unix_connect,
  exec,
  simulate,
  kafka
};
std::string_view to_string(FeedType type);

// A Kafka topic read (a feed: each listed partition is a feed of its own,
// "<name>/<partition>") or written (an output: one partition, for one
// total order).
struct KafkaConfig {
  enum class Start { committed, earliest, latest };
  std::string brokers;  // bootstrap list, "host:port,..."
  std::string topic;
  // Feeds: every partition the configured feed reads, as listed; `partition`
  // is the one this (generated) feed reads. Outputs: the partition written.
  std::vector<int32_t> partitions;
  // "partitions": "all": every partition the topic has, listed by
  // resolve_kafka_partitions() when the daemon starts or reloads.
  bool all_partitions = false;
  int32_t partition = 0;
  Start start = Start::committed;  // feeds; no commit yet: the earliest offset
  std::string group;               // feeds: consumer group of the commits
  std::string key_pointer;         // outputs: the message key, from a JSON pointer
  // librdkafka settings, applied first (the ones chronomerge relies on are
  // refused by the config check).
  std::vector<std::pair<std::string, std::string>> properties;

  friend bool operator==(const KafkaConfig&, const KafkaConfig&) = default;
};
std::string_view to_string(KafkaConfig::Start start);

// TLS on a network port (a server: listeners) or a connection (a client:
// tcp-connect feeds). Files are read at start and on reload.
struct TlsConfig {
  enum class ClientAuth { none, request, require };
  std::string cert;  // PEM; required for servers, optional for clients
  std::string key;   // PEM private key of `cert`
  // PEM CA bundle: servers verify client certificates with it; clients
  // the server's (empty: the system's trust store).
  std::string ca;
  std::string crl;                            // PEM certificate revocation list checked with `ca`
  ClientAuth client_auth = ClientAuth::none;  // servers
  bool tls13_only = false;                    // min_version "1.3"
  std::string ciphers;                        // TLS 1.2 cipher list; empty: OpenSSL's
  uint64_t handshake_timeout_ms = 5000;       // servers
  uint32_t max_handshakes = 256;              // servers: in flight at once
  std::string server_name;                    // clients; empty: the connect host

  friend bool operator==(const TlsConfig&, const TlsConfig&) = default;
};

// A listening feed that takes many producers, each its own feed in the
// merge (a member, named "<fleet>/<member>").
struct FleetConfig {
  enum class NameFrom { hello, pointer, peer, cert_cn, cert_san };
  // hello: the first line is {"feed": "bus-0042"}; pointer: the value at
  // `name_pointer` in the first record; peer: the peer's IP address;
  // cert_cn: the subject CN of the producer's (verified) certificate;
  // cert_san: its first DNS subjectAltName.
  NameFrom name_from = NameFrom::hello;
  std::string name_pointer;  // NameFrom::pointer
  // Answer the hello with the last key accepted from the member.
  bool ack = false;
  size_t max_members = 10000;        // known members: connected or lingering
  size_t max_bytes = 256 << 20;      // queued bytes of all members together
  uint64_t hello_timeout_ms = 5000;  // a connection names itself by then
  uint64_t linger_ms = 60000;        // a disconnected member's feed is kept
  bool member_metrics = false;       // per-member series in /metrics
  // SHA-256 hashes (lowercase hex) of the tokens a hello must carry; empty:
  // no token asked. Needs TLS and hello naming.
  std::vector<std::string> tokens_sha256;

  friend bool operator==(const FleetConfig&, const FleetConfig&) = default;
};

// Water marks of a fleet member unless the fleet sets its own.
constexpr size_t default_member_high_water_mark = 64 << 10;
constexpr size_t default_member_low_water_mark = 16 << 10;

struct FeedConfig {
  std::string name;
  FeedType type = FeedType::file;
  std::string path;                  // file, unix-*
  SocketAccess socket;               // unix-listen: "mode", "group"
  bool follow = false;               // file
  HostPort address;                  // tcp-listen (listen), tcp-connect (connect)
  std::vector<std::string> command;  // exec: argv, no shell
  // exec: start the program again when it exits (with backoff), or not.
  bool restart_on_exit = false;
  // simulate
  double rate = 10.0;  // records per second
  uint32_t jitter_ms = 0;
  uint64_t seed = 1;
  std::optional<uint64_t> count;
  uint32_t vehicles = 1;  // simulate: distinct vehicle ids in the records
  // Per-feed overrides; unset means the global value.
  std::optional<size_t> high_water_mark;
  std::optional<size_t> low_water_mark;
  std::optional<uint64_t> idle_timeout_ms;
  std::optional<size_t> max_line_bytes;
  std::string heartbeat_field;  // empty: no heartbeats
  double reorder_window = 0;    // key units; 0: off
  // A waiting feed stops holding the merge once the ready feeds are more
  // than this far past its last key (key units); unset: the global value.
  std::optional<double> max_lag;
  std::optional<LatePolicy> late;    // unset: the global policy
  std::optional<FleetConfig> fleet;  // tcp-listen, unix-listen
  std::optional<TlsConfig> tls;      // tcp-listen (server), tcp-connect (client)
  // kafka: the configured feed is expanded into one FeedConfig per
  // partition, named "<name>/<partition>"; `kafka_source` is <name>. With
  // "all" it stays one entry until resolve_kafka_partitions().
  std::optional<KafkaConfig> kafka;
  std::string kafka_source;

  friend bool operator==(const FeedConfig&, const FeedConfig&) = default;
};

enum class OutputType { stdout_, file, tcp_listen, unix_listen, http_listen, kafka };
std::string_view to_string(OutputType type);

// In-band progress on an output: heartbeat records carrying a lower bound
// of every key still to come, for a downstream chronomerge (a merge tree).
struct HeartbeatsConfig {
  std::string field = "heartbeat";
  uint64_t interval_ms = 100;  // at most one heartbeat per interval
  friend bool operator==(const HeartbeatsConfig&, const HeartbeatsConfig&) = default;
};

struct OutputConfig {
  std::string name;
  OutputType type = OutputType::stdout_;
  std::string path;     // file, unix-listen
  SocketAccess socket;  // unix-listen: "mode", "group"
  HostPort address;     // tcp-listen, http-listen
  uint32_t max_clients = 64;
  // Bytes a consumer may fall behind the head. block: the hold point is
  // the smaller of this and output_high_water_mark (unset: the mark);
  // disconnect: once caught up that close, a client that falls further
  // behind is dropped (unset: only when it leaves the retained window).
  std::optional<size_t> max_buffer;
  // Network clients default to disconnect (one frozen client must not
  // stall the others); file and stdout always block (lossless).
  SlowClientPolicy slow_client = SlowClientPolicy::block;
  uint64_t stall_timeout_ms = 0;  // 0: never (block mode only)
  // file: hold the merge and retry (lossless), or drop and count.
  WriteErrorPolicy on_error = WriteErrorPolicy::block;
  // file: fdatasync() after each write, before its records count as
  // written (what a Kafka feed may commit).
  bool sync = false;
  // tcp-listen, unix-listen: a client's first line is a resume request.
  bool resume = false;
  uint64_t hello_timeout_ms = 2000;  // resume: a request must come by then
  std::string allow_origin;          // http-listen: CORS; empty: none
  std::optional<TlsConfig> tls;      // tcp-listen, http-listen
  // SHA-256 hashes (lowercase hex) of the tokens clients must present: the
  // request line's "token", or Authorization: Bearer on http-listen. Needs
  // TLS. With tokens, every tcp-listen client sends a request line.
  std::vector<std::string> tokens_sha256;
  std::optional<KafkaConfig> kafka;  // kafka
  std::optional<HeartbeatsConfig> heartbeats;

  friend bool operator==(const OutputConfig&, const OutputConfig&) = default;
};

struct DeadletterConfig {
  std::string path;
  size_t max_buffer = 8 << 20;  // bytes queued; beyond, dropped and counted
  friend bool operator==(const DeadletterConfig&, const DeadletterConfig&) = default;
};

struct MetricsConfig {
  HostPort address;  // "listen"
  std::optional<TlsConfig> tls;
  std::vector<std::string> tokens_sha256;  // Authorization: Bearer; needs TLS
  // The status page at / shows a live tail of the merged stream (record
  // data on a port that may be published: off by default).
  bool tail = false;
  friend bool operator==(const MetricsConfig&, const MetricsConfig&) = default;
};

// What integer or number keys count, when they are times since the Unix
// epoch: metrics then report them as timestamps.
enum class KeyUnit { s, ms, us, ns };
double seconds_per(KeyUnit unit);

struct Config {
  std::string key = "time";
  KeyType key_type = KeyType::integer;
  std::optional<KeyUnit> key_unit;  // integer and number keys
  MergeMode mode = MergeMode::interleave;
  LatePolicy late = LatePolicy::emit;
  uint64_t idle_timeout_ms = 5000;
  size_t max_line_bytes = default_max_line_bytes;
  size_t feed_high_water_mark = default_feed_high_water_mark;
  size_t feed_low_water_mark = default_feed_low_water_mark;
  size_t output_high_water_mark = default_output_high_water_mark;
  // The retained output log: at least this many bytes of the newest
  // records (and their index) are kept for clients that resume.
  size_t retention_bytes = 64 << 20;
  std::optional<uint64_t> retention_ms;  // can only shorten retention
  uint64_t drain_timeout_ms = 10000;
  std::optional<double> max_lag;  // key units; unset: off
  LogLevel log_level = LogLevel::info;
  LogFormat log_format = LogFormat::text;  // the daemon's log lines
  std::vector<FeedConfig> feeds;
  std::vector<OutputConfig> outputs;
  std::optional<DeadletterConfig> deadletter;
  std::optional<MetricsConfig> metrics;
};

struct ConfigProblem {
  std::string where;  // JSON pointer ("/feeds/2/listen") or "line:column"
  std::string message;
};

struct ConfigResult {
  std::optional<Config> config;  // set when problems is empty
  std::vector<ConfigProblem> problems;
};

// A kafka feed as it reads `partitions`: one feed each, named
// "<name>/<partition>", in that order (which is how ties between them go).
std::vector<FeedConfig> expand_kafka_feed(const FeedConfig& feed,
                                          const std::vector<int32_t>& partitions);

// The JSON pointer of config.feeds[i] in the file it came from (a kafka
// feed's partitions were one entry there).
std::string feed_pointer(const Config& config, size_t i);

// What --check-config checks beyond the file itself, without side effects:
// input files exist and are readable (a followed file's directory exists),
// the directories of output files, of the dead-letter file and of
// listening Unix sockets exist and are writable. Problems by JSON pointer.
std::vector<ConfigProblem> check_config_paths(const Config& config);

// Parses and validates configuration text.
ConfigResult parse_config(std::string_view text);
// Reads `path` and parses it; an unreadable file is one problem with
// `where` = the path.
ConfigResult load_config(const std::string& path);

// One "where: message" line per problem, each ending in '\n', in the order
// given (parse_config() returns them in document order). The empty pointer,
// the whole document, is written "(top level)".
std::string format_problems(const std::vector<ConfigProblem>& problems);

// The configuration compiled into the binary: simulator feeds merged into a
// TCP output on 127.0.0.1:7070 and stdout. Valid by construction (tested).
std::string_view demo_config_text();

}  // namespace chronomerge
