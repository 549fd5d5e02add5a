// SPDX-License-Identifier: MIT
// examples/game_frame_loop.cpp: a game's frame loop. Particles live for a few frames each, all the same size: a
// fixed pool with a hard budget holds them (past the budget a spawn fails, and the game drops the effect instead of
// growing). Everything a frame computes and throws away (the visible list, sort keys, a debug overlay's text) comes
// from an arena that a scope rewinds at the end of the frame: no frees, and after the first frames no upstream calls.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory_resource>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <strata/arena_resource.hpp>
#include <strata/fixed_pool_resource.hpp>

namespace {

struct particle {
  float x, y, z;
  float vx, vy, vz;
  float life;   // seconds left
  float size;
  std::uint32_t colour;
  std::uint32_t emitter;
};

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("  FAILED: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  std::printf("strata example: a frame loop with particles on a capped fixed pool and per-frame scratch on an arena\n");

  // The particle budget: 1 MiB of 40-byte particles. The pool reserves it up front (address space; pages arrive as
  // they are touched) and never takes more.
  strata::fixed_pool_options budget;
  budget.max_bytes = std::size_t{1} << 20;
  budget.huge_pages = false;  // a small pool: no 2 MiB page for it
  strata::fixed_pool_resource particles(sizeof(particle), budget);
  std::pmr::polymorphic_allocator<particle> particle_alloc(&particles);
  const std::size_t max_particles = particles.capacity_blocks();

  // The frame's scratch memory: 256 KiB chunks, kept from frame to frame.
  strata::arena_options scratch_options;
  scratch_options.initial_size = std::size_t{256} << 10;
  strata::arena_resource scratch(scratch_options);

  std::vector<particle*> live;  // the game's own list (the default heap: it lives across frames)
  live.reserve(max_particles);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uint64_t spawned = 0, dropped = 0, expired = 0, drawn = 0;
  std::uint64_t upstream_after_warmup = 0;
  std::size_t chunks_after_warmup = 0;
  constexpr int frames = 300;
  constexpr float dt = 1.0f / 60.0f;

  for (int frame = 0; frame < frames; ++frame) {
    strata::arena_resource::scope frame_scope(scratch);  // everything below is freed when the frame ends

    // Spawn: bursts that sometimes ask for more than the budget has room for.
    const int burst = frame % 60 == 0 ? 20000 : 300;
    for (int i = 0; i < burst; ++i) {
      particle* p = nullptr;
      try {
        p = particle_alloc.allocate(1);
      } catch (const std::bad_alloc&) {
        ++dropped;  // over budget: the effect is drawn with fewer particles
        continue;
      }
      *p = particle{unit(rng), unit(rng), unit(rng), unit(rng), unit(rng) + 2.0f, unit(rng), 1.0f + unit(rng) * 0.5f,
                    0.05f, 0xffa040u, static_cast<std::uint32_t>(frame)};
      live.push_back(p);
      ++spawned;
    }

    // Simulate: move, age, free the ones that died.
    for (std::size_t i = 0; i < live.size();) {
      particle* p = live[i];
      p->vy -= 9.81f * dt;
      p->x += p->vx * dt;
      p->y += p->vy * dt;
      p->z += p->vz * dt;
      p->life -= dt;
      if (p->life <= 0.0f) {
        particle_alloc.deallocate(p, 1);
        live[i] = live.back();
        live.pop_back();
        ++expired;
      } else {
        ++i;
      }
    }

    // Draw: the visible ones, sorted back to front, in scratch memory.
    std::pmr::vector<const particle*> visible(&scratch);
    for (const particle* p : live)
      if (p->z > -0.5f) visible.push_back(p);
    std::pmr::vector<float> depth(&scratch);
    depth.reserve(visible.size());
    for (const particle* p : visible) depth.push_back(p->z);
    std::sort(visible.begin(), visible.end(), [](const particle* a, const particle* b) { return a->z > b->z; });
    drawn += visible.size();

    // A debug overlay's text, built every frame.
    std::pmr::string overlay(&scratch);
    overlay += "frame ";
    overlay += std::to_string(frame);
    overlay += ": ";
    overlay += std::to_string(live.size());
    overlay += " particles, ";
    overlay += std::to_string(visible.size());
    overlay += " visible";
    if (frame % 120 == 0) std::printf("  %s; scratch in use %zu B\n", overlay.c_str(), scratch.stats().bytes_in_use);

    if (frame == 120) {
      upstream_after_warmup = scratch.stats().upstream_allocations;
      chunks_after_warmup = scratch.chunk_count();
    }
  }

  for (particle* p : live) particle_alloc.deallocate(p, 1);
  const auto ps = particles.stats();
  const auto ss = scratch.stats();
  std::printf("  particles: %llu spawned, %llu expired, %llu dropped over the budget of %zu; pool held %zu B, peak "
              "in use %zu B\n",
              static_cast<unsigned long long>(spawned), static_cast<unsigned long long>(expired),
              static_cast<unsigned long long>(dropped), max_particles, ps.bytes_held, ps.peak_bytes_in_use);
  std::printf("  scratch: %llu allocations in %d frames, %llu upstream calls (%llu in the first 120 frames), %zu "
              "chunks, %zu B held\n",
              static_cast<unsigned long long>(ss.allocations), frames,
              static_cast<unsigned long long>(ss.upstream_allocations),
              static_cast<unsigned long long>(upstream_after_warmup), scratch.chunk_count(), ss.bytes_held);

  expect(dropped > 0, "the bursts ran into the particle budget");
  expect(ps.peak_bytes_in_use <= budget.max_bytes, "the pool never went past its budget");
  expect(ps.bytes_held <= budget.max_bytes, "the pool never held more than its budget");
  expect(ps.bytes_in_use == 0 && ps.live_allocations() == 0, "every particle went back to the pool");
  expect(spawned == expired + live.size(), "every particle was simulated until it died or the game ended");
  expect(ss.bytes_in_use == 0, "each frame's scope gave its scratch memory back");
  expect(ss.upstream_allocations == upstream_after_warmup && scratch.chunk_count() == chunks_after_warmup,
         "after the first frames, the scratch arena took nothing more from upstream");
  expect(drawn > 0, "something was drawn");
  expect(particles.check_invariants() && scratch.check_invariants(), "both resources' invariants hold");
  std::printf("%s\n", failures == 0 ? "  ok" : "  FAILED");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
