// This process's child processes, as the kernel sees them: for tests that must leave no child (running
// or zombie) behind.
#pragma once
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <string>

namespace fiberio_test {

// Every thread's children, running or zombie (/proc/self/task/*/children).
inline std::set<pid_t> children() {
  std::set<pid_t> out;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/children");
      for (pid_t p; f >> p;) out.insert(p);
    }
    ::closedir(d);
  }
  return out;
}

// pid is gone: not a child of ours any more, not even a zombie.
inline bool reaped(pid_t pid) {
  int st;
  errno = 0;
  return ::waitpid(pid, &st, WNOHANG) == -1 && errno == ECHILD && !children().count(pid);
}

}  // namespace fiberio_test
