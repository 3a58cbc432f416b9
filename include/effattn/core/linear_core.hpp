#pragma once
// The linear core: out_i = phi(q_i).S / phi(q_i).z with S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j)
// over the keys query i sees, for any FeatureMap phi. Time O((Lq + Lk) F (Dqk + Dv)), memory O(F Dv).
//
// Modes:
//   global          one key pass per (sequence, KV head) builds (S, z); every query tile then reads it.
//   chunked causal  keys in chunks of C; a chunk's queries read the state of the keys before the chunk
//                   and take the keys inside it through the quadratic core with a causal band and the
//                   LinearScore normaliser (the score phi(q).phi(k) is the weight); then the chunk is
//                   added to the state. Cost per token O(F Dv + C (F + Dv)).
//   extend          the same causal recurrence continued from a caller's LinearState (prefill, then
//                   decode steps of one token in O(F (Dqk + Dv))).
//
// Layout: S is held transposed, S^T [Dv, ld] (ld = the map's padded feature count), so both its update
// (S^T += V^T phi(K): V read in place, phi(K) rows as lane panels) and its use (S^T phi(q)^T for a
// tile of queries in the lanes) are the lane micro-kernel of the cores.
//
// Scale: exponential maps give key rows a power-of-two exponent (feature_map.hpp); a state keeps one
// exponent E for all it has absorbed (its values times 2^E are the true sums) and rows and states are
// brought to a common exponent by exact power-of-two multiplications. States over disjoint key ranges
// therefore merge exactly, by alignment and addition.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "effattn/attention.hpp"
#include "effattn/core/normalisers.hpp"
#include "effattn/core/quadratic_core.hpp"
#include "effattn/core/schedule.hpp"
#include "effattn/feature_maps/feature_map.hpp"
#include "effattn/simd/row_ops.hpp"
#include "effattn/simd/tile_kernels.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace detail {
inline constexpr int kNoExponent = std::numeric_limits<int>::min() / 4;  // a state that has seen no key

// One (S, z) as the kernels see it.
template <class T>
struct StateRef {
  T* st = nullptr;  // [dim_v, ld]
  T* z = nullptr;   // [ld]
  int* exponent = nullptr;
  Index* length = nullptr;
  Index ld = 0, dim_v = 0, features = 0;
  // Features rounded up to whole lane panels (<= ld; the columns between are padding).
  [[nodiscard]] Index panels() const noexcept { return (features + kTileQ<T> - 1) / kTileQ<T> * kTileQ<T>; }

  void clear() const noexcept {
    std::fill(st, st + dim_v * ld, T(0));
    std::fill(z, z + ld, T(0));
    *exponent = kNoExponent;
    *length = 0;
  }
  // Adds the state (o_st, o_z, o_exponent, o_length) of a disjoint key range, of the same shape:
  // exponents aligned exactly, then summed.
  void merge_from(const T* o_st, const T* o_z, int o_exponent, Index o_length) const noexcept {
    *length += o_length;
    if (o_exponent == kNoExponent) return;
    align(o_exponent);
    const T f = std::ldexp(T(1), o_exponent - *exponent);
    axpy(f, o_st, st, dim_v * ld);
    axpy(f, o_z, z, ld);
  }
  void merge_from(const StateRef& o) const noexcept { merge_from(o.st, o.z, *o.exponent, *o.length); }
  // Raises the exponent to e (exact: a multiplication by a power of two).
  void align(int e) const noexcept {
    if (*exponent == kNoExponent) {
      *exponent = e;
      return;
    }
    if (e <= *exponent) return;
    const T f = std::ldexp(T(1), *exponent - e);
    scale(st, f, dim_v * ld);
    scale(z, f, ld);
    *exponent = e;
  }
};
}  // namespace detail

// The additive state of causal linear attention for B x Hkv (sequence, KV head) slices: S [F, Dv],
// z [F], and how many keys each has absorbed. A value type: copy it to fork a sequence, merge() the
// states of disjoint key ranges (threads, processes) into the state of their union.
template <class T>
class LinearState {
 public:
  LinearState() = default;
  LinearState(Index slices, Index features, Index dim_v)
      : slices_(slices), features_(features), dim_v_(dim_v), ld_(detail::feature_ld<T>(features)) {
    if (slices < 0 || features < 1 || dim_v < 0)
      throw config_error(detail::cat("LinearState: slices ", slices, ", features ", features, ", dim_v ", dim_v,
                                     " (need slices >= 0, features >= 1, dim_v >= 0)"));
    data_.assign(static_cast<std::size_t>(slices_ * stride()), T(0));
    exponent_.assign(static_cast<std::size_t>(slices_), detail::kNoExponent);
    length_.assign(static_cast<std::size_t>(slices_), 0);
  }

