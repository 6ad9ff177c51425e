// The decoder's output layer fused with the continuous Bernoulli term, for h [R, H], weight [D, H],
// bias [D], x [N, D] (row r of h pairs with row r % N of x):
//   out[r] = sum_d (x_d - 1/2) l_d - log(sinh(l_d/2) / (l_d/2)),  l = h[r] @ weight^T + bias,
//   dl = g (x - mean(l))                                           (continuous_bernoulli.h).
// The tiled kernel, generic over the likelihood, is linear_head.h (which says how the logits are
// made a tile at a time and never stored); this file gives it the continuous Bernoulli term.
#include "continuous_bernoulli.h"
#include "linear_head.h"

namespace fastair {

namespace {
struct ContinuousBernoulliHead {
  static constexpr bool kLogvar = false;
  template <typename acc_t>
  struct Rows {
    const acc_t* x;
    int64_t D;
    Rows(const at::Tensor& x, const at::Tensor&, int64_t D)
        : x(x.const_data_ptr<acc_t>()), D(D) {}
    acc_t value(const acc_t* l, int64_t n) const {
      return cb::cb_row<acc_t, acc_t>(l, x + n * D, D);
    }
    void grad(acc_t g, acc_t* l, int64_t n, acc_t*) const {
      cb::cb_grad_row<acc_t, acc_t>(g, l, x + n * D, l, D);
    }
  };
};
}  // namespace

at::Tensor linear_continuous_bernoulli_log_prob_fwd(const at::Tensor& h, const at::Tensor& weight,
                                                    const c10::optional<at::Tensor>& bias,
                                                    const at::Tensor& x) {
  return linear_head::fwd<ContinuousBernoulliHead>(h, weight, bias, x, at::Tensor(),
                                                   "linear_continuous_bernoulli_log_prob_fwd");
}

// -> (dh [R, H], dweight [D, H], dbias [D]) for the upstream gradient grad [R].
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_continuous_bernoulli_log_prob_bwd(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  auto out = linear_head::bwd<ContinuousBernoulliHead>(grad, h, weight, bias, x, at::Tensor(),
                                                       "linear_continuous_bernoulli_log_prob_bwd");
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("linear_continuous_bernoulli_log_prob_fwd(Tensor h, Tensor weight, Tensor? bias, "
        "Tensor x) -> Tensor");
  m.def("linear_continuous_bernoulli_log_prob_bwd(Tensor grad, Tensor h, Tensor weight, "
        "Tensor? bias, Tensor x) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("linear_continuous_bernoulli_log_prob_fwd",
         &fastair::linear_continuous_bernoulli_log_prob_fwd);
  m.impl("linear_continuous_bernoulli_log_prob_bwd",
         &fastair::linear_continuous_bernoulli_log_prob_bwd);
}
