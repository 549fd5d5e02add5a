// SPDX-License-Identifier: MIT
// strata/stats_io.hpp: statistics as text for people (to_string) and as JSON for programs (to_json, and stats_json for
// a whole chain of resources: each level's stats, size classes, tiers and, when asked, regions).
#pragma once

#include <strata/config.hpp>

#include <memory_resource>
#include <string>

#include <strata/inspect.hpp>
#include <strata/stats.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Effects: `s` as one line for people, in binary units (1 KiB = 1024 bytes), for example
/// "in use 1.2 MiB (peak 3.4 MiB), held 4 MiB, resident ~2 MiB, overhead 2.8 MiB, 1,234 live of 5,678 allocations,
/// 0 failed, upstream 12 taken / 3 returned"; a resource that reports free space between blocks adds
/// "free 96 KiB in 21 blocks (largest 64 KiB, fragmentation 33%)".
/// The same text in every locale. Throws: std::bad_alloc.
[[nodiscard]] std::string to_string(const resource_stats& s);

/// Effects: `s` as a JSON object: every field of resource_stats by its name, as an exact integer, then the derived
/// "live_allocations", "overhead_bytes" (integers) and "external_fragmentation" (a number from 0 to 1, written with
/// enough digits to read back the same double). The same text in every locale. Throws: std::bad_alloc.
[[nodiscard]] std::string to_json(const resource_stats& s);

/// Effects: the whole chain from `r` down as one JSON object {"levels": [...]}: `r` first, then the resource it takes
/// its memory from, and so on, following resource::upstream_resource() through strata resources (and
/// std::pmr::unsynchronized_pool_resource, synchronized_pool_resource and monotonic_buffer_resource, which name their
/// upstream). Each strata level has "name" (resource::name()), "address" (a string, "0x..."), "stats" (to_json),
/// and as `what` asks "classes", "tiers" and "regions" (what inspect() reports; regions without their runs). The
/// chain ends at a resource that takes its memory from the OS (page_resource), or at a resource strata cannot look
/// into, which is a last level with its name alone: "std::pmr::new_delete_resource",
/// "std::pmr::null_memory_resource", or "std::pmr::memory_resource" for any other.
/// Thread safety: as stats() and inspect() of each level; the levels are read one after the other. With
/// inspect_regions, do not call it on a resource that serves this program's operator new or malloc (the text is
/// built while the resource holds its locks).
/// Throws: std::bad_alloc.
[[nodiscard]] std::string stats_json(const std::pmr::memory_resource& r,
                                     unsigned what = inspect_classes | inspect_tiers);

}  // namespace strata
STRATA_PUBLIC_END
