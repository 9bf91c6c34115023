// fiberio::subprocess: spawning, pipes, communicate, wait, timeouts, kills — children never stall the
// hub, never deadlock on full pipes, and never outlive their Popen as running processes or zombies.
#include <fiberio/fiberio.hpp>
#include <fiberio/subprocess.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/leak_check.hpp"
#include "support/children.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
namespace sp = fiberio::subprocess;
using fiberio::Clock;
using fiberio_test::children;
using fiberio_test::LeakCheck;
using fiberio_test::reaped;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Leaks of fds and greenlets (LeakCheck) and of children.
class NoLeaks {
 public:
  NoLeaks() : kids_(children()) {}
  void check() {
    leaks_.check();
    EXPECT_EQ(children(), kids_) << "a child (running or zombie) was left behind";
  }

 private:
  LeakCheck leaks_;
  std::set<pid_t> kids_;
};

}  // namespace

TEST(Subprocess, FiftySleepersInFiftyGreenletsOverlap) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    std::vector<fiberio::Greenlet<int>> gs;
    auto t0 = Clock::now();
    for (int i = 0; i < 50; ++i) gs.push_back(fiberio::spawn([] { return sp::run({"/bin/sleep", "0.3"}).returncode; }));
    for (auto& g : gs) EXPECT_EQ(g.get(), 0);
    // 50 x 0.3 s = 15 s if the hub stalled in each wait; side by side it is about 0.3 s.
    EXPECT_LT(seconds_since(t0), 5.0);
  }
  leaks.check();
}

TEST(Subprocess, ChildFloodingStdoutAndStderrNeverDeadlocksAndEveryByteArrives) {
  FIBERIO_WATCHDOG(60);
  NoLeaks leaks;
  {
    // One after the other: stderr fills while nobody would read it if stdout were read to EOF first.
    auto r = sp::run({"sh", "-c", "head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2"},
                     {.out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
    EXPECT_EQ(r.returncode, 0);
    EXPECT_EQ(r.out.size(), 10000000u);
    EXPECT_EQ(r.err.size(), 10000000u);
    EXPECT_EQ(r.out.find_first_not_of('\0'), std::string::npos);
    // Both at once, with a distinct byte pattern each.
    auto both = sp::run({"sh", "-c", "yes o | head -c 5000000 & yes e | head -c 5000000 >&2; wait"},
                        {.out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
    EXPECT_EQ(both.returncode, 0);
    ASSERT_EQ(both.out.size(), 5000000u);
    ASSERT_EQ(both.err.size(), 5000000u);
    EXPECT_EQ(both.out.find_first_not_of("o\n"), std::string::npos);
    EXPECT_EQ(both.err.find_first_not_of("e\n"), std::string::npos);
  }
  leaks.check();
}

TEST(Subprocess, CommunicateWritesInputLargerThanAPipeBufferWhileReadingOutput) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    std::string input;
    for (int i = 0; input.size() < 4 * 1024 * 1024; ++i) input += std::to_string(i) + "\n";
    sp::Popen p({"cat"}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
    auto [out, err] = p.communicate(input);
    EXPECT_EQ(out, input);
    EXPECT_EQ(err, "");
    EXPECT_EQ(p.returncode(), 0);
    EXPECT_FALSE(p.in().is_open());
    EXPECT_FALSE(p.out().is_open());
    // run(input) makes stdin a pipe by itself.
    auto r = sp::run({"wc", "-c"}, {.out = sp::Stdio::Pipe, .input = input});
    EXPECT_EQ(std::stoul(r.out), input.size());
  }
  leaks.check();
}

TEST(Subprocess, ChildThatIgnoresItsInputEndsCleanlyWithoutSigpipe) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    // true exits without reading: the writes fail with EPIPE. A SIGPIPE would kill this test process.
    auto r = sp::run({"true"}, {.input = std::string(1 << 20, 'x')});
    EXPECT_EQ(r.returncode, 0);
    sp::Popen p({"true"}, {.in = sp::Stdio::Pipe});
    p.wait();
    try {
      p.in().write_all(std::string(1 << 20, 'x'));
      ADD_FAILURE() << "write to a child that exited succeeded";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), EPIPE);
    }
  }
  leaks.check();
}

