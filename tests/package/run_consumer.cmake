# Configures, builds and runs one consumer project from scratch, as a user of the package would.
# Run with cmake -D... -P run_consumer.cmake:
#   SOURCE_DIR, BINARY_DIR        the consumer project and a scratch build directory
#   GENERATOR, MAKE_PROGRAM, CXX_COMPILER, BUILD_TYPE, EIGEN3_DIR   taken over from the parent build
#   INSTALL_FROM, PREFIX          optional: install that build tree into PREFIX first, and let the
#                                 consumer find it there
#   EFFATTN_SOURCE_DIR            optional: the effattn tree an add_subdirectory consumer builds

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (${rc}): ${ARGN}")
  endif()
endfunction()

foreach(var SOURCE_DIR BINARY_DIR GENERATOR CXX_COMPILER BUILD_TYPE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

# A fresh directory every run: a stale cache or a stale install would hide a packaging bug.
file(REMOVE_RECURSE "${BINARY_DIR}")
set(options -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
if(MAKE_PROGRAM)
  list(APPEND options "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(EIGEN3_DIR)
  list(APPEND options "-DEigen3_DIR=${EIGEN3_DIR}")
endif()
if(EFFATTN_SOURCE_DIR)
  list(APPEND options "-DEFFATTN_SOURCE_DIR=${EFFATTN_SOURCE_DIR}")
endif()

if(INSTALL_FROM)
  file(REMOVE_RECURSE "${PREFIX}")
  run(install "${CMAKE_COMMAND}" --install "${INSTALL_FROM}" --config "${BUILD_TYPE}" --prefix "${PREFIX}")
  # Only the fresh install may satisfy find_package, never a registry entry or a system copy.
  list(APPEND options "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
       "-DEFFATTN_EXPECTED_PREFIX=${PREFIX}")
endif()

run(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}" ${options})
run(build "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --config "${BUILD_TYPE}")
run(test "${CMAKE_CTEST_COMMAND}" --test-dir "${BINARY_DIR}" -C "${BUILD_TYPE}" --output-on-failure
    --no-tests=error)
