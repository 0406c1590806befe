#include "net/service_notify.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <string>

#include "io/loop_support.h"

using namespace chronomerge;
using namespace std::chrono_literals;

namespace {

// A datagram socket bound to `name` ("/path" or "@abstract"), standing in
// for the service manager.
class ManagerSocket {
 public:
  explicit ManagerSocket(const std::string& name) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(name.size() < sizeof(address.sun_path));
    name.copy(address.sun_path, name.size());
    if (name[0] == '@') address.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0);
  }
  ~ManagerSocket() { close(fd_); }
  ManagerSocket(const ManagerSocket&) = delete;
  ManagerSocket& operator=(const ManagerSocket&) = delete;

  // The next datagram, or "(none)" if nothing has arrived.
  std::string receive() {
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    return n < 0 ? "(none)" : std::string(buffer, static_cast<size_t>(n));
  }

 private:
  int fd_ = -1;
};

}  // namespace

TEST_CASE("the service manager is notified on the socket NOTIFY_SOCKET names") {
  testing::TempDir dir;
  SUBCASE("a path: one datagram per notification, as sent") {
    const std::string path = (dir.path / "notify").string();
    ManagerSocket manager(path);
    CHECK(notify_service_manager(path, "READY=1\nSTATUS=merging 3 feeds into 2 outputs") == "");
    CHECK(notify_service_manager(path, "WATCHDOG=1") == "");
    CHECK(manager.receive() == "READY=1\nSTATUS=merging 3 feeds into 2 outputs");
    CHECK(manager.receive() == "WATCHDOG=1");
    CHECK(manager.receive() == "(none)");
  }
  SUBCASE("an abstract name, after '@'") {
    const std::string name = "@chronomerge-notify-test-" + std::to_string(getpid());
    ManagerSocket manager(name);
    CHECK(notify_service_manager(name, "STOPPING=1") == "");
    CHECK(manager.receive() == "STOPPING=1");
  }
  SUBCASE("without a socket nothing is sent and nothing failed") {
    CHECK(notify_service_manager("", "READY=1") == "");
  }
  SUBCASE("a socket nobody listens on is a failure that names it") {
    const std::string path = (dir.path / "gone").string();
    const std::string error = notify_service_manager(path, "READY=1");
    CHECK(error.find(path) != std::string::npos);
    CHECK(error.find("No such file") != std::string::npos);
  }
  SUBCASE("a name that is neither a path nor abstract is refused") {
    CHECK(notify_service_manager("notify", "READY=1") ==
          "NOTIFY_SOCKET 'notify' is not a socket path or an abstract name");
    CHECK(notify_service_manager("/" + std::string(200, 'x'), "READY=1") != "");
  }
}

TEST_CASE("the watchdog interval comes from WATCHDOG_USEC, for this process only") {
  const pid_t self = 4242;
  CHECK(service_watchdog_interval("200000", nullptr, self) == 200ms);
  CHECK(service_watchdog_interval("200000", "4242", self) == 200ms);
  SUBCASE("meant for another process: none") {
    CHECK(service_watchdog_interval("200000", "4243", self) == std::nullopt);
    CHECK(service_watchdog_interval("200000", "x", self) == std::nullopt);
  }
  SUBCASE("unset, zero or not a number: none") {
    CHECK(service_watchdog_interval(nullptr, nullptr, self) == std::nullopt);
    CHECK(service_watchdog_interval("0", nullptr, self) == std::nullopt);
    CHECK(service_watchdog_interval("", nullptr, self) == std::nullopt);
    CHECK(service_watchdog_interval("-5", nullptr, self) == std::nullopt);
    CHECK(service_watchdog_interval("200ms", nullptr, self) == std::nullopt);
  }
}
