"""Inference for users, the evaluation and the demo, from one place.

- `jitted`: the jitted inference of a model (detections, masks, landmarks, embeddings; with
  given boxes also their embeddings), shared by everything that runs the model forward.
- `predictor`: `Predictor` (images in, detections in the original pixels out), the image
  preprocessing of the evaluation pipeline, `Predictor.from_workdir` on a training export
  (`models.export.load_export`).
- `index`: a retrieval index of detected shop garments and its exact ranking.
- `visualize`: detections and retrievals drawn as PNGs.
"""
