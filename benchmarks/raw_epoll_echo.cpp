// raw_epoll_echo: the physical reference for the network benchmarks — what a careful C programmer
// writes by hand for an echo server: one thread, nonblocking sockets, epoll, no allocation per
// request. fiberio's servers are judged by their requests per server-CPU-second relative to this one
// (benchmarks/run_net.sh).
//
//   raw_epoll_echo --port P [--host 127.0.0.1] [--trigger level|edge]
//
// --trigger level (default, as redis does): one recv() per readiness event and the send() of what it
//   read — 2 syscalls per small request plus a share of epoll_wait; a short read needs no drain
//   because level-triggered epoll reports the socket again if more is left.
// --trigger edge: registered once for in+out, edge-triggered (the way fiberio's hub registers fds);
//   each event must read until EAGAIN, so a small request costs recv, send, recv(EAGAIN).
// run_net.sh measures both and uses the cheaper one as the reference, so nothing is compared against
// a strawman.
//
// Echoes every byte back unchanged. Bytes the kernel cannot take right away are kept per connection
// and flushed when writable (reading from that connection pauses meanwhile, so memory stays bounded).
// Runs until SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Conn {
  int fd = -1;
  std::string pending;  // bytes read but not yet sent
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "raw_epoll_echo: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void close_conn(int ep, Conn* c) {
  ::epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
  ::close(c->fd);
  delete c;
}

// Sends c->pending; false if the connection failed.
bool flush(Conn* c) {
  std::size_t off = 0;
  while (off < c->pending.size()) {
    ssize_t n = ::send(c->fd, c->pending.data() + off, c->pending.size() - off, MSG_NOSIGNAL);
    if (n > 0) { off += static_cast<std::size_t>(n); continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return false;
  }
  c->pending.erase(0, off);
  return true;
}

bool g_edge = false;

// Echoes what is readable; false if the connection is finished. Level-triggered: one recv (a full
// buffer means more may be queued; epoll will report it again). Edge-triggered: until EAGAIN.
bool serve(int ep, Conn* c) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      ssize_t w = ::send(c->fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
      if (w != n) {
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
        c->pending.assign(buf + (w > 0 ? w : 0), buf + n);
        if (!flush(c)) return false;
        if (!c->pending.empty()) {
          if (!g_edge) {  // stop reading until the backlog is sent
            epoll_event ev{};
            ev.events = EPOLLOUT;
            ev.data.ptr = c;
            ::epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
          }
          return true;
        }
      }
      if (!g_edge) return true;
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// The socket became writable with a backlog pending; false if the connection failed.
bool resume(int ep, Conn* c) {
  if (!flush(c)) return false;
  if (!c->pending.empty()) return true;
  if (g_edge) return serve(ep, c);  // no further edge would come for bytes already queued
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.ptr = c;
  ::epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") port = std::atoi(argv[i + 1]);
    else if (a == "--host") host = argv[i + 1];
    else if (a == "--trigger" && std::string(argv[i + 1]) == "edge") g_edge = true;
    else if (a == "--trigger" && std::string(argv[i + 1]) == "level") g_edge = false;
    else { std::fprintf(stderr, "raw_epoll_echo: unknown option %s\n", a.c_str()); return 2; }
  }
  if (argc % 2 == 0 || port <= 0 || port > 65535) {
    std::fprintf(stderr, "usage: raw_epoll_echo --port P [--host 127.0.0.1] [--trigger level|edge]\n");
    return 2;
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; ::setrlimit(RLIMIT_NOFILE, &rl); }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "raw_epoll_echo: bad --host %s (numeric IPv4 expected)\n", host.c_str());
    return 2;
  }
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("bind");
  if (::listen(lfd, SOMAXCONN) < 0) die("listen");

  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // null marks the listener
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");

  std::vector<epoll_event> events(1024);
  while (!g_stop) {
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(events[i].data.ptr);
      if (!c) {
        for (;;) {
          int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) std::perror("raw_epoll_echo: accept4");
            break;  // EAGAIN (or out of fds: retried on the next event)
          }
          auto* nc = new Conn{fd, {}};
          epoll_event ev{};
          ev.events = g_edge ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLIN | EPOLLRDHUP;
          ev.data.ptr = nc;
          if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { ::close(fd); delete nc; }
        }
        continue;
      }
      std::uint32_t e = events[i].events;
      bool ok = true;
      if (!c->pending.empty()) {
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ok = resume(ep, c);
      } else if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        ok = serve(ep, c);
      }
      if (!ok) close_conn(ep, c);
    }
  }
  ::close(ep);
  ::close(lfd);
  return 0;
}
