// Detecting a program that carries its own static copy of fiberio, which the shims cannot reach.
//
// Normally the program, fiberio's internals and the shims share libfiberio.so, so one hub per thread.
// A program linked with the static libfiberio.a (FIBERIO_SHARED=OFF) keeps its hubs inside the
// executable: a preloaded shim library binds to another fiberio, never sees those hubs, and would
// silently stay plain libc. patched.cpp checks this at load and says so.
#pragma once

namespace fiberio::patched::detail {

// True if the loaded object (executable or shared library) containing `address` holds fiberio's hub
// code. It looks for a message only the hub's code carries, in the object's read-only segments, so
// stripping does not hide it. Reads memory only; never throws.
bool object_has_fiberio_hub(const void* address) noexcept;
// object_has_fiberio_hub() for the main program.
bool program_has_private_fiberio() noexcept;
// True if `address` lies in the main program rather than in a shared object.
bool in_program(const void* address) noexcept;

}  // namespace fiberio::patched::detail
