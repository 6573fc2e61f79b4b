"""Compiled loops: ahead-of-time extension modules when built, numba's JIT otherwise.

tcpwhy's sequential loops (walking pcap records, decoding headers, per-flow
state) are numba functions. Through numba's JIT they cost about a second at
the start of every process -- importing numba and llvmlite, initialising its
typing and target registries, loading each function from its on-disk cache --
which is most of the run time of a short capture and a third of a
3-million-packet one. ``python -m tcpwhy.native build`` (run by ``make``)
compiles the entry points ahead of time into small extension modules with
numba's own compiler (``numba.pycc``, the same code), one per entry point, in
``tcpwhy/_native/``; they load in about a millisecond and do not import numba.

The kernel modules write ``from tcpwhy.native import kernel, njit``:

* ``@kernel("u1[:] i8 b1 -> (i8, i8)")`` marks an entry point called from
  Python, with its exact signature (``u1[:]`` a C-contiguous writable uint8
  array, ``i8[:,:]`` a 2-D int64 one, ``i8``/``b1``/``f8`` int, bool and
  float scalars; ``-> none`` for no result; words in parentheses, as
  ``tuple_of(...)`` writes them, are one tuple argument: a set of columns that go
  together, such as a row's endpoints, is named once by the kernel and its callers);
* ``@njit(...)`` marks a helper called only from compiled code.

A kernel that takes packet-table columns writes their part of the signature as
``array_types(COLUMNS, ("seq", "ack"))``: the types come from the schema that defines the
columns (`tcpwhy.decode.table`), so a column's type is written in one place.

``@kernel(..., nogil=True)`` also releases the GIL for the call (both ways: the JIT's
``nogil`` and the build's ``release_gil`` flag), so a thread may run it beside the main
one; only for kernels that touch no Python object and whose callers hand them arrays that
no other thread writes meanwhile (`tcpwhy.report.conns` formats and writes batches in a
thread while the next ones are built).

Which one runs is decided once per process, for all kernels together: the
ahead-of-time modules if they were built from exactly these sources (a checksum
of the kernel files is kept in their manifest) for this interpreter and a CPU
with no instruction set this one lacks, all of them are there, and
``TCPWHY_NATIVE`` is not ``0``; numba's JIT otherwise -- a stale or missing
build is never used, it is only slower. The CPU matters because the build is
compiled for the host it ran on (``target_cpu = "host"``, as the JIT does):
a venv copied to an older machine would otherwise die of an illegal
instruction. The decision is silent; ``python -m tcpwhy.native mode`` says why. Arguments of an ahead-of-time call are checked against the
signature (dtype, dimensions, contiguity, writability) and a mismatch raises
TypeError, where the JIT would have compiled another specialisation.

``numba.pycc`` is marked "pending deprecation" by numba (a replacement is being
written); should a numba release drop it, the build fails with a message and
tcpwhy keeps working through the JIT.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# plain os.path: pathlib and hashlib would add a hundredth of a second to every start
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "_native")
KERNEL_FILES = (
    "intrinsics.py",
    "arrays_kernel.py",
    "decode/kernels.py",
    "decode/tls.py",
    "tcp/streams.py",
    "tcp/sides.py",
    "tcp/analysis.py",
    "tcp/zeek.py",
    "tcp/state_kernel.py",
    "tcp/records_kernel.py",
    "diagnose/kernels.py",
    "report/conns_kernel.py",
    "report/packets_kernel.py",
    "report/html_kernel.py",
    "host/trace_kernel.py",
    "filter/pcre_kernel.py",
)
"""Every module that defines compiled code (their text is hashed into the build's manifest)."""
ENV = "TCPWHY_NATIVE"

_DTYPES = {
    "u1": np.uint8,
    "u2": np.uint16,
    "u4": np.uint32,
    "u8": np.uint64,
    "i1": np.int8,
    "i2": np.int16,
    "i4": np.int32,
    "i8": np.int64,
    "b1": np.bool_,
    "f8": np.float64,
}


Leaf = tuple[str, int]
"""An argument's type: (type code, dimensions), 0 dimensions for a scalar."""
Arg = Leaf | list[Leaf]
"""An argument: one type, or a list of types for a tuple of them (several columns passed as
one argument)."""


def parse_signature(spec: str) -> tuple[list[Arg], str]:
    """(arguments, result) of a kernel signature string; words in parentheses are one tuple
    argument (``(u8[:] u2[:])``: a tuple of a uint64 and a uint16 array)."""
    args_text, _, ret = spec.partition("->")
    args: list[Arg] = []
    group: list[Leaf] | None = None
    for tok in args_text.replace("(", " ( ").replace(")", " ) ").split():
        if tok == "(":
            if group is not None:
                raise ValueError(f"nested tuple in signature {spec!r}")
            group = []
            continue
        if tok == ")":
            if not group:
                raise ValueError(f"empty or unopened tuple in signature {spec!r}")
            args.append(group)
            group = None
            continue
        code, _, dims = tok.partition("[")
        if code not in _DTYPES:
            raise ValueError(f"unknown type {code!r} in signature {spec!r}")
        leaf = (code, dims.count(":"))
        if group is None:
            args.append(leaf)
        else:
            group.append(leaf)
    if group is not None:
        raise ValueError(f"unclosed tuple in signature {spec!r}")
    return args, ret.strip() or "none"


def array_types(schema: Mapping[str, Sequence[Any]], names: Iterable[str] | None = None) -> str:
    """The signature words of columns of a schema (name -> (dtype, row shape, ...)), in the
    schema's order or that of `names`. A kernel that takes table columns names them; their
    types come from where the columns are defined, not from a second hand-written list."""
    words = []
    for name in schema if names is None else names:
        d, shape = np.dtype(schema[name][0]), tuple(schema[name][1])
        code = "b1" if d == np.bool_ else f"{d.kind}{d.itemsize}"
        if code not in _DTYPES:
            raise ValueError(f"column {name!r}: no kernel type for {d}")
        words.append(f"{code}[{','.join(':' * (1 + len(shape)))}]")
    return " ".join(words)


def tuple_of(words: str) -> str:
    """Signature words as one tuple argument: a kernel that takes a set of columns that go
    together (a row's endpoints) takes them as one tuple, unpacked in its body, so its
    parameter list and every caller's name the set once."""
    return f"({words})"


BUILD_FORMAT = 2
"""Bump when the way kernels are compiled changes (signature mapping, compiler options)."""


def source_hash() -> str:
    """What a build was made from: a checksum of the kernel modules' text and the build format
    (an edit to any of them makes the build stale)."""
    crc = zlib.crc32(f"tcpwhy-native-{BUILD_FORMAT}".encode())
    size = 0
    for rel in KERNEL_FILES:
        with open(os.path.join(HERE, rel), "rb") as f:
            data = f.read()
        crc = zlib.crc32(rel.encode() + b"\0" + data + b"\0", crc)
        size += len(data)
    return f"{crc:08x}-{size}"


# The x86 flags of /proc/cpuinfo that name instruction-set extensions LLVM may use for
# "host"; the others (mitigations, hypervisor, timer features) differ between two hosts of
# one CPU model and would only send a copied venv to the JIT for nothing.
_X86_ISA = re.compile(
    r"(sse|ssse|avx|amx|fma|f16c|bmi|popcnt|abm|lzcnt|movbe|aes|vaes|pclmul|vpclmul|gfni|sha|adx"
    r"|rdrand|rdseed|cx8|cx16|cmov|mmx|xsave|prfchw|3dnow|clflushopt|clwb|fsgsbase|lahf_lm|xop"
    r"|tbm|movdir|serialize|waitpkg|pku|cldemote|rdpid|lm$)"
)


def cpu_flags(path: str = "/proc/cpuinfo") -> list[str]:
    """The instruction-set flags of this CPU as the kernel lists them (x86 ``flags``, ARM
    ``Features``); read up to the first processor's list, so it costs a tenth of a millisecond."""
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    flags = value.split()
                    if key.strip() == "flags":
                        flags = [x for x in flags if _X86_ISA.match(x)]
                    return sorted(set(flags))
    except OSError:
        pass
    return []


def host_cpu() -> dict[str, Any]:
    """What the build records of the CPU it was compiled on: the machine and its flags (what the
    load checks), and LLVM's name and features for it (what numba targeted, for the reader)."""
    cpu: dict[str, Any] = {"machine": os.uname().machine, "flags": cpu_flags()}
    try:
        import llvmlite.binding as ll
        from numba.core import config

        cpu["llvm_name"] = config.CPU_NAME or ll.get_host_cpu_name()
        cpu["llvm_features"] = config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
    except Exception:  # only informative: a numba without these still builds
        pass
    return cpu


def cpu_mismatch(built: Any, path: str = "/proc/cpuinfo") -> str | None:
    """Why code built for the CPU ``built`` (a manifest's ``cpu``) cannot run here, or None."""
    if not isinstance(built, dict) or not isinstance(built.get("flags"), list):
        return "the build does not record its CPU"
    if built.get("machine") != os.uname().machine:
        return f"built for {built.get('machine')}, this is {os.uname().machine}"
    missing = sorted(set(map(str, built["flags"])) - set(cpu_flags(path)))
    if missing:
        name = built.get("llvm_name") or "another CPU"
        return f"built for {name}; this CPU lacks {' '.join(missing)}"
    return None


def ext_name(qualname: str) -> str:
    """An entry point's extension module: ``k_`` and its dotted path with underscores."""
    return "k_" + qualname.removeprefix("tcpwhy.").replace(".", "_")


class Kernel:
    """A registered entry point: its Python source function and signature."""

    def __init__(self, fn: Callable[..., Any], spec: str, nogil: bool = False) -> None:
        self.py_func = fn
        self.spec = spec
        self.nogil = nogil
        self.module = fn.__module__
        self.name = fn.__name__
        self.args, self.ret = parse_signature(spec)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def ext_name(self) -> str:
        return ext_name(self.qualname)


REGISTRY: dict[str, Kernel] = {}


class NativeKernel:
    """An ahead-of-time compiled entry point, with its arguments checked before the call
    (the extension's own unboxing checks only an array's item size)."""

    __slots__ = ("checks", "fn", "qualname")

    def __init__(self, k: Kernel, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.qualname = k.qualname
        # (dtype, dimensions, kind): kind 0 an array, 1 a bool, 2 a float, 3 an int; a tuple
        # argument is (its items' checks, its length, 4)
        self.checks = tuple(
            (tuple(_check(x) for x in arg), len(arg), 4) if isinstance(arg, list) else _check(arg)
            for arg in k.args
        )

    def __call__(self, *args: Any) -> Any:
        # one pass of cheap tests per argument: the process-wide loop calls kernels about a
        # thousand times per million packets, with up to 45 arguments each
        if len(args) != len(self.checks):
            raise TypeError(f"{self.qualname}: {len(args)} arguments, expected {len(self.checks)}")
        # lengths checked just above (strict=True costs a check per item)
        for a, (dt, ndim, kind) in zip(args, self.checks, strict=False):
            if kind == 0:
                if isinstance(a, np.ndarray) and a.dtype == dt and a.ndim == ndim:
                    f = a.flags
                    if f.c_contiguous and f.writeable:
                        continue
            elif kind == 3:
                if isinstance(a, _INTS) and not isinstance(a, _BOOLS):
                    continue
            elif kind == 1:
                if isinstance(a, _BOOLS):
                    continue
            elif kind == 4:
                if (
                    isinstance(a, tuple)
                    and len(a) == ndim
                    and all(_fits(x, c) for x, c in zip(a, dt, strict=True))
                ):
                    continue
            elif isinstance(a, _FLOATS):
                continue
            self._mismatch(args)
        return self.fn(*args)

    def _mismatch(self, args: tuple[Any, ...]) -> None:
        """Raises TypeError naming the first argument that does not fit the signature."""
        for i, (a, (dt, ndim, kind)) in enumerate(zip(args, self.checks, strict=True)):
            if kind != 4:
                if not _fits(a, (dt, ndim, kind)):
                    raise TypeError(f"{self.qualname}: argument {i} is {_what(a)}, expected "
                                    f"{_wanted(dt, ndim)}")  # fmt: skip
                continue
            if not isinstance(a, tuple) or len(a) != ndim:
                raise TypeError(
                    f"{self.qualname}: argument {i} is {_what(a)}, expected a tuple of {ndim}"
                )
            for j, (x, c) in enumerate(zip(a, dt, strict=True)):
                if not _fits(x, c):
                    raise TypeError(f"{self.qualname}: argument {i}[{j}] is {_what(x)}, "
                                    f"expected {_wanted(c[0], c[1])}")  # fmt: skip


def _check(leaf: Leaf) -> tuple[Any, int, int]:
    """A type's check: (dtype, dimensions, kind), as `NativeKernel.checks` holds them."""
    code, ndim = leaf
    dt = np.dtype(_DTYPES[code])
    return dt, ndim, 0 if ndim else 1 if dt.kind == "b" else 2 if dt.kind == "f" else 3


def _fits(a: Any, check: tuple[Any, int, int]) -> bool:
    """Whether a value fits a type's check (`_check`)."""
    dt, ndim, kind = check
    if kind == 0:
        return (
            isinstance(a, np.ndarray)
            and a.dtype == dt
            and a.ndim == ndim
            and a.flags.c_contiguous
            and a.flags.writeable
        )
    if kind == 1:
        return isinstance(a, _BOOLS)
    if kind == 2:
        return isinstance(a, _FLOATS)
    return isinstance(a, _INTS) and not isinstance(a, _BOOLS)


def _what(a: Any) -> str:
    """A value's type, as a mismatch names it."""
    if isinstance(a, np.ndarray):
        return (
            f"{a.dtype}[{a.ndim}d{', not contiguous' if not a.flags.c_contiguous else ''}"
            f"{', read-only' if not a.flags.writeable else ''}]"
        )
    return type(a).__name__


def _wanted(dt: Any, ndim: int) -> str:
    return f"{dt}[{ndim}d]" if ndim else str(dt)


_INTS = (int, np.integer)
_BOOLS = (bool, np.bool_)
_FLOATS = (float, np.floating)


def _helper_stub(fn: Callable[..., Any]) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{fn.__module__}.{fn.__name__} is compiled into the kernels that call it; "
            "run with TCPWHY_NATIVE=0 to call it from Python"
        )

    stub.__name__ = fn.__name__
    stub.__doc__ = fn.__doc__
    return stub


_mode: str | None = None
_manifest: dict[str, Any] | None = None


def _ext_suffix() -> str:
    """The file suffix of this interpreter's extension modules (``.cpython-311-x86_64-linux-gnu.so``)."""
    import importlib.machinery

    return importlib.machinery.EXTENSION_SUFFIXES[0]


def check_build(out_dir: str | os.PathLike[str] = OUT_DIR) -> tuple[dict[str, Any] | None, str]:
    """(the ahead-of-time build's manifest, "") if it matches these sources, this interpreter
    and this CPU and every module it lists is there (a venv remade with another Python keeps
    the old build; one copied to another machine keeps a build for that machine's CPU);
    (None, why not) otherwise."""
    try:
        with open(os.path.join(out_dir, "manifest.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None, "no ahead-of-time build"
    if not isinstance(m, dict) or m.get("hash") != source_hash():
        return None, "the build is older than the kernels' sources"
    suffix = _ext_suffix()
    if m.get("suffix") != suffix or not isinstance(m.get("kernels"), dict):
        return None, "the build is for another Python"
    why = cpu_mismatch(m.get("cpu"))
    if why:
        return None, why
    for qualname in m["kernels"]:
        if not os.path.isfile(os.path.join(out_dir, ext_name(str(qualname)) + suffix)):
            return None, f"the build lacks {qualname}"
    return m, ""


def load_manifest(out_dir: str | os.PathLike[str] = OUT_DIR) -> dict[str, Any] | None:
    """The ahead-of-time build's manifest if it can be used here (see check_build)."""
    return check_build(out_dir)[0]


def mode() -> str:
    """``"aot"`` (the ahead-of-time build) or ``"jit"`` (numba), fixed for the process."""
    global _mode, _manifest
    if _mode is None:
        _manifest = None if os.environ.get(ENV) == "0" else load_manifest()
        _mode = "aot" if _manifest is not None else "jit"
    return _mode


def _load_native(k: Kernel) -> NativeKernel:
    assert _manifest is not None
    if _manifest.get("kernels", {}).get(k.qualname) != k.spec:
        raise ImportError(f"the ahead-of-time build has no {k.qualname} with signature {k.spec}")
    mod = importlib.import_module(f"tcpwhy._native.{k.ext_name}")
    return NativeKernel(k, getattr(mod, k.name))


def kernel(spec: str, nogil: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """An entry point called from Python, with its signature (see the module docstring);
    `nogil`: the call releases the GIL."""

    def deco(fn: Callable[..., Any]) -> Any:
        k = Kernel(fn, spec, nogil)
        REGISTRY[k.qualname] = k
        if mode() == "aot":
            return _load_native(k)
        from numba import njit as numba_njit

        return numba_njit(cache=True, nogil=nogil)(fn)

    return deco


def njit(*args: Any, **kwargs: Any) -> Any:
    """numba's njit for helpers that only compiled code calls."""
    if mode() == "aot":
        if args and callable(args[0]):
            return _helper_stub(args[0])
        return _helper_stub
    from numba import njit as numba_njit

    return numba_njit(*args, **kwargs)


def intrinsic(fn: Callable[..., Any]) -> Any:
    """numba's intrinsic (a helper written as LLVM IR, `tcpwhy.intrinsics`), which only
    compiled code calls: with the ahead-of-time build a stub, and numba is not imported."""
    if mode() == "aot":
        return _helper_stub(fn)
    from numba.extending import intrinsic as numba_intrinsic

    return numba_intrinsic(fn)


def kernel_modules() -> list[str]:
    return ["tcpwhy." + f.removesuffix(".py").replace("/", ".") for f in KERNEL_FILES]


# -- building ---------------------------------------------------------------------------------


def _numba_signature(k: Kernel) -> Any:
    from numba import from_dtype, types

    def scalar(code: str) -> Any:
        return from_dtype(np.dtype(_DTYPES[code]))

    def one(leaf: Leaf) -> Any:
        c, nd = leaf
        return types.Array(scalar(c), nd, "C") if nd else scalar(c)

    args = [types.Tuple([one(x) for x in a]) if isinstance(a, list) else one(a) for a in k.args]
    ret = k.ret
    if ret == "none":
        rtype: Any = types.none
    elif ret.startswith("("):
        parts = [p.strip() for p in ret.strip("()").split(",") if p.strip()]
        rtype = types.Tuple([scalar(p) for p in parts])
    else:
        rtype = scalar(ret)
    return rtype(*args)


def quiet_pycc() -> None:
    """Silence numba's notice that pycc is pending deprecation (known: see the module
    docstring), and only it: any other warning of the build is the build's to show."""
    from numba.core.errors import NumbaPendingDeprecationWarning

    warnings.filterwarnings(
        "ignore", message=".*'pycc' module", category=NumbaPendingDeprecationWarning
    )


def compile_one(qualname: str, out_dir: str | os.PathLike[str]) -> None:
    """Compile one entry point into its own extension module (one per process: numba's
    inliner does not take two entry points sharing helpers in one pycc module)."""
    os.environ[ENV] = "0"
    module, _, _ = qualname.rpartition(".")
    importlib.import_module(module)
    k = REGISTRY[qualname]
    with warnings.catch_warnings():
        quiet_pycc()
        from numba.pycc import CC

        if k.nogil:
            _release_gil_in_pycc()
        cc = CC(k.ext_name)
        cc.output_dir = str(out_dir)
        cc.target_cpu = "host"
        cc.verbose = False
        cc.export(k.name, _numba_signature(k))(k.py_func)
        cc.compile()


def _release_gil_in_pycc() -> None:
    """Makes numba.pycc compile its exports with ``release_gil`` (its wrapper then drops the
    GIL around the call, as the JIT's ``nogil=True`` does): pycc takes no such option, it
    builds its compiler flags with defaults (``numba.pycc.compiler.Flags()``)."""
    import numba.pycc.compiler as pycc_compiler
    from numba.core.compiler import Flags

    def release_gil_flags() -> Any:
        flags = Flags()
        flags.release_gil = True
        return flags

    pycc_compiler.Flags = release_gil_flags


def build(
    out_dir: str | os.PathLike[str] = OUT_DIR, jobs: int | None = None, force: bool = False
) -> int:
    """Compile every entry point; returns 0, or 1 if a compile failed (the JIT is then used)."""
    from pathlib import Path

    os.environ[ENV] = "0"
    want = source_hash()
    # byte-compile the package too, as installing a wheel does: an editable install (or
    # PYTHONDONTWRITEBYTECODE) otherwise recompiles every module from source at each start
    import compileall

    compileall.compile_dir(HERE, quiet=1)
    if not force and load_manifest(out_dir) is not None:
        print("tcpwhy: compiled kernels are up to date")
        return 0
    out_dir = Path(out_dir)
    for m in kernel_modules():
        importlib.import_module(m)
    kernels = sorted(REGISTRY.values(), key=lambda k: k.qualname)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        _rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "__init__.py").write_text('"""Ahead-of-time compiled kernels (see tcpwhy.native)."""\n')
    import subprocess

    jobs = jobs or os.cpu_count() or 1
    print(f"tcpwhy: compiling {len(kernels)} kernels ahead of time ({jobs} at a time) ...")
    pending = [k.qualname for k in kernels]
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    failed = []
    while pending or running:
        while pending and len(running) < jobs:
            q = pending.pop(0)
            cmd = [sys.executable, "-m", "tcpwhy.native", "compile-one", q, str(tmp)]
            running.append(
                (q, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            )
        q, p = running.pop(0)
        out = p.communicate()[0]
        if p.returncode != 0:
            failed.append(q)
            sys.stderr.write(out.decode(errors="replace")[-3000:])
    if failed:
        print(f"tcpwhy: could not compile {', '.join(failed)}; numba's JIT will be used")
        _rmtree(tmp)
        return 1
    manifest = {
        "hash": want,
        "suffix": _ext_suffix(),
        "kernels": {k.qualname: k.spec for k in kernels},
        "cpu": host_cpu(),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out_dir.exists():
        _rmtree(out_dir)
    tmp.rename(out_dir)
    print(f"tcpwhy: compiled kernels written to {out_dir}")
    return 0


def _rmtree(p: str | os.PathLike[str]) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tcpwhy.native", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the kernels ahead of time")
    b.add_argument("--jobs", type=int)
    b.add_argument("--force", action="store_true")
    one = sub.add_parser("compile-one")
    one.add_argument("qualname")
    one.add_argument("out_dir")
    sub.add_parser("mode", help="print which kernels this process would use (aot or jit)")
    a = ap.parse_args(argv)
    import tcpwhy.native as nat  # the registry lives in the imported module, not __main__

    if a.cmd == "build":
        return nat.build(jobs=a.jobs, force=a.force)
    if a.cmd == "compile-one":
        nat.compile_one(a.qualname, a.out_dir)
        return 0
    why = f"{ENV}=0" if os.environ.get(ENV) == "0" else nat.check_build()[1]
    print(nat.mode() + (f" ({why})" if nat.mode() == "jit" and why else ""))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
