// The continuous Bernoulli log-density per element and per row, and its derivative: the pieces
// shared by continuous_bernoulli_log_prob.cpp (logits [M, N, D]) and the fused decoder head
// (linear_continuous_bernoulli_log_prob.cpp, logits made a tile at a time). Per element
// (docs/design.md section 1.13), with a = |l| and e = exp(-a):
//   value     (x - 1/2) l - sum_n d_n l^2n                  for a < s (the series)
//             x l - max(l, 0) + log(a / (1 - e))            for a >= s
//   gradient  (x - 1/2) - sum_n c_n l^(2n-1)                for a < s
//             x - [l >= 0] + sign(l) (1/a - e / (1 - e))    for a >= s
// d_n = B_2n / (2n (2n)!), c_n = B_2n / (2n)!; s = 1 with 11 terms for double, s = 2 with 8
// terms for float (fastair/backends/reference.py, CB_SWITCH). Both branches are evaluated on
// every SIMD lane, each with its argument clamped into its own range, and blended.
#pragma once

#include "common.h"

namespace fastair {
namespace cb {

inline constexpr double kValueSeries[11] = {  // d_n, n = 1..11
    4.1666666666666664e-02, -3.4722222222222224e-04, 5.5114638447971785e-06,
    -1.0333994708994710e-07, 2.0876756987868100e-09, -4.4034917822395780e-11,
    9.5589546647747700e-13, -2.1185501852016142e-14, 4.7700344757099140e-16,
    -1.0874343492790310e-17, 2.5040921947091955e-19};
inline constexpr double kGradSeries[11] = {  // c_n = 2n d_n, n = 1..11
    8.3333333333333329e-02, -1.3888888888888889e-03, 3.3068783068783070e-05,
    -8.2671957671957680e-07, 2.0876756987868100e-08, -5.2841901386874930e-10,
    1.3382536530684679e-11, -3.3896802963225827e-13, 8.5860620562778450e-15,
    -2.1748686985580620e-16, 5.5090028283602295e-18};

template <typename T>
struct CBSeries;
template <>
struct CBSeries<double> {
  static constexpr double kSwitch = 1.0;
  static constexpr int kTerms = 11;
};
template <>
struct CBSeries<float> {
  static constexpr float kSwitch = 2.0f;
  static constexpr int kTerms = 8;
};

// sum_{i < n} c[i] t^i by Horner's rule.
template <typename T>
inline Vectorized<T> horner(const double* c, int n, const Vectorized<T>& t) {
  Vectorized<T> p(static_cast<T>(c[n - 1]));
  for (int i = n - 2; i >= 0; --i) p = at::vec::fmadd(p, t, Vectorized<T>(static_cast<T>(c[i])));
  return p;
}

// The per-element log-density for one vector of logits and data.
template <typename T>
inline Vectorized<T> cb_term(const Vectorized<T>& l, const Vectorized<T>& x) {
  using Vec = Vectorized<T>;
  const Vec zero(T(0)), one(T(1)), half(T(0.5)), s(CBSeries<T>::kSwitch);
  const Vec a = l.abs();
  const Vec small = a < s;
  const Vec ls = Vec::blendv(zero, l, small);  // 0 where the closed form is used
  const Vec l2 = ls * ls;
  const Vec series = (x - half) * ls - l2 * horner<T>(kValueSeries, CBSeries<T>::kTerms, l2);
  const Vec ac = at::vec::maximum(a, s);  // >= s: 1 - e is not small, a / (1 - e) is finite
  const Vec e = (zero - ac).exp();
  const Vec closed = x * l - at::vec::maximum(l, zero) + (ac / (one - e)).log();
  return Vec::blendv(closed, series, small);
}

// The per-element derivative with respect to l: x minus the mean of the distribution.
template <typename T>
inline Vectorized<T> cb_grad(const Vectorized<T>& l, const Vectorized<T>& x) {
  using Vec = Vectorized<T>;
  const Vec zero(T(0)), one(T(1)), half(T(0.5)), s(CBSeries<T>::kSwitch);
  const Vec a = l.abs();
  const Vec small = a < s;
  const Vec ls = Vec::blendv(zero, l, small);
  const Vec series = (x - half) - ls * horner<T>(kGradSeries, CBSeries<T>::kTerms, ls * ls);
  const Vec ac = at::vec::maximum(a, s);
  const Vec e = (zero - ac).exp();
  const Vec m = one / ac - e / (one - e);  // the mean at -|l|, in (0, 1/2)
  const Vec closed = Vec::blendv(x - m, (x - one) + m, l >= zero);
  return Vec::blendv(closed, series, small);
}

// sum_d of the log-density over one row of D values. The tail (D not a multiple of the vector
// width) is padded with l = 0, x = 0, whose term is exactly 0.
template <typename scalar_t, typename acc_t>
inline acc_t cb_row(const scalar_t* l, const acc_t* x, int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  Vec acc0(acc_t(0)), acc1(acc_t(0));
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    acc0 = acc0 + cb_term(load_as<scalar_t, acc_t>(l + d), Vec::loadu(x + d));
    acc1 = acc1 + cb_term(load_as<scalar_t, acc_t>(l + d + W), Vec::loadu(x + d + W));
  }
  for (; d + W <= D; d += W) {
    acc0 = acc0 + cb_term(load_as<scalar_t, acc_t>(l + d), Vec::loadu(x + d));
  }
  if (d < D) {
    alignas(64) acc_t lb[W] = {};
    alignas(64) acc_t xb[W] = {};
    for (int64_t i = 0; d + i < D; ++i) {
      lb[i] = static_cast<acc_t>(l[d + i]);
      xb[i] = x[d + i];
    }
    acc1 = acc1 + cb_term(Vec::loadu(lb), Vec::loadu(xb));
  }
  return reduce_sum(acc0 + acc1);
}

// out_d = g * (x_d - mean(l_d)) over one row of D values, tiny values flushed (flush_tiny).
template <typename scalar_t, typename acc_t>
inline void cb_grad_row(acc_t g, const scalar_t* l, const acc_t* x, scalar_t* out, int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const Vec gv(g);
  int64_t d = 0;
  for (; d + W <= D; d += W) {
    const Vec r = flush_tiny(gv * cb_grad(load_as<scalar_t, acc_t>(l + d), Vec::loadu(x + d)));
    store_as<scalar_t, acc_t>(r, out + d);
  }
  if (d < D) {
    alignas(64) acc_t lb[W] = {};
    alignas(64) acc_t xb[W] = {};
    for (int64_t i = 0; d + i < D; ++i) {
      lb[i] = static_cast<acc_t>(l[d + i]);
      xb[i] = x[d + i];
    }
    flush_tiny(gv * cb_grad(Vec::loadu(lb), Vec::loadu(xb))).store(lb);
    for (int64_t i = 0; d + i < D; ++i) out[d + i] = static_cast<scalar_t>(lb[i]);
  }
}

}  // namespace cb
}  // namespace fastair
