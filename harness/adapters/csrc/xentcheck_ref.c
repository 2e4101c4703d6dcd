/*
 * xentcheck_ref.c - the built-in `c` adapter: a careful reference implementation of
 * softmax and cross-entropy in C, with the signatures of xentcheck.h.
 *
 * How it stays accurate (all arithmetic in `real`, long double: 64-bit significands on
 * x86-64, 113 on aarch64 Linux, plain double where the platform has nothing wider; inputs
 * are widened exactly and every output is rounded once at the end; the _f32 entry points
 * widen each row to double first):
 *   - every row is shifted by its maximum m, so exp never overflows and the maximal
 *     class contributes exactly 1;
 *   - the remaining exponentials are summed with Neumaier's compensated summation into
 *     s_rest, and log-sum-exp is m + log1p(s_rest): log1p keeps the dominant-class case
 *     (s_rest tiny) exact;
 *   - 1 - p_t is never formed by subtraction: it is the sum of the other exponentials
 *     divided by the total, so p_t - 1 has no cancellation;
 *   - cross-entropy is (sum y) * log1p(s_rest) + sum_j y_j (m - z_j), a sum of
 *     non-negative terms;
 *   - the soft-target gradient (sum y) p_j - y_j is (e_j Y_{!=j} - y_j S_{!=j}) / S, whose
 *     complements Y_{!=j}, S_{!=j} lose nothing to cancellation (the largest entry's is
 *     summed directly; any other entry is at most half the total); cancellation between
 *     the two products costs bits of long double, not of the double result, until it
 *     exceeds the extra bits (11 on x86-64).
 * Special values follow DESIGN.md section 4: a zero target entry contributes 0 even at a
 * -inf logit; a NaN anywhere in a row makes that row's outputs NaN; +inf logits give the
 * limit (one-hot over the +inf entries); an all -inf row has logsumexp -inf and NaN
 * elsewhere (undefined); an out-of-range class index or a negative probability is refused
 * with a nonzero status.
 */
#include <math.h>
#include <stdlib.h>

#include "xentcheck.h"

typedef long double real;
#define R_EXP expl
#define R_LOG logl
#define R_LOG1P log1pl
#define R_FABS fabsl

enum row_kind { ROW_FINITE, ROW_NAN, ROW_POSINF, ROW_ALL_NEGINF };

/* The row's maximum (first index of it) and what kind of row it is. */
static enum row_kind scan_row(const double *z, int64_t k, double *max_out, int64_t *imax_out)
{
    double m = -INFINITY;
    int64_t imax = 0;
    int has_nan = 0;
    for (int64_t j = 0; j < k; j++) {
        double v = z[j];
        if (isnan(v)) {
            has_nan = 1;
        } else if (v > m) {
            m = v;
            imax = j;
        }
    }
    *max_out = m;
    *imax_out = imax;
    if (has_nan) {
        return ROW_NAN;
    }
    if (m == INFINITY) {
        return ROW_POSINF;
    }
    if (m == -INFINITY) {
        return ROW_ALL_NEGINF;
    }
    return ROW_FINITE;
}

/* z_j - m; for rows with +inf logits the limit: 0 at the +inf entries, -inf elsewhere. */
static real shifted(double v, double m, enum row_kind kind)
{
    if (kind == ROW_POSINF) {
        return v == INFINITY ? 0.0L : -(real)INFINITY;
    }
    return (real)v - (real)m;
}

/* Neumaier's compensated sum; an infinite partial sum is kept as it is. */
typedef struct {
    real sum;
    real comp;
} nsum;

static void nsum_add(nsum *acc, real x)
{
    real t = acc->sum + x;
    if (isinf(t) || isnan(t)) {
        acc->sum = t;
        acc->comp = 0.0L;
        return;
    }
    if (R_FABS(acc->sum) >= R_FABS(x)) {
        acc->comp += (acc->sum - t) + x;
    } else {
        acc->comp += (x - t) + acc->sum;
    }
    acc->sum = t;
}

static real nsum_value(const nsum *acc)
{
    if (isinf(acc->sum) || isnan(acc->sum)) {
        return acc->sum;
    }
    return acc->sum + acc->comp;
}