  [[nodiscard]] Index slices() const noexcept { return slices_; }
  [[nodiscard]] Index features() const noexcept { return features_; }
  [[nodiscard]] Index dim_v() const noexcept { return dim_v_; }
  // Keys absorbed by a slice: the position the next key takes.
  [[nodiscard]] Index length(Index slice) const noexcept { return length_[static_cast<std::size_t>(slice)]; }
  // S[f, c] and z[f] of a slice (they may exceed T's range only for inputs outside the numerics contract).
  [[nodiscard]] T s(Index slice, Index f, Index c) const noexcept {
    return unscale(data_[static_cast<std::size_t>(slice * stride() + c * ld_ + f)], slice);
  }
  [[nodiscard]] T z(Index slice, Index f) const noexcept {
    return unscale(data_[static_cast<std::size_t>(slice * stride() + dim_v_ * ld_ + f)], slice);
  }

  void clear() noexcept {
    for (Index i = 0; i < slices_; ++i) ref(i).clear();
  }

  // Adds the state of a disjoint key range (same shape): this becomes the state of both ranges.
  // Exponents are aligned exactly first, so the merge is a plain addition of sums.
  void merge(const LinearState& other) {
    if (other.slices_ != slices_ || other.features_ != features_ || other.dim_v_ != dim_v_)
      throw shape_error(detail::cat("LinearState::merge: shapes differ (slices ", slices_, " vs ", other.slices_,
                                    ", features ", features_, " vs ", other.features_, ", dim_v ", dim_v_, " vs ",
                                    other.dim_v_, ")"));
    for (Index i = 0; i < slices_; ++i) {
      const T* o = other.data_.data() + i * stride();
      const auto u = static_cast<std::size_t>(i);
      ref(i).merge_from(o, o + dim_v_ * ld_, other.exponent_[u], other.length_[u]);
    }
  }

  // For the kernels.
  [[nodiscard]] detail::StateRef<T> ref(Index slice) noexcept {
    return {data_.data() + slice * stride(), data_.data() + slice * stride() + dim_v_ * ld_,
            &exponent_[static_cast<std::size_t>(slice)], &length_[static_cast<std::size_t>(slice)], ld_, dim_v_,
            features_};
  }

 private:
  [[nodiscard]] Index stride() const noexcept { return (dim_v_ + 1) * ld_; }
  [[nodiscard]] T unscale(T x, Index slice) const noexcept {
    const int e = exponent_[static_cast<std::size_t>(slice)];
    return e == detail::kNoExponent ? x : std::ldexp(x, e);
  }

  Index slices_ = 0, features_ = 0, dim_v_ = 0, ld_ = 0;
  AlignedVector<T> data_;
  std::vector<int> exponent_;
  std::vector<Index> length_;
};

