"""Framework-free building blocks shared by every layer. Imports nothing else from telemed."""
