/* fastact's per-call fast path (fastact/_fastcall.py builds and loads it): the common
   elementwise call, fa.NAME(x, out=None) and fa.NAME.backward(dy, saved, out=None) with
   parameters used before (Map: one per activation, direction and parameter set) on same-shape
   contiguous float32/float64 NumPy arrays, checked and dispatched to the compiled kernel without
   Python in between, and a large call split over fastact's thread pool here too (split_call).
   Anything else (other arrays, a backend choice this entry has no kernel for, a form not
   compiled yet, outputs large enough for the streamed kernels) answers NotImplemented before
   touching anything, and the caller takes the Python path, which checks, converts and raises
   exactly as before. The kernels are the ones the Python path calls: the Numba backend's native
   tasks, task(block, start, stop) with the block as kernels/loops.py lays it out (call_K_P), and
   the C backend's fa_map_* entries.

   In Python, the same call spends ~2.5 us in the API's checks, the backend's dispatch and
   Numba's argument typing (PyTorch's call: 1.2 us), and a split call ~7 us in _threads.run
   (bench/NOTES.md: per-call overhead). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#define MAP_BLOCK 12  /* kernels/loops.py: MAP_BLOCK int64s, the parameters from MAP_PARAMS on */
#define MAP_PARAMS 5
#define MAX_INPUTS 2
#define MAX_PARAMS 2
#define N_BACKENDS 2  /* 0: "cpu" (Numba's task tables), 1: "c" (the cffi module's fa_map_*) */

typedef void (*numba_task)(int64_t, int64_t, int64_t);
typedef void (*c_kernel)(const void *, const void *, const void *, void *, double, double, int,
                         int64_t, int64_t, intptr_t, int64_t, int64_t);
/* The C backend's row kernels this path calls (bindings/_generate.py's ROWS_EXPORTS). */
typedef void (*c_rows_forward)(const void *, void *, int64_t, int64_t, int64_t, intptr_t, int64_t,
                               int64_t);
typedef void (*c_rows_backward)(const void *, const void *, void *, int64_t, int64_t, int64_t,
                                intptr_t, int64_t, int64_t);
typedef void (*c_prelu_forward)(const void *, const void *, int64_t, void *, int64_t, int64_t,
                                int64_t, intptr_t, int64_t, int64_t);

/* What a call computes: an elementwise map, or one of the row kernels (Rows objects). */
#define KIND_MAP -1
#define ROWS_FORWARD 0  /* softmax, log_softmax: kernel(x, out) on rows along the last axis */
#define ROWS_BACKWARD 1 /* their backwards: kernel(dy, y, out) */
#define ROWS_PRELU 2    /* prelu's forward: kernel(x, weight, out), channel = row % weight.size */

/* What the Python side hands over once (configure): how to read the backend choice, and the
   sizes above which a call is not this path's (split over threads, or streamed). */
static PyObject *backend_var;  /* fastact._backends' ContextVar (None: not set) */
static PyObject *environ_data; /* os.environ's dict of bytes */
static PyObject *env_key;      /* b"FASTACT_BACKEND" */
static PyObject *accepted;     /* backend name (str, bytes; None: nothing set) -> index */
static Py_ssize_t split_size;  /* elements: calls this large are split over threads */
static Py_ssize_t stream_bytes; /* outputs this large take the streamed kernels */
static PyArray_Descr *descrs[2]; /* float32, float64 */
/* The thread pool (fastact/_threads.py): its module, and the state's layout (configure). */
static PyObject *threads_module;
static Py_ssize_t parallel_threshold, chunk_align;
static int64_t pool_stride, pool_task, pool_task_args, pool_start, pool_stop, pool_done,
    pool_asleep, pool_claim, pool_take_back;
static unsigned long long taken; /* calls this path computed (tests read it) */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int n_in, n_params;
    Py_ssize_t cost;                 /* its kernel's split cost (registry.split_cost): calls
                                        of split_size / cost elements or more are split */
    double values[2][MAX_PARAMS];    /* per dtype: the parameters rounded to it */
    PyObject *tables[N_BACKENDS][2]; /* per backend and dtype: an int64 array, n_in + 1
                                        addresses (the task, then its forms for out being
                                        input k; 0 where not compiled yet), or NULL */
} MapObject;

/* The backend index this call's choice names, -1 when it names none this path serves, -2 on
   error: fastact._backends.current()'s rule, a context's choice over FASTACT_BACKEND. */
