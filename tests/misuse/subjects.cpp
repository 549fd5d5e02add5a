// SPDX-License-Identifier: MIT
// tests/misuse/subjects.cpp: the allocators of the misuse matrix (its columns), each behind misuse::heap, and the
// handlers that turn their reports into the child's report.
#include "matrix.hpp"

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/error.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/strata.h>
#include <strata/thread_cache_resource.hpp>

namespace misuse {
namespace {

// The alignment std::pmr::polymorphic_allocator<T> asks for an object of n bytes: 8 for the smallest, 16 (that of
// max_align_t) from 16 bytes on.
std::size_t alignment_for(std::size_t n) noexcept { return n < 16 ? 8 : 16; }

// A C allocation's failure as the table says it: "NULL, ENOMEM".
const char* errno_text(void* p) noexcept {
  if (p != nullptr) return "a block";
  return errno == ENOMEM ? "NULL, ENOMEM" : errno == EINVAL ? "NULL, EINVAL" : "NULL, another errno";
}

// The harness's objects in a child: static memory, so that they are not in the heap under test (libstrata-malloc is
// the process's malloc) and not next to its blocks. One per process: each case and figure runs in a child of its own.
template <class H, class... Args>
heap& make_here(Args&&... args) {
  alignas(64) static unsigned char storage[sizeof(H)];
  return *new (storage) H(std::forward<Args>(args)...);
}

// The bytes a request occupies, and the explicit check, where resources differ.
std::size_t rounded(strata::page_resource&, std::size_t n) { return strata::page_resource::round_size(n); }
std::size_t rounded(strata::debug_resource&, std::size_t n) { return n; }
// An arena's block is the bytes asked for; the next one starts at the next aligned address.
std::size_t rounded(strata::arena_resource&, std::size_t n) { return n; }
std::size_t rounded(strata::synchronized_arena_resource&, std::size_t n) { return n; }
template <class R>
std::size_t rounded(R& r, std::size_t n) {
  return r.round_size(n, alignment_for(n));
}

void run_check(strata::debug_resource& r) {
  (void)r.check_all();
  (void)r.check_invariants();
}
template <class R>
void run_check(R& r) {
  (void)r.check_invariants();
}

// A strata resource, through std::pmr::memory_resource.
template <class R>
class resource_heap final : public heap {
 public:
  template <class... Args>
  explicit resource_heap(Args&&... args) : r_(std::forward<Args>(args)...) {}
  void* allocate(std::size_t n) override { return r_.allocate(n, alignment_for(n)); }
  void deallocate(void* p, std::size_t n) override { r_.deallocate(p, n, alignment_for(n)); }
  std::size_t block_size(void*, std::size_t n) override { return rounded(r_, n); }
  void check() override { run_check(r_); }
  const char* impossible(std::size_t n) override {
    try {
      (void)r_.allocate(n, alignment_for(n));
      return "a block";
    } catch (const std::bad_alloc&) {
      return "bad_alloc";
    } catch (const std::invalid_argument&) {
      return "invalid_argument";
    } catch (const std::exception&) {
      return "another exception";
    }
  }

