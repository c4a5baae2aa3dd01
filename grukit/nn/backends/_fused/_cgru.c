/* grukit's compiled float32 GRU kernels (a CPython extension, built by setup.py; optional: without a C
 * compiler grukit runs the numba kernels instead).
 *
 * The kernels live in cgru_impl.h and are compiled twice: for AVX2 + FMA and for the build's baseline ISA;
 * the module picks one when it is imported (__builtin_cpu_supports), or the baseline one when the environment
 * says GRUKIT_CPU_ISA=generic (tests use that to check both). Vectors are GCC/Clang vector extensions, so the
 * same source runs on any CPU the compiler targets: no hand-written assembly.
 *
 * Functions (numpy arrays in; float32, C-contiguous; sizes are checked against the buffers):
 *   forward(x, wih, bih, whh, bhh, h0, lens, out, hT, T, B, I, H, Hp, reverse, reset_after, zo, ldo, oo, nthreads,
 *           unit_split=True)
 *       one layer and direction of an inference forward on nthreads threads: batch rows in chunks, or (fewer
 *       rows than threads) the hidden units shared out (unit_split), or the recurrence on the calling thread
 *       while helpers project the steps ahead of it (not unit_split).
 *   Stream(ws, meta, nthreads=1) a packed stream (subclassable): stream(x) advances every layer by one frame,
 *                                the state kept in ws (on nthreads threads: hidden units split), and returns a
 *                                new array of the top layer's state; stream.advance(x) the same, returning None.
 *   Plan(weights, L, D, I, H, Hp, reset_after)   a whole GRU's packed weights: plan.run(x_address, T, B,
 *                                hx_address_or_0, lens_or_None, zo, n_first, n_rest, unit_split, l0=0, l1=L)
 *                                -> (out, h_n), the layers [l0, l1) of an inference forward in one call.
 *   gemm(A, M, K, Wp, p0, np, C, ldc, bias_or_None)   the panel matmul itself (for tests).
 *   same(snapshot, nbytes, addresses)   whether tensors still hold the bytes they were packed from.
 *   isa()                        "avx2" or "generic": the kernels in use.
 *   counts()                     how split calls and stream frames ran, and pipelined chunks helpers wrote.
 *   MAX_STACK_ROWS, PIPE_STEPS   the most rows a split call or stream takes; time steps per pipelined chunk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#undef I                                /* <complex.h>'s, via numpy's headers: I is a size here */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(__GNUC__)
#error "_cgru needs GCC or Clang vector extensions"
#endif

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

/* Returns solo as decided at this meeting. */
static int barrier_wait(Barrier *b)
{
    int g = atomic_load_explicit(&b->gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == b->n - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        b->solo = atomic_load_explicit(&b->want_solo, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->gen, 1, memory_order_release);
        return b->solo;
    }
    for (long spins = 0; atomic_load_explicit(&b->gen, memory_order_acquire) == g; spins++) {
        if (spins < SPIN_PAUSES) {
            cpu_relax();
        } else {
            if (spins == SPIN_PAUSES) atomic_store_explicit(&b->want_solo, 1, memory_order_relaxed);
            sched_yield();
        }
    }
    return b->solo;
}

typedef struct {
    float *gi, *h[2], *gh, *q;
    Barrier bar;
} Split;

static float *falloc(long n)
{
    void *p = NULL;
    if (n < 1) n = 1;
    return posix_memalign(&p, 64, sizeof(float) * (size_t)n) == 0 ? (float *)p : NULL;
}

/* Time position of batch row b at step s of the recurrence (a reverse direction reads step s at L - 1 - s), or
 * -1 once s is past the row's length L. */
static inline long row_time(const Job *J, long s, long b)
{
    const long L = J->lens[b];
    return s >= L ? -1 : (J->reverse ? L - 1 - s : s);
}

/* Layouts of a call's input projection gi (see row_ptrs). */
enum { GI_BY_STEP, GI_BY_ROW, GI_ONE_STEP };

/* The end of a call for rows [r0, r1): final states from h (rows r0.. at h + (r - r0) * H) into hT, and zeros
 * in the output steps past each row's length. */
static void finish_rows(const Job *J, long r0, long r1, const float *h)
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
#include "cgru_impl.h"
#undef ATTR
#undef FN
#endif

#define ATTR
#define FN(name) name##_generic
#include "cgru_impl.h"
#undef ATTR
#undef FN

/* ------------------------------------------------------------------------------------------ dispatch */
static int use_avx2 = 0;

static void do_gemm(const float *A, long lda, long M, long K, const float *Wp, long p0, long np, float *C,
                    long ldc, const float *bias)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { gemm_avx2(A, lda, M, K, Wp, p0, np, C, ldc, bias); return; }
#endif
    gemm_generic(A, lda, M, K, Wp, p0, np, C, ldc, bias);
}

static int do_rows(const Job *J, long r0, long r1)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) return run_rows_avx2(J, r0, r1);
#endif
    return run_rows_generic(J, r0, r1);
}

static void do_split_project(const Job *J, float *gi, long t0, long t1)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { split_project_avx2(J, gi, t0, t1); return; }
#endif
    split_project_generic(J, gi, t0, t1);
}

static void do_split_recur(const Job *J, Split *S, int tid, int n, void (*ready)(void *, long), void *ctx)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { split_recur_avx2(J, S, tid, n, ready, ctx); return; }
#endif
    split_recur_generic(J, S, tid, n, ready, ctx);
}

static void do_stream_frame(const float *x, const Frame *F, float *hn, int tid, int n, Barrier *bar,
                            int (*decide)(void *), void *ctx)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2) { stream_frame_avx2(x, F, hn, tid, n, bar, decide, ctx); return; }
#endif
    stream_frame_generic(x, F, hn, tid, n, bar, decide, ctx);
}

/* ------------------------------------------------------------------------------------------ threads
 * A call that uses several threads hands its Team to n - 1 pool helpers and never waits for one to turn up:
 * here a thread sometimes takes milliseconds to get a core (a new one: 20-80 us usually, 4 ms at times).
 * Work is claimed in chunks from an atomic counter, so the calling thread does whatever the others have not
 * claimed; a split call goes split only if every helper has joined by the time the projection is done, and
 * solo otherwise. The Team lives on the heap and the last participant frees it (a helper that starts after
 * the call returned finds nothing to claim and leaves). */
