// SPDX-License-Identifier: MIT
// tests/thread_cache_resource_test.cpp: thread_cache_resource beyond the conformance suite: many threads on few cores,
// producers and consumers, objects that outlive their threads, thousands of short-lived threads, two instances on the
// same threads, misuse (on the owning thread and across threads), size queries, alignment, exact statistics across
// threads, upstream failure, destruction with threads alive, resize.
#include <strata/thread_cache_resource.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#if defined(__linux__)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <strata/detail/core/math.hpp>
#include <strata/detail/ds/block_map.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

#include "os/os.hpp"
#include "support.hpp"

using strata::cache_tier;
using strata::thread_cache_options;
using strata::thread_cache_resource;
using strata::testing::fault_injecting_resource;
using strata::testing::recording_resource;
using strata_test::any_size;
using strata_test::check_error;
using strata_test::check_unchanged;
using strata_test::error_capture;
using strata_test::rng;

namespace strata {
/// Failed checks on an error kind print its name (found by argument-dependent lookup).
inline doctest::String toString(error_kind kind) { return to_string(kind); }
inline doctest::String toString(cache_tier t) {
  return t == cache_tier::thread ? "thread" : t == cache_tier::shared ? "shared" : "upstream";
}
}  // namespace strata

namespace {
constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t max_align = alignof(std::max_align_t);
constexpr cache_tier all_tiers[] = {cache_tier::thread, cache_tier::shared, cache_tier::upstream};

std::size_t index_of(cache_tier t) { return static_cast<std::size_t>(t); }

/// A live object in a test's own bookkeeping.
struct item {
  char* p;
  std::size_t size;
  std::size_t alignment;
  std::uint64_t seed;
};

/// Writes an object's pattern: every byte up to 1 KiB, every 61st byte (and the last) above.
void fill(const item& b) {
  if (b.size <= KiB)
    strata_test::fill_pattern(b.p, b.size, b.seed);
  else
    strata_test::fill_sparse(b.p, b.size, b.seed, 61);
}
bool intact(const item& b) {
  return b.size <= KiB ? strata_test::check_pattern(b.p, b.size, b.seed)
                       : strata_test::check_sparse(b.p, b.size, b.seed, 61);
}

/// Allocates and fills an object.
item make(std::pmr::memory_resource& r, std::size_t size, std::size_t alignment, std::uint64_t seed) {
  item b{static_cast<char*>(r.allocate(size, alignment)), size, alignment, seed};
  fill(b);
  return b;
}

/// Checks an object's pattern and frees it; false when the pattern was damaged.
bool release(std::pmr::memory_resource& r, const item& b) {
  const bool ok = intact(b);
  r.deallocate(b.p, b.size, b.alignment);
  return ok;
}


/// A thread that stays alive between tasks: run() hands it one and waits until it is done, so a test decides exactly
/// which thread does what and when (and which threads are still alive when something happens).
class worker {
 public:
  worker() : thread_([this] { loop(); }) {}
  ~worker() { join(); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  void run(std::function<void()> task) {
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = std::move(task);
    pending_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return !pending_; });
  }
  /// Lets the thread exit (its thread-local state is destroyed) and waits for it.
  void join() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return pending_ || stop_; });
      if (pending_) {
        std::function<void()> task = std::move(task_);
        lock.unlock();
        task();
        lock.lock();
        pending_ = false;
        cv_.notify_all();
      } else {
        return;
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void()> task_;
  bool pending_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: started once the rest is ready
};

/// A reusable barrier for a fixed number of threads (C++17 has none).
class barrier {
 public:
  explicit barrier(std::size_t n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t generation = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t n_;
  std::size_t arrived_ = 0;
  std::uint64_t generation_ = 0;
};

/// A vector of objects shared between threads.
struct hand_off {
  std::mutex mutex;
  std::vector<item> items;
  void push(const item& b) {
    std::lock_guard<std::mutex> lock(mutex);
    items.push_back(b);
  }
  bool pop(item& out) {
    std::lock_guard<std::mutex> lock(mutex);
    if (items.empty()) return false;
    out = items.back();
    items.pop_back();
    return true;
  }
};

/// What the resource says it holds matches what its upstream handed out. The large-request ledger's own table
/// (upstream memory too) is not counted in bytes_held, as in the other strata resources: a few KiB of slack.
void check_held(const recording_resource& up, const thread_cache_resource& r) {
  const std::size_t held = r.stats().bytes_held, live = up.live_bytes();
  CAPTURE(held);
  CAPTURE(live);
  CHECK(live >= held);
  CHECK(live - held <= 16 * KiB);
}

/// Sum of the stats of the three tiers, field by field, equals stats().
void check_tiers_sum(const thread_cache_resource& r) {
  strata::resource_stats sum{};
  for (cache_tier t : all_tiers) {
    const auto s = r.tier_stats(t);
    sum.bytes_in_use += s.bytes_in_use;
    sum.bytes_held += s.bytes_held;
    sum.bytes_resident += s.bytes_resident;
    sum.allocations += s.allocations;
    sum.deallocations += s.deallocations;
    sum.failed_allocations += s.failed_allocations;
    sum.upstream_allocations += s.upstream_allocations;
    sum.upstream_deallocations += s.upstream_deallocations;
  }
  const auto s = r.stats();
  CHECK(sum.bytes_in_use == s.bytes_in_use);
  CHECK(sum.bytes_held == s.bytes_held);
  CHECK(sum.bytes_resident == s.bytes_resident);
  CHECK(sum.allocations == s.allocations);
  CHECK(sum.deallocations == s.deallocations);
  CHECK(sum.failed_allocations == s.failed_allocations);
  CHECK(sum.upstream_allocations == s.upstream_allocations);
  CHECK(sum.upstream_deallocations == s.upstream_deallocations);
}
}  // namespace

