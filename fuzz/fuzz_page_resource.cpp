// SPDX-License-Identifier: MIT
// fuzz/fuzz_page_resource.cpp: page_resource with every cache, purge, huge page and growth-reserve option, faults in
// the OS layer, allocate_zeroed / purge / advise_huge_pages, misuse and cross-thread replay.
//
// Input: [page options: 2 bytes] [flags] [ops...]
#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

class page_subject final : public sf::subject {
 public:
  page_subject(strata::page_resource& r, bool heap_limits) : r_(r) {
    const auto& o = r.get_options();
    prof_.max = heap_limits ? 16 * sf::MiB : 64 * sf::MiB;
    sf::add_edges(prof_, {strata::page_resource::page_size(), strata::page_resource::page_size() * 2,
                          strata::page_resource::huge_page_size(), o.growth_reserve_min, o.max_cached_bytes,
                          o.max_resident_cached_bytes, 64 * sf::KiB, sf::MiB, 2 * sf::MiB + 4096});
    other_ = std::make_unique<strata::page_resource>();
  }
  const char* name() const override { return "page_resource"; }
  void* allocate(std::size_t n, std::size_t a) override { return r_.allocate(n, a); }
  void deallocate(void* p, std::size_t n, std::size_t a) override { r_.deallocate(p, n, a); }
  bool resize(void* p, std::size_t o, std::size_t n, std::size_t a) override { return r_.resize(p, o, n, a); }
  strata::resource_stats stats() const override { return r_.stats(); }
  bool check_invariants() override { return r_.check_invariants(); }
  std::size_t round(std::size_t n, std::size_t) const override {
    try {
      return strata::page_resource::round_size(n);
    } catch (const std::bad_alloc&) {
      return n;
    }
  }
  bool has_round_size() const override { return true; }
  // page_resource registers the exact size and alignment of each span: another size is another block.
  bool same_block(std::size_t a, std::size_t b, std::size_t) const override { return a == b; }
  bool accepts_same_block_sizes() const override { return false; }
  bool can_trim() const override { return true; }
  void trim() override { r_.trim(); }
  bool thread_safe() const override { return true; }
  const sf::size_profile& sizes() const override { return prof_; }
  std::pmr::memory_resource* other() override { return other_.get(); }
  bool held_is_upstream_bytes() const override { return false; }

  void check_model(const std::vector<sf::block>&) override {
    const auto& o = r_.get_options();
    SF_CHECK(r_.cached_bytes() <= o.max_cached_bytes && r_.cached_spans() <= o.max_cached_spans,
             "page cache holds %zu bytes in %zu spans, over its limits %zu / %zu", r_.cached_bytes(),
             r_.cached_spans(), o.max_cached_bytes, o.max_cached_spans);
  }
  void check_when_empty(bool after_trim) override {
    if (after_trim) SF_CHECK(r_.cached_bytes() == 0, "trim() left %zu bytes cached", r_.cached_bytes());
  }

  bool extra_op(sf::runner& run, sf::reader& in) override {
    sf::model& m = run.mdl();
    const std::uint8_t k = in.u8();
    switch (k % 4) {
      case 0: {  // allocate_zeroed: reads as zero
        const std::size_t n = sf::pick_size(in, prof_);
        const std::size_t a = sf::pick_alignment(in);
        run.allocate_zeroed(n, a, [&] { return r_.allocate_zeroed(n, a); });
        return true;
      }
      case 1: {  // purge whole pages inside a live block: they read as zero after, the rest is kept
        if (m.live.empty()) return false;
        sf::block& b = m.live[in.below(m.live.size())];
        const std::size_t page = strata::page_resource::page_size();
        const std::size_t pages = b.size / page;
        if (pages == 0) return false;
        const std::size_t first = in.below(pages), count = 1 + in.below(pages - first);
        const bool ok = r_.purge(b.p, first * page, count * page);
        sf::trace("purge", b.p, first * page, count * page, 0, ok);
        SF_CHECK(ok, "purge(%p, %zu, %zu) of a live allocation of %zu bytes failed", static_cast<void*>(b.p),
                 first * page, count * page, b.size);
        const unsigned char* z = reinterpret_cast<unsigned char*>(b.p) + first * page;
        for (std::size_t i = 0; i < count * page; i += 512)
          SF_CHECK(z[i] == 0, "purged page of %p at offset %zu does not read as zero", static_cast<void*>(b.p),
                   first * page + i);
        sf::fill(b.p, b.size, b.seed);  // the model's pattern again
        return true;
      }
      case 2: {  // purge with a bad range: false, nothing done
        if (m.live.empty()) return false;
        const sf::block& b = m.live[in.below(m.live.size())];
        const std::size_t span = round(b.size, b.alignment);
        const std::size_t off = in.bit() ? 1 + in.below(4095) : span;
        const bool ok = r_.purge(b.p, off, strata::page_resource::page_size());
        sf::trace("purge (bad range)", b.p, off, strata::page_resource::page_size(), 0, ok);
        SF_CHECK(!ok, "purge(%p, %zu, page) outside the allocation's whole pages returned true",
                 static_cast<void*>(b.p), off);
        m.verify(b, "after a refused purge");
        return true;
      }
      default: {  // advise_huge_pages: false for bytes past the allocation
        if (m.live.empty()) return false;
        const sf::block& b = m.live[in.below(m.live.size())];
        const std::size_t n = in.bit() ? b.size : b.size + strata::page_resource::page_size() * (1 + in.below(4));
        const bool ok = r_.advise_huge_pages(b.p, n);
        sf::trace("advise_huge_pages", b.p, n, 0, 0, ok);
        if (n > round(b.size, b.alignment)) SF_CHECK(!ok, "advise_huge_pages past the allocation returned true");
        m.verify(b, "after advise_huge_pages");
        return true;
      }
    }
  }

 private:
  strata::page_resource& r_;
  sf::size_profile prof_;
  std::unique_ptr<strata::page_resource> other_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sf::init("page_resource");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sf::begin_input();
  sf::reader in(data, size);
  const std::size_t mapped_before = strata::testing::os_mapped_bytes();
  {
    sf::upstream_env env(sf::upstream_kind::own_pages, in);  // the page_resource under test is env's own
    const sf::input_flags f = sf::decode_flags(in.u8(), true);
    sf::context() = "page_resource " + env.describe() + ", " + sf::describe(f);
    {
      page_subject s(*env.pages(), false);
      sf::run_subject(s, &env, in, f, env.pages());
    }
    if (!f.destroy_live || f.threads) env.check_all_returned();  // else the destructor's unmapping is checked below
  }
  const std::size_t mapped_after = strata::testing::os_mapped_bytes();
  SF_CHECK(mapped_after <= mapped_before, "the OS layer still maps %zu more bytes after the page_resource is gone",
           mapped_after - mapped_before);
  return 0;
}
