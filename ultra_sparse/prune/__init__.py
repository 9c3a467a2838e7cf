"""Pruning methods: ``unstructured`` (element masks); each method is one sibling module over the shared rules."""
