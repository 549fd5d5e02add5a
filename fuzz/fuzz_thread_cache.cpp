// SPDX-License-Identifier: MIT
// fuzz/fuzz_thread_cache.cpp: thread_cache_resource over every upstream kind: max_small_size 8 B .. 8 KiB,
// max_shared_size from max_small_size up, max_empty_blocks, both check modes; its rounded and unsized entry points,
// usable_size, release_thread_cache, trim; misuse; cross-thread replay with hand-offs and split double frees.
//
// Input: [upstream] [page options if own pages: 2] [options: 3 bytes] [flags] [ops...]
#include <strata/thread_cache_resource.hpp>

#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

class tc_subject final : public sf::resource_subject<strata::thread_cache_resource> {
 public:
  tc_subject(const strata::thread_cache_options& o, sf::upstream_env& env) {
    r_ = std::make_unique<strata::thread_cache_resource>(o, env.get());
    other_ = std::make_unique<strata::thread_cache_resource>(std::pmr::new_delete_resource());
    prof_.max = env.heap_backed() ? 8 * sf::MiB : 64 * sf::MiB;
    prof_.live_budget = env.heap_backed() ? 64 * sf::MiB : 256 * sf::MiB;
    using strata::cache_tier;
    sf::add_edges(prof_, {r_->max_size(cache_tier::thread), r_->max_size(cache_tier::thread) + 1,
                          r_->max_size(cache_tier::shared), r_->max_size(cache_tier::shared) + 1, 8, 16, 8192,
                          256 * sf::KiB, 64 * sf::KiB});
  }
  const char* name() const override { return "thread_cache_resource"; }
  std::size_t round(std::size_t n, std::size_t a) const override { return r_->round_size(n, a); }
  bool has_round_size() const override { return true; }
  bool can_trim() const override { return true; }
  void trim() override { r_->trim(); }
  bool thread_safe() const override { return true; }
  bool settles_double_frees_late() const override { return true; }
  void thread_op(std::size_t arg) override {
    if (arg % 3 == 0) r_->release_thread_cache();
    else if (arg % 3 == 1) r_->trim();
    else (void)r_->heap_count();
  }
  // Its blocks are freed with deallocate_rounded or deallocate_unsized.
  bool free_special(sf::runner& run, std::size_t i) override {
    const sf::block b = run.mdl().live[i];
    if (!(b.flags & sf::rounded_alloc)) return false;
    run.mdl().verify(b, "before its free");
    if (b.seed & 1) {
      sf::trace("deallocate_unsized", b.p, b.size, b.alignment);
      const std::size_t freed = r_->deallocate_unsized(b.p);
      SF_CHECK(freed == b.rounded, "deallocate_unsized(%p) freed %zu bytes, the block was allocate_rounded(%zu, %zu) = %zu",
               static_cast<void*>(b.p), freed, b.size, b.alignment, b.rounded);
    } else {
      sf::trace("deallocate_rounded", b.p, b.size, b.alignment);
      r_->deallocate_rounded(b.p, b.size, b.alignment);
    }
    run.note_freed(i, b.size);
    return true;
  }
  bool extra_op(sf::runner& run, sf::reader& in) override {
    sf::model& m = run.mdl();
    const std::uint8_t k = in.u8();
    switch (k % 5) {
      case 0: {  // allocate_rounded
        const std::size_t n = sf::pick_size(in, prof_), a = sf::pick_alignment(in);
        const strata::resource_stats before = r_->stats();
        void* p;
        try {
          p = r_->allocate_rounded(n, a);
        } catch (const std::bad_alloc&) {
          sf::trace("allocate_rounded", nullptr, n, a, 0, -1);
          if (!run.failure_ok(n, a)) sf::fail("allocate_rounded(%zu, %zu) threw bad_alloc with no fault armed", n, a);
          run.after_bad_alloc(before);
          return true;
        }
        sf::trace("allocate_rounded", p, n, a, round(n, a));
        m.add(p, n, a, run.next_seed(), sf::rounded_alloc);
        return true;
      }
      case 1: {  // usable_size of a live block
        if (m.live.empty()) return false;
        const sf::block& b = m.live[in.below(m.live.size())];
        const std::size_t u = r_->usable_size(b.p);
        sf::trace("usable_size", b.p, b.size, b.alignment, 0, static_cast<long long>(u));
        SF_CHECK(u >= b.size, "usable_size(%p) = %zu, less than the %zu bytes allocated", static_cast<void*>(b.p), u,
                 b.size);
        if (r_->tier_of(b.size, b.alignment) != strata::cache_tier::upstream)
          SF_CHECK(u == b.rounded, "usable_size(%p) = %zu, round_size(%zu, %zu) = %zu", static_cast<void*>(b.p), u,
                   b.size, b.alignment, b.rounded);
        return true;
      }
      case 2:  // hand the thread's cache back (as thread exit does); the blocks stay valid
        sf::trace("release_thread_cache");
        r_->release_thread_cache();
        m.verify_all("after release_thread_cache");
        return true;
      case 3: {  // tiers agree with their bounds
        const std::size_t n = sf::pick_size(in, prof_);
        const strata::cache_tier t = r_->tier_of(n, 16);
        const bool ok = n < r_->min_size(t) ? false : n <= r_->max_size(t);
        SF_CHECK(ok || n == 0, "tier_of(%zu) = %d, outside its [%zu, %zu]", n, static_cast<int>(t), r_->min_size(t),
                 r_->max_size(t));
        return true;
      }
      default: {  // usable_size of a foreign pointer: reported, 0
        if (!run.misuse()) return false;
        void* p = sf::g_foreign + 64 * (in.u8() % 64);
        std::size_t u = 1;
        run.expect_misuse(
            "usable_size foreign", p, 0, 0, false, [&] { u = r_->usable_size(p); }, true, false);
        SF_CHECK(u == 0, "usable_size of a foreign pointer gave %zu", u);
        return true;
      }
    }
  }
};

