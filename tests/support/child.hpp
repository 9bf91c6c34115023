// Runs a function in a fork()ed child and collects its stdout, stderr and exit status, for tests of
// what happens at process exit, after fork, or on a crash.
#pragma once
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace fiberio_test {

using namespace std::chrono_literals;

// A fork()ed child running fn; the parent collects its stdout, stderr and exit status, and kills it
// if it has not exited within `limit` (a hang shows as timed_out).
struct ChildResult {
  int status = 0;
  bool timed_out = false;
  std::string out, err;
  bool exited_ok() const { return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  std::string describe() const {
    return "timed_out=" + std::to_string(timed_out) + " status=" + std::to_string(status) + "\nstdout:\n" + out +
           "\nstderr:\n" + err;
  }
};

// Text a process wrote to stderr, without the sanitizers' own notes in sanitizer builds (see
// scripts/sanitize.sh): ASan's line on a process's first ucontext switch, and LeakSanitizer's, at the
// exit of a fork()ed child, about the parent's threads that the child does not have. Tests that
// compare stderr compare what fiberio and the program wrote; a real sanitizer report still fails
// them (it also ends the process with an error status).
inline std::string without_sanitizer_notes(std::string text) {
  static const char* const notes[] = {"WARNING: ASan doesn't fully support makecontext/swapcontext",
                                      "was not suspended. False leaks are possible."};
  for (const char* note : notes) {
    for (std::size_t at; (at = text.find(note)) != std::string::npos;) {
      std::size_t begin = text.rfind('\n', at);
      begin = begin == std::string::npos ? 0 : begin + 1;
      std::size_t end = text.find('\n', at);
      text.erase(begin, end == std::string::npos ? std::string::npos : end + 1 - begin);
    }
  }
  return text;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
constexpr bool kAddressSanitizer = __has_feature(address_sanitizer);
#else
constexpr bool kAddressSanitizer = false;
#endif

// True when every thread of this process but the caller is asleep (state S in /proc).
inline bool other_threads_asleep() {
  const std::string self = std::to_string(::gettid());
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == self) continue;
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    auto paren = line.rfind(')');  // the name in parentheses may hold spaces
    if (paren == std::string::npos) continue;  // the thread exited meanwhile
    if (line.compare(paren + 1, 3, " S ") != 0) return false;
  }
  return true;
}

// Under ASan, waits (at most 2 s) until the process's other threads are asleep, seen twice 5 ms
// apart, before a test forks. GCC 12's libasan has no fork handler (LLVM added one in 2023): a
// child forked while another thread is inside ASan's allocator, typically a thread that has just
// been started and is still setting itself up, inherits that size class's lock held, and its first
// allocation from that class never returns. Seen as a fork()ed child whose new monitor or dump
// thread hung in SizeClassAllocator64::GetFromAllocator under AsanThread::Init. glibc's malloc,
// in the plain build, is fork-safe: there the fork races freely.
inline void settle_threads_before_fork() {
  if constexpr (!kAddressSanitizer) return;
  auto deadline = std::chrono::steady_clock::now() + 2s;
  int calm = 0;
  while (calm < 2 && std::chrono::steady_clock::now() < deadline) {
    calm = other_threads_asleep() ? calm + 1 : 0;
    std::this_thread::sleep_for(5ms);
  }
}

template <class Fn>
ChildResult run_child(Fn fn, std::chrono::seconds limit = std::chrono::seconds(15)) {
  int out[2], err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) throw std::runtime_error("pipe");
  settle_threads_before_fork();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    int rc = fn();
    std::fflush(nullptr);
    std::exit(rc);
  }
  ::close(out[1]);
  ::close(err[1]);
  ChildResult res;
  auto deadline = std::chrono::steady_clock::now() + limit;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_pipes = 2;
  while (open_pipes > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      res.timed_out = true;
      break;
    }
    // A plain poll(): the parent must not depend on the hub it is testing.
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? res.out : res.err).append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  res.err = without_sanitizer_notes(std::move(res.err));
  if (res.timed_out) ::kill(pid, SIGKILL);
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  // The pipes closed: the child is exiting. Still bound the wait.
  while (::waitpid(pid, &res.status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      res.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(1ms);
  }
  return res;
}

// Re-runs this test binary with `env` ("NAME=value ...") prepended and only the test `filter`: for
// settings read once per process, at its first hub. Returns its stdout and stderr together; status
// gets pclose()'s.
inline std::string rerun_self(const std::string& env, const std::string& filter, int& status) {
  std::string cmd = env + " /proc/" + std::to_string(::getpid()) + "/exe --gtest_filter=" + filter + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) throw std::runtime_error("popen");
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  status = ::pclose(f);
  return out;
}

inline bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

}  // namespace fiberio_test
