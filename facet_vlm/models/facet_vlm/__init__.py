"""FACET-VLM: configuration, model, processor, tokenizer and the open_clip converter (import the modules)."""
