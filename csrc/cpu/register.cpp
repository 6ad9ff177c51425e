// Registers the CPU kernels as the operators fastair_native::* (see fastair/backends/native.py).
#include <torch/library.h>

#include "common.h"

namespace fastair {
at::Tensor bernoulli_fwd(const at::Tensor&, const at::Tensor&);
at::Tensor bernoulli_bwd(const at::Tensor&, const at::Tensor&, const at::Tensor&);
at::Tensor gaussian_fwd(const at::Tensor&, const at::Tensor&, const at::Tensor&);
std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_bwd(const at::Tensor&, const at::Tensor&,
                                                            const at::Tensor&, const at::Tensor&);
at::Tensor logsumexp_fwd(const at::Tensor&);
at::Tensor logsumexp_bwd(const at::Tensor&, const at::Tensor&, const at::Tensor&);
std::tuple<at::Tensor, at::Tensor> iwae_bg_fwd(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> iwae_bg_bwd(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&);
std::tuple<at::Tensor, at::Tensor> capped_weight_norm_fwd(const at::Tensor&, const at::Tensor&,
                                                          double);
std::tuple<at::Tensor, at::Tensor> capped_weight_norm_bwd(const at::Tensor&, const at::Tensor&,
                                                          const at::Tensor&, const at::Tensor&,
                                                          double);
at::Tensor linear_bernoulli_fwd(const at::Tensor&, const at::Tensor&,
                                const c10::optional<at::Tensor>&, const at::Tensor&);
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_bernoulli_bwd(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
    const at::Tensor&);
}  // namespace fastair

TORCH_LIBRARY(fastair_native, m) {
  m.def("bernoulli_fwd(Tensor logits, Tensor x) -> Tensor");
  m.def("bernoulli_bwd(Tensor grad, Tensor logits, Tensor x) -> Tensor");
  m.def("gaussian_fwd(Tensor z, Tensor mu, Tensor logvar) -> Tensor");
  m.def("gaussian_bwd(Tensor grad, Tensor z, Tensor mu, Tensor logvar) -> (Tensor, Tensor, Tensor)");
  m.def("logsumexp_fwd(Tensor v) -> Tensor");
  m.def("logsumexp_bwd(Tensor grad, Tensor v, Tensor lse) -> Tensor");
  m.def("iwae_bg_fwd(Tensor x, Tensor logits, Tensor z, Tensor mu, Tensor logvar) -> (Tensor, Tensor)");
  m.def("iwae_bg_bwd(Tensor G, Tensor x, Tensor logits, Tensor z, Tensor mu, Tensor logvar) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
  m.def("capped_weight_norm_fwd(Tensor v, Tensor u, float H) -> (Tensor, Tensor)");
  m.def("capped_weight_norm_bwd(Tensor grad_w, Tensor v, Tensor u, Tensor norm, float H) -> "
        "(Tensor, Tensor)");
  m.def("linear_bernoulli_fwd(Tensor h, Tensor weight, Tensor? bias, Tensor x) -> Tensor");
  m.def("linear_bernoulli_bwd(Tensor grad, Tensor h, Tensor weight, Tensor? bias, Tensor x) -> "
        "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("bernoulli_fwd", &fastair::bernoulli_fwd);
  m.impl("bernoulli_bwd", &fastair::bernoulli_bwd);
  m.impl("gaussian_fwd", &fastair::gaussian_fwd);
  m.impl("gaussian_bwd", &fastair::gaussian_bwd);
  m.impl("logsumexp_fwd", &fastair::logsumexp_fwd);
  m.impl("logsumexp_bwd", &fastair::logsumexp_bwd);
  m.impl("iwae_bg_fwd", &fastair::iwae_bg_fwd);
  m.impl("iwae_bg_bwd", &fastair::iwae_bg_bwd);
  m.impl("capped_weight_norm_fwd", &fastair::capped_weight_norm_fwd);
  m.impl("capped_weight_norm_bwd", &fastair::capped_weight_norm_bwd);
  m.impl("linear_bernoulli_fwd", &fastair::linear_bernoulli_fwd);
  m.impl("linear_bernoulli_bwd", &fastair::linear_bernoulli_bwd);
}
