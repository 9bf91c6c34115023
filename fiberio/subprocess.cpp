#include "fiberio/subprocess.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "fiberio/detail/fd_wait_error.hpp"
#include "fiberio/detail/interruption.hpp"
#include "fiberio/hub.hpp"
#include "fiberio/io.hpp"
#include "fiberio/threadpool.hpp"
#include "fiberio/time.hpp"

extern char** environ;

namespace fiberio::subprocess {

namespace {

using detail::Hub;
using detail::Io;

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// write() that reports EPIPE without raising SIGPIPE in this process: SIGPIPE is blocked on this
// thread around the write, and the one the write raised (if nothing had raised one before) is
// consumed before the mask is put back. No fiber switch happens in between.
ssize_t write_without_sigpipe(int fd, const char* p, std::size_t n) noexcept {
  sigset_t pipe_only, old, pending;
  ::sigemptyset(&pipe_only);
  ::sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ::sigpending(&pending);
  bool was_pending = ::sigismember(&pending, SIGPIPE);
  ssize_t r;
  do r = ::write(fd, p, n);
  while (r < 0 && errno == EINTR);
  int e = errno;
  if (r < 0 && e == EPIPE && !was_pending) {
    timespec zero{};
    while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  if (!::sigismember(&old, SIGPIPE)) ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = e;
  return r;
}

// Moves fd to a number of at least 3, close-on-exec: a pipe end that landed on 0, 1 or 2 (this
// process closed its own) would be overwritten by the child's dup2s before it is used. On failure fd
// is closed and set to -1.
void above_stdio(int& fd) {
  if (fd > 2) return;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int e = errno;
  fiberio::close(std::exchange(fd, moved));
  if (moved < 0) throw_errno(e, "fiberio::subprocess::Popen: fcntl(F_DUPFD_CLOEXEC)");
}

std::string describe_argv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a.find_first_of(" \t\n'\"") == std::string::npos && !a.empty() ? a : fmt::format("'{}'", a);
  }
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

// The file actions and attributes of one posix_spawn, destroyed on every path.
struct SpawnPlan {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnPlan() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
  }
  ~SpawnPlan() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
  }
  SpawnPlan(const SpawnPlan&) = delete;
  SpawnPlan& operator=(const SpawnPlan&) = delete;
};

// The child's side of one standard stream: fds it needs until the spawn is done.
struct ChildEnd {
  int fd = -1;  // the child's end of a pipe (closed here after the spawn)
  ~ChildEnd() {
    if (fd >= 0) fiberio::close(fd);
  }
};

// Plans child fd `target` (0, 1, 2) per r; a pipe's own end goes to `mine`.
void plan_stream(SpawnPlan& plan, int target, const Redirect& r, PipeEnd& mine, ChildEnd& theirs) {
  const char* names[] = {"in", "out", "err"};
  switch (r.kind) {
    case Stdio::Inherit:
      return;
    case Stdio::DevNull:
      ::posix_spawn_file_actions_addopen(&plan.actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
      return;
    case Stdio::Stdout:
      if (target != 2) throw std::invalid_argument(fmt::format("fiberio::subprocess::Popen: .{} = Stdio::Stdout (only .err can go to stdout)", names[target]));
      ::posix_spawn_file_actions_adddup2(&plan.actions, 1, 2);
      return;
    case Stdio::Fd:
      if (r.fd < 0) throw std::invalid_argument(fmt::format("fiberio::subprocess::Popen: .{} = Redirect::from_fd({})", names[target], r.fd));
      ::posix_spawn_file_actions_adddup2(&plan.actions, r.fd, target);
      return;
    case Stdio::Pipe: {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno(errno, "fiberio::subprocess::Popen: pipe2");
      // Each end is its own open file description: O_NONBLOCK on ours leaves the child's blocking.
      int ours = target == 0 ? fds[1] : fds[0];
      theirs.fd = target == 0 ? fds[0] : fds[1];
      above_stdio(ours);  // on failure it closed ours; theirs closes with its ChildEnd
      mine = PipeEnd(ours);
      above_stdio(theirs.fd);
      set_nonblocking(ours);
      ::posix_spawn_file_actions_adddup2(&plan.actions, theirs.fd, target);
      return;
    }
  }
}

}  // namespace

