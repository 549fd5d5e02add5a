// SPDX-License-Identifier: MIT
// strata/detail/parts/thread_registry.hpp: state an engine keeps per thread (a heap, a cache): found by one compare on the
// fast path, handed back to its engine when the thread exits, never to an engine destroyed meanwhile.
#pragma once

#include <cstdint>
#include <mutex>

#include <strata/build_config.h>
#include <strata/config.hpp>

// The static library's fast paths reach their thread-local state with the initial-exec model (one load off the
// thread pointer). A shared library keeps the default model: initial-exec variables would have to fit the static TLS
// block, and dlopen refuses a library whose do not. STRATA_NO_INITIAL_EXEC_TLS turns it off for a static library
// linked into a shared object that is itself loaded with dlopen.
#if (defined(__GNUC__) || defined(__clang__)) && !STRATA_SHARED_LIBRARY && !defined(STRATA_NO_INITIAL_EXEC_TLS)
#define STRATA_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))
#else
#define STRATA_TLS_INITIAL_EXEC
#endif

namespace strata::detail {

/// Thread stripes: stripe s < thread_stripes belongs to one live thread at a time, so that a thread can update what
/// is indexed by it (a counter, an arena choice) with plain relaxed loads and stores; threads past the first
/// thread_stripes share stripe thread_stripes. A thread gives its stripe back when it exits.
inline constexpr unsigned thread_stripes = 32;
extern thread_local unsigned t_thread_stripe;  // the thread's stripe + 1; 0 before its first use
unsigned claim_thread_stripe() noexcept;
/// The lock of the per-thread registry (thread exits hand states back under it): for fork() (lock_set).
std::mutex& thread_registry_lock() noexcept;
inline unsigned thread_stripe() noexcept {
  const unsigned s = t_thread_stripe;
  return STRATA_LIKELY(s != 0) ? s - 1 : claim_thread_stripe();
}

/// The id of no owner (ids count up from 1): what an unused entry holds, so that it matches no owner, not even one
/// whose memory is still all zero (the C API's default heap, read by its fast paths before it is made).
inline constexpr std::uint64_t no_owner_id = ~std::uint64_t{0};
/// One owner's state for the calling thread. Owner ids are never reused, so an entry left by a destroyed owner
/// never matches again.
struct thread_state_entry {
  std::uint64_t id = no_owner_id;
  void* state = nullptr;
};
/// The calling thread's states, direct-mapped by owner id: the fast paths' only thread-local access.
inline constexpr unsigned thread_state_ways = 8;
inline thread_local thread_state_entry thread_states[thread_state_ways] STRATA_TLS_INITIAL_EXEC = {};
/// The entry of the owner the thread used last, looked at first: one compare when a thread uses one owner.
inline thread_local thread_state_entry thread_state_last STRATA_TLS_INITIAL_EXEC = {};

/// An engine that keeps state per thread. Each thread's states are recorded in a thread-local registry (a thread
/// keeps states for up to 64 owners at once); at thread exit (after the thread's C++ thread_local destructors, which
/// may still use the states) each live owner gets its state back through thread_exit(). The thread that ends the
/// process with exit() keeps its states: the process is ending, and its atexit handlers and static destructors use
/// them as the thread did. Owners leave the registry before they go, so no thread hands a state to a destroyed one.
class per_thread_owner {
 public:
  per_thread_owner(const per_thread_owner&) = delete;
  per_thread_owner& operator=(const per_thread_owner&) = delete;

  /// This owner's id (never reused in the process).
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  /// The calling thread's state if this is the owner it used last, else nullptr: one compare.
  STRATA_ALWAYS_INLINE void* last_state() const noexcept {
    if (STRATA_UNLIKELY(thread_state_last.id != id_)) return nullptr;
    void* s = thread_state_last.state;
    if (s == nullptr) __builtin_unreachable();  // an entry with this owner's id always names a state
    return s;
  }
  /// The calling thread's state from the thread-local cache (the last one used, then one direct-mapped entry), or
  /// nullptr; a hit becomes the last one used.
  void* cached_state() const noexcept;
  /// The calling thread's state from its registry (a hit is cached), or nullptr when it has none.
  void* registered_state() const noexcept;
  /// Records `state` (not null) as the calling thread's and caches it. False when the thread has run its exit cleanup or keeps
  /// states for too many live owners: the caller then works without a state of its own.
  bool add_state(void* state) noexcept;
  /// Forgets the calling thread's state and returns it (nullptr when it had none, or the thread has exited).
  void* remove_state() noexcept;
  /// Whether the calling thread has run its exit cleanup (add_state() fails from then on).
  static bool thread_exited() noexcept;

 protected:
  per_thread_owner() noexcept;
  virtual ~per_thread_owner();
  /// Takes this owner out of the registry: once it returns, no exiting thread hands it a state. A derived class
  /// calls it first thing in its destructor (the base destructor calls it again, harmlessly).
  void leave() noexcept;
  /// Takes a new id (the owner stays live): from then on no thread finds or hands back a state it recorded under the
  /// old one. For an owner that has just freed every state (none may be in use meanwhile).
  void renew() noexcept;
  /// A thread that recorded `state` is exiting (called with the registry's lock held, while this owner is live).
  virtual void thread_exit(void* state) noexcept = 0;

 private:
  std::uint64_t id_;
  per_thread_owner* next_live_ = nullptr;
  per_thread_owner* prev_live_ = nullptr;
  bool live_ = false;
  friend struct thread_registry;
};

}  // namespace strata::detail
