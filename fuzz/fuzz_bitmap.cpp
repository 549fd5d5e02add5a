// SPDX-License-Identifier: MIT
// fuzz/fuzz_bitmap.cpp: bitmap_resource, or synchronized_bitmap_resource (STRATA_FUZZ_SYNC), over every upstream
// kind, with block sizes 64 KiB .. 16 MiB, max_small_size 8 .. 64 KiB, natural alignment on and off,
// max_empty_blocks bounds, and both check modes.
//
// Input: [upstream] [page options if own pages: 2] [options: 3 bytes] [flags] [ops...]
#include <strata/bitmap_resource.hpp>

#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

#if STRATA_FUZZ_SYNC
using resource_type = strata::synchronized_bitmap_resource;
constexpr const char* target_name = "synchronized_bitmap_resource";
#else
using resource_type = strata::bitmap_resource;
constexpr const char* target_name = "bitmap_resource";
#endif

class bitmap_subject final : public sf::resource_subject<resource_type> {
 public:
  bitmap_subject(const strata::bitmap_options& o, sf::upstream_env& env) : opts_(o) {
    r_ = std::make_unique<resource_type>(o, env.get());
    strata::bitmap_options small;
    small.block_size = 64 * sf::KiB;
    other_ = std::make_unique<resource_type>(small, std::pmr::new_delete_resource());
    prof_.max = env.heap_backed() ? 4 * sf::MiB : 64 * sf::MiB;
    prof_.live_budget = env.heap_backed() ? 64 * sf::MiB : 256 * sf::MiB;
    const std::size_t ms = r_->max_small_size();
    sf::add_edges(prof_, {ms, o.max_small_size, ms + 1, o.block_size / 8, o.block_size, o.block_size / 2, 4096,
                          8192, 64 * sf::KiB, 128, 129});
    for (unsigned c = 0; c < r_->class_count(); c += 1 + c / 8) prof_.edges.push_back(r_->class_stats(c).object_size);
  }
  const char* name() const override { return target_name; }
  std::size_t round(std::size_t n, std::size_t a) const override { return r_->round_size(n, a); }
  bool has_round_size() const override { return true; }
  bool can_trim() const override { return true; }
  void trim() override { r_->trim(); }
  bool can_release() const override { return true; }
  void release() override { r_->release(); }
  bool thread_safe() const override { return STRATA_FUZZ_SYNC != 0; }
  bool trim_returns_all() const override { return true; }
  // Two frees of one object that race (each sees it live, one locally, one remotely) are both counted until the
  // collection or reuse that meets both bits reports it and undoes one count.
  bool settles_double_frees_late() const override { return STRATA_FUZZ_SYNC != 0; }
  void thread_op(std::size_t) override { r_->trim(); }
  void check_when_empty(bool after_trim) override {
    // Memory goes back: with no live object, at most max_empty_blocks blocks (plus each class's current block) stay.
    if (after_trim || sf::env().skips("empty_bounds")) return;
    // bytes_held also counts the class map's leaves (4,160 bytes per 256 MiB window of blocks, given back at trim):
    // far less than a block, so whole blocks are bytes_held / block_size.
    const strata::resource_stats s = r_->stats();
    const std::size_t blocks = s.bytes_held / opts_.block_size;
    SF_CHECK(blocks <= opts_.max_empty_blocks + r_->class_count(),
             "no live object, yet %zu bytes held: %zu blocks (max_empty_blocks %zu, %u classes)", s.bytes_held, blocks,
             opts_.max_empty_blocks, r_->class_count());
  }

 private:
  strata::bitmap_options opts_;
};

strata::bitmap_options decode(sf::reader& in, const sf::upstream_env& env, std::string& desc) {
  strata::bitmap_options o;
  const std::uint8_t a = in.u8(), b = in.u8(), c = in.u8();
  static constexpr std::size_t blocks[] = {64 * sf::KiB, 64 * sf::KiB, 128 * sf::KiB, 256 * sf::KiB,
                                           1 * sf::MiB,  2 * sf::MiB,  4 * sf::MiB,   16 * sf::MiB};
  o.block_size = blocks[a % 8];
  static constexpr std::size_t smalls[] = {8, 16, 24, 128, 1000, 4096, 4096, 8192, 65536, 0 /* the most */};
  std::size_t ms = smalls[b % 10];
  const std::size_t most = std::min(o.block_size / 8, 64 * sf::KiB);
  if (ms == 0 || ms > most) ms = most;
  o.max_small_size = ms;
  o.natural_alignment = (a & 0x80) != 0;
  static constexpr std::size_t empties[] = {0, 1, 2, 64};
  o.max_empty_blocks = empties[(c >> 2) & 3];
  o.checks = (c & 1) != 0 ? strata::check_mode::strict : strata::check_mode::standard;
  (void)env;
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%s{block_size=%zu max_small_size=%zu natural_alignment=%d max_empty_blocks=%zu checks=%s}",
                target_name, o.block_size, o.max_small_size, o.natural_alignment ? 1 : 0, o.max_empty_blocks,
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
    const strata::bitmap_options o = decode(in, env, desc);
    return std::make_unique<bitmap_subject>(o, env);
  });
}
