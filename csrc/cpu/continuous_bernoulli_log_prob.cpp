// Continuous Bernoulli log-density from logits: logits [M, N, D], x [N, D] -> [M, N], and its
// backward. The per-element maths (a series near l = 0, a closed form elsewhere) is in
// continuous_bernoulli.h, shared with the fused decoder head.
#include "continuous_bernoulli.h"

namespace fastair {

at::Tensor continuous_bernoulli_log_prob_fwd(const at::Tensor& logits, const at::Tensor& x) {
  const int64_t M = logits.size(0), N = logits.size(1), D = logits.size(2);
  auto out = at::empty({M, N}, x.options());
  dispatch_pair(logits.scalar_type(), x.scalar_type(), "continuous_bernoulli_log_prob_fwd",
                [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t* xp = x.const_data_ptr<acc_t>();
    acc_t* o = out.data_ptr<acc_t>();
    parallel_for(0, M * N, grain_for(D), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        o[row] = cb::cb_row<scalar_t, acc_t>(l + row * D, xp + (row % N) * D, D);
      }
    });
  });
  return out;
}

at::Tensor continuous_bernoulli_log_prob_bwd(const at::Tensor& grad, const at::Tensor& logits,
                                             const at::Tensor& x) {
  const int64_t M = logits.size(0), N = logits.size(1), D = logits.size(2);
  auto dlogits = at::empty_like(logits);
  dispatch_pair(logits.scalar_type(), x.scalar_type(), "continuous_bernoulli_log_prob_bwd",
                [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t* xp = x.const_data_ptr<acc_t>();
    const acc_t* g = grad.const_data_ptr<acc_t>();
    scalar_t* dl = dlogits.data_ptr<scalar_t>();
    parallel_for(0, M * N, grain_for(D), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        cb::cb_grad_row<scalar_t, acc_t>(g[row], l + row * D, xp + (row % N) * D, dl + row * D, D);
      }
    });
  });
  return dlogits;
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("continuous_bernoulli_log_prob_fwd(Tensor logits, Tensor x) -> Tensor");
  m.def("continuous_bernoulli_log_prob_bwd(Tensor grad, Tensor logits, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("continuous_bernoulli_log_prob_fwd", &fastair::continuous_bernoulli_log_prob_fwd);
  m.impl("continuous_bernoulli_log_prob_bwd", &fastair::continuous_bernoulli_log_prob_bwd);
}