enum { OPEN, SPLIT, SOLO };

/* How many split calls and stream frames started solo ([0]) and split ([1]), and how many chunks of pipelined
 * projections helpers wrote ([2]) (module function counts(): tests check that work really was shared). */
static atomic_long counters[3];

/* Most time-step chunks of a pipelined call. */
#define PIPE_MAX_CHUNKS 64

typedef struct {
    atomic_int refs, next, done, joined, mode, err;
    const Job *J;
    int n, split, pipe;
    long nchunks;
    Split S;
    atomic_int chunk_done[PIPE_MAX_CHUNKS];   /* a pipelined call: chunk c's projection is written */
    /* a stream frame (J == NULL): its input, frame and the layers' h' buffers */
    const float *sx;
    const Frame *sf;
    float *shn;
} Team;

static void team_release(Team *tm)
{
    if (atomic_fetch_sub_explicit(&tm->refs, 1, memory_order_acq_rel) != 1) return;
    free(tm->S.gi); free(tm->S.h[0]); free(tm->S.h[1]); free(tm->S.gh); free(tm->S.q);
    free(tm);
}

/* Time-step chunk of claim number c: a pipelined reverse call claims the last steps first (it reads them first). */
static long chunk_of_claim(const Team *tm, long c)
{
    return tm->pipe && tm->J->reverse ? tm->nchunks - 1 - c : c;
}

/* Run claim number c: a batch row range, or the projection of a time-step range (split and pipelined calls). */
static void team_run_claim(Team *tm, long c, int helper)
{
    const Job *J = tm->J;
    const long nc = tm->nchunks;
    if (tm->split || tm->pipe) {
        long k = chunk_of_claim(tm, c);
        do_split_project(J, tm->S.gi, J->T * k / nc, J->T * (k + 1) / nc);
        if (tm->pipe) {
            if (helper) atomic_fetch_add_explicit(&counters[2], 1, memory_order_relaxed);
            atomic_store_explicit(&tm->chunk_done[k], 1, memory_order_release);
        }
    } else if (do_rows(J, J->B * c / nc, J->B * (c + 1) / nc)) {
        atomic_store(&tm->err, 1);
    }
    atomic_fetch_add_explicit(&tm->done, 1, memory_order_acq_rel);
}

/* Claim and run chunks until none are left (helper: called by a pool helper, not the calling thread). */
static void team_claim(Team *tm, int helper)
{
    long c;
    while ((c = atomic_fetch_add_explicit(&tm->next, 1, memory_order_acq_rel)) < tm->nchunks)
        team_run_claim(tm, c, helper);
}

/* A pipelined call's recurrence, before step s: every active row's projection for its time position at s is
 * written. A chunk nobody has claimed yet is claimed and projected here (so the call never waits for a helper
 * that has not turned up); one a helper is projecting is waited for. */
static void pipe_ready(void *ctx, long s)
{
    Team *tm = ctx;
    const Job *J = tm->J;
    const long T = J->T, nc = tm->nchunks;
    for (long r = 0; r < J->B; r++) {
        long t = row_time(J, s, r);
        if (t < 0) continue;
        long k = t * nc / T;                     /* the chunk [T k / nc, T (k + 1) / nc) holding t */
        while (T * k / nc > t) k--;
        while (T * (k + 1) / nc <= t) k++;
        long need = chunk_of_claim(tm, k);       /* its claim number (the mapping is its own inverse) */
        for (long spins = 0; !atomic_load_explicit(&tm->chunk_done[k], memory_order_acquire); ) {
            int c = atomic_load_explicit(&tm->next, memory_order_acquire);
            if (c <= need && atomic_compare_exchange_weak(&tm->next, &c, c + 1)) {
                team_run_claim(tm, c, 0);
            } else if (++spins < SPIN_PAUSES) {
                cpu_relax();
            } else {
                sched_yield();
            }
        }
    }
}

static void wait_until(atomic_int *v, int want)
{
    for (long spins = 0; atomic_load_explicit(v, memory_order_acquire) != want; spins++) {
        if (spins < SPIN_PAUSES) cpu_relax();
        else sched_yield();
    }
}

static void team_join(Team *tm)
{
    int tid = atomic_fetch_add_explicit(&tm->joined, 1, memory_order_acq_rel) + 1;
    team_claim(tm, 1);
    if (tm->split || !tm->J) {
        int mode;
        while ((mode = atomic_load_explicit(&tm->mode, memory_order_acquire)) == OPEN) cpu_relax();
        if (mode == SPLIT && tm->J) do_split_recur(tm->J, &tm->S, tid, tm->n, NULL, NULL);
        if (mode == SPLIT && !tm->J) do_stream_frame(tm->sx, tm->sf, tm->shn, tid, tm->n, &tm->S.bar, NULL, NULL);
    }
    team_release(tm);
}

/* The helper threads: started once (up to POOL_MAX), each with a slot a call drops its Team into. A helper
 * spins for about pool_spin_ns after its last job (back-to-back calls then find it awake: waking an idle core
 * here takes tens of microseconds to milliseconds) and then sleeps on a condition variable. The spin is a cost
 * to other work sharing the cores: GRUKIT_SPIN_US (read at import, default 300) sets it, 0 sleeps at once. A
 * Team a helper never took is released by the next call that replaces it. After fork() the child has no helpers: its
 * calls run on the calling thread alone (nothing ever waits for a helper). */
#define POOL_MAX 63
static long pool_spin_ns = 300000L;

