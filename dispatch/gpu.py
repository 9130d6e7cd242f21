"""The GPU as wgpu-py sees it: adapter choice, one device per process, pipelines, buffers, timing.

Contract:
  - `adapters()` lists every adapter wgpu finds; `device()` opens the chosen one once per process
    (a discrete GPU first, then integrated, then the rest; Vulkan/Metal/D3D12 before GL).
    `I8GEMM_GPU=<substring>` picks the first adapter whose name or backend contains it;
    `I8GEMM_GPU=0` (or `off`) disables the GPU. `unavailable_reason()` is None when a device
    can be had, else why not (for the caller's warning or error).
  - The device asks for "timestamp-query" when the adapter has it, and for the adapter's own
    maxima of storage-buffer size, workgroup storage and invocations (WebGPU's defaults are
    far below what a real GPU offers).
  - `pipeline(source)` compiles a WGSL compute shader once per distinct source text (tile sizes
    are substituted into the text, so the text is the specialization) and entry point.
  - `alloc(nbytes)` / `release(buffer)`: a pool of storage buffers keyed by size (rounded up to
    256 bytes), so per-call temporaries reuse memory instead of asking the driver each time.
  - `run(dispatches)` queues (program, buffers, workgroup counts) dispatches (`bound` and
    `run_bound` split it, for a caller that queues the same dispatches again); they are submitted
    together, in one compute pass, by `flush()` -- which every download, synchronize and timing
    does first, and which runs by itself once MAX_PENDING dispatches wait. `upload(buffer, data)`
    lands between the work queued before it and after it: a large one as a copy from a staging
    buffer queued among the dispatches, a small one through wgpu's queue.write_buffer after a
    flush. `download(buffer, nbytes)` reads back through a pooled mappable buffer; a large
    read-back into a new array returns that mapped buffer itself as the array's memory (no copy
    out; pooled again once the array is gone). Waits (read-backs, synchronize) poll the device
    in the waiting thread.
    `time_dispatches` runs a list `repeats` times and returns seconds per repeat from GPU
    timestamps where the adapter has them, else from synchronised wall time.
  - `TRANSFERS` counts host<->GPU array copies (uploads and downloads), so callers and tests can
    prove that a chain of GPU operations makes none.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import time

import numpy as np

from . import hostcopy

# Backends in order of preference: native APIs with real dot-product instructions before GL.
_BACKEND_RANK = {"Vulkan": 0, "D3D12": 0, "Metal": 1, "OpenGL": 2, "GL": 2}
_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "CPU": 3, "Unknown": 4}
# dot4I8Packed lowers to a hardware integer dot product through SPIR-V (OpSDot) and HLSL
# (dot4add_i8packed); Metal Shading Language and GLSL have none, so naga emits shifts and adds.
_NATIVE_DOT4 = {"Vulkan": True, "D3D12": True, "Metal": False, "OpenGL": False, "GL": False}
LIMITS = ("max-storage-buffer-binding-size", "max-buffer-size",
          "max-compute-workgroup-storage-size", "max-compute-invocations-per-workgroup",
          "max-compute-workgroup-size-x", "max-compute-workgroup-size-y",
          "max-compute-workgroups-per-dimension", "max-storage-buffers-per-shader-stage")

class DeviceLost(RuntimeError):
    """The device failed while running work; the GPU is treated as unavailable from then on."""


TRANSFERS = collections.Counter()  # "upload" / "download": array copies between host and GPU


def setting() -> str:
    return os.environ.get("I8GEMM_GPU", "").strip()


def disabled() -> bool:
    return setting().lower() in ("0", "off", "none", "false", "no")


@functools.lru_cache(maxsize=1)
def adapters() -> tuple:
    """Every adapter wgpu can enumerate (empty when wgpu or its native library is missing)."""
    try:
        import wgpu
        return tuple(wgpu.gpu.enumerate_adapters_sync())
    except Exception:  # no native library, no loader: there is simply no GPU here
        return ()


def describe(adapter) -> dict:
    info = adapter.info
    backend = info.get("backend_type", "?")
    return {"name": info.get("device", "?"), "backend": backend,
            "type": info.get("adapter_type", "?"), "driver": info.get("description", ""),
            "dot4_native": _NATIVE_DOT4.get(backend, False),
            "timestamps": "timestamp-query" in adapter.features,
            "limits": {k: adapter.limits.get(k) for k in LIMITS}}


def _rank(adapter) -> tuple:
    info = adapter.info
    return (_TYPE_RANK.get(info.get("adapter_type"), 5), _BACKEND_RANK.get(info.get("backend_type"), 3))


@functools.lru_cache(maxsize=1)
def _choice():
    """(adapter or None, reason when None)."""
    if disabled():
        return None, f"the GPU is disabled by I8GEMM_GPU={setting()}"
    found = adapters()
    if not found:
        return None, "wgpu found no GPU adapter"
    wanted = setting()
    if wanted:
        for a in sorted(found, key=_rank):
            d = describe(a)
            if wanted.lower() in f"{d['name']} {d['backend']} {d['driver']}".lower():
                return a, None
        names = ", ".join(f"{describe(a)['name']} ({describe(a)['backend']})" for a in found)
        return None, f"no adapter matches I8GEMM_GPU={wanted!r} (found: {names})"
    return min(found, key=_rank), None


def adapter():
    return _choice()[0]


_DEVICE = {}
_GENERATION = [0]  # bumped whenever a device opens: buffers of an older device are never pooled


def generation() -> int:
    return _GENERATION[0]


def unavailable_reason() -> str | None:
    """None when a device can be had, else why not."""
    if "lost" in _DEVICE:
        return _DEVICE["lost"]
    a, why = _choice()
    if a is None:
        return why
    if _DEVICE.get("adapter") is a:
        return None
    try:
        device()
    except Exception as exc:  # a driver that enumerates but cannot open a device
        return f"the adapter {describe(a)['name']} could not open a device: {exc}"
    return None


def device():
    """The process-wide device of the chosen adapter (opened on first use). RuntimeError when
    there is none."""
    a, why = _choice()
    dev = _DEVICE.get("device")
    if dev is not None and _DEVICE["adapter"] is a:
        return dev
    if "lost" in _DEVICE:
        raise RuntimeError(_DEVICE["lost"])
    if a is None:
        raise RuntimeError(why)
    if dev is not None:  # I8GEMM_GPU now names another adapter
        _forget()
    features = [f for f in ("timestamp-query",) if f in a.features]
    limits = {k: a.limits[k] for k in LIMITS if k in a.limits}
    dev = a.request_device_sync(required_features=features, required_limits=limits)
    _GENERATION[0] += 1
    _DEVICE.update(device=dev, adapter=a, limits=dict(dev.limits),
                   timestamps="timestamp-query" in dev.features,
                   cpu_adapter=a.info.get("adapter_type") == "CPU")
    return dev


def limits() -> dict:
    """The open device's limits (what the kernels' tile restrictions are checked against)."""
    device()
    return _DEVICE["limits"]


def limit(name: str) -> int:
    return int(limits()[name])


def _forget() -> None:
    _PENDING.clear()
    _DEVICE.clear()
    _PIPELINES.clear()
    _COMPILING.clear()   # (compiles for the old device finish unused)
    _POOL.clear()
    _LENT.clear()
    _STAGING.clear()
    _RETURNED.clear()
    _WRITE_STAGING.clear()
    _BIND_GROUPS.clear()
    _UNIFORMS.clear()


def mark_lost(reason: str) -> None:
    """Forget the device after a failure; later calls see the GPU as unavailable."""
    _forget()
    _DEVICE["lost"] = f"the GPU device was lost ({reason})"


def refresh() -> None:
    """Re-read I8GEMM_GPU. The open device stays while its adapter is the one chosen (GPU arrays
    made on it stay valid); I8GEMM_GPU=off only hides it until the setting changes back."""
    _choice.cache_clear()


# -- pipelines ---------------------------------------------------------------------------------

_PIPELINES: dict = {}
Program = collections.namedtuple("Program", "pipeline layout")


def pipeline(source: str, bindings: str, entry: str = "main"):
    """The compute pipeline of a WGSL source, compiled once. bindings: one letter per binding of
    group 0, in order: "r" read-only storage, "w" read-write storage, "u" uniform. (An explicit
    layout, so a binding the shader happens not to use still has its slot.) A pipeline that
    precompile() started is waited for, not compiled again."""
    key = (source, bindings, entry)
    p = _PIPELINES.get(key)
    if p is None:
        started = _COMPILING.pop(key, None)
        if started is not None and not started.cancelled():
            p = started.result()
        else:
            p = _compile(device(), *key)
        _PIPELINES[key] = p
    return p


def precompile(source: str, bindings: str, entry: str = "main"):
    """Start compiling pipeline(source, bindings, entry) on a background thread; its Future
    (cancel() one not yet started that is no longer wanted), or None if it is compiled already.
    For the autotuner, whose search is bound by compiling: on the H200 a candidate's GEMM
    pipeline took 100-320 ms to compile and a sample of it 20-40 ms. wgpu-native compiles on the
    calling thread with the GIL released, and wgpu-py captures a call's errors per thread, so
    compiles run beside the timing (a compile error is raised by pipeline()): eight threads
    compiled one every 87 ms, against 322 ms one at a time."""
    key = (source, bindings, entry)
    if key in _PIPELINES:
        return None
    started = _COMPILING.get(key)
    if started is not None and not started.cancelled():
        return started
    started = _COMPILING[key] = _compiler().submit(_compile, device(), *key)
    return started


# Threads that precompile() uses: one core is left to the thread that times.
COMPILE_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))
_COMPILING: dict = {}   # key -> the Future of a pipeline being compiled


@functools.lru_cache(maxsize=1)
def _compiler():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(COMPILE_THREADS, thread_name_prefix="i8gemm-compile")


def _compile(dev, source: str, bindings: str, entry: str) -> Program:
    import wgpu

    kinds = {"r": {"buffer": {"type": wgpu.BufferBindingType.read_only_storage}},
             "w": {"buffer": {"type": wgpu.BufferBindingType.storage}},
             "u": {"buffer": {"type": wgpu.BufferBindingType.uniform}}}
    layout = dev.create_bind_group_layout(entries=[
        {"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, **kinds[kind]}
        for i, kind in enumerate(bindings)])
    module = dev.create_shader_module(code=source)
    return Program(dev.create_compute_pipeline(
        layout=dev.create_pipeline_layout(bind_group_layouts=[layout]),
        compute={"module": module, "entry_point": entry}), layout)


# -- buffers -----------------------------------------------------------------------------------

_POOL: dict[int, list] = {}
_POOL_KEEP_BYTES = 1 << 30  # free buffers kept for reuse, at most
# Every buffer alloc() has handed out and release() has not yet taken back, by id. A GpuArray
# returns its buffer to the pool in its __del__; when the array dies in a reference cycle, the
# garbage collector runs the finalizers of everything the cycle alone kept alive in an order of
# its own, and wgpu-py's buffer may be released first (its __del__) and then pooled dead: the
# next array of that size got it, and binding it aborted the process in wgpu-native
# ("invalid bind group entry"). Held here, a lent buffer is never part of such garbage.
_LENT: dict[int, object] = {}


def _usage():
    import wgpu
    return wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST


def alloc(nbytes: int):
    """A storage buffer of at least nbytes (contents undefined: callers write before reading)."""
    size = max(256, -(-nbytes // 256) * 256)
    free = _POOL.get(size)
    if free:
        buffer = free.pop()
    else:
        if size > limit("max-storage-buffer-binding-size"):
            raise ValueError(f"a GPU array of {nbytes} bytes exceeds this adapter's storage "
                             f"buffer limit of {limit('max-storage-buffer-binding-size')} bytes")
        buffer = device().create_buffer(size=size, usage=_usage())
    _LENT[id(buffer)] = buffer
    return buffer


def release(buffer, made_in: int | None = None) -> None:
    """Return a buffer from alloc() to the pool (made_in: generation() when it was allocated)."""
    if "device" not in _DEVICE or (made_in is not None and made_in != _GENERATION[0]):
        return
    _LENT.pop(id(buffer), None)
    kept = sum(size * len(bufs) for size, bufs in _POOL.items())
    if kept + buffer.size <= _POOL_KEEP_BYTES:
        _POOL.setdefault(buffer.size, []).append(buffer)


def upload(buffer, data: np.ndarray, *, only_if_finite: bool = False) -> bool:
    """Write data at the start of buffer, ordered after the work queued so far (which may still
    read buffer's old contents) and before the work queued later. only_if_finite (float32 data):
    upload nothing and return False where a value is NaN or infinite (checked while copying)."""
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if _native() is None or data.nbytes < STAGED_UPLOAD_BYTES:
        if only_if_finite and not np.isfinite(data.view(np.float32)).all():
            return False
        _write_small(buffer, data)
        return True
    if only_if_finite:
        words = data.view(np.uint32)
        return upload_made(buffer, data.nbytes,
                           lambda into: hostcopy.copy_if_finite(into.view(np.uint32), words))
    return upload_made(buffer, data.nbytes, lambda into: hostcopy.copy_bytes(into, data) or True)


def upload_made(buffer, nbytes: int, make) -> bool:
    """upload() of nbytes that make(into) writes into `into`, a uint8 array of nbytes (host
    memory the upload reads: mapped staging memory for a large one), so that data made on the
    host for the GPU is written once, where the upload takes it from. make returns False to
    cancel: nothing is uploaded, and upload_made returns False."""
    padded = -(-nbytes // 4) * 4  # buffers are written in whole 32-bit words
    native = _native()
    if native is None or padded < STAGED_UPLOAD_BYTES:
        data = np.empty(padded, np.uint8)
        data[nbytes:] = 0
        if not make(data[:nbytes]):
            return False
        _write_small(buffer, data)
        return True
    staging = native.writable_staging(padded)
    if not native.fill_mapped(staging, nbytes, padded, make):
        native.remap_for_writing(staging)
        return False
    _PENDING.append(_Copy(staging, buffer, padded))
    TRANSFERS["upload"] += 1
    return True


def _write_small(buffer, data: np.ndarray) -> None:
    """A queue write of data (uint8, padded here to whole 32-bit words)."""
    if data.nbytes % 4:
        data = np.concatenate([data, np.zeros(4 - data.nbytes % 4, np.uint8)])
    if _PENDING:
        flush()  # queue writes run before unsubmitted work: earlier readers of buffer first
    native = _native()
    if native is not None:
        native.write_buffer(buffer, data)
    else:
        device().queue.write_buffer(buffer, 0, data)
    TRANSFERS["upload"] += 1


_STAGING: dict[int, list] = {}
# Read-back buffers of one size kept for reuse, at most (host memory, pinned by the driver).
STAGING_PER_SIZE = 8
# A read-back of this many bytes or more into a new array returns the mapped read-back buffer
# itself as the array's memory (see download); a smaller one is copied out (a few microseconds).
MAPPED_RESULT_BYTES = 1 << 16
# Read-back buffers whose arrays are gone, with the device generation they were made in: the
# next download unmaps them and pools them. (An array is freed wherever the garbage collector
# runs, possibly between two wgpu calls of a recording, so no wgpu call is made there.)
_RETURNED: list = []


def _pool_staging(staging) -> None:
    free = _STAGING.setdefault(staging.size, [])
    if len(free) < STAGING_PER_SIZE:
        free.append(staging)


def _reclaim_returned(native) -> None:
    while _RETURNED:
        staging, made_in = _RETURNED.pop()
        if made_in == _GENERATION[0] and "device" in _DEVICE:
            native.lib.wgpuBufferUnmap(staging._internal)
            _pool_staging(staging)


def download(buffer, nbytes: int, into: np.ndarray | None = None) -> np.ndarray:
    """The first nbytes of buffer as a uint8 array: copied into `into` (a C-contiguous array of
    nbytes bytes) when given, else a new array. Waits for the queued work that writes it: the
    queued dispatches and the copy to a mappable buffer go in one submission, and the mappable
    buffers are pooled.

    A new array of MAPPED_RESULT_BYTES or more is the mapped read-back buffer itself: the GPU's
    copy lands in host memory, and copying it out again cost more than the GPU's copy (on an
    H200's host, 4 MB: the copy and map 112 us, copying out of it 160-390 us; torch's whole
    read-back 330 us). The buffer stays mapped while the array or a view of it lives, and is
    pooled again by a later download. Its memory is ordinary cached host memory to read and
    write (on the H200's host, reading it ran at the speed of numpy's own arrays)."""
    import wgpu

    size = max(256, -(-nbytes // 256) * 256)
    native = _native()
    if _RETURNED and native is not None:
        _reclaim_returned(native)
    free = _STAGING.get(size)
    staging = free.pop() if free else device().create_buffer(
        size=size, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
    copy_size = -(-nbytes // 4) * 4
    flush(_Copy(buffer, staging, copy_size))
    if into is None and native is not None and nbytes >= MAPPED_RESULT_BYTES:
        made_in = _GENERATION[0]
        result = native.mapped_array(staging, copy_size, nbytes,
                                     lambda: _RETURNED.append((staging, made_in)))
        TRANSFERS["download"] += 1
        return result
    if into is None:
        into = np.empty(nbytes, np.uint8)
    try:
        if native is not None:
            native.read_mapped(staging, copy_size, into.reshape(-1).view(np.uint8))
        else:
            staging.map_sync(wgpu.MapMode.READ, 0, copy_size)
            try:
                view = staging.read_mapped(0, copy_size, copy=False)
                into.reshape(-1).view(np.uint8)[:] = np.frombuffer(view, np.uint8, nbytes)
            finally:
                staging.unmap()
    finally:
        _pool_staging(staging)
    TRANSFERS["download"] += 1
    return into


_UNIFORMS: dict = {}


def uniform(values: bytes):
    """A uniform buffer holding `values`, made once per distinct content (shapes and flags)."""
    buf = _UNIFORMS.get(values)
    if buf is None:
        import wgpu
        if len(_UNIFORMS) > 4096:
            _UNIFORMS.clear()
        buf = _UNIFORMS[values] = device().create_buffer_with_data(
            data=values, usage=wgpu.BufferUsage.UNIFORM)
    return buf


# -- dispatching -------------------------------------------------------------------------------

_BIND_GROUPS: collections.OrderedDict = collections.OrderedDict()


def _bind_group(pipe, buffers: tuple):
    key = (pipe, *buffers)
    bg = _BIND_GROUPS.get(key)
    if bg is None:
        bg = device().create_bind_group(
            layout=pipe.layout,
            entries=[{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)])
        _BIND_GROUPS[key] = bg
        if len(_BIND_GROUPS) > 1024:
            _BIND_GROUPS.popitem(last=False)
    return bg


class _Copy:
    """A buffer-to-buffer copy queued among the dispatches (an upload from a staging buffer)."""

    __slots__ = ("source", "target", "nbytes")

    def __init__(self, source, target, nbytes: int):
        self.source, self.target, self.nbytes = source, target, nbytes


def _encode(groups, repeats=1, timestamps=None):
    """groups: [(wgpu pipeline, bind group, (x, y, z)) or _Copy, ...] -> a command encoder, with
    the dispatches between two copies in one compute pass (timestamps: dispatches only). Through
    wgpu-py's public API: for timing (where recording is not timed) and where _Native.submit,
    the fast path, is missing."""
    encoder = device().create_command_encoder()
    kwargs = {}
    if timestamps is not None:
        kwargs["timestamp_writes"] = {"query_set": timestamps, "beginning_of_pass_write_index": 0,
                                      "end_of_pass_write_index": 1}
    cpass = None
    for _ in range(repeats):
        for group in groups:
            if type(group) is _Copy:
                if cpass is not None:
                    cpass.end()
                    cpass = None
                encoder.copy_buffer_to_buffer(group.source, 0, group.target, 0, group.nbytes)
                continue
            if cpass is None:
                cpass = encoder.begin_compute_pass(**kwargs)
            pipe, bg, wg = group
            cpass.set_pipeline(pipe)
            cpass.set_bind_group(0, bg)
            cpass.dispatch_workgroups(*wg)
    if cpass is not None:
        cpass.end()
    return encoder


def bound(dispatches) -> list:
    """[(Program, (buffer, ...), workgroups)] -> [(pipeline, bind group, workgroups)]: what
    run_bound queues (a caller that queues the same dispatches again keeps this)."""
    return [(p.pipeline, _bind_group(p, bufs), wg) for p, bufs, wg in dispatches]


# Finishing and submitting a command buffer costs tens of microseconds in wgpu-native whatever
# it holds, so dispatches are recorded here and submitted together: when this many are waiting,
# and before anything that must see their results or must not overtake them (a download, an
# upload -- queue writes run before not-yet-submitted work --, a synchronisation, a timing).
MAX_PENDING = 64
_PENDING: list = []


def run(dispatches) -> None:
    """Queue the dispatches (in order; each sees the previous one's writes)."""
    run_bound(bound(dispatches))


def run_bound(groups) -> None:
    """Queue dispatches as bound() gave them (in order; each sees the previous one's writes)."""
    _PENDING.extend(groups)
    if len(_PENDING) >= MAX_PENDING:
        flush()


def flush(copy_after: _Copy | None = None) -> None:
    """Submit every queued dispatch and copy, in one submission; copy_after, if given, is
    recorded last in the same submission (a read-back's copy to a mappable buffer)."""
    if not _PENDING and copy_after is None:
        return
    import wgpu

    groups = _PENDING.copy()
    _PENDING.clear()
    if copy_after is not None:
        groups.append(copy_after)
    native = _native()
    try:
        if native is not None:
            native.submit(groups)
        else:
            device().queue.submit([_encode(groups).finish()])
    except wgpu.GPUValidationError:
        raise  # a wrong call, not a broken device
    except Exception as exc:
        mark_lost(str(exc))
        raise DeviceLost(_DEVICE["lost"]) from exc
    for group in groups:
        if type(group) is _Copy and group.source.usage & wgpu.BufferUsage.MAP_WRITE:
            native.remap_for_writing(group.source)


def synchronize() -> None:
    """Wait until the GPU has finished all queued work (submitting it first)."""
    flush()
    native = _native()
    if native is not None:
        native.wait_for_queue()
        return
    buf = _DEVICE.get("sync")  # a read-back of a few bytes waits for everything before it
    if buf is None:
        buf = _DEVICE["sync"] = alloc(4)
    download(buf, 4)
    TRANSFERS["download"] -= 1  # a synchronisation, not a data transfer


# -- waiting for the GPU ----------------------------------------------------------------------
#
# wgpu-py waits for a read-back's map request in a polling thread of its own, and makes an
# empty submission before each read map: on an H200 a 2 KB read-back took 106 us that way, and
# 33 us with the map request made here and the device polled by the waiting thread itself
# (torch: 10 us); at 4 MB, 571 against 387 us. Blocking in wgpu-native's poll instead of
# spinning on it costs 20-250 us more per wait there (the driver's blocking wait wakes late),
# so on a hardware GPU the waiting thread spins for up to SPIN_SECONDS before it blocks. On a
# CPU adapter (lavapipe) the "GPU" is threads on the same cores, which a spinning waiter would
# slow, so it blocks at once. (wgpu-py 0.32's own queue.on_submitted_work_done_sync fails: its
# callback lacks the message argument.)
SPIN_SECONDS = 0.05


class _Native:
    """wgpu-native called directly: submissions, map requests, work-done notices and device
    polls. One callback records each request's status under the number it was given as user
    data."""

    def __init__(self, ffi, lib, error_handler, error_types):
        self.ffi, self.lib = ffi, lib
        self.error_handler, self.error_types = error_handler, error_types
        self.command_list = ffi.new("WGPUCommandBuffer[1]")
        self.status: dict[int, tuple] = {}
        self.numbers = itertools.count(1)
        self._infos: dict = {}

        def record(status, message, number, _unused):
            if status == 1:  # Success (in both enums): no message to keep
                self.status[int(ffi.cast("intptr_t", number))] = (1, "")
                return
            text = b""
            if message.data != ffi.NULL:  # a length of SIZE_MAX means NUL-terminated
                text = (ffi.string(message.data) if message.length == ffi.cast("size_t", -1)
                        else ffi.unpack(message.data, message.length))
            self.status[int(ffi.cast("intptr_t", number))] = (status, text.decode("utf-8", "replace"))

        # cffi keeps a callback alive only while its object is referenced: kept on self.
        self.on_mapped = ffi.callback(
            "void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)", record)
        self.on_work_done = ffi.callback(
            "void(WGPUQueueWorkDoneStatus, WGPUStringView, void *, void *)", record)

    def _info(self, kind: str, callback):
        """(number, callback info struct) for one request. The struct is passed by value, so
        one per kind serves every request (made and passed by one thread at a time)."""
        number = next(self.numbers)
        info = self._infos.get(kind)
        if info is None:
            info = self._infos[kind] = self.ffi.new(f"{kind} *")
            info.mode = self.lib.WGPUCallbackMode_AllowProcessEvents
        info.callback = callback
        info.userdata1 = self.ffi.cast("void *", number)
        return number, info[0]

    def write_buffer(self, buffer, data: np.ndarray) -> None:
        """queue.write_buffer(buffer, 0, data) through wgpu-native directly (half of wgpu-py's
        5 us on an H200's host), its errors raised as wgpu-py raises them."""
        handler = self.error_handler
        handler.capture("i8gemm.write")
        try:
            self.lib.wgpuQueueWriteBuffer(device().queue._internal, buffer._internal, 0,
                                          self.ffi.from_buffer(data), data.nbytes)
        finally:
            self._raise(handler.release("i8gemm.write"))

    def _wait(self, number: int, what: str) -> None:
        status = self.status
        poll, handle, null = self.lib.wgpuDevicePoll, device()._internal, self.ffi.NULL
        spin = 0.0 if _DEVICE.get("cpu_adapter") else SPIN_SECONDS
        deadline = time.perf_counter() + spin
        while number not in status:
            poll(handle, not spin or time.perf_counter() > deadline, null)
        code, text = status.pop(number)
        if code != 1:  # Success is 1 in both WGPUMapAsyncStatus and WGPUQueueWorkDoneStatus
            mark_lost(f"{what} failed (status {code}): {text}")
            raise DeviceLost(_DEVICE["lost"])

    def submit(self, groups) -> None:
        """Record groups (as _encode takes them) and submit them, through wgpu-native directly:
        wgpu-py's objects and per-call error captures (about a microsecond each, three per
        dispatch) cost about 25 of the 50 us that one submission took on an H200's host.
        Errors are still raised: wgpu-native reports them to wgpu-py's error handler, which
        holds them for one capture around the whole recording instead of one per call."""
        ffi, lib = self.ffi, self.lib
        handler = self.error_handler
        handler.capture("i8gemm.record")
        try:
            encoder = lib.wgpuDeviceCreateCommandEncoder(device()._internal, ffi.NULL)
            cpass = ffi.NULL
            for group in groups:
                if type(group) is _Copy:
                    if cpass != ffi.NULL:
                        lib.wgpuComputePassEncoderEnd(cpass)
                        lib.wgpuComputePassEncoderRelease(cpass)
                        cpass = ffi.NULL
                    lib.wgpuCommandEncoderCopyBufferToBuffer(
                        encoder, group.source._internal, 0, group.target._internal, 0,
                        group.nbytes)
                    continue
                if cpass == ffi.NULL:
                    cpass = lib.wgpuCommandEncoderBeginComputePass(encoder, ffi.NULL)
                pipe, bg, (x, y, z) = group
                lib.wgpuComputePassEncoderSetPipeline(cpass, pipe._internal)
                lib.wgpuComputePassEncoderSetBindGroup(cpass, 0, bg._internal, 0, ffi.NULL)
                lib.wgpuComputePassEncoderDispatchWorkgroups(cpass, x, y, z)
            if cpass != ffi.NULL:
                lib.wgpuComputePassEncoderEnd(cpass)
                lib.wgpuComputePassEncoderRelease(cpass)
            commands = lib.wgpuCommandEncoderFinish(encoder, ffi.NULL)
            lib.wgpuCommandEncoderRelease(encoder)
        finally:
            error = handler.release("i8gemm.record")
        try:
            # An invalid command buffer must not be submitted: wgpu-native aborts the process
            # on a failed submission.
            self._raise(error)
            handler.capture("i8gemm.submit")
            try:
                self.command_list[0] = commands
                lib.wgpuQueueSubmit(device().queue._internal, 1, self.command_list)
            finally:
                error = handler.release("i8gemm.submit")
            self._raise(error)
        finally:
            lib.wgpuCommandBufferRelease(commands)

    def _raise(self, error) -> None:
        if error is not None:
            kind, message = error
            raise self.error_types.get(kind, RuntimeError)(message)

    def wait_for_queue(self) -> None:
        number, info = self._info("WGPUQueueWorkDoneCallbackInfo", self.on_work_done)
        self.lib.wgpuQueueOnSubmittedWorkDone(device().queue._internal, info)
        self._wait(number, "waiting for the GPU's work")

    def read_mapped(self, staging, nbytes: int, into: np.ndarray) -> None:
        """Map the first nbytes of a MAP_READ buffer (its copy already submitted), copy them to
        `into` (a uint8 array of up to nbytes), unmap."""
        lib = self.lib
        self._wait(self._map(staging, lib.WGPUMapMode_Read, nbytes), "mapping a read-back buffer")
        try:
            source = lib.wgpuBufferGetConstMappedRange(staging._internal, 0, nbytes)
            if source == self.ffi.NULL:
                raise RuntimeError("wgpu-native returned no mapped range for a read-back buffer")
            if into.nbytes < hostcopy.PART_BYTES:
                self.ffi.memmove(self.ffi.from_buffer(into), source, into.nbytes)
            else:
                hostcopy.copy_bytes(into, np.frombuffer(self.ffi.buffer(source, into.nbytes),
                                                        np.uint8))
        finally:
            lib.wgpuBufferUnmap(staging._internal)

    def mapped_array(self, staging, nbytes: int, size: int, on_release) -> np.ndarray:
        """Map the first nbytes of a MAP_READ buffer (its copy already submitted) and return its
        first `size` bytes as a uint8 array over the mapped memory itself; on_release() runs once
        that array and every view of it are gone (the buffer is still mapped then)."""
        ffi, lib = self.ffi, self.lib
        self._wait(self._map(staging, lib.WGPUMapMode_Read, nbytes), "mapping a read-back buffer")
        source = lib.wgpuBufferGetConstMappedRange(staging._internal, 0, nbytes)
        if source == ffi.NULL:
            lib.wgpuBufferUnmap(staging._internal)
            raise RuntimeError("wgpu-native returned no mapped range for a read-back buffer")
        # The array's base is a cffi buffer, which keeps `owner` alive; cffi calls the
        # destructor when the last view of the array is gone.
        owner = ffi.gc(ffi.cast("uint8_t *", source), lambda _: on_release())
        return np.frombuffer(ffi.buffer(owner, size), np.uint8)

    # Uploads of STAGED_UPLOAD_BYTES or more go through mappable buffers of ours: a buffer is
    # mapped for writing, filled, unmapped, copied to its target in the next submission, and
    # asked to map again right after it (which completes once that copy has run).
    def writable_staging(self, nbytes: int):
        """A MAP_WRITE buffer of at least nbytes, mapped: a pooled one whose map has completed,
        else a new one."""
        import wgpu

        size = max(256, 1 << (nbytes - 1).bit_length())  # powers of two: few sizes to pool
        remapping = _WRITE_STAGING.setdefault(size, collections.deque())
        if remapping and remapping[0][1] not in self.status:  # (re-mapped in submission order)
            self.lib.wgpuDevicePoll(device()._internal, False, self.ffi.NULL)
        if remapping and (remapping[0][1] in self.status or len(remapping) >= WRITE_STAGING_PER_SIZE):
            staging, number = remapping.popleft()
            self._wait(number, "mapping an upload buffer")
            return staging
        staging = device().create_buffer(
            size=size, usage=wgpu.BufferUsage.MAP_WRITE | wgpu.BufferUsage.COPY_SRC)
        self._wait(self._map(staging, self.lib.WGPUMapMode_Write, size), "mapping an upload buffer")
        return staging

    def fill_mapped(self, staging, nbytes: int, padded: int, make) -> bool:
        """make(into) on the first nbytes of a mapped staging buffer (zeros up to `padded`), then
        unmap it; make's verdict."""
        target = self.lib.wgpuBufferGetMappedRange(staging._internal, 0, staging.size)
        if target == self.ffi.NULL:
            raise RuntimeError("wgpu-native returned no mapped range for an upload buffer")
        try:
            into = np.frombuffer(self.ffi.buffer(target, padded), np.uint8)
            into[nbytes:] = 0
            return bool(make(into[:nbytes]))
        finally:
            self.lib.wgpuBufferUnmap(staging._internal)

    def remap_for_writing(self, staging) -> None:
        number = self._map(staging, self.lib.WGPUMapMode_Write, staging.size)
        _WRITE_STAGING.setdefault(staging.size, collections.deque()).append((staging, number))

    def _map(self, buffer, mode, nbytes: int) -> int:
        number, info = self._info("WGPUBufferMapCallbackInfo", self.on_mapped)
        self.lib.wgpuBufferMapAsync(buffer._internal, mode, 0, nbytes, info)
        return number


# Uploads this large go through pooled staging buffers of ours (_Native.writable_staging):
# wgpu's queue.write_buffer makes a new staging buffer every time, and filling its fresh pages
# cost 170 us per MB on an H200's host (torch's whole upload: 80 us per MB).
STAGED_UPLOAD_BYTES = 1 << 16
WRITE_STAGING_PER_SIZE = 4  # more uploads of one size in flight wait for the oldest's buffer
_WRITE_STAGING: dict[int, collections.deque] = {}  # size -> (buffer, map request number)


@functools.lru_cache(maxsize=1)
def _native() -> _Native | None:
    """None when this wgpu-py does not expose wgpu-native's functions (its public API is used)."""
    try:
        from wgpu.backends.wgpu_native._api import error_handler
        from wgpu.backends.wgpu_native._ffi import ffi, lib
        from wgpu.backends.wgpu_native._helpers import ERROR_TYPES
        for name in ("wgpuDevicePoll", "wgpuBufferMapAsync", "wgpuBufferGetConstMappedRange",
                     "wgpuBufferUnmap", "wgpuQueueOnSubmittedWorkDone", "wgpuQueueSubmit",
                     "wgpuCommandEncoderFinish", "wgpuCommandEncoderBeginComputePass"):
            getattr(lib, name)
        for name in ("capture", "release"):
            getattr(error_handler, name)
        return _Native(ffi, lib, error_handler, ERROR_TYPES)
    except Exception:  # an older or newer wgpu-py: no such names, or cffi lacks a declared type
        return None


def time_dispatches(dispatches, repeats: int = 10, min_seconds: float = 0.02) -> tuple[float, str]:
    """(seconds per repeat of the whole dispatch list, "timestamps" or "wall").

    GPUs drop their clocks within a fraction of a second of idling (an H200 was seen at 345 MHz
    instead of 1980 while a shader compiled), so the list first runs untimed for about 100 ms,
    and the timed batch is made long enough (at least `repeats` and about `min_seconds`)."""
    import wgpu

    dev = device()
    groups = bound(dispatches)
    warm, per_repeat, t0 = 1, None, time.perf_counter()
    while True:
        flush()
        start = time.perf_counter()
        dev.queue.submit([_encode(groups, warm).finish()])
        synchronize()
        per_repeat = (time.perf_counter() - start) / warm
        if time.perf_counter() - t0 > 0.1:
            break
        warm = min(4096, warm * 4)
    repeats = max(repeats, min(10000, int(min_seconds / max(per_repeat, 1e-7))))
    use_ts = _DEVICE.get("timestamps", False)
    qs = resolve = None
    if use_ts:
        qs = dev.create_query_set(type="timestamp", count=2)
        resolve = dev.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE
                                    | wgpu.BufferUsage.COPY_SRC)
    encoder = _encode(groups, repeats, qs)
    if use_ts:
        encoder.resolve_query_set(qs, 0, 2, resolve, 0)
    t0 = time.perf_counter()
    dev.queue.submit([encoder.finish()])
    synchronize()
    wall = (time.perf_counter() - t0) / repeats
    if not use_ts:
        return wall, "wall"
    begin, end = np.frombuffer(dev.queue.read_buffer(resolve), np.uint64)
    gpu = float(end - begin) * 1e-9 / repeats  # wgpu reports nanoseconds on Vulkan/Metal/D3D12
    # A timestamp counter that disagrees wildly with the wall clock is not trusted.
    if not 0 < gpu <= wall * 1.5:
        return wall, "wall"
    return gpu, "timestamps"
