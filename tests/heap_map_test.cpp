// SPDX-License-Identifier: MIT
// tests/heap_map_test.cpp: the SVG heap map and the stats chart: one cell per region reported, runs that tile their
// chunk, the layout of a known heap (a resource that reports fixed regions), escaping, and maps of real resources.
#include <strata/heap_map.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>

#include "support.hpp"

namespace {

using strata::region_detail;
using strata::region_kind;
using strata::run_detail;

/// A resource that serves nothing and reports the regions, runs, classes and stats it is given: the renderer's input
/// is known exactly.
class known_heap final : public strata::resource {
 public:
  struct region {
    region_detail r;
    std::vector<run_detail> runs;
  };
  std::string name = "known";
  strata::resource_stats st{};
  std::vector<strata::class_detail> classes;
  std::vector<strata::tier_detail> tiers;
  std::vector<region> regions;
  std::pmr::memory_resource* upstream = nullptr;
  mutable int inspections = 0;

 private:
  void* do_allocate(std::size_t, std::size_t) override { throw std::bad_alloc(); }
  void do_deallocate(void*, std::size_t, std::size_t) override {}
  strata::resource_stats do_stats() const noexcept override { return st; }
  const char* do_name() const noexcept override { return name.c_str(); }
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream; }
  void do_inspect(strata::inspector& v, unsigned what) const override {
    ++inspections;
    if (what & strata::inspect_classes) {
      for (const auto& c : classes) v.on_class(c);
    }
    if (what & strata::inspect_tiers) {
      for (const auto& t : tiers) v.on_tier(t);
    }
    if (what & strata::inspect_regions) {
      for (const auto& x : regions) {
        if (v.on_region(x.r)) {
          for (const auto& run : x.runs) v.on_run(run);
        }
      }
    }
  }
};

const void* at(std::uintptr_t a) { return reinterpret_cast<const void*>(a); }

region_detail region_of(std::uintptr_t address, std::size_t size, region_kind kind, std::size_t in_use) {
  region_detail r;
  r.address = at(address);
  r.size = size;
  r.kind = kind;
  r.bytes_in_use = in_use;
  return r;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

/// The value of attribute `name` in the element that starts at `from`.
double attr(const std::string& s, std::size_t from, const char* name) {
  const std::string key = std::string(" ") + name + "=\"";
  const std::size_t end = s.find('>', from);
  const std::size_t p = s.find(key, from);
  REQUIRE(p != std::string::npos);
  REQUIRE(p < end);
  return std::strtod(s.c_str() + p + key.size(), nullptr);
}

struct rect {
  double x, y, w, h;
  bool free;
};

/// The cell and the runs of each region group, in document order.
struct drawn_region {
  rect cell{};
  std::vector<rect> runs;
  std::string title;
};

std::vector<drawn_region> regions_in(const std::string& svg) {
  std::vector<drawn_region> out;
  const std::string open = "<g class=\"region\">";
  for (std::size_t p = svg.find(open); p != std::string::npos; p = svg.find(open, p + 1)) {
    const std::size_t end = svg.find("</g>", p);
    REQUIRE(end != std::string::npos);
    drawn_region d;
    const std::size_t t = svg.find("<title>", p);
    REQUIRE(t < end);
    d.title = svg.substr(t + 7, svg.find("</title>", t) - t - 7);
    const std::size_t c = svg.find("<rect class=\"cell\"", p);
    REQUIRE(c < end);
    d.cell = {attr(svg, c, "x"), attr(svg, c, "y"), attr(svg, c, "width"), attr(svg, c, "height"), false};
    for (std::size_t r = svg.find("<rect class=\"run ", p); r < end; r = svg.find("<rect class=\"run ", r + 1)) {
      const bool free = svg.compare(r, 22, "<rect class=\"run free\"") == 0;
      d.runs.push_back({attr(svg, r, "x"), attr(svg, r, "y"), attr(svg, r, "width"), attr(svg, r, "height"), free});
    }
    out.push_back(d);
  }
  return out;
}

/// The runs of each region tile its cell: from its left edge to its right, no gap, no overlap (to the 0.1 px the
/// coordinates are written with).
void check_runs_tile(const drawn_region& d) {
  if (d.runs.empty()) return;
  double x = d.cell.x;
  for (const rect& r : d.runs) {
    CHECK(std::fabs(r.x - x) <= 0.11 * 2);
    CHECK(r.y == d.cell.y);
    CHECK(r.h == d.cell.h);
    x = r.x + r.w;
  }
  CHECK(std::fabs(x - (d.cell.x + d.cell.w)) <= 0.11 * 2);
}

/// How many regions inspect() reports.
std::size_t regions_reported(const strata::resource& r) {
  struct counter : strata::inspector {
    std::size_t n = 0;
    bool on_region(const region_detail&) override {
      ++n;
      return false;
    }
  } c;
  r.inspect(c, strata::inspect_regions);
  return c.n;
}

bool starts_as_svg(const std::string& s) {
  return s.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0 &&
         s.size() > 7 && s.compare(s.size() - 7, 7, "</svg>\n") == 0;
}

/// Four regions: a chunk with runs, a slab, a cached slab and (reported first) a large block.
void add_small_heap(known_heap& h) {
  h.st.bytes_in_use = 100 * 1024;
  h.st.bytes_held = 320 * 1024;
  h.classes.push_back({2, 48, 10, 20, 1, 65536});
  // A chunk of 128 KiB: used 0-16K, free 16K-48K, used 48K-64K (two blocks), free to the end.
  known_heap::region chunk{region_of(0x10000000, 131072, region_kind::chunk, 32768), {}};
  chunk.runs = {{0, 16384, false}, {16384, 32768, true}, {49152, 8192, false}, {57344, 8192, false},
                {65536, 65536, true}};
  h.regions.push_back(chunk);
  region_detail slab = region_of(0x10020000, 65536, region_kind::slab, 480);
  slab.size_class = 2;
  slab.block_size = 48;
  slab.live_blocks = 10;
  h.regions.push_back({slab, {}});
  region_detail cached = region_of(0x10030000, 65536, region_kind::slab, 0);
  cached.size_class = 2;
  cached.block_size = 48;
  cached.cached = true;
  h.regions.push_back({cached, {}});
  // Reported out of address order: drawn in it.
  h.regions.insert(h.regions.begin(), {region_of(0x20000000, 65536, region_kind::large, 65536), {}});
}

}  // namespace

