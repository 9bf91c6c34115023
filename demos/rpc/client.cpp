#include "client.hpp"

#include <array>

#include "fiberio/dns.hpp"
#include "fiberio/errors.hpp"

namespace rpc {

Client::Client(const std::string& host, std::uint16_t port, fiberio::OptDuration timeout, std::size_t max_frame)
    : sock_(fiberio::create_connection(host, port, timeout)), decoder_(max_frame), max_frame_(max_frame) {}

Value Client::call_with(const std::string& name, Value args) {
  std::uint64_t id = next_id_++;
  sock_.sendall(encode_frame(Value{{"id", id}, {"call", name}, {"args", std::move(args)}}, max_frame_));
  std::array<char, 4096> buf;  // small: each client's greenlet stack holds one (rpc_client bench runs 1,000)
  for (;;) {
    if (auto reply = decoder_.next()) {
      auto rid = reply->find("id");
      if (rid == reply->end() || !rid->is_number_unsigned() || rid->get<std::uint64_t>() != id) {
        // A reply to something else: the server lost track of the conversation (or answered a
        // malformed frame with id null and is closing).
        auto err = reply->find("error");
        if (err != reply->end() && err->is_string())
          throw RemoteError(err->get<std::string>(), reply->value("message", std::string()));
        throw ProtocolError("reply " + reply->dump() + " does not answer request " + std::to_string(id));
      }
      if (auto ok = reply->find("ok"); ok != reply->end()) return std::move(*ok);
      auto err = reply->find("error");
      auto msg = reply->find("message");
      if (err == reply->end() || !err->is_string())
        throw ProtocolError("reply " + reply->dump() + " has neither \"ok\" nor \"error\"");
      throw RemoteError(err->get<std::string>(), msg != reply->end() && msg->is_string() ? msg->get<std::string>() : "");
    }
    std::size_t n = sock_.recv(std::span<char>(buf));
    if (n == 0) throw fiberio::ConnectionError(ECONNRESET, "rpc: the server closed the connection during " + name + "()");
    decoder_.feed(std::string_view(buf.data(), n));
  }
}

std::vector<FunctionInfo> Client::functions() {
  std::vector<FunctionInfo> out;
  Value list = call_with(std::string(kListFunctions), Value::array());
  if (!list.is_array()) throw ProtocolError("rpc.functions returned " + list.dump());
  for (auto& f : list) out.push_back({f.value("name", std::string()), f.value("signature", std::string())});
  return out;
}

}  // namespace rpc
