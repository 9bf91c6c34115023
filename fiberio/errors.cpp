#include "fiberio/errors.hpp"

#include <cxxabi.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <typeinfo>

#include "fiberio/greenlet.hpp"

namespace fiberio {

namespace {
thread_local std::function<void(const GreenletBase&, std::exception_ptr)> t_error_handler;

// The default handler's rate limit: a client that makes every handler fail (a reset per request) must
// not flood the log. Each thread prints at most kBurst lines per second; the rest are counted, and the
// count is printed when the next failure comes after that second.
constexpr int kBurst = 20;
struct DefaultReportLimit {
  std::chrono::steady_clock::time_point window_start{};
  int printed = 0;
  long held = 0;
};
thread_local DefaultReportLimit t_limit;

void print_limited(const std::string& line) {
  auto now = std::chrono::steady_clock::now();
  std::string out;
  if (now - t_limit.window_start >= std::chrono::seconds(1)) {
    if (t_limit.held > 0)
      out = fmt::format("fiberio: {} more greenlet failure(s) on this thread were not printed (at most {} a second)\n",
                        t_limit.held, kBurst);
    t_limit = {now, 0, 0};
  }
  if (t_limit.printed < kBurst) {
    ++t_limit.printed;
    out += line;
  } else {
    ++t_limit.held;
  }
  if (!out.empty()) std::fputs(out.c_str(), stderr);
}
}  // namespace

void set_error_handler(std::function<void(const GreenletBase&, std::exception_ptr)> handler) {
  t_error_handler = std::move(handler);
}

namespace detail {
void report_error(const GreenletBase& g, std::exception_ptr e) noexcept {
  try {
    if (t_error_handler) return t_error_handler(g, e);
    print_limited(fmt::format("fiberio: {} failed with {}\n", g.name(), describe_exception(e)));
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
