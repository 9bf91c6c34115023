// When the shims step aside: threads without a hub, the global switch, the per-thread Disabled guard,
// the original functions — plus introspection and LD_PRELOAD into a program that has no fiberio.
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <thread>

#include "patched/private_copy.hpp"
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;
namespace patched = fiberio::patched;

namespace {
struct Pair {
  int a = -1, b = -1;
  Pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
    a = sv[0];
    b = sv[1];
  }
  ~Pair() {
    ::close(a);
    ::close(b);
  }
};
}  // namespace

TEST(PatchedSwitch, ThreadWithoutHubBehavesExactlyAsLibc) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair owned;  // taken over below by a fiber on this (hub) thread
    auto w = fiberio::spawn_later(10ms, [&] { return ::write(owned.b, "1", 1); });
    char c;
    ASSERT_EQ(::read(owned.a, &c, 1), 1);
    w.join();
    ASSERT_TRUE(patched::original::fcntl(owned.a, F_GETFL, nullptr) & O_NONBLOCK);

    struct Result {
      bool hub = true, active = true;
      double pipe_wait_ms = 0;
      ssize_t pipe_n = 0;
      int fresh_real_flags = -1;
      int eagain_errno = 0;
      double owned_wait_ms = 0;
      ssize_t owned_n = 0;
      double timeo_ms = 0;
      int timeo_errno = 0;
      bool owned_looks_blocking = false;
    } r;
    std::thread t([&] {
      r.hub = fiberio::detail::Hub::get() != nullptr;
      r.active = patched::active();
      // A fresh pipe: the thread blocks in read until another thread writes.
      int p[2];
      ::pipe(p);
      std::thread writer([&] {
        ::usleep(100000);
        ::write(p[1], "abc", 3);
      });
      char buf[8];
      auto t0 = Clock::now();
      r.pipe_n = ::read(p[0], buf, sizeof buf);
      r.pipe_wait_ms = ms_since(t0);
      writer.join();
      r.fresh_real_flags = patched::original::fcntl(p[0], F_GETFL, nullptr);
      ::fcntl(p[0], F_SETFL, O_NONBLOCK);
      errno = 0;
      ::read(p[0], buf, sizeof buf);
      r.eagain_errno = errno;
      ::close(p[0]);
      ::close(p[1]);
      // A shim-owned fd (O_NONBLOCK underneath) still blocks this thread as the user expects.
      r.owned_looks_blocking = !(::fcntl(owned.a, F_GETFL) & O_NONBLOCK);
      std::thread writer2([&] {
        ::usleep(100000);
        ::write(owned.b, "xy", 2);
      });
      t0 = Clock::now();
      r.owned_n = ::read(owned.a, buf, sizeof buf);
      r.owned_wait_ms = ms_since(t0);
      writer2.join();
      timeval tv{0, 100000};
      ::setsockopt(owned.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      t0 = Clock::now();
      errno = 0;
      ::read(owned.a, buf, sizeof buf);
      r.timeo_errno = errno;
      r.timeo_ms = ms_since(t0);
    });
    t.join();
    EXPECT_FALSE(r.hub);
    EXPECT_FALSE(r.active);
    EXPECT_EQ(r.pipe_n, 3);
    EXPECT_GE(r.pipe_wait_ms, 90);
    EXPECT_EQ(r.fresh_real_flags & O_NONBLOCK, 0) << "nothing touched a fd made on a thread without hub";
    EXPECT_EQ(r.eagain_errno, EAGAIN);
    EXPECT_TRUE(r.owned_looks_blocking);
    EXPECT_EQ(r.owned_n, 2);
    EXPECT_GE(r.owned_wait_ms, 90);
    EXPECT_EQ(r.timeo_errno, EAGAIN);
    EXPECT_GE(r.timeo_ms, 90);
    EXPECT_LT(r.timeo_ms, 1000);
  }
  leaks.check();
}

TEST(PatchedSwitch, DisabledGuardDeliberatelyBlocksTheHub) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Ticker ticker;
    fiberio::sleep(30ms);
    ticker.reset();
    bool active_inside = true, active_nested_exit = true;
    {
      patched::Disabled off;
      {
        patched::Disabled again;  // nests
      }
      active_nested_exit = patched::active();
      active_inside = patched::active();
      ::usleep(400000);  // the whole thread sleeps: the ticker cannot run
    }
    fiberio::sleep(30ms);
    EXPECT_FALSE(active_inside);
    EXPECT_FALSE(active_nested_exit) << "the outer guard still holds";
    EXPECT_TRUE(patched::active());
    EXPECT_GE(ticker.max_gap_ms(), 380) << "with the guard, usleep stalled the hub";

    ticker.reset();
    ::usleep(400000);
    fiberio::sleep(20ms);
    EXPECT_LT(ticker.max_gap_ms(), 250) << "without it, only this fiber slept";

    // A read under the guard blocks the thread, on a shim-owned fd too, and still gets its data.
    Pair p;
    auto w = fiberio::spawn_later(5ms, [&] { return ::write(p.b, "a", 1); });
    char c;
    ASSERT_EQ(::read(p.a, &c, 1), 1);  // shim-owned from here
    w.join();
    std::thread writer([&] {
      ::usleep(150000);
      ::write(p.b, "b", 1);
    });
    ticker.reset();
    ssize_t n;
    {
      patched::Disabled off;
      n = ::read(p.a, &c, 1);
    }
    writer.join();
    fiberio::sleep(20ms);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(c, 'b');
    EXPECT_GE(ticker.max_gap_ms(), 120);
  }
  leaks.check();
}

