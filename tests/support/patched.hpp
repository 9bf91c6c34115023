// Helpers shared by the test_patched_* tests: loopback sockets, leak checks, child processes (real
// servers the tests start and always stop), temp dirs, and a ticker that measures how long the hub
// stalled.
#pragma once
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fiberio/fiberio.hpp>
#include <gtest/gtest.h>
#include <fiberio/patched.hpp>

#include "leak_check.hpp"
#include "ports.hpp"

extern char** environ;

namespace fiberio_test {

using namespace std::chrono_literals;
using fiberio::Clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A TCP listener on 127.0.0.1 with a kernel-chosen port. Made with the patched socket() (so inside a
// fiber it is shim-owned), left blocking as the user sees it.
struct Listener {
  int fd = -1;
  int port = 0;
  explicit Listener(int backlog = 512) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket");
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0)
      throw std::runtime_error("bind/listen");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() {
    if (fd >= 0) ::close(fd);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
};

// A blocking connect() to 127.0.0.1:port; -1 on failure (errno set).
inline int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// Waits (cooperatively) until something accepts connections on 127.0.0.1:port.
inline bool wait_for_port(int port, std::chrono::milliseconds budget) {
  auto give_up = Clock::now() + budget;
  while (Clock::now() < give_up) {
    int fd = connect_to(port);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    fiberio::sleep(20ms);
  }
  return false;
}

// A temporary directory, removed (recursively) on destruction.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/fiberio-patched-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string find_program(const std::string& name, const std::vector<std::string>& extra_dirs = {}) {
  std::vector<std::string> dirs = extra_dirs;
  if (const char* p = std::getenv("PATH")) {
    std::stringstream ss(p);
    for (std::string d; std::getline(ss, d, ':');) dirs.push_back(d);
  }
  for (auto& d : dirs) {
    auto full = d + "/" + name;
    if (::access(full.c_str(), X_OK) == 0) return full;
  }
  return {};
}

// A child process (a real server) that is always stopped: SIGTERM, then SIGKILL, when the object
// goes away, including when the test fails half-way. Its stdout and stderr go to `log`.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log, std::vector<std::string> extra_env = {}) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      if (kv.rfind("LD_PRELOAD=", 0) == 0 && !extra_env.empty()) continue;
      env_store.push_back(kv);
    }
    for (auto& kv : extra_env) env_store.push_back(kv);
    std::vector<char*> envp;
    for (auto& kv : env_store) envp.push_back(kv.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    int rc = ::posix_spawn(&pid_, args[0], &fa, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running() {
    if (pid_ <= 0) return false;
    int st;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
      return false;
    }
    return true;
  }
  // Sends sig and waits up to `budget` for the child to exit; returns its wait status (or -1).
  int signal_and_wait(int sig, std::chrono::milliseconds budget) {
    if (pid_ > 0) ::kill(pid_, sig);
    auto give_up = Clock::now() + budget;
    while (running() && Clock::now() < give_up) fiberio::patched::original::usleep(10000);
    return pid_ > 0 ? -1 : status_;
  }
  void stop() {
    if (pid_ <= 0) return;
    if (signal_and_wait(SIGTERM, 3000ms) == -1) signal_and_wait(SIGKILL, 3000ms);
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

// Several greenlets ticking every `period` and recording the longest gap between their ticks: a gap
// far above the period means the hub was blocked.
class Ticker {
 public:
  explicit Ticker(std::chrono::milliseconds period = 10ms) {
    g_ = fiberio::spawn([this, period] {
      auto last = Clock::now();
      while (!stop_) {
        fiberio::sleep(period);
        auto now = Clock::now();
        max_gap_ = std::max(max_gap_, now - last);
        last = now;
        ++ticks_;
      }
    });
  }
  ~Ticker() { stop(); }
  void stop() {
    stop_ = true;
    g_.join();
  }
  double max_gap_ms() const { return std::chrono::duration<double, std::milli>(max_gap_).count(); }
  int ticks() const { return ticks_; }
  void reset() { max_gap_ = {}; ticks_ = 0; }

 private:
  bool stop_ = false;
  int ticks_ = 0;
  fiberio::Duration max_gap_{};
  fiberio::Greenlet<void> g_;
};

}  // namespace fiberio_test
