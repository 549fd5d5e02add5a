// tests/boost_interop_test.cpp: Boost.Container pmr containers on strata resources, and the reverse.
#include <strata/boost_interop.hpp>

#include <string>
#include <vector>

#include <boost/container/pmr/flat_map.hpp>
#include <boost/container/pmr/stable_vector.hpp>
#include <boost/container/pmr/unsynchronized_pool_resource.hpp>
#include <boost/container/pmr/vector.hpp>
#include <doctest/doctest.h>

#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

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