TEST(Subprocess, RunTimeoutKillsAndReapsTheChild) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  auto t0 = Clock::now();
  try {
    sp::run({"/bin/sleep", "10"}, {.timeout = 200ms});
    ADD_FAILURE() << "no timeout";
  } catch (const sp::TimeoutExpired& e) {
    EXPECT_EQ(e.timeout(), std::chrono::duration_cast<fiberio::Duration>(200ms));
    EXPECT_NE(std::string(e.what()).find("sleep"), std::string::npos) << e.what();
  }
  EXPECT_LT(seconds_since(t0), 3.0);
  EXPECT_TRUE(children().empty()) << "killed and reaped before the error left run()";
  // It is a fiberio::TimeoutError too.
  EXPECT_THROW(sp::run({"/bin/sleep", "10"}, {.timeout = 50ms}), fiberio::TimeoutError);
  leaks.check();
}

TEST(Subprocess, WaitTimeoutLeavesTheChildRunningThenKillAndWaitReapIt) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen p({"/bin/sleep", "10"});
    EXPECT_THROW(p.wait(100ms), sp::TimeoutExpired);
    EXPECT_FALSE(p.poll());
    EXPECT_FALSE(p.returncode());
    p.kill();
    EXPECT_EQ(p.wait(5s), -SIGKILL);
    ASSERT_TRUE(p.wait_status());
    EXPECT_TRUE(WIFSIGNALED(*p.wait_status()));
    EXPECT_TRUE(reaped(p.pid()));
    p.kill();  // reaped: a no-op, never a signal to whoever has that pid now
  }
  leaks.check();
}

TEST(Subprocess, OutputBeforeACommunicateTimeoutIsKeptForTheNextCall) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen p({"sh", "-c", "echo early; echo also >&2; exec sleep 10"}, {.out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
    EXPECT_THROW(p.communicate({}, 300ms), sp::TimeoutExpired);
    p.kill();
    auto o = p.communicate();
    EXPECT_EQ(o.out, "early\n");
    EXPECT_EQ(o.err, "also\n");
    EXPECT_EQ(p.returncode(), -SIGKILL);
    EXPECT_THROW(p.communicate("late"), std::logic_error);
  }
  leaks.check();
}

TEST(Subprocess, KillingTheGreenletDuringWaitOrCommunicateLeavesNoZombieAndNoFd) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  for (bool communicate : {false, true}) {
    pid_t pid = -1;
    auto g = fiberio::spawn([&] {
      sp::Popen p({"/bin/sleep", "10"}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
      pid = p.pid();
      if (communicate) p.communicate(std::string(1 << 20, 'x'));  // sleep never reads: parks writing
      else p.wait();
    });
    fiberio::sleep(100ms);
    ASSERT_GT(pid, 0);
    EXPECT_TRUE(children().count(pid));
    auto t0 = Clock::now();
    g.kill();
    EXPECT_TRUE(g.killed());
    EXPECT_LT(seconds_since(t0), 3.0);
    EXPECT_TRUE(reaped(pid)) << (communicate ? "communicate" : "wait");
  }
  leaks.check();
}

TEST(Subprocess, ATimeoutGuardEndsAWaitAndTheDestructorReaps) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  pid_t pid = -1;
  try {
    fiberio::Timeout t(100ms);
    sp::Popen p({"/bin/sleep", "10"});
    pid = p.pid();
    p.wait();
    ADD_FAILURE() << "the guard did not fire";
  } catch (const fiberio::TimeoutError&) {
  }
  EXPECT_TRUE(reaped(pid));
  leaks.check();
}

TEST(Subprocess, DestroyingARunningPopenKillsAndReapsIt) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  pid_t pid;
  auto t0 = Clock::now();
  {
    sp::Popen p({"/bin/sleep", "10"}, {.out = sp::Stdio::Pipe});
    pid = p.pid();
  }
  EXPECT_LT(seconds_since(t0), 3.0);
  EXPECT_TRUE(reaped(pid));
  // A moved-from Popen owns nothing; the one it moved into does.
  {
    sp::Popen a({"/bin/sleep", "10"});
    pid = a.pid();
    sp::Popen b(std::move(a));
    EXPECT_EQ(a.pid(), -1);
    EXPECT_EQ(b.pid(), pid);
    EXPECT_THROW(a.wait(), std::system_error);  // nothing to wait for, never a bogus status
    EXPECT_THROW(a.poll(), std::system_error);
  }
  EXPECT_TRUE(reaped(pid));
  leaks.check();
}

