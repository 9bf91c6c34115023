// Which way a shim goes on this call: cooperate with this thread's hub, or be plain libc.
#pragma once
#include <atomic>

#include "fiberio/detail/shim_interface.hpp"

namespace fiberio::patched::detail {

extern std::atomic<bool> g_enabled;  // fiberio::patched::enable()/disable()
extern thread_local int t_disabled;  // depth of fiberio::patched::Disabled guards on this thread

// The hub a blocking call here may park on, or null when the call must behave exactly as libc: no hub
// on this thread, the shims are switched off (globally or by a Disabled guard), or the caller is the
// hub itself (Boost.Fiber's dispatcher waiting in epoll, which must never park on itself).
inline fiberio::detail::Hub* cooperative_hub() noexcept {
  if (!g_enabled.load(std::memory_order_relaxed) || t_disabled > 0) return nullptr;
  auto* hub = fiberio::detail::Hub::get();
  return hub && !hub->dispatching() ? hub : nullptr;
}

}  // namespace fiberio::patched::detail
