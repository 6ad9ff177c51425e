// Shared helpers of the C++ CPU kernels: vectorized softplus / sigmoid and loads that widen
// float16/bfloat16 logits to the accumulation type. Vectorized<T> is ATen's SIMD wrapper; the
// build picks AVX2 or AVX-512 from the machine (fastair/backends/native.py).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>

#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTAIR_MXCSR 1
#endif

namespace fastair {

using at::vec::Vectorized;

// Flush-to-zero and denormals-are-zero on the current thread while in scope; the thread's
// previous mode is restored on exit, so a caller never sees its floating-point mode change.
// Denormal operands and results cost a microcode assist of about a hundred cycles each on
// Intel cores; the importance weights exp(log_w - lse) of large k and their products with the
// logits' gradients produce them in bulk. What is flushed and why it does not matter:
// docs/design.md section 1.12.
class FlushDenormals {
 public:
  FlushDenormals() {
#if defined(FASTAIR_MXCSR)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | kFlushBits);
#elif defined(__aarch64__)
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t fz = saved_ | (uint64_t(1) << 24);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fz));
#endif
  }
  ~FlushDenormals() {
#if defined(FASTAIR_MXCSR)
    _mm_setcsr(saved_);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if defined(FASTAIR_MXCSR)
  static constexpr unsigned int kFlushBits = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned int saved_ = 0;
#else
  uint64_t saved_ = 0;
#endif
};

// at::parallel_for with denormals flushed in every task (each worker thread sets and restores
// its own mode). Every kernel of csrc/cpu uses this one, never at::parallel_for directly.
template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
    FlushDenormals flush;
    f(b, e);
  });
}

// Rows handed to one task of at::parallel_for: enough work to amortize the thread start.
inline int64_t grain_for(int64_t row_cost) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_cost));
}

template <typename T>
inline T softplus(T l) {  // log(1 + e^l) without overflow
  return std::max(l, T(0)) + std::log1p(std::exp(-std::abs(l)));
}

template <typename T>
inline T sigmoid(T l) {  // e^l / (1 + e^l); exp(-l) = inf gives exactly 0
  return T(1) / (T(1) + std::exp(-l));
}

// exp(a) for a <= 0, float32, SIMD: Cody-Waite reduction a = n ln2 + r and a degree-6
// polynomial for exp(r), relative error below 2e-7. Arguments below -87 are clamped (the true
// value is under 2e-38, so the absolute error is negligible for softplus and sigmoid).
inline Vectorized<float> exp_nonpositive(const Vectorized<float>& a) {
  using Vec = Vectorized<float>;
  const Vec x = at::vec::maximum(a, Vec(-87.0f));
  const Vec n = (x * Vec(1.44269504088896341f)).round();
  const Vec r = at::vec::fmadd(n, Vec(-1.42860677e-06f), at::vec::fmadd(n, Vec(-0.693145752f), x));
  Vec p(1.0f / 720.0f);
  p = at::vec::fmadd(p, r, Vec(1.0f / 120.0f));
  p = at::vec::fmadd(p, r, Vec(1.0f / 24.0f));
  p = at::vec::fmadd(p, r, Vec(1.0f / 6.0f));
  p = at::vec::fmadd(p, r, Vec(0.5f));
  p = at::vec::fmadd(p, r, Vec(1.0f));
  p = at::vec::fmadd(p, r, Vec(1.0f));
  const auto bits = (at::vec::convert_to_int_of_same_size(n) + Vectorized<int32_t>(127)) * Vectorized<int32_t>(1 << 23);
  return p * at::vec::cast<float>(bits);
}

// log(1 + e) for 0 <= e <= 1: with s = e / (2 + e) <= 1/3, log(1 + e) = 2 atanh(s), a series
// in s^2 whose first dropped term is below 2e-8.
inline Vectorized<float> log1p_unit(const Vectorized<float>& e) {
  using Vec = Vectorized<float>;
  const Vec s = e / (Vec(2.0f) + e), s2 = s * s;
  Vec p(1.0f / 13.0f);
  p = at::vec::fmadd(p, s2, Vec(1.0f / 11.0f));
  p = at::vec::fmadd(p, s2, Vec(1.0f / 9.0f));
  p = at::vec::fmadd(p, s2, Vec(1.0f / 7.0f));
  p = at::vec::fmadd(p, s2, Vec(1.0f / 5.0f));
  p = at::vec::fmadd(p, s2, Vec(1.0f / 3.0f));
  p = at::vec::fmadd(p, s2, Vec(1.0f));
  return Vec(2.0f) * s * p;
}

