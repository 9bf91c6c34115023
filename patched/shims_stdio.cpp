// Shims: stdio over sockets and pipes. glibc's stdio reads and writes through its own internal
// read/write, which no shim can interpose: a FILE over a socket the shims made nonblocking would see
// EAGAIN (fgets returns NULL at once), and over a blocking pipe it would stall the whole hub.
//
// So on a thread with a hub, fdopen() of a socket or a FIFO gives a FILE whose I/O goes through the
// shims' read/write/close (fopencookie): a fiber blocked in fgets/fread/getline/fprintf/fflush parks
// like a blocking read(), and any other caller gets exactly libc's blocking call. fileno() still
// answers the fd (glibc's cookie FILE keeps it in _fileno, which its cookie I/O never uses).
// Regular files, ttys, and every fdopen on a thread without a hub are libc's own FILEs, untouched.
// Not covered: FILEs libc opens itself (fopen of a FIFO path) and stdin/stdout/stderr. popen() in a
// fiber makes its FILE the same way (shims_process.cpp).
#undef _FORTIFY_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "patched/blocking_call.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

// The cookie is the fd itself; the functions call the interposed read/write/close (our shims).
ssize_t cookie_read(void* cookie, char* buf, size_t n) {
  return ::read(static_cast<int>(reinterpret_cast<intptr_t>(cookie)), buf, n);
}
ssize_t cookie_write(void* cookie, const char* buf, size_t n) {
  // As libc's own FILE does: write it all unless the fd fails (errno stays as write set it; stdio
  // treats a short count as the error).
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(static_cast<int>(reinterpret_cast<intptr_t>(cookie)), buf + done, n - done);
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}
int cookie_seek(void*, off64_t*, int) {
  errno = ESPIPE;  // sockets and pipes do not seek
  return -1;
}
int cookie_close(void* cookie) { return ::close(static_cast<int>(reinterpret_cast<intptr_t>(cookie))); }

// fdopen's own checks: the mode's access must be allowed by the fd's (EINVAL otherwise), "a" sets
// O_APPEND, "e" sets FD_CLOEXEC.
bool mode_fits(int fd, const char* mode) {
  int fl = real::fcntl(fd, F_GETFL, nullptr);
  if (fl < 0) return false;  // errno EBADF
  int acc = fl & O_ACCMODE;
  bool r = mode[0] == 'r' || strchr(mode, '+'), w = mode[0] != 'r' || strchr(mode, '+');
  if ((r && acc == O_WRONLY) || (w && acc == O_RDONLY) || !strchr("rwa", mode[0])) {
    errno = EINVAL;
    return false;
  }
  if (mode[0] == 'a' && !(fl & O_APPEND))
    real::fcntl(fd, F_SETFL, reinterpret_cast<void*>(static_cast<long>(fl | O_APPEND)));
  if (strchr(mode, 'e')) real::fcntl(fd, F_SETFD, reinterpret_cast<void*>(static_cast<long>(FD_CLOEXEC)));
  return true;
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

FILE* fdopen(int fd, const char* mode) noexcept {
  struct stat st;
  if (!Hub::get() || !mode || ::fstat(fd, &st) != 0 || !(S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode)))
    return real::fdopen(fd, mode);
  int saved = errno;
  if (!mode_fits(fd, mode)) return nullptr;
  cookie_io_functions_t io{cookie_read, cookie_write, cookie_seek, cookie_close};
  // fopencookie takes the same mode letters; "e" and "x" mean nothing to it.
  char m[4] = {mode[0], strchr(mode, '+') ? '+' : '\0', '\0', '\0'};
  FILE* f = ::fopencookie(reinterpret_cast<void*>(static_cast<intptr_t>(fd)), m, io);
  if (!f) return nullptr;
  f->_fileno = fd;  // fileno(f) answers the fd, as for libc's own fdopen
  errno = saved;
  return f;
}

}  // extern "C"
