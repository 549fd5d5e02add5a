// SPDX-License-Identifier: MIT
// strata/error.hpp: reporting of detected misuse (double free, foreign pointer, wrong size, corrupt metadata).
#pragma once

#include <strata/config.hpp>

#include <cstddef>

STRATA_PUBLIC_BEGIN
namespace strata {

/// What kind of misuse a resource detected.
enum class error_kind {
  double_free,        ///< the block is already free
  foreign_pointer,    ///< the pointer was not handed out by this resource
  wrong_size,         ///< deallocate/resize named a size (or alignment) other than the one allocated
  bad_alignment,      ///< an alignment that is not a power of two was passed where no exception can be thrown
  corrupt_metadata,   ///< the resource's own bookkeeping failed a consistency check
  invariant_violated, ///< check_invariants() found a broken invariant
  buffer_overflow,    ///< bytes just outside a block were written (debug_resource: a canary changed)
  write_after_free,   ///< a freed block was written to (debug_resource: its fill changed in the quarantine)
  mismatched_free     ///< freed by another family's function (free of new'd memory, delete of new[]'d memory)
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

/// The default handler: prints format_error(info) to stderr and aborts.
[[noreturn]] void default_error_handler(const error_info& info) noexcept;

/// What is called for every detected misuse: a function, and the context it is called with when it takes one (as
/// the C API's misuse handler). If it returns, the operation that detected the misuse does nothing further (the bad
/// pointer is ignored, no metadata is touched). It may throw only if the caller of the failing operation can handle
/// an exception (deallocate is usually called from noexcept contexts).
///
///     strata::set_error_handler(&log_misuse);                       // void log_misuse(const strata::error_info&)
///     strata::set_error_handler({&count_misuse, &my_counter});      // void count_misuse(const error_info&, void*)
///     auto previous = strata::set_error_handler(h); ... strata::set_error_handler(previous);
class error_handler {
 public:
  using plain_function = void (*)(const error_info&);
  using context_function = void (*)(const error_info&, void* context);

  /// The default handler (default_error_handler).
  constexpr error_handler() noexcept = default;
  /// The default handler, as nullptr has always meant.
  constexpr error_handler(std::nullptr_t) noexcept {}
  /// f(info); nullptr: the default handler.
  constexpr error_handler(plain_function f) noexcept : plain_(f) {}
  /// f(info, context); a null f: the default handler.
  constexpr error_handler(context_function f, void* context) noexcept
      : with_context_(f), context_(f != nullptr ? context : nullptr) {}

  /// Calls the handler (the default one when none was given).
  void operator()(const error_info& info) const;

  /// The plain function, or nullptr when the handler takes a context (default_error_handler for the default).
  [[nodiscard]] constexpr plain_function plain() const noexcept {
    return with_context_ != nullptr ? nullptr : plain_ != nullptr ? plain_ : &default_error_handler;
  }
  /// The function taking a context, or nullptr.
  [[nodiscard]] constexpr context_function function() const noexcept { return with_context_; }
  [[nodiscard]] constexpr void* context() const noexcept { return context_; }

  friend constexpr bool operator==(const error_handler& a, const error_handler& b) noexcept {
    return a.plain() == b.plain() && a.with_context_ == b.with_context_ && a.context_ == b.context_;
  }
  friend constexpr bool operator!=(const error_handler& a, const error_handler& b) noexcept { return !(a == b); }

 private:
  plain_function plain_ = nullptr;
  context_function with_context_ = nullptr;
  void* context_ = nullptr;
};

/// Installs `handler` for the whole process and returns the previous one. nullptr (or a default-constructed
/// handler) restores the default, which prints one line to stderr and calls std::abort(). Thread-safe: a report
/// running meanwhile calls the old handler or the new one, each with its own context.
error_handler set_error_handler(error_handler handler) noexcept;

/// The handler installed now.
error_handler get_error_handler() noexcept;

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
STRATA_PUBLIC_END
