// SPDX-License-Identifier: MIT
// lib/c_api.cpp: <strata/strata.h>, forwarding to the C++ resources. Every entry point catches every exception.
#include <strata/strata.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <type_traits>

#include <strata/bitmap_resource.hpp>
#include <strata/detail/bump_arena.hpp>
#include <strata/detail/interned.hpp>
#include <strata/detail/math.hpp>
#include <strata/error.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/thread_cache_resource.hpp>

namespace {

using strata::detail::is_power_of_two;

// ---- errors --------------------------------------------------------------------------------------------------------

thread_local strata_error_t t_last_error = STRATA_OK;
// Misuse reports the C handler has received on this thread: a call that goes on after a step of its own (realloc
// after resize) looks here to stop when that step reported misuse.
thread_local std::uint64_t t_misuse_reports = 0;

STRATA_COLD void fail(strata_error_t e) noexcept {
  t_last_error = e;
  errno = e == STRATA_EINVAL || e == STRATA_ENOTSUP ? EINVAL : ENOMEM;
}

// Runs f, turning any exception into a failure code; `none` is what the call returns then.
template <class R, class F>
R guarded(R none, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail(STRATA_ENOMEM);
  } catch (const std::invalid_argument&) {
    fail(STRATA_EINVAL);
  } catch (const std::length_error&) {
    fail(STRATA_EOVERFLOW);
  } catch (...) {  // thrown by a C++ error handler installed by the program
    fail(STRATA_EMISUSE);
  }
  return none;
}

// A C handler and its context: the context of forward_misuse, interned so that it outlives any report using it.
struct c_handler {
  strata_misuse_handler_t function;
  void* context;
  bool operator==(const c_handler& o) const noexcept { return function == o.function && context == o.context; }
};
strata::detail::interned_values<c_handler> g_c_handlers;

void forward_misuse(const strata::error_info& info, void* handler) {
  char message[512];
  strata::format_error(info, message, sizeof message);
  const strata_misuse_t m{static_cast<strata_misuse_kind_t>(info.kind),
                          info.resource_name,
                          info.pointer,
                          info.size,
                          info.alignment,
                          info.expected_size,
                          info.detail,
                          message};
  t_last_error = STRATA_EMISUSE;
  ++t_misuse_reports;
  const auto* h = static_cast<const c_handler*>(handler);
  h->function(&m, h->context);
}

// ---- sizes and alignments ------------------------------------------------------------------------------------------

// The alignment of a plain allocation: 16 from 16 bytes on, else 8. That is at least what C17 asks of malloc (any
// object of that size or smaller with a fundamental alignment fits), and every strategy's smallest block is 8-aligned
// anyway.
constexpr std::size_t plain_alignment(std::size_t size) noexcept { return size >= 16 ? 16 : 8; }
// What the default heap's malloc and free pass: a constant the fast paths fold. The heap's smallest block is 16
// bytes, so a request under 16 bytes at alignment 16 lands in the block plain_alignment() would give it, in every
// tier; at 16 bytes and more the two are the same.
constexpr std::size_t heap_alignment = 16;

// ---- handles -------------------------------------------------------------------------------------------------------

enum class kind { thread_cache, bitmap, free_list, fixed_pool, page, system };

}  // namespace

// A handle: the resource, what it is, and whether strata_resource_destroy may delete it. What only some strategies
// offer is virtual, with the "not offered" answer as the default.
struct strata_resource {
  std::pmr::memory_resource* pmr = nullptr;
  strata::resource* res = nullptr;  // nullptr for the system resource
  kind what = kind::system;
  bool owned = false;
  std::size_t align_cap = 16;  // plain allocations get at most this alignment (a fixed pool's block alignment)

  strata_resource() = default;
  strata_resource(std::pmr::memory_resource* p, strata::resource* r, kind k) noexcept : pmr(p), res(r), what(k) {}
  strata_resource(const strata_resource&) = delete;
  strata_resource& operator=(const strata_resource&) = delete;
  virtual ~strata_resource() = default;

