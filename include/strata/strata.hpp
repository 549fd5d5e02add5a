// SPDX-License-Identifier: MIT
// strata/strata.hpp: umbrella header for the C++ API (Boost interop and the test kit are included separately).
#pragma once

#include <strata/config.hpp>
#include <strata/arena_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/error.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/heap_map.hpp>
#include <strata/inspect.hpp>
#include <strata/make_resource.hpp>
#include <strata/node_size.hpp>
#include <strata/options.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/tracking_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>
#include <strata/stats.hpp>
#include <strata/stats_io.hpp>
#include <strata/subsystem.hpp>
#include <strata/version.hpp>
