// rpc_client: seed 002's RPC client, and the concurrent load driver for the server comparison.
//
//   $ rpc_client --port 20002 list                   # the server's functions, "the Python way"
//   $ rpc_client --port 20002 call func1 1 2 3       # 9
//   $ rpc_client --port 20002 call scale '{"x":1,"y":2}' 2.5
//   $ rpc_client --port 20002 bench --clients 1000 --seconds 5
//
// call's arguments are JSON values (1, "a", [1,2], {"x":1}); anything that is not JSON is a string.
// A server error prints "error: TYPE: MESSAGE" and exits 1.
// bench connects --clients clients, each in its own greenlet on this one thread, and has each call
// func1(1, 2, 3) back to back until --seconds pass or --requests calls are done in all; it prints
// requests/s and latency percentiles.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "client.hpp"
#include "fiberio/event.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/time.hpp"

namespace {

rpc::Value parse_argument(const std::string& s) {
  auto v = rpc::Value::parse(s, nullptr, /*allow_exceptions=*/false);
  return v.is_discarded() ? rpc::Value(s) : v;
}

struct BenchOptions {
  int clients = 50;
  double seconds = 5;
  long requests = 10'000'000;
};

int bench(const std::string& host, std::uint16_t port, const BenchOptions& o) {
  using Clock = std::chrono::steady_clock;
  fiberio::Event go;
  Clock::time_point deadline;
  long started = 0;
  long errors = 0;
  std::string first_error;
  std::vector<std::vector<float>> latencies(static_cast<std::size_t>(o.clients));  // microseconds, per client
  std::vector<fiberio::GreenletRef> clients;
  for (int i = 0; i < o.clients; ++i) {
    clients.push_back(fiberio::spawn([&, i] {
      auto& mine = latencies[static_cast<std::size_t>(i)];
      try {
        rpc::Client c(host, port);
        go.wait();
        while (Clock::now() < deadline && started < o.requests) {
          ++started;
          auto t0 = Clock::now();
          if (c.call<long>("func1", 1, 2, 3) != 9) throw std::runtime_error("func1(1, 2, 3) != 9");
          mine.push_back(std::chrono::duration<float, std::micro>(Clock::now() - t0).count());
        }
      } catch (const std::exception& e) {
        if (errors++ == 0) first_error = e.what();
      }
    }));
  }
  fiberio::sleep(std::chrono::milliseconds(100));  // let every client connect before the clock starts
  auto t0 = Clock::now();
  deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  go.set();
  fiberio::joinall(clients);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<float> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<std::size_t>(p * static_cast<double>(all.size())))]; };
  std::printf("clients=%d requests=%zu seconds=%.2f req_per_s=%.0f p50_us=%.0f p99_us=%.0f errors=%ld\n", o.clients,
              all.size(), secs, static_cast<double>(all.size()) / secs, pct(0.50), pct(0.99), errors);
  if (errors) std::fprintf(stderr, "rpc_client: %ld clients failed; the first: %s\n", errors, first_error.c_str());
  return errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Seed 002's RPC client: list the server's functions, call one, or load the server.", "rpc_client");
  app.require_subcommand(1);
  std::string host = "127.0.0.1";
  std::uint16_t port = 20002;
  app.add_option("--host", host, "server address")->capture_default_str();
  app.add_option("-p,--port", port, "server port")->capture_default_str();
  auto* list = app.add_subcommand("list", "print the server's functions and their signatures");
  auto* call = app.add_subcommand("call", "call FUNCTION with ARGS (JSON values) and print the result as JSON");
  std::string function;
  call->add_option("function", function, "the function's name")->required();
  // The arguments are taken raw (CLI11 would split a positional "[1,2,3]" into three values).
  call->allow_extras();
  call->footer("ARGS...: the function's arguments, each a JSON value (1, \"a\", [1,2], {\"x\":1}) or else a string\n");
  auto* load = app.add_subcommand("bench", "N concurrent clients call func1(1, 2, 3) back to back");
  BenchOptions bo;
  load->add_option("-c,--clients", bo.clients, "concurrent clients (greenlets)")->check(CLI::Range(1, 100000))->capture_default_str();
  load->add_option("-s,--seconds", bo.seconds, "how long to run")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
  load->add_option("-n,--requests", bo.requests, "stop after this many calls in all")->check(CLI::Range(1L, 1'000'000'000L))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: error: %s (see --help)\n", "rpc_client", e.what());  // one line, as every demo
    return 2;
  }
  try {
    if (*load) return bench(host, port, bo);
    rpc::Client client(host, port);
    if (*list) {
      for (auto& f : client.functions()) std::printf("%s\n", f.signature.c_str());
      return 0;
    }
    rpc::Value list_args = rpc::Value::array();
    for (auto& a : call->remaining()) list_args.push_back(parse_argument(a));
    std::printf("%s\n", client.call_with(function, std::move(list_args)).dump().c_str());
    return 0;
  } catch (const rpc::RemoteError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rpc_client: %s\n", e.what());
    return 1;
  }
}
