// The real libc functions, as the shims' sources call them: real::read(...). The same functions are
// public as fiberio::patched::original (fiberio/patched_original.hpp).
#pragma once
#include "fiberio/patched_original.hpp"

namespace fiberio::patched {
namespace real = original;
}
