"""Controls by role: which explainers are controls, and which one a gain is measured against.

An explainer spec declares its role (:data:`bench.plugin.specs.EXPLAINER_ROLES`). Every role but
``method`` is a control: a reference line beside the ranking, not a competitor in it.
"Gain over control" and the paired comparison behind its CI use the grid's
*null control* (the explainer whose role is ``null-control``: random or constant maps).
When a grid runs several null controls, ``leaderboard.control`` (``bench leaderboard
--control NAME``) names the one to use; leaving it empty then is a plan-time error.
The core names no explainer: the reference is found by role.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from bench.errors import ConfigError, did_you_mean
from bench.plugin.specs import EXPLAINER_ROLES, METHOD_ROLE, NULL_CONTROL_ROLE

__all__ = [
    "CONTROL_KEY",
    "DEPRECATED_CONTROL_KEY",
    "EXPLAINER_ROLES",
    "METHOD_ROLE",
    "NULL_CONTROL_ROLE",
    "control_setting",
    "is_control",
    "record_role",
    "registered_role",
    "resolve_control",
    "role_rank",
]

#: The config key that picks the gain reference among several null controls.
CONTROL_KEY = "leaderboard.control"
#: Its deprecated alias (the explainer "gain over baseline" used to be measured against).
DEPRECATED_CONTROL_KEY = "aopc.baseline"


def is_control(role: object) -> bool:
    """True for every role but ``method`` (an unknown or missing role counts as a method)."""
    return isinstance(role, str) and role in EXPLAINER_ROLES and role != METHOD_ROLE


def role_rank(role: object) -> int:
    """Sort key of a leaderboard row: methods (0) before controls (1)."""
    return 1 if is_control(role) else 0


def registered_role(name: str, registry: Any = None) -> str:
    """The role the registered explainer ``name`` declares; ``method`` when it is unknown."""
    if registry is None:
        from bench.plugin.registry import registry as get_registry

        registry = get_registry()
    try:
        entry = registry["explainer"].get(name)
    except Exception:  # noqa: BLE001 - a broken registry must not cost a leaderboard
        return METHOD_ROLE
    role = getattr(getattr(entry, "spec", None), "role", None)
    return role if isinstance(role, str) and role in EXPLAINER_ROLES else METHOD_ROLE


def record_role(cell: Mapping[str, Any], registry: Any = None) -> str:
    """The explainer role of a cell record: recorded in its provenance (``provenance.explainer.role``);
    for records written before roles existed, the role its explainer declares now."""
    prov = cell.get("provenance")
    explainer = prov.get("explainer") if isinstance(prov, Mapping) else None
    role = explainer.get("role") if isinstance(explainer, Mapping) else None
    if isinstance(role, str) and role in EXPLAINER_ROLES:
        return role
    name = cell.get("explainer")
    return registered_role(str(name), registry) if isinstance(name, str) and name else METHOD_ROLE


def control_setting(cfg: Mapping[str, Any]) -> str:
    """``leaderboard.control`` of a loaded config, honouring the deprecated ``aopc.baseline``.

    ``aopc.baseline`` (deprecated) sets the control when ``leaderboard.control`` is empty,
    with a :class:`FutureWarning`; set to two different names they are a ConfigError.
    """
    control = str((cfg.get("leaderboard") or {}).get("control", "") or "")
    old = str((cfg.get("aopc") or {}).get("baseline", "") or "")
    if not old:
        return control
    if control and control != old:
        raise ConfigError(
            f"{DEPRECATED_CONTROL_KEY} = {old!r} and {CONTROL_KEY} = {control!r} disagree; "
            f"{DEPRECATED_CONTROL_KEY} is a deprecated alias of {CONTROL_KEY}: remove it"
        )
    warnings.warn(
        f"{DEPRECATED_CONTROL_KEY} is deprecated: the gain reference is the grid's null-control "
        f"explainer (found by its role); to choose one of several set {CONTROL_KEY} = {old!r}",
        FutureWarning,
        stacklevel=2,
    )
    return old


def resolve_control(explainers: Sequence[str], roles: Mapping[str, str], control: str = "",
                    *, key: str = CONTROL_KEY) -> str:
    """The gain reference of a grid: ``control`` checked, or the grid's only null control.

    ``explainers``: the selected explainers; ``roles``: name -> role. Returns ``""`` when the
    grid has no null control (no gain column). A registered ``control`` the grid did not select
    is a preference: with at most one null control selected, that one (or none) is used. A
    ``control`` that is unknown, not a control, or unselected while several null controls are,
    and two null controls with no ``control``, are :class:`ConfigError` naming ``key``.
    """
    nulls = [e for e in explainers if roles.get(e) == NULL_CONTROL_ROLE]
    if control and control not in explainers and len(nulls) <= 1 and is_control(roles.get(control)):
        # a preference (a preset's choice among several null controls) for a control this
        # grid did not select: the grid's only null control, or none, is the reference
        return nulls[0] if nulls else ""
    if control:
        if control not in explainers:
            raise ConfigError(
                f"{key} = {control!r} is not a selected explainer{did_you_mean(control, explainers)}; "
                f"selected explainers: {', '.join(explainers)}"
            )
        if not is_control(roles.get(control)):
            controls = [e for e in explainers if is_control(roles.get(e))]
            raise ConfigError(
                f"{key} = {control!r} names an explainer whose role is {roles.get(control, METHOD_ROLE)!r}: "
                f"the gain reference must be a control; selected controls: {', '.join(controls) or '(none)'}"
            )
        return control
    if len(nulls) > 1:
        raise ConfigError(
            f"{len(nulls)} null controls are selected ({', '.join(nulls)}): set {key} to the one "
            f"\"gain over control\" and the paired comparisons use (e.g. {key} = {nulls[0]!r})"
        )
    return nulls[0] if nulls else ""
