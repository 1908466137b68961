# cython: language_level=3
cdef class Step:
    """One operator bound to its input and output buffers, with everything checked and prepared
    when it was made: run() only computes. Returns 0, or a nonzero error code (see plan.pyx)."""
    cdef object keep  # the arrays (and packed data) whose memory the raw pointers point into
    cdef int run(self) noexcept nogil
