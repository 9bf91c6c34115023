// The blocking monitor (gevent's monitor_thread + max_blocking_time, with native stacks).
//
//   fiberio::enable_monitor(100ms);      // or FIBERIO_MONITOR_MS=100 in the environment
//
// One process-wide thread, started on first enable, samples every hub a few times per threshold. A
// hub that has neither switched fibers nor waited in its poller for longer than the threshold is
// stalled: a greenlet blocks its thread (a libc sleep or read the shims do not reach, a long CPU loop).
// It is reported once per stall through the stall handler (default: stderr), with the hub's thread, the
// running greenlet's name and id, how long so far, and that greenlet's native stack, symbolized (by
// Boost.Stacktrace's libbacktrace variant: function, file:line, from the debug info). When the hub
// moves again, one more report (kind Ended) gives the stall's total length.
//
// How the stack is taken:
//  * the thread runs user code (a CPU loop): the monitor sends it a real-time signal (the highest one
//    between SIGRTMIN and SIGRTMAX still at SIG_DFL when the monitor is first enabled; see
//    monitor_signal()); its handler stores only raw return addresses (_Unwind_Backtrace) and a weak
//    reference to the running greenlet, and the monitor thread symbolizes them. (A thread that
//    enters a sleep-like system call between the monitor's look and the signal's arrival sees that
//    one call end early with EINTR: a window of microseconds, once per stall.)
//  * the thread is blocked in a system call (/proc/self/task/TID/syscall names it): a signal would
//    make that call fail with EINTR (nanosleep, poll, epoll_wait... are never restarted), so none is
//    sent; the thread's stack is frozen, and the monitor reads it from the kernel's saved stack
//    pointer (process_vm_readv) keeping the words that are return addresses (they point just after a
//    call instruction in executable code). Such a stack is marked `scanned`: it may show a stale frame.
// Cost when off: none but a relaxed store per switch and two per poll. The spawn site is not recorded
// (issue 11 part 2): a report names the greenlet and its id.
// A thread's main fiber counts too: a main() that blocks outside fiberio is reported as a stall of
// that thread's hub, as gevent reports a blocked hub.
// fork(): the child re-arms the monitor (a new thread) if it was on, and watches only its own hub.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fiberio {

struct StallFrame {
  std::uintptr_t address = 0;
  std::string function;  // demangled; empty if unknown
  std::string file;      // empty if no debug info
  unsigned line = 0;
};

struct StallReport {
  enum class Kind { Stalled, Ended };
  Kind kind = Kind::Stalled;
  pid_t thread_id = 0;       // the hub's thread (gettid)
  std::string thread_name;   // pthread name
  std::uint64_t greenlet_id = 0;  // 0: the thread's main fiber, or unknown
  std::string greenlet_name;      // "MainGreenlet" for the main fiber
  std::string spawned_at;         // where the greenlet was spawned (file:line (function)); empty for the main fiber or unknown
  std::chrono::milliseconds duration{0};  // so far (Stalled), in total (Ended)
  long syscall = -1;         // the system call the thread is blocked in; -1: running user code
  bool scanned = false;      // stack read from a blocked thread's memory (see above), not unwound
  std::vector<StallFrame> stack;  // innermost first (Stalled only)
  std::string format() const;     // the text the default handler prints
};
using StallHandler = std::function<void(const StallReport&)>;

// Starts (or retunes) the monitor: threshold > 0. Thread-safe.
void enable_monitor(std::chrono::milliseconds threshold);
// Stops reporting (the thread stays, idle). Thread-safe.
void disable_monitor();
bool monitor_enabled();
// Replaces the handler (null: the default, which prints format() to stderr); returns the previous one.
// Called on the monitor thread: it must not block long, and must not call into a hub.
StallHandler set_stall_handler(StallHandler h);
// The signal the monitor sends to a hub thread to take its stack; 0 until first enabled.
int monitor_signal();

}  // namespace fiberio
