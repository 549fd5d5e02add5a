// SPDX-License-Identifier: MIT
// tests/debug_resource_test.cpp: debug_resource finds each heap bug it is made for, reports it with the block and its
// call site, and changes nothing it must not. The conformance suite (conformance.cpp) covers the rest. Guarded mode's
// faults are shown in child processes.
#include <strata/debug_resource.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

#include "support.hpp"

// Namespace scope, external linkage, never inlined, and no tail call: the reports must name it (strata_tests is
// linked with -rdynamic, so dladdr sees its functions).
void* volatile debug_test_sink = nullptr;
__attribute__((noinline)) void* debug_test_leaky_allocation(std::pmr::memory_resource& r, std::size_t size) {
  void* p = r.allocate(size);
  debug_test_sink = p;
  return p;
}

namespace {

using strata::debug_event_kind;
using strata::debug_resource;
using strata::error_kind;
using strata_test::copy_unchecked;
using strata_test::write_unchecked;

// ---- recording the resource's events -------------------------------------------------------------------------------

struct recorded {
  debug_event_kind kind;
  bool has_error = false;
  error_kind error = error_kind::foreign_pointer;
  const void* pointer = nullptr;
  std::size_t size = 0;
  std::size_t expected_size = 0;
  const void* block = nullptr;
  std::size_t block_size = 0;
  std::size_t block_alignment = 0;
  std::uint64_t sequence = 0;
  std::ptrdiff_t offset = 0;
  std::size_t frames = 0;
  std::string text;
  void* context = nullptr;
};

/// The three handlers of a debug_resource, each writing down what it is told.
struct event_log {
  std::vector<recorded> errors, warnings, messages;

  static recorded note(const strata::debug_event& e, void* context) {
    recorded r;
    r.kind = e.kind;
    if (e.error != nullptr) {
      r.has_error = true;
      r.error = e.error->kind;
      r.pointer = e.error->pointer;
      r.size = e.error->size;
      r.expected_size = e.error->expected_size;
    }
    r.block = e.block;
    r.block_size = e.size;
    r.block_alignment = e.alignment;
    r.sequence = e.sequence;
    r.offset = e.offset;
    r.frames = e.call_site_frames;
    r.text = e.text;
    r.context = context;
    return r;
  }
  static void on_error(const strata::debug_event& e, void* context) {
    static_cast<event_log*>(context)->errors.push_back(note(e, context));
  }
  static void on_warning(const strata::debug_event& e, void* context) {
    static_cast<event_log*>(context)->warnings.push_back(note(e, context));
  }
  static void on_message(const strata::debug_event& e, void* context) {
    static_cast<event_log*>(context)->messages.push_back(note(e, context));
  }

  /// `o` with every handler writing here.
  strata::debug_options options(strata::debug_options o = {}) {
    o.error = {&on_error, this};
    o.warning = {&on_warning, this};
    o.message = {&on_message, this};
    return o;
  }
  const recorded& last_error() const {
    REQUIRE_FALSE(errors.empty());
    return errors.back();
  }
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The one error so far is `kind` for pointer p, and its text says `phrase`.
void check_one_error(const event_log& log, error_kind kind, const void* p, const char* phrase) {
  REQUIRE(log.errors.size() == 1);
  const recorded& e = log.errors.back();
  CAPTURE(e.text);
  CHECK(e.kind == debug_event_kind::error);
  CHECK(e.has_error);
  CHECK(e.error == kind);
  CHECK(e.pointer == p);
  CHECK(contains(e.text, phrase));
  CHECK(contains(e.text, "debug_resource"));
}

STRATA_NO_SANITIZE_ADDRESS unsigned char read_unchecked(const void* p) noexcept {
  return *static_cast<const volatile unsigned char*>(p);
}

// Every byte of [p, p + n) reads as `byte` (read past ASan's poison: a freed block is poisoned in ASan builds).
bool all_bytes(const void* p, std::size_t n, unsigned char byte) {
  std::vector<unsigned char> copy(n);
  copy_unchecked(copy.data(), p, n);
  for (unsigned char b : copy)
    if (b != byte) return false;
  return true;
}

// ---- forked children -----------------------------------------------------------------------------------------------

using strata_test::child_result;
child_result in_child(const std::function<void()>& body) { return strata_test::run_in_child(body); }

void say(const char* line) {
  std::fwrite(line, 1, std::strlen(line), stderr);
  std::fflush(stderr);
}

// The child got to the bad access (it said so just before) and died of it (SIGSEGV; Windows: an access violation).
void check_faulted(const child_result& r) {
  CAPTURE(r.output);
  CHECK(contains(r.output, "access\n"));
  CHECK_FALSE(contains(r.output, "survived"));
  CHECK(r.faulted);
}

strata::debug_options guarded(strata::guard_mode mode) {
  strata::debug_options o;
  o.guard = mode;
  return o;
}

constexpr std::size_t guarded_sizes[] = {8, 4096, 256 << 10};

}  // namespace

// ---- canaries ------------------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: a write one byte past the end is reported at the free, and the block is kept aside") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<unsigned char*>(r.allocate(24));
  std::memset(p, 1, 24);  // the block itself is the program's to write
  CHECK(r.validate(p, 24));
  write_unchecked(p + 24, 0x41, 1);
  CHECK_FALSE(r.validate(p, 24));
  r.deallocate(p, 24);
  check_one_error(log, error_kind::buffer_overflow, p, "past its end");
  const recorded& e = log.last_error();
  CHECK(e.offset == 24);
  CHECK(e.size == 24);
  CHECK(e.block == p);
  CHECK(e.block_size == 24);
  CHECK(e.sequence == 1);
  CHECK(contains(e.text, "at offset 24 (0x41 instead of 0xfd)"));
  CHECK(contains(e.text, "allocated at"));
  // Damaged: freed as far as the program is concerned, never reused, never in the quarantine.
  CHECK(r.live_blocks() == 0);
  CHECK(r.quarantined_blocks() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  r.deallocate(p, 24);
  CHECK(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::double_free);
  CHECK(contains(log.last_error().text, "kept aside"));
  CHECK(r.check_invariants());
}

TEST_CASE("debug_resource: a write 32 bytes past the end is reported at the canary's first byte") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<unsigned char*>(r.allocate(100));
  write_unchecked(p + 100, 0x42, 32);
  r.deallocate(p, 100);
  check_one_error(log, error_kind::buffer_overflow, p, "past its end");
  CHECK(log.last_error().offset == 100);
}

