"""flue-models' built-in migrations (shipped as ``flue_models._migrations``)."""
