// SPDX-License-Identifier: MIT
// lib/parts/thread_registry.cpp: the per-thread registry of states and the thread stripes (see thread_registry.hpp).
#include <strata/detail/parts/thread_registry.hpp>

#include <strata/detail/core/bits.hpp>

#include <atomic>
#include <mutex>

namespace strata::detail {

namespace {
std::atomic<std::uint64_t> g_next_id{1};

// Every live owner, for the thread-exit cleanup: a thread hands its states back only to owners still alive.
std::mutex& registry_lock() noexcept {
  static std::mutex m;
  return m;
}
per_thread_owner* g_live = nullptr;

// Set once the calling thread's registry has been torn down (thread exit): it records no state after that.
thread_local bool g_thread_exited STRATA_TLS_INITIAL_EXEC = false;
}  // namespace

/// The states of the calling thread, one per owner it used. Its destructor runs at thread exit.
struct thread_registry {
  struct entry {
    std::uint64_t id;
    per_thread_owner* owner;
    void* state;
  };
  static constexpr unsigned capacity = 64;
  entry entries[capacity] = {};
  unsigned count = 0;

  static bool live(const per_thread_owner* o, std::uint64_t id) noexcept {  // under registry_lock()
    for (const per_thread_owner* x = g_live; x != nullptr; x = x->next_live_)
      if (x == o && x->id_ == id) return true;
    return false;
  }

  bool add(std::uint64_t id, per_thread_owner* o, void* state) noexcept {
    if (count == capacity) {  // forget entries of owners destroyed since
      std::lock_guard<std::mutex> g(registry_lock());
      unsigned n = 0;
      for (unsigned i = 0; i < count; ++i)
        if (live(entries[i].owner, entries[i].id)) entries[n++] = entries[i];
      count = n;
    }
    if (count == capacity) return false;
    entries[count++] = entry{id, o, state};
    return true;
  }

  ~thread_registry() {
    g_thread_exited = true;
    std::lock_guard<std::mutex> g(registry_lock());
    for (unsigned i = 0; i < count; ++i)
      if (live(entries[i].owner, entries[i].id)) entries[i].owner->thread_exit(entries[i].state);
    count = 0;
    for (auto& t : thread_states) t = thread_state_entry{};
    thread_state_last = thread_state_entry{};
  }

  static thread_registry& local() noexcept {
    static thread_local thread_registry r;
    return r;
  }
};

std::mutex& thread_registry_lock() noexcept { return registry_lock(); }

per_thread_owner::per_thread_owner() noexcept : id_(g_next_id.fetch_add(1, std::memory_order_relaxed)) {
  std::lock_guard<std::mutex> g(registry_lock());
  next_live_ = g_live;
  if (g_live != nullptr) g_live->prev_live_ = this;
  g_live = this;
  live_ = true;
}

per_thread_owner::~per_thread_owner() { leave(); }

void per_thread_owner::leave() noexcept {
  std::lock_guard<std::mutex> g(registry_lock());
  if (!live_) return;
  live_ = false;
  if (prev_live_ != nullptr) prev_live_->next_live_ = next_live_;
  else g_live = next_live_;
  if (next_live_ != nullptr) next_live_->prev_live_ = prev_live_;
}

void per_thread_owner::renew() noexcept {
  std::lock_guard<std::mutex> g(registry_lock());
  id_ = g_next_id.fetch_add(1, std::memory_order_relaxed);
}

bool per_thread_owner::thread_exited() noexcept { return g_thread_exited; }

void* per_thread_owner::cached_state() const noexcept {
  if (thread_state_last.id == id_) return thread_state_last.state;
  const thread_state_entry& e = thread_states[id_ & (thread_state_ways - 1)];
  if (e.id != id_) return nullptr;
  thread_state_last = e;
  return e.state;
}

void* per_thread_owner::registered_state() const noexcept {
  if (g_thread_exited) return nullptr;
  const thread_registry& reg = thread_registry::local();
  for (unsigned i = 0; i < reg.count; ++i) {
    if (reg.entries[i].id == id_) {
      thread_states[id_ & (thread_state_ways - 1)] = thread_state_entry{id_, reg.entries[i].state};
      thread_state_last = thread_state_entry{id_, reg.entries[i].state};
      return reg.entries[i].state;
    }
  }
  return nullptr;
}

bool per_thread_owner::add_state(void* state) noexcept {
  STRATA_ASSERT(state != nullptr);
  if (g_thread_exited) return false;
  if (!thread_registry::local().add(id_, this, state)) return false;
  thread_states[id_ & (thread_state_ways - 1)] = thread_state_entry{id_, state};
  thread_state_last = thread_state_entry{id_, state};
  return true;
}

void* per_thread_owner::remove_state() noexcept {
  if (g_thread_exited) return nullptr;
  thread_registry& reg = thread_registry::local();
  void* state = nullptr;
  for (unsigned i = 0; i < reg.count; ++i) {
    if (reg.entries[i].id == id_) {
      state = reg.entries[i].state;
      reg.entries[i] = reg.entries[--reg.count];
      break;
    }
  }
  thread_state_entry& t = thread_states[id_ & (thread_state_ways - 1)];
  if (t.id == id_) t = thread_state_entry{};
  if (thread_state_last.id == id_) thread_state_last = thread_state_entry{};
  return state;
}

// ---- thread stripes ------------------------------------------------------------------------------------------------

thread_local unsigned t_thread_stripe = 0;

namespace {
std::mutex& stripe_mutex() {
  static auto* m = new std::mutex;  // never destroyed: threads may exit after static destruction began
  return *m;
}
std::uint32_t g_stripes_taken = 0;  // one bit per owned stripe; under stripe_mutex()
static_assert(thread_stripes == 32, "g_stripes_taken holds one bit per stripe");

// Gives the thread's stripe back when the thread exits.
struct stripe_owner {
  ~stripe_owner() {
    const unsigned s = t_thread_stripe;
    t_thread_stripe = thread_stripes + 1;  // what the rest of this thread's exit does uses the shared stripe
    if (s != 0 && s - 1 < thread_stripes) {
      std::lock_guard<std::mutex> g(stripe_mutex());
      g_stripes_taken &= ~(std::uint32_t{1} << (s - 1));
    }
  }
};
}  // namespace

unsigned claim_thread_stripe() noexcept {
  static thread_local stripe_owner owner;  // constructed here, on the thread's first claim
  (void)owner;
  unsigned s = thread_stripes;
  {
    std::lock_guard<std::mutex> g(stripe_mutex());
    if (g_stripes_taken != ~std::uint32_t{0}) {
      s = lowest_bit(static_cast<std::uint32_t>(~g_stripes_taken));
      g_stripes_taken |= std::uint32_t{1} << s;
    }
  }
  t_thread_stripe = s + 1;
  return s;
}

}  // namespace strata::detail
