"""Swarmbench's servers: the tutorial's protocol and the designs that speak it.

Standard library only (uvloop optional). Nothing here imports Locust, gevent
or the harness: a server must be measurable as a process of its own.
"""
