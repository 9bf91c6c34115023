// A plain blocking TCP client for tests that drive servers from outside fiberio (the demos, the
// POSIX server models): every wait is bounded by poll(), so a silent server fails a test instead of
// hanging it.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace fiberio_test {

class LineClient {
 public:
  using Ms = std::chrono::milliseconds;

  // Connects to 127.0.0.1:port; throws std::runtime_error if that fails.
  explicit LineClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      int e = errno;
      ::close(fd_);
      throw std::runtime_error(std::string("connect: ") + std::strerror(e));
    }
  }
  ~LineClient() { close(); }
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // The next line without "\n"; nullopt on timeout or EOF.
  std::optional<std::string> read_line(Ms timeout = Ms(10000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return std::nullopt;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // What one recv(max) returns, as Python's sock.recv(max) (the seeds' clients read this way);
  // nullopt on timeout, EOF or error.
  std::optional<std::string> recv_some(std::size_t max, Ms timeout = Ms(10000)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    std::string data(max, '\0');
    ssize_t n = ::recv(fd_, data.data(), max, 0);
    if (n <= 0) return std::nullopt;
    data.resize(static_cast<std::size_t>(n));
    return data;
  }

  // True if the server closes the connection (EOF) within timeout.
  bool sees_eof(Ms timeout = Ms(3000)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) <= 0;
  }

  // Reads and drops the rest of the stream: 0 if it ends in a clean EOF (FIN), the errno if it ends
  // in an error (ECONNRESET: the server reset the connection), -1 if it has not ended within timeout.
  int how_it_ends(Ms timeout) {
    auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<Ms>(until - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return -1;
      char sink[4096];
      ssize_t n = ::recv(fd_, sink, sizeof sink, 0);
      if (n == 0) return 0;
      if (n < 0) return errno;
    }
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

}  // namespace fiberio_test