TEST_CASE("heap_map: a known heap: one cell per region in address order, widths by size, runs tiling the chunk") {
  known_heap h;
  add_small_heap(h);
  const std::string svg = strata::heap_map_svg(h);
  CHECK(starts_as_svg(svg));
  CHECK(h.inspections == 1);
  CHECK(svg.find("width=\"1000.0\"") != std::string::npos);
  const auto drawn = regions_in(svg);
  REQUIRE(drawn.size() == 4);
  CHECK(count(svg, "<rect class=\"cell\"") == 4);
  // Address order: the chunk, the two slabs, the large block last.
  CHECK(drawn[0].title.rfind("chunk at 0x10000000, 128 KiB", 0) == 0);
  CHECK(drawn[1].title.rfind("slab at 0x10020000, 64 KiB, class 2 (48 B blocks)", 0) == 0);
  CHECK(drawn[2].title.find("cached") != std::string::npos);
  CHECK(drawn[3].title.rfind("large block at 0x20000000", 0) == 0);
  // The layout: a map with runs gives its largest chunk a row of 960 px (131,072 / 960 bytes a pixel); each region
  // a slot of its size, the cell 2 px less; from x = 20.
  CHECK(svg.find("1 px = 137 B") != std::string::npos);
  const auto px = [](double v) { return doctest::Approx(v).epsilon(0.001); };
  CHECK(drawn[0].cell.x == px(20.0));
  CHECK(drawn[0].cell.w == px(958.0));
  CHECK(drawn[1].cell.x == px(20.0));
  CHECK(drawn[1].cell.w == px(478.0));
  CHECK(drawn[1].cell.y == px(drawn[0].cell.y + 26));
  CHECK(drawn[2].cell.x == px(500.0));
  CHECK(drawn[2].cell.y == px(drawn[1].cell.y));
  CHECK(drawn[3].cell.x == px(20.0));
  CHECK(drawn[3].cell.y == px(drawn[2].cell.y + 26));
  // The chunk's runs: adjacent used runs drawn as one; free ones pale, used ones dark.
  REQUIRE(drawn[0].runs.size() == 4);
  CHECK(!drawn[0].runs[0].free);
  CHECK(drawn[0].runs[1].free);
  CHECK(!drawn[0].runs[2].free);
  CHECK(drawn[0].runs[2].w == px(119.8));  // 16 KiB of 128 KiB
  CHECK(drawn[0].runs[3].free);
  check_runs_tile(drawn[0]);
  for (std::size_t i = 1; i < drawn.size(); ++i) CHECK(drawn[i].runs.empty());
  CHECK(count(svg, "<rect class=\"band\"") == 2);
  CHECK(count(svg, "<rect class=\"cached\"") == 1);
  // Free runs carry their own tooltip.
  CHECK(svg.find("<title>free run at 0x10004000 (+16 KiB), 32 KiB</title>") != std::string::npos);
  // Occupancy colours: the large block is full (the scale's dark end), the cached slab empty (its pale end).
  CHECK(svg.find("fill=\"#08306b\" stroke=\"#6a3d9a\"") != std::string::npos);
  // The class key.
  CHECK(svg.find("class 2: 48 B") != std::string::npos);
  // The title's stats.
  CHECK(svg.find("in use 100 KiB of 320 KiB held (31%)") != std::string::npos);
  CHECK(svg.find("parts:") == std::string::npos);

  // Parts with their own accounting, three to a line; free space between blocks.
  for (const char* name : {"thread", "shared", "upstream", "metadata"}) {
    strata::tier_detail t;
    t.name = name;
    t.stats.bytes_held = 2048;
    t.stats.bytes_in_use = name[0] == 't' ? 1024 : 0;
    h.tiers.push_back(t);
  }
  h.st.free_bytes = 96 * 1024;
  h.st.free_blocks = 2;
  h.st.largest_free_block = 64 * 1024;
  const std::string more = strata::heap_map_svg(h);
  CHECK(more.find(">parts: thread 1 KiB in use of 2 KiB held; shared 2 KiB held; upstream 2 KiB held</text>") !=
        std::string::npos);
  CHECK(more.find(">metadata 2 KiB held</text>") != std::string::npos);
  CHECK(more.find("free between blocks: 96 KiB in 2 pieces, the largest 64 KiB: external fragmentation 33%") !=
        std::string::npos);
}

