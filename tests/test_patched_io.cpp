// The shims' I/O semantics, call by call: blocking-view fds block only the fiber and look blocking;
// user O_NONBLOCK fds keep EAGAIN; SO_RCVTIMEO / SO_SNDTIMEO; whole writes; many accept()ers;
// close() and shutdown() wake waiters; errno survives the switch; kill / Timeout end a call cleanly.
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "support/interrupts.hpp"
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;
namespace original = fiberio::patched::original;

namespace {

struct Pair {
  int a = -1, b = -1;
  explicit Pair(int flags = 0) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0, sv) != 0) throw std::runtime_error("socketpair");
    a = sv[0];
    b = sv[1];
  }
  ~Pair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
};

bool real_nonblocking(int fd) { return original::fcntl(fd, F_GETFL, nullptr) & O_NONBLOCK; }
bool user_nonblocking(int fd) { return ::fcntl(fd, F_GETFL) & O_NONBLOCK; }

}  // namespace

TEST(PatchedIo, BlockingReadParksOnlyTheFiberAndLooksBlocking) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    ASSERT_TRUE(fiberio::patched::active());
    Ticker ticker;
    std::string got;
    auto reader = fiberio::spawn([&] {
      char buf[64];
      ssize_t n = ::read(p.a, buf, sizeof buf);  // plain blocking read, as any C code writes it
      if (n > 0) got.assign(buf, static_cast<size_t>(n));
      return n;
    });
    fiberio::sleep(300ms);
    EXPECT_FALSE(reader.ready()) << "read must wait for data";
    EXPECT_GE(ticker.ticks(), 5) << "the hub kept running other fibers while read() waited";
    EXPECT_LT(ticker.max_gap_ms(), 200) << "no stall anywhere near the 300 ms read() waited";
    ASSERT_EQ(::write(p.b, "hello", 5), 5);
    EXPECT_EQ(reader.get(), 5);
    EXPECT_EQ(got, "hello");
    // The shim made the fd nonblocking underneath, but the user still sees the blocking fd they made.
    EXPECT_TRUE(real_nonblocking(p.a));
    EXPECT_FALSE(user_nonblocking(p.a));
  }
  leaks.check();
}

