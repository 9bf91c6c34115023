// LD_PRELOAD=libfiberio_patched.so into a program that links fiberio but knows nothing of the shims.
// The test builds such a program the way a user would (same compiler, libfiberio, no fiberio::patched)
// twice: linked with -rdynamic, the preloaded shims find the program's hub and its blocking read()
// and usleep() become cooperative; linked plainly (fiberio's symbols hidden), the shims cannot reach
// its hub, say so on stderr, and the program runs as plain libc.
#include "test_patched_support.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

// The program under test: a ticker greenlet, and the main fiber blocked in plain read() and usleep()
// while a plain thread provides the data after 300 ms. It reports how many ticks ran meanwhile.
constexpr const char* kProgram = R"(
#include <fiberio/fiberio.hpp>
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

int run(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> env = {}) {
  Child c(argv, log, std::move(env));
  return c.signal_and_wait(0, 60000ms);
}

bool exited_ok(int st) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

int field(const std::string& out, const std::string& name) {
  auto p = out.find(name + "=");
  return p == std::string::npos ? -1 : std::atoi(out.c_str() + p + name.size() + 1);
}

}  // namespace

TEST(PatchedPreload, PreloadedShimsMakeAFiberioProgramCooperative) {
  FIBERIO_WATCHDOG(120);
  fiberio::detail::Hub::current();
  TempDir dir;
  std::string src = dir.path + "/probe.cpp", obj = dir.path + "/probe.o";
  {
    std::ofstream(src) << kProgram;
  }
  std::string log = dir.path + "/build.log";
  // Compiling runs in a child process: this fiber just waits.
  ASSERT_TRUE(exited_ok(run({FIBERIO_CXX, "-std=c++20", "-O1", "-I" FIBERIO_SOURCE_DIR, "-c", src, "-o", obj}, log)))
      << read_file(log);
  std::vector<std::string> deps;
  {
    std::istringstream ss(FIBERIO_DEP_FILES);
    for (std::string d; ss >> d;) deps.push_back(d);
  }
  auto link = [&](const std::string& out, bool exported) {
    std::vector<std::string> argv{FIBERIO_CXX, obj, "-o", out};
    if (exported) argv.push_back("-rdynamic");
    argv.push_back(FIBERIO_LIB_FILE);
    argv.insert(argv.end(), deps.begin(), deps.end());
    argv.push_back("-pthread");
    argv.push_back("-ldl");
    return exited_ok(run(argv, log));
  };
  std::string exported = dir.path + "/probe_exported", hidden = dir.path + "/probe_hidden";
  ASSERT_TRUE(link(exported, true)) << read_file(log);
  ASSERT_TRUE(link(hidden, false)) << read_file(log);
  std::string preload = std::string("LD_PRELOAD=") + FIBERIO_PATCHED_SO;

  // Without LD_PRELOAD, the program is plain libc: its hub stalls while read() blocks.
  std::string out0 = dir.path + "/out0";
  ASSERT_TRUE(exited_ok(run({exported}, out0, {"FIBERIO_UNUSED=1"}))) << read_file(out0);
  EXPECT_EQ(field(read_file(out0), "read"), 1);
  EXPECT_EQ(field(read_file(out0), "ticks_during_read"), 0) << read_file(out0);

  // Preloaded into the program that exports its symbols: cooperative.
  std::string out1 = dir.path + "/out1";
  ASSERT_TRUE(exited_ok(run({exported}, out1, {preload}))) << read_file(out1);
  std::string o1 = read_file(out1);
  EXPECT_EQ(field(o1, "read"), 1);
  EXPECT_GE(field(o1, "ticks_during_read"), 10) << o1;
  EXPECT_GE(field(o1, "ticks_during_usleep"), 8) << o1;
  EXPECT_EQ(o1.find("fiberio_patched:"), std::string::npos) << o1;

  // Preloaded into the program that hides them: a clear warning, then plain libc (no hang, no crash).
  std::string out2 = dir.path + "/out2";
  ASSERT_TRUE(exited_ok(run({hidden}, out2, {preload}))) << read_file(out2);
  std::string o2 = read_file(out2);
  EXPECT_NE(o2.find("fiberio_patched: this program contains its own copy of fiberio"), std::string::npos) << o2;
  EXPECT_EQ(field(o2, "read"), 1);
  EXPECT_EQ(field(o2, "ticks_during_read"), 0) << o2;
}
