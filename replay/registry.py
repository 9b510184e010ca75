"""The model registry's writing half, as ``tradeloop models`` and the replay side use it.

One implementation: ``adapters.model_registry_store`` (the live daemon writes the audit
entry of an operator's promote or rollback itself, and ``adapters`` may not import
``replay``). The reads are ``engine.model_registry.RegistryReader``'s.
"""

from __future__ import annotations

from adapters.model_registry_store import (
    AUDIT_FILE,
    HEAD_FILE,
    MIN_PREFIX,
    Registry,
    RegistryState,
    Resolved,
    VerifyReport,
    VersionInfo,
    resolve,
    version_id,
)

__all__ = [
    "AUDIT_FILE",
    "HEAD_FILE",
    "MIN_PREFIX",
    "Registry",
    "RegistryState",
    "Resolved",
    "VerifyReport",
    "VersionInfo",
    "resolve",
    "version_id",
]
