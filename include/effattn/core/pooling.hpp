#pragma once
// Block pooling: the means of consecutive blocks of rows over the real (unpadded) ones. MRA's coarse
// level is attention between the block means of Q and K.

#include <algorithm>

#include "effattn/core/tensor.hpp"
#include "effattn/simd/row_ops.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

// Block I holds rows [I * block, (I + 1) * block) of `len`, of which those below `valid` are real:
// mean[I] = their mean (0 when there is none) and count[I] = how many there are.
template <class T>
void block_means(const HeadRows<const T>& rows, Index len, Index valid, Index block, Index dim, T* mean,
                 T* count) noexcept {
  const Index blocks = (len + block - 1) / block;
  for (Index I = 0; I < blocks; ++I) {
    const Index r0 = I * block, r1 = std::min(valid, r0 + block);
    T* m = mean + I * dim;
    std::fill(m, m + dim, T(0));
    for (Index r = r0; r < r1; ++r) axpy(T(1), rows.row(r), m, dim);
    const Index n = std::max<Index>(0, r1 - r0);
    count[I] = static_cast<T>(n);
    if (n > 1) scale(m, T(1) / static_cast<T>(n), dim);
  }
}

}  // namespace detail
EFFATTN_END_NAMESPACE
