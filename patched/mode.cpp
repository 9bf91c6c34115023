#include "patched/mode.hpp"

#include <boost/fiber/context.hpp>
#include <boost/fiber/type.hpp>

#include <cstdlib>
#include <cstring>

namespace fiberio::patched::detail {

namespace {
bool initially_enabled() noexcept {
  // FIBERIO_PATCHED=0 starts the process with the shims off (useful with LD_PRELOAD).
  const char* v = std::getenv("FIBERIO_PATCHED");
  return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
}
}  // namespace

std::atomic<bool> g_enabled{initially_enabled()};
thread_local int t_disabled = 0;

fiberio::detail::Hub* cooperative_hub() noexcept {
  if (!g_enabled.load(std::memory_order_relaxed) || t_disabled > 0) return nullptr;
  auto* hub = fiberio::detail::Hub::get();
  if (!hub) return nullptr;
  // A hub exists, so Boost.Fiber already has this thread's contexts: active() does not allocate.
  auto* ctx = boost::fibers::context::active();
  if (!ctx || ctx->is_context(boost::fibers::type::dispatcher_context)) return nullptr;
  return hub;
}

}  // namespace fiberio::patched::detail