/* Sum of exp(z_j - m) over j != skip. */
static real exp_sum_except(const double *z, int64_t k, double m, enum row_kind kind,
                           int64_t skip)
{
    nsum acc = {0.0L, 0.0L};
    for (int64_t j = 0; j < k; j++) {
        if (j != skip) {
            nsum_add(&acc, R_EXP(shifted(z[j], m, kind)));
        }
    }
    return nsum_value(&acc);
}

static void fill(double *out, int64_t count, double value)
{
    for (int64_t j = 0; j < count; j++) {
        out[j] = value;
    }
}

/* ---- row kernels: one row of k doubles in, results out; return an XC_ status ---- */

static int lse_row(const double *z, int64_t k, double *out)
{
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN) {
        *out = NAN;
    } else if (kind == ROW_ALL_NEGINF) {
        *out = -INFINITY;
    } else {
        *out = (double)((real)m + R_LOG1P(exp_sum_except(z, k, m, kind, imax)));
    }
    return XC_OK;
}

static int softmax_row(const double *z, int64_t k, double *p)
{
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        fill(p, k, NAN);
        return XC_OK;
    }
    real total = 1.0L + exp_sum_except(z, k, m, kind, imax);
    for (int64_t j = 0; j < k; j++) {
        p[j] = (double)(R_EXP(shifted(z[j], m, kind)) / total);
    }
    return XC_OK;
}

static int log_softmax_row(const double *z, int64_t k, double *l)
{
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        fill(l, k, NAN);
        return XC_OK;
    }
    real log_total = R_LOG1P(exp_sum_except(z, k, m, kind, imax));
    for (int64_t j = 0; j < k; j++) {
        l[j] = (double)(shifted(z[j], m, kind) - log_total);
    }
    return XC_OK;
}

static int ce_index_row(const double *z, int64_t t, int64_t k, double *out)
{
    if (t < 0 || t >= k) {
        return XC_EINDEX;
    }
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        *out = NAN;
        return XC_OK;
    }
    /* -log p_t = log1p(s_rest) + (m - z_t), both terms >= 0 */
    *out = (double)(R_LOG1P(exp_sum_except(z, k, m, kind, imax)) - shifted(z[t], m, kind));
    return XC_OK;
}

/* Checks a target row: XC_EPROB for a negative entry; *has_nan set for a NaN entry. */
static int check_targets(const double *y, int64_t k, int *has_nan)
{
    *has_nan = 0;
    for (int64_t j = 0; j < k; j++) {
        if (isnan(y[j])) {
            *has_nan = 1;
        } else if (y[j] < 0.0) {
            return XC_EPROB;
        }
    }
    return XC_OK;
}

static int ce_probs_row(const double *z, const double *y, int64_t k, double *out)
{
    int y_nan;
    int status = check_targets(y, k, &y_nan);
    if (status != XC_OK) {
        return status;
    }
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (y_nan || kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        *out = NAN;
        return XC_OK;
    }
    real log_total = R_LOG1P(exp_sum_except(z, k, m, kind, imax));
    nsum mass = {0.0L, 0.0L};
    nsum gap = {0.0L, 0.0L};
    for (int64_t j = 0; j < k; j++) {
        if (y[j] != 0.0) { /* 0 * log 0 = 0: a zero target entry adds nothing */
            nsum_add(&mass, y[j]);
            nsum_add(&gap, (real)y[j] * -shifted(z[j], m, kind));
        }
    }
    *out = (double)(nsum_value(&mass) * log_total + nsum_value(&gap));
    return XC_OK;
}

/* grad = p - onehot(t); the target entry is -(sum of the other exponentials) / total. */
static int grad_index_row(const double *z, int64_t t, int64_t k, double *g)
{
    if (t < 0 || t >= k) {
        return XC_EINDEX;
    }
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        fill(g, k, NAN);
        return XC_OK;
    }
    real s_rest = exp_sum_except(z, k, m, kind, imax);
    real total = 1.0L + s_rest;
    real others = (t == imax) ? s_rest : exp_sum_except(z, k, m, kind, t);
    for (int64_t j = 0; j < k; j++) {
        real value = (j == t) ? -(others / total) : R_EXP(shifted(z[j], m, kind)) / total;
        g[j] = (double)value;
    }
    return XC_OK;
}

