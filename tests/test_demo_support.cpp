// Tests of the demos' support library (demos/demo_util.hpp, fiberio_demo_support), in-process: the
// five POSIX server models that benchmarks/RESULTS.md measures (blocking, thread per connection,
// thread pool, process per connection, prefork), each serving concurrent clients with an echo
// handler and stopping promptly on the stop signal with nothing left behind (threads joined,
// children reaped, fds closed); the command-line parser (CLI11 underneath); the request framer.
//
// A model runs on a thread of the test (forking models fork the test process: their children only
// run the handler and _Exit); its stop is a real SIGTERM to the process, as Ctrl+C would be. The
// handlers count how many of them run at once in shared memory (MAP_SHARED, so children count too).
#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "demo_util.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "support/line_client.hpp"
#include "watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;
using fiberio_test::count_fds;

long ms_since(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<Ms>(Clock::now() - t0).count());
}

// Waits (bounded) until pred() holds.
template <class Pred>
bool eventually(Pred pred, Ms limit = 3000ms) {
  for (auto until = Clock::now() + limit; !pred(); std::this_thread::sleep_for(5ms))
    if (Clock::now() > until) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------
// What the handlers report, in memory shared with forked children.
// ---------------------------------------------------------------------------------------------------

struct Counts {
  std::atomic<int> active{0};  // handlers running now
  std::atomic<int> peak{0};    // the most that ever ran at once
  std::atomic<int> served{0};  // handlers that returned
};

class SharedCounts {
 public:
  SharedCounts() {
    void* p = ::mmap(nullptr, sizeof(Counts), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    counts_ = new (p) Counts;
  }
  ~SharedCounts() { ::munmap(counts_, sizeof(Counts)); }
  SharedCounts(const SharedCounts&) = delete;
  SharedCounts& operator=(const SharedCounts&) = delete;
  Counts* operator->() const { return counts_; }
  Counts* get() const { return counts_; }

 private:
  Counts* counts_;
};

// Echoes each line uppercased, with who served it: "<LINE> <pid> <worker>", and ends the connection
// after a line starting with "bye" (so a forked child exits without waiting for its client's EOF,
// which the copies of the test's client sockets in other children would delay). `hold`: the handler
// first waits that long, so that handlers of concurrent clients overlap. `slow_stop`: after a stop it
// takes that long to return, so a model that returned without waiting for it would be caught.
demo::ConnHandler echo_handler(Counts* counts, Ms hold = 0ms, Ms slow_stop = 100ms) {
  return [counts, hold, slow_stop](demo::LineConn& conn, const std::string&, int worker) {
    int now = ++counts->active;
    for (int peak = counts->peak.load(); now > peak && !counts->peak.compare_exchange_weak(peak, now);) {
    }
    if (hold > 0ms) std::this_thread::sleep_for(hold);
    std::string line;
    for (;;) {
      auto st = conn.read_line(line, 1024);
      if (st == demo::LineConn::Status::Stopped) std::this_thread::sleep_for(slow_stop);
      if (st != demo::LineConn::Status::Line) break;
      for (auto& c : line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (!conn.send_all(fmt::format("{} {} {}\n", line, ::getpid(), worker)) || line.starts_with("BYE")) break;
    }
    --counts->active;
    ++counts->served;
  };
}

struct Reply {
  std::string text;
  pid_t pid = 0;
  int worker = -1;
};
std::optional<Reply> parse_reply(const std::optional<std::string>& line) {
  if (!line) return std::nullopt;
  std::istringstream in(*line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.size() < 3) return std::nullopt;
  Reply r;
  r.worker = std::stoi(words.back());
  r.pid = std::stoi(words[words.size() - 2]);
  for (std::size_t i = 0; i + 2 < words.size(); ++i) r.text += (i ? " " : "") + words[i];
  return r;
}

// ---------------------------------------------------------------------------------------------------
// A client with bounded waits.
// ---------------------------------------------------------------------------------------------------

using fiberio_test::LineClient;

// One request and its parsed reply.
std::optional<Reply> ask(LineClient& c, const std::string& line, Ms timeout = 5000ms) {
  if (!c.send(line + "\n")) return std::nullopt;
  return parse_reply(c.read_line(timeout));
}

// ---------------------------------------------------------------------------------------------------
// The process as the tests inspect it.
// ---------------------------------------------------------------------------------------------------

int thread_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

// This process's children and their states ('Z': a zombie, exited but not reaped).
std::map<pid_t, char> children() {
  std::map<pid_t, char> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string stat;
    std::getline(in, stat);
    auto rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(stat.substr(rp + 2));
    char state = '?';
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == ::getpid()) out[std::atoi(e->d_name)] = state;
  }
  ::closedir(d);
  return out;
}
std::set<pid_t> live_children() {
  std::set<pid_t> s;
  for (auto [pid, state] : children())
    if (state != 'Z') s.insert(pid);
  return s;
}
int zombies() {
  int n = 0;
  for (auto [pid, state] : children()) n += state == 'Z';
  return n;
}
// True if this process has no child at all, not even an unreaped one.
bool no_children_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// ---------------------------------------------------------------------------------------------------
// A model serving on a thread of the test, on a free loopback port.
// ---------------------------------------------------------------------------------------------------

class Running {
 public:
  using Serve = std::function<void(int listen_fd, demo::StopSignal& stop)>;
  explicit Running(Serve serve, bool watch_children = false) : stop_(demo::StopSignal::install(watch_children)) {
    stop_.reset();
    stop_.drain_child_pipe();
    listen_fd_ = demo::listen_tcp("127.0.0.1", 0);
    port_ = std::stoi(demo::bound_address(listen_fd_).substr(10));  // "127.0.0.1:PORT"
    fds_ = count_fds();
    threads_ = thread_count();
    thread_ = std::thread([this, serve = std::move(serve), done = std::move(done)]() mutable {
      serve(listen_fd_, stop_);
      done.set_value();
    });
  }
  ~Running() {
    if (thread_.joinable()) stop();
    ::close(listen_fd_);
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  int port() const { return port_; }
  // Open fds and threads when the model started (before its own thread).
  std::size_t fds_before() const { return fds_; }
  int threads_before() const { return threads_; }

  // Ctrl+C: SIGTERM to the process. Returns how long the model took to return, or -1 if it did not
  // within `limit` (then the watchdog ends the hung test).
  long stop(Ms limit = 5000ms) {
    auto t0 = Clock::now();
    ::kill(::getpid(), SIGTERM);
    bool returned = finished_.wait_for(limit) == std::future_status::ready;
    long ms = ms_since(t0);
    thread_.join();
    return returned ? ms : -1;
  }

 private:
  demo::StopSignal& stop_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::size_t fds_ = 0;
  int threads_ = 0;
  std::promise<void> done;
  std::future<void> finished_ = done.get_future();
  std::thread thread_;
};

// `clients` clients at once, each asking "hello <i>" and then "bye <i>" (which ends the connection).
// With hold_until_all, a client says bye only once every client has its hello answered: a server
// that cannot serve them all at once never gets there. Returns each client's replies (empty for a
// client that failed).
std::vector<std::vector<Reply>> many_clients(int port, int clients, bool hold_until_all) {
  std::vector<std::vector<Reply>> replies(static_cast<std::size_t>(clients));
  std::atomic<int> answered{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < clients; ++i) {
    ts.emplace_back([&, i] {
      try {
        LineClient c(port);
        auto hello = ask(c, "hello " + std::to_string(i));
        if (!hello) return;
        ++answered;
        if (hold_until_all && !eventually([&] { return answered.load() == clients; }, 5000ms)) return;
        auto bye = ask(c, "bye " + std::to_string(i));
        if (!bye) return;
        replies[static_cast<std::size_t>(i)] = {*hello, *bye};
      } catch (const std::exception&) {
      }
    });
  }
  for (auto& t : ts) t.join();
  return replies;
}

// Every client got its own two lines back, uppercased.
void expect_echoed(const std::vector<std::vector<Reply>>& replies) {
  for (std::size_t i = 0; i < replies.size(); ++i) {
    ASSERT_EQ(replies[i].size(), 2u) << "client " << i << " was not served";
    EXPECT_EQ(replies[i][0].text, "HELLO " + std::to_string(i));
    EXPECT_EQ(replies[i][1].text, "BYE " + std::to_string(i));
    EXPECT_EQ(replies[i][0].pid, replies[i][1].pid);
    EXPECT_EQ(replies[i][0].worker, replies[i][1].worker);
  }
}

template <class F>
std::set<int> collect(const std::vector<std::vector<Reply>>& replies, F field) {
  std::set<int> s;
  for (auto& r : replies)
    if (!r.empty()) s.insert(static_cast<int>(field(r[0])));
  return s;
}

// Stops the model with `idle` connected and its handler waiting for a line: the model returns
// promptly, the idle client is closed, and no thread, fd or child of the model is left. In a model
// of threads, every handler has returned by then (a forking model's children may instead die of the
// SIGTERM their parent sends them; they must be reaped).
void expect_clean_stop(Running& server, LineClient& idle, Counts* counts, bool forks) {
  // The idle client's handler is running (waiting for its next line) before the stop.
  auto r = ask(idle, "idle");
  ASSERT_TRUE(r) << "the idle client is not being served";
  EXPECT_EQ(r->text, "IDLE");
  int served_before = counts->served.load();
  long ms = server.stop();
  EXPECT_GE(ms, 0) << "the model did not return after the stop";
  EXPECT_LT(ms, 2000) << "the stop took too long";
  EXPECT_TRUE(idle.sees_eof()) << "the idle connection was not closed";
  idle.close();
  if (!forks) {
    EXPECT_EQ(counts->active.load(), 0) << "a handler still ran after the model returned";
    EXPECT_EQ(counts->served.load(), served_before + 1) << "the idle client's handler did not return";
  }
  EXPECT_EQ(thread_count(), server.threads_before()) << "a thread of the model was not joined";
  EXPECT_EQ(count_fds(), server.fds_before()) << "fd leak";
  EXPECT_TRUE(no_children_left()) << "a child process is left (running or unreaped)";
}

// ---------------------------------------------------------------------------------------------------
// The POSIX models
// ---------------------------------------------------------------------------------------------------

TEST(DemoSupport, BlockingServesOneClientAtATime) {
  FIBERIO_WATCHDOG(30);
  SharedCounts counts;
  Running server([&](int fd, demo::StopSignal& stop) { demo::serve_blocking(fd, stop, echo_handler(counts.get())); });
  {
    LineClient a(server.port());
    auto ra = ask(a, "first");
    ASSERT_TRUE(ra);
    EXPECT_EQ(ra->text, "FIRST");
    EXPECT_EQ(ra->pid, ::getpid());
    LineClient b(server.port());  // the kernel completes the handshake, but nobody serves b yet
    ASSERT_TRUE(b.send("second\n"));
    EXPECT_EQ(b.read_line(300ms), std::nullopt) << "the blocking model served a second client at once";
    a.close();
    auto rb = parse_reply(b.read_line());
    ASSERT_TRUE(rb) << "b was not served after a left";
    EXPECT_EQ(rb->text, "SECOND");
  }
  // One after another, every client is served correctly.
  for (int i = 0; i < 5; ++i) expect_echoed(many_clients(server.port(), 1, false));
  auto replies = many_clients(server.port(), 6, false);  // six at once: served in turn
  for (std::size_t i = 0; i < replies.size(); ++i) {
    ASSERT_EQ(replies[i].size(), 2u) << "client " << i;
    EXPECT_EQ(replies[i][0].text, "HELLO " + std::to_string(i));
  }
  EXPECT_EQ(counts->peak.load(), 1) << "two handlers ran at once";
  LineClient idle(server.port());
  expect_clean_stop(server, idle, counts.get(), false);
}

TEST(DemoSupport, ThreadPerConnectionServesClientsConcurrently) {
  FIBERIO_WATCHDOG(30);
  constexpr int kClients = 20;
  SharedCounts counts;
  Running server(
      [&](int fd, demo::StopSignal& stop) { demo::serve_thread_per_connection(fd, stop, echo_handler(counts.get())); });
  auto replies = many_clients(server.port(), kClients, true);
  expect_echoed(replies);
  EXPECT_EQ(counts->peak.load(), kClients) << "every client had its own thread at once";
  EXPECT_EQ(collect(replies, [](const Reply& r) { return r.worker; }).size(), std::size_t{kClients});
  EXPECT_EQ(collect(replies, [](const Reply& r) { return r.pid; }), std::set<int>{::getpid()});
  // The threads of clients that left are gone (only the acceptor is left).
  EXPECT_TRUE(eventually([&] { return thread_count() == server.threads_before() + 1; }))
      << thread_count() - server.threads_before() << " threads";
  LineClient idle(server.port());
  expect_clean_stop(server, idle, counts.get(), false);
}

TEST(DemoSupport, ThreadPoolNeverRunsMoreThanSizeHandlers) {
  FIBERIO_WATCHDOG(30);
  constexpr int kSize = 3;
  SharedCounts counts;
  Running server([&](int fd, demo::StopSignal& stop) {
    demo::serve_threadpool(fd, stop, echo_handler(counts.get(), 50ms), kSize);
  });
  EXPECT_TRUE(eventually([&] { return thread_count() == server.threads_before() + 1 + kSize; }))
      << "the pool is not " << kSize << " threads";
  auto replies = many_clients(server.port(), 4 * kSize, false);
  expect_echoed(replies);
  EXPECT_EQ(counts->peak.load(), kSize) << "at most (and, with 12 clients at once, exactly) " << kSize << " at once";
  EXPECT_EQ(collect(replies, [](const Reply& r) { return r.worker; }), (std::set<int>{0, 1, 2}));
  EXPECT_EQ(thread_count(), server.threads_before() + 1 + kSize) << "the pool grew";
  // Every pool thread busy with an idle client; two more clients wait in the queue, unserved.
  ASSERT_TRUE(eventually([&] { return counts->active.load() == 0; }));
  std::vector<std::unique_ptr<LineClient>> busy;
  for (int i = 0; i < kSize; ++i) busy.push_back(std::make_unique<LineClient>(server.port()));
  ASSERT_TRUE(eventually([&] { return counts->active.load() == kSize; }));
  LineClient queued1(server.port()), queued2(server.port());
  ASSERT_TRUE(queued1.send("waiting\n"));
  EXPECT_EQ(queued1.read_line(300ms), std::nullopt) << "a fourth handler ran";
  EXPECT_EQ(counts->peak.load(), kSize);
  // At the stop the queued connections are closed unserved, the busy ones end, the pool is joined.
  long ms = server.stop();
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 2000);
  EXPECT_TRUE(queued1.sees_eof());
  EXPECT_TRUE(queued2.sees_eof());
  for (auto& c : busy) EXPECT_TRUE(c->sees_eof());
  busy.clear();
  queued1.close();
  queued2.close();
  EXPECT_EQ(counts->active.load(), 0);
  EXPECT_EQ(thread_count(), server.threads_before()) << "a pool thread was not joined";
  EXPECT_EQ(count_fds(), server.fds_before()) << "fd leak (a queued connection not closed?)";
}

TEST(DemoSupport, ProcessPerConnectionForksAChildPerClientAndReapsIt) {
  FIBERIO_WATCHDOG(30);
  constexpr int kClients = 10;
  SharedCounts counts;
  Running server(
      [&](int fd, demo::StopSignal& stop) { demo::serve_process_per_connection(fd, stop, echo_handler(counts.get())); },
      true);
  auto replies = many_clients(server.port(), kClients, true);
  expect_echoed(replies);
  auto pids = collect(replies, [](const Reply& r) { return r.pid; });
  EXPECT_EQ(pids.size(), std::size_t{kClients}) << "one child per client";
  EXPECT_EQ(pids.count(::getpid()), 0u) << "a client was served by the parent";
  EXPECT_EQ(counts->peak.load(), kClients);
  // Each child exits when its client leaves, and the parent reaps it while it goes on serving.
  EXPECT_TRUE(eventually([] { return children().empty(); })) << zombies() << " zombies, "
                                                              << live_children().size() << " children running";
  EXPECT_EQ(count_fds(), server.fds_before()) << "the parent kept a client's fd";
  LineClient idle(server.port());
  expect_clean_stop(server, idle, counts.get(), true);
}

TEST(DemoSupport, PreforkKeepsSizeWorkersAndReplacesOnlyTheOneThatDied) {
  FIBERIO_WATCHDOG(30);
  constexpr int kSize = 3;
  SharedCounts counts;
  Running server(
      [&](int fd, demo::StopSignal& stop) { demo::serve_prefork(fd, stop, echo_handler(counts.get(), 50ms), kSize); },
      true);
  ASSERT_TRUE(eventually([] { return live_children().size() == kSize; })) << live_children().size() << " workers";
  auto workers = live_children();
  auto replies = many_clients(server.port(), 4 * kSize, false);
  expect_echoed(replies);
  EXPECT_EQ(counts->peak.load(), kSize) << "at most (and, with 12 clients at once, exactly) " << kSize << " at once";
  auto pids = collect(replies, [](const Reply& r) { return r.pid; });
  EXPECT_TRUE(std::includes(workers.begin(), workers.end(), pids.begin(), pids.end())) << "served by a non-worker";
  EXPECT_EQ(collect(replies, [](const Reply& r) { return r.worker; }), (std::set<int>{0, 1, 2}));
  // Serving forks nothing and replaces nothing.
  EXPECT_EQ(live_children(), workers);
  EXPECT_EQ(zombies(), 0);
  // A worker that dies is reaped and replaced by exactly one new worker; the others stay.
  pid_t victim = *workers.begin();
  ::kill(victim, SIGKILL);
  EXPECT_TRUE(eventually([&] {
    auto c = children();  // one look: the victim reaped (not even a zombie), and three workers
    return !c.count(victim) && c.size() == kSize;
  }));
  auto now = live_children();
  std::set<pid_t> kept, fresh;
  for (pid_t p : now) (workers.count(p) ? kept : fresh).insert(p);
  EXPECT_EQ(kept.size(), std::size_t{kSize - 1}) << "a live worker was replaced";
  EXPECT_EQ(fresh.size(), 1u);
  EXPECT_EQ(zombies(), 0) << "the dead worker was not reaped";
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(live_children(), now) << "workers keep being replaced";
  auto again = many_clients(server.port(), 2 * kSize, false);
  expect_echoed(again);
  auto pids2 = collect(again, [](const Reply& r) { return r.pid; });
  EXPECT_TRUE(std::includes(now.begin(), now.end(), pids2.begin(), pids2.end()));
  EXPECT_EQ(count_fds(), server.fds_before()) << "the parent holds a client's fd";
  LineClient idle(server.port());
  expect_clean_stop(server, idle, counts.get(), true);
}

// A handler that throws costs its own connection only.
TEST(DemoSupport, AThrowingHandlerClosesItsConnectionOnly) {
  FIBERIO_WATCHDOG(30);
  SharedCounts counts;
  auto echo = echo_handler(counts.get());
  Running server([&](int fd, demo::StopSignal& stop) {
    demo::serve_thread_per_connection(fd, stop, [&](demo::LineConn& conn, const std::string& peer, int worker) {
      std::string line;
      if (conn.read_line(line, 1024) == demo::LineConn::Status::Line && line == "throw")
        throw std::runtime_error("as asked");
      conn.send_all("ready\n");
      echo(conn, peer, worker);
    });
  });
  LineClient bad(server.port());
  ASSERT_TRUE(bad.send("throw\n"));
  EXPECT_TRUE(bad.sees_eof());
  bad.close();
  LineClient good(server.port());
  ASSERT_TRUE(good.send("hi\n"));
  EXPECT_EQ(good.read_line(), "ready");
  auto r = ask(good, "still here");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->text, "STILL HERE");
  expect_clean_stop(server, good, counts.get(), false);
}

