#include "fiberio/local.hpp"

#include <atomic>

#include "fiberio/greenlet.hpp"

namespace fiberio::detail {

namespace {
// The key under which a greenlet's locals map records that its cleanup is armed.
const char kCleanupArmed = 0;
}  // namespace

std::uint64_t next_local_id() noexcept {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void arm_local_cleanup(FiberState& st) {
  if (!st.greenlet) return clean_up_at_thread_exit();  // the main fiber's: freed at thread exit
  if (st.locals.count(&kCleanupArmed)) return;
  st.locals.emplace(&kCleanupArmed, nullptr);
  auto* ctx = boost::fibers::context::active();
  // A finishing greenlet runs its links on its own fiber, so the values die there, deterministically,
  // instead of whenever Boost.Fiber gets round to destroying the fiber's context.
  st.greenlet->rawlink([ctx] {
    if (boost::fibers::context::active() != ctx) return;
    auto& locals = fiber_state(ctx).locals;
    // Bounded: a destructor that touches a local again re-creates at most what it touches.
    for (int round = 0; round < 8 && !locals.empty(); ++round) {
      auto doomed = std::move(locals);
      locals.clear();
      doomed.clear();  // T's destructors run here, with the live map already empty
    }
  });
}

}  // namespace fiberio::detail