// ---- many threads --------------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: 64 threads on two cores churn mixed sizes in every tier, contents checked") {
  recording_resource up(strata::default_page_resource());
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  REQUIRE(small_max < 16 * KiB);
  constexpr int threads = 64;
  const std::size_t ops = strata_test::scaled(3000);
  hand_off passed;  // allocated by one thread, freed by another
  std::atomic<std::uint64_t> allocations{0}, corrupted{0}, misaligned{0};
  std::atomic<std::uint64_t> per_tier[3] = {};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      rng g(0x64000000u + static_cast<std::uint64_t>(t));
      std::vector<item> mine;
      std::uint64_t made = 0, bad = 0, tiers[3] = {0, 0, 0};
      auto pick_size = [&]() -> std::size_t {
        const std::uint64_t k = g.next() % 1000;
        if (k < 750) return g.between(1, 256);
        if (k < 930) return g.between(257, small_max);
        if (k < 995) return g.between(small_max + 1, 16 * KiB);
        return g.between(shared_max + 1, shared_max + 64 * KiB);
      };
      for (std::size_t i = 0; i < ops; ++i) {
        const std::uint64_t k = g.next() % 100;
        if (mine.empty() || (k < 50 && mine.size() < 64)) {
          const std::size_t size = pick_size();
          const std::size_t alignment = g.next() % 8 == 0 ? std::size_t{1} << g.between(0, 7) : max_align;
          const item b = make(r, size, alignment, g.next());
          if (!strata::detail::is_aligned(b.p, alignment)) ++misaligned;
          ++made;
          ++tiers[index_of(r.tier_of(size, alignment))];
          mine.push_back(b);
        } else if (k < 85) {
          const std::size_t j = g.next() % mine.size();
          if (!release(r, mine[j])) ++bad;
          mine[j] = mine.back();
          mine.pop_back();
        } else if (k < 93) {
          passed.push(mine.back());
          mine.pop_back();
        } else {
          item b{};
          if (passed.pop(b) && !release(r, b)) ++bad;
        }
      }
      for (const item& b : mine)
        if (!release(r, b)) ++bad;
      allocations += made;
      corrupted += bad;
      for (std::size_t x = 0; x < 3; ++x) per_tier[x] += tiers[x];
    });
  }
  for (auto& th : pool) th.join();
  for (const item& b : passed.items)
    if (!release(r, b)) ++corrupted;
  MESSAGE("allocations per tier: " << per_tier[0].load() << " thread, " << per_tier[1].load() << " shared, "
                                   << per_tier[2].load() << " upstream; " << r.heap_count() << " heaps");
  CHECK(corrupted.load() == 0);
  CHECK(misaligned.load() == 0);
  CHECK(per_tier[1].load() > 0);
  CHECK(per_tier[2].load() > 0);
  CHECK(r.check_invariants());
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.allocations == allocations.load());
  CHECK(s.deallocations == allocations.load());
  for (cache_tier t : all_tiers) {
    CAPTURE(t);
    CHECK(r.tier_stats(t).allocations == per_tier[index_of(t)].load());
    CHECK(r.tier_stats(t).bytes_in_use == 0);
  }
  check_tiers_sum(r);
  r.trim();
  CHECK(r.check_invariants());
  check_held(up, r);
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: producers and consumers, every object freed by another thread") {
  recording_resource up(strata::default_page_resource());
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  constexpr int producers = 3, consumers = 3;
  const std::size_t per_producer = strata_test::scaled(15000);
  std::mutex queue_mutex;
  std::vector<item> queue;
  std::atomic<int> producing{producers};
  std::atomic<std::uint64_t> consumed{0}, corrupted{0}, peak_held{0};
  std::vector<std::thread> pool;
  for (int p = 0; p < producers; ++p) {
    pool.emplace_back([&, p] {
      rng g(0x9D0D0000u + static_cast<std::uint64_t>(p));
      for (std::size_t i = 0; i < per_producer; ++i) {
        const std::uint64_t k = g.next() % 1000;
        const std::size_t size = k < 850   ? g.between(1, 512)
                                 : k < 970 ? g.between(513, small_max)
                                 : k < 995 ? g.between(small_max + 1, 4 * small_max)
                                           : g.between(shared_max + 1, shared_max + 4096);
        const item b = make(r, size, max_align, (static_cast<std::uint64_t>(p) << 32) | i);
        std::lock_guard<std::mutex> lock(queue_mutex);
        queue.push_back(b);
      }
      producing.fetch_sub(1);
    });
  }
  for (int c = 0; c < consumers; ++c) {
    pool.emplace_back([&] {
      std::vector<item> batch;
      for (;;) {
        bool done = false;
        {
          std::lock_guard<std::mutex> lock(queue_mutex);
          batch.swap(queue);
          done = producing.load() == 0;  // read after the swap, under the lock: the last push is in hand
        }
        if (batch.empty()) {
          if (done) break;
          std::this_thread::yield();
          continue;
        }
        std::uint64_t bad = 0;
        for (const item& b : batch)
          if (!release(r, b)) ++bad;
        corrupted += bad;
        consumed += batch.size();
        batch.clear();
        const std::uint64_t held = r.stats().bytes_held;  // stats from any thread, while others work
        std::uint64_t seen = peak_held.load();
        while (held > seen && !peak_held.compare_exchange_weak(seen, held)) {
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  const std::uint64_t total = producers * per_producer;
  CHECK(consumed.load() == total);
  CHECK(corrupted.load() == 0);
  CHECK(r.check_invariants());
  auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.allocations == total);
  CHECK(s.deallocations == total);
  const std::size_t held_before_trim = s.bytes_held;
  r.trim();
  CHECK(r.check_invariants());
  s = r.stats();
  MESSAGE("bytes held: at most " << peak_held.load() / KiB << " KiB seen while running, " << held_before_trim / KiB
                                 << " KiB after, " << s.bytes_held / KiB << " KiB after trim()");
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_held <= 2 * MiB);
  check_held(up, r);
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: objects outlive the threads that made them, later threads adopt their blocks") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  constexpr std::size_t classes[] = {48, 256, 1024};
  constexpr int makers = 4;
  const std::size_t per_class = 2000;
  std::vector<std::vector<item>> made(makers), extras(makers);

  // A: four threads allocate, then exit with all their objects alive.
  {
    std::vector<std::thread> pool;
    for (int t = 0; t < makers; ++t) {
      pool.emplace_back([&, t] {
        const auto base = static_cast<std::uint64_t>(t) << 40;
        for (std::size_t i = 0; i < per_class; ++i)
          for (std::size_t c : classes) made[static_cast<std::size_t>(t)].push_back(make(r, c, 8, base + i * 8 + c));
        for (std::size_t i = 0; i < 20; ++i)
          extras[static_cast<std::size_t>(t)].push_back(make(r, 20000 + i * 16, max_align, base + 7 * i + 1));
        for (std::size_t i = 0; i < 2; ++i)
          extras[static_cast<std::size_t>(t)].push_back(make(r, shared_max + 1000 + i, max_align, base + 3 * i + 2));
      });
    }
    for (auto& th : pool) th.join();
  }
  std::size_t live = 0, bytes = 0;
  for (int t = 0; t < makers; ++t) {
    for (const auto* v : {&made[static_cast<std::size_t>(t)], &extras[static_cast<std::size_t>(t)]}) {
      live += v->size();
      for (const item& b : *v) bytes += r.round_size(b.size, b.alignment);
    }
  }
  CHECK(r.check_invariants());
  auto s = r.stats();
  CHECK(s.live_allocations() == live);
  CHECK(s.bytes_in_use == bytes);
  const std::size_t held_after_making = s.bytes_held;

  // B: other threads, and the main thread, free three objects in four (every fourth stays, so no block empties).
  std::atomic<std::uint64_t> corrupted{0};
  auto free_share = [&](std::size_t share, bool with_extras) {
    std::uint64_t bad = 0;
    for (int t = 0; t < makers; ++t) {
      const auto& v = made[static_cast<std::size_t>(t)];
      for (std::size_t j = 0; j < v.size(); ++j)
        if (j % 4 == share && !release(r, v[j])) ++bad;
      if (with_extras)
        for (const item& b : extras[static_cast<std::size_t>(t)])
          if (!release(r, b)) ++bad;
    }
    corrupted += bad;
  };
  {
    std::thread x([&] { free_share(1, true); });
    std::thread y([&] { free_share(2, false); });
    free_share(3, false);
    x.join();
    y.join();
  }
  std::vector<item> kept;
  for (int t = 0; t < makers; ++t) {
    const auto& v = made[static_cast<std::size_t>(t)];
    for (std::size_t j = 0; j < v.size(); j += 4) kept.push_back(v[j]);
  }
  std::size_t kept_bytes = 0;
  for (const item& b : kept) kept_bytes += b.size;
  CHECK(corrupted.load() == 0);
  CHECK(r.check_invariants());
  s = r.stats();
  CHECK(s.live_allocations() == kept.size());
  CHECK(s.bytes_in_use == kept_bytes);
  const std::size_t held_after_freeing = s.bytes_held;

  // C: two new threads allocate as many objects of each class as were freed: the abandoned blocks have room for them.
  std::vector<std::vector<item>> fresh(2);
  {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < 2; ++t) {
      pool.emplace_back([&, t] {
        for (std::size_t i = 0; i < makers * per_class * 3 / 4 / 2; ++i)
          for (std::size_t c : classes) fresh[t].push_back(make(r, c, 8, (std::uint64_t{9 + t} << 40) + i * 8 + c));
      });
    }
    for (auto& th : pool) th.join();
  }
  std::size_t damaged = 0;
  std::set<char*> addresses;
  auto look = [&](const item& b) {
    damaged += !intact(b);
    addresses.insert(b.p);
  };
  for (const item& b : kept) look(b);
  for (const auto& v : fresh)
    for (const item& b : v) look(b);
  CHECK(damaged == 0);
  CHECK(addresses.size() == kept.size() + fresh[0].size() + fresh[1].size());
  CHECK(r.check_invariants());
  s = r.stats();
  CHECK(s.live_allocations() == addresses.size());
  MESSAGE("bytes held: " << held_after_making / KiB << " KiB after the makers exited, " << held_after_freeing / KiB
                         << " KiB after three in four were freed, " << s.bytes_held / KiB
                         << " KiB after new threads allocated as many (without adoption: some 7 MiB more)");
  CHECK(s.bytes_held <= held_after_freeing + MiB);

  // D: the main thread frees everything.
  for (const item& b : kept) damaged += !release(r, b);
  for (const auto& v : fresh)
    for (const item& b : v) damaged += !release(r, b);
  CHECK(damaged == 0);
  r.trim();
  CHECK(r.check_invariants());
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_held <= 2 * MiB);
  check_held(up, r);
  CHECK(errors.count() == 0);
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: 10,000 short-lived threads reuse heaps, memory does not grow with them") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t total_threads = 10000;
  constexpr std::size_t batch = 8;
  hand_off to_main;
  std::atomic<std::uint64_t> allocations{0}, corrupted{0};
  std::size_t max_heaps = 0, held_first = 0, held_last = 0;
  for (std::size_t started = 0; started < total_threads; started += batch) {
    std::vector<std::thread> pool;
    for (std::size_t k = 0; k < batch; ++k) {
      pool.emplace_back([&, id = started + k] {
        rng g(id * 0x9E3779B9u + 1);
        std::vector<item> v;
        v.push_back(make(r, g.between(1, 32), max_align, g.next()));
        v.push_back(make(r, g.between(33, 200), max_align, g.next()));
        v.push_back(make(r, g.between(201, 1024), max_align, g.next()));
        v.push_back(make(r, g.between(1025, small_max), max_align, g.next()));
        v.push_back(make(r, g.between(small_max + 1, 3 * small_max), max_align, g.next()));
        if (id % 97 == 0) v.push_back(make(r, shared_max + 1 + id, max_align, g.next()));
        allocations += v.size();
        std::uint64_t bad = 0;
        for (std::size_t j = 0; j < v.size(); ++j) {
          if (j % 2 == 0) {
            if (!release(r, v[j])) ++bad;  // freed here
          } else {
            to_main.push(v[j]);  // freed by the main thread, after this thread is gone
          }
        }
        corrupted += bad;
      });
    }
    for (auto& th : pool) th.join();
    max_heaps = std::max(max_heaps, r.heap_count());
    for (const item& b : to_main.items)
      if (!release(r, b)) ++corrupted;
    to_main.items.clear();
    const std::size_t done = started + batch;
    if (done == 1000 || done == total_threads) {
      r.trim();
      CHECK(r.check_invariants());
      const auto s = r.stats();
      CHECK(s.bytes_in_use == 0);
      CHECK(s.live_allocations() == 0);
      (done == 1000 ? held_first : held_last) = s.bytes_held;
    }
  }
  MESSAGE("at most " << max_heaps << " heaps; bytes held after trim(): " << held_first / KiB << " KiB after 1,000 threads, "
                     << held_last / KiB << " KiB after " << total_threads << "; " << r.heap_count() << " heaps now");
  CHECK(corrupted.load() == 0);
  CHECK(errors.count() == 0);
  CHECK(max_heaps <= 64);
  CHECK(r.heap_count() <= 64);
  CHECK(held_last <= held_first + 256 * KiB);
  CHECK(held_last <= 2 * MiB);
  const auto s = r.stats();
  CHECK(s.allocations == allocations.load());
  CHECK(s.deallocations == allocations.load());
  check_held(up, r);
  CHECK(r.check_invariants());
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

// ---- instances and threads -----------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: two instances on the same threads, one destroyed while those threads live on") {
  error_capture errors;
  // The C++ heap behind both: AddressSanitizer sees any use of an instance's memory after it is gone.
  recording_resource up_a, up_b;
  std::optional<thread_cache_resource> a(std::in_place, &up_a);
  std::optional<thread_cache_resource> b(std::in_place, &up_b);
  const std::size_t small_max = a->max_size(cache_tier::thread);
  constexpr std::size_t threads = 4;
  const std::size_t ops = strata_test::scaled(2000);
  barrier sync(threads + 1);
  struct tagged {
    bool from_a;
    item object;
  };
  std::mutex inbox_mutex[threads];
  std::vector<tagged> inbox[threads];  // objects handed to thread i, to be freed through the instance they came from
  std::atomic<std::uint64_t> corrupted{0}, live_a{0}, bytes_a{0}, live_b{0}, bytes_b{0};
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      rng g(0xAB000000u + t);
      std::vector<item> mine_a, mine_b;
      std::uint64_t bad = 0;
      auto pick = [&] { return g.next() % 10 == 0 ? g.between(small_max + 1, 3 * small_max) : g.between(1, 600); };
      // 1: allocations from both, interleaved; frees through the right instance, some by the next thread.
      for (std::size_t i = 0; i < ops; ++i) {
        mine_a.push_back(make(*a, pick(), max_align, g.next()));
        mine_b.push_back(make(*b, pick(), max_align, g.next()));
        const std::uint64_t k = g.next() % 10;
        if (k < 4) {
          const std::size_t j = g.next() % mine_a.size();
          bad += !release(*a, mine_a[j]);
          mine_a[j] = mine_a.back();
          mine_a.pop_back();
          const std::size_t m = g.next() % mine_b.size();
          bad += !release(*b, mine_b[m]);
          mine_b[m] = mine_b.back();
          mine_b.pop_back();
        } else if (k < 6) {
          const std::size_t next = (t + 1) % threads;
          std::lock_guard<std::mutex> lock(inbox_mutex[next]);
          inbox[next].push_back(tagged{true, mine_a.back()});
          inbox[next].push_back(tagged{false, mine_b.back()});
          mine_a.pop_back();
          mine_b.pop_back();
        }
      }
      sync.arrive_and_wait();  // everything handed over
      for (const tagged& x : inbox[t]) bad += !release(x.from_a ? *a : *b, x.object);
      inbox[t].clear();
      live_a += mine_a.size();
      live_b += mine_b.size();
      for (const item& x : mine_a) bytes_a += a->round_size(x.size, x.alignment);
      for (const item& x : mine_b) bytes_b += b->round_size(x.size, x.alignment);
      sync.arrive_and_wait();  // 2: the main thread destroys `a` now, with these threads alive
      sync.arrive_and_wait();
      // 3: `a` is gone (mine_a died with it); keep working with `b`, then free everything and exit.
      for (std::size_t i = 0; i < ops; ++i) {
        mine_b.push_back(make(*b, pick(), max_align, g.next()));
        if (g.next() % 2 == 0) {
          const std::size_t m = g.next() % mine_b.size();
          bad += !release(*b, mine_b[m]);
          mine_b[m] = mine_b.back();
          mine_b.pop_back();
        }
      }
      for (const item& x : mine_b) bad += !release(*b, x);
      corrupted += bad;
    });
  }
  sync.arrive_and_wait();
  sync.arrive_and_wait();
  // Quiet: the threads wait. Both instances hold exactly what the threads kept.
  CHECK(a->check_invariants());
  CHECK(b->check_invariants());
  CHECK(a->stats().live_allocations() == live_a.load());
  CHECK(a->stats().bytes_in_use == bytes_a.load());
  CHECK(b->stats().live_allocations() == live_b.load());
  CHECK(b->stats().bytes_in_use == bytes_b.load());
  CHECK(live_a.load() > 0);
  a.reset();
  CHECK(up_a.live_bytes() == 0);
  CHECK(up_a.mismatches() == 0);
  sync.arrive_and_wait();
  for (auto& th : pool) th.join();
  CHECK(corrupted.load() == 0);
  CHECK(errors.count() == 0);
  CHECK(b->check_invariants());
  const auto s = b->stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  check_held(up_b, *b);
  b.reset();
  CHECK(up_b.live_bytes() == 0);
  CHECK(up_b.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: an instance built where a destroyed one stood is new to the threads that used it") {
  error_capture errors;
  recording_resource up;  // the C++ heap: AddressSanitizer sees use of the old instance's memory
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  const std::size_t small_max = holder->max_size(cache_tier::thread);
  constexpr std::size_t threads = 3;
  std::vector<std::unique_ptr<worker>> workers;
  for (std::size_t t = 0; t < threads; ++t) workers.push_back(std::make_unique<worker>());
  std::vector<std::vector<item>> objects(threads);
  const std::size_t sizes[] = {16, 48, 100, 256, 1000, 3000, small_max, small_max + 1, 40000};
  // Each thread allocates; then each frees half of the next one's objects (cross-thread frees, possibly batched and
  // not yet published) and keeps the rest alive.
  for (std::size_t t = 0; t < threads; ++t) {
    workers[t]->run([&, t] {
      for (std::size_t i = 0; i < 300; ++i)
        objects[t].push_back(make(*holder, sizes[i % 9], max_align, (std::uint64_t{t} << 32) + i));
    });
  }
  std::size_t bad = 0;
  for (std::size_t t = 0; t < threads; ++t) {
    workers[t]->run([&, t] {
      auto& v = objects[(t + 1) % threads];
      for (std::size_t i = 0; i < v.size(); i += 2) bad += !release(*holder, v[i]);
    });
  }
  CHECK(bad == 0);
  CHECK(holder->check_invariants());
  CHECK(holder->stats().live_allocations() == threads * 150);
  // Destroyed with the threads alive, and a new instance built in the same place.
  holder.reset();
  CHECK(up.live_bytes() == 0);
  holder.emplace(&up);
  thread_cache_resource& r = *holder;
  CHECK(r.stats().allocations == 0);
  CHECK(r.heap_count() == 0);
  std::vector<std::vector<item>> again(threads);
  for (std::size_t t = 0; t < threads; ++t) {
    workers[t]->run([&, t] {
      for (std::size_t i = 0; i < 300; ++i) again[t].push_back(make(r, sizes[i % 9], max_align, 77 + i + 1000 * t));
      for (std::size_t i = 0; i < again[t].size(); i += 3) bad += !release(r, again[t][i]);
    });
  }
  std::set<char*> addresses;
  std::size_t bytes = 0, live = 0;
  for (const auto& v : again)
    for (std::size_t i = 0; i < v.size(); ++i)
      if (i % 3 != 0) {
        bad += !intact(v[i]);
        addresses.insert(v[i].p);
        bytes += r.round_size(v[i].size, v[i].alignment);
        ++live;
      }
  CHECK(bad == 0);
  CHECK(addresses.size() == live);
  CHECK(r.check_invariants());
  auto s = r.stats();
  CHECK(s.allocations == threads * 300);
  CHECK(s.live_allocations() == live);
  CHECK(s.bytes_in_use == bytes);
  CHECK(r.heap_count() <= threads);
  // The threads exit; the main thread frees what they left.
  for (auto& w : workers) w->join();
  for (const auto& v : again)
    for (std::size_t i = 0; i < v.size(); ++i)
      if (i % 3 != 0) bad += !release(r, v[i]);
  CHECK(bad == 0);
  CHECK(errors.count() == 0);
  CHECK(r.check_invariants());
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: the destructor returns everything, whatever threads did and whether they live") {
  error_capture errors;
  recording_resource up;  // the C++ heap: AddressSanitizer sees use of the instance's memory after it is gone
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t sizes[] = {8, 24, 64, 100, 500, 2000, small_max, small_max + 100, 50000, shared_max + 10};
  std::vector<item> main_objects, exited_objects, alive_objects;
  for (std::size_t i = 0; i < 400; ++i) main_objects.push_back(make(r, sizes[i % 10], max_align, i));
  // A thread that allocated and exited: its blocks are abandoned, still holding objects.
  std::thread([&] {
    for (std::size_t i = 0; i < 400; ++i) exited_objects.push_back(make(r, sizes[i % 10], max_align, 1000 + i));
  }).join();
  // Threads still alive at destruction: one owns objects, one freed some of everyone's (frees maybe still batched).
  worker owner, freer;
  owner.run([&] {
    for (std::size_t i = 0; i < 400; ++i) alive_objects.push_back(make(r, sizes[i % 10], max_align, 2000 + i));
  });
  std::size_t bad = 0;
  freer.run([&] {
    for (std::size_t i = 0; i < 400; i += 3) {
      bad += !release(r, main_objects[i]);
      bad += !release(r, exited_objects[i]);
      bad += !release(r, alive_objects[i]);
    }
  });
  // The main thread frees some of the exited thread's objects too (cross-thread, to abandoned blocks).
  for (std::size_t i = 1; i < 400; i += 3) bad += !release(r, exited_objects[i]);
  CHECK(bad == 0);
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == 3 * 400 - 3 * 134 - 133);
  CHECK(up.live_bytes() > 0);
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.live_blocks() == 0);
  CHECK(up.mismatches() == 0);
  // The threads exit after the resource is gone; the main thread goes on with a new one.
  owner.join();
  freer.join();
  holder.emplace(&up);
  for (std::size_t i = 0; i < 100; ++i) bad += !release(*holder, make(*holder, sizes[i % 10], max_align, i));
  CHECK(bad == 0);
  CHECK(holder->stats().live_allocations() == 0);
  CHECK(holder->check_invariants());
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(errors.count() == 0);
}

// ---- misuse --------------------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: a double free on the owning thread is reported at once, in every tier") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  std::vector<char*> keep;  // keeps the blocks non-empty
  for (int i = 0; i < 4; ++i) keep.push_back(static_cast<char*>(r.allocate(48, 8)));
  std::size_t n = 0;

  SUBCASE("a small object freed twice in a row (the slot is on the recently freed stack)") {
    void* p = r.allocate(48, 8);
    r.deallocate(p, 48, 8);
    const auto before = r.stats();
    r.deallocate(p, 48, 8);
    check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, p, 48);
    check_unchanged(before, r.stats());
  }
  SUBCASE("a small object freed again after many other frees of its class") {
    std::vector<void*> v;
    for (int i = 0; i < 300; ++i) v.push_back(r.allocate(48, 8));
    void* p = v[100];
    r.deallocate(p, 48, 8);
    for (int i = 0; i < 300; ++i)
      if (i != 100) r.deallocate(v[static_cast<std::size_t>(i)], 48, 8);
    const auto before = r.stats();
    r.deallocate(p, 48, 8);
    check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, p, 48);
    r.deallocate(v[299], 48, 8);
    check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, v[299], 48);
    check_unchanged(before, r.stats());
    // The freed slots are handed out once each.
    std::set<void*> again;
    for (int i = 0; i < 600; ++i) again.insert(r.allocate(48, 8));
    CHECK(again.size() == 600);
    for (char* k : keep) CHECK(again.count(k) == 0);
    for (void* q : again) r.deallocate(q, 48, 8);
  }
  SUBCASE("a shared-tier object") {
    void* p = r.allocate(20000, 8);
    void* q = r.allocate(20000, 8);  // keeps p's neighbourhood live
    r.deallocate(p, 20000, 8);
    const auto before = r.stats();
    r.deallocate(p, 20000, 8);
    check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, p, 20000);
    check_unchanged(before, r.stats());
    r.deallocate(q, 20000, 8);
  }
  SUBCASE("an upstream block (a double free or a foreign pointer: it is no longer recorded)") {
    const std::size_t size = shared_max + 1;
    void* p = r.allocate(size, 8);
    r.deallocate(p, size, 8);
    const auto before = r.stats();
    r.deallocate(p, size, 8);
    REQUIRE(errors.count() == ++n);
    const auto& e = errors.errors().back();
    CHECK((e.kind == strata::error_kind::double_free || e.kind == strata::error_kind::foreign_pointer));
    CHECK(e.pointer == p);
    check_unchanged(before, r.stats());
  }
  CHECK(r.check_invariants());
  for (char* p : keep) r.deallocate(p, 48, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

namespace {
/// The world of a cross-thread double-free test: a resource, and what every such test checks at the end.
struct double_free_setup {
  static constexpr std::size_t size = 48;
  static constexpr std::size_t many = 4000;  // more than a 64 KiB block holds of 48-byte objects: a block runs dry
  error_capture errors;
  recording_resource up{strata::default_page_resource()};
  std::optional<thread_cache_resource> holder{std::in_place, &up};
  thread_cache_resource& r = *holder;

  /// The calling thread allocates `many` objects of the class (so that its block runs dry and remote frees are
  /// folded in), frees each distinct address once and trims. False when an address came twice or equals one of
  /// `live_ones`: a slot freed twice was handed out twice.
  bool churn(const std::vector<void*>& live_ones) {
    std::set<void*> seen;
    bool unique = true;
    for (std::size_t i = 0; i < many; ++i) {
      void* p = r.allocate(size, 8);
      unique = seen.insert(p).second && unique;
      unique = std::find(live_ones.begin(), live_ones.end(), p) == live_ones.end() && unique;
    }
    for (void* p : seen) r.deallocate(p, size, 8);
    r.trim();
    return unique;
  }
  /// Exactly one report so far: a double free of p.
  void check_reported_once(const void* p) {
    REQUIRE(errors.count() == 1);
    const auto& e = errors.errors()[0];
    CAPTURE(e.message);
    CHECK(e.kind == strata::error_kind::double_free);
    CHECK(e.pointer == p);
  }
  /// One report, a double free of p, and the counts as they were `before` it: the second free changed nothing.
  void check_reported_once_unchanged(const void* p, const strata::resource_stats& before) {
    check_reported_once(p);
    const auto after = r.stats();
    CHECK(after.live_allocations() == before.live_allocations());
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(r.check_invariants());
  }
  /// Nothing live, nothing more reported, everything returned on destruction.
  void finish() {
    CHECK(errors.count() == 1);
    CHECK(r.check_invariants());
    const auto s = r.stats();
    CHECK(s.live_allocations() == 0);
    CHECK(s.bytes_in_use == 0);
    holder.reset();
    CHECK(up.live_bytes() == 0);
    CHECK(up.mismatches() == 0);
  }
};
}  // namespace

TEST_CASE("thread_cache_resource: check modes: double frees in the cache, after a write over the tag, wrong sizes") {
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    strata::thread_cache_options o;
    o.checks = mode;
    thread_cache_resource r(o);
    std::vector<void*> keep;  // keeps the blocks non-empty
    for (int i = 0; i < 4; ++i) keep.push_back(r.allocate(48, 8));
    std::size_t n = 0;
    // Freed twice while cached (standard) or while in its bitmap (strict): at once, in both modes.
    void* p = r.allocate(48, 8);
    r.deallocate(p, 48, 8);
    auto before = r.stats();
    r.deallocate(p, 48, 8);
    check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, p, 48);
    check_unchanged(before, r.stats());
    // A wrong size for a freed object: reported with that size, nothing changes.
    r.deallocate(p, 200, 8);
    REQUIRE(errors.count() == ++n);
    CHECK(errors.errors().back().pointer == p);
    CHECK(errors.errors().back().size == 200);
    check_unchanged(before, r.stats());
    CHECK(r.check_invariants());
    // A write over the freed object's tag, then a second free: strict finds it at once in the bitmap; standard when
    // the cache would hand the object out again. Either way it is handed out once.
    void* q = r.allocate(48, 8);
    r.deallocate(q, 48, 8);
    strata_test::write_unchecked(q, 0x33, 16);
    r.deallocate(q, 48, 8);
    const bool strict = mode == strata::check_mode::strict;
    if (strict) check_error("thread_cache_resource", errors, ++n, strata::error_kind::double_free, q, 48);
    else CHECK(errors.count() == n);
    std::vector<void*> again;
    for (int i = 0; i < 200; ++i) again.push_back(r.allocate(48, 8));
    std::set<void*> distinct(again.begin(), again.end());
    CHECK(distinct.size() == again.size());
    for (void* k : keep) CHECK(distinct.count(k) == 0);
    // Standard: the second free is found when the cache reaches q again. Strict: the write itself is found when
    // q's slot would be handed out again (it must still carry the form its free gave it), and q is kept out of use.
    REQUIRE(errors.count() == ++n);
    CHECK(errors.errors().back().kind == strata::error_kind::double_free);
    CHECK(errors.errors().back().pointer == q);
    for (void* x : again) r.deallocate(x, 48, 8);
    for (void* x : keep) r.deallocate(x, 48, 8);
    r.trim();
    CHECK(r.check_invariants());
    // Standard mode counted both frees of q (the write hid the first from the second), so its counts are one free
    // off from here on; strict refused the second free.
    CHECK(r.stats().live_allocations() == (strict ? 0 : std::size_t(-1)));
    CHECK(errors.count() == n);
  }
}

