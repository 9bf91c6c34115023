#include "fiberio/socket.hpp"

#include "fiberio/detail/fd_wait_error.hpp"
#include "fiberio/hub.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "fiberio/io.hpp"
#include "fiberio/time.hpp"

namespace fiberio {

void throw_net_error(int err, const std::string& what) {
  switch (err) {
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      throw ConnectionReset(err, what);
    case ECONNREFUSED:
      throw ConnectionRefused(err, what);
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENETRESET:
      throw ConnectionError(err, what);
    case EBADF:
      throw ClosedError(what + ": the socket is closed");
    default:
      throw std::system_error(err, std::generic_category(), what);
  }
}

namespace {
std::string ms_text(const OptDuration& d) {
  if (!d) return "no limit";
  return fmt::format("{:g} ms", std::chrono::duration<double, std::milli>(*d).count());
}

void make_nonblocking_cloexec(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) throw std::system_error(errno, std::generic_category(), fmt::format("fiberio::Socket(fd {})", fd));
  if (!(fl & O_NONBLOCK) && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    throw std::system_error(errno, std::generic_category(), fmt::format("fiberio::Socket(fd {}): O_NONBLOCK", fd));
  int fdfl = ::fcntl(fd, F_GETFD);
  if (fdfl >= 0 && !(fdfl & FD_CLOEXEC)) ::fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
}

const char* family_name(int family) {
  switch (family) {
    case AF_INET: return "AF_INET";
    case AF_INET6: return "AF_INET6";
    case AF_UNIX: return "AF_UNIX";
    default: return "AF_?";
  }
}
}  // namespace

Socket::Socket(int fd) {
  if (fd < 0) throw std::invalid_argument(fmt::format("fiberio::Socket({}): not a valid fd", fd));
  make_nonblocking_cloexec(fd);
  fd_ = fd;
  int proto = 0, type = 0;
  socklen_t len = sizeof proto;
  if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP) {
    len = sizeof type;
    tcp_ = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
  }
}

Socket::Socket(int family, int type, int protocol) {
  tcp_ = (family == AF_INET || family == AF_INET6) && type == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP);
  fd_ = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd_ < 0)
    throw std::system_error(errno, std::generic_category(),
                            fmt::format("fiberio::Socket({}, {}): socket()", family_name(family),
                                        type == SOCK_STREAM ? "SOCK_STREAM" : type == SOCK_DGRAM ? "SOCK_DGRAM" : "?"));
}

std::pair<Socket, Socket> Socket::pair(int type) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
    throw std::system_error(errno, std::generic_category(), "fiberio::Socket::pair: socketpair()");
  std::pair<Socket, Socket> p;
  p.first.fd_ = fds[0];
  p.second.fd_ = fds[1];
  return p;
}

Socket::~Socket() { close(); }

Socket::Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)), tcp_(o.tcp_), timeout_(o.timeout_) {}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
    tcp_ = o.tcp_;
    timeout_ = o.timeout_;
  }
  return *this;
}

int Socket::release() noexcept { return std::exchange(fd_, -1); }

void Socket::close() noexcept {
  if (fd_ >= 0) fiberio::close(std::exchange(fd_, -1));
}

void Socket::throw_closed(const char* op) {
  throw ClosedError(fmt::format("fiberio::Socket::{}: the socket is closed", op));
}

std::string Socket::label(const char* op) const {
  if (fd_ < 0) return fmt::format("fiberio::Socket::{}", op);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    return fmt::format("fiberio::Socket::{}(fd {}, peer {})", op, fd_,
                       Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len));
  return fmt::format("fiberio::Socket::{}(fd {})", op, fd_);
}

void Socket::wait(detail::Io dir, detail::Deadline deadline, const char* op) {
  auto r = detail::Hub::current().wait_fd(checked_fd(op), dir, deadline, true);
  if (r != detail::FdWait::Ready) [[unlikely]] wait_failed(r, deadline, op);
}

// Out of line, so the frame that every parked reader keeps on its stack stays small.
void Socket::wait_failed(detail::FdWait r, detail::Deadline deadline, const char* op) {
  // A spurious early wake-up is not a timeout: the caller retries the syscall.
  if (r == detail::FdWait::TimedOut && Clock::now() < deadline) return;
  if (r == detail::FdWait::TimedOut && request_timeout_ && deadline == progress_at_ + *request_timeout_)
    detail::throw_if_failed(r, label(op) + " (request timeout: nothing sent to the peer for that long)",
                            request_timeout_);
  detail::throw_if_failed(r, label(op), timeout_);
}

// A call's deadline, computed from the socket's timeout on its first wait only: the fast path (the
// system call succeeds at once) does not read the clock.
struct Socket::Deadline {
  detail::Deadline at{};
  bool known = false;
  detail::Deadline get(const OptDuration& timeout) {
    if (!known) {
      at = detail::deadline_after(timeout);
      known = true;
    }
    return at;
  }
};

