// SPDX-License-Identifier: MIT
// strata/detail/core/sync.hpp: the locks and counters a strategy's synchronized and unsynchronized forms share, so that
// one template serves both (Sync: a real lock, atomic counters; !Sync: no lock, plain counters).
#pragma once

#include <atomic>
#include <mutex>
#include <thread>
#include <type_traits>

#include <strata/config.hpp>

namespace strata::detail {

/// A test-and-test-and-set lock for short critical sections; yields when the holder seems preempted.
class spin_lock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0; locked_.exchange(true, std::memory_order_acquire);) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins > 64) std::this_thread::yield();
#if defined(__x86_64__) || defined(__i386__)
        else __builtin_ia32_pause();
#endif
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

/// The lock of a form that is used by one thread at a time: nothing.
struct null_lock {
  void lock() noexcept {}
  bool try_lock() noexcept { return true; }
  void unlock() noexcept {}
};

/// `Lock` when Sync, else null_lock.
template <bool Sync, class Lock = std::mutex>
using lock_if = std::conditional_t<Sync, Lock, null_lock>;

/// Locks held together across fork(): take_all() holds every one of them at its end, so that the child process, which
/// has only the forking thread, finds none held by a thread it does not have. It never waits while holding one: a
/// lock it cannot take at once makes it give back what it took, yield, and start again. So it cannot deadlock with
/// the library's own paths, whatever order they nest the locks in.
class lock_set {
 public:
  static constexpr unsigned capacity = 24;
  /// Adds l (a lock with try_lock() and unlock()); the owner knows its locks, fewer than `capacity`.
  template <class Lock>
  void add(Lock& l) noexcept {
    STRATA_ASSERT(count_ < capacity);
    entries_[count_++] = entry{&l, [](void* x) noexcept { return static_cast<Lock*>(x)->try_lock(); },
                               [](void* x) noexcept { static_cast<Lock*>(x)->unlock(); }};
  }
  void take_all() noexcept {
    for (;;) {
      unsigned held = 0;
      while (held < count_ && entries_[held].try_lock(entries_[held].lock)) ++held;
      if (held == count_) return;
      while (held > 0) --held, entries_[held].unlock(entries_[held].lock);
      std::this_thread::yield();
    }
  }
  void give_all() noexcept {
    for (unsigned i = count_; i-- > 0;) entries_[i].unlock(entries_[i].lock);
  }
  void clear() noexcept { count_ = 0; }

 private:
  struct entry {
    void* lock;
    bool (*try_lock)(void*) noexcept;
    void (*unlock)(void*) noexcept;
  };
  entry entries_[capacity] = {};
  unsigned count_ = 0;
};

/// A counter: atomic when Sync (read without the lock by stats()), else plain.
template <bool Sync, class T>
using counter_if = std::conditional_t<Sync, std::atomic<T>, T>;

/// c += v from any number of threads at once (an atomic counter takes a relaxed fetch_add).
template <class T, class U>
void counter_add(T& c, U v) noexcept {
  if constexpr (std::is_arithmetic_v<T>) c += static_cast<T>(v);
  else c.fetch_add(static_cast<typename T::value_type>(v), std::memory_order_relaxed);
}
/// c += v where writers are serialised (under a lock, or one owner thread): a load and a store, no read-modify-write.
template <class T, class U>
void counter_add_serialised(T& c, U v) noexcept {
  if constexpr (std::is_arithmetic_v<T>) c += static_cast<T>(v);
  else c.store(static_cast<typename T::value_type>(c.load(std::memory_order_relaxed) + v), std::memory_order_relaxed);
}
/// The counter's value (relaxed: a snapshot).
template <class T>
auto counter_read(const T& c) noexcept {
  if constexpr (std::is_arithmetic_v<T>) return c;
  else return c.load(std::memory_order_relaxed);
}

}  // namespace strata::detail
