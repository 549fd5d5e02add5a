// SPDX-License-Identifier: MIT
// tests/conformance.hpp: the conformance suite that every strata resource passes. A resource joins it with one line
// in conformance.cpp: STRATA_CONFORMANCE(subject<R, upstream>) (and STRATA_CONFORMANCE_THREADS for thread-safe ones).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>
#include <strata/testing.hpp>

#include "support.hpp"

namespace strata_test {

// ---- how the suite builds a subject --------------------------------------------------------------------------------

/// Constructs the resource under test over `upstream`. Specialise for resources with other constructors.
template <class R>
struct make_resource {
  static std::unique_ptr<R> over(std::pmr::memory_resource* upstream) { return std::make_unique<R>(upstream); }
};
template <>
struct make_resource<strata::page_resource> {
  static std::unique_ptr<strata::page_resource> over(std::pmr::memory_resource*) {
    return std::make_unique<strata::page_resource>();
  }
};

struct page_base {
  static constexpr const char* name = "page_resource";
  static std::pmr::memory_resource* get() { return strata::default_page_resource(); }
};
struct new_delete_base {
  static constexpr const char* name = "new_delete";
  static std::pmr::memory_resource* get() { return std::pmr::new_delete_resource(); }
};

/// The usual upstream: resource -> fault injector -> recorder -> Base. The recorder checks every upstream
/// deallocation against what upstream handed out and tells what the resource still holds.
template <class Base>
class chained_upstream {
 public:
  static constexpr bool has_byte_limit = true;
  chained_upstream() : recorder_(Base::get()), faults_(&recorder_) {}
  std::pmr::memory_resource* upstream() noexcept { return &faults_; }
  void fail_after(std::size_t n) { faults_.fail_after(n); }
  void set_byte_limit(std::size_t n) { faults_.set_byte_limit(n); }
  void reset_faults() { faults_.reset(); }
  /// Bytes the resource under test holds from upstream now.
  std::size_t held_bytes() const { return recorder_.live_bytes(); }
  std::uint64_t mismatches() const { return recorder_.mismatches(); }

 private:
  strata::testing::recording_resource recorder_;
  strata::testing::fault_injecting_resource faults_;
};

/// page_resource's upstream is the OS: faults are injected in the OS layer and holdings read from its counter.
class os_upstream {
 public:
  static constexpr bool has_byte_limit = false;
  os_upstream() : baseline_(strata::testing::os_mapped_bytes()) {}
  ~os_upstream() { strata::testing::clear_os_failures(); }
  std::pmr::memory_resource* upstream() noexcept { return nullptr; }
  void fail_after(std::size_t n) { strata::testing::inject_os_failures_after(n); }
  void set_byte_limit(std::size_t) {}
  void reset_faults() { strata::testing::clear_os_failures(); }
  std::size_t held_bytes() const { return strata::testing::os_mapped_bytes() - baseline_; }
  std::uint64_t mismatches() const { return 0; }

 private:
  std::size_t baseline_;
};

/// A resource type R over an upstream policy U, built by Maker (default: make_resource<R>).
template <class R, class U, class Maker = make_resource<R>>
struct subject {
  using resource_type = R;
  using upstream_type = U;
  using maker = Maker;
};

/// One subject's world for one test: the upstream chain and the resource over it.
template <class S>
class harness {
 public:
  using R = typename S::resource_type;
  harness() : resource_(S::maker::over(up_.upstream())) {}
  ~harness() { CHECK(up_.mismatches() == 0); }
  R& r() { return *resource_; }
  typename S::upstream_type& up() { return up_; }
  void invariants() { CHECK(resource_->check_invariants()); }
  /// Destroys the resource; everything it held must be back upstream.
  void destroy_and_check_nothing_held() {
    resource_.reset();
    CHECK(up_.held_bytes() == 0);
  }
  void rebuild() { resource_ = S::maker::over(up_.upstream()); }

