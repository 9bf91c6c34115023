// Shims: child processes. In a fiber, waiting for a child parks only that fiber: waitpid, wait,
// wait3, wait4, waitid, system, and popen/pclose (whose FILE reads and writes park too). Outside a
// fiber, and with WNOHANG, every one of them is libc's own call.
//
// * A wait for one process (pid > 0, P_PID, P_PIDFD) parks on a pidfd in the hub's poller: it wakes
//   when the process exits, then libc's call with WNOHANG answers, so results, status and errno are
//   libc's. A wait for any child (-1, 0, a process group) has no fd to wait on; it polls with WNOHANG,
//   parking 1 ms, then twice as long each time up to 20 ms: a child's exit is seen up to 20 ms late.
//   So does a wait that also asks for stops or continues (WUNTRACED, WCONTINUED): a pidfd reports
//   only exits.
// * Signals do not interrupt a parked wait (as with SA_RESTART: no EINTR). A kill of the fiber, or
//   its expired fiberio::Timeout, ends the wait with -1 and ECANCELED (the shims' convention: EINTR
//   would make the usual retry loop spin) and is delivered at the fiber's next suspension point.
// * system(): as glibc 2.36's, /bin/sh -c COMMAND started with posix_spawn; while it runs SIGINT and
//   SIGQUIT are ignored (process-wide, counted across concurrent calls, restored by the last one) and
//   SIGCHLD is blocked on the calling thread (counted per thread: fibers of one thread share its
//   mask, except under the sanitizer builds' ucontext backend, where each fiber has its own); the shell gets the caller's original mask and SIGINT/SIGQUIT at their default unless they
//   were ignored. A shell that cannot start gives status 127 with errno set; system(NULL) says
//   whether a shell runs. Different from libc: a killed caller (ECANCELED) first SIGKILLs and reaps
//   the shell (no zombie); what the shell started in the background is not touched.
// * popen(): /bin/sh -c COMMAND through a pipe made by the shims, returned as a FILE whose reads or
//   writes park the fiber (fopencookie, as the shims' fdopen). Modes "r", "w" and "e" as glibc; the
//   child closes the pipes of earlier popen() calls (POSIX). pclose(), and fclose() of such a FILE as
//   in glibc, close the pipe and wait for the shell; a killed waiter SIGKILLs and reaps it.
//   A FILE that libc's own popen made (outside a fiber) is closed by libc's pclose: plain libc.
#undef _FORTIFY_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

extern char** environ;

