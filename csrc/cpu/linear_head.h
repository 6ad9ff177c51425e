// The decoder's output layer fused with a likelihood term, for h [R, H], weight [D, H], bias [D],
// x [N, D] (row r of h pairs with row r % N of x) and, for the Gaussian, logvar [NL, D]
// (NL = N, or 1: one row shared by every row of x):
//   out[r] = sum_d term(l_d, x_d),  l = h[r] @ weight^T + bias,
// generic over the likelihood (a policy, below): Bernoulli (linear_bernoulli_log_prob.cpp),
// continuous Bernoulli (linear_continuous_bernoulli_log_prob.cpp) and Gaussian
// (linear_gaussian_log_prob.cpp).
// The [R, D] logits are never stored: rows go in tiles (kTile rows, more in bfloat16/float16),
// each thread making one tile's product h @ weight^T in its own [tile, D] buffer (a
// single-threaded GEMM by ATen inside the parallel region), then, row by row, the bias and the
// likelihood term in the accumulation type. One parallel region per call, so a busy machine
// does not stall the op at every tile. The backward remakes each tile's product, turns it into
// dlogits in the same buffer (summing dbias on the way, and for the Gaussian the log-variance's
// gradient into the thread's own [N, D] buffer), writes dh for the tile and accumulates the
// weight's gradient per thread; the per-thread sums are added at the end.
//
// h and weight come in one dtype: float32 or float64 (x, the bias's copy and the result in the
// same), or bfloat16/float16 with x and the result in float32. In a reduced dtype the tiles'
// GEMMs run in that dtype (the CPU's bf16 matrix units where it has them) and the product is
// rounded to it, as autocast's Linear rounds its output; the bias is added in float32, the
// likelihood term and its gradient are float32, dh comes out in h's dtype, and the tiles' weight
// and bias gradients are summed in float32 before the final cast.
//
// A likelihood policy Lik has
//   static constexpr bool kLogvar;  // reads logvar [NL, D] and returns its gradient
//   template <typename acc_t> struct Rows {
//     Rows(const at::Tensor& x, const at::Tensor& logvar, int64_t D);  // outside the parallel
//                                                                      // region (may allocate)
//     acc_t value(const acc_t* l, int64_t n) const;  // sum_d term over one row of logits l,
//                                                    // paired with x row n
//     void grad(acc_t g, acc_t* l, int64_t n, acc_t* dlogvar) const;
//         // l -> g * dterm/dl in place; with kLogvar, dlogvar[:D] += g * dterm/dlogvar
//   };
#pragma once

#include <c10/core/GradMode.h>

#include <tuple>

#include "common.h"

