// Both sides of a two-sided step at once: the engine's one helper thread.
#pragma once

#include <interimap/statedb.hpp>

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace interimap::detail::sync {

// Runs fn(Local) on a helper thread and fn(Remote) on this one, so that both
// servers work at once; rethrows the first failure (local first).  The
// helper thread lives as long as the session: creating a thread per call
// cost more than the rest of a no-op poll (clone, stack, exit).  A nested
// call (from within fn) runs both halves on the calling thread.
class BothSides {
 public:
  BothSides() = default;
  BothSides(const BothSides&) = delete;
  BothSides& operator=(const BothSides&) = delete;
  ~BothSides() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  template <class F>
  void run(F&& fn) {
    std::exception_ptr local_error, remote_error;
    auto local = [&]() noexcept {
      try {
        fn(Side::Local);
      } catch (...) {
        local_error = std::current_exception();
      }
    };
    bool nested;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      nested = busy_;
      if (!nested) {
        busy_ = true;
        task_ = local;
        done_ = false;
      }
    }
    if (nested) {
      local();
    } else {
      if (!thread_.joinable()) thread_ = std::thread(&BothSides::thread_main, static_cast<void*>(this));
      wake_.notify_one();
    }
    try {
      fn(Side::Remote);
    } catch (...) {
      remote_error = std::current_exception();
    }
    if (!nested) {
      std::unique_lock<std::mutex> lock(mutex_);
      finished_.wait(lock, [this] { return done_; });
      busy_ = false;
    }
    if (local_error) std::rethrow_exception(local_error);
    if (remote_error) std::rethrow_exception(remote_error);
  }

 private:
  // The thread's entry point takes no type of ours: std::thread's
  // instantiations have libstdc++'s default visibility whatever their
  // arguments, and would export this private class's name.
  static void thread_main(void* self) { static_cast<BothSides*>(self)->loop(); }
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return quit_ || task_ != nullptr; });
      if (task_ == nullptr) return;  // quit_, nothing pending
      std::function<void()> task = std::move(task_);
      task_ = nullptr;
      lock.unlock();
      task();  // noexcept: errors are captured for run()
      lock.lock();
      done_ = true;
      finished_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::function<void()> task_;
  bool busy_ = false;  // a run() is in progress
  bool done_ = false;  // the helper finished the current task
  bool quit_ = false;
  std::thread thread_;
};

}  // namespace interimap::detail::sync
