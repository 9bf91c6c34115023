// The two shim demos, run as their own processes: blocking_echo_server holds 200 concurrent clients
// (which only a concurrent server can: nobody hangs up until everyone has had an answer) and stops on
// Ctrl+C; sleep_stall prints measurements that show the stall and its absence.
#include <map>
#include <regex>
#include <sstream>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {
std::string demo(const char* name) {
  std::string path = std::string(FIBERIO_BINARY_DIR) + "/demos/" + name;
  if (::access(path.c_str(), X_OK) != 0)
    throw std::runtime_error(path + " is missing: build the demos (FIBERIO_BUILD_DEMOS=ON)");
  return path;
}
}  // namespace

TEST(PatchedDemos, BlockingEchoServerServes200ConcurrentClientsAndStopsOnCtrlC) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  TempDir dir;
  std::string log = dir.path + "/server.log";
  int port = free_port();
  Child server({demo("blocking_echo_server"), "--port", std::to_string(port)}, log);
  ASSERT_TRUE(wait_for_port(port, 5000ms)) << read_file(log);

  constexpr int kClients = 200;
  int connected = 0, echoed = 0;
  fiberio::Event all_connected, all_echoed;
  auto client = [&](int i) -> std::string {
    int fd = connect_to(port);
    if (fd < 0) return "connect failed";
    timeval tv{10, 0};  // a server that stopped answering fails the test instead of hanging it
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (++connected == kClients) all_connected.set();
    std::string err;
    if (!all_connected.wait(15s)) err = "not everyone could connect";
    std::string msg = "client " + std::to_string(i) + " says " + std::string(static_cast<size_t>(i % 50), '*') + "\n";
    if (err.empty() && ::write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) err = "write failed";
    std::string got;
    char buf[512];
    while (err.empty() && got.size() < msg.size()) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) {
        err = "no echo (" + std::string(n == 0 ? "EOF" : std::strerror(errno)) + ")";
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    if (err.empty() && got != msg) err = "wrong echo: " + got;
    // Hold the connection until every client has its echo: a one-at-a-time server never gets here.
    if (++echoed == kClients) all_echoed.set();
    if (err.empty() && !all_echoed.wait(15s)) err = "not everyone got an echo";
    ::close(fd);
    return err;
  };
  auto t0 = Clock::now();
  std::vector<fiberio::Greenlet<std::string>> gs;
  for (int i = 0; i < kClients; ++i) gs.push_back(fiberio::spawn(client, i));
  int ok = 0;
  for (int i = 0; i < kClients; ++i) {
    std::string err = gs[i].get();
    EXPECT_EQ(err, "") << "client " << i;
    ok += err.empty();
  }
  EXPECT_EQ(ok, kClients);
  EXPECT_LT(ms_since(t0), 10000);

  int st = server.signal_and_wait(SIGINT, 5000ms);
  ASSERT_NE(st, -1) << "the server did not stop on SIGINT";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  std::string out = read_file(log);
  EXPECT_NE(out.find("(libc shims active)"), std::string::npos) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("served (\\d+) connections"))) << out;
  EXPECT_GE(std::stoi(m[1]), kClients);  // plus wait_for_port's probe

  // Bad arguments: one line saying what, and exit code 2.
  std::string log2 = dir.path + "/usage.log";
  Child bad({demo("blocking_echo_server"), "--port", "notaport"}, log2);
  int st2 = bad.signal_and_wait(0, 5000ms);
  EXPECT_TRUE(WIFEXITED(st2) && WEXITSTATUS(st2) == 2);
  EXPECT_EQ(read_file(log2), "blocking_echo_server: error: --port must be an integer in [0, 65535], got 'notaport' "
                            "(blocking_echo_server --help shows the usage)\n");
}