namespace fastair {
namespace linear_head {

constexpr int64_t kTile = 256;
// bfloat16/float16 tiles are taller: a reduced-precision GEMM call (oneDNN, AMX) repacks its
// weight operand each time, which small tiles pay for over and over; each thread still gets
// tiles of its own.
constexpr int64_t kReducedTile = 1024;

inline int64_t tile_rows(const at::Tensor& h) {
  if (h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble) return kTile;
  const int64_t threads = at::get_num_threads();
  return std::max(kTile, std::min(kReducedTile, (h.size(0) + threads - 1) / threads));
}

// h[r0:r0+n] @ weight^T into buf[:n]
inline at::Tensor tile_product(const at::Tensor& h, const at::Tensor& weight,
                               const at::Tensor& buf, int64_t r0, int64_t n) {
  auto out = buf.narrow(0, 0, n);
  at::mm_out(out, h.narrow(0, r0, n), weight.t());
  return out;
}

// the bias in the accumulation type (x's), zeros without one: [D]
inline at::Tensor bias_acc(const c10::optional<at::Tensor>& bias, const at::Tensor& x,
                           int64_t D) {
  return bias.has_value() ? bias->to(x.scalar_type()).contiguous() : at::zeros({D}, x.options());
}

// out[:D] = l[:D] widened to acc_t plus the bias b[:D] (out may alias l when the types agree)
template <typename scalar_t, typename acc_t>
inline void widen_add_bias(const scalar_t* l, const acc_t* b, acc_t* out, int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  int64_t d = 0;
  for (; d + W <= D; d += W) (load_as<scalar_t, acc_t>(l + d) + Vec::loadu(b + d)).store(out + d);
  for (; d < D; ++d) out[d] = static_cast<acc_t>(l[d]) + b[d];
}

// db[:D] += r[:D] and out[:D] = r[:D] in scalar_t (out may alias r when the types agree)
template <typename scalar_t, typename acc_t>
inline void accumulate_narrow(const acc_t* r, acc_t* db, scalar_t* out, int64_t D) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  int64_t d = 0;
  if constexpr (kReducedToFloat<scalar_t, acc_t>) {
    for (; d + 2 * W <= D; d += 2 * W) {
      const Vec r0 = Vec::loadu(r + d), r1 = Vec::loadu(r + d + W);
      (Vec::loadu(db + d) + r0).store(db + d);
      (Vec::loadu(db + d + W) + r1).store(db + d + W);
      at::vec::convert_from_float<scalar_t>(r0, r1).store(out + d);
    }
  } else if constexpr (std::is_same_v<scalar_t, acc_t>) {
    for (; d + W <= D; d += W) {
      const Vec r0 = Vec::loadu(r + d);
      (Vec::loadu(db + d) + r0).store(db + d);
      r0.store(out + d);
    }
  }
  for (; d < D; ++d) {
    db[d] += r[d];
    out[d] = static_cast<scalar_t>(r[d]);
  }
}

// Calls f(thread, r0, n) for every tile of rows, the tiles spread over the threads.
template <typename F>
void parallel_tiles(int64_t R, int64_t tile, F&& f) {
  const int64_t tiles = (R + tile - 1) / tile;
  parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    // Worker threads start with autograd on; the ATen calls below work on plain buffers.
    c10::AutoGradMode no_grad(false);
    const int64_t thread = at::get_thread_num();
    for (int64_t t = begin; t < end; ++t) f(thread, t * tile, std::min(tile, R - t * tile));
  });
}

// -> out [R] in x's dtype. logvar: [N, D] in x's dtype where Lik::kLogvar, else ignored.
template <typename Lik>
at::Tensor fwd(const at::Tensor& h, const at::Tensor& weight,
               const c10::optional<at::Tensor>& bias, const at::Tensor& x,
               const at::Tensor& logvar, const char* name) {
  const int64_t R = h.size(0), D = weight.size(0), N = x.size(0);
  const int64_t threads = at::get_num_threads(), tile = tile_rows(h);
  auto out = at::empty({R}, x.options());
  auto bufs = at::empty({threads, std::min(tile, R), D}, h.options());
  auto rows = at::empty({threads, D}, x.options());  // one row's logits in the accumulation type
  const auto b = bias_acc(bias, x, D);
  dispatch_pair(h.scalar_type(), x.scalar_type(), name, [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const typename Lik::template Rows<acc_t> lik(x, logvar, D);
    const acc_t* bp = b.const_data_ptr<acc_t>();
    acc_t* o = out.data_ptr<acc_t>();
    parallel_tiles(R, tile, [&](int64_t thread, int64_t r0, int64_t n) {
      const scalar_t* l = tile_product(h, weight, bufs[thread], r0, n).const_data_ptr<scalar_t>();
      acc_t* row = rows[thread].data_ptr<acc_t>();
      for (int64_t i = 0; i < n; ++i) {
        widen_add_bias<scalar_t, acc_t>(l + i * D, bp, row, D);
        o[r0 + i] = lik.value(row, (r0 + i) % N);
      }
    });
  });
  return out;
}

