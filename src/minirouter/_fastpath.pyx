# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The fast-path API compiled: the same answers as `_fastpath_py` (the spec), much faster.

Read `_fastpath_py` first: the algorithm and data structures are the same (hash maps keyed by
exact host, by wildcard suffix, by exact path and by path prefix; regex routes are the only scan).
What differs is only how the work is done, so that a lookup stays in C:

* precedence is compared on C ints: a dense rank of the priority and a host and a path
  specificity (SPEC_EXACT, else length + 1, else 0), fixed at table build, so no tuple is ever
  built or compared on the hot path; only a full tie falls back to comparing the ids;
* a table built from the previous one after a few route changes (`previous=`, `changes=`)
  shares the unchanged entries, index buckets and map shards with it (see `_Shards`) and
  rebuilds only what the changed routes are in, so its cost does not grow with the number of
  routes, and the previous table is left as it was;
* the best candidate so far lives in a C struct holding a borrowed pointer to an entry owned by
  the table (alive for the whole call);
* host and path characters are read straight from the str buffers; the only allocations are the
  path-prefix / host-suffix slices used as dict keys and the Match returned;
* heads are written into one C buffer (on the stack unless the head is large) and copied once
  into the bytes returned.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport (
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
    PyUnicode_READ,
    PyUnicode_Compare,
    PyUnicode_Substring,
)
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy, memset

import re
import sys


cdef extern from "Python.h":
    ctypedef unsigned char Py_UCS1
    str PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)


__all__ = [
    "Candidate",
    "Edits",
    "Explanation",
    "Match",
    "RouteTable",
    "build_request_head",
    "build_response_head",
    "compile_edits",
    "normalize_host",
]

cdef enum:
    KIND_EXACT = 0
    KIND_PREFIX = 1
    KIND_REGEX = 2
    # Specificity of an exact host / exact path: above any wildcard-suffix or prefix length + 1.
    SPEC_EXACT = 0x40000000

# --------------------------------------------------------------------------------------- hosts


cdef str _normalize_slow(str host):
    # The spec's algorithm, for the rare host that needs more than the trailing-dot check.
    cdef Py_ssize_t end
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            host = host[1:end]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.endswith("."):
        host = host[: len(host) - 1]  # not [:-1]: negative indices are off (wraparound=False)
    return host


cdef str _normalize(str host):
    # One pass over the characters does the spec's work for ASCII hosts; already-normal ones
    # (the usual case) come back as they are, without a copy.
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(host)
    cdef Py_ssize_t i, start = 0, end = n, colon = -1, colons = 0
    cdef const Py_UCS1* data
    cdef Py_UCS1* out
    cdef Py_UCS1 ch
    cdef bint upper = False
    cdef str result
    if PyUnicode_KIND(host) != 1:  # not Latin-1, so surely not ASCII: the spec's own code
        return _normalize_slow(host)
    data = <const Py_UCS1*>PyUnicode_DATA(host)
    for i in range(n):
        ch = data[i]
        if ch > 127:
            return _normalize_slow(host)
        if ch >= 65 and ch <= 90:
            upper = True
        elif ch == 58:  # ':'
            colons += 1
            colon = i
    if n > 0 and data[0] == 91:  # "[v6]" or "[v6]:port"
        for i in range(1, n):
            if data[i] == 93:
                start = 1
                end = i
                break
    elif colons == 1:  # "name:port"; more colons without brackets: a bare IPv6 literal
        end = colon
    if end > start and data[end - 1] == 46:  # one trailing dot
        end -= 1
    if not upper:
        if start == 0 and end == n:
            return host
        return PyUnicode_Substring(host, start, end)
    result = PyUnicode_New(end - start, 127)
    out = <Py_UCS1*>PyUnicode_DATA(result)  # a new string nobody else has seen yet
    for i in range(end - start):
        ch = data[start + i]
        out[i] = ch + 32 if (ch >= 65 and ch <= 90) else ch
    return result


def normalize_host(str host not None):
    """Lower-case `host`, drop its port and one trailing dot: "[::1]:8080" -> "::1"."""
    return _normalize(host)


cdef inline Py_ssize_t _next_label_dot(str host, Py_ssize_t i, Py_ssize_t n):
    # The next '.' at index >= i that has at least one character before it, or -1: the text
    # after it is a suffix a `*.suffix` host pattern could stand for. Shared by match and
    # explain, so both walk the host the same way.
    cdef unsigned int kind = PyUnicode_KIND(host)
    cdef void* data = PyUnicode_DATA(host)
    if i < 1:
        i = 1
    while i < n:
        if PyUnicode_READ(kind, data, i) == 46:
            return i
        i += 1
    return -1


# --------------------------------------------------------------------------------------- edits

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Framing and connection management belong to the core; see _fastpath_py._EDIT_PROTECTED.
_EDIT_PROTECTED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
    }
)


cdef inline bint _clean(const unsigned char* p, Py_ssize_t n) noexcept:
    # No CR, LF or NUL: the bytes that could split a header line. libc's memchr is vectorised;
    # a byte loop costs about a nanosecond per byte, which adds up over a whole head.
    return (
        memchr(p, 13, n) == NULL and memchr(p, 10, n) == NULL and memchr(p, 0, n) == NULL
    )


