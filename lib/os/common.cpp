// SPDX-License-Identifier: MIT
// lib/os/common.cpp: the portable part of the OS layer: the mapped-bytes counter, the test hooks (failure injection,
// refused advice, masked capabilities). Each port (lib/os/<os>.cpp) does the OS calls.
#include <atomic>
#include <chrono>
#include <cstdint>

#include "port.hpp"

namespace strata::os {
namespace {

std::atomic<std::size_t> g_mapped{0};
// < 0: no failures injected; otherwise how many more obtaining calls succeed.
std::atomic<std::int64_t> g_fail_budget{-1};
// Test hook: purge, decommit and huge-page advice refused, as a kernel or a seccomp filter may.
std::atomic<bool> g_refuse_advice{false};
// Test hook: capabilities reported as missing, one bit each (partial_release, reserve, lazy_purge, sparse_map,
// extend_in_place, release_returns_address_space).
std::atomic<unsigned> g_masked{0};

unsigned bits_of(const capabilities& c) noexcept {
  return (c.partial_release ? 1u : 0u) | (c.reserve ? 2u : 0u) | (c.lazy_purge ? 4u : 0u) | (c.sparse_map ? 8u : 0u) |
         (c.extend_in_place ? 16u : 0u) | (c.release_returns_address_space ? 32u : 0u);
}

}  // namespace

namespace port {

bool injected_failure() noexcept {
  std::int64_t budget = g_fail_budget.load(std::memory_order_relaxed);
  while (budget >= 0) {
    if (budget == 0) return true;
    if (g_fail_budget.compare_exchange_weak(budget, budget - 1, std::memory_order_relaxed)) return false;
  }
  return false;
}

bool advice_refused() noexcept { return g_refuse_advice.load(std::memory_order_relaxed); }

void note_mapped(std::ptrdiff_t delta) noexcept {
  g_mapped.fetch_add(static_cast<std::size_t>(delta), std::memory_order_relaxed);  // wraps back for negatives
}

}  // namespace port

std::size_t mapped_bytes() noexcept { return g_mapped.load(std::memory_order_relaxed); }

capabilities get_capabilities() noexcept {
  capabilities c = port::port_capabilities();
  const unsigned off = g_masked.load(std::memory_order_relaxed);
  c.partial_release = c.partial_release && (off & 1u) == 0;
  c.reserve = c.reserve && (off & 2u) == 0;
  c.lazy_purge = c.lazy_purge && (off & 4u) == 0;
  c.sparse_map = c.sparse_map && (off & 8u) == 0;
  c.extend_in_place = c.extend_in_place && (off & 16u) == 0;
  c.release_returns_address_space = c.release_returns_address_space && (off & 32u) == 0;
  return c;
}

void mask_capabilities(const capabilities& off) noexcept { g_masked.store(bits_of(off), std::memory_order_relaxed); }

void inject_failure_after(std::size_t n) noexcept {
  g_fail_budget.store(static_cast<std::int64_t>(n), std::memory_order_relaxed);
}

void clear_failures() noexcept {
  g_fail_budget.store(-1, std::memory_order_relaxed);
  g_refuse_advice.store(false, std::memory_order_relaxed);
  g_masked.store(0, std::memory_order_relaxed);
}

void refuse_advice(bool refuse) noexcept { g_refuse_advice.store(refuse, std::memory_order_relaxed); }

std::uint64_t monotonic_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace strata::os
