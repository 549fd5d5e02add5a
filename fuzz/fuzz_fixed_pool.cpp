// SPDX-License-Identifier: MIT
// fuzz/fuzz_fixed_pool.cpp: fixed_pool_resource, or synchronized_fixed_pool_resource (STRATA_FUZZ_SYNC): block
// sizes 1 B .. 1 GiB (8, odd 24/40/1000, ...), capped and uncapped, chunks 64 KiB .. 16 GiB (256 MiB of 8-byte blocks:
// more than 2^24 blocks in a chunk), forward_large, max_empty_chunks, huge pages, both check modes, runs,
// allocate_zeroed.
//
// Input: [upstream] [page options if own pages: 2] [options: 5 bytes] [flags] [ops...]
#include <strata/fixed_pool_resource.hpp>

#include "harness.hpp"

namespace sf = strata_fuzz;

namespace {

#if STRATA_FUZZ_SYNC
constexpr bool sync = true;
using resource_type = strata::synchronized_fixed_pool_resource;
constexpr const char* target_name = "synchronized_fixed_pool_resource";
#else
constexpr bool sync = false;
using resource_type = strata::fixed_pool_resource;
constexpr const char* target_name = "fixed_pool_resource";
#endif
using engine_chunk = strata::detail::fixed_pool_engine<sync>::chunk;
using engine_word = strata::detail::fixed_pool_engine<sync>::word;

class pool_subject final : public sf::resource_subject<resource_type> {
 public:
  pool_subject(std::size_t block_size, const strata::fixed_pool_options& o, sf::upstream_env& env) : opts_(o) {
    r_ = std::make_unique<resource_type>(block_size, o, env.get());
    strata::fixed_pool_options small;
    small.huge_pages = false;
    try {
      other_ = std::make_unique<resource_type>(block_size, small, std::pmr::new_delete_resource());
    } catch (const std::exception&) {
    }
    stride_ = r_->block_stride();
    const std::size_t csize = r_->chunk_size();
    // Blocks per chunk, as the engine computes them: the header and state words take the first slots.
    const std::size_t words = csize / stride_ / 32 + 1;
    const std::size_t skip = (sizeof(engine_chunk) + words * sizeof(engine_word) + stride_ - 1) / stride_;
    per_chunk_ = csize / stride_ - skip;
    prof_.max = env.heap_backed() ? 8 * sf::MiB : 64 * sf::MiB;
    prof_.live_budget = env.heap_backed() ? 64 * sf::MiB : 256 * sf::MiB;
    if (block_size > prof_.max) prof_.max = std::min<std::size_t>(block_size * 2, 2 * sf::GiB);
    if (csize >= 256 * sf::MiB && stride_ <= 64) {
      // More than 2^24 blocks in a chunk: runs long enough that blocks past slot 2^24 are handed out and freed.
      prof_.max = 160 * sf::MiB;
      prof_.live_budget = 512 * sf::MiB;
      sf::add_edges(prof_, {(std::size_t{1} << 24) * stride_, (std::size_t{1} << 23) * stride_,
                            per_chunk_ / 2 * stride_});
    }
    if (prof_.live_budget < 2 * block_size) prof_.live_budget = 2 * block_size;
    sf::add_edges(prof_, {block_size, stride_, 2 * stride_, 3 * stride_, per_chunk_ * stride_,
                          (per_chunk_ + 1) * stride_, csize, 64 * sf::KiB, r_->block_alignment()});
  }
  const char* name() const override { return target_name; }
  std::size_t blocks_for(std::size_t n) const { return n <= stride_ ? 1 : (n + stride_ - 1) / stride_; }
  bool pooled(std::size_t n, std::size_t a) const {
    if (a > r_->block_alignment()) return false;
    if (n <= stride_) return true;
    if (opts_.forward_large || n > (std::size_t{1} << 62)) return false;
    return blocks_for(n) <= per_chunk_;
  }
  std::size_t round(std::size_t n, std::size_t a) const override {
    return sf::round_size_or(*r_, n, a, [&] { return pooled(n, a) ? blocks_for(n) * stride_ : n; });
  }
  bool has_round_size() const override { return sf::has_round_size_member<resource_type>::value; }
  bool same_block(std::size_t x, std::size_t y, std::size_t a) const override {
    if (pooled(x, a) != pooled(y, a)) return false;
    return pooled(x, a) ? blocks_for(x) == blocks_for(y) : x == y;
  }
  bool can_release() const override { return true; }
  void release() override { r_->release(); }
  bool thread_safe() const override { return sync; }
  bool may_fail(std::size_t n, std::size_t a) const override {
    if (n > (std::size_t{1} << 40)) return true;
    // 16 GiB chunks: the page resource reserves twice that to align them, which an OS with heuristic overcommit may
    // refuse (then every pooled request is bad_alloc, consistently).
    if (r_->chunk_size() > 4 * sf::GiB && pooled(n, a)) return true;
    if (opts_.max_bytes == 0 || !pooled(n, a)) return false;
    // Capped: one block must succeed while fewer than capacity_blocks() are live; runs may not find room.
    return concurrent || blocks_for(n) > 1 || r_->blocks_in_use() >= r_->capacity_blocks();
  }
  void check_model(const std::vector<sf::block>& live) override {
    std::size_t blocks = 0;
    for (const sf::block& b : live)
      if (pooled(b.size, b.alignment)) blocks += blocks_for(b.size);
    SF_CHECK(r_->blocks_in_use() == blocks, "blocks_in_use() is %zu, the model has %zu", r_->blocks_in_use(), blocks);
    if (opts_.max_bytes != 0)
      SF_CHECK(r_->blocks_in_use() <= r_->capacity_blocks(), "%zu blocks live past the capacity of %zu",
               r_->blocks_in_use(), r_->capacity_blocks());
  }
  void check_when_empty(bool) override {
    if (sync || opts_.max_bytes != 0 || sf::env().skips("empty_bounds")) return;
    const strata::resource_stats s = r_->stats();
    // The current chunk and max_empty_chunks cached ones may stay (freed blocks cached in other chunks go back when
    // the last block is freed).
    const std::size_t limit = (opts_.max_empty_chunks + 1) * r_->chunk_size();
    SF_CHECK(s.bytes_held <= limit, "no live block, yet %zu bytes held (max_empty_chunks %zu, chunk %zu)",
             s.bytes_held, opts_.max_empty_chunks, r_->chunk_size());
  }

