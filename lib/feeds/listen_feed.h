// ListenFeed: tcp-listen and unix-listen feeds. One producer connection at
// a time: a second concurrent connection is accepted and closed at once
// (logged, counted), so a misconfigured sender cannot interleave with the
// real one. A producer may disconnect and reconnect; a line cut by the
// disconnect is discarded and counted. The feed never ends by itself.
#pragma once

#include "feeds/stream_feed.h"

namespace chronomerge {

class ListenFeed final : public StreamFeed {
 public:
  using StreamFeed::StreamFeed;
  bool start() override;
  // "127.0.0.1:7001" (the port actually bound) or the socket path.
  const std::string& address() const { return address_; }
  uint64_t refused() const { return refused_; }

 protected:
  void connection_ended(int status) override;
  void close_transport() override;

 private:
  static void on_connection(uv_stream_t* server, int status);
  Connection server_;
  std::string address_;
  uint64_t refused_ = 0;
};

}  // namespace chronomerge
