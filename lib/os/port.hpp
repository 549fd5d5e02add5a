// SPDX-License-Identifier: MIT
// lib/os/port.hpp: what an OS port (lib/os/<os>.cpp) uses from the portable part (common.cpp): the mapped-bytes
// counter and the test hooks; and what it provides besides os.hpp's OS calls: its capabilities.
#pragma once

#include <cstddef>

#include "os.hpp"

namespace strata::os::port {

/// True when an injected test failure makes this obtaining call fail (inject_failure_after).
bool injected_failure() noexcept;
/// True while refuse_advice(true) is in force: purge, decommit and huge-page advice fail.
bool advice_refused() noexcept;
/// What this port can do (get_capabilities() reports it, less what tests mask).
capabilities port_capabilities() noexcept;
/// Counts bytes mapped or reserved (positive) or released (negative) for mapped_bytes().
void note_mapped(std::ptrdiff_t delta) noexcept;

}  // namespace strata::os::port
