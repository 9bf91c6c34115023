// stdio over sockets and pipes inside fibers: fdopen() + fgets/getline/fread/fprintf block only the
// fiber, as blocking stdio does, whether or not the shims already made the fd nonblocking underneath.
#include <sys/socket.h>

#include <cstdio>
#include <string>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {
// Writes `text` to fd after `delay`, from a greenlet (so the reader must park for it).
fiberio::Greenlet<void> write_later(int fd, std::string text, fiberio::Duration delay = 50ms) {
  return fiberio::spawn([fd, text, delay] {
    fiberio::sleep(delay);
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  });
}
}  // namespace

TEST(PatchedStdio, FgetsOnAFdopenedSocketWaitsForTheLine) {
  fiberio::ensure_hub();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);  // made nonblocking underneath by the shims
  FILE* in = ::fdopen(sv[0], "r+");
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(::fileno(in), sv[0]);
  Ticker ticker;
  auto w = write_later(sv[1], "hel");
  auto w2 = write_later(sv[1], "lo\nsecond line\n", 100ms);
  char line[64];
  ASSERT_NE(::fgets(line, sizeof line, in), nullptr) << "errno " << errno;
  EXPECT_STREQ(line, "hello\n");  // the line arrived in two pieces: fgets waited for the rest
  ASSERT_NE(::fgets(line, sizeof line, in), nullptr);
  EXPECT_STREQ(line, "second line\n");
  EXPECT_GE(ticker.ticks(), 5) << "the hub stalled while fgets waited";
  // Writes go through too, and reach the peer at fflush.
  EXPECT_GT(::fprintf(in, "answer %d\n", 42), 0);
  EXPECT_EQ(::fflush(in), 0);
  char buf[32] = {};
  EXPECT_EQ(::read(sv[1], buf, sizeof buf), 10);
  EXPECT_STREQ(buf, "answer 42\n");
  // EOF: the peer closes.
  ::close(sv[1]);
  EXPECT_EQ(::fgets(line, sizeof line, in), nullptr);
  EXPECT_TRUE(::feof(in));
  EXPECT_EQ(::fclose(in), 0);
  w.join();
  w2.join();
}

TEST(PatchedStdio, PipeAlreadyReadByTheShimAndAFreshPipeBothWork) {
  fiberio::ensure_hub();
  for (bool used_before : {true, false}) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    if (used_before) {  // the read shim takes the pipe over (O_NONBLOCK underneath)
      auto w = write_later(p[1], "x", 10ms);
      char c;
      ASSERT_EQ(::read(p[0], &c, 1), 1);
      w.join();
    }
    FILE* in = ::fdopen(p[0], "r");
    ASSERT_NE(in, nullptr);
    Ticker ticker;
    auto w = write_later(p[1], "a line\nrest");
    char* line = nullptr;
    size_t cap = 0;
    ssize_t n = ::getline(&line, &cap, in);
    EXPECT_EQ(n, 7) << (used_before ? "used pipe" : "fresh pipe") << ", errno " << errno;
    if (n > 0) {
      EXPECT_EQ(std::string(line, static_cast<std::size_t>(n)), "a line\n");
    }
    std::free(line);
    EXPECT_GE(ticker.ticks(), 3) << (used_before ? "used pipe" : "fresh pipe") << ": the hub stalled";
    ::close(p[1]);
    char rest[16];
    EXPECT_EQ(::fread(rest, 1, sizeof rest, in), 4u);  // up to EOF
    ::fclose(in);
    w.join();
  }
}

TEST(PatchedStdio, FdopenKeepsLibcsChecksAndRegularFilesAreLibcsOwn) {
  fiberio::ensure_hub();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  errno = 0;
  EXPECT_EQ(::fdopen(p[0], "w"), nullptr);  // a read end cannot be written
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(::fdopen(-1, "r"), nullptr);
  EXPECT_EQ(errno, EBADF);
  ::close(p[0]);
  ::close(p[1]);
  FILE* tmp = ::tmpfile();
  ASSERT_NE(tmp, nullptr);
  FILE* again = ::fdopen(::dup(::fileno(tmp)), "r+");
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(::fputs("seekable", again), 1);
  EXPECT_EQ(::fseek(again, 0, SEEK_SET), 0);  // a regular file stays libc's FILE: it seeks
  ::fclose(again);
  ::fclose(tmp);
}
