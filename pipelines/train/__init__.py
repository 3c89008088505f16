"""Training job for the emotion models.

Building blocks, plain pandas and PyTorch (no Ray, no MLflow), so they are tested on their own
and reused by the Ray Train job:

* :mod:`pipelines.train.datasets` — corpus adapters (FER2013, FER+, RAVDESS, CREMA-D,
  AffectNet-style trees, generic manifests) into one DataFrame schema, subject-disjoint
  splits, class weights, rare-class re-sampling, decoding and augmentation.
* :mod:`pipelines.train.losses` — weighted, multi-label, soft-label and CCC losses.
* :mod:`pipelines.train.metrics` — classification report, CCC, confusion matrix and its plot,
  and a flat metric dict for experiment tracking.
"""
