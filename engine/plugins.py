"""Plugin resolution: entry points first (``tradeloop.strategies``, ``tradeloop.models``),
a ``module:Class`` path as the escape hatch. Everything is validated at start-up."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

import msgspec

from engine.config import ModelConfig, StrategyConfig
from engine.errors import ModelError, PluginLoadError
from engine.signals import LinearModel, LinearParams, SignalModel
from engine.signals.manifest import read_manifest
from engine.strategy import Strategy

STRATEGY_GROUP = "tradeloop.strategies"
MODEL_GROUP = "tradeloop.models"


def _resolve(name: str, group: str) -> Any:
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginLoadError(name, f"cannot import module {module_name!r}: {exc}") from exc
        try:
            return getattr(module, attr)
        except AttributeError:
            raise PluginLoadError(name, f"module {module_name!r} has no {attr!r}") from None
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=group))
        raise PluginLoadError(name, f"no entry point {name!r} in group {group!r} "
                                    f"(installed: {', '.join(known) or 'none'}); "
                                    "or give a 'module:Class' path")  # fmt: skip
    try:
        return found[0].load()
    except Exception as exc:
        raise PluginLoadError(name, f"entry point failed to load: {exc!r}") from exc


def load_strategy(config: StrategyConfig) -> Strategy:
    """Resolve, validate and instantiate the configured strategy.

    Raises:
        PluginLoadError: not found, not a ``Strategy`` subclass, or bad params.
    """
    cls = _resolve(config.name, STRATEGY_GROUP)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise PluginLoadError(config.name, f"{cls!r} is not a subclass of engine.strategy.Strategy")
    try:
        params = msgspec.convert(config.params, cls.Params)
    except msgspec.ValidationError as exc:
        raise PluginLoadError(config.name, f"bad params: {exc}") from exc
    try:
        return cls(params)
    except (ValueError, TypeError) as exc:
        raise PluginLoadError(config.name, f"rejected its params: {exc}") from exc


def load_model(config: ModelConfig) -> SignalModel:
    """Resolve and instantiate the configured signal model.

    Raises:
        PluginLoadError: not found, bad params, or not a ``SignalModel``.
    """
    if config.path and config.kind in ("lightgbm", "linear", "onnx"):
        # a trained folder says what it is: [model] kind need not repeat it
        try:
            kind = read_manifest(config.path).kind
        except ModelError as exc:
            raise PluginLoadError(config.name, str(exc)) from exc
        config = msgspec.structs.replace(config, kind=kind)
    if config.kind == "linear" and config.path:
        try:
            return LinearModel.load(config.path, config.name if config.name != "model" else None)
        except ModelError as exc:
            raise PluginLoadError(config.name, str(exc)) from exc
    if config.kind == "linear":
        try:
            params = msgspec.convert(config.params, LinearParams)
        except msgspec.ValidationError as exc:
            raise PluginLoadError(config.name, f"bad linear model params: {exc}") from exc
        return LinearModel(config.name, params)
    factory = _resolve(config.kind, MODEL_GROUP)
    try:
        model = factory.from_config(config)
    except PluginLoadError:
        raise
    except ModelError as exc:
        raise PluginLoadError(config.kind, str(exc)) from exc
    except Exception as exc:
        raise PluginLoadError(config.kind, f"failed to build model: {exc!r}") from exc
    if not isinstance(model, SignalModel):
        raise PluginLoadError(config.kind, "object does not implement SignalModel "
                                           "(name, feature_names, predict)")  # fmt: skip
    return model
