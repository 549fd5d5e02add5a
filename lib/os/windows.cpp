// SPDX-License-Identifier: MIT
// lib/os/windows.cpp: the os.hpp contract on Windows (VirtualAlloc, VirtualFree, VirtualQuery; a vectored exception
// handler for faults; a thread_local destructor for the thread-exit hooks). The counter and the test hooks are the
// portable part's (common.cpp, through port.hpp).
//
// Windows releases a reservation whole (VirtualFree with MEM_RELEASE takes the base address the reservation began
// at), where os.hpp's release() takes any page-aligned part of a mapping. This port releases a part by decommitting it
// (its memory and commit charge go back at once) and counts, per reservation, the bytes released so far; the
// reservation itself goes when all of it has been released. Until then its address space stays taken:
// capabilities::release_returns_address_space is false. A range may span several reservations (page_resource merges
// neighbouring spans in its cache): every call below works reservation by reservation.
#include "port.hpp"

#include "windows_api.hpp"
#include <psapi.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace strata::os {
namespace {

std::size_t read_page_size() noexcept {
  SYSTEM_INFO info;
  ::GetSystemInfo(&info);
  return info.dwPageSize != 0 ? static_cast<std::size_t>(info.dwPageSize) : 4096;
}

std::uintptr_t address_of(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p); }
void* pointer_to(std::uintptr_t a) noexcept { return reinterpret_cast<void*>(a); }

// ---- reservations partly released ------------------------------------------------------------------------------------
// base -> (size, bytes released so far), for reservations of which a part has been released and the rest not yet.
// An open-addressed table in pages of its own (this layer takes nothing from the C++ heap), under an SRW lock, grown
// by doubling; most reservations are released whole and never enter it.
struct partial {
  std::uintptr_t base;  // 0: empty slot; 1: deleted
  std::size_t size;
  std::size_t released;
};
SRWLOCK g_partial_lock = SRWLOCK_INIT;
partial* g_partial = nullptr;
std::size_t g_partial_capacity = 0;  // a power of two
std::size_t g_partial_used = 0;      // live and deleted slots

std::size_t slot_of(std::uintptr_t base, std::size_t capacity) noexcept {
  return static_cast<std::size_t>((base >> 16) * 0x9E3779B97F4A7C15ull) & (capacity - 1);
}

// Under the lock: the entry for `base`, or nullptr.
partial* find_partial(std::uintptr_t base) noexcept {
  if (g_partial == nullptr) return nullptr;
  for (std::size_t i = slot_of(base, g_partial_capacity);; i = (i + 1) & (g_partial_capacity - 1)) {
    if (g_partial[i].base == base) return &g_partial[i];
    if (g_partial[i].base == 0) return nullptr;
  }
}

// Under the lock: a new entry for `base` (not in the table), or nullptr when no memory for the table could be had.
partial* add_partial(std::uintptr_t base, std::size_t size) noexcept {
  if ((g_partial_used + 1) * 4 > g_partial_capacity * 3) {
    std::size_t live = 0;
    for (std::size_t i = 0; i < g_partial_capacity; ++i) live += g_partial[i].base > 1 ? 1 : 0;
    std::size_t capacity = g_partial_capacity == 0 ? 256 : g_partial_capacity;
    while ((live + 1) * 2 > capacity) capacity *= 2;
    auto* table = static_cast<partial*>(
        ::VirtualAlloc(nullptr, capacity * sizeof(partial), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE));
    if (table == nullptr) return nullptr;
    for (std::size_t i = 0; i < g_partial_capacity; ++i) {
      if (g_partial[i].base <= 1) continue;
      std::size_t j = slot_of(g_partial[i].base, capacity);
      while (table[j].base != 0) j = (j + 1) & (capacity - 1);
      table[j] = g_partial[i];
    }
    if (g_partial != nullptr) ::VirtualFree(g_partial, 0, MEM_RELEASE);
    g_partial = table;
    g_partial_capacity = capacity;
    g_partial_used = live;
  }
  std::size_t i = slot_of(base, g_partial_capacity);
  while (g_partial[i].base > 1) i = (i + 1) & (g_partial_capacity - 1);
  if (g_partial[i].base == 0) ++g_partial_used;
  g_partial[i] = partial{base, size, 0};
  return &g_partial[i];
}