TEST(PatchedIo, UserNonblockingFdKeepsEagain) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    char buf[8];
    // fcntl(F_SETFL, O_NONBLOCK)
    Pair p;
    ASSERT_EQ(::fcntl(p.a, F_SETFL, ::fcntl(p.a, F_GETFL) | O_NONBLOCK), 0);
    EXPECT_TRUE(user_nonblocking(p.a));
    auto t0 = Clock::now();
    errno = 0;
    EXPECT_EQ(::read(p.a, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(::recv(p.a, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_LT(ms_since(t0), 200) << "EAGAIN at once, no waiting";
    // ...and back to blocking: the shims block for the user again (cooperatively).
    ASSERT_EQ(::fcntl(p.a, F_SETFL, ::fcntl(p.a, F_GETFL) & ~O_NONBLOCK), 0);
    EXPECT_FALSE(user_nonblocking(p.a));
    auto w = fiberio::spawn_later(50ms, [&] { return ::write(p.b, "x", 1); });
    EXPECT_EQ(::read(p.a, buf, sizeof buf), 1);
    EXPECT_EQ(w.get(), 1);

    // ioctl(FIONBIO) both ways on a shim-owned fd.
    int on = 1;
    ASSERT_EQ(::ioctl(p.a, FIONBIO, &on), 0);
    EXPECT_TRUE(user_nonblocking(p.a));
    EXPECT_EQ(::read(p.a, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN);
    on = 0;
    ASSERT_EQ(::ioctl(p.a, FIONBIO, &on), 0);
    EXPECT_FALSE(user_nonblocking(p.a));
    EXPECT_TRUE(real_nonblocking(p.a));
    auto w2 = fiberio::spawn_later(30ms, [&] { return ::write(p.b, "y", 1); });
    EXPECT_EQ(::read(p.a, buf, sizeof buf), 1);
    w2.join();

    // SOCK_NONBLOCK at creation.
    Pair q(SOCK_NONBLOCK);
    EXPECT_TRUE(user_nonblocking(q.a));
    EXPECT_EQ(::read(q.a, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(::write(q.b, "z", 1), 1);
    EXPECT_EQ(::read(q.a, buf, sizeof buf), 1);

    // accept4(SOCK_NONBLOCK) gives a user-nonblocking fd; plain accept a blocking-view one.
    Listener l;
    int c1 = connect_to(l.port), c2 = connect_to(l.port);
    ASSERT_GE(c1, 0);
    ASSERT_GE(c2, 0);
    int s1 = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int s2 = ::accept(l.fd, nullptr, nullptr);
    ASSERT_GE(s1, 0);
    ASSERT_GE(s2, 0);
    EXPECT_TRUE(user_nonblocking(s1));
    EXPECT_EQ(::recv(s1, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_FALSE(user_nonblocking(s2));
    EXPECT_TRUE(real_nonblocking(s2)) << "accepted inside a fiber: made nonblocking underneath at once";
    for (int fd : {c1, c2, s1, s2}) ::close(fd);
  }
  leaks.check();
}

TEST(PatchedIo, SoRcvtimeoAndSoSndtimeoAreHonoured) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    timeval tv{0, 150000};
    ASSERT_EQ(::setsockopt(p.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    timeval back{};
    socklen_t len = sizeof back;
    ASSERT_EQ(::getsockopt(p.a, SOL_SOCKET, SO_RCVTIMEO, &back, &len), 0);
    EXPECT_NEAR(back.tv_usec, 150000, 20000);  // the kernel rounds to its clock tick
    Ticker ticker;
    char buf[8];
    auto t0 = Clock::now();
    errno = 0;
    EXPECT_EQ(::read(p.a, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN) << "a timed-out blocking read says EAGAIN, as libc does";
    double took = ms_since(t0);
    EXPECT_GE(took, 140);
    EXPECT_LT(took, 1000);
    EXPECT_GE(ticker.ticks(), 5) << "other fibers ran during the timed wait";

    // SO_SNDTIMEO: nobody reads, the buffer fills, the blocking write gives up after the timeout and
    // reports what it did send (Linux's blocking send does the same).
    ASSERT_EQ(::setsockopt(p.b, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    std::vector<char> big(8 << 20, 'x');
    t0 = Clock::now();
    ssize_t n = ::write(p.b, big.data(), big.size());
    took = ms_since(t0);
    EXPECT_GT(n, 0);
    EXPECT_LT(n, static_cast<ssize_t>(big.size()));
    EXPECT_GE(took, 140);
    EXPECT_LT(took, 1000);
    // Buffer still full: now nothing goes, and the error is EAGAIN.
    errno = 0;
    EXPECT_EQ(::send(p.b, big.data(), 1 << 20, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
    ticker.stop();
  }
  leaks.check();
}

TEST(PatchedIo, BlockingWriteSendsEverythingWhileAReaderDrains) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    const size_t total = 6 << 20;
    std::vector<char> data(total);
    for (size_t i = 0; i < total; ++i) data[i] = static_cast<char>(i * 7 + 3);
    auto reader = fiberio::spawn([&] {
      std::vector<char> got;
      got.reserve(total);
      char buf[65536];
      while (got.size() < total) {
        ssize_t n = ::read(p.a, buf, sizeof buf);
        if (n <= 0) break;
        got.insert(got.end(), buf, buf + n);
      }
      return got;
    });
    // writev in two pieces, then check every byte arrived in order.
    iovec iov[2] = {{data.data(), total / 3}, {data.data() + total / 3, total - total / 3}};
    EXPECT_EQ(::writev(p.b, iov, 2), static_cast<ssize_t>(total));
    EXPECT_TRUE(reader.get() == data);

    // recv(MSG_WAITALL) waits for the whole buffer even though it arrives in pieces.
    auto writer = fiberio::spawn([&] {
      for (int i = 0; i < 4; ++i) {
        fiberio::sleep(10ms);
        ::send(p.b, "abcd", 4, 0);
      }
    });
    char buf[16] = {};
    EXPECT_EQ(::recv(p.a, buf, 16, MSG_WAITALL), 16);
    EXPECT_EQ(std::string(buf, 16), "abcdabcdabcdabcd");
    writer.join();
  }
  leaks.check();
}

TEST(PatchedIo, ManyFibersAcceptOnOneListener) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Listener l;
    constexpr int kN = 50;
    std::vector<fiberio::Greenlet<int>> acceptors;
    for (int i = 0; i < kN; ++i)
      acceptors.push_back(fiberio::spawn([&] { return ::accept(l.fd, nullptr, nullptr); }));
    fiberio::sleep(20ms);  // all 50 are now blocked in accept() on the same fd
    std::vector<int> clients;
    for (int i = 0; i < kN; ++i) clients.push_back(connect_to(l.port));
    std::set<int> accepted;
    for (auto& a : acceptors) {
      int fd = a.get();
      EXPECT_GE(fd, 0);
      accepted.insert(fd);
    }
    EXPECT_EQ(accepted.size(), static_cast<size_t>(kN)) << "every acceptor got its own connection";
    for (int fd : accepted) ::close(fd);
    for (int fd : clients) ::close(fd);
  }
  leaks.check();
}

TEST(PatchedIo, CloseWakesAWaitingFiberWithEbadf) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    auto reader = fiberio::spawn([&] {
      char buf[8];
      errno = 0;
      ssize_t n = ::read(sv[0], buf, sizeof buf);
      return std::make_pair(n, errno);
    });
    fiberio::sleep(30ms);
    ASSERT_FALSE(reader.ready());
    auto t0 = Clock::now();
    ASSERT_EQ(::close(sv[0]), 0);
    auto [n, err] = reader.get();
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, EBADF);
    EXPECT_LT(ms_since(t0), 500);
    ::close(sv[1]);
  }
  leaks.check();
}

TEST(PatchedIo, ShutdownWakesReaderWithEofAndAcceptorWithEinval) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    auto reader = fiberio::spawn([&] {
      char buf[8];
      return ::recv(p.a, buf, sizeof buf, 0);
    });
    fiberio::sleep(20ms);
    ASSERT_EQ(::shutdown(p.a, SHUT_RD), 0);
    EXPECT_EQ(reader.get(), 0);

    Listener l;
    auto acceptor = fiberio::spawn([&] {
      errno = 0;
      int fd = ::accept(l.fd, nullptr, nullptr);
      return std::make_pair(fd, errno);
    });
    fiberio::sleep(20ms);
    ASSERT_FALSE(acceptor.ready());
    ASSERT_EQ(::shutdown(l.fd, SHUT_RDWR), 0);
    auto [fd, err] = acceptor.get();
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(err, EINVAL);
  }
  leaks.check();
}

TEST(PatchedIo, DupSharesTheViewAndDup2OntoAWaitedFdWakesIt) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p, q;
    char c;
    // Taken over by a fiber read first, then duplicated: the duplicate looks blocking and blocks.
    auto w = fiberio::spawn_later(10ms, [&] { return ::write(p.b, "ab", 2); });
    ASSERT_EQ(::read(p.a, &c, 1), 1);
    w.join();
    int d = ::dup(p.a);
    ASSERT_GE(d, 0);
    EXPECT_FALSE(user_nonblocking(d));
    EXPECT_EQ(::read(d, &c, 1), 1);
    EXPECT_EQ(c, 'b');
    auto w2 = fiberio::spawn_later(20ms, [&] { return ::write(p.b, "c", 1); });
    EXPECT_EQ(::read(d, &c, 1), 1) << "the dup blocks like the original";
    w2.join();
    // dup2 onto an fd a fiber is blocked on closes it: the fiber wakes with EBADF.
    auto reader = fiberio::spawn([&] {
      char b;
      errno = 0;
      ssize_t n = ::read(q.a, &b, 1);
      return std::make_pair(n, errno);
    });
    fiberio::sleep(20ms);
    int target = q.a;
    ASSERT_EQ(::dup2(d, target), target);
    auto [n, err] = reader.get();
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, EBADF);
    ::close(d);
  }
  leaks.check();
}

