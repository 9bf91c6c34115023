#include "functions.hpp"

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace rpc {

namespace {

// The seed's func1(x, y, z) = x + y ** z, in 64-bit integers: by squaring (any z takes at most 63
// steps), and an overflow is an error, never a wrong answer.
long func1(long x, long y, long z) {
  if (z < 0) throw std::domain_error("func1: negative exponent " + std::to_string(z));
  long r = 1, base = y;
  auto overflow = [] { return std::overflow_error("func1: x + y ** z overflows a 64-bit integer"); };
  for (; z > 0; z >>= 1) {
    if ((z & 1) && __builtin_mul_overflow(r, base, &r)) throw overflow();
    if (z > 1 && __builtin_mul_overflow(base, base, &base)) throw overflow();
  }
  if (__builtin_add_overflow(x, r, &r)) throw overflow();
  return r;
}

}  // namespace

Registry demo_functions() {
  Registry api;
  api.add("func1", func1);
  api.add("concat", [](std::string a, std::string b) { return a + b; });
  api.add("sum", [](std::vector<long> xs) {
    long s = 0;
    for (long x : xs) s += x;
    return s;
  });
  api.add("word_count", [](std::string text) {  // a map result
    std::map<std::string, long> counts;
    std::size_t i = 0;
    while (i < text.size()) {
      auto start = text.find_first_not_of(" \t\n", i);
      if (start == std::string::npos) break;
      auto end = text.find_first_of(" \t\n", start);
      if (end == std::string::npos) end = text.size();
      ++counts[text.substr(start, end - start)];
      i = end;
    }
    return counts;
  });
  api.add("scale", [](demo::Point p, double k) { return demo::Point{p.x * k, p.y * k}; });  // a user type
  api.add("divide", [](long a, long b) {
    if (b == 0) throw std::domain_error("divide: division by zero");
    return a / b;
  });
  return api;
}


}  // namespace rpc
