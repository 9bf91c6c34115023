// Child processes (gevent.subprocess, Go's os/exec): spawn a program, talk to it through pipes, wait
// for it — every wait parks only the calling fiber.
//
//   namespace sp = fiberio::subprocess;
//   auto r = sp::run({"git", "rev-parse", "HEAD"}, {.out = sp::Stdio::Pipe, .timeout = 5s, .check = true});
//   std::cout << r.out;
//
//   sp::Popen p({"sort"}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe});
//   auto [out, err] = p.communicate("b\na\n");   // writes stdin, reads stdout and stderr at once
//   int rc = p.wait();                            // 0, or -SIGNUM if a signal killed it
//
// * Spawning is posix_spawn (glibc's is clone(CLONE_VM|CLONE_VFORK) + exec): no fork() of the
//   parent's memory and no pthread_atfork handlers, so it is cheap in a big process and fiberio's fork
//   handling is not involved. A program that cannot be run (missing, not executable, a bad cwd) is
//   reported by posix_spawn itself: std::system_error naming the program, with its errno.
// * argv[0] without a '/' is looked up in the PATH of this process (posix_spawnp, as Go's
//   exec.Command), also when `env` gives the child another PATH.
// * The child gets an empty signal mask, and SIGPIPE and SIGXFSZ at their default action even if
//   this process ignores them (as Python's restore_signals): `producer | head` then ends as in a shell.
// * Every pipe fd this process keeps is O_CLOEXEC and O_NONBLOCK: no child inherits another child's
//   pipes, and reads and writes park the fiber (hub's poller) instead of the thread. The child's ends
//   are ordinary blocking fds. Writing to a child that closed its stdin gives EPIPE, never a SIGPIPE
//   to this process (the signal is blocked and consumed around that write).
// * Waiting for the exit is a wait on a pidfd (pidfd_open, Linux 5.3) in the hub's poller, so 50
//   children in 50 greenlets wait side by side; signals (kill, terminate) go through the pidfd too,
//   never to a recycled pid. Only if pidfd_open fails (ENOSYS before Linux 5.3, or EMFILE: the child
//   already runs, so it is not an error) does wait() poll waitpid(WNOHANG) with sleeps of 1 to 20 ms,
//   and signals go through kill(2) (safe too: the pid stays ours until we reap it).
// * Destruction (RAII, like std::jthread and Go's exec.CommandContext, unlike Python's Popen which
//   leaves the child running and only warns): a Popen whose child has not been reaped kills it
//   (SIGKILL) and reaps it, so no child and no zombie outlives the object. The reap waits
//   cooperatively and cannot be cut short by a kill or Timeout (those are delivered afterwards); a
//   SIGKILLed process exits at once unless the kernel holds it (uninterruptible I/O). Call wait() or
//   communicate() first to let the child finish. So a greenlet killed inside communicate() or wait()
//   leaves no zombie and no fd once its Popen is destroyed (run() owns its Popen).
// * A child reaped behind the Popen's back (someone's waitpid(-1), SIGCHLD set to SIG_IGN) makes
//   wait() throw std::system_error(ECHILD): its exit status is lost, and it is not reported as 0.
// * A Popen belongs to one thread (like a Socket); its waits may come from several fibers of it.
#pragma once
#include <sys/types.h>

#include <csignal>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/errors.hpp"

namespace fiberio::subprocess {

// What a child's stdin, stdout or stderr is connected to.
enum class Stdio {
  Inherit,  // this process's own fd 0/1/2
  Pipe,     // a pipe to this process (Popen::in()/out()/err(), communicate, run's captured output)
  DevNull,  // /dev/null
  Stdout,   // stderr only: wherever stdout goes (Python's STDOUT, a shell's 2>&1)
  Fd,       // a copy of an fd of this process (Redirect::from_fd); the caller keeps its fd
};

struct Redirect {
  Redirect(Stdio k = Stdio::Inherit) : kind(k) {}  // NOLINT: implicit, so `.out = Stdio::Pipe` reads well
  static Redirect from_fd(int fd) {
    Redirect r(Stdio::Fd);
    r.fd = fd;
    return r;
  }
  Stdio kind;
  int fd = -1;
};

struct Options {
  // (Every member has an initializer, so designated initializers may leave any out without warnings.)
  Redirect in{}, out{}, err{};
  // The child's whole environment ("NAME=value" each); unset: this process's environment.
  std::optional<std::vector<std::string>> env{};
  // The child's working directory; unset: this process's.
  std::optional<std::string> cwd{};
  // ---- run() only (a Popen given any of these throws std::invalid_argument) ----
  // Written to the child's stdin, which then closes (in becomes Pipe if it was Inherit).
  std::optional<std::string> input{};
  // For the whole run: then the child is killed and reaped, and TimeoutExpired is thrown.
  OptDuration timeout{};
  // A nonzero returncode throws CalledProcessError.
  bool check = false;
};

// communicate() or run() did not finish in time. A TimeoutError, so code that handles fiberio's
// timeouts in general handles this one too.
class TimeoutExpired : public TimeoutError {
 public:
  TimeoutExpired(const std::string& what, Duration timeout) : TimeoutError(what), timeout_(timeout) {}
  Duration timeout() const noexcept { return timeout_; }

