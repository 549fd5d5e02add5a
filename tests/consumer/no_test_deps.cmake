# SPDX-License-Identifier: MIT
# A plain configure of strata on a machine without the test dependencies (doctest and Boost hidden from
# find_package) succeeds, with the tests off and a message saying why.
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${STRATA_SOURCE_DIR} -B ${WORK_DIR} -G ${CMAKE_GENERATOR}
                -DCMAKE_DISABLE_FIND_PACKAGE_doctest=ON -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON
                -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configure without the test dependencies failed (${rc})\n${out}\n${err}")
endif()
if(NOT out MATCHES "strata: tests off")
  message(FATAL_ERROR "no message that the tests are off\n${out}")
endif()
file(STRINGS ${WORK_DIR}/CMakeCache.txt tests_line REGEX "^STRATA_BUILD_TESTS:")
if(NOT tests_line MATCHES "=OFF")
  message(FATAL_ERROR "tests not off: ${tests_line}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