  [[nodiscard]] strata::thread_cache_resource* thread_cache() const noexcept {
    return what == kind::thread_cache ? static_cast<strata::thread_cache_resource*>(res) : nullptr;
  }
  /// A strata resource's allocate_zeroed (it knows which memory is still zero), else allocate and clear.
  void* allocate_zeroed(std::size_t bytes, std::size_t alignment) {
    if (res != nullptr) return res->allocate_zeroed(bytes, alignment);
    void* p = pmr->allocate(bytes, alignment);
    std::memset(p, 0, bytes);
    return p;
  }
  virtual bool release() noexcept { return false; }
  virtual bool check() const noexcept { return true; }
  /// The bytes a request occupies. Throws std::length_error when that does not fit in size_t.
  [[nodiscard]] virtual std::size_t round_size(std::size_t bytes, std::size_t) const { return bytes; }
  /// Blocks a capped fixed pool holds at once.
  [[nodiscard]] virtual std::size_t capacity_blocks() const {
    throw std::invalid_argument("not a fixed pool");
  }
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

namespace {

template <class R>
struct owned_handle final : strata_resource {
  static constexpr bool is_fixed_pool = std::is_base_of_v<strata::detail::basic_fixed_pool_resource<false>, R> ||
                                        std::is_base_of_v<strata::detail::basic_fixed_pool_resource<true>, R>;
  template <class... Args>
  owned_handle(kind k, const char* n, Args&&... args) : object(std::forward<Args>(args)...), name_(n) {
    pmr = res = &object;
    what = k;
    owned = true;
    if constexpr (is_fixed_pool) {
      if (object.block_alignment() < align_cap) align_cap = object.block_alignment();
    }
  }
  bool release() noexcept override {
    if constexpr (std::is_same_v<R, strata::thread_cache_resource>) {
      return false;
    } else {
      object.release();
      return true;
    }
  }
  bool check() const noexcept override { return object.check_invariants(); }
  [[nodiscard]] const char* name() const noexcept override { return name_; }
  [[nodiscard]] std::size_t capacity_blocks() const override {
    if constexpr (is_fixed_pool) return object.capacity_blocks();
    return strata_resource::capacity_blocks();
  }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const override {
    if constexpr (is_fixed_pool) {
      const std::size_t stride = object.block_stride();
      if (bytes <= stride) return stride;
      if (bytes > SIZE_MAX - stride) throw std::length_error("size too large to round");
      return (bytes + stride - 1) / stride * stride;
    } else if constexpr (std::is_base_of_v<strata::detail::basic_free_list_resource<false>, R> ||
                         std::is_base_of_v<strata::detail::basic_free_list_resource<true>, R>) {
      return bytes <= object.large_threshold() ? R::block_size_for(bytes, alignment) : bytes;
    } else {
      return object.round_size(bytes, alignment);
    }
  }

  R object;

