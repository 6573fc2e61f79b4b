# mypy: disable-error-code="assignment"
# (numba infers integer widths itself; mypy would pin each local to its first assignment)
"""The TLS record layer of every TCP stream, without decryption.

TLS writes records (5-byte header: content type, version, length) back to
back into the byte stream; TCP cuts that stream into segments wherever it
likes. Finding record boundaries is a walk along each direction of a stream in
sequence order -- inherently sequential, so it is one compiled loop over the
whole table (`walk_records`), writing one row per record into numpy columns.
What is visible without keys: the content type and length of every record,
the handshake type of clear handshake messages, the ClientHello (SNI, ALPN,
offered versions) and the ServerHello (chosen version), and the level and
description of alerts sent in clear (TLS 1.2 and earlier, before encryption).
Everything after the handshake of TLS 1.3 is an "application data" record:
an encrypted alert there is told only by its size and its place (a short
record right before the sender's FIN is almost certainly close_notify).

A record is reported on the segment that carries its last byte (as tshark
does after reassembly). Segments are taken in capture order; one that starts
at or before the next expected byte continues the walk, a retransmission
(nothing new) is skipped, a gap (lost or not captured) or a header that does
not look like TLS loses the thread until a later segment starts with a
plausible record header (or, as a direction's first segment, with the start of one: a
partial write of less than a header). Bytes cut by the snaplen are counted by the IP
length but not captured: a record whose body was cut still ends where its
header says (flag CUT); a header that was cut loses the thread the same way.

Payloads are attacker data: all parsing here is bounded and byte-level, and
names taken from a ClientHello are kept as bytes (escape before printing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import RST, SYN, PacketTable
from tcpwhy.native import kernel
from tcpwhy.tcp.seq import seq_add, seq_diff

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CONTENT_NAMES = {
    CHANGE_CIPHER_SPEC: "change_cipher_spec",
    ALERT: "alert",
    HANDSHAKE: "handshake",
    APPLICATION_DATA: "application_data",
    HEARTBEAT: "heartbeat",
}
HANDSHAKE_NAMES = {
    0: "hello_request",
    1: "client_hello",
    2: "server_hello",
    4: "new_session_ticket",
    5: "end_of_early_data",
    8: "encrypted_extensions",
    11: "certificate",
    12: "server_key_exchange",
    13: "certificate_request",
    14: "server_hello_done",
    15: "certificate_verify",
    16: "client_key_exchange",
    20: "finished",
    24: "key_update",
}
ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
VERSION_NAMES = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
MAX_RECORD = (1 << 14) + 2048
"""Largest record length a peer may send (RFC 8446 §5.2: 2^14 plus expansion)."""
ENCRYPTED_ALERT_MAX = 48
"""Longest record taken for an encrypted alert: 2 bytes of alert, TLS 1.3's inner content
type, padding and a 16-byte tag (19 bytes with AEAD and no padding, 26 in TLS 1.2 GCM);
larger ciphers' MAC and padding stay well below this."""

# bits of `Records.flags`
COMPLETE = 1  # the record's last byte was seen
CUT = 2  # some of its bytes were not captured (snaplen)
RESYNC = 4  # the walk found this record's header after losing the thread

_REC_COLS = (
    "row",
    "start_row",
    "group",
    "rel",
    "ctype",
    "version",
    "length",
    "hs",
    "alert",
    "flags",
)