void Socket::set_request_timeout(OptDuration d) {
  request_timeout_ = d;
  progress_at_ = Clock::now();
}

// The one retry loop of Socket's I/O calls, in the shape of Go's internal/poll: attempt(fd) makes the
// system call; a result >= 0 is returned; EINTR tries again; EAGAIN waits for readiness (until the
// deadline) and tries again; any other errno throws (throw_net_error). The fd is re-checked after each
// wait: close() from another fiber meanwhile makes it -1.
template <class Attempt>
ssize_t Socket::retry(detail::Io dir, const char* op, Deadline& deadline, Attempt attempt) {
  for (;;) {
    int fd = checked_fd(op);
    ssize_t n = attempt(fd);
    if (n >= 0) return n;
    int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) throw_net_error(e, label(op));
    wait(dir, deadline.get(timeout_), op);
  }
}

int Socket::family() const {
  return getsockopt(SOL_SOCKET, SO_DOMAIN);
}

int Socket::type() const { return getsockopt(SOL_SOCKET, SO_TYPE); }

void Socket::bind(const Address& addr) {
  int fd = checked_fd("bind");
  if (::bind(fd, addr.sockaddr_ptr(), addr.sockaddr_len()) < 0)
    throw_net_error(errno, fmt::format("fiberio::Socket::bind(fd {}, {})", fd, addr));
}

void Socket::listen(int backlog) {
  int fd = checked_fd("listen");
  if (::listen(fd, backlog) < 0) throw_net_error(errno, fmt::format("fiberio::Socket::listen(fd {})", fd));
}

std::pair<Socket, Address> Socket::accept() {
  Deadline deadline;
  sockaddr_storage ss{};
  socklen_t len = 0;
  int c = static_cast<int>(retry(detail::Io::Read, "accept", deadline, [&](int fd) {
    len = sizeof ss;
    int r = ::accept4(fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    // ECONNABORTED: that client gave up before we took it; the next one may be waiting.
    if (r < 0 && errno == ECONNABORTED) errno = EINTR;
    return r;
  }));
  std::pair<Socket, Address> r;
  r.first.fd_ = c;
  r.first.tcp_ = tcp_;
  r.second = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  return r;
}

void Socket::connect(const Address& addr) { connect(addr, timeout_); }

void Socket::connect(const Address& addr, OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  auto what = [&] { return fmt::format("fiberio::Socket::connect(fd {}, {})", fd_, addr); };
  Duration backoff = std::chrono::milliseconds(1);
  for (;;) {
    int fd = checked_fd("connect");
    if (::connect(fd, addr.sockaddr_ptr(), addr.sockaddr_len()) == 0) return;
    int e = errno;
    if (e == EINPROGRESS || e == EINTR) break;  // after EINTR the connect continues asynchronously
    if (e == EAGAIN && addr.is_unix()) {
      // A unix listener's backlog is full: the kernel offers no readiness event for that, so retry.
      if (Clock::now() >= deadline)
        throw TimeoutError(fmt::format("{}: timed out ({}); the listener's backlog is full", what(), ms_text(timeout)));
      sleep(std::min<Duration>(backoff, deadline - Clock::now()));
      backoff = std::min<Duration>(backoff * 2, std::chrono::milliseconds(50));
      continue;
    }
    if (e == ENOENT && addr.is_unix()) throw ConnectionRefused(ECONNREFUSED, what() + ": no such socket file");
    throw_net_error(e, what());
  }
  for (;;) {
    int fd = checked_fd("connect");
    auto r = detail::Hub::current().wait_fd(fd, detail::Io::Write, deadline, true);
    if (r == detail::FdWait::TimedOut && Clock::now() < deadline) continue;  // spurious: wait again
    detail::throw_if_failed(r, what(), timeout);
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0) {
      // Writable with no error can also be a spurious edge before the handshake finished.
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0) return;
      if (errno != ENOTCONN) throw_net_error(errno, what());
      continue;
    }
    throw_net_error(err, what());
  }
}

