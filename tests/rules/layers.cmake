# SPDX-License-Identifier: MIT
# The library's layers (docs/design.md), lowest first. A file includes strata files of its own layer and the layers
# below it, never above; every header and source sits in a layer's folder.
#   foundation    include/strata/{config,error,stats,inspect,resource,options,version}.hpp, version.h, build_config.h
#   os            lib/os/
#   core          include/strata/detail/core/, lib/core/           bits, arithmetic, checks, locks and counters
#   ds            include/strata/detail/ds/, lib/ds/               data structures
#   parts         include/strata/detail/parts/, lib/parts/         slab, chunk source, large requests, per-thread parts
#   engines       include/strata/detail/engines/, lib/engines/     the strategies' mechanisms
#   thread_cache  include/strata/detail/thread_cache/, lib/thread_cache/
#   api           the other public headers, lib/*.cpp and lib/c_api/: the pmr classes, the C API, the test kit
set(layer_names foundation os core ds parts engines thread_cache api)
set(foundation_headers config.hpp error.hpp stats.hpp inspect.hpp resource.hpp options.hpp version.hpp version.h
    build_config.h build_config.h.in)

# The layer's index of a path relative to SOURCE_DIR, or -1 when it is in no layer.
function(layer_of path out)
  set(index -1)
  if(path MATCHES "^include/strata/detail/([a-z_]+)/")
    list(FIND layer_names "${CMAKE_MATCH_1}" index)
    if(index LESS 2)  # foundation and os are no detail folders
      set(index -1)
    endif()
  elseif(path MATCHES "^include/strata/detail/")
    set(index -1)
  elseif(path MATCHES "^include/strata/([^/]+)$")
    list(FIND foundation_headers "${CMAKE_MATCH_1}" f)
    if(f GREATER_EQUAL 0)
      set(index 0)
    else()
      list(FIND layer_names api index)
    endif()
  elseif(path MATCHES "^lib/os/")
    set(index 1)
  elseif(path MATCHES "^lib/c_api/")
    list(FIND layer_names api index)
  elseif(path MATCHES "^lib/([a-z_]+)/")
    list(FIND layer_names "${CMAKE_MATCH_1}" index)
    if(index LESS 2)
      set(index -1)
    endif()
  elseif(path MATCHES "^lib/[^/]+\\.(cpp|hpp)$")
    list(FIND layer_names api index)
  endif()
  set(${out} ${index} PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE files RELATIVE ${SOURCE_DIR} ${SOURCE_DIR}/include/*.hpp ${SOURCE_DIR}/include/*.h
     ${SOURCE_DIR}/include/*.in ${SOURCE_DIR}/lib/*.cpp ${SOURCE_DIR}/lib/*.hpp)
set(found "")
set(checked 0)
foreach(f IN LISTS files)
  layer_of("${f}" mine)
  if(mine LESS 0)
    string(APPEND found "${f}: in no layer's folder\n")
    continue()
  endif()
  list(GET layer_names ${mine} my_name)
  get_filename_component(dir "${f}" DIRECTORY)
  file(STRINGS ${SOURCE_DIR}/${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  foreach(line IN LISTS lines)
    if(line MATCHES "#[ \t]*include[ \t]*<(strata/[^>]+)>")
      set(target "include/${CMAKE_MATCH_1}")
    elseif(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
      get_filename_component(target "${SOURCE_DIR}/${dir}/${CMAKE_MATCH_1}" ABSOLUTE)
      file(RELATIVE_PATH target ${SOURCE_DIR} ${target})
    else()
      continue()  # a system or standard header
    endif()
    math(EXPR checked "${checked} + 1")
    layer_of("${target}" theirs)
    if(theirs LESS 0)
      string(APPEND found "${f}: includes ${target}, which is in no layer\n")
    elseif(theirs GREATER mine)
      list(GET layer_names ${theirs} their_name)
      string(APPEND found "${f} (${my_name}) includes ${target} (${their_name}), a layer above it\n")
    endif()
  endforeach()
endforeach()
if(NOT found STREQUAL "")
  message(FATAL_ERROR "layer rule broken:\n${found}")
endif()
list(LENGTH files n)
message(STATUS "layer rule holds: ${n} files, ${checked} strata includes")