// ---------------------------------------------------------------------------------------------------
// demo::Cli
// ---------------------------------------------------------------------------------------------------

std::vector<demo::Option> options() {
  return {
      {"port", 'p', "PORT", "port to listen on"},
      {"line", 'l', "TEXT", "a request line (repeatable)"},
      {"model", 'm', "a|b", "model"},
      {"quiet", 'q', "", "say less"},
      {"delta", 0, "N", "a signed number"},
  };
}

// Parses args (after the program name) with a Cli of options().
demo::Cli parsed(std::vector<std::string> args) {
  demo::Cli cli("prog", "A test program.", options());
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  cli.parse(static_cast<int>(args.size()), argv.data());
  return cli;
}

// An extended regular expression matching `text` literally.
std::string literally(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::strchr("\\^$.|?*+()[]{}", c)) out += '\\';
    out += c;
  }
  return out;
}

// The end of every command-line error: the same line says where the usage is, and nothing follows.
const std::string kOneLineTail = literally(" (prog --help shows the usage)") + "\n$";

// Death tests re-execute the test binary instead of fork()ing a process with threads.
void use_threadsafe_death_tests() {
#ifdef GTEST_FLAG_SET
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
}

TEST(DemoCli, ParsesEveryForm) {
  auto cli = parsed({"--port=1", "--line", "a", "-l", "b", "-lc", "-q", "--delta", "-5", "-m", "b", "--line=d e"});
  EXPECT_EQ(cli.get("port", ""), "1");
  EXPECT_EQ(cli.get_int("port", 0, 0, 65535), 1);
  EXPECT_EQ(cli.get_all("line"), (std::vector<std::string>{"a", "b", "c", "d e"}));
  EXPECT_EQ(cli.get("line", ""), "d e") << "the last one";
  EXPECT_TRUE(cli.has("quiet"));
  EXPECT_EQ(cli.get_int("delta", 0, -10, 10), -5);
  EXPECT_EQ(cli.get_choice("model", "a", {"a", "b"}), "b");

  auto none = parsed({});
  EXPECT_FALSE(none.has("port"));
  EXPECT_FALSE(none.has("quiet"));
  EXPECT_EQ(none.get("port", "dflt"), "dflt");
  EXPECT_EQ(none.get_int("port", 25000, 0, 65535), 25000);
  EXPECT_TRUE(none.get_all("line").empty());
  EXPECT_EQ(none.get_choice("model", "a", {"a", "b"}), "a");

  auto repeated = parsed({"-p", "1", "--port", "2", "-q", "-q"});
  EXPECT_EQ(repeated.get_int("port", 0, 0, 9), 2);
  EXPECT_EQ(repeated.get_all("port"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(repeated.get_all("quiet").size(), 2u);
  // A value that looks like an option is still the value of the option before it.
  EXPECT_EQ(parsed({"--line", "--quiet"}).get_all("line"), (std::vector<std::string>{"--quiet"}));
  EXPECT_FALSE(parsed({"--line", "--quiet"}).has("quiet"));
}

// A demo may give -h to an option of its own; --help stays.
TEST(DemoCli, AnOptionOfItsOwnMayTakeDashH) {
  demo::Cli cli("prog", "A test program.", {{"host", 'h', "HOST", "server host"}});
  std::vector<std::string> args{"prog", "-h", "example.org"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  cli.parse(3, argv.data());
  EXPECT_EQ(cli.get("host", ""), "example.org");
  EXPECT_NE(cli.usage().find("\n      --help       show this help and exit\n"), std::string::npos) << cli.usage();
}

TEST(DemoCli, HelpPrintsTheUsageOnStdoutAndExitsZero) {
  for (std::string flag : {"--help", "-h"}) {
    SCOPED_TRACE(flag);
    auto r = fiberio_test::run_child([&] {
      parsed({"--port", "1", flag, "--no-such-option"});
      return 3;  // not reached: --help exits
    });
    ASSERT_TRUE(r.exited_ok()) << r.describe();
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out,
              "usage: prog [--port PORT] [--line TEXT] [--model a|b] [--quiet] [--delta N]\n"
              "A test program.\n"
              "\n"
              "options:\n"
              "  -p, --port PORT  port to listen on\n"
              "  -l, --line TEXT  a request line (repeatable)\n"
              "  -m, --model a|b  model\n"
              "  -q, --quiet      say less\n"
              "      --delta N    a signed number\n"
              "  -h, --help       show this help and exit\n");
  }
}

TEST(DemoCli, BadCommandLinesExitTwoWithOneLineSayingWhat) {
  use_threadsafe_death_tests();
  struct Bad {
    std::vector<std::string> args;
    std::string says;
  };
  for (const auto& b : std::vector<Bad>{
           {{"--no-such-option"}, "unknown option '--no-such-option'"},
           {{"--no-such=3"}, "unknown option '--no-such'"},
           {{"-x"}, "unknown option '-x'"},
           {{"-p", "1", "stray"}, "unexpected argument 'stray'"},
           {{"--port"}, "option '--port' needs a value (PORT)"},
           {{"-l", "a", "-p"}, "option '--port' needs a value (PORT)"},
           {{"--quiet=yes"}, "option '--quiet' takes no value"},
       }) {
    std::string cmd;
    for (auto& a : b.args) cmd += " " + a;
    SCOPED_TRACE(cmd);
    EXPECT_EXIT(parsed(b.args), ::testing::ExitedWithCode(2),
                "^prog: error: " + literally(b.says) + kOneLineTail);
  }
}

TEST(DemoCli, BadValuesExitTwoWithOneLineSayingWhat) {
  use_threadsafe_death_tests();
  EXPECT_EXIT(parsed({"--port", "http"}).get_int("port", 0, 0, 65535), ::testing::ExitedWithCode(2),
              "^prog: error: " + literally("--port must be an integer in [0, 65535], got 'http'") + kOneLineTail);
  EXPECT_EXIT(parsed({"--port=70000"}).get_int("port", 0, 0, 65535), ::testing::ExitedWithCode(2),
              literally("--port must be an integer in [0, 65535], got '70000'"));
  EXPECT_EXIT(parsed({"--port=12 "}).get_int("port", 0, 0, 65535), ::testing::ExitedWithCode(2),
              literally("got '12 '"));
  EXPECT_EXIT(parsed({"--port="}).get_int("port", 0, 0, 65535), ::testing::ExitedWithCode(2), "error");
  EXPECT_EXIT(parsed({"--port", "99999999999999999999999"}).get_int("port", 0, 0, 65535),
              ::testing::ExitedWithCode(2), "must be an integer");
  EXPECT_EXIT(parsed({"-m", "c"}).get_choice("model", "a", {"a", "b"}), ::testing::ExitedWithCode(2),
              "^prog: error: " + literally("--model must be one of a|b, got 'c'") + kOneLineTail);
  EXPECT_EXIT(parsed({}).fail("--port is required"), ::testing::ExitedWithCode(2),
              "^prog: error: --port is required" + kOneLineTail);
}

TEST(DemoCli, ParseLongIsStrict) {
  EXPECT_EQ(demo::Cli::parse_long("42"), 42);
  EXPECT_EQ(demo::Cli::parse_long("-7"), -7);
  for (const char* bad : {"", " 1", "1 ", "1x", "0x10", "+", "99999999999999999999"})
    EXPECT_EQ(demo::Cli::parse_long(bad), std::nullopt) << "'" << bad << "'";
}

// ---------------------------------------------------------------------------------------------------
// demo::RequestFramer
// ---------------------------------------------------------------------------------------------------

std::vector<std::string> drain(demo::RequestFramer& f) {
  std::vector<std::string> out;
  while (auto r = f.next()) out.push_back(r->too_long ? "<too long>" : r->text + (r->terminated ? "\\n" : ""));
  return out;
}
using Texts = std::vector<std::string>;

TEST(RequestFramer, LinesWithOrWithoutCarriageReturnsSeveralPerRead) {
  demo::RequestFramer f;
  f.configure(100, false);
  f.feed("one\r\ntwo\n\nthr");
  EXPECT_EQ(drain(f), (Texts{"one\\n", "two\\n", "\\n"}));
  f.feed("ee\n");
  EXPECT_EQ(drain(f), (Texts{"three\\n"}));
  EXPECT_EQ(f.finish(), std::nullopt);
}

TEST(RequestFramer, AShortReadWithoutNewlineIsARequestOnlyWithLoneReads) {
  demo::RequestFramer lone;
  lone.configure(1024, true);
  lone.feed("hello");  // seed 004's client: no newline, waits for the reply
  EXPECT_EQ(drain(lone), (Texts{"hello"}));
  lone.feed("1");  // seed 000's meter
  EXPECT_EQ(drain(lone), (Texts{"1"}));
  lone.feed("a\nb");  // a read with a newline: lines; its unterminated rest waits for more
  EXPECT_EQ(drain(lone), (Texts{"a\\n"}));
  lone.feed("c\n");
  EXPECT_EQ(drain(lone), (Texts{"bc\\n"}));

  demo::RequestFramer lines;
  lines.configure(1024, false);
  lines.feed("hello");
  EXPECT_EQ(drain(lines), Texts{});
  lines.feed(" world\n");
  EXPECT_EQ(drain(lines), (Texts{"hello world\\n"}));
}

TEST(RequestFramer, ALongLineInPiecesStaysOneLine) {
  demo::RequestFramer f;
  f.configure(1024, true);
  std::string first(demo::RequestFramer::kLoneMax + 1, 'x');  // longer than a lone message: a first piece
  f.feed(first);
  EXPECT_EQ(drain(f), Texts{});
  f.feed("yy");  // not at the start of a request: not lone either
  EXPECT_EQ(drain(f), Texts{});
  f.feed("z\n");
  EXPECT_EQ(drain(f), (Texts{first + "yyz\\n"}));
}

TEST(RequestFramer, OverLongLinesAreSkippedAndReportedThenFramingGoesOn) {
  demo::RequestFramer f;
  f.configure(10, true);
  f.feed("12345678901\nok\n");  // 11 bytes before the newline
  EXPECT_EQ(drain(f), (Texts{"<too long>", "ok\\n"}));
  f.feed(std::string(200, 'a'));  // no newline yet: dropped as it comes (bounded memory)
  EXPECT_EQ(drain(f), Texts{});
  f.feed(std::string(5000, 'a'));
  EXPECT_EQ(drain(f), Texts{});
  f.feed("aaa\nnext\n");
  EXPECT_EQ(drain(f), (Texts{"<too long>", "next\\n"}));
  f.feed("1234567890\n");  // exactly the limit
  EXPECT_EQ(drain(f), (Texts{"1234567890\\n"}));
  // Still skipping at EOF: reported once.
  f.feed(std::string(300, 'b'));
  EXPECT_EQ(drain(f), Texts{});
  auto last = f.finish();
  ASSERT_TRUE(last);
  EXPECT_TRUE(last->too_long);
  EXPECT_EQ(f.finish(), std::nullopt);
}

TEST(RequestFramer, AtEofTheUnterminatedLastLineIsARequest) {
  demo::RequestFramer f;
  f.configure(1024, false);
  f.feed("10\n20");
  EXPECT_EQ(drain(f), (Texts{"10\\n"}));
  auto last = f.finish();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->text, "20");
  EXPECT_FALSE(last->terminated);
  EXPECT_FALSE(last->too_long);
  EXPECT_EQ(f.finish(), std::nullopt);
}

}  // namespace
