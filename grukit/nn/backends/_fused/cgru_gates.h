/* Kernels, gates (compiled twice by cgru_kernels.c): the activations and the GRU cell of equations.py with its
 * letters: r (reset), z (update), n (candidate), h' (the new state). */

/* Beyond this |x|, tanh is +-1 in float32: the rational approximation below clamps its input there. */
#define TANH_CLAMP 7.90531110763549805f

/* tanh for float32: Eigen's rational approximation (odd degree 13 over even degree 6, |x| <= TANH_CLAMP),
 * the same one the numba kernels use; error a few ulps. */
static inline ATTR float FN(tanh_f)(float x)
{
    const float c = TANH_CLAMP;
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
    const v8 c = BC(TANH_CLAMP), mc = -c;
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

/* The cell for m units of one row (equations.py's gru_step / gru_step_cho): gi, gh point at the row's
 * projections of gate r (gate z at + Hp, n at + 2 Hp); h holds the state, h' goes to hout and out (any of h, hout,
 * out may be the same array: no restrict on them).
 *   r = sigma(gi_r + gh_r),  z = sigma(gi_z + gh_z),
 *   n = tanh(gi_n + r * gh_n)  (reset after: gh_n = W_hn h + b_hn; after == 0, the Cho form: gh_n already holds
 *                               W_hn (r * h) + b_hn, see gates_cho_r),
 *   h' = n + z * (h - n),  then zoneout in evaluation: h' + zo * (h - h'). */
static inline ATTR void FN(gates)(const float *restrict gi, const float *restrict gh, const float *h,
                                  float *hout, float *out, long m, long Hp, float zo, int after)
{
    long j = 0;
    const v8 vzo = BC(zo);
    for (; j + LANES <= m; j += LANES) {
        v8 ghn = LD(gh + 2 * Hp + j);
        if (after) ghn = FN(sigm_v)(LD(gi + j) + LD(gh + j)) * ghn;             /* r * gh_n */
        v8 z = FN(sigm_v)(LD(gi + Hp + j) + LD(gh + Hp + j));
        v8 n = FN(tanh_v)(LD(gi + 2 * Hp + j) + ghn);
        v8 hj = LD(h + j);
        v8 h1 = n + z * (hj - n);
        h1 = h1 + vzo * (hj - h1);
        ST(hout + j, h1);
        ST(out + j, h1);
    }
    for (; j < m; j++) {
        float ghn = gh[2 * Hp + j];
        if (after) ghn = FN(sigm_f)(gi[j] + gh[j]) * ghn;
        float z = FN(sigm_f)(gi[Hp + j] + gh[Hp + j]);
        float n = FN(tanh_f)(gi[2 * Hp + j] + ghn);
        float hj = h[j];
        float h1 = n + z * (hj - n);
        h1 = h1 + zo * (hj - h1);
        hout[j] = h1;
        out[j] = h1;
    }
}

/* Cho form, first half: q = r * h for m units (r = sigma(gi_r + gh_r)). */
static inline ATTR void FN(gates_cho_r)(const float *gi, const float *gh, const float *h, float *q, long m)
{
    long j = 0;
    for (; j + LANES <= m; j += LANES)
        ST(q + j, FN(sigm_v)(LD(gi + j) + LD(gh + j)) * LD(h + j));
    for (; j < m; j++)
        q[j] = FN(sigm_f)(gi[j] + gh[j]) * h[j];
}