 private:
  typename S::upstream_type up_;
  std::unique_ptr<R> resource_;
};

/// What stats().bytes_in_use counts for a live block of (size, alignment): its usable size, round_size(size,
/// alignment), for resources that round requests up to their blocks; the size itself for the others (page_resource
/// records each request exactly).
template <class R, class = void>
struct has_round_size : std::false_type {};
template <class R>
struct has_round_size<R, std::void_t<decltype(std::declval<const R&>().round_size(std::size_t{}, std::size_t{}))>>
    : std::true_type {};
template <class R>
std::size_t counted_bytes(const R& r, std::size_t size, std::size_t alignment) {
  if constexpr (has_round_size<R>::value) return r.round_size(size, alignment);
  else return size;
}
/// The same through a pmr pointer: a strata resource is found by its dynamic type.
using rounding = std::size_t (*)(const std::pmr::memory_resource&, std::size_t, std::size_t);
template <class R>
rounding rounding_of() {
  return [](const std::pmr::memory_resource& r, std::size_t size, std::size_t alignment) {
    return counted_bytes(static_cast<const R&>(r), size, alignment);
  };
}

/// A live block in a test's shadow model.
struct block {
  void* p;
  std::size_t size;
  std::size_t alignment;
  std::uint64_t seed;
};

inline std::size_t pick_size(rng& g) {
  const std::uint64_t k = g.next() % 100;
  if (k < 70) return g.between(1, 256);
  if (k < 95) return g.between(257, 4096);
  return g.between(4097, 65536);
}
inline std::size_t pick_alignment(rng& g) {
  if (g.next() % 10 < 6) return alignof(std::max_align_t);
  return std::size_t{1} << g.between(0, 12);
}

/// Allocates into a shadow model, filling the block; the model checks alignment and overlap.
class shadow {
 public:
  template <class R>
  explicit shadow(R& r) : r_(r), round_(rounding_of<R>()) {}
  block& add(std::size_t size, std::size_t alignment, std::uint64_t seed) {
    void* p = r_.allocate(size, alignment);
    REQUIRE(p != nullptr);
    if (!strata::detail::is_aligned(p, alignment)) ++misaligned;
    const auto a = strata::detail::to_address(p);
    auto next = ranges_.lower_bound(a);
    if (next != ranges_.end() && next->first < a + std::max<std::size_t>(size, 1)) ++overlaps;
    if (next != ranges_.begin() && std::prev(next)->first + std::prev(next)->second > a) ++overlaps;
    ranges_.emplace(a, std::max<std::size_t>(size, 1));
    fill_pattern(p, size, seed);
    live.push_back(block{p, size, alignment, seed});
    bytes += round_(r_, size, alignment);
    return live.back();
  }
  void remove(std::size_t index) {
    block b = live[index];
    if (!check_pattern(b.p, b.size, b.seed)) ++corrupted;
    ranges_.erase(strata::detail::to_address(b.p));
    live[index] = live.back();
    live.pop_back();
    bytes -= round_(r_, b.size, b.alignment);
    r_.deallocate(b.p, b.size, b.alignment);
  }
  void verify_all() {
    for (const block& b : live)
      if (!check_pattern(b.p, b.size, b.seed)) ++corrupted;
  }
  void clear() {
    while (!live.empty()) remove(live.size() - 1);
  }
  std::vector<block> live;
  std::size_t bytes = 0;
  std::size_t misaligned = 0, overlaps = 0, corrupted = 0;

