// SPDX-License-Identifier: MIT
// fuzz/fuzz_free_list.cpp: free_list_resource (every fit policy), or synchronized_free_list_resource
// (STRATA_FUZZ_SYNC), over every upstream kind: chunks 64 KiB .. 1 GiB (2 MiB huge-page chunks over pages), large
// thresholds at both ends, purge thresholds and delays (page upstream), huge pages on and off, max_empty_chunks, both
// check modes (standard: quick lists in front of the segregated fit).
//
// Input: [upstream] [page options if own pages: 2] [options: 4 bytes] [flags] [ops...]
#include <strata/free_list_resource.hpp>

#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

#if STRATA_FUZZ_SYNC
using resource_type = strata::synchronized_free_list_resource;
constexpr const char* target_name = "synchronized_free_list_resource";
#else
using resource_type = strata::free_list_resource;
constexpr const char* target_name = "free_list_resource";
#endif

const char* policy_name(strata::fit_policy p) {
  switch (p) {
    case strata::fit_policy::first_fit: return "first_fit";
    case strata::fit_policy::next_fit: return "next_fit";
    case strata::fit_policy::best_fit: return "best_fit";
    default: return "segregated";
  }
}

class free_list_subject final : public sf::resource_subject<resource_type> {
 public:
  free_list_subject(const strata::free_list_options& o, sf::upstream_env& env) : opts_(o) {
    r_ = std::make_unique<resource_type>(o, env.get());
    strata::free_list_options small;
    small.chunk_size = 64 * sf::KiB;
    other_ = std::make_unique<resource_type>(small, std::pmr::new_delete_resource());
    threshold_ = r_->large_threshold();
    const std::size_t cap = r_->chunk_capacity();
    prof_.max = env.heap_backed() ? 8 * sf::MiB : 64 * sf::MiB;
    prof_.live_budget = env.heap_backed() ? 64 * sf::MiB : 256 * sf::MiB;
    sf::add_edges(prof_, {threshold_, threshold_ + 8, cap, cap / 2, cap / 4, cap - 8, cap - 16, cap - 24, cap - 32,
                          cap - 4096, r_->chunk_size(), o.purge_threshold, 256 * sf::KiB, 253920, 24, 32, 4096});
  }
  const char* name() const override { return target_name; }
  bool small(std::size_t n, std::size_t a) const { return n <= threshold_ && a <= 4096; }
  std::size_t round(std::size_t n, std::size_t a) const override {
    return sf::round_size_or(*r_, n, a, [&] { return small(n, a) ? resource_type::block_size_for(n, a) : n; });
  }
  bool has_round_size() const override { return sf::has_round_size_member<resource_type>::value; }
  bool same_block(std::size_t x, std::size_t y, std::size_t a) const override {
    if (small(x, a) != small(y, a)) return false;
    return small(x, a) ? resource_type::block_size_for(x, a) == resource_type::block_size_for(y, a) : x == y;
  }
  bool can_trim() const override { return true; }
  void trim() override { r_->trim(); }
  bool can_release() const override { return true; }
  void release() override { r_->release(); }
  bool thread_safe() const override { return STRATA_FUZZ_SYNC != 0; }
  bool trim_returns_all() const override { return true; }
  void thread_op(std::size_t arg) override {
    if (arg % 2) r_->trim();
    else (void)r_->chunk_count();
  }
  // Carves the largest free block down to its last k bytes (k = 0 .. 40): blocks of the large threshold, then one of
  // exactly what is left minus k. Reaches "a chunk's end minus a little" that random sizes almost never hit.
  bool extra_op(sf::runner& run, sf::reader& in) override {
    static constexpr std::size_t rests[] = {0, 8, 16, 24, 32, 40};
    const std::size_t k = rests[in.u8() % 6];
    const std::size_t a = in.bit() ? 8 : 16;
    for (int i = 0; i < 64; ++i) {
      const std::size_t largest = r_->stats().largest_free_block;
      if (largest <= k + 8) break;
      const std::size_t want = largest - k;
      const std::size_t n = want > threshold_ ? threshold_ : want;
      sf::trace("carve", nullptr, n, k, largest);
      if (!run.alloc(n, a)) break;
      if (n == want) break;
    }
    return true;
  }

