// SPDX-License-Identifier: MIT
// What an upstream can do for its memory (zeroed pages, purging, huge pages) reaches the strategies through
// adaptors: a pool over a recording or fault-injecting resource over a page_resource gets what it would get over the
// page_resource itself; through an adaptor that is no strata::resource it gets nothing.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <memory_resource>

#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

namespace {

// A page_resource that counts the capability calls reaching it.
class counting_pages final : public strata::resource {
 public:
  std::atomic<int> zeroed{0}, purges{0}, purged{0}, advice{0};

  [[nodiscard]] strata::page_resource& pages() noexcept { return pages_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override { return pages_.allocate(bytes, alignment); }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    pages_.deallocate(p, bytes, alignment);
  }
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override {
    return pages_.resize(p, old_size, new_size, alignment);
  }
  strata::resource_stats do_stats() const noexcept override { return pages_.stats(); }
  strata::memory_capabilities do_capabilities() const noexcept override { return pages_.capabilities(); }
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override {
    ++zeroed;
    return pages_.allocate_zeroed(bytes, alignment);
  }
  bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept override {
    ++purges;
    const bool done = pages_.purge(allocation, offset, bytes);
    if (done) ++purged;
    return done;
  }
  bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept override {
    ++advice;
    return pages_.advise_huge_pages(p, bytes);
  }

 private:
  strata::page_resource pages_;
};

// Forwards allocate and deallocate only: a std::pmr adaptor that knows nothing of strata.
class plain_adaptor final : public std::pmr::memory_resource {
 public:
  explicit plain_adaptor(std::pmr::memory_resource* upstream) : upstream_(upstream) {}

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override { return upstream_->allocate(bytes, alignment); }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    upstream_->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
  std::pmr::memory_resource* upstream_;
};

enum class adaptor { recording, fault_injecting, plain };
constexpr adaptor strata_adaptors[] = {adaptor::recording, adaptor::fault_injecting};

std::unique_ptr<std::pmr::memory_resource> make(adaptor kind, std::pmr::memory_resource* upstream) {
  switch (kind) {
    case adaptor::recording: return std::make_unique<strata::testing::recording_resource>(upstream);
    case adaptor::fault_injecting: return std::make_unique<strata::testing::fault_injecting_resource>(upstream);
    case adaptor::plain: break;
  }
  return std::make_unique<plain_adaptor>(upstream);
}

const char* name_of(adaptor kind) {
  return kind == adaptor::recording ? "recording" : kind == adaptor::fault_injecting ? "fault_injecting" : "plain";
}

bool all_zero(const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != 0) return false;
  return true;
}

}  // namespace

TEST_CASE("capabilities: a page_resource's, reported through the test kit's adaptors, none over other resources") {
  strata::page_resource pages;
  const strata::memory_capabilities c = pages.capabilities();
  CHECK(c.zeroed_pages);
  CHECK(c.purge);
  CHECK(c.resize_in_place);
  CHECK(c.page_size == strata::page_resource::page_size());
  CHECK(c.huge_page_size == strata::page_resource::huge_page_size());
  CHECK(c.huge_pages == (c.huge_page_size != 0));
  for (const adaptor kind : strata_adaptors) {
    CAPTURE(name_of(kind));
    auto over_pages = make(kind, &pages);
    const auto f = strata::as_strata_resource(over_pages.get())->capabilities();
    CHECK(f.zeroed_pages == c.zeroed_pages);
    CHECK(f.purge == c.purge);
    CHECK(f.huge_pages == c.huge_pages);
    CHECK(f.resize_in_place == c.resize_in_place);
    CHECK(f.page_size == c.page_size);
    CHECK(f.huge_page_size == c.huge_page_size);
    auto over_heap = make(kind, std::pmr::new_delete_resource());
    const auto h = strata::as_strata_resource(over_heap.get())->capabilities();
    CHECK_FALSE(h.zeroed_pages);
    CHECK_FALSE(h.purge);
    CHECK_FALSE(h.huge_pages);
    CHECK(h.page_size == 0);
  }
  CHECK(strata::as_strata_resource(std::pmr::new_delete_resource()) == nullptr);
  CHECK(strata::as_strata_resource(nullptr) == nullptr);
}