static int chosen_backend(void)
{
    PyObject *value = NULL, *name, *index;
    int result = -1;
    if (PyContextVar_Get(backend_var, NULL, &value) < 0)
        return -2;
    name = value;
    if (value == NULL || value == Py_None
        || (PyUnicode_Check(value) && PyUnicode_GET_LENGTH(value) == 0)) {
        name = PyDict_GetItemWithError(environ_data, env_key); /* borrowed */
        if (name == NULL) {
            if (PyErr_Occurred()) {
                Py_XDECREF(value);
                return -2;
            }
            name = Py_None;
        } else if (PyBytes_Check(name) && PyBytes_GET_SIZE(name) == 0) {
            name = Py_None; /* FASTACT_BACKEND="" is "auto", as in Python */
        }
    }
    index = PyDict_GetItemWithError(accepted, name); /* borrowed */
    if (index != NULL) {
        long found = PyLong_AsLong(index);
        if (found == -1 && PyErr_Occurred())
            result = -2;
        else if (found >= 0 && found < N_BACKENDS)
            result = (int)found;
    } else if (PyErr_Occurred()) {
        result = -2;
    }
    Py_XDECREF(value);
    return result;
}

/* One call's kernel and arguments: the Numba task's block (kernels/loops.py) or the C kernel's
   arrays and parameters. */
typedef struct {
    int backend;          /* 0: a Numba task, task(block, start, stop); 1: a C entry */
    int kind;             /* KIND_MAP (fa_map_*) or a row kind (the C backend's fa_*_rows_*) */
    int64_t task;
    int64_t block[MAP_BLOCK];
    char *data[4];        /* inputs, then out at [3] */
    double values[MAX_PARAMS];
    int64_t row, channels; /* a row kernel's row length and prelu's channels (C entries) */
} Call;

/* [start, stop) of the call, as the Python path's kernel call does: alone (slot -1), or as a
   split call's caller (slot 0: the pool's hand-off, kernels/loops.py's call_K_P and
   bindings/_generate.py's fa_range_sized, both of which this mirrors or calls). */
static void run_range(Call *call, int64_t start, int64_t stop, intptr_t pool, int64_t slot,
                      int64_t seq)
{
    if (call->backend == 1) {
        char **d = call->data;
        switch (call->kind) {
        case ROWS_FORWARD:
            ((c_rows_forward)(intptr_t)call->task)(d[0], d[3], call->row, start, stop, pool, slot,
                                                   seq);
            return;
        case ROWS_BACKWARD:
            ((c_rows_backward)(intptr_t)call->task)(d[0], d[1], d[3], call->row, start, stop,
                                                    pool, slot, seq);
            return;
        case ROWS_PRELU:
            ((c_prelu_forward)(intptr_t)call->task)(d[0], d[1], call->channels, d[3], call->row,
                                                    start, stop, pool, slot, seq);
            return;
        default:
            ((c_kernel)(intptr_t)call->task)(d[0], d[1], d[2], d[3], call->values[0],
                                             call->values[1], 0, start, stop, pool, slot, seq);
            return;
        }
    }
    numba_task task = (numba_task)(intptr_t)call->task;
    if (slot != 0) {
        task((int64_t)(intptr_t)call->block, start, stop);
        return;
    }
    int64_t *state = (int64_t *)pool, w, n = __atomic_load_n(state, __ATOMIC_ACQUIRE);
    int64_t *copy = state + __atomic_load_n(state + 2, __ATOMIC_RELAXED);
    memcpy(copy, call->block, sizeof call->block); /* the workers' arguments */
    for (w = 1; w <= n; w++) {
        int64_t *line = state + pool_stride * w;
        __atomic_store_n(line + pool_task, call->task, __ATOMIC_RELAXED);
        __atomic_store_n(line + pool_task_args, (int64_t)(intptr_t)copy, __ATOMIC_RELAXED);
        __atomic_store_n(line, seq, __ATOMIC_SEQ_CST); /* its go */
    }
    task((int64_t)(intptr_t)copy, start, stop);
    if (__atomic_load_n(state + pool_take_back, __ATOMIC_RELAXED)) { /* Taking back */
        for (w = 1; w <= n; w++) {
            int64_t *line = state + pool_stride * w, *claim = line + pool_claim;
            int64_t old = __atomic_load_n(claim, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(line + pool_done, __ATOMIC_ACQUIRE) >= seq)
                continue;
            while (old < seq && !__atomic_compare_exchange_n(claim, &old, seq, 0, __ATOMIC_SEQ_CST,
                                                             __ATOMIC_SEQ_CST))
                ;
            if (old < seq) { /* raised here: the worker had not claimed it */
                if (line[pool_stop] > line[pool_start])
                    task((int64_t)(intptr_t)copy, line[pool_start], line[pool_stop]);
                __atomic_store_n(line + pool_done, seq, __ATOMIC_RELEASE);
            }
        }
    }
}

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* A call split over the pool's workers as fastact._threads.run splits it, without Python in
   between: 1 done, 0 to be run whole on this thread (one thread, or the workers busy with another
   Python thread's call), 2 a pool without a native runner (the Python path's), -1 an error.
   size: elements (align: chunk_align) or rows (align: 1), each of cost. */