 private:
  const char* name_;
};

// Process-wide objects (the default heap, the persistent arena, the process-wide handles) are made on first use and
// never destroyed: atexit handlers and thread-exit destructors may still use them.
template <class R>
R& immortal() {
  alignas(R) static unsigned char storage[sizeof(R)];
  static R* const object = new (storage) R();
  return *object;
}

// The default heap, also published here so that its fast paths need no guard of a function-local static.
std::atomic<strata::thread_cache_resource*> g_heap{nullptr};

STRATA_NOINLINE strata::thread_cache_resource& make_heap() {
  auto& heap = immortal<strata::thread_cache_resource>();
  g_heap.store(&heap, std::memory_order_release);
  return heap;
}

STRATA_ALWAYS_INLINE strata::thread_cache_resource& heap() {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  return STRATA_LIKELY(h != nullptr) ? *h : make_heap();
}

struct default_handle final : strata_resource {
  default_handle() : strata_resource(&heap(), &heap(), kind::thread_cache) {}
  [[nodiscard]] const char* name() const noexcept override { return "thread_cache_resource"; }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const override {
    return heap().round_size(bytes, alignment);
  }
};
struct page_handle final : strata_resource {
  page_handle() : strata_resource(strata::default_page_resource(), strata::default_page_resource(), kind::page) {}
  [[nodiscard]] const char* name() const noexcept override { return "page_resource"; }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t) const override {
    if (bytes > strata::detail::max_request_size) throw std::length_error("size too large to round");
    return strata::page_resource::round_size(bytes);
  }
  bool check() const noexcept override { return strata::default_page_resource()->check_invariants(); }
};
struct system_handle final : strata_resource {
  system_handle() : strata_resource(std::pmr::new_delete_resource(), nullptr, kind::system) {}
  [[nodiscard]] const char* name() const noexcept override { return "new_delete_resource"; }
};

std::pmr::memory_resource* upstream_of(strata_resource_t* u) noexcept {
  return u == nullptr ? strata::default_page_resource() : u->pmr;
}

template <class R, class... Args>
strata_resource_t* create(kind k, const char* name, Args&&... args) noexcept {
  return guarded<strata_resource_t*>(nullptr, [&]() -> strata_resource_t* {
    return new owned_handle<R>(k, name, std::forward<Args>(args)...);
  });
}

// A plain request's alignment on r, and the size r is asked for: thread caches are asked for the rounded size, the
// size their blocks are known by (and counted at), which misuse reports then name.
std::size_t alignment_on(const strata_resource_t* r, std::size_t size) noexcept {
  const std::size_t a = plain_alignment(size);
  return a < r->align_cap ? a : r->align_cap;
}
std::size_t request_on(const strata_resource_t* r, std::size_t size, std::size_t alignment) noexcept {
  const strata::thread_cache_resource* tc = r->thread_cache();
  return tc != nullptr ? tc->round_size(size, alignment) : size;
}

bool valid(const strata_resource_t* r) noexcept {
  if (STRATA_LIKELY(r != nullptr)) return true;
  fail(STRATA_EINVAL);
  return false;
}
bool valid_alignment(std::size_t alignment) noexcept {
  if (STRATA_LIKELY(is_power_of_two(alignment) && alignment <= strata::detail::max_request_size)) return true;
  fail(STRATA_EINVAL);
  return false;
}

void* allocate_on(strata_resource_t* r, std::size_t size, std::size_t alignment, bool zero) noexcept {
  return guarded<void*>(nullptr, [&]() -> void* {
    const std::size_t n = request_on(r, size, alignment);
    return zero ? r->allocate_zeroed(n, alignment) : r->pmr->allocate(n, alignment);
  });
}

void free_on(strata_resource_t* r, void* p, std::size_t size, std::size_t alignment) noexcept {
  guarded(0, [&] {
    r->pmr->deallocate(p, request_on(r, size, alignment), alignment);
    return 0;
  });
}

// The in-place part of realloc: true when p can stay where it is with new_size. The resource is asked even when
// both sizes name the same block: only it can tell a live block from a freed pointer or one it never handed out.
bool resize_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  const std::size_t a_old = alignment_on(r, old_size), a_new = alignment_on(r, new_size);
  const std::size_t n_old = request_on(r, old_size, a_old), n_new = request_on(r, new_size, a_new);
  const bool aligned = reinterpret_cast<std::uintptr_t>(p) % a_new == 0;
  if (r->res == nullptr) return aligned && n_old == n_new && a_old == a_new;  // new/delete: nothing to ask
  // The block will be freed with new_size at the new size's plain alignment. Elsewhere than in a thread cache a
  // block keeps the alignment it was allocated with, so it moves. A thread cache finds a block by its rounded size
  // under the alignment it is freed with: it may stay only when the new size rounds to the very same block (then
  // only its liveness is checked); a resize to another class under the old alignment would later be freed as a
  // third one. When it cannot stay, p must still be live: a resize to the same size checks it (and reports misuse).
  if (!aligned || (a_old != a_new && (r->what != kind::thread_cache || n_old != n_new))) {
    guarded(false, [&] { return r->res->resize(p, n_old, n_old, a_old); });
    return false;
  }
  if (a_old != a_new) return guarded(false, [&] { return r->res->resize(p, n_old, n_old, a_old); });
  return guarded(false, [&] { return r->res->resize(p, n_old, n_new, a_old); });
}

void* realloc_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  if (p == nullptr) return allocate_on(r, new_size, alignment_on(r, new_size), false);
  if (new_size == 0) {
    free_on(r, p, old_size, alignment_on(r, old_size));
    return nullptr;
  }
  const std::uint64_t reports = t_misuse_reports;
  if (resize_on(r, p, old_size, new_size)) return p;
  // p is no live block (reported): nothing further, not a copy from it nor its free.
  if (t_misuse_reports != reports) return nullptr;
  void* q = allocate_on(r, new_size, alignment_on(r, new_size), false);
  if (q == nullptr) return nullptr;
  std::memcpy(q, p, old_size < new_size ? old_size : new_size);
  free_on(r, p, old_size, alignment_on(r, old_size));
  return q;
}

