// The "hello" HTTP server of benchmarks/http_compare.sh: fiberio::http::Server, one hub thread, every
// request answered "hello" (text/plain, keep-alive). SIGINT/SIGTERM stop it and print its counters.
//   http_hello PORT
#include <cstdio>
#include <cstdlib>

#include "fiberio/http_server.hpp"

int main(int argc, char** argv) {
  int port = argc > 1 ? std::atoi(argv[1]) : 8080;
  fiberio::http::ServerOptions o;
  o.server.backlog = 4096;
  fiberio::http::Server server(fiberio::Address("127.0.0.1", static_cast<std::uint16_t>(port)),
                               [](fiberio::http::Request&, fiberio::http::Response& res) {
                                 res.headers.add("Content-Type", "text/plain");
                                 res.body = "hello";
                               },
                               o);
  server.serve_forever();
  auto s = server.stats();
  std::printf("http_hello: %llu connections, %llu requests, %llu bad, %llu timeouts\n",
              static_cast<unsigned long long>(s.connections), static_cast<unsigned long long>(s.requests),
              static_cast<unsigned long long>(s.bad_requests), static_cast<unsigned long long>(s.timeouts));
  return 0;
}
