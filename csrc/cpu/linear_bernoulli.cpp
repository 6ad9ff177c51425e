// The decoder's output layer fused with the Bernoulli term, for h [R, H], weight [D, H], bias [D],
// x [N, D] (row r of h pairs with row r % N of x):
//   out[r] = sum_d x_d l_d - softplus(l_d),  l = h[r] @ weight^T + bias.
// The [R, D] logits are never stored: rows go in tiles of kTile, each thread making one tile's
// logits in its own [kTile, D] buffer (a single-threaded GEMM by ATen inside the parallel
// region), then the Bernoulli term in place. One parallel region per call, so a busy machine
// does not stall the op at every tile. The backward remakes each tile's logits, turns them into
// dlogits in the same buffer, writes dh for the tile and accumulates dweight and dbias per
// thread, summed at the end.
#include <c10/core/GradMode.h>

#include "common.h"

namespace fastair {

namespace {
constexpr int64_t kTile = 256;

// logits of rows [r0, r0 + n) into buf[:n]
inline at::Tensor tile_logits(const at::Tensor& h, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, const at::Tensor& buf,
                              int64_t r0, int64_t n) {
  auto out = buf.narrow(0, 0, n);
  const auto rows = h.narrow(0, r0, n);
  if (bias.has_value()) {
    at::addmm_out(out, *bias, rows, weight.t());
  } else {
    at::mm_out(out, rows, weight.t());
  }
  return out;
}

// Calls f(thread, r0, n) for every tile of rows, the tiles spread over the threads.
template <typename F>
void parallel_tiles(int64_t R, F&& f) {
  const int64_t tiles = (R + kTile - 1) / kTile;
  parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    // Worker threads start with autograd on; the ATen calls below work on plain buffers.
    c10::AutoGradMode no_grad(false);
    const int64_t thread = at::get_thread_num();
    for (int64_t t = begin; t < end; ++t) f(thread, t * kTile, std::min(kTile, R - t * kTile));
  });
}
}  // namespace

at::Tensor linear_bernoulli_fwd(const at::Tensor& h, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  const int64_t R = h.size(0), D = weight.size(0), N = x.size(0);
  auto out = at::empty({R}, x.options());
  auto bufs = at::empty({at::get_num_threads(), std::min(kTile, R), D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_bernoulli_fwd", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_tiles(R, [&](int64_t thread, int64_t r0, int64_t n) {
      const scalar_t* l = tile_logits(h, weight, bias, bufs[thread], r0, n).const_data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        o[r0 + i] = bernoulli_row<scalar_t, scalar_t>(l + i * D, xp + ((r0 + i) % N) * D, D);
      }
    });
  });
  return out;
}

// -> (dh [R, H], dweight [D, H], dbias [D]) for the upstream gradient grad [R].
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_bernoulli_bwd(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  const int64_t R = h.size(0), D = weight.size(0), N = x.size(0);
  const int64_t threads = at::get_num_threads();
  auto dh = at::empty_like(h);
  auto dweights = at::zeros({threads, D, weight.size(1)}, weight.options());
  auto dbiases = at::zeros({threads, D}, weight.options());
  auto bufs = at::empty({threads, std::min(kTile, R), D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_bernoulli_bwd", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *g = grad.const_data_ptr<scalar_t>();
    parallel_tiles(R, [&](int64_t thread, int64_t r0, int64_t n) {
      auto tile = tile_logits(h, weight, bias, bufs[thread], r0, n);
      scalar_t* l = tile.data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {  // logits -> dlogits, in place
        bernoulli_grad_row<scalar_t, scalar_t>(g[r0 + i], l + i * D, xp + ((r0 + i) % N) * D,
                                               l + i * D, D);
      }
      auto dh_rows = dh.narrow(0, r0, n);
      at::mm_out(dh_rows, tile, weight);
      dweights[thread].addmm_(tile.t(), h.narrow(0, r0, n));
      dbiases[thread].add_(tile.sum(0));
    });
  });
  return {dh, dweights.sum(0), dbiases.sum(0)};
}

}  // namespace fastair

// This file's operators, registered with the library fastair_native when it is loaded.
TORCH_LIBRARY_FRAGMENT(fastair_native, m) {
  m.def("linear_bernoulli_fwd(Tensor h, Tensor weight, Tensor? bias, Tensor x) -> Tensor");
  m.def("linear_bernoulli_bwd(Tensor grad, Tensor h, Tensor weight, Tensor? bias, Tensor x) -> "
        "(Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastair_native, CPU, m) {
  m.impl("linear_bernoulli_fwd", &fastair::linear_bernoulli_fwd);
  m.impl("linear_bernoulli_bwd", &fastair::linear_bernoulli_bwd);
}
