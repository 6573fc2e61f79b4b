"""tcpwhy.decode"""
