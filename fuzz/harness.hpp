// SPDX-License-Identifier: MIT
// fuzz/harness.hpp: what every strata fuzz target shares: the input decoder, edge-biased sizes and alignments, the
// upstream chains, a shadow model of the live blocks (contents, alignment, overlap, exact stats), misuse injection
// with a recording error handler, and a cross-thread replay for the thread-safe resources.
//
// A target (one small .cpp per resource family) decodes its option set from the first input bytes, builds a
// `subject` (the resource behind a small virtual interface) over an `upstream_env`, and hands both to run_input().
// Any finding prints "==strata-fuzz== FINDING ..." with the option set and the last operations, then aborts, so
// libFuzzer saves the input. Environment knobs (all optional; docs in fuzz/README.md):
//   STRATA_FUZZ_TRACE=1        print every operation as it runs (to turn a saved crash into a readable reproducer)
//   STRATA_FUZZ_BYTES=auto|requested|rounded   how bytes_in_use is modelled (auto: learns it from the first
//                              difference, then holds the resource to it)
//   STRATA_FUZZ_SKIP=a,b,...   turn off a known defect class while looking for others (never in CI):
//                              boost, split_double_free, report_fields, resize_freed, zero_size_alignment,
//                              empty_bounds, trim_returns, huge_chunks, same_block_sizes, release, tiny_classes,
//                              thread_faults
//   STRATA_FUZZ_STRICT_HELD=1  stats().bytes_held must equal what the recorded upstream holds (not a contract)
#pragma once

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sanitizer/common_interface_defs.h>

#include <boost/container/pmr/global_resource.hpp>
#include <boost/container/pmr/monotonic_buffer_resource.hpp>

#include <strata/boost_interop.hpp>
#include <strata/error.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>
#include <strata/stats.hpp>
#include <strata/testing.hpp>

namespace strata_fuzz {

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;

// ==== environment ====================================================================================================

struct env_config {
  bool trace = false;
  int bytes_mode = 0;  // 0 auto, 1 requested, 2 rounded
  std::string skip;
  bool skips(const char* what) const {
    if (skip.empty()) return false;
    const std::string s = "," + skip + ",";
    return s.find("," + std::string(what) + ",") != std::string::npos;
  }
};
inline env_config& env() {
  static env_config e = [] {
    env_config c;
    if (const char* t = std::getenv("STRATA_FUZZ_TRACE")) c.trace = *t != '\0' && *t != '0';
    if (const char* b = std::getenv("STRATA_FUZZ_BYTES")) {
      if (std::strcmp(b, "requested") == 0) c.bytes_mode = 1;
      if (std::strcmp(b, "rounded") == 0) c.bytes_mode = 2;
    }
    if (const char* s = std::getenv("STRATA_FUZZ_SKIP")) c.skip = s;
    return c;
  }();
  return e;
}

// ==== counters printed at exit =======================================================================================

inline const char* g_target = "strata";
inline std::atomic<std::uint64_t> g_inputs{0}, g_ops{0}, g_threaded_inputs{0}, g_misuse_injected{0},
    g_reports{0}, g_bad_allocs{0};

inline void print_counters() {
  std::fprintf(stderr,
               "strata-fuzz: %s: inputs %" PRIu64 " (cross-thread %" PRIu64 "), ops decoded %" PRIu64
               ", misuse injected %" PRIu64 " (reports %" PRIu64 "), bad_alloc %" PRIu64 "\n",
               g_target, g_inputs.load(), g_threaded_inputs.load(), g_ops.load(), g_misuse_injected.load(),
               g_reports.load(), g_bad_allocs.load());
}

// ==== findings and the trace =========================================================================================

inline std::string& context() {
  static std::string c;
  return c;
}

struct trace_entry {
  std::uint64_t n;
  int thread;
  const char* what;
  const void* p;
  std::size_t a, b, c;
  long long result;
};
inline std::mutex g_trace_mutex;
inline trace_entry g_trace[48];
inline std::uint64_t g_trace_n = 0;
inline thread_local int t_thread = 0;  // 0: the main thread; 1..: cross-thread workers

inline void print_entry(const trace_entry& e) {
  std::fprintf(stderr, "  op %6" PRIu64 " [t%d] %-22s p=%p a=%zu b=%zu c=%zu -> %lld\n", e.n, e.thread, e.what, e.p,
               e.a, e.b, e.c, e.result);
}

/// The operation a thread is in the middle of (printed when a sanitizer stops the process inside the subject).
struct in_progress {
  const char* what = nullptr;
  const void* p = nullptr;
  std::size_t a = 0, b = 0;
};
inline thread_local in_progress t_doing;
inline void doing(const char* what, const void* p, std::size_t a, std::size_t b) { t_doing = in_progress{what, p, a, b}; }
inline void done_doing() { t_doing.what = nullptr; }

/// Records one operation (ring of the last 48; printed at once with STRATA_FUZZ_TRACE=1).
inline void trace(const char* what, const void* p = nullptr, std::size_t a = 0, std::size_t b = 0, std::size_t c = 0,
                  long long result = 0) {
  t_doing.what = nullptr;
  std::lock_guard<std::mutex> g(g_trace_mutex);
  trace_entry& e = g_trace[g_trace_n % (sizeof g_trace / sizeof g_trace[0])];
  e = trace_entry{g_trace_n++, t_thread, what, p, a, b, c, result};
  if (env().trace) print_entry(e);
}

[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/// Prints the subject and the last operations (for a finding, or when a sanitizer stops the process).
inline void print_context() {
  std::fprintf(stderr, "==strata-fuzz== subject: %s\n", context().c_str());
  if (t_doing.what != nullptr)
    std::fprintf(stderr, "==strata-fuzz== in progress on this thread: %s p=%p a=%zu b=%zu\n", t_doing.what, t_doing.p,
                 t_doing.a, t_doing.b);
  if (g_trace_mutex.try_lock()) {
    const std::uint64_t n = g_trace_n, k = sizeof g_trace / sizeof g_trace[0];
    std::fprintf(stderr, "==strata-fuzz== last operations (of %" PRIu64 " in this input):\n", n);
    for (std::uint64_t i = n > k ? n - k : 0; i < n; ++i) print_entry(g_trace[i % k]);
    g_trace_mutex.unlock();
  }
  std::fflush(stderr);
}

[[noreturn]] inline void fail(const char* fmt, ...) {
  static std::mutex m;
  m.lock();  // never unlocked: one finding per process
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n==strata-fuzz== FINDING in %s [t%d]: %s\n", g_target, t_thread, msg);
  print_context();
  std::abort();
}

}  // namespace strata_fuzz

/// ASan/UBSan found something: after its summary line, say which subject and operations led there. (A weak hook of
/// the sanitizer runtime; libFuzzer's death callback still saves the input.)
extern "C" void __sanitizer_report_error_summary(const char* summary) {
  std::fprintf(stderr, "%s\n==strata-fuzz== FINDING in %s [t%d]: a sanitizer stopped the process (report above)\n",
               summary, strata_fuzz::g_target, strata_fuzz::t_thread);
  strata_fuzz::print_context();
}

namespace strata_fuzz {

#define SF_CHECK(cond, ...)                  \
  do {                                       \
    if (!(cond)) ::strata_fuzz::fail(__VA_ARGS__); \
  } while (0)

// ==== the input ======================================================================================================

class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) noexcept : p_(data), end_(data + size) {}
  [[nodiscard]] bool done() const noexcept { return p_ >= end_; }
  [[nodiscard]] std::size_t left() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  std::uint8_t u8() noexcept { return p_ < end_ ? *p_++ : 0; }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() noexcept { return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16); }
  std::uint64_t u64() noexcept { return static_cast<std::uint64_t>(u32()) | (static_cast<std::uint64_t>(u32()) << 32); }
  /// Uniform-ish in [0, n).
  std::size_t below(std::size_t n) noexcept {
    if (n <= 1) return 0;
    if (n <= 256) return u8() % n;
    if (n <= 65536) return u16() % n;
    return static_cast<std::size_t>(u64() % n);
  }
  bool bit() noexcept { return (u8() & 1) != 0; }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// ==== sizes and alignments biased to the edges =======================================================================

/// Sizes worth hitting for one subject: its thresholds (large threshold, max small size, block size, chunk capacity,
/// ...), each tried exactly and a little off; and the largest size it may be asked for.
struct size_profile {
  std::vector<std::size_t> edges;
  std::size_t max = 4 * MiB;
  /// Bytes the live blocks of one input may add up to (beyond it allocations turn into frees): keeps the RSS of
  /// large blocks (whose pages may be transparent huge pages) in bounds.
  std::size_t live_budget = 256 * MiB;
};

/// The fine size classes of strata's small-object strategies (multiples of 8 to 128, then four per power of two).
inline std::size_t class_size(unsigned i) {
  if (i < 16) return (i + 1) * 8;
  const unsigned j = i - 16;
  const std::size_t base = std::size_t{128} << (j / 4);
  return base + (base / 4) * (j % 4 + 1);
}

inline std::size_t pick_size(reader& in, const size_profile& prof) {
  const std::uint8_t sel = in.u8();
  auto off = [&](std::size_t v) -> std::size_t {
    const std::uint8_t d = in.u8();
    std::int64_t delta;
    switch (d % 8) {
      case 0: case 1: case 2: delta = 0; break;
      case 3: delta = -1; break;
      case 4: delta = 1; break;
      case 5: delta = -static_cast<std::int64_t>(d >> 3) * 8; break;  // a little less, in granules
      case 6: delta = static_cast<std::int64_t>(d >> 3) * 8; break;
      default: delta = static_cast<std::int64_t>(d >> 3) - 16; break;
    }
    if (delta < 0 && static_cast<std::size_t>(-delta) > v) return 0;
    return static_cast<std::size_t>(static_cast<std::int64_t>(v) + delta);
  };
  std::size_t s;
  switch (sel % 16) {
    case 0: s = in.u8() % 17; break;                                   // 0 .. 16
    case 1: case 2: s = off((in.u8() % 129) * 8); break;               // multiples of 8 up to 1 KiB
    case 3: case 4: s = off(class_size(in.u8() % 64)); break;          // class boundaries
    case 5: case 6: s = off(std::size_t{1} << (in.u8() % 27)); break;  // powers of two up to 64 MiB
    case 7: case 8: case 9:
      if (!prof.edges.empty()) {
        s = off(prof.edges[in.u8() % prof.edges.size()]);
        break;
      }
      [[fallthrough]];
    case 10: s = in.u16() % 4097; break;
    case 11: s = static_cast<std::size_t>(in.u32() % (prof.max + 1)); break;
    case 12: s = in.u16() % (64 * KiB + 1); break;
    default: s = 1 + in.u8(); break;
  }
  return s > prof.max ? prof.max : s;
}

/// 1 .. max_alignment, powers of two; about half at or below 16.
inline std::size_t pick_alignment(reader& in, std::size_t max_alignment = 64 * KiB) {
  const std::uint8_t s = in.u8();
  std::size_t a;
  if (s < 64) a = alignof(std::max_align_t);
  else if (s < 128) a = std::size_t{1} << (s % 5);
  else a = std::size_t{1} << (s % 17);
  return a > max_alignment ? max_alignment : a;
}

// ==== contents =======================================================================================================

/// The parts of a block of n bytes that are patterned: all of it up to 64 KiB; beyond, the first and last 4 KiB, 64
/// bytes of every page of the first MiB and 64 bytes every 64 KiB after that (every page would fault in too much).
template <class F>
inline void for_each_segment(std::size_t n, F&& f) {
  if (n <= 64 * KiB) {
    f(std::size_t{0}, n);
    return;
  }
  f(std::size_t{0}, 4 * KiB);
  const std::size_t tail = n - 4 * KiB;
  for (std::size_t o = 4 * KiB; o < tail; o += o < MiB ? 4 * KiB : 64 * KiB) f(o, std::min<std::size_t>(64, tail - o));
  f(tail, 4 * KiB);
}