namespace detail {

// Keys per chunk of the causal mode. The intra-chunk quadratic part costs C (F + Dv) per token
// against about 4 F Dv for the state's reads and updates, so C = 64 keeps it near 10% at F = 256.
template <class T>
inline constexpr Index kLinearChunk = 64;
// Keys per block of the global key pass: a block of features (64 x ld) stays in L1/L2 while S^T
// takes it.
template <class T>
inline constexpr Index kKeyBlock = 64;

// How padded keys (j >= key length) are treated; the public implementations differ.
enum class PaddedKeys {
  exclude,      // invisible (effattn's semantics)
  zero_values,  // performer-pytorch: value rows zeroed, keys stay in the denominator and the max
  zero_features // HKUNLP: features zeroed after the key max (which includes them)
};

template <class T, class Map>
struct LinearCall {
  Problem problem{};
  ConstTensor4<T> q, k, v;
  Tensor4<T> out;
  Layout layout = Layout::bhld;
  const Mask* mask = nullptr;
  const Map* map = nullptr;
  bool causal = false;
  bool bottom_right = false;      // causal alignment: query i sees keys j <= i + Lk - Lq
  bool fixed_keys = false;        // key shift = max over the sequence (compat); else pow2
  bool fixed_queries = false;     // query shift = max over the sequence (compat, global mode); else row
  PaddedKeys padding = PaddedKeys::exclude;
  T z_eps = 0;                    // added to every component of z when it is read (compat)
  T clamp = 0;
  Index chunk = 0;
  std::optional<ConstTensor3<T>> gate;  // [B, Hkv, Lk]
  LinearState<T>* state = nullptr;      // extend: [B * Hkv] slices, continued and updated
};

struct LinearShape {
  Index rows = 0;   // query rows of a pass
  Index chunk = 0;  // key rows of a chunk (for decode: the key and the group's queries)
  Index dim_qk = 0;
  Index ld = 0, dim_v = 0, map_elems = 0;
  bool own_state = false;
};

// Per-thread scratch of the linear core (beside the quadratic core's TileScratch).
template <class T>
struct LinearScratch {
  T* phi_q = nullptr;   // [rows, ld]
  T* phi_k = nullptr;   // [chunk, ld]
  int* e = nullptr;     // [max(rows, chunk)]
  T* map = nullptr;     // the map's scratch
  T* zeps = nullptr;    // [ld]
  T* vbuf = nullptr;    // [chunk, dim_v] value rows with padding zeroed
  T* key_log = nullptr, *key_w = nullptr, *key_exp = nullptr;  // [chunk]
  T* query_log = nullptr, *query_exp = nullptr;                // [rows + TQ]
  T* st = nullptr;      // causal: [(dim_v + 1) ld] the running state
  T* xrows = nullptr;   // decode: [chunk, dim_qk] the rows mapped together
  template <class Visit>
  void fields(const LinearShape& s, Visit&& visit) {
    const Index n = std::max(s.rows, s.chunk);
    visit(phi_q, s.rows * s.ld);
    visit(phi_k, s.chunk * s.ld);
    visit(e, n);
    visit(map, s.map_elems);
    visit(zeps, s.ld);
    visit(vbuf, s.chunk * s.dim_v);
    visit(key_log, s.chunk);
    visit(key_w, s.chunk);
    visit(key_exp, s.chunk);
    visit(query_log, s.rows + kTileQ<T>);
    visit(query_exp, s.rows + kTileQ<T>);
    visit(st, s.own_state ? (s.dim_v + 1) * s.ld : 0);
    visit(xrows, s.own_state ? s.chunk * s.dim_qk : 0);
  }
};

template <class T, class Map>
struct LinearPlan {
  Problem tile_problem;  // the quadratic core's view: Dqk = F
  LinearShape shape;
  std::size_t per_thread = 0;
  Index states = 0;   // B * Hkv * key_parts shared states (global mode, or causal split into parts)
  Index key_parts = 1;
  Index q_shifts = 0; // global mode with fixed queries: one shift per (batch, head)
};

// Parts the keys of each (sequence, KV head) are split into, so that few such slices (MQA, one
// sequence) still occupy several threads: the global mode merges the parts' states in a fixed order;
// the causal mode sums them into prefix states and runs its recurrence from each part's prefix at once
// (mapping keys twice, a quarter more work, for a second thread). A function of the shape only, never
// of the thread count, so results do not depend on it. Each part keeps at least kMinPartKeys keys:
// merging a state costs about as much as absorbing a hundred keys. Not splittable: the compat presets
// (their key maximum spans the whole sequence), the recency gate (a gated prefix is not a plain sum)
// and extend (one step at a time).
inline constexpr Index kSplitSlices = 8;
inline constexpr Index kMinPartKeys = 2048;
inline Index key_parts(const Problem& p, bool splittable) noexcept {
  const Index slices = p.batch * p.kv_heads;
  if (!splittable || slices >= kSplitSlices || slices == 0) return 1;
  return std::clamp<Index>(p.len_k / kMinPartKeys, 1, (kSplitSlices + slices - 1) / slices);
}

// Keys [first, second) of part `part` out of `parts` of n.
inline std::pair<Index, Index> part_range(Index n, Index part, Index parts) noexcept {
  const Index per = (n + parts - 1) / parts;
  return {std::min(n, part * per), std::min(n, (part + 1) * per)};
}

template <class T, class Map>
LinearPlan<T, Map> linear_plan(const Problem& p, const Map& map, bool causal, bool splittable, Index chunk) noexcept {
  LinearPlan<T, Map> lp;
  lp.tile_problem = p;
  lp.tile_problem.dim_qk = map.features();
  const Index group = p.kv_heads > 0 ? p.heads / p.kv_heads : 0;
  // Decode keeps the group's numerators in phi_q and maps the key with the group's queries.
  const Index rows = std::max(TileScratch<T>::G * kTileQ<T>, (group * p.dim_v + map.ld() - 1) / std::max<Index>(map.ld(), 1));
  const Index keys = std::max({chunk, kKeyBlock<T>, group + 1});
  lp.shape = {rows, keys, p.dim_qk, map.ld(), p.dim_v, map.scratch_elems(std::max(rows, keys)), causal};
  lp.per_thread = plan_of<TileScratch<T>>(lp.tile_problem).bytes() + plan_of<LinearScratch<T>>(lp.shape).bytes();
  lp.key_parts = key_parts(p, splittable);
  lp.states = causal && lp.key_parts == 1 ? 0 : p.batch * p.kv_heads * lp.key_parts;
  lp.q_shifts = causal ? 0 : p.batch * p.heads;
  return lp;
}

template <class T, class Map>
ArenaPlan linear_arena(const LinearPlan<T, Map>& lp, int threads) noexcept {
  ArenaPlan a;
  a.add(static_cast<Index>(lp.per_thread) * std::max(threads, 1), 1);
  a.add(lp.states * (lp.shape.dim_v + 1) * lp.shape.ld, sizeof(T));
  a.add(lp.states, sizeof(int));
  a.add(lp.states, sizeof(Index));
  a.add(lp.q_shifts, sizeof(T));
  return a;
}

// Brings rows phi[0, n) (exponents e, or none) and the state to one exponent: powers of two, exact.
template <class T>
void align_rows(const StateRef<T>& s, T* phi, const int* e, Index n) noexcept {
  if (e == nullptr) {
    s.align(0);
    return;
  }
  int eb = *s.exponent;
  for (Index r = 0; r < n; ++r) eb = std::max(eb, e[r]);
  s.align(eb);
  for (Index r = 0; r < n; ++r)
    if (e[r] != eb) scale(phi + r * s.ld, std::ldexp(T(1), e[r] - eb), s.ld);
}

// Adds aligned rows phi[0, n) to the state: S^T += V^T phi over the first nv rows (the others have
// zero value rows), z += every row.
template <class T>
void add_rows(const StateRef<T>& s, const T* phi, Index n, Index nv, const T* v, Index vs) noexcept {
  if (n == 1) {
    for (Index c = 0; c < s.dim_v && nv == 1; ++c) axpy(v[c], phi, s.st + c * s.ld, s.ld);
  } else {
    for (Index f = 0; f < s.panels(); f += kTileQ<T>) lane_tile<T, true>(v, 1, vs, s.dim_v, nv, phi + f, s.st + f, s.ld, s.ld);
  }
  for (Index r = 0; r < n; ++r) axpy(T(1), phi + r * s.ld, s.z, s.ld);
  *s.length += n;
}

// The key range whose features enter the state.
template <class T, class Map>
Index feature_keys(const LinearCall<T, Map>& c, Index len_valid) noexcept {
  return c.padding == PaddedKeys::zero_values ? c.problem.len_k : len_valid;
}

template <class T, class Map>
Index valid_keys(const LinearCall<T, Map>& c, Index b) noexcept {
  return c.mask->key_lengths.empty() ? c.problem.len_k : c.mask->key_lengths[static_cast<std::size_t>(b)];
}

// The public implementations' shift: the max of the map's bound over rows [0, n).
template <class T, class Map>
T sequence_bound(const Map& map, const HeadRows<const T>& x, Index n, Index head, T* scratch) noexcept {
  T b = -std::numeric_limits<T>::infinity();
  for (Index j = 0; j < n; j += kKeyBlock<T>)
    b = std::max(b, map.bound(x.row(j), x.row_stride, std::min(kKeyBlock<T>, n - j), head, scratch));
  return b == -std::numeric_limits<T>::infinity() ? T(0) : b;
}

template <class T, class Map>
T key_shift(const LinearCall<T, Map>& c, const HeadRows<const T>& k, Index valid, Index kvh, T* scratch) noexcept {
  if (!c.fixed_keys) return 0;
  return sequence_bound(*c.map, k, c.padding == PaddedKeys::exclude ? valid : c.problem.len_k, kvh, scratch);
}

// Global mode, key pass of one (sequence, KV head) over part `part` of `parts` of its keys.
template <class T, class Map>
void global_keys(const LinearCall<T, Map>& c, Index b, Index kvh, Index part, Index parts, const StateRef<T>& s,
                 const LinearScratch<T>& w) noexcept {
  const HeadRows<const T> k = head_rows(c.k, c.layout, b, kvh), v = head_rows(c.v, c.layout, b, kvh);
  const Index valid = valid_keys(c, b);
  const T shift = key_shift(c, k, valid, kvh, w.map);
  const Stabiliser mode = c.fixed_keys ? Stabiliser::fixed : Stabiliser::pow2;
  const bool scaled = mode == Stabiliser::pow2 && c.map->exponential();
  s.clear();
  const auto [kb, ke] = part_range(feature_keys(c, valid), part, parts);
  for (Index j0 = kb; j0 < ke; j0 += kKeyBlock<T>) {
    const Index nb = std::min(kKeyBlock<T>, ke - j0);
    c.map->map(k.row(j0), k.row_stride, nb, kvh, mode, shift, w.phi_k, w.e, w.map);
    align_rows(s, w.phi_k, scaled ? w.e : nullptr, nb);
    add_rows(s, w.phi_k, nb, std::clamp<Index>(valid - j0, 0, nb), v.row(j0), v.row_stride);
  }
}

// Query rows [i0, i0 + n) of head h (n <= one pass): the carried state s plus, when c1 > c0, the
// chunk's keys [c0, c1) whose features are in w.phi_k, through the quadratic core's tile loop.
template <class T, class Map>
void attend_linear(const LinearCall<T, Map>& c, Index b, Index h, Index i0, Index n, T q_shift, Index shift,
                   const StateRef<T>& s, Index c0, Index c1, const T* v_chunk, Index vs, const T* query_log,
                   const T* query_exp, const TileScratch<T>& ts, const LinearScratch<T>& w) noexcept {
  const Problem& p = c.problem;
  const Index kvh = h / (p.heads / p.kv_heads);
  const HeadRows<const T> q = head_rows(c.q, c.layout, b, h);
  const Index F = c.map->features();
  c.map->map(q.row(i0), q.row_stride, n, kvh, c.fixed_queries ? Stabiliser::fixed : Stabiliser::row, q_shift, w.phi_q,
             nullptr, w.map);
  HeadCtx<T> x;
  x.q = {w.phi_q, n, F, s.ld};
  x.k = {w.phi_k, c1 - c0, F, s.ld};
  x.v = {v_chunk, c1 - c0, p.dim_v, vs};
  x.out = head_rows(c.out, c.layout, b, h);
  x.out.data += i0 * x.out.row_stride;
  x.band.len_q = n;
  x.band.len_k = c1 - c0;
  x.band.causal = true;
  x.band.shift = i0 + shift - c0;
  LinearScore<T> norm;
  norm.st = s.st;
  norm.ld = s.ld;
  norm.clamp = c.clamp;
  norm.z = s.z;
  if (c.z_eps != 0) {
    // The eps is part of the true z; the state holds z * 2^-E.
    const T eps = std::ldexp(c.z_eps, *s.exponent == kNoExponent ? 0 : -*s.exponent);
    for (Index f = 0; f < F; ++f) w.zeps[f] = s.z[f] + eps;
    std::fill(w.zeps + F, w.zeps + s.ld, T(0));
    norm.z = w.zeps;
  }
  if (query_log != nullptr) {
    norm.key_log = w.key_log;
    norm.key_w = w.key_w;
    norm.query_log = query_log;
  }
  if (query_exp != nullptr) {
    norm.key_exp = w.key_exp;
    norm.query_exp = query_exp;
    norm.state_exp = static_cast<T>(*s.exponent);
  }
  attend_query_tiles<T>(x, 0, n, F, p.dim_v, T(1), ts, norm);
}

template <class T>
void zero_rows(const HeadRows<T>& out, Index i0, Index i1) noexcept {
  for (Index i = i0; i < i1; ++i) std::fill(out.row(i), out.row(i) + out.cols, T(0));
}

// Log-gates are clamped here, so cumulative sums stay finite and small: a gate of exp(-25) ~ 1e-11
// (float) or exp(-60) ~ 1e-26 (double) already removes what came before it below the type's
// resolution, and a larger magnitude would only cost accuracy in the sums of the chunk (their rounding
// scales with their size: with -80 a few zero gates put float outputs 1e-5 off).
template <class T>
inline constexpr T kMinLogGate = std::is_same_v<T, float> ? T(-25) : T(-60);

// Chunked causal recurrence of one (sequence, KV head) over part `part` of its keys, from state s
// (the prefix of the earlier parts; the caller's for extend): every query head of the group reads it
// chunk by chunk.
template <class T, class Map>
void causal_sequence(const LinearCall<T, Map>& c, Index b, Index kvh, Index part, Index parts, const StateRef<T>& s,
                     Index chunk, const TileScratch<T>& ts, const LinearScratch<T>& w) noexcept {
  const Problem& p = c.problem;
  const Index group = p.heads / p.kv_heads;
  const HeadRows<const T> k = head_rows(c.k, c.layout, b, kvh), v = head_rows(c.v, c.layout, b, kvh);
  const Index valid = valid_keys(c, b);
  const Index len_k = feature_keys(c, valid);
  const Index shift = c.bottom_right ? len_k - p.len_q : 0;
  const T k_shift = key_shift(c, k, valid, kvh, w.map);
  const Stabiliser mode = c.fixed_keys ? Stabiliser::fixed : Stabiliser::pow2;
  const bool scaled = mode == Stabiliser::pow2 && c.map->exponential();
  const T* gate = c.gate ? c.gate->data() + (b * p.kv_heads + kvh) * p.len_k : nullptr;
  constexpr Index TQ = kTileQ<T>;
  const Index rows = TileScratch<T>::G * TQ;
  // Queries i < -shift see no key.
  const Index first_q = len_k == 0 ? p.len_q : std::clamp<Index>(-shift, 0, p.len_q);
  if (part == 0)
    for (Index g = 0; g < group; ++g) zero_rows(head_rows(c.out, c.layout, b, kvh * group + g), 0, first_q);
  const auto [kb, ke] = part_range(len_k, part, parts);
  for (Index c0 = kb; c0 < ke; c0 += chunk) {
    const Index c1 = std::min(c0 + chunk, ke), nk = c1 - c0;
    c.map->map(k.row(c0), k.row_stride, nk, kvh, mode, k_shift, w.phi_k, w.e, w.map);
    if (scaled) {
      // Key j is scaled to the largest exponent among the state and keys c0..j (a prefix maximum,
      // so only keys a query can see set its scale); the chunk joins the state at the last one.
      int run = *s.exponent == kNoExponent ? w.e[0] : *s.exponent;
      if (*s.exponent == kNoExponent) *s.exponent = run;
      for (Index r = 0; r < nk; ++r) {
        run = std::max(run, w.e[r]);
        if (w.e[r] != run) scale(w.phi_k + r * s.ld, std::ldexp(T(1), w.e[r] - run), s.ld);
        w.key_exp[r] = static_cast<T>(run);
      }
    } else {
      align_rows(s, w.phi_k, static_cast<const int*>(nullptr), nk);
    }
    const T* vc = v.row(c0);
    Index vs = v.row_stride;
    if (c1 > valid) {  // performer-pytorch's padding: zero value rows
      for (Index r = 0; r < nk; ++r)
        for (Index d = 0; d < p.dim_v; ++d) w.vbuf[r * p.dim_v + d] = c0 + r < valid ? vc[r * vs + d] : T(0);
      vc = w.vbuf;
      vs = p.dim_v;
    }
    if (gate) {
      T a = 0;
      for (Index r = 0; r < nk; ++r) {
        const T g = gate[c0 + r];
        a += g > 0 ? std::max(std::log(g), kMinLogGate<T>) : kMinLogGate<T>;
        w.key_log[r] = a;
        w.key_w[r] = T(1) - g;
      }
    }
    const Index qa = std::clamp<Index>(c0 - shift, first_q, p.len_q);
    const Index qb = c1 == len_k ? p.len_q : std::clamp<Index>(c1 - shift, qa, p.len_q);
    for (Index g = 0; g < group; ++g) {
      for (Index i0 = qa; i0 < qb; i0 += rows) {
        const Index n = std::min(rows, qb - i0);
        // Each query reads the state after its last visible key J(i) = min(i + shift, c1 - 1).
        for (Index r = 0; r < (n + TQ - 1) / TQ * TQ; ++r) {
          const Index last = std::min(i0 + std::min(r, n - 1) + shift, c1 - 1) - c0;
          if (gate) w.query_log[r] = w.key_log[last];
          if (scaled) w.query_exp[r] = w.key_exp[last];
        }
        attend_linear(c, b, kvh * group + g, i0, n, T(0), shift, s, c0, c1, vc, vs, gate ? w.query_log : nullptr,
                      scaled ? w.query_exp : nullptr, ts, w);
      }
    }
    if (scaled) {
      const int last = static_cast<int>(w.key_exp[nk - 1]);
      s.align(last);
      for (Index r = 0; r < nk; ++r)
        if (static_cast<int>(w.key_exp[r]) != last)
          scale(w.phi_k + r * s.ld, std::ldexp(T(1), static_cast<int>(w.key_exp[r]) - last), s.ld);
    }
    if (gate) {
      // The state after the chunk: prod(g) S + sum_j (1 - g_j) prod_{t > j} g_t phi_j v_j^T.
      const T a_last = w.key_log[nk - 1];
      const T decay = std::exp(a_last);
      scale(s.st, decay, s.dim_v * s.ld);
      scale(s.z, decay, s.ld);
      for (Index r = 0; r < nk; ++r) scale(w.phi_k + r * s.ld, w.key_w[r] * std::exp(a_last - w.key_log[r]), s.ld);
    }
    add_rows(s, w.phi_k, nk, nk, vc, vs);
  }
}

// Extend by a few tokens, one at a time: the decode step. Token t's key joins the state, then the
// queries of every head of the group read it, in one pass over S^T (each row is updated and read
// while in L1: the state of 8 heads at F = 256, Dv = 64 is 0.5 MiB, so a second pass would come from
// L2). O(F (Dqk + Dv)) per token and head.
template <class T, class Map>
void extend_rows(const LinearCall<T, Map>& c, Index b, Index kvh, const StateRef<T>& s, const LinearScratch<T>& w) noexcept {
  const Problem& p = c.problem;
  const Index group = p.heads / p.kv_heads;
  const HeadRows<const T> k = head_rows(c.k, c.layout, b, kvh), v = head_rows(c.v, c.layout, b, kvh);
  const T* gate = c.gate ? c.gate->data() + (b * p.kv_heads + kvh) * p.len_k : nullptr;
  const bool scaled = c.map->exponential();
  const Index F = c.map->features();
  LinearScore<T> norm;
  norm.clamp = c.clamp;
  const Index dq = p.dim_qk;
  for (Index t = 0; t < p.len_k; ++t) {
    // The key and the group's queries are mapped together, so the projection is read once per
    // token. pow2 stabilises the queries too: any per-row factor cancels in their ratio.
    std::copy(k.row(t), k.row(t) + dq, w.xrows);
    for (Index g = 0; g < group; ++g) {
      const T* qr = head_rows(c.q, c.layout, b, kvh * group + g).row(t);
      std::copy(qr, qr + dq, w.xrows + (g + 1) * dq);
    }
    c.map->map(w.xrows, dq, group + 1, kvh, Stabiliser::pow2, T(0), w.phi_k, w.e, w.map);
    align_rows(s, w.phi_k, scaled ? w.e : nullptr, 1);
    if (gate) {
      const T g = std::max(gate[t], std::exp(kMinLogGate<T>));
      scale(s.st, g, s.dim_v * s.ld);
      scale(s.z, g, s.ld);
      scale(w.phi_k, T(1) - gate[t], s.ld);
    }
    const T* phi_q = w.phi_k + s.ld;  // [group, ld]
    const T* vt = v.row(t);
    T* num = w.phi_q;  // [group, Dv]
    for (Index d = 0; d < p.dim_v; ++d) {
      T* row = s.st + d * s.ld;
      axpy(vt[d], w.phi_k, row, F);
      for (Index g = 0; g < group; ++g) num[g * p.dim_v + d] = dot(row, phi_q + g * s.ld, F);
    }
    axpy(T(1), w.phi_k, s.z, F);
    *s.length += 1;
    for (Index g = 0; g < group; ++g)
      norm.finish_row(num + g * p.dim_v, 1, dot(s.z, phi_q + g * s.ld, F), head_rows(c.out, c.layout, b, kvh * group + g).row(t),
                      p.dim_v);
  }
}

template <class T, class Map>
void run_linear(const LinearCall<T, Map>& c, const Executor& exec, std::span<std::byte> workspace) {
  const Problem& p = c.problem;
  if (p.batch == 0 || p.heads == 0 || p.len_q == 0) return;  // extend has Lk = Lq: nothing to add either
  const int threads = exec.num_threads();
  const Index chunk = c.chunk > 0 ? c.chunk : kLinearChunk<T>;
  const bool splittable = !c.fixed_keys && !c.gate && c.state == nullptr;
  const LinearPlan<T, Map> lp = linear_plan<T>(p, *c.map, c.causal, splittable, chunk);
  Arena arena(workspace, linear_arena(lp, threads).bytes());
  std::byte* scratch = arena.take<std::byte>(static_cast<Index>(lp.per_thread) * std::max(threads, 1));
  const auto worker = [&](int w) {
    Arena a(std::span<std::byte>(scratch + lp.per_thread * static_cast<std::size_t>(w), lp.per_thread), lp.per_thread);
    const auto ts = take_from<TileScratch<T>>(a, lp.tile_problem);
    const auto ls = take_from<LinearScratch<T>>(a, lp.shape);
    return std::pair{ts, ls};
  };
  const Index ld = lp.shape.ld, dv = p.dim_v;

  T* st = arena.take<T>(lp.states * (dv + 1) * ld);
  int* exps = arena.take<int>(lp.states);
  Index* lens = arena.take<Index>(lp.states);
  T* q_shift = arena.take<T>(lp.q_shifts);
  const auto state = [&](Index i) {
    return StateRef<T>{st + i * (dv + 1) * ld, st + i * (dv + 1) * ld + dv * ld, exps + i, lens + i, ld, dv, c.map->features()};
  };
  const Index parts = lp.key_parts;

  if (c.causal && parts == 1) {
    exec.run(p.batch * p.kv_heads, threads, [&](int wi, Index item) {
      const auto [ts, ls] = worker(wi);
      const Index b = item / p.kv_heads, kvh = item % p.kv_heads;
      if (c.state != nullptr) {
        const StateRef<T> s = c.state->ref(item);
        if (p.len_k <= kDecodeMaxRows) extend_rows(c, b, kvh, s, ls);
        else causal_sequence(c, b, kvh, 0, 1, s, chunk, ts, ls);
        return;
      }
      int e = kNoExponent;
      Index len = 0;
      const StateRef<T> s{ls.st, ls.st + dv * ld, &e, &len, ld, dv, c.map->features()};
      s.clear();
      causal_sequence(c, b, kvh, 0, 1, s, chunk, ts, ls);
    });
    return;
  }
  if (c.causal) {
    // Slot p of a slice: first the state of part p - 1's keys, then (summed in order) the prefix
    // state of parts 0 .. p - 1, from which part p runs.
    exec.run(p.batch * p.kv_heads * parts, threads, [&](int wi, Index item) {
      const auto [ts, ls] = worker(wi);
      const Index slice = item / parts, part = item % parts;
      if (part == 0) state(item).clear();
      else global_keys(c, slice / p.kv_heads, slice % p.kv_heads, part - 1, parts, state(item), ls);
    });
    exec.run(p.batch * p.kv_heads, threads, [&](int, Index slice) {
      for (Index part = 2; part < parts; ++part) state(slice * parts + part).merge_from(state(slice * parts + part - 1));
    });
    exec.run(p.batch * p.kv_heads * parts, threads, [&](int wi, Index item) {
      const auto [ts, ls] = worker(wi);
      const Index slice = item / parts;
      causal_sequence(c, slice / p.kv_heads, slice % p.kv_heads, item % parts, parts, state(item), chunk, ts, ls);
    });
    return;
  }

  exec.run(p.batch * p.kv_heads * parts, threads, [&](int wi, Index item) {
    const auto [ts, ls] = worker(wi);
    const Index slice = item / parts;
    global_keys(c, slice / p.kv_heads, slice % p.kv_heads, item % parts, parts, state(item), ls);
  });
  if (parts > 1) {
    exec.run(p.batch * p.kv_heads, threads, [&](int, Index slice) {
      for (Index part = 1; part < parts; ++part) state(slice * parts).merge_from(state(slice * parts + part));
    });
  }
  if (c.fixed_queries) {
    exec.run(p.batch * p.heads, threads, [&](int wi, Index item) {
      const auto [ts, ls] = worker(wi);
      const Index b = item / p.heads, h = item % p.heads;
      q_shift[item] = sequence_bound(*c.map, head_rows(c.q, c.layout, b, h), p.len_q, h / (p.heads / p.kv_heads), ls.map);
    });
  }
  constexpr Index TQ = kTileQ<T>;
  const Index rows = TileScratch<T>::G * TQ;
  const Index passes = (p.len_q + rows - 1) / rows;
  exec.run(p.batch * p.heads * passes, threads, [&](int wi, Index item) {
    const auto [ts, ls] = worker(wi);
    const Index bh = item / passes, i0 = (item % passes) * rows;
    const Index b = bh / p.heads, h = bh % p.heads;
    const StateRef<T> s = state((b * p.kv_heads + h / (p.heads / p.kv_heads)) * parts);
    attend_linear(c, b, h, i0, std::min(rows, p.len_q - i0), c.fixed_queries ? q_shift[bh] : T(0), 0, s, 0, 0,
                  static_cast<const T*>(nullptr), 0, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), ts,
                  ls);
  });
}

