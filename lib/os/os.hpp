// SPDX-License-Identifier: MIT
// lib/os/os.hpp: strata's private contract with the operating system. The only code that maps memory.
// See README.md beside this file. All functions are thread-safe and never throw.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata::os {

enum class result : int {
  ok = 0,
  out_of_memory,     ///< the OS refused (ENOMEM, EAGAIN) or an injected test failure
  invalid_argument,  ///< unaligned address or size, or a range not mapped
  unsupported        ///< the OS (or its configuration) lacks the feature
};

/// What the port can do. Callers consult it instead of assuming Linux (see README.md for who needs what).
struct capabilities {
  bool partial_release = false;  ///< release() unmaps any page-aligned part of a mapping, not only a whole one
  /// release() of a part gives its address space back at once, not only its memory (Windows: when the whole mapping
  /// has been released)
  bool release_returns_address_space = false;
  bool reserve = false;          ///< reserve(), commit() and decommit() work: address space without memory
  bool lazy_purge = false;       ///< purge(lazy) leaves the pages for the OS to take when it wants (else: eager)
  bool sparse_map = false;       ///< map_sparse(): untouched pages of a large table cost neither memory nor commit
  bool extend_in_place = false;  ///< extend_in_place() can grow a mapping where it is
};
/// The port's capabilities, less those a test has masked.
capabilities get_capabilities() noexcept;

/// Page size: the granularity of every call below (addresses and sizes must be multiples of it).
std::size_t page_size() noexcept;
/// Transparent huge page size (PMD size), or 0 when the kernel has no transparent huge pages.
std::size_t huge_page_size() noexcept;

/// Maps `size` bytes of fresh, readable, writable, zero-filled memory (physical pages arrive on first touch).
/// Returns nullptr on failure.
void* map(std::size_t size) noexcept;
/// Maps `size` bytes that read as zero and get memory only where written, without charging commit for the whole
/// range: for large sparse tables. Returns nullptr on failure.
void* map_sparse(std::size_t size) noexcept;
/// Reserves `size` bytes of address space with no access and no memory behind it. Returns nullptr on failure.
void* reserve(std::size_t size) noexcept;
/// Makes reserved pages [p, p+size) readable and writable (zero-filled on first touch).
result commit(void* p, std::size_t size) noexcept;
/// Returns the physical memory of [p, p+size) to the OS and makes the range inaccessible again (still reserved).
result decommit(void* p, std::size_t size) noexcept;

enum class purge_kind {
  eager,  ///< memory goes back at once; the range reads as zero afterwards (MADV_DONTNEED)
  lazy    ///< the OS may take the memory back when it needs it; contents undefined until written (MADV_FREE)
};
/// Returns the physical memory of [p, p+size) to the OS; the range stays mapped and accessible.
result purge(void* p, std::size_t size, purge_kind kind) noexcept;

/// Unmaps [p, p+size): any page-aligned part of what map() or reserve() returned.
result release(void* p, std::size_t size) noexcept;

/// Grows the mapping [p, p+old_size) to new_size without moving it: succeeds only when the pages after it are
/// unmapped and [p, p+old_size) ends where its mapping ends. The new pages are readable, writable and zero.
result extend_in_place(void* p, std::size_t old_size, std::size_t new_size) noexcept;

/// Asks for (or against) transparent huge pages on [p, p+size).
result advise_huge_pages(void* p, std::size_t size, bool enable) noexcept;

/// Bytes mapped or reserved through this layer and not yet released, process-wide.
std::size_t mapped_bytes() noexcept;
/// Resident set size of the process in bytes, 0 when unknown.
std::size_t process_resident_bytes() noexcept;

/// The process's address-space limit in bytes (`ulimit -v`), SIZE_MAX when it has none.
std::size_t address_space_limit() noexcept;

/// A monotonic clock in nanoseconds (from an arbitrary start; never goes back).
std::uint64_t monotonic_ns() noexcept;

/// Up to `max` return addresses of the calling thread's stack, innermost first, starting with the return address
/// into the caller of capture_stack; returns how many (at most 64). The first call in a process may load the unwinder,
/// which takes memory from malloc: a call made on a thread that is already inside capture_stack (such an allocation
/// served by a strata allocator that records call sites) returns 0 instead of recursing. Later calls take no memory.
std::size_t capture_stack(void** out, std::size_t max) noexcept;

/// What the dynamic linker knows about a code address.
struct code_location {
  const char* symbol = nullptr;      ///< the nearest exported symbol at or below the address (mangled), or nullptr
  std::uintptr_t symbol_address = 0;
  const char* object = nullptr;      ///< the file of the executable or shared library holding the address, or nullptr
  std::uintptr_t object_base = 0;    ///< where that object is loaded
};
/// Describes `address`: false when it lies in no loaded object. Takes no memory; the strings stay valid while the
/// object stays loaded. Only exported symbols are named: an executable's own functions need -rdynamic.
bool describe_address(const void* address, code_location& out) noexcept;

/// Calls `explain(address)` when the process takes a segmentation or bus fault at `address`, then lets the fault take
/// its course: the handlers that were in place are put back before `explain` runs, and the faulting instruction runs
/// again when it returns. `explain` runs in a signal handler: it may only read memory it knows and write with
/// write_error. One function per process (a later call replaces it). False when the OS cannot.
bool on_fault(void (*explain)(const void* address)) noexcept;
/// Writes `length` bytes of `text` to the standard error stream, unbuffered (usable in a signal handler).
void write_error(const char* text, std::size_t length) noexcept;

/// The value of environment variable `name`, or nullptr when it is not set.
const char* environment(const char* name) noexcept;

/// Has prepare run in the thread that calls fork() before the process is copied, and parent / child after it, in the
/// parent and in the child (the child has that one thread only). False when the OS cannot.
bool at_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept;

/// A thread-exit hook: calls fn(value) when a thread that armed it with a value exits, after the thread's C++
/// thread_local destructors; not for the thread that ends the process with exit() (the process is gone). Made once
/// per use (a handle; -1 when the OS has no room for another). Unlike a thread_local destructor, arming one needs no
/// memory from malloc for the first hooks of a process, so a thread's first allocation does not depend on the heap
/// it is setting up; where it does need memory and gets none, arming fails and says so instead of aborting.
int make_thread_exit_hook(void (*fn)(void*)) noexcept;
/// Arms `hook` for the calling thread with `value` (not null). False when it cannot be armed.
bool arm_thread_exit_hook(int hook, void* value) noexcept;
/// Deletes `hook`: no thread runs it after this (for a library that is being unloaded).
void drop_thread_exit_hook(int hook) noexcept;

/// Test hook: the next `n` calls that obtain memory (map, reserve, commit, extend_in_place) succeed, later ones fail
/// with out_of_memory until clear_failures().
void inject_failure_after(std::size_t n) noexcept;
/// Test hook: while set, purge, decommit and advise_huge_pages fail with out_of_memory (memory stays as it was).
/// clear_failures() clears it too.
void refuse_advice(bool refuse) noexcept;
/// Test hook: from now on get_capabilities() reports the capabilities set in `off` as missing (callers take their
/// other ways). clear_failures() unmasks them all.
void mask_capabilities(const capabilities& off) noexcept;
void clear_failures() noexcept;

}  // namespace strata::os