static int split_call(Call *call, Py_ssize_t size, Py_ssize_t cost, Py_ssize_t align)
{
    PyObject *value, *busy, *got, *workers, *pool;
    long long seq;
    Py_ssize_t threads, step, count, w;
    int64_t *state;
    value = PyObject_GetAttrString(threads_module, "_num_threads");
    if (value == NULL)
        return -1;
    threads = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    if (threads == -1 && PyErr_Occurred())
        return -1;
    if (threads > size * cost / parallel_threshold)
        threads = size * cost / parallel_threshold;
    if (threads < 2)
        return 0;
    busy = PyObject_GetAttrString(threads_module, "_busy");
    if (busy == NULL)
        return -1;
    value = PyObject_CallMethod(busy, "acquire", "O", Py_False);
    if (value == NULL) {
        Py_DECREF(busy);
        return -1;
    }
    if (value != Py_True) { /* another thread's call has the workers */
        Py_DECREF(value);
        Py_DECREF(busy);
        return 0;
    }
    Py_DECREF(value);
    step = (size + threads - 1) / threads;
    step = (step + align - 1) / align * align;
    count = (size + step - 1) / step - 1; /* workers */
    got = PyObject_CallMethod(threads_module, "_get_workers", "n", count);
    if (got == NULL)
        goto fail;
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2) {
        PyErr_SetString(PyExc_RuntimeError, "fastact: _threads._get_workers answered otherwise");
        goto fail;
    }
    workers = PyTuple_GET_ITEM(got, 0);
    pool = PyTuple_GET_ITEM(got, 1);
    if (!PyList_Check(workers) || PyList_GET_SIZE(workers) != count || !PyTuple_Check(pool)
        || PyTuple_GET_SIZE(pool) != 2) {
        PyErr_SetString(PyExc_RuntimeError, "fastact: _threads._get_workers answered otherwise");
        goto fail;
    }
    state = (int64_t *)PyLong_AsVoidPtr(PyTuple_GET_ITEM(pool, 1));
    if (state == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "fastact: the pool state has no address");
        goto fail;
    }
    if (!state[pool_take_back]) { /* workers that wait in Python: its run() hands them tasks */
        Py_DECREF(got);
        value = PyObject_CallMethod(busy, "release", NULL);
        Py_DECREF(busy);
        Py_XDECREF(value);
        return value == NULL ? -1 : 2;
    }
    value = PyObject_GetAttrString(threads_module, "_seq");
    if (value == NULL)
        goto fail;
    seq = PyLong_AsLongLong(value) + 1;
    Py_DECREF(value);
    if (PyErr_Occurred())
        goto fail;
    value = PyLong_FromLongLong(seq);
    if (value == NULL || PyObject_SetAttrString(threads_module, "_seq", value) < 0) {
        Py_XDECREF(value);
        goto fail;
    }
    Py_DECREF(value);
    state[0] = count;
    for (w = 1; w <= count; w++) { /* as _Worker.start: its range; a sleeping one woken there */
        int64_t *line = state + pool_stride * w, lo = w * step;
        int64_t hi = lo + step < size ? lo + step : size;
        line[pool_task] = 0;
        line[pool_start] = lo;
        line[pool_stop] = hi;
        if (__atomic_load_n(line + pool_asleep, __ATOMIC_SEQ_CST)) {
            value = PyObject_CallMethod(PyList_GET_ITEM(workers, w - 1), "start", "O()LLL",
                                        Py_None, (long long)lo, (long long)hi, seq);
            if (value == NULL)
                goto fail; /* (nothing published: the workers have no go for seq) */
            Py_DECREF(value);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    run_range(call, 0, step, (intptr_t)state, 0, seq);
    for (w = 1; w <= count; w++) { /* each worker's done (a range taken back is done too) */
        int64_t *done = state + pool_stride * w + pool_done;
        unsigned spins = 0;
        while (__atomic_load_n(done, __ATOMIC_ACQUIRE) < seq) {
            if (++spins % 4096 == 0)
                sched_yield();
            else
                relax();
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(got);
    value = PyObject_CallMethod(busy, "release", NULL);
    Py_DECREF(busy);
    if (value == NULL)
        return -1;
    Py_DECREF(value);
    return 1;
fail:
    Py_XDECREF(got);
    {
        PyObject *type, *error, *trace;
        PyErr_Fetch(&type, &error, &trace);
        value = PyObject_CallMethod(busy, "release", NULL);
        Py_XDECREF(value);
        PyErr_Restore(type, error, trace);
    }
    Py_DECREF(busy);
    return -1;
}

/* Run the call on [0, size) (split over the pool from split_size work) and return result, whose
   reference it takes; NULL on an error, NotImplemented for a pool without a native runner (the
   Python path's: nothing was written). */
static PyObject *finish(Call *call, Py_ssize_t size, Py_ssize_t cost, Py_ssize_t align,
                        PyArrayObject *result)
{
    int k = size * cost < split_size ? 0 : split_call(call, size, cost, align);
    if (k < 0 || k == 2) {
        Py_DECREF(result);
        if (k < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (k == 0) { /* one thread */
        Py_BEGIN_ALLOW_THREADS
        run_range(call, 0, size, 0, -1, 0);
        Py_END_ALLOW_THREADS
    }
    taken++;
    return (PyObject *)result;
}

/* out, or a new array like a (NULL on an error), as a new reference. */
static PyArrayObject *out_or_new(PyArrayObject *out, PyArrayObject *a)
{
    if (out == NULL)
        return (PyArrayObject *)PyArray_NewLikeArray(a, NPY_KEEPORDER, NULL, 0);
    Py_INCREF(out);
    return out;
}

/* Whether the bytes of a and b overlap without starting at the same address. */
static int partly_overlap(PyArrayObject *a, PyArrayObject *b)
{
    char *p = PyArray_BYTES(a), *q = PyArray_BYTES(b);
    return p != q && p < q + PyArray_NBYTES(b) && q < p + PyArray_NBYTES(a);
}

static int same_layout(PyArrayObject *a, PyArrayObject *b)
{
    int nd = PyArray_NDIM(a);
    return PyArray_DESCR(b) == PyArray_DESCR(a) && PyArray_NDIM(b) == nd
           && memcmp(PyArray_DIMS(a), PyArray_DIMS(b), nd * sizeof(npy_intp)) == 0
           && memcmp(PyArray_STRIDES(a), PyArray_STRIDES(b), nd * sizeof(npy_intp)) == 0;
}

static PyObject *map_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MapObject *self = (MapObject *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyArrayObject *in[MAX_INPUTS], *out = NULL, *result;
    PyObject *table;
    int backend, dtype, k, alias = -1;
    npy_intp size, nbytes;
    int64_t task;
    char *data[MAX_INPUTS + 1];

    if (kwnames != NULL || nargs != self->n_in + 1) {
        PyErr_Format(PyExc_TypeError, "expected %d arrays and out", self->n_in);
        return NULL;
    }
    for (k = 0; k < self->n_in; k++) {
        if (Py_TYPE(args[k]) != &PyArray_Type)
            Py_RETURN_NOTIMPLEMENTED;
        in[k] = (PyArrayObject *)args[k];
    }
    dtype = PyArray_DESCR(in[0]) == descrs[0] ? 0 : PyArray_DESCR(in[0]) == descrs[1] ? 1 : -1;
    if (dtype < 0 || PyArray_NDIM(in[0]) == 0  /* 0-d: the Python path returns a scalar */
        || !(PyArray_FLAGS(in[0]) & (NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_F_CONTIGUOUS)))
        Py_RETURN_NOTIMPLEMENTED;
    size = PyArray_SIZE(in[0]);
    nbytes = size * PyArray_ITEMSIZE(in[0]);
    if (size == 0 || nbytes >= stream_bytes)  /* (large outputs: the streamed kernels) */
        Py_RETURN_NOTIMPLEMENTED;
    for (k = 1; k < self->n_in; k++)
        if (!same_layout(in[0], in[k]))
            Py_RETURN_NOTIMPLEMENTED;
    if (args[self->n_in] != Py_None) {
        if (Py_TYPE(args[self->n_in]) != &PyArray_Type)
            Py_RETURN_NOTIMPLEMENTED;
        out = (PyArrayObject *)args[self->n_in];
        if (!same_layout(in[0], out) || !(PyArray_FLAGS(out) & NPY_ARRAY_WRITEABLE))
            Py_RETURN_NOTIMPLEMENTED;
        for (k = self->n_in - 1; k >= 0; k--) { /* in place: the first input that is out */
            char *a = PyArray_BYTES(in[k]), *o = PyArray_BYTES(out);
            if (a == o)
                alias = k;
            else if (a < o + nbytes && o < a + nbytes) /* partial overlap: the Python path */
                Py_RETURN_NOTIMPLEMENTED;              /* computes into a scratch array */
        }
    }
    backend = chosen_backend();
    if (backend == -2)
        return NULL;
    if (backend < 0)
        Py_RETURN_NOTIMPLEMENTED;
    table = self->tables[backend][dtype];
    if (table == NULL)
        Py_RETURN_NOTIMPLEMENTED;
    task = ((int64_t *)PyArray_DATA((PyArrayObject *)table))[alias + 1];
    if (task == 0) /* this in-place form is not compiled yet: the Python path compiles it */
        Py_RETURN_NOTIMPLEMENTED;
    result = out_or_new(out, in[0]);
    if (result == NULL)
        return NULL;
    for (k = 0; k < self->n_in; k++)
        data[k] = PyArray_BYTES(in[k]);
    data[self->n_in] = PyArray_BYTES(result);
    {
        Call call = {backend, KIND_MAP, task, {0}, {NULL, NULL, NULL, NULL}, {0.0, 0.0}, 0, 0};
        call.block[0] = size;
        for (k = 0; k <= self->n_in; k++)
            call.block[k + 1] = (int64_t)(intptr_t)data[k];
        memcpy(call.block + MAP_PARAMS, self->values[dtype], sizeof self->values[dtype]);
        for (k = 0; k < self->n_in; k++)
            call.data[k] = data[k];
        call.data[3] = data[self->n_in];
        memcpy(call.values, self->values[dtype], sizeof call.values);
        return finish(&call, size, self->cost, chunk_align, result);
    }
}

static PyObject *map_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int n_in, j;
    PyObject *values, *seq;
    MapObject *self;
    static char *names[] = {"n_inputs", "values", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO:Map", names, &n_in, &values))
        return NULL;
    seq = PySequence_Fast(values, "values must be a sequence of numbers");
    if (seq == NULL)
        return NULL;
    if (n_in < 1 || n_in > MAX_INPUTS || PySequence_Fast_GET_SIZE(seq) > MAX_PARAMS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "1-2 arrays and at most 2 parameters");
        return NULL;
    }
    self = (MapObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = map_call;
    self->n_in = n_in;
    self->n_params = (int)PySequence_Fast_GET_SIZE(seq);
    for (j = 0; j < self->n_params; j++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, j));
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        /* as np.float32(v): round to nearest; past float's range inf, as that cast gives (a
           plain (float) of such a double is undefined behaviour; the Python path refuses these
           parameters for float32 inputs, so this table is never called with them) */
        self->values[0][j] = v != v ? v : v >= 0x1.ffffff0p127 ? HUGE_VAL
                             : v <= -0x1.ffffff0p127 ? -HUGE_VAL : (double)(float)v;
        self->values[1][j] = v;
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

static int map_traverse(MapObject *self, visitproc visit, void *arg)
{
    int b, d;
    for (b = 0; b < N_BACKENDS; b++)
        for (d = 0; d < 2; d++)
            Py_VISIT(self->tables[b][d]);
    return 0;
}

static int map_clear(MapObject *self)
{
    int b, d;
    for (b = 0; b < N_BACKENDS; b++)
        for (d = 0; d < 2; d++)
            Py_CLEAR(self->tables[b][d]);
    return 0;
}

static void map_dealloc(MapObject *self)
{
    PyObject_GC_UnTrack(self);
    map_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 0, or -1 with ValueError for a backend or dtype index out of range (set, has) */
static int check_indexes(int backend, int dtype)
{
    if (backend < 0 || backend >= N_BACKENDS || dtype < 0 || dtype > 1) {
        PyErr_SetString(PyExc_ValueError, "no such backend or dtype index");
        return -1;
    }
    return 0;
}

static PyObject *map_set(MapObject *self, PyObject *args)
{
    int backend, dtype;
    Py_ssize_t cost = 1;
    PyObject *table;
    PyArrayObject *t;
    if (!PyArg_ParseTuple(args, "iiO|n:set", &backend, &dtype, &table, &cost))
        return NULL;
    if (check_indexes(backend, dtype) < 0)
        return NULL;
    if (Py_TYPE(table) != &PyArray_Type) {
        PyErr_SetString(PyExc_TypeError, "the table must be an int64 NumPy array");
        return NULL;
    }
    t = (PyArrayObject *)table;
    if (PyArray_TYPE(t) != NPY_INT64 || PyArray_NDIM(t) != 1 || !PyArray_ISCARRAY_RO(t)
        || PyArray_DIM(t, 0) < self->n_in + 1) {
        PyErr_SetString(PyExc_ValueError,
                        "the table: a C-contiguous 1-D int64 array of n_inputs + 1");
        return NULL;
    }
    Py_INCREF(table);
    Py_XSETREF(self->tables[backend][dtype], table);
    self->cost = cost > 0 ? cost : 1;
    Py_RETURN_NONE;
}

static PyObject *map_has(MapObject *self, PyObject *args)
{
    int backend, dtype;
    if (!PyArg_ParseTuple(args, "ii:has", &backend, &dtype))
        return NULL;
    if (check_indexes(backend, dtype) < 0)
        return NULL;
    return PyBool_FromLong(self->tables[backend][dtype] != NULL);
}

static PyMethodDef map_methods[] = {
    {"set", (PyCFunction)map_set, METH_VARARGS,
     "set(backend, dtype, table[, cost]): the task table this entry calls for that backend "
     "index and dtype index (0 float32, 1 float64), kept by reference (the Numba backend fills "
     "in its in-place forms as they compile); cost: its kernel's registry.split_cost."},
    {"has", (PyCFunction)map_has, METH_VARARGS, "has(backend, dtype): whether a table is set."},
    {NULL}};

static PyTypeObject MapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastact._fastact_call.Map",
    .tp_basicsize = sizeof(MapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Map(n_inputs, values): map(*arrays, out) computes the mapped kernel and returns the "
              "result, or NotImplemented where the call is not this path's.",
    .tp_new = map_new,
    .tp_dealloc = (destructor)map_dealloc,
    .tp_traverse = (traverseproc)map_traverse,
    .tp_clear = (inquiry)map_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(MapObject, vectorcall),
    .tp_methods = map_methods,
};


/* The row kernels' entries (Rows): softmax and log_softmax along the last axis, forward
   rows(x, out) and backward rows(dy, y, out), and prelu's forward rows(x, weight, out) where it
   runs as rows of one channel each (fastact/_rowwise.py: weight.size 1, or x of shape
   (N, C, *rest) with rest holding `below` elements or more, or `short` or more in arrays of up to
   `short_size` elements; else the column kernels, and their Python path: its per-element weights
   cost ~20 us a call). Row by row or by columns, prelu's forward is the same bits.
   Same-shape C-contiguous float32/float64 NumPy arrays (the weight: C-contiguous, x's dtype),
   out absent or exactly like x and not partially overlapping an input; anything else answers
   NotImplemented untouched. The Numba backend's tasks read a block: each array's address and
   its 2-D shape (kernels/loops.py, row_task_source); the C backend's are fa_*_rows_*. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    Py_ssize_t cost;                 /* per element, as a map's split cost: a call of rows x row
                                        elements is split from split_size / cost */
    Py_ssize_t below, short_, short_size; /* prelu: rest's least size for the row kernels */
    int64_t tasks[N_BACKENDS][2];    /* per backend and dtype: the task's address, or 0 */
} RowsObject;

/* a C-contiguous float32/float64 NumPy array of at least one element: its dtype index, else -1 */
static int row_array(PyObject *a)
{
    PyArrayObject *x = (PyArrayObject *)a;
    if (Py_TYPE(a) != &PyArray_Type || !(PyArray_FLAGS(x) & NPY_ARRAY_C_CONTIGUOUS)
        || PyArray_SIZE(x) == 0)
        return -1;
    return PyArray_DESCR(x) == descrs[0] ? 0 : PyArray_DESCR(x) == descrs[1] ? 1 : -1;
}

static int64_t gcd(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

static PyObject *rows_call(PyObject *self_, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames)
{
    RowsObject *self = (RowsObject *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyArrayObject *x, *second = NULL, *out = NULL, *result;
    int dtype, backend, nd;
    int64_t task, row, rows, channels = 0, size;
    int n_in = self->kind == ROWS_FORWARD ? 1 : 2;

    if (kwnames != NULL || nargs != n_in + 1) {
        PyErr_Format(PyExc_TypeError, "expected %d arrays and out", n_in);
        return NULL;
    }
    dtype = row_array(args[0]);
    if (dtype < 0 || PyArray_NDIM((PyArrayObject *)args[0]) == 0)
        Py_RETURN_NOTIMPLEMENTED;
    x = (PyArrayObject *)args[0];
    nd = PyArray_NDIM(x);
    size = PyArray_SIZE(x);
    row = PyArray_DIM(x, nd - 1);
    if (n_in == 2) {
        if (row_array(args[1]) != dtype)
            Py_RETURN_NOTIMPLEMENTED;
        second = (PyArrayObject *)args[1];
        if (self->kind == ROWS_BACKWARD && !same_layout(x, second))
            Py_RETURN_NOTIMPLEMENTED;
    }
    if (self->kind == ROWS_PRELU) {
        channels = PyArray_SIZE(second);
        if (channels == 1) { /* one weight: any rows (the Python path's are gcd(size, 1024),
                                  1024 rows of one element for 1024 elements): one row, or up
                                  to 64 where the call is split over threads */
            row = size >= split_size ? size / gcd(size, 64) : size;
        } else {
            if (nd < 3 || PyArray_DIM(x, 1) != channels)
                Py_RETURN_NOTIMPLEMENTED;
            row = size / (PyArray_DIM(x, 0) * channels);
            if (row < self->below && (row < self->short_ || size > self->short_size))
                Py_RETURN_NOTIMPLEMENTED;
        }
    }
    rows = size / row;
    if (args[n_in] != Py_None) {
        if (Py_TYPE(args[n_in]) != &PyArray_Type)
            Py_RETURN_NOTIMPLEMENTED;
        out = (PyArrayObject *)args[n_in];
        if (!same_layout(x, out) || !(PyArray_FLAGS(out) & NPY_ARRAY_WRITEABLE)
            || partly_overlap(x, out) || (second != NULL && partly_overlap(second, out))
            || (self->kind == ROWS_PRELU && PyArray_BYTES(second) == PyArray_BYTES(out)))
            Py_RETURN_NOTIMPLEMENTED;
    }
    backend = chosen_backend();
    if (backend == -2)
        return NULL;
    if (backend < 0)
        Py_RETURN_NOTIMPLEMENTED;
    task = self->tasks[backend][dtype];
    if (task == 0)
        Py_RETURN_NOTIMPLEMENTED;
    result = out_or_new(out, x);
    if (result == NULL)
        return NULL;
    {
        Call call = {backend, self->kind, task, {0}, {NULL, NULL, NULL, NULL}, {0.0, 0.0}, row,
                     channels};
        int64_t *b = call.block;
        call.data[0] = PyArray_BYTES(x);
        call.data[1] = second == NULL ? NULL : PyArray_BYTES(second);
        call.data[3] = PyArray_BYTES(result);
        /* the Numba task's block: each array's address, then its shape as the row kernel sees it
           (the Python path's views) */
        b[0] = (int64_t)(intptr_t)call.data[0], b[1] = rows, b[2] = row;
        if (self->kind == ROWS_FORWARD) {
            b[3] = (int64_t)(intptr_t)call.data[3], b[4] = rows, b[5] = row;
        } else if (self->kind == ROWS_BACKWARD) {
            b[3] = (int64_t)(intptr_t)call.data[1], b[4] = rows, b[5] = row;
            b[6] = (int64_t)(intptr_t)call.data[3], b[7] = rows, b[8] = row;
        } else {
            b[3] = (int64_t)(intptr_t)call.data[1], b[4] = channels;
            b[5] = (int64_t)(intptr_t)call.data[3], b[6] = rows, b[7] = row;
        }
        return finish(&call, rows, rows > 1 ? row * self->cost : 0, 1, result); /* (one row:
                                                                                     one thread) */
    }
}

static PyObject *rows_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int kind;
    Py_ssize_t cost = 1, below = 0, short_ = 0, short_size = 0;
    RowsObject *self;
    static char *names[] = {"kind", "cost", "below", "short", "short_size", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|nnnn:Rows", names, &kind, &cost, &below,
                                     &short_, &short_size))
        return NULL;
    if (kind < ROWS_FORWARD || kind > ROWS_PRELU) {
        PyErr_SetString(PyExc_ValueError, "kind: 0 (x, out), 1 (dy, y, out) or 2 (prelu)");
        return NULL;
    }
    self = (RowsObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = rows_call;
    self->kind = kind;
    self->cost = cost > 0 ? cost : 1;
    self->below = below, self->short_ = short_, self->short_size = short_size;
    return (PyObject *)self;
}

static PyObject *rows_set(RowsObject *self, PyObject *args)
{
    int backend, dtype;
    long long task;
    if (!PyArg_ParseTuple(args, "iiL:set", &backend, &dtype, &task))
        return NULL;
    if (check_indexes(backend, dtype) < 0)
        return NULL;
    self->tasks[backend][dtype] = task;
    Py_RETURN_NONE;
}

static PyObject *rows_has(RowsObject *self, PyObject *args)
{
    int backend, dtype;
    if (!PyArg_ParseTuple(args, "ii:has", &backend, &dtype))
        return NULL;
    if (check_indexes(backend, dtype) < 0)
        return NULL;
    return PyBool_FromLong(self->tasks[backend][dtype] != 0);
}

static PyMethodDef rows_methods[] = {
    {"set", (PyCFunction)rows_set, METH_VARARGS,
     "set(backend, dtype, task): the address of the row kernel this entry calls for that "
     "backend index and dtype index (0 float32, 1 float64)."},
    {"has", (PyCFunction)rows_has, METH_VARARGS, "has(backend, dtype): whether a task is set."},
    {NULL}};

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastact._fastact_call.Rows",
    .tp_basicsize = sizeof(RowsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Rows(kind, cost=1, below=0, short=0, short_size=0): rows(*arrays, out) computes "
              "the row kernel and returns the result, or NotImplemented where the call is not "
              "this path's.",
    .tp_new = rows_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(RowsObject, vectorcall),
    .tp_methods = rows_methods,
};

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *var, *env, *key, *names, *threads;
    Py_ssize_t split, stream, threshold, align;
    long long layout[9];
    if (!PyArg_ParseTuple(args, "OO!SO!nnOnn(LLLLLLLLL):configure", &var, &PyDict_Type, &env,
                          &key, &PyDict_Type, &names, &split, &stream, &threads, &threshold,
                          &align, &layout[0], &layout[1], &layout[2], &layout[3], &layout[4],
                          &layout[5], &layout[6], &layout[7], &layout[8]))
        return NULL;
    if (split < 1 || stream < 1 || threshold < 1 || align < 1) {
        PyErr_SetString(PyExc_ValueError, "configure: sizes must be positive");
        return NULL;
    }
    parallel_threshold = threshold, chunk_align = align;
    pool_stride = layout[0], pool_task = layout[1], pool_task_args = layout[2];
    pool_start = layout[3], pool_stop = layout[4], pool_done = layout[5];
    pool_asleep = layout[6], pool_claim = layout[7], pool_take_back = layout[8];
    Py_INCREF(threads);
    Py_XSETREF(threads_module, threads);
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "configure: a ContextVar first");
        return NULL;
    }
    Py_INCREF(var);
    Py_XSETREF(backend_var, var);
    Py_INCREF(env);
    Py_XSETREF(environ_data, env);
    Py_INCREF(key);
    Py_XSETREF(env_key, key);
    Py_INCREF(names);
    Py_XSETREF(accepted, names); /* kept by reference: the Python side adds "auto" later */
    split_size = split;
    stream_bytes = stream;
    Py_RETURN_NONE;
}

static PyObject *calls(PyObject *module, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(taken);
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(backend_var, environ_data, env_key, accepted, split_size, stream_bytes, "
     "threads_module, parallel_threshold, chunk_align, (POOL_STRIDE, POOL_TASK, POOL_TASK_ARGS, "
     "POOL_START, POOL_STOP, POOL_DONE, POOL_ASLEEP, POOL_CLAIM, POOL_TAKE_BACK))"},
    {"calls", calls, METH_NOARGS, "How many calls this path has computed in this process."},
    {NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastact_call", "fastact's per-call fast path (fastact/_fastcall.py)",
    -1, module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastact_call(void)
{
    PyObject *module;
    import_array();
    if (PyType_Ready(&MapType) < 0 || PyType_Ready(&RowsType) < 0)
        return NULL;
    descrs[0] = PyArray_DescrFromType(NPY_FLOAT32); /* the dtype singletons: np.dtype(np.float32) */
    descrs[1] = PyArray_DescrFromType(NPY_FLOAT64); /* is one, and a dtype with metadata is not */
    module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&MapType);
    if (PyModule_AddObject(module, "Map", (PyObject *)&MapType) < 0) {
        Py_DECREF(&MapType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&RowsType);
    if (PyModule_AddObject(module, "Rows", (PyObject *)&RowsType) < 0) {
        Py_DECREF(&RowsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