// ---- PipeEnd ----
PipeEnd& PipeEnd::operator=(PipeEnd&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

void PipeEnd::close() noexcept {
  if (fd_ >= 0) fiberio::close(std::exchange(fd_, -1));
}

std::optional<std::size_t> PipeEnd::try_read(char* buf, std::size_t n) {
  if (fd_ < 0) throw std::logic_error("fiberio::subprocess::PipeEnd::read: the pipe is not open");
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return std::nullopt;
    throw_errno(errno, fmt::format("fiberio::subprocess::PipeEnd::read(fd {})", fd_));
  }
}

std::size_t PipeEnd::try_write(std::string_view data) {
  if (fd_ < 0) throw std::logic_error("fiberio::subprocess::PipeEnd::write: the pipe is not open");
  ssize_t r = write_without_sigpipe(fd_, data.data(), data.size());
  if (r >= 0) return static_cast<std::size_t>(r);
  if (errno == EAGAIN) return 0;
  throw_errno(errno, fmt::format("fiberio::subprocess::PipeEnd::write(fd {})", fd_));
}

std::size_t PipeEnd::read_some(char* buf, std::size_t n, OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  for (;;) {
    if (auto got = try_read(buf, n)) return *got;
    // EAGAIN proved it not ready: wait for the next edge.
    auto r = Hub::current().wait_fd(fd_, Io::Read, deadline, /*exclusive=*/true);
    detail::throw_if_failed(r, fmt::format("fiberio::subprocess::PipeEnd::read(fd {})", fd_), timeout);
  }
}

std::string PipeEnd::read_all(OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  std::string s;
  for (;;) {
    std::size_t at = s.size();
    s.resize(at + 64 * 1024);
    auto left = deadline == detail::kNoDeadline ? OptDuration{} : OptDuration{std::max(Duration::zero(), deadline - Clock::now())};
    std::size_t got = read_some(s.data() + at, 64 * 1024, left);
    s.resize(at + got);
    if (got == 0) return s;
  }
}

void PipeEnd::write_all(std::string_view data, OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  while (!data.empty()) {
    if (std::size_t n = try_write(data)) {
      data.remove_prefix(n);
      continue;
    }
    auto r = Hub::current().wait_fd(fd_, Io::Write, deadline, /*exclusive=*/true);
    detail::throw_if_failed(r, fmt::format("fiberio::subprocess::PipeEnd::write(fd {})", fd_), timeout);
  }
}

// ---- Popen ----
Popen::Popen(std::vector<std::string> argv, const Options& opts) : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::invalid_argument("fiberio::subprocess::Popen: empty argv");
  if (opts.input || opts.timeout || opts.check)
    throw std::invalid_argument("fiberio::subprocess::Popen: input, timeout and check are run()'s options (use communicate)");
  SpawnPlan plan;
  ChildEnd child_in, child_out, child_err;
  plan_stream(plan, 0, opts.in, in_, child_in);
  plan_stream(plan, 1, opts.out, out_, child_out);
  plan_stream(plan, 2, opts.err, err_, child_err);
  if (opts.cwd) ::posix_spawn_file_actions_addchdir_np(&plan.actions, opts.cwd->c_str());

  sigset_t none, dfl;
  ::sigemptyset(&none);
  ::sigemptyset(&dfl);
  ::sigaddset(&dfl, SIGPIPE);
  ::sigaddset(&dfl, SIGXFSZ);
  ::posix_spawnattr_setsigmask(&plan.attr, &none);
  ::posix_spawnattr_setsigdefault(&plan.attr, &dfl);
  ::posix_spawnattr_setflags(&plan.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_copy;
  std::vector<char*> envp;
  char** env = environ;
  if (opts.env) {
    env_copy = *opts.env;
    for (auto& e : env_copy) envp.push_back(e.data());
    envp.push_back(nullptr);
    env = envp.data();
  }
  bool search = argv_[0].find('/') == std::string::npos;
  int rc = search ? ::posix_spawnp(&pid_, args[0], &plan.actions, &plan.attr, args.data(), env)
                  : ::posix_spawn(&pid_, args[0], &plan.actions, &plan.attr, args.data(), env);
  if (rc != 0) {
    pid_ = -1;
    throw_errno(rc, fmt::format("fiberio::subprocess::Popen: cannot run '{}'{}", argv_[0],
                                opts.cwd ? fmt::format(" in '{}'", *opts.cwd) : std::string()));
  }
  // The child exists from here on: nothing below may throw (the destructor would not run).
  pidfd_ = pidfd_open(pid_);  // close-on-exec by definition; on failure wait() polls instead
}

