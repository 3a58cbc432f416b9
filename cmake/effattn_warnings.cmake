# Build settings for effattn's own tests, benchmarks and examples. None of this reaches the
# effattn target, so consumers keep their own warnings, ISA and threading choices.

include(CheckCXXCompilerFlag)

if(EFFATTN_NATIVE)
  check_cxx_compiler_flag(-march=native EFFATTN_HAS_MARCH_NATIVE)
  if(NOT EFFATTN_HAS_MARCH_NATIVE)
    message(STATUS "effattn: ${CMAKE_CXX_COMPILER_ID} does not take -march=native; building for the default ISA")
  endif()
endif()

if(EFFATTN_OPENMP)
  find_package(OpenMP COMPONENTS CXX)
endif()

# Strict warnings without -Werror (a new compiler warning should not break a user's build of our
# tests); pass -DCMAKE_COMPILE_WARNING_AS_ERROR=ON to make them errors in CI.
function(effattn_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-Wall -Wextra -Wpedantic>
    $<$<CXX_COMPILER_ID:MSVC>:/W4 /permissive->
    # GCC < 13 flags the deliberately undefined operands of its own AVX-512 intrinsics
    # (gcc.gnu.org/bugzilla 105593); with -march=native every Eigen packet op would warn.
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-maybe-uninitialized -Wno-uninitialized>)
  if(EFFATTN_NATIVE AND EFFATTN_HAS_MARCH_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(EFFATTN_OPENMP AND TARGET OpenMP::OpenMP_CXX)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()