// The options given, or the defaults.
template <class O>
O given_or_default(const O* given, void (*init)(O*) noexcept) noexcept {
  if (given != nullptr) return *given;
  O o;
  init(&o);
  return o;
}

// A C caller's check mode into `out`; false (EINVAL) for a value that names none. Read as its underlying type: a C
// caller may have stored any int there, which a C++ enum need not hold.
bool check_mode_of(const strata_checks_t& given, strata::check_mode& out) noexcept {
  std::underlying_type_t<strata_checks_t> checks;
  std::memcpy(&checks, &given, sizeof checks);
  if (checks != STRATA_CHECKS_STANDARD && checks != STRATA_CHECKS_STRICT) {
    fail(STRATA_EINVAL);
    return false;
  }
  out = checks == STRATA_CHECKS_STRICT ? strata::check_mode::strict : strata::check_mode::standard;
  return true;
}

bool checked_product(std::size_t count, std::size_t size, std::size_t& out) noexcept {
  if (STRATA_UNLIKELY(__builtin_mul_overflow(count, size, &out))) {
    fail(STRATA_EOVERFLOW);
    return false;
  }
  return true;
}

void copy_stats(const strata::resource_stats& s, strata_stats_t* out) noexcept {
  *out = strata_stats_t{s.bytes_in_use,         s.peak_bytes_in_use,    s.bytes_held,
                        s.bytes_resident,       s.allocations,          s.deallocations,
                        s.failed_allocations,   s.upstream_allocations, s.upstream_deallocations,
                        s.free_bytes,           s.free_blocks,          s.largest_free_block};
}

struct persistent_arena : strata::detail::bump_arena {
  persistent_arena() noexcept : bump_arena(strata::default_page_resource()) {}
};
strata::detail::bump_arena& persistent() { return immortal<persistent_arena>(); }

}  // namespace

// ---- errors --------------------------------------------------------------------------------------------------------

extern "C" strata_error_t strata_last_error(void) noexcept { return t_last_error; }
extern "C" void strata_clear_error(void) noexcept { t_last_error = STRATA_OK; }

extern "C" const char* strata_error_string(strata_error_t error) noexcept {
  switch (error) {
    case STRATA_OK: return "no error";
    case STRATA_ENOMEM: return "out of memory";
    case STRATA_EOVERFLOW: return "size overflow";
    case STRATA_EINVAL: return "invalid argument";
    case STRATA_ENOTSUP: return "not supported by this strategy";
    case STRATA_EMISUSE: return "misuse detected";
  }
  return "unknown error";
}

extern "C" void strata_set_misuse_handler(strata_misuse_handler_t handler, void* context) noexcept {
  // The C++ handler carries the C one with its context: a report calls a matching pair, also while another thread
  // sets a new one. Out of memory for the pair: the default handler.
  const c_handler* h = handler != nullptr ? g_c_handlers.get(c_handler{handler, context}) : nullptr;
  strata::set_error_handler(h != nullptr ? strata::error_handler(&forward_misuse, const_cast<c_handler*>(h))
                                         : strata::error_handler());
}

// ---- the default heap ----------------------------------------------------------------------------------------------

// The first call of the process: makes the heap, then does the call (a tail call, so that the fast paths below keep
// no frame of their own).
STRATA_NOINLINE void* first_malloc(std::size_t size) noexcept {
  make_heap();
  return strata_malloc(size);
}
STRATA_NOINLINE void first_free(void* p, std::size_t size) noexcept {
  make_heap();
  strata_free(p, size);
}

extern "C" void* strata_malloc(size_t size) noexcept {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  if (STRATA_UNLIKELY(h == nullptr)) return first_malloc(size);
  return guarded<void*>(nullptr, [&] { return h->allocate_rounded(size, heap_alignment); });
}

