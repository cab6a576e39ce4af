"""Region edits: masks (from an attached image, words or clicks), segmentation and masked renders.

* :mod:`.masks`: a mask from an image, its checks (user-facing :class:`~.masks.RegionError`), the
  dilated hard mask and the alpha feathered inside it, and the composite that keeps every pixel
  outside the hard mask.
* :mod:`.crop`: the box around a mask that is rendered (with a margin) and its render size.
* :mod:`.segmentation`: a text-grounded detector + SAM(-HQ) through transformers: words -> boxes ->
  mask, clicks -> mask (the image embedding computed once per image and cached).
* :mod:`.tiny_segmentation`: the tiny offline detector and SAM models (``ENGINE_SEG_MODEL=tiny``).
* :mod:`.inpaint`: crop -> the family's masked render (engine.render.families:
  ``RenderFamily.inpaint_pipeline`` made with ``from_pipe``, ``RenderFamily.inpaint``) -> stitch ->
  composite.
* :mod:`.job_region`: region edits as jobs (masks made and stored first, then the identity gate).
* :mod:`.previews`: click masks for the web studio, in the server's own process.

Only :mod:`.masks` and :mod:`.crop` are free of torch: the commands layer may check a mask with them.
"""