std::size_t Socket::recv(std::span<char> buf, int flags) {
  int fd = checked_fd("recv");
  if (buf.empty()) return 0;
  Deadline deadline;
  if (request_timeout_) {  // the earlier of the call's timeout and the request's deadline
    auto request_end = progress_at_ + *request_timeout_;
    auto op_end = detail::deadline_after(timeout_);
    deadline.at = std::min(op_end, request_end);
    deadline.known = true;
  }
  // A plain TCP read that came back short emptied the queue: until the hub reports a read event, wait
  // before reading rather than pay for a recv that returns EAGAIN (Hub::note_drained). Not with a zero
  // timeout: that caller wants whatever is there now, even if the hub has not polled since it came.
  bool drain_hint = tcp_ && flags == 0;
  if (drain_hint && detail::Hub::current().read_drained(fd) && !(timeout_ && *timeout_ <= Duration::zero()))
    wait(detail::Io::Read, deadline.get(timeout_), "recv");
  auto n = static_cast<std::size_t>(retry(detail::Io::Read, "recv", deadline,
                                          [&](int f) { return ::recv(f, buf.data(), buf.size(), flags); }));
  if (drain_hint && n > 0 && n < buf.size()) detail::Hub::current().note_drained(fd_);
  return n;
}

std::string Socket::recv(std::size_t max_bytes) {
  std::string s(max_bytes, '\0');
  s.resize(recv(std::span<char>(s.data(), s.size())));
  return s;
}

std::size_t Socket::send(std::string_view data, int flags) {
  checked_fd("send");
  detail::exploration_point();  // seeded mode may switch here, even when the send would not block
  if (data.empty()) return 0;
  Deadline deadline;
  auto n = static_cast<std::size_t>(retry(detail::Io::Write, "send", deadline, [&](int fd) {
    return ::send(fd, data.data(), data.size(), flags | MSG_NOSIGNAL);
  }));
  sent();
  return n;
}

void Socket::sendall(std::string_view data) {
  checked_fd("sendall");
  detail::exploration_point();  // seeded mode may switch here, even when the send would not block
  Deadline deadline;  // one deadline for the whole data
  while (!data.empty()) {
    auto n = retry(detail::Io::Write, "sendall", deadline,
                   [&](int fd) { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL); });
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  sent();
}

void Socket::shutdown(ShutdownHow how) {
  int fd = checked_fd("shutdown");
  if (::shutdown(fd, static_cast<int>(how)) < 0) throw_net_error(errno, label("shutdown"));
}

std::pair<std::size_t, Address> Socket::recvfrom(std::span<char> buf, int flags) {
  Deadline deadline;
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto n = retry(detail::Io::Read, "recvfrom", deadline, [&](int fd) {
    len = sizeof ss;
    return ::recvfrom(fd, buf.data(), buf.size(), flags, reinterpret_cast<sockaddr*>(&ss), &len);
  });
  return {std::min(static_cast<std::size_t>(n), buf.size()), Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len)};
}

std::pair<std::string, Address> Socket::recvfrom(std::size_t max_bytes) {
  std::string s(max_bytes, '\0');
  auto [n, from] = recvfrom(std::span<char>(s.data(), s.size()));
  s.resize(n);
  return {std::move(s), std::move(from)};
}

std::size_t Socket::sendto(std::string_view data, const Address& to, int flags) {
  Deadline deadline;
  return static_cast<std::size_t>(retry(detail::Io::Write, "sendto", deadline, [&](int fd) {
    return ::sendto(fd, data.data(), data.size(), flags | MSG_NOSIGNAL, to.sockaddr_ptr(), to.sockaddr_len());
  }));
}

void Socket::setsockopt(int level, int name, int value) { setsockopt(level, name, &value, sizeof value); }

void Socket::setsockopt(int level, int name, const void* value, socklen_t len) {
  int fd = checked_fd("setsockopt");
  if (::setsockopt(fd, level, name, value, len) < 0)
    throw std::system_error(errno, std::generic_category(),
                            fmt::format("fiberio::Socket::setsockopt(fd {}, level {}, option {})", fd, level, name));
}

int Socket::getsockopt(int level, int name) const {
  int fd = checked_fd("getsockopt");
  int value = 0;
  socklen_t len = sizeof value;
  if (::getsockopt(fd, level, name, &value, &len) < 0)
    throw std::system_error(errno, std::generic_category(),
                            fmt::format("fiberio::Socket::getsockopt(fd {}, level {}, option {})", fd, level, name));
  return value;
}

void Socket::set_reuse_port(bool on) { setsockopt(SOL_SOCKET, SO_REUSEPORT, on); }

void Socket::set_nodelay(bool on) { setsockopt(IPPROTO_TCP, TCP_NODELAY, on); }

void Socket::set_linger(std::optional<std::chrono::seconds> linger) {
  ::linger l{};
  l.l_onoff = linger ? 1 : 0;
  l.l_linger = linger ? static_cast<int>(linger->count()) : 0;
  setsockopt(SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

Address Socket::local_address() const {
  int fd = checked_fd("local_address");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    throw_net_error(errno, fmt::format("fiberio::Socket::local_address(fd {})", fd));
  return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Address Socket::peer_address() const {
  int fd = checked_fd("peer_address");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    throw_net_error(errno, fmt::format("fiberio::Socket::peer_address(fd {})", fd));
  return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace fiberio
