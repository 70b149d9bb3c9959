/* util.c: small numerics shared by routers and metrics: softmax, logsumexp, a stable argsort,
 * exact capacity from a decimal capacity factor, the monotonic clock. */
#include "moe.h"
#include "vexp.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* ---- softmax ---- */

/* p = exp(x - max x), returns their sum (in index order) and stores max x in *mx. */
static inline double softmax_exp(const double *x, int len, double *p, double *mx)
{
    double m = moe_vmax(x, len);
    moe_vexp_shift(x, len, m, p); /* exp(x[i] - m), the C library's bits (vexp.h) */
    double s = 0.0;
    for (int i = 0; i < len; i++)
        s += p[i];
    *mx = m;
    return s;
}

/* p[i] /= s, four at a time (each quotient correctly rounded, as one at a time). */
typedef double softmax_v4 __attribute__((vector_size(32)));
static inline void softmax_div(double *p, int len, double s)
{
    int i = 0;
    for (; i + 4 <= len; i += 4) {
        softmax_v4 v;
        memcpy(&v, p + i, sizeof v);
        v /= s;
        memcpy(p + i, &v, sizeof v);
    }
    for (; i < len; i++)
        p[i] /= s;
}

void moe_softmax(const double *x, int len, double *p)
{
    double mx, s = softmax_exp(x, len, p, &mx);
    softmax_div(p, len, s);
}

double moe_softmax_lse(const double *x, int len, double *p)
{
    double mx, s = softmax_exp(x, len, p, &mx);
    softmax_div(p, len, s);
    return mx + moe_log(s);
}

double moe_logsumexp(const double *x, int len)
{
    double mx = moe_vmax(x, len);
    double s = 0.0, e[256];
    for (int i0 = 0; i0 < len; i0 += 256) {
        int nb = len - i0 < 256 ? len - i0 : 256;
        moe_vexp_shift(x + i0, nb, mx, e);
        for (int i = 0; i < nb; i++)
            s += e[i];
    }
    return mx + moe_log(s);
}

double moe_sum_sq(double z, const double *x, long n)
{
    for (long t = 0; t < n; t++)
        z += x[t] * x[t];
    return z;
}

/* ---- stable argsort (merge sort on indices) ---- */

/* idx[lo..hi) sorted descending by v, ties ascending by index (stable because the input
 * index order is ascending and merge takes the left run on equality). */
static void merge_desc(const double *v, int *idx, int *tmp, int lo, int hi)
{
    if (hi - lo < 2)
        return;
    if (hi - lo <= 16) { /* insertion sort: stable */
        for (int i = lo + 1; i < hi; i++) {
            int x = idx[i], j = i;
            while (j > lo && v[idx[j - 1]] < v[x]) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = x;
        }
        return;
    }
    int mid = lo + (hi - lo) / 2;
    merge_desc(v, idx, tmp, lo, mid);
    merge_desc(v, idx, tmp, mid, hi);
    int i = lo, j = mid, o = lo;
    while (i < mid && j < hi)
        tmp[o++] = (v[idx[j]] > v[idx[i]]) ? idx[j++] : idx[i++];
    while (i < mid)
        tmp[o++] = idx[i++];
    while (j < hi)
        tmp[o++] = idx[j++];
    memcpy(idx + lo, tmp + lo, (size_t)(hi - lo) * sizeof *idx);
}

void moe_argsort_desc(const double *v, int len, int *idx, int *tmp)
{
    for (int i = 0; i < len; i++)
        idx[i] = i;
    merge_desc(v, idx, tmp, 0, len);
}

/* ---- exact capacity ---- */

