// SPDX-License-Identifier: MIT
// lib/core/inject_delay.cpp: random delays at the publication points of the lock-free protocols (STRATA_INJECT_DELAYS
// builds only), so that the soak and TSan runs meet the rare interleavings a plain run almost never shows.
#include <strata/config.hpp>

#include <cstdint>
#include <thread>

namespace strata::detail {

void inject_delay() noexcept {
  // A per-thread xorshift: no shared state, so the injection itself adds no synchronisation the code lacks.
  thread_local std::uint64_t state = 0;
  if (state == 0) state = reinterpret_cast<std::uintptr_t>(&state) * 0x9E3779B97F4A7C15ull | 1;
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  const unsigned roll = static_cast<unsigned>(state >> 56);  // 0..255
  if (roll < 8) {
    std::this_thread::yield();  // about one point in 32: let the other core or thread run through its step
  } else if (roll < 40) {
    for (volatile unsigned spin = static_cast<unsigned>(state & 1023); spin != 0;) spin = spin - 1;
  }
}

}  // namespace strata::detail