TEST_CASE("thread_cache_resource: check modes: random frees, double frees and writes after free against a shadow model") {
  // Nothing is ever handed out while the model holds it live; a second free of an object whose words were left
  // alone is reported on that call, in both modes; one after a write over the object's first words is reported on
  // that call in strict mode, and in standard mode when the cache would hand the object out again (or later: once
  // a cache is found written over, the objects cached behind it are set aside unseen).
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    const bool strict = mode == strata::check_mode::strict;
    error_capture errors;
    strata::thread_cache_options o;
    o.checks = mode;
    thread_cache_resource r(o);
    std::mt19937_64 rng(0x5EED0 + static_cast<unsigned>(mode));
    struct live_object {
      void* p;
      std::size_t size;
    };
    std::vector<live_object> live;
    std::set<void*> live_set;
    std::vector<live_object> freed;  // recently freed, candidates for a second free
    std::size_t plain = 0, written = 0, handed_twice = 0, missed_at_once = 0;
    for (std::size_t step = 0; step < strata_test::scaled(40000); ++step) {
      const unsigned what = static_cast<unsigned>(rng() % 100);
      if (what < 50 || live.empty()) {
        const std::size_t size = 16 + rng() % 300;
        void* p = r.allocate(size, 8);
        if (!live_set.insert(p).second) ++handed_twice;
        // Live again: no longer a candidate for a second free.
        freed.erase(std::remove_if(freed.begin(), freed.end(), [&](const live_object& f) { return f.p == p; }),
                    freed.end());
        std::memset(p, static_cast<int>(step & 0xFF), size);
        live.push_back({p, size});
      } else if (what < 97 || freed.empty()) {
        const std::size_t i = rng() % live.size();
        const live_object x = live[i];
        live[i] = live.back();
        live.pop_back();
        live_set.erase(x.p);
        r.deallocate(x.p, x.size, 8);
        freed.push_back(x);
        if (freed.size() > 64) freed.erase(freed.begin());
      } else {
        const std::size_t i = rng() % freed.size();
        const live_object x = freed[i];
        freed.erase(freed.begin() + static_cast<std::ptrdiff_t>(i));
        const bool write = rng() % 2 == 0;
        if (write) strata_test::write_unchecked(x.p, 0x77, 16);
        const std::size_t before = errors.count();
        r.deallocate(x.p, x.size, 8);
        const bool at_once = errors.count() == before + 1 && errors.errors().back().pointer == x.p;
        if ((!write || strict) && !at_once) ++missed_at_once;
        ++(write ? written : plain);
      }
    }
    for (const live_object& x : live) r.deallocate(x.p, x.size, 8);
    r.trim();
    CHECK(handed_twice == 0);
    CHECK(missed_at_once == 0);
    CHECK(plain > 100);
    CHECK(written > 100);
    for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
    CHECK(errors.count() >= plain + (strict ? written : 1));
    if (strict) {
      CHECK(r.check_invariants());
      CHECK(r.stats().live_allocations() == 0);
    }
  }
}

TEST_CASE("thread_cache_resource: frees past the free cache wait on their blocks: a hidden double free there hands "
          "nothing out twice") {
  // A batch of frees longer than the free cache goes onto the blocks' own lists. A block whose slots all seem to be
  // back (one of them freed twice, the first free's words written over in between, so the second looked like an
  // ordinary free) must not be handed on or reused while one of its objects is live: with idle blocks kept as they
  // are and without.
  constexpr std::uintptr_t block = strata::detail::block_map_granule;
  for (const std::size_t idle : {std::size_t{0}, std::size_t{4}}) {
    CAPTURE(idle);
    error_capture errors;
    strata::thread_cache_options o;
    o.max_empty_blocks = idle;
    thread_cache_resource r(o);
    constexpr std::size_t size = 64;
    std::vector<void*> all;
    for (int i = 0; i < 6000; ++i) all.push_back(r.allocate(size, 8));  // several blocks
    // The block of the 1000th object (not the current one: that holds the last).
    const std::uintptr_t b = reinterpret_cast<std::uintptr_t>(all[1000]) & ~(block - 1);
    REQUIRE((reinterpret_cast<std::uintptr_t>(all.back()) & ~(block - 1)) != b);
    std::vector<void*> in_b, others;
    for (void* p : all) (((reinterpret_cast<std::uintptr_t>(p) & ~(block - 1)) == b) ? in_b : others).push_back(p);
    REQUIRE(in_b.size() > 200);
    void* const x = in_b[in_b.size() / 2];  // stays live throughout
    void* const q = in_b[in_b.size() / 3];  // freed twice, written over in between
    // Fill the free cache with others first, so that b's frees go to b's list.
    for (std::size_t i = 0; i < 200; ++i) r.deallocate(others[i], size, 8);
    for (void* p : in_b)
      if (p != x) r.deallocate(p, size, 8);
    strata_test::write_unchecked(q, 0x5A, 16);
    r.deallocate(q, size, 8);  // looks like an ordinary free: b's slots all seem to be back
    // Kept no idle block: b's list goes into its bitmap at once, where q's second bit is found. Else b waits idle.
    CHECK(errors.count() == (idle == 0 ? 1u : 0u));
    // Everything handed out now is distinct, and never x.
    std::set<void*> handed;
    for (int i = 0; i < 8000; ++i) {
      void* p = r.allocate(size, 8);
      CHECK(p != x);
      CHECK(handed.insert(p).second);
      std::memset(p, 0x11, size);
    }
    CHECK(errors.count() >= 1);
    for (const auto& e : errors.errors()) {
      CHECK(e.kind == strata::error_kind::double_free);
      CHECK(e.pointer == q);
    }
    for (void* p : handed) r.deallocate(p, size, 8);
    for (std::size_t i = 200; i < others.size(); ++i) r.deallocate(others[i], size, 8);
    r.deallocate(x, size, 8);
    r.trim();
    CHECK(r.check_invariants());
    // Kept no idle block: b's list went into its bitmap, which met q a second time as a double free and did not
    // count that free. Kept idle: the list went into the cache, which met q's second place after q was handed out
    // (no node: written after its free), so q's second free stays counted (its first was hidden).
    CHECK(r.stats().live_allocations() == (idle == 0 ? 0 : std::size_t(-1)));
  }
}

TEST_CASE("thread_cache_resource: a block whose slots came back on its list is kept idle within max_empty_blocks") {
  // Freed past the free cache, whole blocks come back on their lists: up to max_empty_blocks of them are kept as
  // they are, the rest go into their bitmaps and on to the shared tier; trim() hands them all on.
  for (const std::size_t idle : {std::size_t{0}, std::size_t{3}, std::size_t{64}}) {
    CAPTURE(idle);
    recording_resource up;
    strata::thread_cache_options o;
    o.max_empty_blocks = idle;
    o.idle_decay_ms = 0;  // no more than max_empty_blocks at any time
    thread_cache_resource r(o, &up);
    std::vector<void*> v;
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 20000; ++i) v.push_back(r.allocate(64, 8));  // about 20 blocks
      const std::size_t held = r.stats().bytes_held;
      for (void* p : v) r.deallocate(p, 64, 8);
      v.clear();
      const auto s = r.stats();
      CHECK(s.bytes_in_use == 0);
      CHECK(r.check_invariants());
      // Kept: the current block, the spare, the idle ones, max_empty_blocks in the shared tier's cache, and the
      // heap's own memory and the class map's (under three blocks).
      const std::size_t kept = (5 + 2 * idle) * 64 * KiB;
      CHECK(s.bytes_held <= std::min(held, kept));
    }
    r.trim();
    CHECK(r.check_invariants());
    CHECK(r.stats().bytes_held <= 2 * 64 * KiB);
    check_held(up, r);
  }
}

TEST_CASE("thread_cache_resource: beyond max_empty_blocks, emptied blocks are kept for idle_decay_ms, in the heap and in the shared tier") {
  recording_resource up;
  strata::thread_cache_options o;
  o.max_empty_blocks = 2;
  o.idle_decay_ms = 1000;  // long enough for the batches under the sanitizers
  thread_cache_resource r(o, &up);
  std::vector<void*> v;
  const auto batch = [&](int n) {
    for (int i = 0; i < n; ++i) v.push_back(r.allocate(64, 8));
    const std::size_t held = r.stats().bytes_held;
    for (void* p : v) r.deallocate(p, 64, 8);
    v.clear();
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
    return held;
  };
  // About 20 blocks, all kept as they are (under 16 x 2), and taken again by the next batch: nothing from upstream.
  const std::size_t held = batch(20000);
  CHECK(r.stats().bytes_held >= held - 2 * 64 * KiB);
  const std::uint64_t taken = up.stats().allocations;
  batch(20000);
  CHECK(up.stats().allocations == taken);
  // About 60 blocks: no more than 32 stay idle in the heap, the rest wait in the shared tier's cache (up to 64 x 2,
  // and no more than are in use): none goes upstream.
  const std::size_t held60 = batch(60000);
  CHECK(held60 >= 55 * 64 * KiB);
  CHECK(r.stats().bytes_held >= held60 - 2 * 64 * KiB);
  CHECK(up.stats().deallocations == 0);
  // Kept past the decay time, the heap's go on at its next look (a block taken: another class's first request),
  // down to max_empty_blocks, into the shared tier's cache; kept there past the decay time, they go upstream at its
  // next look (a block taken), down to max_empty_blocks: left are the current blocks, the spare, two idle ones, two
  // in the shared tier's cache, and the heap's own memory and the class map's (under three blocks).
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  void* other = r.allocate(200, 8);
  CHECK(r.check_invariants());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  void* third = r.allocate(3000, 8);
  CHECK(r.stats().bytes_held <= 11 * 64 * KiB);
  CHECK(up.stats().deallocations > 0);
  CHECK(r.check_invariants());
  r.deallocate(other, 200, 8);
  r.deallocate(third, 3000, 8);
  r.trim();
  CHECK(r.check_invariants());
  check_held(up, r);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: a cross-thread free of a slot free in the owner's bitmap is reported at once") {
  double_free_setup t;
  auto& r = t.r;
  std::vector<void*> v;
  for (int i = 0; i < 200; ++i) v.push_back(r.allocate(t.size, 8));  // past the first bitmap word
  void* p = v[0];
  r.deallocate(p, t.size, 8);  // into the block's bitmap: the owner allocates from another word now
  v.erase(v.begin());
  worker other;
  other.run([&] { r.deallocate(r.allocate(t.size, 8), t.size, 8); });  // its heap exists before the snapshot
  const auto before = r.stats();
  other.run([&] { r.deallocate(p, t.size, 8); });
  t.check_reported_once(p);
  check_unchanged(before, r.stats());
  other.join();
  r.trim();
  CHECK(t.churn(v));
  t.check_reported_once(p);
  CHECK(r.check_invariants());
  for (void* q : v) r.deallocate(q, t.size, 8);
  t.finish();
}

TEST_CASE("thread_cache_resource: the owner's free, then another thread's: one report, no slot handed out twice") {
  double_free_setup t;
  auto& r = t.r;
  void* p = r.allocate(t.size, 8);
  void* q = r.allocate(t.size, 8);
  r.deallocate(p, t.size, 8);  // the owner's free: the slot is free in the word the owner allocates from
  const auto before = r.stats();
  {
    worker other;
    other.run([&] { r.deallocate(p, t.size, 8); });  // the second free
  }  // the thread exits: what it batched is published
  r.trim();
  CHECK(t.churn({q}));  // the owner allocates past the block: remote frees are folded in
  t.check_reported_once_unchanged(p, before);
  r.deallocate(q, t.size, 8);
  t.finish();
}

TEST_CASE("thread_cache_resource: a double free by two other threads is reported once, the stats stay exact") {
  double_free_setup t;
  auto& r = t.r;
  worker owner;
  void* p = nullptr;
  void* q = nullptr;
  owner.run([&] {
    p = r.allocate(t.size, 8);
    q = r.allocate(t.size, 8);
  });
  {
    worker x;
    x.run([&] { r.deallocate(p, t.size, 8); });  // the real free
  }
  const auto before = r.stats();
  {
    worker y;
    y.run([&] { r.deallocate(p, t.size, 8); });  // the second free
  }
  bool unique = false;
  owner.run([&] { unique = t.churn({q}); });
  r.trim();
  CHECK(unique);
  t.check_reported_once_unchanged(p, before);
  owner.run([&] { r.deallocate(q, t.size, 8); });
  t.finish();
}

