// SPDX-License-Identifier: MIT
// examples/astar.cpp: A* over a large grid; every search node lives in a fixed_pool_resource, timed against the same
// search with its nodes on new/delete.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory_resource>
#include <queue>
#include <vector>

#include <strata/fixed_pool_resource.hpp>

namespace {

constexpr int side = 1000;  // grid cells per side; 15% are walls (this seed leaves a path corner to corner)

struct node {
  int x, y;
  int g;       // steps from the start
  int f;       // g + distance estimate
  node* parent;
};

struct by_f {
  bool operator()(const node* a, const node* b) const noexcept { return a->f > b->f || (a->f == b->f && a->g < b->g); }
};

std::vector<std::uint8_t> make_grid() {
  std::vector<std::uint8_t> wall(static_cast<std::size_t>(side) * side);
  std::uint64_t s = 0x5eed;
  for (auto& w : wall) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    w = (s % 100) < 15;
  }
  wall[0] = wall.back() = 0;
  return wall;
}

// Finds a shortest path from (0,0) to the far corner. Every node (one per cell reached, and one more each time a
// shorter way to a cell turns up) is allocated from `nodes`; all are freed at the end, one by one.
struct result {
  int length;
  std::size_t nodes;
  double ms;
};

result search(const std::vector<std::uint8_t>& wall, std::pmr::memory_resource& nodes) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> best(wall.size(), 1 << 30);
  std::vector<node*> all;
  all.reserve(wall.size());
  std::priority_queue<node*, std::vector<node*>, by_f> open;
  auto make = [&](int x, int y, int g, node* parent) {
    auto* n = static_cast<node*>(nodes.allocate(sizeof(node), alignof(node)));
    *n = node{x, y, g, g + (side - 1 - x) + (side - 1 - y), parent};
    all.push_back(n);
    return n;
  };
  open.push(make(0, 0, 0, nullptr));
  best[0] = 0;
  int length = -1;
  while (!open.empty()) {
    node* n = open.top();
    open.pop();
    if (n->g > best[static_cast<std::size_t>(n->y) * side + static_cast<std::size_t>(n->x)]) continue;  // stale
    if (n->x == side - 1 && n->y == side - 1) {
      length = n->g;
      break;
    }
    static constexpr int dx[] = {1, -1, 0, 0}, dy[] = {0, 0, 1, -1};
    for (int d = 0; d < 4; ++d) {
      const int x = n->x + dx[d], y = n->y + dy[d];
      if (x < 0 || y < 0 || x >= side || y >= side) continue;
      const std::size_t cell = static_cast<std::size_t>(y) * side + static_cast<std::size_t>(x);
      if (wall[cell] || n->g + 1 >= best[cell]) continue;
      best[cell] = n->g + 1;
      open.push(make(x, y, n->g + 1, n));
    }
  }
  for (node* n : all) nodes.deallocate(n, sizeof(node), alignof(node));
  const auto t1 = std::chrono::steady_clock::now();
  return {length, all.size(), std::chrono::duration<double, std::milli>(t1 - t0).count()};
}

}  // namespace

int main() {
  const auto wall = make_grid();
  std::printf("strata example: A* on a %dx%d grid, nodes on a fixed_pool_resource vs new/delete\n", side, side);
  double pool_best = 1e300, heap_best = 1e300;
  result pool_result{}, heap_result{};
  for (int round = 0; round < 3; ++round) {  // best of three: the first round also warms both allocators
    strata::fixed_pool_resource pool(sizeof(node));
    pool_result = search(wall, pool);
    heap_result = search(wall, *std::pmr::new_delete_resource());
    if (pool_result.ms < pool_best) pool_best = pool_result.ms;
    if (heap_result.ms < heap_best) heap_best = heap_result.ms;
  }
  std::printf("  path length %d, %zu nodes allocated per search\n", pool_result.length, pool_result.nodes);
  std::printf("  fixed_pool_resource: %8.1f ms\n  new/delete:          %8.1f ms  (%.2fx the pool's time)\n", pool_best,
              heap_best, heap_best / pool_best);
  return pool_result.length == heap_result.length && pool_result.length > 0 ? 0 : 1;
}
