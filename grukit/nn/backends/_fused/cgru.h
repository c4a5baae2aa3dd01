/* What every part of grukit's compiled kernels shares: the vector types, the named sizes, and the layouts the
 * parts exchange (Job: one layer and direction of a forward; Frame: one streaming step of every layer; the
 * stream meta layout Python fills by name). The parts:
 *
 *   cgru.h          this header
 *   cgru_gemm.h     kernels, matmuls: the panel GEMM and the row-major one (torch's layout, read in place)
 *   cgru_gates.h    kernels, gates: tanh / sigmoid and the GRU cell of equations.py (r, z, n, h')
 *   cgru_recur.h    kernels, recurrence: a step of rows, a whole call's rows, a stream frame, split calls
 *   cgru_kernels.c  compiles the three kernel headers twice (AVX2 + FMA, baseline ISA) and dispatches
 *   cgru_team.c     the helper thread pool, the meeting barrier, teams (row chunks, unit splits, pipelines)
 *   cgru_stream.c   the Stream type (a packed stream's buffer and its meta)
 *   cgru_plan.c     the Plan type (a whole GRU's packed weights, one-call inference)
 *   _cgru.c         the module: functions, constants, layouts, init
 */
#ifndef GRUKIT_CGRU_H
#define GRUKIT_CGRU_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__GNUC__)
#error "_cgru needs GCC or Clang vector extensions"
#endif

/* Functions shared between the parts: not exported from the extension. */
#define CGRU_INTERNAL __attribute__((visibility("hidden")))

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
#define V8ZERO ((v8){0, 0, 0, 0, 0, 0, 0, 0})
#define LD(p) ({ v8 v_; __builtin_memcpy(&v_, (p), sizeof(v8)); v_; })
#define ST(p, v) do { v8 s_ = (v); __builtin_memcpy((p), &s_, sizeof(v8)); } while (0)
#define BC(a) ({ float a_ = (a); (v8){a_, a_, a_, a_, a_, a_, a_, a_}; })
#if defined(__clang__) || __GNUC__ >= 12
#define SHUF(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle((a), (b), (v8i){__VA_ARGS__})
#endif
/* Floats per vector, and columns per panel of the packed weights (two vectors). */
#define LANES 8
#define PANEL 16
/* Most batch rows a stream or a hidden-unit split call keeps per-row pointers for on the stack (module
 * attribute MAX_STACK_ROWS: Python sends wider ones elsewhere). */
#define MAX_STACK_ROWS 256

typedef struct {
    const float *x, *wih, *bih, *whh, *bhh, *h0;
    const long long *lens;
    float *out, *hT;
    long T, B, I, H, Hp, ldo, oo;
    int reverse, reset_after;
    float zo;
    int rowmajor;                               /* whh is torch's (3H, H), read in place, bhh may be NULL */
} Job;

/* Most layers of a stream or step frame. */
#define MAX_LAYERS 64

/* One layer of a frame: its input size and weights, packed in panels or (rowmajor) torch's tensors read in
 * place ((3H, n_in), (3H,) or NULL, (3H, H), (3H,) or NULL). */
typedef struct {
    long n_in;
    const float *wih, *bih, *whh, *bhh;
} FrameLayer;

/* One streaming step of every layer (stream_frame): sizes, the state h (L, B, H) updated in place, scratch gi,
 * gh (B, 3Hp) and q (B, H), and per layer its weights. */
typedef struct {
    long L, B, H, Hp;
    int reset_after, rowmajor;
    float zo;
    float *h, *gi, *gh, *q;
    FrameLayer layer[MAX_LAYERS];
} Frame;


/* The panel GEMM's row blocks: A's rows of one block hold at most this many floats (16 KB, so they stay in L1
 * while every panel passes by), and at most this many rows. */
#define GEMM_BLOCK_FLOATS 4096
#define GEMM_MAX_BLOCK_ROWS 256

/* Most threads one call uses. */
#define MAX_THREADS 64

/* Pauses a waiting thread spins before it starts yielding its core (a partner that was descheduled). */
#define SPIN_PAUSES 4000

/* A meeting point for the threads of one split call. They spin (with a pause hint); a thread that spins
 * SPIN_PAUSES times (a partner was descheduled: the cores are shared with other work) starts yielding its core
 * and asks for "solo": the last thread to arrive at a meeting copies that wish into solo, which every thread
 * reads after the meeting, so all of them see the same answer at the same step (split_recur then finishes the
 * call on one thread rather than wait a scheduler time slice at every step). */
typedef struct {
    atomic_int count, gen, want_solo;
    int n, solo;
} Barrier;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct {
    float *gi, *h[2], *gh, *q;
    Barrier bar;
} Split;

/* Time position of batch row b at step s of the recurrence (a reverse direction reads step s at L - 1 - s), or
 * -1 once s is past the row's length L. */
static inline long row_time(const Job *J, long s, long b)
{
    const long L = J->lens[b];
    return s >= L ? -1 : (J->reverse ? L - 1 - s : s);
}

/* Layouts of a call's input projection gi (see row_ptrs). */
enum { GI_BY_STEP, GI_BY_ROW, GI_ONE_STEP };

/* The layout of a packed stream's meta (int64 fields, see cgru_stream.c), defined once here: the module exports
 * the names in this order (_cgru.STREAM_META, _cgru.STREAM_LAYER_META) and Python fills a numpy structured array
 * by name, so Python and C cannot disagree on a position. Offsets count floats of the stream's buffer ws. */
#define STREAM_META_FIELDS(X) X(L) X(B) X(H) X(Hp) X(reset_after) X(off_h) X(off_gi) X(off_gh) X(off_q) X(off_zo)
#define STREAM_LAYER_FIELDS(X) X(n_in) X(off_wih) X(off_bih) X(off_whh) X(off_bhh)
#define CGRU_FIELD(name) int64_t name;
typedef struct { STREAM_META_FIELDS(CGRU_FIELD) } StreamMeta;
typedef struct { STREAM_LAYER_FIELDS(CGRU_FIELD) } StreamLayerMeta;
#undef CGRU_FIELD

/* cgru_kernels.c */
CGRU_INTERNAL float *falloc(long n);
CGRU_INTERNAL void finish_rows(const Job *J, long r0, long r1, const float *h);
CGRU_INTERNAL void cgru_select_isa(int avx2);
CGRU_INTERNAL int cgru_avx2(void);
CGRU_INTERNAL void do_gemm(const float *A, long lda, long M, long K, const float *Wp, long p0, long np, float *C,
                           long ldc, const float *bias);
CGRU_INTERNAL int do_rows(const Job *J, long r0, long r1);
CGRU_INTERNAL void do_split_project(const Job *J, float *gi, long t0, long t1);
CGRU_INTERNAL void do_split_recur(const Job *J, Split *S, int tid, int n, void (*ready)(void *, long), void *ctx);
CGRU_INTERNAL void do_stream_frame(const float *x, const Frame *F, float *hn, int tid, int n, Barrier *bar,
                                   int (*decide)(void *), void *ctx);

/* cgru_team.c */
/* Time steps per chunk of a pipelined call's projection: the recurrence starts after the first chunk. */
#define PIPE_STEPS 8
CGRU_INTERNAL int barrier_wait(Barrier *b);
CGRU_INTERNAL int run_job(const Job *J, int nthreads, int unit_split);
CGRU_INTERNAL int run_stream(const float *x, const Frame *F, float *hn, int n);
CGRU_INTERNAL void pool_configure(long spin_ns);
CGRU_INTERNAL long team_count(int which);

#endif