/* grad_j = Y p_j - y_j = (e_j Y_{!=j} - y_j S_{!=j}) / S with Y = sum y, S = sum e. */
static int grad_probs_row(const double *z, const double *y, int64_t k, double *g)
{
    int y_nan;
    int status = check_targets(y, k, &y_nan);
    if (status != XC_OK) {
        return status;
    }
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (y_nan || kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        fill(g, k, NAN);
        return XC_OK;
    }
    real s_rest = exp_sum_except(z, k, m, kind, imax);
    real total = 1.0L + s_rest;
    int64_t ymax = 0;
    nsum mass = {0.0L, 0.0L};
    for (int64_t j = 0; j < k; j++) {
        nsum_add(&mass, y[j]);
        if (y[j] > y[ymax]) {
            ymax = j;
        }
    }
    real y_total = nsum_value(&mass);
    nsum rest = {0.0L, 0.0L};
    for (int64_t j = 0; j < k; j++) {
        if (j != ymax) {
            nsum_add(&rest, y[j]);
        }
    }
    real y_rest = nsum_value(&rest);
    for (int64_t j = 0; j < k; j++) {
        real e = R_EXP(shifted(z[j], m, kind));
        /* away from the maxima the complements are >= half the totals: no cancellation */
        real s_not = (j == imax) ? s_rest : total - e;
        real y_not = (j == ymax) ? y_rest : y_total - y[j];
        real num = e * y_not - (real)y[j] * s_not;
        g[j] = (double)(num / total);
    }
    return XC_OK;
}

/* p and 1 - p (the latter without cancellation) into p[0..k) and q[0..k). */
static void probs_and_complements(const double *z, int64_t k, real *p, real *q)
{
    double m;
    int64_t imax;
    enum row_kind kind = scan_row(z, k, &m, &imax);
    if (kind == ROW_NAN || kind == ROW_ALL_NEGINF) {
        for (int64_t j = 0; j < k; j++) {
            p[j] = q[j] = NAN;
        }
        return;
    }
    real s_rest = exp_sum_except(z, k, m, kind, imax);
    real total = 1.0L + s_rest;
    for (int64_t j = 0; j < k; j++) {
        real e = R_EXP(shifted(z[j], m, kind));
        p[j] = e / total;
        q[j] = ((j == imax) ? s_rest : total - e) / total;
    }
}

static int from_probs_row(const double *p, const double *y, int64_t k, double *out)
{
    int y_nan;
    int status = check_targets(y, k, &y_nan);
    if (status != XC_OK) {
        return status;
    }
    int p_nan;
    status = check_targets(p, k, &p_nan);
    if (status != XC_OK) {
        return status;
    }
    if (y_nan || p_nan) {
        *out = NAN;
        return XC_OK;
    }
    nsum acc = {0.0L, 0.0L};
    for (int64_t j = 0; j < k; j++) {
        if (y[j] != 0.0) {
            nsum_add(&acc, -((real)y[j] * R_LOG(p[j])));
        }
    }
    *out = (double)nsum_value(&acc) + 0.0; /* + 0.0 turns -0 into +0 */
    return XC_OK;
}

static int grad_wrt_probs_row(const double *p, const double *y, int64_t k, double *g)
{
    int y_nan;
    int status = check_targets(y, k, &y_nan);
    if (status != XC_OK) {
        return status;
    }
    int p_nan;
    status = check_targets(p, k, &p_nan);
    if (status != XC_OK) {
        return status;
    }
    if (y_nan || p_nan) {
        fill(g, k, NAN);
        return XC_OK;
    }
    for (int64_t j = 0; j < k; j++) {
        g[j] = (y[j] == 0.0) ? 0.0 : -(y[j] / p[j]);
    }
    return XC_OK;
}

/* The Jacobian block of one row from p and 1 - p: p_i q_i on the diagonal, -p_i p_j off it. */
static real jacobian_entry(const real *p, const real *q, int64_t i, int64_t j)
{
    return (i == j) ? p[i] * q[i] : -(p[i] * p[j]);
}

