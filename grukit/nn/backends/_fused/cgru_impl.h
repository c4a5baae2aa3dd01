/* The float32 GRU kernels of _cgru.c, written once and compiled twice: with FN(x) = x##_avx2 and
 * ATTR = target("avx2,fma"), and with FN(x) = x##_generic and no target (the baseline ISA of the build).
 * Included by _cgru.c only.
 *
 * Packed weights ("panels"): a weight of K inputs and 3 gates of H units is stored as P = 3 * Hp / 16 panels
 * of shape (K, 16), Hp = H rounded up to 16; gate g owns panels [g * Hp / 16, (g + 1) * Hp / 16) and the
 * padding columns are zero. A gate row of length 3 * Hp keeps gate g at offset g * Hp.
 *
 * Every output element of a matmul is one chain of fused multiply-adds over k = 0 .. K-1 (starting from 0,
 * the bias added last), whatever register block computes it, so a row's result does not depend on the batch
 * size or on how rows are split across threads.
 */

/* C[m, 0:16*np) (row stride ldc) = A[m, 0:K) (row stride lda) @ panels [p0, p0+np) (+ bias[p*16..]). */
static ATTR void FN(gemm)(const float *A, long lda, long M, long K, const float *Wp, long p0, long np,
                          float *C, long ldc, const float *bias)
{
    const long PS = K * 16;                     /* floats per panel */
    /* Row blocks of MB rows whose A (at most 16 KB) stays in L1 while every panel passes by; each panel is read
     * once per block and used by all its 4-row groups. Measured (1 thread, M=64): K=256 85 GFLOP/s with 16 KB
     * blocks, 45-49 with 128 KB blocks (A then streams from L2 for every panel). */
    long MB = (4096 / (K > 0 ? K : 1)) / 4 * 4;
    MB = MB < 4 ? 4 : (MB > 256 ? 256 : MB);
    const long M4 = M / 4 * 4;
    for (long mb = 0; mb < M4; mb += MB)
    for (long p = p0; p < p0 + np; p++)
    for (long m = mb; m < M4 && m < mb + MB; m += 4) {   /* 4 rows x 1 panel: 8 accumulators */
        const float *a0 = A + m * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        {
            const float *w = Wp + p * PS;
            v8 c00 = V8ZERO, c01 = V8ZERO, c10 = V8ZERO, c11 = V8ZERO;
            v8 c20 = V8ZERO, c21 = V8ZERO, c30 = V8ZERO, c31 = V8ZERO;
            for (long k = 0; k < K; k++) {
                v8 w0 = LD(w + k * 16), w1 = LD(w + k * 16 + 8);
                v8 b;
                b = BC(a0[k]); c00 += b * w0; c01 += b * w1;
                b = BC(a1[k]); c10 += b * w0; c11 += b * w1;
                b = BC(a2[k]); c20 += b * w0; c21 += b * w1;
                b = BC(a3[k]); c30 += b * w0; c31 += b * w1;
            }
            long o = (p - p0) * 16;
            v8 b0 = V8ZERO, b1 = V8ZERO;
            if (bias) { b0 = LD(bias + p * 16); b1 = LD(bias + p * 16 + 8); }
            float *r = C + m * ldc + o;
            ST(r, c00 + b0); ST(r + 8, c01 + b1); r += ldc;
            ST(r, c10 + b0); ST(r + 8, c11 + b1); r += ldc;
            ST(r, c20 + b0); ST(r + 8, c21 + b1); r += ldc;
            ST(r, c30 + b0); ST(r + 8, c31 + b1);
        }
    }
    for (long m = M4; m < M; m++) {             /* single rows: 4 panels at a time, 8 accumulators */
        const float *a = A + m * lda;
        float *r = C + m * ldc;
        long p = p0;
        for (; p + 4 <= p0 + np; p += 4) {
            const float *w0 = Wp + p * PS, *w1 = w0 + PS, *w2 = w1 + PS, *w3 = w2 + PS;
            v8 c0 = V8ZERO, c1 = V8ZERO, c2 = V8ZERO, c3 = V8ZERO, c4 = V8ZERO, c5 = V8ZERO, c6 = V8ZERO,
               c7 = V8ZERO;
            for (long k = 0; k < K; k++) {
                v8 b = BC(a[k]);
                c0 += b * LD(w0 + k * 16); c1 += b * LD(w0 + k * 16 + 8);
                c2 += b * LD(w1 + k * 16); c3 += b * LD(w1 + k * 16 + 8);
                c4 += b * LD(w2 + k * 16); c5 += b * LD(w2 + k * 16 + 8);
                c6 += b * LD(w3 + k * 16); c7 += b * LD(w3 + k * 16 + 8);
            }
            float *o = r + (p - p0) * 16;
            if (bias) {
                const float *bb = bias + p * 16;
                c0 += LD(bb); c1 += LD(bb + 8); c2 += LD(bb + 16); c3 += LD(bb + 24);
                c4 += LD(bb + 32); c5 += LD(bb + 40); c6 += LD(bb + 48); c7 += LD(bb + 56);
            }
            ST(o, c0); ST(o + 8, c1); ST(o + 16, c2); ST(o + 24, c3);
            ST(o + 32, c4); ST(o + 40, c5); ST(o + 48, c6); ST(o + 56, c7);
        }
        for (; p < p0 + np; p++) {
            const float *w = Wp + p * PS;
            v8 c0 = V8ZERO, c1 = V8ZERO;
            for (long k = 0; k < K; k++) {
                v8 b = BC(a[k]);
                c0 += b * LD(w + k * 16); c1 += b * LD(w + k * 16 + 8);
            }
            float *o = r + (p - p0) * 16;
            if (bias) { c0 += LD(bias + p * 16); c1 += LD(bias + p * 16 + 8); }
            ST(o, c0); ST(o + 8, c1);
        }
    }
}

