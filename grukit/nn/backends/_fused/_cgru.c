/* grukit's compiled float32 GRU kernels (a CPython extension, built by setup.py; optional: without a C
 * compiler grukit runs the numba kernels instead).
 *
 * The parts are listed in cgru.h. The kernels are compiled twice (cgru_kernels.c): for AVX2 + FMA and for the
 * build's baseline ISA; this module picks one when it is imported (__builtin_cpu_supports), or the baseline one
 * when the environment says GRUKIT_CPU_ISA=generic (tests use that to check both).
 *
 * Functions (numpy arrays in; float32, C-contiguous; sizes are checked against the buffers):
 *   forward(x, wih, bih, whh, bhh, h0, lens, out, hT, T, B, I, H, Hp, reverse, reset_after, zo, ldo, oo, nthreads,
 *           unit_split=True)
 *       one layer and direction of an inference forward on nthreads threads: batch rows in chunks, or (fewer
 *       rows than threads) the hidden units shared out (unit_split), or the recurrence on the calling thread
 *       while helpers project the steps ahead of it (not unit_split).
 *   step(layers, H, reset_after, zo, nthreads, x_address, h_address_or_0, out_address, B)   one streaming step,
 *                                reading torch's weight tensors in place (row-major): nothing to be stale.
 *   Stream(ws, meta, nthreads=1) a packed stream (subclassable): stream(x) advances every layer by one frame,
 *                                the state kept in ws (on nthreads threads: hidden units split), and returns a
 *                                new array of the top layer's state; stream.advance(x) the same, returning None.
 *   Plan(weights, L, D, I, H, Hp, reset_after)   a whole GRU's packed weights: plan.run(x_address, T, B,
 *                                hx_address_or_0, lens_or_None, zo, n_first, n_rest, unit_split, l0=0, l1=L)
 *                                -> (out, h_n), the layers [l0, l1) of an inference forward in one call.
 *   gemm(A, M, K, Wp, p0, np, C, ldc, bias_or_None)   the panel matmul itself (for tests).
 *   same(snapshot, nbytes, addresses)   whether tensors still hold the bytes they were packed from.
 *   held(snapshot, nbytes, addresses, held, tensors, names=None)   the same for the held tensor objects at
 *                                the held addresses in one call (the weight cache's check), None for others.
 *   isa()                        "avx2" or "generic": the kernels in use.
 *   counts()                     how split calls and stream frames ran, and pipelined chunks helpers wrote.
 *   MAX_STACK_ROWS, PIPE_STEPS, PANEL, MAX_LAYERS   the most rows a split call, stream or step takes; time steps
 *                                per pipelined chunk; columns per weight panel; most layers of a stream or step.
 *   STREAM_META, STREAM_LAYER_META   the field names of a stream's meta (cgru.h), in order: Python builds its
 *                                numpy structured dtype from them and fills the fields by name.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL grukit_cgru_ARRAY_API
#include <numpy/arrayobject.h>
#undef I                                /* <complex.h>'s, via numpy's headers: I is a size here */
#include "cgru.h"

/* A step's scratch up to this many floats (32 KB) lives on the calling thread's stack (no allocation). */
#define STEP_STACK_FLOATS 8192

/* How long pool helpers spin after a job before they sleep, unless GRUKIT_SPIN_US says otherwise. */
#define DEFAULT_SPIN_NS 300000L

