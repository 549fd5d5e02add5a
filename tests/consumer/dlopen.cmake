# SPDX-License-Identifier: MIT
# Builds strata as a shared library (BUILD_SHARED_LIBS=ON, symbols hidden but the public API's), links the examples
# against it and runs them (a C++ program needs nothing the library hides), and loads it with dlopen from a C
# program that does not link it (tests/consumer/dlopen.c).
file(REMOVE_RECURSE ${WORK_DIR})
include(${CMAKE_CURRENT_LIST_DIR}/run_command.cmake)
run(${CMAKE_COMMAND} -S ${STRATA_SOURCE_DIR} -B ${WORK_DIR}/build -G ${CMAKE_GENERATOR} -DBUILD_SHARED_LIBS=ON
    -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF -DSTRATA_BUILD_EXAMPLES=ON
    -DSTRATA_BUILD_SOAK=OFF -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
file(GLOB examples ${WORK_DIR}/build/examples/example_*)
foreach(e IN LISTS examples)
  run(${e})
endforeach()
file(GLOB_RECURSE libs ${WORK_DIR}/build/libstrata.so)
list(GET libs 0 lib)
run(${C_COMPILER} -std=c99 -Wall -Wextra -Werror -pthread ${CMAKE_CURRENT_LIST_DIR}/dlopen.c -o ${WORK_DIR}/dlopen -ldl)
run(${WORK_DIR}/dlopen ${lib})
