// SPDX-License-Identifier: MIT
// lib/heap_map.cpp: the SVG heap map (regions from inspect(), collected first, drawn after) and the chart of stats
// over time.
#include <strata/heap_map.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <locale>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------------------------

std::string xml_escape(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default:
        // XML 1.0 allows no control characters but tab, newline and carriage return.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') o += '?';
        else o += c;
    }
  }
  return o;
}

// Coordinates with one decimal, whatever the program's locale.
std::string num(double v) {
  if (!std::isfinite(v)) v = 0;
  char buf[48];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 1);
  return std::string(buf, res.ptr);
}

std::string human_bytes(double b) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  std::size_t u = 0;
  while (b >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    b /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0 || b >= 100) std::snprintf(buf, sizeof buf, "%.0f %s", b, units[u]);
  else std::snprintf(buf, sizeof buf, "%.3g %s", b, units[u]);
  return buf;
}

std::string human_count(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string o;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) o += ',';
    o += digits[i];
  }
  return o;
}

std::string percent(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * std::clamp(f, 0.0, 1.0));
  return buf;
}

std::string address_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx",
                static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(p)));
  return buf;
}

std::ostringstream make_stream() {
  std::ostringstream o;
  o.imbue(std::locale::classic());
  return o;
}

const char* const font = "DejaVu Sans, Arial, Helvetica, sans-serif";

void svg_open(std::ostream& o, double width, double height, const char* style) {
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << num(width) << "\" height=\""
    << num(height) << "\" viewBox=\"0 0 " << num(width) << ' ' << num(height) << "\" font-family=\"" << font
    << "\">\n<style type=\"text/css\">\n"
    << ".title{font-size:18px;font-weight:bold;fill:#222}\n"
       ".sub{font-size:12px;fill:#444}\n"
       ".ptitle{font-size:13px;font-weight:bold;fill:#222}\n"
       ".label{font-size:11px;fill:#222}\n"
       ".note{font-size:11px;fill:#555}\n"
    << style << "</style>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

// ---------------------------------------------------------------------------------------------------------------
// Colours
// ---------------------------------------------------------------------------------------------------------------

struct rgb {
  double r, g, b;
};

std::string hex(rgb c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<unsigned>(std::lround(c.r)),
                static_cast<unsigned>(std::lround(c.g)), static_cast<unsigned>(std::lround(c.b)));
  return buf;
}

// Occupancy, 0 (nothing in use) to 1 (full): a sequential blue scale, pale to dark.
std::string occupancy_colour(double f) {
  static const rgb stops[] = {
      {0xf7, 0xfb, 0xff}, {0xc6, 0xdb, 0xef}, {0x6b, 0xae, 0xd6}, {0x21, 0x71, 0xb5}, {0x08, 0x30, 0x6b}};
  constexpr int last = sizeof stops / sizeof stops[0] - 1;
  f = std::clamp(f, 0.0, 1.0) * last;
  const int i = std::min(static_cast<int>(f), last - 1);
  const double t = f - i;
  const rgb& a = stops[i];
  const rgb& b = stops[i + 1];
  return hex({a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t});
}

const char* const used_run_colour = "#08306b";  // the scale's full end
const char* const free_run_colour = "#fdae6b";  // apart from the scale: free space inside a chunk stands out

// Size classes and series: a categorical palette (Tableau 10 and two more), blues last: the occupancy scale is blue.
const char* const hues[] = {"#f28e2b", "#e15759", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                            "#9c755f", "#76b7b2", "#bab0ac", "#17becf", "#8c564b", "#4e79a7"};
constexpr std::size_t hue_count = sizeof hues / sizeof hues[0];

// The n-th hue: the palette's, then hues a golden angle apart (distinct enough for a key to tell them apart).
std::string hue(std::size_t n) {
  if (n < hue_count) return hues[n];
  const double h = std::fmod(static_cast<double>(n) * 137.508, 360.0) / 60.0;
  const double c = 0.5;  // chroma, with lightness 0.55: mid tones that show on white and under text
  const double x = c * (1 - std::fabs(std::fmod(h, 2.0) - 1));
  const double m = 0.55 - c / 2;
  rgb v{m, m, m};
  switch (static_cast<int>(h)) {
    case 0: v = {c + m, x + m, m}; break;
    case 1: v = {x + m, c + m, m}; break;
    case 2: v = {m, c + m, x + m}; break;
    case 3: v = {m, x + m, c + m}; break;
    case 4: v = {x + m, m, c + m}; break;
    default: v = {c + m, m, x + m}; break;
  }
  return hex({v.r * 255, v.g * 255, v.b * 255});
}

// ---------------------------------------------------------------------------------------------------------------
// Collecting what inspect() reports
// ---------------------------------------------------------------------------------------------------------------

