// Shims: read and write families. Each is libc's blocking call for an fd the user left blocking
// (whole writes, MSG_WAITALL, SO_RCVTIMEO/SO_SNDTIMEO) while only the calling fiber waits.
#undef _FORTIFY_SOURCE
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "patched/blocking_call.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

// A copy of an iovec array that can be advanced past bytes already transferred.
class IovCursor {
 public:
  IovCursor(const iovec* iov, int n) : n_(n > 0 ? n : 0) {
    if (n_ > kInline) {
      heap_.assign(iov, iov + n_);
      v_ = heap_.data();
    } else {
      if (n_) std::memcpy(inline_, iov, sizeof(iovec) * static_cast<size_t>(n_));
      v_ = inline_;
    }
  }
  const iovec* data() const noexcept { return v_; }
  int count() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  void advance(size_t bytes) noexcept {
    while (n_ > 0 && (bytes > 0 || v_->iov_len == 0)) {
      if (bytes >= v_->iov_len) {
        bytes -= v_->iov_len;
        ++v_;
        --n_;
      } else {
        v_->iov_base = static_cast<char*>(v_->iov_base) + bytes;
        v_->iov_len -= bytes;
        bytes = 0;
      }
    }
  }

 private:
  static constexpr int kInline = 16;
  iovec inline_[kInline];
  std::vector<iovec> heap_;
  iovec* v_;
  int n_;
};

size_t iov_total(const iovec* iov, int n) noexcept {
  size_t t = 0;
  for (int i = 0; i < n; ++i) t += iov[i].iov_len;
  return t;
}

// A blocking send transfers everything (or fails having sent nothing); a nonblocking one may stop
// short. attempt(done) makes one nonblocking try at the bytes after `done`.
template <class Attempt>
ssize_t send_all(BlockingCall& call, size_t total, Attempt attempt) {
  size_t done = 0;
  for (;;) {
    ssize_t r = attempt(done);
    if (r > 0) {
      done += static_cast<size_t>(r);
      if (done >= total) return call.ok(static_cast<ssize_t>(done));
      continue;
    }
    if (r == 0) return call.ok(static_cast<ssize_t>(done));
    if (!call.wait_again()) return done ? call.ok(static_cast<ssize_t>(done)) : -1;
  }
}

// `plain`: the number of bytes a plain read (read, readv, recv without flags) asks for, which lets it
// use the drained hint; 0 for other reads.
template <class Attempt>
ssize_t receive(BlockingCall& call, std::size_t plain, Attempt attempt) {
  if (!call.wait_if_drained(plain)) return -1;
  for (;;) {
    ssize_t r = attempt();
    if (r >= 0) {
      call.read_returned(r, plain);
      return call.ok(r);
    }
    if (!call.wait_again()) return -1;
  }
}