static struct {
    _Atomic(Team *) slot[POOL_MAX];
    atomic_int sleeping[POOL_MAX];
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *pool_helper(void *arg)
{
    long i = (long)arg;
    for (;;) {
        Team *tm = atomic_exchange_explicit(&pool.slot[i], NULL, memory_order_acq_rel);
        if (tm) {
            team_join(tm);
            continue;
        }
        long t0 = now_ns();
        int spins = 0;
        while (!atomic_load_explicit(&pool.slot[i], memory_order_acquire)) {
            cpu_relax();
            if (++spins % 256 == 0 && now_ns() - t0 >= pool_spin_ns) {
                pthread_mutex_lock(&pool.mu);
                atomic_store(&pool.sleeping[i], 1);
                while (!atomic_load(&pool.slot[i]))
                    pthread_cond_wait(&pool.cv, &pool.mu);
                atomic_store(&pool.sleeping[i], 0);
                pthread_mutex_unlock(&pool.mu);
            }
        }
    }
    return NULL;
}

static void pool_after_fork_child(void)
{
    pool.started = 0;
    for (int i = 0; i < POOL_MAX; i++) {
        atomic_store(&pool.slot[i], NULL);      /* teams of the parent: not ours to release */
        atomic_store(&pool.sleeping[i], 0);
    }
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cv, NULL);
}

/* Hand tm to helpers 0 .. k-1, starting them on first use. Calls run without the GIL, so two may post at
 * once: starting helpers is done under the pool's lock, and a slot taken over by another call's Team only
 * means that call's helper never turns up (its caller does the work). */
static void pool_post(Team *tm, int k)
{
    if (k > POOL_MAX) k = POOL_MAX;
    pthread_mutex_lock(&pool.mu);
    while (pool.started < k) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&th, &attr, pool_helper, (void *)(long)pool.started) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        pool.started++;
    }
    if (k > pool.started) k = pool.started;
    pthread_mutex_unlock(&pool.mu);
    int wake = 0;
    for (int i = 0; i < k; i++) {
        atomic_fetch_add_explicit(&tm->refs, 1, memory_order_acq_rel);
        /* seq_cst here and in the helper (store sleeping, then load slot): one of the two sees the other */
        Team *old = atomic_exchange(&pool.slot[i], tm);
        if (old) team_release(old);
        wake |= atomic_load(&pool.sleeping[i]);
    }
    if (wake) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
}

/* Time steps per chunk of a pipelined call's projection: the recurrence starts after the first chunk. */
#define PIPE_STEPS 8

/* Run a call on n threads. kind ROWS: batch chunks; SPLIT_UNITS: a hidden-unit split of all rows (the
 * projection shared out first); PIPELINE: the recurrence on the calling thread while helpers project the time
 * steps ahead of it (for a recurrence too small to split). Returns 0 or -1. */
enum { ROWS, SPLIT_UNITS, PIPELINE };

static int run_team(const Job *J, int n, int kind)
{
    const long T = J->T, B = J->B, H = J->H, G = 3 * J->Hp;
    const int split = kind == SPLIT_UNITS, pipe = kind == PIPELINE;
    Team *tm = calloc(1, sizeof(Team));
    if (!tm) return -1;
    tm->J = J;
    tm->n = n;
    tm->split = split;
    tm->pipe = pipe;
    if (pipe) {
        long nc = T / PIPE_STEPS;
        tm->nchunks = nc < 1 ? 1 : (nc > PIPE_MAX_CHUNKS ? PIPE_MAX_CHUNKS : nc);
    } else {
        tm->nchunks = split ? (T < 4 * n ? T : 4 * n) : n;
    }
    atomic_init(&tm->refs, 1);
    atomic_init(&tm->next, 0);
    atomic_init(&tm->done, 0);
    atomic_init(&tm->joined, 0);
    atomic_init(&tm->mode, OPEN);
    atomic_init(&tm->err, 0);
    Split *S = &tm->S;
    if (split || pipe) {
        if (!(S->gi = falloc(T * B * G)) || !(S->h[0] = falloc(B * H)) || !(S->h[1] = falloc(B * H))
            || !(S->gh = falloc(B * G)) || !(S->q = falloc(B * H))) {
            team_release(tm);
            return -1;
        }
        memcpy(S->h[0], J->h0, sizeof(float) * B * H);
        S->bar.n = n;
        atomic_init(&S->bar.count, 0);
        atomic_init(&S->bar.gen, 0);
        atomic_init(&S->bar.want_solo, 0);
    }
    pool_post(tm, n - 1);
    if (pipe) {
        do_split_recur(J, S, 0, 1, pipe_ready, tm);
        /* chunks no step needed (rows shorter than T) are closed; wait for those a helper is still writing
         * (it reads x, which is the caller's) */
        int claimed = atomic_exchange(&tm->next, (int)tm->nchunks);
        wait_until(&tm->done, claimed < tm->nchunks ? claimed : (int)tm->nchunks);
        finish_rows(J, 0, B, S->h[T & 1]);
        team_release(tm);
        return 0;
    }
    team_claim(tm, 0);
    wait_until(&tm->done, (int)tm->nchunks);     /* chunks a helper claimed and is still running */
    int rc = atomic_load(&tm->err) ? -1 : 0;
    if (split) {
        /* Every helper joined: split. Else solo, now: the mode is set before a late helper could read it. */
        int all = atomic_load_explicit(&tm->joined, memory_order_acquire) == n - 1;
        atomic_fetch_add_explicit(&counters[all], 1, memory_order_relaxed);
        atomic_store_explicit(&tm->mode, all ? SPLIT : SOLO, memory_order_release);
        do_split_recur(J, S, 0, all ? n : 1, NULL, NULL);
        finish_rows(J, 0, B, S->h[T & 1]);
    }
    team_release(tm);
    return rc;
}

#define STREAM_JOIN_WAIT_NS 3000L

/* A stream frame's decision, by the calling thread after its share of the first projection: split if every
 * helper has joined, else solo (set before a late helper could read it). */
static int stream_decide(void *ctx)
{
    Team *tm = ctx;
    /* Called as the frame starts: a spinning helper joins within a few hundred ns of the post, so wait for the
     * helpers a little (bounded: one that was descheduled or sleeps is not waited for). */
    int all = atomic_load_explicit(&tm->joined, memory_order_acquire) == tm->n - 1;
    if (!all) {
        long t0 = now_ns();
        int spins = 0;
        while (!(all = atomic_load_explicit(&tm->joined, memory_order_acquire) == tm->n - 1)
               && (++spins % 16 || now_ns() - t0 < STREAM_JOIN_WAIT_NS))
            cpu_relax();
    }
    atomic_fetch_add_explicit(&counters[all], 1, memory_order_relaxed);
    atomic_store_explicit(&tm->mode, all ? SPLIT : SOLO, memory_order_release);
    return all;
}

