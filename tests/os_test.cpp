// SPDX-License-Identifier: MIT
// tests/os_test.cpp: the private OS layer contract (lib/os/os.hpp).
#include "os/os.hpp"
#include "os/port.hpp"

#include <cstring>

#include <doctest/doctest.h>

namespace os = strata::os;

TEST_CASE("os: page and huge page sizes") {
  CHECK(os::page_size() >= 4096);
  CHECK((os::page_size() & (os::page_size() - 1)) == 0);
  const std::size_t huge = os::huge_page_size();
  CHECK((huge == 0 || (huge > os::page_size() && (huge & (huge - 1)) == 0)));
}

TEST_CASE("os: map then purge then release keep the mapped counter exact") {
  const std::size_t page = os::page_size();
  const std::size_t before = os::mapped_bytes();
  auto* p = static_cast<unsigned char*>(os::map(8 * page));
  REQUIRE(p != nullptr);
  CHECK(os::mapped_bytes() == before + 8 * page);
  CHECK(p[0] == 0);
  std::memset(p, 0x5A, 8 * page);
  CHECK(os::purge(p, 8 * page, os::purge_kind::eager) == os::result::ok);
  CHECK(p[0] == 0);  // eager purge reads back as zero
  CHECK(p[8 * page - 1] == 0);
  std::memset(p, 1, page);
  CHECK(os::purge(p, page, os::purge_kind::lazy) == os::result::ok);
  p[0] = 2;  // still writable after a lazy purge
  CHECK(p[0] == 2);
  CHECK(os::release(p + 4 * page, 4 * page) == os::result::ok);  // partial release
  CHECK(os::mapped_bytes() == before + 4 * page);
  CHECK(os::release(p, 4 * page) == os::result::ok);
  CHECK(os::mapped_bytes() == before);
  CHECK(os::map(0) == nullptr);
}

TEST_CASE("os: reserve then commit then decommit") {
  const std::size_t page = os::page_size();
  auto* p = static_cast<unsigned char*>(os::reserve(16 * page));
  REQUIRE(p != nullptr);
  CHECK(os::commit(p + page, 2 * page) == os::result::ok);
  p[page] = 9;
  p[3 * page - 1] = 9;
  CHECK(os::decommit(p + page, 2 * page) == os::result::ok);
  CHECK(os::commit(p + page, page) == os::result::ok);
  CHECK(p[page] == 0);  // decommitted memory comes back zeroed
  CHECK(os::release(p, 16 * page) == os::result::ok);
}

TEST_CASE("os: extend in place only into free address space") {
  if (!os::get_capabilities().extend_in_place) {
    CHECK(os::extend_in_place(nullptr, 0, os::page_size()) != os::result::ok);
    return;
  }
  const std::size_t page = os::page_size();
  // Make a hole: map 8 pages, unmap the last 6, then grow the first 2 back over the hole.
  auto* p = static_cast<unsigned char*>(os::map(8 * page));
  REQUIRE(p != nullptr);
  CHECK(os::release(p + 2 * page, 6 * page) == os::result::ok);
  p[0] = 5;
  CHECK(os::extend_in_place(p, 2 * page, 8 * page) == os::result::ok);
  CHECK(p[0] == 5);
  p[8 * page - 1] = 5;
  // Now something sits right after: map a neighbour there by shrinking and checking refusal.
  CHECK(os::release(p + 4 * page, 4 * page) == os::result::ok);
  auto* q = static_cast<unsigned char*>(os::map(page));
  REQUIRE(q != nullptr);
  if (q == p + 4 * page) {
    CHECK(os::extend_in_place(p, 4 * page, 6 * page) != os::result::ok);
    CHECK(q[0] == 0);
  }
  CHECK(os::extend_in_place(p, 4 * page, 2 * page) == os::result::invalid_argument);
  os::release(q, page);
  os::release(p, 4 * page);
}

TEST_CASE("os: injected failures") {
  const std::size_t page = os::page_size();
  os::inject_failure_after(1);
  void* a = os::map(page);
  CHECK(a != nullptr);
  CHECK(os::map(page) == nullptr);
  CHECK(os::reserve(page) == nullptr);
  os::clear_failures();
  void* b = os::map(page);
  CHECK(b != nullptr);
  os::release(a, page);
  os::release(b, page);
}

TEST_CASE("os: huge page advice and resident size") {
  const std::size_t huge = os::huge_page_size();
  CHECK(os::process_resident_bytes() > 0);
  if (huge == 0) return;
  void* p = os::map(2 * huge);
  REQUIRE(p != nullptr);
  const auto r = os::advise_huge_pages(p, 2 * huge, true);
  CHECK((r == os::result::ok || r == os::result::unsupported || r == os::result::invalid_argument));
  os::release(p, 2 * huge);
}

