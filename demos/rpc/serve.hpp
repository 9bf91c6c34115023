// The RPC demo's three servers, one per file, for seed 002's comparison: the same protocol and the
// same Registry, served
//   serve_epoll.cpp    by one thread running an epoll state machine with callbacks (the seed's
//                      "ugly state machines"),
//   serve_threads.cpp  by an OS thread per connection, with blocking sockets,
//   serve_fiber.cpp    by fiberio: a greenlet per connection, written like the thread version.
// Each prints "rpc_server (model=NAME) listening on ADDR", serves until SIGINT/SIGTERM, closes every
// connection and returns 0. Each file holds only its model's I/O: what a request means is answer()'s.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol.hpp"
#include "registry.hpp"

namespace rpc {

struct ServeOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t max_frame = kDefaultMaxFrame;
};

// Feeds bytes just read from a connection to its decoder and returns what to send back: one reply
// frame per complete request. After a malformed or oversized frame it returns that error's reply
// frame last and sets `close`: the stream is out of step, so the connection ends once that is sent.
std::string answer(const Registry& api, FrameDecoder& decoder, std::string_view bytes, bool& close);

int serve_epoll(const Registry& api, const ServeOptions& options);
int serve_threads(const Registry& api, const ServeOptions& options);
int serve_fiber(const Registry& api, const ServeOptions& options);

}  // namespace rpc