// The end of the regions from `from` on that belong to the reservation at `base`, walking no further than `limit`.
std::uintptr_t reservation_end(std::uintptr_t base, std::uintptr_t from, std::uintptr_t limit) noexcept {
  std::uintptr_t end = from;
  while (end < limit) {
    MEMORY_BASIC_INFORMATION next;
    if (::VirtualQuery(pointer_to(end), &next, sizeof(next)) == 0 || next.State == MEM_FREE ||
        address_of(next.AllocationBase) != base)
      break;
    end = address_of(next.BaseAddress) + next.RegionSize;
  }
  return end;
}

// The reservation holding `p`: its base and size (every region VirtualQuery finds with that allocation base). False
// when `p` is not in one.
bool reservation_of(const void* p, std::uintptr_t& base, std::size_t& size) noexcept {
  MEMORY_BASIC_INFORMATION info;
  if (::VirtualQuery(p, &info, sizeof(info)) == 0 || info.State == MEM_FREE) return false;
  base = address_of(info.AllocationBase);
  size = reservation_end(base, base, UINTPTR_MAX) - base;
  return true;
}

// Calls f(piece, bytes) for the part of [p, p+size) in each reservation it crosses, in order; stops at the first
// result that is not ok (or at a part of the range that is not reserved: invalid_argument).
template <class F>
result each_reservation(void* p, std::size_t size, F&& f) noexcept {
  std::uintptr_t a = address_of(p);
  const std::uintptr_t end = a + size;
  while (a < end) {
    MEMORY_BASIC_INFORMATION info;
    if (::VirtualQuery(pointer_to(a), &info, sizeof(info)) == 0 || info.State == MEM_FREE)
      return result::invalid_argument;
    // The rest of this reservation within the range.
    std::uintptr_t stop =
        reservation_end(address_of(info.AllocationBase), address_of(info.BaseAddress) + info.RegionSize, end);
    if (stop > end) stop = end;
    const result r = f(pointer_to(a), stop - a);
    if (r != result::ok) return r;
    a = stop;
  }
  return result::ok;
}

result from_last_error() noexcept {
  switch (::GetLastError()) {
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_COMMITMENT_LIMIT:
    case ERROR_COMMITMENT_MINIMUM:
      return result::out_of_memory;
    case ERROR_NOT_SUPPORTED:
    case ERROR_CALL_NOT_IMPLEMENTED:
      return result::unsupported;
    default:
      return result::invalid_argument;
  }
}

// Releases [p, p+size), which lies in the one reservation at `base` of `reserved` bytes.
result release_in(std::uintptr_t base, std::size_t reserved, void* p, std::size_t size) noexcept {
  if (address_of(p) == base && size == reserved) {
    ::AcquireSRWLockExclusive(&g_partial_lock);
    if (partial* e = find_partial(base)) e->base = 1;  // released whole after all (its parts were never counted)
    ::ReleaseSRWLockExclusive(&g_partial_lock);
    return ::VirtualFree(p, 0, MEM_RELEASE) ? result::ok : from_last_error();
  }
  // Decommitting pages that are reserved only (a reservation's room, or pages decommitted before) is no error.
  if (!::VirtualFree(p, size, MEM_DECOMMIT)) return from_last_error();
  bool whole = false;
  ::AcquireSRWLockExclusive(&g_partial_lock);
  partial* e = find_partial(base);
  if (e == nullptr) e = add_partial(base, reserved);
  if (e != nullptr) {
    e->released += size;
    if (e->released >= e->size) {
      e->base = 1;
      whole = true;
    }
  }
  ::ReleaseSRWLockExclusive(&g_partial_lock);
  // With no room in the table the part stays decommitted and its reservation is never released: address space only.
  if (whole) ::VirtualFree(pointer_to(base), 0, MEM_RELEASE);
  return result::ok;
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = read_page_size();
  return size;
}

// Transparent huge pages have no Windows counterpart (large pages are a privilege, locked in memory): none.
std::size_t huge_page_size() noexcept { return 0; }

