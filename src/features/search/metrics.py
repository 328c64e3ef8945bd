"""Retrieval metrics."""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError


def average_precision(relevant_ranked, n_relevant) -> float:
    """AP of one ranked list: ``relevant_ranked[i]`` says whether the i-th result is relevant.

    Relevant items missing from the list count as retrieved at infinite rank (precision 0).
    """
    rel = np.asarray(relevant_ranked, bool)
    if n_relevant <= 0:
        raise ParameterError(f"n_relevant must be > 0, got {n_relevant!r}")
    if rel.sum() > n_relevant:
        raise ParameterError(f"{int(rel.sum())} relevant results but n_relevant={n_relevant}")
    hits = np.cumsum(rel)
    precision_at_hits = hits[rel] / (np.flatnonzero(rel) + 1)
    return float(precision_at_hits.sum() / n_relevant)


def retrieval_map(searcher, groups=None, **search_options) -> tuple[float, list[float]]:
    """Mean AP with every ok image of a store as a query against all the others.

    ``groups`` gives each image's group (images of one group are relevant to each other);
    by default the store's labels. ``search_options`` go to ``searcher.search`` (``rerank``,
    ``expand``).
    """
    store = searcher.store
    status = store.column("status")
    groups = store.column("label") if groups is None else np.asarray(groups)
    ok = np.flatnonzero(status == 0)
    aps = []
    for i in ok:
        n_rel = int(np.sum(groups[ok] == groups[i])) - 1
        if n_rel <= 0:
            continue
        q = searcher.query_from_key(str(store.keys[i]))
        hits = searcher.search(q, k=len(ok) - 1, **search_options)
        aps.append(average_precision([groups[h["index"]] == groups[i] for h in hits], n_rel))
    return (float(np.mean(aps)) if aps else 0.0), aps
