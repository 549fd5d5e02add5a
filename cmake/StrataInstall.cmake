# SPDX-License-Identifier: MIT
# Install rules: headers, the library, strataConfig.cmake (+ version file) and strata.pc.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS strata EXPORT strataTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# libstrata-malloc (a drop-in malloc: LD_PRELOAD it, or link strata::strata-malloc).
if(TARGET strata-malloc)
  install(TARGETS strata-malloc EXPORT strataTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/strata DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  PATTERN "*.in" EXCLUDE)
install(FILES ${PROJECT_BINARY_DIR}/include/strata/build_config.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/strata)

set(strata_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/strata)
install(EXPORT strataTargets NAMESPACE strata:: DESTINATION ${strata_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/strataConfig.cmake.in
  ${PROJECT_BINARY_DIR}/strataConfig.cmake INSTALL_DESTINATION ${strata_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/strataConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/strataConfig.cmake ${PROJECT_BINARY_DIR}/strataConfigVersion.cmake
  DESTINATION ${strata_cmake_dir})

# The .pc file finds its prefix relative to itself, so `cmake --install --prefix X` anywhere works.
file(RELATIVE_PATH strata_pc_to_prefix /root/${CMAKE_INSTALL_LIBDIR}/pkgconfig /root)
# A static libstrata brings no runtime of its own: its dependencies go in Libs, so that a plain
# `pkg-config --libs strata` links (from C too). A shared one records them itself: Libs.private.
get_target_property(strata_type strata TYPE)
if(strata_type STREQUAL "STATIC_LIBRARY")
  set(strata_pc_libs " -pthread -lstdc++")
  set(strata_pc_libs_private "")
else()
  set(strata_pc_libs "")
  set(strata_pc_libs_private " -pthread -lstdc++")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/strata.pc.in ${PROJECT_BINARY_DIR}/strata.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/strata.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The license and the changelog, where distributions look for them.
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/CHANGELOG.md ${PROJECT_SOURCE_DIR}/README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
