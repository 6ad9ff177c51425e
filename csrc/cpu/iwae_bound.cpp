// The k-sample bound of log weights over the first dim: v [n, R] -> bound [R],
//   bound[r] = lse[r] - log n,  lse[r] = log sum_i exp(v[i, r]),
// returned with lse (what the backward reads), and its backward, the softmax over the first dim.
#include "common.h"

namespace fastair {

// -> (bound [R], lse [R]); a column of -inf gives -inf for both.
std::tuple<at::Tensor, at::Tensor> iwae_bound_fwd(const at::Tensor& v) {
  const int64_t n = v.size(0), R = v.size(1);
  auto bound = at::empty({R}, v.options());
  auto lse = at::empty({R}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "iwae_bound_fwd", [&] {
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    scalar_t *bp = bound.data_ptr<scalar_t>(), *lp = lse.data_ptr<scalar_t>();
    // log n in double rounded once to scalar_t, as torch subtracts a Python float from a tensor
    const scalar_t log_n = static_cast<scalar_t>(std::log(static_cast<double>(n)));
    constexpr int64_t W = Vectorized<scalar_t>::size();
    const int64_t blocks = (R + W - 1) / W;
    parallel_for(0, blocks, grain_for(n * W), [&](int64_t begin, int64_t end) {
      const int64_t r0 = begin * W, r1 = std::min(R, end * W);
      logsumexp_columns(vp, lp, n, R, r0, r1);
      for (int64_t r = r0; r < r1; ++r) bp[r] = lp[r] - log_n;  // -inf stays -inf
    });
  });
  return {bound, lse};
}

// dv[i, r] = grad[r] * exp(v[i, r] - lse[r]), 0 where lse[r] = -inf.
at::Tensor iwae_bound_bwd(const at::Tensor& grad, const at::Tensor& v, const at::Tensor& lse) {
  const int64_t n = v.size(0), R = v.size(1);
  auto dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "iwae_bound_bwd", [&] {
    const auto inf = std::numeric_limits<scalar_t>::infinity();
    const auto lse_safe = at::where(lse == -inf, at::full({}, inf, lse.options()), lse);
    const scalar_t *g = grad.const_data_ptr<scalar_t>(), *vp = v.const_data_ptr<scalar_t>();
    const scalar_t* lp = lse_safe.const_data_ptr<scalar_t>();
    scalar_t* d = dv.data_ptr<scalar_t>();
    parallel_for(0, n, grain_for(R), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) softmax_grad_row(g, vp + i * R, lp, d + i * R, R);
    });
  });
  return dv;
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("iwae_bound_fwd(Tensor v) -> (Tensor, Tensor)");
  m.def("iwae_bound_bwd(Tensor grad, Tensor v, Tensor lse) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("iwae_bound_fwd", &fastair::iwae_bound_fwd);
  m.impl("iwae_bound_bwd", &fastair::iwae_bound_bwd);
}
