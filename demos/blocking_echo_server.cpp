// blocking_echo_server: ordinary blocking-style code that scales.
//
// A textbook POSIX echo server — socket, bind, listen, accept, read, write, close, every call blocking
// — except that each accepted connection is handled in its own greenlet. The handler contains no
// fiberio call at all: the libc shims (fiberio::patched, linked in) turn its blocking read() and write()
// into fiber switches, so one thread serves thousands of slow clients at once, as a gevent
// monkey-patched server does.
//
//   usage: blocking_echo_server [--port N] [--host ADDR]     (default 127.0.0.1:5004; Ctrl+C stops)
//   try:   printf 'hello\n' | nc -q1 127.0.0.1 5004
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <fiberio/fiberio.hpp>
#include <fiberio/patched.hpp>

namespace {

int g_stop_pipe[2] = {-1, -1};

void on_signal(int) {
  // Async-signal-safe: one byte into a nonblocking pipe that the accept loop polls.
  int saved = errno;
  [[maybe_unused]] auto r = ::write(g_stop_pipe[1], "x", 1);
  errno = saved;
}

// The per-connection handler: plain blocking POSIX code.
void echo(int fd) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    ssize_t sent = ::write(fd, buf, static_cast<size_t>(n));  // a blocking write sends it all
    if (sent != n) break;
  }
  ::close(fd);
}

constexpr const char* kUsage = "usage: blocking_echo_server [--port N] [--host ADDR]   (default 127.0.0.1:5004)\n";

// One line, as every demo's command-line error.
int usage_error(const std::string& why) {
  std::fprintf(stderr, "blocking_echo_server: error: %s (blocking_echo_server --help shows the usage)\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 5004;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if ((a == "--port" || a == "--host") && i + 1 < argc) {
      std::string v = argv[++i];
      if (a == "--host") {
        host = v;
        continue;
      }
      char* end = nullptr;
      long p = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || p < 0 || p > 65535) return usage_error("--port must be an integer in [0, 65535], got '" + v + "'");
      port = static_cast<int>(p);
      continue;
    }
    if (a == "--port" || a == "--host") return usage_error("option '" + a + "' needs a value");
    return usage_error((a.rfind('-', 0) == 0 ? "unknown option '" : "unexpected argument '") + a + "'");
  }

  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return usage_error("--host must be an IPv4 address, got '" + host + "'");
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, SOMAXCONN) != 0) {
    std::fprintf(stderr, "blocking_echo_server: cannot listen on %s:%d: %s\n", host.c_str(), port, std::strerror(errno));
    return 1;
  }
  socklen_t alen = sizeof addr;  // --port 0: the kernel chose; say which
  if (::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen) == 0) port = ntohs(addr.sin_port);

  ::pipe2(g_stop_pipe, O_NONBLOCK | O_CLOEXEC);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-write is just a failed write

  long served = 0;
  std::set<int> open_fds;
  // The accept loop runs in a greenlet too (spawning one gives this thread its hub, which the shims
  // need): it blocks in poll() and accept() like any single-threaded server.
  auto acceptor = fiberio::spawn([&] {
    std::printf("blocking_echo_server: listening on %s:%d (libc shims %s)\n", host.c_str(), port,
                fiberio::patched::active() ? "active" : "INACTIVE");
    std::fflush(stdout);
    for (;;) {
      pollfd fds[2] = {{lfd, POLLIN, 0}, {g_stop_pipe[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
      if (fds[1].revents) break;  // Ctrl+C
      if (!(fds[0].revents & POLLIN)) continue;
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++served;
      open_fds.insert(fd);
      fiberio::spawn([fd, &open_fds] {
        echo(fd);
        open_fds.erase(fd);
      });
    }
  });
  acceptor.join();

  // Stop: no new connections; hang up on the open ones so their handlers' reads see EOF and end.
  ::close(lfd);
  std::size_t still_open = open_fds.size();
  for (int fd : std::vector<int>(open_fds.begin(), open_fds.end())) ::shutdown(fd, SHUT_RDWR);
  for (int i = 0; i < 5000 && !open_fds.empty(); ++i) fiberio::sleep(std::chrono::milliseconds(1));
  std::printf("blocking_echo_server: stopped; served %ld connections (%zu still open at Ctrl+C)\n", served,
              still_open);
  return 0;
}
