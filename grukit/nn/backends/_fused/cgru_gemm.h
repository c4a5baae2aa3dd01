/* Kernels, matmuls (compiled twice by cgru_kernels.c: FN(x) names the ISA's copy, ATTR its target).
 *
 * Packed weights ("panels"): a weight of K inputs and 3 gates of H units is stored as P = 3 Hp / PANEL panels of
 * shape (K, PANEL), Hp = H rounded up to PANEL; gate g owns panels [g Hp / PANEL, (g + 1) Hp / PANEL) and the
 * padding columns are zero. A gate row of length 3 Hp keeps gate g at offset g Hp.
 *
 * Every output element of a matmul is one fixed chain of multiply-adds (see each kernel), whatever register block
 * computes it, so a row's result does not depend on the batch size or on how rows are split across threads. */

/* C[m, 0:PANEL np) (row stride ldc) = A[m, 0:K) (row stride lda) @ panels [p0, p0+np) (+ bias[p PANEL ..]): each
 * element one chain of fused multiply-adds over k = 0 .. K-1 from 0, the bias added last. */
static ATTR void FN(gemm)(const float *A, long lda, long M, long K, const float *Wp, long p0, long np,
                          float *C, long ldc, const float *bias)
{
    const long PS = K * PANEL;                     /* floats per panel */
    /* Row blocks of MB rows whose A (at most GEMM_BLOCK_FLOATS) stays in L1 while every panel passes by; each
     * panel is read once per block and used by all its 4-row groups. */
    long MB = (GEMM_BLOCK_FLOATS / (K > 0 ? K : 1)) / 4 * 4;
    MB = MB < 4 ? 4 : (MB > GEMM_MAX_BLOCK_ROWS ? GEMM_MAX_BLOCK_ROWS : MB);
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
                v8 w0 = LD(w + k * PANEL), w1 = LD(w + k * PANEL + LANES);
                v8 b;
                b = BC(a0[k]); c00 += b * w0; c01 += b * w1;
                b = BC(a1[k]); c10 += b * w0; c11 += b * w1;
                b = BC(a2[k]); c20 += b * w0; c21 += b * w1;
                b = BC(a3[k]); c30 += b * w0; c31 += b * w1;
            }
            long o = (p - p0) * PANEL;
            v8 b0 = V8ZERO, b1 = V8ZERO;
            if (bias) { b0 = LD(bias + p * PANEL); b1 = LD(bias + p * PANEL + LANES); }
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
                c0 += b * LD(w0 + k * PANEL); c1 += b * LD(w0 + k * PANEL + LANES);
                c2 += b * LD(w1 + k * PANEL); c3 += b * LD(w1 + k * PANEL + LANES);
                c4 += b * LD(w2 + k * PANEL); c5 += b * LD(w2 + k * PANEL + LANES);
                c6 += b * LD(w3 + k * PANEL); c7 += b * LD(w3 + k * PANEL + LANES);
            }
            float *o = r + (p - p0) * PANEL;
            if (bias) {
                const float *bb = bias + p * PANEL;
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
                c0 += b * LD(w + k * PANEL); c1 += b * LD(w + k * PANEL + LANES);
            }
            float *o = r + (p - p0) * PANEL;
            if (bias) { c0 += LD(bias + p * PANEL); c1 += LD(bias + p * PANEL + LANES); }
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
        float *cm = C + m * ldc;
        long j = 0;
        if (K8 == K)                             /* no k tail: whole blocks end in vector adds and stores */
            for (; j + LANES <= N; j += LANES) {
                const float *w = W + j * ldw;
                v8 c[8] = {V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO, V8ZERO};
                for (long k = 0; k < K8; k += LANES) {
                    v8 av = LD(a + k);
                    for (int i = 0; i < LANES; i++) c[i] += av * LD(w + i * ldw + k);
                }
                v8 r = FN(reduce8)(c);
                if (bias) r += LD(bias + j);
                ST(cm + j, r);
            }
        for (; j < N; j += LANES) {
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
                cm[j + i] = v;
            }
        }
    }
}
