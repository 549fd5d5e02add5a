// SPDX-License-Identifier: MIT
// tests/misuse/matrix.hpp: the misuse matrix: every allocator under test (a subject) behind one small face, every bug
// (a kind) as a short program run against it in a forked child, and what the child tells its parent.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace misuse {

// ---- subjects ------------------------------------------------------------------------------------------------------

/// One allocator as a program sees it: allocate, free with the size, the explicit check a program can run.
class heap {
 public:
  virtual ~heap() = default;
  /// A block of n bytes (at the alignment std::pmr::polymorphic_allocator gives an object of n bytes: 8 below 16,
  /// else 16). Throws what the allocator throws; the C forms return nullptr.
  virtual void* allocate(std::size_t n) = 0;
  /// Frees p, allocated with n bytes (libstrata-malloc: free(p), which takes no size).
  virtual void deallocate(void* p, std::size_t n) = 0;
  /// The bytes of the block p (allocated with n) really occupies: its class, its pages.
  virtual std::size_t block_size(void* p, std::size_t n) = 0;
  /// The explicit check afterwards: check_invariants(); debug_resource: check_all(), then check_invariants().
  virtual void check() = 0;
  /// What an impossible request of n bytes gives: "bad_alloc", "NULL, ENOMEM", ...
  virtual const char* impossible(std::size_t n) = 0;
};

/// How a subject is reached.
enum class face {
  pmr,     ///< a strata resource, through std::pmr::memory_resource
  c_heap,  ///< the C API's default heap: strata_malloc, strata_free (sized)
  malloc,  ///< libstrata-malloc, preloaded: malloc, free, operator new and delete
};

struct subject {
  const char* name;       ///< its test name and golden key, e.g. "bitmap-strict"
  const char* title;      ///< its column heading (docs/misuse-matrix.md names the class behind each)
  face how;
  bool default_mode;      ///< the strategy's default options: every double and invalid free must be a call
  bool guarded;           ///< debug_resource in guarded mode: every kind an allocator can catch must be caught
  const char* checks;     ///< libstrata-malloc and the C API: STRATA_CHECKS for the process; else nullptr
  /// A fresh allocator for a case of `size` bytes (the fixed pools take it as their block size), made in the
  /// harness's own static memory, never in the heap under test (a bug must not hit the harness), and never destroyed.
  heap& (*make)(std::size_t size);
  const char* debug = nullptr;  ///< libstrata-malloc: STRATA_DEBUG for the process (its debug modes); else nullptr
};

const std::vector<subject>& subjects();
const subject* find_subject(const std::string& name);

/// libstrata-malloc's path, or nullptr when it was not built.
const char* malloc_library() noexcept;
/// The preloaded libstrata-malloc's own entry points (its misuse handler and check), once it is loaded.
void install_malloc_library_handler();

// ---- kinds ---------------------------------------------------------------------------------------------------------

enum class group {
  access,        ///< a bad read or write of memory
  double_free,   ///< a block freed twice
  invalid_free,  ///< a pointer freed that is no block
  info,          ///< what the allocator does, no bug
  mismatch,      ///< new/delete forms mixed (libstrata-malloc only)
};

struct kind {
  const char* name;   ///< golden key, e.g. "overflow-1"
  const char* title;  ///< row heading
  group what;
  /// Whether an allocator can catch it at all (guard pages, canaries, a quarantine, exact frees); docs/misuse-matrix.md
  /// says why the others cannot be.
  bool catchable;
  /// The program, run in the child against a fresh heap. It reports through the functions below.
  void (*run)(heap& h, std::size_t size);
  bool malloc_only;
};

const std::vector<kind>& kinds();

/// The sizes every kind runs at.
inline constexpr std::size_t sizes[] = {8, 4096, 256 * 1024};

// ---- what a case tells the parent (child side; every call is async-signal-safe) ------------------------------------

/// Where the program is, for a report of the error handler: before the bug (set-up), in the call that does the bug
/// or is the first that can see it, in the rest of the program, or in the explicit check.
enum class stage : int { setup = 0, failing = 1, after = 2, check = 3 };
void set_stage(stage s) noexcept;

/// Around the bad access itself: a fault between the two is the instruction's.
void before_access() noexcept;
void after_access() noexcept;

/// What the program saw when nothing reported it (the consequence), or the observation of an informational row.
void observe(const char* text, const char* more = "") noexcept;

/// The channel to the parent (a pipe), opened in the child before anything else.
void open_channel(int fd) noexcept;
/// A report of the allocator's error handler (its kind, e.g. "double free"): written with the stage, then the child
/// exits at once, as a handler that stops the program would.
[[noreturn]] void report_misuse(const char* kind) noexcept;
/// Sends strata's reports (strata::set_error_handler) to report_misuse.
void install_error_handler();

}  // namespace misuse
