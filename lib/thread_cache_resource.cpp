// SPDX-License-Identifier: MIT
// lib/thread_cache_resource.cpp: the pmr face of detail::thread_cache_engine.
#include <strata/thread_cache_resource.hpp>

#include <stdexcept>

#include <strata/page_resource.hpp>

#include <strata/detail/core/math.hpp>

namespace strata {

namespace {
thread_cache_options validated(thread_cache_options o) {
  if (o.max_small_size == 0) o.max_small_size = std::size_t{8} << 10;
  if (o.max_shared_size == 0) o.max_shared_size = std::size_t{256} << 10;
  if (o.checks != check_mode::standard && o.checks != check_mode::strict)
    throw std::invalid_argument("thread_cache_resource: checks must be check_mode::standard or check_mode::strict");
  if (o.max_small_size > (std::size_t{8} << 10))
    throw std::invalid_argument("thread_cache_resource: max_small_size must be at most 8 KiB");
  if (o.max_shared_size < o.max_small_size)
    throw std::invalid_argument("thread_cache_resource: max_shared_size must be at least max_small_size");
  // The thread tier's bound becomes a multiple of 16 (at least 16); the shared tier's follows, so that a request of
  // the shared tier, rounded up to its granule, still names the shared tier when it is freed.
  const std::size_t small = detail::align_up(o.max_small_size < 16 ? 16 : o.max_small_size, 16);
  o.max_shared_size = detail::align_up(o.max_shared_size < small ? small : o.max_shared_size, 16);
  return o;
}
}  // namespace

thread_cache_resource::thread_cache_resource(const options& opts, std::pmr::memory_resource* upstream)
    : opts_(validated(opts)),
      engine_(opts_, upstream, this) {}

thread_cache_resource::~thread_cache_resource() = default;

cache_tier thread_cache_resource::tier_of(std::size_t bytes, std::size_t alignment) const noexcept {
  return engine_.tier_of(bytes, alignment);
}

std::size_t thread_cache_resource::min_size(cache_tier t) const noexcept {
  switch (t) {
    case cache_tier::thread: return 1;
    case cache_tier::shared: return engine_.max_small() + 1;
    default: return engine_.max_shared() + 1;
  }
}

std::size_t thread_cache_resource::max_size(cache_tier t) const noexcept {
  switch (t) {
    case cache_tier::thread: return engine_.max_small();
    case cache_tier::shared: return engine_.max_shared();
    default: return detail::max_request_size;
  }
}

std::size_t thread_cache_resource::usable_size(const void* p) const noexcept {
  const std::size_t n = engine_.usable_size(p);
  // What this says is usable is, as the contract says: addressable for ASan; for memcheck, the block's size.
  if (n != 0) {
    if constexpr (detail::san::address_sanitizer) detail::san::unpoison(p, n);
    using call = detail::san::tracked_call;
    call(this).resized(const_cast<void*>(p), call::unknown_size, n, n);
  }
  return n;
}
void thread_cache_resource::trim() noexcept { engine_.trim(); }
std::size_t thread_cache_resource::heap_count() const noexcept { return engine_.heap_count(); }
resource_stats thread_cache_resource::tier_stats(cache_tier t) const noexcept {
  return engine_.tier_stats(t);
}
bool thread_cache_resource::check_invariants() const noexcept { return engine_.check_invariants(); }

// The page resource's lock is the innermost (it calls nothing that locks): taken last, given back first.
void thread_cache_resource::prepare_fork() noexcept {
  engine_.prepare_fork();
  if (auto* page = dynamic_cast<page_resource*>(engine_.upstream())) page->prepare_fork();
}
void thread_cache_resource::after_fork_parent() noexcept {
  if (auto* page = dynamic_cast<page_resource*>(engine_.upstream())) page->after_fork();
  engine_.after_fork_parent();
}
void thread_cache_resource::after_fork_child() noexcept {
  if (auto* page = dynamic_cast<page_resource*>(engine_.upstream())) page->after_fork();
  engine_.after_fork_child();
}
std::pmr::memory_resource* thread_cache_resource::do_upstream_resource() const noexcept { return engine_.upstream(); }
void thread_cache_resource::do_inspect(inspector& v, unsigned what) const { engine_.inspect(v, what); }
const thread_cache_resource::options& thread_cache_resource::get_options() const noexcept { return opts_; }

// (Built for Valgrind: `call` describes each block to memcheck; nothing otherwise.)
void* thread_cache_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  const detail::san::tracked_call call(this);
  return call.allocated(detail::san::handed_out(engine_.allocate(bytes, alignment), bytes), bytes);
}
void thread_cache_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  detail::san::tracked_call(this).freeing(p);
  engine_.deallocate(p, bytes, alignment);
}
bool thread_cache_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  if (!engine_.resize(p, old_size, new_size, alignment)) return false;
  // ASan builds: an object of the thread tier stays in its slot; exactly new_size bytes of it are addressable.
  if constexpr (detail::san::address_sanitizer)
    if (tier_of(old_size, alignment) == cache_tier::thread)
      detail::san::resized(p, round_size(old_size, alignment), new_size);
  detail::san::tracked_call(this).resized(p, old_size, new_size);  // Valgrind builds
  return true;
}
resource_stats thread_cache_resource::do_stats() const noexcept { return engine_.stats(); }

// Out of line: the engine's code is the library's own (a shared libstrata exports the public classes only).
std::size_t thread_cache_resource::resize_small(void* p, std::size_t new_size, std::size_t alignment,
                                                bool& stays) const noexcept {
  return engine_.resize_small(p, new_size, alignment, stays);
}

void thread_cache_resource::release_thread_cache() noexcept { engine_.release_thread_heap(); }

void thread_cache_resource::release() noexcept {
  engine_.release();
  detail::san::pool_emptied(this);  // Valgrind builds: every block gone
}

}  // namespace strata
