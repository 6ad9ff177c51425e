// Diagonal Gaussian log-density: z [M, N, Z], mu and logvar [N, Z] -> [M, N], and its backward.
#include "common.h"

namespace fastair {

namespace {
constexpr double kLog2Pi = 1.8378770664093454835606594728112;
}

at::Tensor gaussian_log_prob_fwd(const at::Tensor& z, const at::Tensor& mu,
                                 const at::Tensor& logvar) {
  const int64_t M = z.size(0), N = z.size(1), Z = z.size(2);
  auto out = at::empty({M, N}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "gaussian_log_prob_fwd", [&] {
    using Vec = Vectorized<scalar_t>;
    constexpr int64_t W = Vec::size();
    // ((z - mu) inv_std)^2 with inv_std = exp(-logvar / 2): finite for z - mu of the scale of
    // the std even where (z - mu)^2 or 1 / var alone leaves the float range (logvar of +-100).
    const auto inv_std = at::exp(logvar * -0.5);
    const scalar_t *zp = z.const_data_ptr<scalar_t>(), *mp = mu.const_data_ptr<scalar_t>();
    const scalar_t *lp = logvar.const_data_ptr<scalar_t>(), *ip = inv_std.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t log2pi = static_cast<scalar_t>(kLog2Pi);
    parallel_for(0, M * N, grain_for(Z), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t *zr = zp + row * Z, *mr = mp + (row % N) * Z;
        const scalar_t *lr = lp + (row % N) * Z, *ir = ip + (row % N) * Z;
        Vec acc(scalar_t(0));
        int64_t j = 0;
        for (; j + W <= Z; j += W) {
          const Vec t = (Vec::loadu(zr + j) - Vec::loadu(mr + j)) * Vec::loadu(ir + j);
          acc = acc + (t * t + Vec::loadu(lr + j));
        }
        scalar_t s = reduce_sum(acc);
        for (; j < Z; ++j) {
          const scalar_t t = (zr[j] - mr[j]) * ir[j];
          s += t * t + lr[j];
        }
        o[row] = scalar_t(-0.5) * (s + static_cast<scalar_t>(Z) * log2pi);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gaussian_log_prob_bwd(const at::Tensor& grad,
                                                                     const at::Tensor& z,
                                                                     const at::Tensor& mu,
                                                                     const at::Tensor& logvar) {
  const int64_t M = z.size(0), N = z.size(1), Z = z.size(2);
  auto dz = at::empty_like(z);
  auto dmu = at::empty_like(mu);
  auto dlogvar = at::empty_like(logvar);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "gaussian_log_prob_bwd", [&] {
    const auto inv_std = at::exp(logvar * -0.5);  // as in the forward
    const scalar_t *g = grad.const_data_ptr<scalar_t>(), *zp = z.const_data_ptr<scalar_t>();
    const scalar_t *mp = mu.const_data_ptr<scalar_t>(), *ip = inv_std.const_data_ptr<scalar_t>();
    scalar_t *dzp = dz.data_ptr<scalar_t>(), *dmp = dmu.data_ptr<scalar_t>();
    scalar_t* dlp = dlogvar.data_ptr<scalar_t>();
    // One pass over z, a thread per block of n (the examples): for each of the M rows that pair
    // with n, t = (z - mu) inv_std, dz = -g t inv_std written at once, and the sums
    // dmu = sum_m g t inv_std and sum_m g t^2 kept in dmu and dlogvar's rows (contiguous, so the
    // row-major sweep of z stays in cache); dlogvar = (sum_m g t^2 - sum_m g) / 2 at the end.
    parallel_for(0, N, grain_for(M * Z), [&](int64_t begin, int64_t end) {
      using Vec = Vectorized<scalar_t>;
      constexpr int64_t W = Vec::size();
      for (int64_t n = begin; n < end; ++n) {
        const scalar_t *mr = mp + n * Z, *ir = ip + n * Z;
        scalar_t *sm = dmp + n * Z, *sl = dlp + n * Z;
        std::fill(sm, sm + Z, scalar_t(0));
        std::fill(sl, sl + Z, scalar_t(0));
        scalar_t gsum = 0;
        for (int64_t row = n; row < M * N; row += N) {
          const scalar_t gr = g[row];
          gsum += gr;
          const scalar_t* zr = zp + row * Z;
          scalar_t* dzr = dzp + row * Z;
          const Vec gv(gr);
          int64_t j = 0;
          for (; j + W <= Z; j += W) {
            const Vec is = Vec::loadu(ir + j);
            const Vec t = (Vec::loadu(zr + j) - Vec::loadu(mr + j)) * is;
            const Vec gt = gv * t;
            const Vec d = gt * is;
            (Vec(scalar_t(0)) - d).store(dzr + j);
            (Vec::loadu(sm + j) + d).store(sm + j);
            (Vec::loadu(sl + j) + gt * t).store(sl + j);
          }
          for (; j < Z; ++j) {
            const scalar_t t = (zr[j] - mr[j]) * ir[j];
            const scalar_t d = gr * t * ir[j];
            dzr[j] = -d;
            sm[j] += d;
            sl[j] += gr * t * t;
          }
        }
        for (int64_t j = 0; j < Z; ++j) sl[j] = scalar_t(0.5) * (sl[j] - gsum);
      }
    });
  });
  return {dz, dmu, dlogvar};
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("gaussian_log_prob_fwd(Tensor z, Tensor mu, Tensor logvar) -> Tensor");
  m.def("gaussian_log_prob_bwd(Tensor grad, Tensor z, Tensor mu, Tensor logvar) -> "
        "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("gaussian_log_prob_fwd", &fastair::gaussian_log_prob_fwd);
  m.impl("gaussian_log_prob_bwd", &fastair::gaussian_log_prob_bwd);
}