TEST(PatchedIo, ErrnoIsPreservedAcrossTheSwitch) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    bool stop = false;
    // A noisy neighbour that keeps setting errno while the reader is parked.
    auto noisy = fiberio::spawn([&] {
      while (!stop) {
        errno = EIO;
        fiberio::sleep(1ms);
      }
    });
    auto w = fiberio::spawn_later(50ms, [&] { return ::write(p.b, "k", 1); });
    errno = ENOTTY;  // whatever the caller had
    char c;
    ASSERT_EQ(::read(p.a, &c, 1), 1);
    EXPECT_EQ(errno, ENOTTY) << "a successful call leaves errno alone, even after other fibers ran";
    // And a failure reports its own error, not the neighbour's.
    timeval tv{0, 50000};
    ::setsockopt(p.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_EQ(::read(p.a, &c, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
    stop = true;
    noisy.join();
    w.join();
  }
  leaks.check();
}

// A close made as a raw system call passes no shim (UBSan's runtime does this with the pipe it probes
// memory with). The number, still registered as a pipe, may come back as a regular file: the shims must
// see that before they switch anything to O_NONBLOCK.
TEST(PatchedIo, PipeNumberClosedByARawSyscallAndReusedForAFileIsLeftAlone) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    TempDir dir;
    int p[2];
    ASSERT_EQ(::pipe(p), 0);  // through the shim: registered as a cooperative pipe
    ASSERT_EQ(::syscall(SYS_close, p[0]), 0);
    std::string path = dir.path + "/f";
    int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_EQ(fd, p[0]) << "the lowest free number is reused";
    int before = original::fcntl(fd, F_GETFL, nullptr);
    EXPECT_EQ(::write(fd, "data", 4), 4);
    ASSERT_EQ(::lseek(fd, 0, SEEK_SET), 0);
    char buf[8];
    EXPECT_EQ(::read(fd, buf, sizeof buf), 4);
    EXPECT_EQ(original::fcntl(fd, F_GETFL, nullptr), before) << "a regular file is never touched";
    ::close(fd);
    ::close(p[1]);
  }
  leaks.check();
}

