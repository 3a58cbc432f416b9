#pragma once
// Projection: the random (or user-given) matrices W that random-feature maps project onto, one
// [rows, dim] matrix per head, or a single one shared by every head. Stored in double so a matrix
// saved by a PyTorch model (float32 values) or drawn here is the same for float and double kernels.

#include <span>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE

class Projection {
 public:
  Projection() = default;
  // w holds heads * rows * dim values, row-major [heads][rows][dim].
  Projection(std::vector<double> w, Index heads, Index rows, Index dim) : w_(std::move(w)), heads_(heads), rows_(rows), dim_(dim) {
    if (heads < 1 || rows < 1 || dim < 1 || static_cast<Index>(w_.size()) != heads * rows * dim)
      throw config_error(detail::cat("Projection: ", w_.size(), " values do not form [heads, rows, dim] = [", heads, ", ",
                                     rows, ", ", dim, "] with every extent >= 1"));
  }
  static Projection copy_of(std::span<const double> w, Index heads, Index rows, Index dim) {
    return {std::vector<double>(w.begin(), w.end()), heads, rows, dim};
  }

  [[nodiscard]] bool empty() const noexcept { return w_.empty(); }
  [[nodiscard]] Index heads() const noexcept { return heads_; }
  [[nodiscard]] Index rows() const noexcept { return rows_; }
  [[nodiscard]] Index dim() const noexcept { return dim_; }
  // Row r of head h's matrix (head 0 when the projection is shared).
  [[nodiscard]] const double* row(Index h, Index r) const noexcept {
    return w_.data() + ((heads_ == 1 ? 0 : h) * rows_ + r) * dim_;
  }
  [[nodiscard]] double operator()(Index h, Index r, Index d) const noexcept { return row(h, r)[d]; }
  [[nodiscard]] const std::vector<double>& values() const noexcept { return w_; }

 private:
  std::vector<double> w_;
  Index heads_ = 0, rows_ = 0, dim_ = 0;
};

EFFATTN_END_NAMESPACE
