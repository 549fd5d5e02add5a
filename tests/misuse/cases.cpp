// SPDX-License-Identifier: MIT
// tests/misuse/cases.cpp: the bugs of the misuse matrix (its rows), each a short program run in a forked child against
// a fresh allocator. A program sets the stage before the call that makes the bug or is the first that can see it, so
// that a report names where it came; it marks a bad access on both sides, so that a fault there is the instruction's;
// and when nothing stopped it, it says what it saw.
//
// The bugs are real: the pointers pass through opaque() and the accesses through functions the compiler cannot see
// into, so that it neither warns about nor removes what a program with the bug would do. The matrix runs without
// sanitizers only (an ASan build reports these accesses itself).
#include "matrix.hpp"

#include <alloca.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

extern "C" void* __libc_malloc(std::size_t size);  // glibc's own malloc, also where libstrata-malloc replaces malloc

namespace misuse {
namespace {

using byte = unsigned char;

template <class T>
T* opaque(T* p) noexcept {
  asm volatile("" : "+r"(p));
  return p;
}
byte* bytes(void* p) noexcept { return opaque(static_cast<byte*>(p)); }

constexpr byte first_fill = 0x11;   // the block the bug is about
constexpr byte second_fill = 0x22;  // its neighbour
constexpr byte bug_byte = 0x5A;     // what the bug writes
constexpr byte old_fill = 0xAB;     // a freed block's last contents, for "not zeroed"
constexpr std::size_t max_size = 256 * 1024;
constexpr std::size_t mebibyte = std::size_t{1} << 20;

// What a memcpy that runs past a block copies from.
byte g_source[max_size + 64];
// A global a program might free by mistake (aligned as a block would be).
alignas(4096) byte g_global[4096];

__attribute__((noinline)) void write_bytes(byte* p, byte value, std::size_t n) noexcept {
  volatile byte* v = p;
  for (std::size_t i = 0; i < n; ++i) v[i] = value;
}
__attribute__((noinline)) void copy_bytes(byte* dst, const byte* src, std::size_t n) noexcept {
  std::memcpy(opaque(dst), src, n);
}
__attribute__((noinline)) void zero_bytes(byte* p, std::size_t n) noexcept { std::memset(opaque(p), 0, n); }

bool all_equal(const byte* p, std::size_t n, byte value) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != value) return false;
  return true;
}

// What n bytes at p hold, read one by one through volatile loads (a use after free reads them all).
__attribute__((noinline)) const char* contents(const byte* p, std::size_t n, byte old) noexcept {
  const volatile byte* v = p;
  std::size_t same = 0, zero = 0, fresh = 0, freed = 0, same_after_16 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const byte b = v[i];
    same += b == old;
    zero += b == 0;
    fresh += b == 0xCD;
    freed += b == 0xDD;
    same_after_16 += i >= 16 && b == old;
  }
  if (n == 0) return "nothing";
  if (same == n) return "old bytes";
  if (zero == n) return "zeros";
  if (fresh == n) return "0xCD";
  if (freed == n) return "0xDD";
  if (n > 16 && same_after_16 == n - 16) return "old bytes but the first 16";
  return "other bytes";
}

// The rest of a program after the bug: a few blocks of the same size allocated and freed, where a resource that
// confirms a misuse later (standard checks) does.
void churn(heap& h, std::size_t n) {
  set_stage(stage::after);
  void* blocks[4];
  for (void*& b : blocks) b = h.allocate(n);
  for (void* b : blocks) h.deallocate(b, n);
}

// ---- bad accesses --------------------------------------------------------------------------------------------------