@kernel("i8[:] i8[:] b1[:] i8[:] i8[:] i8[:] i8[:] i8[:] u1[:] i8[:,:] -> i8", nogil=True)
def walk_records(
    order: Any,
    bounds: Any,
    enabled: Any,
    seq: Any,
    plen: Any,
    pcap: Any,
    poff: Any,
    flags: Any,
    data: Any,
    out: Any,
) -> Any:
    """Records of every enabled group (one direction of one stream, its rows in capture
    order) into `out` (one row per record, columns as `_REC_COLS`); the number found
    (more than `out` holds: call again with room for them)."""
    cap_out = out.shape[0]
    k = 0
    hb = np.zeros(7, np.int64)
    for g in range(bounds.shape[0] - 1):
        if not enabled[g]:
            continue
        have_base = False
        base = 0
        expect = 0
        next_rec = 0
        synced = False
        cur_open = False
        cur_start = 0
        cur_end = -1  # -1 until the header is known
        cur_row0 = 0
        cur_flags = 0
        hb_n = 0
        seen = False
        for x in range(bounds[g], bounds[g + 1]):
            r_i = order[x]
            L = plen[r_i]
            if L == 0 or (flags[r_i] & RST) != 0:
                continue
            s32 = seq[r_i] + (1 if (flags[r_i] & SYN) != 0 else 0)
            if not have_base:
                base = s32
                have_base = True
            rel = (s32 - base) & 0xFFFFFFFF
            if rel >= 0x80000000:
                continue  # before the first segment seen: an old retransmission
            C = pcap[r_i]
            if C > L:
                C = L
            off = poff[r_i]
            if rel + L <= expect:
                continue  # nothing new: a retransmission or keep-alive
            if rel > expect:
                # a gap: bytes lost before the capture saw them; the thread is lost
                if cur_open:
                    cur_open = False  # the record in progress is never completed
                synced = False
                expect = rel
            if not synced:
                if not seen and rel == expect and L < 5 and C == L:
                    # the direction's first segment is shorter than a record header (a
                    # sender's partial write): a handshake header's start is taken as the
                    # record's start, completed by the next segments and checked then
                    ok = data[off] == HANDSHAKE
                    if L > 1 and data[off + 1] != 3:
                        ok = False
                    if L > 2 and data[off + 2] > 4:
                        ok = False
                    if not ok:
                        expect = rel + L
                        continue
                else:
                    if rel < expect or C < 5:
                        expect = rel + L
                        continue
                    t0 = data[off]
                    v0 = data[off + 1]
                    v1 = data[off + 2]
                    ln = (np.int64(data[off + 3]) << 8) | np.int64(data[off + 4])
                    if t0 < 20 or t0 > 24 or v0 != 3 or v1 > 4 or ln == 0 or ln > 18432:
                        expect = rel + L
                        continue
                synced = True
                next_rec = rel
                cur_open = False
                cur_flags = RESYNC if seen else 0
            seen = True
            seg_end = rel + L
            cap_end = rel + C
            while synced:
                if not cur_open:
                    if next_rec >= seg_end:
                        break
                    cur_open = True
                    cur_start = next_rec
                    cur_end = -1
                    cur_row0 = r_i
                    hb_n = 0
                    if (cur_flags & RESYNC) == 0:
                        cur_flags = 0
                # header and first body bytes
                lost = False
                while hb_n < 7:
                    pos = cur_start + hb_n
                    if pos >= seg_end or (cur_end >= 0 and pos >= cur_end):
                        break
                    if pos < rel:
                        hb_n += 1  # seen in an earlier segment (kept in hb)
                        continue
                    if pos >= cap_end:
                        if hb_n < 5:
                            lost = True
                            break
                        cur_flags |= CUT
                        hb[hb_n] = -1
                    else:
                        hb[hb_n] = data[off + pos - rel]
                    hb_n += 1
                    if hb_n == 5:
                        ln = (hb[3] << 8) | hb[4]
                        if hb[0] < 20 or hb[0] > 24 or hb[1] != 3 or hb[2] > 4 or ln > 18432:
                            lost = True
                            break
                        cur_end = cur_start + 5 + ln
                if lost:
                    synced = False
                    cur_open = False
                    break
                if cur_end < 0:
                    break  # header continues in the next segment
                if cap_end < min(cur_end, seg_end):
                    cur_flags |= CUT  # part of the body in this segment was not captured
                if cur_end > seg_end:
                    break  # the body continues in the next segment
                if k < cap_out:
                    out[k, 0] = r_i
                    out[k, 1] = cur_row0
                    out[k, 2] = g
                    out[k, 3] = cur_start
                    out[k, 4] = hb[0]
                    out[k, 5] = (hb[1] << 8) | hb[2]
                    out[k, 6] = cur_end - cur_start - 5
                    out[k, 7] = hb[5] if hb_n > 5 and hb[0] == 22 else -1
                    out[k, 8] = (
                        (hb[5] << 8) | hb[6]
                        if hb_n > 6
                        and hb[0] == 21
                        and cur_end - cur_start == 7
                        and hb[5] >= 0
                        and hb[6] >= 0
                        else -1
                    )
                    out[k, 9] = cur_flags | COMPLETE
                k += 1
                cur_open = False
                cur_flags = 0
                next_rec = cur_end
            expect = seg_end
    return k