TEST(PatchedIo, RegularFilesPassThrough) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    TempDir dir;
    std::string path = dir.path + "/f";
    int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    int before = original::fcntl(fd, F_GETFL, nullptr);
    EXPECT_EQ(::write(fd, "data", 4), 4);
    ASSERT_EQ(::lseek(fd, 0, SEEK_SET), 0);
    char buf[8];
    EXPECT_EQ(::read(fd, buf, sizeof buf), 4);
    EXPECT_EQ(::read(fd, buf, sizeof buf), 0);
    EXPECT_EQ(original::fcntl(fd, F_GETFL, nullptr), before) << "a regular file is never touched";
    ::close(fd);
  }
  leaks.check();
}

TEST(PatchedIo, KillEndsTheCallWithEcanceledThenDeliversGreenletExit) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    int err = 0;
    ssize_t n = 0;
    bool after = false;
    auto g = fiberio::spawn([&] {
      char c;
      n = ::read(p.a, &c, 1);
      err = errno;
      after = true;            // C code after the failed call still runs...
      fiberio::sleep(1ms);     // ...and the kill arrives at the next fiberio suspension point
      n = 12345;
    });
    fiberio::sleep(20ms);
    g.kill();
    EXPECT_TRUE(g.killed());
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, ECANCELED);
    EXPECT_TRUE(after);
  }
  leaks.check();
}

// The kill a shim re-arms for the next suspension point goes through the hub's bookkeeping: when the
// greenlet ends without another suspension point, Timeout guards must still fire afterwards.
TEST(PatchedIo, KillDuringAReadThatIsNeverDeliveredKeepsTimeoutsWorking) {
  fiberio::ensure_hub();
  Pair p;
  auto g = fiberio::spawn([&] {
    char c;
    (void)::read(p.a, &c, 1);  // ECANCELED; the greenlet then ends without suspending again
  });
  fiberio::sleep(20ms);
  g.kill();
  EXPECT_TRUE(g.dead());
  fiberio_test::expect_timeout_still_fires();
}

TEST(PatchedIo, TimeoutGuardEndsTheCallThenRaisesTimeoutError) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    auto t0 = Clock::now();
    bool raised = false;
    ssize_t n = 0;
    int err = 0;
    {
      fiberio::Timeout guard(50ms);
      try {
        char c;
        n = ::read(p.a, &c, 1);
        err = errno;
        fiberio::sleep(1ms);
      } catch (const fiberio::TimeoutError& e) {
        raised = e.is(guard);
      }
    }
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, ECANCELED);
    EXPECT_TRUE(raised);
    EXPECT_LT(ms_since(t0), 500);
  }
  leaks.check();
}

TEST(PatchedIo, ConnectIsCooperativeAndReportsErrorsAsLibc) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Listener l;
    int fd = connect_to(l.port);
    EXPECT_GE(fd, 0);
    ::close(fd);
    int port = free_port();
    errno = 0;
    EXPECT_EQ(connect_to(port), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
  }
  leaks.check();
}

