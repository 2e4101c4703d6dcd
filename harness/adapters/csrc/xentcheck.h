/*
 * xentcheck.h - the C functions xentcheck binds from a C adapter.
 *
 * A C adapter is a C file (or a shared library built from one) that defines any subset of
 * the functions below.  Load it with
 *
 *     xentcheck run --adapter c:path/to/file.c      (or c:path/to/libfile.so)
 *
 * xentcheck compiles a .c file on first use with the system compiler ($CC, else cc/gcc/clang)
 * as `-O2 -fPIC -shared` (no -ffast-math), with this header's folder on the include path so
 * that `#include "xentcheck.h"` works, and caches the library under
 * $XDG_CACHE_HOME/xentcheck (or ~/.cache/xentcheck).  It binds only the names it finds, so
 * a file that defines just xc_softmax is an adapter that provides just softmax; a library
 * that defines none of them is refused with a clear error.
 *
 * Conventions shared by every function:
 *   - arrays are dense, row-major (C order): logits, probs, targets and gradients are
 *     n rows of k entries; a Jacobian is n blocks of k*k entries, block r holding
 *     d p_i / d z_j of row r at [r*k*k + i*k + j];
 *   - class-index targets are int64_t, one per row, valid in [0, k);
 *   - the functions without a suffix take double, those with `_f32` take float
 *     (define either or both; xentcheck declares the dtypes whose symbols exist);
 *   - every function returns int: XC_OK (0) on success, any other value makes xentcheck
 *     raise (an out-of-range class index or a negative probability should be refused this
 *     way rather than given a silent finite answer);
 *   - inputs are never written; outputs are fully written on success;
 *   - cross-entropy values are per row (no reduction); gradients are of the sum over rows.
 */
#ifndef XENTCHECK_H
#define XENTCHECK_H

#include <stdint.h>

#define XC_OK 0
#define XC_EINDEX 1   /* a class index outside [0, k) */
#define XC_EPROB 2    /* a negative probability or target mass */
#define XC_ENOMEM 3   /* scratch memory could not be allocated */
#define XC_EARG 4     /* n or k negative */

#ifdef __cplusplus
extern "C" {
#endif

/* out[r] = log sum_j exp(logits[r, j]) */
int xc_logsumexp(const double *logits, double *out, int64_t n, int64_t k);
int xc_logsumexp_f32(const float *logits, float *out, int64_t n, int64_t k);

/* out[r, j] = exp(logits[r, j]) / sum_i exp(logits[r, i]) */
int xc_softmax(const double *logits, double *out, int64_t n, int64_t k);
int xc_softmax_f32(const float *logits, float *out, int64_t n, int64_t k);

/* out[r, j] = logits[r, j] - logsumexp(logits[r, :]) */
int xc_log_softmax(const double *logits, double *out, int64_t n, int64_t k);
int xc_log_softmax_f32(const float *logits, float *out, int64_t n, int64_t k);

/* out[r] = -log softmax(logits[r, :])[target[r]]   (class indices) */
int xc_cross_entropy(const double *logits, const int64_t *target, double *out,
                     int64_t n, int64_t k);
int xc_cross_entropy_f32(const float *logits, const int64_t *target, float *out,
                         int64_t n, int64_t k);

/* out[r] = -sum_j target[r, j] * log softmax(logits[r, :])[j]   (probabilities, any sum;
 * a zero target entry contributes 0 even where the logit is -inf) */
int xc_cross_entropy_probs(const double *logits, const double *target, double *out,
                           int64_t n, int64_t k);
int xc_cross_entropy_probs_f32(const float *logits, const float *target, float *out,
                               int64_t n, int64_t k);

/* grad[r, j] = softmax(logits[r, :])[j] - (j == target[r])   (fused, class indices) */
int xc_cross_entropy_grad(const double *logits, const int64_t *target, double *grad,
                          int64_t n, int64_t k);
int xc_cross_entropy_grad_f32(const float *logits, const int64_t *target, float *grad,
                              int64_t n, int64_t k);

/* grad[r, j] = (sum_i target[r, i]) * softmax(logits[r, :])[j] - target[r, j]
 * (fused, probabilities; equals p - y only when the targets of a row sum to 1) */
int xc_cross_entropy_grad_probs(const double *logits, const double *target, double *grad,
                                int64_t n, int64_t k);
int xc_cross_entropy_grad_probs_f32(const float *logits, const float *target, float *grad,
                                    int64_t n, int64_t k);

/* jac[r, i, j] = p_i * (delta_ij - p_j) with p = softmax(logits[r, :]) */
int xc_softmax_jacobian(const double *logits, double *jac, int64_t n, int64_t k);
int xc_softmax_jacobian_f32(const float *logits, float *jac, int64_t n, int64_t k);

/* out[r] = -sum_j target[r, j] * log probs[r, j]   (the unfused route; 0 * log 0 = 0) */
int xc_cross_entropy_from_probs(const double *probs, const double *target, double *out,
                                int64_t n, int64_t k);
int xc_cross_entropy_from_probs_f32(const float *probs, const float *target, float *out,
                                    int64_t n, int64_t k);

/* grad[r, j] = -target[r, j] / probs[r, j]   (d out[r] / d probs[r, j]; 0 where target is 0) */
int xc_cross_entropy_grad_wrt_probs(const double *probs, const double *target, double *grad,
                                    int64_t n, int64_t k);
int xc_cross_entropy_grad_wrt_probs_f32(const float *probs, const float *target, float *grad,
                                        int64_t n, int64_t k);

/*
 * The seed's function, with exactly the seed's signature: given one row of softmax output
 * p and a one-hot integer target row y (length entries each), it writes p - y, which is
 * the derivative of the cross-entropy with respect to the LOGITS (not the probabilities).
 * xentcheck exposes it as the adapter attribute `softmax_cross_entropy_loss_derivative`
 * and, composed with a softmax, as the `c-seed` adapter's cross_entropy_grad.
 */
void softmax_cross_entropy_loss_derivative(double *softmax_output, int *target,
                                           double *derivative, int length);

#ifdef __cplusplus
}
#endif

#endif /* XENTCHECK_H */
