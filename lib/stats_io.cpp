// SPDX-License-Identifier: MIT
// lib/stats_io.cpp: resource_stats as text and JSON, and the JSON of a chain of resources. Numbers are written by hand
// and with std::to_chars: no locale is consulted.
#include <strata/stats_io.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <memory_resource>
#include <string>
#include <tuple>

#include <strata/resource.hpp>

namespace strata {

namespace {

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// 1234567 as "1,234,567".
void append_grouped(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  const auto n = static_cast<std::size_t>(r.ptr - buf);
  for (std::size_t i = 0; i < n; ++i) {
    if (i != 0 && (n - i) % 3 == 0) out += ',';
    out += buf[i];
  }
}

// Bytes in binary units with one decimal where it says something: "512 B", "1.2 MiB", "4 MiB".
void append_bytes(std::string& out, std::uint64_t v) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned u = 0;
  while (u + 1 < sizeof units / sizeof units[0] && v >= (std::uint64_t{1024} << (10 * u))) ++u;
  if (u == 0) {
    append_uint(out, v);
  } else {
    // Tenths of the unit, rounded to nearest, without overflow (v < 2^64, the unit at least 2^10).
    const std::uint64_t unit = std::uint64_t{1} << (10 * u);
    std::uint64_t whole = v / unit;
    std::uint64_t tenths = ((v % unit) * 10 + unit / 2) / unit;
    if (tenths == 10) {
      ++whole;
      tenths = 0;
    }
    append_uint(out, whole);
    if (tenths != 0) {
      out += '.';
      append_uint(out, tenths);
    }
  }
  out += ' ';
  out += units[u];
}

// A finite double, shortest form that reads back the same; NaN and infinities (never produced here) as 0.
void append_double(std::string& out, double v) {
  if (!std::isfinite(v)) v = 0.0;
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// A JSON string: quotes, backslashes and control characters escaped; other bytes as they are (names are ASCII).
void append_string(std::string& out, const char* s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (const char* p = s != nullptr ? s : ""; *p != '\0'; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_address(std::string& out, const void* p) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, reinterpret_cast<std::uintptr_t>(p), 16);
  out += "\"0x";
  out.append(buf, r.ptr);
  out += '"';
}

/// Writes "key":value pairs of one JSON object, commas between them.
class object_writer {
 public:
  explicit object_writer(std::string& out) : out_(out) { out_ += '{'; }
  ~object_writer() { out_ += '}'; }
  object_writer(const object_writer&) = delete;
  object_writer& operator=(const object_writer&) = delete;

  std::string& key(const char* k) {
    if (!first_) out_ += ',';
    first_ = false;
    append_string(out_, k);
    out_ += ':';
    return out_;
  }
  void number(const char* k, std::uint64_t v) { append_uint(key(k), v); }
  void text(const char* k, const char* v) { append_string(key(k), v); }
  void boolean(const char* k, bool v) { key(k) += v ? "true" : "false"; }

 private:
  std::string& out_;
  bool first_ = true;
};

void write_stats(std::string& out, const resource_stats& s) {
  object_writer o(out);
  o.number("bytes_in_use", s.bytes_in_use);
  o.number("peak_bytes_in_use", s.peak_bytes_in_use);
  o.number("bytes_held", s.bytes_held);
  o.number("bytes_resident", s.bytes_resident);
  o.number("allocations", s.allocations);
  o.number("deallocations", s.deallocations);
  o.number("failed_allocations", s.failed_allocations);
  o.number("upstream_allocations", s.upstream_allocations);
  o.number("upstream_deallocations", s.upstream_deallocations);
  o.number("free_bytes", s.free_bytes);
  o.number("free_blocks", s.free_blocks);
  o.number("largest_free_block", s.largest_free_block);
  o.number("live_allocations", s.live_allocations());
  o.number("overhead_bytes", s.overhead_bytes());
  append_double(o.key("external_fragmentation"), s.external_fragmentation());
}

const char* kind_name(region_kind k) noexcept {
  switch (k) {
    case region_kind::chunk: return "chunk";
    case region_kind::slab: return "slab";
    case region_kind::large: return "large";
    case region_kind::span: return "span";
  }
  return "chunk";
}

/// Collects what inspect() reports as three JSON arrays (each "[...]" once its first element comes).
class json_inspector final : public inspector {
 public:
  std::string classes, tiers, regions;

  void on_class(const class_detail& c) override {
    open(classes);
    object_writer o(classes);
    o.number("index", c.index);
    o.number("block_size", c.block_size);
    o.number("live_blocks", c.live_blocks);
    o.number("free_blocks", c.free_blocks);
    o.number("slabs", c.slabs);
    o.number("bytes_held", c.bytes_held);
  }
  void on_tier(const tier_detail& t) override {
    open(tiers);
    object_writer o(tiers);
    o.text("name", t.name);
    write_stats(o.key("stats"), t.stats);
  }
  bool on_region(const region_detail& r) override {
    open(regions);
    object_writer o(regions);
    append_address(o.key("address"), r.address);
    o.number("size", r.size);
    o.text("kind", kind_name(r.kind));
    if (r.size_class >= 0) o.number("class", static_cast<std::uint64_t>(r.size_class));
    o.number("block_size", r.block_size);
    o.number("bytes_in_use", r.bytes_in_use);
    o.number("live_blocks", r.live_blocks);
    o.number("free_blocks", r.free_blocks);
    o.boolean("cached", r.cached);
    return false;
  }

  static void open(std::string& a) { a += a.empty() ? '[' : ','; }
  static void close(std::string& a) {
    if (a.empty()) a = "[]";
    else a += ']';
  }
};

/// The name of a resource strata cannot look into, and its upstream when it names one (the standard pools).
const char* foreign_name(const std::pmr::memory_resource& r, const std::pmr::memory_resource*& upstream) noexcept {
  upstream = nullptr;
  if (&r == std::pmr::new_delete_resource()) return "std::pmr::new_delete_resource";
  if (&r == std::pmr::null_memory_resource()) return "std::pmr::null_memory_resource";
  if (const auto* p = dynamic_cast<const std::pmr::unsynchronized_pool_resource*>(&r)) {
    upstream = p->upstream_resource();
    return "std::pmr::unsynchronized_pool_resource";
  }
  if (const auto* p = dynamic_cast<const std::pmr::synchronized_pool_resource*>(&r)) {
    upstream = p->upstream_resource();
    return "std::pmr::synchronized_pool_resource";
  }
  if (const auto* p = dynamic_cast<const std::pmr::monotonic_buffer_resource*>(&r)) {
    upstream = p->upstream_resource();
    return "std::pmr::monotonic_buffer_resource";
  }
  return "std::pmr::memory_resource";
}

}  // namespace

std::string to_string(const resource_stats& s) {
  std::string out;
  out += "in use ";
  append_bytes(out, s.bytes_in_use);
  out += " (peak ";
  append_bytes(out, s.peak_bytes_in_use);
  out += "), held ";
  append_bytes(out, s.bytes_held);
  out += ", resident ~";
  append_bytes(out, s.bytes_resident);
  out += ", overhead ";
  append_bytes(out, s.overhead_bytes());
  out += ", ";
  append_grouped(out, s.live_allocations());
  out += " live of ";
  append_grouped(out, s.allocations);
  out += s.allocations == 1 ? " allocation, " : " allocations, ";
  append_grouped(out, s.failed_allocations);
  out += " failed, upstream ";
  append_grouped(out, s.upstream_allocations);
  out += " taken / ";
  append_grouped(out, s.upstream_deallocations);
  out += " returned";
  if (s.free_bytes != 0 || s.free_blocks != 0) {
    out += ", free ";
    append_bytes(out, s.free_bytes);
    out += " in ";
    append_grouped(out, s.free_blocks);
    out += s.free_blocks == 1 ? " block (largest " : " blocks (largest ";
    append_bytes(out, s.largest_free_block);
    out += ", fragmentation ";
    append_uint(out, static_cast<std::uint64_t>(s.external_fragmentation() * 100.0 + 0.5));  // (0 to 1)
    out += "%)";
  }
  return out;
}

std::string to_json(const resource_stats& s) {
  std::string out;
  write_stats(out, s);
  return out;
}

std::string stats_json(const std::pmr::memory_resource& r, unsigned what) {
  std::string out = "{\"levels\":[";
  const std::pmr::memory_resource* level = &r;
  // A chain is short; the bound stops a resource that names itself (or a cycle) as its upstream.
  for (unsigned depth = 0; level != nullptr && depth < 64; ++depth) {
    if (depth != 0) out += ',';
    const resource* s = as_strata_resource(const_cast<std::pmr::memory_resource*>(level));
    object_writer o(out);
    if (s == nullptr) {
      const std::pmr::memory_resource* up = nullptr;
      o.text("name", foreign_name(*level, up));
      append_address(o.key("address"), level);
      level = up;
      continue;
    }
    o.text("name", s->name());
    append_address(o.key("address"), s);
    write_stats(o.key("stats"), s->stats());
    json_inspector v;
    s->inspect(v, what);
    for (auto [key, part, asked] : {std::make_tuple("classes", &v.classes, (what & inspect_classes) != 0),
                                    std::make_tuple("tiers", &v.tiers, (what & inspect_tiers) != 0),
                                    std::make_tuple("regions", &v.regions, (what & inspect_regions) != 0)}) {
      if (!asked) continue;
      json_inspector::close(*part);
      o.key(key) += *part;
    }
    const std::pmr::memory_resource* up = s->upstream_resource();
    level = up != level ? up : nullptr;
  }
  out += "]}";
  return out;
}

}  // namespace strata
