// Fleet: a listening feed whose every producer connection is a feed of its
// own in the merge — a member, named "<fleet>/<member>".
//
// The fleet accepts connections and learns each one's member name: from
// a hello line ({"feed": "bus-0042"}), from a JSON pointer into its first
// record, or from the peer's address. It then hands the connection to the
// member's feed (MemberFeed), which its host creates the first time the
// name is seen and keeps across reconnects, so counters, late accounting
// and the metrics series go on. With `ack`, the hello is answered with the
// last key the member's feed accepted, so that a producer that lost its
// connection resends exactly what is missing.
//
// Limits: max_members names known at once (connected, or gone for less
// than linger_ms), hello_timeout_ms to name oneself, and max_bytes queued
// by all members together: a member over its share of the budget is paused
// first. A second connection under a connected name replaces the first if
// that one has gone quiet (nothing read for idle_timeout_ms) or its
// producer is gone, and is refused otherwise. Every refusal is counted by
// reason and logged rate-limited.
//
// Ownership: the fleet owns its listener and the connections that have not
// named themselves yet; member feeds belong to the host, which frees them
// only after retire_member(). Loop thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "feeds/member_feed.h"
#include "log/log.h"
#include "uv/listener.h"
#include "uv/uv_handle.h"

struct uv_loop_s;

namespace chronomerge {

class Fleet;
class Merger;

// What a fleet needs from the daemon around it.
class FleetHost {
 public:
  virtual ~FleetHost() = default;
  virtual uv_loop_s* loop() = 0;
  virtual uint64_t now() = 0;
  virtual const Merger& merger() const = 0;
  virtual KeyType key_type() const = 0;
  // A new member's feed, joined idle (the merge does not wait for it).
  virtual MemberFeed& add_member(Fleet& fleet, const std::string& member) = 0;
  // The member's producer came (true) or went (false): without one, the
  // member is idle at once.
  virtual void member_present(MemberFeed& member, bool present) = 0;
  // The fleet lets go of the member: its feed ends once what it has read is
  // merged, and is then freed. The fleet keeps no pointer to it.
  virtual void retire_member(MemberFeed& member) = 0;
};

// Why a connection was not admitted; the label of the refusal metric.
enum class FleetRefusal { max_members, duplicate, hello_timeout, bad_hello, ack_failed, token };
inline constexpr FleetRefusal fleet_refusals[] = {
    FleetRefusal::max_members, FleetRefusal::duplicate,  FleetRefusal::hello_timeout,
    FleetRefusal::bad_hello,   FleetRefusal::ack_failed, FleetRefusal::token};
std::string_view to_string(FleetRefusal refusal);

// A key as a JSON value of its type ("null" if unset): a number for
// integer and number keys, a string for rfc3339 (normalised to UTC) and
// string keys.
std::string key_json(KeyType type, const std::optional<Key>& key);

struct FleetCounters {
  uint64_t joined = 0;    // names seen for the first time (or after retiring)
  uint64_t left = 0;      // disconnects
  uint64_t replaced = 0;  // connections replaced by a new one under their name
  uint64_t retired = 0;   // members freed after linger_ms (or evicted)
  uint64_t refused[std::size(fleet_refusals)] = {};
  // What retired members had counted, so that the fleet's totals never go
  // backwards.
  FeedStats retired_stats;
  FeedCounters retired_counters;
};

// One member as /fleet and the metrics show it.
struct FleetMemberView {
  std::string name;
  MemberFeed* feed;
  bool connected;
};

class Fleet {
 public:
  // `config`: the feed's effective configuration (fleet set).
  Fleet(FleetHost& host, FeedConfig config, uint32_t rank);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Binds the listener. False (after logging) if it cannot.
  bool start();
  // Stops accepting, closes connections that have not named themselves,
  // and retires every member (each drains what its connection holds).
  // Idempotent.
  void drain();
  // A reload changed the fleet's tuning (not its address): members get
  // the new water marks and settings through the host; limits apply from
  // now on. With tokens, members whose token is no longer listed are
  // disconnected (counted as refusals, reason token).
  void update(const FeedConfig& config);
  // TLS material read again (see Feed::reload_tls()).
  void reload_tls();