// ---- capabilities: what callers do where the OS lacks one ------------------------------------------------------------

#include <new>

#include <strata/bitmap_resource.hpp>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/detail/thread_cache/front.hpp>

#include "support.hpp"
#include <strata/detail/ds/block_map.hpp>
#include <strata/page_resource.hpp>

#if defined(__linux__)
#include <sys/resource.h>
#endif
#if defined(_WIN32)
#include "os/windows_api.hpp"
#endif

#include <utility>
#include <vector>

namespace {
// Masks the given capabilities for the scope.
struct masked {
  explicit masked(const os::capabilities& off) noexcept { os::mask_capabilities(off); }
  ~masked() { os::clear_failures(); }
  masked(const masked&) = delete;
  masked& operator=(const masked&) = delete;
};
}  // namespace

TEST_CASE("os: the port's capabilities, and masking them") {
  const os::capabilities c = os::get_capabilities();
  CHECK(c.partial_release);
  CHECK(c.reserve);
  CHECK(c.lazy_purge);
#if defined(_WIN32)
  CHECK_FALSE(c.release_returns_address_space);
  CHECK_FALSE(c.sparse_map);
  CHECK_FALSE(c.extend_in_place);
  CHECK(os::map_sparse(os::page_size()) == nullptr);
  CHECK_FALSE(os::at_fork(nullptr, nullptr, nullptr));
  return;
#else
  CHECK(c.release_returns_address_space);
  CHECK(c.sparse_map);
  CHECK(c.extend_in_place);
#endif
  {
    os::capabilities off;
    off.reserve = off.lazy_purge = true;
    masked m(off);
    const os::capabilities d = os::get_capabilities();
    CHECK_FALSE(d.reserve);
    CHECK_FALSE(d.lazy_purge);
    CHECK(d.partial_release);
    CHECK(d.sparse_map);
    CHECK(d.extend_in_place);
  }
  CHECK(os::get_capabilities().reserve);
}

TEST_CASE("os: page_resource without reserve or lazy purge keeps no growth room and purges eagerly") {
  os::capabilities off;
  off.reserve = off.lazy_purge = true;
  masked m(off);
  strata::page_resource::options o;
  o.purge = strata::page_resource::purge_mode::lazy;
  strata::page_resource r(o);
  CHECK(r.get_options().growth_reserve_min == 0);
  CHECK(r.get_options().purge == strata::page_resource::purge_mode::eager);
  const std::size_t big = std::size_t{4} << 20;
  void* p = r.allocate(big, 4096);
  std::memset(p, 1, big);
  std::size_t size = big;
  if (r.resize(p, big, 2 * big, 4096)) size = 2 * big;  // by extending the mapping, if the space after it is free
  CHECK(r.resize(p, size, big / 2, 4096));             // shrinking gives the tail to the cache
  r.deallocate(p, big / 2, 4096);
  CHECK(r.check_invariants());
  void* z = r.allocate_zeroed(big / 2, 4096);  // the cached span, purged eagerly or still resident: zero either way
  const auto* b = static_cast<const unsigned char*>(z);
  bool zero = true;
  for (std::size_t i = 0; i < big / 2; i += 512) zero = zero && b[i] == 0;
  CHECK(zero);
  r.deallocate(z, big / 2, 4096);
}

TEST_CASE("os: page_resource without growing in place refuses to grow past its room") {
  os::capabilities off;
  off.extend_in_place = off.reserve = true;
  masked m(off);
  strata::page_resource r;
  const std::size_t big = std::size_t{2} << 20;
  void* p = r.allocate(big, 4096);
  std::memset(p, 7, big);
  CHECK_FALSE(r.resize(p, big, 4 * big, 4096));  // no reservation, no cached neighbour, no mremap
  CHECK(static_cast<unsigned char*>(p)[big - 1] == 7);
  r.deallocate(p, big, 4096);
  CHECK(r.check_invariants());
}

TEST_CASE("os: page_resource where whole mappings only can be released serves page alignment only") {
  os::capabilities off;
  off.partial_release = true;
  masked m(off);
  strata::page_resource::options o;
  o.transparent_huge_pages = true;  // would align large spans to a huge page by trimming: not here
  strata::page_resource r(o);
  CHECK_THROWS_AS((void)r.allocate(4096, std::size_t{64} << 10), std::bad_alloc);
  void* p = r.allocate(std::size_t{4} << 20, 4096);
  r.deallocate(p, std::size_t{4} << 20, 4096);
  CHECK(r.get_options().growth_reserve_min == 0);
  CHECK(r.check_invariants());
}