TEST_CASE("thread_cache_resource: another thread's free, then the owner's: one report, no slot handed out twice") {
  double_free_setup t;
  auto& r = t.r;
  worker owner;
  void* p = nullptr;
  void* q = nullptr;
  owner.run([&] {
    p = r.allocate(t.size, 8);
    q = r.allocate(t.size, 8);
  });
  r.deallocate(p, t.size, 8);  // the main thread: a cross-thread free
  r.trim();                    // publishes the main thread's batched frees
  const auto before = r.stats();
  owner.run([&] { r.deallocate(p, t.size, 8); });  // the second free, by the owner
  bool unique = false;
  owner.run([&] { unique = t.churn({q}); });
  CHECK(unique);
  t.check_reported_once_unchanged(p, before);
  owner.run([&] { r.deallocate(q, t.size, 8); });
  t.finish();
}

TEST_CASE("thread_cache_resource: the owner frees what another thread's unpublished batch holds: reported at once") {
  // Another thread's free of p waits in that thread's batch (published when the thread moves on to another bitmap
  // word, trims or exits). The owner's second free of p must see it: accepted, p would be handed out again by the
  // owner and then freed under its new user when the batch is published.
  double_free_setup t;
  auto& r = t.r;
  void* p = r.allocate(t.size, 8);
  void* q = r.allocate(t.size, 8);
  std::memset(p, 0x5A, t.size);  // the program's data, in the words a free cache links through
  worker other;
  other.run([&] { r.deallocate(r.allocate(t.size, 8), t.size, 8); });  // its heap exists before the snapshot
  other.run([&] { r.deallocate(p, t.size, 8); });                      // the real free, batched
  const auto before = r.stats();
  r.deallocate(p, t.size, 8);  // the second free, by the owner
  t.check_reported_once(p);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  // The owner allocates on while the batch still holds p: p is not free for it yet.
  std::vector<void*> mine{q};
  for (int i = 0; i < 100; ++i) mine.push_back(r.allocate(t.size, 8));
  CHECK(std::find(mine.begin(), mine.end(), p) == mine.end());
  other.run([&] { r.trim(); });  // publishes the batch: p is free now, once
  CHECK(t.churn(mine));
  t.check_reported_once(p);
  for (void* x : mine) r.deallocate(x, t.size, 8);
  t.finish();
}

TEST_CASE("thread_cache_resource: another thread's free of slots never handed out: each reported, none handed out twice") {
  // The slots after the owner's first object were never handed out: no bit and no mark says they are free (they
  // wait in the word the owner hands out from). Another thread's free of them is published; the owner then hands
  // them out, and folds the published frees in later: they must not come free under their new users.
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    recording_resource up{strata::default_page_resource()};
    strata::thread_cache_options o;
    o.checks = mode;
    std::optional<thread_cache_resource> holder{std::in_place, o, &up};
    thread_cache_resource& r = *holder;
    constexpr std::size_t size = 48;
    void* p = r.allocate(size, 8);
    std::vector<void*> never;
    for (std::size_t k = 1; k <= 8; ++k) never.push_back(static_cast<char*>(p) + k * size);
    worker other;
    other.run([&] {
      for (void* q : never) r.deallocate(q, size, 8);
      r.trim();  // publishes them
    });
    // The owner hands its next slots out (the ones freed above among them), then allocates on past the block, so
    // that the published frees are folded in, and frees everything.
    std::vector<void*> mine{p};
    for (int i = 0; i < 100; ++i) mine.push_back(r.allocate(size, 8));
    std::set<void*> seen(mine.begin(), mine.end());
    bool unique = seen.size() == mine.size();
    std::vector<void*> more;
    for (int i = 0; i < 4000; ++i) {
      void* x = r.allocate(size, 8);
      unique = seen.insert(x).second && unique;
      more.push_back(x);
    }
    CHECK(unique);
    for (void* x : more) r.deallocate(x, size, 8);
    for (void* x : mine) r.deallocate(x, size, 8);
    r.trim();
    other.run([&] { r.trim(); });
    // Each of the eight reported once: at once (where the block's header lies: no slot), or when folded in.
    CHECK(errors.count() == never.size());
    for (void* q : never) {
      CAPTURE(q);
      CHECK(std::count_if(errors.errors().begin(), errors.errors().end(),
                          [&](const auto& e) { return e.pointer == q; }) == 1);
    }
    CHECK(r.check_invariants());
    const auto s = r.stats();
    CHECK(s.live_allocations() == 0);
    CHECK(s.bytes_in_use == 0);
    holder.reset();
    CHECK(up.live_bytes() == 0);
    CHECK(up.mismatches() == 0);
  }
}

TEST_CASE("thread_cache_resource: a block emptied and formatted again while a cross-thread free of it waits: reported, nothing handed out twice") {
  // As above, but the emptied block waits in the empty cache and comes back as a block of the same class before
  // the waiting free is published: the publication finds p's mark gone and undoes that free.
  error_capture errors;
  strata::thread_cache_options o;
  o.max_empty_blocks = 1;
  thread_cache_resource r{o};
  constexpr std::size_t size = 48;
  std::vector<void*> all;
  for (int i = 0; i < 4000; ++i) all.push_back(r.allocate(size, 8));
  const auto block = [](const void* x) { return reinterpret_cast<std::uintptr_t>(x) >> 16; };
  const std::uintptr_t first = block(all.front());
  REQUIRE(block(all.back()) != first);
  void* p = all.front();
  std::memset(p, 0x5A, size);
  worker other;
  other.run([&] { r.deallocate(p, size, 8); });  // waits in the other thread's array
  strata_test::write_unchecked(p, 0xA5, 16);      // written after its free: the mark is gone
  for (void* x : all) r.deallocate(x, size, 8);   // p's second free among them; every block empties
  all.clear();
  CHECK(errors.count() == 0);
  CHECK(r.check_invariants());
  for (int i = 0; i < 4000; ++i) all.push_back(r.allocate(size, 8));  // the emptied blocks come back
  other.run([&] { r.trim(); });  // publishes
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
  CHECK(errors.errors()[0].pointer == p);
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == all.size());
  for (int i = 0; i < 4000; ++i) all.push_back(r.allocate(size, 8));
  std::set<void*> distinct(all.begin(), all.end());
  CHECK(distinct.size() == all.size());
  for (void* x : all) r.deallocate(x, size, 8);
  CHECK(errors.count() == 1);
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == 0);
}

TEST_CASE("thread_cache_resource: a block emptied while a cross-thread free of it waits goes upstream, the publication reports it") {
  // Another thread's free of p waits in that thread's array; the program then writes over p (a use after free,
  // which erases the free's mark) and the owner frees p again, which nothing can see yet. p's block empties and
  // goes upstream (max_empty_blocks 0) before the waiting free is published: the publication finds the block gone
  // from the class map, reports the double free and touches nothing of the block.
  error_capture errors;
  recording_resource up{strata::default_page_resource()};
  strata::thread_cache_options o;
  o.max_empty_blocks = 0;
  std::optional<thread_cache_resource> holder{std::in_place, o, &up};
  thread_cache_resource& r = *holder;
  constexpr std::size_t size = 48;
  std::map<std::uintptr_t, std::vector<void*>> by_block;
  std::vector<void*> all;
  for (int i = 0; i < 4000; ++i) {  // three 64 KiB blocks of 48-byte objects and more
    void* x = r.allocate(size, 8);
    all.push_back(x);
    by_block[reinterpret_cast<std::uintptr_t>(x) >> 16].push_back(x);  // 64 KiB blocks
  }
  REQUIRE(by_block.size() >= 3);
  // The first two blocks filled (not the current one, which the last object is in).
  const auto block = [](const void* x) { return reinterpret_cast<std::uintptr_t>(x) >> 16; };
  std::vector<void*>& first = by_block[block(all.front())];
  const auto in_second = std::find_if(all.begin(), all.end(), [&](void* x) { return block(x) != block(all.front()); });
  std::vector<void*>& second = by_block[block(*in_second)];
  REQUIRE(block(*in_second) != block(all.back()));
  auto release_all_of = [&](const std::vector<void*>& v) {
    for (void* x : v) {
      r.deallocate(x, size, 8);
      all.erase(std::find(all.begin(), all.end(), x));
    }
  };
  release_all_of(second);
  r.trim();  // the second block becomes the owner's spare: the next block to empty goes upstream
  void* p = first.back();
  first.pop_back();
  std::memset(p, 0x5A, size);
  worker other;
  other.run([&] { r.deallocate(p, size, 8); });  // waits in the other thread's array
  strata_test::write_unchecked(p, 0xA5, 16);      // written after its free: the mark is gone
  r.deallocate(p, size, 8);                       // the owner's second free, not seen yet
  all.erase(std::find(all.begin(), all.end(), p));
  release_all_of(first);
  const std::size_t held = up.live_bytes();
  r.trim();  // the first block is empty now: it goes upstream, whatever waits elsewhere
  CHECK(up.live_bytes() == held - (std::size_t{64} << 10));
  CHECK(errors.count() == 0);
  CHECK(r.check_invariants());
  other.run([&] { r.trim(); });  // publishes: p's block is gone, the other thread's free is undone
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
  CHECK(errors.errors()[0].pointer == p);
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == all.size());
  CHECK(up.live_bytes() == held - (std::size_t{64} << 10));
  for (void* x : all) r.deallocate(x, size, 8);
  r.trim();
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(errors.count() == 1);
}

TEST_CASE("thread_cache_resource: two threads batch a free of the same object: reported at once, counted once") {
  double_free_setup t;
  auto& r = t.r;
  void* p = r.allocate(t.size, 8);
  void* q = r.allocate(t.size, 8);
  worker x, y;
  for (worker* w : {&x, &y}) w->run([&] { r.deallocate(r.allocate(t.size, 8), t.size, 8); });
  x.run([&] { r.deallocate(p, t.size, 8); });  // the real free, batched in x
  const auto before = r.stats();
  y.run([&] { r.deallocate(p, t.size, 8); });  // the second free, while the first waits unpublished
  t.check_reported_once(p);
  check_unchanged(before, r.stats());
  x.run([&] { r.trim(); });
  y.run([&] { r.trim(); });
  CHECK(t.churn({q}));
  t.check_reported_once_unchanged(p, before);
  r.deallocate(q, t.size, 8);
  t.finish();
}

namespace {
/// Rounds of one race: an object is allocated by its owner, then two threads free it at the same moment. Each round
/// the racers publish their batches and the owner trims (folding in what other threads freed into its blocks); then
/// exactly one report must have come for the object, and the counts must show it freed once.
struct free_race {
  static constexpr std::size_t size = 48;
  error_capture errors;
  recording_resource up{strata::default_page_resource()};
  std::optional<thread_cache_resource> holder{std::in_place, &up};
  thread_cache_resource& r = *holder;

  /// `owner_races`: the owner is one of the two threads freeing; otherwise it is the main thread, idle meanwhile.
  void run(std::size_t rounds, bool owner_races) {
    barrier sync(3);
    void* target = nullptr;
    std::size_t wrong_reports = 0, wrong_counts = 0, broken = 0, handed_twice = 0;
    auto racer = [&](bool is_owner) {
      for (std::size_t i = 0; i < rounds; ++i) {
        if (is_owner) target = r.allocate(size, 8);
        sync.arrive_and_wait();  // A: target set
        r.deallocate(target, size, 8);
        sync.arrive_and_wait();  // B: both freed
        sync.arrive_and_wait();  // B2: the main thread has checked the invariants
        if (!is_owner) r.trim();  // publishes the batch
        sync.arrive_and_wait();  // C: published
        if (is_owner) r.trim();  // folds other threads' frees into the owner's blocks
        sync.arrive_and_wait();  // D: settled; the main thread checks
        sync.arrive_and_wait();  // E
      }
    };
    std::thread a(racer, owner_races), b(racer, false);
    std::set<void*> seen;
    for (std::size_t i = 0; i < rounds; ++i) {
      if (!owner_races) target = r.allocate(size, 8);
      sync.arrive_and_wait();  // A
      sync.arrive_and_wait();  // B
      // Both frees are in, neither batch published: a race both got through is a caller's double free waiting to
      // be settled, not a broken structure.
      if (!r.check_invariants() && ++broken <= 3) MESSAGE("round " << i << ": " << errors.errors().back().message);
      sync.arrive_and_wait();  // B2
      sync.arrive_and_wait();  // C
      if (!owner_races) r.trim();
      sync.arrive_and_wait();  // D
      const auto s = r.stats();
      if (errors.count() != i + 1 || errors.errors().back().kind != strata::error_kind::double_free ||
          errors.errors().back().pointer != target) {
        if (++wrong_reports <= 3) MESSAGE("round " << i << ": " << errors.count() << " reports");
      }
      if (s.allocations != i + 1 || s.deallocations != i + 1 || s.bytes_in_use != 0) {
        if (++wrong_counts <= 3)
          MESSAGE("round " << i << ": " << s.allocations << " allocations, " << s.deallocations << " deallocations, "
                           << s.bytes_in_use << " bytes in use");
      }
      if (i % 64 == 0 && !r.check_invariants()) ++broken;
      seen.insert(target);
      sync.arrive_and_wait();  // E
    }
    a.join();
    b.join();
    CHECK(wrong_reports == 0);
    CHECK(wrong_counts == 0);
    CHECK(broken == 0);
    // Whatever the rounds left, each slot is free once: a run of allocations gets every address at most once.
    const std::size_t reports = errors.count();
    std::thread([&] {
      std::set<void*> got;
      std::vector<void*> v;
      for (std::size_t i = 0; i < 4000; ++i) {
        v.push_back(r.allocate(size, 8));
        handed_twice += !got.insert(v.back()).second;
      }
      for (void* p : v) r.deallocate(p, size, 8);
    }).join();
    CHECK(handed_twice == 0);
    CHECK(errors.count() == reports);
    r.trim();
    CHECK(r.check_invariants());
    const auto s = r.stats();
    CHECK(s.live_allocations() == 0);
    CHECK(s.bytes_in_use == 0);
    holder.reset();
    CHECK(up.live_bytes() == 0);
    CHECK(up.mismatches() == 0);
  }
};
}  // namespace

TEST_CASE("thread_cache_resource: two threads free the same object at once: one report, counted once") {
  free_race race;
  race.run(strata_test::scaled(2000), false);
}

TEST_CASE("thread_cache_resource: the owner and another thread free one object at once: one report, counted once") {
  free_race race;
  race.run(strata_test::scaled(2000), true);
}