namespace fiberio::patched::detail {
namespace {

using namespace std::chrono_literals;
constexpr const char* kShell = "/bin/sh";

// A pidfd this shim opened; closed through the shims' close, which tells the hub watching it.
struct OwnPidfd {
  int fd = -1;
  ~OwnPidfd() {
    if (fd >= 0) ::close(fd);
  }
};

// Repeats `try_now` (one WNOHANG attempt: > 0 done, < 0 failed with errno, 0 nothing to report yet)
// and parks between attempts, until it reports. For pid > 0 (or a caller's pidfd) the park is on the
// process's pidfd; otherwise, or when stops are asked for, it is a backoff of 1..20 ms. Returns the
// attempt's result, with the caller's errno back on success; -1 and ECANCELED if the fiber was killed.
template <class Try>
long park_until_child(Hub& hub, pid_t pid, int pidfd, int options, Try try_now) {
  int saved = errno;
  OwnPidfd own;
  if (pidfd < 0 && pid > 0) {
    // Opened before the first attempt: once that attempt has seen the child unreaped, the number
    // cannot have been recycled, so the pidfd is that child's.
    own.fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    pidfd = own.fd;
  }
  bool stops = options & (WUNTRACED | WCONTINUED);
  Duration pause = 1ms;
  for (;;) {
    long r;
    do r = try_now();
    while (r < 0 && errno == EINTR);
    if (r != 0) {
      if (r > 0) errno = saved;
      return r;
    }
    Waited w;
    if (pidfd >= 0) {
      w = park_fd(hub, pidfd, Io::Read, fiberio::detail::deadline_after(stops ? pause : Duration(1s)));
      // Readable, yet nothing to report (not a process libc's call can wait for): poll from now on.
      if (w == Waited::Ready && !stops) pidfd = -1;
    } else {
      w = park_until(fiberio::detail::deadline_after(pause));
    }
    if (w == Waited::Cancelled) {
      errno = ECANCELED;
      return -1;
    }
    pause = std::min<Duration>(pause * 2, 20ms);
  }
}

// The caller was killed while its child ran: that child must not outlive the call, as a process or a
// zombie. SIGKILL, then reap; a further kill waits until the reap is done.
void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  fiberio::detail::wait_for_task(
      [pid] {
        int st;
        while (real::waitpid(pid, &st, WNOHANG) == 0) fiberio::detail::park_until(fiberio::detail::deadline_after(1ms));
      },
      /*deliver=*/false);
}

// Waits for the child this shim started and returns its wait status; -1 with ECANCELED if the fiber
// was killed (the child is then killed and reaped). Off a fiber: libc's blocking waitpid.
int wait_own_child(pid_t pid) {
  int status = -1;
  Hub* hub = cooperative_hub();
  if (!hub) {
    while (real::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return -1;
    }
    return status;
  }
  long r = park_until_child(*hub, pid, -1, 0, [&] { return static_cast<long>(real::waitpid(pid, &status, WNOHANG)); });
  if (r > 0) return status;
  if (errno == ECANCELED) {
    kill_and_reap(pid);
    errno = ECANCELED;
  }
  return -1;
}

// ---- system(): glibc's signal handling, with the counts shared by concurrent calls ----
std::mutex g_system_mu;
int g_system_calls = 0;
struct sigaction g_saved_int, g_saved_quit;
// SIGCHLD is blocked per thread, so fibers of one thread count their calls and the last one unblocks
// it. Under Boost.Context's ucontext backend (the sanitizer builds), swapcontext gives every fiber its
// own signal mask instead: each call then blocks and restores its own.
#ifdef BOOST_USE_UCONTEXT
constexpr bool kMaskPerFiber = true;
#else
constexpr bool kMaskPerFiber = false;
#endif
thread_local int t_chld_blocks = 0;
thread_local sigset_t t_caller_mask;

struct SystemSignals {
  struct sigaction old_int, old_quit;
  sigset_t child_mask;  // the caller's mask before any system() of its thread (fiber) blocked SIGCHLD
  SystemSignals() {
    std::lock_guard lk(g_system_mu);
    if (g_system_calls++ == 0) {
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;
      ::sigemptyset(&ignore.sa_mask);
      ::sigaction(SIGINT, &ignore, &g_saved_int);
      ::sigaction(SIGQUIT, &ignore, &g_saved_quit);
    }
    old_int = g_saved_int;
    old_quit = g_saved_quit;
    if (kMaskPerFiber) {
      ::pthread_sigmask(SIG_BLOCK, &chld(), &child_mask);
      return;
    }
    if (t_chld_blocks++ == 0) ::pthread_sigmask(SIG_BLOCK, &chld(), &t_caller_mask);
    child_mask = t_caller_mask;
  }
  ~SystemSignals() {
    int saved = errno;
    if ((kMaskPerFiber || --t_chld_blocks == 0) && !::sigismember(&child_mask, SIGCHLD))
      ::pthread_sigmask(SIG_UNBLOCK, &chld(), nullptr);
    std::lock_guard lk(g_system_mu);
    if (--g_system_calls == 0) {
      ::sigaction(SIGINT, &g_saved_int, nullptr);
      ::sigaction(SIGQUIT, &g_saved_quit, nullptr);
    }
    errno = saved;
  }
  static const sigset_t& chld() {
    static const sigset_t set = [] {
      sigset_t s;
      ::sigemptyset(&s);
      ::sigaddset(&s, SIGCHLD);
      return s;
    }();
    return set;
  }
};

int system_in_fiber(const char* line) {
  SystemSignals sig;
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t reset;
  ::sigemptyset(&reset);
  if (sig.old_int.sa_handler != SIG_IGN) ::sigaddset(&reset, SIGINT);
  if (sig.old_quit.sa_handler != SIG_IGN) ::sigaddset(&reset, SIGQUIT);
  ::posix_spawnattr_setsigdefault(&attr, &reset);
  ::posix_spawnattr_setsigmask(&attr, &sig.child_mask);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  const char* argv[] = {"sh", "-c", line, nullptr};
  pid_t pid;
  int rc = ::posix_spawn(&pid, kShell, nullptr, &attr, const_cast<char* const*>(argv), environ);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    return W_EXITCODE(127, 0);  // POSIX: as if the shell had exited with 127
  }
  return wait_own_child(pid);
}

// ---- popen(): the FILEs it made, for pclose and for the children of later calls ----
struct Popened {
  FILE* file = nullptr;
  int fd = -1;
  pid_t pid = -1;
  int status = -1;
  int error = 0;           // errno of the wait, when status is -1
  bool by_pclose = false;  // pclose reads status; otherwise the close hook frees the entry
};
std::mutex g_popen_mu;
std::vector<Popened*>* g_popened = new std::vector<Popened*>;  // never freed: FILEs may close at exit

Popened* take_popened(FILE* f) {
  std::lock_guard lk(g_popen_mu);
  auto it = std::find_if(g_popened->begin(), g_popened->end(), [f](Popened* p) { return p->file == f; });
  return it == g_popened->end() ? nullptr : *it;
}

