// The one conversion of a failed fd wait (Hub::wait_fd's result) to an exception, for io.cpp and
// Socket. (The shims' one conversion to errno is BlockingCall::wait.)
#pragma once
#include <string>

#include "fiberio/hub.hpp"

namespace fiberio::detail {

// Throws what `r` means for the operation described by `what` (e.g. "fiberio::wait_read(fd 5)"):
// TimeoutError (naming `timeout`), ClosedError, or std::system_error(EPERM) for an fd that cannot be
// polled. Returns only for FdWait::Ready.
void throw_if_failed(FdWait r, const std::string& what, const OptDuration& timeout);

}  // namespace fiberio::detail
