// SPDX-License-Identifier: MIT
// lib/thread_cache/middle.cpp: the shared tier: blocks passed between heaps, the empty-block cache, and the
// mid-size free list.
#include <strata/detail/thread_cache/middle.hpp>

#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/stats_sum.hpp>
#include <strata/error.hpp>
#include <strata/detail/thread_cache/front.hpp>

#include <new>

namespace strata::detail {

namespace {
free_list_options shared_list_options(std::size_t max_shared, std::pmr::memory_resource* upstream) noexcept {
  free_list_options o;  // segregated fit, purging after 65536 frees, huge pages
  o.large_threshold = max_shared;
  // Quick lists, for the class sizes from 8 KiB to 32 KiB (see free_list_engine::class_sizes): a free pushes the
  // block on its size's list and an allocation of the class pops it, with no split and no merge. A block waiting
  // there is free to usable_size() and to every check (its node words mark it).
  o.checks = check_mode::standard;
  o.chunk_size = free_list_engine::chunk_size_for(o, capabilities_of(upstream));
  // Chunks of a huge page's size, but not advised as huge pages: a process's first mid-size request (the C++
  // runtime's exception pool, a stdio buffer) would otherwise make a whole huge page resident at its first touch.
  o.huge_pages = false;
  return o;
}
}  // namespace

tc_middle::tc_middle(std::pmr::memory_resource* upstream, std::size_t max_empty_blocks, std::uint32_t decay_ms,
                     std::size_t max_shared, const void* owner, const char* name)
    : source_(upstream, {tc_block_size, max_empty_blocks, false, false, &g_front_block_map,
                         decay_ms == 0 ? 0 : max_empty_blocks * empty_burst_factor, decay_ms}),
      upstream_(upstream),
      owner_(owner),
      name_(name),
      max_shared_(free_list_engine::large_threshold_for(shared_list_options(max_shared, upstream))) {
  for (unsigned i = 0; i < list_stripes; ++i) refs_[i] = {this, i};
}

tc_middle::~tc_middle() { release_all(); }

void tc_middle::free_stripes() noexcept {
  for (auto& s : stripes_) {
    if (free_list_engine* e = s.load(std::memory_order_relaxed)) {
      s.store(nullptr, std::memory_order_relaxed);
      e->release();
      // Its counts stay in the statistics.
      const resource_stats r = e->stats();  // holds nothing now
      add_part_stats(gone_, r);
      gone_.peak_bytes_in_use += r.peak_bytes_in_use;
      e->set_chunk_hook(nullptr, nullptr);
      e->~free_list_engine();
      give_back_to(upstream_, e, sizeof(free_list_engine), alignof(free_list_engine));
      stripes_freed_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ---- mid-size requests ---------------------------------------------------------------------------------------------

free_list_engine* tc_middle::stripe(unsigned i) noexcept {
  if (free_list_engine* e = stripes_[i].load(std::memory_order_acquire)) return e;
  std::lock_guard<spin_lock> g(stripe_make_lock_);
  if (free_list_engine* e = stripes_[i].load(std::memory_order_relaxed)) return e;
  void* m = nullptr;
  try {
    m = allocate_from(upstream_, sizeof(free_list_engine), alignof(free_list_engine));
  } catch (...) {
    return nullptr;
  }
  auto* e = new (m) free_list_engine(shared_list_options(max_shared_, upstream_), upstream_, owner_, name_);
  e->class_sizes();
  e->set_chunk_hook(&tc_middle::note_chunk, &refs_[i]);
  stripes_made_.fetch_add(1, std::memory_order_relaxed);
  stripes_[i].store(e, std::memory_order_release);
  return e;
}

bool tc_middle::note_chunk(void* context, void* chunk, std::size_t size, bool added) noexcept {
  const auto* r = static_cast<const stripe_ref*>(context);
  if (added) return r->middle->front_->map().set(chunk, size, tc_map_mid(r->index));
  r->middle->front_->map().clear(chunk, size);
  return true;
}

unsigned tc_middle::stripe_of(const void* p) const noexcept {
  const std::uint32_t v = front_->map().get(p);
  return tc_map_is_mid(v) ? tc_map_mid_stripe(v) : list_stripes;
}

void* tc_middle::allocate(std::size_t bytes, std::size_t alignment, std::uint32_t hint) {
  const unsigned i = hint % list_stripes;
  free_list_engine* e = stripe(i);
  if (e == nullptr) {
    stripe_failures_.fetch_add(1, std::memory_order_relaxed);
    throw_bad_alloc();
  }
  {
    std::lock_guard<spin_lock> g(stripe_locks_[i]);
    if (void* p = e->allocate_held(bytes, alignment)) return p;
  }
  // Before a new chunk, room a stripe no thread uses has plenty of (half a chunk free or more: blocks of threads that
  // ended), so that the stripes do not each grow to their own peak. Only such stripes: blocks taken from a stripe in
  // use are freed into it, under its lock, and the two threads wait for each other at every mid-size call from then
  // on (glibc's thread benchmark: 1,400 yields and a quarter more time in some runs). A stripe locked now is passed by.
  for (unsigned k = 1; k < list_stripes; ++k) {
    const unsigned j = (i + k) % list_stripes;
    free_list_engine* other = stripes_[j].load(std::memory_order_acquire);
    if (other == nullptr || stripe_users_[j].load(std::memory_order_relaxed) != 0 || !stripe_locks_[j].try_lock())
      continue;
    void* p = other->free_bytes() >= other->chunk_size() / 2 ? other->allocate_held(bytes, alignment) : nullptr;
    stripe_locks_[j].unlock();
    if (p != nullptr) return p;
  }
  std::lock_guard<spin_lock> g(stripe_locks_[i]);
  return e->allocate(bytes, alignment);
}

bool tc_middle::deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  const unsigned i = stripe_of(p);
  if (i == list_stripes) {
    report_error(error_info{error_kind::foreign_pointer, name_, owner_, p, bytes, alignment, 0,
                            "not an allocation of this resource"});
    return false;
  }
  free_list_engine* e = stripes_[i].load(std::memory_order_acquire);  // made before its chunks
  std::lock_guard<spin_lock> g(stripe_locks_[i]);
  const std::uint64_t before = e->deallocation_count();
  e->deallocate(p, bytes, alignment);
  return e->deallocation_count() != before;
}

std::size_t tc_middle::deallocate_unsized(unsigned i, void* p, bool& freed) noexcept {
  free_list_engine* e = stripes_[i].load(std::memory_order_acquire);  // made before its chunks
  std::lock_guard<spin_lock> g(stripe_locks_[i]);
  const std::uint64_t before = e->deallocation_count();
  std::size_t n = e->deallocate_in_chunk(p);
  if (n == 0) {  // not a block in a chunk (a large one, or misuse): the general way
    n = e->usable_size(p);
    if (n == 0) return 0;
    e->deallocate(p, n, tc_unsized_alignment(n));
  }
  freed = e->deallocation_count() != before;
  return n;
}

bool tc_middle::resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept {
  const unsigned i = stripe_of(p);
  if (i == list_stripes) {
    report_error(error_info{error_kind::foreign_pointer, name_, owner_, p, old_size, alignment, 0,
                            "resize of a block this resource did not hand out"});
    return false;
  }
  free_list_engine* e = stripes_[i].load(std::memory_order_acquire);
  std::lock_guard<spin_lock> g(stripe_locks_[i]);
  return e->resize(p, old_size, new_size, alignment);
}

std::size_t tc_middle::usable_size(const void* p) const noexcept {
  const unsigned i = stripe_of(p);
  if (i == list_stripes) return 0;
  const free_list_engine* e = stripes_[i].load(std::memory_order_acquire);
  std::lock_guard<spin_lock> g(stripe_locks_[i]);
  return e->usable_size(p);
}

resource_stats tc_middle::list_stats() const noexcept {
  resource_stats t;
  // The stripes' engines are upstream memory too.
  const std::uint64_t made = stripes_made_.load(std::memory_order_relaxed);
  const std::uint64_t freed = stripes_freed_.load(std::memory_order_relaxed);
  t.bytes_held = t.bytes_resident = engine_bytes();
  add_part_stats(t, gone_);
  t.upstream_allocations += made;
  t.upstream_deallocations += freed;
  t.failed_allocations += stripe_failures_.load(std::memory_order_relaxed);
  t.peak_bytes_in_use = gone_.peak_bytes_in_use;
  for (unsigned i = 0; i < list_stripes; ++i) {
    const free_list_engine* e = stripes_[i].load(std::memory_order_acquire);
    if (e == nullptr) continue;
    resource_stats s;
    {
      std::lock_guard<spin_lock> g(stripe_locks_[i]);
      s = e->stats();
    }
    add_part_stats(t, s);
    t.bytes_in_use += s.bytes_in_use;
    t.peak_bytes_in_use += s.peak_bytes_in_use;
  }
  return t;
}

bool tc_middle::check_list() const noexcept {
  for (unsigned i = 0; i < list_stripes; ++i) {
    const free_list_engine* e = stripes_[i].load(std::memory_order_acquire);
    if (e == nullptr) continue;
    std::lock_guard<spin_lock> g(stripe_locks_[i]);
    if (!e->check_invariants()) return false;
  }
  return true;
}

// ---- blocks --------------------------------------------------------------------------------------------------------

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
  release_excess(nullptr);
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
  void* retired = nullptr;
  if (!source_.cache(base)) retire(base, retired);
  release_excess(retired);
}

// Empty blocks cached beyond max_empty_blocks for the decay time go upstream, with `retired`.
void tc_middle::release_excess(void* retired) noexcept {
  source_.drain_excess([&](void* c) { retire(c, retired); });
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
  for (unsigned i = 0; i < list_stripes; ++i) {
    if (free_list_engine* e = stripes_[i].load(std::memory_order_acquire)) {
      std::lock_guard<spin_lock> g(stripe_locks_[i]);
      e->trim();
    }
  }
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
  free_stripes();  // made again at their next use
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

void tc_middle::inspect(inspector& v, unsigned what, class_detail* classes) const {
  {
    std::lock_guard<spin_lock> g(block_lock_);
    for (const slab* head : abandoned_)
      for (const slab* b = head; b != nullptr; b = b->next) front_->inspect_block(b, 0, false, v, what, classes);
  }
  if ((what & inspect_regions) == 0) return;
  source_.inspect_cached(v, region_kind::slab);
  for (unsigned i = 0; i < list_stripes; ++i) {
    const free_list_engine* e = stripes_[i].load(std::memory_order_acquire);
    if (e == nullptr) continue;
    std::lock_guard<spin_lock> g(stripe_locks_[i]);
    e->inspect_regions(v);
  }
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
      if (b->listed != 0 || b->list != nullptr) return "abandoned block with a list";
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