TEST_CASE("debug_resource: a write one byte before the start is reported at offset -1") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<unsigned char*>(r.allocate(40, 8));
  write_unchecked(p - 1, 0x43, 1);
  r.deallocate(p, 40, 8);
  check_one_error(log, error_kind::buffer_overflow, p, "before its start");
  CHECK(log.last_error().offset == -1);
  CHECK(contains(log.last_error().text, "at offset -1 (0x43 instead of 0xfd)"));
}

TEST_CASE("debug_resource: canaries of the configured size, and blocks of every alignment keep them") {
  event_log log;
  strata::debug_options o;
  o.canary_size = 40;  // rounded up to 48
  debug_resource r(log.options(o));
  for (std::size_t alignment = 1; alignment <= 8192; alignment *= 2) {
    CAPTURE(alignment);
    auto* p = static_cast<unsigned char*>(r.allocate(13, alignment));
    CHECK(strata::detail::is_aligned(p, alignment));
    CHECK(r.validate(p, 13));
    write_unchecked(p + 13 + 47, 0x44, 1);  // the canary's last byte
    r.deallocate(p, 13, alignment);
    REQUIRE(log.errors.size() == 1);
    CHECK(log.last_error().error == error_kind::buffer_overflow);
    CHECK(log.last_error().offset == 13 + 47);
    log.errors.clear();
  }
}

TEST_CASE("debug_resource: a zero-size block's canary starts at the block") {
  event_log log;
  debug_resource r(log.options());
  void* a = r.allocate(0);
  void* b = r.allocate(0);
  CHECK(a != b);
  write_unchecked(a, 0x45, 1);
  r.deallocate(b, 0);
  CHECK(log.errors.empty());
  r.deallocate(a, 0);
  check_one_error(log, error_kind::buffer_overflow, a, "past its end");
  CHECK(log.last_error().offset == 0);
}

// ---- the quarantine ------------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: a write after free is reported when the block leaves the quarantine") {
  event_log log;
  strata::debug_options o;
  o.quarantine_bytes = 8192;
  o.backtrace_depth = 4;  // the caller alone is the standard library's allocate in an unoptimised build
  debug_resource r(log.options(o));
  void* p = debug_test_leaky_allocation(r, 100);
  r.deallocate(p, 100);
  CHECK(r.quarantined_blocks() == 1);
  CHECK(all_bytes(p, 100, debug_resource::freed_byte));
  write_unchecked(static_cast<char*>(p) + 10, 0x46, 1);
  CHECK(log.errors.empty());
  // A larger block freed later pushes it out (first in, first out).
  void* q = r.allocate(8000);
  r.deallocate(q, 8000);
  check_one_error(log, error_kind::write_after_free, p, "written to after it was freed");
  const recorded& e = log.last_error();
  CHECK(e.offset == 10);
  CHECK(e.size == 100);
  CHECK(contains(e.text, "at offset 10 (0x46 instead of 0xdd)"));
  CHECK(contains(e.text, "debug_test_leaky_allocation"));  // where it was allocated
  CHECK(contains(e.text, "freed at"));
  CHECK(r.quarantined_blocks() == 1);  // q waits; p is kept aside
  // Kept aside: a second free of it is a double free, its memory is not handed out again.
  r.deallocate(p, 100);
  CHECK(log.last_error().error == error_kind::double_free);
  for (int i = 0; i < 64; ++i) {
    void* x = r.allocate(100);
    CHECK(x != p);
    r.deallocate(x, 100);
  }
  CHECK(r.check_invariants());
}

TEST_CASE("debug_resource: check_all finds a write after free, and overflows of live blocks, without freeing them") {
  event_log log;
  debug_resource r(log.options());
  auto* a = static_cast<unsigned char*>(r.allocate(64));
  auto* b = static_cast<unsigned char*>(r.allocate(64));
  auto* c = static_cast<unsigned char*>(r.allocate(64));
  r.deallocate(b, 64);
  CHECK(r.check_all() == 0);
  write_unchecked(b + 63, 0x47, 1);  // after free
  write_unchecked(c + 64, 0x48, 2);  // past the end of a live block
  CHECK(r.check_all() == 2);
  REQUIRE(log.errors.size() == 2);
  CHECK(log.errors[0].error == error_kind::buffer_overflow);
  CHECK(log.errors[0].pointer == c);
  CHECK(log.errors[0].offset == 64);
  CHECK(log.errors[1].error == error_kind::write_after_free);
  CHECK(log.errors[1].pointer == b);
  CHECK(log.errors[1].offset == 63);
  // Nothing moved: checked again, the same two.
  CHECK(r.check_all() == 2);
  CHECK(r.live_blocks() == 2);
  CHECK(r.quarantined_blocks() == 1);
  r.deallocate(a, 64);
  CHECK(log.errors.size() == 4);
  CHECK(r.check_invariants());
}

