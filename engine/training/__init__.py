"""Persona training: data, families, the training loop, evaluation."""
