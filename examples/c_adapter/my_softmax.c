/*
 * my_softmax.c - a user's C adapter for xentcheck: softmax and cross-entropy, double only.
 *
 *     xentcheck run --adapter c:examples/c_adapter/my_softmax.c
 *
 * xentcheck compiles this file on first use and binds the functions of xentcheck.h that it
 * defines (here xc_softmax and xc_cross_entropy); the rest are reported as not provided.
 * The algorithm is the textbook one: shift each row by its maximum, exponentiate, sum.
 */
#include <math.h>

#include "xentcheck.h"

static double row_max(const double *z, int64_t k)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < k; j++) {
        m = z[j] > m ? z[j] : m;
    }
    return m;
}

int xc_softmax(const double *logits, double *out, int64_t n, int64_t k)
{
    for (int64_t r = 0; r < n; r++) {
        const double *z = logits + r * k;
        double *p = out + r * k;
        double m = row_max(z, k), sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            p[j] = exp(z[j] - m);
            sum += p[j];
        }
        for (int64_t j = 0; j < k; j++) {
            p[j] /= sum;
        }
    }
    return XC_OK;
}

int xc_cross_entropy(const double *logits, const int64_t *target, double *out, int64_t n,
                     int64_t k)
{
    for (int64_t r = 0; r < n; r++) {
        const double *z = logits + r * k;
        if (target[r] < 0 || target[r] >= k) {
            return XC_EINDEX; /* xentcheck raises: refusing is the conformant answer */
        }
        double m = row_max(z, k), sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            sum += exp(z[j] - m);
        }
        out[r] = log(sum) - (z[target[r]] - m); /* -log p_t = log sum - (z_t - m) */
    }
    return XC_OK;
}
