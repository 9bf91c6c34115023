// The counter race of seed 003, without sockets: N greenlets each do
//     tmp = n;  <simulated work that yields>;  n = tmp + 1;
// Greenlets switch only where they block or yield — but the "work" in the middle does yield, so every
// greenlet reads n before any writes it back, and all but one increment is lost. --lock runs the very
// same code with the read-modify-write under a fiberio::Lock, and nothing is lost.
//
//   race_counter [-n N] [--lock] [--yield]     (--help tells more)
#include <fiberio/fiberio.hpp>

#include <chrono>
#include <mutex>
#include <random>

#include "demo_util.hpp"

namespace {

struct Outcome {
  long expected;
  long got;
  double ms;
};

Outcome run(long count, bool use_lock, bool just_yield) {
  long n = 0;
  fiberio::Lock lock;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> work_us(0, 5000);

  auto increment = [&] {
    long tmp = n;
    if (just_yield) fiberio::yield();
    else fiberio::sleep(std::chrono::microseconds(work_us(rng)));  // simulated request processing
    n = tmp + 1;
  };

  auto t0 = fiberio::Clock::now();
  std::vector<fiberio::Greenlet<void>> gs;
  gs.reserve(static_cast<std::size_t>(count));
  for (long i = 0; i < count; ++i)
    gs.push_back(fiberio::spawn([&] {
      if (use_lock) {
        std::lock_guard guard(lock);
        increment();
      } else {
        increment();
      }
    }));
  fiberio::joinall(gs, {}, /*raise_error=*/true);
  auto ms = std::chrono::duration<double, std::milli>(fiberio::Clock::now() - t0).count();
  return {count, n, ms};
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("race_counter",
                "N greenlets each increment a shared counter with `tmp = n; <work that yields>; n = tmp + 1`,\n"
                "showing the lost updates of an unsynchronized read-modify-write (seed 003), and none with --lock.",
                {{"greenlets", 'n', "N", "number of greenlets (default 10)"},
                 {"lock", 'l', "", "hold a fiberio::Lock around the read-modify-write"},
                 {"yield", 'y', "", "the work is a plain yield() instead of sleeping a random 0-5 ms"}});
  cli.parse(argc, argv);
  long count = cli.get_int("greenlets", 10, 1, 1'000'000);
  bool use_lock = cli.has("lock");
  bool just_yield = cli.has("yield");

  Outcome r = run(count, use_lock, just_yield);
  long lost = r.expected - r.got;
  std::string work = just_yield ? "yielded" : "slept 0-5 ms";
  std::string how = use_lock ? " under a fiberio::Lock" : "";
  std::string verdict;
  if (lost == 0)
    verdict = use_lock ? "no update lost (the lock let one greenlet at a time read, work and write)"
                       : "no update lost";
  else
    verdict = fmt::format("{} update{} lost (each read n, {}, then wrote back a stale value)", lost,
                          lost == 1 ? "" : "s", work);
  demo::say("{} greenlets each incremented n once{}: expected {}, got {} — {}.", r.expected, how, r.expected,
            r.got, verdict);
  demo::say("time taken: {:.1f} ms{}", r.ms,
            use_lock ? " (the work ran one greenlet at a time)" : " (the work of all greenlets overlapped)");
  return 0;
}
