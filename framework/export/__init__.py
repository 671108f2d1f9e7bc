"""Export a model as one graph (ONNX, torch.export) that takes an image and gives detections.

``exporter.export_model`` is what tools/export_model.py runs; ``module.ExportablePredictor`` the
wrapped model; ``resize`` / ``paste`` the test-time resize and the mask pasting as graph
operations; ``torch_export`` / ``onnx`` the two writers; ``metadata`` the file beside the model;
``diagnose`` the messages for models that do not export. docs/deployment.md has the whole story.
Nothing under framework/ outside this package imports it.
"""
