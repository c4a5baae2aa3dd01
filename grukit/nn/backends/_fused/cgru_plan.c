/* The Plan type of grukit's compiled kernels: a whole GRU's packed weights, one-call inference. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL grukit_cgru_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#undef I                                /* <complex.h>'s, via numpy's headers: I is a size here */
#include "cgru.h"

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
    if (L < 1 || L > MAX_LAYERS || D < 1 || D > 2 || I < 1 || H < 1 || Hp < H || Hp % PANEL) {
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

CGRU_INTERNAL PyTypeObject cgru_PlanType = {
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