@dataclass
class Hello:
    """What a ClientHello or ServerHello says in clear (names are attacker bytes)."""

    sni: bytes | None = None
    alpn: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # supported_versions, offered or chosen
    legacy_version: int = 0
    # resumption: the legacy session id (a TLS 1.2 server echoes the client's to resume;
    # TLS 1.3 echoes it always, for middlebox compatibility), a session_ticket (35) with
    # data, a pre_shared_key (41) offered by the client or selected by the server
    session_id: bytes = b""
    ticket: bool = False
    psk: bool = False
    following: list[int] = field(default_factory=list)  # later handshake types in the record


@dataclass
class Records:
    """One row per TLS record; `row`/`start_row` index the packet table."""

    row: npt.NDArray[np.int64]
    start_row: npt.NDArray[np.int64]
    group: npt.NDArray[np.int64]  # index into `group_stream`/`group_dir`
    rel: npt.NDArray[np.int64]  # offset of the header in its direction's byte stream
    ctype: npt.NDArray[np.int64]
    version: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    # first handshake message type, -1 if none or not visible (cut, or encrypted: a record
    # after its sender's ChangeCipherSpec, see `_hide_encrypted_types`)
    hs: npt.NDArray[np.int64]
    alert: npt.NDArray[np.int64]  # level << 8 | description of a clear alert, else -1
    flags: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]  # table rows by group (stream * 2 + direction)
    bounds: npt.NDArray[np.int64]  # group g's rows are order[bounds[g]:bounds[g + 1]]

    def __len__(self) -> int:
        return int(self.row.shape[0])