TEST(Subprocess, AProgramThatCannotRunThrowsNamingItAndItsErrno) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  auto expect_error = [](std::vector<std::string> argv, int err, std::string name, sp::Options o = {}) {
    try {
      sp::Popen p(argv, o);
      ADD_FAILURE() << "started " << argv[0];
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), err) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::strerror(err)), std::string::npos) << e.what();
    }
  };
  expect_error({"fiberio-no-such-program"}, ENOENT, "'fiberio-no-such-program'");  // PATH search
  // The pipes made for it are closed again (NoLeaks counts fds).
  expect_error({"fiberio-no-such-program"}, ENOENT, "'fiberio-no-such-program'",
               {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
  expect_error({"/nonexistent/dir/prog"}, ENOENT, "/nonexistent/dir/prog");
  expect_error({"/etc/passwd"}, EACCES, "/etc/passwd");                            // not executable
  expect_error({"/bin/true"}, ENOENT, "'/nonexistent-cwd'", {.cwd = "/nonexistent-cwd"});
  EXPECT_THROW(sp::Popen({}), std::invalid_argument);
  EXPECT_THROW(sp::Popen({"true"}, {.out = sp::Stdio::Stdout}), std::invalid_argument);
  EXPECT_THROW(sp::Popen({"true"}, {.timeout = 1s}), std::invalid_argument);
  EXPECT_THROW(sp::Popen({"true"}).communicate("x"), std::invalid_argument);  // stdin is not a pipe
  leaks.check();
}

TEST(Subprocess, EnvAndCwdAreHonoured) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  auto r = sp::run({"/bin/sh", "-c", "echo \"$FIBERIO_X\"; pwd; echo \"${HOME-unset}\""},
                   {.out = sp::Stdio::Pipe, .env = std::vector<std::string>{"FIBERIO_X=forty two", "PATH=/usr/bin:/bin"},
                    .cwd = "/usr"});
  EXPECT_EQ(r.out, "forty two\n/usr\nunset\n");  // the whole environment, nothing inherited
  ::setenv("FIBERIO_INHERITED", "yes", 1);
  auto inherited = sp::run({"/bin/sh", "-c", "echo $FIBERIO_INHERITED; pwd"}, {.out = sp::Stdio::Pipe});
  ::unsetenv("FIBERIO_INHERITED");
  char here[4096];
  ASSERT_TRUE(::getcwd(here, sizeof here));
  EXPECT_EQ(inherited.out, std::string("yes\n") + here + "\n");
  leaks.check();
}

TEST(Subprocess, ExitCodesAndDeathBySignalAreReported) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  EXPECT_EQ(sp::run({"sh", "-c", "exit 3"}).returncode, 3);
  EXPECT_EQ(sp::run({"sh", "-c", "kill -TERM $$"}).returncode, -SIGTERM);
  {
    sp::Popen p({"/bin/sleep", "10"});
    EXPECT_FALSE(p.poll());
    p.terminate();
    EXPECT_EQ(p.wait(), -SIGTERM);
    EXPECT_EQ(p.poll(), -SIGTERM);
  }
  try {
    sp::run({"sh", "-c", "echo out; echo err >&2; exit 7"}, {.out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe, .check = true});
    ADD_FAILURE() << "no CalledProcessError";
  } catch (const sp::CalledProcessError& e) {
    EXPECT_EQ(e.returncode, 7);
    EXPECT_EQ(e.out, "out\n");
    EXPECT_EQ(e.err, "err\n");
    EXPECT_NE(std::string(e.what()).find("exit status 7"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(sp::run({"true"}, {.check = true}));
  leaks.check();
}

TEST(Subprocess, RedirectionsStdoutDevNullAndFd) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  auto merged = sp::run({"sh", "-c", "echo a; echo b >&2"}, {.out = sp::Stdio::Pipe, .err = sp::Stdio::Stdout});
  EXPECT_EQ(merged.out, "a\nb\n");
  EXPECT_EQ(merged.err, "");
  auto empty = sp::run({"cat"}, {.in = sp::Stdio::DevNull, .out = sp::Stdio::Pipe, .err = sp::Stdio::DevNull});
  EXPECT_EQ(empty.out, "");
  EXPECT_EQ(empty.returncode, 0);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_EQ(sp::run({"sh", "-c", "echo to-fd"}, {.out = sp::Redirect::from_fd(fds[1])}).returncode, 0);
  ::close(fds[1]);
  char buf[64] = {};
  EXPECT_EQ(::read(fds[0], buf, sizeof buf), 6);
  EXPECT_STREQ(buf, "to-fd\n");
  ::close(fds[0]);
  leaks.check();
}

TEST(Subprocess, AChildInheritsNoOtherChildsPipes) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen first({"cat"}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe, .err = sp::Stdio::Pipe});
    // ls lists its own fds: 0, 1, 2, the directory it reads, and whatever the test runner let this
    // process inherit; never the pipes of `first` (nor this one's own end of its stdout pipe).
    sp::Popen second({"ls", "/proc/self/fd"}, {.out = sp::Stdio::Pipe});
    int own_end = second.out().fd();
    auto [out, err] = second.communicate();
    std::istringstream in(out);
    std::set<int> seen;
    for (int fd; in >> fd;) seen.insert(fd);
    EXPECT_TRUE(seen.count(0) && seen.count(1) && seen.count(2)) << out;
    for (int fd : {first.in().fd(), first.out().fd(), first.err().fd(), own_end})
      EXPECT_FALSE(seen.count(fd)) << "fd " << fd << " leaked into the child:\n" << out;
    first.in().close();
    EXPECT_EQ(first.wait(), 0);
  }
  leaks.check();
}

