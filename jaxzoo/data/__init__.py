"""Generic data loading (step-indexed loader, TFDS helpers) and the embedded datasets several
families share (digits, the Python-source corpus)."""