 private:
  R r_;
};

template <class R, class... Args>
heap& make_resource(Args&&... args) {
  return make_here<resource_heap<R>>(std::forward<Args>(args)...);
}

template <class R>
heap& make_pool(std::size_t size, strata::check_mode checks) {
  strata::fixed_pool_options o;
  o.checks = checks;
  return make_resource<R>(size, o);
}
template <class R>
heap& make_bitmap(strata::check_mode checks) {
  strata::bitmap_options o;
  o.checks = checks;
  return make_resource<R>(o);
}
template <class R>
heap& make_free_list(strata::check_mode checks) {
  strata::free_list_options o;
  o.policy = strata::fit_policy::segregated;
  o.checks = checks;
  return make_resource<R>(o);
}
heap& make_thread_cache(strata::check_mode checks) {
  strata::thread_cache_options o;
  o.checks = checks;
  return make_resource<strata::thread_cache_resource>(o);
}

// debug_resource's error callback: the report, as the process handler's.
void debug_error(const strata::debug_event& event, void*) {
  report_misuse(event.error != nullptr ? strata::to_string(event.error->kind) : "debug event");
}
heap& make_debug(strata::guard_mode guard) {
  strata::debug_options o;
  o.guard = guard;
  o.guard_bytes = std::size_t{2} << 20;  // as STRATA_DEBUG=guarded: a write up to 2 MiB past a block faults
  o.report_leaks = false;
  o.error = {&debug_error, nullptr};
  return make_resource<strata::debug_resource>(o, strata::default_page_resource());
}

// The C API's misuse handler (its kinds are error_kind's, in the same order).
void c_misuse(const strata_misuse_t* m, void*) {
  report_misuse(strata::to_string(static_cast<strata::error_kind>(m->kind)));
}

// The C API's default heap, with sized frees.
class c_heap final : public heap {
 public:
  c_heap() { strata_set_misuse_handler(&c_misuse, nullptr); }
  void* allocate(std::size_t n) override { return strata_malloc(n); }
  void deallocate(void* p, std::size_t n) override { strata_free(p, n); }
  std::size_t block_size(void*, std::size_t n) override { return strata_round_size(n); }
  void check() override { (void)strata_resource_check(strata_default_resource()); }
  const char* impossible(std::size_t n) override {
    errno = 0;
    return errno_text(strata_malloc(n));
  }
};

// libstrata-malloc's own C API (the program's copy of the C API, linked in, is another heap).
struct preloaded_api {
  decltype(&strata_set_misuse_handler) set_misuse_handler = nullptr;
  decltype(&strata_resource_check) check = nullptr;
  decltype(&strata_default_resource) default_resource = nullptr;
};
preloaded_api& preloaded() {
  static preloaded_api api = [] {
    preloaded_api a;
    const char* path = malloc_library();
    void* lib = path != nullptr ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : nullptr;
    if (lib == nullptr) return a;
    a.set_misuse_handler = reinterpret_cast<decltype(a.set_misuse_handler)>(dlsym(lib, "strata_set_misuse_handler"));
    a.check = reinterpret_cast<decltype(a.check)>(dlsym(lib, "strata_resource_check"));
    a.default_resource = reinterpret_cast<decltype(a.default_resource)>(dlsym(lib, "strata_default_resource"));
    return a;
  }();
  return api;
}

// libstrata-malloc, preloaded: the process's malloc and free.
class malloc_heap final : public heap {
 public:
  void* allocate(std::size_t n) override { return std::malloc(n); }
  void deallocate(void* p, std::size_t) override { std::free(p); }
  std::size_t block_size(void* p, std::size_t) override { return malloc_usable_size(p); }
  void check() override {
    if (preloaded().check != nullptr) (void)preloaded().check(preloaded().default_resource());
  }
  const char* impossible(std::size_t n) override {
    errno = 0;
    return errno_text(std::malloc(n));
  }
};

using strata::check_mode;
constexpr check_mode standard = check_mode::standard;
constexpr check_mode strict = check_mode::strict;

}  // namespace

void install_error_handler() {
  strata::set_error_handler(+[](const strata::error_info& info) { report_misuse(strata::to_string(info.kind)); });
}

const char* malloc_library() noexcept {
#ifdef STRATA_MISUSE_MALLOC_LIBRARY
  return STRATA_MISUSE_MALLOC_LIBRARY;
#else
  return nullptr;
#endif
}

void install_malloc_library_handler() {
  if (preloaded().set_misuse_handler == nullptr) {
    static const char message[] = "misuse matrix: libstrata-malloc is not loaded\n";
    (void)!write(2, message, sizeof message - 1);
    _exit(2);
  }
  preloaded().set_misuse_handler(&c_misuse, nullptr);
}

const std::vector<subject>& subjects() {
  static const std::vector<subject> all = {
      {"page", "page_resource", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_resource<strata::page_resource>(); }},
      {"bitmap", "bitmap", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_bitmap<strata::bitmap_resource>(standard); }},
      {"bitmap-strict", "bitmap strict", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_bitmap<strata::bitmap_resource>(strict); }},
      {"sync-bitmap", "sync bitmap", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_bitmap<strata::synchronized_bitmap_resource>(standard); }},
      {"sync-bitmap-strict", "sync bitmap strict", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_bitmap<strata::synchronized_bitmap_resource>(strict); }},
      {"fixed-pool", "fixed pool", face::pmr, true, false, nullptr,
       [](std::size_t size) -> heap& { return make_pool<strata::fixed_pool_resource>(size, standard); }},
      {"fixed-pool-strict", "fixed pool strict", face::pmr, false, false, nullptr,
       [](std::size_t size) -> heap& { return make_pool<strata::fixed_pool_resource>(size, strict); }},
      {"sync-fixed-pool", "sync fixed pool", face::pmr, true, false, nullptr,
       [](std::size_t size) -> heap& { return make_pool<strata::synchronized_fixed_pool_resource>(size, standard); }},
      {"sync-fixed-pool-strict", "sync fixed pool strict", face::pmr, false, false, nullptr,
       [](std::size_t size) -> heap& { return make_pool<strata::synchronized_fixed_pool_resource>(size, strict); }},
      {"free-list", "free list", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_free_list<strata::free_list_resource>(standard); }},
      {"free-list-strict", "free list strict", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_free_list<strata::free_list_resource>(strict); }},
      {"sync-free-list", "sync free list", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_free_list<strata::synchronized_free_list_resource>(standard); }},
      {"thread-cache", "thread cache", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_thread_cache(standard); }},
      {"thread-cache-strict", "thread cache strict", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_thread_cache(strict); }},
      // An arena keeps no record of its blocks (a free is counted, and the last block's rolls the position back):
      // a double or invalid free is reported only when the counts show it, so it is no default-mode subject.
      {"arena", "arena", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_resource<strata::arena_resource>(); }},
      {"sync-arena", "sync arena", face::pmr, false, false, nullptr,
       [](std::size_t) -> heap& { return make_resource<strata::synchronized_arena_resource>(); }},
      {"c-heap", "C API heap", face::c_heap, true, false, "standard",
       [](std::size_t) -> heap& { return make_here<c_heap>(); }},
      {"malloc", "malloc", face::malloc, true, false, "standard",
       [](std::size_t) -> heap& { return make_here<malloc_heap>(); }},
      {"malloc-strict", "malloc strict", face::malloc, false, false, "strict",
       [](std::size_t) -> heap& { return make_here<malloc_heap>(); }},
      {"malloc-debug", "malloc STRATA_DEBUG=1", face::malloc, true, false, "standard",
       [](std::size_t) -> heap& { return make_here<malloc_heap>(); }, "1"},
      {"malloc-guarded", "malloc STRATA_DEBUG=guarded", face::malloc, false, true, "standard",
       [](std::size_t) -> heap& { return make_here<malloc_heap>(); }, "guarded"},
      {"debug", "debug", face::pmr, true, false, nullptr,
       [](std::size_t) -> heap& { return make_debug(strata::guard_mode::none); }},
      {"debug-guarded", "debug guarded", face::pmr, false, true, nullptr,
       [](std::size_t) -> heap& { return make_debug(strata::guard_mode::overflow); }},
  };
  return all;
}

const subject* find_subject(const std::string& name) {
  for (const subject& s : subjects())
    if (name == s.name) return &s;
  return nullptr;
}

}  // namespace misuse
