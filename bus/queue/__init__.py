"""Queues: the embedded crash-safe SQLite/PostgreSQL lease queue and RabbitMQ through kombu.

:func:`open_queue` picks the implementation from a URL; both honour :class:`bus.queue.base.Queue`.
"""
