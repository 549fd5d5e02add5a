// SPDX-License-Identifier: MIT
// tests/fault_injection_test.cpp: every strategy when the OS says no: purge, decommit and huge-page advice refused,
// and the address space limited (RLIMIT_AS) so that mapping fails for real. Each must stay usable and consistent,
// keep every live block's contents and give everything back.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>

#include "support.hpp"

namespace {

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;

/// One strategy built over a page_resource of the test's own (so nothing cached elsewhere hides a leak).
struct subject {
  const char* name;
  std::function<std::unique_ptr<strata::resource>(strata::page_resource*)> make;
  std::function<bool(strata::resource&)> check;
  std::function<void(strata::resource&)> trim;
};

template <class R, class = void>
struct has_trim : std::false_type {};
template <class R>
struct has_trim<R, std::void_t<decltype(std::declval<R&>().trim())>> : std::true_type {};

template <class R>
subject make_subject(const char* name, std::function<std::unique_ptr<R>(strata::page_resource*)> make) {
  return subject{name, [make](strata::page_resource* up) -> std::unique_ptr<strata::resource> { return make(up); },
                 [](strata::resource& r) { return static_cast<R&>(r).check_invariants(); },
                 [](strata::resource& r) {
                   if constexpr (has_trim<R>::value) static_cast<R&>(r).trim();
                 }};
}

std::vector<subject> subjects() {
  std::vector<subject> all;
  all.push_back(make_subject<strata::bitmap_resource>(
      "bitmap_resource", [](strata::page_resource* up) { return std::make_unique<strata::bitmap_resource>(up); }));
  all.push_back(make_subject<strata::synchronized_bitmap_resource>("synchronized_bitmap_resource", [](auto* up) {
    return std::make_unique<strata::synchronized_bitmap_resource>(up);
  }));
  all.push_back(make_subject<strata::free_list_resource>("free_list_resource(purge at once)", [](auto* up) {
    strata::free_list_options o;
    o.purge_threshold = 16 * KiB;
    o.purge_delay = 0;
    return std::make_unique<strata::free_list_resource>(o, up);
  }));
  all.push_back(make_subject<strata::synchronized_free_list_resource>("synchronized_free_list_resource", [](auto* up) {
    strata::free_list_options o;
    o.chunk_size = 256 * KiB;
    o.huge_pages = false;
    return std::make_unique<strata::synchronized_free_list_resource>(o, up);
  }));
  all.push_back(make_subject<strata::fixed_pool_resource>(
      "fixed_pool_resource(48)", [](auto* up) { return std::make_unique<strata::fixed_pool_resource>(48, up); }));
  all.push_back(make_subject<strata::synchronized_fixed_pool_resource>("synchronized_fixed_pool_resource(1000)", [](auto* up) {
    return std::make_unique<strata::synchronized_fixed_pool_resource>(1000, up);
  }));
  all.push_back(make_subject<strata::thread_cache_resource>(
      "thread_cache_resource", [](auto* up) { return std::make_unique<strata::thread_cache_resource>(up); }));
  return all;
}

struct live_block {
  void* p;
  std::size_t size;
  std::size_t alignment;
  std::uint64_t seed;
};

std::size_t pick_size(strata_test::rng& g) {
  const std::uint64_t k = g.next() % 100;
  if (k < 60) return g.between(0, 256);
  if (k < 90) return g.between(257, 8192);
  return g.between(8193, 600 * KiB);
}

/// Allocates, frees and resizes at random until `stop` allocations failed (or `ops` operations), keeping a shadow
/// of every live block; returns the number of failed allocations. Contents are checked before every free.
std::size_t churn(strata::resource& r, std::vector<live_block>& live, strata_test::rng& g, std::size_t ops,
                  std::size_t stop, std::size_t& corrupted) {
  std::size_t failures = 0;
  for (std::size_t i = 0; i < ops && failures < stop; ++i) {
    if (live.empty() || g.next() % 100 < 60) {
      const std::size_t size = pick_size(g), alignment = std::size_t{1} << g.between(0, 7);
      try {
        void* p = r.allocate(size, alignment);
        live.push_back(live_block{p, size, alignment, g.next()});
        strata_test::fill_sparse(p, size, live.back().seed, 61);
      } catch (const std::bad_alloc&) {
        ++failures;
      }
    } else {
      const std::size_t k = g.next() % live.size();
      if (!strata_test::check_sparse(live[k].p, live[k].size, live[k].seed, 61)) ++corrupted;
      r.deallocate(live[k].p, live[k].size, live[k].alignment);
      live[k] = live.back();
      live.pop_back();
    }
  }
  return failures;
}

void free_all(strata::resource& r, std::vector<live_block>& live, std::size_t& corrupted) {
  for (const live_block& b : live) {
    if (!strata_test::check_sparse(b.p, b.size, b.seed, 61)) ++corrupted;
    r.deallocate(b.p, b.size, b.alignment);
  }
  live.clear();
}

}  // namespace