// softplus(l) = max(l, 0) + log(1 + exp(-|l|)); sigmoid(l) = (l >= 0 ? 1 : e) / (1 + e) with the
// same e = exp(-|l|) <= 1, so neither can overflow. float64 uses ATen's SLEEF functions.
template <typename T>
inline Vectorized<T> vsoftplus(const Vectorized<T>& l) {
  const Vectorized<T> zero(T(0));
  return at::vec::maximum(l, zero) + (zero - l.abs()).exp().log1p();
}

template <typename T>
inline Vectorized<T> vsigmoid(const Vectorized<T>& l) {
  const Vectorized<T> one(T(1));
  return one / (one + l.neg().exp());
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> vsoftplus<float>(const Vectorized<float>& l) {
  const Vectorized<float> zero(0.0f);
  return at::vec::maximum(l, zero) + log1p_unit(exp_nonpositive(zero - l.abs()));
}

template <>
inline Vectorized<float> vsigmoid<float>(const Vectorized<float>& l) {
  using Vec = Vectorized<float>;
  const Vec zero(0.0f), one(1.0f);
  const Vec e = exp_nonpositive(zero - l.abs());
  return Vec::blendv(e, one, l >= zero) / (one + e);
}
#endif

template <typename scalar_t, typename acc_t>
constexpr bool kReducedToFloat =
    std::is_same_v<acc_t, float> &&
    (std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>);

// Load Vectorized<acc_t>::size() values of scalar_t, widened to acc_t (bfloat16 and float16
// with ATen's SIMD conversions).
template <typename scalar_t, typename acc_t>
inline Vectorized<acc_t> load_as(const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return Vectorized<acc_t>::loadu(p);
  } else if constexpr (kReducedToFloat<scalar_t, acc_t>) {
    Vectorized<float> out;
    at::vec::load_to_float<scalar_t>(p, out);
    return out;
  } else {
    alignas(64) acc_t buf[Vectorized<acc_t>::size()];
    for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) buf[i] = static_cast<acc_t>(p[i]);
    return Vectorized<acc_t>::loadu(buf);
  }
}

template <typename scalar_t, typename acc_t>
inline void store_as(const Vectorized<acc_t>& v, scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    v.store(p);
  } else {
    alignas(64) acc_t buf[Vectorized<acc_t>::size()];
    v.store(buf);
    for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) p[i] = static_cast<scalar_t>(buf[i]);
  }
}

template <typename T>
inline T reduce_sum(const Vectorized<T>& v) {
  alignas(64) T buf[Vectorized<T>::size()];
  v.store(buf);
  T s = 0;
  for (int64_t i = 0; i < Vectorized<T>::size(); ++i) s += buf[i];
  return s;
}

// sum_d x_d * l_d - softplus(l_d) over one row of D values.
template <typename scalar_t, typename acc_t>
inline acc_t bernoulli_row(const scalar_t* l, const acc_t* x, int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  Vec acc0(acc_t(0)), acc1(acc_t(0));
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    const Vec l0 = load_as<scalar_t, acc_t>(l + d), l1 = load_as<scalar_t, acc_t>(l + d + W);
    acc0 = acc0 + (Vec::loadu(x + d) * l0 - vsoftplus(l0));
    acc1 = acc1 + (Vec::loadu(x + d + W) * l1 - vsoftplus(l1));
  }
  for (; d + W <= D; d += W) {
    const Vec l0 = load_as<scalar_t, acc_t>(l + d);
    acc0 = acc0 + (Vec::loadu(x + d) * l0 - vsoftplus(l0));
  }
  acc_t s = reduce_sum(acc0 + acc1);
  for (; d < D; ++d) {
    const acc_t lv = static_cast<acc_t>(l[d]);
    s += x[d] * lv - softplus(lv);
  }
  return s;
}

// Gradients below kTinyGradient in magnitude are written as exact zeros (float32 accumulation,
// so float32, bfloat16 and float16 outputs): a value of at least 2^-100 times two further
// factors of at least 2^-13 each (a weight, a tanh derivative) is still a normal float, so the
// matrix products and elementwise backward ops that consume these gradients outside fastair
// see no denormal operands either. An entry changes by less than 2^-100 = 7.9e-31 absolute;
// docs/design.md section 1.12 says why no bound or parameter update can notice.
constexpr float kTinyGradient = 7.888609052210118e-31f;  // 2^-100

template <typename T>
inline Vectorized<T> flush_tiny(const Vectorized<T>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return Vectorized<float>::blendv(v, Vectorized<float>(0.0f), v.abs() < Vectorized<float>(kTinyGradient));
  } else {
    return v;
  }
}

