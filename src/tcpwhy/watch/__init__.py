"""`tcpwhy watch`: live and streaming diagnosis, bounded in memory."""