TEST(Subprocess, PipeEndsReadAndWriteCooperatively) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen p({"cat"}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe});
    int ticks = 0;
    auto ticker = fiberio::spawn([&] {
      for (;;) {
        fiberio::sleep(5ms);
        ++ticks;
      }
    });
    char buf[16];
    EXPECT_THROW(p.out().read_some(buf, sizeof buf, 100ms), fiberio::TimeoutError);  // parks, others run
    EXPECT_GE(ticks, 5);
    p.in().write_all("hello\n");
    EXPECT_EQ(p.out().read_some(buf, sizeof buf), 6u);
    EXPECT_EQ(std::string(buf, 6), "hello\n");
    p.in().close();
    EXPECT_EQ(p.out().read_all(), "");
    EXPECT_EQ(p.wait(), 0);
    ticker.kill();
  }
  leaks.check();
}

TEST(Subprocess, TwoFibersWaitingOnOneChildBothGetItsStatus) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen p({"sh", "-c", "sleep 0.2; exit 5"});
    auto a = fiberio::spawn([&] { return p.wait(); });
    auto b = fiberio::spawn([&] { return p.wait(); });
    EXPECT_EQ(a.get(), 5);
    EXPECT_EQ(b.get(), 5);
  }
  leaks.check();
}

TEST(Subprocess, WithoutAPidfdWaitPollsAndStillYields) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  // With RLIMIT_NOFILE at the lowest free fd number, pidfd_open fails (EMFILE): the Popen takes the
  // path it takes where pidfd_open does not exist (ENOSYS), polling waitpid(WNOHANG).
  pid_t pid_destroyed;
  {
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    int lowest_free = ::dup(0);
    ASSERT_GE(lowest_free, 0);
    ::close(lowest_free);
    std::size_t fds_before = fiberio_test::count_fds();
    rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
    auto p = std::make_unique<sp::Popen>(std::vector<std::string>{"sh", "-c", "sleep 0.2; exit 6"});
    auto q = std::make_unique<sp::Popen>(std::vector<std::string>{"/bin/sleep", "10"});
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
    EXPECT_EQ(fiberio_test::count_fds(), fds_before) << "no pidfd could be made";
    int ticks = 0;
    auto ticker = fiberio::spawn([&] {
      for (;;) {
        fiberio::sleep(5ms);
        ++ticks;
      }
    });
    EXPECT_THROW(p->wait(50ms), sp::TimeoutExpired);
    EXPECT_EQ(p->wait(), 6);
    EXPECT_GE(ticks, 10) << "the polling wait parked";
    ticker.kill();
    pid_destroyed = q->pid();
    q.reset();  // still running: killed with kill(2) and reaped by polling
  }
  EXPECT_TRUE(reaped(pid_destroyed));
  leaks.check();
}

TEST(Subprocess, AChildReapedBehindThePopensBackIsAnErrorNotAStatus) {
  FIBERIO_WATCHDOG(30);
  NoLeaks leaks;
  {
    sp::Popen p({"sh", "-c", "exit 3"});
    int st;
    ASSERT_EQ(::waitpid(p.pid(), &st, 0), p.pid());  // someone else's waitpid took the status
    try {
      p.wait();
      ADD_FAILURE() << "a status that was never seen";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), ECHILD) << e.what();
    }
    EXPECT_THROW(p.poll(), std::system_error);
    EXPECT_FALSE(p.returncode());
  }  // the destructor signals nothing: the pid is no longer ours
  leaks.check();
}
