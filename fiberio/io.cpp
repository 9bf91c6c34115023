#include "fiberio/io.hpp"

#include "fiberio/detail/fd_registry.hpp"
#include "fiberio/detail/fd_wait_error.hpp"
#include "fiberio/hub.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <system_error>

namespace fiberio {

namespace detail {
void throw_if_failed(FdWait r, const std::string& what, const OptDuration& timeout) {
  switch (r) {
    case FdWait::Ready:
      return;
    case FdWait::TimedOut: {
      std::string limit = timeout ? fmt::format("{:g} ms", std::chrono::duration<double, std::milli>(*timeout).count())
                                  : std::string("no limit");
      throw TimeoutError(fmt::format("{}: timed out ({})", what, limit));
    }
    case FdWait::Closed:
      throw ClosedError(what + ": the fd was closed while waiting");
    case FdWait::NotPollable:
      throw std::system_error(EPERM, std::generic_category(), what + ": fd cannot be polled (regular file?)");
  }
}
}  // namespace detail

namespace {
void wait_fd(int fd, detail::Io dir, OptDuration timeout) {
  const char* what = dir == detail::Io::Read ? "wait_read" : "wait_write";
  // level: an fd that is ready now (data left after a partial read) returns at once, as io.hpp promises.
  auto r = detail::Hub::current().wait_fd(fd, dir, detail::deadline_after(timeout), true, /*level=*/true);
  detail::throw_if_failed(r, fmt::format("fiberio::{}(fd {})", what, fd), timeout);
}
}  // namespace

void wait_read(int fd, OptDuration timeout) { wait_fd(fd, detail::Io::Read, timeout); }
void wait_write(int fd, OptDuration timeout) { wait_fd(fd, detail::Io::Write, timeout); }

void forget_fd(int fd) noexcept { detail::FdRegistry::instance().forget(fd); }

int close(int fd) noexcept {
  detail::FdRegistry::instance().closing(fd);
  return ::close(fd);
}

void set_nonblocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK)) < 0)
    throw std::system_error(errno, std::generic_category(), fmt::format("fiberio::set_nonblocking(fd {})", fd));
}

}  // namespace fiberio
