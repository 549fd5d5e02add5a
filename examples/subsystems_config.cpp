// SPDX-License-Identifier: MIT
// examples/subsystems_config.cpp: a program whose subsystems take their memory resources from a config file at run
// time, and print what each one holds, as a table and as JSON.
//
//   example_subsystems_config [config-file]     (default: subsystems.conf next to this source)
//
// The environment overrides the file per subsystem (STRATA_RESOURCE_AI=thread_cache ...), and a subsystem the file
// does not name gets the default, a thread_cache_resource of its own.
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <map>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <strata/stats_io.hpp>
#include <strata/subsystem.hpp>

#ifndef STRATA_EXAMPLE_CONFIG
#define STRATA_EXAMPLE_CONFIG "subsystems.conf"
#endif

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("  FAILED: %s\n", what);
    ++failures;
  }
}

struct body {  // 96 bytes: the physics pool's block size
  double position[3], velocity[3], orientation[4], mass, restitution;
};

const char* source_name(strata::spec_source s) {
  switch (s) {
    case strata::spec_source::code: return "code";
    case strata::spec_source::environment: return "environment";
    case strata::spec_source::file: return "file";
    case strata::spec_source::fallback: return "default";
  }
  return "?";
}

void print_table(const char* when) {
  std::printf("\n  %s\n  %-8s %-12s %-11s %12s %12s %12s %10s\n", when, "name", "resource", "from", "in use",
              "peak", "held", "allocs");
  for (const auto& s : strata::subsystems()) {
    const auto st = s.r->stats();
    std::printf("  %-8s %-12s %-11s %12zu %12zu %12zu %10llu\n", s.name.c_str(), s.r->name(), source_name(s.source),
                st.bytes_in_use, st.peak_bytes_in_use, st.bytes_held,
                static_cast<unsigned long long>(st.allocations));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string config = argc > 1 ? argv[1] : STRATA_EXAMPLE_CONFIG;
  std::printf("strata example: subsystems whose resources come from %s\n", config.c_str());
  try {
    strata::load_subsystem_config(config);
  } catch (const std::exception& e) {
    std::printf("  FAILED: %s\n", e.what());
    return EXIT_FAILURE;
  }

  strata::resource& physics = strata::subsystem("physics");
  strata::resource& ai = strata::subsystem("ai");
  strata::resource& net = strata::subsystem("net");
  strata::resource& render = strata::subsystem("render");
  strata::resource& audio = strata::subsystem("audio");  // not in the file: the default
  for (const auto& s : strata::subsystems()) std::printf("  %-8s = %-60s (%s)\n", s.name.c_str(), s.spec.c_str(),
                                                         s.origin.c_str());

  {
    // Each subsystem does its work with std::pmr containers on its own resource.
    std::pmr::vector<body*> bodies(&audio);  // the list itself is small bookkeeping: any resource will do
    std::pmr::polymorphic_allocator<body> body_alloc(&physics);
    for (int i = 0; i < 20000; ++i) bodies.push_back(new (body_alloc.allocate(1)) body{});

    std::pmr::map<int, std::pmr::string> blackboard(&ai);
    for (int i = 0; i < 20000; ++i) blackboard.emplace(i, std::pmr::string("target_" + std::to_string(i), &ai));

    std::pmr::list<std::pmr::vector<char>> connections(&net);
    for (int i = 0; i < 500; ++i) connections.emplace_back(static_cast<std::size_t>(512 + (i * 7919) % 60000), 'x');
    for (auto it = connections.begin(); it != connections.end();) it = std::next(connections.erase(it));  // half close

    std::pmr::vector<std::pmr::vector<int>> commands(&render);
    for (int pass = 0; pass < 16; ++pass) commands.emplace_back(4096, pass);

    std::pmr::unordered_map<int, float> mixer(&audio);
    for (int i = 0; i < 1000; ++i) mixer.emplace(i, 0.5f);

    print_table("while the subsystems hold their data:");
    expect(physics.stats().live_allocations() == 20000, "physics holds its 20,000 bodies");
    expect(physics.stats().bytes_held <= (std::size_t{8} << 20), "physics stays inside its budget");
    expect(net.stats().free_blocks > 0, "net's free list has holes where connections closed");

    std::printf("\n  net as JSON (the free list, the tracking adaptor under it, the page resource):\n%s\n",
                strata::stats_json(net).c_str());

    for (body* b : bodies) body_alloc.deallocate(b, 1);  // trivially destructible
  }

  print_table("after the work:");
  for (const auto& s : strata::subsystems()) {
    if (s.r->stats().bytes_in_use != 0) {
      std::printf("  %s still has %zu bytes in use\n", s.name.c_str(), s.r->stats().bytes_in_use);
      expect(false, "every subsystem got its memory back");
    }
  }
  for (const auto& s : strata::subsystems()) {
    const std::string strategy = s.spec.substr(0, s.spec.find_first_of("( >"));
    if (strategy != s.r->name()) {
      std::printf("  %s: built a %s from \"%s\"\n", s.name.c_str(), s.r->name(), s.spec.c_str());
      expect(false, "each subsystem's resource is the strategy its spec names");
    }
  }
  const char* audio_env = std::getenv("STRATA_RESOURCE_AUDIO");
  expect(audio_env != nullptr || std::string(audio.name()) == "thread_cache",
         "a subsystem the file does not name gets the default");
  const std::string all = strata::stats_json(render);
  expect(all.size() > 2 && all.front() == '{' && all.back() == '}', "the JSON is one object");

  std::printf("\n%s\n", failures == 0 ? "  ok" : "  FAILED");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