extern "C" void strata_free(void* p, size_t size) noexcept {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  if (STRATA_UNLIKELY(h == nullptr)) return first_free(p, size);
  if (p != nullptr) h->deallocate_rounded(p, size, heap_alignment);  // noexcept: nothing to catch
}

extern "C" void* strata_calloc(size_t count, size_t size) noexcept {
  std::size_t n;
  if (!checked_product(count, size, n)) return nullptr;
  return allocate_on(&immortal<default_handle>(), n, plain_alignment(n), true);
}

extern "C" void* strata_realloc(void* p, size_t old_size, size_t new_size) noexcept {
  return realloc_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" bool strata_resize(void* p, size_t old_size, size_t new_size) noexcept {
  return p != nullptr && resize_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" size_t strata_round_size(size_t size) noexcept { return heap().round_size(size, plain_alignment(size)); }

extern "C" void* strata_malloc_aligned(size_t size, size_t alignment) noexcept {
  if (!valid_alignment(alignment)) return nullptr;
  strata::thread_cache_resource& h = heap();
  return guarded<void*>(nullptr, [&] { return h.allocate_rounded(size, alignment); });
}

extern "C" void strata_free_aligned(void* p, size_t size, size_t alignment) noexcept {
  if (p == nullptr || !valid_alignment(alignment)) return;
  strata::thread_cache_resource& h = heap();
  guarded(0, [&] {
    h.deallocate_rounded(p, size, alignment);
    return 0;
  });
}

extern "C" size_t strata_usable_size(const void* p) noexcept {
  return p == nullptr ? 0 : guarded<std::size_t>(0, [&] { return heap().usable_size(p); });
}

extern "C" void strata_free_unsized(void* p) noexcept {
  if (p != nullptr) guarded<std::size_t>(0, [&] { return heap().deallocate_unsized(p); });
}

extern "C" void* strata_realloc_unsized(void* p, size_t new_size) noexcept {
  if (p == nullptr) return strata_malloc(new_size);
  const std::size_t old_size = strata_usable_size(p);
  if (old_size == 0) return nullptr;  // reported as misuse
  return realloc_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" strata_tier_t strata_tier_of(size_t size) noexcept {
  return static_cast<strata_tier_t>(heap().tier_of(size, plain_alignment(size)));
}
extern "C" size_t strata_tier_min_size(strata_tier_t tier) noexcept {
  return heap().min_size(static_cast<strata::cache_tier>(tier));
}
extern "C" size_t strata_tier_max_size(strata_tier_t tier) noexcept {
  return heap().max_size(static_cast<strata::cache_tier>(tier));
}

extern "C" bool strata_stats(strata_stats_t* out) noexcept {
  return strata_resource_stats(&immortal<default_handle>(), out);
}

extern "C" void strata_trim(void) noexcept { heap().trim(); }

extern "C" void strata_thread_cleanup(void) noexcept {
  if (strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire)) h->release_thread_cache();
}

// ---- persistent allocation -----------------------------------------------------------------------------------------

extern "C" void* strata_persistent_malloc(size_t size) noexcept {
  return guarded<void*>(nullptr, [&] { return persistent().allocate(size, plain_alignment(size)); });
}
extern "C" void strata_persistent_cleanup(void) noexcept { persistent().release(); }
extern "C" bool strata_persistent_stats(strata_stats_t* out) noexcept {
  if (out == nullptr) {
    fail(STRATA_EINVAL);
    return false;
  }
  copy_stats(persistent().stats(), out);
  return true;
}

// ---- handles -------------------------------------------------------------------------------------------------------

extern "C" strata_resource_t* strata_default_resource(void) noexcept { return &immortal<default_handle>(); }
extern "C" strata_resource_t* strata_page_resource(void) noexcept { return &immortal<page_handle>(); }
extern "C" strata_resource_t* strata_system_resource(void) noexcept { return &immortal<system_handle>(); }

extern "C" void strata_bitmap_options_init(strata_bitmap_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::bitmap_options d;
  *o = strata_bitmap_options_t{d.block_size,       d.max_small_size, d.natural_alignment,
                               d.max_empty_blocks, false,            nullptr,
                               STRATA_CHECKS_STANDARD};
}

