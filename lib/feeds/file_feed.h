// FileFeed: reads a regular file (or standard input redirected from one)
// through libuv's thread pool, one read in flight at a time, so a paused
// feed simply does not issue its next read.
#pragma once

#include <uv.h>

#include <memory>

#include "feeds/feed.h"

namespace chronomerge {

class FileFeed final : public Feed {
 public:
  static constexpr size_t read_bytes = 64 << 10;

  // Reads config.path, or `fd` when given (standard input); `fd` is then
  // read from its current position and not closed at the end.
  FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd = -1);
  ~FileFeed() override;

  void start() override;
  void pause() override;
  void resume() override;
  void close() override;

 private:
  // A request outlives the feed if the feed is closed mid-read: its
  // callback finds `feed` null and only frees the request.
  struct Request {
    uv_fs_t req;
    FileFeed* feed;
    std::unique_ptr<char[]> buffer;
  };
  static void on_open(uv_fs_t* req);
  static void on_read(uv_fs_t* req);
  void read_next();
  void fail(const char* what, int code);
  void finish();

  int fd_ = -1;
  bool owns_fd_ = true;
  bool paused_ = false;
  bool closed_ = false;
  Request* in_flight_ = nullptr;
  std::unique_ptr<char[]> buffer_;  // lent to each read, returned after
  int64_t offset_ = 0;
};

}  // namespace chronomerge
