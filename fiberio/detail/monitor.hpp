// The blocking monitor's side of the hub (monitor.cpp): every hub registers at creation and
// unregisters in its destructor (on its own thread, before the thread ends), so the monitor never
// holds a pointer to a dead hub. Both take the monitor's registry lock; nothing else of the hub's
// touches the monitor.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace fiberio::detail {
class Hub;
void monitor_hub_started(Hub* hub);
void monitor_hub_ended(Hub* hub) noexcept;
// Hubs registered now (tests: a thread's exit unregisters its hub).
std::size_t monitored_hubs();

// The registered hubs, for the run-info dump (runinfo.cpp). fn runs under the registry lock (a hub
// cannot be destroyed meanwhile): it must not block. stalled_ms: how long the monitor has seen the
// hub stalled, -1 if it does not think so (or is off).
struct HubSlot {
  Hub* hub;
  pid_t tid;
  long stalled_ms;
};
void for_each_hub(const std::function<void(const HubSlot&)>& fn);
std::string thread_name(pid_t tid);  // from /proc (the pthread name)
// Reads this process's memory through the kernel: false, not a crash, where nothing is mapped.
bool read_memory(std::uintptr_t addr, void* out, std::size_t n) noexcept;
// Where a greenlet was spawned, from GreenletBase::spawn_site(): "file:line (function)" of the first
// frame outside fiberio (runinfo.cpp's symbolizer; any thread).
std::string describe_spawn_site(const void* spawn_site);
// FIBERIO_DUMP_SIGNAL (runinfo.cpp): read with FIBERIO_MONITOR_MS, when the first hub starts.
void dump_signal_from_env();

// Finds return addresses among a stack's words (x86-64: a word pointing just after a call
// instruction in an executable mapping). Reads /proc/self/maps once, at construction.
class StackScanner {
 public:
  StackScanner();
  // The return addresses in the words of [lo, hi), lowest address (innermost) first; at most max.
  std::vector<std::uintptr_t> scan(std::uintptr_t lo, std::uintptr_t hi, std::size_t max);
  // The end of the mapping holding addr; 0 if none does.
  std::uintptr_t mapping_end(std::uintptr_t addr) const noexcept;

 private:
  struct Mapping {
    std::uintptr_t lo, hi;
    bool exec;
  };
  const Mapping* find(std::uintptr_t a) const noexcept;
  bool after_call(std::uintptr_t w);
  std::vector<Mapping> maps_;  // sorted by address
  std::unordered_map<std::uintptr_t, bool> after_call_;
};
}  // namespace fiberio::detail