TEST_CASE("debug_resource: the quarantine is bounded by bytes and keeps its blocks' fill until they leave") {
  event_log log;
  strata::debug_options o;
  o.quarantine_bytes = 64 << 10;
  debug_resource r(log.options(o));
  std::vector<void*> blocks;
  for (int i = 0; i < 200; ++i) blocks.push_back(r.allocate(1000));
  for (void* p : blocks) r.deallocate(p, 1000);
  CHECK(r.quarantined_bytes() <= o.quarantine_bytes);
  CHECK(r.quarantined_bytes() > o.quarantine_bytes - 2000);
  const std::size_t waiting = r.quarantined_blocks();
  CHECK(waiting > 30);
  CHECK(waiting < 70);
  // The newest ones wait, filled.
  for (std::size_t i = blocks.size() - waiting; i < blocks.size(); ++i)
    CHECK(all_bytes(blocks[i], 1000, debug_resource::freed_byte));
  CHECK(r.stats().bytes_held >= r.quarantined_bytes());
  r.trim();
  CHECK(r.quarantined_blocks() == 0);
  CHECK(r.quarantined_bytes() == 0);
  CHECK(log.errors.empty());
  CHECK(r.check_invariants());

  // Without a quarantine a block goes back at once, its fill checked first.
  o.quarantine_bytes = 0;
  event_log log0;
  debug_resource none(log0.options(o));
  void* p = none.allocate(50);
  none.deallocate(p, 50);
  CHECK(none.quarantined_blocks() == 0);
  CHECK(none.stats().upstream_deallocations == 1);
  CHECK(log0.errors.empty());
}

TEST_CASE("debug_resource: memory held in the quarantine is given back before an allocation fails") {
  strata::testing::fault_injecting_resource limited(strata::default_page_resource());
  limited.set_byte_limit(256 << 10);
  event_log log;
  debug_resource r(log.options(), &limited);
  void* a = r.allocate(100 << 10);
  r.deallocate(a, 100 << 10);
  void* b = r.allocate(100 << 10);
  r.deallocate(b, 100 << 10);
  CHECK(r.quarantined_blocks() == 2);
  void* c = r.allocate(150 << 10);  // fits only once the quarantine is empty
  CHECK(r.quarantined_blocks() == 0);
  r.deallocate(c, 150 << 10);
  CHECK_THROWS_AS((void)r.allocate(300 << 10), std::bad_alloc);
  CHECK(r.stats().failed_allocations == 1);
  CHECK(log.errors.empty());
}

// ---- exact matching of frees ---------------------------------------------------------------------------------------

TEST_CASE("debug_resource: a double free is reported at once, and after other frees, while the block waits") {
  event_log log;
  debug_resource r(log.options());
  void* a = r.allocate(32);
  void* b = r.allocate(32);
  void* c = r.allocate(32);
  r.deallocate(a, 32);
  const auto before = r.stats();
  r.deallocate(a, 32);
  check_one_error(log, error_kind::double_free, a, "freed already");
  CHECK(contains(log.last_error().text, "waits in the quarantine"));
  CHECK(contains(log.last_error().text, "freed at"));
  strata_test::check_unchanged(before, r.stats());
  r.deallocate(b, 32);
  r.deallocate(c, 32);
  r.deallocate(a, 32);
  CHECK(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::double_free);
  CHECK(log.last_error().pointer == a);
  CHECK(log.last_error().sequence == 1);
  CHECK(r.quarantined_blocks() == 3);
  CHECK(r.check_invariants());
}

TEST_CASE("debug_resource: a foreign pointer is reported and nothing changes") {
  event_log log;
  debug_resource r(log.options());
  strata::page_resource other;
  void* keep = r.allocate(64);
  void* theirs = other.allocate(64);
  const auto before = r.stats();
  r.deallocate(theirs, 64);
  check_one_error(log, error_kind::foreign_pointer, theirs, "not a block of this resource");
  strata_test::check_unchanged(before, r.stats());
  int on_stack = 0;
  r.deallocate(&on_stack, sizeof on_stack);
  CHECK(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::foreign_pointer);
  CHECK_FALSE(r.validate(&on_stack, sizeof on_stack));
  other.deallocate(theirs, 64);
  r.deallocate(keep, 64);
  CHECK(log.errors.size() == 2);
}

TEST_CASE("debug_resource: an interior pointer is a foreign pointer that names its block") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<char*>(r.allocate(100));
  const auto before = r.stats();
  r.deallocate(p + 8, 92);
  check_one_error(log, error_kind::foreign_pointer, p + 8, "into a live block");
  CHECK(log.last_error().block == p);
  CHECK(log.last_error().offset == 8);
  CHECK(contains(log.last_error().text, "at offset 8"));
  strata_test::check_unchanged(before, r.stats());
  CHECK(r.validate(p, 100));
  r.deallocate(p, 100);
  r.deallocate(p + 16, 84);
  CHECK(log.errors.size() == 2);
  CHECK(contains(log.last_error().text, "into a freed block"));
}

