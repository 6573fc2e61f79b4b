"""tcpwhy.filter"""
