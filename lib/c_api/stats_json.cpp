// SPDX-License-Identifier: MIT
// lib/c_api/stats_json.cpp: strata_stats_json, the JSON of a handle's chain of resources (strata::stats_json).
#include <strata/strata.h>

#include <cstring>
#include <string>

#include <strata/stats_io.hpp>

#include "errors.hpp"
#include "handles.hpp"

using strata::c_api::fail;
using strata::c_api::guarded;

extern "C" size_t strata_stats_json(strata_resource_t* r, char* buffer, size_t capacity) noexcept {
  if (!strata::c_api::valid(r)) return 0;
  if (buffer == nullptr && capacity != 0) {
    fail(STRATA_EINVAL);
    return 0;
  }
  return guarded<size_t>(0, [&] {
    const std::string json = strata::stats_json(*r->pmr);
    if (capacity != 0) {
      const std::size_t n = json.size() < capacity ? json.size() : capacity - 1;
      std::memcpy(buffer, json.data(), n);
      buffer[n] = '\0';
    }
    return json.size();
  });
}