/* One frame of a stream on n threads (hidden units split; see stream_frame). Returns 0 or -1 (no memory). */
static int run_stream(const float *x, const Frame *F, float *hn, int n)
{
    Team *tm = calloc(1, sizeof(Team));
    if (!tm) return -1;
    tm->n = n;
    tm->sx = x; tm->sf = F; tm->shn = hn;
    atomic_init(&tm->refs, 1);
    atomic_init(&tm->mode, OPEN);
    tm->S.bar.n = n;
    pool_post(tm, n - 1);
    do_stream_frame(x, F, hn, 0, n, &tm->S.bar, stream_decide, tm);
    team_release(tm);
    return 0;
}

/* Rows split into nthreads fixed chunks; fewer rows than threads split the hidden units (unit_split) or run
 * pipelined instead (a unit split measured for B=8 and 64 at H=128-512 too: no clear gain over row chunks, and
 * at B=64 H=512 I=40 2.3x slower). */
static int run_job(const Job *J, int nthreads, int unit_split)
{
    if (nthreads > 64) nthreads = 64;
    if (nthreads > 1 && J->B < nthreads && J->B <= MAX_STACK_ROWS && J->T > 1) {
        if (unit_split && J->Hp / 16 >= nthreads) return run_team(J, nthreads, SPLIT_UNITS);
        if (!unit_split) return run_team(J, nthreads, PIPELINE);
    }
    if (nthreads > J->B) nthreads = (int)J->B;
    if (nthreads <= 1) return do_rows(J, 0, J->B);
    return run_team(J, nthreads, ROWS);
}

/* ------------------------------------------------------------------------------------------ Python */
static int need(Py_buffer *b, Py_ssize_t items, Py_ssize_t itemsize, const char *name)
{
    if (b->len < items * itemsize) {
        PyErr_Format(PyExc_ValueError, "_cgru: %s holds %zd bytes, the call needs %zd", name, b->len,
                     items * itemsize);
        return 0;
    }
    return 1;
}

static PyObject *py_forward(PyObject *self, PyObject *args)
{
    Py_buffer x, wih, bih, whh, bhh, h0, lens, out, hT;
    long T, B, I, H, Hp, ldo, oo;
    int reverse, reset_after, nthreads, unit_split = 1;
    float zo;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*w*w*lllllppfll" "i|p", &x, &wih, &bih, &whh, &bhh, &h0, &lens,
                          &out, &hT, &T, &B, &I, &H, &Hp, &reverse, &reset_after, &zo, &ldo, &oo, &nthreads,
                          &unit_split))
        return NULL;
    PyObject *res = NULL;
    long G = 3 * Hp;
    if (T < 1 || B < 1 || I < 1 || H < 1 || Hp < H || Hp % 16 || oo < 0 || oo + H > ldo) {
        PyErr_SetString(PyExc_ValueError, "_cgru.forward: inconsistent sizes");
        goto done;
    }
    if (!need(&x, T * B * I, 4, "x") || !need(&wih, I * G, 4, "wih") || !need(&bih, G, 4, "bih")
        || !need(&whh, H * G, 4, "whh") || !need(&bhh, G, 4, "bhh") || !need(&h0, B * H, 4, "h0")
        || !need(&lens, B, 8, "lens") || !need(&out, T * B * ldo, 4, "out") || !need(&hT, B * H, 4, "hT"))
        goto done;
    for (long b = 0; b < B; b++) {
        long long L = ((const long long *)lens.buf)[b];
        if (L < 0 || L > T) {
            PyErr_Format(PyExc_ValueError, "_cgru.forward: length %lld of row %ld is outside [0, %ld]", L, b, T);
            goto done;
        }
    }
    Job J = {x.buf, wih.buf, bih.buf, whh.buf, bhh.buf, h0.buf, lens.buf, out.buf, hT.buf,
             T, B, I, H, Hp, ldo, oo, reverse, reset_after, zo};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run_job(&J, nthreads, unit_split);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_NoMemory(); goto done; }
    res = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&x); PyBuffer_Release(&wih); PyBuffer_Release(&bih); PyBuffer_Release(&whh);
    PyBuffer_Release(&bhh); PyBuffer_Release(&h0); PyBuffer_Release(&lens); PyBuffer_Release(&out);
    PyBuffer_Release(&hT);
    return res;
}

/* meta (int64): L, B, H, Hp, reset_after, off_h, off_gi, off_gh, off_q, off_zo, then per layer
 * (n_in, off_W_ih, off_b_ih, off_W_hh, off_b_hh); offsets count floats of ws. ws holds the packed weights,
 * the state h (L, B, H), scratch gi, gh (B, 3Hp) and q (B, H), and the zoneout factor. */
/* Stream(ws, meta, nthreads=1): the stream held in ws, advanced by one frame by stream(x) (see stream_call) or
 * stream.advance(x). It keeps both buffers (checked once, here), so a frame pays for no buffer request (a
 * numpy frame) or one (advance: any C-contiguous float32 buffer of B * n_in values). */
typedef struct {
    PyObject_HEAD
    Py_buffer ws, meta;
    int held, nthreads;
    long mm[10 + 5 * 64];
    Frame frame;                                /* the frame of ws, described by meta */
    Py_ssize_t x_bytes;
    float *hn;                                  /* (2, B, H): the layers' h' while the threads split a frame */
} StreamObj;

static void stream_drop(StreamObj *self)
{
    if (self->held) {
        PyBuffer_Release(&self->ws);
        PyBuffer_Release(&self->meta);
        self->held = 0;
    }
    free(self->hn);
    self->hn = NULL;
}