// ctest runs this case a second time under `ulimit -v 600000` (tests/with_address_limit.sh), where the flat table
// (512 MiB of address space) cannot be mapped: the map is then in two levels, and must say the same.
TEST_CASE("os: the block map in two levels where the flat table cannot be mapped") {
#if defined(__linux__)
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_AS, &limit) == 0);
  const bool small = limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < (rlim_t{1} << 30);
#else
  const int limit = 0;
  const bool small = true;  // no sparse mapping: always two levels
#endif
  const bool fresh = strata::detail::g_block_map.words.load() == nullptr &&
                     strata::detail::g_block_map.directory.load() == nullptr;
  strata::bitmap_resource r;
  std::vector<std::pair<void*, std::size_t>> blocks;
  for (std::size_t i = 0; i < 3000; ++i) {
    const std::size_t n = 8 + (i * 97) % 249;  // bitmap blocks (larger requests go to pages, in no block map)
    blocks.emplace_back(r.allocate(n, 8), n);
  }
  if (small && fresh) {
    CHECK(strata::detail::g_block_map.words.load() == nullptr);
    CHECK(strata::detail::g_block_map.directory.load() != nullptr);
  }
  for (const auto& [p, n] : blocks) CHECK(strata::detail::block_map_contains(p));
  CHECK_FALSE(strata::detail::block_map_contains(&limit));
  CHECK_FALSE(strata::detail::block_map_contains(reinterpret_cast<void*>(std::uintptr_t{1} << 46)));
  CHECK_FALSE(strata::detail::block_map_contains(reinterpret_cast<void*>(~std::uintptr_t{0})));
  for (const auto& [p, n] : blocks) r.deallocate(p, n, 8);
  CHECK(r.check_invariants());
  r.release();
  for (const auto& [p, n] : blocks) CHECK_FALSE(strata::detail::block_map_contains(p));
}

TEST_CASE("os: the block map without a sparse mapping") {
  os::capabilities off;
  off.sparse_map = true;
  masked m(off);
  // This process's first block decides.
  const bool fresh = strata::detail::g_block_map.words.load() == nullptr &&
                     strata::detail::g_block_map.directory.load() == nullptr;
  const std::size_t before = os::mapped_bytes();
  strata::bitmap_resource r;
  void* p = r.allocate(64, 8);
  CHECK(strata::detail::block_map_contains(p));
  CHECK_FALSE(strata::detail::block_map_contains(&before));
  if (fresh) {  // two levels: 512 MiB of committed table would be charged in full where the OS maps nothing sparse
    CHECK(strata::detail::g_block_map.words.load() == nullptr);
    CHECK(strata::detail::g_block_map.directory.load() != nullptr);
    CHECK(os::mapped_bytes() < before + (std::size_t{16} << 20));
  }
  r.deallocate(p, 64, 8);
  CHECK(r.check_invariants());
}

TEST_CASE("os: the thread cache's class map is a flat table where the OS maps sparse, else two levels from upstream") {
  for (const bool sparse : {true, false}) {
    CAPTURE(sparse);
    os::capabilities off;
    off.sparse_map = !sparse;
    masked m(off);
    strata::testing::recording_resource up;
    {
      strata::thread_cache_resource r({}, &up);
      std::vector<void*> objects;
      for (int i = 0; i < 1000; ++i) objects.push_back(r.allocate(48, 8));
      // Its leaves are the upstream blocks that are not 64 KiB blocks of objects or heaps.
      std::size_t leaves = 0;
      for (const auto& b : up.live()) leaves += b.size == strata::detail::tc_map::leaf_bytes;
      if (sparse && os::get_capabilities().sparse_map) CHECK(leaves == 0);
      else CHECK(leaves >= 1);
      for (void* p : objects) r.deallocate(p, 48, 8);
      strata_test::error_capture errors;
      r.deallocate(objects[7], 48, 8);  // found by the class map either way
      CHECK(errors.count() == 1);
      CHECK(r.check_invariants());
    }
    CHECK(up.live_blocks() == 0);
  }
}

// ---- Windows: parts of reservations ---------------------------------------------------------------------------------

#if defined(_WIN32)
namespace {
MEMORY_BASIC_INFORMATION query(const void* p) {
  MEMORY_BASIC_INFORMATION info{};
  REQUIRE(::VirtualQuery(p, &info, sizeof info) != 0);
  return info;
}
}  // namespace

