"""NIM simulator: an OpenAI-compatible server with a documented quality model and latency model (SIMULATED)."""
