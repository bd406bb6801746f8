"""dnsflow streams: telemetry, anomaly detection, alerts and automatic policy response.

The logic (``streams.logic.StreamLogic``) is plain Python; ``streams.service`` runs it in
process, ``streams.faust_app`` on Kafka with faust, ``streams.replay`` offline. What the demo
prints comes from ``streams.summary`` (``summary(status)`` / ``render(status)``).
"""