template <class T, class Map>
std::size_t linear_workspace_bytes(const Problem& p, const Map& map, bool causal, bool splittable, Index chunk,
                                   int threads) noexcept {
  const LinearPlan<T, Map> lp = linear_plan<T>(p, map, causal, splittable, chunk > 0 ? chunk : kLinearChunk<T>);
  return linear_arena(lp, threads).span_bytes();
}

// FLOPs: features of every query and key row (projection), the state's update (2 F Dv per key) and
// reads (2 F (Dv + 1) per query), and in causal mode the intra-chunk pairs (about C/2 per query,
// each 2 (F + Dv)).
template <class T, class Map>
Cost linear_cost(const Problem& p, const Map& map, bool causal, Index chunk) noexcept {
  const double F = static_cast<double>(map.features()), dv = static_cast<double>(p.dim_v);
  const double keys = static_cast<double>(p.batch * p.kv_heads * p.len_k);
  const double queries = static_cast<double>(p.batch * p.heads * p.len_q);
  double flops = keys * (map.flops_per_row() + 2 * F * dv) + queries * (map.flops_per_row() + 2 * F * (dv + 1));
  if (causal) flops += queries * static_cast<double>(chunk > 0 ? chunk : kLinearChunk<T>) / 2 * 2 * (F + dv);
  const double elems = static_cast<double>(p.batch) *
                       (static_cast<double>(p.heads * p.len_q * (p.dim_qk + p.dim_v)) +
                        static_cast<double>(p.kv_heads * p.len_k * (p.dim_qk + p.dim_v)));
  return {flops, elems * sizeof(T)};
}

}  // namespace detail
EFFATTN_END_NAMESPACE