ssize_t popen_read(void* cookie, char* buf, size_t n) { return ::read(static_cast<Popened*>(cookie)->fd, buf, n); }
ssize_t popen_write(void* cookie, const char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(static_cast<Popened*>(cookie)->fd, buf + done, n - done);
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}
// fclose() of a popen()ed FILE waits for its child, as glibc's does.
int popen_close(void* cookie) {
  auto* p = static_cast<Popened*>(cookie);
  {
    std::lock_guard lk(g_popen_mu);
    g_popened->erase(std::remove(g_popened->begin(), g_popened->end(), p), g_popened->end());
  }
  int r = ::close(p->fd);
  p->status = wait_own_child(p->pid);
  p->error = p->status == -1 ? errno : 0;
  if (!p->by_pclose) delete p;
  return r;
}

FILE* popen_in_fiber(const char* command, const char* mode) {
  bool reading = false, writing = false, cloexec = false;
  for (const char* m = mode; *m; ++m) {
    switch (*m) {
      case 'r': reading = true; break;
      case 'w': writing = true; break;
      case 'e': cloexec = true; break;
      default: errno = EINVAL; return nullptr;
    }
  }
  if (reading == writing) {
    errno = EINVAL;
    return nullptr;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return nullptr;  // the shims' pipe2: its fds park fibers
  int mine = reading ? fds[0] : fds[1], theirs = reading ? fds[1] : fds[0];
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_adddup2(&fa, theirs, reading ? 1 : 0);
  {
    std::lock_guard lk(g_popen_mu);
    for (Popened* p : *g_popened)
      if (p->fd != (reading ? 1 : 0)) ::posix_spawn_file_actions_addclose(&fa, p->fd);
  }
  const char* argv[] = {"sh", "-c", command, nullptr};
  pid_t pid;
  int rc = ::posix_spawn(&pid, kShell, &fa, nullptr, const_cast<char* const*>(argv), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(theirs);
  if (rc != 0) {
    ::close(mine);
    errno = rc;
    return nullptr;
  }
  if (!cloexec) real::fcntl(mine, F_SETFD, nullptr);
  auto* p = new Popened;
  p->fd = mine;
  p->pid = pid;
  cookie_io_functions_t io{popen_read, popen_write, nullptr, popen_close};
  p->file = ::fopencookie(p, reading ? "r" : "w", io);
  if (!p->file) {
    int e = errno;
    ::close(mine);
    wait_own_child(pid);
    delete p;
    errno = e;
    return nullptr;
  }
  p->file->_fileno = mine;  // fileno() answers the fd, as for libc's popen
  std::lock_guard lk(g_popen_mu);
  g_popened->push_back(p);
  return p->file;
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

pid_t waitpid(pid_t pid, int* status, int options) {
  Hub* hub = options & WNOHANG ? nullptr : cooperative_hub();
  if (!hub) return real::waitpid(pid, status, options);
  return static_cast<pid_t>(park_until_child(*hub, pid, -1, options, [&] {
    return static_cast<long>(real::waitpid(pid, status, options | WNOHANG));
  }));
}

pid_t wait(int* status) { return waitpid(-1, status, 0); }

pid_t wait4(pid_t pid, int* status, int options, struct rusage* usage) {
  Hub* hub = options & WNOHANG ? nullptr : cooperative_hub();
  if (!hub) return real::wait4(pid, status, options, usage);
  return static_cast<pid_t>(park_until_child(*hub, pid, -1, options, [&] {
    return static_cast<long>(real::wait4(pid, status, options | WNOHANG, usage));
  }));
}

pid_t wait3(int* status, int options, struct rusage* usage) { return wait4(-1, status, options, usage); }

int waitid(idtype_t idtype, id_t id, siginfo_t* info, int options) {
  Hub* hub = options & WNOHANG ? nullptr : cooperative_hub();
  if (!hub) return real::waitid(idtype, id, info, options);
  siginfo_t local;
  siginfo_t* out = info ? info : &local;
  pid_t pid = idtype == P_PID ? static_cast<pid_t>(id) : -1;
  int pidfd = idtype == P_PIDFD ? static_cast<int>(id) : -1;
  long r = park_until_child(*hub, pid, pidfd, options, [&]() -> long {
    out->si_pid = 0;  // WNOHANG with nothing to report leaves it 0
    if (real::waitid(idtype, id, out, options | WNOHANG) != 0) return -1;
    return out->si_pid != 0 ? 1 : 0;
  });
  return r > 0 ? 0 : -1;
}

int system(const char* command) {
  if (!cooperative_hub()) return real::system(command);
  if (!command) return system_in_fiber("exit 0") == 0;  // as glibc: can a shell run?
  return system_in_fiber(command);
}

FILE* popen(const char* command, const char* mode) {
  if (!cooperative_hub() || !command || !mode) return real::popen(command, mode);
  return popen_in_fiber(command, mode);
}

int pclose(FILE* f) {
  Popened* p = take_popened(f);
  if (!p) return real::pclose(f);
  p->by_pclose = true;
  ::fclose(f);
  int status = p->status, error = p->error;
  delete p;
  if (status == -1) errno = error;
  return status;
}

}  // extern "C"
