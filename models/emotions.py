"""What the models know about the 7 categories beyond their names (``operators.schema.EMOTIONS``).

* :data:`CIRCUMPLEX`: each category's point on the valence–arousal circumplex.  The timeline
  maps class probabilities to valence/arousal with it, and training uses it as the
  valence/arousal target of corpora that have none (RAVDESS, the paired corpus).
* :data:`MIN_PROB`: the floor of a class probability when the face's and the voice's are
  multiplied (the product rule of the timeline and of the paired-corpus measurements).
"""

from __future__ import annotations

# Valence/arousal of each category (keys: the EMOTIONS names), on [-1, 1], from the pleasure
# and arousal ratings of emotion terms by Russell & Mehrabian (1977), as tabulated for the
# basic emotions in affective computing (e.g. ALMA, Gebhard 2005).  A window's valence/arousal
# is the probability-weighted mean of these points: a documented stand-in until a model
# trained on valence/arousal labels exists (the timeline's VA_SOURCE column says which was
# used).
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
}

# Softmax outputs are never 0, but two confident models that disagree can multiply to 0 in
# float32; with each probability floored here and the product taken in log space they cannot.
MIN_PROB = 1e-12
