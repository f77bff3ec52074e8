"""Small tools for the Makefile (not part of the installed package)."""
