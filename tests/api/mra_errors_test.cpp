// MraAttention at the API boundary: it is an Attention; bad configs are refused by validate() and the
// constructor; every refused call has the right exception type and a message that names the problem;
// check() reports the same Status without throwing; supports() agrees with forward() for every mask;
// the selection overload refuses exactly what the plain one does and leaves a refused call's report
// alone.

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <effattn/kinds/mra.hpp>

#include "support/expect_error.hpp"

namespace effattn_test {
namespace {

using effattn::Causal;
using effattn::ErrorCode;
using effattn::Index;
using effattn::MraAttention;
using effattn::MraConfig;
using effattn::MraMode;
using effattn::MraSelection;
using ::testing::HasSubstr;

static_assert(effattn::Attention<MraAttention<float>>);
static_assert(effattn::Attention<MraAttention<double>>);

// One call's arguments over a shared pool of memory, so each test changes just the piece it refuses.
// B=2, H=4, Hkv=2, Lq=5, Lk=8, Dqk=6, Dv=3 in [B,H,L,D]; length(n) makes Lq = Lk = n.
template <class T>
struct Call {
  std::vector<T> q_mem = std::vector<T>(4096, T(0.5)), k_mem = std::vector<T>(4096, T(0.25)),
                 v_mem = std::vector<T>(4096, T(0.5)), out_mem = std::vector<T>(4096), lse_mem = std::vector<T>(512);
  std::array<Index, 4> qd{2, 4, 5, 6}, kd{2, 2, 8, 6}, vd{2, 2, 8, 3}, od{2, 4, 5, 3};
  effattn::Mask mask{};
  effattn::Options<T> options{};

  effattn::ConstTensor4<T> q() const { return {q_mem.data(), qd}; }
  effattn::ConstTensor4<T> k() const { return {k_mem.data(), kd}; }
  effattn::ConstTensor4<T> v() const { return {v_mem.data(), vd}; }
  effattn::Tensor4<T> out() { return {out_mem.data(), od}; }
  Call& length(Index n) {
    qd[2] = od[2] = kd[2] = vd[2] = n;
    return *this;
  }
};

MraConfig small(Index block = 2) {
  MraConfig c;
  c.block = block;
  return c;
}

template <class T>
class MraErrors : public ::testing::Test {
 protected:
  // check() and both forward() overloads agree: same code, same message, the matching exception type;
  // the message names the kind and contains every part. A refused call leaves the report untouched.
  void expect_refused(Call<T>& c, ErrorCode code, const std::vector<std::string>& parts, const MraAttention<T>& attn) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    ASSERT_FALSE(s.ok()) << "check() accepted the call";
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_THAT(s.message(), HasSubstr("MraAttention"));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options); });
    MraSelection report{9, 9, 9, 9, 9, {1, 2}, {3}};
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, report); });
    EXPECT_EQ(report.batch, 9);
    EXPECT_EQ(report.offsets, (std::vector<Index>{1, 2}));
  }

  void expect_accepted(Call<T>& c, const MraAttention<T>& attn, const std::string& what = {}) {
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
    EXPECT_TRUE(s.ok()) << what << ": " << s.message();
    EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << what;
    MraSelection report;
    EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options, report)) << what;
    EXPECT_EQ(report.batch, c.qd[0]) << what;
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(MraErrors, Scalars);

TYPED_TEST(MraErrors, ValidCallsAreAccepted) {
  using T = TypeParam;
  Call<T> c;
  const MraAttention<T> attn(small());
  const auto q = c.q(), k = c.k(), v = c.v();
  const auto out = c.out();
  static_assert(noexcept(attn.check(q, k, v, out, c.mask, c.options)));
  this->expect_accepted(c, attn, "cross-attention");
  this->expect_accepted(c, MraAttention<T>(), "default config");
  const std::vector<Index> lens{8, 0};
  c.mask.key_lengths = lens;
  this->expect_accepted(c, attn, "key_lengths");
  c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 5);
  this->expect_accepted(c, attn, "lse");
  c.options.layout = effattn::Layout::blhd;
  c.qd = {2, 5, 4, 6}, c.kd = {2, 8, 2, 6}, c.vd = {2, 8, 2, 3}, c.od = {2, 5, 4, 3};
  this->expect_accepted(c, attn, "blhd");
  // Every option, self-attention with the priors.
  Call<T> self;
  self.length(8);
  MraConfig cfg = small(3);
  cfg.mode = MraMode::sparse;
  cfg.num_blocks = 100;
  cfg.prior_first = 2;
  cfg.prior_diag = 5;
  cfg.scale = 0.0;  // finite: a flat softmax
  this->expect_accepted(self, MraAttention<T>(cfg), "all options");
}

