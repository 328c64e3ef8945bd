"""Re-ranking a shortlist by spatial verification, and average query expansion.

A candidate is verified when at least :data:`MIN_INLIERS` features agree one to one with a
similarity transform (:mod:`.spatial`). Verified candidates come first, most inliers first;
the others keep their order.
"""
from __future__ import annotations

# Re-ranking: a candidate is verified when at least this many features agree one to one
# with a similarity transform. Unrelated pairs of the copy-detection set (11,000 of them,
# 1000 words) reach at most 5 by chance; copies have a median of 56.
MIN_INLIERS = 8
# Results verified by default. The copy-detection set's copies that fall past the best 100
# among 100,000 distractors are those too poor in features to verify anyway (300 verified
# gave the same mAP); a longer shortlist is an option of every search
SHORTLIST = 100


def order_by_inliers(hits, inliers):
    """``hits`` ((score, image) pairs) with the verified ones first, most inliers first
    (then by score); ``inliers`` maps every image of ``hits`` to its inlier count."""
    verified = sorted((h for h in hits if inliers[h[1]] >= MIN_INLIERS),
                      key=lambda h: (-inliers[h[1]], -h[0]))
    return verified + [h for h in hits if inliers[h[1]] < MIN_INLIERS]


def expansion_images(hits, inliers, n) -> list:
    """The images of the ``n`` best verified hits: what average query expansion adds."""
    return [i for _, i in hits if inliers[i] >= MIN_INLIERS][:n]
