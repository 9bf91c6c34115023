#include "registry.hpp"

namespace rpc {

std::string exception_type_name(const std::exception& e) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name ? name.get() : typeid(e).name();
}

Value Registry::describe() const {
  Value list = Value::array();
  for (auto& [name, e] : functions_) list.push_back({{"name", name}, {"signature", e.signature}});
  return list;
}

Value Registry::dispatch(const std::string& name, const Value& args) const {
  if (name == kListFunctions) return describe();
  auto it = functions_.find(name);
  if (it == functions_.end()) throw CallError("rpc::NoSuchFunction", fmt::format("no function named '{}'", name));
  return it->second.call(args);
}

Value Registry::handle(const Value& request) const {
  Value id = nullptr;
  auto error = [&id](const std::string& type, const std::string& message) {
    return Value{{"id", id}, {"error", type}, {"message", message}};
  };
  try {
    if (auto it = request.find("id"); it != request.end() && it->is_number_integer() && *it >= 0) id = *it;
    auto call = request.find("call");
    if (!id.is_number() || call == request.end() || !call->is_string())
      return error("rpc::ProtocolError", "a request is a map with a non-negative integer \"id\" and a string \"call\"");
    auto args = request.find("args");
    return Value{{"id", id}, {"ok", dispatch(call->get<std::string>(), args == request.end() ? Value::array() : *args)}};
  } catch (const CallError& e) {
    return error(e.type(), e.what());
  } catch (const std::exception& e) {
    return error(exception_type_name(e), e.what());
  }  // anything else (fiberio::GreenletExit from a kill, a fiber's forced unwind) is not the function's
     // error to report: it passes through, so the server's greenlet dies as it was told to

}

}  // namespace rpc
