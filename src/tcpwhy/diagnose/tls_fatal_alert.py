"""tls-fatal-alert: a TLS handshake (or connection) ended by a fatal alert.

In TLS 1.2 and earlier the handshake runs in clear until ChangeCipherSpec, so
an alert sent during it shows its level and description (RFC 5246 §7.2): the
client that does not trust the server's certificate sends unknown_ca or
bad_certificate, the server that shares no version or cipher with the client
sends protocol_version or handshake_failure. TLS 1.3 encrypts everything after
the ServerHello: a server's refusal of the ClientHello itself is still in clear,
but a client that rejects the certificate answers the server's encrypted flight
with one short encrypted record and its FIN instead of its Finished -- almost
certainly an alert, its description unknown (said "likely").

One finding per server, sender and alert: the connection did not work, the
application saw a TLS error, and the alert's name says which side refused what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tcpwhy.decode import tls as rec
from tcpwhy.diagnose import tls
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn
from tcpwhy.diagnose.knowledge import Fix, advice
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule

ORDER = 50

KIND = "tls-fatal-alert"
ERRORS = [
    "Python: ssl.SSLError: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (the side "
    "that received the alert), ssl.SSLCertVerificationError: certificate verify failed "
    "(the side that sent unknown_ca / bad_certificate)",
    "OpenSSL / curl: error:0A000418:SSL routines::tlsv1 alert unknown ca, "
    "sslv3 alert handshake failure, tlsv1 alert protocol version, unsupported protocol "
    "(curl: (35) … alert …; (60) SSL certificate problem: …)",
    "Go: remote error: tls: unknown certificate authority / handshake failure / protocol "
    "version not supported; x509: certificate signed by unknown authority (the sender)",
    "Java: javax.net.ssl.SSLHandshakeException: Received fatal alert: handshake_failure "
    "(or PKIX path building failed: the sender)",
    "Node.js: Error: … alert unknown ca (ERR_SSL_TLSV1_ALERT_UNKNOWN_CA); "
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE / SELF_SIGNED_CERT_IN_CHAIN (the sender)",
    "nginx: SSL_do_handshake() failed (SSL: error:… alert …) while SSL handshaking",
]
"""What applications log when a handshake ends with a fatal alert (the alert's name is in
the message of the side that received it)."""
ENCRYPTED = -1
"""Description of a TLS 1.3 handshake alert that is encrypted (not readable)."""


@dataclass(frozen=True)
class AlertHelp:
    meaning: str  # what the sender says by it
    causes: tuple[str, ...]
    fixes: tuple[str, ...]


_CERT_FIXES = (
    advice(
        "Serve the whole chain (leaf and intermediates: nginx ssl_certificate with the "
        "fullchain file; Go tls.Certificate with every intermediate), issued by a CA the "
        "clients trust, for the name they ask for (SNI), and not expired.",
        Fix(
            "any",
            None,
            None,
            "Serve a certificate issued by a CA the clients trust, for "
            "the name they ask for (SNI), not expired, with its intermediates.",
        ),
        Fix("nginx", "ssl_certificate", None, "nginx: ssl_certificate with the fullchain file"),
        Fix(
            "go",
            "tls.Config.Certificates",
            None,
            "Go: tls.Certificate with every intermediate in Certificate",
        ),
    ),
    advice(
        "In the client, trust the CA that issued it when it is a private one: Python "
        "ssl.create_default_context(cafile=…) / requests verify=…; Go tls.Config{RootCAs: …}; "
        "Java a truststore with the CA (-Djavax.net.ssl.trustStore); Node.js ca: … or "
        "NODE_EXTRA_CA_CERTS; curl --cacert; nginx as proxy proxy_ssl_trusted_certificate. "
        "Never turn verification off to make it pass.",
        Fix("python", "cafile", None, "Python: ssl.create_default_context(cafile=…)"),
        Fix("python-requests", "verify", None, "requests: verify=… (the CA bundle's path)"),
        Fix("go", "tls.Config.RootCAs", None, "Go: tls.Config{RootCAs: …}"),
        Fix(
            "java",
            "javax.net.ssl.trustStore",
            None,
            "Java: a truststore with the CA (-Djavax.net.ssl.trustStore)",
        ),
        Fix("node", "ca", None, "Node.js: tls/https option ca: … or NODE_EXTRA_CA_CERTS"),
        Fix(
            "nginx",
            "proxy_ssl_trusted_certificate",
            None,
            "nginx as proxy: proxy_ssl_trusted_certificate (with proxy_ssl_verify on)",
        ),
    ),
    "Check what the server really sends: openssl s_client -connect HOST:PORT "
    "-servername NAME -showcerts.",
)
_VERSION_FIXES = (
    advice(
        "Make the two sides share a version and a cipher suite: list what each offers "
        "(nginx ssl_protocols / ssl_ciphers; Go tls.Config{MinVersion, MaxVersion, "
        "CipherSuites}; Python SSLContext.minimum_version / maximum_version / set_ciphers; "
        "Java jdk.tls.client.protocols and jdk.tls.disabledAlgorithms; Node.js minVersion / "
        "maxVersion / ciphers; curl --tlsv1.2 --tls-max / --ciphers).",
        Fix("nginx", "ssl_protocols", None, "nginx: ssl_protocols"),
        Fix("nginx", "ssl_ciphers", None, "nginx: ssl_ciphers"),
        Fix(
            "go",
            "tls.Config.MinVersion",
            None,
            "Go: tls.Config{MinVersion, MaxVersion, CipherSuites}",
        ),
        Fix(
            "python",
            "SSLContext.minimum_version",
            None,
            "Python: SSLContext.minimum_version / maximum_version / set_ciphers",
        ),
        Fix(
            "java",
            "jdk.tls.client.protocols",
            None,
            "Java: jdk.tls.client.protocols and jdk.tls.disabledAlgorithms",
        ),
        Fix("node", "minVersion", None, "Node.js: tls options minVersion / maxVersion / ciphers"),
    ),
    advice(
        "Upgrade the old side rather than re-enabling TLS 1.0/1.1 or weak ciphers on the new one "
        "(the system crypto policy may forbid them: update-crypto-policies, "
        "/etc/ssl/openssl.cnf MinProtocol / CipherString).",
        Fix(
            "any",
            None,
            None,
            "Upgrade the old side rather than re-enabling TLS 1.0/1.1 or "
            "weak ciphers on the new one.",
        ),
        Fix(
            "linux",
            "MinProtocol",
            None,
            "the system crypto policy: update-crypto-policies, or /etc/ssl/openssl.cnf "
            "MinProtocol / CipherString",
        ),
    ),
    "See what is offered and refused: openssl s_client -connect HOST:PORT -tls1_2 "
    "(or -tls1_3), and the ClientHello's versions in this capture "
    "(tcpwhy packets -Y 'tls.handshake.type == 1').",
)
ALERT_HELP: dict[int, AlertHelp] = {
    48: AlertHelp(
        "it does not trust the certificate it was sent: the chain does not lead to a CA in "
        "its trust store (self-signed, a private CA, or intermediates missing)",
        (
            "The certificate is self-signed or issued by a private CA the peer does not trust.",
            "The server sends only its leaf certificate, without the intermediates.",
        ),
        _CERT_FIXES,
    ),
    42: AlertHelp(
        "the certificate it was sent is bad: a signature does not verify, or the "
        "certificate is malformed or not acceptable (often a self-signed one)",
        ("A corrupt or mismatched certificate chain, or a key that does not match.",),
        _CERT_FIXES,
    ),
    43: AlertHelp(
        "the certificate is of a type it does not support (key type or algorithm)",
        ("An unusual key type or signature algorithm (e.g. a DSA or ancient RSA key).",),
        _CERT_FIXES,
    ),
    44: AlertHelp(
        "the certificate was revoked by its issuer",
        ("The certificate has been revoked (CRL or OCSP).",),
        ("Replace the certificate with a new one.",),
    ),
    45: AlertHelp(
        "the certificate has expired or is not yet valid",
        (
            "The certificate expired (renewal missed, or renewed but the server not reloaded).",
            "The verifying host's clock is wrong.",
        ),
        (
            "Renew the certificate and reload the server (nginx -s reload); check the "
            "clocks (timedatectl).",
        ),
    ),
    46: AlertHelp(
        "the certificate could not be accepted for some other reason (name mismatch, wrong "
        "key usage, or the verifier's generic refusal)",
        ("The certificate does not cover the name asked for, or its chain is incomplete.",),
        _CERT_FIXES,
    ),
    116: AlertHelp(
        "it requires a client certificate and none was sent (mutual TLS)",
        ("The server requires mutual TLS and the client has no certificate configured.",),
        (
            advice(
                "Give the client its certificate and key (curl --cert/--key; Go "
                "tls.Config{Certificates: …}; Python SSLContext.load_cert_chain), or make the "
                "server's client-certificate check optional (nginx ssl_verify_client optional).",
                Fix("go", "tls.Config.Certificates", None, "Go: tls.Config{Certificates: …}"),
                Fix(
                    "python",
                    "SSLContext.load_cert_chain",
                    None,
                    "Python: SSLContext.load_cert_chain(certfile, keyfile)",
                ),
                Fix("nginx", "ssl_verify_client", "optional", "nginx: ssl_verify_client optional"),
            ),
        ),
    ),
    70: AlertHelp(
        "the peer offers no protocol version it accepts (e.g. a client offering TLS 1.2 "
        "at most to a server that requires TLS 1.3, or the other way round)",
        (
            "One side's minimum version is above the other's maximum (an old client or "
            "library, or a server hardened to TLS 1.3 only).",
        ),
        _VERSION_FIXES,
    ),
    40: AlertHelp(
        "no acceptable set of parameters: the two sides share no cipher suite, group or "
        "signature algorithm (or another handshake requirement failed)",
        ("The cipher suites, groups or signature algorithms offered do not overlap.",),
        _VERSION_FIXES,
    ),
    71: AlertHelp(
        "the peer's parameters are too weak for its policy",
        ("The peer offers only ciphers below the sender's security level.",),
        _VERSION_FIXES,
    ),
    112: AlertHelp(
        "it does not serve the name asked for in the ClientHello (SNI)",
        ("The client asks for a server name that no server block / virtual host has.",),
        (
            advice(
                "Configure a certificate and server block for that name (nginx server_name with "
                "ssl_certificate), or make the client send the right name.",
                Fix(
                    "nginx",
                    "server_name",
                    None,
                    "nginx: a server block whose server_name is that name, with its ssl_certificate",
                ),
                Fix("any", None, None, "make the client send the right name (SNI)"),
            ),
        ),
    ),
    120: AlertHelp(
        "the peer offers no application protocol (ALPN) it supports",
        ("The client requires e.g. h2 and the server offers only http/1.1, or the reverse.",),
        (
            advice(
                "Offer a common protocol on both sides (nginx http2 on; the client's ALPN list).",
                Fix("nginx", "http2", "on", "nginx: http2 on"),
                Fix("any", None, None, "the client's ALPN list"),
            ),
        ),
    ),
}
_GENERIC = AlertHelp(
    "it refuses the handshake (the alert's name says why)",
    ("A configuration mismatch between the two TLS stacks, or a bug in one of them.",),
    (
        "Reproduce it with openssl s_client -connect HOST:PORT -servername NAME and read the "
        "sender's log: the alert is its verdict, the reason is logged on its side.",
    ),
)
_ENCRYPTED_HELP = AlertHelp(
    "it rejects the handshake -- in TLS 1.3 most often because it does not trust the "
    "server's certificate (unknown_ca, bad_certificate, certificate_expired)",
    (
        "The certificate is not trusted by the client (private CA, self-signed, missing "
        "intermediates, expired, wrong name).",
        "A client certificate was required and not sent, or was refused.",
    ),
    _CERT_FIXES,
)


def alert_help(desc: int) -> AlertHelp:
    if desc == ENCRYPTED:
        return _ENCRYPTED_HELP
    return ALERT_HELP.get(desc, _GENERIC)


def alert_name(desc: int) -> str:
    if desc == ENCRYPTED:
        return "an encrypted alert (likely fatal)"
    return rec.ALERT_NAMES.get(desc, f"alert {desc}")


def _end_after(c: Conn, side: int, row: int) -> tuple[int, str] | None:
    """The FIN or RST that ended the connection after the alert at `row`."""
    for j in range(row + 1, c.n):
        if c.is_rst(j):
            return j, f"{WHO[c.side[j]]} resets the connection"
        if c.is_fin(j):
            return j, f"{WHO[c.side[j]]} closes (FIN)"
    return None


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c, tc in tls.conns_with(diag.cap, _alert_like):
        got = _fatal(c, tc)
        if got is None:
            continue
        r, desc = got
        hello = next((x.row for x in tc.records if x.side == CLIENT and x.hs == 1), None)
        rows: list[tuple[int, str]] = []
        offered = ", ".join(rec.version_name(v) for v in tc.offered)
        if hello is not None:
            rows.append((hello, f"client hello offering {offered or 'TLS'}"))
        name = alert_name(desc)
        rows.append((r.row, f"{WHO[r.side]} sends fatal alert {name}"))
        end = _end_after(c, r.side, r.row)
        if end is not None:
            rows.append(end)
        chosen = any(x.side == SERVER and x.hs == 2 for x in tc.records)
        facts = {
            "version": tc.version_text if chosen else None,  # the ServerHello's choice
            "offered": offered,
            "alert_row": r.row,
        }
        hits.add((c.server, r.side, desc), c, rows, facts)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _alert_like(recs: rec.Records) -> npt.NDArray[np.bool_]:
    """Per record: a fatal alert in clear, or application data short enough to be an
    encrypted one."""
    alerts = (recs.ctype == rec.ALERT) & (recs.alert >= 0) & ((recs.alert >> 8) == 2)
    short = (recs.ctype == rec.APPLICATION_DATA) & (recs.length <= rec.ENCRYPTED_ALERT_MAX)
    return alerts | short


def _fatal(c: Conn, tc: tls.TLSConn) -> tuple[tls.Record, int] | None:
    """The connection's fatal alert: a clear one (its description), or TLS 1.3's client
    answering the server's flight with one short encrypted record and its FIN instead of
    its Finished (ENCRYPTED)."""
    if tc.fatal:
        r = tc.fatal[0]
        return r, r.alert & 0xFF
    cl = tc.closing.get(CLIENT)
    if cl is None or cl.certain or tc.version != 0x0304:
        return None
    first = next(
        (x for x in tc.records if x.side == CLIENT and x.ctype == rec.APPLICATION_DATA), None
    )
    server_hello = any(x.side == SERVER and x.hs == 2 for x in tc.records)
    if first is not cl.record or not server_hello:
        return None  # the client's Finished went first: an ordinary close after the handshake
    return cl.record, ENCRYPTED


def _tell(g: Group) -> Story:
    server, side, desc = g.key
    c, n = g.c, g.n
    who, peer = WHO[side], WHO[1 - side]
    h = alert_help(desc)
    name = alert_name(desc)
    alert_row = g.facts["alert_row"]
    summary = f"{plural(n, 'TLS connection')} to {server} refused by the {who}: fatal alert {name}"
    if desc == ENCRYPTED:
        seen = (
            f"the {who} answered the server's encrypted handshake flight with one short "
            f"encrypted record (frame {c.frame[alert_row]}) and closed, where its Finished "
            "should have come: in TLS 1.3 that is an alert, encrypted, so its description is "
            "not visible"
        )
    else:
        seen = (
            f"the {who} sent the alert {name} (level fatal, frame {c.frame[alert_row]}), "
            f"in clear because the handshake had not yet switched to encryption"
        )
    if g.facts["offered"]:
        seen += f" (the client offered {g.facts['offered']}"
        seen += f"; {g.facts['version']} was chosen)" if g.facts["version"] else "; no ServerHello)"
    explanation = (
        f"On {c.label()} the TLS handshake failed: {seen}. With it the {who} says {h.meaning}. "
        f"No request was sent; the connection ended right after. The {who}'s application got "
        f"the reason from its TLS library; the {peer}'s got only the alert's name."
    )
    errors = list(ERRORS)
    facts = {
        "server": server,
        "side": who,
        "alert": name,
        "version": g.facts["version"],
        "offered": g.facts["offered"],
    }
    return Story(Severity.ERROR, summary, explanation, list(h.causes), list(h.fixes), errors, facts)
