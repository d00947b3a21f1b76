"""The WebSocket layer: RPC over WebSocket and the hub."""
