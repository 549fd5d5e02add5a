// SPDX-License-Identifier: MIT
// lib/c_api/errors.hpp: how the C API reports failure (the thread's last error and errno; every exception caught),
// and the sizes and alignments of its plain requests.
#pragma once

#include <strata/strata.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>

#include <strata/config.hpp>

namespace strata::c_api {

extern thread_local strata_error_t t_last_error;
// Misuse reports the C handler has received on this thread: a call that goes on after a step of its own (realloc
// after resize) looks here to stop when that step reported misuse.
extern thread_local std::uint64_t t_misuse_reports;

STRATA_COLD inline void fail(strata_error_t e) noexcept {
  t_last_error = e;
  errno = e == STRATA_EINVAL || e == STRATA_ENOTSUP ? EINVAL : ENOMEM;
}

// Runs f, turning any exception into a failure code; `none` is what the call returns then.
template <class R, class F>
STRATA_ALWAYS_INLINE R guarded(R none, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail(STRATA_ENOMEM);
  } catch (const std::invalid_argument&) {
    fail(STRATA_EINVAL);
  } catch (const std::length_error&) {
    fail(STRATA_EOVERFLOW);
  } catch (...) {  // thrown by a C++ error handler installed by the program
    fail(STRATA_EMISUSE);
  }
  return none;
}

// The alignment of a plain allocation: 16 from 16 bytes on, else 8. That is at least what C17 asks of malloc (any
// object of that size or smaller with a fundamental alignment fits), and every strategy's smallest block is 8-aligned
// anyway.
constexpr std::size_t plain_alignment(std::size_t size) noexcept { return size >= 16 ? 16 : 8; }
// What the default heap's malloc and free pass: a constant the fast paths fold. The heap's smallest block is 16
// bytes, so a request under 16 bytes at alignment 16 lands in the block plain_alignment() would give it, in every
// tier; at 16 bytes and more the two are the same.
constexpr std::size_t heap_alignment = 16;

enum class kind { thread_cache, bitmap, free_list, fixed_pool, page, system, debug };

}  // namespace strata::c_api