TYPED_TEST(MraErrors, BadConfigIsRefusedByValidateAndTheConstructor) {
  using T = TypeParam;
  const auto refused = [](const MraConfig& config, const std::vector<std::string>& parts) {
    const effattn::Status s = config.validate();
    ASSERT_FALSE(s.ok()) << parts[0];
    EXPECT_EQ(s.code(), ErrorCode::config) << parts[0];
    EXPECT_THAT(s.message(), HasSubstr("MraAttention::Config"));
    for (const std::string& p : parts) EXPECT_THAT(s.message(), HasSubstr(p));
    EXPECT_THAT([&] { MraAttention<T> attn(config); }, ::testing::ThrowsMessage<effattn::config_error>(s.message()));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  refused(MraConfig{.block = 0}, {"block is 0", ">= 1"});
  refused(MraConfig{.block = -4}, {"block is -4"});
  refused(MraConfig{.blocks_per_row = 0}, {"num_blocks is 0", "blocks_per_row is 0"});
  refused(MraConfig{.blocks_per_row = -1}, {"blocks_per_row is -1"});
  refused(MraConfig{.num_blocks = -2}, {"num_blocks is -2"});
  refused(MraConfig{.blocks_per_row = 0, .num_blocks = -1}, {"num_blocks is -1"});
  refused(MraConfig{.blocks_per_row = -5, .num_blocks = 1}, {"blocks_per_row is -5"});
  refused(MraConfig{.prior_first = -1}, {"prior_first is -1", ">= 0"});
  refused(MraConfig{.prior_diag = -3}, {"prior_diag is -3"});
  refused(MraConfig{.scale = nan}, {"scale is nan", "finite"});
  refused(MraConfig{.scale = inf}, {"scale is inf"});
  refused(MraConfig{.scale = -inf}, {"scale is -inf"});
  // Accepted: the edges of each rule (num_blocks alone is a budget; blocks_per_row is then unused).
  EXPECT_NO_THROW(MraAttention<T>(MraConfig{.block = 1}));
  EXPECT_NO_THROW(MraAttention<T>(MraConfig{.blocks_per_row = 0, .num_blocks = 1}));
  EXPECT_NO_THROW(MraAttention<T>(MraConfig{.prior_first = 0, .prior_diag = 0, .scale = -2.0}));
  const MraConfig kept{.block = 5, .blocks_per_row = 3, .mode = MraMode::sparse, .prior_first = 1};
  const MraAttention<T> attn(kept);
  EXPECT_EQ(attn.config().block, 5);
  EXPECT_EQ(attn.config().blocks_per_row, 3);
  EXPECT_EQ(attn.config().mode, MraMode::sparse);
  EXPECT_EQ(attn.config().prior_first, 1);
}

// A causal MRA would pool future tokens into every block's mean, and neither the paper nor the
// official code defines one.
TYPED_TEST(MraErrors, CausalIsUnsupported) {
  using T = TypeParam;
  for (Causal causal : {Causal::top_left, Causal::bottom_right})
    for (bool self : {false, true}) {
      Call<T> c;
      if (self) c.length(8);
      c.mask.causal = causal;
      const MraAttention<T> attn(small());
      EXPECT_FALSE(attn.supports(c.mask));
      this->expect_refused(c, ErrorCode::unsupported, {"causal", "future"}, attn);
    }
}

TYPED_TEST(MraErrors, PerPairMasksAndPackedSequencesAreUnsupported) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::unique_ptr<bool[]> keep(new bool[1000]());
  const MraAttention<T> attn(small());
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::additive(add.data(), {1, 1, 5, 8});
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias", "key_lengths"}, attn);
  }
  {
    Call<T> c;
    c.mask.bias = effattn::Bias::boolean(keep.get(), {2, 4, 5, 8});
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.bias"}, attn);
  }
  for (const effattn::Window w : {effattn::Window{2, 2}, effattn::Window{0, -1}, effattn::Window{-1, 3}}) {
    Call<T> c;
    c.mask.window = w;
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"mask.window"}, attn);
  }
  {
    Call<T> c;
    c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
    const std::vector<Index> cq{0, 2, 5}, ck{0, 3, 8};
    c.mask.cu_seqlens_q = cq;
    c.mask.cu_seqlens_k = ck;
    EXPECT_FALSE(attn.supports(c.mask));
    this->expect_refused(c, ErrorCode::unsupported, {"packed"}, attn);
  }
}