// The pattern code runs over every live byte the model checks: kept out of libFuzzer's coverage and comparison
// tracing, which would otherwise take a third of the run time and guide nothing (the harness, not the subject).
#if defined(__clang__)
#define SF_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define SF_NO_COVERAGE
#endif

SF_NO_COVERAGE inline std::uint64_t pattern_word(std::size_t i, std::uint32_t seed) noexcept {
  std::uint64_t x = (static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(seed) << 17);
  return x ^ (x >> 29);
}

/// Byte j of a patterned block is byte j % 8 (little-endian) of pattern_word(j / 8): whole words where aligned.
SF_NO_COVERAGE inline unsigned char pattern_byte(std::size_t j, std::uint32_t seed) noexcept {
  return static_cast<unsigned char>(pattern_word(j / 8, seed) >> (8 * (j % 8)));
}

/// Patterns bytes [o, end) of block b.
SF_NO_COVERAGE inline void fill_range(unsigned char* b, std::size_t o, std::size_t end, std::uint32_t seed) noexcept {
  std::size_t i = o;
  for (; i < end && i % 8 != 0; ++i) b[i] = pattern_byte(i, seed);
  for (; i + 8 <= end; i += 8) {
    const std::uint64_t w = pattern_word(i / 8, seed);
    std::memcpy(b + i, &w, 8);
  }
  for (; i < end; ++i) b[i] = pattern_byte(i, seed);
}

/// The offset of the first byte of [o, end) of block b that is not patterned, or SIZE_MAX.
SF_NO_COVERAGE inline std::size_t mismatch_in_range(const unsigned char* b, std::size_t o, std::size_t end,
                                                    std::uint32_t seed) noexcept {
  std::size_t i = o;
  for (; i < end && i % 8 != 0; ++i)
    if (b[i] != pattern_byte(i, seed)) return i;
  for (; i + 8 <= end; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, b + i, 8);
    if (w != pattern_word(i / 8, seed)) break;  // the byte loop below finds which
  }
  for (; i < end; ++i)
    if (b[i] != pattern_byte(i, seed)) return i;
  return SIZE_MAX;
}

inline void fill(void* p, std::size_t n, std::uint32_t seed) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  for_each_segment(n, [&](std::size_t o, std::size_t len) { fill_range(b, o, o + len, seed); });
}

/// The offset of the first wrong byte of a block of n bytes patterned by fill(p, n, seed), looking only at its first
/// `limit` bytes (what a shrink keeps); SIZE_MAX when all is well.
inline std::size_t first_mismatch(const void* p, std::size_t n, std::uint32_t seed,
                                  std::size_t limit = SIZE_MAX) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  std::size_t bad = SIZE_MAX;
  for_each_segment(n, [&](std::size_t o, std::size_t len) {
    if (bad != SIZE_MAX || o >= limit) return;
    bad = mismatch_in_range(b, o, o + len > limit ? limit : o + len, seed);
  });
  return bad;
}

// ==== the error handler ==============================================================================================

/// What an injected misuse expects to be reported.
struct expectation {
  const void* pointer = nullptr;  // the pointer passed
  std::size_t size = 0;           // the size passed
  std::size_t rounded = 0;        // its rounding (accepted in reports by resources documented to round)
  bool live_block = false;        // the block is live: "double free" would be a misleading report
  bool check_fields = true;
  std::uint64_t reports = 0;      // reports seen while this expectation was active
};

struct report_state {
  std::mutex m;
  const void* recorder = nullptr;              // reports by it are findings (the subject misused its upstream)
  std::vector<const void*> awaiting;           // double frees injected and not reported yet (may be confirmed late)
  std::vector<const void*> awaiting_reported;  // ... and those since confirmed
  std::string last;
};
inline report_state g_reports_state;
inline thread_local expectation* t_expect = nullptr;

inline void on_report_message(int kind, const void* resource, const void* pointer, std::size_t size,
                              const char* msg) {
  report_state& st = g_reports_state;
  std::lock_guard<std::mutex> g(st.m);
  g_reports.fetch_add(1, std::memory_order_relaxed);
  st.last = msg;
  if (st.recorder != nullptr && resource == st.recorder)
    fail("the recording upstream saw a bad upstream call (the subject misused its upstream): %s", msg);
  if (kind == static_cast<int>(strata::error_kind::invariant_violated))
    fail("check_invariants reported a broken invariant: %s", msg);
  bool confirmed = false;
  if (auto it = std::find(st.awaiting.begin(), st.awaiting.end(), pointer); it != st.awaiting.end()) {
    // A double free injected earlier, confirmed now (a standard-mode resource may confirm it late, e.g. at a flush).
    st.awaiting_reported.push_back(*it);
    st.awaiting.erase(it);
    confirmed = true;
  }
  expectation* e = t_expect;
  if (e == nullptr) {
    if (confirmed) return;
    fail("unexpected misuse report (nothing was injected): %s", msg);
  }
  ++e->reports;
  if (e->check_fields && !env().skips("report_fields")) {
    if (pointer != e->pointer) fail("misleading report: names pointer %p, the call passed %p: %s", pointer, e->pointer, msg);
    if (size != e->size && (e->rounded == 0 || size != e->rounded))
      fail("misleading report: names size %zu, the call passed %zu: %s", size, e->size, msg);
    if (e->live_block && kind == static_cast<int>(strata::error_kind::double_free))
      fail("misleading report: a live block reported as a double free: %s", msg);
  }
}

inline void record_error(const strata::error_info& info) {
  char msg[600];
  strata::format_error(info, msg, sizeof msg);
  on_report_message(static_cast<int>(info.kind), info.resource, info.pointer, info.size, msg);
}

// ==== upstream chains ================================================================================================

enum class upstream_kind : std::uint8_t {
  default_pages,   // strata::default_page_resource(), direct (faults: the OS layer)
  own_pages,       // a page_resource of the input's own options, direct (faults: the OS layer)
  heap,            // std::pmr::new_delete_resource() behind fault injector + recorder
  monotonic,       // std::pmr::monotonic_buffer_resource over new_delete, behind fault injector + recorder
  boost_heap,      // boost::container::pmr::new_delete_resource() (ignores alignment!) through std_resource_adapter
  boost_monotonic, // boost monotonic_buffer_resource over boost_resource_adapter(new_delete), std_resource_adapter
  recorded_pages,  // an own page_resource behind fault injector + recorder
  count
};
inline const char* name_of(upstream_kind k) {
  switch (k) {
    case upstream_kind::default_pages: return "default_page_resource";
    case upstream_kind::own_pages: return "own page_resource";
    case upstream_kind::heap: return "faults+recorder+new_delete";
    case upstream_kind::monotonic: return "faults+recorder+locked monotonic_buffer(new_delete)";
    case upstream_kind::boost_heap: return "faults+recorder+std_resource_adapter(boost new_delete)";
    case upstream_kind::boost_monotonic:
      return "faults+recorder+locked std_resource_adapter(boost monotonic(boost_resource_adapter(new_delete)))";
    case upstream_kind::recorded_pages: return "faults+recorder+own page_resource";
    default: return "?";
  }
}

inline strata::page_resource::options decode_page_options(reader& in, std::string& desc) {
  strata::page_resource::options o;
  const std::uint8_t a = in.u8(), b = in.u8();
  static constexpr std::size_t cached[] = {0, 64 * KiB, 4 * MiB, 64 * MiB};
  static constexpr std::size_t spans[] = {0, 1, 64, strata::page_resource::max_cache_slots};
  static constexpr std::size_t resident[] = {0, 256 * KiB, 32 * MiB, 64 * MiB};
  static constexpr std::uint32_t delays[] = {0, 1, 10, 1000};
  static constexpr std::size_t reserve_min[] = {0, 4 * KiB, 64 * KiB, 1 * MiB};
  o.max_cached_bytes = cached[a & 3];
  o.max_cached_spans = spans[(a >> 2) & 3];
  o.max_resident_cached_bytes = resident[(a >> 4) & 3];
  o.purge_delay_ms = delays[(a >> 6) & 3];
  o.purge = (b & 1) ? strata::page_resource::purge_mode::lazy : strata::page_resource::purge_mode::eager;
  o.transparent_huge_pages = (b & 2) != 0;
  o.growth_reserve_min = reserve_min[(b >> 2) & 3];
  o.growth_reserve_ratio = (b >> 4) & 3;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "page_options{cached=%zu spans=%zu resident=%zu delay_ms=%u purge=%s thp=%d reserve_min=%zu ratio=%zu}",
                o.max_cached_bytes, o.max_cached_spans, o.max_resident_cached_bytes, o.purge_delay_ms,
                (b & 1) ? "lazy" : "eager", o.transparent_huge_pages ? 1 : 0, o.growth_reserve_min,
                o.growth_reserve_ratio);
  desc += buf;
  return o;
}

/// A mutex around a resource that is not thread-safe (monotonic buffers), for the cross-thread replay.
class locked_resource final : public std::pmr::memory_resource {
 public:
  explicit locked_resource(std::pmr::memory_resource* target) : target_(target) {}

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    std::lock_guard<std::mutex> g(m_);
    return target_->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    std::lock_guard<std::mutex> g(m_);
    target_->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
  std::mutex m_;
  std::pmr::memory_resource* target_;
};

/// The upstream of one input's subject, and the checks that it got everything back.
class upstream_env {
 public:
  upstream_env(upstream_kind kind, reader& in) : kind_(kind) {
    desc_ = name_of(kind);
    if (kind == upstream_kind::own_pages || kind == upstream_kind::recorded_pages) {
      desc_ += " ";
      pages_ = std::make_unique<strata::page_resource>(decode_page_options(in, desc_));
    }
    std::pmr::memory_resource* base = nullptr;
    switch (kind) {
      case upstream_kind::default_pages:
        top_ = strata::default_page_resource();
        default_before_ = top_stats().live_allocations();
        return;
      case upstream_kind::own_pages: top_ = pages_.get(); return;
      case upstream_kind::heap: base = std::pmr::new_delete_resource(); break;
      case upstream_kind::monotonic:
        mono_ = std::make_unique<std::pmr::monotonic_buffer_resource>(std::pmr::new_delete_resource());
        lock_ = std::make_unique<locked_resource>(mono_.get());
        base = lock_.get();
        break;
      case upstream_kind::boost_heap:
        std_adapter_ = std::make_unique<strata::std_resource_adapter>(boost::container::pmr::new_delete_resource());
        base = std_adapter_.get();
        break;
      case upstream_kind::boost_monotonic:
        boost_adapter_ = std::make_unique<strata::boost_resource_adapter>(std::pmr::new_delete_resource());
        boost_mono_ = std::make_unique<boost::container::pmr::monotonic_buffer_resource>(boost_adapter_.get());
        std_adapter_ = std::make_unique<strata::std_resource_adapter>(boost_mono_.get());
        lock_ = std::make_unique<locked_resource>(std_adapter_.get());
        base = lock_.get();
        break;
      case upstream_kind::recorded_pages: base = pages_.get(); break;
      default: fail("bad upstream kind");
    }
    recorder_ = std::make_unique<strata::testing::recording_resource>(base);
    faults_ = std::make_unique<strata::testing::fault_injecting_resource>(recorder_.get());
    top_ = faults_.get();
    std::lock_guard<std::mutex> g(g_reports_state.m);
    g_reports_state.recorder = recorder_.get();
  }
  ~upstream_env() {
    strata::testing::clear_os_failures();
    std::lock_guard<std::mutex> g(g_reports_state.m);
    g_reports_state.recorder = nullptr;
  }
  upstream_env(const upstream_env&) = delete;
  upstream_env& operator=(const upstream_env&) = delete;