bool is_stream(int fd) noexcept {
  int type = 0;
  socklen_t len = sizeof type;
  return real::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

ssize_t recv_impl(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* alen) {
  if (flags & MSG_DONTWAIT) return real::recvfrom(fd, buf, n, flags, addr, alen);
  BlockingCall call(fd, Io::Read);
  if (call.passthrough()) return real::recvfrom(fd, buf, n, flags, addr, alen);
  if ((flags & MSG_WAITALL) && !(flags & MSG_PEEK) && is_stream(fd)) {
    // A nonblocking MSG_WAITALL returns what is there: keep going until n bytes, EOF or an error.
    auto* p = static_cast<char*>(buf);
    size_t done = 0;
    for (;;) {
      ssize_t r = real::recvfrom(fd, p + done, n - done, flags, addr, alen);
      if (r > 0) {
        done += static_cast<size_t>(r);
        if (done >= n) return call.ok(static_cast<ssize_t>(done));
        continue;
      }
      if (r == 0) return call.ok(static_cast<ssize_t>(done));
      if (!call.wait_again()) return done ? call.ok(static_cast<ssize_t>(done)) : -1;
    }
  }
  return receive(call, flags == 0 ? n : 0, [&] { return real::recvfrom(fd, buf, n, flags, addr, alen); });
}

ssize_t send_impl(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t alen) {
  if (flags & MSG_DONTWAIT) return real::sendto(fd, buf, n, flags, addr, alen);
  BlockingCall call(fd, Io::Write);
  if (call.passthrough()) return real::sendto(fd, buf, n, flags, addr, alen);
  auto* p = static_cast<const char*>(buf);
  return send_all(call, n, [&](size_t done) { return real::sendto(fd, p + done, n - done, flags, addr, alen); });
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

[[noreturn]] void __chk_fail(void);

ssize_t read(int fd, void* buf, size_t n) {
  BlockingCall call(fd, Io::Read);
  if (call.passthrough()) return real::read(fd, buf, n);
  return receive(call, n, [&] { return real::read(fd, buf, n); });
}

ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  BlockingCall call(fd, Io::Read);
  if (call.passthrough()) return real::readv(fd, iov, iovcnt);
  return receive(call, iov_total(iov, iovcnt), [&] { return real::readv(fd, iov, iovcnt); });
}

ssize_t recv(int fd, void* buf, size_t n, int flags) { return recv_impl(fd, buf, n, flags, nullptr, nullptr); }

ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* alen) {
  return recv_impl(fd, buf, n, flags, addr, alen);
}

ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  if (flags & MSG_DONTWAIT) return real::recvmsg(fd, msg, flags);
  BlockingCall call(fd, Io::Read);
  if (call.passthrough()) return real::recvmsg(fd, msg, flags);
  return receive(call, 0, [&] { return real::recvmsg(fd, msg, flags); });
}

ssize_t write(int fd, const void* buf, size_t n) {
  BlockingCall call(fd, Io::Write);
  if (call.passthrough()) return real::write(fd, buf, n);
  auto* p = static_cast<const char*>(buf);
  return send_all(call, n, [&](size_t done) { return real::write(fd, p + done, n - done); });
}

ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  BlockingCall call(fd, Io::Write);
  if (call.passthrough() || iovcnt <= 0 || iovcnt > IOV_MAX) return real::writev(fd, iov, iovcnt);
  IovCursor cur(iov, iovcnt);
  size_t total = iov_total(iov, iovcnt);
  return send_all(call, total, [&](size_t done) {
    static_cast<void>(done);
    ssize_t r = real::writev(fd, cur.data(), cur.count());
    if (r > 0) cur.advance(static_cast<size_t>(r));
    return r;
  });
}

ssize_t send(int fd, const void* buf, size_t n, int flags) { return send_impl(fd, buf, n, flags, nullptr, 0); }

ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t alen) {
  return send_impl(fd, buf, n, flags, addr, alen);
}

ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  if (flags & MSG_DONTWAIT) return real::sendmsg(fd, msg, flags);
  BlockingCall call(fd, Io::Write);
  if (call.passthrough() || !msg || msg->msg_iovlen > static_cast<size_t>(IOV_MAX))
    return real::sendmsg(fd, msg, flags);
  IovCursor cur(msg->msg_iov, static_cast<int>(msg->msg_iovlen));
  msghdr m = *msg;
  size_t total = iov_total(msg->msg_iov, static_cast<int>(msg->msg_iovlen));
  return send_all(call, total, [&](size_t done) {
    m.msg_iov = const_cast<iovec*>(cur.data());
    m.msg_iovlen = static_cast<size_t>(cur.count());
    if (done > 0) {  // ancillary data (SCM_RIGHTS...) went with the first bytes: never send it twice
      m.msg_control = nullptr;
      m.msg_controllen = 0;
    }
    ssize_t r = real::sendmsg(fd, &m, flags);
    if (r > 0) cur.advance(static_cast<size_t>(r));
    return r;
  });
}

// _FORTIFY_SOURCE builds call these instead; they check the buffer, then do what the plain call does.
ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return read(fd, buf, n);
}

ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return recv(fd, buf, n, flags);
}

ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr, socklen_t* alen) {
  if (n > buflen) __chk_fail();
  return recvfrom(fd, buf, n, flags, addr, alen);
}

}  // extern "C"