extern "C" ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen);

TEST(PatchedIo, MessageCallsAndFortifiedReadAreCooperativeToo) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pair p;
    // recvmsg blocks (cooperatively) until sendmsg's two pieces arrive, with an fd passed alongside.
    auto receiver = fiberio::spawn([&] {
      char data[16] = {};
      iovec iov{data, sizeof data};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = control;
      m.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(p.a, &m, 0);
      int passed = -1;
      if (cmsghdr* c = CMSG_FIRSTHDR(&m); c && c->cmsg_type == SCM_RIGHTS) std::memcpy(&passed, CMSG_DATA(c), sizeof passed);
      std::string got(data, n > 0 ? static_cast<size_t>(n) : 0);
      if (passed >= 0) ::close(passed);
      return std::make_pair(got, passed >= 0);
    });
    fiberio::sleep(20ms);
    ASSERT_FALSE(receiver.ready());
    char a[] = "hello ", b[] = "world";
    iovec iov[2] = {{a, 6}, {b, 5}};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int fd_to_pass = 0;
    std::memcpy(CMSG_DATA(c), &fd_to_pass, sizeof fd_to_pass);
    EXPECT_EQ(::sendmsg(p.b, &m, 0), 11);
    auto [got, passed] = receiver.get();
    EXPECT_EQ(got, "hello world");
    EXPECT_TRUE(passed);

    // What a _FORTIFY_SOURCE build calls instead of read().
    auto w = fiberio::spawn_later(20ms, [&] { return ::write(p.b, "f", 1); });
    char buf[4];
    auto before = fiberio::hub_switches();
    EXPECT_EQ(__read_chk(p.a, buf, 1, sizeof buf), 1);
    EXPECT_GT(fiberio::hub_switches(), before) << "it parked the fiber, as read() does";
    EXPECT_EQ(buf[0], 'f');
    w.join();
  }
  leaks.check();
}

TEST(PatchedIo, DrainedHintNeverStrandsBytesEofOrUrgentData) {
  // A short read() of a TCP socket lets the next read() wait before trying (Hub::note_drained). Data
  // followed by a FIN, or bytes behind TCP's urgent mark, must still all be read, not waited past.
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Listener lst;
    auto run = [&](auto&& send_rest, const std::string& want) {
      auto acceptor = fiberio::spawn([&] { return ::accept(lst.fd, nullptr, nullptr); });
      int c = connect_to(lst.port);
      ASSERT_GE(c, 0);
      int s = acceptor.get();
      ASSERT_GE(s, 0);
      timeval tv{2, 0};  // a bug shows as EAGAIN after 2 s, not as a hang
      ASSERT_EQ(::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
      auto reader = fiberio::spawn([&] {
        std::string got;
        char buf[100];
        for (;;) {
          ssize_t n = ::read(s, buf, sizeof buf);
          if (n <= 0) return got + (n == 0 ? "|eof" : "|errno " + std::to_string(errno));
          got.append(buf, static_cast<size_t>(n));
          if (got == "x") {
            EXPECT_TRUE(fiberio::detail::Hub::current().read_drained(s)) << "the hint is in use";
          }
          if (got.size() >= want.size() + 1 && want.find('|') == std::string::npos) return got;
        }
      });
      fiberio::sleep(5ms);
      ASSERT_EQ(::write(c, "x", 1), 1);  // read after a wait: the fd is registered, the read is short
      fiberio::sleep(5ms);
      send_rest(c);  // all queued before the reader runs again
      EXPECT_EQ(reader.get(), "x" + want);
      ::close(c);
      ::close(s);
    };
    run([](int c) {
      ASSERT_EQ(::write(c, "abc", 3), 3);
      ::shutdown(c, SHUT_WR);
    }, "abc|eof");
    run([](int c) {
      ASSERT_EQ(::write(c, "abc", 3), 3);
      ASSERT_EQ(::send(c, "U", 1, MSG_OOB), 1);
      ASSERT_EQ(::write(c, "def", 3), 3);
    }, "abcdef");
  }
  leaks.check();
}

// ---- closes the owning hub cannot see: other threads, close_range / closefrom, vfork children ----

