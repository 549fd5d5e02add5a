// SPDX-License-Identifier: MIT
// examples/page_buffers.cpp: large buffers from page_resource: over-alignment, growth in place, memory given back.
#include <cstdio>
#include <cstring>

#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

int main() {
  constexpr std::size_t MiB = std::size_t{1} << 20;
  std::printf("strata example: page_resource buffers (page %zu B, huge page %zu B)\n",
              strata::page_resource::page_size(), strata::page_resource::huge_page_size());
  strata::page_resource pages;

  // A 2 MiB-aligned buffer, e.g. for a DMA ring or huge-page friendly arena.
  void* ring = pages.allocate(4 * MiB, 2 * MiB);
  std::printf("  4 MiB buffer aligned to 2 MiB at %p\n", ring);

  // A log buffer that grows without copying while the address space after it is free.
  std::size_t size = 64 * 1024;
  auto* log = static_cast<char*>(pages.allocate(size, 4096));
  std::memset(log, 'a', size);
  int in_place = 0, moved = 0;
  while (size < 32 * MiB) {
    const std::size_t bigger = size * 2;
    if (pages.resize(log, size, bigger, 4096)) {
      ++in_place;
    } else {
      log = static_cast<char*>(strata::reallocate(pages, log, size, bigger, 4096));
      ++moved;
    }
    std::memset(log + size, 'b', bigger - size);
    size = bigger;
  }
  std::printf("  log grew to %zu MiB: %d times in place, %d times moved\n", size / MiB, in_place, moved);

  const std::size_t rss_live = strata::testing::process_resident_bytes();
  pages.deallocate(log, size, 4096);
  pages.deallocate(ring, 4 * MiB, 2 * MiB);
  pages.trim();
  const std::size_t rss_after = strata::testing::process_resident_bytes();
  std::printf("  resident: %zu MiB with buffers live, %zu MiB after free + trim\n", rss_live / MiB,
              rss_after / MiB);
  const auto s = pages.stats();
  std::printf("  stats: %llu allocations, %llu deallocations, %zu bytes held (registry), peak in use %zu MiB\n",
              static_cast<unsigned long long>(s.allocations), static_cast<unsigned long long>(s.deallocations),
              s.bytes_held, s.peak_bytes_in_use / MiB);
  return s.bytes_in_use == 0 && rss_after < rss_live ? 0 : 1;
}
