// SPDX-License-Identifier: MIT
// lib/c_api/exception_memory.cpp: the memory of exceptions thrown by libstrata-malloc's own copy of the C++ runtime.
//
// The library links a copy of the C++ runtime, hidden (lib/c_api/malloc.cpp says why). That copy throws when the
// library's own code fails (std::bad_alloc from the heap's page resource when the OS refuses; std::invalid_argument
// from a C API constructor, caught at the C API's boundary), and for a program that has no shared C++ runtime of its
// own. The runtime as shipped takes exception memory from malloc, and so from the heap that is throwing: a throw
// where a lock of the heap is held (its page resource's, a stripe's) and the heap needs that lock again for the
// exception's 136 bytes waits for itself forever (a C program whose first call was an impossible malloc did). It also
// reserves a 71 KiB emergency pool with malloc when the library is loaded, in every process, C or C++ (which has a
// pool of its own in its shared runtime), and that first mid-size request set up the heap's shared tier: 38 page
// faults of /bin/true's 96.
//
// These definitions take the place of the runtime's: an exception's memory comes from spare slots in zeroed static
// storage (not resident until first used), and from the heap only when all of them are taken (as many threads
// between a throw and its catch at once). Only a std::bad_alloc thrown to a program without a shared runtime of its
// own (throw_bad_alloc_to_program) is made in the heap's memory, from where no lock of the heap is held: that program's
// runtime may free it (an std::exception_ptr's last copy frees through its own __cxa_free_exception, which calls free).
//
// Layout: the Itanium C++ ABI's exception header as libstdc++ lays it out (a reference count before
// __cxa_exception; a dependent exception the same size as __cxa_exception), mirrored below and checked by size.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <typeinfo>

#include <cxxabi.h>
#include <unwind.h>

#include <strata/detail/core/bits.hpp>

#include "exception_memory.hpp"

#if defined(__GLIBCXX__) && (defined(__x86_64__) || defined(__aarch64__))

namespace {

// libstdc++'s __cxa_exception (unwind-cxx.h) on targets without the ARM EABI unwinder.
struct cxa_exception {
  void* exception_type;
  void (*exception_destructor)(void*);
  void (*unexpected_handler)();
  void (*terminate_handler)();
  cxa_exception* next_exception;
  int handler_count;
  int handler_switch_value;
  const unsigned char* action_record;
  const unsigned char* language_specific_data;
  _Unwind_Ptr catch_temp;
  void* adjusted_ptr;
  _Unwind_Exception unwind_header;
};
struct cxa_refcounted_exception {
  int reference_count;  // _Atomic_word
  cxa_exception exc;
};
static_assert(sizeof(cxa_exception) == 112 && sizeof(cxa_refcounted_exception) == 128,
              "the C++ ABI's exception header on this target");
constexpr std::size_t header_size = sizeof(cxa_refcounted_exception);
constexpr std::size_t dependent_size = sizeof(cxa_exception);  // __cxa_dependent_exception: the same by design

// Spare slots: enough for a std::bad_alloc or a std::invalid_argument, for 64 throws in flight at once.
constexpr std::size_t spare_slots = 64;
constexpr std::size_t spare_slot_size = 512;
alignas(64) unsigned char g_spare[spare_slots][spare_slot_size];
std::atomic<std::uint64_t> g_spare_taken{0};

void* take(std::size_t n) noexcept {
  std::uint64_t taken = g_spare_taken.load(std::memory_order_relaxed);
  while (n <= spare_slot_size && taken != ~std::uint64_t{0}) {
    const std::uint64_t bit = ~taken & (taken + 1);  // the lowest free slot
    if (g_spare_taken.compare_exchange_weak(taken, taken | bit, std::memory_order_acquire, std::memory_order_relaxed))
      return g_spare[strata::detail::lowest_bit(bit)];
  }
  if (void* p = std::malloc(n); p != nullptr) return p;
  std::terminate();
}

void give(void* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto base = reinterpret_cast<std::uintptr_t>(&g_spare[0][0]);
  if (a - base < sizeof g_spare) {
    g_spare_taken.fetch_and(~(std::uint64_t{1} << ((a - base) / spare_slot_size)), std::memory_order_release);
    return;
  }
  std::free(p);
}

}  // namespace

extern "C" {

void* __cxa_allocate_exception(std::size_t thrown_size) noexcept {
  if (thrown_size > SIZE_MAX - header_size) std::terminate();
  auto* p = static_cast<unsigned char*>(take(thrown_size + header_size));
  std::memset(p, 0, header_size);
  return p + header_size;
}

void __cxa_free_exception(void* thrown_object) noexcept {
  give(static_cast<unsigned char*>(thrown_object) - header_size);
}

void* __cxa_allocate_dependent_exception() noexcept {
  void* p = take(dependent_size);
  std::memset(p, 0, dependent_size);
  return p;
}

void __cxa_free_dependent_exception(void* dependent) noexcept { give(dependent); }

}  // extern "C"

namespace strata::c_api {

void throw_bad_alloc_to_program() {
  auto* p = static_cast<unsigned char*>(std::malloc(header_size + sizeof(std::bad_alloc)));
  if (p == nullptr) throw std::bad_alloc();  // in a spare slot: the heap has not even 136 bytes
  std::memset(p, 0, header_size);
  void* object = ::new (p + header_size) std::bad_alloc();
  __cxxabiv1::__cxa_throw(object, const_cast<std::type_info*>(&typeid(std::bad_alloc)),
                          [](void* e) { static_cast<std::bad_alloc*>(e)->~bad_alloc(); });
}

}  // namespace strata::c_api

#else

namespace strata::c_api {
void throw_bad_alloc_to_program() { throw std::bad_alloc(); }
}  // namespace strata::c_api

#endif