capabilities port::port_capabilities() noexcept {
  capabilities c;
  c.partial_release = true;                // a part is decommitted; its reservation goes when all of it has
  c.release_returns_address_space = false;  // ... so a part's address space stays taken until then
  c.reserve = true;                        // MEM_RESERVE, then MEM_COMMIT and MEM_DECOMMIT
  c.lazy_purge = true;                     // MEM_RESET
  c.sparse_map = false;                    // every committed page is charged against the commit limit
  c.extend_in_place = false;               // a reservation cannot grow; a neighbour would be another reservation
  return c;
}

void* map(std::size_t size) noexcept {
  if (size == 0 || port::injected_failure()) return nullptr;
  void* p = ::VirtualAlloc(nullptr, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p == nullptr) return nullptr;
  port::note_mapped(static_cast<std::ptrdiff_t>(size));
  return p;
}

void* map_sparse(std::size_t) noexcept { return nullptr; }  // capabilities::sparse_map is false

void* reserve(std::size_t size) noexcept {
  if (size == 0 || port::injected_failure()) return nullptr;
  void* p = ::VirtualAlloc(nullptr, size, MEM_RESERVE, PAGE_NOACCESS);
  if (p == nullptr) return nullptr;
  port::note_mapped(static_cast<std::ptrdiff_t>(size));
  return p;
}

result commit(void* p, std::size_t size) noexcept {
  if (port::injected_failure()) return result::out_of_memory;
  return each_reservation(p, size, [](void* q, std::size_t n) {
    return ::VirtualAlloc(q, n, MEM_COMMIT, PAGE_READWRITE) != nullptr ? result::ok : from_last_error();
  });
}

result decommit(void* p, std::size_t size) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
  return each_reservation(p, size, [](void* q, std::size_t n) {
    return ::VirtualFree(q, n, MEM_DECOMMIT) ? result::ok : from_last_error();
  });
}

result purge(void* p, std::size_t size, purge_kind kind) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
  return each_reservation(p, size, [kind](void* q, std::size_t n) {
    if (kind == purge_kind::lazy)  // the pages' contents may go; they stay committed and usable
      return ::VirtualAlloc(q, n, MEM_RESET, PAGE_READWRITE) != nullptr ? result::ok : from_last_error();
    // Eager: decommit and commit again, so the range reads as zero (commit may fail under memory pressure: the range
    // is then inaccessible, and the caller is told).
    if (!::VirtualFree(q, n, MEM_DECOMMIT)) return from_last_error();
    return ::VirtualAlloc(q, n, MEM_COMMIT, PAGE_READWRITE) != nullptr ? result::ok : result::out_of_memory;
  });
}

result release(void* p, std::size_t size) noexcept {
  std::uintptr_t a = address_of(p);
  const std::uintptr_t end = a + size;
  while (a < end) {
    std::uintptr_t base;
    std::size_t reserved;
    if (!reservation_of(pointer_to(a), base, reserved)) return result::invalid_argument;
    std::size_t piece = base + reserved - a;
    if (piece > end - a) piece = end - a;
    const result r = release_in(base, reserved, pointer_to(a), piece);
    if (r != result::ok) return r;
    port::note_mapped(-static_cast<std::ptrdiff_t>(piece));
    a += piece;
  }
  return result::ok;
}

result extend_in_place(void*, std::size_t, std::size_t) noexcept { return result::unsupported; }

result advise_huge_pages(void*, std::size_t, bool) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
  return result::unsupported;
}

std::size_t process_resident_bytes() noexcept {
  PROCESS_MEMORY_COUNTERS counters;
  if (!::K32GetProcessMemoryInfo(::GetCurrentProcess(), &counters, sizeof(counters))) return 0;
  return static_cast<std::size_t>(counters.WorkingSetSize);
}

bool at_fork(void (*)(), void (*)(), void (*)()) noexcept { return false; }  // no fork on Windows

std::size_t address_space_limit() noexcept { return SIZE_MAX; }

// RtlCaptureStackBackTrace walks the stack with the unwind tables of the loaded images: no memory, no loading.
std::size_t capture_stack(void** out, std::size_t max) noexcept {
  if (max == 0) return 0;
  if (max > 64) max = 64;
  // Skip capture_stack's own frame: the first address is the return address into its caller.
  return static_cast<std::size_t>(::RtlCaptureStackBackTrace(1, static_cast<DWORD>(max), out, nullptr));
}

