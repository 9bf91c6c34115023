// echo_server: seed 004's uppercase echo service under each of its server models, so they can be
// compared side by side with the same protocol: every request comes back uppercased. A request is a
// line, or what one read returned by itself without a newline (seed 004's client sends `hello` and
// waits): it is answered as it came, with a newline only if it had one. Like the seed's server, it
// logs "<worker> serving <request>" for each request and "<peer> closing" (--quiet: not per request).
//
//   $ echo_server --model=prefork --workers 3 --port 20446
//   $ nc localhost 20446
//   hello
//   HELLO
//
// --model=process     fork() per connection (the parent reaps children as they exit: no zombies)
// --model=thread      an OS thread per connection
// --model=prefork     --workers processes forked up front, all accepting on one listening socket
// --model=threadpool  --workers threads fed by a queue of accepted connections (condition variables)
// --model=fiber       fiberio::StreamServer: a greenlet per connection (--workers hubs/threads)
//
// Lines longer than 64 KiB get "error: line too long (max 65536 bytes)" and the connection goes on.
#include <atomic>
#include <cctype>
#include <string>

#include "demo_util.hpp"
#include "fiberio/stream.hpp"

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string too_long_reply() { return "error: line too long (max " + std::to_string(kMaxLine) + " bytes)"; }

// Who serves a connection, for the log: the model's unit of concurrency.
std::string who(const std::string& model, int worker) {
  if (model == "process") return fmt::format("[child pid {}]", ::getpid());
  if (model == "prefork") return fmt::format("[worker {} pid {}]", worker, ::getpid());
  if (model == "threadpool") return fmt::format("[pool thread {}]", worker);
  return fmt::format("[thread {}]", worker);
}

bool g_quiet = false;  // --quiet: no line per request (benchmarks)

// The reply to one request: uppercased, ending as the request ended.
std::string reply(const demo::RequestFramer::Request& r) {
  if (r.too_long) return too_long_reply() + "\n";
  return upper(r.text) + (r.terminated ? "\n" : "");
}

void posix_echo(const std::string& model, demo::LineConn& conn, const std::string& peer, int worker) {
  auto me = who(model, worker);
  demo::say("{} connection from {}", me, peer);
  demo::RequestFramer::Request req;
  for (;;) {
    auto st = conn.read_request(req.text, kMaxLine);
    if (st == demo::LineConn::Status::Eof || st == demo::LineConn::Status::Stopped) break;
    req.terminated = conn.terminated();
    req.too_long = st == demo::LineConn::Status::TooLong;
    if (!g_quiet) demo::say("{} serving {}", worker, req.text);
    if (!conn.send_all(reply(req))) break;
  }
  demo::say("{} {} closing", me, peer);
}

int run_posix(const std::string& model, const std::string& host, int port, int workers) {
  bool forks = model == "process" || model == "prefork";
  auto& stop = demo::StopSignal::install(forks);
  int lfd = demo::listen_tcp(host, port);
  std::string size = (model == "prefork" || model == "threadpool") ? fmt::format(", workers={}", workers) : "";
  demo::say("echo_server (model={}{}) listening on {}", model, size, demo::bound_address(lfd));
  auto handler = [&model](demo::LineConn& c, const std::string& peer, int worker) { posix_echo(model, c, peer, worker); };
  if (model == "process") demo::serve_process_per_connection(lfd, stop, handler);
  else if (model == "thread") demo::serve_thread_per_connection(lfd, stop, handler);
  else if (model == "prefork") demo::serve_prefork(lfd, stop, handler, workers);
  else demo::serve_threadpool(lfd, stop, handler, workers);
  ::close(lfd);
  demo::say("echo_server stopped");
  return 0;
}

int run_fiber(const std::string& host, int port, int workers) {
  std::atomic<int> next_hub{0};
  return demo::serve_fiber(
      "echo_server", fmt::format(", workers={}", workers), host, port, static_cast<unsigned>(workers),
      [&next_hub](fiberio::Socket& sock, const fiberio::Address& peer) {
        // With --workers N the handlers run on N hub threads; number them for the log.
        thread_local int hub = next_hub++;
        demo::say("[hub {}] connection from {}", hub, peer);
        demo::SocketRequests requests(sock, kMaxLine);
        try {
          while (auto req = requests.next()) {
            if (!g_quiet) demo::say("{} serving {}", hub, req->text);
            sock.sendall(reply(*req));
          }
        } catch (const std::exception& e) {
          demo::say("[hub {}] {} closing ({})", hub, peer, e.what());
          return;
        }
        demo::say("[hub {}] {} closing", hub, peer);
      });
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("echo_server", "Uppercase line echo under each server model of seed 004.",
                {
                    {"model", 'm', "process|thread|prefork|threadpool|fiber", "server model (default fiber)"},
                    {"workers", 'w', "N",
                     "prefork processes / threadpool threads (default 4) / fiber hub threads (default 1)"},
                    {"host", 0, "HOST", "address to listen on (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "port to listen on, 0 = any free port (default 20446)"},
                    {"quiet", 'q', "", "do not log each request (for benchmarks)"},
                });
  cli.parse(argc, argv);
  auto model = cli.get_choice("model", "fiber", {"process", "thread", "prefork", "threadpool", "fiber"});
  if (cli.has("workers") && (model == "process" || model == "thread"))
    cli.fail("--workers applies to --model=prefork, threadpool and fiber (" + model + " has one worker per connection)");
  int workers = static_cast<int>(cli.get_int("workers", model == "fiber" ? 1 : 4, 1, 256));
  auto host = cli.get("host", "127.0.0.1");
  int port = static_cast<int>(cli.get_int("port", 20446, 0, 65535));
  g_quiet = cli.has("quiet");
  try {
    return model == "fiber" ? run_fiber(host, port, workers) : run_posix(model, host, port, workers);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_server: %s\n", e.what());
    return 1;
  }
}
