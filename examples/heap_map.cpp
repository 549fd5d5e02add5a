// SPDX-License-Identifier: MIT
// examples/heap_map.cpp: pictures of heaps. A workload fragments a free_list_resource (blocks of many sizes, a random
// half freed), fills and thins a bitmap_resource and a thread_cache_resource in a few size classes, and samples all
// three as it goes; it writes a heap map of each and a chart of their memory over time as SVG files, then checks
// what it wrote: one cell per region each resource reports, free runs drawn inside the free list's chunks.
//
// Usage: example_heap_map [DIR]   (default: a folder strata-heap-map in the system's temporary directory)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <strata/bitmap_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/heap_map.hpp>
#include <strata/thread_cache_resource.hpp>

namespace {

/// splitmix64: the same workload, and so the same pictures, on every run.
class rng {
 public:
  explicit rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

struct block {
  void* p;
  std::size_t size;
};

/// Live blocks of one resource, to free some at random and the rest at the end.
class blocks {
 public:
  explicit blocks(std::pmr::memory_resource& r) : r_(r) {}
  blocks(const blocks&) = delete;
  blocks& operator=(const blocks&) = delete;
  ~blocks() { free_all(); }
  void add(std::size_t size) { live_.push_back({r_.allocate(size), size}); }
  /// Frees each live block that `spare` does not pick with probability `percent` / 100.
  template <class Pred>
  void thin(rng& g, unsigned percent, Pred spare) {
    std::vector<block> kept;
    for (std::size_t i = 0; i < live_.size(); ++i) {
      if (!spare(live_[i]) && g.below(100) < percent) r_.deallocate(live_[i].p, live_[i].size);
      else kept.push_back(live_[i]);
    }
    live_.swap(kept);
  }
  void free_all() {
    for (const block& b : live_) r_.deallocate(b.p, b.size);
    live_.clear();
  }

 private:
  std::pmr::memory_resource& r_;
  std::vector<block> live_;
};

/// How many regions r.inspect() reports.
std::size_t regions_of(const strata::resource& r) {
  struct counter : strata::inspector {
    std::size_t n = 0;
    bool on_region(const strata::region_detail&) override {
      ++n;
      return false;
    }
  } c;
  r.inspect(c, strata::inspect_regions);
  return c.n;
}

/// Writes `text` to `path` whole: into a file beside it first, renamed over it (two runs at once, as ctest may start,
/// never leave half a picture). False when it cannot.
bool write_whole(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path part = path;
  part += ".part" + std::to_string(std::random_device()());
  {
    std::ofstream f(part, std::ios::binary | std::ios::trunc);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f.flush()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(part, path, ec);
  return !ec;
}

bool whole_svg(const std::string& svg) {
  return svg.rfind("<?xml", 0) == 0 && svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos &&
         svg.size() > 7 && svg.compare(svg.size() - 7, 7, "</svg>\n") == 0;
}

std::size_t count(const std::string& s, const char* what) {
  std::size_t n = 0;
  const std::string w = what;
  for (std::size_t p = s.find(w); p != std::string::npos; p = s.find(w, p + w.size())) ++n;
  return n;
}

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "heap_map: FAILED: %s\n", what.c_str());
    ++failures;
  }
}

