// The shims for child processes: waitpid / wait / wait4 / waitid / system / popen / pclose park only
// the calling fiber and answer as libc would; outside a fiber they are libc's own calls.
#include <pthread.h>
#include <sys/syscall.h>

#include <atomic>
#include <cstdio>
#include <set>
#include <thread>

#include "support/children.hpp"
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

pid_t spawn(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawnp " + argv[0]);
  return pid;
}

// Fibers of a thread share its signal mask, except under Boost.Context's ucontext backend (the
// sanitizer builds), whose swapcontext gives each fiber its own: another fiber's block is not seen.
#ifdef BOOST_USE_UCONTEXT
constexpr bool kMaskPerThread = false;
#else
constexpr bool kMaskPerThread = true;
#endif

bool sigint_ignored() {
  struct sigaction cur {};
  ::sigaction(SIGINT, nullptr, &cur);
  return cur.sa_handler == SIG_IGN;
}

bool sigchld_blocked() {
  sigset_t cur;
  ::pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  return ::sigismember(&cur, SIGCHLD);
}

}  // namespace

TEST(PatchedSubprocess, WaitpidInAFiberLetsOtherGreenletsRun) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Ticker ticker;
    pid_t pid = spawn({"sleep", "0.3"});
    int st = -1;
    errno = 1234;
    auto t0 = Clock::now();
    EXPECT_EQ(::waitpid(pid, &st, 0), pid);
    EXPECT_EQ(errno, 1234) << "success leaves errno alone";
    EXPECT_GE(ms_since(t0), 250);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_GE(ticker.ticks(), 5);
    EXPECT_LT(ticker.max_gap_ms(), 200) << "the hub stalled in waitpid";
    // wait4 and waitid(P_PID, P_PIDFD) the same way.
    ticker.reset();
    pid = spawn({"sh", "-c", "sleep 0.2; exit 4"});
    rusage ru{};
    EXPECT_EQ(::wait4(pid, &st, 0, &ru), pid);
    EXPECT_EQ(WEXITSTATUS(st), 4);
    pid = spawn({"sh", "-c", "sleep 0.2; kill -USR1 $$"});
    siginfo_t info{};
    EXPECT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED), 0);
    EXPECT_EQ(info.si_pid, pid);
    EXPECT_EQ(info.si_code, CLD_KILLED);
    EXPECT_EQ(info.si_status, SIGUSR1);
    pid = spawn({"sleep", "0.2"});
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    ASSERT_GE(pidfd, 0);
    EXPECT_EQ(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED), 0);
    EXPECT_EQ(info.si_pid, pid);
    ::close(pidfd);
    EXPECT_LT(ticker.max_gap_ms(), 200) << "the hub stalled in wait4 / waitid";
  }
  leaks.check();
}

TEST(PatchedSubprocess, WaitForAnyChildInAFiberLetsOtherGreenletsRun) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Ticker ticker;
    pid_t pid = spawn({"sleep", "0.3"});
    int st = -1;
    EXPECT_EQ(::waitpid(-1, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st));
    pid = spawn({"sh", "-c", "sleep 0.2; exit 9"});
    EXPECT_EQ(::wait(&st), pid);
    EXPECT_EQ(WEXITSTATUS(st), 9);
    EXPECT_GE(ticker.ticks(), 5);
    EXPECT_LT(ticker.max_gap_ms(), 200) << "the hub stalled in waitpid(-1) / wait";
    // No children: ECHILD at once, as libc.
    errno = 0;
    EXPECT_EQ(::waitpid(-1, &st, 0), -1);
    EXPECT_EQ(errno, ECHILD);
    errno = 0;
    EXPECT_EQ(::waitpid(1, &st, 0), -1);  // init is nobody's child here
    EXPECT_EQ(errno, ECHILD);
    // WNOHANG is libc's at once.
    pid = spawn({"sleep", "0.2"});
    EXPECT_EQ(::waitpid(pid, &st, WNOHANG), 0);
    EXPECT_EQ(::waitpid(pid, &st, 0), pid);
  }
  leaks.check();
}

TEST(PatchedSubprocess, KilledWaitpidReturnsEcanceledThenTheGreenletDies) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  pid_t pid = spawn({"sleep", "10"});
  int result = 0, error = 0;
  auto g = fiberio::spawn([&] {
    int st;
    result = ::waitpid(pid, &st, 0);
    error = errno;
    fiberio::yield();  // the next suspension point delivers the kill
    result = 42;
  });
  fiberio::sleep(100ms);
  g.kill();
  EXPECT_TRUE(g.killed());
  EXPECT_EQ(result, -1);
  EXPECT_EQ(error, ECANCELED);
  // waitpid does not own the child: it still runs, and the caller reaps it.
  EXPECT_TRUE(children().count(pid));
  ::kill(pid, SIGKILL);
  int st;
  EXPECT_EQ(::waitpid(pid, &st, 0), pid);
  leaks.check();
}

