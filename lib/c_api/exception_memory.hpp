// SPDX-License-Identifier: MIT
// lib/c_api/exception_memory.hpp: libstrata-malloc's exception memory (exception_memory.cpp).
#pragma once

namespace strata::c_api {

/// Throws std::bad_alloc from the library's own C++ runtime, in memory of the heap that the program's runtime can
/// free (free()): for a program without a shared C++ runtime. Call with no lock of the heap held.
[[noreturn]] void throw_bad_alloc_to_program();

}  // namespace strata::c_api
