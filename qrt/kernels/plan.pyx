# cython: language_level=3
"""The compiled execution plan: a list of bound Steps run by a C loop, with the GIL released
for compiled steps (qrt/runtime/executor.py builds it; one per thread)."""
from cpython.mem cimport PyMem_Free, PyMem_Malloc

cdef int OUT_OF_MEMORY = -2
cdef int PYTHON_ERROR = -1
cdef int BAD_INDEX = -3  # GATHER: an index outside its table (nothing written)


cdef class Step:
    cdef int run(self) noexcept nogil:
        return 0

    def __call__(self):
        """Run this step alone (tests, and the plain function form of each kernel)."""
        _raise(self.run(), self)


cdef class PyStep(Step):
    """A Python callable fn(ins, params, out) as a step (the NumPy reference kernels)."""
    cdef object fn, ins, params, out, error

    def __init__(self, fn, ins, params, out):
        self.fn, self.ins, self.params, self.out = fn, ins, params, out

    cdef int run(self) noexcept nogil:
        with gil:
            try:
                self.fn(self.ins, self.params, self.out)
            except BaseException as e:
                self.error = e
                return PYTHON_ERROR
        return 0


cdef _raise(int rc, Step step):
    if rc == 0:
        return
    if rc == PYTHON_ERROR and isinstance(step, PyStep):
        e = (<PyStep>step).error
        (<PyStep>step).error = None
        raise e
    if rc == OUT_OF_MEMORY:
        raise MemoryError("qrt: out of memory for kernel scratch space")
    if rc == BAD_INDEX:
        from qrt.errors import InputError
        raise InputError("GATHER: an index fed to the model is outside its table (an id beyond the "
                         "vocabulary?); check the integer inputs")
    raise RuntimeError(f"qrt: kernel failed with code {rc}")


cdef class Plan:
    """Steps in execution order; run() loops over them in C without the GIL."""
    cdef list steps
    cdef void** seq  # borrowed pointers to the steps (self.steps keeps them alive)
    cdef Py_ssize_t n

    def __cinit__(self, steps):
        self.steps = list(steps)
        self.n = len(self.steps)
        self.seq = <void**>PyMem_Malloc(self.n * sizeof(void*) + 1)
        if self.seq == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(self.n):
            if not isinstance(self.steps[i], Step):
                raise TypeError(f"plan entry {i} is not a Step")
            self.seq[i] = <void*>self.steps[i]

    def __dealloc__(self):
        PyMem_Free(self.seq)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        """Step i; calling it runs that step alone (per-op timing)."""
        return self.steps[i]

    def run(self):
        cdef Py_ssize_t i = 0
        cdef int rc = 0
        with nogil:
            while i < self.n:
                rc = (<Step>self.seq[i]).run()
                if rc != 0:
                    break
                i += 1
        if rc != 0:
            _raise(rc, <Step>self.seq[i])
