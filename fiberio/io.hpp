// fd readiness: make any nonblocking fd cooperative. This is how sockets, the libc shims and async
// client libraries integrate with the hub.
//
// * An fd is registered with the hub's poller once, on its first wait, and stays registered until
//   fiberio::close(fd) (or forget_fd) — never added and removed around each wait.
// * Close fds that fibers may wait on with fiberio::close (Socket does; with the shims, ::close does
//   too): it wakes every waiter with ClosedError, and a wake-up can never reach a later fd that
//   reuses the number. Closing such an fd with plain ::close behind fiberio's back leaves a stale
//   registration (as with Go's poller); call forget_fd(fd) first if you must.
// * Two fibers waiting to read (or to write) the same fd at once is a ConcurrentObjectUseError.
// * Waits behave level-triggered although the registration is edge-triggered: an edge that arrives
//   while nobody waits is remembered (and confirmed with a zero-timeout poll() at the next wait), so
//   wait_read on an fd that already has unread data returns at once. A wake-up is still a hint: the
//   caller retries its read/write and waits again on EAGAIN.
// * Socket::recv and the shims' read/recv skip one system call per message on TCP sockets: a read
//   that returned less than asked emptied the socket, so the next one waits for the hub's read event
//   before reading, instead of first collecting an EAGAIN (Hub::note_drained; nginx does the same).
//   A hang-up, error or urgent data seen on the fd turns this off for it. wait_read itself is unchanged.
#pragma once
#include "fiberio/clock.hpp"

namespace fiberio {

// Blocks the calling fiber until fd is readable / writable. Throws TimeoutError, ClosedError (the fd
// was closed while waiting), ConcurrentObjectUseError, std::system_error (fd cannot be polled).
void wait_read(int fd, OptDuration timeout = {});
void wait_write(int fd, OptDuration timeout = {});

// Wakes every fiber waiting on fd (with ClosedError) and unregisters it; does not close it.
void forget_fd(int fd) noexcept;
// forget_fd(fd), then ::close(fd). Returns ::close's result (errno set on failure).
int close(int fd) noexcept;

// Sets or clears O_NONBLOCK; throws std::system_error on failure.
void set_nonblocking(int fd, bool on = true);

}  // namespace fiberio
