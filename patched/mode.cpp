#include "patched/mode.hpp"

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

}  // namespace fiberio::patched::detail
