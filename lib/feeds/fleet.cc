#include "feeds/fleet.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "feeds/member_name.h"
#include "merge/merger.h"
#include "net/token.h"
#include "uv/uv_error.h"

namespace chronomerge {

namespace {

constexpr std::string_view refusals = "fleet refusals";
constexpr std::string_view member_events = "member connects and disconnects";

std::string from(const std::string& peer) {
  return peer.empty() ? std::string() : " from " + peer;
}

// The answer to a hello: where the member's stream stands.
std::string ack_line(KeyType type, const MemberFeed& feed) {
  return fmt::format("{{\"last_key\":{},\"count\":{}}}\n", key_json(type, feed.last_key()),
                     feed.last_key_count());
}

}  // namespace

std::string key_json(KeyType type, const std::optional<Key>& key) {
  if (!key) return "null";
  switch (type) {
    case KeyType::integer:
      return std::to_string(key->ordinal);
    case KeyType::number:
      return nlohmann::json(key_number_value(*key)).dump();
    case KeyType::rfc3339:
      return nlohmann::json(key_to_string(type, *key)).dump();
    case KeyType::string:
      return nlohmann::json(key->text).dump(-1, ' ', false,
                                            nlohmann::json::error_handler_t::replace);
  }
  return "null";
}

std::string_view to_string(FleetRefusal refusal) {
  switch (refusal) {
    case FleetRefusal::max_members:
      return "max_members";
    case FleetRefusal::duplicate:
      return "duplicate";
    case FleetRefusal::hello_timeout:
      return "hello_timeout";
    case FleetRefusal::bad_hello:
      return "bad_hello";
    case FleetRefusal::ack_failed:
      return "ack_failed";
    case FleetRefusal::token:
      return "token";
  }
  return "unknown";
}

// A connection that has not named itself yet.
struct Fleet::Hello {
  Fleet* fleet;
  std::unique_ptr<UvHandle<AnyStream>> connection;
  uv_os_sock_t socket;
  std::string peer;
  uint64_t deadline;
  std::string buffer;      // what it sent so far
  size_t scanned = 0;      // bytes of buffer searched for '\n'
  std::string name;        // once named
  std::string token_hash;  // of its hello's token, once admitted (tokens_sha256)
  size_t first = 0;        // where its stream starts in buffer, once named
  bool waiting = false;    // named; its member's previous batch is in flight
};

Fleet::Fleet(FleetHost& host, FeedConfig config, uint32_t rank)
    : host_(host), config_(std::move(config)), rank_(rank) {}

Fleet::~Fleet() {
  for (auto& [name, member] : members_) member.feed->leave_fleet();
  for (auto& [key, hello] : hellos_) hello->connection.reset();
  hellos_.clear();
  listener_.close();
  timer_.close();
}

bool Fleet::start() {
  const bool tcp = config_.type == FeedType::tcp_listen;
  if (!listener_.configure_tls(config_.tls, "feed " + name())) return false;
  // A fleet restarting (or a depot's buses all coming back) connects by
  // the thousand at once: a short backlog overflows, and the kernel then
  // drops or resets connections the daemon never sees.
  listener_.set_socket_access(config_.socket);
  int rc = listener_.listen(
      host_.loop(), tcp ? &config_.address : nullptr, config_.path,
      [this](uv_os_sock_t socket, const AcceptedPeer& peer) { accepted(socket, peer); },
      [this](int error, uint64_t count) { accept_failed(error, count); }, backlog);
  address_ = tcp ? listener_.bound_address() : config_.path;
  if (rc < 0) {
    log::error("feed {}: cannot listen on {}: {}", name(),
               tcp ? to_string(config_.address) : config_.path, uv_error_text(rc));
    return false;
  }
  if (uv_timer_init(host_.loop(), timer_.get()) == 0) {
    timer_.initialized(this);
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* self = static_cast<Fleet*>(timer->data)) self->on_timer();
        },
        tick_ms, tick_ms);
    uv_unref(timer_.base());  // keeps nothing alive by itself
  }
  log::info("feed {}: listening on {}", name(), address_);
  // Every member holds a descriptor: say how many the process may have.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    log::info("feed {}: a fleet of at most {} members; the open-files limit ({}) allows about {}",
              name(), options().max_members, limit.rlim_cur,
              limit.rlim_cur > 64 ? limit.rlim_cur - 64 : 0);
  }
  return true;
}

