"""Live host inspection: socket states per process, accept queues, kernel counters, TCP sysctls.

Read-only by design: nothing here ever writes a setting of the host.
"""