extern PyTypeObject cgru_StreamType, cgru_PlanType;     /* cgru_stream.c, cgru_plan.c */

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
    if (T < 1 || B < 1 || I < 1 || H < 1 || Hp < H || Hp % PANEL || oo < 0 || oo + H > ldo) {
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
    if (M < 0 || K < 1 || p0 < 0 || np < 0 || ldc < PANEL * np) {
        PyErr_SetString(PyExc_ValueError, "_cgru.gemm: inconsistent sizes");
        goto done;
    }
    if (!need(&A, M * K, 4, "A") || !need(&Wp, (p0 + np) * K * PANEL, 4, "Wp") || !need(&C, M * ldc, 4, "C")
        || (has_bias && !need(&bias, (p0 + np) * PANEL, 4, "bias")))
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

/* held(snapshot, nbytes, addresses, held, tensors, names=None) -> True / False / None: the weight cache's check in
 * one call. tensors is a sequence, or with names (a list) a dict (a module's _parameters) holding them under those
 * names.
 * None when they are not the held tensor objects (a tuple) at the held addresses (each one's data_ptr()), in
 * order: the caller then checks sizes and compares in full. Otherwise whether the memory at addresses[i] holds
 * the next nbytes[i] bytes of snapshot for every i (as same()). The held tensors keep their memory, so no other
 * allocation can start at a held address. */
static PyObject *str_data_ptr;

static PyObject *py_held(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if ((nargs != 5 && nargs != 6) || !PyTuple_Check(args[1]) || !PyTuple_Check(args[2]) || !PyTuple_Check(args[3])
        || (nargs == 6 && !(PyDict_Check(args[4]) && PyList_Check(args[5])))) {
        PyErr_SetString(PyExc_TypeError, "held(snapshot, nbytes, addresses, held, tensors, names=None): nbytes, "
                        "addresses and held tuples; with names (a list) tensors a dict");
        return NULL;
    }
    PyObject *sizes = args[1], *addrs = args[2], *held = args[3];
    const Py_ssize_t n = PyTuple_GET_SIZE(held);
    if (PyTuple_GET_SIZE(sizes) != n || PyTuple_GET_SIZE(addrs) != n) {
        PyErr_SetString(PyExc_ValueError, "_cgru.held: as many sizes and addresses as held tensors");
        return NULL;
    }
    PyObject *tensors = NULL, *res = NULL;
    int mine;
    if (nargs == 6) {                                   /* a module's _parameters and its weights' names */
        PyObject *names = args[5];
        mine = PyList_GET_SIZE(names) == n;
        for (Py_ssize_t i = 0; mine && i < n; i++) {
            PyObject *t = PyDict_GetItemWithError(args[4], PyList_GET_ITEM(names, i));    /* borrowed */
            if (!t && PyErr_Occurred()) return NULL;
            mine = t == PyTuple_GET_ITEM(held, i);
        }
    } else {
        tensors = PySequence_Fast(args[4], "_cgru.held: tensors must be a sequence");
        if (!tensors) return NULL;
        mine = PySequence_Fast_GET_SIZE(tensors) == n;
        for (Py_ssize_t i = 0; mine && i < n; i++)
            mine = PySequence_Fast_GET_ITEM(tensors, i) == PyTuple_GET_ITEM(held, i);
    }
    for (Py_ssize_t i = 0; mine && i < n; i++) {        /* the held objects: are they where they were? */
        PyObject *ptr = PyObject_CallMethodNoArgs(PyTuple_GET_ITEM(held, i), str_data_ptr);
        if (!ptr) goto done;
        unsigned long long now = PyLong_AsUnsignedLongLong(ptr);
        Py_DECREF(ptr);
        unsigned long long was = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(addrs, i));
        if (PyErr_Occurred()) goto done;
        mine = now == was;
    }
    if (!mine) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    Py_buffer snap;
    if (PyObject_GetBuffer(args[0], &snap, PyBUF_SIMPLE) < 0) goto done;
    int same = 1;
    Py_ssize_t off = 0;
    for (Py_ssize_t i = 0; i < n && same; i++) {
        Py_ssize_t nb = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, i));
        unsigned long long ad = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(addrs, i));
        if (PyErr_Occurred()) { PyBuffer_Release(&snap); goto done; }
        if (nb < 0 || off + nb > snap.len || (!ad && nb)) {
            PyErr_SetString(PyExc_ValueError, "_cgru.held: sizes exceed the snapshot");
            PyBuffer_Release(&snap);
            goto done;
        }
        same = nb == 0 || memcmp((const void *)(uintptr_t)ad, (const char *)snap.buf + off, (size_t)nb) == 0;
        off += nb;
    }
    PyBuffer_Release(&snap);
    res = PyBool_FromLong(same);