namespace {
// A shimmed blocking read of one byte on another thread's hub: its result and errno.
struct RemoteRead {
  std::atomic<bool> parked{false};
  std::atomic<int> result{-2}, err{0};
  std::thread thread;
  explicit RemoteRead(int fd) {
    thread = std::thread([this, fd] {
      fiberio::spawn([this, fd] {
        parked = true;
        char c;
        ssize_t n = ::read(fd, &c, 1);
        err = errno;
        result = static_cast<int>(n);
      }).join();
    });
    while (!parked) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(30ms);  // parked on that thread's hub
  }
  // Waits (up to 3 s) for the read to end.
  bool ended() {
    for (int i = 0; i < 3000 && result == -2; ++i) std::this_thread::sleep_for(1ms);
    return result != -2;
  }
  ~RemoteRead() { thread.join(); }
};
}  // namespace

TEST(PatchedClose, CloseOnAnotherThreadWakesTheReaderWithEbadf) {
  Pair p;
  RemoteRead r(p.a);
  ::close(p.a);
  p.a = -1;
  ASSERT_TRUE(r.ended()) << "the reader on the other hub was never woken";
  EXPECT_EQ(r.result, -1);
  EXPECT_EQ(r.err, EBADF);
}

TEST(PatchedClose, CloseRangeAndClosefromWakeReadersOnOtherThreads) {
  for (bool range : {true, false}) {
    Pair p;
    // Above every other fd of the process (the reader's hub makes two more): closefrom(900) closes
    // just the pair.
    for (int* fd : {&p.a, &p.b}) {
      int high = ::fcntl(*fd, F_DUPFD_CLOEXEC, 900);
      ASSERT_GE(high, 900);
      ::close(std::exchange(*fd, high));
    }
    RemoteRead r(p.a);
    if (range) ::close_range(static_cast<unsigned>(std::min(p.a, p.b)), static_cast<unsigned>(std::max(p.a, p.b)), 0);
    else ::closefrom(900);
    p.a = p.b = -1;
    ASSERT_TRUE(r.ended()) << (range ? "close_range" : "closefrom") << ": the reader was never woken";
    EXPECT_EQ(r.result, -1);
    EXPECT_EQ(r.err, EBADF);
  }
}

// A number closed on one thread and reused: a blocking read with SO_RCVTIMEO on the hub that had the
// old fd used to wait out its timeout (EAGAIN) although the data had arrived.
TEST(PatchedClose, ReusedNumberAfterACloseOnAnotherThreadGetsItsData) {
  std::atomic<int> step{0};
  std::atomic<int> fd{-1};
  std::string got;
  int err = 0;
  std::thread b([&] {
    fiberio::spawn([&] {
      // 1: a read on the first pair registers its number with this hub.
      while (step != 1) fiberio::sleep(1ms);
      char c;
      (void)::read(fd, &c, 1);
      step = 2;
      // 3: the number now names a new socket (closed and reused on the main thread).
      while (step != 3) fiberio::sleep(1ms);
      timeval tv{2, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[8];
      ssize_t n = ::read(fd, buf, sizeof buf);
      err = errno;
      if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
      step = 4;
    }).join();
  });
  auto first = std::make_unique<Pair>();
  fd = first->a;
  step = 1;
  std::this_thread::sleep_for(50ms);  // b's read is parked: its hub has registered the number
  ASSERT_EQ(::write(first->b, "x", 1), 1);
  while (step != 2) std::this_thread::sleep_for(1ms);
  int number = first->a;
  first.reset();  // ::close on this thread
  Pair second;
  ASSERT_EQ(second.a, number) << "the kernel did not reuse the number; the test needs it";
  step = 3;
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(::write(second.b, "data", 4), 4);
  b.join();
  EXPECT_EQ(got, "data") << "errno " << err;
}

// A vfork() child runs in its parent's memory: its close() must not touch the parent's hub, whose
// fiber still reads that fd (the parent's fd is still open).
TEST(PatchedClose, VforkChildsCloseLeavesTheParentsWaiterAlone) {
  Pair p;
  std::string got;
  int err = 0;
  auto reader = fiberio::spawn([&] {
    char buf[8];
    ssize_t n = ::read(p.a, buf, sizeof buf);
    err = errno;
    if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
  });
  fiberio::sleep(20ms);  // parked in read(p.a)
  pid_t child = ::vfork();
  if (child == 0) {
    ::close(p.a);  // the child's own copy of the fd
    ::dup2(p.b, p.a);
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  fiberio::sleep(20ms);
  EXPECT_FALSE(reader.dead()) << "the parent's reader was woken by the child's close (errno " << err << ")";
  ASSERT_EQ(::write(p.b, "hi", 2), 2);
  reader.join(2s);
  EXPECT_EQ(got, "hi") << "errno " << err;
  // The parent's view of p.a is intact: still the shims' socket, still blocking for the user.
  EXPECT_FALSE(user_nonblocking(p.a));
}

// A blocking connect() on a connected socket fails with EISCONN (libc), also inside a fiber, where the
// shim connects without blocking and waits for completion.
TEST(PatchedIo, SecondConnectOnAConnectedSocketIsEisconn) {
  fiberio::ensure_hub();
  Listener lst;
  int c = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(c, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(lst.port));
  errno = 0;
  EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), -1);
  EXPECT_EQ(errno, EISCONN);
  ::close(c);
}