  void check_model(const std::vector<sf::block>&) override {
    const strata::resource_stats s = r_->stats();
    SF_CHECK(s.free_bytes <= r_->chunk_count() * r_->chunk_capacity(),
             "free_bytes %zu exceed the capacity of the %zu chunks held", s.free_bytes, r_->chunk_count());
  }
  void check_when_empty(bool after_trim) override {
    if (sf::env().skips("empty_bounds")) return;
    const std::size_t chunks = r_->chunk_count();
    if (after_trim) SF_CHECK(chunks == 0, "trim() with no live block left %zu chunks", chunks);
    else
      SF_CHECK(chunks <= opts_.max_empty_chunks, "no live block, yet %zu chunks held (max_empty_chunks %zu)", chunks,
               opts_.max_empty_chunks);
  }

 private:
  strata::free_list_options opts_;
  std::size_t threshold_ = 0;
};

strata::free_list_options decode(sf::reader& in, const sf::upstream_env& env, std::string& desc) {
  strata::free_list_options o;
  const std::uint8_t a = in.u8(), b = in.u8(), c = in.u8(), d = in.u8();
  static constexpr strata::fit_policy policies[] = {strata::fit_policy::first_fit, strata::fit_policy::next_fit,
                                                    strata::fit_policy::best_fit, strata::fit_policy::segregated};
  o.policy = policies[a % 4];
  static constexpr std::size_t chunks[] = {0,           64 * sf::KiB, 64 * sf::KiB, 128 * sf::KiB,
                                           256 * sf::KiB, 1 * sf::MiB, 2 * sf::MiB,  4 * sf::MiB};
  o.chunk_size = chunks[(a >> 2) & 7];
  // The largest chunk the options accept: 1 GiB (address space from pages; its bitmap is 32 MiB), rarely.
  if ((a >> 5) == 7 && (b & 0xF0) == 0xF0 && env.direct_pages() && !sf::env().skips("huge_chunks"))
    o.chunk_size = sf::GiB;
  static constexpr std::size_t thresholds[] = {0, 0, 8, 100, 4096, 64 * sf::KiB, 256 * sf::KiB, ~std::size_t{0}};
  o.large_threshold = thresholds[b & 7];
  static constexpr std::size_t empties[] = {0, 1, 1, 3};
  o.max_empty_chunks = empties[(b >> 3) & 3];
  static constexpr std::size_t purges[] = {0, 4096, 64 * sf::KiB, 256 * sf::KiB};
  o.purge_threshold = purges[c & 3];
  static constexpr std::size_t delays[] = {0, 1, 16, 65536};
  o.purge_delay = delays[(c >> 2) & 3];
  o.huge_pages = (d & 1) != 0;
  o.checks = (d & 2) != 0 ? strata::check_mode::strict : strata::check_mode::standard;
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "%s{policy=%s chunk_size=%zu large_threshold=%zu max_empty_chunks=%zu purge_threshold=%zu "
                "purge_delay=%zu huge_pages=%d checks=%s}",
                target_name, policy_name(o.policy), o.chunk_size, o.large_threshold, o.max_empty_chunks,
                o.purge_threshold, o.purge_delay, o.huge_pages ? 1 : 0,
                o.checks == strata::check_mode::strict ? "strict" : "standard");
  desc = buf;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sf::init(target_name);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sf::run_resource_target(data, size, [](sf::upstream_env& env, sf::reader& in, std::string& desc) {
    const strata::free_list_options o = decode(in, env, desc);
    return std::make_unique<free_list_subject>(o, env);
  });
}
