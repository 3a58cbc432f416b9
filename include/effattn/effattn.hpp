#pragma once
// effattn: efficient attention kernels for CPUs. This umbrella header includes every public header.

#include "effattn/version.hpp"
#include "effattn/config.hpp"
#include "effattn/attention.hpp"
#include "effattn/core/softmax_state.hpp"
#include "effattn/kinds/softmax.hpp"
#include "effattn/reference/softmax.hpp"