TEST_CASE("thread_cache_resource: foreign and interior pointers are reported and change nothing") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  thread_cache_resource other(&up);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t big_size = shared_max + 5000;
  auto* p = static_cast<char*>(r.allocate(40, 8));
  auto* s = static_cast<char*>(r.allocate(20000, 8));
  auto* big = static_cast<char*>(r.allocate(big_size, 8));
  std::memset(p, 0x5A, 40);
  void* theirs = other.allocate(40, 8);
  void* theirs_shared = other.allocate(20000, 8);
  void* theirs_big = other.allocate(big_size, 8);
  void* heap = std::malloc(40);
  void* page = strata::default_page_resource()->allocate(4096, 4096);
  int on_stack = 0;
  worker w;  // another thread, which has used the resource before (its heap exists)
  w.run([&] { r.deallocate(r.allocate(40, 8), 40, 8); });
  const auto before = r.stats();
  const auto other_before = other.stats();
  std::size_t n = 0;
  using strata::error_kind;

  SUBCASE("pointers from elsewhere, with sizes of every tier") {
    r.deallocate(heap, 40, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, heap, 40);
    r.deallocate(&on_stack, 40, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, &on_stack, 40);
    r.deallocate(page, 40, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, page, 40);
    r.deallocate(theirs, 40, 8);  // another instance's thread-tier object: a block of the same kind, not ours
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs, 40);
    r.deallocate(heap, 20000, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, heap, 20000);
    r.deallocate(theirs_shared, 20000, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs_shared, 20000);
    r.deallocate(heap, big_size, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, heap, big_size);
    r.deallocate(theirs_big, big_size, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs_big, big_size);
    w.run([&] { r.deallocate(heap, 40, 8); });  // from another thread too
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, heap, 40);
    w.run([&] { r.deallocate(theirs, 40, 8); });
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs, 40);
  }
  SUBCASE("interior pointers") {
    r.deallocate(p + 8, 40, 8);  // the object's own size
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, p + 8, 40);
    r.deallocate(p + 1, 40, 1);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, p + 1, 40);
    r.deallocate(p + 8, 32, 8);  // the size of what is left: another class, so either report will do
    REQUIRE(errors.count() == ++n);
    CHECK((errors.errors().back().kind == error_kind::foreign_pointer ||
           errors.errors().back().kind == error_kind::wrong_size));
    r.deallocate(s + 16, 19984, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, s + 16, 19984);
    r.deallocate(big + 4096, big_size - 4096, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, big + 4096, big_size - 4096);
    // The start of p's 64 KiB block: its header (not an object) or a slot no one allocated (free).
    auto* block = reinterpret_cast<char*>(strata::detail::to_address(p) & ~(std::uintptr_t{64 * KiB} - 1));
    if (block != p) {
      r.deallocate(block, 40, 8);
      REQUIRE(errors.count() == ++n);
      CHECK((errors.errors().back().kind == error_kind::foreign_pointer ||
             errors.errors().back().kind == error_kind::double_free));
      CHECK(errors.errors().back().pointer == block);
    }
    w.run([&] { r.deallocate(p + 8, 40, 8); });
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, p + 8, 40);
    CHECK(std::all_of(p, p + 40, [](char c) { return c == 0x5A; }));
  }
  SUBCASE("usable_size of a pointer it did not hand out is reported and 0") {
    const void* const strangers[] = {heap, theirs, p + 8, theirs_shared, theirs_big, &on_stack, page};
    for (const void* q : strangers) {
      CHECK(r.usable_size(q) == 0);
      REQUIRE(errors.count() == ++n);
      CHECK(errors.errors().back().kind == error_kind::foreign_pointer);
      CHECK(errors.errors().back().pointer == q);
    }
  }
  check_unchanged(before, r.stats());
  check_unchanged(other_before, other.stats());
  CHECK(r.check_invariants());
  CHECK(other.check_invariants());
  // The real frees still work.
  r.deallocate(p, 40, 8);
  r.deallocate(s, 20000, 8);
  r.deallocate(big, big_size, 8);
  other.deallocate(theirs, 40, 8);
  other.deallocate(theirs_shared, 20000, 8);
  other.deallocate(theirs_big, big_size, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(other.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(other.check_invariants());
  std::free(heap);
  strata::default_page_resource()->deallocate(page, 4096, 4096);
  CHECK(up.mismatches() == 0);
}

namespace {
/// An upstream that serves 64 KiB blocks (aligned to their size) from the second 64 KiB of a 2 MiB-aligned region
/// whose first 64 KiB stay reserved and inaccessible: code that rounds a pointer in such a block down to 1 or 2 MiB and
/// reads there faults at once, whatever else the process has mapped. Other requests go to the C++ heap.
class sparse_block_upstream : public std::pmr::memory_resource {
 public:
  static constexpr std::size_t region = 2 * MiB;
  sparse_block_upstream() {
    raw_ = static_cast<char*>(strata::os::reserve(2 * region));
    REQUIRE(raw_ != nullptr);
    base_ = reinterpret_cast<char*>(strata::detail::align_up(strata::detail::to_address(raw_), region));
    next_ = base_ + 64 * KiB;
  }
  ~sparse_block_upstream() override { strata::os::release(raw_, 2 * region); }
  sparse_block_upstream(const sparse_block_upstream&) = delete;
  sparse_block_upstream& operator=(const sparse_block_upstream&) = delete;
  bool holds(const void* p) const { return p >= base_ && p < base_ + region; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (bytes == 64 * KiB && alignment == 64 * KiB && next_ < base_ + region) {
      if (strata::os::commit(next_, bytes) != strata::os::result::ok) throw std::bad_alloc();
      char* p = next_;
      next_ += bytes;
      return p;
    }
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (holds(p))
      (void)strata::os::decommit(p, bytes);  // not reused: a block comes from here once
    else
      std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

  char* raw_ = nullptr;
  char* base_ = nullptr;
  char* next_ = nullptr;
};
}  // namespace

TEST_CASE("thread_cache_resource: a pointer into another instance's block is reported, not followed") {
  // The foreign-pointer path must not read memory the pointer does not vouch for: here the 1 and 2 MiB boundaries
  // below the other instance's block are inaccessible.
  error_capture errors;
  sparse_block_upstream arena;
  thread_cache_resource other(&arena);
  recording_resource up;
  thread_cache_resource r(&up);
  void* mine = r.allocate(20000, 8);
  void* theirs = other.allocate(40, 8);
  REQUIRE(arena.holds(theirs));
  const auto before = r.stats();
  std::size_t n = 0;
  using strata::error_kind;
  SUBCASE("freed with a thread-tier size") {
    r.deallocate(theirs, 40, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs, 40);
  }
  SUBCASE("freed with a shared-tier size") {
    r.deallocate(theirs, 20000, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, theirs, 20000);
  }
  SUBCASE("usable_size") {
    CHECK(r.usable_size(theirs) == 0);
    REQUIRE(errors.count() == ++n);
    CHECK(errors.errors().back().kind == error_kind::foreign_pointer);
  }
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  r.deallocate(mine, 20000, 8);
  other.deallocate(theirs, 40, 8);
  CHECK(errors.count() == n);
  CHECK(other.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: wrong sizes and alignments are reported and change nothing") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t big_size = shared_max + 5000;
  REQUIRE(r.round_size(40, 8) == 40);
  REQUIRE(r.round_size(100, 8) != 40);
  REQUIRE(r.round_size(8, 8) != 40);
  auto* p = static_cast<char*>(r.allocate(40, 8));
  auto* s = static_cast<char*>(r.allocate(20000, 8));
  auto* big = static_cast<char*>(r.allocate(big_size, 8));
  std::memset(p, 0x33, 40);
  worker w;  // another thread, which has used the resource before (its heap exists)
  w.run([&] { r.deallocate(r.allocate(40, 8), 40, 8); });
  const auto before = r.stats();
  std::size_t n = 0;
  using strata::error_kind;

  // A thread-tier object.
  r.deallocate(p, 100, 8);  // another class
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, 100, 40);
  r.deallocate(p, 8, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, 8, 40);
  r.deallocate(p, 20000, 8);  // a shared-tier size
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, 20000);
  r.deallocate(p, shared_max + 1, 8);  // an upstream size
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, shared_max + 1);
  CHECK_FALSE(r.resize(p, 100, 104, 8));  // resize names the size too
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, 100, 40);
  w.run([&] { r.deallocate(p, 100, 8); });  // from another thread: the block knows its class
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, p, 100, 40);
  // A shared-tier object.
  r.deallocate(s, 40, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, s, 40);
  r.deallocate(s, 30000, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, s, 30000);
  r.deallocate(s, shared_max + 1, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, s, shared_max + 1);
  // An upstream block: its size and alignment are recorded.
  r.deallocate(big, 40, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, big, 40);
  r.deallocate(big, 20000, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, big, 20000);
  r.deallocate(big, big_size + 1, 8);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, big, big_size + 1, big_size);
  r.deallocate(big, big_size, 64);
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, big, big_size, big_size);
  // Alignments that are not powers of two: an exception on allocate, a report on deallocate.
  CHECK_THROWS_AS((void)r.allocate(40, 24), std::invalid_argument);
  CHECK_THROWS_AS((void)r.allocate(40, 0), std::invalid_argument);
  r.deallocate(p, 40, 24);
  check_error("thread_cache_resource", errors, ++n, error_kind::bad_alignment, p, 40);
  r.deallocate(s, 20000, 3);
  check_error("thread_cache_resource", errors, ++n, error_kind::bad_alignment, s, 20000);
  r.deallocate(big, big_size, 0);
  check_error("thread_cache_resource", errors, ++n, error_kind::bad_alignment, big, big_size);

  auto after = r.stats();
  after.failed_allocations = before.failed_allocations;  // the two invalid_argument throws may count as failures
  check_unchanged(before, after);
  CHECK(std::all_of(p, p + 40, [](char c) { return c == 0x33; }));
  CHECK(r.check_invariants());
  r.deallocate(p, 40, 8);
  r.deallocate(s, 20000, 8);
  r.deallocate(big, big_size, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: misuse of a large block says what it is: a double free, or the size it has") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t big = r.max_size(cache_tier::shared) + 1;
  void* keep = r.allocate(40, 8);  // the thread tier has blocks
  void* b = r.allocate(big, 8);
  worker w;  // another thread, whose heap exists before the snapshots
  w.run([&] { r.deallocate(r.allocate(40, 8), 40, 8); });
  std::size_t n = 0;
  using strata::error_kind;
  const std::size_t wrong_sizes[] = {0, 40, 8192, 8193, 20000, big - 1, big + 1};
  // Live, named with another size (of any tier): a wrong size, with the size it was allocated with.
  const auto live = r.stats();
  for (std::size_t wrong : wrong_sizes) {
    CAPTURE(wrong);
    r.deallocate(b, wrong, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, b, wrong, big);
  }
  r.deallocate(b, 40, 64);  // a small size aligned beyond 16
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, b, 40, big);
  w.run([&] { r.deallocate(b, 40, 8); });  // from another thread
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, b, 40, big);
  CHECK_FALSE(r.resize(b, 40, 48, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, b, 40, big);
  CHECK_FALSE(r.resize(b, 20000, 20016, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::wrong_size, b, 20000, big);
  check_unchanged(live, r.stats());
  r.deallocate(b, big, 8);
  // Freed: a double free, whatever size names it, from any thread, with or without a size.
  const auto freed = r.stats();
  for (std::size_t size : {big, std::size_t{0}, std::size_t{40}, std::size_t{8192}, std::size_t{20000}, big + 1}) {
    CAPTURE(size);
    r.deallocate(b, size, 8);
    check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, size);
  }
  w.run([&] { r.deallocate(b, big, 8); });
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, big);
  w.run([&] { r.deallocate(b, 40, 8); });
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, 40);
  CHECK(r.deallocate_unsized(b) == 0);
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, 0);
  CHECK(r.usable_size(b) == 0);
  REQUIRE(errors.count() == ++n);
  CHECK(errors.errors().back().pointer == b);
  CHECK_FALSE(r.resize(b, big, big + 4096, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, big);
  check_unchanged(freed, r.stats());
  r.deallocate(keep, 40, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

// ---- sizes, tiers, alignment ---------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: tiers, sizes and options are consistent") {
  recording_resource up;
  thread_cache_resource r(&up);
  CHECK(r.upstream_resource() == &up);
  CHECK(r.get_options().max_empty_blocks == 16);
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  CHECK(small_max == 8 * KiB);  // the default
  CHECK(shared_max <= 256 * KiB);
  CHECK(shared_max > 128 * KiB);
  const std::size_t min_thread = r.min_size(cache_tier::thread);
  CHECK((min_thread <= 1 || min_thread == thread_cache_resource::thread_cache_min_size()));
  CHECK(r.tier_of(1) == cache_tier::thread);
  CHECK(r.min_size(cache_tier::shared) == small_max + 1);
  CHECK(r.min_size(cache_tier::upstream) == shared_max + 1);
  CHECK(r.max_size(cache_tier::upstream) >= (std::size_t{1} << 40));
  CHECK(r.max_size(cache_tier::upstream) <= strata::detail::max_request_size);
  for (cache_tier t : all_tiers) {
    CAPTURE(t);
    CHECK(r.min_size(t) <= r.max_size(t));
    CHECK(r.tier_of(r.min_size(t)) == t);
    CHECK(r.tier_of(r.max_size(t)) == t);
    CHECK(r.tier_of(r.max_size(t), 1) == t);
    CHECK(r.tier_of(r.max_size(t), 16) == t);
  }
  CHECK(r.tier_of(small_max + 1) == cache_tier::shared);
  CHECK(r.tier_of(shared_max + 1) == cache_tier::upstream);
  CHECK(r.tier_of(std::size_t{1} << 30) == cache_tier::upstream);
  // Requests more aligned than a 64 KiB block can serve go upstream.
  CHECK(r.tier_of(64, 128 * KiB) != cache_tier::thread);
  CHECK(thread_cache_resource::thread_cache_min_size() == 16);  // a freed object holds two words
  CHECK(r.round_size(1, 1) == thread_cache_resource::thread_cache_min_size());
  CHECK(r.round_size(1, 8) == thread_cache_resource::thread_cache_min_size());
  CHECK(r.round_size(0, 8) == thread_cache_resource::thread_cache_min_size());
  CHECK(r.round_size(1) == alignof(std::max_align_t));  // the default alignment rounds up first
  CHECK(r.round_size(24, 8) == 24);
  CHECK(r.round_size(24, 16) == 32);
  // Thread-tier rounding: a class size, never below the request, idempotent, nondecreasing, modest waste.
  std::size_t previous = 0, classes = 0, waste_ok = 0, checked = 0;
  for (std::size_t n = 1; n <= small_max; ++n) {
    const std::size_t c = r.round_size(n, 8);
    if (c < n || c > small_max || c % 8 != 0 || c < previous || r.round_size(c, 8) != c) {
      CAPTURE(n);
      CAPTURE(c);
      FAIL_CHECK("round_size is not a class size");
      break;
    }
    if (c != previous) ++classes;
    if (n >= 40) {
      ++checked;
      waste_ok += (c - n) * 100 <= 25 * c;
    }
    previous = c;
  }
  MESSAGE(classes << " thread-tier classes up to " << small_max << " bytes; shared tier up to " << shared_max);
  CHECK(waste_ok == checked);
  CHECK(classes >= 16);
  CHECK(classes <= 64);
  // The shared tier: 16-byte granules, and from 8 KiB to 32 KiB classes of eight per doubling (1 KiB multiples).
  for (std::size_t n : {small_max + 1, small_max + 7, std::size_t{20000}, std::size_t{32767}, std::size_t{32769},
                        shared_max - 1, shared_max}) {
    CAPTURE(n);
    CHECK(r.round_size(n) >= n);
    if (n > 8192 && n <= 32768) {
      CHECK(r.round_size(n) <= n + n / 8);
      CHECK(r.round_size(n) % 1024 == 0);
    } else {
      CHECK(r.round_size(n) <= n + 15);
    }
  }
  CHECK(r.round_size(9 * 1024 + 1) == 10 * 1024);
  CHECK(r.round_size(16 * 1024 + 1) == 18 * 1024);
  for (std::size_t n : {shared_max + 1, std::size_t{1} << 20, (std::size_t{1} << 20) + 3}) CHECK(r.round_size(n) == n);
  CHECK_THROWS_AS((void)r.allocate(r.max_size(cache_tier::upstream) + 1, 8), std::bad_alloc);
  CHECK(r.check_invariants());

  // Options.
  thread_cache_options o;
  o.max_small_size = 1000;  // rounded up to a class boundary
  {
    thread_cache_resource s(o, &up);
    CHECK(s.max_size(cache_tier::thread) == s.round_size(1000, 8));
    CHECK(s.max_size(cache_tier::thread) >= 1000);
    CHECK(s.max_size(cache_tier::thread) < 1300);
    CHECK(s.min_size(cache_tier::shared) == s.max_size(cache_tier::thread) + 1);
    CHECK(s.tier_of(s.max_size(cache_tier::thread) + 1) == cache_tier::shared);
    void* q = s.allocate(1100, 8);
    CHECK(s.tier_stats(cache_tier::shared).allocations == 1);
    s.deallocate(q, 1100, 8);
    CHECK(s.check_invariants());
  }
  // Tiny thread tiers: a request up to the tier's size, rounded up to any alignment up to 16, still has a class.
  for (std::size_t small : {std::size_t{1}, std::size_t{8}, std::size_t{100}, std::size_t{120}}) {
    o = thread_cache_options{};
    o.max_small_size = small;
    o.max_shared_size = small;  // the shared tier follows the thread tier's rounding
    error_capture caught;
    thread_cache_resource s(o, &up);
    CHECK(s.max_size(cache_tier::thread) >= small);
    CHECK(s.max_size(cache_tier::thread) % 16 == 0);
    CHECK(s.max_size(cache_tier::shared) >= s.max_size(cache_tier::thread));
    for (std::size_t n = 0; n <= s.max_size(cache_tier::thread) + 1; ++n) {
      for (std::size_t a : {std::size_t{1}, std::size_t{2}, std::size_t{4}, std::size_t{8}, std::size_t{16},
                            std::size_t{64}}) {
        void* q = s.allocate(n, a);
        CHECK(reinterpret_cast<std::uintptr_t>(q) % a == 0);
        CHECK(s.round_size(n, a) >= n);
        s.deallocate(q, s.round_size(n, a), a);  // the usable size names the same block
      }
    }
    CHECK(caught.count() == 0);
    CHECK(s.stats().bytes_in_use == 0);
    CHECK(s.check_invariants());
  }
  o = thread_cache_options{};
  o.max_small_size = 8 * KiB + 1;
  CHECK_THROWS_AS(thread_cache_resource(o, &up), std::invalid_argument);
  o = thread_cache_options{};
  o.max_shared_size = 100000;
  {
    thread_cache_resource s(o, &up);
    CHECK(s.max_size(cache_tier::shared) == 100000);
    CHECK(s.tier_of(100001) == cache_tier::upstream);
  }
  o.max_shared_size = std::size_t{1} << 30;  // capped, not refused
  {
    thread_cache_resource s(o, &up);
    CHECK(s.max_size(cache_tier::shared) < MiB);
    CHECK(s.max_size(cache_tier::shared) >= 128 * KiB);
  }
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: a block's header and bitmaps take its first bytes, its slots are packed after them") {
  // 64 KiB blocks: the header (96 bytes) at the base, 16 bytes of bitmaps per 64 slots after it, the slots from the
  // first multiple of the class's natural alignment (up to 4 KiB) past them to the block's end. So a class whose
  // size leaves bytes over holds as many objects as fit beside the header (7,168 bytes: 9, where slots at multiples
  // of the size from the base would hold 8), and a block with a few objects has one page resident.
  struct expect {
    std::size_t size, per_block, origin;
  } const cases[] = {{16, (64 * KiB - 1120) / 16, 1120}, {64, (64 * KiB - 384) / 64, 384}, {1024, 63, 1024},
                     {4096, 15, 4096},                   {5120, 12, 1024},                 {6144, 10, 2048},
                     {7168, 9, 1024},                    {8192, 7, 4096}};
  using strata::error_kind;
  for (const auto& e : cases) {
    CAPTURE(e.size);
    error_capture errors;
    recording_resource up(strata::default_page_resource());
    thread_cache_resource r(&up);
    REQUIRE(r.round_size(e.size, 8) == e.size);
    std::map<std::uintptr_t, std::vector<char*>> by_block;
    std::vector<char*> all;
    for (std::size_t i = 0; i < 2 * e.per_block + 1; ++i) {
      auto* p = static_cast<char*>(r.allocate(e.size, 8));
      std::memset(p, 0x5A, e.size);
      all.push_back(p);
      by_block[strata::detail::to_address(p) & ~(std::uintptr_t{64 * KiB} - 1)].push_back(p);
    }
    const std::uintptr_t first = strata::detail::to_address(all.front()) & ~(std::uintptr_t{64 * KiB} - 1);
    CHECK(by_block[first].size() == e.per_block);  // the first block, filled before the next was taken
    const std::size_t words = (64 * KiB / e.size + 63) / 64;
    for (const auto& [base, objects] : by_block) {
      CHECK(objects.size() <= e.per_block);
      for (char* p : objects) {
        const std::uintptr_t off = strata::detail::to_address(p) - base;
        CHECK(off >= 96 + words * 16);  // clear of the header and bitmaps
        CHECK((off - e.origin) % e.size == 0);
        CHECK(off + e.size <= 64 * KiB);
        const std::size_t natural = std::min<std::size_t>(e.size & (~e.size + 1), 4096);
        CHECK(off % natural == 0);  // aligned as the class promises
      }
    }
    CHECK(strata::detail::to_address(by_block[first].front()) == first + e.origin);  // slot 0, handed out first
    CHECK(r.check_invariants());
    // The header's address and a bitmap word's are no objects: reported, nothing changes.
    const auto before = r.stats();
    char* const header = reinterpret_cast<char*>(first);
    r.deallocate(header, e.size, 8);
    check_error("thread_cache_resource", errors, 1, error_kind::foreign_pointer, header, e.size);
    char* const bitmap = header + 96;
    r.deallocate(bitmap, e.size, 8);
    CHECK(errors.count() == 2);
    check_unchanged(before, r.stats());
    CHECK(std::all_of(all.front(), all.front() + e.size, [](char c) { return c == 0x5A; }));
    for (char* p : all) r.deallocate(p, e.size, 8);
    CHECK(errors.count() == 2);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
}

TEST_CASE("thread_cache_resource: usable_size covers the request in every tier and is the class size in the thread tier") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  std::size_t wrong = 0, damaged = 0;
  // Thread tier, every size: all usable bytes are written, while neighbours stay intact.
  constexpr std::size_t ring = 16;
  item live[ring] = {};
  for (std::size_t n = 1; n <= small_max; ++n) {
    item& slot = live[n % ring];
    if (slot.p != nullptr) {
      damaged += !strata_test::check_pattern(slot.p, r.round_size(slot.size, 8), slot.seed);
      r.deallocate(slot.p, slot.size, slot.alignment);
    }
    slot = item{static_cast<char*>(r.allocate(n, 8)), n, 8, n};
    const std::size_t u = r.usable_size(slot.p);
    if (u != r.round_size(n, 8) || u < n) {
      if (++wrong < 5) MESSAGE("size " << n << ": usable " << u << ", round_size " << r.round_size(n, 8));
    }
    strata_test::fill_pattern(slot.p, u, slot.seed);  // all u usable bytes
    if (!strata_test::check_pattern(slot.p, n, slot.seed)) ++damaged;
  }
  for (item& b : live) {
    damaged += !strata_test::check_pattern(b.p, r.round_size(b.size, 8), b.seed);  // neighbours wrote nothing here
    r.deallocate(b.p, b.size, b.alignment);
  }
  CHECK(wrong == 0);
  CHECK(damaged == 0);
  // Shared tier and upstream: at least the request.
  std::vector<item> v;
  for (std::size_t n = small_max + 1; n <= shared_max; n += 7919) v.push_back(make(r, n, 8, n));
  for (std::size_t n : {shared_max, shared_max + 1, std::size_t{1} << 20, (std::size_t{3} << 20) + 5})
    v.push_back(make(r, n, 8, n));
  for (const item& b : v) {
    CAPTURE(b.size);
    const std::size_t u = r.usable_size(b.p);
    CHECK(u >= b.size);
    if (r.tier_of(b.size) == cache_tier::shared) CHECK(u <= b.size + 4 * KiB);
    strata_test::fill_sparse(b.p, u, 99, 509);
    CHECK(strata_test::check_sparse(b.p, u, 99, 509));
    r.deallocate(b.p, b.size, b.alignment);
  }
  // Any thread can ask.
  void* p = r.allocate(100, 8);
  std::size_t from_other = 0;
  std::thread([&] { from_other = r.usable_size(p); }).join();
  CHECK(from_other == r.round_size(100, 8));
  r.deallocate(p, 100, 8);
  CHECK(errors.count() == 0);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: every power-of-two alignment from 1 B to 64 KiB, in every tier") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t sizes[] = {1, 8, 24, 100, 1000, 5000, 8192, 20000, shared_max, shared_max + 1};
  auto run = [&](std::uint64_t salt) {
    std::vector<item> v;
    std::size_t misaligned = 0, short_usable = 0, damaged = 0;
    for (std::size_t a = 1; a <= 64 * KiB; a *= 2) {
      for (std::size_t n : sizes) {
        const item b = make(r, n, a, salt + a * 31 + n);
        misaligned += !strata::detail::is_aligned(b.p, a);
        short_usable += r.usable_size(b.p) < n;
        v.push_back(b);
      }
    }
    for (std::size_t i = v.size(); i-- > 0;) damaged += !release(r, v[i]);
    return misaligned + short_usable * 1000 + damaged * 1000000;
  };
  CHECK(run(1) == 0);
  std::size_t from_thread = 1;
  std::thread([&] { from_thread = run(2); }).join();
  CHECK(from_thread == 0);
  CHECK(errors.count() == 0);
  CHECK(r.check_invariants());
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: a zero-size request honours every alignment") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  std::vector<std::pair<void*, std::size_t>> v;
  std::size_t misaligned = 0, same = 0;
  for (std::size_t a = 1; a <= 64 * KiB; a *= 2) {
    CAPTURE(a);
    void* p = r.allocate(0, a);
    void* q = r.allocate_rounded(0, a);
    misaligned += std::size_t{!strata::detail::is_aligned(p, a)} + std::size_t{!strata::detail::is_aligned(q, a)};
    same += p == q;
    if (r.tier_of(0, a) == cache_tier::thread) {
      CHECK(r.round_size(0, a) == r.round_size(1, a));
      CHECK(r.usable_size(p) == r.round_size(0, a));
    }
    v.emplace_back(p, a);
    v.emplace_back(q, a);
  }
  CHECK(misaligned == 0);
  CHECK(same == 0);
  for (const auto& [p, a] : v) r.deallocate(p, 0, a);
  CHECK(errors.count() == 0);
  const auto s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

// ---- statistics ----------------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: statistics are exact across threads and per tier") {
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  constexpr std::size_t threads = 4;
  barrier sync(threads + 1);
  std::vector<std::vector<item>> objects(threads);
  std::vector<std::vector<item>> remaining(threads);  // what each thread leaves alive
  std::atomic<bool> done{false};
  // A watcher reads stats() from yet another thread while the others work (ThreadSanitizer checks the reads).
  std::thread watcher([&] {
    std::uint64_t reads = 0;
    while (!done.load()) {
      const auto s = r.stats();
      for (cache_tier t : all_tiers) (void)r.tier_stats(t);
      reads += s.allocations >= s.deallocations;
      std::this_thread::yield();
    }
    (void)reads;
  });
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // Known numbers: 1000 + 100 t thread-tier objects, 20 + t shared, 2 + t upstream.
      for (std::size_t i = 0; i < 1000 + 100 * t; ++i) objects[t].push_back(make(r, 1 + (i * 37 + t) % small_max, 8, i));
      for (std::size_t i = 0; i < 20 + t; ++i) objects[t].push_back(make(r, small_max + 1 + i * 1000, 8, i));
      for (std::size_t i = 0; i < 2 + t; ++i) objects[t].push_back(make(r, shared_max + 1 + i * 4096, 8, i));
      sync.arrive_and_wait();  // the main thread reads the stats with everything allocated
      sync.arrive_and_wait();
      // Each thread frees every third object of its own and every second of the next thread's (cross-thread).
      auto& mine = objects[t];
      auto& next = objects[(t + 1) % threads];
      for (std::size_t i = 0; i < mine.size(); i += 3) r.deallocate(mine[i].p, mine[i].size, 8);
      for (std::size_t i = 1; i < next.size(); i += 2)
        if (i % 3 != 0) r.deallocate(next[i].p, next[i].size, 8);
    });
  }
  sync.arrive_and_wait();
  std::size_t expected_allocations = 0, expected_bytes = 0;
  std::size_t tier_allocations[3] = {}, tier_bytes[3] = {};
  for (const auto& v : objects)
    for (const item& b : v) {
      ++expected_allocations;
      expected_bytes += r.round_size(b.size, 8);  // each block counts at its rounded size
      ++tier_allocations[index_of(r.tier_of(b.size, 8))];
      tier_bytes[index_of(r.tier_of(b.size, 8))] += r.round_size(b.size, 8);
    }
  CHECK(expected_allocations == 4 * 1000 + 600 + 4 * 20 + 6 + 4 * 2 + 6);
  auto s = r.stats();
  CHECK(s.allocations == expected_allocations);
  CHECK(s.deallocations == 0);
  CHECK(s.bytes_in_use == expected_bytes);
  CHECK(s.peak_bytes_in_use >= expected_bytes);
  const std::size_t in_use_at_full = s.bytes_in_use;
  CHECK(s.bytes_held >= s.bytes_in_use);
  for (cache_tier t : all_tiers) {
    CAPTURE(t);
    const auto ts = r.tier_stats(t);
    CHECK(ts.allocations == tier_allocations[index_of(t)]);
    CHECK(ts.bytes_in_use == tier_bytes[index_of(t)]);
    CHECK(ts.deallocations == 0);
  }
  CHECK(r.tier_stats(cache_tier::upstream).upstream_allocations >= tier_allocations[2]);
  check_tiers_sum(r);
  check_held(up, r);
  sync.arrive_and_wait();
  for (auto& th : pool) th.join();
  done = true;
  watcher.join();
  // After the join: exact.
  std::size_t freed = 0;
  std::size_t live_bytes[3] = {}, live_count[3] = {}, freed_count[3] = {};
  for (std::size_t t = 0; t < threads; ++t) {
    const auto& v = objects[t];
    for (std::size_t i = 0; i < v.size(); ++i) {
      const bool by_owner = i % 3 == 0;
      const bool by_previous = i % 2 == 1 && i % 3 != 0;
      const std::size_t tier = index_of(r.tier_of(v[i].size, 8));
      if (by_owner || by_previous) {
        ++freed;
        ++freed_count[tier];
      } else {
        remaining[t].push_back(v[i]);
        live_bytes[tier] += r.round_size(v[i].size, 8);
        ++live_count[tier];
      }
    }
  }
  s = r.stats();
  CHECK(s.allocations == expected_allocations);
  CHECK(s.deallocations == freed);
  CHECK(s.bytes_in_use == live_bytes[0] + live_bytes[1] + live_bytes[2]);
  CHECK(s.peak_bytes_in_use >= in_use_at_full);
  for (cache_tier t : all_tiers) {
    CAPTURE(t);
    const auto ts = r.tier_stats(t);
    CHECK(ts.bytes_in_use == live_bytes[index_of(t)]);
    CHECK(ts.live_allocations() == live_count[index_of(t)]);
    CHECK(ts.deallocations == freed_count[index_of(t)]);
  }
  check_tiers_sum(r);
  CHECK(r.check_invariants());
  std::size_t damaged = 0;
  for (const auto& v : remaining)
    for (const item& b : v) damaged += !release(r, b);
  CHECK(damaged == 0);
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.deallocations == expected_allocations);
  for (cache_tier t : all_tiers) CHECK(r.tier_stats(t).bytes_in_use == 0);
  check_tiers_sum(r);
  r.trim();
  check_held(up, r);
  CHECK(r.check_invariants());
}

