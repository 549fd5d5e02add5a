// SPDX-License-Identifier: MIT
// tests/support.cpp
#include "support.hpp"

#include <cstdlib>
#include <mutex>

#include <doctest/doctest.h>

#include <strata/detail/core/sanitizer.hpp>

namespace strata_test {
namespace {
std::mutex g_mutex;
std::vector<captured_error> g_errors;

void record(const strata::error_info& info) {
  char line[512];
  strata::format_error(info, line, sizeof line);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_errors.push_back(captured_error{info.kind, info.pointer, info.size, info.expected_size, line});
}

inline unsigned char pattern_byte(std::size_t i, std::uint64_t seed) noexcept {
  return static_cast<unsigned char>((seed >> ((i & 7) * 8)) ^ (i * 131) ^ (i >> 8));
}
}  // namespace

void fill_pattern(void* p, std::size_t n, std::uint64_t seed) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = pattern_byte(i, seed);
}

bool check_pattern(const void* p, std::size_t n, std::uint64_t seed) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != pattern_byte(i, seed)) return false;
  return true;
}

void fill_sparse(void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; i += stride) b[i] = pattern_byte(i, seed);
  if (n != 0) b[n - 1] = pattern_byte(n - 1, seed);
}

bool check_sparse(const void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; i += stride)
    if (b[i] != pattern_byte(i, seed)) return false;
  return n == 0 || b[n - 1] == pattern_byte(n - 1, seed);
}

error_capture::error_capture() : previous_(strata::set_error_handler(&record)) { clear(); }
error_capture::~error_capture() { strata::set_error_handler(previous_); }

const std::vector<captured_error>& error_capture::errors() const { return g_errors; }

void error_capture::clear() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_errors.clear();
}

std::size_t scaled(std::size_t n) {
  const char* s = std::getenv("STRATA_TEST_SCALE");
  const long k = s != nullptr ? std::atol(s) : 1;
  return n * static_cast<std::size_t>(k > 0 ? k : 1);
}

void check_unchanged(const strata::resource_stats& before, const strata::resource_stats& after) {
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(after.peak_bytes_in_use == before.peak_bytes_in_use);
  CHECK(after.bytes_held == before.bytes_held);
  CHECK(after.bytes_resident == before.bytes_resident);
  CHECK(after.allocations == before.allocations);
  CHECK(after.deallocations == before.deallocations);
  CHECK(after.failed_allocations == before.failed_allocations);
  CHECK(after.upstream_allocations == before.upstream_allocations);
  CHECK(after.upstream_deallocations == before.upstream_deallocations);
  CHECK(after.free_bytes == before.free_bytes);
  CHECK(after.free_blocks == before.free_blocks);
  CHECK(after.largest_free_block == before.largest_free_block);
}

void check_error(const char* resource, const error_capture& errors, std::size_t count, strata::error_kind kind,
                 const void* p, std::size_t size, std::size_t expected) {
  REQUIRE(errors.count() == count);
  const auto& e = errors.errors().back();
  CAPTURE(e.message);
  CHECK(e.kind == kind);
  CHECK(e.pointer == p);
  CHECK(e.size == size);
  if (expected != any_size) CHECK(e.expected_size == expected);
  CHECK(e.message.find(resource) != std::string::npos);
}

// Byte by byte through volatile pointers: a loop the compiler turns into memset or memcpy would go through ASan's
// interceptors, which check the range whatever the caller's attribute.
STRATA_NO_SANITIZE_ADDRESS void write_unchecked(void* p, int byte, std::size_t n) noexcept {
  auto* d = static_cast<volatile unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) d[i] = static_cast<unsigned char>(byte);
}
STRATA_NO_SANITIZE_ADDRESS void copy_unchecked(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<volatile unsigned char*>(dst);
  const auto* s = static_cast<const volatile unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
}

}  // namespace strata_test
