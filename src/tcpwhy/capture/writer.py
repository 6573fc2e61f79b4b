"""Classic pcap writer (nanosecond magic): what the lab records into."""

from __future__ import annotations

import struct
from types import TracebackType
from typing import BinaryIO

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

_HDR = struct.Struct("<IHHiIII")
_REC = struct.Struct("<IIII")


class PcapWriter:
    """Writes one record per `write()`, flushing so a reader can follow the file live."""

    def __init__(
        self,
        fileobj: BinaryIO,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
        nanosecond: bool = True,
    ) -> None:
        self._f = fileobj
        self._ns = nanosecond
        self.snaplen = snaplen
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._f.write(_HDR.pack(magic, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    @classmethod
    def open(cls, path: str, linktype: int = LINKTYPE_ETHERNET, **kw: object) -> PcapWriter:
        return cls(open(path, "wb"), linktype, **kw)  # type: ignore[arg-type]

    def write(self, ts_ns: int, frame: bytes, orig_len: int | None = None) -> None:
        cap = frame[: self.snaplen]
        sec, frac = divmod(int(ts_ns), 1_000_000_000)
        if not self._ns:
            frac //= 1000
        self._f.write(_REC.pack(sec, frac, len(cap), len(frame) if orig_len is None else orig_len))
        self._f.write(cap)
        self.count += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
