"""CoupleFER: configuration, model and processor (import the modules, or the names from `couple`)."""
