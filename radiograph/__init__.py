"""Radiograph classification shared by training, export and serving.

`registry` describes the four tasks as data; `imaging` is the one image path
(decode, scale to 0-255, letterbox) used by the training pipeline, export
validation and serving; `inference` runs exported ONNX models with verified
files (no TensorFlow); `cam` computes class activation maps from the ONNX
features and draws overlays; `gradcam` is Grad-CAM(++) on the Keras graph;
`explain` picks between the two; `predict` is the batch command
(`python -m radiograph predict`).
"""
