// SPDX-License-Identifier: MIT
// bench/resources.cpp: the registry. Adding a resource is one line in resources() below.
#include "resources.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <new>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/strata.h>
#include <strata/thread_cache_resource.hpp>
#include <strata/page_resource.hpp>

#if defined(STRATA_BENCH_HAVE_BOOST)
#include <boost/container/pmr/synchronized_pool_resource.hpp>
#include <boost/container/pmr/unsynchronized_pool_resource.hpp>
#include <strata/boost_interop.hpp>
#endif

#if defined(STRATA_BENCH_HAVE_FOONATHAN)
#include <foonathan/memory/memory_pool.hpp>
#endif

namespace strata_bench {
namespace {

/// The malloc peers: operator new/delete, with the allocator chosen by LD_PRELOAD in the child.
holder_ptr new_delete(const workload_info&) { return make_ref(std::pmr::new_delete_resource()); }

/// A free_list_resource with default options but the fit policy `P` (over the default page_resource).
template <strata::fit_policy P>
holder_ptr free_list_with(const workload_info&) {
  strata::free_list_options o;
  o.policy = P;
  return make_holder<strata::free_list_resource>(o);
}

/// The C API's default heap (<strata/strata.h>) behind a memory_resource: the same one virtual call as the C++
/// resources' rows, then strata_malloc/strata_free (strata_aligned_* when the workload asks for more alignment than
/// a plain allocation of that size gets), so the row against strata_thread_cache is the shim's own cost.
class c_api_resource final : public std::pmr::memory_resource {
  static std::size_t plain_alignment(std::size_t n) noexcept { return n >= 16 ? 16 : 8; }  // strata.h's promise
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    void* p = alignment <= plain_alignment(bytes) ? strata_malloc(bytes) : strata_malloc_aligned(bytes, alignment);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (alignment <= plain_alignment(bytes)) strata_free(p, bytes);
    else strata_free_aligned(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

#if defined(STRATA_BENCH_HAVE_FOONATHAN)
/// A std::pmr::memory_resource over a foonathan::memory::memory_pool built for one node size (the workload's fixed
/// size, rounded up to its alignment). A request that does not fit a node (larger, or more aligned) goes to
/// operator new; the fixed-size workloads never make one.
class foonathan_pool_resource final : public std::pmr::memory_resource {
  using pool_type = foonathan::memory::memory_pool<>;
  using traits = foonathan::memory::allocator_traits<pool_type>;

 public:
  foonathan_pool_resource(std::size_t node_size, std::size_t alignment)
      : pool_(round_up(node_size, alignment), pool_type::min_block_size(round_up(node_size, alignment), 4096)),
        node_alignment_(traits::max_alignment(pool_)) {}

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (in_pool(bytes, alignment)) return pool_.allocate_node();
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (in_pool(bytes, alignment)) {
      pool_.deallocate_node(p);
    } else {
      ::operator delete(p, bytes, std::align_val_t{alignment});
    }
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

 private:
  static std::size_t round_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }
  bool in_pool(std::size_t bytes, std::size_t alignment) const noexcept {
    return bytes <= pool_.node_size() && alignment <= node_alignment_;
  }

  pool_type pool_;
  std::size_t node_alignment_;
};
#endif

}  // namespace

const std::vector<resource_entry>& resources() {
  // name, flags, factory [, preload library, its environment override]
  static const std::vector<resource_entry> all = {
      {"strata_page", thread_safe | large_blocks,
       [](const workload_info&) { return make_holder<strata::page_resource>(); }},
      {"strata_bitmap", small_blocks, [](const workload_info&) { return make_holder<strata::bitmap_resource>(); }},
      {"strata_bitmap_strict", small_blocks,
       [](const workload_info&) {
         strata::bitmap_options o;
         o.checks = strata::check_mode::strict;
         return make_holder<strata::bitmap_resource>(o);
       }},
      {"strata_sync_bitmap", thread_safe | small_blocks,
       [](const workload_info&) { return make_holder<strata::synchronized_bitmap_resource>(); }},
      {"strata_sync_bitmap_strict", thread_safe | small_blocks,
       [](const workload_info&) {
         strata::bitmap_options o;
         o.checks = strata::check_mode::strict;
         return make_holder<strata::synchronized_bitmap_resource>(o);
       }},
      {"strata_fixed_pool", small_blocks | fixed_size_only,
       [](const workload_info& w) { return make_holder<strata::fixed_pool_resource>(w.fixed_size); }},
      {"strata_sync_fixed_pool", thread_safe | small_blocks | fixed_size_only,
       [](const workload_info& w) { return make_holder<strata::synchronized_fixed_pool_resource>(w.fixed_size); }},
      {"strata_free_list", small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<strata::free_list_resource>(); }},
      {"strata_free_list_first", small_blocks | large_blocks | linear_search, free_list_with<strata::fit_policy::first_fit>},
      {"strata_free_list_next", small_blocks | large_blocks | linear_search, free_list_with<strata::fit_policy::next_fit>},
      {"strata_free_list_best", small_blocks | large_blocks | linear_search, free_list_with<strata::fit_policy::best_fit>},
      {"strata_sync_free_list", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<strata::synchronized_free_list_resource>(); }},
      {"strata_thread_cache", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<strata::thread_cache_resource>(); }},
      {"strata_thread_cache_strict", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) {
         strata::thread_cache_options o;
         o.checks = strata::check_mode::strict;
         return make_holder<strata::thread_cache_resource>(o);
       }},
      {"strata_c_api", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<c_api_resource>(); }},
      {"glibc", thread_safe | small_blocks | large_blocks, new_delete},
      {"mimalloc", thread_safe | small_blocks | large_blocks, new_delete, "libmimalloc.so.2", "STRATA_BENCH_MIMALLOC"},
      {"jemalloc", thread_safe | small_blocks | large_blocks, new_delete, "libjemalloc.so.2", "STRATA_BENCH_JEMALLOC"},
      {"tcmalloc", thread_safe | small_blocks | large_blocks, new_delete, "libtcmalloc_minimal.so.4",
       "STRATA_BENCH_TCMALLOC"},
      {"std_unsync_pool", small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<std::pmr::unsynchronized_pool_resource>(); }},
      {"std_sync_pool", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) { return make_holder<std::pmr::synchronized_pool_resource>(); }},
      {"strata_arena", small_blocks | never_frees,
       [](const workload_info&) { return make_holder<strata::arena_resource>(); }},
      {"std_monotonic", small_blocks | never_frees,
       [](const workload_info&) { return make_holder<std::pmr::monotonic_buffer_resource>(); }},