// --port 0: the kernel picks the port, and the listening line names it (it used to say port 0).
TEST(PatchedDemos, BlockingEchoServerOnPortZeroPrintsTheRealPort) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  TempDir dir;
  std::string log = dir.path + "/server.log";
  Child server({demo("blocking_echo_server"), "--port", "0"}, log);
  int port = 0;
  for (int i = 0; i < 500 && port == 0; ++i) {
    auto text = read_file(log);
    auto at = text.find("listening on 127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(text.c_str() + at + 23);
    if (port == 0) fiberio::sleep(10ms);
  }
  ASSERT_GT(port, 0) << read_file(log);
  int fd = connect_to(port);
  ASSERT_GE(fd, 0) << "nothing listens on the printed port " << port;
  ASSERT_EQ(::write(fd, "ping\n", 5), 5);
  char buf[8] = {};
  EXPECT_EQ(::read(fd, buf, sizeof buf), 5);
  EXPECT_STREQ(buf, "ping\n");
  ::close(fd);
  EXPECT_NE(server.signal_and_wait(SIGINT, 5000ms), -1);
}

namespace {
// Runs sleep_stall with `args` to its end; its stdout and stderr. Fails the test unless it exits 0.
std::string run_sleep_stall(std::vector<std::string> args) {
  fiberio::ensure_hub();
  TempDir dir;
  std::string log = dir.path + "/out";
  args.insert(args.begin(), demo("sleep_stall"));
  Child run(args, log);
  int st = run.signal_and_wait(0, 30000ms);
  std::string out = read_file(log);
  EXPECT_NE(st, -1) << "sleep_stall did not finish";
  EXPECT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) << out;
  return out;
}
}  // namespace

TEST(PatchedDemos, SleepStallShowsTheStallAndItsCure) {
  FIBERIO_WATCHDOG(60);
  std::string out = run_sleep_stall({});
  std::map<std::string, std::pair<double, std::string>> rows;  // run -> (worst gap, verdict)
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::vector<std::string> tok;
    for (std::string t; ls >> t;) tok.push_back(t);
    if (tok.size() < 6 || (tok.back() != "ok" && tok.back() != "STALLED")) continue;
    double worst = 0;
    for (size_t i = tok.size() - 5; i < tok.size() - 1; ++i) worst = std::max(worst, std::stod(tok[i]));
    rows[tok[0]] = {worst, tok.back()};
  }
  ASSERT_EQ(rows.size(), 5u) << out;
  // The numbers themselves, not just the verdicts: a 1 s sleep either shows up as a ~1 s gap or not.
  EXPECT_GE(rows["unpatched"].first, 900);
  EXPECT_GE(rows["bypasses-libc"].first, 900);
  EXPECT_LT(rows["fiberio"].first, 300);
  EXPECT_LT(rows["patched"].first, 300);
  EXPECT_LT(rows["bound-before-patching"].first, 300);
  EXPECT_EQ(rows["unpatched"].second, "STALLED");
  EXPECT_EQ(rows["patched"].second, "ok");
}

// Issue 11 part 1 on the demo: with the monitor on, each stalled run is reported once, naming the
// greenlet, where it was spawned, and the blocking call in its stack; then the stall's length.
TEST(PatchedDemos, SleepStallWithTheMonitorReportsEachStall) {
  FIBERIO_WATCHDOG(60);
  std::string out = run_sleep_stall({"--monitor", "100"});
  // One report per stalled run, in order: its first line, then its stack up to the next report.
  std::vector<std::string> reports;
  for (std::size_t at = 0; (at = out.find("fiberio: hub on thread", at)) != std::string::npos; ++at)
    reports.push_back(out.substr(at, out.find("fiberio: stall on thread", at) - at));
  ASSERT_EQ(reports.size(), 3u) << out;  // unpatched, bypasses-libc, cpu-loop; nothing for the cured runs
  const char* const expected[][2] = {{"greenlet sleeper(unpatched)", " sleep at "},
                                     {"greenlet sleeper(bypasses-libc)", "third_party::nap_raw()"},
                                     {"greenlet sleeper(cpu-loop)", "third_party::fib(int)"}};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NE(reports[i].find(expected[i][0]), std::string::npos) << reports[i];
    EXPECT_NE(reports[i].find("spawned at "), std::string::npos) << reports[i];
    EXPECT_NE(reports[i].find("demos/sleep_stall.cpp:"), std::string::npos) << reports[i];
    EXPECT_NE(reports[i].find(expected[i][1]), std::string::npos) << reports[i];
  }
  std::size_t ended = 0;
  for (std::size_t at = 0; (at = out.find(") ended after ", at)) != std::string::npos; ++at) ++ended;
  EXPECT_EQ(ended, 3u) << out;
}
