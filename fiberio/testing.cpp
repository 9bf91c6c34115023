#include "fiberio/testing.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "fiberio/detail/schedule.hpp"
#include "fiberio/hub.hpp"

namespace fiberio {
namespace detail {
namespace {
// FIBERIO_SEED, read once: a decimal (or 0x hex) unsigned 64-bit number.
struct EnvSchedule {
  bool has_seed = false;
  std::uint64_t seed = 0;
  bool virtual_time = false;
};

const EnvSchedule& env_schedule() {
  static const EnvSchedule env = [] {
    EnvSchedule e;
    if (const char* s = std::getenv("FIBERIO_SEED"); s && *s) {
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(s, &end, 0);
      if (errno || *end || *s == '-')
        throw std::invalid_argument(fmt::format("fiberio: FIBERIO_SEED={} is not an unsigned 64-bit number", s));
      e.has_seed = true;
      e.seed = v;
    }
    if (const char* v = std::getenv("FIBERIO_VIRTUAL_TIME"); v && *v && std::string_view(v) != "0")
      e.virtual_time = true;
    return e;
  }();
  return env;
}
}  // namespace

void schedule_from_env(Hub& hub) {
  const EnvSchedule& env = env_schedule();
  if (env.has_seed) hub.make_schedule().seed_with(env.seed);
  if (env.virtual_time) hub.make_schedule().set_virtual_time(true);
}
}  // namespace detail

namespace testing {

void set_seed(std::uint64_t seed) { detail::Hub::current().make_schedule().seed_with(seed); }

void clear_seed() {
  if (auto* s = detail::Hub::current().schedule()) s->unseed();
}

std::optional<std::uint64_t> seed() {
  auto* s = detail::Hub::current().schedule();
  if (s && s->seeded()) return s->seed();
  return std::nullopt;
}

std::vector<std::uint32_t> switch_trace() {
  auto* s = detail::Hub::current().schedule();
  return s ? s->trace() : std::vector<std::uint32_t>{};
}

void set_virtual_time(bool on) {
  auto& hub = detail::Hub::current();
  if (on) hub.make_schedule().set_virtual_time(true);
  else if (auto* s = hub.schedule(); s && s->virtual_time()) {
    if (s->has_timers())
      throw std::logic_error(
          "fiberio::testing::set_virtual_time(false): fibers still wait on virtual deadlines, which mean nothing in "
          "real time; join or kill them first");
    s->set_virtual_time(false);
  }
}

bool virtual_time() {
  auto* s = detail::Hub::current().schedule();
  return s && s->virtual_time();
}

std::string ScheduleResult::describe() const {
  if (!failed) return fmt::format("no failure in {} schedule(s)", schedules_run);
  std::string out = fmt::format(
      "failed in schedule {} of the exploration, seed {}: {}\n"
      "replay it with fiberio::testing::replay(f, {}) or FIBERIO_SEED={}\n"
      "switch trace ({} switches; a greenlet's name, or #id for an unnamed fiber):",
      schedules_run, seed, error, seed, seed, trace.size());
  std::size_t shown = std::min<std::size_t>(trace.size(), 200);
  for (std::size_t i = 0; i < shown; ++i) {
    std::uint32_t id = trace[i];
    if (id < names.size() && !names[id].empty())
      out += " " + names[id];
    else
      out += fmt::format(" #{}", id);
  }
  if (shown < trace.size()) out += " ...";
  return out;
}

namespace {
ScheduleResult run_one(const std::function<void()>& f, std::uint64_t seed, const ExploreOptions& opts) {
  ScheduleResult r;
  r.seed = seed;
  r.schedules_run = 1;
  // A fresh thread has a fresh hub: nothing left from an earlier schedule (fibers, fds, timers, ids).
  std::thread t([&] {
    auto& sched = detail::Hub::current().make_schedule();
    sched.set_virtual_time(opts.virtual_time);
    sched.seed_with(seed);
    try {
      f();
    } catch (const std::exception& e) {
      r.failed = true;
      r.error = e.what();
    } catch (...) {
      r.failed = true;
      r.error = "an exception not derived from std::exception";
    }
    r.trace = sched.trace();
    r.names = sched.names();
    sched.unseed();
  });
  t.join();
  return r;
}
}  // namespace

ScheduleResult explore(const std::function<void()>& f, std::size_t schedules, std::uint64_t seed,
                       ExploreOptions opts) {
  if (const auto& env = detail::env_schedule(); env.has_seed) return replay(f, env.seed, opts);
  detail::SplitMix64 seeds(seed);
  ScheduleResult r;
  for (std::size_t i = 0; i < schedules; ++i) {
    r = run_one(f, seeds.next(), opts);
    r.schedules_run = i + 1;
    if (r.failed) break;
  }
  return r;
}

ScheduleResult replay(const std::function<void()>& f, std::uint64_t seed, ExploreOptions opts) {
  return run_one(f, seed, opts);
}

}  // namespace testing
}  // namespace fiberio