namespace {
// The file names of the modules describe_address has met, kept for as long as the process runs (os.hpp: the strings
// stay valid while the object stays loaded). A module's file name is read once, into this table.
struct module_name {
  std::uintptr_t base;
  char path[MAX_PATH];
};
constexpr std::size_t module_slots = 64;
module_name g_modules[module_slots];
std::atomic<std::size_t> g_module_count{0};
SRWLOCK g_module_lock = SRWLOCK_INIT;
}  // namespace

namespace {
// The exported symbol of the loaded image at `base` nearest at or below `address` (as dladdr finds it on Linux): the
// image's export directory read in place, no memory taken. False when the image exports nothing below it.
bool nearest_export(std::uintptr_t base, std::uintptr_t address, code_location& out) noexcept {
  const auto* dos = reinterpret_cast<const IMAGE_DOS_HEADER*>(base);
  if (dos->e_magic != IMAGE_DOS_SIGNATURE) return false;
  const auto* nt = reinterpret_cast<const IMAGE_NT_HEADERS*>(base + static_cast<std::uintptr_t>(dos->e_lfanew));
  if (nt->Signature != IMAGE_NT_SIGNATURE ||
      nt->OptionalHeader.NumberOfRvaAndSizes <= IMAGE_DIRECTORY_ENTRY_EXPORT)
    return false;
  const IMAGE_DATA_DIRECTORY& dir = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
  if (dir.VirtualAddress == 0 || dir.Size == 0) return false;
  const auto* exports = reinterpret_cast<const IMAGE_EXPORT_DIRECTORY*>(base + dir.VirtualAddress);
  const auto* functions = reinterpret_cast<const DWORD*>(base + exports->AddressOfFunctions);
  const auto* names = reinterpret_cast<const DWORD*>(base + exports->AddressOfNames);
  const auto* ordinals = reinterpret_cast<const WORD*>(base + exports->AddressOfNameOrdinals);
  const std::uintptr_t rva = address - base;
  DWORD best = 0;
  const char* best_name = nullptr;
  for (DWORD i = 0; i < exports->NumberOfNames; ++i) {
    if (ordinals[i] >= exports->NumberOfFunctions) continue;
    const DWORD f = functions[ordinals[i]];
    if (f >= dir.VirtualAddress && f < dir.VirtualAddress + dir.Size) continue;  // forwarded to another image
    if (f <= rva && (best_name == nullptr || f > best)) {
      best = f;
      best_name = reinterpret_cast<const char*>(base + names[i]);
    }
  }
  if (best_name == nullptr) return false;
  // Export tables give no sizes: the symbol must start the function holding the address (the unwind table's entry
  // for it), or a function that exports nothing would be named after the exported one below it.
  DWORD64 image = 0;
  if (const RUNTIME_FUNCTION* f = ::RtlLookupFunctionEntry(static_cast<DWORD64>(address), &image, nullptr))
    if (image == base && best < f->BeginAddress) return false;
  out.symbol = best_name;
  out.symbol_address = base + best;
  return true;
}
}  // namespace

// Exported symbols only, from the image's export table (a program's own functions need -Wl,--export-all-symbols),
// as dladdr names them on Linux; no debug help library (it allocates).
bool describe_address(const void* address, code_location& out) noexcept {
  HMODULE module = nullptr;
  if (!::GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            static_cast<LPCSTR>(address), &module))
    return false;
  out = code_location{};
  out.object_base = address_of(module);
  (void)nearest_export(out.object_base, address_of(address), out);
  ::AcquireSRWLockExclusive(&g_module_lock);
  const std::size_t n = g_module_count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i)
    if (g_modules[i].base == out.object_base) out.object = g_modules[i].path;
  if (out.object == nullptr && n < module_slots &&
      ::GetModuleFileNameA(module, g_modules[n].path, MAX_PATH) != 0) {
    g_modules[n].base = out.object_base;
    out.object = g_modules[n].path;
    g_module_count.store(n + 1, std::memory_order_relaxed);
  }
  ::ReleaseSRWLockExclusive(&g_module_lock);
  return true;
}