 private:
  std::pmr::memory_resource& r_;
  rounding round_;
  std::map<std::uintptr_t, std::size_t> ranges_;
};

// ---- the suite -----------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE_DEFINE("conformance: every size 1..64 KiB at every alignment 1..4 KiB", S, conformance_sizes) {
  harness<S> h;
  auto& r = h.r();
  std::size_t misaligned = 0, corrupted = 0, allocations = 0;
  constexpr std::size_t ring_size = 8;
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) {
    block ring[ring_size] = {};
    for (std::size_t size = 1; size <= 65536; ++size) {
      block& slot = ring[size % ring_size];
      if (slot.p != nullptr) {
        if (!check_sparse(slot.p, slot.size, slot.seed, 509)) ++corrupted;
        r.deallocate(slot.p, slot.size, slot.alignment);
      }
      void* p = r.allocate(size, alignment);
      ++allocations;
      if (!strata::detail::is_aligned(p, alignment)) ++misaligned;
      slot = block{p, size, alignment, size * 8191 + alignment};
      fill_sparse(p, size, slot.seed, size <= 512 ? 1 : 509);
    }
    for (block& b : ring) {
      if (!check_sparse(b.p, b.size, b.seed, 509)) ++corrupted;
      r.deallocate(b.p, b.size, b.alignment);
    }
  }
  CHECK(allocations == 13u * 65536u);
  CHECK(misaligned == 0);
  CHECK(corrupted == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.stats().live_allocations() == 0);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: random mix against a shadow model", S, conformance_shadow) {
  harness<S> h;
  auto& r = h.r();
  rng g(0x5eed0001);
  shadow model(r);
  const std::size_t ops = scaled(20000);
  std::size_t stats_mismatch = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    if (model.live.empty() || (model.live.size() < 2000 && g.next() % 100 < 55)) {
      model.add(pick_size(g), pick_alignment(g), g.next());
    } else {
      model.remove(g.next() % model.live.size());
    }
    if (i % 1000 == 999) {
      model.verify_all();
      const auto s = r.stats();
      if (s.bytes_in_use != model.bytes || s.live_allocations() != model.live.size()) ++stats_mismatch;
      h.invariants();
    }
  }
  model.clear();
  CHECK(model.misaligned == 0);
  CHECK(model.overlaps == 0);
  CHECK(model.corrupted == 0);
  CHECK(stats_mismatch == 0);
  CHECK(r.stats().bytes_in_use == 0);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: zero-size requests get distinct usable blocks", S, conformance_zero) {
  harness<S> h;
  auto& r = h.r();
  void* a = r.allocate(0, 1);
  void* b = r.allocate(0, alignof(std::max_align_t));
  CHECK(a != nullptr);
  CHECK(b != nullptr);
  CHECK(a != b);
  CHECK(r.stats().live_allocations() == 2);
  r.deallocate(a, 0, 1);
  r.deallocate(b, 0, alignof(std::max_align_t));
  CHECK(r.stats().live_allocations() == 0);
  // A zero-size block is aligned as asked, like any other.
  for (std::size_t alignment = 1; alignment <= 65536; alignment *= 2) {
    CAPTURE(alignment);
    void* p = r.allocate(0, alignment);
    void* q = r.allocate(0, alignment);
    CHECK(strata::detail::is_aligned(p, alignment));
    CHECK(strata::detail::is_aligned(q, alignment));
    CHECK(p != q);
    r.deallocate(p, 0, alignment);
    r.deallocate(q, 0, alignment);
  }
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  h.invariants();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: impossible sizes and bad alignments are errors", S, conformance_bad_args) {
  harness<S> h;
  auto& r = h.r();
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  for (std::size_t size : {max, max - 1, max - 4095, max / 2 + 1, std::size_t{1} << 62}) {
    CAPTURE(size);
    CHECK_THROWS_AS((void)r.allocate(size, 8), std::bad_alloc);
    CHECK_THROWS_AS((void)r.allocate(size, 4096), std::bad_alloc);
  }
  for (std::size_t alignment : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{4097}}) {
    CAPTURE(alignment);
    CHECK_THROWS_AS((void)r.allocate(64, alignment), std::invalid_argument);
  }
  const auto s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.failed_allocations >= 10);
  void* p = r.allocate(100, 8);
  fill_pattern(p, 100, 7);
  CHECK(check_pattern(p, 100, 7));
  {
    // Freeing with an alignment that is not a power of two is misuse: reported, and the block stays live.
    error_capture errors;
    const auto before = r.stats();
    for (std::size_t alignment : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{4097}}) {
      CAPTURE(alignment);
      const std::size_t n = errors.count();
      r.deallocate(p, 100, alignment);
      CHECK(errors.count() == n + 1);
    }
    check_unchanged(before, r.stats());
  }
  CHECK(check_pattern(p, 100, 7));
  r.deallocate(p, 100, 8);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: upstream exhaustion leaves the resource usable and leak-free", S,
                          conformance_exhaustion) {
  harness<S> h;
  rng g(0x5eed0002);
  std::size_t without_failure = 0, corrupted_after = 0;
  for (std::size_t k = 0; k < 40; ++k) {
    CAPTURE(k);
    auto& r = h.r();
    shadow model(r);
    h.up().fail_after(k);
    bool failed = false;
    for (std::size_t i = 0; i < 20000 && !failed; ++i) {
      try {
        model.add(g.next() % 4 == 0 ? g.between(4097, 300000) : g.between(1, 2048), pick_alignment(g), g.next());
      } catch (const std::bad_alloc&) {
        failed = true;
      }
    }
    if (!failed) ++without_failure;
    h.invariants();
    h.up().reset_faults();
    // Still usable: more blocks, then everything verified and freed.
    for (int i = 0; i < 50; ++i) model.add(pick_size(g), pick_alignment(g), g.next());
    model.verify_all();
    corrupted_after += model.corrupted;
    model.clear();
    CHECK(r.stats().bytes_in_use == 0);
    h.invariants();
    h.destroy_and_check_nothing_held();
    h.rebuild();
  }
  CHECK(without_failure == 0);
  CHECK(corrupted_after == 0);

  if constexpr (S::upstream_type::has_byte_limit) {
    auto& r = h.r();
    shadow model(r);
    h.up().set_byte_limit(1 << 20);
    bool failed = false;
    for (std::size_t i = 0; i < 100000 && !failed; ++i) {
      try {
        model.add(g.between(1, 8192), 8, g.next());
      } catch (const std::bad_alloc&) {
        failed = true;
      }
    }
    CHECK(failed);
    CHECK(h.up().held_bytes() <= (1u << 20));
    h.up().reset_faults();
    model.add(100, 8, 1);
    model.clear();
    h.invariants();
    h.destroy_and_check_nothing_held();
    h.rebuild();
  }
}