  [[nodiscard]] std::pmr::memory_resource* get() const noexcept { return top_; }
  [[nodiscard]] upstream_kind kind() const noexcept { return kind_; }
  [[nodiscard]] const std::string& describe() const noexcept { return desc_; }
  /// A page_resource directly (the subject can use page-only paths: purging, huge pages, zeroed chunks).
  [[nodiscard]] bool direct_pages() const noexcept {
    return kind_ == upstream_kind::default_pages || kind_ == upstream_kind::own_pages;
  }
  [[nodiscard]] bool heap_backed() const noexcept { return !direct_pages() && kind_ != upstream_kind::recorded_pages; }
  [[nodiscard]] strata::testing::recording_resource* recorder() const noexcept { return recorder_.get(); }
  /// The own page_resource (own_pages, recorded_pages), else nullptr.
  [[nodiscard]] strata::page_resource* pages() const noexcept { return pages_.get(); }

  /// Upstream failures: after n more successful upstream allocations (or OS mappings), or a byte limit.
  void fail_after(std::size_t n) {
    armed_ = true;
    if (faults_) faults_->fail_after(n);
    else strata::testing::inject_os_failures_after(n);
  }
  void set_byte_limit(std::size_t bytes) {
    armed_ = true;
    if (faults_) faults_->set_byte_limit(bytes);
    else strata::testing::inject_os_failures_after(bytes / (256 * KiB));
  }
  void reset_faults() {
    armed_ = false;
    if (faults_) faults_->reset();
    else strata::testing::clear_os_failures();
  }
  /// Whether an upstream allocation may fail now: a fault is armed, or the upstream refuses some requests itself
  /// (Boost's monotonic_buffer_resource throws bad_alloc for alignments above its max_align).
  [[nodiscard]] bool faults_armed() const noexcept { return armed_ || kind_ == upstream_kind::boost_monotonic; }

  /// What the subject holds from upstream now (recorded chains only; SIZE_MAX when unknown).
  [[nodiscard]] std::size_t held_bytes() const { return recorder_ ? recorder_->live_bytes() : SIZE_MAX; }
  [[nodiscard]] std::size_t held_blocks() const { return recorder_ ? recorder_->live_blocks() : SIZE_MAX; }

  /// After the subject is destroyed: everything went back upstream, and every upstream free matched.
  void check_all_returned() {
    if (recorder_) {
      SF_CHECK(recorder_->mismatches() == 0, "%" PRIu64 " upstream frees did not match a block upstream handed out",
               recorder_->mismatches());
      if (recorder_->live_blocks() != 0) {
        const auto live = recorder_->live();
        fail("destroyed subject still holds %zu upstream blocks (%zu bytes), e.g. %p size %zu alignment %zu",
             live.size(), recorder_->live_bytes(), live[0].pointer, live[0].size, live[0].alignment);
      }
    }
    if (kind_ == upstream_kind::default_pages) {
      const std::uint64_t now = top_stats().live_allocations();
      SF_CHECK(now == default_before_, "destroyed subject left %" PRId64 " spans live in default_page_resource",
               static_cast<std::int64_t>(now - default_before_));
    }
    if (pages_) {
      const auto s = pages_->stats();
      SF_CHECK(s.live_allocations() == 0 && s.bytes_in_use == 0,
               "destroyed subject left %" PRIu64 " spans (%zu bytes) live in its page_resource", s.live_allocations(),
               s.bytes_in_use);
      SF_CHECK(pages_->check_invariants(), "upstream page_resource invariants");
    }
  }

 private:
  [[nodiscard]] strata::resource_stats top_stats() const { return static_cast<strata::resource*>(top_)->stats(); }

  upstream_kind kind_;
  std::string desc_;
  std::unique_ptr<strata::page_resource> pages_;
  std::unique_ptr<std::pmr::monotonic_buffer_resource> mono_;
  std::unique_ptr<strata::boost_resource_adapter> boost_adapter_;
  std::unique_ptr<boost::container::pmr::monotonic_buffer_resource> boost_mono_;
  std::unique_ptr<strata::std_resource_adapter> std_adapter_;
  std::unique_ptr<locked_resource> lock_;
  std::unique_ptr<strata::testing::recording_resource> recorder_;
  std::unique_ptr<strata::testing::fault_injecting_resource> faults_;
  std::pmr::memory_resource* top_ = nullptr;
  std::uint64_t default_before_ = 0;
  bool armed_ = false;
};

/// Picks an upstream kind from a byte (Boost kinds can be switched off with STRATA_FUZZ_SKIP=boost).
inline upstream_kind pick_upstream(std::uint8_t b) {
  auto k = static_cast<upstream_kind>(b % static_cast<unsigned>(upstream_kind::count));
  if (env().skips("boost") && (k == upstream_kind::boost_heap || k == upstream_kind::boost_monotonic))
    k = upstream_kind::heap;
  return k;
}

// ==== the subject: one resource behind a small interface =============================================================

/// A live block in the shadow model.
struct block {
  char* p = nullptr;
  std::size_t size = 0;
  std::size_t alignment = 1;
  std::size_t rounded = 0;  // round(size, alignment): the bytes it occupies (its extent for overlap checks)
  std::size_t counted = 0;  // the bytes the subject counts for it when it counts requested sizes
  std::uint32_t seed = 0;
  std::uint8_t flags = 0;
};
enum block_flags : std::uint8_t {
  rounded_alloc = 1,  // allocated through a "rounded" entry point (counted at its rounded size; own free)
};

class runner;

class subject {
 public:
  virtual ~subject() = default;
  [[nodiscard]] virtual const char* name() const = 0;
  virtual void* allocate(std::size_t bytes, std::size_t alignment) = 0;
  virtual void deallocate(void* p, std::size_t bytes, std::size_t alignment) = 0;
  virtual bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) = 0;
  [[nodiscard]] virtual strata::resource_stats stats() const = 0;
  virtual bool check_invariants() = 0;
  /// Bytes a request really occupies (its extent; rounded-bytes mode counts this).
  [[nodiscard]] virtual std::size_t round(std::size_t bytes, std::size_t) const { return bytes; }
  /// Whether round() is the subject's own round_size() (so bytes_in_use may count it).
  [[nodiscard]] virtual bool has_round_size() const { return false; }
  /// Whether freeing (p, size a) names the same block as (p, size b): accepted, not misuse.
  [[nodiscard]] virtual bool same_block(std::size_t a, std::size_t b, std::size_t alignment) const {
    return round(a, alignment) == round(b, alignment);
  }
  /// Whether a report's size may be the rounded size instead of the size passed (documented for the C heap).
  [[nodiscard]] virtual bool reports_rounded_size() const { return false; }
  virtual bool can_trim() const { return false; }
  virtual void trim() {}
  virtual bool can_release() const { return false; }
  virtual void release() {}
  [[nodiscard]] virtual bool thread_safe() const { return false; }
  /// Whether an allocation may fail with bad_alloc when no upstream fault is armed.
  [[nodiscard]] virtual bool may_fail(std::size_t bytes, std::size_t) const { return bytes > (std::size_t{1} << 40); }
  /// Called when the model holds no live block (after frees, release, trim): bounds on cached empty memory.
  virtual void check_when_empty(bool after_trim) { (void)after_trim; }
  /// Called after every op with the model's live blocks: subject-specific exact figures.
  virtual void check_model(const std::vector<block>&) {}
  /// Another resource of the same kind (its blocks are foreign pointers here); nullptr when not offered.
  virtual std::pmr::memory_resource* other() { return nullptr; }
  /// Whether every block is counted in bytes_in_use at its rounded size whatever the mode (the C heap).
  [[nodiscard]] virtual bool counts_rounded() const { return false; }
  /// The size profile (thresholds) of this subject.
  [[nodiscard]] virtual const size_profile& sizes() const = 0;
  [[nodiscard]] virtual std::size_t max_alignment() const { return 64 * KiB; }
  /// Subject-specific operations; returns false when the op does not apply.
  virtual bool extra_op(runner&, reader&) { return false; }
  /// A per-thread operation for the cross-thread replay (e.g. hand the thread's cache back); `arg` is random.
  virtual void thread_op(std::size_t arg) { (void)arg; }
  /// Frees the model's live block i if it needs its own entry point (flags); false: the plain deallocate does.
  virtual bool free_special(runner&, std::size_t) { return false; }
  /// Whether trim() with no live block must return every upstream block (checked over recorded upstreams).
  [[nodiscard]] virtual bool trim_returns_all() const { return false; }
  /// Whether stats().bytes_held must equal what the recorded upstream holds for it.
  [[nodiscard]] virtual bool held_is_upstream_bytes() const { return true; }
  /// Whether the subject's fresh stats are all zero (false for process-wide ones: deltas are checked).
  [[nodiscard]] virtual bool fresh() const { return true; }
  /// The C heap sets strata_last_error; checked after misuse reports.
  virtual void after_misuse_report() {}
  /// Freeing with a different size that rounds to the same block is accepted (false: exact sizes only).
  [[nodiscard]] virtual bool accepts_same_block_sizes() const { return true; }
  /// How bytes_in_use counts a block: 0 not known yet, 1 its requested size, 2 its round() size (the project moves to
  /// this). Learned from the first difference, then held for every input of the process.
  int& bytes_mode() const {
    static std::mutex m;
    static std::map<std::string, int> modes;
    std::lock_guard<std::mutex> g(m);
    return modes[name()];
  }
  /// Set while the cross-thread replay runs (limits that depend on other threads' blocks are then not exact).
  bool concurrent = false;
  /// Whether a block freed by two threads at once may be counted twice until the race is settled (a standard-mode
  /// resource confirms such a double free late: when the owner folds the frees in, reuses the slot or hands the
  /// block on); the counts must be exact again once the threads are gone and the resource is trimmed.
  [[nodiscard]] virtual bool settles_double_frees_late() const { return false; }
  /// Whether resize(p, old_size, new_size, alignment) reaches the resource (which must then report misuse); a subject
  /// whose API has no such call for some blocks answers without looking.
  [[nodiscard]] virtual bool resize_reaches_resource(std::size_t old_size, std::size_t new_size,
                                                     std::size_t alignment) const {
    (void)old_size, (void)new_size, (void)alignment;
    return true;
  }
};

// ==== the shadow model ===============================================================================================

class model {
 public:
  explicit model(subject& s) : s_(s), base_(s.stats()) {
    if (s.fresh()) {
      SF_CHECK(base_.allocations == 0 && base_.deallocations == 0 && base_.bytes_in_use == 0,
               "a fresh resource reports allocations %" PRIu64 ", deallocations %" PRIu64 ", bytes in use %zu",
               base_.allocations, base_.deallocations, base_.bytes_in_use);
    }
  }

  std::vector<block> live;
  std::uint64_t allocations = 0, deallocations = 0;
  std::size_t sum_counted = 0, sum_rounded = 0;
  struct freed_block {
    char* p;
    std::size_t size, alignment, rounded;
  };
  std::vector<freed_block> freed;  // recently freed (double free and resize-after-free candidates)

  [[nodiscard]] const strata::resource_stats& base() const noexcept { return base_; }