/* The sums of 8 accumulators, lane i = the sum of c[i]'s 8 lanes, each by the same tree
 * ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) of its lanes (horizontal adds, then the two halves). */
static inline ATTR v8 FN(hadd)(v8 a, v8 b)
{
    return SHUF(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + SHUF(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

static inline ATTR v8 FN(reduce8)(const v8 *c)
{
    v8 q0 = FN(hadd)(FN(hadd)(c[0], c[1]), FN(hadd)(c[2], c[3]));
    v8 q1 = FN(hadd)(FN(hadd)(c[4], c[5]), FN(hadd)(c[6], c[7]));
    return SHUF(q0, q1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUF(q0, q1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* The row-major matmul: C[m, j] (row stride ldc) = A[m, 0:K) . W[j, 0:K) (+ bias[j]) for j in [0, N), with W
 * in torch's own layout (N rows of K, row stride ldw), read in place. Every element is one chain: 8-lane
 * partial sums over k = 0 .. K8-1 (K8 = K rounded down to 8), reduced by reduce8's fixed tree, then the k past
 * K8 one at a time, then the bias; so a row's result does not depend on the batch size or the blocking. */
static ATTR void FN(gemm_rows)(const float *A, long lda, long M, long K, const float *W, long ldw, long N,
                               float *C, long ldc, const float *bias)
{
    const long K8 = K / LANES * LANES;
    long m = 0;
    for (; m + 4 <= M; m += 4) {                 /* 4 rows x 2 weight rows: 8 accumulators */
        const float *a[4] = {A + m * lda, A + (m + 1) * lda, A + (m + 2) * lda, A + (m + 3) * lda};
        for (long j = 0; j < N; j += 2) {
            const float *w0 = W + j * ldw, *w1 = j + 1 < N ? w0 + ldw : w0;
            v8 c[8] = {V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO};
            for (long k = 0; k < K8; k += LANES) {
                v8 x0 = LD(w0 + k), x1 = LD(w1 + k);
                for (int r = 0; r < 4; r++) {
                    v8 av = LD(a[r] + k);
                    c[2 * r] += av * x0;
                    c[2 * r + 1] += av * x1;
                }
            }
            float s[LANES];
            ST(s, FN(reduce8)(c));
            for (int r = 0; r < 4; r++)
                for (long jj = 0; jj < 2 && j + jj < N; jj++) {
                    const float *w = jj ? w1 : w0;
                    float v = s[2 * r + jj];
                    for (long k = K8; k < K; k++) v += a[r][k] * w[k];
                    if (bias) v += bias[j + jj];
                    C[(m + r) * ldc + j + jj] = v;
                }
        }
    }
    for (; m < M; m++) {                         /* single rows: 8 weight rows at a time */
        const float *a = A + m * lda;
        for (long j = 0; j < N; j += LANES) {
            const float *w[LANES];
            for (int i = 0; i < LANES; i++) w[i] = W + (j + i < N ? j + i : j) * ldw;
            v8 c[8] = {V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO};
            for (long k = 0; k < K8; k += LANES) {
                v8 av = LD(a + k);
                for (int i = 0; i < LANES; i++) c[i] += av * LD(w[i] + k);
            }
            float s[LANES];
            ST(s, FN(reduce8)(c));
            for (long i = 0; i < LANES && j + i < N; i++) {
                float v = s[i];
                for (long k = K8; k < K; k++) v += a[k] * w[i][k];
                if (bias) v += bias[j + i];
                C[m * ldc + j + i] = v;
            }
        }
    }
}

/* tanh for float32: Eigen's rational approximation (odd degree 13 over even degree 6, |x| <= 7.905),
 * the same one the numba kernels use; error a few ulps. */
static inline ATTR float FN(tanh_f)(float x)
{
    const float c = 7.90531110763549805f;
    x = x < -c ? -c : (x > c ? c : x);
    float x2 = x * x;
    float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = x2 * p + -8.60467152213735e-11f;
    p = x2 * p + 5.12229709037114e-08f;
    p = x2 * p + 1.48572235717979e-05f;
    p = x2 * p + 6.37261928875436e-04f;
    p = x2 * p + 4.89352455891786e-03f;
    p = x * p;
    float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = x2 * q + 2.26843463243900e-03f;
    q = x2 * q + 4.89352518554385e-03f;
    return p / q;
}

static inline ATTR float FN(sigm_f)(float x) { return 0.5f + 0.5f * FN(tanh_f)(0.5f * x); }

/* The same tanh on 8 lanes (GCC does not if-convert the scalar clamp, so the gate loops are written on
 * vectors; the clamp is a bitwise select). */
static inline ATTR v8 FN(tanh_v)(v8 x)
{
    const v8 c = BC(7.90531110763549805f), mc = -c;
    v8i lo = x < mc, hi = x > c;
    x = (v8)(((v8i)mc & lo) | ((v8i)x & ~lo));
    x = (v8)(((v8i)c & hi) | ((v8i)x & ~hi));
    v8 x2 = x * x;
    v8 p = x2 * BC(-2.76076847742355e-16f) + BC(2.00018790482477e-13f);
    p = x2 * p + BC(-8.60467152213735e-11f);
    p = x2 * p + BC(5.12229709037114e-08f);
    p = x2 * p + BC(1.48572235717979e-05f);
    p = x2 * p + BC(6.37261928875436e-04f);
    p = x2 * p + BC(4.89352455891786e-03f);
    p = x * p;
    v8 q = x2 * BC(1.19825839466702e-06f) + BC(1.18534705686654e-04f);
    q = x2 * q + BC(2.26843463243900e-03f);
    q = x2 * q + BC(4.89352518554385e-03f);
    return p / q;
}

static inline ATTR v8 FN(sigm_v)(v8 x) { return BC(0.5f) + BC(0.5f) * FN(tanh_v)(BC(0.5f) * x); }

/* The gates of n units of one row: gi, gh point at the units in gate r (gate z at + Hp, n at + 2Hp). In the
 * reset-after form (after != 0) the candidate reads r * (W_hn h + b_hn); in the Cho form gh + 2Hp already holds
 * W_hn (r * h) + b_hn. hin holds h; h' goes to hout and out (any of hin, hout, out may be the same array: no
 * restrict on them). */
static inline ATTR void FN(gates)(const float *restrict gi, const float *restrict gh, const float *hin,
                                  float *hout, float *out, long n, long Hp, float zo, int after)
{
    long j = 0;
    const v8 vzo = BC(zo);
    for (; j + 8 <= n; j += 8) {
        v8 ghn = LD(gh + 2 * Hp + j);
        if (after) ghn = FN(sigm_v)(LD(gi + j) + LD(gh + j)) * ghn;
        v8 z = FN(sigm_v)(LD(gi + Hp + j) + LD(gh + Hp + j));
        v8 c = FN(tanh_v)(LD(gi + 2 * Hp + j) + ghn);
        v8 hp = LD(hin + j);
        v8 hn = c + z * (hp - c);
        hn = hn + vzo * (hp - hn);
        ST(hout + j, hn);
        ST(out + j, hn);
    }
    for (; j < n; j++) {
        float ghn = gh[2 * Hp + j];
        if (after) ghn = FN(sigm_f)(gi[j] + gh[j]) * ghn;
        float z = FN(sigm_f)(gi[Hp + j] + gh[Hp + j]);
        float c = FN(tanh_f)(gi[2 * Hp + j] + ghn);
        float hp = hin[j];
        float hn = c + z * (hp - c);
        hn = hn + zo * (hp - hn);
        hout[j] = hn;
        out[j] = hn;
    }
}

/* Cho form, first half: q = r * h for n units. */
static inline ATTR void FN(gates_cho_r)(const float *gi, const float *gh, const float *hin, float *q, long n)
{
    long j = 0;
    for (; j + 8 <= n; j += 8)
        ST(q + j, FN(sigm_v)(LD(gi + j) + LD(gh + j)) * LD(hin + j));
    for (; j < n; j++)
        q[j] = FN(sigm_f)(gi[j] + gh[j]) * hin[j];
}

/* Panels [u0, u1) (of Hp / 16 per gate) of each gate in [g0, g1) of a weight W of K inputs (+ bias), for R rows
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

/* One recurrent step of R rows for the units of panels [u0, u1) (of Hp / 16 per gate): reads the state hin
 * (R, H), writes h' of those units to hout (may be hin) and out_rows[r]; a NULL out row is inactive (its
 * state is carried over). gi rows at gi_rows[r] (3Hp each); gh (R, 3Hp), q (R, H) scratch. With bar, the
 * threads that share this step (one per unit range) meet where the Cho form needs all of q. */
static ATTR void FN(step_rows)(const Job *J, long R, const float *hin, float *hout, const float **gi_rows,
                               float **out_rows, float *gh, float *q, long u0, long u1, Barrier *bar)
{
    const long H = J->H, Hp = J->Hp, G = 3 * Hp;
    const long j0 = 16 * u0, j1 = 16 * u1 < H ? 16 * u1 : H, n = j1 - j0;
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
     * (gi is one step, in cache, and the call's memory no longer grows with T: projecting every step first
     * wrote T * R * 3Hp floats out and read them back; B=64 H=I=256, 1 thread, both orders of alternating runs:
     * 800-962 vs 809-1203 us per step; B=64 H=I=512, 2 threads: no difference beyond noise). With fewer rows:
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
        FN(gemm)(J->x, I, T * B, I, J->wih, 0, G / 16, gi, G, J->bih);
    else if (layout == GI_BY_ROW)
        for (long r = 0; r < R; r++)
            FN(gemm)(J->x + (r0 + r) * I, B * I, T, I, J->wih, 0, G / 16, gi + r * T * G, G, J->bih);
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
            if (!same || t0 >= 0) FN(gemm)(xin, I, R, I, J->wih, 0, G / 16, gi, G, J->bih);
        }
        FN(step_rows)(J, R, h, h, gi_rows, out_rows, gh, q, 0, Hp / 16, NULL);
    }
    finish_rows(J, r0, r1, h);
    rc = 0;
done:
    free(gi); free(h); free(gh); free(q); free(xs); free(gi_rows); free(out_rows);
    return rc;
}

/* One streaming step of every layer of the frame F (see Frame in _cgru.c), on n threads split by hidden units:
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
    FN(gemm)(J->x + t0 * B * I, I, (t1 - t0) * B, I, J->wih, 0, G / 16, gi + t0 * B * G, G, J->bih);
}

/* The recurrence of a split call for thread tid of n (n = 1: alone): it owns unit panels
 * [PH * tid / n, PH * (tid + 1) / n) of each gate. The state is double-buffered (a thread writes h' of its
 * units while another may still read h), so a step needs one meeting (two in the Cho form). When a meeting
 * says solo (see barrier_wait), thread 0 finishes the sequence alone and the others return: every unit's
 * arithmetic is the same either way, so the results do not change. With ready (n = 1, a pipelined call), it is
 * called before each step s and returns once the projection that step reads has been written. */
static ATTR void FN(split_recur)(const Job *J, Split *S, int tid, int n, void (*ready)(void *, long), void *ctx)
{
    const long T = J->T, B = J->B, PH = J->Hp / 16;
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
