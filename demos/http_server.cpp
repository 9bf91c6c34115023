// http_server: seed 001's web-server models. The seed's Flask app, three endpoints:
//
//   GET /hello     "Hello, world!"
//   GET /cpu_task  "Fibonacci(N) = ...", computed by the worker that serves the request; N is --cpu-n
//                  (default 42, about 1 s of CPU here; the seed's Python fib(36) took about 3 s)
//   GET /io        {"message":"I/O task completed"}, after sleeping --io-ms (default 3000 ms)
//
// --model=sync    gunicorn's sync workers: --workers processes forked up front (default 4), each
//                 serving one request at a time with plain blocking calls (/io is a real usleep)
// --model=fiber   gunicorn's eventlet workers: a fiberio::http::Server on --workers hub threads
//                 (default 1), a greenlet per connection (/io is fiberio::sleep)
//
//   $ http_server --model=sync --port 8000 &
//   $ sh scripts/load.sh /cpu_task                   (the seed's load.sh: 10 concurrent curls)
//   $ fiber_client --port 8000 -c 10 --http /io      (the same from a fiber client)
//
// Both models serve with fiberio::http (Boost.Beast's parser over fiberio sockets): keep-alive is
// off ("Connection: close", one request per connection, as the seed's curl calls and gunicorn's sync
// workers); a malformed request gets 400, an unknown path 404, a method other than GET 405 (with
// Allow), a request line plus headers over 8 KiB or more than 100 header fields 431, a body over
// 1 MiB 413.
#include <unistd.h>

#include <chrono>
#include <string>

#include "demo_util.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/http_server.hpp"
#include "fiberio/io.hpp"
#include "fiberio/time.hpp"

namespace {

namespace http = fiberio::http;

long fibonacci(int n) { return n <= 1 ? (n < 0 ? 0 : n) : fibonacci(n - 1) + fibonacci(n - 2); }

int g_cpu_n = 42;  // --cpu-n

// The endpoints; `sleep` is how this model waits for /io; `who` names the worker in the log line.
http::Handler endpoints(std::function<void()> sleep, std::function<std::string()> who) {
  auto text = [](http::Response& res, int status, std::string body) {
    res.status = status;
    res.headers.set("Content-Type", "text/plain");
    res.body = std::move(body) + "\n";
  };
  http::Router router;
  router.get("/hello", [text](http::Request&, http::Response& res) { text(res, 200, "Hello, world!"); });
  router.get("/cpu_task", [text](http::Request&, http::Response& res) {
    text(res, 200, fmt::format("Fibonacci({}) = {}", g_cpu_n, fibonacci(g_cpu_n)));
  });
  router.get("/io", [text, sleep](http::Request&, http::Response& res) {
    sleep();
    text(res, 200, R"({"message":"I/O task completed"})");
  });
  router.not_found([text](http::Request& req, http::Response& res) { text(res, 404, "no such page: " + std::string(req.path())); });
  return [router = std::move(router), who = std::move(who)](http::Request& req, http::Response& res) {
    router(req, res);
    res.headers.set("Connection", "close");
    demo::say("{} {} -> {}", who(), req.peer, res.status);
  };
}

http::ServerOptions options() {
  http::ServerOptions o;
  o.idle_timeout = std::chrono::seconds(10);  // a client that connects and sends nothing
  return o;
}

int run_sync(const std::string& host, int port, int workers, std::chrono::milliseconds io) {
  auto& stop = demo::StopSignal::install(true);
  int lfd = demo::listen_tcp(host, port);
  demo::say("http_server (model=sync, workers={}) listening on {}", workers, demo::bound_address(lfd));
  int worker_id = -1;
  auto handler = endpoints([io] { ::usleep(static_cast<useconds_t>(io.count() * 1000)); },
                           [&worker_id] { return fmt::format("[worker {} pid {}]", worker_id, ::getpid()); });
  auto opts = options();
  demo::serve_prefork(
      lfd, stop,
      [&](demo::LineConn& conn, const std::string&, int worker) {
        // The worker serves this one connection with fiberio's HTTP code on its main fiber: /io's
        // usleep blocks the whole process, as a sync worker does.
        worker_id = worker;
        fiberio::Socket sock(::dup(conn.fd()));
        // A stop (SIGINT/SIGTERM write the stop pipe) ends a wait for the client's request at once:
        // the connection's reading side is shut, so the server sees EOF.
        auto watch = fiberio::spawn([&sock, &stop] {
          fiberio::wait_read(stop.fd());
          sock.shutdown(fiberio::ShutdownHow::Read);
        });
        http::Server::serve_connection(sock, sock.peer_address(), handler, opts);
        watch.kill();
      },
      workers);
  ::close(lfd);
  demo::say("http_server stopped");
  return 0;
}

int run_fiber(const std::string& host, int port, int workers, std::chrono::milliseconds io) {
  auto opts = options();
  opts.server.workers = static_cast<unsigned>(workers);
  http::Server server(fiberio::Address(host, static_cast<std::uint16_t>(port)),
                      endpoints([io] { fiberio::sleep(io); }, [] { return std::string("[greenlet]"); }), opts);
  server.start();
  demo::say("http_server (model=fiber, workers={}) listening on {}", workers, server.address());
  server.serve_forever();
  demo::say("http_server stopped");
  return 0;
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