struct region_entry {
  region_detail r;
  std::size_t first_run = 0;
  std::size_t run_count = 0;
  bool runs_declined = false;  ///< past heap_map_options::max_runs: its runs were not asked for
};

struct level {
  const resource* res = nullptr;
  std::string name;
  resource_stats stats{};
  std::vector<class_detail> classes;
  std::vector<std::pair<std::string, resource_stats>> tiers;
  std::vector<region_entry> regions;
  std::vector<run_detail> runs;
};

class collector final : public inspector {
 public:
  collector(level& l, std::size_t max_runs) : l_(l), max_runs_(max_runs) {}
  void on_class(const class_detail& c) override { l_.classes.push_back(c); }
  void on_tier(const tier_detail& t) override { l_.tiers.emplace_back(t.name != nullptr ? t.name : "", t.stats); }
  bool on_region(const region_detail& r) override {
    const bool want = l_.runs.size() < max_runs_;
    l_.regions.push_back({r, l_.runs.size(), 0, !want});
    return want;
  }
  void on_run(const run_detail& x) override {
    if (l_.regions.empty()) return;
    l_.runs.push_back(x);
    ++l_.regions.back().run_count;
  }

 private:
  level& l_;
  std::size_t max_runs_;
};

std::vector<level> collect(const resource& top, const heap_map_options& opt) {
  std::vector<level> levels;
  const resource* r = &top;
  constexpr std::size_t max_levels = 16;  // a chain is a few levels; this only guards against a cycle
  while (r != nullptr && levels.size() < max_levels) {
    levels.emplace_back();
    level& l = levels.back();
    l.res = r;
    l.name = r->name();
    // Reserving ahead keeps most growth out of the callbacks, which run under the resource's locks.
    l.regions.reserve(256);
    l.runs.reserve(1024);
    collector c(l, opt.max_runs);
    r->inspect(c, inspect_all);
    l.stats = r->stats();
    std::sort(l.regions.begin(), l.regions.end(), [](const region_entry& a, const region_entry& b) {
      return reinterpret_cast<std::uintptr_t>(a.r.address) < reinterpret_cast<std::uintptr_t>(b.r.address);
    });
    if (!opt.follow_upstream) break;
    r = as_strata_resource(r->upstream_resource());
  }
  return levels;
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing the map
// ---------------------------------------------------------------------------------------------------------------

const char* kind_name(region_kind k) {
  switch (k) {
    case region_kind::chunk: return "chunk";
    case region_kind::slab: return "slab";
    case region_kind::large: return "large block";
    case region_kind::span: return "span";
  }
  return "region";
}

double occupancy_of(const region_detail& r) {
  return r.size == 0 ? 0.0 : static_cast<double>(r.bytes_in_use) / static_cast<double>(r.size);
}

std::string region_tooltip(const region_detail& r, const level& l) {
  std::string t = std::string(kind_name(r.kind)) + " at " + address_text(r.address) + ", " +
                  human_bytes(static_cast<double>(r.size));
  if (r.size_class >= 0) {
    t += ", class " + std::to_string(r.size_class);
    for (const class_detail& c : l.classes) {
      if (static_cast<int>(c.index) == r.size_class) {
        t += " (" + human_bytes(static_cast<double>(c.block_size)) + " blocks)";
        break;
      }
    }
  } else if (r.block_size != 0 && r.kind != region_kind::large) {
    t += ", blocks of " + human_bytes(static_cast<double>(r.block_size));
  }
  t += "; in use " + human_bytes(static_cast<double>(r.bytes_in_use)) + " (" + percent(occupancy_of(r)) + ")";
  // A large block or a span is one allocation: its block counts say nothing more; an arena counts no blocks.
  if ((r.kind == region_kind::chunk || r.kind == region_kind::slab) && r.live_blocks + r.free_blocks > 0) {
    t += ", " + human_count(r.live_blocks) + " live, " + human_count(r.free_blocks) + " free blocks";
  }
  if (r.cached) t += "; cached";
  return t;
}

// Adjacent runs of one state drawn as one: a free list reports each block.
std::vector<run_detail> merged_runs(const level& l, const region_entry& e) {
  std::vector<run_detail> out;
  for (std::size_t i = 0; i < e.run_count; ++i) {
    const run_detail& x = l.runs[e.first_run + i];
    if (!out.empty() && out.back().free == x.free && out.back().offset + out.back().size == x.offset) {
      out.back().size += x.size;
    } else {
      out.push_back(x);
    }
  }
  return out;
}

std::string stats_line(const resource_stats& s) {
  std::string t = "in use " + human_bytes(static_cast<double>(s.bytes_in_use)) + " of " +
                  human_bytes(static_cast<double>(s.bytes_held)) + " held";
  if (s.bytes_held > 0) {
    t += " (" + percent(static_cast<double>(s.bytes_in_use) / static_cast<double>(s.bytes_held)) + ")";
  }
  t += ", resident " + human_bytes(static_cast<double>(s.bytes_resident)) + ", peak in use " +
       human_bytes(static_cast<double>(s.peak_bytes_in_use)) + ", " + human_count(s.live_allocations()) +
       " live allocations";
  return t;
}

// Free space between blocks (resources that carve blocks of any size); empty when there is none.
std::string free_space_line(const resource_stats& s) {
  if (s.free_bytes == 0) return {};
  return "free between blocks: " + human_bytes(static_cast<double>(s.free_bytes)) + " in " +
         human_count(s.free_blocks) + " pieces, the largest " +
         human_bytes(static_cast<double>(s.largest_free_block)) + ": external fragmentation " +
         percent(s.external_fragmentation());
}

// What fits in a cell `w` pixels wide (10 px text, about 6 px a character): its occupancy with the block size of a
// slab or the size of another region when there is room. A span or a large block is one allocation: its size says
// more than its occupancy (100% when handed out).
std::string cell_label(const region_detail& r, double w) {
  auto fits = [w](const std::string& t) { return w >= 6.2 * static_cast<double>(t.size()) + 8; };
  if (r.cached) return fits("cached") ? "cached" : "";
  const std::string pct = percent(occupancy_of(r));
  const bool slab = r.kind == region_kind::slab && r.block_size != 0;
  const std::string size = human_bytes(static_cast<double>(slab ? r.block_size : r.size));
  const bool whole = r.kind == region_kind::span || r.kind == region_kind::large;
  const std::string full = size + (slab ? " blocks, " + pct : whole && r.bytes_in_use == r.size ? "" : ", " + pct);
  for (const std::string* t : {&full, whole ? &size : &pct, &pct}) {
    if (fits(*t)) return *t;
  }
  return {};
}

struct map_geometry {
  double margin = 20;
  double row_w = 0;
  double cell_h = 22;
  double row_gap = 4;
  double cell_gap = 2;
  double min_cell = 3;
};

// One panel: a header, the cells, a class key, notes. Returns the y below it.
double draw_level(std::ostream& o, const level& l, std::size_t index, double y, const map_geometry& g,
                  const heap_map_options& opt, bool show_level) {
  const std::size_t n = std::min(l.regions.size(), opt.max_regions);
  double total = 0;
  double largest = 0;
  bool any_runs = false;
  for (std::size_t i = 0; i < n; ++i) {
    total += static_cast<double>(l.regions[i].r.size);
    largest = std::max(largest, static_cast<double>(l.regions[i].r.size));
    any_runs = any_runs || l.regions[i].run_count > 0;
  }
  // Bytes per pixel: the regions fill about sqrt(n) rows (a free list's chunks, whose runs are the point, a row
  // each), and the largest region fits one row.
  const double rows_wanted = any_runs ? std::clamp(static_cast<double>(n), 1.0, 200.0)
                                      : std::clamp(std::ceil(std::sqrt(static_cast<double>(n))), 1.0, 100.0);
  double bpp = std::max(total / (g.row_w * rows_wanted), largest / g.row_w);
  if (bpp <= 0) bpp = 1;
  const double cell_h = n > 600 ? 12 : g.cell_h;

  o << "<g class=\"level\">\n";
  std::string head = (show_level ? "level " + std::to_string(index + 1) + ": " : std::string()) + l.name + " at " +
                     address_text(l.res) + ", " + human_count(l.regions.size()) +
                     (l.regions.size() == 1 ? " region" : " regions");
  if (n > 0) head += ", 1 px = " + human_bytes(bpp);
  o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 14) << "\" class=\"ptitle\">" << xml_escape(head)
    << "</text>\n";
  o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 31) << "\" class=\"sub\">"
    << xml_escape(stats_line(l.stats)) << "</text>\n";
  y += 40;
  std::vector<std::string> lines;
  const std::string free_space = free_space_line(l.stats);
  if (!free_space.empty()) lines.push_back(free_space);
  // Parts with their own accounting (a thread cache's tiers, per-thread caches), three to a line.
  for (std::size_t i = 0; i < l.tiers.size(); i += 3) {
    std::string t = i == 0 ? "parts: " : "";
    for (std::size_t k = i; k < l.tiers.size() && k < i + 3; ++k) {
      const resource_stats& st = l.tiers[k].second;
      if (k > i) t += "; ";
      t += l.tiers[k].first + " ";
      if (st.bytes_in_use > 0) t += human_bytes(static_cast<double>(st.bytes_in_use)) + " in use of ";
      t += human_bytes(static_cast<double>(st.bytes_held)) + " held";
    }
    lines.push_back(t);
  }
  for (const std::string& t : lines) {
    o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 7) << "\" class=\"sub\">" << xml_escape(t)
      << "</text>\n";
    y += 16;
  }
  if (l.regions.empty()) {
    o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 12) << "\" class=\"note\">"
      << "no regions reported (nothing held, or this resource does not report its regions)</text>\n</g>\n";
    return y + 24;
  }

  // The size classes of the slabs drawn: the n-th smallest gets the n-th hue.
  std::vector<int> shown;
  for (std::size_t i = 0; i < n; ++i) {
    const int c = l.regions[i].r.size_class;
    if (c >= 0 && std::find(shown.begin(), shown.end(), c) == shown.end()) shown.push_back(c);
  }
  std::sort(shown.begin(), shown.end());
  auto class_hue = [&shown](int c) {
    return hue(static_cast<std::size_t>(std::lower_bound(shown.begin(), shown.end(), c) - shown.begin()));
  };

  double x = 0;
  double row_y = y;
  std::size_t runs_missing_for = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const region_entry& e = l.regions[i];
    const region_detail& r = e.r;
    // A region's slot in the row is its size; the cell leaves the slot's last pixels as a gap to the next.
    const double slot = std::min(g.row_w, std::max(g.min_cell + g.cell_gap, static_cast<double>(r.size) / bpp));
    const double w = slot - g.cell_gap;
    if (x > 0 && x + slot > g.row_w + 0.01) {
      x = 0;
      row_y += cell_h + g.row_gap;
    }
    const double cx = g.margin + x;
    o << "<g class=\"region\"><title>" << xml_escape(region_tooltip(r, l)) << "</title>";
    const bool large = r.kind == region_kind::large;
    o << "<rect class=\"cell\" x=\"" << num(cx) << "\" y=\"" << num(row_y) << "\" width=\"" << num(w)
      << "\" height=\"" << num(cell_h) << "\" fill=\"" << occupancy_colour(occupancy_of(r)) << "\" stroke=\""
      << (large ? "#6a3d9a" : "#8c8c8c") << "\" stroke-width=\"" << (large ? "1.5" : "0.5") << "\"/>";
    if (e.run_count > 0 && r.size > 0) {
      const double scale = w / static_cast<double>(r.size);
      for (const run_detail& run : merged_runs(l, e)) {
        o << "<rect class=\"run " << (run.free ? "free" : "used") << "\" x=\""
          << num(cx + static_cast<double>(run.offset) * scale) << "\" y=\"" << num(row_y) << "\" width=\""
          << num(static_cast<double>(run.size) * scale) << "\" height=\"" << num(cell_h) << "\" fill=\""
          << (run.free ? free_run_colour : used_run_colour) << "\">";
        if (run.free) {
          o << "<title>" << xml_escape("free run at " + address_text(static_cast<const char*>(r.address) + run.offset) +
                                       " (+" + human_bytes(static_cast<double>(run.offset)) + "), " +
                                       human_bytes(static_cast<double>(run.size)))
            << "</title>";
        }
        o << "</rect>";
      }
    } else if (e.runs_declined && r.kind == region_kind::chunk && r.block_size == 0) {
      ++runs_missing_for;
    }
    if (r.cached) {
      o << "<rect class=\"cached\" x=\"" << num(cx) << "\" y=\"" << num(row_y) << "\" width=\"" << num(w)
        << "\" height=\"" << num(cell_h) << "\" fill=\"url(#cached)\" stroke=\"#555\" stroke-width=\"0.8\""
        << " stroke-dasharray=\"3,2\"/>";
    }
    if (r.size_class >= 0) {
      o << "<rect class=\"band\" x=\"" << num(cx) << "\" y=\"" << num(row_y) << "\" width=\"" << num(w)
        << "\" height=\"4.0\" fill=\"" << class_hue(r.size_class) << "\"/>";
    }
    if (e.run_count == 0 && cell_h >= 18) {
      const std::string label = cell_label(r, w);
      const bool dark = occupancy_of(r) > 0.55 && !r.cached;
      o << "<text x=\"" << num(cx + w / 2) << "\" y=\"" << num(row_y + cell_h - 6)
        << "\" class=\"clabel\" text-anchor=\"middle\" fill=\"" << (dark ? "#fff" : "#222") << "\">"
        << xml_escape(label) << "</text>";
    }
    o << "</g>\n";
    x += slot;
  }
  y = row_y + cell_h + 8;

  // The notes: what was left out.
  auto note = [&](const std::string& text) {
    o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 10) << "\" class=\"note\">" << xml_escape(text)
      << "</text>\n";
    y += 16;
  };
  if (l.regions.size() > n) {
    double rest = 0;
    for (std::size_t i = n; i < l.regions.size(); ++i) rest += static_cast<double>(l.regions[i].r.size);
    note(human_count(l.regions.size() - n) + " more regions (" + human_bytes(rest) + ") not drawn (the first " +
         human_count(n) + " by address are)");
  }
  if (runs_missing_for > 0) {
 note("runs of " + human_count(runs_missing_for) + (runs_missing_for == 1 ? " chunk" : " chunks") +
         " not drawn (more than " + human_count(opt.max_runs) +
         " runs): their colour gives their occupancy");
  }

  if (!shown.empty()) {
    constexpr std::size_t max_keys = 36;
    constexpr double key_w = 118;
    const std::size_t per_row = std::max<std::size_t>(1, static_cast<std::size_t>((g.row_w - 90) / key_w));
    o << "<text x=\"" << num(g.margin) << "\" y=\"" << num(y + 12) << "\" class=\"label\">size classes:</text>";
    for (std::size_t k = 0; k < shown.size() && k < max_keys; ++k) {
      const int c = shown[k];
      std::string label = "class " + std::to_string(c);
      for (const class_detail& d : l.classes) {
        if (static_cast<int>(d.index) == c) label += ": " + human_bytes(static_cast<double>(d.block_size));
      }
      const double kx = g.margin + 90 + static_cast<double>(k % per_row) * key_w;
      const double ky = y + static_cast<double>(k / per_row) * 16;
      o << "<rect x=\"" << num(kx) << "\" y=\"" << num(ky + 3) << "\" width=\"12.0\" height=\"10.0\" fill=\""
        << class_hue(c) << "\"/><text x=\"" << num(kx + 16) << "\" y=\""
        << num(ky + 12) << "\" class=\"label\">" << xml_escape(label) << "</text>";
    }
    o << "\n";
    const std::size_t keys = std::min(shown.size(), max_keys);
    y += static_cast<double>((keys + per_row - 1) / per_row) * 16 + 4;
    if (shown.size() > max_keys) note(human_count(shown.size() - max_keys) + " more classes");
  }
  o << "</g>\n";
  return y + 12;
}

