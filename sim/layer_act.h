/* layer_act.h: the MoE layer's elementwise float kernels on one row (layer_act.c): bias +
 * activation, SwiGLU, axpy, in vectorised loops; each element is computed on its own, so a
 * row's result does not depend on how rows are split over threads.
 */
#ifndef MOE_LAYER_ACT_H
#define MOE_LAYER_ACT_H

#include <stddef.h>

/* v (len) = act(v + b); act < 0: bias only (not SwiGLU: see moe_act_swiglu_row). */
void moe_act_bias(int act, float *restrict v, const float *restrict b, size_t len);
/* One SwiGLU row: g (F) = silu(g + bg) * (u + bu), u the up half (F) of the same row. */
void moe_act_swiglu_row(float *restrict g, const float *restrict u, const float *restrict bg,
                        const float *restrict bu, size_t f);
/* y (len) += a x (len) */
void moe_act_axpy(float a, const float *restrict x, float *restrict y, size_t len);
/* y (len) = 0 + a x (len): the bits of moe_act_axpy on a zeroed y (+0 where a x is -0), in one
 * pass that does not read y */
void moe_act_scale0(float a, const float *restrict x, float *restrict y, size_t len);

#endif