template <typename T>
inline T flush_tiny(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return std::abs(v) < kTinyGradient ? 0.0f : v;
  } else {
    return v;
  }
}

// out_d = g * (x_d - sigmoid(l_d)) over one row of D values, tiny values flushed (flush_tiny).
template <typename scalar_t, typename acc_t>
inline void bernoulli_grad_row(acc_t g, const scalar_t* l, const acc_t* x, scalar_t* out,
                               int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const Vec gv(g);
  int64_t d = 0;
  if constexpr (kReducedToFloat<scalar_t, acc_t>) {
    // bfloat16/float16: two float vectors in, one full reduced-precision vector out.
    for (; d + 2 * W <= D; d += 2 * W) {
      Vec l0, l1;
      at::vec::load_to_float<scalar_t>(l + d, l0, l1);
      const Vec r0 = flush_tiny(gv * (Vec::loadu(x + d) - vsigmoid(l0)));
      const Vec r1 = flush_tiny(gv * (Vec::loadu(x + d + W) - vsigmoid(l1)));
      at::vec::convert_from_float<scalar_t>(r0, r1).store(out + d);
    }
  }
  for (; d + W <= D; d += W) {
    const Vec lv = load_as<scalar_t, acc_t>(l + d);
    store_as<scalar_t, acc_t>(flush_tiny(gv * (Vec::loadu(x + d) - vsigmoid(lv))), out + d);
  }
  for (; d < D; ++d) {
    out[d] = static_cast<scalar_t>(flush_tiny(g * (x[d] - sigmoid(static_cast<acc_t>(l[d])))));
  }
}

template <typename T>
struct type_tag {
  using type = T;
};

// Calls f(type_tag<scalar_t>{}, type_tag<acc_t>{}) for the dtype of the large tensor (logits,
// weights) and the accumulation dtype: (float, float), (double, double), (Half, float),
// (BFloat16, float).
template <typename F>
inline void dispatch_pair(at::ScalarType data, at::ScalarType acc, const char* name, F&& f) {
  using at::ScalarType;
  if (data == ScalarType::Float && acc == ScalarType::Float) {
    f(type_tag<float>{}, type_tag<float>{});
  } else if (data == ScalarType::Double && acc == ScalarType::Double) {
    f(type_tag<double>{}, type_tag<double>{});
  } else if (data == ScalarType::Half && acc == ScalarType::Float) {
    f(type_tag<at::Half>{}, type_tag<float>{});
  } else if (data == ScalarType::BFloat16 && acc == ScalarType::Float) {
    f(type_tag<at::BFloat16>{}, type_tag<float>{});
  } else {
    TORCH_CHECK(false, name, ": unsupported dtypes, ", data, " with ", acc);
  }
}

// Column-wise log-sum-exp of v [n, R] (row-major) into out [R], for columns [r0, r1).
template <typename T>
inline void logsumexp_columns(const T* v, T* out, int64_t n, int64_t R, int64_t r0, int64_t r1) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T ninf = -std::numeric_limits<T>::infinity();
  int64_t r = r0;
  for (; r + W <= r1; r += W) {
    Vec m(ninf);
    for (int64_t i = 0; i < n; ++i) m = at::vec::maximum(m, Vec::loadu(v + i * R + r));
    alignas(64) T mb[W];
    m.store(mb);
    for (int64_t j = 0; j < W; ++j) mb[j] = std::isfinite(mb[j]) ? mb[j] : T(0);
    const Vec shift = Vec::loadu(mb);
    Vec s(T(0));
    for (int64_t i = 0; i < n; ++i) s = s + (Vec::loadu(v + i * R + r) - shift).exp();
    (s.log() + shift).store(out + r);
  }
  for (; r < r1; ++r) {
    T m = ninf;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, v[i * R + r]);
    const T shift = std::isfinite(m) ? m : T(0);
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(v[i * R + r] - shift);
    out[r] = std::log(s) + shift;
  }
}

// d[r] = g[r] * exp(v[r] - lse_safe[r]) for one row of R values, tiny values flushed; pass lse = -inf as +inf
// (a column with no mass) so that its gradient is exactly 0 instead of NaN.
template <typename T>
inline void softmax_grad_row(const T* g, const T* v, const T* lse_safe, T* d, int64_t R) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  int64_t r = 0;
  for (; r + W <= R; r += W) {
    flush_tiny(Vec::loadu(g + r) * (Vec::loadu(v + r) - Vec::loadu(lse_safe + r)).exp()).store(d + r);
  }
  for (; r < R; ++r) d[r] = flush_tiny(g[r] * std::exp(v[r] - lse_safe[r]));
}

}  // namespace fastair