  /// A new block from the subject: alignment, size rounding, overlap with every live block; patterns it.
  block& add(void* p, std::size_t size, std::size_t alignment, std::uint32_t seed, std::uint8_t flags = 0,
             std::size_t counted = SIZE_MAX, std::size_t rounded = SIZE_MAX) {
    SF_CHECK(p != nullptr, "allocate(%zu, %zu) returned nullptr", size, alignment);
    block b;
    b.p = static_cast<char*>(p);
    b.size = size;
    b.alignment = alignment;
    b.rounded = rounded != SIZE_MAX ? rounded : s_.round(size, alignment);
    b.counted = counted != SIZE_MAX ? counted : ((flags & rounded_alloc) || s_.counts_rounded()) ? b.rounded : size;
    b.seed = seed;
    b.flags = flags;
    check_new(b);
    insert_extent(b);
    fill(b.p, b.size, b.seed);
    live.push_back(b);
    ++allocations;
    sum_counted += b.counted;
    sum_rounded += b.rounded;
    return live.back();
  }
  void check_new(const block& b) const {
    if (reinterpret_cast<std::uintptr_t>(b.p) % b.alignment != 0) {
      if (b.size == 0 && env().skips("zero_size_alignment")) return;
      fail("allocate(%zu, %zu) returned %p: not aligned to %zu", b.size, b.alignment, static_cast<void*>(b.p),
           b.alignment);
    }
    SF_CHECK(b.rounded >= b.size, "round_size(%zu, %zu) = %zu is smaller than the request", b.size, b.alignment,
             b.rounded);
  }
  void insert_extent(const block& b) {
    const auto a = reinterpret_cast<std::uintptr_t>(b.p);
    const std::uintptr_t e = a + std::max<std::size_t>(b.rounded, 1);
    auto next = extents_.lower_bound(a);
    if (next != extents_.end() && next->first < e)
      fail("block %p (%zu bytes, occupies %zu, alignment %zu) overlaps live block %p..%p", static_cast<void*>(b.p),
           b.size, b.rounded, b.alignment, reinterpret_cast<void*>(next->first), reinterpret_cast<void*>(next->second));
    if (next != extents_.begin() && std::prev(next)->second > a)
      fail("block %p (%zu bytes, occupies %zu, alignment %zu) overlaps live block %p..%p", static_cast<void*>(b.p),
           b.size, b.rounded, b.alignment, reinterpret_cast<void*>(std::prev(next)->first),
           reinterpret_cast<void*>(std::prev(next)->second));
    extents_.emplace(a, e);
  }
  void erase_extent(const block& b) { extents_.erase(reinterpret_cast<std::uintptr_t>(b.p)); }
  /// Whether [p, p + n) touches a live block.
  [[nodiscard]] bool overlaps_live(const void* p, std::size_t n) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t e = a + std::max<std::size_t>(n, 1);
    auto next = extents_.lower_bound(a);
    if (next != extents_.end() && next->first < e) return true;
    return next != extents_.begin() && std::prev(next)->second > a;
  }

  void verify(const block& b, const char* when) const {
    const std::size_t bad = first_mismatch(b.p, b.size, b.seed);
    if (bad != SIZE_MAX)
      fail("contents of live block %p (%zu bytes, alignment %zu) changed at offset %zu %s", static_cast<void*>(b.p),
           b.size, b.alignment, bad, when);
  }
  void verify_all(const char* when) const {
    for (const block& b : live) verify(b, when);
  }

  /// Removes live[i] from the model (after the subject freed it with `size_passed`).
  block remove(std::size_t i, std::size_t counted_freed, std::size_t rounded_freed) {
    block b = live[i];
    erase_extent(b);
    live[i] = live.back();
    live.pop_back();
    ++deallocations;
    sum_counted -= counted_freed;
    sum_rounded -= rounded_freed;
    remember_freed(b);
    return b;
  }
  void remember_freed(const block& b) {
    if (freed.size() >= 16) freed.erase(freed.begin());
    freed.push_back(freed_block{b.p, b.size, b.alignment, b.rounded});
  }
  /// The subject released everything at once.
  void clear_all() {
    deallocations += live.size();
    for (const block& b : live) remember_freed(b);
    live.clear();
    extents_.clear();
    sum_counted = sum_rounded = 0;
  }
  /// A block changed size in place.
  void resized(block& b, std::size_t new_size, std::size_t new_counted, std::size_t new_rounded, std::uint32_t seed) {
    erase_extent(b);
    sum_counted = sum_counted - b.counted + new_counted;
    sum_rounded = sum_rounded - b.rounded + new_rounded;
    b.size = new_size;
    b.counted = new_counted;
    b.rounded = new_rounded;
    b.seed = seed;
    SF_CHECK(b.rounded >= b.size, "round_size(%zu, %zu) = %zu is smaller than the request", b.size, b.alignment,
             b.rounded);
    insert_extent(b);
    fill(b.p, b.size, b.seed);
  }

  /// Stats against the model: counts exact; bytes in use as the subject counts them (requested or rounded).
  void check_stats(const char* when) {
    const strata::resource_stats s = s_.stats();
    const std::uint64_t da = s.allocations - base_.allocations, dd = s.deallocations - base_.deallocations;
    if (da != allocations || dd != deallocations)
      fail("stats %s: allocations +%" PRIu64 " deallocations +%" PRIu64 ", the model has +%" PRIu64 " +%" PRIu64,
           when, da, dd, allocations, deallocations);
    const std::uint64_t live_now = s.live_allocations() - base_.live_allocations();
    SF_CHECK(live_now == live.size(), "stats %s: live_allocations %" PRIu64 ", the model has %zu", when, live_now,
             live.size());
    const std::size_t bytes = s.bytes_in_use - base_.bytes_in_use;
    int& mode = s_.bytes_mode();
    if (mode == 0) mode = env().bytes_mode;
    if (mode == 0) {
      if (sum_counted != sum_rounded) {
        if (bytes == sum_counted) mode = 1;
        else if (bytes == sum_rounded) mode = 2;
        else
          fail("stats %s: bytes_in_use %zu is neither the requested sizes' sum %zu nor the rounded sizes' sum %zu",
               when, bytes, sum_counted, sum_rounded);
        std::fprintf(stderr, "strata-fuzz: %s counts bytes_in_use as %s sizes\n", s_.name(),
                     mode == 1 ? "requested" : "rounded");
      } else {
        SF_CHECK(bytes == sum_counted, "stats %s: bytes_in_use %zu, the model has %zu", when, bytes, sum_counted);
      }
    }
    if (mode != 0) {
      const std::size_t want = mode == 1 ? sum_counted : sum_rounded;
      SF_CHECK(bytes == want, "stats %s: bytes_in_use %zu, the model has %zu (%s sizes; the other sum is %zu)", when,
               bytes, want, mode == 1 ? "requested" : "rounded", mode == 1 ? sum_rounded : sum_counted);
    }
    SF_CHECK(static_cast<std::ptrdiff_t>(s.bytes_in_use) >= 0,
             "stats %s: bytes_in_use wrapped below zero (%td): frees named sizes larger than the allocations (another "
             "size of the same block) and bytes_in_use subtracts the size passed",
             when, static_cast<std::ptrdiff_t>(s.bytes_in_use));
    SF_CHECK(s.peak_bytes_in_use >= s.bytes_in_use, "stats %s: peak_bytes_in_use %zu < bytes_in_use %zu", when,
             s.peak_bytes_in_use, s.bytes_in_use);
    SF_CHECK(s.bytes_resident <= s.bytes_held, "stats %s: bytes_resident %zu > bytes_held %zu", when,
             s.bytes_resident, s.bytes_held);
    SF_CHECK(s.free_bytes >= s.largest_free_block && (s.free_blocks != 0 || s.free_bytes == 0),
             "stats %s: free_bytes %zu, free_blocks %zu, largest_free_block %zu disagree", when, s.free_bytes,
             s.free_blocks, s.largest_free_block);
  }

 private:
  subject& s_;
  strata::resource_stats base_;
  std::map<std::uintptr_t, std::uintptr_t> extents_;
};

inline bool same_stats(const strata::resource_stats& a, const strata::resource_stats& b) {
  return a.bytes_in_use == b.bytes_in_use && a.peak_bytes_in_use == b.peak_bytes_in_use &&
         a.bytes_held == b.bytes_held && a.bytes_resident == b.bytes_resident && a.allocations == b.allocations &&
         a.deallocations == b.deallocations && a.failed_allocations == b.failed_allocations &&
         a.upstream_allocations == b.upstream_allocations && a.upstream_deallocations == b.upstream_deallocations &&
         a.free_bytes == b.free_bytes && a.free_blocks == b.free_blocks && a.largest_free_block == b.largest_free_block;
}
inline std::string stats_string(const strata::resource_stats& s) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "{in_use %zu peak %zu held %zu resident %zu allocs %" PRIu64 " deallocs %" PRIu64 " failed %" PRIu64
                " up_allocs %" PRIu64 " up_deallocs %" PRIu64 " free %zu/%zu largest %zu}",
                s.bytes_in_use, s.peak_bytes_in_use, s.bytes_held, s.bytes_resident, s.allocations, s.deallocations,
                s.failed_allocations, s.upstream_allocations, s.upstream_deallocations, s.free_bytes, s.free_blocks,
                s.largest_free_block);
  return buf;
}

// A foreign buffer no resource owns: pointers into it must be reported.
alignas(64 * 1024) inline unsigned char g_foreign[256 * 1024];

// ==== the single-threaded op loop ====================================================================================

class runner {
 public:
  runner(subject& s, upstream_env* up, reader& in, bool misuse)
      : s_(s), up_(up), in_(in), m_(s), misuse_(misuse) {}

  subject& subj() { return s_; }
  model& mdl() { return m_; }
  upstream_env* up() { return up_; }
  reader& in() { return in_; }
  [[nodiscard]] bool misuse() const { return misuse_; }
  std::uint32_t next_seed() { return ++seed_ * 2654435761u; }

  /// Whether a bad_alloc now is acceptable.
  [[nodiscard]] bool failure_ok(std::size_t bytes, std::size_t alignment) const {
    return (up_ != nullptr && up_->faults_armed()) || s_.may_fail(bytes, alignment);
  }

  /// Allocates and adds to the model; false on an acceptable bad_alloc (model and stats checked unchanged).
  bool alloc(std::size_t size, std::size_t alignment) {
    if (size == 0 && alignment > 8 && env().skips("zero_size_alignment")) size = 1;  // exploring past that defect
    if (m_.sum_rounded + size > s_.sizes().live_budget && !m_.live.empty()) {
      const std::size_t i = in_.below(m_.live.size());
      if (!s_.free_special(*this, i)) free_block(i, m_.live[i].size);
      return false;
    }
    const strata::resource_stats before = s_.stats();
    void* p = nullptr;
    try {
      doing("allocate", nullptr, size, alignment);
      p = s_.allocate(size, alignment);
      done_doing();
    } catch (const std::bad_alloc&) {
      g_bad_allocs.fetch_add(1, std::memory_order_relaxed);
      trace("allocate", nullptr, size, alignment, 0, -1);
      if (!failure_ok(size, alignment))
        fail("allocate(%zu, %zu) threw bad_alloc with no upstream fault armed", size, alignment);
      after_bad_alloc(before);
      return false;
    } catch (const std::exception& e) {
      fail("allocate(%zu, %zu) threw %s", size, alignment, e.what());
    }
    trace("allocate", p, size, alignment, s_.round(size, alignment));
    m_.add(p, size, alignment, next_seed());
    return true;
  }

  void after_bad_alloc(const strata::resource_stats& before) {
    const strata::resource_stats s = s_.stats();
    SF_CHECK(s.allocations == before.allocations && s.deallocations == before.deallocations &&
                 s.bytes_in_use == before.bytes_in_use,
             "a failed allocation changed the counts: before %s after %s", stats_string(before).c_str(),
             stats_string(s).c_str());
    SF_CHECK(s_.check_invariants(), "invariants after bad_alloc");
  }

  /// `zeroed()` is an allocate_zeroed(n, a) of the subject's: a bad_alloc must be allowed and change no count; the
  /// block must read as zero (where patterned) and joins the model.
  template <class Zeroed>
  void allocate_zeroed(std::size_t n, std::size_t a, Zeroed&& zeroed) {
    const strata::resource_stats before = s_.stats();
    void* p;
    try {
      p = zeroed();
    } catch (const std::bad_alloc&) {
      trace("allocate_zeroed", nullptr, n, a, 0, -1);
      if (!failure_ok(n, a)) fail("allocate_zeroed(%zu, %zu) threw bad_alloc with no fault armed", n, a);
      after_bad_alloc(before);
      return;
    }
    trace("allocate_zeroed", p, n, a);
    for_each_segment(n, [&](std::size_t o, std::size_t len) {
      const auto* b = static_cast<const unsigned char*>(p) + o;
      for (std::size_t i = 0; i < len; ++i)
        if (b[i] != 0) fail("allocate_zeroed(%zu, %zu) = %p: byte %zu is %u", n, a, p, o + i, b[i]);
    });
    m_.add(p, n, a, next_seed());
  }

