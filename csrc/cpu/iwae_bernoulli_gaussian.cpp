// The fused k-sample bound: x [B, D], logits [k, B, D], z [k, B, Z], mu and logvar [B, Z].
// Forward: log_w [k, B] in one pass over the logits, then bound [B] = logsumexp_k - log k.
// Backward: G = dloss/dlog_w [k, B] from the gradients of the bound and of log_w (the
// normalized importance weights), then one pass over the logits writes dlogits.
#include "common.h"

namespace fastair {

namespace {

// log N(z; 0, I) - log N(z; mu, var) = 1/2 sum_j ((z - mu) inv_std)^2 + logvar - z^2 (log 2 pi
// cancels), inv_std = exp(-logvar / 2): z - mu of the scale of the std gives a finite first term
// even where (z - mu)^2 or 1 / var alone overflows (float32 logvar of +-100); a z^2 that
// overflows makes the ratio -inf, its true sign (never +inf or NaN).
template <typename T>
inline T gaussian_ratio_row(const T* z, const T* mu, const T* logvar, const T* inv_std, int64_t Z) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec acc(T(0));
  int64_t j = 0;
  for (; j + W <= Z; j += W) {
    const Vec zv = Vec::loadu(z + j);
    const Vec t = (zv - Vec::loadu(mu + j)) * Vec::loadu(inv_std + j);
    acc = acc + (t * t + Vec::loadu(logvar + j) - zv * zv);
  }
  T s = reduce_sum(acc);
  for (; j < Z; ++j) {
    const T t = (z[j] - mu[j]) * inv_std[j];
    s += t * t + logvar[j] - z[j] * z[j];
  }
  return T(0.5) * s;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> iwae_bernoulli_gaussian_fwd(const at::Tensor& x,
                                                               const at::Tensor& logits,
                                                               const at::Tensor& z,
                                                               const at::Tensor& mu,
                                                               const at::Tensor& logvar) {
  const int64_t K = logits.size(0), B = logits.size(1), D = logits.size(2), Z = z.size(2);
  auto log_w = at::empty({K, B}, z.options());
  auto lse = at::empty({B}, z.options());
  const auto inv_std = at::exp(logvar * -0.5);
  dispatch_pair(logits.scalar_type(), z.scalar_type(), "iwae_bernoulli_gaussian_fwd",
                [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t *xp = x.const_data_ptr<acc_t>(), *zp = z.const_data_ptr<acc_t>();
    const acc_t *mp = mu.const_data_ptr<acc_t>(), *lp = logvar.const_data_ptr<acc_t>();
    const acc_t* ip = inv_std.const_data_ptr<acc_t>();
    acc_t* w = log_w.data_ptr<acc_t>();
    parallel_for(0, K * B, grain_for(D + Z), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row % B;
        w[row] = bernoulli_row<scalar_t, acc_t>(l + row * D, xp + b * D, D) +
                 gaussian_ratio_row<acc_t>(zp + row * Z, mp + b * Z, lp + b * Z, ip + b * Z, Z);
      }
    });
    acc_t* o = lse.data_ptr<acc_t>();
    constexpr int64_t VW = Vectorized<acc_t>::size();
    const int64_t blocks = (B + VW - 1) / VW;
    const acc_t log_k = std::log(static_cast<acc_t>(K));
    parallel_for(0, blocks, grain_for(K * VW), [&](int64_t begin, int64_t end) {
      const int64_t r0 = begin * VW, r1 = std::min(B, end * VW);
      logsumexp_columns(w, o, K, B, r0, r1);
      for (int64_t r = r0; r < r1; ++r) o[r] -= log_k;  // -inf stays -inf
    });
  });
  return {log_w, lse};
}

