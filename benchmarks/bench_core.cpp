// Core costs: context switches, Event hand-off, spawn/join, and 100,000 live fibers — fiberio against
// raw Boost.Context and plain Boost.Fiber, measured in the same run. Run pinned to one CPU:
//   taskset -c 1 build-core/benchmarks/bench_core
// Counters: ns_per_switch / ns_per_roundtrip / *_ns_per_fiber (time), rss_per_fiber (bytes resident
// per live fiber while 100,000 are blocked). ns_per_switch and ns_per_roundtrip are per CPU second
// (Google Benchmark's rate counters use CPU time); the 100k runs use wall time (manual timing).
//
// Plain Boost.Fiber runs on a fresh std::thread that never touches fiberio, so it uses Boost's own
// round_robin scheduler (fiberio installs its hub as the scheduler of every thread that uses it).
// The 100,000-fiber runs use a fresh thread each too, so every run starts from an empty stack pool and
// its resident memory is measured from a clean baseline.
#include <benchmark/benchmark.h>
#include <boost/context/fiber.hpp>
#include <boost/context/stack_traits.hpp>
#include <boost/fiber/all.hpp>
#include <fiberio/fiberio.hpp>
#include <sys/mman.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

long rss_bytes() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) * 1024;
  return -1;
}

double ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

// CPU time of the calling thread (user + system, so page faults count): on a shared machine this is
// the cost, where wall time also holds the time other processes ran.
double thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// Runs body on a fresh OS thread and waits for it.
template <class Body>
void on_fresh_thread(Body body) {
  std::thread t(body);
  t.join();
}

// ---- context switches ----

