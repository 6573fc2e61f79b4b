"""Write a copy of a capture with one TCP segment cut into several (same bytes, same
timestamps plus a microsecond per piece): TLS records then span segments the way a
smaller MSS or a sender's partial writes cut them, header included.

    python tests/data/tls/resegment.py IN.pcap OUT.pcap FRAME CUT[,CUT...] [FRAME CUT[,CUT...]]...

clean-tls-resegmented.pcap: clean-tls.pcap with frame 6 (the server's ServerHello,
ChangeCipherSpec and first encrypted records, 797 bytes) cut at 129 (two bytes into the
ChangeCipherSpec record's header) and 300 (inside the next record).

clean-tls-first-header-cut.pcap: clean-tls.pcap with the first segment of each direction
of both connections cut inside the first record's header, so that it carries less than a
header: the ClientHello (517 bytes) of frame 4 at 3 and 100 (the header completed, the
record not), of frame 18 at 1, 2 and 4 (the header over four segments); the server's
first flight of frame 6 at 2, of frame 20 at 4.

    python tests/data/tls/resegment.py src/tcpwhy/data/lab/clean-tls.pcap \
        tests/data/tls/clean-tls-first-header-cut.pcap 4 3,100 6 2 18 1,2,4 20 4
"""

import itertools
import sys

import dpkt

src, dst = sys.argv[1], sys.argv[2]
# frame number -> the offsets in its TCP payload where it is cut
plan = {
    int(f): [int(x) for x in c.split(",")]
    for f, c in zip(sys.argv[3::2], sys.argv[4::2], strict=True)
}
with open(src, "rb") as fin, open(dst, "wb") as fout:
    reader = dpkt.pcap.Reader(fin)
    writer = dpkt.pcap.Writer(fout, linktype=reader.datalink())
    for n, (ts, buf) in enumerate(reader, 1):
        if n not in plan:
            writer.writepkt(buf, float(ts))
            continue
        cuts = plan[n]
        eth = dpkt.ethernet.Ethernet(buf)
        ip, tcp = eth.data, eth.data.data
        data = bytes(tcp.data)
        bounds = [0, *cuts, len(data)]
        for k, (a, b) in enumerate(itertools.pairwise(bounds)):
            piece = dpkt.tcp.TCP(bytes(tcp))
            piece.seq = (tcp.seq + a) & 0xFFFFFFFF
            piece.data = data[a:b]
            piece.sum = 0  # recomputed on packing
            ip2 = ip.__class__(bytes(ip))
            ip2.data = piece
            ip2.len = ip2.__hdr_len__ + len(ip2.opts) + len(bytes(piece))
            ip2.sum = 0
            e2 = dpkt.ethernet.Ethernet(bytes(eth))
            e2.data = ip2
            writer.writepkt(bytes(e2), float(ts) + k * 1e-6)
