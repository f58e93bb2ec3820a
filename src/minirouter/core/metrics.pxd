cdef class Histogram:
    cdef public object bounds, counts
    cdef public double sum

    cpdef observe(self, double value)

cdef class Metrics:
    cdef public object buckets, requests, request_durations, upstream_latencies
    cdef public object bytes_received, bytes_sent, open_connections, connections_refused
    cdef public object connections_evicted, config_revision, config_reloads, target_up
    cdef public object upstream_failures, store_connected, store_behind_flag
    cdef public object mirror_invalid_items, listeners, tls_unknown_names
    cdef public object certificates_loaded, certificate_expiry

    cpdef request_done(self, route_id, status, double duration, bytes_in, bytes_out)
    cpdef upstream_response(self, upstream_id, double seconds)