TEST(PatchedSubprocess, SystemInManyGreenletsRunsSideBySide) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    constexpr int kN = 30;
    std::vector<fiberio::Greenlet<int>> gs;
    auto t0 = Clock::now();
    for (int i = 0; i < kN; ++i) gs.push_back(fiberio::spawn([] { return ::system("sleep 0.3"); }));
    for (auto& g : gs) EXPECT_EQ(g.get(), 0);
    // One after the other: 9 s. Side by side: about 0.3 s.
    EXPECT_LT(ms_since(t0), 4500);
    EXPECT_TRUE(children().empty());
  }
  leaks.check();
}

TEST(PatchedSubprocess, SystemKeepsLibcsStatusAndSignalSemantics) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    int st = ::system("exit 3");
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    st = ::system("kill -TERM $$");
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    st = ::system("fiberio-no-such-command 2>/dev/null");
    EXPECT_EQ(WEXITSTATUS(st), 127);
    EXPECT_NE(::system(nullptr), 0) << "a shell is available";
    // While a system() runs: SIGINT ignored (process-wide), SIGCHLD blocked on this thread. After
    // the last one: both as before.
    ASSERT_FALSE(sigint_ignored());
    ASSERT_FALSE(sigchld_blocked());
    bool ignored_during = false, blocked_during = false;
    auto a = fiberio::spawn([] { return ::system("sleep 0.3"); });
    auto b = fiberio::spawn([] { return ::system("sleep 0.1"); });
    fiberio::sleep(200ms);  // b has ended, a still runs
    ignored_during = sigint_ignored();
    blocked_during = sigchld_blocked();
    EXPECT_EQ(a.get(), 0);
    EXPECT_EQ(b.get(), 0);
    EXPECT_TRUE(ignored_during);
    EXPECT_EQ(blocked_during, kMaskPerThread);
    EXPECT_FALSE(sigint_ignored());
    EXPECT_FALSE(sigchld_blocked());
    // The shell gets the caller's mask from before any system() (SIGCHLD not blocked) and SIGINT and
    // SIGQUIT at their default action, even while another system() has them ignored and blocked here.
    TempDir dir;
    std::string path = dir.path + "/status";
    auto running = fiberio::spawn([] { return ::system("sleep 0.3"); });
    fiberio::sleep(50ms);
    ASSERT_TRUE(sigint_ignored());
    ASSERT_EQ(sigchld_blocked(), kMaskPerThread);
    EXPECT_EQ(::system(("grep -E '^Sig(Blk|Ign)' /proc/self/status > " + path).c_str()), 0);
    EXPECT_EQ(running.get(), 0);
    std::string status = read_file(path);
    EXPECT_NE(status.find("SigBlk:\t0000000000000000\n"), std::string::npos) << status;
    auto ign = status.find("SigIgn:\t");
    ASSERT_NE(ign, std::string::npos) << status;
    unsigned long long ignored = std::stoull(status.substr(ign + 8, 16), nullptr, 16);
    EXPECT_EQ(ignored & ((1ull << (SIGINT - 1)) | (1ull << (SIGQUIT - 1))), 0u) << status;
  }
  leaks.check();
}

TEST(PatchedSubprocess, KilledSystemKillsAndReapsTheShell) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  int result = 0, error = 0;
  auto g = fiberio::spawn([&] {
    result = ::system("exec sleep 10");
    error = errno;
    fiberio::yield();  // the next suspension point delivers the kill
    result = 42;
  });
  fiberio::sleep(100ms);
  EXPECT_EQ(children().size(), 1u);
  auto t0 = Clock::now();
  g.kill();
  EXPECT_LT(ms_since(t0), 3000);
  EXPECT_TRUE(g.killed());
  EXPECT_EQ(result, -1);
  EXPECT_EQ(error, ECANCELED);
  EXPECT_TRUE(children().empty()) << "no shell, no zombie";
  EXPECT_FALSE(sigint_ignored());
  EXPECT_FALSE(sigchld_blocked());
  leaks.check();
}

