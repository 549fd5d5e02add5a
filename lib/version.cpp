// SPDX-License-Identifier: MIT
// lib/version.cpp: the version the library was built as (<strata/version.hpp>, and strata_version in the C API).
#include <strata/strata.h>
#include <strata/version.hpp>

namespace strata {
const char* library_version() noexcept { return STRATA_VERSION_STRING; }
}  // namespace strata

extern "C" const char* strata_version(void) noexcept { return STRATA_VERSION_STRING; }
extern "C" int strata_version_number(void) noexcept { return STRATA_VERSION_NUMBER; }
