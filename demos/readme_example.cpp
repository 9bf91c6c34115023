// The README's example, compiled with every build so it cannot drift from the API.
// Usage: readme_example [--port N]   (then: nc localhost 25000, type 10 -> 55; Ctrl+C stops it)
#include <fiberio/fiberio.hpp>

#include <cstdio>
#include <string>

// Seed 000's "Fibonacci as a service", written the naive way: one client, one loop.
long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char** argv) try {
  int port = argc == 3 && std::string(argv[1]) == "--port" ? std::stoi(argv[2]) : 25000;
  fiberio::StreamServer server(fiberio::Address("127.0.0.1", static_cast<std::uint16_t>(port)),
                               [](fiberio::Socket& sock, const fiberio::Address&) {
    fiberio::Stream io(sock);
    for (std::string line; !(line = io.read_line(64)).empty();) {
      int n = std::stoi(line);  // bad input throws: reported, this connection closed, server goes on
      long r = n < 30 ? fib(n) : fiberio::run_in_thread(fib, n);  // big ones leave the hub
      io.write_line(std::to_string(r));
      io.flush();
    }
  });
  server.start();  // binds now: a port in use throws here
  std::printf("listening on %s\n", server.address().to_string().c_str());
  std::fflush(stdout);
  server.serve_forever();  // thousands of clients on one thread; Ctrl+C stops it gracefully
} catch (const std::exception& e) {
  std::fprintf(stderr, "readme_example: %s\n", e.what());  // e.g. the port is in use: one line, exit 1
  return 1;
}
