// sleep_stall: "If a greenlet accidentally calls time.sleep instead of gevent.sleep, the whole
// application sleeps, not just that greenlet." — measured, in C++.
//
// Four greenlets tick every 50 ms and record the longest gap between their ticks. Meanwhile one more
// greenlet runs a blocking line. Each run prints the gaps it measured:
//   unpatched             ::sleep(1) with the libc shims switched off: the hub stalls (~1000 ms gaps)
//   fiberio               fiberio::sleep(1s): only that greenlet sleeps
//   patched               the same ::sleep(1) line with the shims on: only that greenlet sleeps
// and the seed's "what if the third-party code got its sleep before we patched?":
//   bound-before-patching a library took &::sleep while the shims were off; we switch them on later.
//                         Python's `from time import sleep` keeps the unpatched function; a C symbol
//                         is resolved by the loader, so the saved pointer is the shim anyway: no stall.
//   bypasses-libc         a library that sleeps with a raw system call (or statically linked libc, or
//                         fiberio::patched::original::sleep) never reaches the shims: it stalls.
//
// With --monitor MS (or FIBERIO_MONITOR_MS=MS in the environment) the blocking monitor is on
// (fiberio/monitor.hpp): each stalled run is reported on stderr, naming the sleeping greenlet and
// showing its native stack (sleep / nanosleep called from this file), and one more run, "cpu-loop",
// computes fib(40) on the hub, which the monitor reports the same way.
//
//   usage: sleep_stall [--monitor MS]
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fiberio/fiberio.hpp>
#include <fiberio/patched.hpp>

using namespace std::chrono_literals;

namespace third_party {
// A library that binds its sleep function once, at initialisation.
unsigned (*bound_sleep)(unsigned) = nullptr;
void init() { bound_sleep = &::sleep; }
void nap() { bound_sleep(1); }
// A library that talks to the kernel itself.
[[gnu::noinline]] void nap_raw() {
  timespec ts{1, 0};
  ::syscall(SYS_nanosleep, &ts, nullptr);
  asm volatile("" ::: "memory");  // keeps this frame (no tail call): the monitor's report shows it
}
// CPU work that never yields.
[[gnu::noinline]] long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
volatile long sink;
}  // namespace third_party

namespace {

constexpr int kTickers = 4;
constexpr auto kPeriod = 50ms;

struct Run {
  const char* key;
  const char* line;
  std::function<void()> blocking_line;
};

std::vector<double> measure(const char* key, const std::function<void()>& blocking_line) {
  std::vector<double> max_gap(kTickers, 0.0);
  bool stop = false;
  std::vector<fiberio::Greenlet<void>> tickers;
  for (int i = 0; i < kTickers; ++i)
    tickers.push_back(fiberio::spawn([&, i] {
      auto last = fiberio::Clock::now();
      while (!stop) {
        fiberio::sleep(kPeriod);
        auto now = fiberio::Clock::now();
        max_gap[i] = std::max(max_gap[i], std::chrono::duration<double, std::milli>(now - last).count());
        last = now;
      }
    }));
  auto sleeper = fiberio::spawn([&] {
    fiberio::sleep(100ms);
    blocking_line();
  });
  sleeper.set_name(std::string("sleeper(") + key + ")");  // the name the monitor's report gives
  sleeper.join();
  fiberio::sleep(200ms);
  stop = true;
  fiberio::joinall(tickers);
  return max_gap;
}

}  // namespace

int main(int argc, char** argv) {
  static const char* const usage = "usage: sleep_stall [--monitor MS]   (takes about 7 s; --monitor reports each stall on stderr)\n";
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(usage, stdout);
    return 0;
  }
  long monitor_ms = 0;
  char* end = nullptr;
  if (argc == 3 && std::strcmp(argv[1], "--monitor") == 0) monitor_ms = std::strtol(argv[2], &end, 10);
  if (argc > 1 && (monitor_ms <= 0 || *end != '\0')) {
    // One line, as every demo's command-line error.
    std::fprintf(stderr, "sleep_stall: error: %s (sleep_stall --help shows the usage)\n",
                 argc == 3 && std::strcmp(argv[1], "--monitor") == 0 ? "--monitor takes a positive number of milliseconds"
                 : std::strcmp(argv[1], "--monitor") == 0           ? "option '--monitor' needs a value"
                                                                     : "unknown option or argument");
    return 2;
  }
  if (monitor_ms > 0) fiberio::enable_monitor(std::chrono::milliseconds(monitor_ms));
  fiberio::ensure_hub();  // the first hub reads FIBERIO_MONITOR_MS
  bool monitored = fiberio::monitor_enabled();
  // The library initialises before anything is patched, as an import would.
  fiberio::patched::disable();
  third_party::init();
  fiberio::patched::enable();

  std::vector<Run> runs = {
      {"unpatched", "::sleep(1)  [shims off]",
       [] {
         fiberio::patched::disable();
         ::sleep(1);
         fiberio::patched::enable();
       }},
      {"fiberio", "fiberio::sleep(1s)", [] { fiberio::sleep(1s); }},
      {"patched", "::sleep(1)  [shims on]", [] { ::sleep(1); }},
      {"bound-before-patching", "saved=&::sleep before patching; saved(1)", [] { third_party::nap(); }},
      {"bypasses-libc", "syscall(SYS_nanosleep, 1 s)", [] { third_party::nap_raw(); }},
  };
  if (monitored) runs.push_back({"cpu-loop", "fib(40) on the hub", [] { third_party::sink = third_party::fib(40); }});

  std::printf("sleep_stall: %d greenlets tick every %lld ms; another greenlet runs the blocking line.\n", kTickers,
              static_cast<long long>(kPeriod.count()));
  std::printf("A ticker's longest gap far above %lld ms means the whole hub stalled.\n\n",
              static_cast<long long>(kPeriod.count()));
  std::printf("%-22s %-42s %-30s %s\n", "run", "blocking line", "longest gap per ticker (ms)", "hub");
  std::fflush(stdout);
  for (auto& r : runs) {
    auto gaps = measure(r.key, r.blocking_line);
    double worst = 0;
    std::string cells;
    for (double g : gaps) {
      char cell[16];
      std::snprintf(cell, sizeof cell, "%6.0f", g);
      cells += cell;
      worst = std::max(worst, g);
    }
    bool stalled = worst > 4.0 * static_cast<double>(kPeriod.count());
    std::printf("%-22s %-42s %-30s %s\n", r.key, r.line, cells.c_str(), stalled ? "STALLED" : "ok");
    std::fflush(stdout);
  }
  return 0;
}
