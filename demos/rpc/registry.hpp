// The server side of the RPC demo: functions registered by name, called with arguments converted to
// the types they declare. Shared by every server model (serve_epoll, serve_threads, serve_fiber).
//
//   rpc::Registry api;
//   api.add("func1", [](long x, long y, long z) { return x + ipow(y, z); });
//   rpc::Value reply = api.handle(request);   // never throws: errors become error replies
//
// Supported types: integers, double, bool, std::string, std::vector<T>, std::map<std::string, T>,
// rpc::Value (anything), and user types that register with nlohmann's to_json/from_json (e.g.
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) and a name with RPC_TYPE_NAME(Type, "name").
// Each argument is checked before the call: an integer where a string is declared, an integer out
// of the declared type's range, a float where an integer is declared, or the wrong number of
// arguments is an "rpc::BadArguments" error naming the function and the argument.
#pragma once
#include <cxxabi.h>

#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "protocol.hpp"

namespace rpc {

// A failure the client sees as RemoteError(type, message).
class CallError : public std::runtime_error {
 public:
  CallError(std::string type, const std::string& message) : std::runtime_error(message), type_(std::move(type)) {}
  const std::string& type() const noexcept { return type_; }

 private:
  std::string type_;
};

// The type of an exception as the server names it to the client: the C++ class, demangled.
std::string exception_type_name(const std::exception& e);

// ---- type names, for signatures ("func1(int, int, int) -> int") -------------------------------------
template <class T, class = void>
struct TypeName {
  static std::string get() { return "object"; }
};
#define RPC_TYPE_NAME(Type, Name) \
  template <>                     \
  struct rpc::TypeName<Type> {    \
    static std::string get() { return Name; } \
  }

template <class T>
struct TypeName<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string get() { return "int"; }
};
template <> struct TypeName<bool> { static std::string get() { return "bool"; } };
template <> struct TypeName<double> { static std::string get() { return "float"; } };
template <> struct TypeName<std::string> { static std::string get() { return "str"; } };
template <> struct TypeName<Value> { static std::string get() { return "any"; } };
template <> struct TypeName<void> { static std::string get() { return "None"; } };
template <class T> struct TypeName<std::vector<T>> { static std::string get() { return "list[" + TypeName<T>::get() + "]"; } };
template <class T> struct TypeName<std::map<std::string, T>> {
  static std::string get() { return "dict[str, " + TypeName<T>::get() + "]"; }
};

// ---- argument conversion ----------------------------------------------------------------------------
namespace detail {

// v as a T, or CallError("rpc::BadArguments") saying why not. nlohmann's own get<T>() would turn 3.5
// into 3 and 2^40 into a truncated int; the checks here refuse both.
template <class T>
T convert(const Value& v, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return CallError("rpc::BadArguments", fmt::format("{}: expected {}, got {}", where, TypeName<T>::get(), why));
  };
  if constexpr (std::is_same_v<T, Value>) {
    return v;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw bad(v.type_name());
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_unsigned()) {
      auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) throw bad(fmt::format("{} (out of range)", u));
      return static_cast<T>(u);
    }
    if (!v.is_number_integer()) throw bad(v.is_number() ? "float" : v.type_name());
    auto i = v.get<std::int64_t>();
    if (i < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        (i > 0 && static_cast<std::uint64_t>(i) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
      throw bad(fmt::format("{} (out of range)", i));
    return static_cast<T>(i);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) throw bad(v.type_name());
    return v.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) throw bad(v.type_name());
    return v.get<std::string>();
  } else {
    try {
      return v.get<T>();  // lists, maps and user types: nlohmann's from_json, which checks as it goes
    } catch (const nlohmann::json::exception& e) {
      throw bad(e.what());
    }
  }
}

template <class F>
struct Signature : Signature<decltype(&F::operator())> {};
template <class R, class... A>
struct Signature<R (*)(A...)> {
  using Result = R;
  using Args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct Signature<R (&)(A...)> : Signature<R (*)(A...)> {};
template <class R, class... A>
struct Signature<R(A...)> : Signature<R (*)(A...)> {};
template <class C, class R, class... A>
struct Signature<R (C::*)(A...) const> : Signature<R (*)(A...)> {};
template <class C, class R, class... A>
struct Signature<R (C::*)(A...)> : Signature<R (*)(A...)> {};

}  // namespace detail

class Registry {
 public:
  // Registers f under name (replacing any earlier one). f is any function, function pointer or
  // lambda whose argument and result types are supported (see the top of this file).
  template <class F>
  void add(const std::string& name, F f) {
    using Sig = detail::Signature<std::decay_t<F>>;
    using R = typename Sig::Result;
    Entry e;
    e.signature = name + signature_of(static_cast<typename Sig::Args*>(nullptr)) + " -> " + TypeName<R>::get();
    e.call = [name, f = std::move(f)](const Value& args) -> Value {
      constexpr std::size_t n = std::tuple_size_v<typename Sig::Args>;
      if (!args.is_array()) throw CallError("rpc::BadArguments", name + ": arguments must be a list");
      if (args.size() != n)
        throw CallError("rpc::BadArguments", fmt::format("{}() takes {} argument{}, {} given", name, n, n == 1 ? "" : "s", args.size()));
      return invoke(name, f, args, static_cast<typename Sig::Args*>(nullptr), std::make_index_sequence<n>());
    };
    functions_[name] = std::move(e);
  }

  // A request message to its reply message. An unknown function, bad arguments and any std::exception
  // from the function become error replies; what is not a std::exception (fiberio::GreenletExit when
  // the serving greenlet is killed) propagates.
  Value handle(const Value& request) const;

  // Every function's name and signature: [{"name": "func1", "signature": "func1(int, int, int) -> int"}, ...]
  Value describe() const;

 private:
  struct Entry {
    std::string signature;
    std::function<Value(const Value&)> call;
  };

  template <class... A>
  static std::string signature_of(std::tuple<A...>*) {
    std::string s = "(";
    ((s += (s.size() > 1 ? ", " : "") + TypeName<A>::get()), ...);
    return s + ")";
  }

  template <class F, class... A, std::size_t... I>
  static Value invoke(const std::string& name, F& f, const Value& args, std::tuple<A...>*, std::index_sequence<I...>) {
    std::tuple<A...> converted{detail::convert<A>(args[I], fmt::format("{}: argument {}", name, I + 1))...};
    using R = std::invoke_result_t<F&, A&...>;
    if constexpr (std::is_void_v<R>) {
      std::apply(f, converted);
      return nullptr;
    } else {
      return Value(std::apply(f, converted));
    }
  }

  Value dispatch(const std::string& name, const Value& args) const;

  std::map<std::string, Entry> functions_;
};

}  // namespace rpc
