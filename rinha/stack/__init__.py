"""The local stack: the same programs as the Docker deployment, as plain processes."""