namespace {
std::atomic<void (*)(const void*)> g_explain{nullptr};
PVOID g_fault_handler = nullptr;

LONG CALLBACK on_exception(EXCEPTION_POINTERS* e) {
  const EXCEPTION_RECORD* r = e->ExceptionRecord;
  if (r->ExceptionCode == EXCEPTION_ACCESS_VIOLATION || r->ExceptionCode == EXCEPTION_IN_PAGE_ERROR) {
    // ExceptionInformation[1]: the address that was read or written. explain runs once: the fault then takes its
    // course (the next handler, or the end of the process).
    if (auto* explain = g_explain.exchange(nullptr))
      explain(r->NumberParameters >= 2 ? pointer_to(static_cast<std::uintptr_t>(r->ExceptionInformation[1]))
                                       : nullptr);
  }
  return EXCEPTION_CONTINUE_SEARCH;
}
}  // namespace

bool on_fault(void (*explain)(const void* address)) noexcept {
  g_explain.store(explain);
  if (g_fault_handler == nullptr) g_fault_handler = ::AddVectoredExceptionHandler(1, &on_exception);
  return g_fault_handler != nullptr;
}

void write_error(const char* text, std::size_t length) noexcept {
  HANDLE h = ::GetStdHandle(STD_ERROR_HANDLE);
  if (h == nullptr || h == INVALID_HANDLE_VALUE) return;
  while (length > 0) {
    DWORD n = 0;
    const DWORD chunk = length > 0x10000000 ? 0x10000000 : static_cast<DWORD>(length);
    if (!::WriteFile(h, text, chunk, &n, nullptr) || n == 0) return;
    text += n;
    length -= n;
  }
}

const char* environment(const char* name) noexcept { return std::getenv(name); }

// Thread-exit hooks on the threads library's keys (winpthreads, which mingw-w64's std::thread and its emulated
// thread_local variables use). Not fiber-local storage, nor a thread_local destructor: mingw-w64's thread_local
// variables are emulated (emutls), their storage is freed by a key destructor of the threads library when a thread
// ends, and both of those run after it (wine runs fiber-local callbacks late; thread_local destructors run after the
// storage they would reach is gone). Key destructors run in the order of the keys: the hooks' keys are made before
// anything in the process touches a thread_local (a constructor of the highest priority), so they run before the
// thread_local storage goes and find the thread's state whole. A thread whose value is set runs its hooks whether
// the threads library or Windows started it (winpthreads' TLS callback cleans up threads it did not start).
namespace {
constexpr int hook_slots = 8;
pthread_key_t g_keys[hook_slots];
bool g_key_made[hook_slots] = {};
std::atomic<int> g_hook_count{0};

std::atomic<void (*)(void*)> g_hooks[hook_slots];

template <int H>
void run_hook(void* value) {
  if (auto* fn = g_hooks[H].load(std::memory_order_acquire)) fn(value);
}
constexpr void (*g_runners[hook_slots])(void*) = {&run_hook<0>, &run_hook<1>, &run_hook<2>, &run_hook<3>,
                                                  &run_hook<4>, &run_hook<5>, &run_hook<6>, &run_hook<7>};

__attribute__((constructor(101))) void make_hook_keys() {
  for (int h = 0; h < hook_slots; ++h) g_key_made[h] = pthread_key_create(&g_keys[h], g_runners[h]) == 0;
}
}  // namespace

int make_thread_exit_hook(void (*fn)(void*)) noexcept {
  const int h = g_hook_count.fetch_add(1);
  if (h >= hook_slots || !g_key_made[h]) return -1;
  g_hooks[h].store(fn, std::memory_order_release);
  return h;
}

bool arm_thread_exit_hook(int h, void* value) noexcept {
  if (h < 0 || h >= hook_slots || value == nullptr || g_hooks[h].load(std::memory_order_acquire) == nullptr)
    return false;
  return pthread_setspecific(g_keys[h], value) == 0;
}

void drop_thread_exit_hook(int h) noexcept {
  if (h >= 0 && h < hook_slots) g_hooks[h].store(nullptr, std::memory_order_release);
}

}  // namespace strata::os
