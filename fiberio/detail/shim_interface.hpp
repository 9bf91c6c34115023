// The one interface between the libc shims (patched/) and fiberio's runtime. The shims include only
// this header of fiberio's, and use only what it names:
//  * Hub: the calling thread's hub (get, dispatching), fd waits (wait_fd, the drained hint) and
//    forget_fd for an epoll set of their own; park_until for sleeps;
//  * FdRegistry: the process-wide fd registry (closes from any thread, the shims' view of each fd);
//  * Interruption: a kill or Timeout caught in a shim is re-armed, never lost, never thrown into C;
//  * AsyncResult and the default thread pool, for the resolver's offloaded lookups, and local<T> for
//    its per-greenlet gethostbyname result;
//  * fiberio_runtime_id: which copy of the runtime the process uses (below).
#pragma once
#include "fiberio/detail/fd_registry.hpp"
#include "fiberio/detail/interruption.hpp"
#include "fiberio/event.hpp"
#include "fiberio/hub.hpp"
#include "fiberio/local.hpp"
#include "fiberio/threadpool.hpp"

// Every copy of fiberio's runtime (libfiberio.so, or libfiberio.a linked into a program) defines this
// C symbol, holding FIBERIO_RUNTIME_ID in read-only data. The shims find the runtime the process
// resolves with dlsym("fiberio_runtime_id"), and recognise a program's unexported private copy by the
// text itself (patched/private_copy.cpp).
#define FIBERIO_RUNTIME_ID "fiberio runtime: shim interface v1"
extern "C" const char fiberio_runtime_id[];
