"""The API node: validates payments, buffers them, and answers at once; batches go to the worker."""