TEST_CASE("capabilities: the default allocate_zeroed clears, purge and huge page advice refuse") {
  strata::testing::recording_resource heap;  // over new_delete: nothing to forward to
  auto* p = static_cast<unsigned char*>(heap.allocate(256, 16));
  std::memset(p, 0xab, 256);
  heap.deallocate(p, 256, 16);
  auto* z = heap.allocate_zeroed(256, 16);
  CHECK(all_zero(z, 256));
  CHECK_FALSE(heap.purge(z, 0, 4096));
  CHECK_FALSE(heap.advise_huge_pages(z, 256));
  heap.deallocate(z, 256, 16);
  CHECK_THROWS_AS((void)heap.allocate_zeroed(16, 3), std::invalid_argument);
}

TEST_CASE("capabilities: a fixed pool over an adaptor over a page_resource takes zeroed chunks and huge pages") {
  for (const adaptor kind : {adaptor::recording, adaptor::fault_injecting, adaptor::plain}) {
    CAPTURE(name_of(kind));
    counting_pages pages;
    auto between = make(kind, &pages);
    const bool huge = pages.capabilities().huge_pages;
    {
      strata::fixed_pool_resource::options o;
      o.huge_pages = true;
      strata::fixed_pool_resource pool(48, o, between.get());
      void* p = pool.allocate_zeroed(48, 8);
      CHECK(all_zero(p, 48));
      if (kind == adaptor::plain) {
        // Nothing known about the memory: the chunk is taken plainly and not advised.
        CHECK(pages.zeroed == 0);
        CHECK(pages.advice == 0);
      } else {
        CHECK(pages.zeroed == 1);  // the chunk came zeroed: the block was not cleared again
        CHECK(pages.advice == (huge ? 1 : 0));
      }
      pool.deallocate(p, 48, 8);
      CHECK(pool.check_invariants());
    }
    if (kind == adaptor::recording)
      CHECK(static_cast<strata::testing::recording_resource&>(*between).live_blocks() == 0);
  }
}

TEST_CASE("capabilities: a capped fixed pool's reservation through an adaptor comes zeroed") {
  for (const adaptor kind : strata_adaptors) {
    CAPTURE(name_of(kind));
    counting_pages pages;
    auto between = make(kind, &pages);
    strata::fixed_pool_resource::options o;
    o.max_bytes = std::size_t{4} << 20;
    strata::fixed_pool_resource pool(64, o, between.get());
    CHECK(pages.zeroed == 1);
    void* p = pool.allocate_zeroed(64, 8);
    CHECK(all_zero(p, 64));
    pool.deallocate(p, 64, 8);
  }
}

TEST_CASE("capabilities: a free list over an adaptor over a page_resource purges free pages and knows fresh ones") {
  for (const adaptor kind : {adaptor::recording, adaptor::fault_injecting, adaptor::plain}) {
    CAPTURE(name_of(kind));
    counting_pages pages;
    auto between = make(kind, &pages);
    strata::free_list_options o;
    o.chunk_size = std::size_t{1} << 20;
    o.huge_pages = false;
    o.purge_threshold = std::size_t{64} << 10;
    strata::free_list_resource list(o, between.get());
    const std::size_t big = std::size_t{200} << 10;
    void* a = list.allocate(big, 16);
    void* b = list.allocate(64, 16);  // keeps the chunk in use once a is freed
    std::memset(a, 0x5a, big);
    const auto before = list.stats();
    list.deallocate(a, big, 16);
    list.trim();  // purges the free pages of chunks still in use, now
    const auto after = list.stats();
    if (kind == adaptor::plain) {
      CHECK(pages.zeroed == 0);
      CHECK(pages.purges == 0);
      CHECK(after.bytes_resident == after.bytes_held);  // nothing known: all of it counts as resident
    } else {
      CHECK(pages.zeroed == 1);
      CHECK(pages.purged >= 1);
      CHECK(before.bytes_resident < before.bytes_held);  // the pages past a are still untouched
      CHECK(after.bytes_resident + (std::size_t{128} << 10) < before.bytes_resident);  // most of a's pages went back
    }
    CHECK(list.check_invariants());
    list.deallocate(b, 64, 16);
  }
}

TEST_CASE("capabilities: large blocks resize in place through an adaptor") {
  for (const adaptor kind : strata_adaptors) {
    CAPTURE(name_of(kind));
    strata::page_resource pages;
    auto between = make(kind, &pages);
    strata::free_list_resource list(strata::free_list_options{}, between.get());
    const std::size_t big = std::size_t{2} << 20;  // above the large threshold: one upstream block
    void* p = list.allocate(big, 16);
    CHECK(list.resize(p, big, big * 2, 16));  // page_resource reserves room after large spans
    CHECK(list.resize(p, big * 2, big, 16));
    list.deallocate(p, big, 16);
    CHECK(list.check_invariants());
  }
}
