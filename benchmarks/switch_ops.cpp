// switch_ops: a fixed number of one core operation, for instruction counts under callgrind (exact and
// repeatable on a busy machine, unlike timings). Instructions per operation = (Ir(N) - Ir(0)) / N.
//
//   switch_ops OP N     OP: yield (two greenlets ping-pong with yield(): N switches each way),
//                           queue (put/get hand-off through a Queue(1) between two greenlets),
//                           lock  (an uncontended Lock acquire + release),
//                           timed (a sleep of 1 ns: a timed park and a timer expiry)
//                           now   (fiberio::Clock::now())
//
// Used to show that the seeded-schedule hooks cost nothing when off (RESULTS.md, "Deterministic
// schedules: cost when off").
#include <fiberio/fiberio.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s yield|queue|lock|timed|now N\n", argv[0]);
    return 2;
  }
  std::string op = argv[1];
  long n = std::strtol(argv[2], nullptr, 10);
  fiberio::ensure_hub();
  long sink = 0;
  if (op == "yield") {
    auto a = fiberio::spawn([n] {
      for (long i = 0; i < n; ++i) fiberio::yield();
    });
    auto b = fiberio::spawn([n] {
      for (long i = 0; i < n; ++i) fiberio::yield();
    });
    fiberio::joinall({a, b});
  } else if (op == "queue") {
    fiberio::Queue<long> q(1);
    auto c = fiberio::spawn([&] {
      for (long i = 0; i < n; ++i) sink += q.get();
    });
    for (long i = 0; i < n; ++i) q.put(i);
    c.join();
  } else if (op == "lock") {
    fiberio::Lock lock;
    for (long i = 0; i < n; ++i) {
      lock.acquire();
      ++sink;
      lock.release();
    }
  } else if (op == "timed") {
    for (long i = 0; i < n; ++i) fiberio::sleep(std::chrono::nanoseconds(1));
  } else if (op == "now") {
    for (long i = 0; i < n; ++i) sink += fiberio::Clock::now().time_since_epoch().count() & 1;
  } else {
    std::fprintf(stderr, "switch_ops: unknown operation %s\n", op.c_str());
    return 2;
  }
  std::printf("%s %ld done (%ld)\n", op.c_str(), n, sink);
  return 0;
}