// The diagonal band |I - J| <= prior_diag / 2 has a meaning only when query and key blocks are the
// same tokens.
TYPED_TEST(MraErrors, DiagonalPriorNeedsSelfAttention) {
  using T = TypeParam;
  MraConfig cfg = small();
  cfg.prior_diag = 1;
  const MraAttention<T> attn(cfg);
  Call<T> c;  // Lq = 5, Lk = 8
  EXPECT_TRUE(attn.supports(c.mask));  // a property of the call's lengths, not of the mask
  this->expect_refused(c, ErrorCode::unsupported, {"prior_diag = 1", "Lq = 5", "Lk = 8", "prior_diag = 0"}, attn);
  const std::vector<Index> lens{8, 3};
  c.mask.key_lengths = lens;
  this->expect_refused(c, ErrorCode::unsupported, {"prior_diag"}, attn);
  // prior_first alone is fine for cross-attention; and prior_diag with Lq = Lk.
  MraConfig first = small();
  first.prior_first = 2;
  Call<T> cross;
  this->expect_accepted(cross, MraAttention<T>(first), "prior_first, cross");
  Call<T> self;
  self.length(8);
  this->expect_accepted(self, attn, "prior_diag, self");
}

// The shared checks of every kind, each with its message.
TYPED_TEST(MraErrors, ShapeErrors) {
  using T = TypeParam;
  const MraAttention<T> attn(small());
  {
    Call<T> c;
    c.kd[3] = 7;
    this->expect_refused(c, ErrorCode::shape, {"k.dimension(3) (Dqk) is 7 but q.dimension(3) is 6"}, attn);
  }
  {
    Call<T> c;
    c.kd[0] = 3;
    this->expect_refused(c, ErrorCode::shape, {"k.dimension(0) (B) is 3"}, attn);
  }
  {
    Call<T> c;
    c.vd[2] = 7;
    this->expect_refused(c, ErrorCode::shape, {"v.dimension(2) (Lk) is 7 but k.dimension(2) is 8"}, attn);
  }
  {
    Call<T> c;
    c.qd[1] = c.od[1] = 3;
    this->expect_refused(c, ErrorCode::shape, {"(H) is 3, not a multiple of", "(Hkv) 2"}, attn);
  }
  {
    Call<T> c;
    c.od[3] = 4;
    this->expect_refused(c, ErrorCode::shape, {"out.dimension(3) is 4 but must be 3"}, attn);
  }
  {
    Call<T> c;
    c.od[2] = 8;
    this->expect_refused(c, ErrorCode::shape, {"out.dimension(2) is 8 but must be 5"}, attn);
  }
  {
    Call<T> c;
    const std::vector<Index> lens{8};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths has 1 entries but B is 2"}, attn);
  }
  {
    Call<T> c;
    const std::vector<Index> lens{8, 9};
    c.mask.key_lengths = lens;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[1] is 9", "[0, 8]"}, attn);
    const std::vector<Index> neg{-1, 3};
    c.mask.key_lengths = neg;
    this->expect_refused(c, ErrorCode::shape, {"mask.key_lengths[0] is -1"}, attn);
  }
  {
    Call<T> c;
    c.options.lse = effattn::Tensor3<T>(c.lse_mem.data(), 2, 4, 8);
    this->expect_refused(c, ErrorCode::shape, {"lse.dimension(2) is 8 but must be 5"}, attn);
  }
  {
    Call<T> c;  // blhd layout with bhld extents: the axes disagree
    c.options.layout = effattn::Layout::blhd;
    this->expect_refused(c, ErrorCode::shape, {"expected q [B,Lq,H,Dqk]"}, attn);
  }
}

TYPED_TEST(MraErrors, OutMustNotAliasAnInput) {
  using T = TypeParam;
  const MraAttention<T> attn(small());
  Call<T> c;
  const auto alias = [&](T* at, const std::string& what) {
    const effattn::Tensor4<T> out(at, c.od);
    const effattn::Status s = attn.check(c.q(), c.k(), c.v(), out, c.mask, c.options);
    ASSERT_FALSE(s.ok()) << what;
    EXPECT_EQ(s.code(), ErrorCode::shape) << what;
    EXPECT_THAT(s.message(), HasSubstr("out aliases " + what));
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), out, c.mask, c.options); });
    MraSelection report;
    expect_throws_status(s, [&] { attn.forward(c.q(), c.k(), c.v(), out, c.mask, c.options, report); });
  };
  alias(c.q_mem.data() + 7, "q");
  alias(c.k_mem.data(), "k");
  alias(c.v_mem.data() + 1, "v");
  // lse inside out.
  c.options.lse = effattn::Tensor3<T>(c.out_mem.data() + 3, 2, 4, 5);
  this->expect_refused(c, ErrorCode::shape, {"lse overlaps"}, attn);
}

