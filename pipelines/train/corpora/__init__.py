"""Corpus adapters: each corpus in its exact published layout → the sample table.

One module per format (the ``format`` of a training data source): :mod:`.fer2013`,
:mod:`.ferplus`, :mod:`.ravdess`, :mod:`.cremad`, :mod:`.folders` (AffectNet-style trees),
:mod:`.manifest` (generic tables of URIs), and :mod:`.parquet` (samples already prepared).

Every adapter reads from a local path or any fsspec URL (``s3://…`` with ``storage_options``
keyed by protocol, as made by ``infra.storage``) and returns a pandas DataFrame with the
columns of :data:`pipelines.train.table.COLUMNS`, one row per labelled sample, then its own
columns (documented on each).  Rows come in a deterministic order (file order, or sorted URIs
for folder listings).  Malformed corpora raise ``ValueError`` naming the file and the
offending value; a missing root raises ``FileNotFoundError``.  Nothing here decodes media up
front: :mod:`pipelines.train.media` and :func:`.fer2013.fer_pixels_to_image` decode one
sample when the loader needs it.

Label mapping onto the 7 FER2013 classes: RAVDESS by
:data:`models.voice_emotion.model.RAVDESS_EMOTIONS` (calm → neutral); CREMA-D's ANG, DIS,
FEA, HAP, NEU, SAD → angry, disgust, fear, happy, neutral, sad; class names (folders,
manifests) as :mod:`pipelines.train.table` describes, contempt included.
"""
