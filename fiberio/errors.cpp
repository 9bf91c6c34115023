#include "fiberio/errors.hpp"

#include <cxxabi.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <typeinfo>

#include "fiberio/greenlet.hpp"

namespace fiberio {

namespace {
thread_local std::function<void(const GreenletBase&, std::exception_ptr)> t_error_handler;
}  // namespace

void set_error_handler(std::function<void(const GreenletBase&, std::exception_ptr)> handler) {
  t_error_handler = std::move(handler);
}

namespace detail {
void report_error(const GreenletBase& g, std::exception_ptr e) noexcept {
  try {
    if (t_error_handler) return t_error_handler(g, e);
    std::string msg = fmt::format("fiberio: {} failed with {}\n", g.name(), describe_exception(e));
    std::fputs(msg.c_str(), stderr);
  } catch (...) {
    std::fputs("fiberio: a greenlet failed, and reporting it failed too\n", stderr);
  }
}
}  // namespace detail

std::string describe_exception(std::exception_ptr e) {
  if (!e) return "no exception";
  auto demangle = [](const char* name) {
    int status = 0;
    char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string s = status == 0 && d ? d : name;
    std::free(d);
    return s;
  };
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return demangle(typeid(ex).name()) + ": " + ex.what();
  } catch (const GreenletExit& ex) {
    return ex.what();
  } catch (...) {
    auto* t = abi::__cxa_current_exception_type();
    return t ? demangle(t->name()) : std::string("unknown exception");
  }
}

}  // namespace fiberio
