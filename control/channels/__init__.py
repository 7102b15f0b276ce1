"""Channel adapters: one module per chat platform (verify → Envelope; send/edit replies)."""
