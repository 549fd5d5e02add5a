// SPDX-License-Identifier: MIT
// tests/stats_io_test.cpp: to_string, to_json and stats_json: the text, and the JSON of whole chains read back with a
// standard JSON parser and compared with each level's stats().
#include <strata/stats_io.hpp>

#include <clocale>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <locale>
#include <memory_resource>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/thread_cache_resource.hpp>

namespace {

using nlohmann::json;

strata::resource_stats sample_stats() {
  strata::resource_stats s;
  s.bytes_in_use = 1258291;       // 1.2 MiB
  s.peak_bytes_in_use = 3565158;  // 3.4 MiB
  s.bytes_held = std::size_t{4} << 20;
  s.bytes_resident = std::size_t{2} << 20;
  s.allocations = 5678;
  s.deallocations = 4444;
  s.failed_allocations = 2;
  s.upstream_allocations = 12;
  s.upstream_deallocations = 3;
  return s;
}

/// Every field of `s` in the JSON object `j`, exactly.
void check_stats(const json& j, const strata::resource_stats& s) {
  REQUIRE(j.is_object());
  CHECK(j.at("bytes_in_use").get<std::uint64_t>() == s.bytes_in_use);
  CHECK(j.at("peak_bytes_in_use").get<std::uint64_t>() == s.peak_bytes_in_use);
  CHECK(j.at("bytes_held").get<std::uint64_t>() == s.bytes_held);
  CHECK(j.at("bytes_resident").get<std::uint64_t>() == s.bytes_resident);
  CHECK(j.at("allocations").get<std::uint64_t>() == s.allocations);
  CHECK(j.at("deallocations").get<std::uint64_t>() == s.deallocations);
  CHECK(j.at("failed_allocations").get<std::uint64_t>() == s.failed_allocations);
  CHECK(j.at("upstream_allocations").get<std::uint64_t>() == s.upstream_allocations);
  CHECK(j.at("upstream_deallocations").get<std::uint64_t>() == s.upstream_deallocations);
  CHECK(j.at("free_bytes").get<std::uint64_t>() == s.free_bytes);
  CHECK(j.at("free_blocks").get<std::uint64_t>() == s.free_blocks);
  CHECK(j.at("largest_free_block").get<std::uint64_t>() == s.largest_free_block);
  CHECK(j.at("live_allocations").get<std::uint64_t>() == s.live_allocations());
  CHECK(j.at("overhead_bytes").get<std::uint64_t>() == s.overhead_bytes());
  CHECK(j.at("external_fragmentation").get<double>() == s.external_fragmentation());
  CHECK(j.size() == 15);
}

/// A resource with a name that needs escaping, over new_delete_resource.
class oddly_named final : public strata::resource {
 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  strata::resource_stats do_stats() const noexcept override { return {}; }
  const char* do_name() const noexcept override { return "quote\" back\\slash\ttab\nline\x01 end"; }
  std::pmr::memory_resource* do_upstream_resource() const noexcept override {
    return std::pmr::new_delete_resource();
  }
};

}  // namespace

TEST_CASE("stats_io: to_string says the figures in binary units and grouped counts") {
  strata::resource_stats s = sample_stats();
  CHECK(strata::to_string(s) ==
        "in use 1.2 MiB (peak 3.4 MiB), held 4 MiB, resident ~2 MiB, overhead 2.8 MiB, 1,234 live of 5,678 "
        "allocations, 2 failed, upstream 12 taken / 3 returned");
  s.free_bytes = 96 << 10;
  s.free_blocks = 21;
  s.largest_free_block = 64 << 10;
  CHECK(strata::to_string(s).find(", free 96 KiB in 21 blocks (largest 64 KiB, fragmentation 33%)") !=
        std::string::npos);
  strata::resource_stats small;
  small.bytes_in_use = 512;
  small.bytes_held = 1023;
  small.allocations = 1;
  const std::string t = strata::to_string(small);
  CHECK(t.find("in use 512 B (peak 0 B), held 1023 B") == 0);
  CHECK(t.find("1 live of 1 allocation,") != std::string::npos);
  // Rounding to the nearest tenth carries into the unit: 2047.96 KiB is 2 MiB, not "1.10 MiB".
  small.bytes_in_use = (std::size_t{2} << 20) - 40;
  CHECK(strata::to_string(small).find("in use 2 MiB") == 0);
  small.bytes_in_use = std::numeric_limits<std::size_t>::max();
  CHECK(strata::to_string(small).find("in use 16 EiB") == 0);
}

