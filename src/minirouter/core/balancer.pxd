cdef class TargetState:
    cdef public object target, address, address_b, host, port, idle, passive, weight
    cdef public long inflight, _fails
    cdef public bint healthy, _probation
    cdef public double ejected_until, _window_start

    cpdef bint available(self, double now)
    cpdef begin(self)
    cpdef end(self)
    cpdef record_failure(self, double now)
    cpdef record_success(self)

cdef class Balancer:
    cdef public object upstream, targets, policy, _now, _pick
    cdef public object _schedule, _ring_points, _ring_owners, _hash_header, _current
    cdef public Py_ssize_t _cursor
