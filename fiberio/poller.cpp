#include "fiberio/poller.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <system_error>

namespace fiberio::detail {

namespace {
constexpr std::uint64_t kWakeToken = ~std::uint64_t{0};
// Events taken per wait. The hub wakes a batch's fibers and then runs them: a smaller batch keeps each
// fiber's memory, touched at the wake-up, in cache until it runs (with thousands of busy connections,
// 256 measured slower than 64).
constexpr int kMaxEvents = 64;
}

Poller::Poller() { open(); }

Poller::~Poller() {
  ::close(epfd_);
  ::close(wakefd_);
}

void Poller::open() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "fiberio hub: epoll_create1");
  wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd_ < 0) throw std::system_error(errno, std::generic_category(), "fiberio hub: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: stays readable until drained
  ev.data.u64 = kWakeToken;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
}

int Poller::add(int fd, std::uint64_t token) noexcept {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
  ev.data.u64 = token;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
  if (errno == EEXIST && ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
  return errno;
}

void Poller::remove(int fd) noexcept { ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

void Poller::wait(std::int64_t timeout_ns, std::vector<Ready>& out) noexcept {
  epoll_event evs[kMaxEvents];
  int n = 0;
  // epoll_pwait2 takes nanoseconds, so sleep(100us) is not rounded up to a millisecond.
  static std::atomic<bool> have_pwait2{true};
  if (have_pwait2 && timeout_ns > 0) {
    timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
    n = ::epoll_pwait2(epfd_, evs, kMaxEvents, &ts, nullptr);
    if (n < 0 && errno == ENOSYS) have_pwait2 = false;
  }
  if (!have_pwait2 || timeout_ns <= 0) {
    int ms = timeout_ns < 0 ? -1 : static_cast<int>(std::min<std::int64_t>((timeout_ns + 999999) / 1000000, 1 << 30));
    n = ::epoll_wait(epfd_, evs, kMaxEvents, ms);
  }
  for (int i = 0; i < n; ++i) {
    if (evs[i].data.u64 == kWakeToken) {
      std::uint64_t v;
      while (::read(wakefd_, &v, sizeof v) > 0) {
      }
      continue;
    }
    std::uint32_t e = evs[i].events, r = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) r |= Readable;
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) r |= Writable;
    if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) r |= Hangup;
    out.push_back({evs[i].data.u64, r});
  }
}

void Poller::wake() noexcept {
  std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wakefd_, &one, sizeof one);
}

void Poller::reopen(const std::vector<Registration>& regs) noexcept {
  ::close(epfd_);
  ::close(wakefd_);
  open();
  for (auto& r : regs) add(r.fd, r.token);
}

}  // namespace fiberio::detail
