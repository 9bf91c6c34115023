// Socket: a cooperative socket (gevent.socket). Every blocking call blocks only the calling fiber.
//
// * fds are nonblocking and close-on-exec; the fd is registered with the hub once, on its first
//   wait, and unregistered by close(), which wakes any fiber waiting on it with ClosedError.
// * SIGPIPE never happens: every send uses MSG_NOSIGNAL (a write to a dead peer throws
//   ConnectionReset instead).
// * Timeouts follow gevent: set_timeout(d) makes every later operation (each recv, accept, connect;
//   sendall as a whole) throw TimeoutError if it cannot complete within d; set_timeout({}) (the
//   default) means "wait as long as it takes" — blocking only the fiber, never the thread.
// * The three ways a read ends are distinguishable: recv() returns 0 at EOF (the peer closed
//   cleanly), throws ConnectionReset when the peer reset the connection, TimeoutError on timeout.
// * Two fibers reading (or two writing) the same socket at once: the second gets
//   ConcurrentObjectUseError (one reader and one writer at once is fine).
// * A Socket belongs to the thread (hub) that uses it: move it to another thread only before its first
//   blocking operation, and close it on the thread that used it.
#pragma once
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "fiberio/address.hpp"
#include "fiberio/errors.hpp"
#include "fiberio/hub.hpp"

namespace fiberio {

// ---- network errors ----
// Every error a socket operation raises is one of: TimeoutError (errors.hpp), ClosedError (the socket
// was closed, possibly by another fiber while this one waited), ConcurrentObjectUseError, or a
// std::system_error whose code() is the errno — ConnectionError and its subclasses for the errors
// that mean "the connection is gone or never came up".

// The connection failed or broke (base of the classes below; also ETIMEDOUT/EHOSTUNREACH/ENETUNREACH).
class ConnectionError : public std::system_error {
 public:
  ConnectionError(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};
// The peer reset the connection (ECONNRESET), or it is gone while we write (EPIPE), or it was aborted
// before accept (ECONNABORTED).
class ConnectionReset : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};
// Nobody listens at the address (ECONNREFUSED; for unix sockets also a missing path).
class ConnectionRefused : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// Throws the fiberio exception for errno `err` of operation `what` (e.g. "recv(fd 7)"):
// ConnectionReset / ConnectionRefused / ConnectionError / ClosedError (EBADF) / std::system_error.
[[noreturn]] void throw_net_error(int err, const std::string& what);

enum class ShutdownHow { Read = SHUT_RD, Write = SHUT_WR, Both = SHUT_RDWR };

class Socket {
 public:
  // An empty socket (fd() == -1, !valid()).
  Socket() noexcept = default;
  // Adopts an open socket fd: makes it nonblocking and close-on-exec; closes it in the destructor.
  explicit Socket(int fd);
  // Adopts an fd that is already nonblocking and close-on-exec (from accept4 / socket with
  // SOCK_NONBLOCK | SOCK_CLOEXEC) without the fcntl calls; `tcp`: it is a TCP stream socket.
  static Socket adopt(int fd, bool tcp = false) noexcept {
    Socket s;
    s.fd_ = fd;
    s.tcp_ = tcp;
    return s;
  }
  // A new socket of the given family (AF_INET, AF_INET6, AF_UNIX), type and protocol.
  Socket(int family, int type, int protocol = 0);
  static Socket tcp(int family = AF_INET) { return Socket(family, SOCK_STREAM); }
  static Socket udp(int family = AF_INET) { return Socket(family, SOCK_DGRAM); }
  static Socket unix_stream() { return Socket(AF_UNIX, SOCK_STREAM); }
  static Socket unix_dgram() { return Socket(AF_UNIX, SOCK_DGRAM); }
  // A socket of the address's family: Socket::for_address(addr) then bind/connect(addr).
  static Socket for_address(const Address& addr, int type = SOCK_STREAM) { return Socket(addr.family(), type); }
  // A connected pair of unix sockets (socketpair).
  static std::pair<Socket, Socket> pair(int type = SOCK_STREAM);

  ~Socket();
  Socket(Socket&& o) noexcept;
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  bool closed() const noexcept { return fd_ < 0; }
  int family() const;
  int type() const;
  // Gives up ownership: returns the fd (still registered with the hub if it was waited on; use
  // fiberio::close on it) and leaves this Socket empty.
  int release() noexcept;
  // Closes the fd (through fiberio::close: fibers waiting on it get ClosedError). Idempotent.
  void close() noexcept;