// What the maps drawn contain, for the key.
struct map_contents {
  bool plain = false;  ///< a cell without runs: its colour is its occupancy
  bool runs = false;
  bool cached = false;
  bool large = false;
  bool slabs = false;
};

map_contents contents_of(const std::vector<level>& levels, std::size_t max_regions) {
  map_contents c;
  for (const level& l : levels) {
    for (std::size_t i = 0; i < l.regions.size() && i < max_regions; ++i) {
      const region_entry& e = l.regions[i];
      c.plain = c.plain || e.run_count == 0;
      c.runs = c.runs || e.run_count > 0;
      c.cached = c.cached || e.r.cached;
      c.large = c.large || e.r.kind == region_kind::large;
      c.slabs = c.slabs || e.r.size_class >= 0;
    }
  }
  return c;
}

// The key to the colours, under the maps: the occupancy scale and what else the maps show.
double draw_legend(std::ostream& o, double y, double margin, const map_contents& c) {
  double x = margin;
  o << "<g class=\"legend\">";
  if (c.plain) {
    o << "<text x=\"" << num(x) << "\" y=\"" << num(y + 11) << "\" class=\"label\">share in use:</text>";
    x += 80;
    for (int i = 0; i <= 10; ++i) {
      o << "<rect x=\"" << num(x + i * 14) << "\" y=\"" << num(y) << "\" width=\"14.0\" height=\"14.0\" fill=\""
        << occupancy_colour(i / 10.0) << "\"/>";
    }
    o << "<text x=\"" << num(x) << "\" y=\"" << num(y + 27) << "\" class=\"note\">0%</text>"
      << "<text x=\"" << num(x + 154) << "\" y=\"" << num(y + 27)
      << "\" class=\"note\" text-anchor=\"end\">100%</text>";
    x += 154 + 24;
  }
  auto swatch = [&](const std::string& attrs, const char* label, double label_w) {
    o << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"22.0\" height=\"14.0\" " << attrs
      << "/><text x=\"" << num(x + 27) << "\" y=\"" << num(y + 11) << "\" class=\"label\">" << label << "</text>";
    x += 27 + label_w;
  };
  if (c.runs) {
    swatch(std::string("fill=\"") + used_run_colour + "\"", "blocks in use", 84);
    swatch(std::string("fill=\"") + free_run_colour + "\"", "free between blocks", 124);
  }
  if (c.cached) {
    swatch("fill=\"url(#cached)\" stroke=\"#555\" stroke-width=\"0.8\" stroke-dasharray=\"3,2\"",
           "cached, nothing in use", 140);
  }
  if (c.large) swatch("fill=\"none\" stroke=\"#6a3d9a\" stroke-width=\"1.5\"", "large block", 80);
  o << "</g>\n";
  o << "<text x=\"" << num(margin) << "\" y=\"" << num(y + 46) << "\" class=\"note\">"
    << "One cell per region in address order, its width proportional to its size (at least 3 px)"
    << (c.slabs ? "; the band on top of a slab: its size class" : "")
    << ". Hover over a cell for its address, size and occupancy.</text>\n";
  return y + 56;
}

}  // namespace

