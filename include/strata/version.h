/* SPDX-License-Identifier: MIT */
/* strata/version.h: the library's version, for C and C++. The build reads it from here (CMake, pkg-config). */
#ifndef STRATA_VERSION_H
#define STRATA_VERSION_H

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 2
#define STRATA_VERSION_PATCH 0
#define STRATA_VERSION_STRING "0.2.0"
/** One number that grows with every release: major * 10000 + minor * 100 + patch. */
#define STRATA_VERSION_NUMBER (STRATA_VERSION_MAJOR * 10000 + STRATA_VERSION_MINOR * 100 + STRATA_VERSION_PATCH)

#endif /* STRATA_VERSION_H */
