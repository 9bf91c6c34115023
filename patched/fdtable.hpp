// What the shims remember about each fd: whether they may make it cooperative, the user's own view of
// O_NONBLOCK (the shims may set it underneath), and the SO_RCVTIMEO / SO_SNDTIMEO a blocking call
// must honour once the kernel no longer applies them (a nonblocking socket ignores them).
//
// Process-wide (fds are), lock-free, indexed by fd. An entry is reset whenever an fd is created or
// closed through a shim. An fd created and closed behind the shims' back (inside libc) can leave a
// stale entry; the worst that does is make a call on a reused number behave as plain libc.
#pragma once
#include <chrono>
#include <cstdint>

namespace fiberio::patched::detail {

enum class FdKind : std::uint8_t {
  Unknown,      // never seen: classify() decides on first use
  Managed,      // a socket, or a pipe made by the shims: may be made cooperative
  Passthrough,  // anything else (regular file, tty, inherited pipe, eventfd...): always plain libc
};

struct FdInfo {
  FdKind kind = FdKind::Unknown;
  bool socket = false;
  bool tcp = false;            // a TCP stream socket (a short read empties it: Hub::note_drained)
  bool user_nonblock = false;  // O_NONBLOCK as the user set it (fcntl, ioctl FIONBIO, SOCK_NONBLOCK)
  bool shim_nonblock = false;  // O_NONBLOCK is on because a shim put it there
  std::chrono::nanoseconds rcvtimeo{0};  // 0: none
  std::chrono::nanoseconds sndtimeo{0};

  // A blocking-style call on it needs emulation (it is shim-owned and the user wants blocking).
  bool emulated() const noexcept { return kind == FdKind::Managed && shim_nonblock && !user_nonblock; }
};

// Nothing here allocates with malloc or throws: the shims call it from anywhere.
class FdTable {
 public:
  static FdTable& instance() noexcept;

  // What is known about fd, without any system call (Unknown if never seen or out of range).
  FdInfo lookup(int fd) const noexcept;
  // lookup(), classifying an Unknown fd first (fstat, F_GETFL, and SO_*TIMEO for a socket).
  FdInfo classify(int fd) noexcept;
  // A shim just created fd.
  void created(int fd, bool socket, bool user_nonblock, bool shim_nonblock, bool tcp = false) noexcept;
  // fd was closed (or is about to be reused by dup2).
  void forget(int fd) noexcept;
  // to is a duplicate of from (dup*, F_DUPFD): same open file description, same view.
  void copy(int from, int to) noexcept;
  void set_user_nonblock(int fd, bool on) noexcept;
  void set_timeout(int fd, bool receive, std::chrono::nanoseconds t) noexcept;
  // Puts O_NONBLOCK on a Managed fd the user left blocking; false if that failed (stay libc).
  bool take_over(int fd) noexcept;

 private:
  struct Entry;
  Entry* entry(int fd, bool create) const noexcept;
};

}  // namespace fiberio::patched::detail
