// Reproducible concurrency for tests: seeded schedules, a race explorer, and virtual time (as loom,
// shuttle, Coyote or Trio's autojump clock do for their runtimes). Everything here acts on the calling
// thread's hub only; other threads, and the kernel's timing of real I/O, stay as they are (see
// docs/design.md, "Reproducing races").
//
//   auto r = fiberio::testing::explore([] { ... spawn, join, throw on a broken invariant ... }, 1000);
//   if (r.failed) std::cout << r.describe();     // the seed, the error, the switch trace
//   fiberio::testing::replay(f, r.seed);          // the very same schedule again (or FIBERIO_SEED=seed)
//
// Seeded mode: which ready fiber runs next is chosen from the seed (a PCT priority scheme), and
// fibers may also be switched at exploration points, where they would not normally yield: acquiring a
// Lock / Semaphore / RLock, a Queue/Channel put or get, an Event/AsyncResult wait, select(), Socket
// send/sendall, and testing::exploration_point(). With the same seed and the same inputs, the same switch trace results
// on every run.
//
// Virtual time: fiberio's Clock (and so sleep, timeouts, Timeout guards) reads a per-hub clock that
// stands still while fibers run, and jumps to the next deadline whenever every fiber waits on timers
// only. While a fiber waits on an fd, or a ThreadPool job one of them queued runs, virtual time runs
// at the real pace instead (the event or the result may come at any real time; jumping could fire a
// timeout before it). Other waits on other threads do not hold it (docs/design.md).
//
// Environment: FIBERIO_SEED=N seeds every hub the process creates (and makes explore() run that one
// schedule); FIBERIO_VIRTUAL_TIME=1 puts them on virtual time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/park.hpp"

namespace fiberio::testing {

// Seeded scheduling on the calling thread's hub (created if needed), from now on: a fresh run whose
// trace starts empty and whose fiber ids restart at 0 (the fiber calling this gets the first id it
// is seen with). Call it before spawning the fibers under test.
void set_seed(std::uint64_t seed);
// Back to the normal round-robin (the trace is kept until the next set_seed()).
void clear_seed();
// The seed of this thread's hub's seeded mode, if it is on.
std::optional<std::uint64_t> seed();
// The fibers picked to run since set_seed(), by id in order of first appearance (0, 1, 2, ...; the
// fiber that called set_seed() is usually 0). Switches to Boost's dispatcher are not listed.
std::vector<std::uint32_t> switch_trace();

// Virtual time on the calling thread's hub: on, the clock starts at the real time now and stands still
// until the hub jumps it; off, it follows real time again (so it goes back by what the jumps added).
// Turning it off while a fiber waits with a deadline throws std::logic_error: that virtual deadline
// would mean nothing in real time.
void set_virtual_time(bool on);
bool virtual_time();

// Marks a point where, in seeded mode, the running fiber may be switched out (it never is otherwise).
// Put it between a read and a write whose interleaving with other fibers you want explored.
inline void exploration_point() noexcept { detail::exploration_point(); }

struct ExploreOptions {
  bool virtual_time = true;  // run each schedule on virtual time (sleeps cost no real time)
};

struct ScheduleResult {
  bool failed = false;
  std::uint64_t seed = 0;            // the failing schedule's seed (else the last one run)
  std::size_t schedules_run = 0;
  std::string error;                 // what f threw
  std::vector<std::uint32_t> trace;  // its switch trace: fiber ids (0: the fiber running f)
  std::vector<std::string> names;    // the fibers' greenlet names by id ("" if unnamed)
  // A report: the seed, how to replay it, the error and the trace (each switch as the greenlet's name,
  // or #id for an unnamed fiber).
  std::string describe() const;
};

// The failed check of a property under test: throws std::logic_error(what) unless ok, which explore()
// takes as a failure of the schedule (a GoogleTest EXPECT inside f would not stop it).
inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error(what);
}

// Runs f on a fresh thread (so a fresh hub) once per schedule, under seeds derived from `seed`, until f
// throws; returns that schedule, or failed == false after `schedules` runs. f must join what it spawns
// (greenlets still alive when it returns are killed with the thread). With FIBERIO_SEED set, runs only
// that seed. Blocks the calling thread (not just its fiber) while each schedule runs.
ScheduleResult explore(const std::function<void()>& f, std::size_t schedules, std::uint64_t seed = 0,
                       ExploreOptions opts = {});
// Runs f once under `seed` exactly as explore() ran it.
ScheduleResult replay(const std::function<void()>& f, std::uint64_t seed, ExploreOptions opts = {});

}  // namespace fiberio::testing
