"""Radiograph classification shared by training, export and serving.

Along the path of a request: `registry` describes the tasks as data; `cards`
is the typed model card; `imaging` is the one image path (decode, scale to
0-255, letterbox) used by training, export validation and serving;
`geometry` places letterboxes and feature-map cells; `inference` runs
exported ONNX models with verified files (no TensorFlow); `decision` turns
probabilities into a decision by the card's rule; `cam` computes class
activation maps from the ONNX features and draws overlays; `gradcam` is
Grad-CAM(++) on the Keras graph and `layers` its custom layers; `explain`
picks between the two; `localisation` scores maps against true boxes;
`service` is one analysis of one file or study; `predict` is the batch
command (`python -m radiograph predict`).
"""
