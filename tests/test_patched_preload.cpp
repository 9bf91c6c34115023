// LD_PRELOAD=libfiberio_patched.so into a program that links fiberio but knows nothing of the shims.
// The test builds such a program the way a user would (same compiler, fiberio's headers, no
// fiberio::patched, no -rdynamic):
//  * linked plainly against the shared libfiberio.so, the preloaded shims share the program's hub
//    (one libfiberio.so in the process): its blocking read() and usleep() become cooperative. Without
//    LD_PRELOAD the same program stalls its hub.
//  * linked with its own static copy of fiberio (as a libfiberio.a build would), the shims cannot see
//    its hub: they say so on stderr, and the program runs as plain libc.
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

// The program under test: a ticker greenlet, and the main fiber blocked in plain read() and usleep()
// while a plain thread provides the data after 300 ms. It reports how many ticks ran meanwhile.
constexpr const char* kProgram = R"(
#include <fiberio/greenlet.hpp>
#include <fiberio/time.hpp>
#include <sys/socket.h>
#include <unistd.h>
#include <cstdio>
#include <thread>
using namespace std::chrono_literals;
int main() {
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  int ticks = 0;
  bool stop = false;
  auto ticker = fiberio::spawn([&] { while (!stop) { fiberio::sleep(10ms); ++ticks; } });
  fiberio::sleep(1ms);  // the ticker is running
  std::thread writer([&] { std::this_thread::sleep_for(300ms); ::write(sv[1], "k", 1); });
  char c;
  ssize_t n = ::read(sv[0], &c, 1);
  int during_read = ticks;
  ::usleep(200000);
  int during_usleep = ticks - during_read;
  stop = true;
  ticker.join();
  writer.join();
  std::printf("read=%zd ticks_during_read=%d ticks_during_usleep=%d\n", n, during_read, during_usleep);
}
)";

std::vector<std::string> words(const char* list) {
  std::vector<std::string> out;
  std::istringstream ss(list);
  for (std::string w; ss >> w;) out.push_back(w);
  return out;
}

int run(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> env = {}) {
  Child c(argv, log, std::move(env));
  return c.signal_and_wait(0, 60000ms);
}

bool exited_ok(int st) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

int field(const std::string& out, const std::string& name) {
  auto p = out.find(name + "=");
  return p == std::string::npos ? -1 : std::atoi(out.c_str() + p + name.size() + 1);
}

// Compiles `program` (kProgram by default) in a temp dir and links it with `link_inputs` (libraries,
// objects, flags).
// Compiling and linking run in child processes: this fiber just waits.
class Probe {
 public:
  std::string path;
  std::string error;  // the compiler's output if building failed

  explicit Probe(const std::vector<std::string>& link_inputs, const char* program = kProgram) {
    std::string src = dir_.path + "/probe.cpp", obj = dir_.path + "/probe.o", log = dir_.path + "/build.log";
    path = dir_.path + "/probe";
    std::ofstream(src) << program;
    bool ok = exited_ok(run({FIBERIO_CXX, "-std=c++20", "-O1", "-I" FIBERIO_SOURCE_DIR, "-c", src, "-o", obj}, log));
    if (ok) {
      std::vector<std::string> argv{FIBERIO_CXX, obj, "-o", path};
      argv.insert(argv.end(), link_inputs.begin(), link_inputs.end());
      for (auto& d : words(FIBERIO_DEP_FILES)) argv.push_back(d);
      argv.push_back("-pthread");
      argv.push_back("-ldl");
      ok = exited_ok(run(argv, log));
    }
    if (!ok) error = read_file(log);
  }

  // Runs the program with `env` added; returns its output ("" if it failed, with `why` set).
  std::string run_with(std::vector<std::string> env, std::string& why) {
    std::string out = dir_.path + "/out" + std::to_string(runs_++);
    int st = run({path}, out, std::move(env));
    std::string text = read_file(out);
    if (!exited_ok(st)) why = "probe failed (status " + std::to_string(st) + "): " + text;
    return text;
  }

 private:
  TempDir dir_;
  int runs_ = 0;
};

const std::string kPreload = std::string("LD_PRELOAD=") + FIBERIO_PATCHED_SO;
// Set so Child drops an LD_PRELOAD inherited from whoever runs the test.
const std::string kNoPreload = "FIBERIO_TEST_NO_PRELOAD=1";

}  // namespace

