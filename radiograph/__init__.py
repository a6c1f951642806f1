"""Radiograph classification shared by training, export and serving.

`radiograph.registry` describes the four tasks as data; `radiograph.imaging`
is the one image path (decode, scale to 0-255, letterbox) used by the
training pipeline, export validation, the app and the batch command.
"""
