// BlockingCall: gives one libc call on an fd the semantics of libc's blocking call while only the
// calling fiber waits.
//
//   BlockingCall call(fd, Io::Read);
//   if (call.passthrough()) return real::read(fd, buf, n);      // exactly libc
//   for (;;) {
//     ssize_t r = real::read(fd, buf, n);                       // the fd is O_NONBLOCK underneath
//     if (r >= 0) return call.ok(r);
//     if (!call.wait_again()) return -1;                        // errno says why, as libc would
//   }
//
// Modes, decided once per call:
//  * passthrough: the fd is not the shims' (regular file, inherited pipe...), or the user set
//    O_NONBLOCK, or the fd is still really blocking and no hub may park: the real call, untouched.
//  * fiber: this thread has a hub and the shims are on: wait_again() parks the fiber on the hub.
//  * thread: the shims own the fd (O_NONBLOCK underneath) but may not park here (no hub, switched
//    off, Disabled guard): wait_again() blocks the thread in the real poll(), as libc would.
//
// Never throws into the C caller. A kill, or an expired fiberio::Timeout guard, ends the wait with
// ECANCELED and stays pending: the fiber gets its GreenletExit / TimeoutError at its next fiberio
// suspension point (C libraries cannot unwind, and retrying EINTR would spin forever).
#pragma once
#include <poll.h>

#include <cerrno>

#include "fiberio/detail/shim_interface.hpp"

namespace fiberio::patched::detail {

using fiberio::detail::Deadline;
using fiberio::detail::FdInfo;
using fiberio::detail::FdKind;
using fiberio::detail::FdRegistry;
using fiberio::detail::Hub;
using fiberio::detail::Io;
using fiberio::detail::kNoDeadline;
using fiberio::Clock;
using fiberio::Duration;

enum class Waited { Ready, TimedOut, Closed, Cancelled, Interrupted };

// Parks the calling fiber until fd is ready, `deadline` passes, or fd is closed. Never throws (see top).
Waited park_fd(Hub& hub, int fd, Io dir, Deadline deadline);
// Parks until any pollfd of fds is ready (as poll() would see it) or `deadline` passes.
Waited park_any(Hub& hub, const pollfd* fds, nfds_t n, Deadline deadline);
// Parks until `deadline` (sleep).
Waited park_until(Deadline deadline);
// Blocks the thread in the real poll() until fd is ready or `deadline` passes.
Waited block_fd(int fd, Io dir, Deadline deadline) noexcept;

// Waits for a job on another thread that writes into the caller's buffers (the resolver): the caller
// may not leave early. A kill or expired Timeout meanwhile stays pending (detail::wait_for_task).
template <class T>
T wait_uninterruptibly(AsyncResult<T> result) {
  fiberio::detail::wait_for_task([&result] { result.wait(); }, /*deliver=*/false);
  return result.get();
}

using fiberio::detail::Interruption;

class BlockingCall {
 public:
  enum class Mode { Passthrough, Fiber, Thread };

  BlockingCall(int fd, Io dir) noexcept;
  bool passthrough() const noexcept { return mode_ == Mode::Passthrough; }
  bool in_fiber() const noexcept { return mode_ == Mode::Fiber; }
  Mode mode() const noexcept { return mode_; }
  Deadline deadline() const noexcept { return deadline_; }

  // Success: returns r with errno as it was when the call began (libc leaves errno alone on success).
  template <class T>
  T ok(T r) const noexcept {
    errno = saved_errno_;
    return r;
  }
  // After a failed attempt: if errno says it would block, waits and returns true (try again).
  // Otherwise false, errno set as libc's blocking call would: the attempt's own error, EAGAIN after
  // SO_RCVTIMEO / SO_SNDTIMEO, EBADF if the fd was closed meanwhile, ECANCELED if killed.
  bool wait_again();
  // Waits for readiness without an attempt first (connect's EINPROGRESS). Same results.
  bool wait();

  // The drained hint (Hub::note_drained) for a plain read (no flags) of `want` bytes (0: not a plain
  // read, no hint). Before the attempt: waits if the last read of this TCP socket came back short and
  // no read event came since (false: the wait failed, errno set). After it: reports a short read.
  bool wait_if_drained(std::size_t want) {
    return !(tcp_ && mode_ == Mode::Fiber && want > 0 && hub_->read_drained(fd_)) || wait();
  }
  void read_returned(ssize_t got, std::size_t want) noexcept {
    if (tcp_ && mode_ == Mode::Fiber && got > 0 && static_cast<std::size_t>(got) < want) hub_->note_drained(fd_);
  }

 private:
  Mode mode_ = Mode::Passthrough;
  Hub* hub_ = nullptr;
  int fd_;
  Io dir_;
  bool tcp_ = false;
  int saved_errno_;
  Deadline deadline_ = kNoDeadline;
};

}  // namespace fiberio::patched::detail