TEST(PatchedSwitch, GlobalSwitchTurnsEveryShimIntoLibc) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Ticker ticker;
    fiberio::sleep(30ms);
    ticker.reset();
    ASSERT_TRUE(patched::enabled());
    patched::disable();
    bool active_off = patched::active();
    ::usleep(150000);
    patched::enable();
    fiberio::sleep(20ms);
    EXPECT_FALSE(active_off);
    EXPECT_GE(ticker.max_gap_ms(), 130);
    EXPECT_TRUE(patched::enabled());
    // And a socket made while switched off is left exactly as libc makes it.
    patched::disable();
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    patched::enable();
    EXPECT_EQ(patched::original::fcntl(fd, F_GETFL, nullptr) & O_NONBLOCK, 0);
    ::close(fd);
  }
  leaks.check();
}

TEST(PatchedSwitch, OriginalFunctionsAlwaysBlockTheThread) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Ticker ticker;
    fiberio::sleep(30ms);
    ticker.reset();
    patched::original::usleep(150000);
    fiberio::sleep(20ms);
    EXPECT_GE(ticker.max_gap_ms(), 130);
    // On an fd the shims made nonblocking underneath, the original read says so (EAGAIN).
    Pair p;
    auto w = fiberio::spawn_later(5ms, [&] { return ::write(p.b, "a", 1); });
    char c;
    ASSERT_EQ(::read(p.a, &c, 1), 1);
    w.join();
    errno = 0;
    EXPECT_EQ(patched::original::read(p.a, &c, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
  }
  leaks.check();
}

TEST(PatchedSwitch, IntrospectionLikeGevent) {
  fiberio::ensure_hub();
  EXPECT_TRUE(patched::installed());
  EXPECT_TRUE(patched::enabled());
  EXPECT_TRUE(patched::active());
  EXPECT_TRUE(patched::is_patched("read"));
  EXPECT_TRUE(patched::is_patched("getaddrinfo"));
  EXPECT_FALSE(patched::is_patched("malloc"));
  EXPECT_FALSE(patched::is_patched("no_such_function"));
  auto all = patched::patched_functions();
  EXPECT_GE(all.size(), 45u);
  for (auto f : {"socket", "accept4", "recvmsg", "sendmsg", "pselect", "epoll_wait", "clock_nanosleep", "dup3",
                 "pipe2", "gethostbyname_r", "ioctl", "fcntl"})
    EXPECT_NE(std::find(all.begin(), all.end(), std::string_view(f)), all.end()) << f;
  for (auto f : all) EXPECT_TRUE(patched::is_patched(f)) << f;
  bool on_thread = true;
  std::thread([&] { on_thread = patched::active(); }).join();
  EXPECT_FALSE(on_thread) << "a thread without hub is never active";
}

TEST(PatchedSwitch, PreloadIntoAProgramWithoutFiberioChangesNothing) {
  fiberio::ensure_hub();
  TempDir dir;
  std::string log = dir.path + "/out";
  std::string sh = find_program("sh");
  ASSERT_FALSE(sh.empty());
  Child child({sh, "-c", "sleep 0.1; printf 'x%sy' $((6*7))"}, log,
              {std::string("LD_PRELOAD=") + FIBERIO_PATCHED_SO});
  int st = child.signal_and_wait(0, 5000ms);
  ASSERT_NE(st, -1) << "sh did not finish";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(read_file(log), "x42y") << "no warning, no change: there is no hub in sh";
}

TEST(PatchedSwitch, LoadTimeCheckFindsWhichObjectHoldsTheHub) {
  // The check that warns when a preloaded program carries its own, unreachable copy of fiberio
  // (PatchedPreload.ProgramWithItsOwnStaticFiberioGetsAWarningAndPlainLibc runs it end to end).
  const void* hub_code = patched::original::resolved("fiberio_runtime_id");
  ASSERT_NE(hub_code, nullptr);
  EXPECT_TRUE(patched::detail::object_has_fiberio_hub(hub_code)) << "the runtime id is gone";
  const void* libc_code = patched::original::resolved("abort");
  ASSERT_NE(libc_code, nullptr);
  EXPECT_FALSE(patched::detail::object_has_fiberio_hub(libc_code));
  EXPECT_FALSE(patched::detail::object_has_fiberio_hub(nullptr));
  static const int in_this_program = 1;
  int on_stack = 0;
  EXPECT_TRUE(patched::detail::in_program(&in_this_program));
  EXPECT_FALSE(patched::detail::in_program(&on_stack));
  EXPECT_FALSE(patched::detail::in_program(libc_code));
  // This test links fiberio like any user: with the shared library (the default), the hub lives in
  // libfiberio.so and the program holds none of its own; linked statically, the program holds it.
  EXPECT_EQ(patched::detail::in_program(hub_code), !FIBERIO_SHARED_BUILD);
  EXPECT_EQ(patched::detail::program_has_private_fiberio(), !FIBERIO_SHARED_BUILD);
}