TEST_CASE("debug_resource: a wrong size or alignment is reported, and the block stays live") {
  event_log log;
  debug_resource r(log.options());
  void* p = r.allocate(24);
  const auto before = r.stats();
  r.deallocate(p, 25);
  check_one_error(log, error_kind::wrong_size, p, "size differs");
  CHECK(log.last_error().expected_size == 24);
  CHECK(log.last_error().size == 25);
  strata_test::check_unchanged(before, r.stats());
  void* q = r.allocate(64, 64);
  r.deallocate(q, 64, 16);
  REQUIRE(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::wrong_size);
  CHECK(contains(log.last_error().text, "alignment differs"));
  CHECK(contains(log.last_error().text, "alignment 64"));
  CHECK(log.last_error().expected_size == 64);
  CHECK(r.live_blocks() == 2);
  // A resize names the size too.
  CHECK_FALSE(r.resize(p, 23, 10));
  CHECK(log.errors.size() == 3);
  CHECK(log.last_error().error == error_kind::wrong_size);
  r.deallocate(p, 24);
  r.deallocate(q, 64, 64);
  CHECK(log.errors.size() == 3);
  CHECK(r.live_blocks() == 0);
}

TEST_CASE("debug_resource: a block freed by another family's function is reported, and stays live") {
  using strata::debug_alloc_family;
  event_log log;
  debug_resource r(log.options());
  void* single = r.allocate_as(24, 16, debug_alloc_family::new_single);
  void* array = r.allocate_as(24, 16, debug_alloc_family::new_array, true);
  CHECK(all_bytes(array, 24, 0));
  void* plain = r.allocate(24);
  r.deallocate_as(single, 24, 16, debug_alloc_family::new_array);  // delete[] of new
  check_one_error(log, error_kind::mismatched_free, single, "allocated by new, freed by delete[]");
  r.deallocate(array, 24);  // free of new[]
  CHECK(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::mismatched_free);
  CHECK(contains(log.last_error().text, "allocated by new[], freed by free"));
  r.deallocate_as(plain, debug_resource::unknown_size, 0, debug_alloc_family::new_single);  // delete of malloc'd
  CHECK(log.errors.size() == 3);
  CHECK(log.last_error().error == error_kind::mismatched_free);
  CHECK(r.live_blocks() == 3);
  // Each freed the right way, unsized and without its alignment too.
  r.deallocate_as(single, debug_resource::unknown_size, 0, debug_alloc_family::new_single);
  r.deallocate_as(array, 24, 16, debug_alloc_family::new_array);
  r.deallocate_as(plain, debug_resource::unknown_size, 0, debug_alloc_family::malloc);
  CHECK(log.errors.size() == 3);
  CHECK(r.live_blocks() == 0);
  // An unsized free still finds a double free.
  r.deallocate_as(plain, debug_resource::unknown_size, 0, debug_alloc_family::malloc);
  CHECK(log.errors.size() == 4);
  CHECK(log.last_error().error == error_kind::double_free);
}

TEST_CASE("debug_resource: allocated_size gives a live block's size and reports any other pointer") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<char*>(r.allocate(100));
  CHECK(r.allocated_size(p) == 100);
  REQUIRE(r.resize(p, 100, 60));
  CHECK(r.allocated_size(p) == 60);
  CHECK(r.round_size(60) == 60);
  CHECK(log.errors.empty());
  CHECK(r.allocated_size(p + 4) == debug_resource::unknown_size);
  check_one_error(log, error_kind::foreign_pointer, p + 4, "into a live block");
  r.deallocate(p, 60);
  CHECK(r.allocated_size(p) == debug_resource::unknown_size);
  CHECK(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::double_free);
}

TEST_CASE("debug_resource: validate is true for a live block of exactly that size with intact canaries only") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<unsigned char*>(r.allocate(48));
  CHECK(r.validate(p, 48));
  CHECK_FALSE(r.validate(p, 47));
  CHECK_FALSE(r.validate(p + 1, 47));
  CHECK_FALSE(r.validate(nullptr, 0));
  unsigned char saved = 0;
  copy_unchecked(&saved, p - 16, 1);
  write_unchecked(p - 16, 0, 1);  // the first byte of the canary before it
  CHECK_FALSE(r.validate(p, 48));
  copy_unchecked(p - 16, &saved, 1);
  CHECK(r.validate(p, 48));
  r.deallocate(p, 48);
  CHECK_FALSE(r.validate(p, 48));
  CHECK(log.errors.empty());  // validate reports nothing
}

TEST_CASE("debug_resource: a header written over is reported, and the resource goes on") {
  event_log log;
  strata::debug_options o;
  o.canary_size = 16;
  debug_resource r(log.options(o));
  auto* a = static_cast<unsigned char*>(r.allocate(64));
  auto* b = static_cast<unsigned char*>(r.allocate(64));  // the victim, between two sound blocks
  auto* c = static_cast<unsigned char*>(r.allocate(64));
  write_unchecked(b - 16 - 40, 0x49, 40);  // past the canary, over the header's last words
  CHECK(r.check_all() >= 1);
  CHECK(log.errors.front().error == error_kind::corrupt_metadata);
  log.errors.clear();
  r.deallocate(b, 64);
  check_one_error(log, error_kind::corrupt_metadata, b, "header was overwritten");
  CHECK(r.live_blocks() == 2);
  r.deallocate(a, 64);
  r.deallocate(c, 64);
  CHECK(log.errors.size() == 1);
  CHECK(r.leak_report() == 0);
  CHECK(r.check_invariants());
}

