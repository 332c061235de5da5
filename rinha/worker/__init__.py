"""The worker node: the queue, the calls to the processors, routing, and the ledger."""
