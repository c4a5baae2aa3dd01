/* Kernels, recurrence (compiled twice by cgru_kernels.c): the step of R rows, a call's whole sequence for a chunk
 * of rows, a stream frame of every layer, and the parts of split calls. Letters as in equations.py. */

/* Panels [u0, u1) (of Hp / PANEL per gate) of each gate in [g0, g1) of a weight W of K inputs (+ bias), for R rows
 * of A: out[:, g*Hp + 16u0 ...] (row stride 3Hp). W is packed in panels, or (rowmajor) torch's (3H, K) read in
 * place, its bias (3H,) or NULL; then only the H real units of a gate are written. */
static inline ATTR void FN(gate_cols)(const float *A, long lda, long R, long K, const float *W, const float *bias,
                                      float *out, long H, long Hp, int rowmajor, long g0, long g1, long u0, long u1)
{
    const long PH = Hp / PANEL, G = 3 * Hp;
    if (rowmajor) {
        const long j0 = PANEL * u0, j1 = PANEL * u1 < H ? PANEL * u1 : H;
        if (j1 > j0)
            for (long g = g0; g < g1; g++)
                FN(gemm_rows)(A, lda, R, K, W + (g * H + j0) * K, K, j1 - j0, out + g * Hp + j0, G,
                              bias ? bias + g * H + j0 : NULL);
        return;
    }
    if (u0 == 0 && u1 == PH) {                   /* all units: the gates' panels are contiguous */
        FN(gemm)(A, lda, R, K, W, g0 * PH, (g1 - g0) * PH, out + g0 * Hp, G, bias);
        return;
    }
    for (long g = g0; g < g1; g++)
        FN(gemm)(A, lda, R, K, W, g * PH + u0, u1 - u0, out + g * Hp + PANEL * u0, G, bias);
}

/* W_hh panels [u0, u1) of each gate in gates [g0, g1) for R rows of A: gh[:, g*Hp + 16u0 ...]. */
static inline ATTR void FN(gate_gemm)(const Job *J, const float *A, long R, float *gh, long g0, long g1, long u0,
                                      long u1)
{
    FN(gate_cols)(A, J->H, R, J->H, J->whh, J->bhh, gh, J->H, J->Hp, J->rowmajor, g0, g1, u0, u1);
}

/* One recurrent step of R rows for the units of panels [u0, u1) (of Hp / PANEL per gate): reads the state hin
 * (R, H), writes h' of those units to hout (may be hin) and out_rows[r]; a NULL out row is inactive (its
 * state is carried over). gi rows at gi_rows[r] (3Hp each); gh (R, 3Hp), q (R, H) scratch. With bar, the
 * threads that share this step (one per unit range) meet where the Cho form needs all of q. */
static ATTR void FN(step_rows)(const Job *J, long R, const float *hin, float *hout, const float **gi_rows,
                               float **out_rows, float *gh, float *q, long u0, long u1, Barrier *bar)
{
    const long H = J->H, Hp = J->Hp, G = 3 * Hp;
    const long j0 = PANEL * u0, j1 = PANEL * u1 < H ? PANEL * u1 : H, n = j1 - j0;
    if (n <= 0) {                                /* more threads than unit panels: only meet the others */
        if (!J->reset_after && bar) (void)barrier_wait(bar);
        return;
    }
    if (J->reset_after) {
        FN(gate_gemm)(J, hin, R, gh, 0, 3, u0, u1);
    } else {
        FN(gate_gemm)(J, hin, R, gh, 0, 2, u0, u1);
        for (long r = 0; r < R; r++)             /* inactive rows: q is computed and not used */
            FN(gates_cho_r)((gi_rows[r] ? gi_rows[r] : gh + r * G) + j0, gh + r * G + j0, hin + r * H + j0,
                            q + r * H + j0, n);
        if (bar) (void)barrier_wait(bar);        /* W_hn reads all of q */
        FN(gate_gemm)(J, q, R, gh, 2, 3, u0, u1);
    }
    for (long r = 0; r < R; r++) {
        const float *hi = hin + r * H + j0;
        float *ho = hout + r * H + j0;
        if (!out_rows[r]) {
            if (ho != hi) memcpy(ho, hi, sizeof(float) * n);
        } else {
            FN(gates)(gi_rows[r] + j0, gh + r * G + j0, hi, ho, out_rows[r] + j0, n, Hp, J->zo, J->reset_after);
        }
    }
}

/* Step s of rows [r0, r0 + R): each row's input-projection row and output row at its time position (see
 * row_time); rows past their length get NULL for both (inactive). gi holds (T, R, 3Hp) with GI_BY_STEP,
 * (R, T, 3Hp) with GI_BY_ROW, one step (R, 3Hp) with GI_ONE_STEP. */