// ---- fills ---------------------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: new blocks read 0xCD, freed ones 0xDD, zeroed ones zero, and without fill none of it") {
  event_log log;
  debug_resource r(log.options());
  for (std::size_t size : {1u, 16u, 100u, 5000u, 70000u}) {
    CAPTURE(size);
    void* p = r.allocate(size);
    CHECK(all_bytes(p, size, debug_resource::allocated_byte));
    std::memset(p, 0x11, size);
    r.deallocate(p, size);
    CHECK(all_bytes(p, size, debug_resource::freed_byte));
    void* z = r.allocate_zeroed(size);
    CHECK(all_bytes(z, size, 0));
    CHECK(r.validate(z, size));
    r.deallocate(z, size);
  }
  // Over an upstream that is no strata resource (it cannot hand out zeroed memory itself).
  debug_resource heap(log.options(), std::pmr::new_delete_resource());
  void* z = heap.allocate_zeroed(300);
  CHECK(all_bytes(z, 300, 0));
  heap.deallocate(z, 300);
  strata::debug_options o;
  o.fill = false;
  debug_resource plain(log.options(o), std::pmr::new_delete_resource());
  auto* p = static_cast<unsigned char*>(plain.allocate(64));
  std::memset(p, 0x5A, 64);
  plain.deallocate(p, 64);
  CHECK(all_bytes(p, 64, 0x5A));
  CHECK(log.errors.empty());
}

// ---- resize --------------------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: a block shrunk in place has its canary at its new end, and grows back") {
  event_log log;
  debug_resource r(log.options());
  auto* p = static_cast<unsigned char*>(r.allocate(100));
  std::memset(p, 7, 100);
  REQUIRE(r.resize(p, 100, 40));
  CHECK(r.validate(p, 40));
  CHECK(r.stats().bytes_in_use == 40);
  REQUIRE(r.resize(p, 40, 100));  // back up to what it was allocated with
  CHECK(all_bytes(p, 40, 7));
  CHECK(all_bytes(p + 40, 60, debug_resource::allocated_byte));
  CHECK_FALSE(r.resize(p, 100, 101));  // more: not in place
  REQUIRE(r.resize(p, 100, 40));
  write_unchecked(p + 40, 0x4A, 1);  // past the new end
  CHECK_FALSE(r.resize(p, 40, 60));
  check_one_error(log, error_kind::buffer_overflow, p, "past its end");
  CHECK(log.last_error().offset == 40);
  CHECK(r.capabilities().resize_in_place);
}

// ---- call sites and leaks ------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: the leak report names the function that allocated each leaked block") {
  event_log log;
  strata::debug_options o;
  o.backtrace_depth = 8;
  debug_resource r(log.options(o));
  void* kept = r.allocate(16);
  void* leaked = debug_test_leaky_allocation(r, 72);
  CHECK(r.live_blocks() == 2);
  r.deallocate(kept, 16);
  CHECK(r.leak_report() == 1);
  REQUIRE(log.warnings.size() == 1);
  const recorded& w = log.warnings.front();
  CAPTURE(w.text);
  CHECK(w.kind == debug_event_kind::leak);
  CHECK(w.block == leaked);
  CHECK(w.block_size == 72);
  CHECK(w.block_alignment == alignof(std::max_align_t));
  CHECK(w.sequence == 2);
  CHECK(w.frames >= 2);
  CHECK(contains(w.text, "leaked block"));
  CHECK(contains(w.text, "of 72 bytes"));
  CHECK(contains(w.text, "allocation #2"));
  CHECK(contains(w.text, "debug_test_leaky_allocation"));
  REQUIRE(log.messages.size() == 1);
  CHECK(log.messages.front().kind == debug_event_kind::leak_summary);
  CHECK(contains(log.messages.front().text, "1 block (72 bytes) still live"));
  r.deallocate(leaked, 72);
  CHECK(r.leak_report() == 0);
  CHECK(log.warnings.size() == 1);
}

TEST_CASE("debug_resource: without backtraces a leak still names the caller of allocate") {
  event_log log;
  debug_resource r(log.options());
  void* p = debug_test_leaky_allocation(r, 10);
  CHECK(r.leak_report() == 1);
  REQUIRE(log.warnings.size() == 1);
  CAPTURE(log.warnings.front().text);
  CHECK(log.warnings.front().frames == 1);
  CHECK(contains(log.warnings.front().text, "allocated at "));
  CHECK(contains(log.warnings.front().text, "strata_tests"));  // the object the caller is in
  r.deallocate(p, 10);
}

TEST_CASE("debug_resource: blocks still live are reported when the resource is destroyed, one warning each") {
  event_log log;
  {
    debug_resource r(log.options());
    (void)r.allocate(10);
    (void)r.allocate(20);
    void* p = r.allocate(30);
    r.deallocate(p, 30);
  }
  REQUIRE(log.warnings.size() == 2);
  CHECK(log.warnings[0].block_size == 10);
  CHECK(log.warnings[1].block_size == 20);
  REQUIRE(log.messages.size() == 1);
  CHECK(contains(log.messages[0].text, "2 blocks (30 bytes) still live"));
  event_log quiet;
  {
    strata::debug_options o;
    o.report_leaks = false;
    debug_resource r(quiet.options(o));
    (void)r.allocate(10);
  }
  CHECK(quiet.warnings.empty());
}