static void stream_dealloc(StreamObj *self)
{
    stream_drop(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int stream_init(StreamObj *self, PyObject *args, PyObject *kw)
{
    PyObject *ws, *meta;
    int nthreads = 1;
    if (!PyArg_ParseTuple(args, "OO|i", &ws, &meta, &nthreads)) return -1;
    stream_drop(self);
    if (PyObject_GetBuffer(ws, &self->ws, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return -1;
    if (PyObject_GetBuffer(meta, &self->meta, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&self->ws);
        return -1;
    }
    self->held = 1;
    const long long *m = self->meta.buf;
    long n = self->meta.len / 8;
    if (n < 15 || n > 10 + 5 * 64 || n != 10 + 5 * m[0] || m[1] < 1 || m[1] > MAX_STACK_ROWS
        || self->ws.len / 4 <= m[9]) {
        PyErr_SetString(PyExc_ValueError, "_cgru.Stream: meta does not describe ws (or more than 64 layers)");
        stream_drop(self);
        return -1;
    }
    for (long i = 0; i < n; i++) self->mm[i] = (long)m[i];
    /* every region meta names must lie inside ws: the kernel trusts these offsets */
    const long *mm = self->mm, L = mm[0], B = mm[1], H = mm[2], Hp = mm[3], G = 3 * Hp, nf = self->ws.len / 4;
    int ok = H >= 1 && Hp >= H && Hp % 16 == 0 && mm[5] >= 0 && mm[5] + L * B * H <= nf
             && mm[6] >= 0 && mm[6] + B * G <= nf && mm[7] >= 0 && mm[7] + B * G <= nf
             && mm[8] >= 0 && mm[8] + B * H <= nf && mm[9] >= 0 && mm[9] < nf;
    for (long l = 0; ok && l < L; l++) {
        const long *q = mm + 10 + 5 * l;        /* n_in, W_ih, b_ih, W_hh, b_hh */
        ok = q[0] >= 1 && (l == 0 || q[0] == H) && q[1] >= 0 && q[1] + G * q[0] <= nf && q[2] >= 0
             && q[2] + G <= nf && q[3] >= 0 && q[3] + G * H <= nf && q[4] >= 0 && q[4] + G <= nf;
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "_cgru.Stream: meta does not describe ws (a region lies outside it)");
        stream_drop(self);
        return -1;
    }
    float *w = self->ws.buf;
    Frame *F = &self->frame;
    *F = (Frame){.L = L, .B = B, .H = H, .Hp = Hp, .reset_after = mm[4] != 0, .rowmajor = 0, .zo = w[mm[9]],
                 .h = w + mm[5], .gi = w + mm[6], .gh = w + mm[7], .q = w + mm[8]};
    for (long l = 0; l < L; l++) {
        const long *q = mm + 10 + 5 * l;
        F->layer[l] = (FrameLayer){q[0], w + q[1], w + q[2], w + q[3], w + q[4]};
    }
    self->x_bytes = (Py_ssize_t)(B * mm[10] * 4);
    self->nthreads = nthreads < 1 ? 1 : (nthreads > 64 ? 64 : nthreads);
    if (self->nthreads > Hp / 16) self->nthreads = (int)(Hp / 16);
    if (self->nthreads > 1 && !(self->hn = falloc(2 * B * H))) {
        PyErr_NoMemory();
        stream_drop(self);
        return -1;
    }
    return 0;
}

/* One frame from a buffer (any object exporting B * n_in C-contiguous float32 values). */
static int stream_run(StreamObj *self, const float *x)
{
    if (self->nthreads > 1) return run_stream(x, &self->frame, self->hn, self->nthreads);
    do_stream_frame(x, &self->frame, NULL, 0, 1, NULL, NULL, NULL);
    return 0;
}

static PyObject *no_stream(void)
{
    PyErr_SetString(PyExc_ValueError, "_cgru.Stream: no packed stream (init was not called or released)");
    return NULL;
}

static PyObject *stream_advance(StreamObj *self, PyObject *arg)
{
    if (!self->held) return no_stream();
    Py_buffer x;
    if (PyObject_GetBuffer(arg, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (x.len != self->x_bytes || x.itemsize != 4 || !x.format || strcmp(x.format, "f") != 0) {
        PyErr_Format(PyExc_ValueError, "_cgru.Stream: the frame must hold %zd float32 values", self->x_bytes / 4);
        PyBuffer_Release(&x);
        return NULL;
    }
    int rc = stream_run(self, x.buf);
    PyBuffer_Release(&x);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *stream_release(StreamObj *self, PyObject *noargs)
{
    stream_drop(self);
    Py_RETURN_NONE;
}

static PyTypeObject StreamType;

/* stream(x): the frame call, kept as short as the streaming API can make it. An exact numpy float32 array,
 * aligned, C-contiguous, in native byte order, of shape (B, n_in) (or (n_in,) when B == 1) runs here and gives
 * a new array (B, H) (or (H,)): the top layer's state. Anything else goes to the subclass's _frame(x) (grukit's
 * GRUStream: torch frames, conversions, error messages); the bare type refuses it. */
static PyObject *stream_call(StreamObj *self, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 1 || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "stream(x): one frame");
        return NULL;
    }
    PyObject *arg = PyTuple_GET_ITEM(args, 0);
    if (self->held && PyArray_CheckExact(arg)) {
        PyArrayObject *a = (PyArrayObject *)arg;
        const long *mm = self->mm, L = mm[0], B = mm[1], H = mm[2], I = mm[10];
        int nd = PyArray_NDIM(a);
        const npy_intp *d = PyArray_DIMS(a);
        if (PyArray_TYPE(a) == NPY_FLOAT32 && PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a)
            && ((nd == 2 && d[0] == B && d[1] == I) || (nd == 1 && B == 1 && d[0] == I))) {
            npy_intp od[2] = {B, H};
            PyObject *out = PyArray_SimpleNew(nd, nd == 2 ? od : od + 1, NPY_FLOAT32);
            if (!out) return NULL;
            if (stream_run(self, PyArray_DATA(a))) {
                Py_DECREF(out);
                return PyErr_NoMemory();
            }
            memcpy(PyArray_DATA((PyArrayObject *)out), (const float *)self->ws.buf + mm[5] + (L - 1) * B * H,
                   (size_t)(B * H) * sizeof(float));
            return out;
        }
    }
    if (Py_TYPE(self) == &StreamType) {
        if (!self->held) return no_stream();
        PyErr_Format(PyExc_ValueError, "_cgru.Stream: the frame must be a C-contiguous float32 numpy array of "
                     "shape (%ld, %ld)", self->mm[1], self->mm[10]);
        return NULL;
    }
    static PyObject *name = NULL;
    if (!name && !(name = PyUnicode_InternFromString("_frame"))) return NULL;
    return PyObject_CallMethodOneArg((PyObject *)self, name, arg);
}

static PyMethodDef stream_methods[] = {
    {"advance", (PyCFunction)stream_advance, METH_O,
     "advance(x): one frame from any buffer of B * n_in C-contiguous float32 values; returns None"},
    {"release", (PyCFunction)stream_release, METH_NOARGS, "drop the packed stream (calls then go to _frame)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef stream_members[] = {
    {"nthreads", T_INT, offsetof(StreamObj, nthreads), READONLY, "threads a frame is split over"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_cgru.Stream",
    .tp_basicsize = sizeof(StreamObj),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Stream(ws, meta, nthreads=1): stream(x) advances the packed stream in ws by one frame",
    .tp_methods = stream_methods,
    .tp_members = stream_members,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)stream_init,
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_call = (ternaryfunc)stream_call,
};

/* Plan(weights, L, D, I, H, Hp, reset_after): the packed weights of a whole GRU (per layer and direction W_ih,
 * b_ih, W_hh, b_hh, in that order; checked once, here, and held), for plan.run: an inference forward of every
 * layer and direction in one call, the cheapest one GRU.forward can make. */
typedef struct {
    PyObject_HEAD
    Py_buffer *bufs;
    long nbufs, L, D, I, H, Hp;
    int reset_after;
} PlanObj;

static void plan_drop(PlanObj *self)
{
    for (long i = 0; i < self->nbufs; i++) PyBuffer_Release(&self->bufs[i]);
    free(self->bufs);
    self->bufs = NULL;
    self->nbufs = 0;
}

static void plan_dealloc(PlanObj *self)
{
    plan_drop(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int plan_init(PlanObj *self, PyObject *args, PyObject *kw)
{
    PyObject *seq;
    long L, D, I, H, Hp;
    int reset_after;
    if (!PyArg_ParseTuple(args, "Olllllp", &seq, &L, &D, &I, &H, &Hp, &reset_after)) return -1;
    plan_drop(self);
    if (L < 1 || L > 64 || D < 1 || D > 2 || I < 1 || H < 1 || Hp < H || Hp % 16) {
        PyErr_SetString(PyExc_ValueError, "_cgru.Plan: inconsistent sizes");
        return -1;
    }
    PyObject *fast = PySequence_Fast(seq, "_cgru.Plan: weights must be a sequence");
    if (!fast) return -1;
    long n = (long)PySequence_Fast_GET_SIZE(fast);
    if (n != 4 * L * D) {
        PyErr_Format(PyExc_ValueError, "_cgru.Plan: %ld weight arrays for %ld layers x %ld directions (want 4 each)",
                     n, L, D);
        Py_DECREF(fast);
        return -1;
    }
    if (!(self->bufs = calloc((size_t)n, sizeof(Py_buffer)))) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    const long G = 3 * Hp;
    for (long i = 0; i < n; i++) {
        long k = i % 4, in = i / (4 * D) == 0 ? I : D * H;
        long want = k == 0 ? in * G : k == 2 ? H * G : G;
        Py_buffer *b = &self->bufs[i];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) break;
        self->nbufs = i + 1;
        if (b->itemsize != 4 || !b->format || strcmp(b->format, "f") != 0 || b->len != want * 4) {
            PyErr_Format(PyExc_ValueError, "_cgru.Plan: weight array %ld must hold %ld float32 values", i, want);
            break;
        }
    }
    Py_DECREF(fast);
    if (PyErr_Occurred()) {
        plan_drop(self);
        return -1;
    }
    self->L = L; self->D = D; self->I = I; self->H = H; self->Hp = Hp; self->reset_after = reset_after;
    return 0;
}

/* plan.run(x_address, T, B, hx_address_or_0, lens_or_None, zo, n_first, n_rest, unit_split, l0=0, l1=L)
 *   -> (out, h_n): layers [l0, l1) (every direction) of an inference forward. x at that address is a
 * C-contiguous float32 (T, B, I) array (I: the input size for l0 = 0, D*H above) and hx (0: zeros) the
 * (L*D, B, H) state's rows from layer l0 on, both alive for the call (the caller checks them: grukit's
 * fused_cpu); lens (B,) int64 valid steps per row (None: all T); out (T, B, D*H) and h_n ((l1-l0)*D, B, H) are
 * new arrays. n_first threads for the first layer, n_rest for the others. */
static PyObject *plan_run(PlanObj *self, PyObject *args)
{
    unsigned long long xa, ha;
    long T, B, l0 = 0, l1 = -1;
    PyObject *lens_obj;
    float zo;
    int n0, n1, split;
    if (!PyArg_ParseTuple(args, "KllKOfiip|ll", &xa, &T, &B, &ha, &lens_obj, &zo, &n0, &n1, &split, &l0, &l1))
        return NULL;
    if (!self->nbufs) {
        PyErr_SetString(PyExc_ValueError, "_cgru.Plan: no weights (init was not called)");
        return NULL;
    }
    if (l1 < 0) l1 = self->L;
    if (T < 1 || B < 1 || !xa || l0 < 0 || l1 > self->L || l0 >= l1) {
        PyErr_SetString(PyExc_ValueError, "_cgru.Plan.run: inconsistent sizes");
        return NULL;
    }
    const long D = self->D, H = self->H, DH = D * H, NL = l1 - l0;
    long long *lens = malloc(sizeof(long long) * (size_t)B);
    if (!lens) return PyErr_NoMemory();
    if (lens_obj == Py_None) {
        for (long b = 0; b < B; b++) lens[b] = T;
    } else {
        Py_buffer lb;
        if (PyObject_GetBuffer(lens_obj, &lb, PyBUF_C_CONTIGUOUS) < 0) { free(lens); return NULL; }
        int ok = lb.len == B * 8 && lb.itemsize == 8;
        for (long b = 0; ok && b < B; b++) {
            lens[b] = ((const long long *)lb.buf)[b];
            ok = lens[b] >= 0 && lens[b] <= T;
        }
        PyBuffer_Release(&lb);
        if (!ok) {
            free(lens);
            PyErr_Format(PyExc_ValueError, "_cgru.Plan.run: lens must hold %ld int64 values in [0, %ld]", B, T);
            return NULL;
        }
    }
    npy_intp od[3] = {T, B, DH}, hd[3] = {NL * D, B, H};
    PyObject *out = PyArray_SimpleNew(3, od, NPY_FLOAT32), *hn = PyArray_SimpleNew(3, hd, NPY_FLOAT32);
    float *zeros = ha ? NULL : calloc((size_t)(NL * D * B * H), sizeof(float));
    float *mid = NL > 1 ? falloc((NL > 2 ? 2 : 1) * T * B * DH) : NULL;
    int rc = 0;
    if (!out || !hn || (!ha && !zeros) || (NL > 1 && !mid)) {
        rc = -1;
        goto done;
    }
    const float *hx = ha ? (const float *)(uintptr_t)ha : zeros;
    float *o = PyArray_DATA((PyArrayObject *)out), *h = PyArray_DATA((PyArrayObject *)hn);
    Py_BEGIN_ALLOW_THREADS
    const float *in = (const float *)(uintptr_t)xa;
    for (long l = l0; l < l1 && !rc; l++) {
        float *dst = l == l1 - 1 ? o : mid + ((l - l0) & 1) * T * B * DH;
        for (long d = 0; d < D && !rc; d++) {
            const Py_buffer *w = &self->bufs[4 * (l * D + d)];
            long i = (l - l0) * D + d;
            Job J = {in, w[0].buf, w[1].buf, w[2].buf, w[3].buf, hx + i * B * H, lens, dst, h + i * B * H,
                     T, B, l ? DH : self->I, H, self->Hp, DH, d * H, d == 1, self->reset_after, zo};
            rc = run_job(&J, l == l0 ? n0 : n1, split);
        }
        in = dst;
    }
    Py_END_ALLOW_THREADS
done:
    free(lens); free(zeros); free(mid);
    if (rc) {
        Py_XDECREF(out); Py_XDECREF(hn);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    return Py_BuildValue("(NN)", out, hn);
}

static PyMethodDef plan_methods[] = {
    {"run", (PyCFunction)plan_run, METH_VARARGS,
     "run(x_address, T, B, hx_address_or_0, lens_or_None, zo, n_first, n_rest, unit_split, l0=0, l1=L) -> "
     "(out, h_n)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_cgru.Plan",
    .tp_basicsize = sizeof(PlanObj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Plan(weights, L, D, I, H, Hp, reset_after): a GRU's packed weights for plan.run (one-call inference)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plan_init,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_methods = plan_methods,
};

static PyObject *py_gemm(PyObject *self, PyObject *args)
{
    Py_buffer A, Wp, C;
    PyObject *bias_obj;
    long M, K, p0, np, ldc;
    if (!PyArg_ParseTuple(args, "y*lly*llw*lO", &A, &M, &K, &Wp, &p0, &np, &C, &ldc, &bias_obj))
        return NULL;
    Py_buffer bias = {0};
    int has_bias = bias_obj != Py_None;
    PyObject *res = NULL;
    if (has_bias && PyObject_GetBuffer(bias_obj, &bias, PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (M < 0 || K < 1 || p0 < 0 || np < 0 || ldc < 16 * np) {
        PyErr_SetString(PyExc_ValueError, "_cgru.gemm: inconsistent sizes");
        goto done;
    }
    if (!need(&A, M * K, 4, "A") || !need(&Wp, (p0 + np) * K * 16, 4, "Wp") || !need(&C, M * ldc, 4, "C")
        || (has_bias && !need(&bias, (p0 + np) * 16, 4, "bias")))
        goto done;
    do_gemm(A.buf, K, M, K, Wp.buf, p0, np, C.buf, ldc, has_bias ? bias.buf : NULL);
    res = Py_NewRef(Py_None);
done:
    if (has_bias && bias.obj) PyBuffer_Release(&bias);
    PyBuffer_Release(&A); PyBuffer_Release(&Wp); PyBuffer_Release(&C);
    return res;
}

/* same(snapshot, nbytes, addresses) -> bool: whether the memory at addresses[i] holds the next nbytes[i] bytes of
 * snapshot, for every i (the weight cache's staleness check: the caller holds the tensors at those addresses and
 * has checked their sizes). A plain memcmp: no GIL release, no threads. */
static PyObject *py_same(PyObject *self, PyObject *args)
{
    Py_buffer snap;
    PyObject *sizes_obj, *addrs_obj, *res = NULL;
    if (!PyArg_ParseTuple(args, "y*OO", &snap, &sizes_obj, &addrs_obj)) return NULL;
    PyObject *sizes = PySequence_Fast(sizes_obj, "_cgru.same: nbytes must be a sequence");
    PyObject *addrs = sizes ? PySequence_Fast(addrs_obj, "_cgru.same: addresses must be a sequence") : NULL;
    if (!addrs) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sizes), off = 0;
    if (PySequence_Fast_GET_SIZE(addrs) != n) {
        PyErr_SetString(PyExc_ValueError, "_cgru.same: as many addresses as sizes");
        goto done;
    }
    int same = 1;
    for (Py_ssize_t i = 0; i < n && same; i++) {
        Py_ssize_t nb = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(sizes, i));
        unsigned long long ad = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(addrs, i));
        if (PyErr_Occurred()) goto done;
        if (nb < 0 || off + nb > snap.len || (!ad && nb)) {
            PyErr_SetString(PyExc_ValueError, "_cgru.same: sizes exceed the snapshot");
            goto done;
        }
        same = nb == 0 || memcmp((const void *)(uintptr_t)ad, (const char *)snap.buf + off, (size_t)nb) == 0;
        off += nb;
    }
    res = PyBool_FromLong(same);
done:
    Py_XDECREF(sizes); Py_XDECREF(addrs);
    PyBuffer_Release(&snap);
    return res;
}

/* step(x_address, h_address, B, H, reset_after, zo, nthreads, layers) -> None: one streaming step of every
 * layer, reading torch's weight tensors in place (no packed copy, so no copy can be stale). layers is a tuple
 * of 5 ints per layer: (n_in, W_ih, b_ih or 0, W_hh, b_hh or 0), the addresses of C-contiguous float32 tensors
 * of shapes (3H, n_in), (3H,), (3H, H), (3H,); x is (B, n_in_0) and h the (L, B, H) state, updated in place.
 * The caller (grukit's fused_cpu) checks every shape and keeps the tensors alive for the call. */
static PyObject *py_step(PyObject *self, PyObject *args)
{
    unsigned long long xa, ha;
    long B, H;
    int reset_after, nthreads;
    float zo;
    PyObject *layers;
    if (!PyArg_ParseTuple(args, "KKllpfiO!", &xa, &ha, &B, &H, &reset_after, &zo, &nthreads, &PyTuple_Type,
                          &layers))
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(layers);
    const long L = (long)(n / 5);
    if (n % 5 || L < 1 || L > MAX_LAYERS || B < 1 || B > MAX_STACK_ROWS || H < 1 || !xa || !ha) {
        PyErr_SetString(PyExc_ValueError, "_cgru.step: inconsistent sizes");
        return NULL;
    }
    const long Hp = (H + PANEL - 1) / PANEL * PANEL, G = 3 * Hp;
    Frame F = {.L = L, .B = B, .H = H, .Hp = Hp, .reset_after = reset_after, .rowmajor = 1, .zo = zo,
               .h = (float *)(uintptr_t)ha};
    for (long l = 0; l < L; l++) {
        unsigned long long v[5];
        for (int i = 0; i < 5; i++) v[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(layers, 5 * l + i));
        if (PyErr_Occurred()) return NULL;
        if (!v[0] || !v[1] || !v[3] || (l && (long)v[0] != H)) {
            PyErr_SetString(PyExc_ValueError, "_cgru.step: a layer without weights or with the wrong input size");
            return NULL;
        }
        F.layer[l] = (FrameLayer){(long)v[0], (const float *)(uintptr_t)v[1], (const float *)(uintptr_t)v[2],
                                  (const float *)(uintptr_t)v[3], (const float *)(uintptr_t)v[4]};
    }
    if (nthreads > Hp / PANEL) nthreads = (int)(Hp / PANEL);
    float *scratch = falloc(2 * B * G + B * H + (nthreads > 1 ? 2 * B * H : 0));
    if (!scratch) return PyErr_NoMemory();
    F.gi = scratch; F.gh = scratch + B * G; F.q = scratch + 2 * B * G;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    if (nthreads > 1) rc = run_stream((const float *)(uintptr_t)xa, &F, F.q + B * H, nthreads);
    else do_stream_frame((const float *)(uintptr_t)xa, &F, NULL, 0, 1, NULL, NULL, NULL);
    Py_END_ALLOW_THREADS
    free(scratch);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_counts(PyObject *self, PyObject *noargs)
{
    return Py_BuildValue("{sl,sl,sl}", "solo", (long)atomic_load(&counters[0]), "split",
                         (long)atomic_load(&counters[1]), "helper_chunks", (long)atomic_load(&counters[2]));
}

static PyObject *py_isa(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(use_avx2 ? "avx2" : "generic");
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "forward(x, wih, bih, whh, bhh, h0, lens, out, hT, T, B, I, H, Hp, "
                                          "reverse, reset_after, zo, ldo, oo, nthreads, unit_split=True)"},
    {"gemm", py_gemm, METH_VARARGS, "gemm(A, M, K, Wp, p0, np, C, ldc, bias)"},
    {"step", py_step, METH_VARARGS, "step(x_address, h_address, B, H, reset_after, zo, nthreads, layers): one "
                                    "streaming step reading torch's weights in place"},
    {"same", py_same, METH_VARARGS, "same(snapshot, nbytes, addresses) -> bool: the memory still holds the snapshot"},
    {"counts", py_counts, METH_NOARGS,
     "{solo, split, helper_chunks}: split calls and stream frames that went solo (no helper in time) and split, "
     "and chunks of pipelined projections written by helpers"},
    {"isa", py_isa, METH_NOARGS, "the instruction set the kernels use: 'avx2' or 'generic'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_cgru", "grukit's compiled GRU kernels", -1,
                                       methods};

PyMODINIT_FUNC PyInit__cgru(void)
{
    const char *want = getenv("GRUKIT_CPU_ISA"), *spin = getenv("GRUKIT_SPIN_US");
    use_avx2 = 0;
    if (spin && *spin) {
        char *end;
        long us = strtol(spin, &end, 10);
        if (*end || us < 0 || us > 10000000L) {
            PyErr_Format(PyExc_ValueError, "GRUKIT_SPIN_US must be a whole number of microseconds in [0, 10000000], "
                         "got '%s'", spin);
            return NULL;
        }
        pool_spin_ns = us * 1000L;
    }
    pthread_atfork(NULL, NULL, pool_after_fork_child);
    import_array();
#ifdef HAVE_AVX2_BUILD
    __builtin_cpu_init();
    if (!(want && strcmp(want, "generic") == 0))
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    if (PyType_Ready(&StreamType) < 0 || PyType_Ready(&PlanType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&moduledef);
    if (!mod) return NULL;
    if (PyModule_AddIntConstant(mod, "MAX_STACK_ROWS", MAX_STACK_ROWS) < 0
        || PyModule_AddIntConstant(mod, "PIPE_STEPS", PIPE_STEPS) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&StreamType);
    if (PyModule_AddObject(mod, "Stream", (PyObject *)&StreamType) < 0) {
        Py_DECREF(&StreamType);
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(mod, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(&PlanType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
