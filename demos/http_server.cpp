// http_server: seed 001's web-server models. The seed's Flask app, three endpoints:
//
//   GET /hello     "Hello, world!"
//   GET /cpu_task  "Fibonacci(N) = ...", computed by the worker that serves the request; N is --cpu-n
//                  (default 42, about 1 s of CPU here; the seed's Python fib(36) took about 3 s)
//   GET /io        {"message":"I/O task completed"}, after sleeping --io-ms (default 3000 ms)
//
// --model=sync    gunicorn's sync workers: --workers processes forked up front (default 4), each
//                 serving one request at a time with plain blocking calls (/io is a real usleep)
// --model=fiber   gunicorn's eventlet workers: a fiberio::StreamServer on --workers hub threads
//                 (default 1), a greenlet per connection (/io is fiberio::sleep)
//
//   $ http_server --model=sync --port 8000 &
//   $ sh scripts/load.sh /cpu_task                   (the seed's load.sh: 10 concurrent curls)
//   $ fiber_client --port 8000 -c 10 --http /io      (the same from a fiber client)
//
// One request per connection ("Connection: close"), as the seed's curl calls. A malformed request gets
// 400, an unknown path 404, a method other than GET 405, a request line or header over 8 KiB (or more
// than 100 headers) 431.
#include <unistd.h>

#include <chrono>
#include <string>
#include <variant>

#include "demo_util.hpp"
#include "http_request.hpp"
#include "fiberio/stream.hpp"
#include "fiberio/time.hpp"

namespace {

long fibonacci(int n) { return n <= 1 ? (n < 0 ? 0 : n) : fibonacci(n - 1) + fibonacci(n - 2); }

using demo::http::kMaxLine;
using demo::http::read_request;
using demo::http::render;
using demo::http::Response;

int g_cpu_n = 42;  // --cpu-n

// The endpoints; `sleep` is how this model waits for /io.
template <class Sleep>
Response route(const std::string& path, Sleep sleep) {
  if (path == "/hello") return {200, "Hello, world!"};
  if (path == "/cpu_task") return {200, fmt::format("Fibonacci({}) = {}", g_cpu_n, fibonacci(g_cpu_n))};
  if (path == "/io") {
    sleep();
    return {200, R"({"message":"I/O task completed"})"};
  }
  return {404, "no such page: " + path};
}

template <class NextLine, class Sleep>
Response serve(NextLine next_line, Sleep sleep) {
  auto req = read_request(next_line);
  if (auto* r = std::get_if<Response>(&req)) return *r;
  return route(std::get<std::string>(req), sleep);
}

int run_sync(const std::string& host, int port, int workers, std::chrono::milliseconds io) {
  auto& stop = demo::StopSignal::install(true);
  int lfd = demo::listen_tcp(host, port);
  demo::say("http_server (model=sync, workers={}) listening on {}", workers, demo::bound_address(lfd));
  demo::serve_prefork(
      lfd, stop,
      [io](demo::LineConn& conn, const std::string& peer, int worker) {
        auto next_line = [&conn](bool& too_long) -> std::optional<std::string> {
          std::string line;
          auto st = conn.read_line(line, kMaxLine);
          too_long = st == demo::LineConn::Status::TooLong;
          if (st == demo::LineConn::Status::Eof || st == demo::LineConn::Status::Stopped) return std::nullopt;
          return line;
        };
        auto r = serve(next_line, [io] { ::usleep(static_cast<useconds_t>(io.count() * 1000)); });
        demo::say("[worker {} pid {}] {} -> {}", worker, ::getpid(), peer, r.status);
        conn.send_all(render(r));
        conn.linger();
      },
      workers);
  ::close(lfd);
  demo::say("http_server stopped");
  return 0;
}

int run_fiber(const std::string& host, int port, int workers, std::chrono::milliseconds io) {
  return demo::serve_fiber("http_server", fmt::format(", workers={}", workers), host, port,
                           static_cast<unsigned>(workers), [io](fiberio::Socket& sock, const fiberio::Address& peer) {
                             fiberio::Stream s(sock);
                             auto next_line = [&s](bool& too_long) { return demo::read_request_line(s, kMaxLine, too_long); };
                             auto r = serve(next_line, [io] { fiberio::sleep(io); });
                             demo::say("[greenlet] {} -> {}", peer, r.status);
                             s.write(render(r));
                             s.flush();
                             // A lingering close (see demo::LineConn::linger): FIN first, then drain
                             // what the client still sends (bounded), so no RST destroys the reply.
                             try {
                               sock.shutdown(fiberio::ShutdownHow::Write);
                               sock.set_timeout(std::chrono::seconds(1));
                               for (std::size_t total = 0; total < (1u << 20);) {
                                 auto rest = sock.recv(4096);
                                 if (rest.empty()) break;
                                 total += rest.size();
                               }
                             } catch (const std::exception&) {  // timed out or reset: close now
                             }
                           });
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("http_server", "Seed 001's web server (/hello, /cpu_task, /io) under gunicorn's sync and async worker models.",
                {
                    {"model", 'm', "sync|fiber", "sync: prefork processes, one request at a time; fiber: a greenlet per connection (default fiber)"},
                    {"workers", 'w', "N", "sync processes (default 4) / fiber hub threads (default 1)"},
                    {"io-ms", 0, "MS", "how long /io sleeps (default 3000, as the seed)"},
                    {"cpu-n", 0, "N", "/cpu_task computes the naive Fibonacci(N) (default 42: about 1 s here; the seed's 36)"},
                    {"host", 0, "HOST", "address to listen on (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "port to listen on, 0 = any free port (default 8000)"},
                });
  cli.parse(argc, argv);
  auto model = cli.get_choice("model", "fiber", {"sync", "fiber"});
  int workers = static_cast<int>(cli.get_int("workers", model == "sync" ? 4 : 1, 1, 256));
  std::chrono::milliseconds io(cli.get_int("io-ms", 3000, 0, 600000));
  g_cpu_n = static_cast<int>(cli.get_int("cpu-n", 42, 0, 50));
  auto host = cli.get("host", "127.0.0.1");
  int port = static_cast<int>(cli.get_int("port", 8000, 0, 65535));
  try {
    return model == "sync" ? run_sync(host, port, workers, io) : run_fiber(host, port, workers, io);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_server: %s\n", e.what());
    return 1;
  }
}
