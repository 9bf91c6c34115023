// The RPC demo's client, on fiberio: blocking-style calls that yield while they wait, so one thread
// can run a thousand of them in greenlets (rpc_client bench does).
//
//   rpc::Client c("127.0.0.1", 20002);
//   long r = c.call<long>("func1", 1, 2, 3);        // 9
//   auto func1 = c.function<long>("func1");         // a callable that looks like the server's function
//   for (auto& f : c.functions()) std::puts(f.signature.c_str());
//
// A failure on the server (no such function, bad arguments, an exception in the function) throws
// RemoteError carrying the server's error type and message. A result that is not the type asked for
// throws ResultTypeError. A lost connection is fiberio's ConnectionError; no reply in time, TimeoutError.
#pragma once
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "fiberio/socket.hpp"
#include "protocol.hpp"

namespace rpc {

class RemoteError : public std::runtime_error {
 public:
  RemoteError(std::string type, const std::string& message)
      : std::runtime_error(type + ": " + message), type_(std::move(type)), message_(message) {}
  const std::string& type() const noexcept { return type_; }        // e.g. "rpc::NoSuchFunction", "std::domain_error"
  const std::string& message() const noexcept { return message_; }  // the server's what()

 private:
  std::string type_, message_;
};

class ResultTypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FunctionInfo {
  std::string name;
  std::string signature;  // "func1(int, int, int) -> int"
};

class Client {
 public:
  // Connects at once (ConnectionError if nobody listens). timeout bounds the connect and each call.
  Client(const std::string& host, std::uint16_t port, fiberio::OptDuration timeout = std::chrono::seconds(10),
         std::size_t max_frame = kDefaultMaxFrame);

  // Calls name(args...) on the server and returns its result as an R (rpc::Value: as it came).
  template <class R = Value, class... A>
  R call(const std::string& name, const A&... args) {
    Value list = Value::array();
    (list.push_back(Value(args)), ...);
    Value result = call_with(name, std::move(list));
    if constexpr (std::is_void_v<R>) {
      return;
    } else {
      try {
        return result.get<R>();
      } catch (const nlohmann::json::exception& e) {
        throw ResultTypeError(name + " returned " + result.dump() + ", which is not the type asked for: " + e.what());
      }
    }
  }

  // A callable standing in for the server's function: function<long>("func1")(1, 2, 3).
  template <class R = Value>
  auto function(std::string name) {
    return [this, name = std::move(name)](const auto&... args) { return call<R>(name, args...); };
  }

  // The server's functions, as dir() would list them: names and signatures, sorted by name.
  std::vector<FunctionInfo> functions();

  // One request with an already-built argument list.
  Value call_with(const std::string& name, Value args);

 private:
  fiberio::Socket sock_;
  FrameDecoder decoder_;
  std::size_t max_frame_;
  std::uint64_t next_id_ = 1;
};

}  // namespace rpc