void write_heap_map_svg(std::ostream& out, const resource& r, const heap_map_options& options) {
  // Inspect every level before drawing anything: the stream may allocate from anywhere.
  const std::vector<level> levels = collect(r, options);

  map_geometry g;
  const double width = std::max(480.0, options.width);
  g.row_w = width - 2 * g.margin;
  std::ostringstream body = make_stream();
  double y = 44;
  for (std::size_t i = 0; i < levels.size(); ++i) y = draw_level(body, levels[i], i, y, g, options, levels.size() > 1);
  y = draw_legend(body, y + 4, g.margin, contents_of(levels, options.max_regions));

  std::ostringstream o = make_stream();
  svg_open(o, width, y + 8, ".clabel{font-size:10px}\n");
  o << "<defs><pattern id=\"cached\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\">"
       "<rect width=\"6\" height=\"6\" fill=\"#f0f0f0\"/>"
       "<path d=\"M0,6 L6,0 M-1,1 L1,-1 M5,7 L7,5\" stroke=\"#9a9a9a\" stroke-width=\"1\"/></pattern></defs>\n";
  const std::string title = options.title.empty() ? std::string(r.name()) + " heap map" : options.title;
  o << "<text x=\"" << num(g.margin) << "\" y=\"28\" class=\"title\">" << xml_escape(title) << "</text>\n";
  o << body.str() << "</svg>\n";
  out << o.str();
}