extern "C" strata_resource_t* strata_bitmap_create(const strata_bitmap_options_t* options) noexcept {
  const strata_bitmap_options_t o = given_or_default(options, strata_bitmap_options_init);
  strata::check_mode checks;
  if (!check_mode_of(o.checks, checks)) return nullptr;
  const strata::bitmap_options opts{o.block_size, o.max_small_size, o.natural_alignment, o.max_empty_blocks, checks};
  return o.synchronized
             ? create<strata::synchronized_bitmap_resource>(kind::bitmap, "synchronized_bitmap_resource", opts,
                                                            upstream_of(o.upstream))
             : create<strata::bitmap_resource>(kind::bitmap, "bitmap_resource", opts, upstream_of(o.upstream));
}

extern "C" void strata_free_list_options_init(strata_free_list_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::free_list_options d;
  *o = strata_free_list_options_t{STRATA_FIT_SEGREGATED, d.chunk_size,      d.large_threshold, d.max_empty_chunks,
                                  d.purge_threshold,     d.purge_delay,     d.huge_pages,      false,
                                  nullptr};
}

extern "C" strata_resource_t* strata_free_list_create(const strata_free_list_options_t* options) noexcept {
  const strata_free_list_options_t o = given_or_default(options, strata_free_list_options_init);
  // The field may hold any int a C caller put there, which is no valid value of the enum in C++: read it as an int.
  std::underlying_type_t<strata_fit_t> fit;
  std::memcpy(&fit, &o.fit, sizeof fit);
  strata::fit_policy policy;
  switch (fit) {
    case STRATA_FIT_SEGREGATED: policy = strata::fit_policy::segregated; break;
    case STRATA_FIT_FIRST: policy = strata::fit_policy::first_fit; break;
    case STRATA_FIT_NEXT: policy = strata::fit_policy::next_fit; break;
    case STRATA_FIT_BEST: policy = strata::fit_policy::best_fit; break;
    default: fail(STRATA_EINVAL); return nullptr;
  }
  const strata::free_list_options opts{policy,        o.chunk_size,      o.large_threshold, o.max_empty_chunks,
                                       o.purge_threshold, o.purge_delay, o.huge_pages};
  return o.synchronized ? create<strata::synchronized_free_list_resource>(
                              kind::free_list, "synchronized_free_list_resource", opts, upstream_of(o.upstream))
                        : create<strata::free_list_resource>(kind::free_list, "free_list_resource", opts,
                                                             upstream_of(o.upstream));
}

extern "C" void strata_fixed_pool_options_init(strata_fixed_pool_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::fixed_pool_options d;
  *o = strata_fixed_pool_options_t{d.chunk_size, d.forward_large, d.max_empty_chunks, d.huge_pages, false, nullptr};
}

extern "C" strata_resource_t* strata_fixed_pool_create(size_t block_size, size_t capacity,
                                                       const strata_fixed_pool_options_t* options) noexcept {
  const strata_fixed_pool_options_t o = given_or_default(options, strata_fixed_pool_options_init);
  const strata::fixed_pool_options opts{capacity, o.chunk_size, o.forward_large, o.max_empty_chunks, o.huge_pages};
  return o.synchronized
             ? create<strata::synchronized_fixed_pool_resource>(kind::fixed_pool, "synchronized_fixed_pool_resource",
                                                                block_size, opts, upstream_of(o.upstream))
             : create<strata::fixed_pool_resource>(kind::fixed_pool, "fixed_pool_resource", block_size, opts,
                                                   upstream_of(o.upstream));
}

extern "C" void strata_thread_cache_options_init(strata_thread_cache_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::thread_cache_options d;
  *o = strata_thread_cache_options_t{d.max_small_size, d.max_shared_size, d.max_empty_blocks, nullptr,
                                     STRATA_CHECKS_STANDARD};
}

extern "C" strata_resource_t* strata_thread_cache_create(const strata_thread_cache_options_t* options) noexcept {
  const strata_thread_cache_options_t o = given_or_default(options, strata_thread_cache_options_init);
  strata::check_mode checks;
  if (!check_mode_of(o.checks, checks)) return nullptr;
  const strata::thread_cache_options opts{o.max_small_size, o.max_shared_size, o.max_empty_blocks, checks};
  return create<strata::thread_cache_resource>(kind::thread_cache, "thread_cache_resource", opts,
                                               upstream_of(o.upstream));
}