Popen::Popen(Popen&& o) noexcept
    : argv_(std::move(o.argv_)),
      pid_(std::exchange(o.pid_, -1)),
      pidfd_(std::exchange(o.pidfd_, -1)),
      in_(std::move(o.in_)),
      out_(std::move(o.out_)),
      err_(std::move(o.err_)),
      returncode_(o.returncode_),
      status_(o.status_),
      communicating_(o.communicating_),
      input_(std::move(o.input_)),
      input_sent_(o.input_sent_),
      output_(std::move(o.output_)) {}

Popen::~Popen() {
  in_.close();
  out_.close();
  err_.close();
  kill_and_reap();
  if (pidfd_ >= 0) fiberio::close(std::exchange(pidfd_, -1));
}

void Popen::set_status(int status) noexcept {
  status_ = status;
  returncode_ = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
  if (pidfd_ >= 0) fiberio::close(std::exchange(pidfd_, -1));  // other fibers waiting on it wake
}

bool Popen::try_reap() {
  if (returncode_) return true;
  if (pid_ < 0)  // moved from, or its child was reaped elsewhere (thrown once already)
    throw_errno(ECHILD, fmt::format("fiberio::subprocess::Popen({}): no child to wait for", describe_argv(argv_)));
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == pid_) {
    set_status(status);
    return true;
  }
  if (r == 0) return false;
  int e = errno;
  pid_ = -1;  // not ours any more: never signal that number again
  if (pidfd_ >= 0) fiberio::close(std::exchange(pidfd_, -1));
  throw_errno(e, fmt::format("fiberio::subprocess::Popen({}): waitpid (reaped by someone else?)", describe_argv(argv_)));
}

std::optional<int> Popen::poll() {
  try_reap();
  return returncode_;
}

int Popen::wait(OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  auto pause = std::chrono::milliseconds(1);
  while (!try_reap()) {
    if (pidfd_ >= 0) {
      // Level-triggered: a pidfd stays readable once the child has exited.
      auto r = Hub::current().wait_fd(pidfd_, Io::Read, deadline, /*exclusive=*/false, /*level=*/true);
      if (r == detail::FdWait::TimedOut) throw_timeout(*timeout, "wait");
      if (r == detail::FdWait::NotPollable) fiberio::close(std::exchange(pidfd_, -1));  // poll instead
      continue;  // Ready, or Closed by another fiber's reap: try_reap tells
    }
    auto now = Clock::now();
    if (now >= deadline) throw_timeout(*timeout, "wait");
    fiberio::sleep(std::min<Duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return *returncode_;
}

void Popen::throw_timeout(Duration timeout, const char* where) const {
  throw TimeoutExpired(fmt::format("fiberio::subprocess::Popen::{}({}): timed out after {:g} ms", where,
                                   describe_argv(argv_), std::chrono::duration<double, std::milli>(timeout).count()),
                       timeout);
}

void Popen::send_signal(int sig) {
  if (returncode_ || pid_ < 0) return;
  int r = pidfd_ >= 0 ? static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0)) : ::kill(pid_, sig);
  // ESRCH: it has exited (a zombie is not yet reaped, so the pid cannot be someone else's).
  if (r != 0 && errno != ESRCH)
    throw_errno(errno, fmt::format("fiberio::subprocess::Popen({}): signal {}", describe_argv(argv_), sig));
}

void Popen::kill_and_reap() noexcept {
  if (returncode_ || pid_ < 0) return;
  try {
    send_signal(SIGKILL);
    // A kill or Timeout of this fiber must not cut the reap short (it would leave a zombie): it is
    // taken, the wait goes on, and it is delivered at the fiber's next suspension point.
    detail::wait_for_task(
        [this] {
          try {
            wait();
          } catch (const std::system_error&) {
            // ECHILD: someone else reaped it; nothing is left to reap.
          }
        },
        /*deliver=*/false);
  } catch (...) {
  }
}