  bool extra_op(sf::runner& run, sf::reader& in) override {
    // allocate_zeroed: zero-filled, fresh blocks or reused ones alike.
    const std::size_t n = sf::pick_size(in, prof_);
    const std::size_t a = sf::pick_alignment(in);
    run.allocate_zeroed(n, a, [&] { return r_->allocate_zeroed(n, a); });
    return true;
  }

  std::size_t per_chunk() const { return per_chunk_; }

 private:
  strata::fixed_pool_options opts_;
  std::size_t stride_ = 8, per_chunk_ = 0;
};

struct pool_config {
  std::size_t block_size;
  strata::fixed_pool_options o;
};

pool_config decode(sf::reader& in, const sf::upstream_env& env, std::string& desc) {
  pool_config c{};
  const std::uint8_t a = in.u8(), b = in.u8(), d = in.u8();
  const std::uint16_t r = in.u16();
  static constexpr std::size_t sizes[] = {8, 8, 24, 40, 1000, 1, 7, 9, 16, 64, 100, 256, 4096, 4104, 65536, 0};
  c.block_size = sizes[a % 16];
  if (c.block_size == 0) c.block_size = 1 + r % 5000;  // any size
  const bool pages = env.direct_pages() && !sf::env().skips("huge_chunks");
  static constexpr std::size_t chunks[] = {0, 0, 64 * sf::KiB, 128 * sf::KiB, 1 * sf::MiB, 2 * sf::MiB, 4 * sf::MiB, 0};
  c.o.chunk_size = chunks[(a >> 4) & 7];
  if ((a >> 4) == 15 && pages) {
    // The extremes, over pages only (address space, not memory): 256 MiB chunks of 8-byte blocks hold more than
    // 2^24 blocks; 16 GiB (the largest chunk accepted) with blocks of 64 MiB .. 1 GiB.
    if (b & 1) {
      c.block_size = 8;
      c.o.chunk_size = 256 * sf::MiB;
    } else {
      c.block_size = std::size_t{64} << (20 + (b >> 1) % 5);
      c.o.chunk_size = std::size_t{16} << 30;
    }
  }
  c.o.forward_large = (d & 1) != 0;
  static constexpr std::size_t empties[] = {0, 1, 1, 4};
  c.o.max_empty_chunks = empties[(d >> 1) & 3];
  c.o.huge_pages = (d & 8) != 0;
  c.o.checks = (r >> 15) != 0 ? strata::check_mode::strict : strata::check_mode::standard;
  // Caps: none, or whole chunks, or odd amounts (3 MiB, a chunk and a bit).
  switch ((d >> 4) % 6) {
    case 0: case 1: case 2: c.o.max_bytes = 0; break;
    case 3: c.o.max_bytes = 3 * sf::MiB; break;
    case 4: c.o.max_bytes = (c.o.chunk_size != 0 ? c.o.chunk_size : 64 * sf::KiB) * (1 + (b & 3)); break;
    default: c.o.max_bytes = 64 * sf::KiB + (r % 4096) * 64; break;
  }
  if (c.o.chunk_size > 4 * sf::MiB) c.o.max_bytes = 0;
  char buf[260];
  std::snprintf(buf, sizeof buf,
                "%s(block_size=%zu){max_bytes=%zu chunk_size=%zu forward_large=%d max_empty_chunks=%zu huge_pages=%d "
                "checks=%s}",
                target_name, c.block_size, c.o.max_bytes, c.o.chunk_size, c.o.forward_large ? 1 : 0,
                c.o.max_empty_chunks, c.o.huge_pages ? 1 : 0,
                c.o.checks == strata::check_mode::strict ? "strict" : "standard");
  desc = buf;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sf::init(target_name);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sf::run_resource_target(data, size,
                                 [](sf::upstream_env& env, sf::reader& in, std::string& desc) -> std::unique_ptr<pool_subject> {
                                   pool_config c = decode(in, env, desc);
                                   std::unique_ptr<pool_subject> s;
                                   try {
                                     s = std::make_unique<pool_subject>(c.block_size, c.o, env);
                                   } catch (const std::invalid_argument&) {
                                     // Options the pool rejects (a chunk too small for the block): its default chunk.
                                     c.o.chunk_size = 0;
                                     if (c.o.max_bytes != 0 && c.o.max_bytes < 64 * sf::KiB) c.o.max_bytes = 0;
                                     try {
                                       s = std::make_unique<pool_subject>(c.block_size, c.o, env);
                                     } catch (const std::invalid_argument&) {
                                       return nullptr;
                                     }
                                     desc += " (chunk_size rejected: default)";
                                   }
                                   char buf[120];
                                   std::snprintf(buf, sizeof buf, " -> chunk %zu, %zu blocks per chunk, capacity %zu",
                                                 s->r().chunk_size(), s->per_chunk(), s->r().capacity_blocks());
                                   desc += buf;
                                   return s;
                                 });
}
