/* The Stream type of grukit's compiled kernels: a packed stream's buffer and meta, advanced frame by frame. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL grukit_cgru_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#undef I                                /* <complex.h>'s, via numpy's headers: I is a size here */
#include "cgru.h"

extern PyTypeObject cgru_StreamType;

/* Stream(ws, meta, nthreads=1): the stream held in ws, advanced by one frame by stream(x) (see stream_call) or
 * stream.advance(x). ws (float32) holds per layer the packed W_ih, b_ih, W_hh, b_hh, then the state h (L, B, H),
 * scratch gi, gh (B, 3Hp) and q (B, H), and the zoneout factor. meta (int64) is a StreamMeta followed by L
 * StreamLayerMeta (cgru.h: the fields by name, offsets in floats of ws). The Stream keeps both buffers (checked
 * once, here), so a frame pays for no buffer request (a numpy frame) or one (advance: any C-contiguous float32
 * buffer of B * n_in values). */
typedef struct {
    PyObject_HEAD
    Py_buffer ws, meta;
    int held, nthreads;
    StreamMeta head;
    long n_in;                                  /* the first layer's input size: a frame's width */
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

static int stream_fail(StreamObj *self, const char *why)
{
    PyErr_Format(PyExc_ValueError, "_cgru.Stream: meta does not describe ws (%s)", why);
    stream_drop(self);
    return -1;
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
    if ((size_t)self->meta.len < sizeof(StreamMeta)) return stream_fail(self, "shorter than a StreamMeta");
    const StreamMeta *m = self->meta.buf;
    const StreamLayerMeta *ml = (const StreamLayerMeta *)(m + 1);
    if (m->L < 1 || m->L > MAX_LAYERS) return stream_fail(self, "L outside [1, MAX_LAYERS]");
    if ((size_t)self->meta.len != sizeof(StreamMeta) + (size_t)m->L * sizeof(StreamLayerMeta))
        return stream_fail(self, "its size is not a StreamMeta and L StreamLayerMeta");
    if (m->B < 1 || m->B > MAX_STACK_ROWS) return stream_fail(self, "B outside [1, MAX_STACK_ROWS]");
    /* every region meta names must lie inside ws: the kernel trusts these offsets */
    const long L = m->L, B = m->B, H = m->H, Hp = m->Hp, G = 3 * Hp, nf = self->ws.len / 4;
    int ok = H >= 1 && Hp >= H && Hp % PANEL == 0 && m->off_h >= 0 && m->off_h + L * B * H <= nf
             && m->off_gi >= 0 && m->off_gi + B * G <= nf && m->off_gh >= 0 && m->off_gh + B * G <= nf
             && m->off_q >= 0 && m->off_q + B * H <= nf && m->off_zo >= 0 && m->off_zo < nf;
    for (long l = 0; ok && l < L; l++) {
        const StreamLayerMeta *q = &ml[l];
        ok = q->n_in >= 1 && (l == 0 || q->n_in == H) && q->off_wih >= 0 && q->off_wih + G * q->n_in <= nf
             && q->off_bih >= 0 && q->off_bih + G <= nf && q->off_whh >= 0 && q->off_whh + G * H <= nf
             && q->off_bhh >= 0 && q->off_bhh + G <= nf;
    }
    if (!ok) return stream_fail(self, "a region lies outside it");
    self->head = *m;
    self->n_in = ml[0].n_in;
    float *w = self->ws.buf;
    Frame *F = &self->frame;
    *F = (Frame){.L = L, .B = B, .H = H, .Hp = Hp, .reset_after = m->reset_after != 0, .rowmajor = 0,
                 .zo = w[m->off_zo], .h = w + m->off_h, .gi = w + m->off_gi, .gh = w + m->off_gh, .q = w + m->off_q};
    for (long l = 0; l < L; l++) {
        const StreamLayerMeta *q = &ml[l];
        F->layer[l] = (FrameLayer){q->n_in, w + q->off_wih, w + q->off_bih, w + q->off_whh, w + q->off_bhh};
    }
    self->x_bytes = (Py_ssize_t)(B * self->n_in * 4);
    self->nthreads = nthreads < 1 ? 1 : (nthreads > MAX_THREADS ? MAX_THREADS : nthreads);
    if (self->nthreads > Hp / PANEL) self->nthreads = (int)(Hp / PANEL);
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
        const long L = self->head.L, B = self->head.B, H = self->head.H, I = self->n_in;
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
            memcpy(PyArray_DATA((PyArrayObject *)out), (const float *)self->ws.buf + self->head.off_h + (L - 1) * B * H,
                   (size_t)(B * H) * sizeof(float));
            return out;
        }
    }
    if (Py_TYPE(self) == &cgru_StreamType) {
        if (!self->held) return no_stream();
        PyErr_Format(PyExc_ValueError, "_cgru.Stream: the frame must be a C-contiguous float32 numpy array of "
                     "shape (%ld, %ld)", (long)self->head.B, self->n_in);
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

CGRU_INTERNAL PyTypeObject cgru_StreamType = {
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