 private:
  Duration timeout_;
};

// run(.., {.check = true}) and the child exited nonzero (or was killed by a signal).
class CalledProcessError : public std::runtime_error {
 public:
  CalledProcessError(const std::string& what, int returncode, std::string out, std::string err)
      : std::runtime_error(what), returncode(returncode), out(std::move(out)), err(std::move(err)) {}
  int returncode;
  std::string out, err;
};

// This process's end of one pipe to a child: nonblocking underneath, cooperative on top.
class PipeEnd {
 public:
  PipeEnd() noexcept = default;
  explicit PipeEnd(int fd) noexcept : fd_(fd) {}
  PipeEnd(PipeEnd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  PipeEnd& operator=(PipeEnd&& o) noexcept;
  PipeEnd(const PipeEnd&) = delete;
  PipeEnd& operator=(const PipeEnd&) = delete;
  ~PipeEnd() { close(); }

  int fd() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }
  // Up to n bytes into buf, parking until some arrive; 0 at EOF. Throws TimeoutError, ClosedError
  // (closed by another fiber meanwhile), std::system_error (and std::logic_error if not open).
  std::size_t read_some(char* buf, std::size_t n, OptDuration timeout = {});
  // Everything until EOF.
  std::string read_all(OptDuration timeout = {});
  // Writes all of data, parking while the pipe is full. A child that closed its end: std::system_error
  // with EPIPE (no SIGPIPE reaches this process).
  void write_all(std::string_view data, OptDuration timeout = {});
  // One nonblocking attempt: bytes written, or 0 if the pipe is full. EPIPE etc. throw as write_all.
  std::size_t try_write(std::string_view data);
  // One nonblocking attempt: bytes read; 0 at EOF; nullopt if nothing is there yet.
  std::optional<std::size_t> try_read(char* buf, std::size_t n);
  // Closes it (fiberio::close: fibers waiting on it wake with ClosedError). Idempotent.
  void close() noexcept;

 private:
  int fd_ = -1;
};

class Popen {
 public:
  // Starts argv[0] with arguments argv. Throws std::invalid_argument (empty argv, a run()-only option,
  // Stdio::Stdout for in/out, Stdio::Fd without an fd) and std::system_error when the program cannot
  // be run (what() names it; code() is posix_spawn's errno: ENOENT, EACCES...) or a pipe cannot be
  // made (EMFILE).
  explicit Popen(std::vector<std::string> argv, const Options& opts = {});
  // Kills (SIGKILL) and reaps a child not reaped yet (see the top of this file). Closes the pipes.
  ~Popen();
  Popen(Popen&& o) noexcept;
  Popen& operator=(Popen&&) = delete;
  Popen(const Popen&) = delete;
  Popen& operator=(const Popen&) = delete;

  pid_t pid() const noexcept { return pid_; }
  const std::vector<std::string>& args() const noexcept { return argv_; }
  // The pipes asked for with Stdio::Pipe (otherwise not open).
  PipeEnd& in() noexcept { return in_; }
  PipeEnd& out() noexcept { return out_; }
  PipeEnd& err() noexcept { return err_; }

  // The exit code once reaped: >= 0 for exit(n), -SIGNUM if a signal killed it (as Python).
  std::optional<int> returncode() const noexcept { return returncode_; }
  // The raw wait status (WIFEXITED, WTERMSIG, WCOREDUMP...) once reaped.
  std::optional<int> wait_status() const noexcept { return status_; }
  // Reaps the child if it has exited, without waiting: its returncode, or nullopt while it runs.
  std::optional<int> poll();
  // Parks until the child exits, and reaps it. Throws TimeoutExpired after `timeout` (the child keeps
  // running: kill() it, or wait again).
  int wait(OptDuration timeout = {});

  struct Output {
    std::string out, err;
  };
  // Writes `input` to stdin (then closes it) while reading stdout and stderr until EOF, all at once in
  // this fiber (one private epoll set: a child flooding both pipes never deadlocks), then waits for the
  // exit. Returns what the piped outputs carried (empty for streams that are not pipes). A child that
  // exits without reading its input is fine (the EPIPE is swallowed, as Python does).
  // After TimeoutExpired nothing is lost: what arrived so far is kept, and a second call (typically
  // after kill()) returns everything. `input` only on the first call (std::logic_error otherwise),
  // and only if stdin is a pipe (std::invalid_argument). Without input, stdin is closed at once.
  Output communicate(std::optional<std::string_view> input = {}, OptDuration timeout = {});

  // Sends sig to the child; nothing once it was reaped (its pid may belong to another process by then).
  void send_signal(int sig);
  void terminate() { send_signal(SIGTERM); }
  void kill() { send_signal(SIGKILL); }

 private:
  bool try_reap();
  void set_status(int status) noexcept;
  void kill_and_reap() noexcept;
  [[noreturn]] void throw_timeout(Duration timeout, const char* where) const;

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int pidfd_ = -1;  // -1: reaped, or pidfd_open is not available (then wait() polls)
  PipeEnd in_, out_, err_;
  std::optional<int> returncode_, status_;
  // communicate()'s state, kept across a TimeoutExpired.
  bool communicating_ = false;
  std::string input_;
  std::size_t input_sent_ = 0;
  Output output_;
};

struct CompletedProcess {
  std::vector<std::string> args;
  int returncode = 0;
  std::string out, err;  // what the piped streams carried
};

// Runs argv to completion (Python's subprocess.run, Go's exec.Command(..).Output()): starts it,
// communicates opts.input, waits. With opts.timeout: on expiry the child is killed and reaped, then
// TimeoutExpired is thrown. With opts.check: a nonzero returncode throws CalledProcessError (holding
// the output). Other errors as Popen's constructor.
CompletedProcess run(std::vector<std::string> argv, Options opts = {});

}  // namespace fiberio::subprocess