strata::thread_cache_options decode(sf::reader& in, std::string& desc) {
  strata::thread_cache_options o;
  const std::uint8_t a = in.u8(), b = in.u8(), c = in.u8();
  static constexpr std::size_t smalls[] = {0, 0, 8, 16, 100, 1024, 4096, 8192};
  o.max_small_size = smalls[a % 8];
  if (sf::env().skips("tiny_classes") && o.max_small_size != 0 && o.max_small_size < 4096) o.max_small_size = 4096;
  static constexpr std::size_t shareds[] = {0, 0, 1, 8192, 64 * sf::KiB, 256 * sf::KiB, sf::MiB, 64 * sf::MiB};
  o.max_shared_size = shareds[b % 8];
  if (b % 8 == 2) o.max_shared_size = o.max_small_size == 0 ? 8192 : o.max_small_size;  // no shared tier to speak of
  static constexpr std::size_t empties[] = {0, 1, 16, 1000};
  o.max_empty_blocks = empties[c % 4];
  o.checks = (c & 4) != 0 ? strata::check_mode::strict : strata::check_mode::standard;
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "thread_cache_resource{max_small_size=%zu max_shared_size=%zu max_empty_blocks=%zu checks=%s}",
                o.max_small_size, o.max_shared_size, o.max_empty_blocks,
                o.checks == strata::check_mode::strict ? "strict" : "standard");
  desc = buf;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sf::init("thread_cache_resource");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sf::run_resource_target(data, size,
                                 [](sf::upstream_env& env, sf::reader& in, std::string& desc) -> std::unique_ptr<tc_subject> {
                                   const strata::thread_cache_options o = decode(in, desc);
                                   try {
                                     auto s = std::make_unique<tc_subject>(o, env);
                                     char buf[120];
                                     std::snprintf(buf, sizeof buf, " -> tiers up to %zu / %zu",
                                                   s->r().max_size(strata::cache_tier::thread),
                                                   s->r().max_size(strata::cache_tier::shared));
                                     desc += buf;
                                     return s;
                                   } catch (const std::invalid_argument&) {
                                     return nullptr;
                                   }
                                 });
}
