#include "feeds/member_feed.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "feeds/fleet.h"

namespace chronomerge {

MemberFeed::MemberFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes,
                       Fleet& fleet, std::string member)
    : StreamFeed(host, id, std::move(config), max_line_bytes),
      fleet_(&fleet),
      member_(std::move(member)) {}

void MemberFeed::pause() {
  merger_paused_ = true;
  StreamFeed::pause();
}

void MemberFeed::resume() {
  merger_paused_ = false;
  if (!budget_paused_) StreamFeed::resume();
}

void MemberFeed::set_budget_paused(bool on) {
  if (on == budget_paused_) return;
  budget_paused_ = on;
  if (on) {
    StreamFeed::pause();
  } else if (!merger_paused_) {
    StreamFeed::resume();
  }
}

void MemberFeed::take_connection(std::unique_ptr<Connection> connection,
                                 std::string_view first_bytes, std::string peer,
                                 uv_os_sock_t socket) {
  peer_ = std::move(peer);
  socket_ = socket;
  attach(std::move(connection), first_bytes);
}

size_t MemberFeed::drop_connection() {
  if (!attached()) return 0;
  frame_pending();
  int unread = 0;
  if (::ioctl(socket_, FIONREAD, &unread) != 0 || unread < 0) unread = 0;
  counters_.discarded_bytes += static_cast<uint64_t>(unread);
  socket_ = -1;
  detach();  // a cut line is discarded and counted
  return static_cast<size_t>(unread);
}

bool MemberFeed::producer_gone() const {
  if (!attached() || socket_ < 0) return true;
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(socket_, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error != 0) return true;
  pollfd p{socket_, POLLRDHUP, 0};
  if (::poll(&p, 1, 0) != 1) return false;
  if ((p.revents & (POLLERR | POLLHUP)) != 0) return true;
  // Closed in order: gone once everything it sent has been read.
  int unread = 0;
  return (p.revents & POLLRDHUP) != 0 && ::ioctl(socket_, FIONREAD, &unread) == 0 && unread == 0;
}

void MemberFeed::accepted(const RecordRun& run) {
  static const std::string no_text;
  for (size_t i = 0; i < run.size(); ++i) {
    if (run.records[i].heartbeat) continue;
    const std::string& text = run.texts.empty() ? no_text : run.texts[i];
    if (last_key_ && last_key_->ordinal == run.records[i].ordinal && last_key_->text == text) {
      ++last_key_count_;
    } else {
      last_key_ = Key{run.records[i].ordinal, text};
      last_key_count_ = 1;
    }
  }
}

void MemberFeed::connection_ended(int status) {
  socket_ = -1;
  if (fleet_ == nullptr) {
    end_feed();
    return;
  }
  connection_lost();
  fleet_->member_disconnected(*this, status);
}

}  // namespace chronomerge
