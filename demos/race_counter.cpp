// The counter race of seed 003, without sockets: N greenlets each do
//     tmp = n;  <simulated work that yields>;  n = tmp + 1;
// Greenlets switch only where they block or yield — but the "work" in the middle does yield, so every
// greenlet reads n before any writes it back, and all but one increment is lost. --lock runs the very
// same code with the read-modify-write under a fiberio::Lock, and nothing is lost.
//
// --seed S (or FIBERIO_SEED=S in the environment) makes the run reproducible (fiberio/testing.hpp):
// the hub picks the next greenlet from the seed, sleeps run on virtual time (the clock jumps to the
// next wake-up), and the "random" work durations come from the seed too. The same seed prints the
// same interleaving every run; another seed, most likely another.
//
// --explore shows a subtler race, one a plain run never shows: two greenlets withdraw 80 from a
// balance of 100, each checking the balance, then writing an audit line under an (uncontended) Lock,
// then debiting. Nothing yields between the check and the debit in a plain run, so 1,000 plain runs
// never overdraw. testing::explore() runs it under seeded schedules, which may switch at the Lock (an
// exploration point): it finds the overdraft, prints the seed and its switch trace, and replay()
// shows the very same failure again.
//
//   race_counter [-n N] [--lock] [--yield] [--seed S]     (--help tells more)
//   race_counter --explore [--schedules N]
#include <fiberio/fiberio.hpp>
#include <fiberio/testing.hpp>

#include <chrono>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "demo_util.hpp"

namespace {

struct Outcome {
  long expected;
  long got;
  double ms;
  std::vector<long> writes;  // which greenlet wrote n, in order
};

Outcome run(long count, bool use_lock, bool just_yield, std::optional<std::uint64_t> seed) {
  long n = 0;
  fiberio::Lock lock;
  // Seeded: std::mt19937's sequence is the same everywhere (uniform_int_distribution's is not).
  std::mt19937_64 rng(seed ? *seed : std::random_device{}());
  std::vector<long> writes;

  auto increment = [&](long who) {
    long tmp = n;
    if (just_yield) fiberio::yield();
    else fiberio::sleep(std::chrono::microseconds(rng() % 5001));  // simulated request processing, 0-5 ms
    n = tmp + 1;
    writes.push_back(who);
  };

  auto t0 = fiberio::Clock::now();
  std::vector<fiberio::Greenlet<void>> gs;
  gs.reserve(static_cast<std::size_t>(count));
  for (long i = 0; i < count; ++i)
    gs.push_back(fiberio::spawn([&, i] {
      if (use_lock) {
        std::lock_guard guard(lock);
        increment(i);
      } else {
        increment(i);
      }
    }));
  fiberio::joinall(gs, {}, /*raise_error=*/true);
  auto ms = std::chrono::duration<double, std::milli>(fiberio::Clock::now() - t0).count();
  return {count, n, ms, std::move(writes)};
}

// Two greenlets withdraw 80 from 100 with check-then-act; returns the balance (negative: overdrawn).
long withdraw_twice() {
  long balance = 100;
  fiberio::Lock audit_lock;
  std::vector<std::string> audit;
  auto withdraw = [&](const char* who) {
    if (balance >= 80) {
      {
        std::lock_guard g(audit_lock);  // never contended: a plain run does not switch here
        audit.push_back(fmt::format("{} withdraws 80", who));
      }
      balance -= 80;
    }
  };
  auto alice = fiberio::spawn(withdraw, "alice");
  alice.set_name("alice");
  auto bob = fiberio::spawn(withdraw, "bob");
  bob.set_name("bob");
  fiberio::joinall({alice, bob}, {}, /*raise_error=*/true);
  return balance;
}

void overdraft_check() {
  long balance = withdraw_twice();
  fiberio::testing::check(balance >= 0, fmt::format("overdrawn: the balance went to {}", balance));
}

int explore_overdraft(long schedules) {
  int overdrawn = 0;
  for (int i = 0; i < 1000; ++i) overdrawn += withdraw_twice() < 0;
  demo::say("1000 plain runs: {} overdrew the account (nothing yields between the check and the debit)", overdrawn);
  auto r = fiberio::testing::explore(overdraft_check, static_cast<std::size_t>(schedules));
  if (!r.failed) {
    demo::say("explore: {}", r.describe());
    return 0;
  }
  demo::say("explore: {}", r.describe());
  auto again = fiberio::testing::replay(overdraft_check, r.seed);
  demo::say("replay of seed {}: {}; the same switch trace: {}", r.seed, again.failed ? again.error : "no failure",
            again.trace == r.trace ? "yes" : "no");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("race_counter",
                "N greenlets each increment a shared counter with `tmp = n; <work that yields>; n = tmp + 1`,\n"
                "showing the lost updates of an unsynchronized read-modify-write (seed 003), and none with --lock.",
                {{"greenlets", 'n', "N", "number of greenlets (default 10)"},
                 {"lock", 'l', "", "hold a fiberio::Lock around the read-modify-write"},
                 {"yield", 'y', "", "the work is a plain yield() instead of sleeping a random 0-5 ms"},
                 {"seed", 's', "S", "reproducible run: seeded scheduling and virtual time (also FIBERIO_SEED=S)"},
                 {"explore", 'e', "", "the overdraft race instead: plain runs, then testing::explore() finds it and replays it"},
                 {"schedules", 0, "N", "--explore: schedules to try at most (default 1000)"}});
  cli.parse(argc, argv);
  if (cli.has("explore")) return explore_overdraft(cli.get_int("schedules", 1000, 1, 1'000'000));
  long count = cli.get_int("greenlets", 10, 1, 1'000'000);
  bool use_lock = cli.has("lock");
  bool just_yield = cli.has("yield");
  std::optional<std::uint64_t> seed = fiberio::testing::seed();  // FIBERIO_SEED seeded this hub already
  if (cli.has("seed")) {
    seed = static_cast<std::uint64_t>(cli.get_int("seed", 0, 0, std::numeric_limits<long>::max()));
    fiberio::testing::set_seed(*seed);
  }
  if (seed) fiberio::testing::set_virtual_time(true);

  Outcome r = run(count, use_lock, just_yield, seed);
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
  if (seed) {
    std::string order;
    for (long w : r.writes) order += fmt::format(" {}", w);
    demo::say("seed {}: greenlets wrote n in this order:{}", *seed, order);
    demo::say("(virtual time: the sleeps took no real time; run again with --seed {} for the same interleaving)", *seed);
  }
  return 0;
}
