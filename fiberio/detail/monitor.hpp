// The blocking monitor's side of the hub (monitor.cpp): every hub registers at creation and
// unregisters in its destructor (on its own thread, before the thread ends), so the monitor never
// holds a pointer to a dead hub. Both take the monitor's registry lock; nothing else of the hub's
// touches the monitor.
#pragma once
#include <cstddef>

namespace fiberio::detail {
class Hub;
void monitor_hub_started(Hub* hub);
void monitor_hub_ended(Hub* hub) noexcept;
// Hubs registered now (tests: a thread's exit unregisters its hub).
std::size_t monitored_hubs();
}  // namespace fiberio::detail
