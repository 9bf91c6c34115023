// Poller: the hub's readiness backend (Linux: epoll + eventfd). The hub depends only on this contract.
//
// Contract every backend implements:
//  * add(fd, token) registers fd ONCE for its whole life, edge-triggered, for read and write readiness
//    (errors and hang-ups report as both, plus Hangup). Waiting fibers never add/remove around each wait.
//  * remove(fd) must be called before the fd is closed (or its number could be reused under a stale
//    registration). Removing an unknown fd is harmless.
//  * wait(timeout_ns, out) blocks the thread until a registered fd is ready, wake() was called, or
//    timeout_ns passes (-1 = no timeout, 0 = just look). It appends {token, events} for each ready fd
//    to `out`; a wake() is consumed internally and reported as nothing.
//  * wake() is the only member safe to call from another thread (and from a signal handler).
//  * reopen() is for a fork()ed child: fresh kernel objects (the parent keeps its own), the same
//    registrations, so the child never steals the parent's events.
#pragma once
#include <cstdint>
#include <vector>

namespace fiberio::detail {

class Poller {
 public:
  // Hangup: the peer hung up or reset, an error is pending, or urgent (out-of-band) data arrived —
  // reported together with Readable.
  enum Events : std::uint32_t { Readable = 1, Writable = 2, Hangup = 4 };
  struct Ready {
    std::uint64_t token;
    std::uint32_t events;
  };

  Poller();
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Returns 0, or the errno of a refusal (EPERM: fd is a regular file that cannot be polled).
  int add(int fd, std::uint64_t token) noexcept;
  void remove(int fd) noexcept;
  void wait(std::int64_t timeout_ns, std::vector<Ready>& out) noexcept;
  void wake() noexcept;
  struct Registration {
    int fd;
    std::uint64_t token;
  };
  void reopen(const std::vector<Registration>& regs) noexcept;

 private:
  void open();
  int epfd_ = -1;
  int wakefd_ = -1;
};

}  // namespace fiberio::detail