// Writes `by` bytes past the end of a block, or right before its start (one store at a time, or by a memcpy of
// size + by bytes over the block and those bytes), frees it, and looks at its neighbour on that side: the block
// allocated right after it, or right before.
void outside(heap& h, std::size_t n, bool before_start, std::size_t by, bool by_memcpy) {
  byte* first = bytes(h.allocate(n));
  byte* second = bytes(h.allocate(n));
  byte* p = before_start ? second : first;
  byte* q = before_start ? first : second;
  std::memset(p, first_fill, n);
  std::memset(q, second_fill, n);
  byte* const bad = before_start ? p - by : p + n;
  if (by_memcpy) std::memset(g_source, bug_byte, n + by);
  before_access();
  if (by_memcpy) copy_bytes(before_start ? bad : p, g_source, n + by);
  else write_bytes(bad, bug_byte, by);
  after_access();
  set_stage(stage::failing);
  h.deallocate(p, n);
  set_stage(stage::after);
  if (!all_equal(q, n, second_fill)) observe("neighbour changed");
  h.deallocate(q, n);
  churn(h, n);
}

// One byte 1 MiB past the block's end: wherever that is.
void overflow_far(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  before_access();
  write_bytes(p + n + mebibyte, bug_byte, 1);
  after_access();
  set_stage(stage::failing);
  h.deallocate(p, n);
  churn(h, n);
}

void use_after_free_read(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  std::memset(p, first_fill, n);
  h.deallocate(p, n);
  before_access();
  const char* seen = contents(p, n, first_fill);
  after_access();
  observe("reads ", seen);
  churn(h, n);
}

// A write into a freed block (one byte in its middle, or all of it zeroed), then the next allocation of its size.
void use_after_free_write(heap& h, std::size_t n, bool whole) {
  byte* p = bytes(h.allocate(n));
  std::memset(p, first_fill, n);
  h.deallocate(p, n);
  before_access();
  if (whole) zero_bytes(p, n);
  else write_bytes(p + n / 2, bug_byte, 1);
  after_access();
  set_stage(stage::failing);
  void* a = h.allocate(n);
  set_stage(stage::after);
  if (a == p) observe("the write is in the next block handed out");
  h.deallocate(a, n);
  churn(h, n);
}

void zero_size(heap& h, bool write) {
  byte* p = bytes(h.allocate(0));
  before_access();
  if (write) write_bytes(p, bug_byte, 1);
  else (void)contents(p, 1, 0);
  after_access();
  set_stage(stage::failing);
  h.deallocate(p, 0);
  churn(h, 16);
}

// ---- double frees --------------------------------------------------------------------------------------------------

// p's second free (and, after it, `also`'s first), then the rest of the program: would the next two allocations be
// the same block?
void free_again(heap& h, std::size_t n, void* p, void* also = nullptr) {
  set_stage(stage::failing);
  h.deallocate(p, n);
  set_stage(stage::after);
  if (also != nullptr) h.deallocate(also, n);
  void* a = h.allocate(n);
  void* b = h.allocate(n);
  if (a == b) observe("same block handed out twice");
  h.deallocate(a, n);
  if (b != a) h.deallocate(b, n);
  churn(h, n);
}

void double_free(heap& h, std::size_t n) {
  void* p = h.allocate(n);
  h.deallocate(p, n);
  free_again(h, n, p);
}

// The second free after 1,000 allocations and frees of the same size (ten rounds of 100, more than any free cache
// holds).
void double_free_delayed(heap& h, std::size_t n) {
  void* p = h.allocate(n);
  h.deallocate(p, n);
  for (int round = 0; round < 10; ++round) {
    void* batch[100];
    for (void*& b : batch) b = h.allocate(n);
    for (void* b : batch) h.deallocate(b, n);
  }
  free_again(h, n, p);
}

void double_free_interleaved(heap& h, std::size_t n) {
  void* p = h.allocate(n);
  void* x = h.allocate(n);
  void* y = h.allocate(n);
  h.deallocate(p, n);
  h.deallocate(x, n);
  free_again(h, n, p, y);
}

// p freed, its address handed out again (within 64 allocations), then p freed again: the free of a live block by the
// wrong owner. An allocator that has not handed the address out again sees a plain double free.
void double_free_reused(heap& h, std::size_t n) {
  void* p = h.allocate(n);
  h.deallocate(p, n);
  void* live[64];
  std::size_t count = 0;
  bool reused = false;
  while (count < 64 && !reused) reused = (live[count++] = h.allocate(n)) == p;
  if (!reused) observe("not reused within 64 allocations");
  set_stage(stage::failing);
  h.deallocate(p, n);
  set_stage(stage::after);
  if (reused) {
    void* a = h.allocate(n);
    observe(a == p ? "the new owner's block freed and handed out again" : "the new owner's block freed");
  }
  for (std::size_t i = 0; i < count; ++i)
    if (live[i] != p) h.deallocate(live[i], n);
}

