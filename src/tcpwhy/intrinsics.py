"""Operations numba does not offer, written as LLVM IR, for the compiled kernels.

numba computes on 64-bit integers and copies arrays only with its reference counting, which
the kernels leave out; these give the kernels a 32-bit rotation (SHA-1's) and an 8-byte
unaligned copy (a formatter's words). Like `tcpwhy.native.njit` helpers they are compiled
into the kernels that call them, and neither numba nor llvmlite is imported when the kernels
were built ahead of time.
"""

from __future__ import annotations

from typing import Any

from tcpwhy.native import intrinsic


@intrinsic
def copy8(typingctx: Any, dst: Any, dst_at: Any, src: Any, src_at: Any) -> Any:
    """Bytes ``src[src_at:src_at + 8]`` to ``dst[dst_at:]`` (two uint8 arrays), as one
    unaligned 64-bit load and store. The caller makes sure both ranges are inside the arrays:
    nothing is checked."""
    from llvmlite import ir
    from numba import types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        d, da, s, sa = args
        darr = context.make_array(signature.args[0])(context, builder, d)
        sarr = context.make_array(signature.args[2])(context, builder, s)
        word = ir.IntType(64).as_pointer()
        v = builder.load(builder.bitcast(builder.gep(sarr.data, [sa]), word), align=1)
        builder.store(v, builder.bitcast(builder.gep(darr.data, [da]), word), align=1)
        return context.get_dummy_value()

    return types.void(dst, dst_at, src, src_at), codegen


@intrinsic
def rotl32(typingctx: Any, x: Any, n: Any) -> Any:
    """The low 32 bits of int64 `x` rotated left by `n`, as an int64 (one rotate
    instruction, where shifts and masks on 64 bits took a sixth more of a SHA-1)."""
    from llvmlite import ir
    from numba import types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        x32 = builder.trunc(args[0], i32)
        n32 = builder.trunc(args[1], i32)
        fshl = builder.module.declare_intrinsic("llvm.fshl", [i32], ir.FunctionType(i32, [i32] * 3))
        return builder.zext(builder.call(fshl, [x32, x32, n32]), ir.IntType(64))

    return types.int64(types.int64, types.int64), codegen


@intrinsic
def prefetch(typingctx: Any, arr: Any, at: Any) -> Any:
    """A hint that ``arr[at]`` will be written soon: its cache line is fetched meanwhile
    (LLVM's ``prefetch``; nothing is loaded into the program and no index is checked, and
    the processor ignores an address outside memory). For hash tables much larger than the
    caches, where each probe otherwise waits on its own miss."""
    from llvmlite import ir
    from numba import types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i = args
        data = context.make_array(signature.args[0])(context, builder, a).data
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        )
        # write, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [i]), i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, at), codegen


@intrinsic
def call_match(typingctx: Any, fn: Any, code: Any, at: Any, n: Any, data: Any) -> Any:
    """``fn(code, at, n, 0, 0, data, NULL)`` for `fn` the address of a C function of
    PCRE2's ``pcre2_match`` signature (pointers passed as int64 addresses): a C library's
    function called from a compiled loop, where a Python call per subject cost ten times
    the match. Nothing is checked: the caller passes live addresses."""
    from llvmlite import ir
    from numba import types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(i32, [i8p, i8p, i64, i64, i32, i8p, i8p])
        f, c, a, length, d = args
        ptr = builder.inttoptr(f, fnty.as_pointer())
        rc = builder.call(
            ptr,
            [
                builder.inttoptr(c, i8p),
                builder.inttoptr(a, i8p),
                length,
                i64(0),
                i32(0),
                builder.inttoptr(d, i8p),
                ir.Constant(i8p, None),
            ],
        )
        return builder.sext(rc, i64)

    return types.int64(types.int64, types.int64, types.int64, types.int64, types.int64), codegen
