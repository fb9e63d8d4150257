"""``candlewax serve``: the live market-data gateway (docs/gateway.md).

Cut like ``sinks/notify``: pure parts — stream names (:mod:`.streams`), requests
(:mod:`.protocol`), the market state (:mod:`.market`), message shapes (:mod:`.wire`), logins
(:mod:`.auth`) — and the parts with I/O: the Kafka reader (:mod:`.feed`), the Parquet history
(:mod:`.history`), the fan-out (:mod:`.hub`), the core (:mod:`.service`) and the ASGI app
(:mod:`.app`).
"""