void Fleet::reload_tls() {
  listener_.reload_tls(config_.tls);
}

void Fleet::accepted(uv_os_sock_t socket, const AcceptedPeer& who) {
  if (draining_) {
    ::close(socket);
    return;
  }
  std::string peer = who.address;
  int error = 0;
  auto connection = open_accepted(host_.loop(), socket, error);
  if (!connection) {
    listener_.count_error(error);
    refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, refusals,
                     "feed {}: cannot accept a producer{}: {}", name(), from(peer),
                     uv_error_text(error));
    return;
  }
  auto owned = std::make_unique<Hello>();
  Hello& hello = *owned;
  hello.fleet = this;
  hello.connection = std::move(connection);
  hello.socket = socket;
  hello.peer = std::move(peer);
  hello.deadline = host_.now() + options().hello_timeout_ms;
  hello.connection->get()->handle.data = &hello;
  hellos_.emplace(&hello, std::move(owned));
  if (hellos_.size() >= max_hellos) listener_.hold(true);

  if (options().name_from == FleetConfig::NameFrom::cert_cn ||
      options().name_from == FleetConfig::NameFrom::cert_san) {
    // The listener requires a verified certificate: its CN (or DNS name)
    // is the name, so a bus cannot speak for another.
    const bool by_cn = options().name_from == FleetConfig::NameFrom::cert_cn;
    const std::string name = !who.tls ? std::string()
                             : by_cn  ? who.tls->cert_cn
                                      : who.tls->cert_san;
    const std::string_view what = by_cn ? "CN" : "DNS name (subjectAltName)";
    if (name.empty()) {
      return refuse(hello, FleetRefusal::bad_hello, fmt::format("the certificate has no {}", what));
    }
    if (!valid_member_name(name)) {
      return refuse(
          hello, FleetRefusal::bad_hello,
          fmt::format("the certificate's {} {} is not a member name", what, log::excerpt(name)));
    }
    hello.name = name;
    named(hello);
    return;
  }
  if (options().name_from == FleetConfig::NameFrom::peer) {
    MemberName name = member_name_from_peer(hello.peer);
    if (!name.ok()) return refuse(hello, FleetRefusal::bad_hello, name.error);
    hello.name = std::move(name.name);
    named(hello);
    return;
  }
  int rc = uv_read_start(hello.connection->stream(), on_hello_alloc, on_hello_read);
  if (rc < 0) refuse(hello, FleetRefusal::bad_hello, "cannot read: " + uv_error_text(rc));
}

void Fleet::accept_failed(int error, uint64_t connections) {
  refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, refusals,
                   "feed {}: cannot accept producers: {}{}", name(), uv_error_text(error),
                   accept_loss_text(connections));
}

void Fleet::on_hello_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* hello = static_cast<Hello*>(handle->data);
  if (hello == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  *buf = uv_buf_init(hello->fleet->read_buffer_, sizeof(hello->fleet->read_buffer_));
}

