// SPDX-License-Identifier: MIT
// strata/heap_map.hpp: pictures of a heap: an SVG map of the regions a resource holds (chunks, slabs, large blocks,
// spans) and the runs inside them, and an SVG line chart of resources' statistics sampled over time.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <strata/resource.hpp>
#include <strata/stats.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

// ---------------------------------------------------------------------------------------------------------------
// Heap map
// ---------------------------------------------------------------------------------------------------------------

/// How write_heap_map_svg() draws.
struct heap_map_options {
  /// The picture's title; empty: the resource's name().
  std::string title;
  /// Draw the strata resources below this one too (upstream_resource(), as far as the chain has strata resources),
  /// each as its own panel under the first.
  bool follow_upstream = false;
  /// Regions drawn per panel, in address order; the rest are summed up in one line ("N more regions").
  std::size_t max_regions = 4096;
  /// Runs (a free list's used and free stretches inside its chunks) drawn per panel; the chunks past this many runs
  /// are drawn without them (their colour still gives their occupancy).
  std::size_t max_runs = 50000;
  /// Width of the picture in pixels (at least 480).
  double width = 1000;
};

/// Effects: writes to `out` a standalone SVG 1.1 picture of what `r` holds, built from r.inspect(): one cell per
/// region (chunk, slab, large block, span) in address order, its width proportional to its size (with a minimum, so
/// that small regions stay visible), its colour the share of its bytes in use (a sequential scale from pale, empty,
/// to dark, full). A slab carries a band in its size class's hue; cached regions (kept with nothing in use) are
/// hatched; a free list's chunks show their runs: used stretches dark, free ones pale, so free space and its
/// scattering (fragmentation) can be seen. Each cell has a tooltip with its address, size, kind, class and
/// occupancy. The title gives the resource's name and stats (bytes in use, held, resident, fragmentation).
///
/// Everything is collected (with the default allocator, std::allocator) before anything is written: nothing is
/// allocated from `r` or its upstream chain while they are inspected. A resource that reports no regions gets a
/// panel that says so.
/// Thread safety: as r.inspect(): a thread-safe resource may be used by other threads meanwhile (the picture is then
/// a snapshot whose parts may be apart by what they did).
/// Throws: std::bad_alloc if the default allocator fails; the stream's exceptions if it has any enabled.
void write_heap_map_svg(std::ostream& out, const resource& r, const heap_map_options& options = {});

/// As write_heap_map_svg(), returned as a string.
[[nodiscard]] std::string heap_map_svg(const resource& r, const heap_map_options& options = {});

/// As write_heap_map_svg(), into the file at `path` (created or truncated). Returns false (and leaves what it could
/// not write) when the file cannot be opened or written. For a program that wants a picture of a live resource at a
/// point of its choosing (not from a signal handler: it allocates).
bool write_heap_map_file(const char* path, const resource& r, const heap_map_options& options = {});

// ---------------------------------------------------------------------------------------------------------------
// Statistics over time
// ---------------------------------------------------------------------------------------------------------------

/// How stats_recorder::write_svg() draws.
struct stats_chart_options {
  /// The chart's title; empty: "Memory over time".
  std::string title;
  /// Also draw each resource's live allocations (allocations - deallocations), on a second axis at the right.
  bool live_allocations = false;
  /// Size of the picture in pixels (at least 480 by 240).
  double width = 1000;
  double height = 460;
};

/// Samples the statistics of one or more resources at points the program chooses, and draws them as a line chart:
/// bytes in use (solid), bytes held (dashed) and bytes resident (dotted) against the sample number, one colour per
/// resource, the byte axis in binary units (KiB, MiB, GiB).
///
/// The recorder keeps pointers to the resources it watches: they must live until the last sample() (not until
/// write_svg(), which uses what was recorded). Its own memory comes from the default allocator (std::allocator).
/// Not thread-safe: one thread calls sample() and write_svg() (the resources watched may be used by other threads).
class stats_recorder {
 public:
  /// One resource's figures at one sample.
  struct point {
    std::size_t bytes_in_use = 0;
    std::size_t bytes_held = 0;
    std::size_t bytes_resident = 0;
    std::uint64_t live_allocations = 0;
  };

  stats_recorder() = default;

  /// Effects: adds `r` to the resources sampled, under `label` (shown in the legend). Resources watched after the
  /// first sample() have no points for the samples before.
  /// Throws: std::bad_alloc.
  void watch(const resource& r, std::string label);

  /// Effects: records stats() of every resource watched, as the next sample, with an optional `label` (shown under
  /// the x axis when there are few samples, and in tooltips).
  /// Throws: std::bad_alloc.
  void sample(std::string label = {});

  /// Samples taken so far.
  [[nodiscard]] std::size_t samples() const noexcept { return sample_labels_.size(); }
  /// Resources watched.
  [[nodiscard]] std::size_t series() const noexcept { return series_.size(); }
  /// The figures of resource `series` (in the order watched) at sample `sample`.
  /// Throws: std::out_of_range when there is no such series or sample, or the resource was watched after it.
  [[nodiscard]] const point& at(std::size_t series, std::size_t sample) const;

  /// Effects: writes the chart of every sample as a standalone SVG 1.1 picture. With no sample, a chart that says so.
  /// Throws: std::bad_alloc; the stream's exceptions if it has any enabled.
  void write_svg(std::ostream& out, const stats_chart_options& options = {}) const;
  /// As write_svg(), returned as a string.
  [[nodiscard]] std::string svg(const stats_chart_options& options = {}) const;

 private:
  struct series_data {
    const resource* r = nullptr;
    std::string label;
    std::size_t first_sample = 0;  ///< the sample this resource's points begin at
    std::vector<point> points;
  };
  std::vector<series_data> series_;
  std::vector<std::string> sample_labels_;
};

}  // namespace strata
STRATA_PUBLIC_END
