// SPDX-License-Identifier: MIT
// lib/os/linux.cpp: the os.hpp contract on Linux (mmap, mremap, madvise, /proc; backtrace and dladdr for call
// sites). The counter and the test hooks are the portable part's (common.cpp, through port.hpp).
#include "port.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

namespace strata::os {
namespace {

result from_errno(int e) noexcept {
  switch (e) {
    case ENOMEM:
    case EAGAIN:
      return result::out_of_memory;
    case ENOSYS:
    case EOPNOTSUPP:
      return result::unsupported;
    default:
      return result::invalid_argument;
  }
}

std::size_t read_page_size() noexcept {
  long v = ::sysconf(_SC_PAGESIZE);
  return v > 0 ? static_cast<std::size_t>(v) : 4096;
}

// Reads one unsigned number from a small /proc or /sys file; 0 when absent.
std::size_t read_number(const char* path, int field) noexcept {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* s = buf;
  std::size_t value = 0;
  for (int f = 0; f <= field; ++f) {
    while (*s == ' ' || *s == '\t') ++s;
    value = 0;
    bool any = false;
    while (*s >= '0' && *s <= '9') {
      value = value * 10 + static_cast<std::size_t>(*s - '0');
      ++s;
      any = true;
    }
    if (!any) return 0;
  }
  return value;
}

std::size_t read_huge_page_size() noexcept {
  std::size_t v = read_number("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", 0);
  return v;  // 0 when the kernel has no THP
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = read_page_size();
  return size;
}

std::size_t huge_page_size() noexcept {
  static const std::size_t size = read_huge_page_size();
  return size;
}

void* map(std::size_t size) noexcept {
  if (size == 0 || port::injected_failure()) return nullptr;
  // No MAP_NORESERVE here: committed memory is charged like malloc's, so an impossible request fails now with
  // ENOMEM (a bad_alloc upstairs) rather than later with SIGBUS on first touch.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  port::note_mapped(static_cast<std::ptrdiff_t>(size));
  return p;
}

capabilities port::port_capabilities() noexcept {
  capabilities c;
  c.partial_release = true;  // munmap takes any page-aligned range
  c.release_returns_address_space = true;
  c.reserve = true;          // PROT_NONE mappings, mprotect
#ifdef MADV_FREE
  c.lazy_purge = true;  // kernels before 4.5 answer EINVAL, and purge() falls back to MADV_DONTNEED
#endif
  c.sparse_map = true;       // MAP_NORESERVE
  c.extend_in_place = true;  // mremap without MREMAP_MAYMOVE
  return c;
}

void* map_sparse(std::size_t size) noexcept {
  if (size == 0 || port::injected_failure()) return nullptr;
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  port::note_mapped(static_cast<std::ptrdiff_t>(size));
  return p;
}

void* reserve(std::size_t size) noexcept {
  if (size == 0 || port::injected_failure()) return nullptr;
  void* p = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  port::note_mapped(static_cast<std::ptrdiff_t>(size));
  return p;
}

result commit(void* p, std::size_t size) noexcept {
  if (port::injected_failure()) return result::out_of_memory;
  if (::mprotect(p, size, PROT_READ | PROT_WRITE) != 0) return from_errno(errno);
  return result::ok;
}

result decommit(void* p, std::size_t size) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
  // Replacing the range with a fresh PROT_NONE mapping drops its pages and its commit charge in one call.
  void* q = ::mmap(p, size, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return q == MAP_FAILED ? from_errno(errno) : result::ok;
}

result purge(void* p, std::size_t size, purge_kind kind) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
#ifdef MADV_FREE
  if (kind == purge_kind::lazy) {
    if (::madvise(p, size, MADV_FREE) == 0) return result::ok;
    if (errno != EINVAL) return from_errno(errno);
    // Kernels before 4.5 lack MADV_FREE: fall through to the eager form.
  }
#else
  (void)kind;
#endif
  return ::madvise(p, size, MADV_DONTNEED) == 0 ? result::ok : from_errno(errno);
}

result release(void* p, std::size_t size) noexcept {
  if (::munmap(p, size) != 0) return from_errno(errno);
  port::note_mapped(-static_cast<std::ptrdiff_t>(size));
  return result::ok;
}

result extend_in_place(void* p, std::size_t old_size, std::size_t new_size) noexcept {
  if (new_size <= old_size) return result::invalid_argument;
  if (port::injected_failure()) return result::out_of_memory;
  // Without MREMAP_MAYMOVE the kernel grows the mapping only into unmapped address space, never over a neighbour.
  void* q = ::mremap(p, old_size, new_size, 0);
  if (q == MAP_FAILED) return from_errno(errno);
  port::note_mapped(static_cast<std::ptrdiff_t>(new_size - old_size));
  return result::ok;
}

result advise_huge_pages(void* p, std::size_t size, bool enable) noexcept {
  if (port::advice_refused()) return result::out_of_memory;
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
  return ::madvise(p, size, enable ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) == 0 ? result::ok : from_errno(errno);
#else
  (void)p, (void)size, (void)enable;
  return result::unsupported;
#endif
}

std::size_t process_resident_bytes() noexcept {
  // statm: size resident shared text lib data dt, in pages.
  return read_number("/proc/self/statm", 1) * page_size();
}

bool at_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept {
  return pthread_atfork(prepare, parent, child) == 0;
}

std::size_t address_space_limit() noexcept {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  return limit.rlim_cur > SIZE_MAX ? SIZE_MAX : static_cast<std::size_t>(limit.rlim_cur);
}

// glibc's backtrace() loads libgcc_s on its first call (dlopen, which allocates); once loaded it unwinds without
// allocating. The flag stops an allocation made by that load from unwinding again on the same thread.
std::size_t capture_stack(void** out, std::size_t max) noexcept {
  static thread_local bool inside = false;
  constexpr int most = 64;
  if (inside || max == 0) return 0;
  inside = true;
  void* frames[most + 1];
  const int got = ::backtrace(frames, most + 1);
  inside = false;
  // frames[0] is capture_stack's own return address (into itself, after the call to backtrace).
  std::size_t n = got > 1 ? static_cast<std::size_t>(got - 1) : 0;
  if (n > max) n = max;
  for (std::size_t i = 0; i < n; ++i) out[i] = frames[i + 1];
  return n;
}

bool describe_address(const void* address, code_location& out) noexcept {
  Dl_info info{};
  if (::dladdr(address, &info) == 0) return false;
  out.symbol = info.dli_sname;
  out.symbol_address = reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  out.object = info.dli_fname;
  out.object_base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  return true;
}

namespace {
void (*g_explain)(const void*) = nullptr;
struct sigaction g_previous_segv {};
struct sigaction g_previous_bus {};

void on_fault_signal(int, siginfo_t* info, void*) {
  // The previous handlers first: a fault inside explain then ends the process as it would have.
  ::sigaction(SIGSEGV, &g_previous_segv, nullptr);
  ::sigaction(SIGBUS, &g_previous_bus, nullptr);
  if (g_explain != nullptr) g_explain(info->si_addr);
}
}  // namespace

bool on_fault(void (*explain)(const void* address)) noexcept {
  g_explain = explain;
  struct sigaction action {};
  action.sa_sigaction = &on_fault_signal;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  // Installed again only where another handler took over since (or a fault put the previous one back); the one it
  // replaces is never this one, or a fault would come back here for ever.
  const int signals[] = {SIGSEGV, SIGBUS};
  for (const int signal : signals) {
    struct sigaction previous {};
    if (::sigaction(signal, &action, &previous) != 0) return false;
    if ((previous.sa_flags & SA_SIGINFO) == 0 || previous.sa_sigaction != &on_fault_signal)
      (signal == SIGSEGV ? g_previous_segv : g_previous_bus) = previous;
  }
  return true;
}

void write_error(const char* text, std::size_t length) noexcept {
  while (length > 0) {
    const ssize_t n = ::write(2, text, length);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    text += n;
    length -= static_cast<std::size_t>(n);
  }
}

const char* environment(const char* name) noexcept { return std::getenv(name); }

// pthread keys: glibc keeps the values of the first 32 keys of a thread in the thread's own descriptor (setting one
// allocates nothing); later keys take a block from calloc once per 32, and setspecific fails with ENOMEM when it
// gets none. Their destructors run after the C++ thread_local destructors, and not at exit().
int make_thread_exit_hook(void (*fn)(void*)) noexcept {
  pthread_key_t key;
  if (pthread_key_create(&key, fn) != 0) return -1;
  return static_cast<int>(key);
}

bool arm_thread_exit_hook(int hook, void* value) noexcept {
  return hook >= 0 && value != nullptr && pthread_setspecific(static_cast<pthread_key_t>(hook), value) == 0;
}

void drop_thread_exit_hook(int hook) noexcept {
  if (hook >= 0) pthread_key_delete(static_cast<pthread_key_t>(hook));
}

}  // namespace strata::os