// -> (dh [R, H], dweight [D, H], dbias [D], dlogvar [NL, D] or an undefined tensor without
// Lik::kLogvar) for the upstream gradient grad [R].
template <typename Lik>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& x, const at::Tensor& logvar,
    const char* name) {
  const int64_t R = h.size(0), D = weight.size(0), H = weight.size(1), N = x.size(0);
  const int64_t threads = at::get_num_threads(), tile = tile_rows(h);
  const bool reduced = h.scalar_type() != x.scalar_type();  // bf16/fp16 in, float32 sums
  auto dh = at::empty_like(h);
  // the weight's gradient transposed, [H, D] = h^T dlogits: the GEMM that reads the tile as it
  // is laid out (dlogits^T h transposes it: about 1.4x slower in bfloat16)
  auto dweights_t = at::zeros({threads, H, D}, x.options());
  auto dbiases = at::zeros({threads, D}, x.options());
  // the log-variance's gradient, per thread (summed at the end: no two threads add to one row)
  // (logvar [NL, D]: NL = N, or 1 for one row shared by all rows of x)
  const int64_t NL = Lik::kLogvar ? logvar.size(0) : 0;
  at::Tensor dlogvars = Lik::kLogvar ? at::zeros({threads, NL, D}, x.options()) : at::Tensor();
  auto bufs = at::empty({threads, std::min(tile, R), D}, h.options());
  auto rows = at::empty({threads, D}, x.options());
  auto products = reduced ? at::empty({threads, H, D}, weight.options()) : at::Tensor();
  const auto b = bias_acc(bias, x, D);
  dispatch_pair(h.scalar_type(), x.scalar_type(), name, [&](auto ltag, auto atag) {
    using scalar_t = typename decltype(ltag)::type;
    using acc_t = typename decltype(atag)::type;
    const typename Lik::template Rows<acc_t> lik(x, logvar, D);
    const acc_t* g = grad.const_data_ptr<acc_t>();
    const acc_t* bp = b.const_data_ptr<acc_t>();
    acc_t* dlv_base = Lik::kLogvar ? dlogvars.data_ptr<acc_t>() : nullptr;
    parallel_tiles(R, tile, [&](int64_t thread, int64_t r0, int64_t n) {
      auto product = tile_product(h, weight, bufs[thread], r0, n);
      scalar_t* l = product.data_ptr<scalar_t>();
      acc_t* row = rows[thread].data_ptr<acc_t>();
      acc_t* db = dbiases[thread].data_ptr<acc_t>();
      acc_t* dlv = Lik::kLogvar ? dlv_base + thread * NL * D : nullptr;
      for (int64_t i = 0; i < n; ++i) {  // product -> dlogits, in place
        widen_add_bias<scalar_t, acc_t>(l + i * D, bp, row, D);
        const int64_t xr = (r0 + i) % N;
        lik.grad(g[r0 + i], row, xr, Lik::kLogvar ? dlv + (NL == 1 ? 0 : xr) * D : nullptr);
        accumulate_narrow<scalar_t, acc_t>(row, db, l + i * D, D);
      }
      auto dh_rows = dh.narrow(0, r0, n);
      at::mm_out(dh_rows, product, weight);
      const auto h_rows_t = h.narrow(0, r0, n).t();
      if (reduced) {
        auto partial = products[thread];
        at::mm_out(partial, h_rows_t, product);
        dweights_t[thread].add_(partial);
      } else {
        dweights_t[thread].addmm_(h_rows_t, product);
      }
    });
  });
  const auto bias_type = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
  auto dweight = at::empty({D, H}, weight.options());  // transposed and cast in one copy
  dweight.t().copy_(threads == 1 ? dweights_t[0] : dweights_t.sum(0));
  auto dbias = (threads == 1 ? dbiases[0] : dbiases.sum(0)).to(bias_type);
  at::Tensor dlogvar;
  if (Lik::kLogvar) dlogvar = threads == 1 ? dlogvars[0] : dlogvars.sum(0);
  return {dh, dweight, dbias, dlogvar};
}

}  // namespace linear_head
}  // namespace fastair
