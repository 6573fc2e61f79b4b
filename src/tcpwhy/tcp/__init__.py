"""tcpwhy.tcp"""
