/* The kernels (cgru_gemm.h, cgru_gates.h, cgru_recur.h) compiled twice: with FN(x) = x##_avx2 and
 * ATTR = target("avx2,fma"), and with FN(x) = x##_generic and no target (the baseline ISA of the build); the
 * module picks one at import (cgru_select_isa). Vectors are GCC/Clang vector extensions, so the same source
 * runs on any CPU the compiler targets: no hand-written assembly. */
#include <sched.h>
#include "cgru.h"

float *falloc(long n)
{
    void *p = NULL;
    if (n < 1) n = 1;
    return posix_memalign(&p, 64, sizeof(float) * (size_t)n) == 0 ? (float *)p : NULL;
}

/* The end of a call for rows [r0, r1): final states from h (rows r0.. at h + (r - r0) * H) into hT, and zeros
 * in the output steps past each row's length. */
void finish_rows(const Job *J, long r0, long r1, const float *h)
{
    const long T = J->T, B = J->B, H = J->H;
    memcpy(J->hT + r0 * H, h, sizeof(float) * (r1 - r0) * H);
    for (long r = r0; r < r1; r++)
        for (long t = J->lens[r]; t < T; t++)
            memset(J->out + (t * B + r) * J->ldo + J->oo, 0, sizeof(float) * H);
}

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_AVX2_BUILD 1
#define ATTR __attribute__((target("avx2,fma")))
#define FN(name) name##_avx2
#include "cgru_gemm.h"
#include "cgru_gates.h"
#include "cgru_recur.h"
#undef ATTR
#undef FN
#endif

#define ATTR
#define FN(name) name##_generic
#include "cgru_gemm.h"
#include "cgru_gates.h"
#include "cgru_recur.h"
#undef ATTR
#undef FN

/* ------------------------------------------------------------------------------------------ dispatch */
static int use_avx2 = 0;

void cgru_select_isa(int avx2) { use_avx2 = avx2; }

int cgru_avx2(void) { return use_avx2; }

void do_gemm(const float *A, long lda, long M, long K, const float *Wp, long p0, long np, float *C,
                    long ldc, const float *bias)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { gemm_avx2(A, lda, M, K, Wp, p0, np, C, ldc, bias); return; }
#endif
    gemm_generic(A, lda, M, K, Wp, p0, np, C, ldc, bias);
}

int do_rows(const Job *J, long r0, long r1)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) return run_rows_avx2(J, r0, r1);
#endif
    return run_rows_generic(J, r0, r1);
}

void do_split_project(const Job *J, float *gi, long t0, long t1)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { split_project_avx2(J, gi, t0, t1); return; }
#endif
    split_project_generic(J, gi, t0, t1);
}

void do_split_recur(const Job *J, Split *S, int tid, int n, void (*ready)(void *, long), void *ctx)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { split_recur_avx2(J, S, tid, n, ready, ctx); return; }
#endif
    split_recur_generic(J, S, tid, n, ready, ctx);
}

void do_stream_frame(const float *x, const Frame *F, float *hn, int tid, int n, Barrier *bar,
                            int (*decide)(void *), void *ctx)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { stream_frame_avx2(x, F, hn, tid, n, bar, decide, ctx); return; }
#endif
    stream_frame_generic(x, F, hn, tid, n, bar, decide, ctx);
}