cdef inline bint _clean_bytes(bytes data) noexcept:
    return _clean(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef bytes _scrubbed(bytes data):
    # The router's own values lose CR/LF/NUL rather than the whole header.
    if _clean_bytes(data):
        return data
    return data.translate(None, b"\r\n\x00")


cdef object _edit_name(name):
    if not _TOKEN.fullmatch(name):
        return None
    raw = name.encode("ascii")
    lowered = raw.lower()
    if lowered in _EDIT_PROTECTED or lowered.startswith(b"proxy-"):
        return None
    return raw


cdef object _edit_value(value):
    cdef bytes raw = value.encode("utf-8")
    return raw if _clean_bytes(raw) else None


@cython.final
@cython.no_gc  # holds tuples of bytes only: it cannot be part of a reference cycle
cdef class Edits:
    """Compiled `HeaderEdits`; opaque to callers: pass it to the head builders."""

    cdef tuple remove_l  # lower-cased names
    cdef tuple set_l  # lower-cased names, one entry per distinct name
    cdef tuple set_n
    cdef tuple set_v
    cdef tuple add_n
    cdef tuple add_v
    cdef bint filters  # remove or set present: each header written must be checked by name
    cdef bint empty

    def __cinit__(self):
        # Valid (empty) even when made with Edits.__new__: the builders read these blindly.
        self.remove_l = self.set_l = self.set_n = self.set_v = self.add_n = self.add_v = ()
        self.empty = True

    def __bool__(self):
        return not self.empty

    def __eq__(self, other):
        if not isinstance(other, Edits):
            return NotImplemented
        return self._state() == (<Edits>other)._state()

    def __hash__(self):
        return hash(self._state())

    cdef tuple _state(self):
        return (frozenset(self.remove_l), self.set_n, self.set_v, self.add_n, self.add_v)

    def __repr__(self):
        return (
            f"Edits(remove={self.remove_l!r}, set={tuple(zip(self.set_n, self.set_v))!r}, "
            f"add={tuple(zip(self.add_n, self.add_v))!r})"
        )


cdef Edits _make_edits(tuple remove_l, list sets, tuple add_n, tuple add_v):
    cdef Edits e = Edits.__new__(Edits)
    e.remove_l = remove_l
    e.set_l = tuple([s[0] for s in sets])
    e.set_n = tuple([s[1] for s in sets])
    e.set_v = tuple([s[2] for s in sets])
    e.add_n = add_n
    e.add_v = add_v
    e.filters = bool(remove_l) or bool(sets)
    e.empty = not (e.filters or add_n)
    return e


cdef Edits _NO_EDITS = _make_edits((), [], (), ())


def compile_edits(edits):
    """Compile a route's `HeaderEdits` once, at table build (see `_fastpath_py.compile_edits`)."""
    if edits is None or not (edits.set or edits.add or edits.remove):
        return _NO_EDITS  # shared: most routes edit nothing, and 100k copies add up
    remove = []
    for name in edits.remove:
        raw = _edit_name(name)
        if raw is not None and raw.lower() not in remove:
            remove.append(raw.lower())
    # One entry per distinct (case-insensitive) name: applying "set" twice for one name leaves
    # the first one's position with the last one's spelling and value, so fold them here and
    # the builders can make one pass.
    sets = []
    position = {}
    for name, text in edits.set.items():
        raw = _edit_name(name)
        value = _edit_value(text)
        if raw is None or value is None:
            continue
        lowered = raw.lower()
        if lowered in position:
            sets[position[lowered]] = (lowered, raw, value)
        else:
            position[lowered] = len(sets)
            sets.append((lowered, raw, value))
    add_n = []
    add_v = []
    for name, text in edits.add.items():
        raw = _edit_name(name)
        value = _edit_value(text)
        if raw is not None and value is not None:
            add_n.append(raw)
            add_v.append(value)
    if not (remove or sets or add_n):
        return _NO_EDITS
    return _make_edits(tuple(remove), sets, tuple(add_n), tuple(add_v))


# ---------------------------------------------------------------------------- result classes


# Not tracked by the cyclic GC: a Match only holds immutable values (the route, strings,
# tuples, Edits) that can never refer back to it, and one is allocated per request, so tracking
# would only make the collector run more often on the hot path.
@cython.final
@cython.no_gc
cdef class Match:
    """The winning route for one request, and what to forward."""

    cdef readonly object route
    cdef readonly tuple captures
    cdef readonly str path
    cdef readonly Edits request_edits
    cdef readonly Edits response_edits

    def __init__(self, route, tuple captures, str path, Edits request_edits,
                 Edits response_edits):
        self.route = route
        self.captures = captures
        self.path = path
        self.request_edits = request_edits
        self.response_edits = response_edits

    def __eq__(self, other):
        cdef Match o
        if not isinstance(other, Match):
            return NotImplemented
        o = <Match>other
        return (self.route, self.captures, self.path, self.request_edits, self.response_edits) == (
            o.route, o.captures, o.path, o.request_edits, o.response_edits
        )

    __hash__ = None

    def __repr__(self):
        return (
            f"Match(route={self.route!r}, captures={self.captures!r}, path={self.path!r}, "
            f"request_edits={self.request_edits!r}, response_edits={self.response_edits!r})"
        )


@cython.final
@cython.no_gc  # holds strings only
cdef class Candidate:
    """One enabled route in an explanation: did it match, and if it did not win, why."""

    cdef readonly str route_id
    cdef readonly bint matched
    cdef readonly str reason

    def __init__(self, str route_id, bint matched, str reason):
        self.route_id = route_id
        self.matched = matched
        self.reason = reason

    def __eq__(self, other):
        cdef Candidate o
        if not isinstance(other, Candidate):
            return NotImplemented
        o = <Candidate>other
        return (self.route_id, self.matched, self.reason) == (o.route_id, o.matched, o.reason)

    def __hash__(self):
        return hash((self.route_id, self.matched, self.reason))

    def __repr__(self):
        return (
            f"Candidate(route_id={self.route_id!r}, matched={self.matched!r}, "
            f"reason={self.reason!r})"
        )


@cython.final
cdef class Explanation:
    cdef readonly object winner
    cdef readonly list candidates

    def __init__(self, winner, list candidates=None):
        self.winner = winner
        self.candidates = [] if candidates is None else candidates

    def __eq__(self, other):
        cdef Explanation o
        if not isinstance(other, Explanation):
            return NotImplemented
        o = <Explanation>other
        return (self.winner, self.candidates) == (o.winner, o.candidates)

    __hash__ = None

    def __repr__(self):
        return f"Explanation(winner={self.winner!r}, candidates={self.candidates!r})"


# ------------------------------------------------------------------------------ route table

_TEMPLATE_REF = re.compile(r"\$(?:([0-9])|\{([0-9]+)\})")


cdef tuple _compile_template(str template, int groups):
    parts = []
    cdef Py_ssize_t pos = 0
    for ref in _TEMPLATE_REF.finditer(template):
        parts.append(template[pos:ref.start()])
        number = int(ref.group(1) or ref.group(2))
        parts.append(number if number <= groups else "")
        pos = ref.end()
    parts.append(template[pos:])
    return tuple([part for part in parts if part != ""])


cdef str _expand(tuple template, tuple captures, object found):
    # captures holds the groups with "" for the ones that did not take part, as the spec's
    # `found.group(n) or ""`; only $0 needs the match object itself.
    cdef list out = []
    cdef Py_ssize_t number
    for part in template:
        if type(part) is str:
            out.append(part)
        else:
            number = part
            out.append(captures[number - 1] if number > 0 else found.group(0))
    return "".join(out)


@cython.final
cdef class _Entry:
    # One enabled route, compiled.
    cdef object route
    cdef str id
    cdef object priority  # the route's own value, for explain's reasons
    cdef int prio  # dense rank of the priority in the table: bigger wins
    cdef int kind
    cdef int lit_ps  # path specificity of an exact / prefix route
    cdef str path
    cdef Py_ssize_t plen
    cdef bint strip
    cdef frozenset methods  # None: any method
    cdef tuple header_names  # lower-cased; None when the route has no header conditions
    cdef tuple header_values
    cdef object rx_match  # bound Pattern.match of a regex route
    cdef tuple rewrite
    cdef Edits req_edits
    cdef Edits resp_edits
    # Tuples, not frozensets: a route names one or two hosts, and at 100k routes the
    # difference is ~30 MB.
    cdef tuple exact_hosts
    cdef tuple wild_suffixes
    cdef bint any_host


cdef _Entry _clone(_Entry old):
    # Everything but the per-table ranks, which the new table assigns afresh.
    cdef _Entry e = _Entry.__new__(_Entry)
    e.route = old.route
    e.id = old.id
    e.priority = old.priority
    e.kind = old.kind
    e.lit_ps = old.lit_ps
    e.path = old.path
    e.plen = old.plen
    e.strip = old.strip
    e.methods = old.methods
    e.header_names = old.header_names
    e.header_values = old.header_values
    e.rx_match = old.rx_match
    e.rewrite = old.rewrite
    e.req_edits = old.req_edits
    e.resp_edits = old.resp_edits
    e.exact_hosts = old.exact_hosts
    e.wild_suffixes = old.wild_suffixes
    e.any_host = old.any_host
    return e


def _route_id(route):
    return route.id


def _precedence(_Entry e):
    # Within one index slot every route has the same host and path specificity.
    return (-e.prio, e.id)


cdef _Entry _compile_route(route):
    cdef _Entry e = _Entry.__new__(_Entry)
    path_type = route.path_type
    if path_type == "exact":
        e.kind = KIND_EXACT
    elif path_type == "prefix":
        e.kind = KIND_PREFIX
    elif path_type == "regex":
        e.kind = KIND_REGEX
    else:
        raise ValueError(f"route {route.id!r}: unknown path_type {path_type!r}")
    e.route = route
    e.id = route.id
    e.priority = route.priority
    e.path = route.path
    e.plen = len(e.path)
    e.lit_ps = SPEC_EXACT if e.kind == KIND_EXACT else <int>e.plen + 1
    e.strip = route.strip_prefix
    exact = []
    suffixes = []
    for pattern in route.hosts:
        if pattern.startswith("*."):
            name = sys.intern(_normalize(pattern[2:]))
            if name not in suffixes:
                suffixes.append(name)
        else:
            name = sys.intern(_normalize(pattern))
            if name not in exact:
                exact.append(name)
    e.exact_hosts = tuple(exact)
    e.wild_suffixes = tuple(suffixes)
    e.any_host = not route.hosts
    e.methods = frozenset(route.methods) if route.methods else None
    if route.headers:
        e.header_names = tuple([name.lower() for name in route.headers])
        e.header_values = tuple(route.headers.values())
    if e.kind == KIND_REGEX:
        try:
            regex = re.compile(route.path)
        except re.error as err:
            raise ValueError(f"route {route.id!r}: invalid regex {route.path!r}: {err}") from err
        e.rx_match = regex.match
        if route.rewrite is not None:
            e.rewrite = _compile_template(route.rewrite, regex.groups)
    e.req_edits = compile_edits(route.request_headers)
    e.resp_edits = compile_edits(route.response_headers)
    return e


# ------------------------------------------------------------------- maps shared between tables

cdef enum:
    # A map with more entries than this is held as _Shards of about _SHARD_SIZE entries each.
    _SHARD_OVER = 512
    _SHARD_SIZE = 64


@cython.final
cdef class _Shards:
    # A map too big to copy for every change, split by key hash into 2**bits dicts: a table
    # patched from another copies only the dicts its changes touch and shares the rest.
    # (At 10k routes, copying the id map and a bucket's path map, and freeing the old
    # copies later, cost the event loop more than everything else a one-route change does.)
    cdef list parts
    cdef int shift  # 64 - bits
    cdef Py_ssize_t size

    def __len__(self):
        return self.size


cdef inline Py_ssize_t _part_of(Py_hash_t h, int shift) noexcept:
    # The top bits of the hash, scrambled: a dict uses the low bits for its slots, so shards
    # chosen by the low bits would give all keys of one shard the same first slot.
    return <Py_ssize_t>((<uint64_t>h * <uint64_t>0x9E3779B97F4A7C15) >> shift)


cdef inline PyObject* _get(object m, object key) except? NULL:
    # The value of `key` in a dict, _Shards or None `m` (borrowed), or NULL. (A patched
    # bucket may keep the length bound of a prefix map that has become None.)
    cdef _Shards s
    if PyDict_CheckExact(m):
        return PyDict_GetItem(m, key)
    if m is None:
        return NULL
    s = <_Shards>m
    return PyDict_GetItem(<dict>PyList_GET_ITEM(s.parts, _part_of(hash(key), s.shift)), key)


cdef Py_ssize_t _size(object m) except -1:
    if m is None:
        return 0
    if PyDict_CheckExact(m):
        return len(<dict>m)
    return (<_Shards>m).size


cdef list _items(object m):
    # The (key, value) pairs of a dict, _Shards or None.
    if m is None:
        return []
    if PyDict_CheckExact(m):
        return list((<dict>m).items())
    out = []
    for part in (<_Shards>m).parts:
        out.extend((<dict>part).items())
    return out


cdef list _values(object m):
    return [value for _, value in _items(m)]  # for explain and `routes`: not on the hot path


cdef object _sealed(dict d):
    # `d` as the map a table keeps: itself while small, else split into _Shards.
    cdef _Shards s
    cdef int bits = 1
    cdef Py_ssize_t i
    if len(d) <= _SHARD_OVER:
        return d
    while (<Py_ssize_t>1 << bits) * _SHARD_SIZE < len(d):
        bits += 1
    s = _Shards.__new__(_Shards)
    s.shift = 64 - bits
    s.size = len(d)
    s.parts = [{} for i in range(1 << bits)]
    for key, value in d.items():
        (<dict>PyList_GET_ITEM(s.parts, _part_of(hash(key), s.shift)))[key] = value
    return s


@cython.final
cdef class _MapCopy:
    # A copy of a map (dict, _Shards or None) with a few keys changed; done() gives it. Only
    # the dicts written to are copied: the source map is left as it was.
    cdef dict whole  # the copy of a dict (or of None)
    cdef list parts  # the copy's parts, of a _Shards
    cdef bytearray own  # own[i]: parts[i] is this copy's own dict already
    cdef int shift
    cdef Py_ssize_t size

    def __cinit__(self, source):
        if source is None:
            self.whole = {}
        elif PyDict_CheckExact(source):
            self.whole = dict(<dict>source)
        else:
            self.parts = list((<_Shards>source).parts)
            self.own = bytearray(len(self.parts))
            self.shift = (<_Shards>source).shift
        self.size = _size(source)

    cdef dict _part(self, key, bint write):
        cdef Py_ssize_t i
        if self.whole is not None:
            return self.whole
        i = _part_of(hash(key), self.shift)
        if write and not self.own[i]:
            self.parts[i] = dict(<dict>self.parts[i])
            self.own[i] = 1
        return <dict>self.parts[i]

    cdef object get(self, key):
        return self._part(key, False).get(key)

    cdef int set(self, key, value) except -1:
        cdef dict part = self._part(key, True)
        if key not in part:
            self.size += 1
        part[key] = value
        return 0

    cdef int pop(self, key) except -1:
        cdef dict part = self._part(key, True)
        if part.pop(key, None) is not None:
            self.size -= 1
        return 0

    cdef object done(self):
        # None when empty. Shards get fewer or more when the size has moved far from what
        # they were made for (a whole rebuild of the map, once per fourfold change).
        cdef _Shards s
        if self.size == 0:
            return None
        if self.whole is not None:
            return _sealed(self.whole)
        if self.size < _SHARD_OVER // 4 or self.size > 4 * _SHARD_SIZE * len(self.parts):
            merged = {}
            for part in self.parts:
                merged.update(<dict>part)
            return _sealed(merged)
        s = _Shards.__new__(_Shards)
        s.parts = self.parts
        s.shift = self.shift
        s.size = self.size
        return s


@cython.final
cdef class _Bucket:
    # The routes reachable through one host key (an exact host, a wildcard suffix, or any).
    cdef int hs  # host specificity of the key
    cdef int max_prio  # best priority rank in the bucket: prunes the whole bucket
    # path -> [_Entry] in precedence order, as a dict or _Shards; None when empty. Plain dicts
    # while the bucket is being built.
    cdef object exact
    cdef object prefix  # prefix -> [_Entry], the same way
    cdef list regex  # [_Entry] in precedence order; None when empty
    cdef Py_ssize_t nlens
    cdef Py_ssize_t* lens  # distinct prefix lengths, longest first
    cdef int* rest_max  # rest_max[i]: best priority rank among prefixes of length <= lens[i]
    # prefix length -> best priority rank among the prefixes of that length: what lens and
    # rest_max are made from, kept for patching (where it may stay high: it only prunes).
    cdef dict best_len

    def __cinit__(self):
        self.exact = {}
        self.prefix = {}
        self.regex = []
        self.max_prio = -1

    def __dealloc__(self):
        free(self.lens)
        free(self.rest_max)

    cdef int add(self, _Entry e) except -1:
        if e.kind == KIND_EXACT:
            (<dict>self.exact).setdefault(e.path, []).append(e)
        elif e.kind == KIND_PREFIX:
            (<dict>self.prefix).setdefault(e.path, []).append(e)
        else:
            self.regex.append(e)
        if e.prio > self.max_prio:
            self.max_prio = e.prio
        return 0

    cdef int finish(self) except -1:
        # After the adds of a whole build: groups sorted, bounds set, maps sealed.
        cdef int top
        best_at_length = {}
        for group in (<dict>self.exact).values():
            group.sort(key=_precedence)
        for prefix, group in (<dict>self.prefix).items():
            group.sort(key=_precedence)
            length = len(prefix)
            top = (<_Entry>group[0]).prio
            if best_at_length.get(length, -1) < top:
                best_at_length[length] = top
        self.regex.sort(key=_precedence)
        self.exact = _sealed(self.exact)
        self.prefix = _sealed(self.prefix)
        return self.set_lengths(best_at_length)

    cdef int set_lengths(self, dict best_at_length) except -1:
        # lens and rest_max from best_at_length; empty parts become None.
        cdef Py_ssize_t i
        cdef int best
        self.best_len = best_at_length
        lengths = sorted(best_at_length, reverse=True)
        self.nlens = len(lengths)
        if self.nlens:
            self.lens = <Py_ssize_t*>malloc(self.nlens * sizeof(Py_ssize_t))
            self.rest_max = <int*>malloc(self.nlens * sizeof(int))
            if self.lens == NULL or self.rest_max == NULL:
                raise MemoryError()
            best = -1
            for i in range(self.nlens - 1, -1, -1):
                self.lens[i] = lengths[i]
                if best_at_length[lengths[i]] > best:
                    best = best_at_length[lengths[i]]
                self.rest_max[i] = best
        if not _size(self.exact):
            self.exact = None
        if not _size(self.prefix):
            self.prefix = None
        if not self.regex:
            self.regex = None
        return 0


cdef list _without(list group, _Entry e):
    return [x for x in group if x is not e]


cdef _Bucket _patched(_Bucket old, list drop, list add, int hs):
    # `old` (None: a new key) without the entries `drop` and with `add`, as a new bucket that
    # shares with `old` every group and map shard nothing touched. None when it ends up empty.
    cdef _Bucket b = _Bucket()
    cdef _Entry e
    cdef _MapCopy exact = _MapCopy(old.exact if old is not None else None)
    cdef _MapCopy prefix = _MapCopy(old.prefix if old is not None else None)
    cdef _MapCopy groups
    cdef list regex = old.regex if old is not None else None
    cdef bint regex_own = False, regex_added = False
    b.hs = hs
    touched = []
    if drop is not None:
        for e in drop:
            if e.kind == KIND_REGEX:
                if regex is not None:
                    regex = _without(regex, e)
                    regex_own = True
                continue
            groups = exact if e.kind == KIND_EXACT else prefix
            group = groups.get(e.path)
            if group is not None:
                group = _without(group, e)
                if group:
                    groups.set(e.path, group)
                else:
                    groups.pop(e.path)
    if add is not None:
        for e in add:
            if e.kind == KIND_REGEX:
                if not regex_own:
                    regex = list(regex) if regex is not None else []
                    regex_own = True
                regex.append(e)
                regex_added = True
                continue
            groups = exact if e.kind == KIND_EXACT else prefix
            group = list(groups.get(e.path) or ())
            group.append(e)
            groups.set(e.path, group)
            touched.append(group)
    for group in touched:
        group.sort(key=_precedence)
    if regex_added:
        regex.sort(key=_precedence)
    if exact.size == 0 and prefix.size == 0 and not regex:
        return None
    b.exact = exact.done()
    b.prefix = prefix.done()
    b.regex = regex
    # The bounds only grow here: one left high by a dropped route costs a lookup that finds
    # nothing, never a wrong answer (they prune, they never select). Recomputing them would
    # walk every group of the bucket (10k for a bucket of 10k prefix routes).
    best_at_length = dict(old.best_len) if old is not None and old.best_len else {}
    b.max_prio = old.max_prio if old is not None else -1
    if add is not None:
        for e in add:
            if e.prio > b.max_prio:
                b.max_prio = e.prio
            if e.kind == KIND_PREFIX and best_at_length.get(e.plen, -1) < e.prio:
                best_at_length[e.plen] = e.prio
    b.set_lengths(best_at_length)
    return b


cdef dict _keyed(list entries, int which):
    # key -> the entries of `entries` indexed under it: 0 exact hosts, 1 wildcard suffixes,
    # 2 any host (key None).
    cdef _Entry e
    cdef dict out = {}
    for e in entries:
        if which == 0:
            keys = e.exact_hosts
        elif which == 1:
            keys = e.wild_suffixes
        else:
            keys = (None,) if e.any_host else ()
        for key in keys:
            out.setdefault(key, []).append(e)
    return out


cdef object _patched_index(object index, list dropped, list added, int which):
    # `index` (exact hosts, which=0, or wildcard suffixes, 1) with the buckets of the
    # changed entries patched; the same object when none of them is in it.
    cdef _MapCopy copy
    cdef int hs
    drops, adds = _keyed(dropped, which), _keyed(added, which)
    if not drops and not adds:
        return index
    copy = _MapCopy(index)
    for key in set(drops) | set(adds):
        old = copy.get(key)
        hs = SPEC_EXACT if which == 0 else <int>len(key) + 1
        b = _patched(old, drops.get(key), adds.get(key), hs)
        if b is None:
            copy.pop(key)
        else:
            copy.set(key, b)
    return copy.done()


# The best candidate found so far. `entry` is borrowed: entries are owned by the table.
cdef struct _Best:
    PyObject* entry
    int prio
    int hs
    int ps


cdef inline bint _beats(int prio, int hs, int ps, _Entry e, _Best* best) noexcept:
    if best.entry == NULL:
        return True
    if prio != best.prio:
        return prio > best.prio
    if hs != best.hs:
        return hs > best.hs
    if ps != best.ps:
        return ps > best.ps
    # Two str never fail to compare.
    return PyUnicode_Compare(e.id, (<_Entry>best.entry).id) < 0


cdef inline bint _may_beat(int prio, int hs, int ps, _Best* best) noexcept:
    # Could a candidate with these ranks beat `best`, given a small enough id?
    if best.entry == NULL:
        return True
    if prio != best.prio:
        return prio > best.prio
    if hs != best.hs:
        return hs > best.hs
    return ps >= best.ps


cdef inline void _take(_Best* best, _Entry e, int hs, int ps) noexcept:
    best.entry = <PyObject*>e
    best.prio = e.prio
    best.hs = hs
    best.ps = ps


# The predicates below are shared by match (which reaches candidates through the indexes) and
# explain (which checks every route), as in the spec.

cdef int _condition_failure(_Entry e, str method, object headers) except -2:
    # 0: the method and header conditions accept the request; -1: the method is not allowed;
    # k > 0: header condition k - 1 does not match.
    cdef Py_ssize_t i, n
    cdef PyObject* got
    if e.methods is not None and method not in e.methods:
        return -1
    if e.header_names is None:
        return 0
    n = PyTuple_GET_SIZE(e.header_names)
    if headers is None:
        return 1
    if type(headers) is dict:
        for i in range(n):
            got = PyDict_GetItem(headers, <object>PyTuple_GET_ITEM(e.header_names, i))
            if got == NULL or <object>got != <object>PyTuple_GET_ITEM(e.header_values, i):
                return <int>i + 1
    else:
        for i in range(n):
            if headers.get(e.header_names[i]) != e.header_values[i]:
                return <int>i + 1
    return 0


cdef str _failure_reason(_Entry e, int code, str method):
    if code == -1:
        return f"method {method} not allowed"
    return f"header {e.header_names[code - 1]} does not match"


cdef inline object _regex_match(_Entry e, str path):
    return e.rx_match(path)


cdef int _host_spec(_Entry e, str host):
    # How specifically the route's hosts match `host` (normalised); -1 if they do not.
    cdef Py_ssize_t n, i
    if e.any_host:
        return 0
    if host in e.exact_hosts:
        return SPEC_EXACT
    if e.wild_suffixes:
        n = PyUnicode_GET_LENGTH(host)
        i = _next_label_dot(host, 1, n)
        while i >= 0:
            if PyUnicode_Substring(host, i + 1, n) in e.wild_suffixes:
                return <int>(n - i - 1) + 1
            i = _next_label_dot(host, i + 1, n)
    return -1


cdef int _literal_path_spec(_Entry e, str path):
    if e.kind == KIND_EXACT:
        return SPEC_EXACT if path == e.path else -1
    return e.lit_ps if path.startswith(e.path) else -1


cdef Match _make_match(_Entry e, str path, object found):
    cdef Match r = Match.__new__(Match)
    cdef Py_ssize_t n
    cdef unsigned int kind
    cdef void* data
    r.route = e.route
    r.request_edits = e.req_edits
    r.response_edits = e.resp_edits
    if e.kind == KIND_REGEX:
        r.captures = found.groups("")
        r.path = _expand(e.rewrite, r.captures, found) if e.rewrite is not None else path
        return r
    r.captures = ()
    if not e.strip:
        r.path = path
    elif e.kind == KIND_EXACT:
        r.path = "/"
    else:
        # The spec's `rest if rest.startswith("/") else "/" + rest`, with one slice and no
        # concatenation in the usual cases.
        n = PyUnicode_GET_LENGTH(path)
        kind = PyUnicode_KIND(path)
        data = PyUnicode_DATA(path)
        if e.plen < n and PyUnicode_READ(kind, data, e.plen) == 47:  # rest starts with "/"
            r.path = PyUnicode_Substring(path, e.plen, n)
        elif e.plen > 0 and PyUnicode_READ(kind, data, e.plen - 1) == 47:  # prefix ends in "/"
            r.path = PyUnicode_Substring(path, e.plen - 1, n)
        else:
            r.path = "/" + PyUnicode_Substring(path, e.plen, n)
    return r


cdef inline _Entry _first_allowed(list group, str method, object headers):
    # The best route of a precedence-sorted group whose method/header conditions pass.
    cdef Py_ssize_t i
    cdef _Entry e
    for i in range(PyList_GET_SIZE(group)):
        e = <_Entry>PyList_GET_ITEM(group, i)
        if e.methods is None and e.header_names is None:
            return e
        if _condition_failure(e, method, headers) == 0:
            return e
    return None


cdef int _scan_literal(_Bucket b, str path, Py_ssize_t n, str method, object headers,
                       _Best* best) except -1:
    # Exact and prefix routes of one bucket: a dict lookup for the path and one per distinct
    # prefix length, skipping what cannot beat `best`.
    cdef PyObject* found
    cdef _Entry e
    cdef Py_ssize_t i, length
    cdef int ps
    if not _may_beat(b.max_prio, b.hs, SPEC_EXACT, best):
        return 0
    if b.exact is not None:
        found = _get(b.exact, path)
        if found != NULL:
            e = _first_allowed(<list>found, method, headers)
            if e is not None and _beats(e.prio, b.hs, SPEC_EXACT, e, best):
                _take(best, e, b.hs, SPEC_EXACT)
    for i in range(b.nlens):
        length = b.lens[i]
        if length > n:
            continue
        ps = <int>length + 1
        # Shorter prefixes are less specific and rest_max bounds their priority: once they
        # cannot beat the best, none after them can.
        if not _may_beat(b.rest_max[i], b.hs, ps, best):
            break
        if length == n:
            found = _get(b.prefix, path)
        else:
            found = _get(b.prefix, PyUnicode_Substring(path, 0, length))
        if found != NULL:
            e = _first_allowed(<list>found, method, headers)
            if e is not None and _beats(e.prio, b.hs, ps, e, best):
                _take(best, e, b.hs, ps)
    return 0


cdef object _scan_regex(_Bucket b, str path, str method, object headers, _Best* best):
    # Regex routes of one bucket that could still win, in precedence order; returns the
    # re.Match when one becomes the best, else None.
    cdef Py_ssize_t i
    cdef _Entry e
    for i in range(PyList_GET_SIZE(b.regex)):
        e = <_Entry>PyList_GET_ITEM(b.regex, i)
        if not _beats(e.prio, b.hs, 0, e, best):
            break  # the rest come later in precedence order: none of them can win either
        if _condition_failure(e, method, headers) != 0:
            continue
        found = _regex_match(e, path)
        if found is not None:
            _take(best, e, b.hs, 0)
            return found
    return None


# Buckets with regex routes are scanned after all literal routes, so that the best literal
# match prunes them; more than this many (a pathological config) are scanned as they are met,
# which gives the same answer with less pruning.
cdef enum:
    _MAX_REGEX_BUCKETS = 64


cdef object _lookup(RouteTable t, str host, str path, str method, object headers):
    cdef _Best best
    cdef PyObject* found
    cdef PyObject* regex_buckets[_MAX_REGEX_BUCKETS]
    cdef Py_ssize_t nregex = 0, k
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(path)
    cdef Py_ssize_t hn, i, slen
    cdef int wild_prio
    cdef _Bucket b
    cdef object regex_found = None, got
    best.entry = NULL

    host = _normalize(host)
    found = _get(t._exact_hosts, host)
    if found != NULL:
        b = <_Bucket>found
        _scan_literal(b, path, n, method, headers, &best)
        if b.regex is not None:
            regex_buckets[nregex] = found
            nregex += 1

    # A best match from the exact-host bucket has a more specific host than any wildcard, so
    # the wildcards only matter when one of them has a higher priority.
    if t._wildcards is not None and (best.entry == NULL or t._wild_max_prio > best.prio):
        hn = PyUnicode_GET_LENGTH(host)
        i = _next_label_dot(host, 1, hn)
        while i >= 0:
            slen = hn - i - 1
            wild_prio = t._wild_prio[slen] if slen < 256 else t._wild_long_prio
            if wild_prio and _may_beat(wild_prio - 1, <int>slen + 1, SPEC_EXACT, &best):
                found = _get(t._wildcards, PyUnicode_Substring(host, i + 1, hn))
                if found != NULL:
                    b = <_Bucket>found
                    _scan_literal(b, path, n, method, headers, &best)
                    if b.regex is not None:
                        if nregex < _MAX_REGEX_BUCKETS:
                            regex_buckets[nregex] = found
                            nregex += 1
                        else:
                            got = _scan_regex(b, path, method, headers, &best)
                            if got is not None:
                                regex_found = got
            i = _next_label_dot(host, i + 1, hn)

    if t._any is not None:
        b = t._any
        _scan_literal(b, path, n, method, headers, &best)
        if b.regex is not None:
            if nregex < _MAX_REGEX_BUCKETS:
                regex_buckets[nregex] = <PyObject*>b
                nregex += 1
            else:
                got = _scan_regex(b, path, method, headers, &best)
                if got is not None:
                    regex_found = got

    for k in range(nregex):
        got = _scan_regex(<_Bucket>regex_buckets[k], path, method, headers, &best)
        if got is not None:
            regex_found = got

    if best.entry == NULL:
        return None
    # regex_found belongs to the last regex route taken; it is only read if that is the best.
    return _make_match(<_Entry>best.entry, path, regex_found)


cdef enum:
    # Changed routes above which a whole new build is cheaper than patching the previous one.
    _PATCH_MAX = 64


cdef class RouteTable:
    """An immutable index of the enabled routes; build a new one to change the config."""

    cdef tuple _routes  # None until asked for, when made with routes=None
    cdef bint _all_enabled  # no disabled route was given: _routes may be the given tuple
    cdef object _exact_hosts  # host -> _Bucket (a dict or _Shards)
    cdef object _wildcards  # suffix -> _Bucket (a dict or _Shards); None when there are none
    cdef _Bucket _any  # None when no route takes any host
    cdef int _wild_max_prio
    # _wild_prio[n]: 1 + the best priority rank among wildcard suffixes of length n, 0 if there
    # are none: the host walk slices out and looks up only suffixes that could still win.
    cdef int _wild_prio[256]
    cdef int _wild_long_prio  # the same for suffixes of 256 characters or more
    # True when some route has header conditions: only then must the caller build the
    # header mapping for match() (it costs more than the lookup itself).
    cdef readonly bint uses_headers
    cdef Py_ssize_t _nheaders  # how many routes have header conditions
    # For building the next table from this one (see _patch): id -> entry (a dict or
    # _Shards), and priority -> rank.
    cdef object _by_id
    cdef dict _prio_rank

    def __cinit__(self):
        # An empty table even when made with RouteTable.__new__: match reads these blindly.
        self._routes = ()
        self._all_enabled = True
        self._exact_hosts = {}
        self._by_id = {}
        self._prio_rank = {}

    def __init__(self, routes, RouteTable previous=None, changes=None):
        cdef _Entry e
        cdef _Bucket b
        cdef object reuse
        cdef PyObject* found
        cdef Py_ssize_t given = 0
        if routes is None:
            # `previous`'s routes with `changes`, listed by id (see the spec).
            if previous is None or changes is None:
                raise TypeError("routes=None needs previous= and changes=")
            if self._patch(None, previous, changes):
                return
            merged = {route.id: route for route in previous.routes}
            for route_id, route in changes.items():
                if route is None:
                    merged.pop(route_id, None)
                else:
                    merged[route_id] = route
            routes = sorted(merged.values(), key=_route_id)
        elif previous is not None and self._patch(routes, previous, changes):
            return
        entries = []
        if previous is None:
            for route in routes:
                given += 1
                if route.enabled:
                    entries.append(_compile_route(route))
        else:
            # A config change usually touches a few routes of thousands: the unchanged Route
            # objects (the mirror keeps them) take their compiled form from the old table.
            reuse = previous._by_id
            for route in routes:
                given += 1
                if not route.enabled:
                    continue
                found = _get(reuse, route.id)
                if found != NULL and (<_Entry>found).route is route:
                    entries.append(_clone(<_Entry>found))
                else:
                    entries.append(_compile_route(route))
        by_id = {}
        for e in entries:
            if e.id in by_id:
                # See the spec: the precedence order ends with the id.
                raise ValueError(f"duplicate route id {e.id!r}")
            by_id[e.id] = e
        prio_rank = {p: i for i, p in enumerate(sorted({e.priority for e in entries}))}
        for e in entries:
            e.prio = prio_rank[e.priority]
        self._routes = tuple([e.route for e in entries])
        self._all_enabled = len(entries) == given
        self._by_id = _sealed(by_id)
        self._prio_rank = prio_rank
        self._nheaders = 0
        for e in entries:
            if e.route.headers:
                self._nheaders += 1
        self.uses_headers = self._nheaders > 0

        exact_hosts = {}
        wildcards = {}
        any_bucket = _Bucket()
        any_bucket.hs = 0
        memset(self._wild_prio, 0, sizeof(self._wild_prio))
        self._wild_long_prio = 0
        self._wild_max_prio = -1
        for e in entries:
            if e.any_host:
                any_bucket.add(e)
            for host in e.exact_hosts:
                b = exact_hosts.get(host)
                if b is None:
                    b = exact_hosts[host] = _Bucket()
                    b.hs = SPEC_EXACT
                b.add(e)
            for suffix in e.wild_suffixes:
                b = wildcards.get(suffix)
                if b is None:
                    b = wildcards[suffix] = _Bucket()
                    b.hs = <int>len(suffix) + 1
                b.add(e)
                if len(suffix) < 256:
                    if self._wild_prio[len(suffix)] < e.prio + 1:
                        self._wild_prio[len(suffix)] = e.prio + 1
                elif self._wild_long_prio < e.prio + 1:
                    self._wild_long_prio = e.prio + 1
                if e.prio > self._wild_max_prio:
                    self._wild_max_prio = e.prio
        for b in exact_hosts.values():
            b.finish()
        for b in wildcards.values():
            b.finish()
        any_bucket.finish()
        self._exact_hosts = _sealed(exact_hosts)
        self._wildcards = _sealed(wildcards) if wildcards else None
        self._any = any_bucket if any_bucket.max_prio >= 0 else None

    cdef bint _patch(self, routes, RouteTable previous, changes) except -1:
        # Build this table as `previous` changed by a few routes: unchanged entries (same Route
        # object), the index buckets nothing changed and the map shards nothing changed are
        # shared, and only what the changed routes are in is rebuilt; `previous` is not
        # changed. False (nothing set) when a full build is needed: many changes, a priority
        # value the previous table did not have, or a repeated id (the full build reports it).
        #
        # `changes` (id -> Route, None when deleted), when given, names every id whose route
        # may differ from `previous`: only those are looked at, so the cost does not grow
        # with the number of routes (the caller vouches that `routes` is `previous`'s routes
        # with exactly these changes). Without it every route is compared with `previous`.
        cdef _Entry e
        cdef _Entry old
        cdef object by_id = previous._by_id
        cdef PyObject* found
        cdef list added = []
        cdef list dropped = []
        cdef list enabled
        cdef Py_ssize_t kept = 0
        cdef int k
        cdef bint all_enabled
        cdef tuple new_routes
        cdef _MapCopy new_by_id
        if changes is not None:
            if len(changes) > _PATCH_MAX:
                return False
            all_enabled = previous._all_enabled
            for route_id, route in changes.items():
                found = _get(by_id, route_id)
                if route is not None and not route.enabled:
                    all_enabled = False
                    route = None
                if found != NULL:
                    if route is (<_Entry>found).route:
                        continue
                    dropped.append(<_Entry>found)
                if route is not None:
                    if route.id != route_id:
                        return False
                    added.append(_compile_route(route))
            if routes is None:
                new_routes = None  # made from the entries when asked for
            elif all_enabled and type(routes) is tuple:
                new_routes = <tuple>routes
            else:
                new_routes = tuple([route for route in routes if route.enabled])
        else:
            enabled = []
            all_enabled = True
            for route in routes:
                if not route.enabled:
                    all_enabled = False
                    continue
                enabled.append(route)
                found = _get(by_id, route.id)
                if found != NULL and (<_Entry>found).route is route:
                    kept += 1
                    continue
                if len(added) >= _PATCH_MAX:
                    return False
                if found != NULL:
                    dropped.append(<_Entry>found)
                added.append(_compile_route(route))
            if kept + len(dropped) != _size(by_id):
                present = {route.id for route in enabled}
                if len(present) != len(enabled):
                    return False
                for route_id, value in _items(by_id):
                    if route_id not in present:
                        dropped.append(value)
                if len(dropped) > _PATCH_MAX:
                    return False
            new_routes = tuple(enabled)
        prio_rank = previous._prio_rank
        for e in added:
            rank = prio_rank.get(e.priority)
            if rank is None:
                return False
            e.prio = rank
        new_by_id = _MapCopy(by_id)
        for old in dropped:
            if new_by_id.get(old.id) is old:
                new_by_id.pop(old.id)
        for e in added:
            if new_by_id.get(e.id) is not None:
                return False  # the same id twice
            new_by_id.set(e.id, e)
        if new_routes is not None and new_by_id.size != len(new_routes):
            return False

        # The index: only the buckets under a key of a dropped or added entry change.
        exact_hosts = _patched_index(previous._exact_hosts, dropped, added, 0)
        wildcards = _patched_index(previous._wildcards, dropped, added, 1)
        any_bucket = previous._any
        drops, adds = _keyed(dropped, 2), _keyed(added, 2)
        if drops or adds:
            any_bucket = _patched(previous._any, drops.get(None), adds.get(None), 0)

        # Wildcard priority bounds only grow here: a bound left high by a dropped route costs
        # a dict lookup, never a wrong answer (they prune, they do not select).
        memcpy(self._wild_prio, previous._wild_prio, sizeof(self._wild_prio))
        self._wild_long_prio = previous._wild_long_prio
        self._wild_max_prio = previous._wild_max_prio
        for e in added:
            for suffix in e.wild_suffixes:
                k = <int>len(suffix)
                if k < 256:
                    if self._wild_prio[k] < e.prio + 1:
                        self._wild_prio[k] = e.prio + 1
                elif self._wild_long_prio < e.prio + 1:
                    self._wild_long_prio = e.prio + 1
                if e.prio > self._wild_max_prio:
                    self._wild_max_prio = e.prio
        self._nheaders = previous._nheaders
        for e in dropped:
            if e.route.headers:
                self._nheaders -= 1
        for e in added:
            if e.route.headers:
                self._nheaders += 1
        self.uses_headers = self._nheaders > 0
        self._routes = new_routes
        self._all_enabled = all_enabled
        self._by_id = new_by_id.done() or {}
        self._prio_rank = prio_rank
        self._exact_hosts = exact_hosts if exact_hosts is not None else {}
        self._wildcards = wildcards
        self._any = any_bucket
        return True

    def __len__(self):
        return _size(self._by_id)

    @property
    def routes(self):
        """The enabled routes, in the order given (by id when made with routes=None)."""
        cdef _Entry e
        if self._routes is None:
            routes = [e.route for e in _values(self._by_id)]
            routes.sort(key=_route_id)
            self._routes = tuple(routes)
        return self._routes

    def match(self, str host not None, str path not None, str method not None, headers=None):
        """The winning route for a request, or None (the router answers 404)."""
        return _lookup(self, host, path, method, headers)

    def explain(self, str host not None, str path not None, str method not None, headers=None):
        """Check every enabled route and say why each one did or did not win."""
        cdef _Entry e, w
        cdef int hs, ps, code
        host = _normalize(host)
        matched = []
        failed = []
        for e in _values(self._by_id):
            hs = _host_spec(e, host)
            if hs < 0:
                failed.append(Candidate(e.id, False, "host does not match"))
                continue
            found = None
            if e.kind == KIND_REGEX:
                found = _regex_match(e, path)
                ps = 0 if found is not None else -1
            else:
                ps = _literal_path_spec(e, path)
            if ps < 0:
                failed.append(Candidate(e.id, False, "path does not match"))
                continue
            code = _condition_failure(e, method, headers)
            if code != 0:
                failed.append(Candidate(e.id, False, _failure_reason(e, code, method)))
                continue
            matched.append((-e.prio, -hs, -ps, e.id, e, found))

        failed.sort(key=_candidate_id)
        if not matched:
            return Explanation(None, failed)
        matched.sort(key=_found_key)
        winner = matched[0]
        w = winner[4]
        candidates = [Candidate(w.id, True, "winner")]
        for item in matched[1:]:
            e = item[4]
            if e.prio != w.prio:
                reason = f"lower priority ({e.priority} < {w.priority})"
            elif item[1] != winner[1]:
                reason = "less specific host"
            elif item[2] != winner[2]:
                reason = "less specific path"
            else:
                reason = "larger id"
            candidates.append(Candidate(e.id, True, reason))
        return Explanation(_make_match(w, path, winner[5]), candidates + failed)


def _candidate_id(Candidate c):
    return c.route_id


def _found_key(tuple item):
    return item[:4]


# ---------------------------------------------------------------------------- head building

cdef enum:
    H_KEEP = 0
    H_DROP = 1
    H_CONNECTION = 2
    H_XFF = 3
    H_VIA = 4


cdef inline bint _ieq_lit(const unsigned char* s, Py_ssize_t n, const char* lowered) noexcept:
    # s[:n] equals the lower-case ASCII `lowered` (of length n), ignoring ASCII case.
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c >= 65 and c <= 90:
            c += 32
        if c != <unsigned char>lowered[i]:
            return False
    return True


cdef inline bint _ieq(const unsigned char* s, Py_ssize_t n, bytes lowered) noexcept:
    if PyBytes_GET_SIZE(lowered) != n:
        return False
    return _ieq_lit(s, n, PyBytes_AS_STRING(lowered))


cdef int _classify(const unsigned char* s, Py_ssize_t n, bint request) noexcept:
    # What to do with a received header, by name (the spec's drop sets, as a switch on length).
    if n >= 6 and _ieq_lit(s, 6, b"proxy-"):
        return H_DROP
    if n == 2:
        if _ieq_lit(s, 2, b"te"):
            return H_DROP
    elif n == 3:
        if request and _ieq_lit(s, 3, b"via"):
            return H_VIA
    elif n == 4:
        if request and _ieq_lit(s, 4, b"host"):
            return H_DROP
    elif n == 7:
        if _ieq_lit(s, 7, b"upgrade") or _ieq_lit(s, 7, b"trailer"):
            return H_DROP
    elif n == 10:
        if _ieq_lit(s, 10, b"connection"):
            return H_CONNECTION
        if _ieq_lit(s, 10, b"keep-alive"):
            return H_DROP
    elif n == 14:
        if _ieq_lit(s, 14, b"content-length"):
            return H_DROP
    elif n == 15:
        if request and _ieq_lit(s, 15, b"x-forwarded-for"):
            return H_XFF
    elif n == 16:
        if request and _ieq_lit(s, 16, b"x-forwarded-host"):
            return H_DROP
    elif n == 17:
        if _ieq_lit(s, 17, b"transfer-encoding"):
            return H_DROP
        if request and _ieq_lit(s, 17, b"x-forwarded-proto"):
            return H_DROP
    return H_KEEP


cdef inline const unsigned char* _ptr(bytes data) noexcept:
    return <const unsigned char*>PyBytes_AS_STRING(data)


cdef inline int _split(PyObject* item, PyObject** name, PyObject** value) except -1:
    # One received header as borrowed (name, value) pointers, without building a tuple: the
    # sequence being read keeps them alive.
    cdef object pair = <object>item
    if type(pair) is tuple and PyTuple_GET_SIZE(pair) == 2:
        name[0] = PyTuple_GET_ITEM(pair, 0)
        value[0] = PyTuple_GET_ITEM(pair, 1)
    elif type(pair) is list and PyList_GET_SIZE(pair) == 2:
        name[0] = PyList_GET_ITEM(pair, 0)
        value[0] = PyList_GET_ITEM(pair, 1)
    else:
        raise TypeError("each header must be a (name, value) pair")
    if not PyBytes_Check(<object>name[0]) or not PyBytes_Check(<object>value[0]):
        raise TypeError("header names and values must be bytes")
    return 0


cdef list _connection_tokens(object seq, Py_ssize_t count, bint request):
    # The lower-cased names listed in every Connection header, or None. Names the builder
    # drops anyway (keep-alive, upgrade, ...) are left out: listing them changes nothing.
    cdef list tokens = None
    cdef Py_ssize_t i, j, start, end, n
    cdef const unsigned char* p
    cdef PyObject* name_p = NULL  # set by _split
    cdef PyObject* value_p = NULL
    cdef bytes value, token
    cdef char* q
    cdef Py_ssize_t k
    cdef int kind
    for i in range(count):
        _split(PySequence_Fast_GET_ITEM(seq, i), &name_p, &value_p)
        if _classify(_ptr(<bytes>name_p), PyBytes_GET_SIZE(<bytes>name_p), request) != H_CONNECTION:
            continue
        value = <bytes>value_p
        p = _ptr(value)
        n = PyBytes_GET_SIZE(value)
        j = 0
        while j <= n:
            start = j
            while j < n and p[j] != 44:  # ','
                j += 1
            end = j
            j += 1
            while start < end and (p[start] == 32 or p[start] == 9):
                start += 1
            while end > start and (p[end - 1] == 32 or p[end - 1] == 9):
                end -= 1
            if end == start:
                continue
            kind = _classify(p + start, end - start, request)
            if kind == H_DROP or kind == H_CONNECTION:
                continue
            token = PyBytes_FromStringAndSize(<const char*>(p + start), end - start)
            q = PyBytes_AS_STRING(token)  # a new object nobody else has seen: lower in place
            for k in range(end - start):
                if q[k] >= 65 and q[k] <= 90:
                    q[k] = q[k] + 32
            if tokens is None:
                tokens = []
            tokens.append(token)
    return tokens


cdef inline bint _listed(list tokens, bytes name) noexcept:
    cdef Py_ssize_t i
    for i in range(PyList_GET_SIZE(tokens)):
        if _ieq(_ptr(name), PyBytes_GET_SIZE(name), <bytes>PyList_GET_ITEM(tokens, i)):
            return True
    return False


# The output buffer: starts on the caller's stack, moves to the heap if a head outgrows it.
cdef struct _Buf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap
    bint heap


cdef int _grow(_Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef char* data
    while cap < b.len + extra:
        cap *= 2
    data = <char*>malloc(cap)
    if data == NULL:
        raise MemoryError()
    memcpy(data, b.data, b.len)
    if b.heap:
        free(b.data)
    b.data = data
    b.cap = cap
    b.heap = True
    return 0


cdef inline int _put(_Buf* b, const char* s, Py_ssize_t n) except -1:
    if n > b.cap - b.len:
        _grow(b, n)
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef inline int _put_bytes(_Buf* b, bytes s) except -1:
    return _put(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))


cdef int _put_scrubbed(_Buf* b, bytes s) except -1:
    # Copies s without CR/LF/NUL (request line, status line).
    cdef const unsigned char* p = _ptr(s)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s), i
    cdef unsigned char c
    if n > b.cap - b.len:
        _grow(b, n)
    for i in range(n):
        c = p[i]
        if c != 13 and c != 10 and c != 0:
            b.data[b.len] = <char>c
            b.len += 1
    return 0


