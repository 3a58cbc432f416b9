#pragma once
// effattn: efficient attention kernels for CPUs. This umbrella header includes every public header.

#include "effattn/version.hpp"
#include "effattn/config.hpp"
#include "effattn/attention.hpp"
#include "effattn/core/softmax_state.hpp"
#include "effattn/core/linear_core.hpp"
#include "effattn/feature_maps/random_features.hpp"
#include "effattn/feature_maps/random_projection.hpp"
#include "effattn/kinds/softmax.hpp"
#include "effattn/kinds/rfa.hpp"
#include "effattn/kinds/lara.hpp"
#include "effattn/kinds/mra.hpp"
#include "effattn/kinds/hypercube.hpp"
#include "effattn/reference/softmax.hpp"
#include "effattn/reference/rfa.hpp"
#include "effattn/reference/lara.hpp"
