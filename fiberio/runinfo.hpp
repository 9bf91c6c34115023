// Run-info dump, hub counters and event hooks: what a program's greenlets are doing (gevent's
// print_run_info / GreenletTree and greenlet.settrace / gevent.events; Go's SIGQUIT dump).
//
//   std::fputs(fiberio::format_run_info().c_str(), stderr);   // from any thread, or:
//   fiberio::enable_dump_signal(SIGUSR1);                      // or FIBERIO_DUMP_SIGNAL=SIGUSR1
//
// The dump lists every hub (thread) with its counters, and each greenlet on it: id, name, state, what
// it waits on (an fd with its direction and the socket's local and peer address; a sleep and when it
// fires; an Event, Lock, Semaphore, Queue... with its address; a join on greenlet N), for how long,
// where it was spawned and by which greenlet, and, for a parked greenlet, where it parked and its
// stack. Nothing of this costs the park path more than a few stores: the spawn site is one return
// address, symbolized (file:line from the debug info, so build with -g) only when a dump asks; the
// stack is read from the parked fiber's frozen stack words (return addresses, scanned like the
// blocking monitor's scan of a blocked thread: a stale frame may show).
//
// Each hub lists its own greenlets, on its own thread (a dump from another thread asks it through its
// wake-up mailbox and waits at most `hub_timeout`): no lock on any hot path, and nothing read while
// it changes. A hub that does not answer in time (a greenlet blocks its thread) is reported as not
// answering, with what the blocking monitor (monitor.hpp) knows of it. A dump from inside a greenlet
// blocks its own hub while it waits for the others.
//
// Bounded: per hub, the first `max_greenlets` are listed in full, the rest counted in groups (state,
// what they wait on, spawn site), of which the largest `max_groups` are printed.
#pragma once
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace fiberio {

struct RunInfoOptions {
  std::size_t max_greenlets = 100;  // per hub, listed in full (with stacks); the rest summarized
  std::size_t max_groups = 20;      // per hub, groups of the rest printed
  bool stacks = true;               // the listed parked greenlets' stacks
  std::chrono::milliseconds hub_timeout{1000};  // for the other hubs to answer, in all
};

// Every hub and its greenlets, as text. Any thread; a thread with no hub does not get one.
std::string format_run_info(const RunInfoOptions& opts = {});
// The same, to stderr.
void print_run_info(const RunInfoOptions& opts = {});
// On signo (SIGUSR1, SIGQUIT...), a dedicated thread prints the dump to stderr. The handler only
// writes a byte to a pipe (async-signal-safe). FIBERIO_DUMP_SIGNAL=SIGUSR1 (a name or a number) in the
// environment does this when the first hub starts. Throws std::system_error on a bad signal.
void enable_dump_signal(int signo);
// Restores signo's default action (the dump thread stays, idle).
void disable_dump_signal();

// This thread's hub's counters (creates the hub). Cheap: always on.
struct HubStats {
  static constexpr std::size_t kBuckets = 24;
  std::uint64_t switches = 0;         // fiber switches (the hub's own included)
  std::uint64_t loop_iterations = 0;  // polls (epoll_wait calls) of the event loop
  std::size_t ready = 0;              // fibers in the ready queue now
  std::size_t parked = 0;             // fibers parked (blocked in fiberio) now
  std::size_t greenlets = 0;          // live greenlets (the main fiber not counted)
  std::chrono::nanoseconds poll_time{0};  // spent in epoll_wait, in all
  // Loop iterations by how long fibers ran between two polls (the latency a new event sees):
  // bucket 0 under 1 us, bucket i in [2^(i-1), 2^i) us, the last one everything longer.
  std::array<std::uint64_t, kBuckets> loop_latency{};
  std::string format() const;  // one line, plus the non-empty buckets
};
HubStats hub_stats();

// Hooks: fn(event) runs on the thread where the event happens (Stall: the monitor's thread), for
// every hub. For metrics and profilers. It runs inside the scheduler: it must be quick, must not
// block or call fiberio's blocking functions, and must not throw (an exception is dropped). Unused,
// hooks cost one predictable branch on a relaxed flag per switch, spawn and finish.
struct HubEvent {
  enum class Kind { Spawn, Switch, Finish, Stall };
  static constexpr std::uint64_t kHub = ~std::uint64_t{0};  // the hub itself (its dispatcher)
  Kind kind;
  std::uint64_t greenlet;  // Spawn/Finish: that greenlet; Switch: the one switched to; Stall: the running one
  std::uint64_t other;     // Spawn: its spawner; Switch: the one switched from; Stall: milliseconds so far
  // Greenlet ids: 0 is a thread's main fiber, kHub the hub.
};
using HookId = std::uint64_t;
HookId add_hook(std::function<void(const HubEvent&)> fn);
// After it returns, fn is not called again (a call already running on another thread may finish).
void remove_hook(HookId id);

}  // namespace fiberio