static inline ATTR void FN(row_ptrs)(const Job *J, long s, long r0, long R, const float *gi, int layout,
                                     const float **gi_rows, float **out_rows)
{
    const long T = J->T, G = 3 * J->Hp;
    for (long r = 0; r < R; r++) {
        long t = row_time(J, s, r0 + r);
        if (t < 0) { gi_rows[r] = NULL; out_rows[r] = NULL; continue; }
        gi_rows[r] = gi + (layout == GI_BY_STEP ? t * R + r : layout == GI_BY_ROW ? r * T + t : r) * G;
        out_rows[r] = J->out + (t * J->B + r0 + r) * J->ldo + J->oo;
    }
}

/* The whole sequence for batch rows [r0, r1): projection of their inputs, then the recurrence. */
static ATTR int FN(run_rows)(const Job *J, long r0, long r1)
{
    const long T = J->T, B = J->B, I = J->I, H = J->H, Hp = J->Hp, G = 3 * Hp, R = r1 - r0;
    /* The projection. With at least 8 rows, one GEMM per step over the rows, just before the step reads it
     * (gi is one step, in cache, and the call's memory does not grow with T). With fewer rows:
     * all of them in the batch, one GEMM over all T * B input rows (gi is (T, B, 3Hp)); a chunk, one GEMM over
     * the T steps of each row (gi is (R, T, 3Hp)): a GEMM of 1-4 rows per step would run the slow single-row
     * kernel. */
    const int layout = R >= 8 ? GI_ONE_STEP : R == B ? GI_BY_STEP : GI_BY_ROW;
    float *gi = NULL, *h = NULL, *gh = NULL, *q = NULL, *xs = NULL;
    const float **gi_rows = NULL;
    float **out_rows = NULL;
    int rc = -1;
    if (!(gi = falloc((layout == GI_ONE_STEP ? 1 : T) * R * G)) || !(h = falloc(R * H)) || !(gh = falloc(R * G))
        || !(q = falloc(R * H)) || !(xs = falloc(layout == GI_ONE_STEP ? R * I : 1))
        || !(gi_rows = malloc(sizeof(float *) * R)) || !(out_rows = malloc(sizeof(float *) * R)))
        goto done;
    if (layout == GI_BY_STEP)
        FN(gemm)(J->x, I, T * B, I, J->wih, 0, G / PANEL, gi, G, J->bih);
    else if (layout == GI_BY_ROW)
        for (long r = 0; r < R; r++)
            FN(gemm)(J->x + (r0 + r) * I, B * I, T, I, J->wih, 0, G / PANEL, gi + r * T * G, G, J->bih);
    for (long r = 0; r < R; r++)
        memcpy(h + r * H, J->h0 + (r0 + r) * H, sizeof(float) * H);
    for (long s = 0; s < T; s++) {
        FN(row_ptrs)(J, s, r0, R, gi, layout, gi_rows, out_rows);
        if (layout == GI_ONE_STEP) {
            /* the rows' inputs at their time positions: in place in x when every row is at the same one, else
             * gathered (a reverse direction with lengths; inactive rows get zeros) */
            const long t0 = row_time(J, s, r0);
            int same = 1;
            for (long r = 1; r < R; r++) same &= row_time(J, s, r0 + r) == t0;
            const float *xin = J->x + (t0 * B + r0) * I;
            if (!same) {
                for (long r = 0; r < R; r++) {
                    long t = row_time(J, s, r0 + r);
                    if (t >= 0) memcpy(xs + r * I, J->x + (t * B + r0 + r) * I, sizeof(float) * I);
                    else memset(xs + r * I, 0, sizeof(float) * I);
                }
                xin = xs;
            }
            if (!same || t0 >= 0) FN(gemm)(xin, I, R, I, J->wih, 0, G / PANEL, gi, G, J->bih);
        }
        FN(step_rows)(J, R, h, h, gi_rows, out_rows, gh, q, 0, Hp / PANEL, NULL);
    }
    finish_rows(J, r0, r1, h);
    rc = 0;
done:
    free(gi); free(h); free(gh); free(q); free(xs); free(gi_rows); free(out_rows);
    return rc;
}