TEST_CASE("os (Windows): a released part gives its memory back at once and its reservation goes with the last part") {
  const std::size_t page = os::page_size();
  const std::size_t before = os::mapped_bytes();
  auto* p = static_cast<unsigned char*>(os::map(16 * page));
  REQUIRE(p != nullptr);
  std::memset(p, 7, 16 * page);
  CHECK(os::release(p + 4 * page, 4 * page) == os::result::ok);  // a middle part
  CHECK(query(p + 4 * page).State == MEM_RESERVE);                // no memory behind it, address space still taken
  CHECK(query(p).State == MEM_COMMIT);
  CHECK(query(p + 8 * page).State == MEM_COMMIT);
  CHECK(p[0] == 7);
  CHECK(p[8 * page] == 7);
  CHECK(os::mapped_bytes() == before + 12 * page);
  CHECK(os::release(p, 4 * page) == os::result::ok);              // the head
  CHECK(os::release(p + 12 * page, 4 * page) == os::result::ok);  // the tail
  CHECK(query(p + 8 * page).State == MEM_COMMIT);
  CHECK(p[11 * page] == 7);
  CHECK(os::release(p + 8 * page, 4 * page) == os::result::ok);  // the last part: the reservation goes
  CHECK(query(p).State == MEM_FREE);
  CHECK(os::mapped_bytes() == before);
  // A reservation released whole at once, after a part of another was counted at the same base address.
  auto* q = static_cast<unsigned char*>(os::reserve(8 * page));
  REQUIRE(q != nullptr);
  CHECK(os::commit(q, 2 * page) == os::result::ok);
  CHECK(os::release(q, 8 * page) == os::result::ok);
  CHECK(query(q).State == MEM_FREE);
}

TEST_CASE("os (Windows): commit, purge, decommit and release across two neighbouring reservations") {
  const std::size_t granule = 64 << 10;
  // Two reservations back to back (as page_resource's cache may merge two spans into one range).
  void* hole = ::VirtualAlloc(nullptr, 2 * granule, MEM_RESERVE, PAGE_NOACCESS);
  REQUIRE(hole != nullptr);
  ::VirtualFree(hole, 0, MEM_RELEASE);
  auto* a = static_cast<unsigned char*>(::VirtualAlloc(hole, granule, MEM_RESERVE, PAGE_NOACCESS));
  auto* b = static_cast<unsigned char*>(::VirtualAlloc(static_cast<char*>(hole) + granule, granule, MEM_RESERVE,
                                                       PAGE_NOACCESS));
  if (a == nullptr || b == nullptr) {  // another thread took the hole: nothing to test here
    if (a != nullptr) ::VirtualFree(a, 0, MEM_RELEASE);
    if (b != nullptr) ::VirtualFree(b, 0, MEM_RELEASE);
    return;
  }
  REQUIRE(query(a).AllocationBase != query(b).AllocationBase);
  const std::size_t page = os::page_size();
  unsigned char* mid = a + granule - 2 * page;  // two pages in each
  CHECK(os::commit(mid, 4 * page) == os::result::ok);
  std::memset(mid, 3, 4 * page);
  CHECK(os::purge(mid, 4 * page, os::purge_kind::eager) == os::result::ok);
  CHECK(mid[0] == 0);
  CHECK(mid[4 * page - 1] == 0);
  std::memset(mid, 4, 4 * page);
  CHECK(os::purge(mid, 4 * page, os::purge_kind::lazy) == os::result::ok);
  mid[3 * page] = 5;
  CHECK(os::decommit(mid, 4 * page) == os::result::ok);
  CHECK(query(mid).State == MEM_RESERVE);
  CHECK(query(b).State == MEM_RESERVE);
  CHECK(os::commit(mid, 4 * page) == os::result::ok);
  CHECK(mid[3 * page] == 0);
  // Released whole: both reservations go, each as its last part is released. (They were made here, not mapped
  // through the OS layer: its counter is told first.)
  os::port::note_mapped(static_cast<std::ptrdiff_t>(2 * granule));
  CHECK(os::release(a, 2 * granule) == os::result::ok);
  CHECK(query(a).State == MEM_FREE);
  CHECK(query(b).State == MEM_FREE);
}

TEST_CASE("os (Windows): page_resource at every alignment up to 1 GiB, the head and tail only reserved") {
  strata::page_resource r;
  for (std::size_t alignment = 4096; alignment <= (std::size_t{1} << 30); alignment *= 2) {
    CAPTURE(alignment);
    auto* p = static_cast<unsigned char*>(r.allocate(3 * 4096, alignment));
    CHECK(strata::detail::is_aligned(p, alignment));
    std::memset(p, 1, 3 * 4096);
    r.deallocate(p, 3 * 4096, alignment);
    r.trim();
  }
  CHECK(r.check_invariants());
}
#endif