TEST_CASE("debug_resource: each handler gets its own context") {
  event_log errors, warnings, messages;
  strata::debug_options o;
  o.error = {&event_log::on_error, &errors};
  o.warning = {&event_log::on_warning, &warnings};
  o.message = {&event_log::on_message, &messages};
  debug_resource r(o);
  void* p = r.allocate(8);
  r.deallocate(p, 8);
  r.deallocate(p, 8);
  (void)r.allocate(8);
  CHECK(r.leak_report() == 1);
  REQUIRE(errors.errors.size() == 1);
  REQUIRE(warnings.warnings.size() == 1);
  REQUIRE(messages.messages.size() == 1);
  CHECK(errors.errors[0].context == &errors);
  CHECK(warnings.warnings[0].context == &warnings);
  CHECK(messages.messages[0].context == &messages);
  r.release();
  CHECK(r.live_blocks() == 0);
}

TEST_CASE("debug_resource: without an error handler errors go to the process handler, the allocation stack first") {
  strata_test::error_capture captured;
  event_log log;
  strata::debug_options o;
  o.backtrace_depth = 8;
  o.message = {&event_log::on_message, &log};
  debug_resource r(o);
  void* p = debug_test_leaky_allocation(r, 48);
  r.deallocate(p, 48);
  r.deallocate(p, 48);
  strata_test::check_error("debug_resource", captured, 1, error_kind::double_free, p, 48);
  // The one line names the function that allocated the block (past the standard library's frames).
  CHECK(contains(captured.errors().back().message, "allocated at debug_test_leaky_allocation+0x"));
  REQUIRE(log.messages.size() == 1);
  CHECK(log.messages[0].kind == debug_event_kind::call_stack);
  CHECK(contains(log.messages[0].text, "was allocated at:\n    #0 "));
  CHECK(contains(log.messages[0].text, "debug_test_leaky_allocation"));
}

TEST_CASE("debug_resource: the default process handler prints the report and aborts") {
  const child_result r = in_child([] {
    debug_resource d;
    auto* p = static_cast<unsigned char*>(d.allocate(20));
    write_unchecked(p + 20, 0x4B, 1);
    d.deallocate(p, 20);
    say("survived\n");
  });
  CAPTURE(r.output);
  CHECK(r.aborted);
  CHECK(r.output.rfind("strata: buffer overflow in debug_resource", 0) == 0);
  CHECK(contains(r.output, "at offset 20 (0x4b instead of 0xfd)"));
  CHECK_FALSE(contains(r.output, "survived"));
}

TEST_CASE("debug_resource: options out of range are refused") {
  strata::debug_options o;
  o.backtrace_depth = debug_resource::max_backtrace_depth + 1;
  CHECK_THROWS_AS(debug_resource{o}, std::invalid_argument);
  o = {};
  o.canary_size = debug_resource::max_canary_size + 1;
  CHECK_THROWS_AS(debug_resource{o}, std::invalid_argument);
  CHECK_THROWS_AS(debug_resource(strata::debug_options{}, nullptr), std::invalid_argument);
}

TEST_CASE("debug_resource: its bookkeeping and its reports take nothing from malloc") {
#if !STRATA_ADDRESS_SANITIZER && defined(__GLIBC__)  // ASan's malloc keeps no mallinfo
  std::size_t events = 0;
  auto count = [](const strata::debug_event&, void* n) { ++*static_cast<std::size_t*>(n); };
  strata::debug_options o;
  o.backtrace_depth = 8;
  o.error = {count, &events};
  o.warning = {count, &events};
  o.message = {count, &events};
  debug_resource r(o);
  static void* blocks[3000];
  // Once first: the table's growth to its size below comes from upstream, but the first report loads what dladdr
  // needs.
  void* first = r.allocate(8);
  r.deallocate(first, 8);
  r.deallocate(first, 8);
  const std::size_t before = ::mallinfo2().uordblks;
  for (std::size_t i = 0; i < 3000; ++i) blocks[i] = r.allocate(i % 300);
  for (std::size_t i = 0; i < 3000; i += 2) r.deallocate(blocks[i], i % 300);
  r.deallocate(blocks[0], 0);                       // a double free
  write_unchecked(static_cast<char*>(blocks[1]) + 1, 0, 1);  // an overflow
  const std::size_t found = r.check_all();
  const std::size_t leaks = r.leak_report();
  r.release();
  const std::size_t after = ::mallinfo2().uordblks;
  CHECK(found == 1);
  CHECK(leaks == 1500);
  CHECK(events == 1 + 1 + 1 + 1500 + 1);
  CHECK(after == before);
#endif
}

TEST_CASE("debug_resource: everything it holds comes from upstream and goes back") {
  strata::testing::recording_resource recorder(strata::default_page_resource());
  {
    strata::debug_options o;
    o.report_leaks = false;
    debug_resource r(o, &recorder);
    std::vector<void*> blocks;
    for (int i = 0; i < 3000; ++i) blocks.push_back(r.allocate(static_cast<std::size_t>(i % 200)));
    for (std::size_t i = 0; i < blocks.size(); i += 2) r.deallocate(blocks[i], i % 200);
    CHECK(r.stats().bytes_held <= recorder.live_bytes());
    CHECK(r.stats().bytes_held + (64 << 10) >= recorder.live_bytes());
    CHECK(r.check_invariants());
  }
  CHECK(recorder.live_blocks() == 0);
  CHECK(recorder.mismatches() == 0);
}

