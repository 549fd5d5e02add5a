/* SPDX-License-Identifier: MIT */
/* strata/strata.h: the C API. A default heap with sized free, and handles for every strategy. Valid C99 and C++. */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stddef.h>
#include <stdint.h>
#include <strata/version.h>
#ifndef __cplusplus
#include <stdbool.h>
#endif

#ifdef __cplusplus
#define STRATA_C_NOEXCEPT noexcept
extern "C" {
#else
#define STRATA_C_NOEXCEPT
#endif
/* A result that must not be ignored (a resize that failed leaves the old size in force; a reallocated block may
   have moved). */
#if defined(__GNUC__) || defined(__clang__)
#define STRATA_C_MUST_CHECK __attribute__((warn_unused_result))
#else
#define STRATA_C_MUST_CHECK
#endif
/* Exported from a shared libstrata (the library is built with hidden symbols). */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(default)
#endif

/*
 * Conventions, for every function below:
 * - Sizes come before alignments. Alignments are powers of two; anything else fails with STRATA_EINVAL.
 * - Nothing needs an init call, and no C++ exception ever leaves a function: a failure returns NULL (or false, or 0)
 *   and sets the calling thread's strata_last_error() (and errno to ENOMEM or EINVAL, as malloc would). A success
 *   leaves strata_last_error() as it was, as errno does.
 * - Sized free: strata_free(p, size) names the size p was allocated with (or last resized or reallocated to). Any
 *   size that rounds to the same block is accepted. Misuse the strategy can see (a double free, a pointer it did not
 *   hand out, a size of another block) goes to the misuse handler (strata_set_misuse_handler); the default one prints
 *   one line to stderr and aborts.
 * - Alignment of plain allocations (strata_malloc, strata_calloc, strata_realloc): 16 bytes from 16 bytes on, 8
 *   below, so any object of that size or smaller with a fundamental alignment fits, as C17 asks of malloc. Fixed
 *   pools give their blocks' alignment (see strata_fixed_pool_create). More: the _aligned forms.
 * - Size 0 is a valid request for the smallest block; every call returns a distinct pointer.
 * - NULL is accepted and ignored by every free function.
 */

/* ---- version ----------------------------------------------------------------------------------------------------- */

/** The linked library's version, "major.minor.patch" (STRATA_VERSION_STRING is the headers'). Never NULL. */
const char* strata_version(void) STRATA_C_NOEXCEPT;
/** The linked library's STRATA_VERSION_NUMBER (major * 10000 + minor * 100 + patch). */
int strata_version_number(void) STRATA_C_NOEXCEPT;

/* ---- errors ------------------------------------------------------------------------------------------------------ */

/** Why the last failing call on this thread failed. */
typedef enum strata_error {
  STRATA_OK = 0,        /**< no failure yet on this thread */
  STRATA_ENOMEM = 1,    /**< out of memory: upstream refused, a capped pool is full, or a size too large to serve */
  STRATA_EOVERFLOW = 2, /**< a size computation overflowed (count * size, or rounding a size near SIZE_MAX) */
  STRATA_EINVAL = 3,    /**< an invalid argument: an alignment not a power of two, an option out of range, a NULL handle */
  STRATA_ENOTSUP = 4,   /**< the strategy cannot do this (e.g. find a block's size without being told it) */
  STRATA_EMISUSE = 5    /**< misuse was detected and reported to the misuse handler, which returned */
} strata_error_t;

/** The calling thread's last failure (STRATA_OK if none). */
strata_error_t strata_last_error(void) STRATA_C_NOEXCEPT;
/** Resets the calling thread's last failure to STRATA_OK. */
void strata_clear_error(void) STRATA_C_NOEXCEPT;
/** A short description of `error`, e.g. "out of memory". Never NULL. */
const char* strata_error_string(strata_error_t error) STRATA_C_NOEXCEPT;

/** What kind of misuse a strategy detected. */
typedef enum strata_misuse_kind {
  STRATA_MISUSE_DOUBLE_FREE = 0,        /**< the block is already free */
  STRATA_MISUSE_FOREIGN_POINTER = 1,    /**< the pointer was not handed out by this strategy */
  STRATA_MISUSE_WRONG_SIZE = 2,         /**< a size (or alignment) other than the block's */
  STRATA_MISUSE_BAD_ALIGNMENT = 3,      /**< an alignment that is not a power of two */
  STRATA_MISUSE_CORRUPT_METADATA = 4,   /**< the strategy's own bookkeeping failed a check (an overwrite?) */
  STRATA_MISUSE_INVARIANT_VIOLATED = 5, /**< strata_resource_check found a broken invariant */
  STRATA_MISUSE_BUFFER_OVERFLOW = 6,    /**< bytes just outside a block were written (a debug resource's canary) */
  STRATA_MISUSE_WRITE_AFTER_FREE = 7,   /**< a freed block was written to (a debug resource's quarantine) */
  STRATA_MISUSE_MISMATCHED_FREE = 8     /**< freed by another family's function (free of new'd memory, ...) */
} strata_misuse_kind_t;

/** Everything known about one detected misuse; the strings live only during the handler's call. */
typedef struct strata_misuse {
  strata_misuse_kind_t kind;
  const char* strategy;  /**< e.g. "thread_cache_resource" */
  const void* pointer;   /**< the pointer passed (may be NULL) */
  size_t size;           /**< the size passed (by the default heap and thread caches: rounded to its block) */
  size_t alignment;      /**< the alignment passed */
  size_t expected_size;  /**< the size the strategy knows the block by; 0 when unknown */
  const char* detail;    /**< one more phrase of explanation, or NULL */
  const char* message;   /**< the whole report as one line, as the default handler prints it */
} strata_misuse_t;

/** Called for every detected misuse, on the thread that made it. When it returns, the call that detected the misuse
 *  does nothing further (the bad pointer is ignored; nothing changes) and sets strata_last_error() to EMISUSE. */
typedef void (*strata_misuse_handler_t)(const strata_misuse_t* misuse, void* context);

/** Installs `handler` (with `context` passed back to it) for the whole process; NULL restores the default handler,
 *  which prints the message to stderr and aborts. Thread-safe. */
void strata_set_misuse_handler(strata_misuse_handler_t handler, void* context) STRATA_C_NOEXCEPT;

/* ---- statistics -------------------------------------------------------------------------------------------------- */

/** A snapshot of a strategy's accounting. Counts and bytes_in_use are exact; bytes_resident is an estimate. */
typedef struct strata_stats_s {
  size_t bytes_in_use;      /**< sum of the sizes of the live allocations (see each strategy for rounding) */
  size_t peak_bytes_in_use; /**< highest bytes_in_use so far */
  size_t bytes_held;        /**< bytes obtained from upstream (or the OS) and not given back */
  size_t bytes_resident;    /**< estimate of the part of bytes_held backed by physical memory */
  uint64_t allocations;     /**< successful allocations since creation */
  uint64_t deallocations;   /**< frees since creation */
  uint64_t failed_allocations;
  uint64_t upstream_allocations;
  uint64_t upstream_deallocations;
  size_t free_bytes;         /**< free-list strategies: free space between blocks; 0 for the others */
  size_t free_blocks;        /**< how many free blocks make up free_bytes */
  size_t largest_free_block; /**< the largest of them */
} strata_stats_t;

/* ---- the default heap -------------------------------------------------------------------------------------------- */
/*
 * One process-wide thread_cache_resource over the default page resource, made on first use and never destroyed (so
 * it may be used from atexit handlers and thread-exit destructors). Thread-safe; a block may be freed by any thread.
 * Its statistics count each block at its rounded size (strata_round_size), so that blocks freed without their size
 * keep them exact.
 */

/** A block of at least `size` bytes, or NULL (ENOMEM). */
void* strata_malloc(size_t size) STRATA_C_NOEXCEPT;
/** A zero-filled block for `count` objects of `size` bytes; NULL on overflow of count * size (EOVERFLOW) or ENOMEM. */
void* strata_calloc(size_t count, size_t size) STRATA_C_NOEXCEPT;
/** Gives p (allocated with old_size) the size new_size: in place when its block allows, else a new block with the
 *  first min(old_size, new_size) bytes copied, and p freed. p NULL: strata_malloc(new_size). new_size 0: frees p and
 *  returns NULL. On failure returns NULL and p is still valid and unchanged. */
STRATA_C_MUST_CHECK void* strata_realloc(void* p, size_t old_size, size_t new_size) STRATA_C_NOEXCEPT;
/** Changes p's size from old_size to new_size without moving it; false (p unchanged) when that cannot be done. */
STRATA_C_MUST_CHECK bool strata_resize(void* p, size_t old_size, size_t new_size) STRATA_C_NOEXCEPT;
/** Frees p, allocated with `size` bytes. */
void strata_free(void* p, size_t size) STRATA_C_NOEXCEPT;
/** The bytes a request of `size` really gets (its size class, or its rounded block): strata_malloc(size) can be
 *  used up to this size, and freed with any size that rounds to it. */
size_t strata_round_size(size_t size) STRATA_C_NOEXCEPT;
/** A block of `size` bytes aligned to `alignment` (any power of two), or NULL (EINVAL, ENOMEM). Size first, as in
 *  every strata function: C11's aligned_alloc(alignment, size) is strata_malloc_aligned(size, alignment). (No
 *  function here is named after aligned_alloc: with the opposite order, aligned_alloc(64, 4096) written by habit
 *  would ask for 64 bytes.) */
void* strata_malloc_aligned(size_t size, size_t alignment) STRATA_C_NOEXCEPT;
/** Frees p, allocated by strata_malloc_aligned(size, alignment). */
void strata_free_aligned(void* p, size_t size, size_t alignment) STRATA_C_NOEXCEPT;

/** The bytes usable at p, a live block of the default heap (what strata_round_size gave for its request), found
 *  from the block itself. 0 and a misuse report for a pointer the heap did not hand out. A block already freed is
 *  not always recognized as such (a freed small block still gives its class size). */
size_t strata_usable_size(const void* p) STRATA_C_NOEXCEPT;
/** Frees p, any live block of the default heap (also an aligned one), without its size. Costs more than
 *  strata_free for blocks above the thread tier (a lookup under a lock). */
void strata_free_unsized(void* p) STRATA_C_NOEXCEPT;
/** strata_realloc(p, strata_usable_size(p), new_size): for code that does not keep sizes (the classic realloc). */
STRATA_C_MUST_CHECK void* strata_realloc_unsized(void* p, size_t new_size) STRATA_C_NOEXCEPT;

/** The default heap's tiers, smallest requests first. */
typedef enum strata_tier {
  STRATA_TIER_THREAD = 0,  /**< per-thread caches: no lock, no atomic read-modify-write */
  STRATA_TIER_SHARED = 1,  /**< a shared free list under one lock */
  STRATA_TIER_UPSTREAM = 2 /**< one upstream (page) request each */
} strata_tier_t;
/** The tier that serves a plain request of `size` bytes. */
strata_tier_t strata_tier_of(size_t size) STRATA_C_NOEXCEPT;
/** Smallest and largest plain request `tier` serves (the upstream tier's maximum is the largest request at all). */
size_t strata_tier_min_size(strata_tier_t tier) STRATA_C_NOEXCEPT;
size_t strata_tier_max_size(strata_tier_t tier) STRATA_C_NOEXCEPT;

/** The default heap's statistics into *out; false (EINVAL) when out is NULL. Any thread. */
bool strata_stats(strata_stats_t* out) STRATA_C_NOEXCEPT;
/** Returns the default heap's cached empty blocks and free chunks upstream (and the calling thread's pending
 *  cross-thread frees). */
void strata_trim(void) STRATA_C_NOEXCEPT;
/** Hands the calling thread's cache of the default heap back now, as thread exit does: its blocks become available
 *  to other threads. Optional; the thread may allocate again afterwards. */
void strata_thread_cleanup(void) STRATA_C_NOEXCEPT;

/* ---- persistent allocation --------------------------------------------------------------------------------------- */

/** A block that is never freed on its own: bump allocation from shared chunks, lock-free, any thread. Aligned as a
 *  plain allocation. NULL on ENOMEM. */
void* strata_persistent_malloc(size_t size) STRATA_C_NOEXCEPT;
/** Frees every persistent block at once and returns the chunks upstream. No other thread may be using persistent
 *  blocks or calling strata_persistent_malloc meanwhile. */
void strata_persistent_cleanup(void) STRATA_C_NOEXCEPT;
/** The persistent blocks' statistics (bytes_in_use: the sizes requested since the last cleanup). */
bool strata_persistent_stats(strata_stats_t* out) STRATA_C_NOEXCEPT;

/* ---- handles: a strategy per subsystem --------------------------------------------------------------------------- */

/** An opaque handle on one strata resource. */
typedef struct strata_resource strata_resource_t;

/** The default heap as a handle (never destroyed; strata_resource_destroy ignores it). */
strata_resource_t* strata_default_resource(void) STRATA_C_NOEXCEPT;
/** The process-wide page resource (whole pages from the OS, memory given back) as a handle, e.g. as an upstream. */
strata_resource_t* strata_page_resource(void) STRATA_C_NOEXCEPT;
/** The C library's heap (operator new, hence malloc) as a handle, e.g. as an upstream whose memory leak checkers
 *  see. */
strata_resource_t* strata_system_resource(void) STRATA_C_NOEXCEPT;

/*
 * Each create function takes an options struct, or NULL for the defaults. Fill one with its *_options_init function
 * and change what you need. `upstream` (NULL: the page resource) must outlive the handle. A handle made with
 * `synchronized` false must be used by one thread at a time. Every create returns NULL on failure (EINVAL for
 * options out of range, ENOMEM).
 */

/** How frees are checked (see strata::check_mode). */
typedef enum strata_checks {
  STRATA_CHECKS_STANDARD = 0, /**< double frees found on the second free, or before the block is handed out again */
  STRATA_CHECKS_STRICT = 1    /**< every free verified at once; no free cache */
} strata_checks_t;

/** Size classes in bitmap blocks, no header per object (bitmap_resource). */
typedef struct strata_bitmap_options {
  size_t block_size;       /**< bytes per block: a power of two, 64 KiB .. 16 MiB (default 64 KiB) */
  size_t max_small_size;   /**< largest request served from classes; larger go upstream (default 4096) */
  bool natural_alignment;  /**< align every object to its class size's lowest set bit up to the block (default false) */
  size_t max_empty_blocks; /**< empty blocks kept for reuse (default 2) */
  bool synchronized;       /**< safe for many threads at once (default false) */
  strata_resource_t* upstream;
  strata_checks_t checks;  /**< STRATA_CHECKS_STANDARD (default: free caches, per thread when synchronized) or STRATA_CHECKS_STRICT */
} strata_bitmap_options_t;
void strata_bitmap_options_init(strata_bitmap_options_t* options) STRATA_C_NOEXCEPT;
strata_resource_t* strata_bitmap_create(const strata_bitmap_options_t* options) STRATA_C_NOEXCEPT;

/** Fit policies of a free list. */
typedef enum strata_fit {
  STRATA_FIT_SEGREGATED = 0, /**< size-binned lists (TLSF), O(1): the default */
  STRATA_FIT_FIRST = 1,
  STRATA_FIT_NEXT = 2,
  STRATA_FIT_BEST = 3
} strata_fit_t;

/** Variable sizes with splitting and coalescing (free_list_resource). */
typedef struct strata_free_list_options {
  strata_fit_t fit;
  size_t chunk_size;       /**< 0: the default (see free_list_resource) */
  size_t large_threshold;  /**< requests above go upstream; 0: the default */
  size_t max_empty_chunks; /**< default 1 */
  size_t purge_threshold;  /**< free blocks at least this large give their pages back; default 256 KiB */
  size_t purge_delay;      /**< frees between purges; default 65536 */
  bool huge_pages;         /**< default true */
  bool synchronized;       /**< default false */
  strata_resource_t* upstream;
} strata_free_list_options_t;
void strata_free_list_options_init(strata_free_list_options_t* options) STRATA_C_NOEXCEPT;
strata_resource_t* strata_free_list_create(const strata_free_list_options_t* options) STRATA_C_NOEXCEPT;

/** Blocks of one size (fixed_pool_resource). */
typedef struct strata_fixed_pool_options {
  size_t chunk_size;       /**< 0: the default */
  bool forward_large;      /**< requests above one block go upstream instead of taking runs of blocks */
  size_t max_empty_chunks; /**< default 1 */
  bool huge_pages;         /**< default true; turn off for many small pools */
  bool synchronized;       /**< default false */
  strata_resource_t* upstream;
} strata_fixed_pool_options_t;
void strata_fixed_pool_options_init(strata_fixed_pool_options_t* options) STRATA_C_NOEXCEPT;
/** A pool of `block_size`-byte blocks holding at most `capacity` bytes (0: it grows as needed; else at least 64 KiB).
 *  When full, allocations return NULL (ENOMEM). The capacity is taken up front as whole chunks within it (chunks of
 *  64 KiB .. 2 MiB, chosen to fill all but a sixteenth of the capacity), and each chunk spends a header and 2 bits
 *  per block: strata_fixed_pool_capacity says how many blocks fit.
 *  Blocks are aligned to the lowest set bit of block_size rounded up to 8 (at most 4 KiB), and a plain allocation
 *  from the pool gets that alignment when it is below the usual one. */
strata_resource_t* strata_fixed_pool_create(size_t block_size, size_t capacity,
                                            const strata_fixed_pool_options_t* options) STRATA_C_NOEXCEPT;
/** How many blocks a capped pool holds at once (0 for a pool without a cap); 0 and EINVAL for another handle. */
size_t strata_fixed_pool_capacity(strata_resource_t* pool) STRATA_C_NOEXCEPT;

/** A heap with per-thread caches (thread_cache_resource), always thread-safe; the default heap is one. */
typedef struct strata_thread_cache_options {
  size_t max_small_size;   /**< largest request served by the per-thread caches; 0: 8 KiB (the most) */
  size_t max_shared_size;  /**< largest request served by the shared free list; 0: 256 KiB */
  size_t max_empty_blocks; /**< empty blocks the shared tier keeps; default 16 */
  strata_resource_t* upstream;
  strata_checks_t checks;  /**< STRATA_CHECKS_STANDARD (default) or STRATA_CHECKS_STRICT (no per-thread free caches) */
  uint32_t idle_decay_ms;  /**< how long a thread may keep more than max_empty_blocks emptied blocks; default 100 */
} strata_thread_cache_options_t;
void strata_thread_cache_options_init(strata_thread_cache_options_t* options) STRATA_C_NOEXCEPT;
strata_resource_t* strata_thread_cache_create(const strata_thread_cache_options_t* options) STRATA_C_NOEXCEPT;

/** Where a debug resource puts an inaccessible page next to each block (strata::guard_mode). */
typedef enum strata_guard {
  STRATA_GUARD_NONE = 0,     /**< canaries around each block: overflows found at the free or the next check */
  STRATA_GUARD_OVERFLOW = 1, /**< each block ends against an inaccessible page: an overflow faults at once */
  STRATA_GUARD_UNDERFLOW = 2 /**< each block starts right after an inaccessible page */
} strata_guard_t;

/** A debugging adaptor over an upstream (debug_resource): canaries, fill patterns, a quarantine of freed blocks,
 *  exact size checks on every free, a leak report, a guarded mode. Thread-safe. Misuse goes to the misuse handler. */
typedef struct strata_debug_options {
  size_t canary_size;          /**< bytes checked on each side of a block (default 16; 0: none) */
  bool fill;                   /**< 0xCD in new blocks, 0xDD in freed ones (default true) */
  size_t quarantine_bytes;     /**< freed blocks held back before their memory is reused (default 1 MiB) */
  unsigned backtrace_depth;    /**< return addresses recorded per allocation (default 0: the caller only) */
  bool report_leaks;           /**< strata_resource_destroy reports the blocks still live (default true) */
  strata_guard_t guard;        /**< default STRATA_GUARD_NONE */
  strata_resource_t* upstream; /**< NULL: the page resource */
} strata_debug_options_t;
void strata_debug_options_init(strata_debug_options_t* options) STRATA_C_NOEXCEPT;
strata_resource_t* strata_debug_create(const strata_debug_options_t* options) STRATA_C_NOEXCEPT;
/** Checks every live block's canaries and every quarantined block's fill, reports each problem found through the
 *  misuse handler, and returns how many there were. 0 and EINVAL for a handle that is no debug resource (the default
 *  heap in debug mode, STRATA_DEBUG, is one). */
size_t strata_debug_check_all(strata_resource_t* r) STRATA_C_NOEXCEPT;
/** Reports every live block (address, size, where it was allocated) on stderr; returns how many. 0 and EINVAL for a
 *  handle that is no debug resource. */
size_t strata_debug_leak_report(strata_resource_t* r) STRATA_C_NOEXCEPT;

/** Destroys a handle made by a create function: every block still allocated from it is freed and everything goes
 *  back upstream. NULL is ignored; the process-wide handles are left alone (EINVAL). */
void strata_resource_destroy(strata_resource_t* r) STRATA_C_NOEXCEPT;
/** Frees every block of r at once, returning its memory upstream; r stays usable. False (ENOTSUP) for the thread
 *  cache and the process-wide handles. */
bool strata_resource_release(strata_resource_t* r) STRATA_C_NOEXCEPT;

/* The calls of the default heap, on a handle. */
void* strata_resource_malloc(strata_resource_t* r, size_t size) STRATA_C_NOEXCEPT;
void* strata_resource_calloc(strata_resource_t* r, size_t count, size_t size) STRATA_C_NOEXCEPT;
STRATA_C_MUST_CHECK void* strata_resource_realloc(strata_resource_t* r, void* p, size_t old_size,
                                             size_t new_size) STRATA_C_NOEXCEPT;
STRATA_C_MUST_CHECK bool strata_resource_resize(strata_resource_t* r, void* p, size_t old_size,
                                           size_t new_size) STRATA_C_NOEXCEPT;
void strata_resource_free(strata_resource_t* r, void* p, size_t size) STRATA_C_NOEXCEPT;
void* strata_resource_malloc_aligned(strata_resource_t* r, size_t size, size_t alignment) STRATA_C_NOEXCEPT;
void strata_resource_free_aligned(strata_resource_t* r, void* p, size_t size, size_t alignment) STRATA_C_NOEXCEPT;
/** The bytes a plain request of `size` occupies in r; 0 (EOVERFLOW) when that does not fit in size_t. */
size_t strata_resource_round_size(strata_resource_t* r, size_t size) STRATA_C_NOEXCEPT;
/** Thread-cache handles only (else 0 or nothing, with ENOTSUP): the unsized forms. */
size_t strata_resource_usable_size(strata_resource_t* r, const void* p) STRATA_C_NOEXCEPT;
void strata_resource_free_unsized(strata_resource_t* r, void* p) STRATA_C_NOEXCEPT;
/** r's statistics into *out. */
bool strata_resource_stats(strata_resource_t* r, strata_stats_t* out) STRATA_C_NOEXCEPT;
/** Walks r's bookkeeping; a broken invariant is reported to the misuse handler and gives false. Not while other
 *  threads use r. */
bool strata_resource_check(strata_resource_t* r) STRATA_C_NOEXCEPT;
/** The strategy's name, e.g. "fixed_pool_resource". */
const char* strata_resource_name(strata_resource_t* r) STRATA_C_NOEXCEPT;
/** Thread-cache handles: strata_thread_cleanup for r. */
void strata_resource_thread_cleanup(strata_resource_t* r) STRATA_C_NOEXCEPT;

/* ---- resources by name --------------------------------------------------------------------------------------- */
/*
 * Resources built from a text spec such as "bitmap(block_size=256KiB, checks=strict) > page": strategies by name,
 * options in parentheses, each link's upstream after '>' (docs/configuration.md has the grammar, every name and
 * option). The same as strata::make_resource and strata::subsystem in C++.
 */

/** The chain of resources `spec` describes; strata_resource_destroy destroys all of it (the first link first).
 *  NULL on failure: EINVAL for a spec that cannot be used (a NULL spec, an unknown name or option, a bad value, unit
 *  or syntax, an option the strategy refuses), with strata_last_error_message() saying what and where; ENOMEM. */
strata_resource_t* strata_resource_create(const char* spec) STRATA_C_NOEXCEPT;

/** Why the last failing call on this thread of a function of this section failed, as one line naming the spec, the
 *  column or the file and line; "" when none has failed. Valid until this thread's next call of this section. */
const char* strata_last_error_message(void) STRATA_C_NOEXCEPT;

/** The resource of subsystem `name` (letters, digits and _ . - : /), made on first use from the first spec found:
 *  strata_configure_subsystem, the environment variable STRATA_RESOURCE_<NAME> (upper case, other characters as
 *  '_'), a config file (strata_load_subsystem_config, else the file the variable STRATA_CONFIG names), the default
 *  (strata_set_subsystem_default, else "thread_cache", one per subsystem). Lives until the process ends:
 *  strata_resource_destroy leaves it alone (EINVAL). Thread-safe; the same handle every time. NULL (EINVAL, with a
 *  message) for a bad name or a spec that cannot be built. */
strata_resource_t* strata_subsystem(const char* name) STRATA_C_NOEXCEPT;
/** Subsystem `name` will be built from `spec`. False (EINVAL, with a message) for a bad name or spec, or a subsystem
 *  made already. */
bool strata_configure_subsystem(const char* name, const char* spec) STRATA_C_NOEXCEPT;
/** Subsystems with no other spec are built from `spec` instead of "thread_cache". False (EINVAL) for a bad spec. */
bool strata_set_subsystem_default(const char* spec) STRATA_C_NOEXCEPT;
/** Reads a config file: one `name = spec` per line, '#' comments, blank lines. False (EINVAL, the message naming
 *  path:line) when a line is bad, and then nothing of the file is used; false (EINVAL) when it cannot be read. */
bool strata_load_subsystem_config(const char* path) STRATA_C_NOEXCEPT;

/* ---- statistics as JSON ------------------------------------------------------------------------------------------ */

/** The statistics of r and of every resource under it (its upstream, that one's upstream, ...) as one JSON object:
 *  {"levels": [{"name": ..., "address": "0x...", "stats": {...}, "classes": [...], "tiers": [...]}, ...]}, as the
 *  C++ strata::stats_json gives it (docs/stats.md). snprintf-style: writes at most `capacity` bytes, the text cut
 *  short if need be and always ended by a NUL (nothing is written when capacity is 0, and buffer may then be NULL),
 *  and returns the length of the whole text without its NUL: a result >= capacity means the buffer was too small.
 *  0 on failure: EINVAL (a NULL handle, or a NULL buffer with a capacity), ENOMEM. Thread-safe as
 *  strata_resource_stats. */
size_t strata_stats_json(strata_resource_t* r, char* buffer, size_t capacity) STRATA_C_NOEXCEPT;

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STRATA_STRATA_H */
