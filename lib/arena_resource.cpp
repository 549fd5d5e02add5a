// SPDX-License-Identifier: MIT
// lib/arena_resource.cpp: arena_resource and synchronized_arena_resource, the pmr faces of detail::arena_engine.
#include <strata/arena_resource.hpp>

#include <cmath>
#include <stdexcept>

#include <strata/error.hpp>

namespace strata {

template <bool Sync>
detail::arena_config basic_arena_resource<Sync>::config_of(const options& opts, std::pmr::memory_resource* upstream,
                                                           void* buffer, std::size_t buffer_size) {
  if (upstream == nullptr) throw std::invalid_argument("arena_resource: upstream is null");
  if (!(opts.growth_factor >= 1.0) || !std::isfinite(opts.growth_factor))
    throw std::invalid_argument("arena_resource: growth_factor must be at least 1");
  if (opts.initial_size == 0 || opts.initial_size > detail::max_request_size)
    throw std::invalid_argument("arena_resource: initial_size must be between 1 and max_request_size");
  if (opts.max_chunk_size < opts.initial_size)
    throw std::invalid_argument("arena_resource: max_chunk_size is below initial_size");
  if (buffer == nullptr && buffer_size != 0) throw std::invalid_argument("arena_resource: null buffer of some size");
  detail::arena_config c;
  c.initial_chunk = detail::align_up(opts.initial_size, 4096);
  c.max_chunk = std::max(c.initial_chunk, opts.max_chunk_size);
  c.growth = opts.growth_factor;
  c.max_bytes = opts.max_bytes;
  c.decommit = opts.decommit;
  c.watermark = opts.resident_watermark;
  c.release = opts.release;
  c.buffer = buffer;
  c.buffer_size = buffer_size;
  c.describe_blocks = true;  // Valgrind builds: the program's blocks are memcheck's
  return c;
}

template <bool Sync>
basic_arena_resource<Sync>::basic_arena_resource(const options& opts, std::pmr::memory_resource* upstream)
    : opts_(opts), engine_(config_of(opts, upstream, nullptr, 0), upstream, do_name()) {}

template <bool Sync>
basic_arena_resource<Sync>::basic_arena_resource(void* buffer, std::size_t buffer_size, const options& opts,
                                                 std::pmr::memory_resource* upstream)
    : opts_(opts), engine_(config_of(opts, upstream, buffer, buffer_size), upstream, do_name()) {}

template <bool Sync>
bool basic_arena_resource<Sync>::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t) {
  return engine_.resize(p, old_size, new_size);
}

template <bool Sync>
memory_capabilities basic_arena_resource<Sync>::do_capabilities() const noexcept {
  memory_capabilities c;
  c.resize_in_place = true;
  return c;
}

template <bool Sync>
const char* basic_arena_resource<Sync>::do_name() const noexcept {
  return Sync ? "synchronized_arena" : "arena";
}

template <bool Sync>
void basic_arena_resource<Sync>::report_bad_alignment(void* p, std::size_t bytes,
                                                      std::size_t alignment) const noexcept {
  report_error(error_info{error_kind::bad_alignment, do_name(), this, p, bytes, alignment, 0,
                          "deallocate with an alignment that is not a power of two"});
}

template <bool Sync>
basic_arena_resource<Sync>::~basic_arena_resource() = default;

template <bool Sync>
void basic_arena_resource<Sync>::release() noexcept {
  engine_.release();
}

template <bool Sync>
typename basic_arena_resource<Sync>::marker basic_arena_resource<Sync>::mark() const noexcept {
  return marker(engine_.mark());
}

template <bool Sync>
void basic_arena_resource<Sync>::rewind(const marker& m) noexcept {
  engine_.rewind(m.m_);
}

template <bool Sync>
std::size_t basic_arena_resource<Sync>::chunk_count() const noexcept {
  return engine_.chunk_count();
}

template <bool Sync>
bool basic_arena_resource<Sync>::check_invariants() const noexcept {
  return engine_.check_invariants();
}

template <bool Sync>
void* basic_arena_resource<Sync>::do_allocate(std::size_t bytes, std::size_t alignment) {
  detail::check_alignment(Sync ? "synchronized_arena_resource" : "arena_resource", alignment);
  return engine_.allocate(bytes, alignment);
}

template <bool Sync>
void basic_arena_resource<Sync>::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (STRATA_UNLIKELY(!detail::is_power_of_two(alignment))) return report_bad_alignment(p, bytes, alignment);
  engine_.deallocate(p, bytes);
}

template <bool Sync>
resource_stats basic_arena_resource<Sync>::do_stats() const noexcept {
  return engine_.stats();
}

template <bool Sync>
void basic_arena_resource<Sync>::do_inspect(inspector& v, unsigned what) const {
  engine_.inspect(v, what);
}

template class basic_arena_resource<false>;
template class basic_arena_resource<true>;

}  // namespace strata