namespace {

// G[k, b] = grad_log_w[k, b] + grad_bound[b] * exp(log_w[k, b] - lse[b]), lse = bound + log k,
// the weight 0 where the bound is not finite (exp(+inf) * 0 stays NaN, as in the reference).
at::Tensor importance_gradient(const std::optional<at::Tensor>& grad_bound,
                               const std::optional<at::Tensor>& grad_log_w,
                               const at::Tensor& log_w, const at::Tensor& bound) {
  const int64_t K = log_w.size(0), B = log_w.size(1);
  auto G = at::empty({K, B}, log_w.options());
  AT_DISPATCH_FLOATING_TYPES(log_w.scalar_type(), "iwae_bernoulli_gaussian_weights", [&] {
    const scalar_t* lw = log_w.const_data_ptr<scalar_t>();
    const scalar_t* bd = bound.const_data_ptr<scalar_t>();
    const scalar_t* gb = grad_bound ? grad_bound->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gl = grad_log_w ? grad_log_w->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* g = G.data_ptr<scalar_t>();
    const scalar_t log_k = std::log(static_cast<scalar_t>(K));
    parallel_for(0, K * B, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row % B;
        scalar_t v = 0;
        if (gb != nullptr) {
          const bool finite = std::isfinite(bd[b]);
          const scalar_t w = std::exp(lw[row] - (finite ? bd[b] + log_k : scalar_t(0)));
          v = w * (finite ? scalar_t(1) : scalar_t(0)) * gb[b];
        }
        if (gl != nullptr) v += gl[row];
        g[row] = flush_tiny(v);  // weights below 2^-100 of the total: exactly 0 (common.h)
      }
    });
  });
  return G;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> iwae_bernoulli_gaussian_bwd(
    const std::optional<at::Tensor>& grad_bound, const std::optional<at::Tensor>& grad_log_w,
    const at::Tensor& log_w, const at::Tensor& bound, const at::Tensor& x,
    const at::Tensor& logits, const at::Tensor& z, const at::Tensor& mu,
    const at::Tensor& logvar) {
  const int64_t K = logits.size(0), B = logits.size(1), D = logits.size(2), Z = z.size(2);
  const auto G = importance_gradient(grad_bound, grad_log_w, log_w, bound);
  auto dlogits = at::empty_like(logits);
  auto dz = at::empty_like(z);
  auto dmu = at::empty_like(mu);
  auto dlogvar = at::empty_like(logvar);
  const auto inv_std = at::exp(logvar * -0.5);
  dispatch_pair(logits.scalar_type(), z.scalar_type(), "iwae_bernoulli_gaussian_bwd",
                [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t *g = G.const_data_ptr<acc_t>(), *xp = x.const_data_ptr<acc_t>();
    const acc_t *zp = z.const_data_ptr<acc_t>(), *mp = mu.const_data_ptr<acc_t>();
    const acc_t* ip = inv_std.const_data_ptr<acc_t>();
    scalar_t* dl = dlogits.data_ptr<scalar_t>();
    acc_t *dzp = dz.data_ptr<acc_t>(), *dmp = dmu.data_ptr<acc_t>(), *dlp = dlogvar.data_ptr<acc_t>();
    // dlogits = G (x - sigmoid(l)); dz = G ((z - mu) / var - z), row by row; with
    // t = (z - mu) inv_std, (z - mu) / var is t inv_std (finite where 1 / var is not).
    parallel_for(0, K * B, grain_for(D + Z), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row % B;
        bernoulli_grad_row<scalar_t, acc_t>(g[row], l + row * D, xp + b * D, dl + row * D, D);
        for (int64_t j = 0; j < Z; ++j) {
          const acc_t zv = zp[row * Z + j], is = ip[b * Z + j];
          dzp[row * Z + j] = g[row] * ((zv - mp[b * Z + j]) * is * is - zv);
        }
      }
    });
    // dmu = sum_k G (mu - z) / var = -sum_k G t inv_std; dlogvar = sum_k G (1 - t^2) / 2.
    parallel_for(0, B, grain_for(K * Z), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t j = 0; j < Z; ++j) {
          acc_t sm = 0, sl = 0;
          const acc_t m = mp[b * Z + j], is = ip[b * Z + j];
          for (int64_t k = 0; k < K; ++k) {
            const acc_t gk = g[k * B + b], t = (zp[(k * B + b) * Z + j] - m) * is;
            sm -= gk * t * is;
            sl += gk * (acc_t(1) - t * t);
          }
          dmp[b * Z + j] = sm;
          dlp[b * Z + j] = acc_t(0.5) * sl;
        }
      }
    });
  });
  return {dlogits, dz, dmu, dlogvar};
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("iwae_bernoulli_gaussian_fwd(Tensor x, Tensor logits, Tensor z, Tensor mu, "
        "Tensor logvar) -> (Tensor, Tensor)");
  m.def("iwae_bernoulli_gaussian_bwd(Tensor? grad_bound, Tensor? grad_log_w, Tensor log_w, "
        "Tensor bound, Tensor x, Tensor logits, Tensor z, Tensor mu, Tensor logvar) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("iwae_bernoulli_gaussian_fwd", &fastair::iwae_bernoulli_gaussian_fwd);
  m.impl("iwae_bernoulli_gaussian_bwd", &fastair::iwae_bernoulli_gaussian_bwd);
}