  // ---- timeouts (gevent semantics, see top) ----
  void set_timeout(OptDuration timeout) noexcept { timeout_ = timeout; }
  OptDuration timeout() const noexcept { return timeout_; }
  // A deadline that incoming bytes do not extend (set_timeout restarts with every recv, so a client
  // trickling one byte at a time never trips it): recv throws TimeoutError once `d` has passed since
  // this socket last sent something (or since this call). Sending is progress: a request/response
  // protocol re-arms it with every reply. {} (the default) turns it off. StreamServer sets it on
  // accepted connections (ServerOptions::request_timeout).
  void set_request_timeout(OptDuration d);
  OptDuration request_timeout() const noexcept { return request_timeout_; }
  // When this socket last sent (or set_request_timeout was called): how long its peer has waited.
  Clock::time_point last_progress() const noexcept { return progress_at_; }

  // ---- setup ----
  void bind(const Address& addr);
  void listen(int backlog = 128);
  // Waits (the socket timeout) for a connection. The new socket is nonblocking + cloexec and starts
  // with no timeout.
  std::pair<Socket, Address> accept();
  // Connects, waiting up to the socket timeout; the overload with a timeout uses it instead ({} =
  // no limit). Throws ConnectionRefused, TimeoutError, ConnectionError.
  void connect(const Address& addr);
  void connect(const Address& addr, OptDuration timeout);

  // ---- stream I/O ----
  // Reads up to buf.size() bytes (at least one unless EOF). Returns 0 at EOF (or for an empty buf).
  std::size_t recv(std::span<char> buf, int flags = 0);
  // Same as recv(buf) (Python's recv_into).
  std::size_t recv_into(std::span<char> buf, int flags = 0) { return recv(buf, flags); }
  // Reads up to max_bytes; "" at EOF.
  std::string recv(std::size_t max_bytes);
  // Sends some of data (at least one byte unless data is empty); returns how many were sent.
  std::size_t send(std::string_view data, int flags = 0);
  // Sends all of data. The socket timeout bounds the whole call (as gevent); on any error the number
  // of bytes already sent is unknown to the caller, so treat the connection as broken.
  void sendall(std::string_view data);
  void shutdown(ShutdownHow how);

  // ---- datagrams ----
  // Receives one datagram into buf (truncated to buf.size()); returns its length and sender.
  std::pair<std::size_t, Address> recvfrom(std::span<char> buf, int flags = 0);
  std::pair<std::string, Address> recvfrom(std::size_t max_bytes);
  std::size_t sendto(std::string_view data, const Address& to, int flags = 0);

  // ---- options ----
  void setsockopt(int level, int name, int value);
  void setsockopt(int level, int name, const void* value, socklen_t len);
  int getsockopt(int level, int name) const;
  void set_reuse_addr(bool on = true) { setsockopt(SOL_SOCKET, SO_REUSEADDR, on); }
  void set_reuse_port(bool on = true);
  void set_nodelay(bool on = true);
  void set_keepalive(bool on = true) { setsockopt(SOL_SOCKET, SO_KEEPALIVE, on); }
  // SO_LINGER: {} disables lingering; 0 s makes close() send a RST (reset) instead of a FIN.
  void set_linger(std::optional<std::chrono::seconds> linger);
  // The pending socket error (SO_ERROR), 0 if none; reading it clears it.
  int pending_error() const { return getsockopt(SOL_SOCKET, SO_ERROR); }

  Address local_address() const;
  Address peer_address() const;

 private:
  // "recv(fd 7)" style label for error messages.
  std::string label(const char* op) const;
  // Waits until fd_ is ready for dir or deadline passes; throws TimeoutError / ClosedError / ...
  void wait(detail::Io dir, detail::Deadline deadline, const char* op);
  [[gnu::noinline, gnu::cold]] void wait_failed(detail::FdWait r, detail::Deadline deadline, const char* op);
  int checked_fd(const char* op) const {
    if (fd_ < 0) [[unlikely]] throw_closed(op);
    return fd_;
  }
  [[noreturn]] static void throw_closed(const char* op);
  // The one retry loop of the I/O calls (socket.cpp).
  struct Deadline;
  template <class Attempt>
  ssize_t retry(detail::Io dir, const char* op, Deadline& deadline, Attempt attempt);

  // TLS over this socket waits on it as recv/send do, with the same timeouts and error texts.
  friend class TlsSocket;

  int fd_ = -1;
  bool tcp_ = false;  // a TCP stream socket: recv may use the hub's drained hint (Hub::note_drained)
  OptDuration timeout_;
  OptDuration request_timeout_;
  Clock::time_point progress_at_{};
  void sent() noexcept {
    if (request_timeout_) progress_at_ = Clock::now();
  }
};

}  // namespace fiberio