void BM_RawBoostContext_PingPong(benchmark::State& state) {
  namespace ctx = boost::context;
  ctx::fiber other{[](ctx::fiber&& back) {
    for (;;) back = std::move(back).resume();
    return std::move(back);
  }};
  for (auto _ : state) other = std::move(other).resume();  // there and back: 2 switches
  state.counters["ns_per_switch"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_RawBoostContext_PingPong);

void BM_PlainBoostFiber_YieldPingPong(benchmark::State& state) {
  on_fresh_thread([&] {
    bool stop = false;
    boost::fibers::fiber other([&] {
      while (!stop) boost::this_fiber::yield();
    });
    for (auto _ : state) boost::this_fiber::yield();  // this fiber's yield + the other's: 2 yields
    stop = true;
    other.join();
  });
  state.counters["ns_per_switch"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_PlainBoostFiber_YieldPingPong);

void BM_Fiberio_YieldPingPong(benchmark::State& state) {
  bool stop = false;
  auto other = fiberio::spawn([&] {
    while (!stop) fiberio::yield();
  });
  fiberio::yield();
  auto switches0 = fiberio::hub_switches();
  for (auto _ : state) fiberio::yield();  // main's yield + the greenlet's: 2 yields
  auto switches = fiberio::hub_switches() - switches0;
  stop = true;
  other.join();
  state.counters["ns_per_switch"] =
      benchmark::Counter(2.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  // Includes the Boost.Fiber dispatcher's own turn once per round of the ready queue.
  state.counters["hub_switches_per_iter"] = static_cast<double>(switches) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Fiberio_YieldPingPong);

// ---- Event hand-off ----

void BM_Fiberio_EventPingPong(benchmark::State& state) {
  fiberio::Event ping, pong;
  bool stop = false;
  auto other = fiberio::spawn([&] {
    for (;;) {
      ping.wait();
      ping.clear();
      if (stop) return;
      pong.set();
    }
  });
  for (auto _ : state) {
    ping.set();
    pong.wait();
    pong.clear();
  }
  stop = true;
  ping.set();
  other.join();
  state.counters["ns_per_roundtrip"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Fiberio_EventPingPong);

// ---- Queue hand-off ----

// put() then get() on one fiber: the queue's uncontended fast path (buffer in, buffer out).
void BM_Fiberio_QueuePutGet(benchmark::State& state) {
  fiberio::Queue<int> q;
  int sum = 0;
  for (auto _ : state) {
    q.put(1);
    sum += q.get();
  }
  benchmark::DoNotOptimize(sum);
  state.counters["ns_per_putget"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Fiberio_QueuePutGet);

// Two fibers, two queues: each put() hands the item straight to the other fiber parked in get().
void BM_Fiberio_QueuePingPong(benchmark::State& state) {
  fiberio::Queue<int> ping, pong;
  auto other = fiberio::spawn([&] {
    for (;;) {
      int v = ping.get();
      if (v < 0) return;
      pong.put(v);
    }
  });
  for (auto _ : state) {
    ping.put(1);
    benchmark::DoNotOptimize(pong.get());
  }
  ping.put(-1);
  other.join();
  state.counters["ns_per_roundtrip"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Fiberio_QueuePingPong);

void BM_PlainBoostFiber_CondVarPingPong(benchmark::State& state) {
  on_fresh_thread([&] {
    boost::fibers::mutex m;
    boost::fibers::condition_variable cv;
    int turn = 0;  // 0: main's, 1: other's, 2: stop
    boost::fibers::fiber other([&] {
      std::unique_lock lk(m);
      for (;;) {
        cv.wait(lk, [&] { return turn != 0; });
        if (turn == 2) return;
        turn = 0;
        cv.notify_one();
      }
    });
    {
      std::unique_lock lk(m);
      for (auto _ : state) {
        turn = 1;
        cv.notify_one();
        cv.wait(lk, [&] { return turn == 0; });
      }
      turn = 2;
      cv.notify_one();
    }
    other.join();
  });
  state.counters["ns_per_roundtrip"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_PlainBoostFiber_CondVarPingPong);

// ---- spawn + join, one at a time ----

void BM_Fiberio_SpawnJoin(benchmark::State& state) {
  for (auto _ : state) fiberio::spawn([] {}).join();
}
BENCHMARK(BM_Fiberio_SpawnJoin);

void BM_PlainBoostFiber_SpawnJoin(benchmark::State& state) {
  on_fresh_thread([&] {
    for (auto _ : state) boost::fibers::fiber([] {}).join();
  });
  state.counters["default_stack_bytes"] = static_cast<double>(boost::context::stack_traits::default_size());
}
BENCHMARK(BM_PlainBoostFiber_SpawnJoin);

// ---- 100,000 live fibers ----

constexpr int kLive = 100'000;

// The floor under any "spawn N live fibers on fresh memory" figure: the kernel's cost to give a
// process one new page (each live fiber needs at least one page of its own stack).
void BM_Kernel_FirstTouchPage(benchmark::State& state) {
  const std::size_t stride = 132 * 1024;
  double ns = 0, cpu = 0;
  for (auto _ : state) {
    char* p = static_cast<char*>(
        ::mmap(nullptr, kLive * stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    ::madvise(p, kLive * stride, MADV_NOHUGEPAGE);
    auto c0 = thread_cpu_ns();
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < static_cast<std::size_t>(kLive); ++i) p[(i + 1) * stride - 64] = 1;
    auto t1 = Clock::now();
    cpu += thread_cpu_ns() - c0;
    ::munmap(p, kLive * stride);
    ns += ns_between(t0, t1);
    state.SetIterationTime(ns_between(t0, t1) / 1e9);
  }
  state.counters["ns_per_page"] = ns / (static_cast<double>(state.iterations()) * kLive);
  state.counters["cpu_ns_per_page"] = cpu / (static_cast<double>(state.iterations()) * kLive);
}
BENCHMARK(BM_Kernel_FirstTouchPage)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

// Each run: spawn kLive fibers that each block on one event, run them until all are blocked
// (spawn phase), read RSS, release them and join them all (join phase).
struct LiveRun {
  double spawn_ns = 0, join_ns = 0;          // wall
  double spawn_cpu_ns = 0, join_cpu_ns = 0;  // thread CPU
  long rss_delta = 0;
};

void report(benchmark::State& state, const std::vector<LiveRun>& runs) {
  double spawn = 0, join = 0, spawn_cpu = 0, join_cpu = 0, rss = 0;
  for (auto& r : runs) {
    spawn += r.spawn_ns;
    join += r.join_ns;
    spawn_cpu += r.spawn_cpu_ns;
    join_cpu += r.join_cpu_ns;
    rss += static_cast<double>(r.rss_delta);
  }
  double n = static_cast<double>(runs.size()) * kLive;
  state.counters["spawn_ns_per_fiber"] = spawn / n;
  state.counters["join_ns_per_fiber"] = join / n;
  state.counters["spawn_cpu_ns_per_fiber"] = spawn_cpu / n;
  state.counters["join_cpu_ns_per_fiber"] = join_cpu / n;
  state.counters["rss_per_fiber"] = rss / n;
}

// rss0: the baseline RSS the delta is taken from.
LiveRun fiberio_burst(benchmark::State& state, long rss0) {
  LiveRun run;
  fiberio::Event go;
  int blocked = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  gs.reserve(kLive);
  auto c0 = thread_cpu_ns();
  auto t0 = Clock::now();
  for (int i = 0; i < kLive; ++i)
    gs.push_back(fiberio::spawn([&] {
      ++blocked;
      go.wait();
    }));
  fiberio::yield();  // every greenlet runs up to its wait
  auto t1 = Clock::now();
  auto c1 = thread_cpu_ns();
  run.rss_delta = rss_bytes() - rss0;
  if (blocked != kLive) state.SkipWithError("not all greenlets blocked");
  auto c2 = thread_cpu_ns();
  auto t2 = Clock::now();
  go.set();
  fiberio::joinall(gs);
  auto t3 = Clock::now();
  auto c3 = thread_cpu_ns();
  run.spawn_ns = ns_between(t0, t1);
  run.join_ns = ns_between(t2, t3);
  run.spawn_cpu_ns = c1 - c0;
  run.join_cpu_ns = c3 - c2;
  return run;
}

// Cold: a fresh thread, so a fresh, empty stack pool: every stack is new memory.
void BM_Fiberio_100kLive_Cold(benchmark::State& state) {
  std::vector<LiveRun> runs;
  for (auto _ : state) {
    LiveRun run;
    on_fresh_thread([&] { run = fiberio_burst(state, rss_bytes()); });
    state.SetIterationTime((run.spawn_ns + run.join_ns) / 1e9);
    runs.push_back(run);
  }
  report(state, runs);
}
BENCHMARK(BM_Fiberio_100kLive_Cold)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

// Warm: the second burst on one thread, with hot_cache raised so that all 100,000 stacks of the
// first burst stay resident for reuse (with the default hot_cache of 16,384, 83,616 of them would be
// given back to the kernel and fault in again). rss_per_fiber is measured from before the first
// burst, so it counts each live fiber's whole stack.
void BM_Fiberio_100kLive_Warm(benchmark::State& state) {
  auto saved = fiberio::stack_options();
  auto opts = saved;
  opts.hot_cache = 2 * kLive;
  fiberio::set_stack_options(opts);
  std::vector<LiveRun> runs;
  for (auto _ : state) {
    LiveRun run;
    on_fresh_thread([&] {
      long rss0 = rss_bytes();
      fiberio_burst(state, rss0);
      run = fiberio_burst(state, rss0);
    });
    state.SetIterationTime((run.spawn_ns + run.join_ns) / 1e9);
    runs.push_back(run);
  }
  fiberio::set_stack_options(saved);
  report(state, runs);
}
BENCHMARK(BM_Fiberio_100kLive_Warm)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

void BM_PlainBoostFiber_100kLive(benchmark::State& state) {
  std::vector<LiveRun> runs;
  for (auto _ : state) {
    LiveRun run;
    on_fresh_thread([&] {
      long rss0 = rss_bytes();
      boost::fibers::mutex m;
      boost::fibers::condition_variable cv;
      bool go = false;
      int blocked = 0;
      std::vector<boost::fibers::fiber> fs;
      fs.reserve(kLive);
      auto c0 = thread_cpu_ns();
      auto t0 = Clock::now();
      for (int i = 0; i < kLive; ++i)
        fs.emplace_back([&] {
          std::unique_lock lk(m);
          ++blocked;
          cv.wait(lk, [&] { return go; });
        });
      boost::this_fiber::yield();  // every fiber runs up to its wait
      auto t1 = Clock::now();
      auto c1 = thread_cpu_ns();
      run.rss_delta = rss_bytes() - rss0;
      if (blocked != kLive) state.SkipWithError("not all fibers blocked");
      auto c2 = thread_cpu_ns();
      auto t2 = Clock::now();
      {
        std::unique_lock lk(m);
        go = true;
      }
      cv.notify_all();
      for (auto& f : fs) f.join();
      auto t3 = Clock::now();
      auto c3 = thread_cpu_ns();
      run.spawn_ns = ns_between(t0, t1);
      run.join_ns = ns_between(t2, t3);
      run.spawn_cpu_ns = c1 - c0;
      run.join_cpu_ns = c3 - c2;
    });
    state.SetIterationTime((run.spawn_ns + run.join_ns) / 1e9);
    runs.push_back(run);
  }
  report(state, runs);
  state.counters["default_stack_bytes"] = static_cast<double>(boost::context::stack_traits::default_size());
}
BENCHMARK(BM_PlainBoostFiber_100kLive)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