TEST_CASE_TEMPLATE_DEFINE("conformance: destruction returns everything upstream", S, conformance_release) {
  harness<S> h;
  rng g(0x5eed0003);
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = pick_size(g);
    void* p = h.r().allocate(size, pick_alignment(g));
    fill_pattern(p, size, 1);
  }
  CHECK(h.r().stats().live_allocations() == 2000);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: resize in place keeps contents or changes nothing", S, conformance_resize) {
  harness<S> h;
  auto& r = h.r();
  rng g(0x5eed0004);
  std::size_t corrupted = 0, resized = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t old_size = pick_size(g);
    const std::size_t new_size = g.next() % 2 ? pick_size(g) : old_size + g.between(1, 64);
    const std::size_t alignment = pick_alignment(g);
    void* p = r.allocate(old_size, alignment);
    fill_pattern(p, old_size, 11);
    CHECK(r.resize(p, old_size, old_size, alignment));
    if (r.resize(p, old_size, new_size, alignment)) {
      ++resized;
      if (!check_pattern(p, std::min(old_size, new_size), 11)) ++corrupted;
      CHECK(r.stats().bytes_in_use == counted_bytes(r, new_size, alignment));
      fill_pattern(p, new_size, 12);
      if (!check_pattern(p, new_size, 12)) ++corrupted;
      r.deallocate(p, new_size, alignment);
    } else {
      if (!check_pattern(p, old_size, 11)) ++corrupted;
      CHECK(r.stats().bytes_in_use == counted_bytes(r, old_size, alignment));
      r.deallocate(p, old_size, alignment);
    }
  }
  CHECK(corrupted == 0);
  MESSAGE("resized in place: " << resized << " of 2000");
  // reallocate() keeps contents whether or not it moves.
  void* p = r.allocate(100, 8);
  fill_pattern(p, 100, 13);
  p = strata::reallocate(r, p, 100, 50000, 8);
  CHECK(check_pattern(p, 100, 13));
  p = strata::reallocate(r, p, 50000, 10, 8);
  CHECK(check_pattern(p, 10, 13));
  CHECK(strata::reallocate(r, p, 10, 0, 8) == nullptr);
  CHECK(r.stats().bytes_in_use == 0);
  h.invariants();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: resize of a freed or interior pointer is reported, whatever the new size",
                          S, conformance_resize_misuse) {
  harness<S> h;
  auto& r = h.r();
  // From and to every tier: the answer is false either way, but the misuse must not go unreported because the new
  // size alone already says "not in place".
  const std::size_t sizes[] = {16, 200, 5000, 70000, 300000, std::size_t{3} << 20};
  void* keep = r.allocate(64, 8);  // the resource keeps a chunk, so a freed block's memory stays where it was
  for (std::size_t old_size : sizes)
    for (std::size_t new_size : sizes) {
      CAPTURE(old_size);
      CAPTURE(new_size);
      error_capture errors;
      void* p = r.allocate(old_size, 8);
      // An interior pointer of a live block.
      auto before = r.stats();
      CHECK_FALSE(r.resize(static_cast<char*>(p) + 8, old_size - 8, new_size, 8));
      CHECK(errors.count() == 1);
      check_unchanged(before, r.stats());
      r.deallocate(p, old_size, 8);
      // The same block, freed.
      before = r.stats();
      CHECK_FALSE(r.resize(p, old_size, new_size, 8));
      CHECK(errors.count() == 2);
      check_unchanged(before, r.stats());
    }
  r.deallocate(keep, 64, 8);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: stats are exact", S, conformance_stats) {
  harness<S> h;
  auto& r = h.r();
  const auto before = r.stats();
  CHECK(before.bytes_in_use == 0);
  void* a = r.allocate(10, 8);
  void* b = r.allocate(5000, 64);
  void* c = r.allocate(70000, 16);
  const std::size_t na = counted_bytes(r, 10, 8), nb = counted_bytes(r, 5000, 64), nc = counted_bytes(r, 70000, 16);
  CHECK(na >= 10);
  CHECK(nb >= 5000);
  CHECK(nc >= 70000);
  auto s = r.stats();
  CHECK(s.bytes_in_use == na + nb + nc);
  CHECK(s.peak_bytes_in_use >= na + nb + nc);
  CHECK(s.allocations == before.allocations + 3);
  CHECK(s.live_allocations() == 3);
  CHECK(s.bytes_held >= s.bytes_in_use);
  CHECK(s.bytes_resident <= s.bytes_held);
  r.deallocate(b, 5000, 64);
  s = r.stats();
  CHECK(s.bytes_in_use == na + nc);
  CHECK(s.peak_bytes_in_use == na + nb + nc);
  CHECK(s.deallocations == before.deallocations + 1);
  r.deallocate(a, 10, 8);
  r.deallocate(c, 70000, 16);
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.peak_bytes_in_use == na + nb + nc);
  if constexpr (has_round_size<typename S::resource_type>::value) {
    // The usable size is a size to free with too: the counts stay exact (they count usable sizes).
    for (std::size_t size : {std::size_t{1}, std::size_t{20}, std::size_t{100}, std::size_t{1000}}) {
      CAPTURE(size);
      void* p = r.allocate(size, 8);
      const std::size_t usable = r.round_size(size, 8);
      CHECK(r.stats().bytes_in_use == usable);
      CHECK(r.resize(p, size, usable, 8));
      CHECK(r.stats().bytes_in_use == usable);
      r.deallocate(p, usable, 8);
      CHECK(r.stats().bytes_in_use == 0);
    }
    CHECK(r.stats().live_allocations() == 0);
  }
  h.invariants();
}