// fclose() of a stream that has no fd (fmemopen) leaves errno alone, as libc does.
TEST(PatchedIo, FcloseOfAStreamWithoutAnFdLeavesErrnoAlone) {
  char text[] = "abc";
  FILE* m = ::fmemopen(text, 3, "r");
  ASSERT_NE(m, nullptr);
  errno = 0;
  EXPECT_EQ(::fclose(m), 0);
  EXPECT_EQ(errno, 0);
}

// C code in fibers under a storm of signals (an interval timer every 200 µs, a handler without
// SA_RESTART): each call either succeeds or fails with EINTR as libc allows, and a loop written the
// usual C way (retry on EINTR, continue after a short write) moves every byte intact.
TEST(PatchedSignals, CLoopsUnderASignalStormMoveEveryByte) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  LeakCheck leaks;
  static std::atomic<long> alarms{0};
  struct sigaction sa {}, before {};
  sa.sa_handler = [](int) { alarms.fetch_add(1, std::memory_order_relaxed); };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGALRM, &sa, &before), 0);
  itimerval every{{0, 200}, {0, 200}}, off{};
  ASSERT_EQ(::setitimer(ITIMER_REAL, &every, nullptr), 0);
  {
    constexpr std::size_t kBytes = 1 << 20;
    std::string sent(kBytes, '\0');
    for (std::size_t i = 0; i < kBytes; ++i) sent[i] = static_cast<char>(i * 131 % 251);
    auto write_all = [](int fd, const char* p, std::size_t n) {
      while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
      }
      return true;
    };
    auto read_all = [](int fd, std::size_t n) {
      std::string out;
      char buf[4096];
      while (out.size() < n) {
        ssize_t r = ::read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        out.append(buf, static_cast<std::size_t>(r));
      }
      return out;
    };
    Listener l;
    auto server = fiberio::spawn([&] {
      int c;
      while ((c = ::accept(l.fd, nullptr, nullptr)) < 0 && errno == EINTR) {}
      EXPECT_GE(c, 0) << std::strerror(errno);
      std::string got = read_all(c, kBytes);
      EXPECT_TRUE(write_all(c, got.data(), got.size()));
      ::close(c);
    });
    auto sleeper = fiberio::spawn([] {
      for (int i = 0; i < 20; ++i) {
        timespec ts{0, 1'000'000}, left{};
        while (::nanosleep(&ts, &left) != 0) {
          EXPECT_EQ(errno, EINTR);
          ts = left;
        }
      }
    });
    std::string echoed;
    auto client = fiberio::spawn([&] {
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<std::uint16_t>(l.port));
      int rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
      if (rc != 0 && errno == EINTR) {  // the connection goes on in the background: wait for it
        pollfd p{s, POLLOUT, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {}
        rc = 0;
      }
      EXPECT_EQ(rc, 0) << std::strerror(errno);
      auto reader = fiberio::spawn([&] { echoed = read_all(s, kBytes); });
      EXPECT_TRUE(write_all(s, sent.data(), sent.size()));
      reader.join();
      ::close(s);
    });
    EXPECT_EQ(fiberio::joinall({server, sleeper, client}, 30s).size(), 3u);
    EXPECT_TRUE(echoed == sent) << "echoed " << echoed.size() << " of " << sent.size() << " bytes, or corrupted";
  }
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &before, nullptr);
  EXPECT_GT(alarms.load(), 10);
  leaks.check();
}
