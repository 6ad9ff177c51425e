// Capped weight norm (WNI) over the rows of v [O, I]: w_i = s_i v_i with n_i = ||v_i||,
// c_i = H sigmoid(u_i), s_i = 1 if n_i <= c_i else c_i / n_i. One pass over each row forward
// (norm, then scale while the row is in cache) and one backward (dot, then gradient).
#include "common.h"

namespace fastair {

namespace {

template <typename scalar_t, typename acc_t>
inline acc_t dot_row(const scalar_t* a, const scalar_t* b, int64_t n) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  Vec acc0(acc_t(0)), acc1(acc_t(0));
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    acc0 = at::vec::fmadd(load_as<scalar_t, acc_t>(a + i), load_as<scalar_t, acc_t>(b + i), acc0);
    acc1 = at::vec::fmadd(load_as<scalar_t, acc_t>(a + i + W),
                          load_as<scalar_t, acc_t>(b + i + W), acc1);
  }
  acc_t s = reduce_sum(acc0 + acc1);
  for (; i < n; ++i) s += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  return s;
}

// out = alpha * a + beta * b over a row (beta = 0 reads no b).
template <typename scalar_t, typename acc_t>
inline void axpby_row(acc_t alpha, const scalar_t* a, acc_t beta, const scalar_t* b,
                      scalar_t* out, int64_t n) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const Vec va(alpha), vb(beta);
  int64_t i = 0;
  if (beta == acc_t(0)) {
    for (; i + W <= n; i += W) store_as<scalar_t, acc_t>(va * load_as<scalar_t, acc_t>(a + i), out + i);
    for (; i < n; ++i) out[i] = static_cast<scalar_t>(alpha * static_cast<acc_t>(a[i]));
    return;
  }
  for (; i + W <= n; i += W) {
    store_as<scalar_t, acc_t>(
        at::vec::fmadd(vb, load_as<scalar_t, acc_t>(b + i), va * load_as<scalar_t, acc_t>(a + i)),
        out + i);
  }
  for (; i < n; ++i) {
    out[i] = static_cast<scalar_t>(alpha * static_cast<acc_t>(a[i]) + beta * static_cast<acc_t>(b[i]));
  }
}

}  // namespace

// -> (w [O, I] in v's dtype, norm [O] in u's dtype, the accumulation dtype)
std::tuple<at::Tensor, at::Tensor> capped_weight_norm_fwd(const at::Tensor& v, const at::Tensor& u,
                                                          double H) {
  const int64_t O = v.size(0), I = v.size(1);
  auto w = at::empty_like(v);
  auto norm = at::empty({O}, u.options());
  dispatch_pair(v.scalar_type(), u.scalar_type(), "capped_weight_norm_fwd", [&](auto vtag, auto atag) {
    using scalar_t = typename decltype(vtag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    const acc_t* up = u.const_data_ptr<acc_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    acc_t* np = norm.data_ptr<acc_t>();
    parallel_for(0, O, grain_for(I), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const acc_t n = std::sqrt(dot_row<scalar_t, acc_t>(vp + i * I, vp + i * I, I));
        const acc_t cap = static_cast<acc_t>(H) * sigmoid(up[i]);
        np[i] = n;
        axpby_row<scalar_t, acc_t>(n <= cap ? acc_t(1) : cap / n, vp + i * I, acc_t(0), nullptr,
                                   wp + i * I, I);
      }
    });
  });
  return {w, norm};
}

// dv = dw where the cap is inactive, else (c/n) (dw - v (v.dw) / n^2);
// du = (v.dw / n) H sigmoid(u) (1 - sigmoid(u)) where active, else 0.
std::tuple<at::Tensor, at::Tensor> capped_weight_norm_bwd(const at::Tensor& grad_w,
                                                          const at::Tensor& v, const at::Tensor& u,
                                                          const at::Tensor& norm, double H) {
  const int64_t O = v.size(0), I = v.size(1);
  auto dv = at::empty_like(v);
  auto du = at::empty_like(u);
  dispatch_pair(v.scalar_type(), u.scalar_type(), "capped_weight_norm_bwd", [&](auto vtag, auto atag) {
    using scalar_t = typename decltype(vtag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t *gp = grad_w.const_data_ptr<scalar_t>(), *vp = v.const_data_ptr<scalar_t>();
    const acc_t *up = u.const_data_ptr<acc_t>(), *np = norm.const_data_ptr<acc_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    acc_t* dup = du.data_ptr<acc_t>();
    parallel_for(0, O, grain_for(I), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const acc_t n = np[i], sig = sigmoid(up[i]), cap = static_cast<acc_t>(H) * sig;
        if (n <= cap) {
          axpby_row<scalar_t, acc_t>(acc_t(1), gp + i * I, acc_t(0), nullptr, dvp + i * I, I);
          dup[i] = 0;
          continue;
        }
        const acc_t dot = dot_row<scalar_t, acc_t>(vp + i * I, gp + i * I, I);
        const acc_t scale = cap / n;
        axpby_row<scalar_t, acc_t>(scale, gp + i * I, -scale * dot / (n * n), vp + i * I,
                                   dvp + i * I, I);
        dup[i] = dot / n * cap * (acc_t(1) - sig);
      }
    });
  });
  return {dv, du};
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("capped_weight_norm_fwd(Tensor v, Tensor u, float H) -> (Tensor, Tensor)");
  m.def("capped_weight_norm_bwd(Tensor grad_w, Tensor v, Tensor u, Tensor norm, float H) -> "
        "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("capped_weight_norm_fwd", &fastair::capped_weight_norm_fwd);
  m.impl("capped_weight_norm_bwd", &fastair::capped_weight_norm_bwd);
}
