// SPDX-License-Identifier: MIT
// fuzz/fuzz_c_heap.cpp: the C API's default heap (<strata/strata.h>): strata_malloc / strata_free / calloc /
// realloc / resize / malloc_aligned / usable_size / free_unsized / realloc_unsized / trim / thread_cleanup, with the
// C misuse handler, on one thread or replayed on 2..4 threads. The heap is process-wide: its stats are checked as
// deltas, and every input frees what it allocated.
//
// Input: [flags] [ops...]
#include <strata/strata.h>
#include <strata/thread_cache_resource.hpp>

#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

constexpr std::size_t plain(std::size_t n) { return n >= 16 ? 16 : 8; }

strata::resource_stats convert(const strata_stats_t& c) {
  strata::resource_stats s;
  s.bytes_in_use = c.bytes_in_use;
  s.peak_bytes_in_use = c.peak_bytes_in_use;
  s.bytes_held = c.bytes_held;
  s.bytes_resident = c.bytes_resident;
  s.allocations = c.allocations;
  s.deallocations = c.deallocations;
  s.failed_allocations = c.failed_allocations;
  s.upstream_allocations = c.upstream_allocations;
  s.upstream_deallocations = c.upstream_deallocations;
  s.free_bytes = c.free_bytes;
  s.free_blocks = c.free_blocks;
  s.largest_free_block = c.largest_free_block;
  return s;
}

class c_heap_subject final : public sf::subject {
 public:
  c_heap_subject() {
    prof_.max = 16 * sf::MiB;
    sf::add_edges(prof_, {strata_tier_max_size(STRATA_TIER_THREAD), strata_tier_min_size(STRATA_TIER_SHARED),
                          strata_tier_max_size(STRATA_TIER_SHARED), strata_tier_min_size(STRATA_TIER_UPSTREAM), 16,
                          15, 8192, 256 * sf::KiB});
  }
  const char* name() const override { return "strata C default heap"; }
  // Plain requests (alignment up to the plain one) go through strata_malloc, others through strata_malloc_aligned.
  static bool is_plain(std::size_t n, std::size_t a) { return a <= plain(n) && (a & (a - 1)) == 0 && a != 0; }
  void* allocate(std::size_t n, std::size_t a) override {
    strata_clear_error();
    void* p = is_plain(n, a) ? strata_malloc(n) : strata_malloc_aligned(n, a);
    if (p != nullptr) return p;
    const strata_error_t e = strata_last_error();
    if (e == STRATA_ENOMEM || e == STRATA_EOVERFLOW) throw std::bad_alloc();
    if (e == STRATA_EINVAL) throw std::invalid_argument("strata_malloc_aligned: EINVAL");
    sf::fail("%s(%zu, %zu) returned NULL with error %d (%s)", is_plain(n, a) ? "strata_malloc" : "strata_malloc_aligned",
             n, a, static_cast<int>(e), strata_error_string(e));
  }
  void deallocate(void* p, std::size_t n, std::size_t a) override {
    if (is_plain(n, a)) strata_free(p, n);
    else strata_free_aligned(p, n, a);
  }
  bool resize_reaches_resource(std::size_t o, std::size_t n, std::size_t a) const override {
    return is_plain(o, a) && plain(o) == plain(n);
  }
  bool resize(void* p, std::size_t o, std::size_t n, std::size_t a) override {
    if (!is_plain(o, a) || plain(o) != plain(n)) return o == n;  // strata_resize is for plain blocks
    return strata_resize(p, o, n);
  }
  strata::resource_stats stats() const override {
    strata_stats_t c;
    SF_CHECK(strata_stats(&c), "strata_stats failed");
    return convert(c);
  }
  bool check_invariants() override { return strata_resource_check(strata_default_resource()); }
  std::size_t round(std::size_t n, std::size_t a) const override {
    return ref_.round_size(n, is_plain(n, a) ? plain(n) : a);
  }
  bool has_round_size() const override { return true; }
  bool counts_rounded() const override { return true; }
  bool reports_rounded_size() const override { return true; }
  bool can_trim() const override { return true; }
  void trim() override { strata_trim(); }
  bool thread_safe() const override { return true; }
  bool settles_double_frees_late() const override { return true; }
  bool fresh() const override { return false; }
  bool held_is_upstream_bytes() const override { return false; }
  const sf::size_profile& sizes() const override { return prof_; }
  std::pmr::memory_resource* other() override { return &other_; }
  void thread_op(std::size_t arg) override {
    if (arg % 2) strata_thread_cleanup();
    else strata_trim();
  }
  void after_misuse_report() override {
    SF_CHECK(strata_last_error() == STRATA_EMISUSE, "a reported misuse left strata_last_error() at %d",
             static_cast<int>(strata_last_error()));
    strata_clear_error();
  }

