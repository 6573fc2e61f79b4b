"""tcpwhy: tells why TCP connections break, from captures and from a live Linux host."""

__version__ = "0.1.0"
