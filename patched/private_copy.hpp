// Detecting a program that carries its own copy of fiberio which this library cannot reach.
#pragma once

namespace fiberio::patched::detail {

// True if the executable file at `path` contains fiberio's hub (its symbol names, or a message only
// the hub's code holds, which survives stripping). Reads the file; never throws.
bool program_has_private_fiberio(const char* path) noexcept;

}  // namespace fiberio::patched::detail
