"""The framed TCP link between the API nodes (clients) and the worker node (server)."""