// A program that writes only the first bytes of a small object leaves the rest of its first words as the resource
// left them: words of an earlier use of that memory, maybe by another size (a block of slots formatted again, a
// split of coalesced blocks), with the old offsets. Such words must never make a live object read as freed. Each
// object here gets the one first byte that would complete a leftover check word of an object that began 8 bytes
// lower (the thread cache's marks: word 1 = address ^ key), or keeps the byte it has (a leftover node at the same
// address); either way it stays live, and every free is an ordinary one.
TEST_CASE_TEMPLATE_DEFINE("conformance: leftover words of earlier objects never make a live object read as freed", S,
                          conformance_leftovers) {
  harness<S> h;
  auto& r = h.r();
  strata_test::error_capture errors;
  // Enough for several 64 KiB slabs of each size to empty and be formatted again for the next.
  constexpr std::size_t volume = std::size_t{256} << 10;
  for (int variant = 0; variant < 2; ++variant) {
    CAPTURE(variant);
    for (const std::size_t earlier : {std::size_t{24}, std::size_t{40}, std::size_t{56}, std::size_t{72}}) {
      CAPTURE(earlier);
      // Many objects of a size whose slots start at 8 mod 16, freed in an order that runs the caches over.
      std::vector<void*> old;
      for (std::size_t k = 0; k < volume / earlier; ++k) old.push_back(r.allocate(earlier, 8));
      for (std::size_t k = 0; k < old.size(); k += 2) r.deallocate(old[k], earlier, 8);
      for (std::size_t k = 1; k < old.size(); k += 2) r.deallocate(old[k], earlier, 8);
      // Small objects in that memory: their first byte written, the other bytes of the first words left.
      for (const std::size_t alignment : {std::size_t{16}, std::size_t{32}}) {
        std::vector<void*> now;
        for (std::size_t k = 0; k < volume / 32; ++k) {
          auto* p = static_cast<unsigned char*>(r.allocate(8, alignment));
          std::uint64_t w0;
          std::memcpy(&w0, p, 8);
          const auto a = reinterpret_cast<std::uintptr_t>(p);
          p[0] = static_cast<unsigned char>(variant == 0 ? w0 ^ a ^ (a - 8) : w0);
          now.push_back(p);
        }
        for (void* p : now) r.deallocate(p, 8, alignment);
      }
    }
  }
  if (!errors.errors().empty()) FAIL_CHECK(errors.errors().front().message);
  CHECK(errors.count() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: std::pmr containers", S, conformance_containers) {
  harness<S> h;
  auto& r = h.r();
  {
    std::pmr::vector<std::uint64_t> v(&r);
    for (std::uint64_t i = 0; i < 100000; ++i) v.push_back(i * 3);
    std::pmr::map<int, std::pmr::string> m(&r);
    for (int i = 0; i < 5000; ++i) m.emplace(i, std::pmr::string(static_cast<std::size_t>(i % 100), 'x'));
    std::pmr::list<int> l(&r);
    for (int i = 0; i < 5000; ++i) l.push_front(i);
    bool ok = true;
    for (std::uint64_t i = 0; i < v.size(); ++i) ok = ok && v[i] == i * 3;
    for (const auto& kv : m) ok = ok && kv.second.size() == static_cast<std::size_t>(kv.first % 100);
    CHECK(ok);
    CHECK(l.size() == 5000);
    CHECK(r.stats().bytes_in_use > 0);
  }
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.is_equal(r));
  auto other = S::maker::over(h.up().upstream());
  CHECK_FALSE(r.is_equal(*other));
  h.invariants();
}

