// SPDX-License-Identifier: MIT
// fuzz/make_seeds.cpp: writes the seed corpora (fuzz/corpus/<target>/seed-NN): for each target a few inputs that
// cover its option sets, upstream kinds and modes (plain, misuse, cross-thread, destroyed with live blocks), each
// followed by a deterministic mix of operations. Usage: fuzz_make_seeds <corpus-dir>. The committed corpora were
// made by it and then grown by short runs merged with -merge=1 (fuzz/run.sh --merge).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct rng {
  std::uint64_t s;
  std::uint8_t next() {
    s += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<std::uint8_t>(z ^ (z >> 31));
  }
};

// Upstream kinds (harness.hpp): 0 default pages, 1 own pages, 2 heap, 3 monotonic, 4 boost heap, 5 boost monotonic,
// 6 recorded pages. Kinds 1 and 6 read two page-option bytes next.
bool has_page_options(std::uint8_t upstream) { return upstream % 7 == 1 || upstream % 7 == 6; }

/// A deterministic op stream: allocation-heavy first, then a mix with frees, resizes, batches, trims, checks,
/// faults and (when the flags allow) misuse.
std::vector<std::uint8_t> ops(rng& g, std::size_t n, bool misuse) {
  std::vector<std::uint8_t> out;
  static const std::uint8_t common[] = {0, 1, 2, 3, 4, 9, 10, 11, 16, 17, 19, 20, 21, 23, 25, 26, 29, 30, 15, 24, 28};
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t op;
    if (i < n / 5) op = static_cast<std::uint8_t>(g.next() % 9);  // allocations
    else if (misuse && g.next() % 6 == 0) op = 27;
    else op = common[g.next() % sizeof common];
    out.push_back(op);
    for (int k = 0; k < 4; ++k) out.push_back(g.next());  // arguments (unused ones start the next op)
  }
  return out;
}

void write(const std::filesystem::path& dir, int n, const std::vector<std::uint8_t>& bytes) {
  std::filesystem::create_directories(dir);
  char name[32];
  std::snprintf(name, sizeof name, "seed-%02d", n);
  std::ofstream f(dir / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::uint8_t flags_for(int i, bool thread_safe) {
  switch (i % 5) {
    case 0: return 0x00;                         // plain
    case 1: return 0x01;                         // misuse
    case 2: return thread_safe ? 0x02 : 0x00;    // 2 threads
    case 3: return thread_safe ? 0x0B : 0x31;    // 4 threads + misuse / misuse + destroyed with live blocks
    default: return 0x30;                        // destroyed with live blocks
  }
}

/// A resource target: [upstream] [page options?] [options] [flags] [ops].
void resource_target(const std::filesystem::path& root, const char* target, std::size_t option_bytes,
                     bool thread_safe, std::uint64_t seed, int count) {
  rng g{seed};
  for (int i = 0; i < count; ++i) {
    std::vector<std::uint8_t> b;
    const auto upstream = static_cast<std::uint8_t>(i % 7);
    b.push_back(upstream);
    if (has_page_options(upstream)) {
      b.push_back(g.next());
      b.push_back(g.next());
    }
    for (std::size_t k = 0; k < option_bytes; ++k) b.push_back(static_cast<std::uint8_t>(g.next() + i * 37));
    const std::uint8_t flags = flags_for(i, thread_safe);
    b.push_back(flags);
    const auto o = ops(g, 40 + static_cast<std::size_t>(i % 4) * 30, (flags & 1) != 0);
    b.insert(b.end(), o.begin(), o.end());
    write(root / target, i, b);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root = argv[1];
  {  // page_resource: [page options: 2] [flags] [ops]
    rng g{1};
    for (int i = 0; i < 10; ++i) {
      std::vector<std::uint8_t> b{g.next(), static_cast<std::uint8_t>(g.next() | (i & 2))};
      const std::uint8_t flags = flags_for(i, true);
      b.push_back(flags);
      const auto o = ops(g, 40 + static_cast<std::size_t>(i % 4) * 30, (flags & 1) != 0);
      b.insert(b.end(), o.begin(), o.end());
      write(root / "fuzz_page_resource", i, b);
    }
  }
  resource_target(root, "fuzz_bitmap", 3, false, 2, 14);
  resource_target(root, "fuzz_sync_bitmap", 3, true, 3, 14);
  resource_target(root, "fuzz_free_list", 4, false, 4, 16);
  resource_target(root, "fuzz_sync_free_list", 4, true, 5, 14);
  resource_target(root, "fuzz_fixed_pool", 5, false, 6, 16);
  resource_target(root, "fuzz_sync_fixed_pool", 5, true, 7, 14);
  resource_target(root, "fuzz_thread_cache", 3, true, 8, 14);
  for (const char* list : {"fuzz_free_list", "fuzz_sync_free_list"}) {
    // 2 MiB chunks over the default page resource, purge_threshold 64 KiB with no delay, huge pages off: a 64 KiB
    // hole is freed (its pages purged), then the chunk is carved to its end but 8 (16) bytes.
    for (std::uint8_t rest : {1, 2}) {
      std::vector<std::uint8_t> b{0, 27, 7, 2, 0, 0};
      b.insert(b.end(), {30, 16, 1});        // allocate(16, 8)
      b.insert(b.end(), {0, 5, 16, 0, 68});  // allocate(64 KiB, 8)
      b.insert(b.end(), {30, 16, 1});        // allocate(16, 8)
      b.insert(b.end(), {9, 1});             // free the 64 KiB hole
      b.insert(b.end(), {25, rest, 1});      // carve the chunk to its end minus 8 / 16 bytes
      b.insert(b.end(), {23});               // check
      write(root / list, 89 + rest, b);
    }
  }
  for (const char* pool : {"fuzz_fixed_pool", "fuzz_sync_fixed_pool"}) {
    // The extreme chunk: 256 MiB of 8-byte blocks over an own page_resource (more than 2^24 blocks), a run of
    // exactly 2^24 blocks (the first size edge), then single blocks past slot 2^24, freed again.
    std::vector<std::uint8_t> b{1, 0x00, 0x00, 0xF0, 0x01, 0x00, 0x00, 0x00, 0x00};
    for (int i = 0; i < 2; ++i) b.insert(b.end(), {0, 7, 0, 0, 68});    // allocate(edge 0 = 2^24 blocks, alignment 8)
    for (int i = 0; i < 6; ++i) b.insert(b.end(), {30, 8, 1});         // allocate(8, 8)
    for (int i = 0; i < 8; ++i) b.insert(b.end(), {9, static_cast<std::uint8_t>(i)});  // frees
    b.insert(b.end(), {23});                                           // check
    write(root / pool, 90, b);
  }
  {  // C heap: [flags] [ops]
    rng g{9};
    for (int i = 0; i < 10; ++i) {
      std::vector<std::uint8_t> b{flags_for(i, true)};
      const auto o = ops(g, 40 + static_cast<std::size_t>(i % 4) * 30, (b[0] & 1) != 0);
      b.insert(b.end(), o.begin(), o.end());
      write(root / "fuzz_c_heap", i, b);
    }
  }
  return 0;
}