  void free_block(std::size_t i, std::size_t size_passed) {
    block b = m_.live[i];
    m_.verify(b, "before its free");
    trace("deallocate", b.p, size_passed, b.alignment, b.size);
    doing("deallocate", b.p, size_passed, b.alignment);
    s_.deallocate(b.p, size_passed, b.alignment);
    done_doing();
    note_freed(i, size_passed);
  }

  /// The model's side of freeing live[i] with `size_passed` (after the subject did it).
  void note_freed(std::size_t i, std::size_t size_passed) {
    const block& b = m_.live[i];
    const bool rounded_counting = (b.flags & rounded_alloc) || s_.counts_rounded();
    const std::size_t r = size_passed == b.size ? b.rounded : s_.round(size_passed, b.alignment);
    const std::size_t counted = size_passed == b.size ? b.counted : rounded_counting ? r : size_passed;
    m_.remove(i, counted, r);
  }

  void resize_block(std::size_t i, std::size_t new_size) {
    block& b = m_.live[i];
    m_.verify(b, "before its resize");
    const std::size_t old = b.size;
    bool ok;
    try {
      doing("resize", b.p, old, new_size);
      ok = s_.resize(b.p, old, new_size, b.alignment);
      done_doing();
    } catch (const std::exception& e) {
      fail("resize(%p, %zu, %zu, %zu) threw %s", static_cast<void*>(b.p), old, new_size, b.alignment, e.what());
    }
    trace("resize", b.p, old, new_size, b.alignment, ok);
    if (old == new_size) SF_CHECK(ok, "resize to the same size returned false");
    if (!ok) {
      m_.verify(b, "after a failed resize");
      return;
    }
    const std::size_t bad = first_mismatch(b.p, old, b.seed, new_size);
    SF_CHECK(bad == SIZE_MAX, "resize(%p, %zu -> %zu) lost the contents at offset %zu", static_cast<void*>(b.p), old,
             new_size, bad);
    const std::size_t r = s_.round(new_size, b.alignment);
    const std::size_t counted = ((b.flags & rounded_alloc) || s_.counts_rounded()) ? r : new_size;
    m_.resized(b, new_size, counted, r, next_seed());
  }

  /// strata::reallocate (in place or by moving): contents kept either way.
  void reallocate_block(std::size_t i, std::size_t new_size, strata::resource& r) {
    block b = m_.live[i];
    if (b.flags & rounded_alloc) return;
    m_.verify(b, "before reallocate");
    const strata::resource_stats before = s_.stats();
    void* q;
    try {
      q = strata::reallocate(r, b.p, b.size, new_size, b.alignment);
    } catch (const std::bad_alloc&) {
      g_bad_allocs.fetch_add(1, std::memory_order_relaxed);
      trace("reallocate", b.p, b.size, new_size, b.alignment, -1);
      if (!failure_ok(new_size, b.alignment))
        fail("reallocate(%zu -> %zu, %zu) threw bad_alloc with no fault armed", b.size, new_size, b.alignment);
      after_bad_alloc(before);
      m_.verify(b, "after a failed reallocate");
      return;
    }
    trace("reallocate", b.p, b.size, new_size, b.alignment, reinterpret_cast<long long>(q));
    if (new_size == 0) {
      SF_CHECK(q == nullptr, "reallocate to 0 returned %p", q);
      m_.remove(i, b.counted, b.rounded);
      return;
    }
    const std::size_t bad = first_mismatch(q, b.size, b.seed, new_size);
    SF_CHECK(bad == SIZE_MAX, "reallocate(%p, %zu -> %zu) lost the contents at offset %zu", static_cast<void*>(b.p),
             b.size, new_size, bad);
    if (q == b.p) {
      m_.resized(m_.live[i], new_size, new_size, s_.round(new_size, b.alignment), next_seed());
    } else {
      m_.remove(i, b.counted, b.rounded);
      m_.add(q, new_size, b.alignment, next_seed());
    }
  }

  // ---- misuse ----------------------------------------------------------------------------------------------------

  /// Runs `op` (a misuse) expecting at least one report and no change at all.
  template <class Op>
  void expect_misuse(const char* what, const void* p, std::size_t size, std::size_t alignment, bool live_block,
                     Op&& op, bool report_required = true, bool check_fields = true) {
    g_misuse_injected.fetch_add(1, std::memory_order_relaxed);
    const strata::resource_stats before = s_.stats();
    expectation e;
    e.pointer = p;
    e.size = size;
    e.rounded = s_.reports_rounded_size() ? s_.round(size, alignment) : 0;
    e.live_block = live_block;
    e.check_fields = check_fields;
    trace(what, p, size, alignment);
    t_expect = &e;
    op();
    t_expect = nullptr;
    if (report_required && e.reports == 0)
      fail("%s(%p, size %zu, alignment %zu) was not reported", what, p, size, alignment);
    if (e.reports != 0) s_.after_misuse_report();
    const strata::resource_stats after = s_.stats();
    if (!same_stats(before, after))
      fail("%s(%p, size %zu, alignment %zu) changed the stats: before %s after %s", what, p, size, alignment,
           stats_string(before).c_str(), stats_string(after).c_str());
    SF_CHECK(s_.check_invariants(), "invariants after %s", what);
  }

  /// A double free: the pointer is registered as awaiting (a standard-mode resource may confirm it later).
  void expect_double_free(const model::freed_block& f) {
    {
      std::lock_guard<std::mutex> g(g_reports_state.m);
      g_reports_state.awaiting.push_back(f.p);
    }
    expect_misuse(
        "double free", f.p, f.size, f.alignment, false, [&] { s_.deallocate(f.p, f.size, f.alignment); }, false);
  }

  void misuse_op() {
    const std::uint8_t kind = in_.u8();
    switch (kind % 9) {
      case 0:
      case 1: {  // double free: a just-freed block, or a recently freed one no live block overlaps now
        model::freed_block f{};
        if (kind % 9 == 0 && !m_.live.empty()) {
          const std::size_t i = in_.below(m_.live.size());
          if (m_.live[i].flags & rounded_alloc) return;
          const block b = m_.live[i];
          free_block(i, b.size);
          f = model::freed_block{b.p, b.size, b.alignment, b.rounded};
        } else if (!m_.freed.empty()) {
          f = m_.freed[in_.below(m_.freed.size())];
          if (m_.overlaps_live(f.p, std::max<std::size_t>(f.rounded, 1))) return;
        } else {
          return;
        }
        expect_double_free(f);
        return;
      }
      case 2: {  // a foreign pointer: a static buffer
        static constexpr std::size_t offsets[] = {0, 8, 16, 64, 4096, 64 * KiB, 64 * KiB + 64, 128 * KiB + 8,
                                                  64 * KiB + 4096, 200 * KiB};
        void* p = g_foreign + offsets[in_.below(sizeof offsets / sizeof offsets[0])];
        const std::size_t size = pick_size(in_, s_.sizes());
        const std::size_t a = pick_alignment(in_, 4096);
        expect_misuse("free foreign static", p, size, a, false, [&] { s_.deallocate(p, size, a); });
        return;
      }
      case 3: {  // a block of another resource of the same kind
        std::pmr::memory_resource* o = s_.other();
        if (o == nullptr) return;
        const std::size_t size = pick_size(in_, s_.sizes()) % (64 * KiB);
        const std::size_t a = pick_alignment(in_, 4096);
        void* p;
        try {
          p = o->allocate(size, a);
        } catch (const std::bad_alloc&) {
          return;
        }
        expect_misuse("free other's block", p, size, a, false, [&] { s_.deallocate(p, size, a); });
        o->deallocate(p, size, a);
        return;
      }
      case 4: {  // an interior pointer of a live block
        if (m_.live.empty()) return;
        const block b = m_.live[in_.below(m_.live.size())];
        if (b.rounded < 2) return;
        std::size_t k = 1 + in_.below(b.rounded - 1);
        if (in_.bit()) k = std::min(b.rounded - 1, (k + 7) & ~std::size_t{7});  // granule-aligned interiors too
        const std::size_t size = in_.bit() ? b.size : b.size - std::min(b.size, k);
        char* p = b.p + k;
        expect_misuse("free interior pointer", p, size, b.alignment, true, [&] { s_.deallocate(p, size, b.alignment); });
        m_.verify(b, "after an interior free");
        return;
      }
      case 5: {  // a wrong size: one that does not name the same block
        if (m_.live.empty()) return;
        const block b = m_.live[in_.below(m_.live.size())];
        std::size_t w = wrong_size_for(b);
        if (w == SIZE_MAX) return;
        expect_misuse("free wrong size", b.p, w, b.alignment, true, [&] { s_.deallocate(b.p, w, b.alignment); });
        m_.verify(b, "after a wrong-size free");
        return;
      }
      case 6: {  // resize of a freed block: false, nothing changes
        if (m_.freed.empty() || env().skips("resize_freed")) return;
        const auto f = m_.freed[in_.below(m_.freed.size())];
        if (m_.overlaps_live(f.p, std::max<std::size_t>(f.rounded, 1))) return;
        const std::size_t n = pick_size(in_, s_.sizes());
        if (n == f.size) return;
        bool ok = false;
        expect_misuse(
            "resize freed block", f.p, f.size, f.alignment, false,
            [&] { ok = s_.resize(f.p, f.size, n, f.alignment); }, s_.resize_reaches_resource(f.size, n, f.alignment));
        SF_CHECK(!ok, "resize(%p, %zu -> %zu) of a freed block returned true", static_cast<void*>(f.p), f.size, n);
        return;
      }
      case 7: {  // resize with a wrong old size or an interior pointer: false, nothing changes
        if (m_.live.empty()) return;
        const block b = m_.live[in_.below(m_.live.size())];
        const std::size_t n = pick_size(in_, s_.sizes());
        if (n == b.size) return;  // (a resize to the same size may be answered without looking at the block)
        bool ok = false;
        if (in_.bit()) {
          const std::size_t w = wrong_size_for(b);
          if (w == SIZE_MAX || w == n) return;
          expect_misuse(
              "resize wrong size", b.p, w, b.alignment, true, [&] { ok = s_.resize(b.p, w, n, b.alignment); },
              s_.resize_reaches_resource(w, n, b.alignment));
          SF_CHECK(!ok, "resize(%p, wrong old size %zu (allocated %zu) -> %zu) returned true", static_cast<void*>(b.p),
                   w, b.size, n);
        } else {
          if (b.rounded < 2) return;
          char* p = b.p + 1 + in_.below(b.rounded - 1);
          expect_misuse(
              "resize interior pointer", p, b.size, b.alignment, true,
              [&] { ok = s_.resize(p, b.size, n, b.alignment); }, s_.resize_reaches_resource(b.size, n, b.alignment));
          SF_CHECK(!ok, "resize of interior pointer %p returned true", static_cast<void*>(p));
        }
        m_.verify(b, "after a bad resize");
        return;
      }
      default: {  // a pointer from the C++ heap
        const std::size_t size = 1 + in_.below(512);
        std::unique_ptr<char[]> h(new char[size]);
        void* p = h.get();
        expect_misuse("free heap pointer", p, size, 8, false, [&] { s_.deallocate(p, size, 8); });
        return;
      }
    }
  }

