"""Classic-vision baseline experiments: linear classifiers streamed from the store, the
ImageNet metrics (flat and WordNet-hierarchical error), hedging (DARTS) and reports."""
