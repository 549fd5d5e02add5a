// SPDX-License-Identifier: MIT
// lib/parts/thread_registry.cpp: the per-thread registry of states and the thread stripes (see thread_registry.hpp).
#include <strata/detail/parts/thread_registry.hpp>

#include <strata/detail/core/bits.hpp>

#include <atomic>
#include <mutex>

#include "../os/os.hpp"

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

// The thread-exit hooks (os::make_thread_exit_hook) of the registry and of the thread stripes, made once (with the
// first owner, and the first stripe) and deleted when the library is unloaded (at exit too: the process is ending).
// A thread_local object's destructor would do the same work, but registering it takes memory from malloc (glibc's
// list of a thread's destructors) at the thread's first allocation, and glibc aborts the process when it gets none:
// a thread that started while another had taken all memory died at its first malloc instead of getting NULL.
std::atomic<int> g_registry_hook{-1};
std::atomic<int> g_stripe_hook{-1};
struct hooks_dropper {
  ~hooks_dropper() {
    os::drop_thread_exit_hook(g_registry_hook.exchange(-1));
    os::drop_thread_exit_hook(g_stripe_hook.exchange(-1));
  }
} g_hooks_dropper;
}  // namespace

/// The states of the calling thread, one per owner it used. Trivially destructible (no registration at the thread's
/// first use): its teardown, exit_thread(), runs from the registry's thread-exit hook, armed with its first entry.
struct thread_registry {
  struct entry {
    std::uint64_t id;
    per_thread_owner* owner;
    void* state;
  };
  static constexpr unsigned capacity = 64;
  entry entries[capacity] = {};
  unsigned count = 0;
  bool armed = false;  // the thread-exit hook is armed for this thread

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
    if (!armed) {
      // The entry first: where arming takes memory (a process with more than 32 thread-specific keys), the heap
      // that allocation reaches finds this entry instead of making another.
      armed = true;
      if (!os::arm_thread_exit_hook(g_registry_hook.load(std::memory_order_acquire), this)) {
        armed = false;
        for (unsigned i = 0; i < count; ++i)
          if (entries[i].id == id) entries[i] = entries[--count];
        return false;
      }
    }
    return true;
  }

  // The thread is exiting (its registry's hook): each live owner gets its state back.
  void exit_thread() noexcept {
    g_thread_exited = true;
    std::lock_guard<std::mutex> g(registry_lock());
    for (unsigned i = 0; i < count; ++i)
      if (live(entries[i].owner, entries[i].id)) entries[i].owner->thread_exit(entries[i].state);
    count = 0;
    for (auto& t : thread_states) t = thread_state_entry{};
    thread_state_last = thread_state_entry{};
  }
  static void exit_hook(void* r) noexcept { static_cast<thread_registry*>(r)->exit_thread(); }

  static thread_registry& local() noexcept {
    static thread_local thread_registry r;
    return r;
  }
};

std::mutex& thread_registry_lock() noexcept { return registry_lock(); }

per_thread_owner::per_thread_owner() noexcept : id_(g_next_id.fetch_add(1, std::memory_order_relaxed)) {
  std::lock_guard<std::mutex> g(registry_lock());
  if (g_registry_hook.load(std::memory_order_relaxed) < 0)  // no hook: add_state() fails, owners work without
    g_registry_hook.store(os::make_thread_exit_hook(&thread_registry::exit_hook), std::memory_order_release);
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

// Gives the thread's stripe back when the thread exits (the stripe hook).
void release_thread_stripe(void*) noexcept {
  const unsigned s = t_thread_stripe;
  t_thread_stripe = thread_stripes + 1;  // what the rest of this thread's exit does uses the shared stripe
  if (s != 0 && s - 1 < thread_stripes) {
    std::lock_guard<std::mutex> g(stripe_mutex());
    g_stripes_taken &= ~(std::uint32_t{1} << (s - 1));
  }
}
}  // namespace

unsigned claim_thread_stripe() noexcept {
  unsigned s = thread_stripes;
  {
    std::lock_guard<std::mutex> g(stripe_mutex());
    if (g_stripe_hook.load(std::memory_order_relaxed) < 0)
      g_stripe_hook.store(os::make_thread_exit_hook(&release_thread_stripe), std::memory_order_release);
    // A stripe of its own only for a thread that gives it back at its exit; else the shared one, from now on.
    if (g_stripes_taken != ~std::uint32_t{0} &&
        os::arm_thread_exit_hook(g_stripe_hook.load(std::memory_order_relaxed), &t_thread_stripe)) {
      s = lowest_bit(static_cast<std::uint32_t>(~g_stripes_taken));
      g_stripes_taken |= std::uint32_t{1} << s;
    }
  }
  t_thread_stripe = s + 1;
  return s;
}

}  // namespace strata::detail
