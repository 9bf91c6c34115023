// The hot-path side of fiberio's event hooks (runinfo.hpp's add_hook): one relaxed load of a plain
// flag, false while no hook is installed, so an unused hook costs one predictable branch.
#pragma once
#include <atomic>
#include <cstdint>

namespace boost::fibers {
class context;
}

namespace fiberio::detail {
extern constinit std::atomic<bool> g_hooks_active;
inline bool hooks_active() noexcept { return g_hooks_active.load(std::memory_order_relaxed); }
// The slow paths (runinfo.cpp), called only while hooks_active(). from/to: null is the hub itself.
void fire_switch(boost::fibers::context* from, boost::fibers::context* to) noexcept;
void fire_spawn(std::uint64_t id, std::uint64_t spawner) noexcept;
void fire_finish(std::uint64_t id) noexcept;
void fire_stall(std::uint64_t id, std::uint64_t ms) noexcept;
// A greenlet's first run: the switch into it, reported once its id is known.
void fire_started(std::uint64_t id) noexcept;
}  // namespace fiberio::detail
