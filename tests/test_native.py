"""The ahead-of-time kernels: used when built and current, checked at the call, same results
as numba's JIT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy import native
from tests.gates import need

DATA = Path(native.__file__).parent / "data"


def test_signatures_parse() -> None:
    args, ret = native.parse_signature("u1[:] i8 b1 u4[:,:] -> (i8, i8)")
    assert args == [("u1", 1), ("i8", 0), ("b1", 0), ("u4", 2)]
    assert ret == "(i8, i8)"
    assert native.parse_signature("f8[:]")[1] == "none"
    with pytest.raises(ValueError, match="unknown type"):
        native.parse_signature("x9[:]")
    # words in parentheses are one tuple argument
    args, ret = native.parse_signature(f"i8 {native.tuple_of('u8[:] u2[:]')} b1 -> none")
    assert args == [("i8", 0), [("u8", 1), ("u2", 1)], ("b1", 0)]
    for bad in ("(u8[:] i8", "u8[:])", "() i8", "((i8))"):
        with pytest.raises(ValueError, match="tuple"):
            native.parse_signature(bad)


def test_every_entry_point_has_a_signature_matching_its_arguments() -> None:
    import inspect

    for m in native.kernel_modules():
        __import__(m)
    assert len(native.REGISTRY) >= 10
    for k in native.REGISTRY.values():
        params = inspect.signature(k.py_func).parameters
        assert len(params) == len(k.args), k.qualname


def test_ci_runs_the_ahead_of_time_build() -> None:
    """`make test` builds the kernels; under CI they must be the ones the tests ran."""
    need(native.mode() == "aot", "kernels not compiled ahead of time here (make native)")
    m = native.load_manifest()
    assert m is not None and set(m["kernels"]) == set(native.REGISTRY) | set(m["kernels"])


def test_a_stale_build_is_not_used(tmp_path: Path) -> None:
    need(native.load_manifest() is not None, "no ahead-of-time build here (make native)")
    out = tmp_path / "_native"
    shutil.copytree(native.OUT_DIR, out)
    assert native.load_manifest(out) is not None
    m = json.loads((out / "manifest.json").read_text())
    m["hash"] = "0" * 64  # as if a kernel's source had changed since the build
    (out / "manifest.json").write_text(json.dumps(m))
    assert native.load_manifest(out) is None
    # built for another interpreter (a venv remade with another Python)
    m["hash"] = native.source_hash()
    m["suffix"] = ".cpython-399-x86_64-linux-gnu.so"
    (out / "manifest.json").write_text(json.dumps(m))
    assert native.load_manifest(out) is None
    # a module missing
    m["suffix"] = native._ext_suffix()
    (out / "manifest.json").write_text(json.dumps(m))
    assert native.load_manifest(out) is not None
    next(out.glob("k_tcp_zeek_sweep*")).unlink()
    assert native.load_manifest(out) is None
    (out / "manifest.json").unlink()
    assert native.load_manifest(out) is None


def test_arguments_are_checked_before_an_ahead_of_time_call() -> None:
    need(native.mode() == "aot", "checks of the ahead-of-time calls need the build (make native)")
    from tcpwhy.decode import kernels as K
    from tcpwhy.tcp import zeek

    src = np.arange(16, dtype=np.uint8)
    offs = np.array([0, 8], np.int64)
    caps = np.array([4, 4], np.int64)
    dst = np.zeros(8, np.uint8)
    K.gather_bytes(src, offs, caps, dst, np.array([0, 4], np.int64))
    assert dst.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(TypeError, match="argument 1 is int32"):
        K.gather_bytes(src, offs.astype(np.int32), caps, dst, offs)
    with pytest.raises(TypeError, match="read-only"):
        ro = src.copy()
        ro.flags.writeable = False
        K.gather_bytes(ro, offs, caps, dst, offs)
    with pytest.raises(TypeError, match="not contiguous"):
        K.gather_bytes(np.zeros(32, np.uint8)[::2], offs, caps, dst, offs)
    with pytest.raises(TypeError, match="4 arguments"):
        K.gather_bytes(src, offs, caps, dst)
    with pytest.raises(RuntimeError, match="compiled into the kernels"):
        zeek._sdelta(1, 2)
    # a tuple argument: each item checked as an argument is
    from tcpwhy.tcp.streams import pair_hashes

    u8, u2 = np.zeros(3, np.uint64), np.zeros(3, np.uint16)
    keys, dirs = np.zeros(3, np.uint64), np.zeros(3, np.int8)
    pair_hashes((u8, u8, u8, u8, u2, u2 + 1), keys, dirs)
    assert len(set(keys.tolist())) == 1 and dirs.tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match=r"argument 0\[5\] is uint64"):
        pair_hashes((u8, u8, u8, u8, u2, u8), keys, dirs)
    with pytest.raises(TypeError, match="argument 0 is tuple, expected a tuple of 6"):
        pair_hashes((u8, u8, u8, u8, u2), keys, dirs)
    with pytest.raises(TypeError, match=r"argument 0 is uint64\[1d\], expected a tuple"):
        pair_hashes(u8, keys, dirs)


CAPTURES = [DATA / "lab" / n for n in ("keepalive-race.pcap", "zero-window.pcap", "time-wait.pcap")]


def test_ahead_of_time_and_jit_give_the_same_output(zeek_corpus: Path) -> None:
    """Every view, run once with the build and once with numba's JIT (TCPWHY_NATIVE=0), over
    the lab recordings and the Zeek corpus (tunnels, IPv6, pcapng: the decoder's other paths)."""
    need(native.mode() == "aot", "compares the ahead-of-time build with the JIT (make native)")
    caps = [str(p) for p in CAPTURES] + [str(p) for p in sorted(zeek_corpus.glob("*.pcap*"))]
    script = (
        "import io, sys, contextlib\n"
        "from tcpwhy.cli import main\n"
        "for f in sys.argv[1:]:\n"
        "    for argv in (['packets', '--format', 'jsonl', f],\n"
        "                 ['conns', '--format', 'jsonl', '--seed', '1', f],\n"
        "                 ['conns', '--format', 'zeek', '--seed', '1', f],\n"
        "                 ['analyze', '--format', 'json', f]):\n"
        "        buf = io.StringIO()\n"
        "        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):\n"
        "            status = main(argv)\n"
        "        lines = [x for x in buf.getvalue().splitlines() if not x.startswith(('#open', '#close'))]\n"
        "        print(' '.join(argv[:-1]), f, status, len(lines))\n"
        "        print('\\n'.join(lines))\n"
    )
    outs = {}
    for setting in ("1", "0"):
        env = {**os.environ, native.ENV: setting}
        p = subprocess.run(
            [sys.executable, "-c", script, *caps],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        outs[setting] = p.stdout
    assert outs["1"].count("\n") > 1000
    assert outs["1"] == outs["0"]


def _older_cpuinfo(tmp_path: Path) -> Path:
    """This machine's /proc/cpuinfo with its vector extensions taken away: an older CPU."""
    text = Path("/proc/cpuinfo").read_text()
    older = "\n".join(
        " ".join(w for w in line.split(" ") if not w.startswith(("avx", "amx")))
        if line.startswith(("flags", "Features"))
        else line
        for line in text.splitlines()
    )
    (tmp_path / "cpuinfo").write_text(older + "\n")
    return tmp_path / "cpuinfo"


def test_cpu_flags_are_the_instruction_sets_of_the_first_processor(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx2 hypervisor ibrs bmi2 popcnt lm\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx512f\n"
    )
    # hypervisor and mitigation flags differ between two hosts of one CPU: not recorded
    assert native.cpu_flags(str(x86)) == ["avx2", "bmi2", "lm", "popcnt", "sse2"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull sha2 crc32 atomics\n")
    assert native.cpu_flags(str(arm)) == ["aes", "asimd", "atomics", "crc32", "fp", "pmull", "sha2"]
    assert native.cpu_flags(str(tmp_path / "absent")) == []
    need(Path("/proc/cpuinfo").exists(), "no /proc/cpuinfo here")
    here = native.cpu_flags()
    assert "sse2" in here or os.uname().machine != "x86_64"


def test_a_build_for_another_cpu_is_not_used(tmp_path: Path) -> None:
    """A venv copied to an older machine: its build names flags this CPU lacks -> the JIT."""
    built = native.host_cpu()
    assert native.cpu_mismatch(built) is None
    older = _older_cpuinfo(tmp_path)
    if any(f.startswith("avx") for f in built["flags"]):
        why = native.cpu_mismatch(built, str(older))
        assert why is not None and "avx2" in why.split()
    assert str(native.cpu_mismatch({**built, "machine": "sparc64"})).startswith("built for sparc64")
    assert native.cpu_mismatch(None) == "the build does not record its CPU"
    # the same through the manifest of a copied build
    need(native.load_manifest() is not None, "no ahead-of-time build here (make native)")
    out = tmp_path / "_native"
    shutil.copytree(native.OUT_DIR, out)
    m = json.loads((out / "manifest.json").read_text())
    assert native.cpu_mismatch(m["cpu"]) is None and "llvm_name" in m["cpu"]
    m["cpu"]["flags"].append("avx10_9")  # an extension no CPU of today has
    (out / "manifest.json").write_text(json.dumps(m))
    manifest, why = native.check_build(out)
    assert manifest is None and why.endswith("this CPU lacks avx10_9")
    del m["cpu"]  # a build older than the CPU record
    (out / "manifest.json").write_text(json.dumps(m))
    assert native.load_manifest(out) is None


def test_a_copied_venv_on_another_cpu_falls_back_to_the_jit_silently(tmp_path: Path) -> None:
    """The package copied with its build, the build's CPU edited: a process picks the JIT with no
    warning and no crash, and `python -m tcpwhy.native mode` says why."""
    need(native.load_manifest() is not None, "no ahead-of-time build here (make native)")
    pkg = tmp_path / "tcpwhy"
    shutil.copytree(Path(native.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    man = pkg / "_native" / "manifest.json"
    m = json.loads(man.read_text())
    m["cpu"]["flags"].append("avx10_9")
    man.write_text(json.dumps(m))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop(native.ENV, None)
    script = (
        "import tcpwhy, tcpwhy.native as n\n"
        f"assert tcpwhy.__file__.startswith({str(tmp_path)!r})\n"
        "from tcpwhy.decode import kernels\n"
        "print(n.mode(), type(kernels.gather_bytes).__name__)\n"
    )
    p = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["jit", "CPUDispatcher"] and p.stderr == ""
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy.native", "mode"], env=env, capture_output=True, text=True
    )
    name = m["cpu"]["llvm_name"]
    assert p.stdout.strip() == f"jit (built for {name}; this CPU lacks avx10_9)"
    # and the untouched build is used by the same copy
    m["cpu"]["flags"].remove("avx10_9")
    man.write_text(json.dumps(m))
    p = subprocess.run(
        [sys.executable, "-m", "tcpwhy.native", "mode"], env=env, capture_output=True, text=True
    )
    assert p.stdout.strip() == "aot"


def test_only_the_pycc_deprecation_warning_is_silenced() -> None:
    """No blanket warnings filter in the package: the build silences numba's pycc notice by its
    category and text, the CLI only the RuntimeWarnings it already prints as one line."""
    import re

    src = Path(native.__file__).parent
    calls = []
    for f in sorted(src.rglob("*.py")):
        for line in f.read_text().splitlines():
            if re.search(r"warnings\.(simplefilter|filterwarnings)\(", line):
                calls.append((f.name, line.strip()))
    assert calls and all("simplefilter" not in c for _, c in calls), calls
    import importlib
    import warnings

    from numba.core.errors import NumbaDeprecationWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        native.quiet_pycc()
        import numba.pycc

        importlib.reload(numba.pycc)  # it warns at every import
        warnings.warn("another", NumbaDeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        importlib.reload(numba.pycc)
    assert any("'pycc' module" in str(w.message) for w in seen)  # the notice it silences


def test_array_types_follow_the_column_schema() -> None:
    """Kernel signatures of table columns come from the schema: one word per column, its
    dtype and dimensions, and the decoder's signature takes every column in schema order."""
    from tcpwhy.decode.table import COLUMNS, ICMP_COLUMNS
    from tcpwhy.native import REGISTRY, array_types, parse_signature

    words = array_types(COLUMNS).split()
    assert len(words) == len(COLUMNS)
    assert words[list(COLUMNS).index("sack_le")] == "u4[:,:]"
    assert words[list(COLUMNS).index("truncated")] == "b1[:]"
    assert array_types(COLUMNS, ("opt_ws", "win")) == "i1[:] u2[:]"
    import tcpwhy.decode.kernels  # noqa: F401  (registers the decoder)

    args, _ = parse_signature(REGISTRY["tcpwhy.decode.kernels.decode_records"].spec)
    cols = args[11 : 11 + len(COLUMNS) + len(ICMP_COLUMNS)]
    for (code, dims), (name, (dt, shape, _)) in zip(
        cols, [*COLUMNS.items(), *ICMP_COLUMNS.items()], strict=True
    ):
        assert dims == 1 + len(shape), name
        assert np.dtype(dt) == np.dtype({"b1": np.bool_}.get(code, code)), name


def test_rows_by_stream_is_a_stable_sort_of_the_stream_ids() -> None:
    from tcpwhy.tcp.streams import rows_by_stream

    rng = np.random.default_rng(7)
    for n, ns in ((0, 0), (1, 1), (1000, 37), (50_000, 9000)):
        stream = rng.integers(0, max(ns, 1), n).astype(np.int64)
        stream[: min(n, ns)] = np.arange(min(n, ns))  # ids dense, as a tracker numbers them
        order, bounds = rows_by_stream(stream, ns)
        want = np.argsort(stream, kind="stable")
        assert order.dtype == np.int32
        assert np.array_equal(order, want)
        assert np.array_equal(bounds, np.searchsorted(stream[want], np.arange(ns + 1)))


def test_extend_filled_keeps_rows_and_sets_only_the_new_ones() -> None:
    from tcpwhy.arrays import extend_filled

    a = np.zeros((0, 2), np.int64)
    have = 0
    seen = []
    for want in (3, 5, 5, 2000, 2001, 9000):
        a = extend_filled(a, have, want, -1)
        assert a.shape[0] >= want and a.shape[1:] == (2,)
        assert (a[have:want] == -1).all()  # the new rows, set
        a[have:want] = np.arange(have, max(want, have))[:, None]  # as a kernel would use them
        have = max(have, want)
        seen.append(a.shape[0])
    assert np.array_equal(a[:have, 0], np.arange(have))  # every row kept through the growth
    assert seen[1] == seen[0]  # room left: no new array
    assert seen[-1] < 4 * 9000  # doubling, not per request
    # past ROOM_PAGES_FROM bytes the room is mapped in small pages: the same rows, kept
    big = extend_filled(a, have, have + 1, -1, room=(8 << 20) // 16)
    assert big.nbytes >= 8 << 20 and big.flags.writeable and big.flags.c_contiguous
    assert not isinstance(_owner(big), np.ndarray)  # its own mapping, not numpy's memory
    assert np.array_equal(big[:have], a[:have]) and (big[have] == -1).all()


def test_room_for_is_numpy_empty_in_small_pages_from_4_mb() -> None:
    from tcpwhy.arrays import ROOM_PAGES_FROM, room_for

    for shape, dtype in (((10,), np.uint16), ((ROOM_PAGES_FROM // 8, 2), np.int64)):
        r = room_for(shape, dtype)
        assert r.shape == shape and r.dtype == dtype
        assert r.flags.writeable and r.flags.c_contiguous
        r[-1] = 7
        assert r[-1].tolist() == (7 if len(shape) == 1 else [7, 7])
    assert isinstance(_owner(room_for((10,), np.uint8)), np.ndarray)
    assert not isinstance(_owner(room_for((ROOM_PAGES_FROM,), np.uint8)), np.ndarray)


def _owner(a: object) -> object:
    """What holds an array's memory: the array that owns it, or a mapping's buffer."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def test_the_build_runs_without_numba() -> None:
    """With the ahead-of-time build, a command imports neither numba nor llvmlite (a sixth
    of a second of start-up): kernels and their helpers, `tcpwhy.intrinsics` included, are
    stubs around the built code."""
    need(native.check_build()[0] is not None, "the kernels are not built ahead of time")
    code = (
        "import sys, io, contextlib; from tcpwhy.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['conns', '--format', 'jsonl', {str(DATA / 'lab' / 'time-wait.pcap')!r}])\n"
        "print(sorted(m for m in ('numba', 'llvmlite') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[-2] == "[]"


def test_intrinsics_rotate_and_copy_as_python_does() -> None:
    """`rotl32` and `copy8` compiled by numba (in a process of their own, with the JIT)
    against the same operations in Python, at every rotation and at unaligned offsets."""
    code = """
import numpy as np
from numba import njit
from tcpwhy.intrinsics import copy8, rotl32

@njit
def rot(xs, out):
    for i in range(len(xs)):
        for n in range(32):
            out[i, n] = rotl32(xs[i], n)

@njit
def copy(dst, d, src, s):
    copy8(dst, d, src, s)

rng = np.random.default_rng(7)
xs = rng.integers(0, 2**32, 200).astype(np.int64)
got = np.zeros((200, 32), np.int64)
rot(xs, got)
want = [[((int(x) << n) | (int(x) >> (32 - n))) & 0xFFFFFFFF for n in range(32)] for x in xs]
assert got.tolist() == want
src = rng.integers(0, 256, 64).astype(np.uint8)
for d in range(9):
    for s in range(9):
        dst = np.zeros(24, np.uint8)
        copy(dst, d, src, s)
        expect = np.zeros(24, np.uint8)
        expect[d : d + 8] = src[s : s + 8]
        assert (dst == expect).all(), (d, s)
print("ok")
"""
    env = {**os.environ, native.ENV: "0"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"