int moe_decimal_parse(const char *s, long long *num, long long *den)
{
    const char *p = s;
    long long n = 0, d = 1;
    int digits = 0, frac = 0, seen_dot = 0;
    if (!s || !*s)
        return moe_fail(MOE_EINVAL, "write it as a decimal such as 1.25",
                        "empty capacity factor");
    for (; *p; p++) {
        if (*p == '.' && !seen_dot) {
            seen_dot = 1;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            return moe_fail(MOE_EINVAL, "write it as a non-negative decimal such as 1.25",
                            "capacity factor '%s' is not a non-negative decimal", s);
        if (n > (LLONG_MAX - 9) / 10 || (seen_dot && d > LLONG_MAX / 10))
            return moe_fail(MOE_EINVAL, "use at most 15 significant digits",
                            "capacity factor '%s' has too many digits", s);
        n = n * 10 + (*p - '0');
        if (seen_dot) {
            d *= 10;
            frac++;
        }
        digits++;
    }
    if (digits == 0)
        return moe_fail(MOE_EINVAL, "write it as a decimal such as 1.25",
                        "capacity factor '%s' has no digits", s);
    (void)frac;
    /* reduce by common powers of ten so 1.50 == 1.5 */
    while (d > 1 && n % 10 == 0) {
        n /= 10;
        d /= 10;
    }
    *num = n;
    *den = d;
    return MOE_OK;
}

/* The capacity formulas of libraries that compute in floating point, before min_capacity and
 * the multiple; cf is the Python float of the decimal (num/den, correctly rounded as Python
 * reads "1.2"). -1 when the value is not finite or above 2^62.
 *   deepspeed_f32  DeepSpeed deepspeed/moe/sharded_moe.py _capacity:
 *                  torch.ceil((num_tokens / num_experts) * torch.tensor(capacity_factor * k))
 *                  the Python double n/E times a float32 tensor: both rounded to float32, the
 *                  product rounded to float32, then its ceiling (top1gating passes cf, top2gating
 *                  cf * 2, topkgating cf * k).
 *   fairseq, tutel k * int(cf * ceil(n / E)) in double: fairseq (moe branch)
 *                  fairseq/modules/moe/top1gate.py int(capacity_factor * math.ceil(n / E)),
 *                  top2gate.py 2 * math.ceil(n / E) (cf 1); Tutel tutel/impls/fast_dispatch.py
 *                  extract_critical top_k * int(capacity_factor * ((n + E - 1) // E)). */
static long long library_capacity(int rounding, int k, long n, int E, double cf)
{
    double c;
    if (rounding == MOE_ROUND_DEEPSPEED_F32) {
        const float per = (float)((double)n / (double)E); /* the Python float n / E */
        const float f = (float)((double)k * cf);          /* torch.tensor(cf * k): float32 */
        const float prod = per * f;                       /* float32 tensor product */
        c = ceil((double)prod);
    } else {
        const long long per = ((long long)n + E - 1) / E; /* ceil(n / E) */
        c = trunc(cf * (double)per);                      /* int() of the double product */
        c *= (double)k;
    }
    if (!isfinite(c) || c > 4611686018427387904.0)
        return -1;
    return (long long)c;
}

int moe_capacity(const moe_route_opts *o, int k, long n, int E, long *C)
{
    if (o->capacity >= 0) {
        *C = o->capacity;
        return MOE_OK;
    }
    if (E <= 0)
        return moe_fail(MOE_EINVAL, NULL, "capacity needs E > 0 (E = %d)", E);
    long long num = o->cf_set ? o->cf_num : 1, den = o->cf_set ? o->cf_den : 1;
    long long a, b;
    /* ROUND(k * n * num / (E * den)) on integers */
    if (__builtin_mul_overflow((long long)k, (long long)n, &a) ||
        __builtin_mul_overflow(a, num, &a) ||
        __builtin_mul_overflow((long long)E, den, &b))
        return moe_fail(MOE_EINVAL, "use a smaller capacity factor or an explicit capacity",
                        "capacity k*n*cf/E overflows (k=%d, n=%ld, cf=%lld/%lld, E=%d)", k, n,
                        num, den, E);
    long long q = a / b, r = a % b;
    switch (o->rounding) {
    case MOE_ROUND_DEEPSPEED_F32:
    case MOE_ROUND_FAIRSEQ:
    case MOE_ROUND_TUTEL:
        q = library_capacity(o->rounding, k, n, E, (double)num / (double)den);
        if (q < 0)
            return moe_fail(MOE_EINVAL, "use a smaller capacity factor or an explicit capacity",
                            "capacity k*n*cf/E too large (k=%d, n=%ld, cf=%lld/%lld, E=%d)", k,
                            n, num, den, E);
        break;
    case MOE_ROUND_CEIL:
        if (r)
            q++;
        break;
    case MOE_ROUND_FLOOR:
        break;
    case MOE_ROUND_HALF_EVEN:
        if (2 * r > b || (2 * r == b && (q & 1)))
            q++;
        break;
    default:
        return moe_fail(MOE_EINVAL, NULL, "unknown rounding mode %d", o->rounding);
    }
    if (q < o->min_capacity)
        q = o->min_capacity;
    if (o->capacity_multiple > 1 && q % o->capacity_multiple)
        q += o->capacity_multiple - q % o->capacity_multiple;
    if (q > LONG_MAX)
        return moe_fail(MOE_EINVAL, NULL, "capacity %lld too large", q);
    *C = (long)q;
    return MOE_OK;
}

/* ---- clock ---- */

double moe_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