#if defined(STRATA_BENCH_HAVE_BOOST)
      {"boost_unsync_pool", small_blocks | large_blocks,
       [](const workload_info&) {
         return make_layered<strata::std_resource_adapter, boost::container::pmr::unsynchronized_pool_resource>();
       }},
      {"boost_sync_pool", thread_safe | small_blocks | large_blocks,
       [](const workload_info&) {
         return make_layered<strata::std_resource_adapter, boost::container::pmr::synchronized_pool_resource>();
       }},
#endif
#if defined(STRATA_BENCH_HAVE_FOONATHAN)
      {"foonathan_pool", small_blocks | fixed_size_only,
       [](const workload_info& w) { return make_holder<foonathan_pool_resource>(w.fixed_size, w.alignment); }},
#endif
  };
  return all;
}

const std::vector<std::pair<std::string, std::string>>& absent_resources() {
  static const std::vector<std::pair<std::string, std::string>> absent = {
#if !defined(STRATA_BENCH_HAVE_BOOST)
      {"boost_unsync_pool", "Boost.Container (1.74+) was not found when strata-bench was configured"},
      {"boost_sync_pool", "Boost.Container (1.74+) was not found when strata-bench was configured"},
#endif
#if !defined(STRATA_BENCH_HAVE_FOONATHAN)
      {"foonathan_pool", "foonathan_memory was not found when strata-bench was configured"},
#endif
  };
  return absent;
}

const resource_entry* find_resource(std::string_view name) {
  for (const auto& r : resources()) {
    if (name == r.name) return &r;
  }
  return nullptr;
}

bool fits(const resource_entry& r, const workload_info& w) noexcept {
  const auto has = [&r](unsigned flag) { return (r.flags & flag) != 0; };
  if (w.threaded && !has(thread_safe)) return false;
  if (has(never_frees) && (w.measures_memory || w.kind == block_kind::large)) return false;
  switch (w.kind) {
    case block_kind::small_fixed:
      return has(small_blocks);
    case block_kind::small_mixed:
      if (has(linear_search) && std::string_view(w.name).rfind("fragmented", 0) != 0 &&
          std::string_view(w.name) != "mixed_lifo")
        return false;
      return has(small_blocks) && !has(fixed_size_only);
    case block_kind::large:
      return has(large_blocks) && !has(fixed_size_only);
  }
  return false;
}

std::string find_preload(const resource_entry& r, std::string& why) {
  why.clear();
  if (r.preload == nullptr) return {};
  if (r.preload_env != nullptr) {
    if (const char* env = std::getenv(r.preload_env); env != nullptr && *env != '\0') {
      if (::access(env, R_OK) == 0) return env;
      why = std::string(r.preload_env) + "=" + env + " not found";
      return {};
    }
  }
  static const char* const dirs[] = {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                                     "/usr/lib", "/usr/local/lib"};
  for (const char* dir : dirs) {
    std::string path = std::string(dir) + "/" + r.preload;
    if (::access(path.c_str(), R_OK) == 0) return path;
  }
  why = std::string(r.preload) + " not found";
  if (r.preload_env != nullptr) why += std::string(" (set ") + r.preload_env + "=/path/to/it)";
  return {};
}

namespace {
std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) != nullptr ? std::string(buf) : p;
}
}  // namespace

bool preload_active(const resource_entry& r, std::string& why) {
  why.clear();
  if (r.preload == nullptr) return true;
  Dl_info info{};
  void* sym = ::dlsym(RTLD_DEFAULT, "malloc");
  if (sym == nullptr || ::dladdr(sym, &info) == 0 || info.dli_fname == nullptr) {
    why = "cannot tell where malloc comes from";
    return false;
  }
  const std::string from = real_path(info.dli_fname);
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload == nullptr || *preload == '\0') {
    why = std::string("malloc comes from ") + from + ", not " + r.preload +
          " (LD_PRELOAD is not set: run it through the orchestrator, or set LD_PRELOAD yourself)";
    return false;
  }
  // LD_PRELOAD is a list separated by colons or spaces.
  std::string list = preload;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find_first_of(": ", start);
    if (end == std::string::npos) end = list.size();
    if (end > start && real_path(list.substr(start, end - start)) == from) return true;
    start = end + 1;
  }
  why = std::string("malloc comes from ") + from + ", not from LD_PRELOAD=" + preload;
  return false;
}

}  // namespace strata_bench
