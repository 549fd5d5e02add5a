# SPDX-License-Identifier: MIT
# The library names bit-operation builtins in <strata/detail/core/bits.hpp> alone (portable fallbacks live there).
file(GLOB_RECURSE sources ${SOURCE_DIR}/include/*.hpp ${SOURCE_DIR}/include/*.h ${SOURCE_DIR}/lib/*.cpp
     ${SOURCE_DIR}/lib/*.hpp)
set(found "")
foreach(f IN LISTS sources)
  if(f MATCHES "/detail/core/bits\\.hpp$")
    continue()
  endif()
  file(STRINGS ${f} hits REGEX "__builtin_(clz|ctz|popcount|ffs|parity)")
  if(hits)
    string(APPEND found "${f}: ${hits}\n")
  endif()
endforeach()
if(NOT found STREQUAL "")
  message(FATAL_ERROR "bit builtins outside strata/detail/core/bits.hpp:\n${found}")
endif()
