// SPDX-License-Identifier: MIT
// lib/os/windows_api.hpp: <windows.h> as the Windows port (and the tests that look at what it did) include it: without
// the rarely used parts, and without the min and max macros that would break std::min and std::max.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