cdef int _put_int(_Buf* b, long long value) except -1:
    cdef char digits[24]
    cdef int i = 24
    cdef bint negative = value < 0
    # Unsigned arithmetic: negating LLONG_MIN as a signed value would overflow.
    cdef unsigned long long u = (<unsigned long long>0 - <unsigned long long>value) if negative else <unsigned long long>value
    while True:
        i -= 1
        digits[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if negative:
        i -= 1
        digits[i] = 45  # '-'
    return _put(b, digits + i, 24 - i)


cdef inline int _put_line(_Buf* b, bytes name, bytes value) except -1:
    _put_bytes(b, name)
    _put(b, b": ", 2)
    _put_bytes(b, value)
    _put(b, b"\r\n", 2)
    return 0


cdef int _write(_Buf* b, bytes name, bytes value, Edits edits, unsigned char* done) except -1:
    # Writes one header, applying the route's remove / set edits to it in passing: a removed
    # name is skipped, the first header of a "set" name is replaced by the set value and any
    # later one skipped. The "set" headers never met and the "add" ones follow in _write_tail.
    # Equivalent to the spec's remove-then-set-then-add passes over the finished list.
    cdef Py_ssize_t j, n
    cdef const unsigned char* p
    if edits is not None and edits.filters:
        p = _ptr(name)
        n = PyBytes_GET_SIZE(name)
        for j in range(PyTuple_GET_SIZE(edits.remove_l)):
            if _ieq(p, n, <bytes>PyTuple_GET_ITEM(edits.remove_l, j)):
                return 0
        for j in range(PyTuple_GET_SIZE(edits.set_l)):
            if _ieq(p, n, <bytes>PyTuple_GET_ITEM(edits.set_l, j)):
                if not done[j]:
                    done[j] = 1
                    _put_line(b, <bytes>PyTuple_GET_ITEM(edits.set_n, j),
                              <bytes>PyTuple_GET_ITEM(edits.set_v, j))
                return 0
    return _put_line(b, name, value)


cdef int _write_tail(_Buf* b, Edits edits, unsigned char* done) except -1:
    cdef Py_ssize_t j
    if edits is None:
        return 0
    for j in range(PyTuple_GET_SIZE(edits.set_l)):
        if not done[j]:
            _put_line(b, <bytes>PyTuple_GET_ITEM(edits.set_n, j),
                      <bytes>PyTuple_GET_ITEM(edits.set_v, j))
    for j in range(PyTuple_GET_SIZE(edits.add_n)):
        _put_line(b, <bytes>PyTuple_GET_ITEM(edits.add_n, j),
                  <bytes>PyTuple_GET_ITEM(edits.add_v, j))
    return 0


cdef int _put_framing(_Buf* b, object content_length, bint chunked) except -1:
    if content_length is not None:
        _put(b, b"Content-Length: ", 16)
        _put_int(b, content_length)
        _put(b, b"\r\n", 2)
    elif chunked:
        _put(b, b"Transfer-Encoding: chunked\r\n", 28)
    return 0


cdef enum:
    _STACK_BUF = 2048  # bytes of head built on the stack before moving to the heap
    _STACK_DONE = 32  # route "set" edits tracked on the stack


def build_request_head(bytes method not None, bytes target not None, headers, *,
                       bytes host not None, bytes client_ip not None, bytes proto not None,
                       bytes forwarded_host not None, Edits edits, bytes upgrade,
                       content_length, bint chunked):
    """The head to send upstream (see `_fastpath_py.build_request_head`)."""
    cdef char stack[_STACK_BUF]
    cdef unsigned char done_stack[_STACK_DONE]
    cdef unsigned char* done = done_stack
    cdef _Buf b
    cdef Py_ssize_t i, count, nset = 0
    cdef bytes name, value
    cdef PyObject* name_p = NULL  # set by _split
    cdef PyObject* value_p = NULL
    cdef list listed, forwarded_for = None, via = None
    cdef int kind
    b.data = stack
    b.len = 0
    b.cap = _STACK_BUF
    b.heap = False

    seq = PySequence_Fast(headers, "headers must be a sequence of (name, value) pairs")
    count = PySequence_Fast_GET_SIZE(seq)
    listed = _connection_tokens(seq, count, True)
    if edits is not None:
        if edits.empty:
            edits = None
        else:
            nset = PyTuple_GET_SIZE(edits.set_l)
            if nset > _STACK_DONE:
                done = <unsigned char*>malloc(nset)
                if done == NULL:
                    raise MemoryError()
            memset(done, 0, nset)
    try:
        _put_scrubbed(&b, method)
        _put(&b, b" ", 1)
        _put_scrubbed(&b, target)
        _put(&b, b" HTTP/1.1\r\n", 11)
        _write(&b, b"Host", _scrubbed(host), edits, done)
        for i in range(count):
            _split(PySequence_Fast_GET_ITEM(seq, i), &name_p, &value_p)
            name = <bytes>name_p
            value = <bytes>value_p
            kind = _classify(_ptr(name), PyBytes_GET_SIZE(name), True)
            if kind == H_DROP or kind == H_CONNECTION:
                continue
            if not _clean_bytes(name) or not _clean_bytes(value):
                continue
            if listed is not None and _listed(listed, name):
                continue
            if kind == H_XFF:
                if PyBytes_GET_SIZE(value):
                    if forwarded_for is None:
                        forwarded_for = []
                    forwarded_for.append(value)
            elif kind == H_VIA:
                if PyBytes_GET_SIZE(value):
                    if via is None:
                        via = []
                    via.append(value)
            else:
                _write(&b, name, value, edits, done)
        if forwarded_for is None:
            _write(&b, b"X-Forwarded-For", _scrubbed(client_ip), edits, done)
        else:
            forwarded_for.append(_scrubbed(client_ip))
            _write(&b, b"X-Forwarded-For", b", ".join(forwarded_for), edits, done)
        _write(&b, b"X-Forwarded-Proto", _scrubbed(proto), edits, done)
        _write(&b, b"X-Forwarded-Host", _scrubbed(forwarded_host), edits, done)
        if via is None:
            _write(&b, b"Via", b"1.1 minirouter", edits, done)
        else:
            via.append(b"1.1 minirouter")
            _write(&b, b"Via", b", ".join(via), edits, done)
        _put_framing(&b, content_length, chunked)
        if upgrade is not None:
            _put(&b, b"Upgrade: ", 9)
            _put_scrubbed(&b, upgrade)
            _put(&b, b"\r\nConnection: upgrade\r\n", 23)
        _write_tail(&b, edits, done)
        _put(&b, b"\r\n", 2)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        if b.heap:
            free(b.data)
        if done != done_stack:
            free(done)


def build_response_head(int status, bytes reason not None, headers, *, Edits edits,
                        bint keep_alive, bytes upgrade, content_length, bint chunked):
    """The head to send to the client (see `_fastpath_py.build_response_head`)."""
    cdef char stack[_STACK_BUF]
    cdef unsigned char done_stack[_STACK_DONE]
    cdef unsigned char* done = done_stack
    cdef _Buf b
    cdef Py_ssize_t i, count, nset = 0
    cdef bytes name, value
    cdef PyObject* name_p = NULL  # set by _split
    cdef PyObject* value_p = NULL
    cdef list listed
    cdef int kind
    b.data = stack
    b.len = 0
    b.cap = _STACK_BUF
    b.heap = False

    seq = PySequence_Fast(headers, "headers must be a sequence of (name, value) pairs")
    count = PySequence_Fast_GET_SIZE(seq)
    listed = _connection_tokens(seq, count, False)
    if edits is not None:
        if edits.empty:
            edits = None
        else:
            nset = PyTuple_GET_SIZE(edits.set_l)
            if nset > _STACK_DONE:
                done = <unsigned char*>malloc(nset)
                if done == NULL:
                    raise MemoryError()
            memset(done, 0, nset)
    try:
        _put(&b, b"HTTP/1.1 ", 9)
        _put_int(&b, status)
        _put(&b, b" ", 1)
        _put_scrubbed(&b, reason)
        _put(&b, b"\r\n", 2)
        for i in range(count):
            _split(PySequence_Fast_GET_ITEM(seq, i), &name_p, &value_p)
            name = <bytes>name_p
            value = <bytes>value_p
            kind = _classify(_ptr(name), PyBytes_GET_SIZE(name), False)
            if kind == H_DROP or kind == H_CONNECTION:
                continue
            if not _clean_bytes(name) or not _clean_bytes(value):
                continue
            if listed is not None and _listed(listed, name):
                continue
            _write(&b, name, value, edits, done)
        _put_framing(&b, content_length, chunked)
        if upgrade is not None:
            _put(&b, b"Connection: upgrade\r\nUpgrade: ", 30)
            _put_scrubbed(&b, upgrade)
            _put(&b, b"\r\n", 2)
        elif not keep_alive:
            _put(&b, b"Connection: close\r\n", 19)
        _write_tail(&b, edits, done)
        _put(&b, b"\r\n", 2)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        if b.heap:
            free(b.data)
        if done != done_stack:
            free(done)


# ------------------------------------------------------------------------- response parsing

SIMPLE_HEAD_LIMIT = 8192
cdef Py_ssize_t _SIMPLE_HEAD_LIMIT = SIMPLE_HEAD_LIMIT

# Byte classes of the simple grammar (see `_fastpath_py.parse_simple_response`): token
# characters of a field name; characters of a field value (HTAB, SP, VCHAR; no obs-text).
cdef unsigned char _TOKEN_CHAR[256]
cdef unsigned char _VALUE_CHAR[256]
# Characters of an origin-form request target taken here (`_fastpath_py._REQUEST_LINE`).
cdef unsigned char _TARGET_CHAR[256]


cdef void _init_classes() noexcept:
    cdef int c
    cdef bytes specials = b"!#$%&'*+-.^_`|~"
    memset(_TOKEN_CHAR, 0, 256)
    memset(_VALUE_CHAR, 0, 256)
    memset(_TARGET_CHAR, 0, 256)
    for c in range(256):
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
            _TOKEN_CHAR[c] = 1
            _TARGET_CHAR[c] = 1
        if c == 9 or 32 <= c <= 126:
            _VALUE_CHAR[c] = 1
    for c in specials:
        _TOKEN_CHAR[c] = 1
    for c in b"-._~!$&'()*+,;=:@/?%":
        _TARGET_CHAR[c] = 1


_init_classes()


cdef inline bint _is_name(const unsigned char* p, Py_ssize_t n, const char* lower, Py_ssize_t m) noexcept:
    """ASCII case-insensitive equality of p[:n] with the lower-case `lower` of length m."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if (p[i] | 0x20) != <unsigned char>lower[i]:
            return False
    return True


cdef enum:
    _CLOSE = 1
    _KEEP = 2


cdef inline int _connection(const unsigned char* p, Py_ssize_t n) noexcept:
    """A Connection value taken here: _CLOSE "close", _KEEP "keep-alive", 0 anything else."""
    if _is_name(p, n, b"close", 5):
        return _CLOSE
    if _is_name(p, n, b"keep-alive", 10):
        return _KEEP
    return 0


cdef inline bint _add_connection(const unsigned char* p, Py_ssize_t n, int* tokens) noexcept:
    """Note a Connection value in `tokens`; False if it is not one taken here."""
    cdef int token = _connection(p, n)
    tokens[0] |= token
    return token != 0


cdef inline bint _keep_alive(bint minor, int tokens) noexcept:
    """llhttp's should_keep_alive: HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive"."""
    return not (tokens & _CLOSE) if minor else bool(tokens & _KEEP)


cdef Py_ssize_t _next_line(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
    Py_ssize_t* name_start, Py_ssize_t* name_end, Py_ssize_t* value_start, Py_ssize_t* value_end,
) noexcept:
    """The line at p[i:]: the blank line that ends the head (`name_start` set to -1) or one
    field line; where the next line starts, or -1 if neither, or past the head limit."""
    if i + 1 >= n or i > _SIMPLE_HEAD_LIMIT:
        return -1
    if p[i] == 13:
        name_start[0] = -1
        return i + 2 if p[i + 1] == 10 else -1
    return _field_line(p, n, i, name_start, name_end, value_start, value_end)


cdef Py_ssize_t _field_line(
    const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
    Py_ssize_t* name_start, Py_ssize_t* name_end, Py_ssize_t* value_start, Py_ssize_t* value_end,
) noexcept:
    """One `name:[OWS]value CRLF` line at p[i:]: where the next line starts, or -1 (see
    `_fastpath_py._FIELD_LINE`)."""
    name_start[0] = i
    while i < n and _TOKEN_CHAR[p[i]]:
        i += 1
    if i == name_start[0] or i >= n or p[i] != 58:  # ':'
        return -1
    name_end[0] = i
    i += 1
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    value_start[0] = i
    while i < n and _VALUE_CHAR[p[i]]:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return -1
    value_end[0] = i
    return i + 2


def parse_simple_response(bytes data not None):
    """`data` as one whole response, or None (see `_fastpath_py.parse_simple_response`)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, start, name_end, value_start, value_end, k
    cdef int status, tokens = 0
    cdef long long length = -1
    cdef bint minor
    cdef list headers
    cdef bytes reason, name, value
    # "HTTP/1.x DDD " at least, then the reason and CRLF.
    if n < 17 or memcmp(p, b"HTTP/1.", 7) != 0 or p[8] != 32 or p[12] != 32:
        return None
    if p[7] == 49:
        minor = True
    elif p[7] == 48:
        minor = False
    else:
        return None
    if not (50 <= p[9] <= 53 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57):
        return None
    status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if status == 204 or status == 304:
        return None
    i = 13
    while i < n and 32 <= p[i] <= 126:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return None
    reason = PyBytes_FromStringAndSize(<const char*>p + 13, i - 13)
    i += 2
    headers = []
    while True:
        i = _next_line(p, n, i, &start, &name_end, &value_start, &value_end)
        if i < 0:
            return None
        if start < 0:  # the blank line: the head ends here
            break
        if _is_name(p + start, name_end - start, b"content-length", 14):
            if length >= 0 or value_end == value_start or value_end - value_start > 18:
                return None
            length = 0
            for k in range(value_start, value_end):
                if not (48 <= p[k] <= 57):
                    return None
                length = length * 10 + (p[k] - 48)
        elif _is_name(p + start, name_end - start, b"connection", 10):
            if not _add_connection(p + value_start, value_end - value_start, &tokens):
                return None
        elif (
            _is_name(p + start, name_end - start, b"transfer-encoding", 17)
            or _is_name(p + start, name_end - start, b"upgrade", 7)
            or _is_name(p + start, name_end - start, b"proxy-connection", 16)
        ):
            return None
        name = PyBytes_FromStringAndSize(<const char*>p + start, name_end - start)
        value = PyBytes_FromStringAndSize(<const char*>p + value_start, value_end - value_start)
        headers.append((name, value))
    if i > _SIMPLE_HEAD_LIMIT:  # the blank line must end within the limit, as in the spec
        return None
    if length < 0 or n - i != length or tokens == _CLOSE | _KEEP:
        return None
    body = PyBytes_FromStringAndSize(<const char*>p + i, n - i) if length else b""
    return status, reason, headers, _keep_alive(minor, tokens), body


def parse_simple_request(bytes data not None, Py_ssize_t max_request_line,
                         Py_ssize_t max_header_size, Py_ssize_t max_headers):
    """The request at the start of `data`, or None (see `_fastpath_py.parse_simple_request`)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, target_start, target_end, start, name_end, value_start, value_end
    cdef Py_ssize_t size = 0, count = 0
    cdef int tokens = 0
    cdef bint minor
    cdef list headers
    cdef bytes method, target
    if n >= 4 and memcmp(p, b"GET ", 4) == 0:
        method = b"GET"
        i = 4
    elif n >= 5 and memcmp(p, b"HEAD ", 5) == 0:
        method = b"HEAD"
        i = 5
    else:
        return None
    if i >= n or p[i] != 47:  # '/'
        return None
    target_start = i
    while i < n and _TARGET_CHAR[p[i]]:
        i += 1
    target_end = i
    if n - i < 10 or memcmp(p + i, b" HTTP/1.", 8) != 0 or p[i + 9] != 13:
        return None
    if p[i + 8] == 49:
        minor = True
    elif p[i + 8] == 48:
        minor = False
    else:
        return None
    i += 10
    if i >= n or p[i] != 10:
        return None
    i += 1
    if target_end - target_start > max_request_line:
        return None
    headers = []
    while True:
        i = _next_line(p, n, i, &start, &name_end, &value_start, &value_end)
        if i < 0:
            return None
        if start < 0:  # the blank line: the head ends here
            break
        if _is_name(p + start, name_end - start, b"connection", 10):
            if not _add_connection(p + value_start, value_end - value_start, &tokens):
                return None
        elif (
            _is_name(p + start, name_end - start, b"content-length", 14)
            or _is_name(p + start, name_end - start, b"transfer-encoding", 17)
            or _is_name(p + start, name_end - start, b"upgrade", 7)
            or _is_name(p + start, name_end - start, b"expect", 6)
            or _is_name(p + start, name_end - start, b"proxy-connection", 16)
        ):
            return None
        size += (name_end - start) + (value_end - value_start) + 4
        count += 1
        if size > max_header_size or count > max_headers:
            return None
        headers.append((
            PyBytes_FromStringAndSize(<const char*>p + start, name_end - start),
            PyBytes_FromStringAndSize(<const char*>p + value_start, value_end - value_start),
        ))
    if i > _SIMPLE_HEAD_LIMIT or tokens == _CLOSE | _KEEP:
        return None
    target = PyBytes_FromStringAndSize(<const char*>p + target_start, target_end - target_start)
    return i, method, target, headers, "1.1" if minor else "1.0", _keep_alive(minor, tokens)