TEST(PatchedSubprocess, PopenReadsAndWritesCooperatively) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  LeakCheck leaks;
  TempDir dir;
  {
    Ticker ticker;
    FILE* f = ::popen("sleep 0.3; echo hello; exit 2", "r");
    ASSERT_TRUE(f);
    EXPECT_GE(::fileno(f), 3);
    char line[64] = {};
    ASSERT_TRUE(std::fgets(line, sizeof line, f));
    EXPECT_STREQ(line, "hello\n");
    EXPECT_FALSE(std::fgets(line, sizeof line, f));  // EOF
    int st = ::pclose(f);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    EXPECT_GE(ticker.ticks(), 5);
    EXPECT_LT(ticker.max_gap_ms(), 200) << "the hub stalled in popen's read";

    std::string path = dir.path + "/out";
    FILE* w = ::popen(("cat > " + path).c_str(), "we");
    ASSERT_TRUE(w);
    EXPECT_EQ(::fcntl(::fileno(w), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    for (int i = 0; i < 20000; ++i) std::fprintf(w, "line %d\n", i);  // more than a pipe holds
    EXPECT_EQ(::pclose(w), 0);
    std::string text = read_file(path);
    EXPECT_EQ(text.substr(0, 7), "line 0\n");
    EXPECT_NE(text.find("line 19999\n"), std::string::npos);
    // Without "e", the FILE's fd is inherited (as glibc's), but not by a later popen's child.
    FILE* r1 = ::popen("cat", "w");
    ASSERT_TRUE(r1);
    EXPECT_EQ(::fcntl(::fileno(r1), F_GETFD) & FD_CLOEXEC, 0);
    FILE* r2 = ::popen("ls /proc/self/fd", "r");
    std::set<int> fds;
    for (int fd; std::fscanf(r2, "%d", &fd) == 1;) fds.insert(fd);
    EXPECT_EQ(::pclose(r2), 0);
    EXPECT_FALSE(fds.count(::fileno(r1))) << "a popen child got an earlier popen's pipe";
    EXPECT_EQ(::pclose(r1), 0);
    // Bad modes, as glibc.
    errno = 0;
    EXPECT_EQ(::popen("true", "rw"), nullptr);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(::popen("true", "x"), nullptr);
    // fclose() of a popen()ed FILE waits for the child too (glibc does): no zombie.
    FILE* c = ::popen("true", "r");
    ASSERT_TRUE(c);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-dealloc"  // deliberate: glibc allows it, and so must we
    EXPECT_EQ(::fclose(c), 0);
#pragma GCC diagnostic pop
    EXPECT_TRUE(children().empty());
  }
  leaks.check();
}

TEST(PatchedSubprocess, OutsideAFiberTheyArePlainLibc) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  // On a thread without a hub, waitpid blocks the thread and a signal without SA_RESTART interrupts
  // it with EINTR, as libc's does (a fiber's waitpid is never interrupted by signals).
  struct sigaction sa {}, old {};
  sa.sa_handler = [](int) {};
  ::sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  pid_t pid = spawn({"sleep", "0.5"});
  std::atomic<bool> started{false};
  int result = 0, error = 0, st = 0;
  std::thread t([&] {
    started = true;
    result = ::waitpid(pid, &st, 0);
    error = errno;
  });
  while (!started) fiberio::patched::original::usleep(1000);
  fiberio::patched::original::usleep(100000);
  ::pthread_kill(t.native_handle(), SIGUSR2);
  t.join();
  EXPECT_EQ(result, -1);
  EXPECT_EQ(error, EINTR);
  ::sigaction(SIGUSR2, &old, nullptr);
  // system() and popen() there: libc's (its FILE, its pclose).
  int sys = 0;
  std::string out;
  std::thread([&] {
    sys = ::system("exit 5");
    FILE* f = ::popen("echo plain", "r");
    char buf[32] = {};
    if (f && std::fgets(buf, sizeof buf, f)) out = buf;
    if (f) ::pclose(f);
  }).join();
  EXPECT_EQ(WEXITSTATUS(sys), 5);
  EXPECT_EQ(out, "plain\n");
  EXPECT_EQ(::waitpid(pid, &st, 0), pid);
}

TEST(PatchedSubprocess, SystemOnTwoThreadsAtOnceRestoresTheSignalsOnce) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  ASSERT_FALSE(sigint_ignored());
  // The SIGINT/SIGQUIT count is process-wide, the SIGCHLD block per thread: each thread's hub runs
  // its own system() calls side by side, and only the last call of all restores SIGINT.
  std::atomic<int> ok{0};
  std::atomic<bool> blocked_in_threads{true};
  auto body = [&](const char* cmd) {
    fiberio::ensure_hub();
    auto a = fiberio::spawn([cmd] { return ::system(cmd); });
    auto b = fiberio::spawn([cmd] { return ::system(cmd); });
    fiberio::sleep(50ms);
    if (sigchld_blocked() != kMaskPerThread) blocked_in_threads = false;
    if (a.get() == 0 && b.get() == 0) ++ok;
    if (sigchld_blocked()) blocked_in_threads = false;  // unblocked after this thread's last call
  };
  std::thread t1(body, "sleep 0.2"), t2(body, "sleep 0.4");
  t1.join();
  t2.join();
  EXPECT_EQ(ok, 2);
  EXPECT_TRUE(blocked_in_threads);
  EXPECT_FALSE(sigint_ignored());
  EXPECT_FALSE(sigchld_blocked()) << "this thread's mask was never touched";
  EXPECT_TRUE(children().empty());
}
