// SPDX-License-Identifier: MIT
// strata/version.hpp: the library's version (the macros of <strata/version.h>) and what the linked library says.
#pragma once

#include <strata/config.hpp>

#include <strata/version.h>

STRATA_PUBLIC_BEGIN
namespace strata {

/// The version the headers in use carry, as "major.minor.patch".
inline constexpr const char* version_string = STRATA_VERSION_STRING;
/// The version of the library linked in (the same as version_string unless headers and library were mixed).
const char* library_version() noexcept;

}  // namespace strata
STRATA_PUBLIC_END
