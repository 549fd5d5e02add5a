// SPDX-License-Identifier: MIT
// tests/boost_interop_test.cpp: Boost.Container pmr containers on strata resources, and the reverse.
#include <strata/boost_interop.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include <boost/container/pmr/flat_map.hpp>
#include <boost/container/pmr/global_resource.hpp>
#include <boost/container/pmr/stable_vector.hpp>
#include <boost/container/pmr/unsynchronized_pool_resource.hpp>
#include <boost/container/pmr/vector.hpp>
#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>

TEST_CASE("boost interop: boost::container::pmr containers on a strata resource") {
  strata::testing::recording_resource rec(strata::default_page_resource());  // checks every deallocation
  strata::boost_resource_adapter adapter(&rec);
  {
    boost::container::pmr::vector<int> v(&adapter);
    for (int i = 0; i < 10000; ++i) v.push_back(i);
    boost::container::pmr::flat_map<int, int> m(&adapter);
    for (int i = 0; i < 5000; ++i) m.emplace(i * 7 % 5000, i);
    boost::container::pmr::stable_vector<std::string> s(&adapter);
    for (int i = 0; i < 2000; ++i) s.emplace_back(std::to_string(i));
    CHECK(v[9999] == 9999);
    CHECK(m.size() == 5000);
    CHECK(m.at(7) == 1);
    CHECK(s[1234] == "1234");
    CHECK(rec.live_blocks() > 0);
  }
  CHECK(rec.live_blocks() == 0);
  CHECK(rec.mismatches() == 0);
  CHECK(adapter.target() == &rec);
}

TEST_CASE("boost interop: a Boost pool serves std::pmr containers and is_equal follows the target") {
  strata::testing::recording_resource rec;
  strata::boost_resource_adapter up(&rec);  // strata -> boost, as the pool's upstream
  {
    boost::container::pmr::unsynchronized_pool_resource pool(&up);
    strata::std_resource_adapter as_std(&pool);  // boost -> std
    std::pmr::vector<std::pmr::string> v(&as_std);
    for (int i = 0; i < 1000; ++i) v.emplace_back(std::to_string(i) + std::string(40, 'y'));
    CHECK(v[999].substr(0, 3) == "999");
    strata::std_resource_adapter same(&pool);
    CHECK(as_std.is_equal(same));
    boost::container::pmr::unsynchronized_pool_resource other_pool(&up);
    strata::std_resource_adapter other(&other_pool);
    CHECK_FALSE(as_std.is_equal(other));
    strata::boost_resource_adapter up2(&rec);
    CHECK(up.is_equal(up2));
  }
  CHECK(rec.live_blocks() == 0);  // the pool gave everything back
  CHECK(rec.mismatches() == 0);
}

namespace {
/// Returns memory aligned to 16 but never to more, whatever alignment is asked: an upstream that ignores alignment.
class misaligning_resource final : public std::pmr::memory_resource {
 public:
  std::size_t live = 0;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    auto* raw = static_cast<char*>(::operator new(bytes + 64, std::align_val_t{64}));
    ++live;
    return raw + (alignment > 16 ? 16 : 0);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    ::operator delete(static_cast<char*>(p) - (alignment > 16 ? 16 : 0), bytes + 64, std::align_val_t{64});
    --live;
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

template <class R>
std::unique_ptr<R> make(std::pmr::memory_resource* up) {
  if constexpr (std::is_constructible_v<R, std::size_t, std::pmr::memory_resource*>)
    return std::make_unique<R>(24, up);  // a pool of 24-byte blocks
  else
    return std::make_unique<R>(up);
}

template <class R>
void works_over_boost_new_delete() {
  // Boost's new_delete_resource ignores alignment: the adapter aligns what it forwards.
  strata::std_resource_adapter boost_heap(boost::container::pmr::new_delete_resource());
  strata::testing::recording_resource rec(&boost_heap);
  {
    auto owner = make<R>(&rec);
    R& r = *owner;
    std::vector<std::pair<void*, std::pair<std::size_t, std::size_t>>> live;
    std::size_t misaligned = 0;
    for (std::size_t i = 0; i < 3000; ++i) {
      const std::size_t size = i % 7 == 0 ? 70000 + i : 1 + (i * 37) % 3000;
      const std::size_t alignment = std::size_t{1} << (i % 13);
      void* p = r.allocate(size, alignment);
      misaligned += (reinterpret_cast<std::uintptr_t>(p) & (alignment - 1)) != 0;
      std::memset(p, 0x5a, size);
      live.push_back({p, {size, alignment}});
      if (i % 3 == 0) {
        auto [q, sa] = live[(i * 7919) % live.size()];
        r.deallocate(q, sa.first, sa.second);
        live[(i * 7919) % live.size()] = live.back();
        live.pop_back();
      }
    }
    CHECK(misaligned == 0);
    CHECK(r.check_invariants());
    for (auto& [q, sa] : live) r.deallocate(q, sa.first, sa.second);
    CHECK(r.stats().live_allocations() == 0);
    CHECK(r.check_invariants());
  }
  CHECK(rec.live_blocks() == 0);
  CHECK(rec.mismatches() == 0);
}

template <class R>
void refuses_misaligned_upstream() {
  misaligning_resource bad;
  {
    auto owner = make<R>(&bad);
    R& r = *owner;
    CHECK_THROWS_AS((void)r.allocate(32, 8), std::bad_alloc);        // its chunk is misaligned
    CHECK_THROWS_AS((void)r.allocate(1 << 20, 4096), std::bad_alloc);  // so is a large block
    CHECK(bad.live <= 1);  // at most the table of large blocks (16-aligned, as it asked)
    CHECK(r.stats().live_allocations() == 0);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
  CHECK(bad.live == 0);
}
}  // namespace

TEST_CASE_TEMPLATE("boost interop: every strategy works over Boost's new_delete_resource", R, strata::bitmap_resource,
                   strata::synchronized_bitmap_resource, strata::free_list_resource,
                   strata::synchronized_free_list_resource) {
  works_over_boost_new_delete<R>();
}

TEST_CASE_TEMPLATE("boost interop: an upstream that ignores alignment makes allocate throw bad_alloc, holding nothing",
                   R, strata::bitmap_resource, strata::synchronized_bitmap_resource, strata::free_list_resource,
                   strata::synchronized_free_list_resource) {
  refuses_misaligned_upstream<R>();
}

TEST_CASE_TEMPLATE("boost interop: pools and the thread cache work over Boost's new_delete_resource", R,
                   strata::fixed_pool_resource, strata::synchronized_fixed_pool_resource,
                   strata::thread_cache_resource) {
  works_over_boost_new_delete<R>();
}

TEST_CASE_TEMPLATE("boost interop: pools and the thread cache refuse an upstream that ignores alignment", R,
                   strata::fixed_pool_resource, strata::synchronized_fixed_pool_resource,
                   strata::thread_cache_resource) {
  refuses_misaligned_upstream<R>();
}
