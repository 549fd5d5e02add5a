// SPDX-License-Identifier: MIT
// tests/os_test.cpp: the private OS layer contract (lib/os/os.hpp).
#include "os/os.hpp"

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
