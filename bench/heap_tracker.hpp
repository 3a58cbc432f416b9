#pragma once
// Live and peak heap bytes of the whole process, for "how much memory does one forward() take beyond
// its inputs and outputs" and "does a steady-state forward() allocate". The counting is in
// heap_tracker.cpp, which replaces the global allocation functions; link it into the binary once.

#include <cstddef>
#include <cstdint>

namespace effattn_bench::heap {

// Bytes currently allocated.
std::size_t live_bytes() noexcept;
// Highest live_bytes() since the last reset_peak().
std::size_t peak_bytes() noexcept;
// Number of allocations since the program started.
std::uint64_t allocations() noexcept;
// Sets the peak to the current live bytes.
void reset_peak() noexcept;
// What is counted: "malloc" (every allocation, including Eigen's, which bypasses operator new) or
// "operator new" (C++ allocations only).
const char* scope() noexcept;

}  // namespace effattn_bench::heap
