// Log-sum-exp over the first dim: v [n, R] -> [R], and its softmax backward.
#include "common.h"

namespace fastair {

at::Tensor logsumexp_fwd(const at::Tensor& v) {
  const int64_t n = v.size(0), R = v.size(1);
  auto out = at::empty({R}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "logsumexp_fwd", [&] {
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    constexpr int64_t W = Vectorized<scalar_t>::size();
    const int64_t blocks = (R + W - 1) / W;
    parallel_for(0, blocks, grain_for(n * W), [&](int64_t begin, int64_t end) {
      logsumexp_columns(vp, o, n, R, begin * W, std::min(R, end * W));
    });
  });
  return out;
}

at::Tensor logsumexp_bwd(const at::Tensor& grad, const at::Tensor& v, const at::Tensor& lse) {
  const int64_t n = v.size(0), R = v.size(1);
  auto dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "logsumexp_bwd", [&] {
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
  m.def("logsumexp_fwd(Tensor v) -> Tensor");
  m.def("logsumexp_bwd(Tensor grad, Tensor v, Tensor lse) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("logsumexp_fwd", &fastair::logsumexp_fwd);
  m.impl("logsumexp_bwd", &fastair::logsumexp_bwd);
}
