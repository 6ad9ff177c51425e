// The decoder's output layer fused with the Bernoulli term, for h [R, H], weight [D, H], bias [D],
// x [N, D] (row r of h pairs with row r % N of x):
//   out[r] = sum_d x_d l_d - softplus(l_d),  l = h[r] @ weight^T + bias.
// The [R, D] logits are never stored: rows are processed in tiles of kTile whose logits live in
// one [kTile, D] buffer (a GEMM by ATen, then the Bernoulli term in place); the backward
// recomputes each tile's logits and turns them into dlogits in the same buffer.
#include "common.h"

namespace fastair {

namespace {
constexpr int64_t kTile = 256;

template <typename F>
void for_each_tile(int64_t R, F&& f) {
  for (int64_t r0 = 0; r0 < R; r0 += kTile) f(r0, std::min(kTile, R - r0));
}

// logits of rows [r0, r0 + n) into buf[:n]
inline at::Tensor tile_logits(const at::Tensor& h, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, at::Tensor& buf, int64_t r0,
                              int64_t n) {
  auto out = buf.narrow(0, 0, n);
  const auto rows = h.narrow(0, r0, n);
  if (bias.has_value()) {
    at::addmm_out(out, *bias, rows, weight.t());
  } else {
    at::mm_out(out, rows, weight.t());
  }
  return out;
}
}  // namespace

at::Tensor linear_bernoulli_fwd(const at::Tensor& h, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  const int64_t R = h.size(0), D = weight.size(0), N = x.size(0);
  auto out = at::empty({R}, x.options());
  auto buf = at::empty({std::min(kTile, R), D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_bernoulli_fwd", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_tile(R, [&](int64_t r0, int64_t n) {
      const scalar_t* l = tile_logits(h, weight, bias, buf, r0, n).const_data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(D), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          o[r0 + i] = bernoulli_row<scalar_t, scalar_t>(l + i * D, xp + ((r0 + i) % N) * D, D);
        }
      });
    });
  });
  return out;
}

// -> (dh [R, H], dweight [D, H], dbias [D]) for the upstream gradient grad [R].
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_bernoulli_bwd(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& x) {
  const int64_t R = h.size(0), D = weight.size(0), N = x.size(0);
  auto dh = at::empty_like(h);
  auto dweight = at::zeros_like(weight);
  auto dbias = at::zeros({D}, weight.options());
  auto buf = at::empty({std::min(kTile, R), D}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_bernoulli_bwd", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *g = grad.const_data_ptr<scalar_t>();
    for_each_tile(R, [&](int64_t r0, int64_t n) {
      auto tile = tile_logits(h, weight, bias, buf, r0, n);
      scalar_t* l = tile.data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(D), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {  // logits -> dlogits, in place
          bernoulli_grad_row<scalar_t, scalar_t>(g[r0 + i], l + i * D,
                                                 xp + ((r0 + i) % N) * D, l + i * D, D);
        }
      });
      auto dh_rows = dh.narrow(0, r0, n);
      at::mm_out(dh_rows, tile, weight);
      dweight.addmm_(tile.t(), h.narrow(0, r0, n));
      dbias.add_(tile.sum(0));
    });
  });
  return {dh, dweight, dbias};
}

}  // namespace fastair
