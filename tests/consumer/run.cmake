# SPDX-License-Identifier: MIT
# Installs the strata build into a scratch prefix, then configures, builds and runs tests/consumer against it with
# find_package(strata CONFIG), and compiles the same programs (C++ and C) with pkg-config's flags when pkg-config is
# present.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

include(${CMAKE_CURRENT_LIST_DIR}/run_command.cmake)

run(${CMAKE_COMMAND} --install ${STRATA_BUILD_DIR} --prefix ${prefix})
foreach(f share/doc/strata/LICENSE share/doc/strata/CHANGELOG.md include/strata/version.h include/strata/version.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "the install lacks ${f}")
  endif()
endforeach()
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build -G ${CMAKE_GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER}
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
run(${WORK_DIR}/build/consumer_c)

find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  file(GLOB_RECURSE pc_files ${prefix}/*/strata.pc)
  list(GET pc_files 0 pc_file)
  get_filename_component(pc_dir ${pc_file} DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} ${pc_dir})
  execute_process(COMMAND ${PKG_CONFIG} --variable=libdir strata OUTPUT_VARIABLE libdir
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  # As the README says, `pkg-config --cflags --libs strata`, and with --static: both must link from C++ and from C
  # (linked by the C compiler: the flags must be valid C and bring the C++ runtime along).
  foreach(mode plain static)
    set(extra)
    if(mode STREQUAL "static")
      set(extra --static)
    endif()
    execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ${extra} strata OUTPUT_VARIABLE flags
                    RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "pkg-config does not know the installed strata.pc")
    endif()
    separate_arguments(flags UNIX_COMMAND "${flags}")
    run(${CXX_COMPILER} ${CONSUMER_SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer-pc-${mode} ${flags})
    # pkg-config sets no rpath: with BUILD_SHARED_LIBS=ON the loader must be told where libstrata.so is.
    run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${libdir} ${WORK_DIR}/consumer-pc-${mode})
    run(${C_COMPILER} -std=c99 -Wall -Werror ${CONSUMER_SOURCE_DIR}/main.c -o ${WORK_DIR}/consumer-pc-c-${mode}
        ${flags})
    run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${libdir} ${WORK_DIR}/consumer-pc-c-${mode})
  endforeach()
else()
  message(STATUS "pkg-config not found: the .pc check is skipped")
endif()
