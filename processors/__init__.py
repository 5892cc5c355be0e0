"""Stream processors: pure decision logic over one event and injected ports.

No module here imports a Kafka client: the runtime (``pipeline.runtime``) decodes input,
calls ``handle`` and publishes what it returns, transactionally.
"""