TEST_CASE("heap_map: names and titles are escaped") {
  known_heap h;
  add_small_heap(h);
  h.name = "a<b>&\"c'\x01";
  strata::heap_map_options o;
  o.title = "x < y & z";
  const std::string svg = strata::heap_map_svg(h, o);
  CHECK(svg.find("a&lt;b&gt;&amp;&quot;c&apos;?") != std::string::npos);
  CHECK(svg.find("x &lt; y &amp; z") != std::string::npos);
  CHECK(svg.find("a<b") == std::string::npos);
  CHECK(svg.find("& z") == std::string::npos);
  CHECK(svg.find('\x01') == std::string::npos);
}

TEST_CASE("heap_map: regions past max_regions are counted, not drawn, and a resource with none says so") {
  known_heap h;
  for (std::uintptr_t i = 0; i < 50; ++i) h.regions.push_back({region_of(0x40000000 + i * 65536, 65536,
                                                                          region_kind::slab, 1024), {}});
  strata::heap_map_options o;
  o.max_regions = 10;
  const std::string svg = strata::heap_map_svg(h, o);
  const auto drawn = regions_in(svg);
  REQUIRE(drawn.size() == 10);
  // Without runs the cells fill about sqrt(10) rows: 640 KiB over 4 rows of 960 px, 384 px a 64 KiB slab, two a row.
  CHECK(drawn[1].cell.x == doctest::Approx(404.0).epsilon(0.001));
  CHECK(drawn[2].cell.x == doctest::Approx(20.0).epsilon(0.001));
  CHECK(drawn[2].cell.y > drawn[1].cell.y);
  CHECK(svg.find("40 more regions (2.5 MiB) not drawn") != std::string::npos);

  known_heap empty;
  const std::string none = strata::heap_map_svg(empty);
  CHECK(starts_as_svg(none));
  CHECK(regions_in(none).empty());
  CHECK(none.find("no regions reported") != std::string::npos);
}

TEST_CASE("heap_map: runs past max_runs are left out and said so") {
  known_heap h;
  add_small_heap(h);
  h.regions.push_back(h.regions[1]);  // a second chunk with runs, at another address
  h.regions.back().r.address = at(0x30000000);
  strata::heap_map_options o;
  o.max_runs = 3;
  const auto drawn = regions_in(strata::heap_map_svg(h, o));
  REQUIRE(drawn.size() == 5);
  CHECK(drawn[0].runs.size() == 4);  // the first chunk asked gets all its runs
  CHECK(drawn[4].runs.empty());
  CHECK(strata::heap_map_svg(h, o).find("runs of 1 chunk not drawn") != std::string::npos);
}

