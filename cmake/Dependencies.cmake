# Third-party libraries: the system's packages (Debian's, installed by .ci/run), or, on a machine
# that lacks them and cannot download (the GPU device image), copies that
# bench/prepare_device_deps.sh places in .devdeps/: googletest's source and the header-only
# nlohmann_json and CLI11.
set(VEDA_DEPS_DIR "${PROJECT_SOURCE_DIR}/.devdeps" CACHE PATH "Fallback copies of dependencies")

function(veda_header_only_fallback target header package)
  if(NOT TARGET ${target})
    if(NOT EXISTS "${VEDA_DEPS_DIR}/include/${header}")
      message(FATAL_ERROR "${target} not found: install ${package} (see .ci/run), or run "
                          "bench/prepare_device_deps.sh to place a copy in ${VEDA_DEPS_DIR}")
    endif()
    add_library(${target} INTERFACE IMPORTED GLOBAL)
    target_include_directories(${target} SYSTEM INTERFACE "${VEDA_DEPS_DIR}/include")
  endif()
endfunction()

find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 QUIET)
veda_header_only_fallback(nlohmann_json::nlohmann_json nlohmann/json.hpp nlohmann-json3-dev)
find_package(CLI11 QUIET)
veda_header_only_fallback(CLI11::CLI11 CLI/CLI.hpp libcli11-dev)

if(VEDA_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    if(NOT EXISTS "${VEDA_DEPS_DIR}/googletest/CMakeLists.txt")
      message(FATAL_ERROR "GoogleTest not found: install libgtest-dev (see .ci/run), or run "
                          "bench/prepare_device_deps.sh, or configure with -DVEDA_TESTS=OFF")
    endif()
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
    add_subdirectory("${VEDA_DEPS_DIR}/googletest" "${CMAKE_BINARY_DIR}/googletest"
                     EXCLUDE_FROM_ALL)
    # googletest >= 1.11 defines these aliases itself; older releases do not.
    foreach(target gtest gtest_main)
      if(NOT TARGET GTest::${target})
        add_library(GTest::${target} ALIAS ${target})
      endif()
    endforeach()
  endif()
endif()
