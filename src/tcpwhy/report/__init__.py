"""tcpwhy.report"""
