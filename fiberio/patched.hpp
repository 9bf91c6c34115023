// fiberio::patched — "monkey patching" for C and C++: libc shims that make unmodified blocking code
// (your own, or a C library's: hiredis, libpq, libcurl, OpenSSL...) cooperative.
//
// Link the target fiberio::patched (or LD_PRELOAD libfiberio_patched.so, see docs/patched.md) and
// every blocking socket / pipe / sleep / poll / resolver call made inside a fiber parks only that
// fiber while the hub runs the others — as gevent.monkey.patch_all() does for Python. On a thread
// without a fiberio hub, or with the shims switched off, every shim is exactly libc.
//
//   fiberio::spawn([] { redisCommand(ctx, "BLPOP jobs 5"); });   // 1000 of these share one thread
//
// Interposed: socket socketpair connect accept accept4 read readv recv recvfrom recvmsg write writev
// send sendto sendmsg poll ppoll select pselect epoll_wait epoll_pwait epoll_pwait2 sleep usleep
// nanosleep clock_nanosleep close close_range closefrom fclose fdopen shutdown fcntl fcntl64 ioctl(FIONBIO) setsockopt getsockopt
// dup dup2 dup3 pipe pipe2 getaddrinfo getnameinfo gethostbyname gethostbyname2 gethostbyname_r
// gethostbyname2_r, and the _FORTIFY_SOURCE variants __read_chk __recv_chk __recvfrom_chk
// __poll_chk __ppoll_chk. patched_functions() lists them.
#pragma once
#include <span>
#include <string_view>

#include "fiberio/patched_original.hpp"

namespace fiberio::patched {

// True when the process really calls these shims for libc's functions (the library is linked ahead
// of libc or LD_PRELOADed). gevent: is_module_patched.
bool installed() noexcept;
// True when `function` (e.g. "read") is interposed by the shims in this process. gevent:
// is_object_patched.
bool is_patched(std::string_view function) noexcept;
// Every function the shims interpose.
std::span<const std::string_view> patched_functions() noexcept;

// The process-wide switch (on by default; the environment variable FIBERIO_PATCHED=0 starts it off).
// Off, every shim is plain libc on every thread. An fd the shims had already made nonblocking stays
// so underneath, and calls on it still block the way the user expects (in the thread, not the fiber).
void enable() noexcept;
void disable() noexcept;
bool enabled() noexcept;

// True when a blocking libc call made here and now would park only the calling fiber: installed(),
// enabled(), no Disabled guard on this thread, and this thread has a fiberio hub.
bool active() noexcept;

// Switches the shims off for this thread while it lives (nestable): blocking calls block the thread,
// hub and all, as a deliberate choice (e.g. a short critical section that must not be interleaved).
// Per thread, not per fiber: if the guarded code itself parks through fiberio (fiberio::sleep...),
// the other fibers that run meanwhile are unpatched too. Keep the scope short.
class Disabled {
 public:
  Disabled() noexcept;
  ~Disabled();
  Disabled(const Disabled&) = delete;
  Disabled& operator=(const Disabled&) = delete;
};

// The unpatched libc functions, always blocking the thread (gevent: get_original). E.g.
// fiberio::patched::original::sleep(1) stalls the hub for a second whatever the switch says.
// (Declared in fiberio/patched_original.hpp.)

namespace detail {
// Every program that includes this header references the shim library, so a linker running with
// --as-needed (Ubuntu's default, and common elsewhere) still records it as needed: otherwise a program that
// reaches libc only through other libraries (hiredis, libpq...) would silently load no shims.
extern const int link_anchor;
[[gnu::used]] static const int* const keep_shims_linked = &link_anchor;
}  // namespace detail

}  // namespace fiberio::patched