void Fleet::on_hello_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* hello = static_cast<Hello*>(stream->data);
  if (hello == nullptr || nread == 0) return;
  Fleet& fleet = *hello->fleet;
  if (nread < 0) {
    fleet.refuse(*hello, FleetRefusal::bad_hello,
                 nread == UV_EOF ? std::string("closed before naming itself")
                                 : "read failed: " + uv_error_text(static_cast<int>(nread)));
    return;
  }
  hello->buffer.append(buf->base, static_cast<size_t>(nread));
  // The first line that is not empty names the member (a hello), or is
  // the first record (name_from a pointer).
  const bool by_hello = fleet.options().name_from == FleetConfig::NameFrom::hello;
  for (;;) {
    const size_t newline = hello->buffer.find('\n', hello->scanned);
    if (newline == std::string::npos) break;
    std::string_view line(hello->buffer.data() + hello->first, newline - hello->first);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      hello->first = hello->scanned = newline + 1;
      continue;
    }
    MemberName name = by_hello ? member_name_from_hello(line)
                               : member_name_from_record(line, fleet.options().name_pointer);
    if (!name.ok()) return fleet.refuse(*hello, FleetRefusal::bad_hello, name.error);
    if (!name.token.empty()) hello->token_hash = sha256_hex(name.token);
    hello->name = std::move(name.name);
    // A hello is not part of the stream; a first record is.
    if (by_hello) hello->first = newline + 1;
    uv_read_stop(stream);
    fleet.named(*hello);
    return;
  }
  hello->scanned = hello->buffer.size();
  const size_t limit =
      by_hello ? max_hello_bytes : std::min(*fleet.config_.max_line_bytes, max_first_record_bytes);
  if (hello->buffer.size() - hello->first > limit) {
    fleet.refuse(
        *hello, FleetRefusal::bad_hello,
        fmt::format("no complete {} within {} bytes", by_hello ? "hello" : "first record", limit));
  }
}

void Fleet::named(Hello& hello) {
  if (admit(hello)) return;
  hello.waiting = true;
  ++waiting_;
}

void Fleet::retry_waiting() {
  if (waiting_ == 0) return;
  std::vector<Hello*> waiting;
  for (auto& [key, hello] : hellos_) {
    if (hello->waiting) waiting.push_back(key);
  }
  for (Hello* hello : waiting) {
    hello->waiting = false;
    --waiting_;
    named(*hello);
  }
}

bool Fleet::admit(Hello& hello) {
  const uint64_t now = host_.now();
  // Checked here, not when the hello is read: a hello waiting for its
  // member's previous connection meets the token list of its admission.
  if (!options().tokens_sha256.empty() &&
      !hash_allowed(hello.token_hash, options().tokens_sha256)) {
    listener_.count_tls_refusal(TlsFailure::token);
    refuse(hello, FleetRefusal::token,
           hello.token_hash.empty() ? "the hello carries no token" : "unknown token");
    return true;
  }
  auto it = members_.find(hello.name);
  if (it != members_.end() && it->second.connected) {
    // The same name twice: the old connection goes if it has gone quiet or
    // its producer is gone (a reset it has not read yet); otherwise the
    // new one is refused, so one producer cannot cut another off.
    MemberFeed& old = *it->second.feed;
    const uint64_t quiet_after = config_.idle_timeout_ms.value_or(5000);
    if (now - old.last_read_ms() < quiet_after && !old.producer_gone()) {
      refuse(hello, FleetRefusal::duplicate,
             fmt::format("member {} is connected{} and not quiet", hello.name, from(old.peer())));
      return true;
    }
    if (old.busy()) return false;
    const size_t unread = old.drop_connection();
    it->second.connected = false;
    --connected_;
    ++counters_.replaced;
    member_log_.log(now, unread > 0 ? LogLevel::warn : LogLevel::info, {"feed", name()},
                    member_events, "feed {}: member {} replaced its connection{} by one{}{}",
                    name(), hello.name, from(old.peer()), from(hello.peer),
                    unread > 0 ? fmt::format(" ({} bytes unread in the old one, discarded)", unread)
                               : std::string());
  } else if (it != members_.end() && it->second.feed->busy()) {
    // What the previous connection read is still being framed: the answer
    // must count it.
    return false;
  }
  if (it == members_.end()) {
    if (members_.size() >= options().max_members && !evict_one()) {
      refuse(hello, FleetRefusal::max_members,
             fmt::format("max_members ({}) reached", options().max_members));
      return true;
    }
    MemberFeed& feed = host_.add_member(*this, hello.name);
    it = members_.emplace(hello.name, Member{&feed, false, 0, {}}).first;
    ++counters_.joined;
  }
  MemberFeed& feed = *it->second.feed;
  if (options().ack) {
    const std::string answer = ack_line(host_.key_type(), feed);
    uv_buf_t buf =
        uv_buf_init(const_cast<char*>(answer.data()), static_cast<unsigned>(answer.size()));
    // A fresh connection's send buffer is empty: the line goes at once, or
    // the connection is broken.
    const int written = uv_try_write(hello.connection->stream(), &buf, 1);
    if (written != static_cast<int>(answer.size())) {
      refuse(hello, FleetRefusal::ack_failed,
             written < 0 ? "cannot answer: " + uv_error_text(written) : "cannot answer at once");
      if (!it->second.connected) it->second.left_at = now;
      return true;
    }
  }
  it->second.connected = true;
  it->second.token_hash = std::move(hello.token_hash);
  ++connected_;
  member_log_.log(now, LogLevel::info, {"feed", name()}, member_events,
                  "feed {}: member {} connected{}", name(), hello.name, from(hello.peer));
  host_.member_present(feed, true);
  const std::string_view rest = std::string_view(hello.buffer).substr(hello.first);
  feed.take_connection(std::move(hello.connection), rest, hello.peer, hello.socket);
  forget(hello);
  return true;
}