  /// A size that names another block than b's (SIZE_MAX when none is found).
  std::size_t wrong_size_for(const block& b) {
    const std::size_t cands[] = {b.size + 1,
                                 b.size == 0 ? 1 : b.size - 1,
                                 b.size * 2 + 1,
                                 b.size / 2,
                                 b.rounded + 1,
                                 b.rounded + 8,
                                 b.rounded + 4096,
                                 b.size + s_.sizes().max / 2,
                                 pick_size(in_, s_.sizes())};
    const std::size_t start = in_.below(sizeof cands / sizeof cands[0]);
    for (std::size_t j = 0; j < sizeof cands / sizeof cands[0]; ++j) {
      const std::size_t w = cands[(start + j) % (sizeof cands / sizeof cands[0])];
      if (w > s_.sizes().max * 2) continue;
      if (!s_.same_block(w, b.size, b.alignment)) return w;
    }
    return SIZE_MAX;
  }

  // ---- the op loop -------------------------------------------------------------------------------------------------

  void check_all(const char* when) {
    m_.check_stats(when);
    s_.check_model(m_.live);
    if (up_ != nullptr && up_->recorder() != nullptr && s_.held_is_upstream_bytes()) {
      // The contract makes counts and bytes in use exact, not bytes_held: it may leave out the resource's own
      // bookkeeping, but it never claims more than upstream gave (STRATA_FUZZ_STRICT_HELD=1: exactly what it gave).
      const strata::resource_stats st = s_.stats();
      static const bool strict = std::getenv("STRATA_FUZZ_STRICT_HELD") != nullptr;
      if (strict ? st.bytes_held != up_->held_bytes() : st.bytes_held > up_->held_bytes())
        fail("stats %s: bytes_held %zu, but the subject holds %zu bytes (%zu blocks) from upstream", when,
             st.bytes_held, up_->held_bytes(), up_->held_blocks());
    }
    if (m_.live.empty()) s_.check_when_empty(false);
  }

  /// After a trim with no live block.
  void check_trimmed_empty() {
    s_.check_when_empty(true);
    if (up_ != nullptr && up_->recorder() != nullptr && s_.trim_returns_all() && !env().skips("trim_returns")) {
      // Chunks are multiples of 64 KiB aligned to their size; bookkeeping (e.g. a table of large blocks) may stay.
      for (const auto& rec : up_->recorder()->live())
        if (rec.size % (64 * KiB) == 0 && rec.alignment >= 64 * KiB)
          fail("trim() with no live block kept an upstream chunk %p of %zu bytes: it must return every empty chunk",
               rec.pointer, rec.size);
    }
  }

  void run(std::size_t max_ops) {
    std::size_t ops = 0;
    const size_profile& prof = s_.sizes();
    while (!in_.done() && ops < max_ops) {
      ++ops;
      g_ops.fetch_add(1, std::memory_order_relaxed);
      const std::uint8_t op = in_.u8();
      switch (op % 32) {
        case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 8: {  // allocate
          const std::size_t size = pick_size(in_, prof);
          alloc(size, pick_alignment(in_, s_.max_alignment()));
          break;
        }
        case 9: case 10: case 11: case 12: case 13: case 14: {  // free
          if (m_.live.empty()) break;
          const std::size_t i = in_.below(m_.live.size());
          if (!s_.free_special(*this, i)) free_block(i, m_.live[i].size);
          break;
        }
        case 15: {  // free with another size that names the same block (accepted, not misuse)
          if (m_.live.empty() || !s_.accepts_same_block_sizes() || env().skips("same_block_sizes")) break;
          const std::size_t i = in_.below(m_.live.size());
          const block& b = m_.live[i];
          if (b.flags & rounded_alloc) break;
          std::size_t alt = b.size;
          for (std::size_t k = 1 + in_.below(64); k > 0 && alt == b.size; --k) {
            const std::size_t c1 = b.size + k, c2 = b.size >= k ? b.size - k : b.size;
            if (c1 != b.size && s_.same_block(c1, b.size, b.alignment)) alt = c1;
            else if (c2 != b.size && s_.same_block(c2, b.size, b.alignment)) alt = c2;
          }
          free_block(i, alt);
          break;
        }
        case 16: case 17: case 18: {  // resize
          if (m_.live.empty()) break;
          const std::size_t i = in_.below(m_.live.size());
          if (m_.live[i].flags & rounded_alloc) break;
          const std::uint8_t how = in_.u8();
          const std::size_t old = m_.live[i].size;
          std::size_t n;
          if (how % 4 == 0) n = old + 1 + in_.below(64);
          else if (how % 4 == 1) n = old / 2;
          else n = pick_size(in_, prof);
          if (m_.sum_rounded + n > prof.live_budget) n %= 4096;
          if (n == 0 && m_.live[i].alignment > 8 && env().skips("zero_size_alignment")) n = 1;
          resize_block(i, n);
          break;
        }
        case 19: {  // a batch of equal allocations (fills chunks fast)
          const std::size_t count = 1 + in_.below(in_.bit() ? 200 : 24);
          const std::size_t size = pick_size(in_, prof);
          const std::size_t a = pick_alignment(in_, s_.max_alignment());
          for (std::size_t k = 0; k < count && m_.live.size() < 6000; ++k)
            if (!alloc(size, a)) break;
          break;
        }
        case 20: {  // a batch of frees: every other live block, or the newest ones (fragments, then coalesces)
          const std::size_t step = 1 + in_.below(3);
          for (std::size_t i = m_.live.size(); i >= step && i > 0; i -= step) {
            const std::size_t k = i - 1;
            if (!s_.free_special(*this, k)) free_block(k, m_.live[k].size);
          }
          break;
        }
        case 21: {  // trim
          if (!s_.can_trim()) break;
          trace("trim");
          s_.trim();
          SF_CHECK(s_.check_invariants(), "invariants after trim");
          m_.verify_all("after trim");
          if (m_.live.empty()) check_trimmed_empty();
          break;
        }
        case 22: {  // release (rarely: it ends every block)
          if (!s_.can_release() || in_.u8() % 4 != 0 || env().skips("release")) break;
          trace("release", nullptr, m_.live.size());
          s_.release();
          m_.clear_all();
          SF_CHECK(s_.check_invariants(), "invariants after release");
          const strata::resource_stats st = s_.stats();
          SF_CHECK(st.bytes_in_use == m_.base().bytes_in_use,
                   "after release() bytes_in_use is %zu (the model has no live block)", st.bytes_in_use);
          if (up_ != nullptr && up_->recorder() != nullptr && up_->held_blocks() != 0)
            fail("release() kept %zu upstream blocks (%zu bytes): it must return everything", up_->held_blocks(),
                 up_->held_bytes());
          break;
        }
        case 23: {  // checks
          trace("check");
          m_.verify_all("at a check");
          SF_CHECK(s_.check_invariants(), "invariants");
          break;
        }
        case 24: {  // upstream faults
          if (up_ == nullptr) break;
          const std::uint8_t f = in_.u8();
          if (f % 4 == 0 || up_->faults_armed()) {
            trace("faults reset");
            up_->reset_faults();
          } else if (f % 4 == 1 || f % 4 == 2) {
            const std::size_t n = in_.u8() % 24;
            trace("faults fail_after", nullptr, n);
            up_->fail_after(n);
          } else {
            const std::size_t limit = (in_.u16() % 4096) * 4 * KiB;
            trace("faults byte limit", nullptr, limit);
            up_->set_byte_limit(limit);
          }
          break;
        }
        case 25: case 26: {  // subject-specific
          trace("extra");
          s_.extra_op(*this, in_);
          break;
        }
        case 27: {  // misuse (when the input allows it)
          if (misuse_) misuse_op();
          break;
        }
        case 28: {  // impossible sizes and bad alignments are errors, never blocks
          static constexpr std::size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4095, SIZE_MAX / 2 + 1,
                                                 std::size_t{1} << 62, (std::size_t{1} << 62) + 1};
          const std::uint8_t w = in_.u8();
          const strata::resource_stats before = s_.stats();
          if (w % 3 == 2) {
            static constexpr std::size_t bad_align[] = {0, 3, 24, 4097, 48, 65535};
            const std::size_t a = bad_align[in_.below(6)];
            trace("allocate bad alignment", nullptr, 64, a);
            try {
              void* p = s_.allocate(64, a);
              fail("allocate(64, alignment %zu) returned %p instead of throwing", a, p);
            } catch (const std::invalid_argument&) {
            } catch (const std::exception& e) {
              fail("allocate(64, alignment %zu) threw %s, not invalid_argument", a, e.what());
            }
          } else {
            const std::size_t n = huge[in_.below(6)];
            const std::size_t a = pick_alignment(in_, s_.max_alignment());
            trace("allocate impossible", nullptr, n, a);
            try {
              void* p = s_.allocate(n, a);
              fail("allocate(%zu, %zu) returned %p instead of bad_alloc", n, a, p);
            } catch (const std::bad_alloc&) {
            } catch (const std::exception& e) {
              fail("allocate(%zu, %zu) threw %s, not bad_alloc", n, a, e.what());
            }
          }
          const strata::resource_stats s = s_.stats();
          SF_CHECK(s.allocations == before.allocations && s.bytes_in_use == before.bytes_in_use,
                   "a rejected request changed the counts");
          break;
        }
        case 29: {  // reallocate
          auto* r = dynamic_cast<strata::resource*>(resource_view_);
          if (m_.live.empty() || r == nullptr) break;
          const std::size_t i = in_.below(m_.live.size());
          reallocate_block(i, pick_size(in_, prof), *r);
          break;
        }
        default: {  // allocate small
          alloc(in_.u8() % 129, in_.bit() ? 8 : 16);
          break;
        }
      }
      check_all("after an op");
      if (ops % 16 == 0) SF_CHECK(s_.check_invariants(), "invariants");
    }
  }

  /// Frees everything left (contents checked), then stats must be back at the baseline.
  void drain() {
    if (up_ != nullptr) up_->reset_faults();
    m_.verify_all("at the end");
    while (!m_.live.empty()) {
      const std::size_t i = m_.live.size() - 1;
      if (!s_.free_special(*this, i)) free_block(i, m_.live[i].size);
    }
    check_all("after freeing everything");
    const strata::resource_stats s = s_.stats();
    SF_CHECK(s.bytes_in_use == m_.base().bytes_in_use && s.live_allocations() == m_.base().live_allocations(),
             "everything freed, yet stats say %zu bytes in %" PRIu64 " live allocations", s.bytes_in_use,
             s.live_allocations());
    SF_CHECK(s_.check_invariants(), "invariants at the end");
    if (s_.can_trim()) {
      s_.trim();
      SF_CHECK(s_.check_invariants(), "invariants after the final trim");
      check_trimmed_empty();
    }
  }

  std::pmr::memory_resource* resource_view_ = nullptr;  // for strata::reallocate (when the subject is a resource)

 private:
  subject& s_;
  upstream_env* up_;
  reader& in_;
  model m_;
  bool misuse_;
  std::uint32_t seed_ = 0;
};

// ==== awaiting double frees ==========================================================================================

inline void begin_input() {
  g_inputs.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> g(g_reports_state.m);
  g_reports_state.awaiting.clear();
  g_reports_state.awaiting_reported.clear();
  std::lock_guard<std::mutex> t(g_trace_mutex);
  g_trace_n = 0;
}

/// Every injected double free must have been reported by now (at once, or confirmed later by a flush).
inline void check_awaiting(const char* when) {
  std::lock_guard<std::mutex> g(g_reports_state.m);
  if (!g_reports_state.awaiting.empty())
    fail("an injected double free of %p was never reported (%s)", g_reports_state.awaiting.front(), when);
}

// ==== cross-thread replay ============================================================================================

/// Replays one decoded schedule on 2..4 threads. Rounds: the main thread decodes a round (each thread gets up to 4
/// ops on slots no other thread touches in that round), starts it, waits, then checks the model (overlap, counts,
/// invariants). Blocks move between threads through the slots (allocated by one, freed by another). A split round
/// has two threads free the same live block at once: it must be reported and counted once.
class threaded_runner {
 public:
  static constexpr std::size_t slot_count = 64;
  enum op_kind : std::uint8_t { op_alloc, op_free, op_resize, op_churn, op_trim, op_thread_extra };
  struct xop {
    op_kind kind;
    std::uint8_t slot;
    std::size_t size, alignment, new_size;
    // results
    bool ok = false;
    void* p = nullptr;
  };
  struct slot_state {
    bool live = false;
    block b;
  };