// ---- guarded mode --------------------------------------------------------------------------------------------------

TEST_CASE("debug_resource: guarded overflow: a write past the end faults at the access (8 B, 4 KiB, 256 KiB)") {
  for (const std::size_t size : guarded_sizes) {
    CAPTURE(size);
    check_faulted(in_child([size] {
      debug_resource r(guarded(strata::guard_mode::overflow));
      auto* p = static_cast<unsigned char*>(r.allocate(size, 8));
      std::memset(p, 1, size);  // the whole block is usable
      say("access\n");
      write_unchecked(p + size, 0x4C, 1);
      say("survived\n");
    }));
  }
}

TEST_CASE("debug_resource: guarded: a read after free faults at the access (8 B, 4 KiB, 256 KiB)") {
  for (const auto mode : {strata::guard_mode::overflow, strata::guard_mode::underflow})
    for (const std::size_t size : guarded_sizes) {
      CAPTURE(size);
      check_faulted(in_child([size, mode] {
        debug_resource r(guarded(mode));
        auto* p = static_cast<unsigned char*>(r.allocate(size));
        std::memset(p, 1, size);
        r.deallocate(p, size);
        say("access\n");
        (void)read_unchecked(p + size / 2);
        say("survived\n");
      }));
    }
}

TEST_CASE("debug_resource: guarded: a wider guard zone makes a write far past the block fault too") {
  for (const auto mode : {strata::guard_mode::overflow, strata::guard_mode::underflow}) {
    const child_result r = in_child([mode] {
      strata::debug_options o = guarded(mode);
      o.guard_bytes = std::size_t{2} << 20;
      debug_resource d(o);
      // Other mappings around, accessible, where a jump past one guard page would land.
      std::vector<void*> around;
      for (int i = 0; i < 8; ++i) around.push_back(d.allocate(256 << 10));
      auto* p = static_cast<unsigned char*>(d.allocate(256 << 10));
      const std::ptrdiff_t far = std::ptrdiff_t{1} << 20;
      say("access\n");
      if (mode == strata::guard_mode::overflow) write_unchecked(p + (256 << 10) + far, 1, 1);
      else write_unchecked(p - far, 1, 1);
      say("survived\n");
    });
    check_faulted(r);
    CHECK(contains(r.output, mode == strata::guard_mode::overflow ? "past its end" : "before its start"));
  }
  // Address space only: the quarantine counts one guard page per block, as without the zone.
  strata::debug_options o = guarded(strata::guard_mode::overflow);
  event_log log;
  debug_resource narrow(log.options(o));
  o.guard_bytes = std::size_t{4} << 20;
  debug_resource wide(log.options(o));
  for (debug_resource* d : {&narrow, &wide}) {
    void* p = d->allocate(5000);
    d->deallocate(p, 5000);
  }
  CHECK(narrow.quarantined_bytes() == wide.quarantined_bytes());
  CHECK(wide.check_invariants());
  o.guard_bytes = debug_resource::max_guard_bytes + 1;
  CHECK_THROWS_AS(debug_resource{o}, std::invalid_argument);
}

TEST_CASE("debug_resource: guarded underflow: a write before the start faults at the access (8 B, 4 KiB, 256 KiB)") {
  for (const std::size_t size : guarded_sizes) {
    CAPTURE(size);
    check_faulted(in_child([size] {
      debug_resource r(guarded(strata::guard_mode::underflow));
      auto* p = static_cast<unsigned char*>(r.allocate(size));
      std::memset(p, 1, size);
      say("access\n");
      write_unchecked(p - 1, 0x4D, 1);
      say("survived\n");
    }));
  }
}

TEST_CASE("debug_resource: guarded: a zero-size block can be neither read nor written") {
  for (const auto mode : {strata::guard_mode::overflow, strata::guard_mode::underflow}) {
    check_faulted(in_child([mode] {
      debug_resource r(guarded(mode));
      void* p = r.allocate(0);
      say("access\n");
      (void)read_unchecked(p);
      say("survived\n");
    }));
    check_faulted(in_child([mode] {
      debug_resource r(guarded(mode));
      void* p = r.allocate(0, 64);
      say("access\n");
      write_unchecked(p, 1, 1);
      say("survived\n");
    }));
  }
}