/// Draws the map of `r` (and with `chain`, of each strata resource below it), checks it (a standalone SVG with one
/// cell per region reported) and writes it to dir/file. Prints the line tests/heap_map_check.py reads back. Returns
/// the SVG.
std::string write_map(const std::filesystem::path& dir, const char* file, const strata::resource& r, const char* title,
                      bool chain = false) {
  strata::heap_map_options o;
  o.title = title;
  o.follow_upstream = chain;
  std::size_t regions = 0;
  for (const strata::resource* level = &r; level != nullptr;
       level = chain ? strata::as_strata_resource(level->upstream_resource()) : nullptr) {
    regions += std::min(regions_of(*level), o.max_regions);
  }
  const std::string svg = strata::heap_map_svg(r, o);
  expect(whole_svg(svg), std::string(file) + " is a whole SVG document");
  const std::size_t cells = count(svg, "<g class=\"region\">");
  expect(cells == regions,
         std::string(file) + ": " + std::to_string(cells) + " cells for " + std::to_string(regions) + " regions");
  expect(regions > 0, std::string(r.name()) + " reports its regions");
  const std::filesystem::path path = dir / file;
  expect(write_whole(path, svg), "writing " + path.string());
  std::printf("wrote %s regions=%zu\n", path.string().c_str(), regions);
  return svg;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path dir = argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / "strata-heap-map";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) {
    std::fprintf(stderr, "heap_map: cannot make the directory %s\n", dir.string().c_str());
    return 1;
  }

  // Each over the default page resource, the default upstream of every strategy.
  strata::free_list_options fo;
  fo.chunk_size = 256 * 1024;
  strata::free_list_resource free_list(fo);
  strata::bitmap_resource bitmap;
  strata::thread_cache_resource thread_cache;

  strata::stats_recorder rec;
  rec.watch(free_list, "free_list");
  rec.watch(bitmap, "bitmap");
  rec.watch(thread_cache, "thread_cache");
  rec.sample("start");

  rng g(2026);
  blocks fl(free_list);
  blocks bm(bitmap);
  blocks tc(thread_cache);
  // Phase 1: the heaps grow. The free list takes blocks of many sizes (most small, a few of several KiB); the bitmap
  // and the thread cache a few size classes, the smallest most often.
  static const std::size_t classes[] = {24, 64, 200, 640, 2000};
  for (int step = 0; step < 12; ++step) {
    for (int i = 0; i < 500; ++i) {
      fl.add(g.below(8) == 0 ? 2048 + g.below(6144) : 16 + g.below(480));
      bm.add(classes[g.below(16) < 10 ? 0 : 1 + g.below(4)]);
      tc.add(classes[g.below(4) == 0 ? 0 : 1 + g.below(4)]);
    }
    if (step == 11) {
      for (int i = 0; i < 3; ++i) tc.add(std::size_t{512} << 10);  // large blocks, straight upstream
    }
    rec.sample(step == 0 ? "grow" : "");
  }
  // Phase 2: a random half of the free list's blocks freed, holes everywhere; in the bitmap most of the smallest
  // class goes (its slabs thin out) and every 200-byte block (its slabs empty); the thread cache loses a third.
  fl.thin(g, 50, [](const block&) { return false; });
  rec.sample("free half");
  bm.thin(g, 85, [](const block& b) { return b.size != 24; });
  bm.thin(g, 100, [](const block& b) { return b.size != 200; });
  tc.thin(g, 33, [](const block& b) { return b.size > 4096; });
  rec.sample("thin");
  // Phase 3: small blocks again: some land in the free list's holes.
  for (int i = 0; i < 1500; ++i) fl.add(16 + g.below(200));
  rec.sample("refill");

  const std::string fl_svg = write_map(dir, "heap-map-free-list.svg", free_list,
                                       "free_list_resource: blocks of 16 B to 8 KiB, a random half freed");
  expect(count(fl_svg, "<rect class=\"run free\"") > 0, "the free list's map shows free runs");
  write_map(dir, "heap-map-bitmap.svg", bitmap, "bitmap_resource: five size classes, thinned");
  write_map(dir, "heap-map-thread-cache.svg", thread_cache,
            "thread_cache_resource: five size classes and three large blocks");
  // The bitmap and what lies under it: the default page resource, whose spans all three resources took.
  write_map(dir, "heap-map-chain.svg", bitmap, "bitmap_resource and the page resource under it", true);

  // Phase 4: everything back.
  fl.free_all();
  bm.free_all();
  tc.free_all();
  rec.sample("freed");
  free_list.release();
  bitmap.release();
  thread_cache.release();
  rec.sample("released");

  strata::stats_chart_options co;
  co.title = "Memory over time: the workload of the heap maps";
  co.live_allocations = true;
  const fs::path chart = dir / "stats-over-time.svg";
  const std::string chart_svg = rec.svg(co);
  expect(whole_svg(chart_svg), "the chart is a whole SVG document");
  expect(count(chart_svg, "<polyline") == 4 * rec.series(), "a line per resource and figure");
  expect(count(chart_svg, "<circle") == rec.series() * rec.samples(), "a point per resource and sample");
  expect(rec.at(0, rec.samples() - 1).bytes_in_use == 0, "the free list is empty at the end");
  expect(write_whole(chart, chart_svg), "writing " + chart.string());
  std::printf("wrote %s samples=%zu\n", chart.string().c_str(), rec.samples());

  if (failures != 0) return 1;
  std::printf("heap_map: OK, pictures in %s\n", dir.string().c_str());
  return 0;
}
