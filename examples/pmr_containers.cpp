// SPDX-License-Identifier: MIT
// examples/pmr_containers.cpp: choose a memory resource per subsystem and watch what each one holds.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory_resource>
#include <string>
#include <vector>

#include <strata/strata.hpp>
#include <strata/testing.hpp>

namespace {

void print_stats(const char* who, const strata::resource_stats& s) {
  std::printf("  %-24s in use %9zu B  peak %9zu B  held %9zu B  allocations %6llu  upstream calls %4llu\n", who,
              s.bytes_in_use, s.peak_bytes_in_use, s.bytes_held, static_cast<unsigned long long>(s.allocations),
              static_cast<unsigned long long>(s.upstream_allocations));
}

}  // namespace

int main() {
  std::printf("strata example: std::pmr containers on strata resources\n");

  // Subsystem 1: a large array of samples, whole pages from the OS, given back when done.
  strata::page_resource pages;
  {
    std::pmr::vector<double> samples(&pages);
    for (int i = 0; i < 1'000'000; ++i) samples.push_back(i * 0.5);
    std::printf("  samples: %zu doubles, last %.1f\n", samples.size(), samples.back());
    print_stats("page_resource (live)", pages.stats());
  }
  print_stats("page_resource (freed)", pages.stats());
  std::printf("  cached for reuse: %zu bytes in %zu spans; trim() returns them\n", pages.cached_bytes(),
              pages.cached_spans());
  pages.trim();

  // Subsystem 2: an index of small nodes in size-class bitmap blocks: no header in front of any node.
  strata::bitmap_resource nodes;
  {
    std::pmr::map<int, int> index(&nodes);
    for (int i = 0; i < 200000; ++i) index.emplace(i * 7919 % 200003, i);
    print_stats("bitmap_resource (live)", nodes.stats());
    const auto s = nodes.stats();
    std::printf("  index: %zu nodes of %zu B; held %.3f bytes per requested byte\n", index.size(),
                s.bytes_in_use / index.size(), static_cast<double>(s.bytes_held) / static_cast<double>(s.bytes_in_use));
  }
  print_stats("bitmap_resource (freed)", nodes.stats());

  // Subsystem 3: a symbol table whose every allocation is checked (the test kit works in programs too).
  strata::testing::recording_resource checked(strata::default_page_resource());
  {
    std::pmr::map<std::pmr::string, int> symbols(&checked);
    for (int i = 0; i < 2000; ++i)
      symbols.emplace(std::pmr::string("symbol_with_a_long_name_" + std::to_string(i), &checked), i);
    std::printf("  symbols: %zu entries, %zu live blocks\n", symbols.size(), checked.live_blocks());
  }
  std::printf("  symbols destroyed: %zu live blocks, %llu mismatched frees\n", checked.live_blocks(),
              static_cast<unsigned long long>(checked.mismatches()));
  return checked.live_blocks() == 0 && checked.mismatches() == 0 ? 0 : 1;
}
