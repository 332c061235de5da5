"""The hand-rolled HTTP/1.1 server layer shared by the API node and the processor emulator."""
