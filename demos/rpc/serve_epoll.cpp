// The RPC server as one thread running an epoll state machine: non-blocking sockets, a table of
// per-connection state, and a callback for each readiness event — the seed's "ugly state machines".
// Every request's life is split across on_readable (bytes in, replies queued) and on_writable (the
// rest of the replies out), with the interest set switched between them by hand.
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>

#include <array>
#include <set>
#include <unordered_map>

#include "demo_util.hpp"
#include "serve.hpp"

namespace rpc {
namespace {

class EpollServer {
 public:
  EpollServer(const Registry& api, const ServeOptions& options, int listener, int stop_fd)
      : api_(api), options_(options), listener_(listener), stop_fd_(stop_fd), ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (ep_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    watch(listener_, EPOLLIN, EPOLL_CTL_ADD);
    watch(stop_fd_, EPOLLIN, EPOLL_CTL_ADD);
  }
  ~EpollServer() {
    for (auto& [fd, conn] : conns_) ::close(fd);
    ::close(ep_);
  }

  void run() {
    std::array<epoll_event, 256> events;
    for (;;) {
      int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::system_error(errno, std::generic_category(), "epoll_wait");
      for (int i = 0; i < n; ++i) {
        int fd = events[static_cast<std::size_t>(i)].data.fd;
        std::uint32_t ev = events[static_cast<std::size_t>(i)].events;
        if (fd == stop_fd_) return;
        if (fd == listener_) on_acceptable();
        else if (ev & EPOLLOUT) on_writable(fd);
        else on_readable(fd);
      }
    }
  }

 private:
  struct Conn {
    explicit Conn(std::size_t max_frame) : decoder(max_frame) {}
    FrameDecoder decoder;
    std::string out;       // replies not yet sent
    bool closing = false;  // a malformed frame: close once `out` is sent
  };

  void watch(int fd, std::uint32_t events, int op) {
    epoll_event e{};
    e.events = events;
    e.data.fd = fd;
    if (::epoll_ctl(ep_, op, fd, &e) != 0) throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }

  void on_acceptable() {
    for (;;) {
      int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or out of fds (the backlog keeps them until the next event)
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conns_.emplace(fd, Conn(options_.max_frame));
      watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
  }

  void on_readable(int fd) {
    Conn& c = conns_.at(fd);
    std::array<char, 16 * 1024> buf;
    for (;;) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return close(fd);
      c.out += answer(api_, c.decoder, std::string_view(buf.data(), static_cast<std::size_t>(n)), c.closing);
      if (c.closing) break;
    }
    if (!c.out.empty()) on_writable(fd);
  }

  // Sends what it can. Replies left over: stop reading (back-pressure) and wait for EPOLLOUT.
  void on_writable(int fd) {
    Conn& c = conns_.at(fd);
    bool was_waiting = waiting_out_.count(fd) != 0;
    while (!c.out.empty()) {
      ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return close(fd);
      c.out.erase(0, static_cast<std::size_t>(n));
    }
    if (c.out.empty() && c.closing) return close(fd);
    if (!c.out.empty() && !was_waiting) {
      watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
      waiting_out_.insert(fd);
    } else if (c.out.empty() && was_waiting) {
      watch(fd, EPOLLIN, EPOLL_CTL_MOD);
      waiting_out_.erase(fd);
    }
  }

  void close(int fd) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns_.erase(fd);
    waiting_out_.erase(fd);
  }

  const Registry& api_;
  const ServeOptions& options_;
  int listener_, stop_fd_, ep_;
  std::unordered_map<int, Conn> conns_;
  std::set<int> waiting_out_;  // connections switched to EPOLLOUT
};

}  // namespace

int serve_epoll(const Registry& api, const ServeOptions& options) {
  auto& stop = demo::StopSignal::install();
  int listener = demo::listen_tcp(options.host, options.port, 1024);
  ::fcntl(listener, F_SETFL, ::fcntl(listener, F_GETFL) | O_NONBLOCK);
  demo::say("rpc_server (model=epoll) listening on {}", demo::bound_address(listener));
  {
    EpollServer server(api, options, listener, stop.fd());
    server.run();
  }
  ::close(listener);
  return 0;
}

}  // namespace rpc
