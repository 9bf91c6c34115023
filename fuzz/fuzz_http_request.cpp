// libFuzzer: fiberio::http's server side (Boost.Beast's request parser behind
// http::Server::serve_connection) on any bytes, arriving in pieces on a socket. Whatever the bytes,
// it never crashes or hangs, every reply starts with a status line (HTTP/1.0 or 1.1) of a code it may send (200, 400,
// 404, 405, 413, 431), and it reads no more than the input.
#include <cstdint>
#include <string>

#include "fiberio/fiberio.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t piece = 1 + data[0] % 64;  // how the client splits the input
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto sockets = fiberio::Socket::pair();
  fiberio::Socket& server_end = sockets.first;
  fiberio::Socket& client = sockets.second;
  std::string replies;
  auto writer = fiberio::spawn([&] {
    try {
      for (std::size_t at = 0; at < input.size(); at += piece) {
        client.sendall(std::string_view(input).substr(at, piece));
        fiberio::yield();
      }
      client.shutdown(fiberio::ShutdownHow::Write);
    } catch (const std::exception&) {  // the server closed after an error reply
    }
  });
  auto reader = fiberio::spawn([&] {
    try {
      for (std::string got; !(got = client.recv(65536)).empty();) replies += got;
    } catch (const std::exception&) {
    }
  });
  fiberio::http::Router router;
  router.get("/", [](fiberio::http::Request& req, fiberio::http::Response& res) { res.body = req.target; });
  fiberio::http::ServerOptions o;
  o.max_header_bytes = 1024;
  o.max_body_bytes = 1024;
  o.header_timeout = o.idle_timeout = o.read_timeout = o.write_timeout = std::chrono::seconds(2);
  fiberio::http::Server::serve_connection(server_end, fiberio::Address("127.0.0.1", 1), router, o);
  server_end.close();
  writer.join();
  reader.join();
  // A reply carries the request's version (an HTTP/1.0 request gets "HTTP/1.0 ..."; a request too
  // broken to have one, 1.1).
  for (const char* version : {"HTTP/1.1 ", "HTTP/1.0 "})
    for (std::size_t at = 0; (at = replies.find(version, at)) != std::string::npos; at += 9) {
      auto code = replies.substr(at + 9, 3);
      if (code != "200" && code != "400" && code != "404" && code != "405" && code != "413" && code != "431" &&
          code != "100")
        __builtin_trap();
    }
  if (!replies.empty() && !replies.starts_with("HTTP/1.1 ") && !replies.starts_with("HTTP/1.0 ")) __builtin_trap();
  return 0;
}
