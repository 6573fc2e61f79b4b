"""tcpwhy.diagnose"""
