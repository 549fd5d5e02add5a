// SPDX-License-Identifier: MIT
// bench/report.hpp: the results of an orchestrated run and their markdown, CSV and SVG renderings.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace strata_bench {

/// One child process: its figure, or why there is none.
struct rep_outcome {
  bool ok = false;
  double value = 0;
  std::string failure;  ///< e.g. "timeout after 30 s", "killed by signal 11 (Segmentation fault)"
};

/// Every repetition of one (workload, resource) pair.
struct figure {
  std::string workload;
  std::string resource;
  std::string unit;
  std::vector<rep_outcome> reps;

  /// True when any repetition failed: the cell then reads "fail", however many others succeeded.
  [[nodiscard]] bool failed() const noexcept;
  /// Median of the repetitions; empty when failed() or there are none.
  [[nodiscard]] std::optional<double> median() const;
};

struct report_data {
  int reps = 0;
  std::string scale;
  std::string date;      ///< e.g. "2025-01-31 12:00 UTC"
  std::string machine;   ///< e.g. "2 CPUs (nproc), AMD EPYC 7B13"
  std::string build;     ///< compiler and build type
  double wall_seconds = 0;
  std::vector<std::string> workloads;  ///< columns, in order
  std::vector<std::string> units;      ///< unit of each column
  std::vector<std::string> workload_descriptions;
  std::vector<std::string> resources;  ///< rows, in order
  std::vector<std::string> strata_resources;  ///< rows that are strata's own (highlighted in the chart)
  std::vector<std::string> notes;      ///< skipped resources and the like, one line each
  std::vector<figure> figures;         ///< the pairs that ran

  [[nodiscard]] const figure* find(const std::string& workload, const std::string& resource) const;
  /// Smallest median in a column among the figures that did not fail.
  [[nodiscard]] std::optional<double> best(const std::string& workload) const;
};

/// "12.4", "1.33", "2048": three significant digits or so, never exponent notation.
std::string format_value(double v);

std::string render_markdown(const report_data& d);
std::string render_csv(const report_data& d);
std::string render_svg(const report_data& d);

}  // namespace strata_bench
