"""Building blocks of model training: plain pandas, numpy and PyTorch (no Ray, no MLflow), so
each is tested on its own.  The training job that runs them on Ray Train is
:mod:`pipelines.train_model` (``emoray train``, ``prepare``, ``evaluate``, ``paired``); these
modules never import it.

* :mod:`.table` — the sample table every corpus adapter returns (columns, split names,
  class-name aliases).
* :mod:`.corpora` — one adapter per corpus format: FER2013, FER+, RAVDESS, CREMA-D,
  AffectNet-style folders, manifests, prepared Parquet.
* :mod:`.splits` — subject-disjoint splits.
* :mod:`.balance` — class weights and rare-class re-sampling.
* :mod:`.media` — decoding one sample's audio or image.
* :mod:`.utterances` — speech trimming, loudest windows, training crops, evaluation windows.
* :mod:`.augment` — face, waveform and spectrogram augmentation.
* :mod:`.losses` — weighted, multi-label, soft-label and CCC losses.
* :mod:`.metrics` — classification report, CCC, confusion matrix and its plot, and a flat
  metric dict for experiment tracking.
* :mod:`.paired` — the paired face–voice corpus of the fusion model and the untrained rules
  measured on it.
"""
