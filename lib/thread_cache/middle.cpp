// SPDX-License-Identifier: MIT
// lib/thread_cache/middle.cpp: the shared tier: blocks passed between heaps, the empty-block cache, and the
// mid-size free list.
#include <strata/detail/thread_cache/middle.hpp>

#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/detail/thread_cache/front.hpp>

namespace strata::detail {

namespace {
free_list_options shared_list_options(std::size_t max_shared, std::pmr::memory_resource* upstream) noexcept {
  free_list_options o;  // segregated fit, purging after 65536 frees, huge pages
  o.large_threshold = max_shared;
  // No quick lists: frees are checked at once, and usable_size() must see a freed block as free.
  o.checks = check_mode::strict;
  o.chunk_size = free_list_engine::chunk_size_for(o, capabilities_of(upstream));
  // Chunks of a huge page's size, but not advised as huge pages: a process's first mid-size request (the C++
  // runtime's exception pool, a stdio buffer) would otherwise make a whole huge page resident at its first touch.
  o.huge_pages = false;
  return o;
}
}  // namespace

tc_middle::tc_middle(std::pmr::memory_resource* upstream, std::size_t max_empty_blocks, std::size_t max_shared,
                     const void* owner, const char* name)
    : source_(upstream, {tc_block_size, max_empty_blocks, false, false, &g_front_block_map}),
      list_(shared_list_options(max_shared, upstream), upstream, owner, name) {}

tc_middle::~tc_middle() { release_all(); }

slab* tc_middle::take_abandoned(unsigned c) noexcept {
  std::lock_guard<spin_lock> g(block_lock_);
  slab* b = abandoned_[c];
  if (b == nullptr) return nullptr;
  abandoned_[c] = b->next;
  if (b->next != nullptr) b->next->prev = nullptr;
  b->next = b->prev = nullptr;
  --abandoned_count_;
  front_->collect(b);  // no owner, and the lock is held: this thread acts as the owner
  return b;
}

// block_of() finds a header by rounding an address down to the block size: the source hands out blocks aligned to it.
void* tc_middle::take_empty() noexcept {
  void* base = source_.try_take();
  if (base == nullptr) {
    std::lock_guard<spin_lock> g(block_lock_);
    ++failed_;
  }
  return base;
}

void tc_middle::give_abandoned(slab* b) noexcept {
  std::lock_guard<spin_lock> g(block_lock_);
  b->where = slab::in_abandoned;
  b->prev = nullptr;
  b->next = abandoned_[b->size_class];
  if (b->next != nullptr) b->next->prev = b;
  abandoned_[b->size_class] = b;
  ++abandoned_count_;
}

void tc_middle::give_empty(slab* b) noexcept {
  void* base = tc_front::base_of(b);
  front_->map().clear(base, tc_block_size);
  b->tag = 0;  // no longer a block of any class: a stale free is reported as foreign
  if (source_.cache(base)) return;
  void* retired = nullptr;
  retire(base, retired);
  release_retired(retired);
}

void tc_middle::retire(void* base, void*& list) noexcept {
  front_->map().clear(base, tc_block_size);
  *static_cast<void**>(base) = list;
  list = base;
}

void tc_middle::release_retired(void* list, bool grace) noexcept {
  if (list == nullptr) return;
  if (grace && grace_ != nullptr) grace_(grace_context_);
  while (list != nullptr) {
    void* base = list;
    list = *static_cast<void**>(base);
    source_.release(base);
  }
}

void tc_middle::release_owned(slab* b) noexcept {
  void* retired = nullptr;
  {
    std::lock_guard<spin_lock> g(block_lock_);
    retire(tc_front::base_of(b), retired);
  }
  release_retired(retired, false);  // the resource is going away: no publication runs
}

void tc_middle::trim() noexcept {
  void* retired = nullptr;
  {
    std::lock_guard<spin_lock> g(block_lock_);
    for (auto& head : abandoned_) {
      for (slab* b = head; b != nullptr;) {
        slab* next = b->next;
        front_->collect(b);
        if (b->free_count == b->capacity) {
          if (b->prev != nullptr) b->prev->next = b->next;
          else head = b->next;
          if (b->next != nullptr) b->next->prev = b->prev;
          --abandoned_count_;
          b->tag = 0;
          retire(tc_front::base_of(b), retired);
        }
        b = next;
      }
    }
  }
  source_.drain_cached([&](void* base) { retire(base, retired); });
  release_retired(retired);
  std::lock_guard<spin_lock> g(list_lock_);
  list_.trim();
}

// The resource is going away: no thread uses it, no publication runs.
void tc_middle::release_all() noexcept {
  void* retired = nullptr;
  {
    std::lock_guard<spin_lock> g(block_lock_);
    for (auto& head : abandoned_) {
      while (head != nullptr) {
        slab* b = head;
        head = b->next;
        retire(tc_front::base_of(b), retired);
      }
    }
    abandoned_count_ = 0;
  }
  source_.drain_cached([&](void* base) { retire(base, retired); });
  release_retired(retired, false);
  std::lock_guard<spin_lock> g(list_lock_);
  list_.release();
}

tc_middle::block_totals tc_middle::blocks() const noexcept {
  std::lock_guard<spin_lock> g(block_lock_);
  block_totals t{};
  t.held = source_.held();
  t.empty = source_.cached();
  t.abandoned = abandoned_count_;
  for (const slab* head : abandoned_)
    for (const slab* b = head; b != nullptr; b = b->next) t.abandoned_live += b->capacity - front_->free_slots(b);
  t.upstream_allocations = source_.upstream_allocations();
  t.upstream_deallocations = source_.upstream_deallocations();
  t.failed = failed_;
  return t;
}

const char* tc_middle::check(std::size_t& blocks, std::size_t& live) const noexcept {
  std::lock_guard<spin_lock> g(block_lock_);
  std::size_t n = 0;
  for (unsigned c = 0; c < size_class_table::max_classes; ++c) {
    for (const slab* b = abandoned_[c]; b != nullptr; b = b->next) {
      ++n;
      if (const char* e = front_->check_block(b)) return e;
      if (b->size_class != c) return "abandoned block in another class's list";
      if (b->where != slab::in_abandoned) return "abandoned block marked as elsewhere";
      if (b->owner.load(std::memory_order_relaxed) != nullptr) return "abandoned block with an owner";
      if (front_->map().get(b) != tc_map_value(0, c)) return "abandoned block's class map value wrong";
      if (b->next != nullptr && b->next->prev != b) return "abandoned list links broken";
      live += b->capacity - front_->free_slots(b);
    }
  }
  if (n != abandoned_count_) return "abandoned count differs from the lists";
  if (const char* e = source_.check()) return e;
  blocks += n + source_.cached();
  return nullptr;
}

}  // namespace strata::detail