void Fleet::refuse(Hello& hello, FleetRefusal reason, std::string_view detail) {
  ++counters_.refused[static_cast<size_t>(reason)];
  refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, refusals,
                   "feed {}: refused a producer connection{} ({}): {}", name(), from(hello.peer),
                   to_string(reason), detail);
  forget(hello);
}

// Closing a connection with bytes unread resets it: its producer's next
// write fails rather than vanishing.
void Fleet::forget(Hello& hello) {
  if (hello.waiting) --waiting_;
  hellos_.erase(&hello);  // closes its connection, if it still has it
  if (listener_.held() && hellos_.size() < max_hellos / 2) listener_.hold(false);
}

bool Fleet::evict_one() {
  auto oldest = members_.end();
  for (auto it = members_.begin(); it != members_.end(); ++it) {
    if (it->second.connected) continue;
    if (oldest == members_.end() || it->second.left_at < oldest->second.left_at) oldest = it;
  }
  if (oldest == members_.end()) return false;
  log::debug("feed {}: member {} retired early to make room", name(), oldest->first);
  retire(oldest);
  return true;
}

void Fleet::retire(std::map<std::string, Member, std::less<>>::iterator member) {
  MemberFeed& feed = *member->second.feed;
  if (member->second.connected) --connected_;
  std::erase(budget_paused_, &feed);
  feed.set_budget_paused(false);  // a drain reads what is left
  feed.leave_fleet();
  members_.erase(member);
  ++counters_.retired;
  host_.retire_member(feed);
}

void Fleet::member_disconnected(MemberFeed& member, int status) {
  auto it = members_.find(member.member());
  if (it == members_.end() || it->second.feed != &member || !it->second.connected) return;
  it->second.connected = false;
  it->second.left_at = host_.now();
  --connected_;
  ++counters_.left;
  member_log_.log(host_.now(), LogLevel::info, {"feed", name()}, member_events,
                  "feed {}: member {} disconnected{}", name(), member.member(),
                  status == UV_EOF ? "" : " (" + uv_error_text(status) + ")");
  host_.member_present(member, false);
}

void Fleet::member_retired(const FeedStats& stats, const FeedCounters& counters) {
  counters_.retired_stats.add(stats);
  counters_.retired_counters.add(counters);
}

void Fleet::update(const FeedConfig& config) {
  config_ = config;
  revoking_ = !options().tokens_sha256.empty();
  drop_revoked();
}