TEST_CASE("stats_io: to_json has every field, exact, in any locale") {
  strata::resource_stats s = sample_stats();
  s.free_bytes = 3;
  s.free_blocks = 3;
  s.largest_free_block = 1;  // fragmentation 2/3: a double that needs all its digits
  s.upstream_deallocations = std::numeric_limits<std::uint64_t>::max();
  const std::string text = strata::to_json(s);
  check_stats(json::parse(text), s);
  // A locale with a decimal comma and digit grouping changes nothing.
  const char* german[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  bool set = false;
  for (const char* name : german)
    if (std::setlocale(LC_ALL, name) != nullptr) {
      set = true;
      break;
    }
  if (set) {
    CHECK(strata::to_json(s) == text);
    std::setlocale(LC_ALL, "C");
  } else {
    MESSAGE("no German or French locale installed: the locale check ran in the C locale only");
  }
  // No NaN or infinity, whatever the figures.
  strata::resource_stats odd;
  odd.free_bytes = 0;
  odd.largest_free_block = 5;
  CHECK(json::parse(strata::to_json(odd)).at("external_fragmentation").get<double>() == 0.0);
}

TEST_CASE("stats_io: stats_json of fixed_pool > bitmap > page parses and matches each level's stats()") {
  strata::page_resource pages;
  strata::bitmap_resource bitmap(&pages);
  strata::fixed_pool_resource pool(48, &bitmap);
  std::vector<void*> blocks, smalls;
  for (int i = 0; i < 5000; ++i) blocks.push_back(pool.allocate(48, 8));
  for (int i = 0; i < 300; ++i) smalls.push_back(bitmap.allocate(24 + static_cast<std::size_t>(i % 5) * 100, 8));
  for (std::size_t i = 0; i < blocks.size(); i += 3) pool.deallocate(blocks[i], 48, 8);

  const std::string text = strata::stats_json(pool, strata::inspect_all);
  const json j = json::parse(text);
  const strata::resource* levels[] = {&pool, &bitmap, &pages};
  const char* names[] = {"fixed_pool", "bitmap", "page"};
  REQUIRE(j.at("levels").size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    const json& level = j.at("levels")[i];
    INFO("level " << i);
    CHECK(level.at("name").get<std::string>() == names[i]);
    CHECK(level.at("address").get<std::string>().rfind("0x", 0) == 0);
    CHECK(std::stoull(level.at("address").get<std::string>(), nullptr, 16) ==
          reinterpret_cast<std::uintptr_t>(levels[i]));
    const strata::resource_stats s = levels[i]->stats();
    check_stats(level.at("stats"), s);
    // The classes (and the large blocks among the regions) account for the level's bytes in use; the regions for
    // what it holds, with what its tiers name as metadata.
    std::uint64_t class_bytes = 0, large_bytes = 0, region_bytes = 0, metadata = 0;
    for (const json& c : level.at("classes"))
      class_bytes += c.at("live_blocks").get<std::uint64_t>() * c.at("block_size").get<std::uint64_t>();
    for (const json& r : level.at("regions")) {
      region_bytes += r.at("size").get<std::uint64_t>();
      if (r.at("kind") == "large" || r.at("kind") == "span") large_bytes += r.at("bytes_in_use").get<std::uint64_t>();
    }
    for (const json& t : level.at("tiers"))
      if (t.at("name") == "metadata") metadata += t.at("stats").at("bytes_held").get<std::uint64_t>();
    CHECK(class_bytes + large_bytes == s.bytes_in_use);
    CHECK(region_bytes + metadata == s.bytes_held);
  }
  CHECK(j.at("levels")[0].at("classes").size() == 1);
  CHECK(j.at("levels")[1].at("classes").size() == bitmap.class_count());

  // By default: classes and tiers, no regions.
  const json quiet = json::parse(strata::stats_json(pool));
  CHECK(quiet.at("levels")[0].contains("classes"));
  CHECK(quiet.at("levels")[0].contains("tiers"));
  CHECK_FALSE(quiet.at("levels")[0].contains("regions"));

  for (std::size_t i = 0; i < smalls.size(); ++i)
    bitmap.deallocate(smalls[i], 24 + (i % 5) * 100, 8);
  for (std::size_t i = 0; i < blocks.size(); ++i)
    if (i % 3 != 0) pool.deallocate(blocks[i], 48, 8);
}

TEST_CASE("stats_io: stats_json of a thread cache's chain: tiers add up to the level's stats()") {
  strata::page_resource pages;
  strata::thread_cache_resource heap(&pages);
  std::vector<std::pair<void*, std::size_t>> blocks;
  for (std::size_t i = 0; i < 2000; ++i) {
    const std::size_t n = 16 + (i * 37) % 20000;  // the thread tier, the shared tier, upstream
    blocks.emplace_back(heap.allocate(n, 8), n);
  }
  const json j = json::parse(strata::stats_json(heap));
  REQUIRE(j.at("levels").size() == 2);
  const json& top = j.at("levels")[0];
  CHECK(top.at("name") == "thread_cache");
  const strata::resource_stats s = heap.stats();
  check_stats(top.at("stats"), s);
  check_stats(j.at("levels")[1].at("stats"), pages.stats());
  std::uint64_t tier_bytes = 0, class_bytes = 0;
  for (const json& t : top.at("tiers")) {
    const std::string name = t.at("name");
    if (name == "thread" || name == "shared" || name == "upstream")
      tier_bytes += t.at("stats").at("bytes_in_use").get<std::uint64_t>();
  }
  CHECK(tier_bytes == s.bytes_in_use);
  for (const json& c : top.at("classes"))
    class_bytes += c.at("live_blocks").get<std::uint64_t>() * c.at("block_size").get<std::uint64_t>();
  CHECK(class_bytes == heap.tier_stats(strata::cache_tier::thread).bytes_in_use);
  for (auto& [p, n] : blocks) heap.deallocate(p, n, 8);
}

TEST_CASE("stats_io: stats_json ends a chain at a resource strata cannot look into") {
  strata::free_list_resource list(std::pmr::new_delete_resource());
  void* p = list.allocate(100, 8);
  json j = json::parse(strata::stats_json(list));
  REQUIRE(j.at("levels").size() == 2);
  CHECK(j.at("levels")[0].at("name") == "free_list");
  CHECK(j.at("levels")[1].at("name") == "std::pmr::new_delete_resource");
  CHECK_FALSE(j.at("levels")[1].contains("stats"));
  list.deallocate(p, 100, 8);

  // A standard pool names its upstream: the chain goes on through it.
  strata::bitmap_resource bitmap;
  std::pmr::unsynchronized_pool_resource pool(&bitmap);
  j = json::parse(strata::stats_json(pool));
  REQUIRE(j.at("levels").size() == 3);
  CHECK(j.at("levels")[0].at("name") == "std::pmr::unsynchronized_pool_resource");
  CHECK(j.at("levels")[1].at("name") == "bitmap");
  CHECK(j.at("levels")[2].at("name") == "page");

  std::pmr::monotonic_buffer_resource other(std::pmr::null_memory_resource());
  j = json::parse(strata::stats_json(other));
  REQUIRE(j.at("levels").size() == 2);
  CHECK(j.at("levels")[1].at("name") == "std::pmr::null_memory_resource");
}

TEST_CASE("stats_io: stats_json escapes names") {
  oddly_named r;
  const json j = json::parse(strata::stats_json(r));
  CHECK(j.at("levels")[0].at("name").get<std::string>() == "quote\" back\\slash\ttab\nline\x01 end");
  CHECK(j.at("levels")[1].at("name") == "std::pmr::new_delete_resource");
}
