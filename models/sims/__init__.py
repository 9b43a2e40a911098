"""SIMS-style semi-parametric synthesis (Qi, Chen, Jia, Koltun, CVPR 2018).

A bank of real segments cut from training photos (``bank``) is searched per query segment
(``retrieval``), each retrieved segment is fitted into the query segment's box and refined by
an affine spatial transformer (``alignment``), the segments are ordered far to near
(``ordering``) and pasted into a canvas (``canvas``) that a network turns into the final image.
``simulate`` makes the training-time canvases from the photos themselves.
"""

# The paper's size threshold: segments of at most 1000 px at 256x512 get no real segment (retrieval,
# training canvases, ordering pairs); here as a fraction of the image area.
PAPER_MIN_AREA_FRAC = 1000 / (256 * 512)