TEST_CASE("fault injection: the OS refuses purge, decommit and huge-page advice") {
  for (const subject& s : subjects()) {
    const std::string name = s.name;
    CAPTURE(name);
    {  // process-wide maps (the block maps) are made on first use: make them before counting what is mapped
      strata::page_resource pages;
      auto r = s.make(&pages);
      r->deallocate(r->allocate(64, 8), 64, 8);
    }
    const std::size_t mapped0 = strata::testing::os_mapped_bytes();
    {
      strata::page_resource::options po;
      po.purge_delay_ms = 0;  // cached spans are purged at once: every free asks the OS
      strata::page_resource pages(po);
      {
        auto r = s.make(&pages);
        strata_test::rng g(0xADF1CE);
        std::vector<live_block> live;
        std::size_t corrupted = 0;
        strata::testing::refuse_os_advice(true);
        churn(*r, live, g, 20000, ~std::size_t{0}, corrupted);
        s.trim(*r);
        CHECK(s.check(*r));
        free_all(*r, live, corrupted);
        s.trim(*r);
        strata::testing::refuse_os_advice(false);
        CHECK(corrupted == 0);
        CHECK(r->stats().live_allocations() == 0);
        CHECK(r->stats().bytes_in_use == 0);
        CHECK(s.check(*r));
        // Still usable once the OS says yes again.
        churn(*r, live, g, 2000, ~std::size_t{0}, corrupted);
        free_all(*r, live, corrupted);
        CHECK(corrupted == 0);
      }
      CHECK(pages.stats().live_allocations() == 0);
      CHECK(pages.check_invariants());
    }
    CHECK(strata::testing::os_mapped_bytes() == mapped0);
  }
  strata::testing::clear_os_failures();
}

TEST_CASE("fault injection: page_resource keeps allocate_zeroed honest when purging is refused") {
  strata::page_resource::options po;
  po.purge_delay_ms = 0;
  strata::page_resource pages(po);
  strata::testing::refuse_os_advice(true);
  for (std::size_t size : {64 * KiB, MiB, 3 * MiB}) {
    CAPTURE(size);
    for (int round = 0; round < 4; ++round) {
      auto* p = static_cast<unsigned char*>(pages.allocate(size, 4096));
      std::memset(p, 0xff, size);
      pages.deallocate(p, size, 4096);
      auto* z = static_cast<unsigned char*>(pages.allocate_zeroed(size, 4096));
      std::size_t nonzero = 0;
      for (std::size_t i = 0; i < size; i += 512) nonzero += z[i] != 0;
      CHECK(nonzero == 0);
      pages.deallocate(z, size, 4096);
    }
  }
  strata::testing::refuse_os_advice(false);
  CHECK(pages.check_invariants());
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRATA_TEST_NO_RLIMIT 1
#endif
#endif
#else
#define STRATA_TEST_NO_RLIMIT 1  // the sanitizers reserve terabytes of shadow memory: no address-space limit for them
#endif
#if !defined(__linux__)
#define STRATA_TEST_NO_RLIMIT 1  // RLIMIT_AS and fork()
#endif

#ifndef STRATA_TEST_NO_RLIMIT
TEST_CASE("fault injection: an address-space limit (RLIMIT_AS): mapping fails for real, every strategy recovers") {
  for (const subject& s : subjects()) {
    const std::string name = s.name;
    CAPTURE(name);
    // In a child process: the limit is process-wide and cannot be raised back by an unprivileged process.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      int code = 0;
      {
        strata::page_resource pages;
        auto r = s.make(&pages);
        strata_test::rng g(0x5AFE);
        std::vector<live_block> live;
        live.reserve(1 << 20);  // the shadow itself must not fail under the limit
        std::size_t corrupted = 0;
        // The process-wide block maps reserve their address space (512 MiB each, sparse) on first use: that
        // happens before the limit, as in any program that allocated before it ran out.
        r->deallocate(r->allocate(64, 8), 64, 8);
        rlimit old{};
        ::getrlimit(RLIMIT_AS, &old);
        // Address space used now (statm: total program size, in pages), plus room for 96 MiB more.
        std::size_t vm_pages = 0;
        if (FILE* f = std::fopen("/proc/self/statm", "r")) {
          if (std::fscanf(f, "%zu", &vm_pages) != 1) vm_pages = 0;
          std::fclose(f);
        }
        rlimit lim = old;
        lim.rlim_cur = vm_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) + 96 * MiB;
        if (vm_pages == 0 || ::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(3);
        const std::size_t failures = churn(*r, live, g, 400000, 200, corrupted);
        if (failures == 0) code |= 4;  // the limit was never reached: the test proved nothing
        if (!s.check(*r)) code |= 8;
        // Free half, then it must serve again.
        for (std::size_t k = 0; k < live.size() / 2; ++k) {
          if (!strata_test::check_sparse(live[k].p, live[k].size, live[k].seed, 61)) ++corrupted;
          r->deallocate(live[k].p, live[k].size, live[k].alignment);
        }
        live.erase(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(live.size() / 2));
        std::size_t served = 0;
        for (int i = 0; i < 100; ++i) {
          try {
            void* p = r->allocate(64, 8);
            r->deallocate(p, 64, 8);
            ++served;
          } catch (const std::bad_alloc&) {
          }
        }
        if (served == 0) code |= 16;
        free_all(*r, live, corrupted);
        s.trim(*r);
        if (corrupted != 0) code |= 32;
        if (r->stats().live_allocations() != 0 || r->stats().bytes_in_use != 0) code |= 64;
        if (!s.check(*r)) code |= 8;
        r.reset();
        if (pages.stats().live_allocations() != 0) code |= 2;
        ::setrlimit(RLIMIT_AS, &old);
      }
      std::fflush(nullptr);
      ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    // Bits: 2 pages left, 3 no limit, 4 never failed, 8 invariants, 16 unusable after frees, 32 contents, 64 counts left.
    CHECK(WEXITSTATUS(status) == 0);
  }
}
#endif
