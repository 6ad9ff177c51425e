// The decoder's output layer fused with the Gaussian log-density of the data, for h [R, H],
// weight [D, H], bias [D], x [N, D] and logvar [NL, D], NL = N or 1 (row r of h pairs with row
// n = r % N of x and row n % NL of logvar: one shared row is read as it is, never expanded),
// with the mean m = h[r] @ weight^T + bias:
//   out[r] = -1/2 sum_d t_d^2 + logvar_d + log 2 pi,  t = (x - m) exp(-logvar / 2),
//   dm = g t exp(-logvar / 2),  dlogvar[n] += g (t^2 - 1) / 2.
// The tiled kernel, generic over the likelihood, is linear_head.h: the means are made a tile of
// rows at a time and never stored; dlogvar is summed per thread in an [NL, D] buffer of the
// accumulation type, the threads' buffers added at the end.
#include "linear_head.h"

namespace fastair {

namespace {
constexpr double kLog2Pi = 1.8378770664093454835606594728112;

struct GaussianHead {
  static constexpr bool kLogvar = true;
  template <typename acc_t>
  struct Rows {
    using Vec = Vectorized<acc_t>;
    static constexpr int64_t W = Vec::size();
    // ((x - m) inv_std)^2 with inv_std = exp(-logvar / 2), made once per call: finite for
    // x - m of the scale of the std even where (x - m)^2 or 1 / var alone leaves the float
    // range (as gaussian_log_prob.cpp)
    at::Tensor inv_std_;
    const acc_t *x, *lv, *is;
    int64_t D, NL;
    Rows(const at::Tensor& x, const at::Tensor& logvar, int64_t D)
        : inv_std_(at::exp(logvar * -0.5).contiguous()),
          x(x.const_data_ptr<acc_t>()),
          lv(logvar.const_data_ptr<acc_t>()),
          is(inv_std_.const_data_ptr<acc_t>()),
          D(D),
          NL(logvar.size(0)) {}

    // the logvar row of x's row n (one shared row where NL = 1)
    int64_t lrow(int64_t n) const { return NL == 1 ? 0 : n; }

    acc_t value(const acc_t* m, int64_t n) const {
      const acc_t *xr = x + n * D, *lr = lv + lrow(n) * D, *ir = is + lrow(n) * D;
      Vec acc0(acc_t(0)), acc1(acc_t(0));
      int64_t d = 0;
      for (; d + 2 * W <= D; d += 2 * W) {
        const Vec t0 = (Vec::loadu(xr + d) - Vec::loadu(m + d)) * Vec::loadu(ir + d);
        const Vec t1 = (Vec::loadu(xr + d + W) - Vec::loadu(m + d + W)) * Vec::loadu(ir + d + W);
        acc0 = acc0 + (t0 * t0 + Vec::loadu(lr + d));
        acc1 = acc1 + (t1 * t1 + Vec::loadu(lr + d + W));
      }
      for (; d + W <= D; d += W) {
        const Vec t = (Vec::loadu(xr + d) - Vec::loadu(m + d)) * Vec::loadu(ir + d);
        acc0 = acc0 + (t * t + Vec::loadu(lr + d));
      }
      acc_t s = reduce_sum(acc0 + acc1);
      for (; d < D; ++d) {
        const acc_t t = (xr[d] - m[d]) * ir[d];
        s += t * t + lr[d];
      }
      return acc_t(-0.5) * (s + static_cast<acc_t>(D) * static_cast<acc_t>(kLog2Pi));
    }

    // m -> g t inv_std in place (tiny values flushed, flush_tiny), dlogvar += g (t^2 - 1) / 2
    // (dlogvar: the row of the [NL, D] buffer that x's row n pairs with, lrow(n))
    void grad(acc_t g, acc_t* m, int64_t n, acc_t* dlogvar) const {
      const acc_t *xr = x + n * D, *ir = is + lrow(n) * D;
      const Vec gv(g), hg(acc_t(0.5) * g), one(acc_t(1));
      int64_t d = 0;
      for (; d + W <= D; d += W) {
        const Vec inv = Vec::loadu(ir + d);
        const Vec t = (Vec::loadu(xr + d) - Vec::loadu(m + d)) * inv;
        flush_tiny(gv * t * inv).store(m + d);
        (Vec::loadu(dlogvar + d) + hg * (t * t - one)).store(dlogvar + d);
      }
      for (; d < D; ++d) {
        const acc_t t = (xr[d] - m[d]) * ir[d];
        m[d] = flush_tiny(g * t * ir[d]);
        dlogvar[d] += acc_t(0.5) * g * (t * t - acc_t(1));
      }
    }
  };
};
}  // namespace

at::Tensor linear_gaussian_log_prob_fwd(const at::Tensor& h, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias, const at::Tensor& x,
                                        const at::Tensor& logvar) {
  return linear_head::fwd<GaussianHead>(h, weight, bias, x, logvar,
                                        "linear_gaussian_log_prob_fwd");
}

// -> (dh [R, H], dweight [D, H], dbias [D], dlogvar [NL, D]) for the upstream gradient grad [R].
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_gaussian_log_prob_bwd(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& x, const at::Tensor& logvar) {
  return linear_head::bwd<GaussianHead>(grad, h, weight, bias, x, logvar,
                                        "linear_gaussian_log_prob_bwd");
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("linear_gaussian_log_prob_fwd(Tensor h, Tensor weight, Tensor? bias, Tensor x, "
        "Tensor logvar) -> Tensor");
  m.def("linear_gaussian_log_prob_bwd(Tensor grad, Tensor h, Tensor weight, Tensor? bias, "
        "Tensor x, Tensor logvar) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("linear_gaussian_log_prob_fwd", &fastair::linear_gaussian_log_prob_fwd);
  m.impl("linear_gaussian_log_prob_bwd", &fastair::linear_gaussian_log_prob_bwd);
}
