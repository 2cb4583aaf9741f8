// The state database as the sync engine's workers share it (issue 14:
// several mailboxes in flight, each on its own pair of connections).
//
// There is one SQLite connection (the database is opened with
// PRAGMA locking_mode = EXCLUSIVE, so that no other run can use it), and
// one worker at a time uses it: for the length of one call
// (`ctx.db->lookup(...)`), or from Context::write() to commit() or
// rollback() for a transaction.  The owner is a Context, not a thread: a
// worker's transaction may be opened on its APPEND thread and committed
// on its own.  With a single worker (the sequential pass) nobody waits.
#pragma once

#include <interimap/statedb.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <utility>

namespace interimap::detail::sync {

class SharedDb {
 public:
  explicit SharedDb(std::unique_ptr<StateDB> db) : db_(std::move(db)) {}

  StateDB& db() { return *db_; }
  // Waits until nobody else (no other owner) uses the database; nests.
  void acquire(const void* who) {
    std::unique_lock<std::mutex> lock(mutex_);
    free_.wait(lock, [&] { return owner_ == nullptr || owner_ == who; });
    owner_ = who;
    ++depth_;
  }
  void release(const void* who) noexcept {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (owner_ != who || depth_ == 0) return;
      if (--depth_ > 0) return;
      owner_ = nullptr;
    }
    free_.notify_all();
  }

 private:
  std::unique_ptr<StateDB> db_;
  std::mutex mutex_;
  std::condition_variable free_;
  const void* owner_ = nullptr;
  unsigned depth_ = 0;
};

// A Context's handle on the shared database: `handle->method(...)` holds
// it for the call, `*handle.lock()` for longer.
class DbHandle {
 public:
  class Locked {
   public:
    Locked(SharedDb& shared, const void* who) : shared_(&shared), who_(who) { shared_->acquire(who_); }
    Locked(Locked&& o) noexcept : shared_(std::exchange(o.shared_, nullptr)), who_(o.who_) {}
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    Locked& operator=(Locked&&) = delete;
    ~Locked() {
      if (shared_ != nullptr) shared_->release(who_);
    }
    StateDB* operator->() const { return &shared_->db(); }
    StateDB& operator*() const { return shared_->db(); }

   private:
    SharedDb* shared_;
    const void* who_;
  };

  DbHandle(std::shared_ptr<SharedDb> shared, const void* owner) : shared_(std::move(shared)), owner_(owner) {}
  DbHandle() = default;

  explicit operator bool() const { return shared_ != nullptr; }
  Locked operator->() const { return Locked(*shared_, owner_); }
  Locked lock() const { return Locked(*shared_, owner_); }
  // For a transaction (Context::write): held until release().
  StateDB& acquire() const {
    shared_->acquire(owner_);
    return shared_->db();
  }
  void release() const noexcept { shared_->release(owner_); }
  // The database without waiting: only where no worker can run (the
  // session's own calls between passes).
  StateDB& unshared() const { return shared_->db(); }
  const std::shared_ptr<SharedDb>& shared() const { return shared_; }

 private:
  std::shared_ptr<SharedDb> shared_;
  const void* owner_ = nullptr;
};

}  // namespace interimap::detail::sync
