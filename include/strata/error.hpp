// SPDX-License-Identifier: MIT
// strata/error.hpp: reporting of detected misuse (double free, foreign pointer, wrong size, corrupt metadata).
#pragma once

#include <cstddef>

namespace strata {

/// What kind of misuse a resource detected.
enum class error_kind {
  double_free,        ///< the block is already free
  foreign_pointer,    ///< the pointer was not handed out by this resource
  wrong_size,         ///< deallocate/resize named a size (or alignment) other than the one allocated
  bad_alignment,      ///< an alignment that is not a power of two was passed where no exception can be thrown
  corrupt_metadata,   ///< the resource's own bookkeeping failed a consistency check
  invariant_violated  ///< check_invariants() found a broken invariant
};

/// Human-readable name of `kind`, e.g. "double free".
const char* to_string(error_kind kind) noexcept;

/// Everything known about one detected misuse. Pointers are owned by the reporter and valid only during the call.
struct error_info {
  error_kind kind;
  const char* resource_name;      ///< e.g. "page_resource"
  const void* resource;           ///< the reporting resource object
  const void* pointer;            ///< the pointer passed by the caller (may be null)
  std::size_t size;               ///< the size the caller passed
  std::size_t alignment;          ///< the alignment the caller passed
  std::size_t expected_size;      ///< what the resource believes the size is; 0 when unknown
  const char* detail;             ///< one more phrase of explanation, or nullptr
};

/// A handler is called for every detected misuse. If it returns, the operation that detected the misuse does
/// nothing further (the bad pointer is ignored, no metadata is touched). It may throw only if the caller of the
/// failing operation can handle an exception (deallocate is usually called from noexcept contexts).
using error_handler = void (*)(const error_info&);

/// Installs `handler` for the whole process and returns the previous one. nullptr restores the default handler,
/// which prints one line to stderr and calls std::abort(). Thread-safe.
error_handler set_error_handler(error_handler handler) noexcept;

/// The handler installed now (never nullptr).
error_handler get_error_handler() noexcept;

/// The default handler: prints format_error(info) to stderr and aborts.
[[noreturn]] void default_error_handler(const error_info& info) noexcept;

/// Writes the one-line message for `info` into `buffer` (always NUL-terminated) and returns its length.
std::size_t format_error(const error_info& info, char* buffer, std::size_t buffer_size) noexcept;

/// Calls the installed handler. Out of line and cold: resources call it only when something is wrong.
void report_error(const error_info& info);

/// How a resource checks frees (an option of the resources that keep a free cache).
enum class check_mode {
  /// Foreign, interior and wrong-size frees are reported on the free itself; a double free on the second free, or
  /// at the latest when the block would be handed out again or its cache is flushed. Nothing is ever handed out
  /// twice without a report. Frees touch only the block and per-class state: the fast default.
  standard,
  /// Every free is verified at once against the block's header and bitmap: every misuse is reported on the call
  /// that makes it. No free cache; slower.
  strict,
};

}  // namespace strata