TEST_CASE("debug_resource: guarded: a fault is explained first: the block, the offset, where it was allocated") {
  const child_result past = in_child([] {
    strata::debug_options o = guarded(strata::guard_mode::overflow);
    o.backtrace_depth = 4;
    debug_resource r(o);
    auto* p = static_cast<unsigned char*>(debug_test_leaky_allocation(r, 48));
    say("access\n");
    write_unchecked(p + 48, 1, 1);
    say("survived\n");
  });
  check_faulted(past);
  CHECK(contains(past.output, "strata: debug_resource"));
  CHECK(contains(past.output, "is at offset 48 of block"));
  CHECK(contains(past.output, "(allocation #1, 48 bytes, alignment 16): past its end"));
  CHECK(contains(past.output, "allocated at:\n    #0 "));
  CHECK(contains(past.output, "debug_test_leaky_allocation+0x"));

  const child_result freed = in_child([] {
    debug_resource r(guarded(strata::guard_mode::underflow));
    auto* p = static_cast<unsigned char*>(debug_test_leaky_allocation(r, 100));
    r.deallocate(p, 100);
    say("access\n");
    (void)read_unchecked(p + 3);
    say("survived\n");
  });
  check_faulted(freed);
  CHECK(contains(freed.output, "is at offset 3 of block"));
  CHECK(contains(freed.output, "inside it, after it was freed; freed at "));

  const child_result before = in_child([] {
    debug_resource r(guarded(strata::guard_mode::underflow));
    auto* p = static_cast<unsigned char*>(r.allocate(100));
    say("access\n");
    write_unchecked(p - 1, 1, 1);
    say("survived\n");
  });
  check_faulted(before);
  CHECK(contains(before.output, "is at offset -1 of block"));
  CHECK(contains(before.output, "before its start"));

  // Not asked for: the fault alone.
  const child_result quiet = in_child([] {
    strata::debug_options o = guarded(strata::guard_mode::overflow);
    o.explain_faults = false;
    debug_resource r(o);
    auto* p = static_cast<unsigned char*>(r.allocate(64));
    say("access\n");
    write_unchecked(p + 64, 1, 1);
    say("survived\n");
  });
  check_faulted(quiet);
  CHECK_FALSE(contains(quiet.output, "strata:"));
}

TEST_CASE("debug_resource: guarded: blocks sit against the guard page, are filled, and their addresses wait") {
  const std::size_t page = strata::page_resource::page_size();
  for (const auto mode : {strata::guard_mode::overflow, strata::guard_mode::underflow}) {
    event_log log;
    debug_resource r(log.options(guarded(mode)));
    for (const std::size_t size : guarded_sizes) {
      CAPTURE(size);
      auto* p = static_cast<unsigned char*>(r.allocate(size, 8));
      if (mode == strata::guard_mode::overflow)
        CHECK(strata::detail::is_aligned(p + size, page));  // ends where the guard page starts
      else
        CHECK(strata::detail::is_aligned(p, page));  // starts where the guard page ends
      CHECK(all_bytes(p, size, debug_resource::allocated_byte));
      CHECK(r.validate(p, size));
      void* z = r.allocate_zeroed(size);
      CHECK(all_bytes(z, size, 0));
      r.deallocate(z, size);
      r.deallocate(p, size, 8);
      // A freed block's addresses are not handed out again while it waits.
      void* q = r.allocate(size, 8);
      CHECK(q != p);
      r.deallocate(q, size, 8);
    }
    // Over-aligned blocks too.
    for (const std::size_t alignment : {std::size_t{64}, page, 4 * page}) {
      CAPTURE(alignment);
      void* p = r.allocate(100, alignment);
      CHECK(strata::detail::is_aligned(p, alignment));
      r.deallocate(p, 100, alignment);
    }
    CHECK(log.errors.empty());
    CHECK_FALSE(r.capabilities().resize_in_place);
    CHECK(r.check_invariants());
  }
}

TEST_CASE("debug_resource: guarded overflow: the slack alignment leaves before the guard page is a canary") {
  event_log log;
  debug_resource r(log.options(guarded(strata::guard_mode::overflow)));
  auto* p = static_cast<unsigned char*>(r.allocate(8, 16));  // 16-aligned: 8 bytes of slack before the guard
  write_unchecked(p + 8, 0x4E, 1);
  r.deallocate(p, 8, 16);
  check_one_error(log, error_kind::buffer_overflow, p, "past its end");
  CHECK(log.last_error().offset == 8);
}

TEST_CASE("debug_resource: guarded: double frees, wrong sizes and leaks are reported as in normal mode") {
  event_log log;
  strata::debug_options o = guarded(strata::guard_mode::overflow);
  debug_resource r(log.options(o));
  void* p = r.allocate(40);
  void* q = r.allocate(40);
  r.deallocate(q, 41);
  CHECK(log.last_error().error == error_kind::wrong_size);
  r.deallocate(p, 40);
  r.deallocate(p, 40);  // its pages are inaccessible: the header, kept apart, says it was freed
  REQUIRE(log.errors.size() == 2);
  CHECK(log.last_error().error == error_kind::double_free);
  CHECK(r.leak_report() == 1);
  CHECK(log.warnings.back().block == q);
  // Many blocks through the quarantine, with the shadow of their contents checked.
  std::vector<std::pair<unsigned char*, std::size_t>> live;
  strata_test::rng g(7);
  for (int i = 0; i < 3000; ++i) {
    if (live.empty() || g.next() % 3 != 0) {
      const std::size_t size = g.between(0, 9000);
      auto* b = static_cast<unsigned char*>(r.allocate(size));
      std::memset(b, static_cast<int>(size & 0xff), size);
      live.emplace_back(b, size);
    } else {
      const std::size_t k = g.next() % live.size();
      CHECK(all_bytes(live[k].first, live[k].second, static_cast<unsigned char>(live[k].second & 0xff)));
      r.deallocate(live[k].first, live[k].second);
      live[k] = live.back();
      live.pop_back();
    }
  }
  CHECK(log.errors.size() == 2);
  CHECK(r.check_invariants());
  r.release();
  CHECK(r.stats().bytes_in_use == 0);
}
