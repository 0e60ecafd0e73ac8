"""The course's dbt project (taxi_assets/dbt): where it is, its manifest, and how its models
and tests become assets and checks."""

import contextlib
import fcntl
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject

from taxi_assets.defs.automation import downstream_condition

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
ANALYTICS_GROUP = "analytics"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def prepared_manifest(project: DbtProject = dbt_project) -> Path:
    """The project's manifest, parsed again whenever a file of the project is newer.

    Never committed, so never stale: `dbt parse` runs when the code location loads after a
    change (a few seconds, once), and the image parses it at build time, so a deployment never
    does. Processes loading the location at once (webserver, daemon, runs) take turns.
    """

    def stale() -> bool:
        root = project.project_dir
        sources = [
            root / "dbt_project.yml",
            root / "profiles.yml",
            *(root / "models").rglob("*"),
            *(root / "macros").rglob("*"),
        ]
        newest = max(path.stat().st_mtime for path in sources)
        manifest = project.manifest_path
        return not manifest.exists() or manifest.stat().st_mtime < newest

    if stale():
        project.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        with open(project.manifest_path.parent / ".prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if stale():  # unless the process that held the lock prepared it
                # dbt's lines would land amid a run's console or the webserver's log.
                printed = io.StringIO()
                try:
                    with contextlib.redirect_stdout(printed):
                        project.preparer.prepare(project)
                except Exception as error:
                    raise RuntimeError(
                        f"dbt parse of {project.project_dir} failed:\n{printed.getvalue()}"
                    ) from error
    return project.manifest_path


class TaxiDbtTranslator(DagsterDbtTranslator):
    """Models are `analytics/<model>` in one group, and follow their upstream as the other
    assets below the cleaned trips do; sources are the warehouse assets their `meta` names."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([ANALYTICS_GROUP, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return ANALYTICS_GROUP

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        return downstream_condition()

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        """A dbt test's check says, as the project's own checks do, what it asserts and whether
        it blocks (severity `error`) or only warns."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        says = "Blocking" if spec.blocking else "Warns only"
        return dg.AssetCheckSpec(
            name=spec.name,
            asset=spec.asset_key,
            description=f"{says}: {spec.description or _test_asserts(manifest['nodes'][unique_id])}",
            additional_deps=spec.additional_deps,
            blocking=spec.blocking,
            metadata=spec.metadata,
        )


def _test_asserts(test: Mapping[str, Any]) -> str:
    """What a dbt generic test asserts, in words (its name, for a test this does not know)."""
    name = test.get("test_metadata", {}).get("name", test["name"])
    kwargs = test.get("test_metadata", {}).get("kwargs", {})
    column = kwargs.get("column_name", "")
    if name == "unique":
        return f"no two rows share a {column}."
    if name == "not_null":
        return f"every row has a {column}."
    if name == "accepted_values":
        values = kwargs.get("values") or kwargs.get("arguments", {}).get("values")
        return f"every {column} is one of {values}."
    if name == "relationships":
        field, to = kwargs.get("field"), kwargs.get("to", "")
        return f"every {column} is a {field} of {to.removeprefix('ref(').strip(chr(39) + ')')}."
    return f"dbt's `{name}` test of {column or test['name']}."
