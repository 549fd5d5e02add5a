// SPDX-License-Identifier: MIT
// tests/testing_test.cpp: the public test kit (recording and fault-injecting resources).
#include <strata/testing.hpp>

#include <memory_resource>
#include <vector>

#include <doctest/doctest.h>

#include <strata/page_resource.hpp>

#include "support.hpp"

using strata::testing::fault_injecting_resource;
using strata::testing::recording_resource;
using strata_test::error_capture;

TEST_CASE("recording_resource: records live blocks and checks every deallocation") {
  error_capture errors;
  recording_resource rec;
  void* a = rec.allocate(24, 8);
  void* b = rec.allocate(100, 64);
  CHECK(rec.live_blocks() == 2);
  CHECK(rec.live_bytes() == 124);
  CHECK(rec.is_live(a));
  CHECK(rec.live().size() == 2);

  rec.deallocate(a, 32, 8);  // wrong size: reported, not forwarded
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::wrong_size);
  CHECK(errors.errors()[0].expected_size == 24);
  rec.deallocate(b, 100, 8);  // wrong alignment
  REQUIRE(errors.count() == 2);
  CHECK(errors.errors()[1].kind == strata::error_kind::wrong_size);
  CHECK(rec.live_blocks() == 2);
  CHECK(rec.mismatches() == 2);

  rec.deallocate(a, 24, 8);
  rec.deallocate(b, 100, 64);
  CHECK(errors.count() == 2);
  rec.deallocate(a, 24, 8);  // double free
  REQUIRE(errors.count() == 3);
  CHECK(errors.errors()[2].kind == strata::error_kind::double_free);
  int local = 0;
  rec.deallocate(&local, 4, 4);  // never handed out
  REQUIRE(errors.count() == 4);
  CHECK(errors.errors()[3].kind == strata::error_kind::foreign_pointer);
  CHECK(rec.live_blocks() == 0);
  CHECK(rec.mismatches() == 4);
  const auto s = rec.stats();
  CHECK(s.allocations == 2);
  CHECK(s.deallocations == 2);
}

TEST_CASE("recording_resource: resize forwards to a strata upstream") {
  strata::page_resource pages;
  recording_resource rec(&pages);
  void* p = rec.allocate(100, 8);
  CHECK(rec.resize(p, 100, 4000, 8));
  CHECK(rec.live_bytes() == 4000);
  recording_resource over_heap;  // new_delete cannot resize
  void* q = over_heap.allocate(100, 8);
  CHECK_FALSE(over_heap.resize(q, 100, 200, 8));
  over_heap.deallocate(q, 100, 8);
  rec.deallocate(p, 4000, 8);
  CHECK(pages.stats().bytes_in_use == 0);
}

TEST_CASE("fault_injecting_resource: fails after N allocations") {
  recording_resource rec;
  fault_injecting_resource faults(&rec);
  faults.fail_after(2);
  void* a = faults.allocate(10, 8);
  void* b = faults.allocate(10, 8);
  CHECK_THROWS_AS((void)faults.allocate(10, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)faults.allocate(10, 8), std::bad_alloc);
  CHECK(faults.failures() == 2);
  faults.deallocate(a, 10, 8);  // deallocation always goes through
  CHECK_THROWS_AS((void)faults.allocate(10, 8), std::bad_alloc);
  faults.reset();
  void* c = faults.allocate(10, 8);
  faults.deallocate(b, 10, 8);
  faults.deallocate(c, 10, 8);
  CHECK(rec.live_blocks() == 0);
  CHECK(faults.live_blocks() == 0);
}

TEST_CASE("fault_injecting_resource: byte limit is never passed") {
  fault_injecting_resource faults;
  faults.set_byte_limit(1000);
  std::vector<void*> live;
  for (int i = 0; i < 10; ++i) live.push_back(faults.allocate(100, 8));
  CHECK(faults.live_bytes() == 1000);
  CHECK_THROWS_AS((void)faults.allocate(1, 8), std::bad_alloc);
  faults.deallocate(live.back(), 100, 8);
  live.pop_back();
  CHECK_THROWS_AS((void)faults.allocate(101, 8), std::bad_alloc);
  live.push_back(faults.allocate(100, 8));
  volatile std::size_t huge = ~std::size_t{0};  // volatile: keeps the compiler from flagging the size
  CHECK_THROWS_AS((void)faults.allocate(huge, 8), std::bad_alloc);
  for (void* p : live) faults.deallocate(p, 100, 8);
  CHECK(faults.live_bytes() == 0);
}

TEST_CASE("process_resident_bytes reads the OS") {
  CHECK(strata::testing::process_resident_bytes() > 0);
}