Popen::Output Popen::communicate(std::optional<std::string_view> input, OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  if (!communicating_) {
    communicating_ = true;
    if (input) {
      if (!in_.is_open()) throw std::invalid_argument("fiberio::subprocess::Popen::communicate: input given, but stdin is not a pipe");
      input_.assign(input->data(), input->size());
    }
    if (input_.empty()) in_.close();  // the child sees EOF at once
  } else if (input) {
    throw std::logic_error("fiberio::subprocess::Popen::communicate: input can only be given to the first call");
  }

  if (in_.is_open() || out_.is_open() || err_.is_open()) {
    // One private level-triggered epoll set over the open pipes, waited on through the hub: one fiber
    // serves all three as the child makes progress on any of them.
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) throw_errno(errno, "fiberio::subprocess::Popen::communicate: epoll_create1");
    struct EpollFd {
      int fd;
      ~EpollFd() { fiberio::close(fd); }
    } guard{ep};
    auto watch = [&](PipeEnd& p, std::uint32_t events) {
      if (!p.is_open()) return;
      epoll_event ev{};
      ev.events = events;
      ev.data.fd = p.fd();
      if (::epoll_ctl(ep, EPOLL_CTL_ADD, p.fd(), &ev) != 0) throw_errno(errno, "fiberio::subprocess::Popen::communicate: epoll_ctl");
    };
    watch(in_, EPOLLOUT);
    watch(out_, EPOLLIN);
    watch(err_, EPOLLIN);
    constexpr std::size_t kChunk = 64 * 1024;
    // Reads what p has now; closes it at EOF. True if it read anything or closed.
    auto drain = [&](PipeEnd& p, std::string& into) {
      bool progress = false;
      while (p.is_open()) {
        std::size_t at = into.size();
        into.resize(at + kChunk);
        auto got = p.try_read(into.data() + at, kChunk);
        into.resize(at + got.value_or(0));
        if (!got) break;
        progress = true;
        if (*got == 0) p.close();  // EOF; closing also takes it out of the epoll set
      }
      return progress;
    };
    auto feed = [&] {
      bool progress = false;
      while (in_.is_open() && input_sent_ < input_.size()) {
        std::size_t n;
        try {
          n = in_.try_write(std::string_view(input_).substr(input_sent_, kChunk));
        } catch (const std::system_error& e) {
          if (e.code().value() != EPIPE) throw;
          n = input_.size() - input_sent_;  // the child stopped reading: what it did not take is dropped
        }
        if (n == 0) break;
        input_sent_ += n;
        progress = true;
      }
      if (in_.is_open() && input_sent_ >= input_.size()) {
        in_.close();
        progress = true;
      }
      return progress;
    };
    while (in_.is_open() || out_.is_open() || err_.is_open()) {
      bool progress = feed();
      progress |= drain(out_, output_.out);
      progress |= drain(err_, output_.err);
      if (progress) continue;
      auto r = Hub::current().wait_fd(ep, Io::Read, deadline, /*exclusive=*/true, /*level=*/true);
      if (r == detail::FdWait::TimedOut) throw_timeout(*timeout, "communicate");
      detail::throw_if_failed(r, "fiberio::subprocess::Popen::communicate", timeout);
    }
  }
  auto left = deadline == detail::kNoDeadline ? OptDuration{} : OptDuration{deadline - Clock::now()};
  if (left && *left <= Duration::zero() && !try_reap()) throw_timeout(*timeout, "communicate");
  try {
    wait(left);
  } catch (const TimeoutExpired&) {
    throw_timeout(*timeout, "communicate");
  }
  return std::move(output_);
}

CompletedProcess run(std::vector<std::string> argv, Options opts) {
  auto input = std::move(opts.input);
  auto timeout = opts.timeout;
  bool check = opts.check;
  opts.input.reset();
  opts.timeout.reset();
  opts.check = false;
  if (input && opts.in.kind == Stdio::Inherit) opts.in = Stdio::Pipe;
  Popen p(std::move(argv), opts);
  Popen::Output o;
  try {
    o = p.communicate(input ? std::optional<std::string_view>(*input) : std::nullopt, timeout);
  } catch (const TimeoutExpired&) {
    p.kill();
    // Reaped before the error leaves (the destructor would too): the caller sees no zombie.
    detail::wait_for_task([&p] { p.wait(); }, /*deliver=*/false);
    throw;
  }
  CompletedProcess done{p.args(), *p.returncode(), std::move(o.out), std::move(o.err)};
  if (check && done.returncode != 0)
    throw CalledProcessError(
        fmt::format("fiberio::subprocess::run({}): {}", describe_argv(done.args),
                    done.returncode < 0 ? fmt::format("killed by signal {}", -done.returncode)
                                        : fmt::format("exit status {}", done.returncode)),
        done.returncode, std::move(done.out), std::move(done.err));
  return done;
}

}  // namespace fiberio::subprocess