TEST_CASE("thread_cache_resource: bytes_in_use counts each block at round_size, any size of the same block frees it") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  REQUIRE(r.round_size(20, 8) == 24);
  REQUIRE(r.round_size(17, 8) == 24);
  // The thread tier: counted at the class size, freed with any size of the class (on any thread).
  void* p = r.allocate(20, 8);
  CHECK(r.stats().bytes_in_use == 24);
  CHECK(r.tier_stats(cache_tier::thread).bytes_in_use == 24);
  r.deallocate(p, 24, 8);
  CHECK(r.stats().bytes_in_use == 0);
  std::vector<void*> v;
  for (std::size_t i = 0; i < 1000; ++i) v.push_back(r.allocate(17 + i % 8, 8));
  CHECK(r.stats().bytes_in_use == 1000 * 24);
  std::thread([&] {
    for (std::size_t i = 0; i < v.size(); i += 2) r.deallocate(v[i], 24 - i % 8, 8);
  }).join();
  for (std::size_t i = 1; i < v.size(); i += 2) r.deallocate(v[i], 24 - i % 8, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.stats().peak_bytes_in_use >= 1000 * 24);
  // The shared tier: counted at its rounded block.
  const std::size_t n = 20001, rounded = r.round_size(n, 8);
  REQUIRE(rounded > n);
  REQUIRE(r.round_size(rounded, 8) == rounded);
  void* s = r.allocate(n, 8);
  CHECK(r.stats().bytes_in_use == rounded);
  CHECK(r.tier_stats(cache_tier::shared).bytes_in_use == rounded);
  CHECK(r.tier_stats(cache_tier::thread).bytes_in_use == 0);
  check_tiers_sum(r);
  r.deallocate(s, rounded, 8);
  CHECK(r.stats().bytes_in_use == 0);
  // Upstream: the request exactly; another size is a mismatch, reported with the size it was allocated with.
  const std::size_t big = shared_max + 1;
  REQUIRE(r.round_size(big, 8) == big);
  void* b = r.allocate(big, 8);
  CHECK(r.stats().bytes_in_use == big);
  const auto before = r.stats();
  r.deallocate(b, big + 1, 8);
  check_error("thread_cache_resource", errors, 1, strata::error_kind::wrong_size, b, big + 1, big);
  check_unchanged(before, r.stats());
  r.deallocate(b, big, 8);
  // A resize within a class keeps the block and its count.
  p = r.allocate(100, 8);
  const std::size_t c = r.round_size(100, 8);
  CHECK(r.resize(p, 100, 97, 8));
  CHECK(r.stats().bytes_in_use == c);
  r.deallocate(p, c, 8);
  const auto after = r.stats();
  CHECK(after.bytes_in_use == 0);
  CHECK(after.live_allocations() == 0);
  check_tiers_sum(r);
  CHECK(errors.count() == 1);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

