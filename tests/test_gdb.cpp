// scripts/fiberio-gdb.py: gdb in batch mode attached to tests/gdb_target (greenlets parked in a sleep,
// an Event wait and a socket recv on the main thread, one more on a second thread), and on a core file
// of it: `info greenlets` lists each with its id, name, state and what it waits on, and `greenlet bt N`
// shows the function it parked in; afterwards the thread's own stack is back; an unknown id gets an
// error that says so. Skipped, with the reason, where gdb is missing or may not attach, and in
// ucontext (sanitizer) builds.
#include <fiberio/fiberio.hpp>
#include <fiberio/subprocess.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
namespace sp = fiberio::subprocess;

namespace {

const std::string kScript = FIBERIO_SOURCE_DIR "/scripts/fiberio-gdb.py";

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// The line of `info greenlets` about greenlet id.
std::string line_of(const std::string& out, std::uint64_t id) {
  auto at = out.find("  Greenlet " + std::to_string(id) + " ");
  if (at == std::string::npos) return {};
  return out.substr(at, out.find('\n', at) - at);
}

// The output of one `greenlet bt` (up to the next command's output, marked by "=== ").
std::string section(const std::string& out, const std::string& marker) {
  auto at = out.find("=== " + marker);
  if (at == std::string::npos) return {};
  auto end = out.find("=== ", at + 4);
  return out.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// gdb_target, started and stopped by the test: its greenlet ids once it printed "ready".
struct Target {
  sp::Popen proc{{FIBERIO_GDB_TARGET}, {.in = sp::Stdio::Pipe, .out = sp::Stdio::Pipe}};
  std::vector<std::uint64_t> ids;  // sleeper, event waiter, reader, the other thread's sleeper
  Target() {
    std::string text;
    char buf[256];
    while (!contains(text, "\n")) {
      auto n = proc.out().read_some(buf, sizeof buf, 20s);
      if (n == 0) throw std::runtime_error("gdb_target exited before it was ready: " + text);
      text.append(buf, n);
    }
    std::istringstream in(text);
    std::string word;
    in >> word;
    if (word != "ready") throw std::runtime_error("gdb_target said: " + text);
    for (std::uint64_t id; in >> id;) ids.push_back(id);
    if (ids.size() != 4) throw std::runtime_error("gdb_target said: " + text);
  }
  ~Target() {
    proc.in().close();  // it returns from main
    try {
      proc.wait(10s);
    } catch (...) {
    }
  }
};

std::vector<std::string> gdb_args(const std::vector<std::string>& how, const std::vector<std::uint64_t>& ids) {
  std::vector<std::string> argv{"gdb", "-batch", "-nx"};
  argv.insert(argv.end(), how.begin(), how.end());
  for (auto& a : std::vector<std::string>{"-x", kScript, "-ex", "info greenlets"}) argv.push_back(a);
  for (auto id : ids) {
    argv.push_back("-ex");
    argv.push_back("echo === bt " + std::to_string(id) + "\\n");
    argv.push_back("-ex");
    argv.push_back("greenlet bt " + std::to_string(id));
  }
  // bt's own options pass through: a frame count counts the greenlet's frames.
  for (auto& a : std::vector<std::string>{"-ex", "echo === first 3\\n", "-ex",
                                          "greenlet bt " + std::to_string(ids[0]) + " 3"})
    argv.push_back(a);
  if (ids.size() > 2)  // the reader's frames with their locals (bt full)
    for (auto& a : std::vector<std::string>{"-ex", "echo === full\\n", "-ex",
                                            "greenlet bt " + std::to_string(ids[2]) + " full 3"})
      argv.push_back(a);
  return argv;
}

sp::CompletedProcess run_gdb(std::vector<std::string> argv) {
  return sp::run(std::move(argv), {.out = sp::Stdio::Pipe, .err = sp::Stdio::Stdout, .timeout = 100s});
}

// Skips the test (with the reason) if gdb is missing or cannot attach to a child here.
#define SKIP_UNLESS_GDB_CAN_ATTACH(target)                                                                   \
  do {                                                                                                       \
    if (fiberio_test::find_program("gdb").empty()) GTEST_SKIP() << "gdb is not installed (scripts/setup.sh)"; \
    auto probe = run_gdb({"gdb", "-batch", "-nx", "-p", std::to_string((target).proc.pid()), "-ex",           \
                          "info threads"});                                                                  \
    if (!contains(probe.out, "gdb_target") && !contains(probe.out, "read"))                                   \
      GTEST_SKIP() << "gdb cannot attach here (ptrace_scope "                                                 \
                   << fiberio_test::read_file("/proc/sys/kernel/yama/ptrace_scope") << "): " << probe.out;    \
  } while (0)

// What both tests check, on a live process or its core.
void expect_greenlets_and_stacks(const std::string& out, const std::vector<std::uint64_t>& ids) {
  const char* names[] = {"gdb-sleeper", "gdb-event-waiter", "gdb-reader", "gdb-other-thread"};
  const char* waits[] = {"on sleep", "on fiberio::Event 0x", "on read fd ", "on sleep"};
  const char* frames[] = {"gdb_target_sleeping", "gdb_target_waiting_for_event", "gdb_target_receiving",
                          "gdb_target_sleeping"};
  for (int i = 0; i < 4; ++i) {
    auto line = line_of(out, ids[i]);
    SCOPED_TRACE(out);
    EXPECT_TRUE(contains(line, std::string("\"") + names[i] + "\" parked " + waits[i])) << line;
    // The thread's main fiber spawned each: in main() (the first three) or in the second thread's function.
    EXPECT_TRUE(contains(line, i < 3 ? "spawned by the main fiber in main()" : "spawned by the main fiber in "))
        << line;
    // gdb's own unwinder walks the greenlet's stack from its saved registers, in a core file too:
    // frame #0 is where it switched out (Boost.Fiber's resume), then fiberio's park, then its body.
    auto bt = section(out, "bt " + std::to_string(ids[i]));
    auto resume = bt.find("#0  0x"), park = bt.find("park_on"), body = bt.find(frames[i]);
    EXPECT_NE(resume, std::string::npos) << bt;
    EXPECT_TRUE(contains(bt.substr(resume, bt.find('\n', resume) - resume), "boost::fibers::context::resume")) << bt;
    EXPECT_NE(body, std::string::npos) << bt;
    EXPECT_TRUE(resume < park && park < body) << bt;
    EXPECT_FALSE(contains(bt, "block_in_read")) << bt;  // none of the thread's own frames
  }
  // Locals come from the greenlet's own frames: park_on's Waiter says what the reader waits for.
  auto full = section(out, "full");
  EXPECT_TRUE(contains(full, "kWaitRead")) << full;
  auto first3 = section(out, "first 3");
  EXPECT_TRUE(contains(first3, "\n#2 ")) << first3;
  EXPECT_FALSE(contains(first3, "\n#3 ")) << first3;
  // Two threads, with three greenlets and one.
  EXPECT_TRUE(contains(out, ": 3 greenlet(s)")) << out;
  EXPECT_TRUE(contains(out, ": 1 greenlet(s)")) << out;
}

// The script reads the assembly fcontext backend's saved registers (tests/sanitizers.txt).
#ifdef BOOST_USE_UCONTEXT
#define SKIP_IN_UCONTEXT_BUILDS() GTEST_SKIP() << "built with Boost.Context's ucontext backend (a sanitizer build)"
#else
#define SKIP_IN_UCONTEXT_BUILDS() (void)0
#endif

TEST(Gdb, ListsGreenletsAndTheirStacksInALiveProcess) {
  FIBERIO_WATCHDOG(120);
  SKIP_IN_UCONTEXT_BUILDS();
  Target target;
  SKIP_UNLESS_GDB_CAN_ATTACH(target);
  auto argv = gdb_args({"-p", std::to_string(target.proc.pid())}, target.ids);
  for (const char* a : {"-ex", "echo === thread 1\\n", "-ex", "thread 1", "-ex", "bt"}) argv.push_back(a);
  auto r = run_gdb(argv);
  expect_greenlets_and_stacks(r.out, target.ids);
  // `greenlet bt` put the threads' own registers back: gdb sees the main thread in its read() again,
  // and the process runs on after gdb detaches (a second attach finds it as before).
  EXPECT_TRUE(contains(section(r.out, "thread 1"), "block_in_read")) << r.out;
  auto again = run_gdb(gdb_args({"-p", std::to_string(target.proc.pid())}, {target.ids[0]}));
  EXPECT_TRUE(contains(section(again.out, "bt " + std::to_string(target.ids[0])), "gdb_target_sleeping"))
      << again.out;
}

TEST(Gdb, ListsGreenletsAndTheirStacksInACoreFile) {
  FIBERIO_WATCHDOG(120);
  SKIP_IN_UCONTEXT_BUILDS();
  Target target;
  SKIP_UNLESS_GDB_CAN_ATTACH(target);
  fiberio_test::TempDir dir;
  auto core = dir.path + "/gdb_target.core";
  auto made = run_gdb({"gdb", "-batch", "-nx", "-p", std::to_string(target.proc.pid()), "-ex",
                       "generate-core-file " + core});
  ASSERT_TRUE(std::ifstream(core).good()) << made.out;
  auto r = run_gdb(gdb_args({FIBERIO_GDB_TARGET, core}, target.ids));
  expect_greenlets_and_stacks(r.out, target.ids);
}

TEST(Gdb, SaysWhenNoLiveGreenletHasTheId) {
  FIBERIO_WATCHDOG(120);
  Target target;
  SKIP_UNLESS_GDB_CAN_ATTACH(target);
  auto r = run_gdb({"gdb", "-batch", "-nx", "-p", std::to_string(target.proc.pid()), "-x", kScript, "-ex",
                    "greenlet bt 999999"});
  EXPECT_TRUE(contains(r.out, "no live greenlet with id 999999")) << r.out;
}

}  // namespace
