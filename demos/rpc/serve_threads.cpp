// The RPC server as an OS thread per connection, with blocking sockets. Ctrl+C: the accept loop
// sees the stop pipe, shuts every connection down (their blocking recv returns 0) and waits for
// their threads.
#include <netinet/tcp.h>

#include <array>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "demo_util.hpp"
#include "serve.hpp"

namespace rpc {
namespace {

bool send_all(int fd, const std::string& data) {
  for (std::size_t off = 0; off < data.size();) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

void serve_connection(const Registry& api, const ServeOptions& options, int fd) {
  FrameDecoder decoder(options.max_frame);
  // Small: it lives on each connection's stack. Measured with the fiber model at 1,000 clients, a
  // 16 KiB buffer left the server at 26 MiB resident, a 2 KiB one at 14 MiB, at the same speed.
  std::array<char, 4096> buf;
  for (bool close = false; !close;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::string reply = answer(api, decoder, std::string_view(buf.data(), static_cast<std::size_t>(n)), close);
    if (!reply.empty() && !send_all(fd, reply)) break;
  }
}

}  // namespace

int serve_threads(const Registry& api, const ServeOptions& options) {
  auto& stop = demo::StopSignal::install();
  int listener = demo::listen_tcp(options.host, options.port, 1024);
  demo::say("rpc_server (model=threads) listening on {}", demo::bound_address(listener));
  std::mutex m;
  std::condition_variable all_done;
  std::set<int> open;  // connections whose threads run; each thread closes its own fd
  for (;;) {
    pollfd p[2] = {{listener, POLLIN, 0}, {stop.fd(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
    if (p[1].revents) break;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) ::poll(nullptr, 0, 10);  // out of fds: let some close
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(m);
    open.insert(fd);
    std::thread([&, fd] {
      serve_connection(api, options, fd);
      std::lock_guard lock(m);
      open.erase(fd);
      ::close(fd);
      all_done.notify_all();
    }).detach();
  }
  ::close(listener);
  std::unique_lock lock(m);
  for (int fd : open) ::shutdown(fd, SHUT_RDWR);
  all_done.wait(lock, [&] { return open.empty(); });
  return 0;
}

}  // namespace rpc
