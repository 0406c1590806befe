#include "uv/tls_acceptor.h"

#include <unistd.h>

namespace chronomerge {

namespace {
constexpr uint64_t tick_ms = 100;
constexpr std::string_view refusals = "TLS refusals";
}  // namespace

TlsAcceptor::TlsAcceptor(uv_loop_t* loop, std::shared_ptr<const TlsContext> context,
                         std::string name, Deliver deliver, Hold hold)
    : loop_(loop),
      context_(std::move(context)),
      name_(std::move(name)),
      deliver_(std::move(deliver)),
      hold_(std::move(hold)) {
  counters_.certificate_expiry = context_->expires_at();
  for (const std::string& warning : context_->warnings()) log::warn("{}: {}", name_, warning);
  if (uv_idle_init(loop_, turn_.get()) == 0) turn_.initialized(this);
  if (uv_timer_init(loop_, timer_.get()) == 0) {
    timer_.initialized(this);
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* self = static_cast<TlsAcceptor*>(timer->data)) self->on_timer();
        },
        tick_ms, tick_ms);
    uv_unref(timer_.base());
  }
}

TlsAcceptor::~TlsAcceptor() {
  timer_.close();
  turn_.close();
  entries_.clear();  // bridges close their handles
}

void TlsAcceptor::accept(uv_os_sock_t socket, std::string address) {
  if (stopped_) {
    ::close(socket);
    return;
  }
  entries_.emplace_back();
  Entry& entry = entries_.back();
  entry.address = std::move(address);
  entry.deadline = uv_now(loop_) + context_->config().handshake_timeout_ms;
  ++counters_.in_flight;
  if (counters_.in_flight >= context_->config().max_handshakes && !holding_) {
    holding_ = true;
    hold_(true);
  }
  entry.bridge = std::make_unique<TlsBridge>(
      loop_, context_,
      [this, &entry](uv_os_sock_t plaintext, const TlsPeer& peer) {
        handshake_over(entry);
        ++counters_.connections;
        deliver_(plaintext, entry.address, peer);
      },
      [this, &entry](TlsFailure failure, const std::string& detail) {
        handshake_over(entry);
        ++counters_.refused[static_cast<size_t>(failure)];
        log_.log(uv_now(loop_), LogLevel::warn, {"listener", name_}, refusals,
                 "{}: TLS refused a connection from {} ({}): {}", name_, entry.address,
                 to_string(failure), detail);
      });
  entry.bridge->set_pace([this, &entry] { return may_step(entry); });
  if (entry.bridge->start(socket) < 0) {
    handshake_over(entry);
    ++counters_.refused[static_cast<size_t>(TlsFailure::handshake)];
  }
}

bool TlsAcceptor::may_step(Entry& entry) {
  const uint64_t now = uv_now(loop_);
  if (now != steps_at_) {  // the loop has moved on since: a new turn
    steps_at_ = now;
    steps_ = 0;
  }
  if (steps_ < steps_per_turn && waiting_.empty()) {
    ++steps_;
    return true;
  }
  waiting_.push_back(&entry);
  if (turn_.open()) {
    uv_idle_start(turn_.get(), [](uv_idle_t* idle) {
      if (auto* self = static_cast<TlsAcceptor*>(idle->data)) self->on_turn();
    });
  }
  return false;
}

void TlsAcceptor::on_turn() {
  steps_at_ = uv_now(loop_);
  steps_ = 0;
  while (!waiting_.empty() && steps_ < steps_per_turn) {
    Entry* entry = waiting_.front();
    waiting_.pop_front();
    ++steps_;
    entry->bridge->resume_handshake();  // may call out, even stop() this
  }
  if (waiting_.empty() && turn_.open()) uv_idle_stop(turn_.get());
}

void TlsAcceptor::handshake_over(Entry& entry) {
  if (entry.counted) return;
  entry.counted = true;
  --counters_.in_flight;
  if (holding_ && counters_.in_flight < context_->config().max_handshakes / 2 + 1) {
    holding_ = false;
    hold_(false);
  }
}

void TlsAcceptor::set_context(std::shared_ptr<const TlsContext> context) {
  context_ = std::move(context);
  counters_.certificate_expiry = context_->expires_at();
  for (const std::string& warning : context_->warnings()) log::warn("{}: {}", name_, warning);
  size_t closed = 0;
  for (Entry& entry : entries_) {
    if (entry.bridge->recheck(*context_)) continue;
    ++closed;
    ++counters_.refused[static_cast<size_t>(TlsFailure::cert)];
    log_.log(uv_now(loop_), LogLevel::warn, {"listener", name_}, refusals,
             "{}: closed the connection from {}: its certificate is no longer accepted", name_,
             entry.address);
  }
  if (closed > 0) log::info("{}: TLS material reloaded; {} connections closed", name_, closed);
}

// The timer now keeps the loop running until the last bridge is done (the
// owners close their ends as they stop), then closes: a daemon that exits
// leaves no handle open.
void TlsAcceptor::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (Entry& entry : entries_) {
    if (entry.bridge->handshaking()) entry.bridge->time_out();
  }
  if (timer_.open()) uv_ref(timer_.base());
  reap();
}

// Handshakes past their deadline fail; bridges that are done go.
void TlsAcceptor::on_timer() {
  const uint64_t now = uv_now(loop_);
  for (Entry& entry : entries_) {
    if (entry.bridge->handshaking() && now >= entry.deadline) entry.bridge->time_out();
  }
  reap();
  log_.flush(now);
}

void TlsAcceptor::reap() {
  std::erase_if(waiting_, [](const Entry* entry) { return entry->bridge->done(); });
  std::erase_if(entries_, [](const Entry& entry) { return entry.bridge->done(); });
  if (stopped_ && entries_.empty()) {
    timer_.close();
    turn_.close();
  }
}

}  // namespace chronomerge
