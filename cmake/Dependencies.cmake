# Third-party libraries: the system's packages (Debian's, installed by .ci/run), or, on a machine
# that lacks them and cannot download (the GPU device image), copies that
# bench/prepare_device_deps.sh places in .devdeps/: googletest's source and the header-only
# nlohmann_json, CLI11 and Eigen. Only when neither has a header-only library (a `pip install .`
# on a user's machine) is a pinned release downloaded with FetchContent; VEDA_FETCH_DEPS=OFF
# forbids it.
set(VEDA_DEPS_DIR "${PROJECT_SOURCE_DIR}/.devdeps" CACHE PATH "Fallback copies of dependencies")
option(VEDA_FETCH_DEPS
       "Download nlohmann_json, CLI11 and Eigen when neither installed nor in .devdeps" ON)

# The pinned releases: the versions of Debian 12 (nlohmann-json3-dev 3.11.2, libcli11-dev 2.1.2,
# libeigen3-dev 3.4.0), the ones CI builds and tests with.
set(VEDA_NLOHMANN_JSON_URL
    "https://github.com/nlohmann/json/releases/download/v3.11.2/json.tar.xz")
set(VEDA_NLOHMANN_JSON_SHA256 8c4b26bf4b422252e13f332bc5e388ec0ab5c3443d24399acb675e68278d341f)
set(VEDA_CLI11_URL "https://github.com/CLIUtils/CLI11/archive/refs/tags/v2.1.2.tar.gz")
set(VEDA_CLI11_SHA256 26291377e892ba0e5b4972cdfd4a2ab3bf53af8dac1f4ea8fe0d1376b625c8cb)
set(VEDA_EIGEN_URL "https://gitlab.com/libeigen/eigen/-/archive/3.4.0/eigen-3.4.0.tar.gz")
set(VEDA_EIGEN_SHA256 8586084f71f9bde545ee7fa6d00288b264a2b7ac3607b974e54d13e7162c1c72)

# Defines `target` (an INTERFACE IMPORTED target) over the first include folder that has `header`:
# ${VEDA_DEPS_DIR}/include, else the folder `release_include` (e.g. "include"; "" for the top)
# of the release at `url` (FetchContent). Called only when find_package found no system package.
function(veda_header_only_fallback target header package url sha256 release_include)
  if(TARGET ${target})
    return()
  endif()
  set(include_dir "${VEDA_DEPS_DIR}/include")
  if(NOT EXISTS "${include_dir}/${header}")
    string(CONCAT remedy "install ${package} (see .ci/run), or run bench/prepare_device_deps.sh "
                         "to place a copy in ${VEDA_DEPS_DIR}")
    if(NOT VEDA_FETCH_DEPS)
      message(FATAL_ERROR "${target} not found: ${remedy} (VEDA_FETCH_DEPS is OFF: no download)")
    endif()
    message(STATUS "veda: ${target} is neither installed nor in ${VEDA_DEPS_DIR}; downloading "
                   "${url} (FetchContent). Offline, ${remedy}.")
    # Content named nlohmann_json / CLI11: FETCHCONTENT_SOURCE_DIR_<NAME> can point at a copy.
    string(REGEX REPLACE "::.*" "" name "${target}")
    include(FetchContent)
    # Only the headers are used: SOURCE_SUBDIR names a folder without a CMakeLists.txt, so the
    # release is unpacked but not added as a subproject (no targets, tests or install rules).
    FetchContent_Declare(${name}
      URL "${url}"
      URL_HASH SHA256=${sha256}
      DOWNLOAD_EXTRACT_TIMESTAMP ON
      SOURCE_SUBDIR veda-headers-only)
    FetchContent_MakeAvailable(${name})
    FetchContent_GetProperties(${name} SOURCE_DIR source_dir)
    set(include_dir "${source_dir}/${release_include}")
    if(NOT EXISTS "${include_dir}/${header}")
      message(FATAL_ERROR "${target}: the download of ${url} has no ${release_include}/${header}; "
                          "${remedy}")
    endif()
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_include_directories(${target} SYSTEM INTERFACE "${include_dir}")
endfunction()

find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 QUIET)
veda_header_only_fallback(nlohmann_json::nlohmann_json nlohmann/json.hpp nlohmann-json3-dev
                          "${VEDA_NLOHMANN_JSON_URL}" ${VEDA_NLOHMANN_JSON_SHA256} include)
find_package(CLI11 QUIET)
veda_header_only_fallback(CLI11::CLI11 CLI/CLI.hpp libcli11-dev "${VEDA_CLI11_URL}"
                          ${VEDA_CLI11_SHA256} include)
# Eigen: the method's matrix products (src/method/estimator.cc, src/method/dense_kernels.cc).
find_package(Eigen3 3.3 NO_MODULE QUIET)
veda_header_only_fallback(Eigen3::Eigen Eigen/Dense libeigen3-dev "${VEDA_EIGEN_URL}"
                          ${VEDA_EIGEN_SHA256} "")

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
