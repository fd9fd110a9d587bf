"""Datasets: TFDS builders (array_record, no TensorFlow) and step-indexed loaders."""