  // Hellos waiting at most this long (twice) for a timeout, members
  // lingering for a retirement.
  static constexpr uint64_t tick_ms = 100;
  // Connections still to name themselves, at most; beyond, new ones wait
  // in the kernel's backlog. With the two limits below, what they can make
  // the daemon hold is bounded (4 MiB of hellos, 64 MiB of first records).
  static constexpr size_t max_hellos = 1024;
  // Connections the kernel queues for accepting (it caps this at
  // net.core.somaxconn, 4096 by default).
  static constexpr int backlog = 4096;
  // A hello line is at most this long (name_from "hello").
  static constexpr size_t max_hello_bytes = 4096;
  // A first record that names its member (name_from a JSON pointer) is at
  // most this long, or max_line_bytes if smaller.
  static constexpr size_t max_first_record_bytes = 64 << 10;

  // From the host's pump: the memory budget, and connections waiting for
  // their member's previous one to be taken in.
  void balance(uint64_t now);
  // Queued bytes of all members (as of the last budget check).
  uint64_t queue_bytes() const { return queue_bytes_; }

  // A member's connection ended (EOF or error).
  void member_disconnected(MemberFeed& member, int status);
  // A retired member's feed is being freed: its totals join the fleet's.
  void member_retired(const FeedStats& stats, const FeedCounters& counters);

  const std::string& name() const { return config_.name; }
  const FeedConfig& config() const { return config_; }
  const FleetConfig& options() const { return *config_.fleet; }
  uint32_t rank() const { return rank_; }
  void set_rank(uint32_t rank) { rank_ = rank; }
  // "127.0.0.1:7001" (the port actually bound) or the socket path.
  const std::string& address() const { return address_; }
  const FleetCounters& counters() const { return counters_; }
  const AcceptErrors& accept_errors() const { return listener_.errors(); }
  // Null unless it listens with TLS.
  const TlsCounters* tls_counters() const { return listener_.tls_counters(); }
  size_t connected() const { return connected_; }
  // Shared by the members' malformed, late and idle lines.
  log::RateLimiter& feed_log() { return feed_log_; }
  size_t known() const { return members_.size(); }
  // Members by name.
  std::vector<FleetMemberView> members() const;

 private:
  struct Hello;
  struct Member {
    MemberFeed* feed;
    bool connected;
    uint64_t left_at;        // loop time of the disconnect, while !connected
    std::string token_hash;  // of the connection's hello token (tokens_sha256)
  };

  void accepted(uv_os_sock_t socket, const AcceptedPeer& peer);
  void accept_failed(int error, uint64_t connections);
  static void on_hello_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_hello_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  // The connection's first line is complete (or, by peer, it connected).
  void named(Hello& hello);
  // Tries to hand the connection to its member: false while the member's
  // previous connection still has a batch in flight (try again later).
  bool admit(Hello& hello);
  void refuse(Hello& hello, FleetRefusal reason, std::string_view detail);
  void forget(Hello& hello);
  // Frees the longest-gone member to make room; false if none is gone.
  bool evict_one();
  void retire(std::map<std::string, Member, std::less<>>::iterator member);
  void check_budget(uint64_t now);
  // Every tick_ms: hello deadlines, lingering members, log summaries.
  void on_timer();
  void retry_waiting();
  // Disconnects the members whose token update() removed; one whose last
  // batch is in flight goes at a later balance().
  void drop_revoked();

  FleetHost& host_;
  FeedConfig config_;
  uint32_t rank_;
  Listener listener_;
  std::string address_;
  std::unordered_map<Hello*, std::unique_ptr<Hello>> hellos_;
  std::map<std::string, Member, std::less<>> members_;
  size_t connected_ = 0;
  std::vector<MemberFeed*> budget_paused_;
  uint64_t next_budget_check_ = 0;
  uint64_t queue_bytes_ = 0;
  uint64_t share_ = 0;     // of the budget, per connected member, when over it
  bool revoking_ = false;  // drop_revoked() has members left to drop
  FleetCounters counters_;
  UvHandle<uv_timer_t> timer_;
  size_t waiting_ = 0;  // hellos waiting for their member's last batch
  bool draining_ = false;
  log::RateLimiter refusal_log_{3};
  log::RateLimiter member_log_{5};
  log::RateLimiter feed_log_;
  char read_buffer_[16 << 10];
};

}  // namespace chronomerge
