// Files and child processes for tests: a temporary directory, reading a file, finding a program on
// PATH, and a child process (a real server or tool) that is always stopped.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fiberio/time.hpp>

namespace fiberio_test {

using namespace std::chrono_literals;

// A temporary directory, removed (recursively) on destruction.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/fiberio-test-XXXXXX";
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
class Process {
 public:
  // nap(): how to pause between checks while waiting for the child to exit (default: a cooperative
  // 10 ms fiberio::sleep, so a server in this process's hub keeps serving meanwhile).
  Process(std::vector<std::string> argv, const std::string& log, std::vector<std::string> extra_env = {},
          std::function<void()> nap = [] { fiberio::sleep(std::chrono::milliseconds(10)); })
      : nap_(std::move(nap)) {
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
  ~Process() { stop(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

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
    auto give_up = std::chrono::steady_clock::now() + budget;
    while (running() && std::chrono::steady_clock::now() < give_up) nap_();
    return pid_ > 0 ? -1 : status_;
  }
  void stop() {
    if (pid_ <= 0) return;
    if (signal_and_wait(SIGTERM, 3000ms) == -1) signal_and_wait(SIGKILL, 3000ms);
  }

 private:
  std::function<void()> nap_;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace fiberio_test
