// The fused k-sample bound: x [B, D], logits [k, B, D], z [k, B, Z], mu and logvar [B, Z].
// Forward: log_w [k, B] in one pass over the logits, then lse [B] over k.
// Backward: from G = dloss/dlog_w [k, B], one pass over the logits writes dlogits.
#include "common.h"

namespace fastair {

namespace {

// log N(z; 0, I) - log N(z; mu, var) = 1/2 sum_j (z - mu)^2 / var + logvar - z^2 (log 2 pi cancels).
template <typename T>
inline T gaussian_ratio_row(const T* z, const T* mu, const T* logvar, const T* inv_var, int64_t Z) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec acc(T(0));
  int64_t j = 0;
  for (; j + W <= Z; j += W) {
    const Vec zv = Vec::loadu(z + j), diff = zv - Vec::loadu(mu + j);
    acc = acc + (diff * diff * Vec::loadu(inv_var + j) + Vec::loadu(logvar + j) - zv * zv);
  }
  T s = reduce_sum(acc);
  for (; j < Z; ++j) s += (z[j] - mu[j]) * (z[j] - mu[j]) * inv_var[j] + logvar[j] - z[j] * z[j];
  return T(0.5) * s;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> iwae_bg_fwd(const at::Tensor& x, const at::Tensor& logits,
                                               const at::Tensor& z, const at::Tensor& mu,
                                               const at::Tensor& logvar) {
  const int64_t K = logits.size(0), B = logits.size(1), D = logits.size(2), Z = z.size(2);
  auto log_w = at::empty({K, B}, z.options());
  auto lse = at::empty({B}, z.options());
  const auto inv_var = at::exp(-logvar);
  dispatch_pair(logits.scalar_type(), z.scalar_type(), "iwae_bg_fwd", [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t *xp = x.const_data_ptr<acc_t>(), *zp = z.const_data_ptr<acc_t>();
    const acc_t *mp = mu.const_data_ptr<acc_t>(), *lp = logvar.const_data_ptr<acc_t>();
    const acc_t* ip = inv_var.const_data_ptr<acc_t>();
    acc_t* w = log_w.data_ptr<acc_t>();
    at::parallel_for(0, K * B, grain_for(D + Z), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row % B;
        w[row] = bernoulli_row<scalar_t, acc_t>(l + row * D, xp + b * D, D) +
                 gaussian_ratio_row<acc_t>(zp + row * Z, mp + b * Z, lp + b * Z, ip + b * Z, Z);
      }
    });
    acc_t* o = lse.data_ptr<acc_t>();
    constexpr int64_t VW = Vectorized<acc_t>::size();
    const int64_t blocks = (B + VW - 1) / VW;
    at::parallel_for(0, blocks, grain_for(K * VW), [&](int64_t begin, int64_t end) {
      logsumexp_columns(w, o, K, B, begin * VW, std::min(B, end * VW));
    });
  });
  return {log_w, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> iwae_bg_bwd(
    const at::Tensor& G, const at::Tensor& x, const at::Tensor& logits, const at::Tensor& z,
    const at::Tensor& mu, const at::Tensor& logvar) {
  const int64_t K = logits.size(0), B = logits.size(1), D = logits.size(2), Z = z.size(2);
  auto dlogits = at::empty_like(logits);
  auto dz = at::empty_like(z);
  auto dmu = at::empty_like(mu);
  auto dlogvar = at::empty_like(logvar);
  const auto inv_var = at::exp(-logvar);
  dispatch_pair(logits.scalar_type(), z.scalar_type(), "iwae_bg_bwd", [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const scalar_t* l = logits.const_data_ptr<scalar_t>();
    const acc_t *g = G.const_data_ptr<acc_t>(), *xp = x.const_data_ptr<acc_t>();
    const acc_t *zp = z.const_data_ptr<acc_t>(), *mp = mu.const_data_ptr<acc_t>();
    const acc_t* ip = inv_var.const_data_ptr<acc_t>();
    scalar_t* dl = dlogits.data_ptr<scalar_t>();
    acc_t *dzp = dz.data_ptr<acc_t>(), *dmp = dmu.data_ptr<acc_t>(), *dlp = dlogvar.data_ptr<acc_t>();
    // dlogits = G (x - sigmoid(l)); dz = G ((z - mu) / var - z), row by row.
    at::parallel_for(0, K * B, grain_for(D + Z), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row % B;
        bernoulli_grad_row<scalar_t, acc_t>(g[row], l + row * D, xp + b * D, dl + row * D, D);
        for (int64_t j = 0; j < Z; ++j) {
          const acc_t zv = zp[row * Z + j];
          dzp[row * Z + j] = g[row] * ((zv - mp[b * Z + j]) * ip[b * Z + j] - zv);
        }
      }
    });
    // dmu = sum_k G (mu - z) / var; dlogvar = sum_k G (1 - (z - mu)^2 / var) / 2, per example.
    at::parallel_for(0, B, grain_for(K * Z), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t j = 0; j < Z; ++j) {
          acc_t sm = 0, sl = 0;
          const acc_t m = mp[b * Z + j], iv = ip[b * Z + j];
          for (int64_t k = 0; k < K; ++k) {
            const acc_t gk = g[k * B + b], diff = zp[(k * B + b) * Z + j] - m;
            sm -= gk * diff * iv;
            sl += gk * (acc_t(1) - diff * diff * iv);
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
  m.def("iwae_bg_fwd(Tensor x, Tensor logits, Tensor z, Tensor mu, Tensor logvar) -> (Tensor, Tensor)");
  m.def("iwae_bg_bwd(Tensor G, Tensor x, Tensor logits, Tensor z, Tensor mu, Tensor logvar) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("iwae_bg_fwd", &fastair::iwae_bg_fwd);
  m.impl("iwae_bg_bwd", &fastair::iwae_bg_bwd);
}