// More than 2^32 block pairs (Lq = Lk = 70000 at block 1) are refused up front rather than
// overflowing the selection's 32-bit candidate indices; block 2 brings them under the limit.
TYPED_TEST(MraErrors, TooManyBlockPairs) {
  using T = TypeParam;
  const Index n = 70000;
  std::vector<T> q(static_cast<std::size_t>(n)), k(static_cast<std::size_t>(n)), v(static_cast<std::size_t>(n)),
      out(static_cast<std::size_t>(n));
  const effattn::ConstTensor4<T> qv(q.data(), 1, 1, n, 1), kv(k.data(), 1, 1, n, 1), vv(v.data(), 1, 1, n, 1);
  const effattn::Tensor4<T> o(out.data(), 1, 1, n, 1);
  const effattn::Status s = MraAttention<T>(small(1)).check(qv, kv, vv, o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), ErrorCode::unsupported);
  EXPECT_THAT(s.message(), HasSubstr("2^32"));
  expect_throws_status(s, [&] { MraAttention<T>(small(1)).forward(qv, kv, vv, o); });
  EXPECT_TRUE(MraAttention<T>(small(2)).check(qv, kv, vv, o).ok());
}

// supports(mask) is exactly "forward would not refuse this mask" for otherwise valid calls, in both
// modes and with priors (self-attention, so the diagonal prior is valid).
TYPED_TEST(MraErrors, SupportsAgreesWithForward) {
  using T = TypeParam;
  const std::vector<double> add(1000, 0.0);
  const std::unique_ptr<bool[]> keep(new bool[1000]());
  const std::vector<Index> lens{6, 3}, cq{0, 2, 6}, ck{0, 3, 6};
  struct Named {
    std::string name;
    effattn::Mask mask;
    bool packed = false;
  };
  std::vector<Named> masks;
  for (Causal causal : {Causal::none, Causal::top_left, Causal::bottom_right}) {
    const std::string tag = " causal " + std::to_string(static_cast<int>(causal));
    effattn::Mask m;
    m.causal = causal;
    masks.push_back({"plain" + tag, m});
    m.key_lengths = lens;
    masks.push_back({"key_lengths" + tag, m});
    m.key_lengths = {};
    m.window = {3, -1};
    masks.push_back({"window" + tag, m});
    m.window = {};
    m.bias = effattn::Bias::additive(add.data(), {1, 1, 6, 6});
    masks.push_back({"additive bias" + tag, m});
    m.bias = effattn::Bias::boolean(keep.get(), {2, 4, 6, 6});
    masks.push_back({"boolean bias" + tag, m});
    m.bias = {};
    m.cu_seqlens_q = cq;
    m.cu_seqlens_k = ck;
    masks.push_back({"packed" + tag, m, true});
  }
  MraConfig priors = small(4);
  priors.prior_first = 1;
  priors.prior_diag = 3;
  MraConfig sparse = small(3);
  sparse.mode = MraMode::sparse;
  for (const MraConfig& cfg : {small(), priors, sparse}) {
    const MraAttention<T> attn(cfg);
    for (const Named& nm : masks) {
      Call<T> c;
      c.length(6);
      if (nm.packed) c.qd[0] = c.kd[0] = c.vd[0] = c.od[0] = 1;
      c.mask = nm.mask;
      const effattn::Status s = attn.check(c.q(), c.k(), c.v(), c.out(), c.mask, c.options);
      EXPECT_EQ(attn.supports(c.mask), s.ok()) << nm.name << ": " << s.message();
      if (!attn.supports(c.mask)) {
        EXPECT_EQ(s.code(), ErrorCode::unsupported) << nm.name;
        EXPECT_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options), effattn::unsupported_error)
            << nm.name;
      } else {
        EXPECT_NO_THROW(attn.forward(c.q(), c.k(), c.v(), c.out(), c.mask, c.options)) << nm.name;
      }
    }
  }
}

}  // namespace
}  // namespace effattn_test