// ---- upstream failure ----------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: upstream failure at every point leaves it usable, consistent and leak-free") {
  error_capture errors;
  recording_resource rec;  // the C++ heap: AddressSanitizer sees what a failure path leaks or frees twice
  fault_injecting_resource faults(&rec);
  std::size_t without_failure = 0, damaged = 0;
  const std::size_t points = 40;
  for (std::size_t k = 0; k < points; ++k) {
    CAPTURE(k);
    {
      thread_cache_resource r(&faults);
      const std::size_t small_max = r.max_size(cache_tier::thread);
      const std::size_t shared_max = r.max_size(cache_tier::shared);
      const std::size_t sizes[] = {8,    24,   64,   200, 512, 1024, 3000, small_max, small_max + 1,
                                   20000, 50000, shared_max + 1};
      std::vector<item> live;
      std::size_t bytes = 0;
      faults.fail_after(k);
      bool failed = false;
      for (std::size_t i = 0; i < 20000 && !failed; ++i) {
        try {
          live.push_back(make(r, sizes[i % 12], max_align, i));
          bytes += r.round_size(live.back().size, max_align);
        } catch (const std::bad_alloc&) {
          failed = true;
        }
      }
      without_failure += !failed;
      CHECK(r.check_invariants());
      auto s = r.stats();
      CHECK(s.live_allocations() == live.size());
      CHECK(s.bytes_in_use == bytes);
      CHECK(s.failed_allocations >= 1);
      // A thread whose first requests fail (its heap, its first block) exits; the resource stays consistent.
      std::size_t thread_failures = 0;
      std::vector<item> from_thread;
      std::thread([&] {
        for (std::size_t i = 0; i < 24; ++i) {
          try {
            from_thread.push_back(make(r, sizes[i % 12], max_align, 500 + i));
          } catch (const std::bad_alloc&) {
            ++thread_failures;
          }
        }
      }).join();
      CHECK(r.check_invariants());
      faults.reset();
      // Usable again, from this thread and from a new one.
      for (std::size_t i = 0; i < 60; ++i) live.push_back(make(r, sizes[i % 12], max_align, 1000 + i));
      std::thread([&] {
        std::vector<item> v;
        for (std::size_t i = 0; i < 60; ++i) v.push_back(make(r, sizes[i % 12], max_align, 2000 + i));
        for (const item& b : v) damaged += !release(r, b);
      }).join();
      for (const item& b : from_thread) damaged += !release(r, b);
      for (const item& b : live) damaged += !release(r, b);
      s = r.stats();
      CHECK(s.bytes_in_use == 0);
      CHECK(s.live_allocations() == 0);
      CHECK(r.check_invariants());
    }
    CHECK(rec.live_bytes() == 0);
    CHECK(rec.live_blocks() == 0);
  }
  CHECK(without_failure == 0);
  CHECK(damaged == 0);
  CHECK(errors.count() == 0);
  CHECK(rec.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: a thread that cannot get a heap still counts what it allocates and frees") {
  error_capture errors;
  recording_resource rec;
  fault_injecting_resource faults(&rec);
  {
    thread_cache_resource r(&faults);
    const std::size_t shared_size = r.max_size(cache_tier::thread) + 1000;
    void* keep = r.allocate(shared_size, 8);  // the shared tier now has a chunk with room
    void* small = r.allocate(64, 8);          // a thread-tier object for the other thread to free
    const std::size_t before = r.stats().bytes_in_use;
    faults.fail_after(0);  // no heap for a new thread, and no shared heap either
    void* from_thread = nullptr;
    strata::resource_stats seen{};
    std::thread([&] {
      from_thread = r.allocate(shared_size, 8);  // served from the shared tier's chunk
      seen = r.stats();
      r.deallocate(small, 64, 8);  // a thread-tier free with no heap to batch it in
    }).join();
    CHECK(faults.failures() >= 1);
    CHECK(seen.bytes_in_use == before + r.round_size(shared_size, 8));
    strata::resource_stats s = r.stats();
    CHECK(s.bytes_in_use == r.round_size(shared_size, 8) * 2);
    CHECK(s.live_allocations() == 2);
    CHECK(r.check_invariants());
    std::thread([&] { r.deallocate(from_thread, shared_size, 8); }).join();
    faults.reset();
    r.deallocate(keep, shared_size, 8);
    s = r.stats();
    CHECK(s.bytes_in_use == 0);
    CHECK(s.live_allocations() == 0);
    CHECK(r.check_invariants());
  }
  CHECK(rec.live_bytes() == 0);
  CHECK(errors.count() == 0);
}

