"""rinha: a payment intermediary.

Clients post payments to two API nodes behind NGINX; the API nodes batch them over a TCP link
to one worker node, which pays them through two external payment processors and keeps the
ledger that answers `/payments-summary`.
"""

__version__ = "0.1.0"