std::string heap_map_svg(const resource& r, const heap_map_options& options) {
  std::ostringstream o = make_stream();
  write_heap_map_svg(o, r, options);
  return o.str();
}

bool write_heap_map_file(const char* path, const resource& r, const heap_map_options& options) {
  const std::string svg = heap_map_svg(r, options);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  f.write(svg.data(), static_cast<std::streamsize>(svg.size()));
  f.close();
  return static_cast<bool>(f);
}

// ---------------------------------------------------------------------------------------------------------------
// Stats over time
// ---------------------------------------------------------------------------------------------------------------

void stats_recorder::watch(const resource& r, std::string label) {
  series_.push_back({&r, std::move(label), sample_labels_.size(), {}});
}

void stats_recorder::sample(std::string label) {
  for (series_data& s : series_) {
    const resource_stats st = s.r->stats();
    s.points.push_back({st.bytes_in_use, st.bytes_held, st.bytes_resident, st.live_allocations()});
  }
  sample_labels_.push_back(std::move(label));
}

const stats_recorder::point& stats_recorder::at(std::size_t series, std::size_t sample) const {
  if (series >= series_.size()) throw std::out_of_range("strata::stats_recorder::at: no such series");
  const series_data& s = series_[series];
  if (sample < s.first_sample || sample - s.first_sample >= s.points.size())
    throw std::out_of_range("strata::stats_recorder::at: no such sample");
  return s.points[sample - s.first_sample];
}

