from minirouter.core.balancer cimport TargetState

cdef class UpstreamConnection:
    cdef public TargetState target
    cdef public object loop, spec, transport, handler, parser
    cdef public bint closed, reused, head_only, response_started, tunnel
    cdef public object _reason, _headers
    cdef public bint _done_head_only, _in_message, _complete, _extra, _read_armed, _paused
    cdef public object _timer
    cdef public double _timer_at, _idle_deadline, _read_timeout, _last_read
    cdef public Py_ssize_t _unparsed

    cpdef start(self, handler, double read_timeout, bint head_only)
    cpdef arm_read_timeout(self)
    cpdef write(self, data)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef close(self)
    cpdef abort(self)
    cpdef park(self, double idle_timeout)
    cpdef _schedule(self, double deadline)
    cpdef _cancel_read_timer(self)
    cpdef _cancel_timers(self)
    cpdef _stop_timer(self)

cpdef UpstreamConnection take_idle(TargetState target, spec)
cpdef release(UpstreamConnection conn, spec)
