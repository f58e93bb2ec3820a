from minirouter.core.balancer cimport Balancer, TargetState
from minirouter.core.upstream cimport UpstreamConnection

cdef class ReadGate:
    cdef public object transport
    cdef public long reasons

    cpdef pause(self, long reason)
    cpdef resume(self, long reason)

cdef class ClientProtocol:
    cdef public object state, loop, limits, scheme, transport
    cdef public ReadGate gate
    cdef public object client_ip, client_ip_b, sni, parser, queue
    cdef public RequestCycle parsing, upgraded, newest
    cdef public bint closed, eof, write_paused, refused, _in_head
    cdef public Py_ssize_t _head_bytes, _header_size, _meta_bytes
    cdef public object _url, _headers
    cdef public double _deadline, _timer_at, _last_read
    cdef public int _deadline_kind
    cdef public object _timer, _body_timer, _send_timer

    cpdef bytes _take_simple(self, bytes data)
    cpdef _start(self, RequestCycle cycle)
    cpdef on_message_complete(self)
    cpdef cycle_done(self, RequestCycle cycle, bint keep_alive)
    cpdef write(self, data)
    cpdef close(self)
    cpdef abort(self)
    cpdef _arm(self, double delay, int kind)
    cpdef _disarm(self)

cdef class RequestCycle:
    cdef public Balancer balancer
    cdef public object body_limit, body_received, bytes_sent
    cdef public bint chunked
    cdef public UpstreamConnection conn
    cdef public object connecting, content_length
    cdef public bint discard_body
    cdef public object error_status, expect
    cdef public bint finished, flushed, head_sent
    cdef public object headers, host_b, host_count
    cdef public bint interim, keep_alive
    cdef public object last_error, match, method, method_b, out, pending, pending_size
    cdef public bint placeholder
    cdef public ClientProtocol proto
    cdef public object query
    cdef public bint request_complete, response_chunked, response_done, response_started
    cdef public object route_id
    cdef public bint stale_retry
    cdef public object started, state, status
    cdef public TargetState target
    cdef public object target_b, tried, tunnel_buffer
    cdef public bint tunnel_client_eof, tunnelling
    cdef public object upgrade, upstream_addr
    cdef public bint upstream_eof_ends, upstream_keep_alive
    cdef public object upstream_started, url, version

    cpdef run(self)
    cpdef bint body_pending(self)
    cpdef _connect(self)
    cpdef _attach(self, UpstreamConnection conn)
    cpdef client_body(self, data)
    cpdef client_complete(self)
    cpdef respond_own(self, data, status, bint close)
    cpdef on_upstream_body(self, data)
    cpdef on_upstream_complete(self)
    cpdef flush(self)
    cpdef _response_complete(self, bint reusable)
    cpdef _finish(self)
    cpdef _log(self)
