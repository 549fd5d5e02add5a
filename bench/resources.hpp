// SPDX-License-Identifier: MIT
// bench/resources.hpp: the registry of resources strata-bench compares, and the holder that owns one of them.
#pragma once

#include <memory>
#include <memory_resource>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "workloads.hpp"

namespace strata_bench {

/// What a resource can serve. A resource runs a workload only where it fits (see fits()).
enum resource_flags : unsigned {
  thread_safe = 1U << 0,      ///< may be shared by threads: runs the threaded workloads
  small_blocks = 1U << 1,     ///< serves small-object workloads (fixed and mixed sizes)
  large_blocks = 1U << 2,     ///< serves large-block workloads
  fixed_size_only = 1U << 3,  ///< built for the workload's one fixed_size: small_fixed workloads only
  never_frees = 1U << 4,      ///< deallocate is a no-op: skips memory figures and large-block churn
  linear_search = 1U << 5,    ///< O(free blocks) allocation: among small-mixed workloads only the fragmented_* and
                              ///< mixed_lifo ones (a long random churn would take minutes)
};

/// Owns a resource for the length of one run, with whatever it is built on (an upstream, a pool made for the
/// workload's block size, an adapter), and exposes the std::pmr::memory_resource the workload uses. Parts are
/// destroyed in reverse order of emplace(), so a part may refer to the ones emplaced before it.
class resource_holder {
 public:
  resource_holder() = default;
  resource_holder(const resource_holder&) = delete;
  resource_holder& operator=(const resource_holder&) = delete;
  ~resource_holder() {
    while (!parts_.empty()) parts_.pop_back();
  }

  /// Constructs a T from `args` that lives as long as the holder; returns it.
  template <class T, class... Args>
  T& emplace(Args&&... args) {
    auto part = std::make_shared<T>(std::forward<Args>(args)...);
    T& ref = *part;
    parts_.push_back(std::move(part));
    return ref;
  }

  /// Sets the resource the workload runs against (owned by this holder or not).
  void expose(std::pmr::memory_resource& r) noexcept { top_ = &r; }
  [[nodiscard]] std::pmr::memory_resource* get() const noexcept { return top_; }

 private:
  std::vector<std::shared_ptr<void>> parts_;
  std::pmr::memory_resource* top_ = nullptr;
};

using holder_ptr = std::unique_ptr<resource_holder>;

/// A holder owning an R built from `args`, exposed as is.
template <class R, class... Args>
holder_ptr make_holder(Args&&... args) {
  auto h = std::make_unique<resource_holder>();
  h->expose(h->emplace<R>(std::forward<Args>(args)...));
  return h;
}

/// A holder owning an Inner built from `args` and an Outer built from a pointer to it; exposes Outer. For adapters
/// (Outer = strata::std_resource_adapter over a Boost resource) and for a resource over its own upstream.
template <class Outer, class Inner, class... Args>
holder_ptr make_layered(Args&&... args) {
  auto h = std::make_unique<resource_holder>();
  Inner& inner = h->emplace<Inner>(std::forward<Args>(args)...);
  h->expose(h->emplace<Outer>(&inner));
  return h;
}

/// A holder that owns nothing and exposes `r` (e.g. std::pmr::new_delete_resource()).
inline holder_ptr make_ref(std::pmr::memory_resource* r) {
  auto h = std::make_unique<resource_holder>();
  h->expose(*r);
  return h;
}

/// Builds a fresh resource for the workload `w` (called once per child process).
using resource_factory = holder_ptr (*)(const workload_info& w);

/// One registry entry. Adding a resource is one line in resources.cpp.
struct resource_entry {
  const char* name;
  unsigned flags;  ///< resource_flags
  resource_factory make;
  /// For malloc peers: the shared library the child runs under LD_PRELOAD (e.g. "libmimalloc.so.2") and the
  /// environment variable that overrides where it is (e.g. "STRATA_BENCH_MIMALLOC=/opt/lib/libmimalloc.so"). The
  /// child checks that malloc really comes from it, so a lost preload is a failure, never a glibc figure in disguise.
  const char* preload = nullptr;
  const char* preload_env = nullptr;
};

/// Every resource built into this binary, in report order.
const std::vector<resource_entry>& resources();

/// The resource called `name`, or nullptr.
const resource_entry* find_resource(std::string_view name);

/// Whether `r` runs workload `w`.
bool fits(const resource_entry& r, const workload_info& w) noexcept;

/// Resources known to the harness but left out of this build, with the reason (e.g. a library not found).
const std::vector<std::pair<std::string, std::string>>& absent_resources();

/// Where the preload library of `r` is: the environment override if set, else the first of the usual library
/// directories that has it. Empty when not found (then `why` says what was looked for). Empty `why` and result for
/// resources that need no preload.
std::string find_preload(const resource_entry& r, std::string& why);

/// Child-side check that the preload of `r` is really in place. Returns false with a reason in `why`.
bool preload_active(const resource_entry& r, std::string& why);

}  // namespace strata_bench
