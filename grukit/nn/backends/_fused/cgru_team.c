/* Threads of grukit's compiled kernels: the meeting barrier, the helper pool and teams (batch-row chunks,
 * hidden-unit splits, pipelined projections, split stream frames). */
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include "cgru.h"

/* Returns solo as decided at this meeting. */
int barrier_wait(Barrier *b)
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

long team_count(int which) { return (long)atomic_load(&counters[which]); }

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
int run_stream(const float *x, const Frame *F, float *hn, int n)
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
 * pipelined instead (a unit split never wins over row chunks when there are enough rows: bench/README.md). */
int run_job(const Job *J, int nthreads, int unit_split)
{
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads > 1 && J->B < nthreads && J->B <= MAX_STACK_ROWS && J->T > 1) {
        if (unit_split && J->Hp / 16 >= nthreads) return run_team(J, nthreads, SPLIT_UNITS);
        if (!unit_split) return run_team(J, nthreads, PIPELINE);
    }
    if (nthreads > J->B) nthreads = (int)J->B;
    if (nthreads <= 1) return do_rows(J, 0, J->B);
    return run_team(J, nthreads, ROWS);
}

/* Set at import: how long helpers spin after a job (GRUKIT_SPIN_US), and the fork handler. */
void pool_configure(long spin_ns)
{
    pool_spin_ns = spin_ns;
    pthread_atfork(NULL, NULL, pool_after_fork_child);
}

