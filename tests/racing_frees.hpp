// SPDX-License-Identifier: MIT
// tests/racing_frees.hpp: two threads free one object at the same instant, round after round (the synchronized
// resources' thread caches).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <strata/testing.hpp>

#include "support.hpp"

namespace strata_test {

/// The main thread allocates an object of `size` bytes, two threads free it at the same instant, `rounds` times;
/// their caches keep what they freed across rounds. Then both threads and the main thread allocate more. Checks:
/// one double-free report per round (the free that loses reports at once), nothing handed out twice, exact counts
/// and invariants, and nothing left upstream after release().
template <class Resource>
void check_racing_double_frees(Resource& r, strata::testing::recording_resource& up, error_capture& errors,
                               std::size_t size, std::size_t rounds) {
  std::atomic<void*> target{nullptr};
  std::atomic<std::size_t> round{0}, arrived{0}, finished{0};
  std::mutex seen_lock;
  std::vector<void*> handed_out;  // by the freeing threads at their end, and by this one
  auto freer = [&] {
    for (std::size_t i = 1; i <= rounds; ++i) {
      while (round.load(std::memory_order_acquire) != i) std::this_thread::yield();
      void* p = target.load(std::memory_order_relaxed);
      ++arrived;
      for (unsigned spins = 0; arrived.load() < 2 * i;)  // both threads in, then both free at once
        if (++spins > 1000) std::this_thread::yield();
      r.deallocate(p, size, 8);
      ++finished;
    }
    // Both threads have freed the last object (else one's allocation could hand it out before the other's free,
    // which then frees a live object). Pops this thread's cache, then more.
    while (finished.load() < 2 * rounds) std::this_thread::yield();
    std::vector<void*> mine;
    for (int i = 0; i < 300; ++i) mine.push_back(r.allocate(size, 8));
    std::lock_guard<std::mutex> g(seen_lock);
    handed_out.insert(handed_out.end(), mine.begin(), mine.end());
  };
  std::thread a(freer), b(freer);
  for (std::size_t i = 1; i <= rounds; ++i) {
    target.store(r.allocate(size, 8), std::memory_order_relaxed);
    round.store(i, std::memory_order_release);
    while (finished.load() < 2 * i) std::this_thread::yield();
  }
  a.join();
  b.join();
  CHECK(errors.count() == rounds);
  for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
  for (int i = 0; i < 3000; ++i) handed_out.push_back(r.allocate(size, 8));
  std::vector<void*> sorted = handed_out;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // nothing handed out twice
  CHECK(r.check_invariants());
  for (void* p : handed_out) r.deallocate(p, size, 8);
  const auto s = r.stats();
  CHECK(s.allocations == s.deallocations);
  CHECK(s.bytes_in_use == 0);
  CHECK(errors.count() == rounds);
  CHECK(r.check_invariants());
  r.release();
  CHECK(r.check_invariants());
  CHECK(up.live_bytes() == 0);
}

}  // namespace strata_test
