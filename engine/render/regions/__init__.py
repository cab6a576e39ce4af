"""Region edits: masks (from an attached image, words or clicks), segmentation and masked renders.

* :mod:`.masks`: a mask from an image, its checks (user-facing :class:`~.masks.RegionError`), the
  dilated hard mask and the alpha feathered inside it, and the composite that keeps every pixel
  outside the hard mask.
* :mod:`.crop`: the box around a mask that is rendered (with a margin) and its render size.
* :mod:`.segmentation`: a text-grounded detector + SAM(-HQ) through transformers: words -> boxes ->
  mask, clicks -> mask (the image embedding computed once per image and cached).
* :mod:`.tiny_segmentation`: the tiny offline detector and SAM models (``ENGINE_SEG_MODEL=tiny``).
* :mod:`.inpaint`: the family's inpaint pipeline (``from_pipe``: the loaded components shared),
  crop -> render -> stitch -> composite.

Only :mod:`.masks` and :mod:`.crop` are free of torch: the commands layer may check a mask with them.
"""