namespace {

// An axis from 0 to ticks * step, with about five ticks.
struct axis {
  double step = 1;
  int ticks = 1;
  double top() const { return step * ticks; }
};

// Bytes: a power of two (so ticks fall on 256 KiB, 512 KiB, 1 MiB ...).
axis byte_axis(double max) {
  axis a;
  if (max <= 0) max = 1024;
  a.step = 1;
  while (a.step * 5 < max) a.step *= 2;
  a.ticks = std::max(1, static_cast<int>(std::ceil(max / a.step - 1e-9)));
  return a;
}

// Counts: 1, 2 or 5 times a power of ten.
axis count_axis(double max) {
  axis a;
  if (max <= 0) max = 1;
  double p = 1;
  while (p * 10 <= max / 5) p *= 10;
  a.step = p;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    a.step = m * p;
    if (a.step * 5 >= max) break;
  }
  a.ticks = std::max(1, static_cast<int>(std::ceil(max / a.step - 1e-9)));
  return a;
}

}  // namespace

void stats_recorder::write_svg(std::ostream& out, const stats_chart_options& options) const {
  const double width = std::max(480.0, options.width);
  const double height = std::max(240.0, options.height);
  const std::size_t n = samples();
  const bool live = options.live_allocations;
  const double left = 86;
  const double right = live ? 86 : 24;
  const double top = 88 + 18 * static_cast<double>((series_.size() + 3) / 4);
  const double bottom = 52;
  const double pw = width - left - right;
  const double ph = height - top - bottom;

  double max_bytes = 0;
  double max_live = 0;
  for (const series_data& s : series_) {
    for (const point& p : s.points) {
      max_bytes = std::max({max_bytes, static_cast<double>(p.bytes_in_use), static_cast<double>(p.bytes_held),
                            static_cast<double>(p.bytes_resident)});
      max_live = std::max(max_live, static_cast<double>(p.live_allocations));
    }
  }
  const axis ya = byte_axis(max_bytes);
  const axis la = count_axis(max_live);
  auto sx = [&](std::size_t i) {
    return n <= 1 ? left + pw / 2 : left + pw * static_cast<double>(i) / static_cast<double>(n - 1);
  };
  auto sy = [&](double v) { return top + ph - ph * v / ya.top(); };
  auto sl = [&](double v) { return top + ph - ph * v / la.top(); };

  std::ostringstream o = make_stream();
  svg_open(o, width, height, ".tick{font-size:10px;fill:#444}\n");
  const std::string title = options.title.empty() ? std::string("Memory over time") : options.title;
  o << "<text x=\"20.0\" y=\"28\" class=\"title\">" << xml_escape(title) << "</text>\n";
  o << "<text x=\"20.0\" y=\"48\" class=\"sub\">" << human_count(n) << (n == 1 ? " sample" : " samples") << " of "
    << human_count(series_.size()) << (series_.size() == 1 ? " resource" : " resources")
    << ". Solid: bytes in use; dashed: bytes held; dotted: bytes resident"
    << (live ? "; dash-dot: live allocations (right axis)" : "") << ".</text>\n";

  // Legend: one colour per resource.
  o << "<g class=\"legend\">";
  for (std::size_t i = 0; i < series_.size(); ++i) {
    const double lx = 20 + static_cast<double>(i % 4) * ((width - 40) / 4);
    const double ly = 62 + static_cast<double>(i / 4) * 18;
    o << "<line x1=\"" << num(lx) << "\" y1=\"" << num(ly + 6) << "\" x2=\"" << num(lx + 22) << "\" y2=\""
      << num(ly + 6) << "\" stroke=\"" << hue(i) << "\" stroke-width=\"2.5\"/><text x=\"" << num(lx + 28)
      << "\" y=\"" << num(ly + 10) << "\" class=\"label\">" << xml_escape(series_[i].label) << "</text>";
  }
  o << "</g>\n";

  // Axes, grid and tick labels.
  o << "<g class=\"axes\">";
  for (int t = 0; t <= ya.ticks; ++t) {
    const double v = ya.step * t;
    const double y = sy(v);
    o << "<line x1=\"" << num(left) << "\" y1=\"" << num(y) << "\" x2=\"" << num(left + pw) << "\" y2=\"" << num(y)
      << "\" stroke=\"" << (t == 0 ? "#444" : "#e3e3e3") << "\" stroke-width=\"" << (t == 0 ? "1" : "0.8")
      << "\"/><text x=\"" << num(left - 6) << "\" y=\"" << num(y + 3.5) << "\" class=\"tick\" text-anchor=\"end\">"
      << xml_escape(human_bytes(v)) << "</text>";
  }
  for (int t = 0; live && t <= la.ticks; ++t) {
    const double y = sl(la.step * t);
    o << "<line x1=\"" << num(left + pw) << "\" y1=\"" << num(y) << "\" x2=\"" << num(left + pw + 4) << "\" y2=\""
      << num(y) << "\" stroke=\"#444\"/><text x=\"" << num(left + pw + 7) << "\" y=\"" << num(y + 3.5)
      << "\" class=\"tick\">" << human_count(static_cast<std::uint64_t>(la.step * t)) << "</text>";
  }
  o << "<line x1=\"" << num(left) << "\" y1=\"" << num(top) << "\" x2=\"" << num(left) << "\" y2=\""
    << num(top + ph) << "\" stroke=\"#444\"/>";
  if (live) {
    o << "<line x1=\"" << num(left + pw) << "\" y1=\"" << num(top) << "\" x2=\"" << num(left + pw) << "\" y2=\""
      << num(top + ph) << "\" stroke=\"#444\"/>";
  }
  // x ticks: every sample's label when there are few, else sample numbers at a round step.
  bool labelled = n > 0 && n <= 12;
  for (std::size_t i = 0; i < n && labelled; ++i) labelled = !sample_labels_[i].empty();
  const std::size_t xstep = n <= 12 ? 1 : static_cast<std::size_t>(count_axis(static_cast<double>(n - 1)).step);
  for (std::size_t i = 0; i < n; i += xstep) {
    std::string t = labelled ? sample_labels_[i] : std::to_string(i);
    if (t.size() > 16) t = t.substr(0, 15) + "...";
    o << "<line x1=\"" << num(sx(i)) << "\" y1=\"" << num(top + ph) << "\" x2=\"" << num(sx(i)) << "\" y2=\""
      << num(top + ph + 4) << "\" stroke=\"#444\"/><text x=\"" << num(sx(i)) << "\" y=\"" << num(top + ph + 16)
      << "\" class=\"tick\" text-anchor=\"middle\">" << xml_escape(t) << "</text>";
  }
  // Too many samples to label each: the labelled ones get a marker across the plot, their label at its top.
  for (std::size_t i = 0, k = 0; i < n && !labelled; ++i) {
    if (sample_labels_[i].empty()) continue;
    const double x = sx(i);
    const bool near_right = x > left + pw - 70;
    o << "<line x1=\"" << num(x) << "\" y1=\"" << num(top) << "\" x2=\"" << num(x) << "\" y2=\"" << num(top + ph)
      << "\" stroke=\"#bbb\" stroke-dasharray=\"2,3\"/><text x=\"" << num(near_right ? x - 3 : x + 3) << "\" y=\""
      << num(top + 10 + static_cast<double>(k++ % 3) * 12) << "\" class=\"tick\""
      << (near_right ? " text-anchor=\"end\"" : "") << ">" << xml_escape(sample_labels_[i]) << "</text>";
  }
  o << "<text x=\"" << num(left + pw / 2) << "\" y=\"" << num(height - 12) << "\" class=\"label\" "
    << "text-anchor=\"middle\">sample</text>";
  o << "<text x=\"16\" y=\"" << num(top + ph / 2) << "\" class=\"label\" text-anchor=\"middle\" "
    << "transform=\"rotate(-90 16 " << num(top + ph / 2) << ")\">bytes</text>";
  if (live) {
    o << "<text x=\"" << num(width - 14) << "\" y=\"" << num(top + ph / 2) << "\" class=\"label\" "
      << "text-anchor=\"middle\" transform=\"rotate(90 " << num(width - 14) << ' ' << num(top + ph / 2)
      << ")\">live allocations</text>";
  }
  o << "</g>\n";
  if (n == 0) {
    o << "<text x=\"" << num(left + pw / 2) << "\" y=\"" << num(top + ph / 2) << "\" class=\"note\" "
      << "text-anchor=\"middle\">no samples</text>\n";
  }

  // The lines: one polyline per resource and figure; a dot with a tooltip per sample of bytes in use.
  struct figure {
    std::size_t point::*field;
    const char* dash;
  };
  for (std::size_t si = 0; si < series_.size(); ++si) {
    const series_data& s = series_[si];
    const std::string colour = hue(si);
    o << "<g class=\"series\">";
    for (const figure f : {figure{&point::bytes_in_use, nullptr}, figure{&point::bytes_held, "7,4"},
                           figure{&point::bytes_resident, "2,3"}}) {
      o << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"" << (f.dash ? "1.6" : "2.2") << '"';
      if (f.dash) o << " stroke-dasharray=\"" << f.dash << '"';
      o << " points=\"";
      for (std::size_t k = 0; k < s.points.size(); ++k) {
        o << (k ? " " : "") << num(sx(s.first_sample + k)) << ',' << num(sy(static_cast<double>(s.points[k].*f.field)));
      }
      o << "\"/>";
    }
    if (live) {
      o << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.2\" stroke-dasharray=\"9,3,2,3\" "
        << "opacity=\"0.8\" points=\"";
      for (std::size_t k = 0; k < s.points.size(); ++k) {
        o << (k ? " " : "") << num(sx(s.first_sample + k)) << ','
          << num(sl(static_cast<double>(s.points[k].live_allocations)));
      }
      o << "\"/>";
    }
    if (s.points.size() <= 400) {
      for (std::size_t k = 0; k < s.points.size(); ++k) {
        const point& p = s.points[k];
        const std::size_t i = s.first_sample + k;
        std::string tip = s.label + ", sample " + std::to_string(i);
        if (!sample_labels_[i].empty()) tip += " (" + sample_labels_[i] + ")";
        tip += ": in use " + human_bytes(static_cast<double>(p.bytes_in_use)) + ", held " +
               human_bytes(static_cast<double>(p.bytes_held)) + ", resident " +
               human_bytes(static_cast<double>(p.bytes_resident)) + ", " + human_count(p.live_allocations) +
               " live allocations";
        o << "\n<circle cx=\"" << num(sx(i)) << "\" cy=\"" << num(sy(static_cast<double>(p.bytes_in_use)))
          << "\" r=\"2.6\" fill=\"" << colour << "\"><title>" << xml_escape(tip) << "</title></circle>";
      }
    }
    o << "</g>\n";
  }
  o << "</svg>\n";
  out << o.str();
}

std::string stats_recorder::svg(const stats_chart_options& options) const {
  std::ostringstream o = make_stream();
  write_svg(o, options);
  return o.str();
}

}  // namespace strata