/* One streaming step of every layer of the frame F (see Frame in cgru.h), on n threads split by hidden units:
 * thread tid owns unit panels [PH * tid / n, PH * (tid + 1) / n) of each gate at every layer. Alone (n = 1, hn
 * NULL) each layer's state is updated in place. Split, layer l writes h' into hn[l & 1] (another thread may
 * still be reading the state h_l), the threads meet, and thread 0 copies it into the state while the next layer
 * reads it from hn. Thread 0 calls decide(ctx) first, before any work (the helpers start their shares only once
 * it has decided): 0 there (a helper did not turn up) means it does the frame alone; so does a meeting that says
 * solo (see barrier_wait). Every unit's arithmetic is the same either way. */
static ATTR void FN(stream_frame)(const float *x, const Frame *F, float *hn, int tid, int n, Barrier *bar,
                                  int (*decide)(void *), void *ctx)
{
    const long L = F->L, B = F->B, H = F->H, Hp = F->Hp, G = 3 * Hp, PH = Hp / PANEL;
    Job J = {0};                                 /* the fields a stream step reads are set below */
    J.H = H; J.Hp = Hp; J.reset_after = F->reset_after; J.rowmajor = F->rowmajor; J.zo = F->zo;
    float *hs = F->h, *gi = F->gi, *gh = F->gh, *q = F->q;
    const float *gi_rows[MAX_STACK_ROWS];
    float *out_rows[MAX_STACK_ROWS];
    long u0 = PH * tid / n, u1 = PH * (tid + 1) / n;
    if (bar && decide && !decide(ctx)) {        /* a helper did not turn up: the whole frame alone */
        u0 = 0; u1 = PH; bar = NULL;
    }
    for (long l = 0; l < L; l++) {
        const FrameLayer *ly = &F->layer[l];
        float *h = hs + l * B * H, *o = hn ? hn + (l & 1) * B * H : h;
        const float *in = l == 0 ? x : (hn ? hn + ((l - 1) & 1) * B * H : h - B * H);
        FN(gate_cols)(in, ly->n_in, B, ly->n_in, ly->wih, ly->bih, gi, H, Hp, F->rowmajor, 0, 3, u0, u1);
        J.whh = ly->whh; J.bhh = ly->bhh;
        for (long r = 0; r < B; r++) { gi_rows[r] = gi + r * G; out_rows[r] = o + r * H; }
        FN(step_rows)(&J, B, h, o, gi_rows, out_rows, gh, q, u0, u1, bar);
        if (bar && barrier_wait(bar)) {
            if (tid) return;
            u0 = 0; u1 = PH; bar = NULL;
        }
        if (tid == 0 && o != h) memcpy(h, o, sizeof(float) * B * H);
        else if (tid && l == L - 1) return;
    }
}

/* Split calls (fewer rows than threads): every thread takes all rows and a share of the hidden units.
 * split_project fills S->gi (T, B, 3Hp) for time steps [t0, t1) (the threads share it out in chunks). */
static ATTR void FN(split_project)(const Job *J, float *gi, long t0, long t1)
{
    const long B = J->B, I = J->I, G = 3 * J->Hp;
    FN(gemm)(J->x + t0 * B * I, I, (t1 - t0) * B, I, J->wih, 0, G / PANEL, gi + t0 * B * G, G, J->bih);
}

/* The recurrence of a split call for thread tid of n (n = 1: alone): it owns unit panels
 * [PH * tid / n, PH * (tid + 1) / n) of each gate. The state is double-buffered (a thread writes h' of its
 * units while another may still read h), so a step needs one meeting (two in the Cho form). When a meeting
 * says solo (see barrier_wait), thread 0 finishes the sequence alone and the others return: every unit's
 * arithmetic is the same either way, so the results do not change. With ready (n = 1, a pipelined call), it is
 * called before each step s and returns once the projection that step reads has been written. */
static ATTR void FN(split_recur)(const Job *J, Split *S, int tid, int n, void (*ready)(void *, long), void *ctx)
{
    const long T = J->T, B = J->B, PH = J->Hp / PANEL;
    long ua = PH * tid / n, ub = PH * (tid + 1) / n;
    Barrier *bar = n > 1 ? &S->bar : NULL;
    const float *gi_rows[MAX_STACK_ROWS];
    float *out_rows[MAX_STACK_ROWS];
    for (long s = 0; s < T; s++) {
        if (ready) ready(ctx, s);                /* (alone) the projection of step s's rows is there */
        const float *hin = S->h[s & 1];
        float *hout = S->h[(s + 1) & 1];
        FN(row_ptrs)(J, s, 0, B, S->gi, GI_BY_STEP, gi_rows, out_rows);
        FN(step_rows)(J, B, hin, hout, gi_rows, out_rows, S->gh, S->q, ua, ub, bar);
        if (bar && barrier_wait(bar)) {
            if (tid) return;
            ua = 0; ub = PH; bar = NULL;
        }
    }
}