void Fleet::drop_revoked() {
  if (!revoking_) return;
  revoking_ = false;
  const uint64_t now = host_.now();
  for (auto& [member_name, member] : members_) {
    if (!member.connected || hash_allowed(member.token_hash, options().tokens_sha256)) continue;
    MemberFeed& feed = *member.feed;
    if (feed.busy()) {
      revoking_ = true;  // its last batch counts first
      continue;
    }
    const size_t unread = feed.drop_connection();
    member.connected = false;
    member.left_at = now;
    --connected_;
    ++counters_.left;
    ++counters_.refused[static_cast<size_t>(FleetRefusal::token)];
    listener_.count_tls_refusal(TlsFailure::token);
    refusal_log_.log(
        now, LogLevel::warn, {"feed", name()}, refusals,
        "feed {}: member {} disconnected{}: its token was removed{}", name(), member_name,
        from(feed.peer()),
        unread > 0 ? fmt::format(" ({} bytes unread, discarded)", unread) : std::string());
    host_.member_present(feed, false);
  }
}

void Fleet::balance(uint64_t now) {
  drop_revoked();
  retry_waiting();
  check_budget(now);
}

// The budget is checked every 50 ms, not per record: a member fills at
// most its own high-water mark (plus a read in flight) in between, so the
// budget can be passed by that much. Members over their
// share are paused until their queue is down to a quarter of it; a member
// is never paused with an empty queue (the merge may be waiting for it).
void Fleet::check_budget(uint64_t now) {
  const Merger& merger = host_.merger();
  std::erase_if(budget_paused_, [&](MemberFeed* feed) {
    if (merger.queue_bytes(feed->id()) > share_ / 4) return false;
    feed->set_budget_paused(false);
    return true;
  });
  if (now < next_budget_check_) return;
  next_budget_check_ = now + 50;
  uint64_t total = 0;
  for (const auto& [name, member] : members_) total += merger.queue_bytes(member.feed->id());
  queue_bytes_ = total;
  if (total <= options().max_bytes) return;
  share_ = options().max_bytes / std::max<size_t>(members_.size(), 1);
  size_t paused = 0;
  for (const auto& [name, member] : members_) {
    MemberFeed& feed = *member.feed;
    if (feed.budget_paused() || merger.queue_bytes(feed.id()) <= share_) continue;
    feed.set_budget_paused(true);
    budget_paused_.push_back(&feed);
    ++paused;
  }
  if (paused > 0) {
    refusal_log_.log(now, LogLevel::warn, {"feed", name()}, "fleet budget pauses",
                     "feed {}: members queue {} bytes, over max_bytes ({}): {} members over their "
                     "share ({} bytes) paused",
                     name(), total, options().max_bytes, paused, share_);
  }
}

void Fleet::on_timer() {
  const uint64_t now = host_.now();
  std::vector<Hello*> late;
  for (auto& [key, hello] : hellos_) {
    if (now >= hello->deadline) late.push_back(key);
  }
  for (Hello* hello : late) {
    refuse(
        *hello, FleetRefusal::hello_timeout,
        fmt::format("no {} within hello_timeout_ms ({} ms)",
                    options().name_from == FleetConfig::NameFrom::hello ? "hello" : "first record",
                    options().hello_timeout_ms));
  }
  if (members_.size() > connected_) {
    for (auto it = members_.begin(); it != members_.end();) {
      auto next = std::next(it);
      if (!it->second.connected && now - it->second.left_at >= options().linger_ms) retire(it);
      it = next;
    }
  }
  refusal_log_.flush(now);
  member_log_.flush(now);
  feed_log_.flush(now);
  retry_waiting();
}

void Fleet::drain() {
  if (draining_) return;
  draining_ = true;
  listener_.close();
  timer_.close();
  waiting_ = 0;
  hellos_.clear();
  while (!members_.empty()) retire(members_.begin());
}

std::vector<FleetMemberView> Fleet::members() const {
  std::vector<FleetMemberView> views;
  views.reserve(members_.size());
  for (const auto& [name, member] : members_) {
    views.push_back(FleetMemberView{name, member.feed, member.connected});
  }
  return views;
}

}  // namespace chronomerge