// ---- resize --------------------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: resize in place within a class, never across classes or tiers") {
  error_capture errors;
  recording_resource up;
  thread_cache_resource r(&up);
  const std::size_t small_max = r.max_size(cache_tier::thread);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  const std::size_t c = r.round_size(100, 8);
  REQUIRE(c > 100);
  REQUIRE(r.round_size(97, 8) == c);
  auto* p = static_cast<char*>(r.allocate(100, 8));
  strata_test::fill_pattern(p, 100, 5);
  CHECK(r.resize(p, 100, c, 8));
  CHECK(r.stats().bytes_in_use == c);  // the block counts at its class size, whatever size names it
  CHECK(r.resize(p, c, 97, 8));
  CHECK(r.stats().bytes_in_use == c);
  CHECK(strata_test::check_pattern(p, 97, 5));
  const auto before = r.stats();
  CHECK_FALSE(r.resize(p, 97, c + 1, 8));  // the next class
  CHECK_FALSE(r.resize(p, 97, 8, 8));      // a smaller class
  CHECK_FALSE(r.resize(p, 97, 20000, 8));  // the shared tier
  CHECK_FALSE(r.resize(p, 97, shared_max + 1, 8));
  check_unchanged(before, r.stats());
  CHECK(strata_test::check_pattern(p, 97, 5));
  // Another thread resizes it within its class.
  bool remote = false;
  std::thread([&] { remote = r.resize(p, 97, 99, 8); }).join();
  CHECK(remote);
  CHECK(r.stats().bytes_in_use == c);
  r.deallocate(p, 99, 8);
  CHECK(r.stats().bytes_in_use == 0);

  // The shared tier: in place or not, the contents stay and the stats follow; never across tiers.
  auto* s = static_cast<char*>(r.allocate(20000, 8));
  strata_test::fill_pattern(s, 20000, 6);
  std::size_t size = 20000;
  if (r.resize(s, 20000, 20008, 8)) size = 20008;
  CHECK(r.stats().bytes_in_use == r.round_size(size, 8));
  if (r.resize(s, size, 15000, 8)) size = 15000;
  CHECK(r.stats().bytes_in_use == r.round_size(size, 8));
  CHECK(strata_test::check_pattern(s, std::min<std::size_t>(size, 20000), 6));
  CHECK_FALSE(r.resize(s, size, 100, 8));
  CHECK_FALSE(r.resize(s, size, small_max, 8));
  CHECK_FALSE(r.resize(s, size, shared_max + 1, 8));
  CHECK(r.stats().bytes_in_use == r.round_size(size, 8));
  // reallocate() crosses classes and tiers by moving.
  auto* moved = static_cast<char*>(strata::reallocate(r, s, size, shared_max + 100, 8));
  CHECK(strata_test::check_pattern(moved, std::min<std::size_t>(size, 15000), 6));
  moved = static_cast<char*>(strata::reallocate(r, moved, shared_max + 100, 50, 8));
  CHECK(strata_test::check_pattern(moved, 50, 6));
  CHECK(r.stats().bytes_in_use == r.round_size(50, 8));
  r.deallocate(moved, 50, 8);

  // Over an upstream that cannot resize (the C++ heap behind a recorder), upstream blocks do not resize.
  void* big = r.allocate(shared_max + 100, 8);
  CHECK_FALSE(r.resize(big, shared_max + 100, shared_max + 200, 8));
  CHECK(r.stats().bytes_in_use == shared_max + 100);
  r.deallocate(big, shared_max + 100, 8);
  CHECK(errors.count() == 0);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: large blocks resize in place over a page_resource") {
  strata::page_resource pages;
  thread_cache_resource r(&pages);
  const std::size_t shared_max = r.max_size(cache_tier::shared);
  auto* big = static_cast<char*>(r.allocate(2 * MiB, 8));
  strata_test::fill_sparse(big, 2 * MiB, 31, 4093);
  // page_resource reserves address space after spans of 1 MiB and more: growth in place works.
  CHECK(r.resize(big, 2 * MiB, 5 * MiB, 8));
  CHECK(r.stats().bytes_in_use == 5 * MiB);
  CHECK(r.tier_stats(cache_tier::upstream).bytes_in_use == 5 * MiB);
  CHECK(strata_test::check_sparse(big, 2 * MiB, 31, 4093));
  strata_test::fill_sparse(big + 2 * MiB, 3 * MiB, 32, 4096);  // the new pages are usable
  CHECK(r.usable_size(big) >= 5 * MiB);
  CHECK(r.resize(big, 5 * MiB, MiB, 8));  // shrinking gives the tail back
  CHECK(r.stats().bytes_in_use == MiB);
  CHECK(r.resize(big, MiB, shared_max + 1, 8));  // still an upstream size
  CHECK_FALSE(r.resize(big, shared_max + 1, shared_max, 8));  // would have to become a shared-tier block
  CHECK_FALSE(r.resize(big, shared_max + 1, 100, 8));
  CHECK(r.stats().bytes_in_use == shared_max + 1);
  CHECK(strata_test::check_sparse(big, shared_max / 4093 * 4093 + 1, 31, 4093));  // ends on a pattern byte
  r.deallocate(big, shared_max + 1, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("thread_cache_resource: resize checks that the block is live, also for sizes of the same block") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  thread_cache_resource r(&up);  // resize() passes equal sizes on: only the resource can tell a live block
  const std::size_t big = r.max_size(cache_tier::shared) + 1;
  REQUIRE(r.round_size(33, 8) == r.round_size(40, 8));
  void* keep = r.allocate(40, 8);  // keeps the blocks in use
  void* keep_shared = r.allocate(20000, 8);
  void* keep_big = r.allocate(big, 8);
  void* p = r.allocate(40, 8);
  void* s = r.allocate(20000, 8);
  void* b = r.allocate(big, 8);
  void* q = r.allocate(40, 8);
  r.deallocate(p, 40, 8);
  r.deallocate(s, 20000, 8);
  r.deallocate(b, big, 8);
  worker other;
  other.run([&] { r.deallocate(q, 40, 8); });  // waits in the other thread's batch
  alignas(64) static char buffer[256];
  const auto before = r.stats();
  std::size_t n = 0;
  using strata::error_kind;
  // Freed blocks of every tier, including one whose free is not yet published.
  CHECK_FALSE(r.resize(p, 33, 40, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, p, 33);
  CHECK_FALSE(r.resize(p, 40, 40, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, p, 40);
  CHECK_FALSE(r.resize(q, 40, 40, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, q, 40);
  CHECK_FALSE(r.resize(s, 20000, 20000, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, s, 20000);
  CHECK_FALSE(r.resize(b, big, big, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::double_free, b, big);
  // A buffer that is no allocation at all, named with a size of each tier.
  for (std::size_t size : {std::size_t{40}, std::size_t{20000}, big}) {
    CAPTURE(size);
    CHECK_FALSE(r.resize(buffer, size, size, 8));
    check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, buffer, size);
  }
  CHECK_FALSE(r.resize(buffer, 33, 40, 8));
  check_error("thread_cache_resource", errors, ++n, error_kind::foreign_pointer, buffer, 33);
  // Slots after q, never handed out (in the word of slots the thread is handing out: no bit says they are free):
  // each reported as free, or as no slot where the block's header lies (its place in a block varies).
  REQUIRE(static_cast<char*>(q) == static_cast<char*>(p) + 40);
  std::size_t seen_free = 0;
  for (std::size_t k = 1; k <= 40; ++k) {
    void* never = static_cast<char*>(q) + 40 * k;
    CAPTURE(k);
    CHECK_FALSE(r.resize(never, 40, k % 2 == 0 ? 40 : 33, 8));
    REQUIRE(errors.count() == ++n);
    const strata::error_kind kind = errors.errors().back().kind;
    CHECK((kind == error_kind::double_free || kind == error_kind::foreign_pointer));
    if (kind == error_kind::double_free) ++seen_free;
  }
  CHECK(seen_free >= 20);
  check_unchanged(before, r.stats());
  // Live blocks: true, nothing reported, nothing changed.
  CHECK(r.resize(keep, 40, 40, 8));
  CHECK(r.resize(keep, 40, 33, 8));
  CHECK(r.resize(keep, 33, 40, 8));
  CHECK(r.resize(keep_shared, 20000, 20000, 8));
  CHECK(r.resize(keep_big, big, big, 8));
  CHECK(errors.count() == n);
  check_unchanged(before, r.stats());
  std::thread([&] { CHECK(r.resize(keep, 40, 40, 8)); }).join();  // any thread may ask
  other.run([&] { r.trim(); });
  r.deallocate(keep, 40, 8);
  r.deallocate(keep_shared, 20000, 8);
  r.deallocate(keep_big, big, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

// ---- trimming ------------------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: emptied blocks go back upstream beyond max_empty_blocks, and all of them on trim") {
  recording_resource up;
  thread_cache_options o;
  o.max_empty_blocks = 2;
  o.idle_decay_ms = 0;  // no more idle blocks than max_empty_blocks at any time
  thread_cache_resource r(o, &up);
  std::vector<void*> v;
  for (int i = 0; i < 20000; ++i) v.push_back(r.allocate(64, 8));  // about 20 blocks
  const std::size_t held = r.stats().bytes_held;
  CHECK(held >= 19 * 64 * KiB);
  CHECK(r.check_invariants());
  for (void* p : v) r.deallocate(p, 64, 8);
  auto s = r.stats();
  MESSAGE("held " << held / KiB << " KiB with 20,000 objects of 64 B, " << s.bytes_held / KiB << " KiB after freeing them");
  CHECK(s.bytes_in_use == 0);
  CHECK(s.bytes_held <= held - 12 * 64 * KiB);  // at most the current block, a few cached, and the heap's own memory
  CHECK(r.check_invariants());
  r.trim();
  s = r.stats();
  CHECK(s.bytes_held <= held - 17 * 64 * KiB);
  check_held(up, r);
  CHECK(r.check_invariants());
  void* again = r.allocate(64, 8);  // usable after trim()
  r.deallocate(again, 64, 8);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

// ---- statistics: the peak ------------------------------------------------------------------------------------------

TEST_CASE("thread_cache_resource: peak_bytes_in_use is the highest bytes_in_use, looked at or not") {
  recording_resource up;
  thread_cache_resource r(&up);
  std::vector<void*> v;
  for (int i = 0; i < 1000; ++i) v.push_back(r.allocate(64, 8));
  for (void* p : v) r.deallocate(p, 64, 8);
  CHECK(r.stats().peak_bytes_in_use >= 64000);  // nobody read the stats while it was the peak
  // Then 64,000 bytes in the thread tier and, after they are freed, 64,000 in the shared tier: never both at once.
  v.clear();
  for (int i = 0; i < 1000; ++i) v.push_back(r.allocate(64, 8));
  CHECK(r.stats().bytes_in_use == 64000);
  for (void* p : v) r.deallocate(p, 64, 8);
  void* s = r.allocate(64000, 8);
  CHECK(r.tier_of(64000) == cache_tier::shared);
  CHECK(r.stats().bytes_in_use == 64000);
  r.deallocate(s, 64000, 8);
  const auto st = r.stats();
  CHECK(st.peak_bytes_in_use >= 64000);
  CHECK(st.peak_bytes_in_use <= 64000);  // the highest value bytes_in_use had, not a sum of the tiers' peaks
  CHECK(r.check_invariants());
}

// ---- threads and instances: edges -----------------------------------------------------------------------------------

namespace {
/// A thread_local that frees (and allocates) through a resource when its thread exits.
struct frees_at_exit {
  thread_cache_resource* r = nullptr;
  std::atomic<std::size_t>* damaged = nullptr;
  std::vector<item> objects;
  ~frees_at_exit() {
    if (r == nullptr) return;
    for (const item& b : objects) *damaged += !release(*r, b);
    for (std::size_t size : {std::size_t{24}, std::size_t{300}, std::size_t{5000}}) *damaged += !release(*r, make(*r, size, 8, size));
  }
};
}  // namespace

TEST_CASE("thread_cache_resource: thread_local destructors may allocate and free while their thread exits") {
  error_capture errors;
  recording_resource up;
  std::optional<thread_cache_resource> holder(std::in_place, &up);
  thread_cache_resource& r = *holder;
  std::atomic<std::size_t> damaged{0};
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      // Built before the thread first uses the resource: destroyed after the resource's own thread-exit cleanup.
      thread_local frees_at_exit early;
      early.r = &r;
      early.damaged = &damaged;
      for (std::size_t i = 0; i < 300; ++i) early.objects.push_back(make(r, 16 + i * 7 % 3000, 8, t * 1000 + i));
      // Built after: destroyed before it.
      thread_local frees_at_exit late;
      late.r = &r;
      late.damaged = &damaged;
      for (std::size_t i = 0; i < 300; ++i) late.objects.push_back(make(r, 16 + i * 11 % 3000, 8, t * 1000 + i));
    });
  }
  for (auto& th : pool) th.join();
  CHECK(damaged.load() == 0);
  CHECK(errors.count() == 0);
  CHECK(r.check_invariants());
  const auto s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == 4 * (600 + 3 + 3));
  // The resource still serves new threads and the main thread.
  std::thread([&] { damaged += !release(r, make(r, 100, 8, 1)); }).join();
  damaged += !release(r, make(r, 100, 8, 2));
  CHECK(damaged.load() == 0);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  holder.reset();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: one thread using more instances at once than it keeps heaps for") {
  error_capture errors;
  recording_resource up;
  constexpr std::size_t count = 70;  // the per-thread record of heaps holds 64; engine ids share 8 fast slots
  std::vector<std::unique_ptr<thread_cache_resource>> rs;
  for (std::size_t i = 0; i < count; ++i) rs.push_back(std::make_unique<thread_cache_resource>(&up));
  std::vector<std::vector<item>> objects(count);
  std::size_t damaged = 0;
  std::thread([&] {
    for (std::size_t round = 0; round < 20; ++round)  // round robin: every call switches instance
      for (std::size_t i = 0; i < count; ++i)
        objects[i].push_back(make(*rs[i], 8 + (round * 8 + i) % 400, 8, round * 100 + i));
    for (std::size_t i = 0; i < count; ++i)
      for (std::size_t k = 0; k < objects[i].size(); k += 2) damaged += !release(*rs[i], objects[i][k]);
  }).join();
  CHECK(damaged == 0);
  for (std::size_t i = 0; i < count; ++i) {
    CAPTURE(i);
    auto& r = *rs[i];
    CHECK(r.check_invariants());
    CHECK(r.stats().allocations == 20);
    CHECK(r.stats().live_allocations() == 10);
    CHECK(r.heap_count() <= 2);
    for (std::size_t k = 1; k < objects[i].size(); k += 2) damaged += !release(r, objects[i][k]);
    CHECK(r.stats().live_allocations() == 0);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
  CHECK(damaged == 0);
  CHECK(errors.count() == 0);
  rs.clear();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: freeing a shared-tier block reads no other live object's memory") {
  // Meant for ThreadSanitizer: one thread writes its objects while another frees the blocks between them. A free that
  // looks for a block header at the 64 KiB boundary below the pointer reads the neighbours' bytes: a data race.
  recording_resource up;
  thread_cache_resource r(&up);
  std::vector<char*> v;
  for (int i = 0; i < 48; ++i) v.push_back(static_cast<char*>(r.allocate(20000, 8)));  // carved one after another
  REQUIRE(r.tier_of(20000) == cache_tier::shared);
  barrier start(2);
  std::thread writer([&] {
    start.arrive_and_wait();
    for (std::uint64_t round = 0; round < 2; ++round)  // byte by byte: every byte an instrumented write
      for (std::size_t i = 0; i < v.size(); i += 2) strata_test::fill_pattern(v[i], 20000, round);
  });
  std::thread freer([&] {
    start.arrive_and_wait();
    for (std::size_t i = 1; i < v.size(); i += 2) {
      CHECK(r.usable_size(v[i]) >= 20000);
      r.deallocate(v[i], 20000, 8);
    }
  });
  writer.join();
  freer.join();
  for (std::size_t i = 0; i < v.size(); i += 2) r.deallocate(v[i], 20000, 8);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: usable_size of thread-tier objects reads no shared-tier chunk while others write") {
  // The other direction: front blocks have their own block map, so a thread-tier pointer is never taken for a
  // shared-tier chunk whose header would sit inside another front block's objects.
  recording_resource up;
  thread_cache_resource r(&up);
  std::vector<char*> v;
  for (int i = 0; i < 4000; ++i) v.push_back(static_cast<char*>(r.allocate(64, 8)));
  barrier start(2);
  std::thread writer([&] {
    start.arrive_and_wait();
    for (std::size_t i = 0; i < v.size(); i += 2) strata_test::fill_pattern(v[i], 64, i);
  });
  std::thread reader([&] {
    start.arrive_and_wait();
    for (std::size_t i = 1; i < v.size(); i += 2) CHECK(r.usable_size(v[i]) == 64);
  });
  writer.join();
  reader.join();
  for (char* p : v) r.deallocate(p, 64, 8);
  CHECK(r.stats().live_allocations() == 0);
}

TEST_CASE("thread_cache_resource: deallocate_unsized frees every tier, stats stay exact") {
  recording_resource up;
  thread_cache_resource r(&up);
  const std::size_t sizes[] = {0, 1, 8, 24, 100, 4096, 8192, 8193, 20000, 256 * KiB, 256 * KiB + 1, 3 * MiB};
  const std::size_t alignments[] = {1, 8, 16, 64, 4096, 64 * KiB};
  const auto before = r.stats();
  std::size_t count = 0;
  for (std::size_t n : sizes) {
    for (std::size_t a : alignments) {
      // Any request: the block counts at round_size, which is what its tier finds without the size.
      const std::size_t request = r.round_size(n, a);
      void* p = r.allocate(n, a);
      void* q = r.allocate(request, a);
      CHECK(r.usable_size(p) == request);
      CHECK(r.usable_size(q) == request);
      strata_test::fill_pattern(p, request, n);
      CHECK(r.deallocate_unsized(p) == request);
      CHECK(r.deallocate_unsized(q) == request);
      count += 2;
    }
  }
  const auto after = r.stats();
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(after.allocations - before.allocations == count);
  CHECK(after.deallocations - before.deallocations == count);
  for (cache_tier t : all_tiers) CHECK(r.tier_stats(t).bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: deallocate_unsized reports foreign pointers and double frees and changes nothing") {
  thread_cache_resource r;
  error_capture errors;
  void* small = r.allocate(40);
  void* mid = r.allocate(30000);
  void* large = r.allocate(MiB);
  const auto before = r.stats();
  int on_stack = 0;
  CHECK(r.deallocate_unsized(&on_stack) == 0);
  check_error("thread_cache_resource", errors, 1, strata::error_kind::foreign_pointer, &on_stack, 0);
  CHECK(r.deallocate_unsized(static_cast<char*>(small) + 8) == r.round_size(40));  // inside an object
  check_error("thread_cache_resource", errors, 2, strata::error_kind::foreign_pointer, static_cast<char*>(small) + 8,
              r.round_size(40));
  check_unchanged(before, r.stats());
  for (void* p : {small, mid, large}) CHECK(r.deallocate_unsized(p) != 0);
  const auto freed = r.stats();
  CHECK(freed.live_allocations() == 0);
  r.deallocate_unsized(small);  // double frees, each tier
  CHECK(errors.count() == 3);
  CHECK(errors.errors().back().kind == strata::error_kind::double_free);
  CHECK(r.deallocate_unsized(mid) == 0);
  CHECK(r.deallocate_unsized(large) == 0);
  CHECK(errors.count() == 5);
  check_unchanged(freed, r.stats());
  CHECK(r.check_invariants());
}

TEST_CASE("thread_cache_resource: a free without a size into the owner's spare block is reported, both check modes") {
  // The spare block's class map value carries a flag beside its class: the free must not take that for a class.
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    strata::thread_cache_options o;
    o.max_empty_blocks = 0;  // an emptied block becomes the spare at once
    o.checks = mode;
    thread_cache_resource r(o);
    constexpr std::size_t size = 48;
    std::vector<void*> all;
    for (int i = 0; i < 4000; ++i) all.push_back(r.allocate(size, 8));  // three blocks and more
    const auto block = [](const void* x) { return reinterpret_cast<std::uintptr_t>(x) >> 16; };
    std::vector<void*> first, last;
    for (void* x : all) {
      if (block(x) == block(all.front())) first.push_back(x);
      if (block(x) == block(all.back())) last.push_back(x);
    }
    REQUIRE(block(all.front()) != block(all.back()));
    // The current block's objects fill the free cache; then the first block's go onto its list, and it empties.
    for (void* x : last) CHECK(r.deallocate_unsized(x) == size);
    for (void* x : first) CHECK(r.deallocate_unsized(x) == size);
    CHECK(r.check_invariants());
    const auto before = r.stats();
    r.deallocate_unsized(first[first.size() / 2]);  // freed already
    REQUIRE(errors.count() == 1);
    CAPTURE(errors.errors()[0].message);
    CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
    CHECK(errors.errors()[0].pointer == first[first.size() / 2]);
    check_unchanged(before, r.stats());
    CHECK(r.check_invariants());
    for (void* x : all)
      if (block(x) != block(all.front()) && block(x) != block(all.back())) r.deallocate_unsized(x);
    CHECK(r.stats().live_allocations() == 0);
    CHECK(errors.count() == 1);
    CHECK(r.check_invariants());
  }
}

TEST_CASE("thread_cache_resource: release_thread_cache hands the thread's blocks back, the thread may go on") {
  recording_resource up;
  thread_cache_resource r(&up);
  std::vector<void*> kept;
  std::thread t([&] {
    for (int i = 0; i < 1000; ++i) kept.push_back(r.allocate(48));
    r.release_thread_cache();
    r.release_thread_cache();  // twice is harmless
    void* p = r.allocate(48);  // a heap again
    r.deallocate(p, 48);
    for (std::size_t i = 0; i < kept.size(); i += 2) r.deallocate(kept[i], 48);  // freed after the handback
    r.release_thread_cache();
  });
  t.join();
  CHECK(r.heap_count() >= 1);
  // The blocks the thread held are in the shared tier now: this thread adopts them, and frees the rest.
  for (std::size_t i = 1; i < kept.size(); i += 2) r.deallocate(kept[i], 48);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  r.release_thread_cache();
  r.trim();
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("thread_cache_resource: release() frees every thread's blocks at once and the resource goes on") {
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    recording_resource up{strata::default_page_resource()};
    thread_cache_options o;
    o.checks = mode;
    thread_cache_resource r(o, &up);
    const std::size_t sizes[] = {24, 200, 3000, 20 * KiB, 300 * KiB};  // every tier
    // A thread that keeps its heap across the release: it allocates, waits, and comes back after it.
    std::mutex m;
    std::condition_variable cv;
    int phase = 0;
    std::thread idle([&] {
      for (std::size_t s : sizes) (void)r.allocate(s, 8);  // left allocated: release() frees them
      {
        std::unique_lock<std::mutex> g(m);
        phase = 1;
        cv.notify_all();
        cv.wait(g, [&] { return phase == 2; });
      }
      for (int i = 0; i < 100; ++i)
        for (std::size_t s : sizes) r.deallocate(r.allocate(s, 8), s, 8);
    });
    {
      std::unique_lock<std::mutex> g(m);
      cv.wait(g, [&] { return phase == 1; });
    }
    std::thread([&] {
      for (int i = 0; i < 50; ++i)
        for (std::size_t s : sizes) (void)r.allocate(s, 8);
    }).join();
    std::vector<void*> mine;
    for (int i = 0; i < 50; ++i)
      for (std::size_t s : sizes) mine.push_back(r.allocate(s, 8));
    const auto before = r.stats();
    CHECK(before.bytes_in_use > 0);
    CHECK(r.heap_count() >= 2);
    r.release();
    const auto after = r.stats();
    CHECK(after.allocations == before.allocations);
    CHECK(after.deallocations == after.allocations);
    CHECK(after.bytes_in_use == 0);
    CHECK(after.peak_bytes_in_use >= before.bytes_in_use);
    CHECK(r.heap_count() == 0);
    for (cache_tier t : all_tiers) CHECK(r.tier_stats(t).bytes_in_use == 0);
    CHECK(r.check_invariants());
    // Upstream holds only the class map's leaves now (kept for the blocks to come): none where the map is a flat
    // table (from the OS), else one per 256 MiB window the blocks were in, so how many depends on where the OS
    // placed them (four under ThreadSanitizer's layout).
    const auto held = up.live();
    CHECK(held.size() <= 8);
    for (const auto& b : held) CHECK(b.size == strata::detail::tc_map::leaf_bytes);
    // The calling thread and the idle one go on, with new heaps.
    for (int i = 0; i < 100; ++i)
      for (std::size_t s : sizes) r.deallocate(r.allocate(s, 8), s, 8);
    {
      std::lock_guard<std::mutex> g(m);
      phase = 2;
      cv.notify_all();
    }
    idle.join();
    const auto last = r.stats();
    CHECK(last.bytes_in_use == 0);
    CHECK(last.deallocations == last.allocations);
    CHECK(last.upstream_deallocations <= last.upstream_allocations);
    CHECK(r.check_invariants());
    r.release();  // again, with nothing allocated
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
}

// Not under the sanitizers: ThreadSanitizer does not follow a child forked while threads run, and AddressSanitizer's
// allocator (GCC 12's runtime) takes no locks of its own around fork(), so a child's malloc can wait forever for a
// lock another thread of the parent held (seen: std::thread's calloc in the child, about 1 run in 10 under load).
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__) && defined(__linux__)  // Windows has no fork()
TEST_CASE("thread_cache_resource: fork() while other threads allocate, with the fork handlers around it") {
  // Without prepare_fork(), a child forked while another thread held one of the resource's locks (the shared tier's,
  // a heap list's) would wait for it forever; the children here allocate in every tier, start a thread and check
  // the resource.
  strata::page_resource pages;
  strata::thread_cache_resource r(strata::thread_cache_resource::options{}, &pages);
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t) {
    workers.emplace_back([&, t] {
      std::vector<std::pair<void*, std::size_t>> held;
      std::uint32_t x = 7u + static_cast<std::uint32_t>(t);
      while (!stop.load(std::memory_order_relaxed)) {
        x = x * 1664525u + 1013904223u;
        const std::size_t n = 8 + (x >> 8) % (x % 5 == 0 ? 400000 : 3000);
        held.emplace_back(r.allocate(n, 8), n);
        if (held.size() > 300) {
          for (auto& [p, size] : held) r.deallocate(p, size, 8);
          held.clear();
        }
      }
      for (auto& [p, size] : held) r.deallocate(p, size, 8);
    });
  }
  int failed_children = 0;
  for (int k = 0; k < 30; ++k) {
    r.prepare_fork();
    const pid_t pid = fork();
    if (pid == 0) {
      r.after_fork_child();
      alarm(30);  // a child that waits for a lock forever dies of SIGALRM
      std::vector<std::pair<void*, std::size_t>> mine;
      for (std::size_t i = 0; i < 500; ++i) {
        const std::size_t n = 16 + i * 997 % 300000;
        mine.emplace_back(r.allocate(n, 8), n);
      }
      std::thread t([&r] { r.deallocate(r.allocate(100, 8), 100, 8); });
      t.join();
      for (auto& [p, size] : mine) r.deallocate(p, size, 8);
      r.trim();
      _exit(0);
    }
    r.after_fork_parent();
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed_children;
  }
  stop = true;
  for (auto& t : workers) t.join();
  CHECK(failed_children == 0);
  CHECK(r.check_invariants());
}
#endif