TEST_CASE_TEMPLATE_DEFINE("conformance: threads allocate and free each other's blocks", S, conformance_threads) {
  harness<S> h;
  auto& r = h.r();
  constexpr int threads = 8;
  const std::size_t ops = scaled(3000);
  std::mutex hand_off_mutex;
  std::vector<block> hand_off;  // blocks allocated by one thread and freed by another
  std::atomic<std::size_t> corrupted{0}, misaligned{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      rng g(0x7000u + static_cast<std::uint64_t>(t));
      std::vector<block> mine;
      auto release = [&](const block& b) {
        if (!check_pattern(b.p, b.size, b.seed)) ++corrupted;
        r.deallocate(b.p, b.size, b.alignment);
      };
      for (std::size_t i = 0; i < ops; ++i) {
        const std::uint64_t k = g.next() % 100;
        if (k < 50 || mine.empty()) {
          const std::size_t size = g.next() % 20 == 0 ? g.between(4097, 40000) : g.between(1, 512);
          const std::size_t alignment = pick_alignment(g);
          void* p = r.allocate(size, alignment);
          if (!strata::detail::is_aligned(p, alignment)) ++misaligned;
          block b{p, size, alignment, g.next()};
          fill_pattern(p, size, b.seed);
          mine.push_back(b);
        } else if (k < 80) {
          const std::size_t i2 = g.next() % mine.size();
          release(mine[i2]);
          mine[i2] = mine.back();
          mine.pop_back();
        } else if (k < 90) {
          std::lock_guard<std::mutex> lock(hand_off_mutex);
          hand_off.push_back(mine.back());
          mine.pop_back();
        } else {
          block b{};
          {
            std::lock_guard<std::mutex> lock(hand_off_mutex);
            if (hand_off.empty()) continue;
            b = hand_off.back();
            hand_off.pop_back();
          }
          release(b);
        }
      }
      for (const block& b : mine) release(b);
    });
  }
  for (auto& th : pool) th.join();
  for (const block& b : hand_off) {
    if (!check_pattern(b.p, b.size, b.seed)) ++corrupted;
    r.deallocate(b.p, b.size, b.alignment);
  }
  CHECK(corrupted.load() == 0);
  CHECK(misaligned.load() == 0);
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  h.invariants();
  h.destroy_and_check_nothing_held();
}

}  // namespace strata_test

