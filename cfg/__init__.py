"""Rule presets (`sparsity/`) and model YAMLs (`models/`) shipped with ultra_sparse."""