  // Any block may be freed without its size: the heap finds it (and counts its usable size, which is the model's).
  bool free_special(sf::runner& run, std::size_t i) override {
    const sf::block b = run.mdl().live[i];
    if (b.seed % 4 != 0) return false;
    run.mdl().verify(b, "before its free");
    sf::trace("strata_free_unsized", b.p, b.size, b.alignment);
    strata_free_unsized(b.p);
    run.note_freed(i, b.size);
    return true;
  }

  bool extra_op(sf::runner& run, sf::reader& in) override {
    sf::model& m = run.mdl();
    const std::uint8_t k = in.u8();
    switch (k % 6) {
      case 0: {  // calloc: zero-filled; count * size overflow is EOVERFLOW
        const std::size_t count = in.bit() ? in.u8() : (in.bit() ? SIZE_MAX / 2 + in.u8() : 1);
        const std::size_t size = sf::pick_size(in, prof_) % (256 * sf::KiB);
        strata_clear_error();
        void* p = strata_calloc(count, size);
        sf::trace("strata_calloc", p, count, size);
        std::size_t n;
        if (__builtin_mul_overflow(count, size, &n)) {
          SF_CHECK(p == nullptr && strata_last_error() == STRATA_EOVERFLOW,
                   "strata_calloc(%zu, %zu) overflows, yet gave %p, error %d", count, size, p,
                   static_cast<int>(strata_last_error()));
          strata_clear_error();
          return true;
        }
        if (p == nullptr) {
          SF_CHECK(n > prof_.max, "strata_calloc(%zu, %zu) failed: error %d", count, size,
                   static_cast<int>(strata_last_error()));
          return true;
        }
        sf::for_each_segment(n, [&](std::size_t o, std::size_t len) {
          const auto* b = static_cast<const unsigned char*>(p) + o;
          for (std::size_t i = 0; i < len; ++i)
            if (b[i] != 0) sf::fail("strata_calloc(%zu, %zu) = %p: byte %zu is %u", count, size, p, o + i, b[i]);
        });
        m.add(p, n, plain(n), run.next_seed());
        return true;
      }
      case 1:
      case 2: {  // realloc (sized or unsized): contents kept, moved or not
        if (m.live.empty()) return false;
        const std::size_t i = in.below(m.live.size());
        const sf::block b = m.live[i];
        if (!is_plain(b.size, b.alignment)) return false;
        const std::size_t n = in.bit() ? sf::pick_size(in, prof_) : b.size + in.below(64);
        m.verify(b, "before realloc");
        strata_clear_error();
        const bool unsized = k % 6 == 2;
        void* q = unsized ? strata_realloc_unsized(b.p, n) : strata_realloc(b.p, b.size, n);
        sf::trace(unsized ? "strata_realloc_unsized" : "strata_realloc", b.p, b.size, n, 0,
                  reinterpret_cast<long long>(q));
        if (n == 0) {
          SF_CHECK(q == nullptr, "strata_realloc(p, %zu, 0) returned %p", b.size, q);
          run.note_freed(i, b.size);
          return true;
        }
        if (q == nullptr) {
          SF_CHECK(strata_last_error() == STRATA_ENOMEM && n > prof_.max / 2, "strata_realloc(%zu -> %zu) failed: %d",
                   b.size, n, static_cast<int>(strata_last_error()));
          m.verify(b, "after a failed realloc");
          return true;
        }
        const std::size_t bad = sf::first_mismatch(q, b.size, b.seed, n);
        SF_CHECK(bad == SIZE_MAX, "strata_realloc(%p, %zu -> %zu) = %p lost the contents at %zu",
                 static_cast<void*>(b.p), b.size, n, q, bad);
        if (q == b.p) {
          SF_CHECK(reinterpret_cast<std::uintptr_t>(q) % plain(n) == 0,
                   "strata_realloc in place to %zu bytes leaves %p aligned below %zu", n, q, plain(n));
          sf::block& lb = m.live[i];
          lb.alignment = plain(n);
          m.resized(lb, n, round(n, plain(n)), round(n, plain(n)), run.next_seed());
        } else {
          run.note_freed(i, b.size);
          m.add(q, n, plain(n), run.next_seed());
        }
        return true;
      }
      case 3: {  // usable_size
        if (m.live.empty()) return false;
        const sf::block& b = m.live[in.below(m.live.size())];
        const std::size_t u = strata_usable_size(b.p);
        sf::trace("strata_usable_size", b.p, b.size, b.alignment, 0, static_cast<long long>(u));
        SF_CHECK(u >= b.size, "strata_usable_size(%p) = %zu < %zu", static_cast<void*>(b.p), u, b.size);
        if (is_plain(b.size, b.alignment))
          SF_CHECK(u == strata_round_size(b.size), "strata_usable_size(%p) = %zu, strata_round_size(%zu) = %zu",
                   static_cast<void*>(b.p), u, b.size, strata_round_size(b.size));
        // The usable bytes are the caller's: write and check them (they must not overlap anything).
        std::memset(b.p + b.size, 0x5A, std::min<std::size_t>(u - b.size, 4096));
        return true;
      }
      case 4:
        sf::trace("strata_thread_cleanup");
        strata_thread_cleanup();
        m.verify_all("after strata_thread_cleanup");
        return true;
      default: {  // misuse through the unsized entry points
        if (!run.misuse()) return false;
        void* p = sf::g_foreign + 64 * (1 + in.u8() % 64);
        std::size_t u = 1;
        if (in.bit()) {
          run.expect_misuse(
              "strata_usable_size foreign", p, 0, 0, false, [&] { u = strata_usable_size(p); }, true, false);
          SF_CHECK(u == 0, "strata_usable_size of a foreign pointer gave %zu", u);
        } else {
          run.expect_misuse(
              "strata_free_unsized foreign", p, 0, 0, false, [&] { strata_free_unsized(p); }, true, false);
        }
        return true;
      }
    }
  }

 private:
  sf::size_profile prof_;
  // The default heap's twin (default options over the default page resource: the same tiers), for round_size().
  strata::thread_cache_resource ref_{strata::default_page_resource()};
  strata::thread_cache_resource other_{std::pmr::new_delete_resource()};
};

void on_misuse(const strata_misuse_t* m, void*) {
  sf::on_report_message(static_cast<int>(m->kind), nullptr, m->pointer, m->size, m->message);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sf::init("c_heap");
  strata_set_misuse_handler(&on_misuse, nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sf::begin_input();
  sf::reader in(data, size);
  sf::input_flags f = sf::decode_flags(in.u8(), true);
  f.destroy_live = false;  // the default heap lives for ever: every input frees its blocks
  sf::context() = "C default heap, " + sf::describe(f);
  c_heap_subject s;
  sf::run_subject(s, nullptr, in, f, nullptr);
  return 0;
}
