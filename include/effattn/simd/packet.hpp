#pragma once
// Packet<T>: the one facade over Eigen's packet math. This is the only file of effattn that names
// Eigen::internal, so a change of Eigen version or ISA touches one place. Packets are the widest the
// translation unit is compiled for (AVX-512: 16 floats, AVX2: 8, SSE/NEON: 4).

#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "effattn/config.hpp"

EFFATTN_BEGIN_NAMESPACE
namespace detail {

template <class T>
struct Packet {
  using P = typename Eigen::internal::packet_traits<T>::type;  // the raw vector type
  static constexpr int size = Eigen::internal::unpacket_traits<P>::size;

  static EFFATTN_ALWAYS_INLINE P load(const T* p) { return Eigen::internal::pload<P>(p); }
  static EFFATTN_ALWAYS_INLINE P loadu(const T* p) { return Eigen::internal::ploadu<P>(p); }
  static EFFATTN_ALWAYS_INLINE void store(T* p, const P& x) { Eigen::internal::pstore(p, x); }
  static EFFATTN_ALWAYS_INLINE void storeu(T* p, const P& x) { Eigen::internal::pstoreu(p, x); }
  static EFFATTN_ALWAYS_INLINE P set1(T x) { return Eigen::internal::pset1<P>(x); }
  static EFFATTN_ALWAYS_INLINE P zero() { return Eigen::internal::pzero(P{}); }
  // {x, x+1, ..., x+size-1}
  static EFFATTN_ALWAYS_INLINE P iota(T x) { return Eigen::internal::plset<P>(x); }

  static EFFATTN_ALWAYS_INLINE P add(const P& a, const P& b) { return Eigen::internal::padd(a, b); }
  static EFFATTN_ALWAYS_INLINE P sub(const P& a, const P& b) { return Eigen::internal::psub(a, b); }
  static EFFATTN_ALWAYS_INLINE P mul(const P& a, const P& b) { return Eigen::internal::pmul(a, b); }
  static EFFATTN_ALWAYS_INLINE P div(const P& a, const P& b) { return Eigen::internal::pdiv(a, b); }
  // a * b + c, fused where the ISA has FMA.
  static EFFATTN_ALWAYS_INLINE P fma(const P& a, const P& b, const P& c) { return Eigen::internal::pmadd(a, b, c); }
  static EFFATTN_ALWAYS_INLINE P max(const P& a, const P& b) { return Eigen::internal::pmax(a, b); }
  static EFFATTN_ALWAYS_INLINE P min(const P& a, const P& b) { return Eigen::internal::pmin(a, b); }
  static EFFATTN_ALWAYS_INLINE P abs(const P& a) { return Eigen::internal::pabs(a); }

  // Eigen's vectorised exp clamps its argument, so exp(-inf) is a tiny denormal, not 0: callers that
  // need exact zeros for masked entries select them after the exp.
  static EFFATTN_ALWAYS_INLINE P exp(const P& x) { return Eigen::internal::pexp(x); }
  static EFFATTN_ALWAYS_INLINE P log(const P& x) { return Eigen::internal::plog(x); }
  // x * 2^e for integer-valued e: exact unless the result leaves the normal range.
  static EFFATTN_ALWAYS_INLINE P ldexp(const P& x, const P& e) { return Eigen::internal::pldexp(x, e); }
  // Eigen 3.4 vectorises tanh, sin and cos for float only; double goes lane by lane through libm.
  static EFFATTN_ALWAYS_INLINE P tanh(const P& x) {
    if constexpr (std::is_same_v<T, float>) return Eigen::internal::ptanh(x);
    else return per_lane(x, [](T t) { return std::tanh(t); });
  }
  static EFFATTN_ALWAYS_INLINE P sin(const P& x) {
    if constexpr (std::is_same_v<T, float>) return Eigen::internal::psin(x);
    else return per_lane(x, [](T t) { return std::sin(t); });
  }
  static EFFATTN_ALWAYS_INLINE P cos(const P& x) {
    if constexpr (std::is_same_v<T, float>) return Eigen::internal::pcos(x);
    else return per_lane(x, [](T t) { return std::cos(t); });
  }
  template <class F>
  static EFFATTN_ALWAYS_INLINE P per_lane(const P& x, F f) {
    alignas(64) T lanes[size];
    store(lanes, x);
    for (T& t : lanes) t = f(t);
    return load(lanes);
  }

  // Lane masks: all bits set where true.
  static EFFATTN_ALWAYS_INLINE P lt(const P& a, const P& b) { return Eigen::internal::pcmp_lt(a, b); }
  static EFFATTN_ALWAYS_INLINE P le(const P& a, const P& b) { return Eigen::internal::pcmp_le(a, b); }
  static EFFATTN_ALWAYS_INLINE P eq(const P& a, const P& b) { return Eigen::internal::pcmp_eq(a, b); }
  static EFFATTN_ALWAYS_INLINE P mask_and(const P& a, const P& b) { return Eigen::internal::pand(a, b); }
  // mask ? a : b
  static EFFATTN_ALWAYS_INLINE P select(const P& mask, const P& a, const P& b) { return Eigen::internal::pselect(mask, a, b); }
  static EFFATTN_ALWAYS_INLINE bool any(const P& mask) { return Eigen::internal::predux_any(mask); }

  // Transposes a size x size block held as `size` packets: lane j of rows[i] <-> lane i of rows[j].
  // (GCC warns that a vector type's alignment attribute is dropped as a template argument; Eigen's
  // PacketBlock is written for exactly these types.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
  static EFFATTN_ALWAYS_INLINE void transpose(P* rows) {
    Eigen::internal::PacketBlock<P, size> block;
    for (int i = 0; i < size; ++i) block.packet[i] = rows[i];
    Eigen::internal::ptranspose(block);
    for (int i = 0; i < size; ++i) rows[i] = block.packet[i];
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

  static EFFATTN_ALWAYS_INLINE T sum(const P& x) { return Eigen::internal::predux(x); }
  static EFFATTN_ALWAYS_INLINE T hmax(const P& x) { return Eigen::internal::predux_max(x); }

  static constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

  // Makes the compiler materialise x in a register. GCC otherwise folds a packet reused by several
  // FMAs back into each FMA as a memory operand: with AVX2 (no embedded broadcast) the lane kernel
  // then issues 12 loads per 8 FMAs and is load-bound (measured 67% of the FMA rate on Zen).
  static EFFATTN_ALWAYS_INLINE void keep_in_register([[maybe_unused]] P& x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(x));
#endif
  }
};

template <class T>
inline constexpr int kPacketSize = Packet<T>::size;

}  // namespace detail
EFFATTN_END_NAMESPACE
