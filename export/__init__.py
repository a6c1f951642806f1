"""ONNX export stage: `python -m export <task|all>` (see export/__main__.py)."""
