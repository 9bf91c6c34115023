// The functions rpc_server registers (the tests call them through every server model):
//   func1(x, y, z) = x + y ** z    the seed's example: func1(1, 2, 3) is 9
//   concat(str, str), sum(list[int]), word_count(str) -> dict[str, int], scale(Point, float) -> Point,
//   divide(int, int), which throws std::domain_error on a zero divisor.
#pragma once
#include "point.hpp"
#include "registry.hpp"

namespace rpc {
Registry demo_functions();
}