done:
    Py_XDECREF(tensors);
    return res;
}

/* step(layers, H, reset_after, zo, nthreads, x_address, h_address_or_0, out_address, B) -> None: one streaming
 * step of every layer, reading torch's weight tensors in place (no packed copy, so no copy can be stale). layers
 * is a tuple of 5 ints per layer: (n_in, W_ih, b_ih or 0, W_hh, b_hh or 0), the addresses of C-contiguous
 * float32 tensors of shapes (3H, n_in), (3H,), (3H, H), (3H,); x is (B, n_in_0), h the (L, B, H) state (0:
 * zeros) and out the (L, B, H) new state (may be h). The caller (grukit's fused_cpu) checks every shape and
 * keeps the tensors alive for the call. */
static PyObject *py_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "step(layers, H, reset_after, zo, nthreads, x_address, h_address_or_0, "
                        "out_address, B): 9 arguments, layers a tuple");
        return NULL;
    }
    PyObject *layers = args[0];
    const long H = PyLong_AsLong(args[1]);
    const int reset_after = PyObject_IsTrue(args[2]);
    const float zo = (float)PyFloat_AsDouble(args[3]);
    int nthreads = (int)PyLong_AsLong(args[4]);
    const unsigned long long xa = PyLong_AsUnsignedLongLong(args[5]), ha = PyLong_AsUnsignedLongLong(args[6]),
                             oa = PyLong_AsUnsignedLongLong(args[7]);
    const long B = PyLong_AsLong(args[8]);
    if (PyErr_Occurred()) return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(layers);
    const long L = (long)(n / 5);
    if (n % 5 || L < 1 || L > MAX_LAYERS || B < 1 || B > MAX_STACK_ROWS || H < 1 || !xa || !oa) {
        PyErr_SetString(PyExc_ValueError, "_cgru.step: inconsistent sizes");
        return NULL;
    }
    const long Hp = (H + PANEL - 1) / PANEL * PANEL, G = 3 * Hp;
    Frame F;                                    /* fields set one by one: no zero fill of every layer slot */
    F.L = L; F.B = B; F.H = H; F.Hp = Hp; F.reset_after = reset_after; F.rowmajor = 1; F.zo = zo;
    F.h = (float *)(uintptr_t)oa;
    if (!ha) memset(F.h, 0, sizeof(float) * (size_t)(L * B * H));
    else if (ha != oa) memcpy(F.h, (const float *)(uintptr_t)ha, sizeof(float) * (size_t)(L * B * H));
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
    const long need = 2 * B * G + B * H + (nthreads > 1 ? 2 * B * H : 0);
    float small[STEP_STACK_FLOATS] __attribute__((aligned(64)));
    float *scratch = need <= STEP_STACK_FLOATS ? small : falloc(need);
    if (!scratch) return PyErr_NoMemory();
    F.gi = scratch; F.gh = scratch + B * G; F.q = scratch + 2 * B * G;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    if (nthreads > 1) rc = run_stream((const float *)(uintptr_t)xa, &F, F.q + B * H, nthreads);
    else do_stream_frame((const float *)(uintptr_t)xa, &F, NULL, 0, 1, NULL, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (scratch != small) free(scratch);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_counts(PyObject *self, PyObject *noargs)
{
    return Py_BuildValue("{sl,sl,sl}", "solo", team_count(0), "split", team_count(1), "helper_chunks",
                         team_count(2));
}

static PyObject *py_isa(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(cgru_avx2() ? "avx2" : "generic");
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "forward(x, wih, bih, whh, bhh, h0, lens, out, hT, T, B, I, H, Hp, "
                                          "reverse, reset_after, zo, ldo, oo, nthreads, unit_split=True)"},
    {"gemm", py_gemm, METH_VARARGS, "gemm(A, M, K, Wp, p0, np, C, ldc, bias)"},
    {"step", (PyCFunction)(void (*)(void))py_step, METH_FASTCALL,
     "step(layers, H, reset_after, zo, nthreads, x_address, h_address_or_0, out_address, B): one streaming step "
     "reading torch's weights in place"},
    {"same", py_same, METH_VARARGS, "same(snapshot, nbytes, addresses) -> bool: the memory still holds the snapshot"},
    {"held", (PyCFunction)(void (*)(void))py_held, METH_FASTCALL,
     "held(snapshot, nbytes, addresses, held, tensors, names=None) -> True/False, or None when tensors (or "
     "tensors[name] for names) are not the held tensors at the held addresses"},
    {"counts", py_counts, METH_NOARGS,
     "{solo, split, helper_chunks}: split calls and stream frames that went solo (no helper in time) and split, "
     "and chunks of pipelined projections written by helpers"},
    {"isa", py_isa, METH_NOARGS, "the instruction set the kernels use: 'avx2' or 'generic'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_cgru", "grukit's compiled GRU kernels", -1,
                                       methods};

static PyObject *names_tuple(const char *const *names, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

PyMODINIT_FUNC PyInit__cgru(void)
{
    const char *want = getenv("GRUKIT_CPU_ISA"), *spin = getenv("GRUKIT_SPIN_US");
    long spin_ns = DEFAULT_SPIN_NS;
    if (spin && *spin) {
        char *end;
        long us = strtol(spin, &end, 10);
        if (*end || us < 0 || us > 10000000L) {
            PyErr_Format(PyExc_ValueError, "GRUKIT_SPIN_US must be a whole number of microseconds in [0, 10000000], "
                         "got '%s'", spin);
            return NULL;
        }
        spin_ns = us * 1000L;
    }
    pool_configure(spin_ns);
    str_data_ptr = PyUnicode_InternFromString("data_ptr");
    if (!str_data_ptr) return NULL;
    import_array();
    int avx2 = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!(want && strcmp(want, "generic") == 0))
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    cgru_select_isa(avx2);
    if (PyType_Ready(&cgru_StreamType) < 0 || PyType_Ready(&cgru_PlanType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&moduledef);
    if (!mod) return NULL;
#define CGRU_NAME(name) #name,
    static const char *const meta_names[] = {STREAM_META_FIELDS(CGRU_NAME)};
    static const char *const layer_names[] = {STREAM_LAYER_FIELDS(CGRU_NAME)};
#undef CGRU_NAME
    PyObject *meta = names_tuple(meta_names, sizeof meta_names / sizeof *meta_names);
    PyObject *layer = names_tuple(layer_names, sizeof layer_names / sizeof *layer_names);
    if (!meta || !layer || PyModule_AddObject(mod, "STREAM_META", meta) < 0) {
        Py_XDECREF(meta); Py_XDECREF(layer); Py_DECREF(mod);
        return NULL;
    }
    if (PyModule_AddObject(mod, "STREAM_LAYER_META", layer) < 0) {
        Py_DECREF(layer); Py_DECREF(mod);
        return NULL;
    }
    if (PyModule_AddIntConstant(mod, "MAX_STACK_ROWS", MAX_STACK_ROWS) < 0
        || PyModule_AddIntConstant(mod, "PIPE_STEPS", PIPE_STEPS) < 0
        || PyModule_AddIntConstant(mod, "PANEL", PANEL) < 0
        || PyModule_AddIntConstant(mod, "MAX_LAYERS", MAX_LAYERS) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&cgru_StreamType);
    if (PyModule_AddObject(mod, "Stream", (PyObject *)&cgru_StreamType) < 0) {
        Py_DECREF(&cgru_StreamType);
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&cgru_PlanType);
    if (PyModule_AddObject(mod, "Plan", (PyObject *)&cgru_PlanType) < 0) {
        Py_DECREF(&cgru_PlanType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
