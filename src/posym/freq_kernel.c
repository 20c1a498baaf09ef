/* Per-frequency positional and symbolic scores: the loop of posym.metrics.frequency_scores, fused.
 *
 * Built by posym.ckernel (`cc -O3 -march=native -ffast-math -fopenmp -c`, linked without -ffast-math); the loop
 * over frequencies is the innermost, contiguous one, so the compiler vectorises it (with glibc's vector expf).
 * The arithmetic is the torch kernel's: per position in double (softmax, weight factors), per swap in float;
 * the sums over swaps in double.
 *
 * R rows, T positions, F frequencies.  cr[(r*T + a)*F + f] times `cs` (1: two separate arrays;
 * 2: the real and imaginary parts of one complex array) is the content term of position a; cosT, sinT (T, F)
 * the position terms.  The swaps are every (i, j), i < j < n_pos.  Writes pos, sym, maxl (R, F).
 */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* One swap (i, j) at every frequency: its weight w and cosines (float), added to the sums P (positional),
 * Q (symbolic) and W (weights) (double). */
static void pair(long F, const float *restrict eQi, const float *restrict ePi, const float *restrict dgi,
                 const float *restrict cri, const float *restrict cii, const float *restrict ci_,
                 const float *restrict si_, const float *restrict eQj, const float *restrict ePj,
                 const float *restrict dgj, const float *restrict crj, const float *restrict cij,
                 const float *restrict cj_, const float *restrict sj_, double *restrict P, double *restrict Q,
                 double *restrict W)
{
    for (long f = 0; f < F; f++) {
        float w1 = eQi[f] * ePj[f], w2 = eQj[f] * ePi[f];
        float w = w1 > w2 ? w1 : w2;
        float x = dgj[f] - dgi[f];  /* M_jj - M_ii */
        float y = cri[f] * cj_[f] - cii[f] * sj_[f] - crj[f] * ci_[f] + cij[f] * si_[f];  /* M_ji - M_ij */
        x = x < -20.0f ? -20.0f : (x > 20.0f ? 20.0f : x);
        y = y < -20.0f ? -20.0f : (y > 20.0f ? 20.0f : y);
        float u = expf(x), v = expf(y);
        float wd = w / sqrtf((1.0f + u * u) * (1.0f + v * v));
        P[f] += wd * (1.0f + u * v);
        Q[f] += wd * (u + v);
        W[f] += w;
    }
}

static int rows(long r0, long r1, long T, long F, long n_pos, double tau, const double *cr, const double *ci, long cs,
                const double *cosT, const double *sinT, float *pos, float *sym, float *maxl)
{
    double *dbuf = malloc(sizeof(double) * (2 * T * F + 7 * F));
    float *fbuf = malloc(sizeof(float) * 7 * n_pos * F);
    if (!dbuf || !fbuf) {
        free(dbuf);
        free(fbuf);
        return 1;
    }
    double *diag = dbuf, *E = diag + T * F, *m = E + T * F, *Z = m + F, *lo = Z + F, *hi = lo + F;
    double *P = hi + F, *Q = P + F, *W = Q + F;
    float *eP = fbuf, *eQ = eP + n_pos * F, *dg = eQ + n_pos * F, *cr32 = dg + n_pos * F, *ci32 = cr32 + n_pos * F;
    float *c32 = ci32 + n_pos * F, *s32 = c32 + n_pos * F;
    for (long k = 0; k < n_pos * F; k++) {
        c32[k] = (float)cosT[k];
        s32[k] = (float)sinT[k];
    }
    for (long r = r0; r < r1; r++) {
        const double *cr_r = cr + r * T * F * cs, *ci_r = ci + r * T * F * cs;
        for (long f = 0; f < F; f++) m[f] = -INFINITY;
        for (long a = 0; a < T; a++)
            for (long f = 0; f < F; f++) {
                double d = cr_r[(a * F + f) * cs] * cosT[a * F + f] - ci_r[(a * F + f) * cs] * sinT[a * F + f];
                diag[a * F + f] = d;
                m[f] = d > m[f] ? d : m[f];
            }
        for (long f = 0; f < F; f++) Z[f] = 0.0;
        for (long a = 0; a < T; a++)
            for (long f = 0; f < F; f++) {
                double x = diag[a * F + f] - m[f];
                E[a * F + f] = exp(x > -300.0 ? x : -300.0);
                Z[f] += E[a * F + f];
            }
        for (long f = 0; f < F; f++) {
            lo[f] = INFINITY;
            hi[f] = -INFINITY;
        }
        for (long a = 0; a < n_pos; a++)
            for (long f = 0; f < F; f++) {
                double D = E[a * F + f] / Z[f];
                E[a * F + f] = D;
                lo[f] = D < lo[f] ? D : lo[f];
                hi[f] = D > hi[f] ? D : hi[f];
            }
        for (long a = 0; a < n_pos; a++)
            for (long f = 0; f < F; f++) {
                long k = a * F + f;
                double p = -(E[k] - lo[f]) / tau, q = (E[k] - hi[f]) / tau;
                eP[k] = (float)exp(p > -40.0 ? p : -40.0);
                eQ[k] = (float)exp(q > -40.0 ? q : -40.0);
                dg[k] = (float)diag[k];
                cr32[k] = (float)cr_r[k * cs];
                ci32[k] = (float)ci_r[k * cs];
            }
        for (long f = 0; f < F; f++) P[f] = Q[f] = W[f] = 0.0;
        for (long i = 0; i < n_pos; i++)
            for (long j = i + 1; j < n_pos; j++)
                pair(F, eQ + i * F, eP + i * F, dg + i * F, cr32 + i * F, ci32 + i * F, c32 + i * F, s32 + i * F,
                     eQ + j * F, eP + j * F, dg + j * F, cr32 + j * F, ci32 + j * F, c32 + j * F, s32 + j * F,
                     P, Q, W);
        for (long f = 0; f < F; f++) {
            pos[r * F + f] = (float)(P[f] / W[f]);
            sym[r * F + f] = (float)(Q[f] / W[f]);
            maxl[r * F + f] = (float)m[f];
        }
    }
    free(dbuf);
    free(fbuf);
    return 0;
}


/* Rows 0..R-1 shared among `threads` OpenMP threads, a contiguous block each (so the result does not depend on
 * the thread count).  Linked against the libgomp that torch has already loaded, the threads are torch's own. */
int posym_freq_scores(long R, int threads, long T, long F, long n_pos, double tau, const double *cr, const double *ci,
                      long cs, const double *cosT, const double *sinT, float *pos, float *sym, float *maxl)
{
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        long n = 1, k = 0;
#ifdef _OPENMP
        n = omp_get_num_threads();
        k = omp_get_thread_num();
#endif
        failed |= rows(R * k / n, R * (k + 1) / n, T, F, n_pos, tau, cr, ci, cs, cosT, sinT, pos, sym, maxl);
    }
    return failed;
}
