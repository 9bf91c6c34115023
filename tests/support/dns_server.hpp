// A loopback name server for the resolver tests, and a sandbox that points libc's resolver at it.
//
// glibc reads its name servers from /etc/resolv.conf (port 53, no other way to name a port), and
// every resolver thread has its own copy of that state, so the tests do what a container does:
// enter_dns_sandbox() moves the process into a private mount + network namespace (as root; as
// another user inside a user namespace of its own, where the kernel allows that), bind-mounts a
// resolv.conf naming 127.0.0.1 (and `search fiberio.test`) over /etc/resolv.conf, and brings the new
// namespace's loopback up. /etc/hosts and nsswitch.conf stay the host's. It must run while the
// process has one thread (a static initializer: before gtest's main and the watchdog's thread).
//
// SlowDnsServer answers A queries for the names it knows with one A record (AAAA: no records;
// anything else: NXDOMAIN) after `delay`, from a thread of its own, every query on its own clock, so
// 20 queries at once are all answered 300 ms later, never one after another.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fiberio_test {

inline constexpr const char* kDnsSearchDomain = "fiberio.test";

namespace dns_detail {
inline bool write_file(const char* path, const std::string& text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}
}  // namespace dns_detail

// "" on success, else why the sandbox could not be made (the tests that need it skip with that).
inline std::string enter_dns_sandbox() {
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) {
    int root_errno = errno;
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0)
      return std::string("unshare(mount + network namespace) failed: ") + std::strerror(root_errno) +
             "; in a user namespace too: " + std::strerror(errno);
    dns_detail::write_file("/proc/self/setgroups", "deny");
    if (!dns_detail::write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !dns_detail::write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
      return "user namespace: cannot write uid_map/gid_map";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return std::string("mount --make-rprivate /: ") + std::strerror(errno);
  char dir[] = "/tmp/fiberio-dns-XXXXXX";
  if (!::mkdtemp(dir)) return std::string("mkdtemp: ") + std::strerror(errno);
  std::string conf = std::string(dir) + "/resolv.conf";
  {
    std::ofstream out(conf);
    out << "nameserver 127.0.0.1\nsearch " << kDnsSearchDomain << "\noptions timeout:5 attempts:1\n";
  }
  if (::mount(conf.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0)
    return std::string("bind-mount over /etc/resolv.conf: ") + std::strerror(errno);
  ::unlink(conf.c_str());  // the mount keeps the file
  ::rmdir(dir);
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  bool up = s >= 0 && ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0 &&
            (ifr.ifr_flags |= IFF_UP, ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
  int err = errno;
  if (s >= 0) ::close(s);
  if (!up) return std::string("bring loopback up in the new network namespace: ") + std::strerror(err);
  return "";
}

// The result of enter_dns_sandbox(), taken once per process by the first caller (a static initializer).
inline const std::string& dns_sandbox_error() {
  static const std::string error = enter_dns_sandbox();
  return error;
}

class SlowDnsServer {
 public:
  // Listens on 127.0.0.1:53 (the sandbox's resolv.conf). Throws if it cannot.
  explicit SlowDnsServer(std::chrono::milliseconds delay) : delay_ms_(static_cast<int>(delay.count())) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(53);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error(std::string("SlowDnsServer: bind 127.0.0.1:53: ") + std::strerror(errno));
    if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) throw std::runtime_error("SlowDnsServer: pipe");
    thread_ = std::thread([this] { run(); });
  }
  ~SlowDnsServer() {
    (void)!::write(stop_pipe_[1], "x", 1);
    thread_.join();
    ::close(fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
  }
  SlowDnsServer(const SlowDnsServer&) = delete;
  SlowDnsServer& operator=(const SlowDnsServer&) = delete;

  // `name` (fully qualified, no trailing dot) answers A queries with `ipv4`.
  void add(const std::string& name, const std::string& ipv4) {
    std::lock_guard lk(mu_);
    names_[lower(name)] = ipv4;
  }
  void set_delay(std::chrono::milliseconds d) { delay_ms_ = static_cast<int>(d.count()); }
  // Queries received, and the names asked (lower case), in order.
  int queries() const { return queries_.load(); }
  std::vector<std::string> asked() const {
    std::lock_guard lk(mu_);
    return asked_;
  }
  // The most queries waiting for their answer at once.
  int max_in_flight() const { return max_in_flight_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    Clock::time_point due;
    std::vector<unsigned char> reply;
    sockaddr_in to;
  };

  static std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  void run() {
    std::vector<Pending> pending;
    for (;;) {
      int timeout = -1;
      auto now = Clock::now();
      for (auto& p : pending) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(p.due - now).count();
        timeout = timeout < 0 ? static_cast<int>(std::max<long>(0, ms)) : std::min(timeout, static_cast<int>(std::max<long>(0, ms)));
      }
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      ::poll(fds, 2, timeout);
      if (fds[1].revents) return;
      if (fds[0].revents & POLLIN) {
        unsigned char buf[512];
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = ::recvfrom(fd_, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0) {
          ++queries_;
          auto reply = answer(buf, static_cast<std::size_t>(n));
          if (!reply.empty())
            pending.push_back({Clock::now() + std::chrono::milliseconds(delay_ms_.load()), std::move(reply), from});
          int in_flight = static_cast<int>(pending.size());
          for (int m = max_in_flight_.load(); in_flight > m && !max_in_flight_.compare_exchange_weak(m, in_flight);) {
          }
        }
      }
      now = Clock::now();
      for (auto it = pending.begin(); it != pending.end();) {
        if (it->due <= now) {
          ::sendto(fd_, it->reply.data(), it->reply.size(), 0, reinterpret_cast<const sockaddr*>(&it->to),
                   sizeof it->to);
          it = pending.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  // The reply to one query: its header and question, and an A record if the name is known.
  std::vector<unsigned char> answer(const unsigned char* q, std::size_t n) {
    if (n < 12 || (q[2] & 0x80)) return {};
    std::size_t i = 12;
    std::string name;
    while (i < n && q[i] != 0) {
      std::size_t len = q[i];
      if (len > 63 || i + 1 + len > n) return {};
      if (!name.empty()) name += '.';
      name.append(reinterpret_cast<const char*>(q + i + 1), len);
      i += 1 + len;
    }
    if (i + 5 > n) return {};
    std::size_t qend = i + 5;  // root label, type, class
    int qtype = (q[i + 1] << 8) | q[i + 2];
    name = lower(name);
    std::string ipv4;
    bool known;
    {
      std::lock_guard lk(mu_);
      asked_.push_back(name);
      auto it = names_.find(name);
      known = it != names_.end();
      if (known) ipv4 = it->second;
    }
    std::vector<unsigned char> r(q, q + qend);
    r[2] = 0x84 | (q[2] & 0x01);        // QR, AA, RD as asked
    r[3] = known ? 0x80 : 0x83;         // RA; NOERROR or NXDOMAIN
    r[4] = 0, r[5] = 1;                 // one question
    r[6] = 0, r[7] = 0;                 // answers: set below
    r[8] = r[9] = r[10] = r[11] = 0;    // no authority, no additional (EDNS dropped)
    if (known && qtype == 1) {
      r[7] = 1;
      unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 0, 0, 0, 0};
      ::inet_pton(AF_INET, ipv4.c_str(), rr + 12);
      r.insert(r.end(), rr, rr + sizeof rr);
    }
    return r;
  }

  int fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::atomic<int> delay_ms_;
  std::atomic<int> queries_{0};
  std::atomic<int> max_in_flight_{0};
  mutable std::mutex mu_;
  std::map<std::string, std::string> names_;
  std::vector<std::string> asked_;
  std::thread thread_;
};

}  // namespace fiberio_test
