/* train_kern.c: the numerical kernels of the training engine (train_impl.h's tr_kern) in
 * float (moe_train_kern_f32: sgemm, the engine) and double (moe_train_kern_f64: dgemm, for the
 * gradient checks), from the one body in train_kern.h: gate logits (gate.h's fixed order), expert rows (gather or
 * dense dispatch GEMM), expert FFN forward and backward through BLAS GEMMs, activations and
 * their derivatives (float: GELU vectorised, see train_kern.h), combine and its backward, MSE, the gate-weight gradient GEMM, SGD/Adam. */
#include "train_impl.h"

#include "layer.h"
#include "gate.h"

#include <gsl/gsl_cblas.h>
#include <math.h>
#include <string.h>

#define R float
#define FN(name) name##_f32
#define GEMM cblas_sgemm
#define GATE moe_gate_logits
#define EXP expf
#define TANH tanhf
#define ERF erff
#define SQRT sqrtf
#define KERN moe_train_kern_f32
#define FAST_GELU 1
#include "train_kern.h"
#undef R
#undef FN
#undef GEMM
#undef GATE
#undef EXP
#undef TANH
#undef ERF
#undef SQRT
#undef KERN
#undef FAST_GELU

#define R double
#define FN(name) name##_f64
#define GEMM cblas_dgemm
#define GATE moe_gate_logits_d
#define EXP exp
#define TANH tanh
#define ERF erf
#define SQRT sqrt
#define KERN moe_train_kern_f64
#define FAST_GELU 0
#include "train_kern.h"