/* ---- double entry points ---- */

#define CHECK_DIMS(n, k)          \
    do {                          \
        if ((n) < 0 || (k) < 0) { \
            return XC_EARG;       \
        }                         \
    } while (0)

int xc_logsumexp(const double *logits, double *out, int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        lse_row(logits + r * k, k, out + r);
    }
    return XC_OK;
}

int xc_softmax(const double *logits, double *out, int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        softmax_row(logits + r * k, k, out + r * k);
    }
    return XC_OK;
}

int xc_log_softmax(const double *logits, double *out, int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        log_softmax_row(logits + r * k, k, out + r * k);
    }
    return XC_OK;
}

int xc_cross_entropy(const double *logits, const int64_t *target, double *out, int64_t n,
                     int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = ce_index_row(logits + r * k, target[r], k, out + r);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

int xc_cross_entropy_probs(const double *logits, const double *target, double *out,
                           int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = ce_probs_row(logits + r * k, target + r * k, k, out + r);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

int xc_cross_entropy_grad(const double *logits, const int64_t *target, double *grad,
                          int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = grad_index_row(logits + r * k, target[r], k, grad + r * k);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

int xc_cross_entropy_grad_probs(const double *logits, const double *target, double *grad,
                                int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = grad_probs_row(logits + r * k, target + r * k, k, grad + r * k);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

int xc_softmax_jacobian(const double *logits, double *jac, int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    real *scratch = malloc(2 * (size_t)(k > 0 ? k : 1) * sizeof(real));
    if (scratch == NULL) {
        return XC_ENOMEM;
    }
    real *p = scratch;
    real *q = scratch + k;
    for (int64_t r = 0; r < n; r++) {
        probs_and_complements(logits + r * k, k, p, q);
        double *block = jac + r * k * k;
        for (int64_t i = 0; i < k; i++) {
            for (int64_t j = 0; j < k; j++) {
                block[i * k + j] = (double)jacobian_entry(p, q, i, j);
            }
        }
    }
    free(scratch);
    return XC_OK;
}

int xc_cross_entropy_from_probs(const double *probs, const double *target, double *out,
                                int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = from_probs_row(probs + r * k, target + r * k, k, out + r);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

int xc_cross_entropy_grad_wrt_probs(const double *probs, const double *target, double *grad,
                                    int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    for (int64_t r = 0; r < n; r++) {
        int status = grad_wrt_probs_row(probs + r * k, target + r * k, k, grad + r * k);
        if (status != XC_OK) {
            return status;
        }
    }
    return XC_OK;
}

/* ---- float entry points: widen each row to double, compute, narrow ---- */

static void widen(const float *src, double *dst, int64_t count)
{
    for (int64_t j = 0; j < count; j++) {
        dst[j] = (double)src[j];
    }
}

static void narrow(const double *src, float *dst, int64_t count)
{
    for (int64_t j = 0; j < count; j++) {
        dst[j] = (float)src[j];
    }
}

static double *scratch_rows(int64_t rows, int64_t k)
{
    return malloc((size_t)rows * (size_t)(k > 0 ? k : 1) * sizeof(double));
}

/* logits -> per-row output of out_width doubles (1 or k) */
typedef int (*row_fn)(const double *z, int64_t k, double *out);

static int unary_f32(row_fn fn, const float *logits, float *out, int64_t n, int64_t k,
                     int64_t out_width)
{
    CHECK_DIMS(n, k);
    double *buf = scratch_rows(2, k);
    if (buf == NULL) {
        return XC_ENOMEM;
    }
    for (int64_t r = 0; r < n; r++) {
        widen(logits + r * k, buf, k);
        fn(buf, k, buf + k);
        narrow(buf + k, out + r * out_width, out_width);
    }
    free(buf);
    return XC_OK;
}

int xc_logsumexp_f32(const float *logits, float *out, int64_t n, int64_t k)
{
    return unary_f32(lse_row, logits, out, n, k, 1);
}

int xc_softmax_f32(const float *logits, float *out, int64_t n, int64_t k)
{
    return unary_f32(softmax_row, logits, out, n, k, k);
}

int xc_log_softmax_f32(const float *logits, float *out, int64_t n, int64_t k)
{
    return unary_f32(log_softmax_row, logits, out, n, k, k);
}

typedef int (*index_row_fn)(const double *z, int64_t t, int64_t k, double *out);

static int index_f32(index_row_fn fn, const float *logits, const int64_t *target, float *out,
                     int64_t n, int64_t k, int64_t out_width)
{
    CHECK_DIMS(n, k);
    double *buf = scratch_rows(2, k);
    if (buf == NULL) {
        return XC_ENOMEM;
    }
    int status = XC_OK;
    for (int64_t r = 0; r < n && status == XC_OK; r++) {
        widen(logits + r * k, buf, k);
        status = fn(buf, target[r], k, buf + k);
        narrow(buf + k, out + r * out_width, out_width);
    }
    free(buf);
    return status;
}

int xc_cross_entropy_f32(const float *logits, const int64_t *target, float *out, int64_t n,
                         int64_t k)
{
    return index_f32(ce_index_row, logits, target, out, n, k, 1);
}

int xc_cross_entropy_grad_f32(const float *logits, const int64_t *target, float *grad,
                              int64_t n, int64_t k)
{
    return index_f32(grad_index_row, logits, target, grad, n, k, k);
}

typedef int (*pair_row_fn)(const double *a, const double *b, int64_t k, double *out);

static int pair_f32(pair_row_fn fn, const float *a, const float *b, float *out, int64_t n,
                    int64_t k, int64_t out_width)
{
    CHECK_DIMS(n, k);
    double *buf = scratch_rows(3, k);
    if (buf == NULL) {
        return XC_ENOMEM;
    }
    int status = XC_OK;
    for (int64_t r = 0; r < n && status == XC_OK; r++) {
        widen(a + r * k, buf, k);
        widen(b + r * k, buf + k, k);
        status = fn(buf, buf + k, k, buf + 2 * k);
        narrow(buf + 2 * k, out + r * out_width, out_width);
    }
    free(buf);
    return status;
}

int xc_cross_entropy_probs_f32(const float *logits, const float *target, float *out,
                               int64_t n, int64_t k)
{
    return pair_f32(ce_probs_row, logits, target, out, n, k, 1);
}

int xc_cross_entropy_grad_probs_f32(const float *logits, const float *target, float *grad,
                                    int64_t n, int64_t k)
{
    return pair_f32(grad_probs_row, logits, target, grad, n, k, k);
}

int xc_cross_entropy_from_probs_f32(const float *probs, const float *target, float *out,
                                    int64_t n, int64_t k)
{
    return pair_f32(from_probs_row, probs, target, out, n, k, 1);
}

int xc_cross_entropy_grad_wrt_probs_f32(const float *probs, const float *target, float *grad,
                                        int64_t n, int64_t k)
{
    return pair_f32(grad_wrt_probs_row, probs, target, grad, n, k, k);
}

int xc_softmax_jacobian_f32(const float *logits, float *jac, int64_t n, int64_t k)
{
    CHECK_DIMS(n, k);
    double *z = scratch_rows(1, k);
    real *p = malloc(2 * (size_t)(k > 0 ? k : 1) * sizeof(real));
    if (z == NULL || p == NULL) {
        free(z);
        free(p);
        return XC_ENOMEM;
    }
    real *q = p + k;
    for (int64_t r = 0; r < n; r++) {
        widen(logits + r * k, z, k);
        probs_and_complements(z, k, p, q);
        float *block = jac + r * k * k;
        for (int64_t i = 0; i < k; i++) {
            for (int64_t j = 0; j < k; j++) {
                block[i * k + j] = (float)jacobian_entry(p, q, i, j);
            }
        }
    }
    free(z);
    free(p);
    return XC_OK;
}

/* ---- the seed ---- */

/* The seed's derivative, literally: derivative = softmax_output - target, element-wise. */
void softmax_cross_entropy_loss_derivative(double *softmax_output, int *target,
                                           double *derivative, int length)
{
    for (int i = 0; i < length; i++) {
        derivative[i] = softmax_output[i] - target[i];
    }
}