TEST_CASE("heap_map: write_heap_map_file writes the map, and says when it cannot") {
  known_heap h;
  add_small_heap(h);
  const std::string path = "heap_map_test_" + std::to_string(reinterpret_cast<std::uintptr_t>(&h)) + ".svg";
  REQUIRE(strata::write_heap_map_file(path.c_str(), h));
  std::string text;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
  }
  std::remove(path.c_str());
  CHECK(text == strata::heap_map_svg(h));
  CHECK(!strata::write_heap_map_file("/nonexistent-directory/strata/map.svg", h));
}

TEST_CASE("heap_map: follow_upstream draws each strata resource of the chain") {
  known_heap bottom;
  add_small_heap(bottom);
  bottom.name = "bottom";
  known_heap top;
  top.name = "top";
  top.upstream = &bottom;
  top.regions.push_back({region_of(0x10000000, 65536, region_kind::chunk, 0), {}});
  CHECK(count(strata::heap_map_svg(top), "<g class=\"level\">") == 1);
  strata::heap_map_options o;
  o.follow_upstream = true;
  const std::string svg = strata::heap_map_svg(top, o);
  CHECK(count(svg, "<g class=\"level\">") == 2);
  CHECK(regions_in(svg).size() == 5);
  CHECK(svg.find("level 1: top at") != std::string::npos);
  CHECK(svg.find("level 2: bottom at") != std::string::npos);
  // A chain that ends in a std::pmr resource stops there.
  bottom.upstream = std::pmr::new_delete_resource();
  CHECK(count(strata::heap_map_svg(top, o), "<g class=\"level\">") == 2);
}

TEST_CASE("heap_map: a fragmented free list: a cell per chunk, its runs tiling it, nothing allocated from it") {
  strata::testing::recording_resource upstream;
  strata::free_list_options fo;
  fo.chunk_size = 256 * 1024;
  strata::free_list_resource fl(fo, &upstream);
  strata_test::rng rng(7);
  std::vector<std::pair<void*, std::size_t>> blocks;
  for (int i = 0; i < 3000; ++i) {
    const std::size_t size = 16 + rng.next() % 2000;
    blocks.emplace_back(fl.allocate(size), size);
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (rng.next() % 2 == 0) {
      fl.deallocate(blocks[i].first, blocks[i].second);
      blocks[i].first = nullptr;
    }
  }
  const auto before = fl.stats();
  const auto upstream_before = upstream.stats();
  const std::string svg = strata::heap_map_svg(fl);
  const auto after = fl.stats();
  CHECK(after.allocations == before.allocations);
  CHECK(after.deallocations == before.deallocations);
  CHECK(upstream.stats().allocations == upstream_before.allocations);

  const auto drawn = regions_in(svg);
  const std::size_t reported = regions_reported(fl);
  CHECK(drawn.size() == reported);
  CHECK(reported > 0);
  std::size_t with_runs = 0;
  std::size_t free_runs = 0;
  for (const auto& d : drawn) {
    check_runs_tile(d);
    if (!d.runs.empty()) ++with_runs;
    for (const rect& r : d.runs) free_runs += r.free;
  }
  CHECK(with_runs > 0);
  CHECK(free_runs > 10);  // half the blocks freed at random: free space in many pieces
  CHECK(svg.find("fragmentation") != std::string::npos);
  for (const auto& b : blocks) {
    if (b.first != nullptr) fl.deallocate(b.first, b.second);
  }
}