// ---- invalid frees -------------------------------------------------------------------------------------------------

// Frees `bad` (p is a live block of n bytes, or null), then allocates twice: is the bad pointer handed out?
void invalid_free(heap& h, std::size_t n, void* p, void* bad) {
  set_stage(stage::failing);
  h.deallocate(opaque(bad), n);
  set_stage(stage::after);
  void* a = h.allocate(n);
  void* b = h.allocate(n);
  const auto overlaps = [&](void* x) {
    const auto* block = static_cast<byte*>(x);
    const auto* live = static_cast<byte*>(p);
    return live != nullptr && block < live + n && live < block + n;
  };
  if (a == bad || b == bad) observe("hands the pointer out");
  else if (overlaps(a) || overlaps(b)) observe("hands out a block overlapping a live one");
  h.deallocate(a, n);
  h.deallocate(b, n);
  if (p != nullptr) h.deallocate(p, n);
  churn(h, n);
}

void free_stack(heap& h, std::size_t n) {
  alignas(16) byte local[64];
  write_bytes(local, 0, sizeof local);
  invalid_free(h, n, nullptr, local);
}
void free_alloca(heap& h, std::size_t n) {
  byte* local = static_cast<byte*>(alloca(n < 4096 ? n : 4096));
  write_bytes(local, 0, 1);
  invalid_free(h, n, nullptr, local);
}
void free_unaligned(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  invalid_free(h, n, p, p + 1);
}
void free_past_end(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  invalid_free(h, n, p, p + h.block_size(p, n));
}
void free_global(heap& h, std::size_t n) { invalid_free(h, n, nullptr, g_global); }
void free_glibc(heap& h, std::size_t n) { invalid_free(h, n, nullptr, __libc_malloc(n)); }
void free_interior_8(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  invalid_free(h, n, p, p + 8);
}
void free_interior_half(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  invalid_free(h, n, p, p + n / 2);
}

// ---- what the allocator does ---------------------------------------------------------------------------------------

void reuse(heap& h, std::size_t n) {
  void* p = h.allocate(n);
  h.deallocate(p, n);
  void* q = h.allocate(n);
  observe(q == p ? "reused" : "not reused");
}

// A new block after a block of its size was filled with 0xAB and freed.
void not_zeroed(heap& h, std::size_t n) {
  byte* p = bytes(h.allocate(n));
  std::memset(p, old_fill, n);
  h.deallocate(p, n);
  byte* q = bytes(h.allocate(n));
  observe(contents(q, n, old_fill));
}

void request_half(heap& h, std::size_t) { observe(h.impossible(SIZE_MAX / 2)); }
void request_max(heap& h, std::size_t) { observe(h.impossible(SIZE_MAX)); }

// ---- new and delete mixed (libstrata-malloc) -----------------------------------------------------------------------

// An object whose destructor is not trivial: an array of them carries its length before the first (the cookie).
template <std::size_t N>
struct object {
  byte bytes[N];
  ~object() {}  // NOLINT: user-provided on purpose
};

template <std::size_t N>
__attribute__((noinline)) void delete_one(object<N>* p) {
  delete opaque(p);
}
template <std::size_t N>
__attribute__((noinline)) void delete_array(object<N>* p) {
  delete[] opaque(p);
}

void new_array_delete(heap& h, std::size_t n) {
  object<8>* p = opaque(new object<8>[n / 8]);
  set_stage(stage::failing);
  delete_one(p);
  churn(h, n);
}

template <std::size_t N>
void new_delete_array_of() {
  object<N>* p = opaque(new object<N>);
  set_stage(stage::failing);
  delete_array(p);
}
void new_delete_array(heap& h, std::size_t n) {
  if (n == 8) new_delete_array_of<8>();
  else if (n == 4096) new_delete_array_of<4096>();
  else new_delete_array_of<max_size>();
  churn(h, n);
}

