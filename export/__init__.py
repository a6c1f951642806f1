"""ONNX export stage: `python -m export <task|all>` (the command line, export/__main__.py) over the library
export/onnx_export.py."""