TEST_CASE("heap_map: bitmap, fixed pool, page resource, thread cache and arena: one cell per region reported") {
  // What inspect() reports, counted as the map should draw it.
  struct counts : strata::inspector {
    std::size_t regions = 0, classed = 0, large = 0, spans = 0;
    bool on_region(const region_detail& r) override {
      ++regions;
      classed += r.size_class >= 0;
      large += r.kind == region_kind::large;
      spans += r.kind == region_kind::span;
      return false;
    }
  };
  auto check_map = [](const strata::resource& r) {
    counts c;
    r.inspect(c, strata::inspect_regions);
    const std::string svg = strata::heap_map_svg(r);
    CHECK(starts_as_svg(svg));
    CHECK(c.regions > 0);
    CHECK(regions_in(svg).size() == c.regions);
    CHECK(count(svg, "<rect class=\"band\"") == c.classed);
    CHECK(count(svg, "<title>large block at ") == c.large);
    CHECK(count(svg, "<title>span at ") == c.spans);
    return svg;
  };

  strata::bitmap_resource bm;
  std::vector<std::pair<void*, std::size_t>> blocks;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = std::size_t{16} << (i % 5);
    blocks.emplace_back(bm.allocate(size), size);
  }
  const std::string bsvg = check_map(bm);
  CHECK(bsvg.find("size classes:") != std::string::npos);
  for (const auto& b : blocks) bm.deallocate(b.first, b.second);

  strata::fixed_pool_resource pool(64);
  std::vector<void*> ps;
  for (int i = 0; i < 5000; ++i) ps.push_back(pool.allocate(64));
  for (int i = 0; i < 5000; i += 2) pool.deallocate(ps[static_cast<std::size_t>(i)], 64);
  const std::string psvg = check_map(pool);
  CHECK(psvg.find("(64 B blocks)") != std::string::npos);
  for (int i = 1; i < 5000; i += 2) pool.deallocate(ps[static_cast<std::size_t>(i)], 64);

  strata::page_resource pages;
  void* a = pages.allocate(1 << 20);
  void* b = pages.allocate(3 * 4096);
  const std::string gsvg = check_map(pages);
  CHECK(gsvg.find(", 1 MiB; in use 1 MiB (100%)") != std::string::npos);
  CHECK(gsvg.find(", 12 KiB; in use 12 KiB (100%)") != std::string::npos);
  pages.deallocate(b, 3 * 4096);
  pages.deallocate(a, 1 << 20);

  strata::thread_cache_resource tc;
  std::vector<std::pair<void*, std::size_t>> tblocks;
  for (int i = 0; i < 3000; ++i) {
    const std::size_t size = std::size_t{24} << (i % 4);
    tblocks.emplace_back(tc.allocate(size), size);
  }
  tblocks.emplace_back(tc.allocate(std::size_t{1} << 20), std::size_t{1} << 20);
  const std::string tsvg = check_map(tc);
  CHECK(tsvg.find("<title>large block at ") != std::string::npos);
  for (const auto& x : tblocks) tc.deallocate(x.first, x.second);

  strata::arena_resource arena;
  for (int i = 0; i < 20000; ++i) static_cast<void>(arena.allocate(16 + static_cast<std::size_t>(i % 200)));
  const std::string asvg = check_map(arena);
  for (const auto& d : regions_in(asvg)) check_runs_tile(d);
  CHECK(asvg.find(" live, 0 free blocks") == std::string::npos);  // an arena counts bytes, not blocks
}

TEST_CASE("stats_recorder: samples each resource's stats and draws a line per figure") {
  known_heap a;
  a.name = "a";
  known_heap b;
  b.name = "b";
  strata::stats_recorder rec;
  rec.watch(a, "first & one");
  for (int i = 0; i < 5; ++i) {
    a.st.bytes_in_use = static_cast<std::size_t>(i) * 512 * 1024;
    a.st.bytes_held = 3u << 20;
    a.st.bytes_resident = 2u << 20;
    a.st.allocations = static_cast<std::uint64_t>(i) * 100;
    if (i == 2) rec.watch(b, "second");
    rec.sample(i == 4 ? "end" : "");
  }
  CHECK(rec.samples() == 5);
  CHECK(rec.series() == 2);
  CHECK(rec.at(0, 3).bytes_in_use == 3u * 512 * 1024);
  CHECK(rec.at(0, 4).bytes_held == 3u << 20);
  CHECK(rec.at(0, 4).live_allocations == 400);
  CHECK(rec.at(1, 2).bytes_in_use == 0);
  CHECK_THROWS_AS(static_cast<void>(rec.at(1, 1)), std::out_of_range);
  CHECK_THROWS_AS(static_cast<void>(rec.at(2, 0)), std::out_of_range);

  const std::string svg = rec.svg();
  CHECK(starts_as_svg(svg));
  CHECK(count(svg, "<polyline") == 6);
  CHECK(count(svg, "<circle") == 5 + 3);
  CHECK(svg.find("first &amp; one") != std::string::npos);
  // The byte axis: 3 MiB at most, ticks a power of two apart (1 MiB).
  CHECK(svg.find(">1 MiB</text>") != std::string::npos);
  CHECK(svg.find(">3 MiB</text>") != std::string::npos);
  CHECK(svg.find(">4 MiB</text>") == std::string::npos);
  strata::stats_chart_options o;
  o.live_allocations = true;
  const std::string with_live = rec.svg(o);
  CHECK(count(with_live, "<polyline") == 8);
  CHECK(with_live.find(">live allocations</text>") != std::string::npos);
  CHECK(with_live.find(">400</text>") != std::string::npos);

  strata::stats_recorder none;
  CHECK(none.svg().find("no samples") != std::string::npos);
}
