"""Write a copy of a capture with one TCP segment cut into several (same bytes, same
timestamps plus a microsecond per piece): TLS records then span segments the way a
smaller MSS or a sender's partial writes cut them, header included.

    python tests/data/tls/resegment.py IN.pcap OUT.pcap FRAME CUT[,CUT...]

clean-tls-resegmented.pcap: clean-tls.pcap with frame 6 (the server's ServerHello,
ChangeCipherSpec and first encrypted records, 797 bytes) cut at 129 (two bytes into the
ChangeCipherSpec record's header) and 300 (inside the next record).
"""

import itertools
import sys

import dpkt

src, dst, frame_no = sys.argv[1], sys.argv[2], int(sys.argv[3])
cuts = [int(x) for x in sys.argv[4].split(",")]
with open(src, "rb") as fin, open(dst, "wb") as fout:
    reader = dpkt.pcap.Reader(fin)
    writer = dpkt.pcap.Writer(fout, linktype=reader.datalink())
    for n, (ts, buf) in enumerate(reader, 1):
        if n != frame_no:
            writer.writepkt(buf, float(ts))
            continue
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