TEST(PatchedPreload, PlainlyLinkedProgramBecomesCooperativeOnlyWithThePreload) {
  FIBERIO_WATCHDOG(120);
  if (!FIBERIO_SHARED_BUILD) GTEST_SKIP() << "fiberio is built static (FIBERIO_SHARED=OFF): nothing to link plainly";
  fiberio::ensure_hub();
  // As a user's build links it: -L<dir> -lfiberio, with a run path to find libfiberio.so.
  std::string libdir = std::filesystem::path(FIBERIO_LIB_FILE).parent_path();
  Probe probe({"-L" + libdir, "-lfiberio", "-Wl,-rpath," + libdir});
  ASSERT_TRUE(probe.error.empty()) << probe.error;

  // Without LD_PRELOAD, the program is plain libc: its hub stalls while read() blocks.
  std::string why;
  std::string o0 = probe.run_with({kNoPreload}, why);
  ASSERT_TRUE(why.empty()) << why;
  EXPECT_EQ(field(o0, "read"), 1) << o0;
  EXPECT_EQ(field(o0, "ticks_during_read"), 0) << o0;
  EXPECT_EQ(field(o0, "ticks_during_usleep"), 0) << o0;

  // Preloaded: the shims and the program share libfiberio.so's hub, so the blocking calls overlap the
  // ticker: ~30 ticks during the 300 ms read, ~20 during the 200 ms usleep.
  std::string o1 = probe.run_with({kPreload}, why);
  ASSERT_TRUE(why.empty()) << why;
  EXPECT_EQ(field(o1, "read"), 1) << o1;
  EXPECT_GE(field(o1, "ticks_during_read"), 10) << o1;
  EXPECT_GE(field(o1, "ticks_during_usleep"), 8) << o1;
  EXPECT_EQ(o1.find("fiberio_patched:"), std::string::npos) << "no warning expected: " << o1;
}

TEST(PatchedPreload, ProgramWithItsOwnStaticFiberioGetsAWarningAndPlainLibc) {
  FIBERIO_WATCHDOG(120);
  fiberio::ensure_hub();
  // fiberio's objects linked into the executable, as libfiberio.a would be: a private, unexported copy.
  Probe probe(words(FIBERIO_OBJECT_FILES));
  ASSERT_TRUE(probe.error.empty()) << probe.error;
  std::string why;
  std::string out = probe.run_with({kPreload}, why);
  ASSERT_TRUE(why.empty()) << why;  // no hang, no crash
  EXPECT_NE(out.find("fiberio_patched: this program contains its own static copy of fiberio"), std::string::npos)
      << out;
  EXPECT_EQ(field(out, "read"), 1) << out;
  EXPECT_EQ(field(out, "ticks_during_read"), 0) << out;
}

namespace {
// A program that knows nothing of fiberio: libc calls whose results and errno it prints, line by line.
constexpr const char* kPlainProgram = R"(
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
static void show(const char* what, long r) { printf("%s r=%ld errno=%d\n", what, r, errno); errno = 0; }
int main() {
  char text[] = "line one\nline two\n";
  errno = 0;
  FILE* m = fmemopen(text, sizeof text - 1, "r");
  show("fmemopen+fclose", fclose(m));
  int l = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  bind(l, (sockaddr*)&a, sizeof a);
  listen(l, 4);
  getsockname(l, (sockaddr*)&a, &alen);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  show("connect", connect(c, (sockaddr*)&a, sizeof a));
  show("connect again", connect(c, (sockaddr*)&a, sizeof a));
  int s = accept(l, nullptr, nullptr);
  show("accept>=0", s >= 0);
  show("F_GETFL nonblock", fcntl(s, F_GETFL) & O_NONBLOCK);
  FILE* in = fdopen(s, "r");
  write(c, "hello\nworld\n", 12);
  char line[64];
  show("fgets", fgets(line, sizeof line, in) != nullptr);
  printf("line=%s", line);
  show("fclose socket", fclose(in));
  int p[2];
  show("pipe", pipe(p));
  show("write", write(p[1], "xyz", 3));
  pollfd pf{p[0], POLLIN, 0};
  show("poll", poll(&pf, 1, 10));
  char buf[8];
  show("read", read(p[0], buf, sizeof buf));
  show("poll empty", poll(&pf, 1, 10));
  show("dup2", dup2(p[0], 40) == 40);
  show("close 40", close(40));
  show("close 40 again", close(40));
  pid_t child = vfork();
  if (child == 0) { close(p[0]); _exit(7); }
  int st = 0;
  waitpid(child, &st, 0);
  show("vfork child status", WEXITSTATUS(st));
  show("read after vfork", write(p[1], "q", 1) + read(p[0], buf, 1));
  show("close_range", close_range(p[0], p[1], 0));
  show("closefrom done", (closefrom(l), 0));
  show("close closed", close(c));
}
)";
}  // namespace

// Preloaded into a program that never uses fiberio, the shims are exactly libc: same results, same
// errno, line by line (fclose of a fmemopen stream used to leave errno = EBADF).
TEST(PatchedPreload, ProgramWithoutFiberioBehavesExactlyAsWithoutThePreload) {
  FIBERIO_WATCHDOG(120);
  fiberio::ensure_hub();
  Probe probe({}, kPlainProgram);
  ASSERT_TRUE(probe.error.empty()) << probe.error;
  std::string why;
  std::string plain = probe.run_with({kNoPreload}, why);
  ASSERT_TRUE(why.empty()) << why;
  std::string preloaded = probe.run_with({kPreload}, why);
  ASSERT_TRUE(why.empty()) << why;
  EXPECT_NE(plain.find("fmemopen+fclose r=0 errno=0"), std::string::npos) << plain;
  EXPECT_NE(plain.find("connect again r=-1 errno=106"), std::string::npos) << plain;  // EISCONN
  EXPECT_EQ(preloaded, plain);
}
