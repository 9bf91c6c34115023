// rpc_server: seed 002's homework — an RPC server that registers any number of functions by name
// and serves them over TCP (protocol.hpp: length-prefixed MessagePack frames; nothing is eval'ed).
//
//   $ rpc_server --model fiber --port 20002
//   $ rpc_client --port 20002 call func1 1 2 3
//   9
//
// --model epoll | threads | fiber picks the server (serve.hpp); the functions are the same.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "functions.hpp"
#include "serve.hpp"

int main(int argc, char** argv) {
  CLI::App app("Seed 002's RPC server: func1, concat, sum, word_count, scale, divide, served over TCP.", "rpc_server");
  rpc::ServeOptions options;
  std::string model = "fiber";
  options.port = 20002;
  app.add_option("--model", model, "the server: epoll (one thread, state machine), threads (thread per connection), fiber")
      ->check(CLI::IsMember({"epoll", "threads", "fiber"}))->capture_default_str();
  app.add_option("--host", options.host, "address to listen on")->capture_default_str();
  app.add_option("-p,--port", options.port, "port (0: any free port)")->capture_default_str();
  app.add_option("--max-frame", options.max_frame, "largest request or reply payload, in bytes")
      ->check(CLI::Range(std::size_t{16}, std::size_t{1} << 30))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: error: %s (see --help)\n", "rpc_server", e.what());  // one line, as every demo
    return 2;
  }
  try {
    auto api = rpc::demo_functions();
    if (model == "epoll") return rpc::serve_epoll(api, options);
    if (model == "threads") return rpc::serve_threads(api, options);
    return rpc::serve_fiber(api, options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rpc_server: %s\n", e.what());  // e.g. the port is in use: one line, exit 1
    return 1;
  }
}
