"""``tradeloop models``: the model registry's command. The registry itself: ``engine.model_registry`` (reads) and ``adapters.model_registry_store`` (writes)."""
