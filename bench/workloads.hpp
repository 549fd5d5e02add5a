// SPDX-License-Identifier: MIT
// bench/workloads.hpp: the named workloads strata-bench measures through a std::pmr::memory_resource.
#pragma once

#include <cstddef>
#include <memory_resource>
#include <string_view>
#include <vector>

namespace strata_bench {

/// How much work a run does. Quick reduces operation counts, never the live-set sizes.
enum class scale { quick, full };

/// What sizes of blocks a workload asks for; decides which resources fit it.
enum class block_kind {
  small_fixed,  ///< one small size (a pool built for that size fits)
  small_mixed,  ///< many small sizes (general-purpose small-object allocators fit)
  large         ///< page-sized and larger blocks
};

/// What a workload is and what it needs from a resource.
struct workload_info {
  const char* name;
  const char* unit;         ///< unit of the figure, e.g. "ns/op"; lower is always better
  block_kind kind;
  bool threaded;            ///< several threads share the resource: needs a thread-safe one
  bool measures_memory;     ///< the figure is memory use, not time
  std::size_t fixed_size;   ///< the one block size of a small_fixed workload (0 otherwise)
  std::size_t alignment;    ///< the alignment every request passes
  const char* description;  ///< one line for --list and the README
};

/// Runs the workload once against `r` and returns its figure (in info.unit).
using workload_fn = double (*)(std::pmr::memory_resource& r, const workload_info& info, scale s);

struct workload {
  workload_info info;
  workload_fn run;
};

/// Every workload, in report order.
const std::vector<workload>& workloads();

/// The workload called `name`, or nullptr.
const workload* find_workload(std::string_view name);

}  // namespace strata_bench