  threaded_runner(subject& s, upstream_env* up, reader& in, unsigned threads, bool misuse)
      : s_(s), up_(up), in_(in), m_(s), threads_(threads), misuse_(misuse) {}

  void run(std::size_t max_rounds) {
    g_threaded_inputs.fetch_add(1, std::memory_order_relaxed);
    s_.concurrent = true;
    for (std::size_t& h : hot_sizes_) h = pick_size(in_, s_.sizes()) % (64 * KiB);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads_; ++t) pool.emplace_back([this, t] { worker(t); });
    std::size_t rounds = 0;
    while (!in_.done() && rounds < max_rounds) {
      ++rounds;
      decode_round();
      start_and_wait();
      after_round();
    }
    stop_.store(true, std::memory_order_release);
    round_.fetch_add(1, std::memory_order_acq_rel);
    for (auto& th : pool) th.join();
    s_.concurrent = false;
    // Every block left is freed here, on the main thread (another thread than most owners).
    if (up_ != nullptr) up_->reset_faults();
    for (slot_state& sl : slots_) {
      if (!sl.live) continue;
      verify(sl.b);
      trace("deallocate(main)", sl.b.p, sl.b.size, sl.b.alignment);
      s_.deallocate(sl.b.p, sl.b.size, sl.b.alignment);
      ++m_deallocs_;
      sum_counted_ -= sl.b.counted;
      sum_rounded_ -= sl.b.rounded;
      sl.live = false;
    }
    extents_.clear();
    if (s_.can_trim()) s_.trim();
    check_counts("after the threads ended, everything was freed and trimmed", true);
    SF_CHECK(s_.check_invariants(), "invariants after the threads ended");
    check_awaiting("after the threads ended, everything was freed and trimmed");
    SF_CHECK(split_reports_ok(), "a split double free was never reported");
  }

 private:
  static void spin_wait(int& spins) {
    if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }

  void decode_round() {
    for (auto& v : plan_) v.clear();
    split_ = false;
    const std::uint8_t r = in_.u8();
    // Between rounds: upstream faults, checks.
    if (r % 32 == 31 && up_ != nullptr && !env().skips("thread_faults")) {
      const std::uint8_t f = in_.u8();
      if (f % 3 == 0 || up_->faults_armed()) up_->reset_faults();
      else up_->fail_after(f % 16);
      trace("faults", nullptr, f % 3, f % 16, up_->faults_armed());
    }
    if (misuse_ && r % 8 == 7 && !env().skips("split_double_free")) {
      // Two threads free one live block at the same time.
      std::vector<std::uint8_t> live;
      for (std::size_t i = 0; i < slot_count; ++i)
        if (slots_[i].live) live.push_back(static_cast<std::uint8_t>(i));
      if (!live.empty()) {
        split_ = true;
        split_slot_ = live[in_.below(live.size())];
        split_a_ = static_cast<unsigned>(in_.below(threads_));
        split_b_ = (split_a_ + 1 + static_cast<unsigned>(in_.below(threads_ - 1))) % threads_;
        {
          std::lock_guard<std::mutex> g(g_reports_state.m);
          g_reports_state.awaiting.push_back(slots_[split_slot_].b.p);
        }
        splits_.push_back(slots_[split_slot_].b.p);
        split_arrived_.store(0, std::memory_order_relaxed);
        verify(slots_[split_slot_].b);
        g_misuse_injected.fetch_add(1, std::memory_order_relaxed);
        trace("split double free", slots_[split_slot_].b.p, split_a_, split_b_);
        return;
      }
    }
    bool claimed[slot_count] = {};
    std::size_t planned = sum_rounded_;  // live bytes if every planned allocation succeeds
    for (unsigned t = 0; t < threads_; ++t) {
      const std::size_t n = in_.u8() % 5;
      for (std::size_t k = 0; k < n; ++k) {
        g_ops.fetch_add(1, std::memory_order_relaxed);
        xop o{};
        const std::uint8_t what = in_.u8();
        o.slot = static_cast<std::uint8_t>(in_.below(slot_count));
        if (claimed[o.slot]) continue;
        const bool live = slots_[o.slot].live;
        switch (what % 8) {
          case 0: case 1: case 2:
            o.kind = live ? op_free : op_alloc;
            break;
          case 3:
            o.kind = live ? op_resize : op_alloc;
            break;
          case 4:
            o.kind = op_churn;
            break;
          case 5:
            o.kind = s_.can_trim() ? op_trim : op_churn;
            break;
          case 6:
            o.kind = op_thread_extra;
            break;
          default:
            o.kind = live ? op_free : op_alloc;
            break;
        }
        // Half the sizes come from a few per input, so threads meet in the same size classes and blocks.
        o.size = in_.bit() ? hot_sizes_[in_.u8() % 4] : pick_size(in_, s_.sizes());
        if (o.kind == op_alloc && planned + o.size > s_.sizes().live_budget) o.size %= 4096;
        if (o.kind == op_alloc) planned += o.size;
        o.alignment = pick_alignment(in_, s_.max_alignment());
        o.new_size = o.kind == op_resize ? pick_size(in_, s_.sizes()) : o.kind == op_churn ? in_.u8() : 0;
        if (o.kind == op_resize && o.new_size == 0 && env().skips("zero_size_alignment")) o.new_size = 1;
        if (planned + o.new_size > s_.sizes().live_budget) o.new_size %= 4096;
        planned += o.new_size;
        if (o.kind == op_alloc || o.kind == op_free || o.kind == op_resize) claimed[o.slot] = true;
        plan_[t].push_back(o);
      }
    }
  }

  void start_and_wait() {
    before_ = s_.stats();
    done_.store(0, std::memory_order_relaxed);
    round_.fetch_add(1, std::memory_order_acq_rel);
    int spins = 0;
    while (done_.load(std::memory_order_acquire) < threads_) spin_wait(spins);
  }

  void worker(unsigned t) {
    t_thread = static_cast<int>(t) + 1;
    std::uint64_t seen = 0;
    for (;;) {
      int spins = 0;
      std::uint64_t r;
      while ((r = round_.load(std::memory_order_acquire)) == seen) spin_wait(spins);
      seen = r;
      if (stop_.load(std::memory_order_acquire)) break;
      if (split_) {
        if (t == split_a_ || t == split_b_) split_free(t);
      } else {
        for (xop& o : plan_[t]) execute(o, t);
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
    // The thread ends: a thread cache hands its heap back here.
  }

  void split_free(unsigned t) {
    const block b = slots_[split_slot_].b;  // verified by the main thread before the round: one free may unmap it
    // Both threads arrive, then free at once (a busy wait: no yield between arrival and the free).
    split_arrived_.fetch_add(1, std::memory_order_acq_rel);
    for (unsigned spins = 0; split_arrived_.load(std::memory_order_acquire) < 2 && spins < (1u << 24); ++spins) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    expectation e;
    e.pointer = b.p;
    e.size = b.size;
    e.rounded = s_.reports_rounded_size() ? b.rounded : 0;
    trace("deallocate(split)", b.p, b.size, b.alignment);
    t_expect = &e;
    s_.deallocate(b.p, b.size, b.alignment);
    t_expect = nullptr;
    split_hits_.fetch_add(e.reports, std::memory_order_relaxed);
    (void)t;
  }

  void execute(xop& o, unsigned t) {
    slot_state& sl = slots_[o.slot];
    switch (o.kind) {
      case op_alloc: {
        if (o.size == 0 && o.alignment > 8 && env().skips("zero_size_alignment")) o.size = 1;
        try {
          doing("allocate", nullptr, o.size, o.alignment);
          o.p = s_.allocate(o.size, o.alignment);
          done_doing();
          o.ok = true;
        } catch (const std::bad_alloc&) {
          g_bad_allocs.fetch_add(1, std::memory_order_relaxed);
          if (!(up_ != nullptr && up_->faults_armed()) && !s_.may_fail(o.size, o.alignment))
            fail("allocate(%zu, %zu) threw bad_alloc on thread %u with no fault armed", o.size, o.alignment, t);
          trace("allocate", nullptr, o.size, o.alignment, 0, -1);
          return;
        }
        trace("allocate", o.p, o.size, o.alignment);
        if (reinterpret_cast<std::uintptr_t>(o.p) % o.alignment != 0 &&
            !(o.size == 0 && env().skips("zero_size_alignment")))
          fail("allocate(%zu, %zu) returned %p on thread %u: misaligned", o.size, o.alignment, o.p, t);
        block b;
        b.p = static_cast<char*>(o.p);
        b.size = o.size;
        b.alignment = o.alignment;
        b.rounded = s_.round(o.size, o.alignment);
        b.counted = s_.counts_rounded() ? b.rounded : o.size;
        b.seed = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(o.p) >> 3) ^ (t * 0x1000193u);
        fill(b.p, b.size, b.seed);
        sl.b = b;
        return;
      }
      case op_free: {
        verify(sl.b);
        trace("deallocate", sl.b.p, sl.b.size, sl.b.alignment);
        s_.deallocate(sl.b.p, sl.b.size, sl.b.alignment);
        o.ok = true;
        return;
      }
      case op_resize: {
        verify(sl.b);
        o.ok = s_.resize(sl.b.p, sl.b.size, o.new_size, sl.b.alignment);
        trace("resize", sl.b.p, sl.b.size, o.new_size, sl.b.alignment, o.ok);
        if (o.ok) {
          const std::size_t bad = first_mismatch(sl.b.p, sl.b.size, sl.b.seed, o.new_size);
          SF_CHECK(bad == SIZE_MAX, "resize on thread %u lost contents at %zu", t, bad);
          fill(sl.b.p, o.new_size, sl.b.seed + 1);
        }
        return;
      }
      case op_churn: {  // allocate a few blocks of one size, pattern, verify, free: private to this thread
        std::size_t n = o.size % (16 * KiB);
        if (n == 0 && o.alignment > 8 && env().skips("zero_size_alignment")) n = 1;
        const std::size_t count = 1 + o.new_size % 8;
        void* ps[8];
        std::size_t got = 0;
        for (; got < count; ++got) {
          try {
            doing("allocate(churn)", nullptr, n, o.alignment);
            ps[got] = s_.allocate(n, o.alignment);
            done_doing();
          } catch (const std::bad_alloc&) {
            done_doing();
            if (!(up_ != nullptr && up_->faults_armed()) && !s_.may_fail(n, o.alignment))
              fail("churn allocate(%zu, %zu) threw bad_alloc with no fault armed", n, o.alignment);
            churn_fail_.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          if (reinterpret_cast<std::uintptr_t>(ps[got]) % o.alignment != 0)
            fail("allocate(%zu, %zu) returned %p on thread %u: misaligned", n, o.alignment, ps[got], t);
          fill(ps[got], n, static_cast<std::uint32_t>(77 + t + got));
        }
        for (std::size_t k = got; k-- > 0;) {
          const std::size_t bad = first_mismatch(ps[k], n, static_cast<std::uint32_t>(77 + t + k));
          SF_CHECK(bad == SIZE_MAX, "a private block %p (%zu bytes) changed under another thread at %zu", ps[k], n, bad);
          s_.deallocate(ps[k], n, o.alignment);
          churns_.fetch_add(1, std::memory_order_relaxed);
        }
        return;
      }
      case op_trim:
        trace("trim");
        s_.trim();
        return;
      case op_thread_extra:
        trace("thread op", nullptr, o.size);
        s_.thread_op(o.size);
        return;
    }
  }

  void verify(const block& b) {
    const std::size_t bad = first_mismatch(b.p, b.size, b.seed);
    if (bad != SIZE_MAX)
      fail("contents of live block %p (%zu bytes) changed at offset %zu", static_cast<void*>(b.p), b.size, bad);
  }

  void insert_extent(const block& b) {
    const auto a = reinterpret_cast<std::uintptr_t>(b.p);
    const std::uintptr_t e = a + std::max<std::size_t>(b.rounded, 1);
    auto next = extents_.lower_bound(a);
    if ((next != extents_.end() && next->first < e) || (next != extents_.begin() && std::prev(next)->second > a))
      fail("block %p (%zu bytes, alignment %zu) handed out while overlapping a live block (handed out twice?)",
           static_cast<void*>(b.p), b.size, b.alignment);
    extents_.emplace(a, e);
  }

  void after_round() {
    if (split_) {
      slot_state& sl = slots_[split_slot_];
      extents_.erase(reinterpret_cast<std::uintptr_t>(sl.b.p));
      sl.live = false;
      ++m_deallocs_;
      sum_counted_ -= sl.b.counted;
      sum_rounded_ -= sl.b.rounded;
      const strata::resource_stats s = s_.stats();
      const std::uint64_t counted = s.deallocations - before_.deallocations;
      if (s_.settles_double_frees_late() && counted == 2) {
        ++unsettled_;
        unsettled_bytes_ += sl.b.counted > sl.b.rounded ? sl.b.counted : sl.b.rounded;
      } else {
        SF_CHECK(counted == 1, "a block freed by two threads at once was counted %" PRIu64 " times", counted);
      }
    } else {
      // Frees first (an address freed and taken again in the same round is legitimate), then new blocks.
      for (unsigned t = 0; t < threads_; ++t)
        for (xop& o : plan_[t]) {
          slot_state& sl = slots_[o.slot];
          if (o.kind == op_free && o.ok) {
            extents_.erase(reinterpret_cast<std::uintptr_t>(sl.b.p));
            sl.live = false;
            ++m_deallocs_;
            sum_counted_ -= sl.b.counted;
            sum_rounded_ -= sl.b.rounded;
          } else if (o.kind == op_resize && o.ok) {
            extents_.erase(reinterpret_cast<std::uintptr_t>(sl.b.p));
            const std::size_t r = s_.round(o.new_size, sl.b.alignment);
            const std::size_t c = s_.counts_rounded() ? r : o.new_size;
            sum_counted_ = sum_counted_ - sl.b.counted + c;
            sum_rounded_ = sum_rounded_ - sl.b.rounded + r;
            sl.b.size = o.new_size;
            sl.b.counted = c;
            sl.b.rounded = r;
            sl.b.seed += 1;
          }
        }
      for (unsigned t = 0; t < threads_; ++t)
        for (xop& o : plan_[t]) {
          slot_state& sl = slots_[o.slot];
          if (o.kind == op_resize && o.ok) insert_extent(sl.b);
          if (o.kind != op_alloc || !o.ok) continue;
          sl.live = true;
          ++m_allocs_;
          sum_counted_ += sl.b.counted;
          sum_rounded_ += sl.b.rounded;
          insert_extent(sl.b);
        }
    }
    check_counts("after a round");
    if (++round_count_ % 4 == 0) SF_CHECK(s_.check_invariants(), "invariants after a round");
  }

  /// Counts against the model. Until `settled`, blocks freed by two threads at once may still count twice (see
  /// subject::settles_double_frees_late): up to unsettled_ deallocations more and their bytes less.
  void check_counts(const char* when, bool settled = false) {
    const strata::resource_stats s = s_.stats();
    const strata::resource_stats& base = m_.base();
    const std::uint64_t slack = settled ? 0 : unsettled_;
    const std::size_t slack_bytes = settled ? 0 : unsettled_bytes_;
    const std::uint64_t da = s.allocations - base.allocations - churns_.load(),
                        dd = s.deallocations - base.deallocations - churns_.load();
    SF_CHECK(da == m_allocs_ && dd >= m_deallocs_ && dd <= m_deallocs_ + slack,
             "stats %s: allocations +%" PRIu64 " deallocations +%" PRIu64 " (private churn excluded), the model has +%" PRIu64
             " +%" PRIu64 "%s",
             when, da, dd, m_allocs_, m_deallocs_,
             unsettled_ != 0 ? " (and blocks freed by two threads at once, counted twice until settled)" : "");
    std::size_t live = 0;
    for (const slot_state& sl : slots_) live += sl.live;
    const auto live_now = static_cast<std::int64_t>(s.live_allocations() - base.live_allocations());
    const auto want_live = static_cast<std::int64_t>(live);
    SF_CHECK(live_now <= want_live && live_now + static_cast<std::int64_t>(slack) >= want_live,
             "stats %s: live_allocations %" PRId64 ", the model has %zu", when, live_now, live);
    if (slack != 0) return;  // bytes_in_use is short by the unsettled blocks' sizes (as the resource counts them)
    (void)slack_bytes;
    const std::size_t bytes = s.bytes_in_use - base.bytes_in_use;
    int mode = s_.bytes_mode() != 0 ? s_.bytes_mode() : env().bytes_mode;
    if (mode == 0 && sum_counted_ != sum_rounded_) {
      mode = bytes == sum_rounded_ ? 2 : 1;
      s_.bytes_mode() = mode;
    }
    const std::size_t want = mode == 2 ? sum_rounded_ : sum_counted_;
    SF_CHECK(bytes == want, "stats %s: bytes_in_use %zu, the model has %zu (requested %zu, rounded %zu)", when, bytes,
             want, sum_counted_, sum_rounded_);
  }

  bool split_reports_ok() {
    std::lock_guard<std::mutex> g(g_reports_state.m);
    for (const void* p : splits_) {
      const auto& r = g_reports_state.awaiting_reported;
      if (std::find(r.begin(), r.end(), p) == r.end()) return false;
    }
    return true;
  }

  subject& s_;
  upstream_env* up_;
  reader& in_;
  model m_;  // for its baseline
  unsigned threads_;
  bool misuse_;
  slot_state slots_[slot_count];
  std::vector<xop> plan_[4];
  bool split_ = false;
  std::uint8_t split_slot_ = 0;
  unsigned split_a_ = 0, split_b_ = 0;
  std::vector<const void*> splits_;
  std::atomic<std::uint64_t> round_{0};
  std::atomic<unsigned> done_{0};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> split_hits_{0}, churns_{0}, churn_fail_{0};
  std::atomic<unsigned> split_arrived_{0};
  strata::resource_stats before_{};
  std::map<std::uintptr_t, std::uintptr_t> extents_;
  std::uint64_t m_allocs_ = 0, m_deallocs_ = 0;
  std::size_t sum_counted_ = 0, sum_rounded_ = 0;
  std::size_t round_count_ = 0;
  std::size_t hot_sizes_[4] = {};
  std::uint64_t unsettled_ = 0;       // blocks freed by two threads at once and (so far) counted twice
  std::size_t unsettled_bytes_ = 0;
};

// ==== a subject over a strata resource ===============================================================================

template <class R>
class resource_subject : public subject {
 public:
  R& r() { return *r_; }
  void* allocate(std::size_t n, std::size_t a) override { return r_->allocate(n, a); }
  void deallocate(void* p, std::size_t n, std::size_t a) override { r_->deallocate(p, n, a); }
  bool resize(void* p, std::size_t o, std::size_t n, std::size_t a) override { return r_->resize(p, o, n, a); }
  [[nodiscard]] strata::resource_stats stats() const override { return r_->stats(); }
  bool check_invariants() override { return r_->check_invariants(); }
  [[nodiscard]] const size_profile& sizes() const override { return prof_; }
  std::pmr::memory_resource* other() override { return other_.get(); }
  /// Destroys the resource (before its upstream is checked).
  void destroy() {
    r_.reset();
    other_.reset();
  }

 protected:
  std::unique_ptr<R> r_;
  std::unique_ptr<std::pmr::memory_resource> other_;
  size_profile prof_;
};

/// Whether R has round_size(bytes, alignment) (the resources gain it as bytes_in_use moves to usable sizes).
template <class R, class = void>
struct has_round_size_member : std::false_type {};
template <class R>
struct has_round_size_member<R, std::void_t<decltype(std::declval<const R&>().round_size(std::size_t{}, std::size_t{}))>>
    : std::true_type {};

/// R's round_size(bytes, alignment) when it has one, else `fallback` (the harness's own model of its rounding).
template <class R, class F>
std::size_t round_size_or(const R& r, std::size_t bytes, std::size_t alignment, F&& fallback) {
  if constexpr (has_round_size_member<R>::value) {
    (void)fallback;
    return r.round_size(bytes, alignment);
  } else {
    (void)r;
    return fallback();
  }
}

/// Adds the usual edges around a threshold t: t itself (pick_size adds small offsets), and t/2, 2t.
inline void add_edges(size_profile& p, std::initializer_list<std::size_t> ts) {
  for (std::size_t t : ts)
    if (t != 0 && t <= p.max) p.edges.push_back(t);
}

// ==== one input ======================================================================================================

/// Flags byte: bit 0 misuse mode, bit 1 cross-thread mode (thread-safe subjects), bits 2-3 threads - 2, bit 4 destroy
/// the resource with its blocks still live (the destructor must return everything).
struct input_flags {
  bool misuse;
  bool threads;
  unsigned thread_count;
  bool destroy_live;
};
inline input_flags decode_flags(std::uint8_t b, bool thread_safe) {
  input_flags f;
  f.misuse = (b & 1) != 0;
  f.threads = thread_safe && (b & 2) != 0;
  f.thread_count = 2 + ((b >> 2) & 3) % 3;
  f.destroy_live = (b & 0x30) == 0x30;
  return f;
}
inline std::string describe(const input_flags& f) {
  std::string s = f.threads ? "cross-thread x" + std::to_string(f.thread_count) : "single-thread";
  if (f.misuse) s += ", misuse";
  if (f.destroy_live) s += ", destroyed with live blocks";
  return s;
}

/// Runs the ops of one input against `s` (over `up`, may be null), then frees everything and checks the stats.
inline void run_subject(subject& s, upstream_env* up, reader& in, const input_flags& f,
                        std::pmr::memory_resource* as_resource) {
  if (f.threads) {
    threaded_runner tr(s, up, in, f.thread_count, f.misuse);
    tr.run(160);
    return;
  }
  runner r(s, up, in, f.misuse);
  r.resource_view_ = as_resource;
  r.run(1500);
  if (f.destroy_live && !r.mdl().live.empty()) {
    if (up != nullptr) up->reset_faults();
    r.mdl().verify_all("before destruction");
    SF_CHECK(s.check_invariants(), "invariants before destruction");
    trace("destroy with live blocks", nullptr, r.mdl().live.size());
    return;
  }
  r.drain();
  check_awaiting("after everything was freed and trimmed");
}

/// One input of a target whose subject is a strata resource over an upstream chain. Input: [upstream kind] [page
/// options when the upstream is an own page_resource: 2 bytes] [the subject's option bytes] [flags] [ops...].
/// make(env, in, desc) builds the subject (nullptr: options the resource rejects; the input is skipped).
template <class Make>
inline int run_resource_target(const std::uint8_t* data, std::size_t size, Make make) {
  begin_input();
  reader in(data, size);
  upstream_env env(pick_upstream(in.u8()), in);
  std::string desc;
  auto s = make(env, in, desc);
  if (!s) return 0;
  const input_flags f = decode_flags(in.u8(), s->thread_safe());
  context() = desc + " over " + env.describe() + ", " + describe(f);
  run_subject(*s, &env, in, f, &s->r());
  s->destroy();
  env.check_all_returned();
  return 0;
}

/// Installs the recording handler once and the counters' printer.
inline void init(const char* target) {
  g_target = target;
  strata::set_error_handler(&record_error);
  std::atexit(&print_counters);
  (void)env();
}

}  // namespace strata_fuzz
