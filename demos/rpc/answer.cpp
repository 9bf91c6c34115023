#include "serve.hpp"

namespace rpc {

std::string answer(const Registry& api, FrameDecoder& decoder, std::string_view bytes, bool& close) {
  std::string out;
  auto error_frame = [](const Value& id, const std::string& type, const std::string& message) {
    return encode_frame(Value{{"id", id}, {"error", type}, {"message", message}});
  };
  try {
    decoder.feed(bytes);
    while (auto request = decoder.next()) {
      Value reply = api.handle(*request);
      try {
        out += encode_frame(reply, decoder.max_frame());
      } catch (const ProtocolError& e) {  // a result too large for one frame
        out += error_frame(reply["id"], "rpc::ProtocolError", e.what());
      }
    }
  } catch (const ProtocolError& e) {
    out += error_frame(nullptr, "rpc::ProtocolError", e.what());
    close = true;
  }
  return out;
}

}  // namespace rpc
