"""The model folders of the `facet_vlm` package (one per model, laid out like transformers' ``models/<name>/``)."""