def _looks_like_record(table: PacketTable, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Rows whose captured payload starts like a TLS record header, or is whole and shorter
    than one and starts like one (a sender's partial write: `walk_records` checks the
    header once the next segments complete it); vectorised."""
    cap = table["payload_cap"][rows].astype(np.int64)
    plen = table["payload_len"][rows].astype(np.int64)
    ok = cap >= 5
    short = (cap == plen) & (plen >= 1) & (plen < 5)
    if not table.data.size or not (ok | short).any():
        return np.zeros(len(rows), bool)
    off = table["payload_off"][rows].astype(np.int64)
    idx = np.minimum(off[:, None] + np.arange(5)[None, :], table.data.size - 1)
    b = table.data[idx].astype(np.int64)
    ln = b[:, 3] * 256 + b[:, 4]
    # bytes past a short payload's end are not its own: each check holds there
    have = np.where(ok, 5, np.where(short, plen, 0))[:, None] > np.arange(5)[None, :]
    head = (
        (b[:, 0] >= 20)
        & (b[:, 0] <= 24)
        & (~have[:, 1] | (b[:, 1] == 3))
        & (~have[:, 2] | (b[:, 2] <= 4))
    )
    return (ok & head & (ln > 0)) | (short & head)


def find_records(
    table: PacketTable, stream: npt.NDArray[Any], direction: npt.NDArray[Any]
) -> Records:
    """Every TLS record of the streams whose first payload (either direction) starts with a
    TLS handshake record header; `direction` is 0/1 per row (either orientation). A handshake
    record's type is kept where it is in clear (see `_hide_encrypted_types`)."""
    n = len(table)
    key = stream.astype(np.int64) * 2 + direction.astype(np.int64)
    order = np.argsort(key, kind="stable").astype(np.int64)
    ngroups = int(key.max()) + 1 if n else 0
    sk = key[order]
    bounds = np.searchsorted(sk, np.arange(ngroups + 1)).astype(np.int64)
    # a stream is TLS when its first payload is a handshake record (ClientHello or, in a
    # capture that missed it, a ServerHello)
    flags = table["flags"].astype(np.int64)  # as `walk_records` takes them
    data_rows = np.flatnonzero(table.data_mask())
    nstreams = ngroups // 2 + 1
    first = np.full(nstreams, -1, np.int64)
    if len(data_rows):
        st = stream[data_rows].astype(np.int64)
        _, idx = np.unique(st, return_index=True)
        first[st[idx]] = data_rows[idx]
    tls_stream = np.zeros(nstreams, bool)
    has = first >= 0
    if has.any():
        f = first[has]
        looks = _looks_like_record(table, f)
        off = table["payload_off"][f].astype(np.int64)
        # no payload byte kept at all (every segment cut by the snaplen): nothing to read
        first_byte = (
            table.data[np.minimum(off, table.data.size - 1)]
            if table.data.size
            else np.zeros(len(off), np.uint8)
        )
        is_hs = looks & (first_byte == HANDSHAKE)
        tls_stream[np.flatnonzero(has)[is_hs]] = True
    enabled = tls_stream[np.arange(ngroups) // 2] & (bounds[1:] > bounds[:-1])
    cols = [
        np.ascontiguousarray(table[c]).astype(np.int64)
        for c in ("seq", "payload_len", "payload_cap", "payload_off")
    ]
    data = table.data if table.data.size else np.zeros(1, np.uint8)
    room = max(16, int(enabled.sum()) * 8)
    while True:
        out = np.zeros((room, len(_REC_COLS)), np.int64)
        got = int(
            walk_records(
                order,
                bounds,
                enabled.astype(np.bool_),
                *cols,
                flags,
                np.ascontiguousarray(data),
                out,
            )
        )
        if got <= room:
            break
        room = got
    out = out[:got]
    c = [np.ascontiguousarray(out[:, j]) for j in range(len(_REC_COLS))]
    recs = Records(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], order, bounds)
    _hide_encrypted_types(table, recs)
    return recs


def _before_ccs(recs: Records) -> npt.NDArray[np.bool_]:
    """Records sent before their sender's first ChangeCipherSpec (records are grouped by
    stream and direction, in stream order within a group)."""
    idx = np.arange(len(recs), dtype=np.int64)
    ngroups = int(recs.group.max()) + 1 if len(recs) else 0
    first = np.full(ngroups, len(recs), np.int64)
    ccs = np.flatnonzero(recs.ctype == CHANGE_CIPHER_SPEC)
    np.minimum.at(first, recs.group[ccs], ccs)
    out: npt.NDArray[np.bool_] = idx < first[recs.group] if len(recs) else np.zeros(0, bool)
    return out


def _hide_encrypted_types(table: PacketTable, recs: Records) -> None:
    """`hs` to -1 on handshake records whose first byte is ciphertext, not a message type.

    After its ChangeCipherSpec a TLS 1.2 (or earlier) sender encrypts its handshake records
    (the Finished, a renegotiation's hellos): their first byte is a handshake type by chance,
    one time in 256 for each type (a Finished read as a hello had a made-up session id). TLS 1.3
    encrypts its handshake in application-data records; its ChangeCipherSpec is a dummy
    (RFC 8446 D.4), which a HelloRetryRequest puts before the client's second ClientHello and
    the server's real ServerHello, both in clear. So after the sender's ChangeCipherSpec a
    handshake record keeps its type only when it holds one whole ClientHello or ServerHello
    (its message length is the record's length less the message header): ciphertext passes
    that one time in 2^31.
    """
    after = (recs.ctype == HANDSHAKE) & (recs.hs >= 0) & ~_before_ccs(recs)
    for i in np.flatnonzero(after & ((recs.hs == 1) | (recs.hs == 2))).tolist():
        head = record_bytes(table, recs, i, limit=9) or b""
        if len(head) == 9 and int.from_bytes(head[6:9], "big") + 4 == int(recs.length[i]):
            after[i] = False
    recs.hs[after] = -1


def record_bytes(table: PacketTable, recs: Records, i: int, limit: int = 1 << 16) -> bytes | None:
    """The bytes of record i (header included) from its segments, None if any of them was
    not captured. Used for the few records read in full (hellos)."""
    g = int(recs.group[i])
    rows = recs.order[recs.bounds[g] : recs.bounds[g + 1]].tolist()
    data_rows = [
        r for r in rows if table["payload_len"][r] > 0 and not int(table["flags"][r]) & RST
    ]
    if not data_rows:
        return None
    f0 = data_rows[0]
    base = seq_add(int(table["seq"][f0]), 1 if int(table["flags"][f0]) & SYN else 0)
    start = int(recs.rel[i])
    end = start + 5 + int(recs.length[i])
    end = min(end, start + limit)
    buf = bytearray(end - start)
    got = np.zeros(end - start, bool)
    for r in data_rows:
        L = int(table["payload_len"][r])
        if not L:
            continue
        syn = 1 if int(table["flags"][r]) & SYN else 0
        rel = seq_diff(int(table["seq"][r]) + syn, base)  # negative: before the first segment
        if rel < 0 or rel >= end or rel + L <= start:
            continue
        c = min(int(table["payload_cap"][r]), L)
        lo, hi = max(start, rel), min(end, rel + c)
        if hi <= lo:
            continue
        buf[lo - start : hi - start] = table.payload(r, hi - rel)[lo - rel :]
        got[lo - start : hi - start] = True
        if r == int(recs.row[i]):
            break
    return bytes(buf) if got.all() else None


def parse_hello(rec: bytes) -> Hello | None:
    """A ClientHello or ServerHello record's SNI, ALPN and versions (None if malformed).

    Written by hand: the hello's fixed layout (RFC 8446 §4.1.2-3) is a few length-prefixed
    vectors, and no TLS library parses a hello it did not itself receive in a handshake.
    """
    if len(rec) < 9 or rec[0] != HANDSHAKE or rec[5] not in (1, 2):
        return None
    client = rec[5] == 1
    body = rec[9 : 9 + int.from_bytes(rec[6:9], "big")]
    h = Hello(legacy_version=int.from_bytes(body[:2], "big") if len(body) >= 2 else 0)
    p = 2 + 32  # version, random
    try:
        sid = body[p]
        h.session_id = bytes(body[p + 1 : p + 1 + sid])
        p += 1 + sid
        if client:
            n = int.from_bytes(body[p : p + 2], "big")
            p += 2 + n
            n = body[p]
            p += 1 + n
        else:
            p += 2 + 1  # cipher suite, compression
        if p + 2 > len(body):
            return h  # no extensions
        ext_end = min(len(body), p + 2 + int.from_bytes(body[p : p + 2], "big"))
        p += 2
        while p + 4 <= ext_end:
            et = int.from_bytes(body[p : p + 2], "big")
            el = int.from_bytes(body[p + 2 : p + 4], "big")
            ev = body[p + 4 : p + 4 + el]
            p += 4 + el
            if et == 0 and client and len(ev) >= 5:  # server_name: list of (type, name)
                q = 2
                while q + 3 <= len(ev):
                    nt, nl = ev[q], int.from_bytes(ev[q + 1 : q + 3], "big")
                    if nt == 0 and h.sni is None:
                        h.sni = bytes(ev[q + 3 : q + 3 + nl])
                    q += 3 + nl
            elif et == 16 and len(ev) >= 2:  # ALPN: list of length-prefixed names
                q = 2
                while q < len(ev):
                    nl = ev[q]
                    h.alpn.append(bytes(ev[q + 1 : q + 1 + nl]))
                    q += 1 + nl
            elif et == 35 and client:  # session_ticket: empty asks for one, data resumes
                h.ticket = el > 0
            elif et == 41:  # pre_shared_key: offered identities, or the server's choice
                h.psk = True
            elif et == 43:  # supported_versions
                if client and len(ev) >= 1:
                    h.versions = [
                        int.from_bytes(ev[q : q + 2], "big") for q in range(1, 1 + ev[0] - 1, 2)
                    ]
                elif len(ev) == 2:
                    h.versions = [int.from_bytes(ev, "big")]
    except IndexError:
        return h
    # the messages the hello's record carries after it (a TLS 1.2 full handshake sends its
    # Certificate there, often; an abbreviated one has none)
    q = 9 + int.from_bytes(rec[6:9], "big")
    while q + 4 <= len(rec):
        h.following.append(rec[q])
        q += 4 + int.from_bytes(rec[q + 1 : q + 4], "big")
    return h


def version_name(v: int) -> str:
    return VERSION_NAMES.get(v, f"0x{v:04x}")
