"""Send gates: what a delta must satisfy before anything leaves (`gates:` in project.yaml and audience files)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GatesSpec(BaseModel):
    """Limits on one delta; project.yaml sets the defaults, an audience file overrides any of them."""

    model_config = ConfigDict(extra="forbid")

    # Mirror mode: at most this share of the destination's members removed in one run.
    max_remove_percent: float = Field(default=20.0, ge=0, le=100)
    # The audience may not shrink or grow by more than this share of its size at the last delta.
    max_change_percent: float = Field(default=50.0, ge=0)
    # The two share gates only judge a destination (or audience) of at least this many members: below it, a few
    # members are a large share and not an incident.
    min_members: int = Field(default=100, ge=0)
    # Destination fields every added or updated member must have (not NULL); the identifier always must.
    required_fields: list[str] = []
    # No two members of the audience may share an identifier (the destination would merge them).
    unique_identifiers: bool = True


#: The gates, by name: the names of the blocking asset checks on every delta, and of the run tag that overrides them.
GATE_NAMES = ("max_remove_percent", "max_change_percent", "required_fields", "unique_identifiers", "consent_applied")
#: Run tag that lets a run send despite failed gates: a comma-separated list of gate names, or `all`.
OVERRIDE_TAG = "composable/override_gates"


def resolve_gates(project_default: GatesSpec | None, audience: GatesSpec | None) -> GatesSpec:
    """The project's defaults (or ours), with what the audience file sets on top."""
    base = project_default or GatesSpec()
    if audience is None:
        return base
    return base.model_copy(update=audience.model_dump(exclude_unset=True))


def overridden(tag_value: str | None) -> set[str]:
    """Gate names a run's override tag lifts (`all` lifts every gate); unknown names are an error."""
    names = {n.strip() for n in (tag_value or "").split(",") if n.strip()}
    if "all" in names:
        return set(GATE_NAMES)
    unknown = names - set(GATE_NAMES)
    if unknown:
        raise ValueError(
            f"run tag {OVERRIDE_TAG}: unknown gate(s) {', '.join(sorted(unknown))}; known: all, {', '.join(GATE_NAMES)}"
        )
    return names
