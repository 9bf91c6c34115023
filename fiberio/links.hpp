// Completion callbacks ("rawlink" in gevent) shared by Greenlet, Event and AsyncResult: the building
// block of joinall(), wait() and iwait().
#pragma once
#include <cstdint>
#include <exception>
#include <functional>
#include <utility>
#include <vector>

namespace fiberio::detail {

// Reports an exception that escaped a link callback (greenlet.cpp): to the hub's error handler, with
// the greenlet that ran it (the main greenlet in the main fiber), or to stderr on a thread with no hub.
void report_callback_error(std::exception_ptr e) noexcept;

// Not synchronized: the owner guards it with its own lock and calls the taken callbacks unlocked.
class Links {
 public:
  using Id = std::uint64_t;
  Id add(std::function<void()> cb) {
    callbacks_.emplace_back(++last_id_, std::move(cb));
    return last_id_;
  }
  void remove(Id id) {
    for (auto it = callbacks_.begin(); it != callbacks_.end(); ++it)
      if (it->first == id) {
        callbacks_.erase(it);
        return;
      }
  }
  std::vector<std::pair<Id, std::function<void()>>> take() { return std::exchange(callbacks_, {}); }
  std::vector<std::pair<Id, std::function<void()>>> copy() const { return callbacks_; }
  bool empty() const noexcept { return callbacks_.empty(); }
  // Runs taken callbacks in order. One that throws is reported through the calling thread's error
  // handler (as gevent's hub.handle_error) and the rest still run.
  static void run(const std::vector<std::pair<Id, std::function<void()>>>& callbacks);

 private:
  std::vector<std::pair<Id, std::function<void()>>> callbacks_;
  Id last_id_ = 0;
};

}  // namespace fiberio::detail