extern "C" void strata_resource_destroy(strata_resource_t* r) noexcept {
  if (r == nullptr) return;
  if (!r->owned) return fail(STRATA_EINVAL);
  delete r;
}

extern "C" bool strata_resource_release(strata_resource_t* r) noexcept {
  if (!valid(r)) return false;
  if (r->owned && r->release()) return true;
  fail(STRATA_ENOTSUP);
  return false;
}

extern "C" void* strata_resource_malloc(strata_resource_t* r, size_t size) noexcept {
  return valid(r) ? allocate_on(r, size, alignment_on(r, size), false) : nullptr;
}

extern "C" void* strata_resource_calloc(strata_resource_t* r, size_t count, size_t size) noexcept {
  std::size_t n;
  if (!valid(r) || !checked_product(count, size, n)) return nullptr;
  return allocate_on(r, n, alignment_on(r, n), true);
}

extern "C" void* strata_resource_realloc(strata_resource_t* r, void* p, size_t old_size, size_t new_size) noexcept {
  return valid(r) ? realloc_on(r, p, old_size, new_size) : nullptr;
}

extern "C" bool strata_resource_resize(strata_resource_t* r, void* p, size_t old_size, size_t new_size) noexcept {
  return valid(r) && p != nullptr && resize_on(r, p, old_size, new_size);
}

extern "C" void strata_resource_free(strata_resource_t* r, void* p, size_t size) noexcept {
  if (p != nullptr && valid(r)) free_on(r, p, size, alignment_on(r, size));
}

extern "C" void* strata_resource_malloc_aligned(strata_resource_t* r, size_t size, size_t alignment) noexcept {
  return valid(r) && valid_alignment(alignment) ? allocate_on(r, size, alignment, false) : nullptr;
}

extern "C" void strata_resource_free_aligned(strata_resource_t* r, void* p, size_t size, size_t alignment) noexcept {
  if (p != nullptr && valid(r) && valid_alignment(alignment)) free_on(r, p, size, alignment);
}

extern "C" size_t strata_resource_round_size(strata_resource_t* r, size_t size) noexcept {
  return valid(r) ? guarded<std::size_t>(0, [&] { return r->round_size(size, alignment_on(r, size)); }) : 0;
}

extern "C" size_t strata_fixed_pool_capacity(strata_resource_t* pool) noexcept {
  return valid(pool) ? guarded<std::size_t>(0, [&] { return pool->capacity_blocks(); }) : 0;
}

extern "C" size_t strata_resource_usable_size(strata_resource_t* r, const void* p) noexcept {
  if (!valid(r) || p == nullptr) return 0;
  if (strata::thread_cache_resource* tc = r->thread_cache()) {
    return guarded<std::size_t>(0, [&] { return tc->usable_size(p); });
  }
  fail(STRATA_ENOTSUP);
  return 0;
}

extern "C" void strata_resource_free_unsized(strata_resource_t* r, void* p) noexcept {
  if (!valid(r) || p == nullptr) return;
  if (strata::thread_cache_resource* tc = r->thread_cache()) {
    guarded<std::size_t>(0, [&] { return tc->deallocate_unsized(p); });
    return;
  }
  fail(STRATA_ENOTSUP);
}

extern "C" bool strata_resource_stats(strata_resource_t* r, strata_stats_t* out) noexcept {
  if (!valid(r)) return false;
  if (out == nullptr) {
    fail(STRATA_EINVAL);
    return false;
  }
  if (r->res == nullptr) {
    fail(STRATA_ENOTSUP);
    return false;
  }
  copy_stats(r->res->stats(), out);
  return true;
}

extern "C" bool strata_resource_check(strata_resource_t* r) noexcept {
  return valid(r) && guarded(false, [&] { return r->check(); });
}

extern "C" const char* strata_resource_name(strata_resource_t* r) noexcept {
  return valid(r) ? r->name() : "(null)";
}

extern "C" void strata_resource_thread_cleanup(strata_resource_t* r) noexcept {
  if (!valid(r)) return;
  if (strata::thread_cache_resource* tc = r->thread_cache()) return tc->release_thread_cache();
  fail(STRATA_ENOTSUP);
}