/// Runs the whole conformance suite for one or more subjects.
#define STRATA_CONFORMANCE(...)                                           \
  TEST_CASE_TEMPLATE_INVOKE(conformance_sizes, __VA_ARGS__);              \
  STRATA_CONFORMANCE_NO_REUSE(__VA_ARGS__);                               \
  TEST_CASE_TEMPLATE_INVOKE(conformance_resize_misuse, __VA_ARGS__)

/// The suite for resources that never reuse a block freed out of order (arenas): every case but the two that need
/// reuse (every size 1..64 KiB, which would take 28 GB, and the resize of a freed or interior pointer, which an arena
/// cannot tell from a live block's).
#define STRATA_CONFORMANCE_NO_REUSE(...)                          \
  TEST_CASE_TEMPLATE_INVOKE(conformance_shadow, __VA_ARGS__);     \
  TEST_CASE_TEMPLATE_INVOKE(conformance_zero, __VA_ARGS__);       \
  TEST_CASE_TEMPLATE_INVOKE(conformance_bad_args, __VA_ARGS__);   \
  TEST_CASE_TEMPLATE_INVOKE(conformance_exhaustion, __VA_ARGS__); \
  TEST_CASE_TEMPLATE_INVOKE(conformance_release, __VA_ARGS__);    \
  TEST_CASE_TEMPLATE_INVOKE(conformance_resize, __VA_ARGS__);     \
  TEST_CASE_TEMPLATE_INVOKE(conformance_stats, __VA_ARGS__);      \
  TEST_CASE_TEMPLATE_INVOKE(conformance_leftovers, __VA_ARGS__);  \
  TEST_CASE_TEMPLATE_INVOKE(conformance_containers, __VA_ARGS__)

/// The multi-threaded part, for thread-safe resources.
#define STRATA_CONFORMANCE_THREADS(...) TEST_CASE_TEMPLATE_INVOKE(conformance_threads, __VA_ARGS__)
