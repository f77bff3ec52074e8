"""Data Store simulator: the Hugging Face Hub protocol under ``/v1/hf`` with files on disk (SIMULATED)."""