void sized_delete_wrong(heap& h, std::size_t n) {
  void* p = opaque(::operator new(n));
  set_stage(stage::failing);
  ::operator delete(p, n == 8 ? 4096 : 8);
  churn(h, n);
}

void free_of_new(heap& h, std::size_t n) {
  byte* p = opaque(new byte[n]);
  set_stage(stage::failing);
  std::free(opaque(static_cast<void*>(p)));
  churn(h, n);
}

}  // namespace

const std::vector<kind>& kinds() {
  static const std::vector<kind> all = {
      {"overflow-1", "overflow by 1 byte", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, false, 1, false); }, false},
      {"overflow-32", "overflow by 32 bytes", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, false, 32, false); }, false},
      {"overflow-1-memcpy", "overflow by 1 byte, memcpy", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, false, 1, true); }, false},
      {"overflow-32-memcpy", "overflow by 32 bytes, memcpy", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, false, 32, true); }, false},
      {"underflow-1", "underflow by 1 byte", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, true, 1, false); }, false},
      {"underflow-32", "underflow by 32 bytes", group::access, true,
       [](heap& h, std::size_t n) { outside(h, n, true, 32, false); }, false},
      {"overflow-1mib", "a write 1 MiB past the end", group::access, true, &overflow_far, false},
      {"uaf-read", "read after free", group::access, true, &use_after_free_read, false},
      {"uaf-write", "write after free (one byte)", group::access, true,
       [](heap& h, std::size_t n) { use_after_free_write(h, n, false); }, false},
      {"uaf-zero", "write after free (memset of the block)", group::access, true,
       [](heap& h, std::size_t n) { use_after_free_write(h, n, true); }, false},
      {"double-free", "double free at once", group::double_free, true, &double_free, false},
      {"double-free-delayed", "double free after 1,000 allocations and frees", group::double_free, true,
       &double_free_delayed, false},
      {"double-free-interleaved", "double free between frees of other blocks", group::double_free, true,
       &double_free_interleaved, false},
      {"double-free-reused", "double free after the address was handed out again", group::double_free, false,
       &double_free_reused, false},
      {"free-stack", "free of a stack address", group::invalid_free, true, &free_stack, false},
      {"free-alloca", "free of an alloca'd address", group::invalid_free, true, &free_alloca, false},
      {"free-unaligned", "free of p + 1", group::invalid_free, true, &free_unaligned, false},
      {"free-past-end", "free of the address just past a block", group::invalid_free, true, &free_past_end,
       false},
      {"free-global", "free of a global", group::invalid_free, true, &free_global, false},
      {"free-glibc", "free of a glibc malloc block", group::invalid_free, true, &free_glibc, false},
      {"free-interior-8", "free of p + 8", group::invalid_free, true, &free_interior_8, false},
      {"free-interior-half", "free of p + size/2", group::invalid_free, true, &free_interior_half, false},
      {"zero-size-read", "read of a zero-size block", group::access, true,
       [](heap& h, std::size_t) { zero_size(h, false); }, false},
      {"zero-size-write", "write of a zero-size block", group::access, true,
       [](heap& h, std::size_t) { zero_size(h, true); }, false},
      {"reuse", "a freed address handed out by the next allocation", group::info, false, &reuse, false},
      {"not-zeroed", "a new block's contents after a freed one held 0xAB", group::info, false, &not_zeroed,
       false},
      {"request-half", "a request of SIZE_MAX / 2", group::info, false, &request_half, false},
      {"request-max", "a request of SIZE_MAX", group::info, false, &request_max, false},
      {"new-array-delete", "new[] freed with delete", group::mismatch, true, &new_array_delete, true},
      {"new-delete-array", "new freed with delete[]", group::mismatch, true, &new_delete_array, true},
      {"sized-delete-wrong", "sized delete with a wrong size", group::mismatch, true, &sized_delete_wrong,
       true},
      {"free-of-new", "free() of new'd memory", group::mismatch, false, &free_of_new, true},
  };
  return all;
}

}  // namespace misuse
