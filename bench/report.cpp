// SPDX-License-Identifier: MIT
// bench/report.cpp: markdown table, CSV of every repetition, SVG chart.
#include "report.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace strata_bench {

bool figure::failed() const noexcept {
  return std::any_of(reps.begin(), reps.end(), [](const rep_outcome& r) { return !r.ok; });
}

std::optional<double> figure::median() const {
  if (reps.empty() || failed()) return std::nullopt;
  std::vector<double> v;
  v.reserve(reps.size());
  for (const auto& r : reps) v.push_back(r.value);
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const figure* report_data::find(const std::string& workload, const std::string& resource) const {
  for (const auto& f : figures) {
    if (f.workload == workload && f.resource == resource) return &f;
  }
  return nullptr;
}

std::optional<double> report_data::best(const std::string& workload) const {
  std::optional<double> b;
  for (const auto& f : figures) {
    if (f.workload != workload) continue;
    if (auto m = f.median(); m && (!b || *m < *b)) b = m;
  }
  return b;
}

std::string format_value(double v) {
  char buf[64];
  const char* fmt = v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f";
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

namespace {

std::string format_ratio(double v, std::optional<double> best) {
  if (!best || *best <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", v / *best);
  return buf;
}

/// The markdown cell (or chart label) of one figure.
std::string cell_text(const figure& f, std::optional<double> best) {
  auto m = f.median();
  if (!m) return "fail";
  return format_value(*m) + " (" + format_ratio(*m, best) + ")";
}

std::string header_line(const report_data& d) {
  std::ostringstream o;
  o << d.reps << (d.reps == 1 ? " rep" : " reps") << ", scale " << d.scale << ", " << d.date << ", " << d.machine;
  if (!d.build.empty()) o << ", " << d.build;
  o << ". Lower is better.";
  return o.str();
}

/// One line per figure and distinct failure reason: "fail: pmr_map / glibc, reps 1, 3: timeout after 30 s".
std::vector<std::string> failure_notes(const report_data& d) {
  std::vector<std::string> out;
  for (const auto& f : d.figures) {
    std::vector<std::pair<std::string, std::vector<std::size_t>>> reasons;
    for (std::size_t i = 0; i < f.reps.size(); ++i) {
      if (f.reps[i].ok) continue;
      auto it = std::find_if(reasons.begin(), reasons.end(), [&](const auto& r) { return r.first == f.reps[i].failure; });
      if (it == reasons.end()) it = reasons.insert(reasons.end(), {f.reps[i].failure, {}});
      it->second.push_back(i + 1);
    }
    for (const auto& [why, reps] : reasons) {
      std::string line = "fail: " + f.workload + " / " + f.resource + (reps.size() == 1 ? ", rep " : ", reps ");
      for (std::size_t k = 0; k < reps.size(); ++k) line += (k == 0 ? "" : ", ") + std::to_string(reps[k]);
      out.push_back(line + ": " + why);
    }
  }
  return out;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

}  // namespace

std::string render_markdown(const report_data& d) {
  std::ostringstream o;
  o << "strata-bench: " << header_line(d) << "\n\n";
  o << "Each cell: the median of " << d.reps << (d.reps == 1 ? " run" : " runs")
    << " (each in a fresh process) and, in parentheses, its ratio to the best in the column (**bold**). `-`: the "
    << "resource does not fit the workload. `fail`: a run crashed, failed or timed out.";
  if (d.scale == "quick") o << " Scale quick: operation counts are cut (see bench/README.md), live-set sizes are not.";
  if (d.wall_seconds > 0) o << " Wall time " << format_value(d.wall_seconds) << " s.";
  o << "\n\n";

  o << "| resource |";
  for (std::size_t c = 0; c < d.workloads.size(); ++c) o << ' ' << d.workloads[c] << " (" << d.units[c] << ") |";
  o << "\n|:--|";
  for (std::size_t c = 0; c < d.workloads.size(); ++c) o << "--:|";
  o << '\n';
  for (const auto& r : d.resources) {
    o << "| " << r << " |";
    for (const auto& w : d.workloads) {
      const figure* f = d.find(w, r);
      if (f == nullptr) {
        o << " - |";
        continue;
      }
      const auto best = d.best(w);
      const auto m = f->median();
      const bool is_best = m && best && *m == *best;
      o << ' ' << (is_best ? "**" : "") << cell_text(*f, best) << (is_best ? "**" : "") << " |";
    }
    o << '\n';
  }

  const auto fails = failure_notes(d);
  if (!d.notes.empty() || !fails.empty()) {
    o << '\n';
    for (const auto& n : d.notes) o << "- " << n << '\n';
    for (const auto& n : fails) o << "- " << n << '\n';
  }
  if (!d.workload_descriptions.empty()) {
    o << "\nWorkloads:\n";
    for (std::size_t c = 0; c < d.workloads.size() && c < d.workload_descriptions.size(); ++c) {
      o << "- `" << d.workloads[c] << "` (" << d.units[c] << "): " << d.workload_descriptions[c] << '\n';
    }
  }
  return o.str();
}

std::string render_csv(const report_data& d) {
  std::ostringstream o;
  o << "workload,resource,rep,value,unit\n";
  for (const auto& f : d.figures) {
    for (std::size_t i = 0; i < f.reps.size(); ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6g", f.reps[i].value);
      o << f.workload << ',' << f.resource << ',' << (i + 1) << ',' << (f.reps[i].ok ? buf : "fail") << ','
        << f.unit << '\n';
    }
  }
  for (const auto& f : d.figures) {
    const auto m = f.median();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", m.value_or(0));
    o << f.workload << ',' << f.resource << ",median," << (m ? buf : "fail") << ',' << f.unit << '\n';
  }
  return o.str();
}

std::string render_svg(const report_data& d) {
  // Layout: a title block, then one panel per workload in two columns; each panel has one horizontal bar per
  // resource that ran it, length proportional to the median, labelled "median (ratio to best)".
  constexpr double width = 1120;
  constexpr double margin = 20;
  constexpr double gap = 20;
  constexpr double panel_w = (width - 2 * margin - gap) / 2;
  constexpr double label_w = 124;
  constexpr double value_w = 112;
  constexpr double bar_max = panel_w - label_w - 12 - value_w;
  constexpr double row_h = 18;
  constexpr double bar_h = 12;
  constexpr double panel_head = 30;
  constexpr double top = 100;
  constexpr double clip_ratio = 8;

  std::ostringstream body;
  double y_row = top;  // top of the current row of panels
  double row_height = 0;
  for (std::size_t c = 0; c < d.workloads.size(); ++c) {
    const std::string& w = d.workloads[c];
    std::vector<const figure*> rows;
    for (const auto& r : d.resources) {
      if (const figure* f = d.find(w, r)) rows.push_back(f);
    }
    const double x = margin + static_cast<double>(c % 2) * (panel_w + gap);
    if (c % 2 == 0 && c > 0) {
      y_row += row_height + gap;
      row_height = 0;
    }
    const double y = y_row;
    const double h = panel_head + static_cast<double>(std::max<std::size_t>(rows.size(), 1)) * row_h + 10;
    row_height = std::max(row_height, h);

    const auto best = d.best(w);
    double max_v = 0;
    for (const figure* f : rows) {
      if (auto m = f->median()) max_v = std::max(max_v, *m);
    }
    // An outlier would squash every other bar: the axis stops at clip_ratio times the best, and longer bars are
    // drawn cut (with a break mark); their labels still give the true value.
    double axis = max_v;
    if (best && *best > 0) axis = std::min(axis, clip_ratio * *best);
    const double scale = axis > 0 ? bar_max / axis : 0;

    body << "<g>\n<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(panel_w) << "\" height=\""
         << num(h) << "\" fill=\"#fafafa\" stroke=\"#d0d0d0\"/>\n";
    body << "<text x=\"" << num(x + 10) << "\" y=\"" << num(y + 19) << "\" class=\"ptitle\">" << xml_escape(w)
         << "</text>";
    body << "<text x=\"" << num(x + panel_w - 10) << "\" y=\"" << num(y + 19)
         << "\" class=\"unit\" text-anchor=\"end\">" << xml_escape(d.units[c]) << ", lower is better</text>\n";
    if (rows.empty()) {
      body << "<text x=\"" << num(x + 10) << "\" y=\"" << num(y + panel_head + 12)
           << "\" class=\"note\">no resource ran this workload</text>\n";
    }
    const double bar_x = x + label_w;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const figure& f = *rows[i];
      const double ry = y + panel_head + static_cast<double>(i) * row_h;
      const bool strata = std::find(d.strata_resources.begin(), d.strata_resources.end(), f.resource) !=
                          d.strata_resources.end();
      body << "<text x=\"" << num(bar_x - 6) << "\" y=\"" << num(ry + bar_h - 2)
           << "\" class=\"label\" text-anchor=\"end\">" << xml_escape(f.resource) << "</text>";
      const auto m = f.median();
      if (!m) {
        std::string why;
        for (const auto& r : f.reps) {
          if (!r.ok) {
            why = r.failure;
            break;
          }
        }
        body << "<text x=\"" << num(bar_x + 2) << "\" y=\"" << num(ry + bar_h - 2) << "\" class=\"fail\">fail<title>"
             << xml_escape(why) << "</title></text>\n";
        continue;
      }
      const bool is_best = best && *m == *best;
      const bool cut = *m * scale > bar_max + 0.5;
      const double len = std::max(1.0, std::min(*m * scale, bar_max));
      body << "<rect x=\"" << num(bar_x) << "\" y=\"" << num(ry) << "\" width=\"" << num(len) << "\" height=\""
           << num(bar_h) << "\" fill=\"" << (strata ? "#e6550d" : "#3182bd") << "\""
           << (is_best ? "" : " opacity=\"0.75\"") << "><title>"
           << xml_escape(f.resource + ": " + format_value(*m) + " " + f.unit) << "</title></rect>";
      if (cut) {  // two white slashes across the bar's end: it goes on beyond the axis
        for (const double dx : {14.0, 9.0}) {
          body << "<line x1=\"" << num(bar_x + len - dx) << "\" y1=\"" << num(ry + bar_h + 1) << "\" x2=\""
               << num(bar_x + len - dx + 4) << "\" y2=\"" << num(ry - 1) << "\" stroke=\"white\" stroke-width=\"2\"/>";
        }
      }
      body << "<text x=\"" << num(bar_x + len + 4) << "\" y=\"" << num(ry + bar_h - 2) << "\" class=\""
           << (is_best ? "vbest" : "value") << "\">" << xml_escape(cell_text(f, best)) << "</text>\n";
    }
    if (best && scale > 0 && !rows.empty()) {  // a guide at the best value: ratios read off against it
      const double bx = bar_x + *best * scale;
      body << "<line x1=\"" << num(bx) << "\" y1=\"" << num(y + panel_head - 4) << "\" x2=\"" << num(bx)
           << "\" y2=\"" << num(y + h - 6) << "\" stroke=\"#333\" stroke-width=\"0.8\" stroke-dasharray=\"3,3\"/>\n";
    }
    body << "</g>\n";
  }
  double y_end = y_row + row_height + gap;

  std::vector<std::string> notes = d.notes;
  for (auto& n : failure_notes(d)) notes.push_back(std::move(n));
  std::ostringstream foot;
  constexpr std::size_t note_chars = 175;  // what fits the width at 11 px; the full text is in the markdown
  for (const auto& n : notes) {
    const std::string shown = n.size() > note_chars ? n.substr(0, note_chars - 3) + "..." : n;
    foot << "<text x=\"" << num(margin) << "\" y=\"" << num(y_end + 4) << "\" class=\"note\">" << xml_escape(shown)
         << "<title>" << xml_escape(n) << "</title></text>\n";
    y_end += 16;
  }
  const double height = y_end + 10;

  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\"" << num(height)
    << "\" viewBox=\"0 0 " << num(width) << ' ' << num(height) << "\" font-family=\"DejaVu Sans, Arial, Helvetica, sans-serif\">\n";
  o << "<style>\n"
       ".title{font-size:18px;font-weight:bold;fill:#222}\n"
       ".sub{font-size:12px;fill:#444}\n"
       ".ptitle{font-size:13px;font-weight:bold;fill:#222}\n"
       ".unit{font-size:11px;fill:#666}\n"
       ".label{font-size:11px;fill:#222}\n"
       ".value{font-size:11px;fill:#333}\n"
       ".vbest{font-size:11px;font-weight:bold;fill:#111}\n"
       ".fail{font-size:11px;font-weight:bold;fill:#c00}\n"
       ".note{font-size:11px;fill:#555}\n"
       "</style>\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << num(margin) << "\" y=\"30\" class=\"title\">strata-bench: median of " << d.reps
    << (d.reps == 1 ? " run" : " runs") << " per bar, scale " << xml_escape(d.scale) << "</text>\n";
  o << "<text x=\"" << num(margin) << "\" y=\"50\" class=\"sub\">" << xml_escape(d.date + ", " + d.machine +
                                                                                (d.build.empty() ? "" : ", " + d.build))
    << "</text>\n";
  o << "<text x=\"" << num(margin) << "\" y=\"68\" class=\"sub\">Lower is better. Bar length: the median; label: "
       "median (ratio to the best). The best is bold and marked by the dashed line.</text>\n";
  o << "<text x=\"" << num(margin) << "\" y=\"84\" class=\"sub\">Bars past 8x the best are cut (//). Orange: strata, "
       "blue: peers. Resources that do not fit a workload are left out of its panel.</text>\n";
  o << body.str() << foot.str() << "</svg>\n";
  return o.str();
}

}  // namespace strata_bench
