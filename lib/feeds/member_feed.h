// MemberFeed: one member of a fleet — the feed of one producer (a bus) that
// connects to the fleet's listener, and again after every disconnect.
//
// Its Fleet accepts the connections, learns the member's name and hands
// each connection over (take_connection()); the member reads it as any
// stream feed does, with its own queue, water marks and backpressure (only
// its own socket stops being read). A disconnect does not end the feed: the
// fleet is told, the member waits (idle) for its producer to come back, and
// the fleet retires it after linger_ms. It remembers the last key it
// accepted, and how many records in a row had that key, so that a
// producer that reconnects can be told where to resume (the fleet's `ack`).
//
// Pausing has two reasons, either enough: the merger's water marks
// (pause()/resume()) and the fleet's memory budget (set_budget_paused()).
//
// Loop thread only.
#pragma once

#include <optional>
#include <string>

#include "feeds/stream_feed.h"

namespace chronomerge {

class Fleet;

class MemberFeed final : public StreamFeed {
 public:
  // `config`: the fleet's effective configuration, named "<fleet>/<member>".
  MemberFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, Fleet& fleet,
             std::string member);

  // Nothing to open: connections come from the fleet.
  bool start() override { return true; }
  void pause() override;
  void resume() override;

  // Reads `connection` from now on; `first_bytes` are what the fleet read
  // from it after the hello. REQUIRES: !attached().
  void take_connection(std::unique_ptr<Connection> connection, std::string_view first_bytes,
                       std::string peer, uv_os_sock_t socket);
  // Lets go of the current connection now, for a producer's new one: what
  // it has read is queued first, what it holds unread is discarded and
  // counted, a cut line too; returns the bytes left unread. REQUIRES:
  // !busy().
  size_t drop_connection();
  // Whether the producer of the current connection has gone (a reset, or
  // an orderly close with nothing left unread), without reading.
  bool producer_gone() const;

  void set_budget_paused(bool on);
  bool budget_paused() const { return budget_paused_; }
  // The fleet is going: from now on a disconnect ends the feed.
  void leave_fleet() { fleet_ = nullptr; }

  using StreamFeed::last_read_ms;
  const std::string& member() const { return member_; }
  // The current (or last) producer's address; empty for Unix sockets.
  const std::string& peer() const { return peer_; }
  // The key of the last record accepted (queued for the merge), and how
  // many records in a row, up to it, had that key.
  const std::optional<Key>& last_key() const { return last_key_; }
  uint64_t last_key_count() const { return last_key_count_; }

 protected:
  void accepted(const RecordRun& run) override;
  void connection_ended(int status) override;

 private:
  Fleet* fleet_;
  std::string member_;
  std::string peer_;
  uv_os_sock_t socket_ = -1;
  bool merger_paused_ = false;
  bool budget_paused_ = false;
  std::optional<Key> last_key_;
  uint64_t last_key_count_ = 0;
};

}  // namespace chronomerge
