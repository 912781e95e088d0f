"""Progressive delivery as Git changes: canary, promote and roll back a model version in one
environment by editing its values file (and, on promotion, the registry's stable version).

    kgops rollout canary --env staging --version v2 --percent 10
    kgops rollout promote --env staging      (--model: default the checkout's only model)
    kgops rollout rollback --env staging

KServe's Knative-mode semantics, written faithfully: a new model.storageUri with
predictor.canaryTrafficPercent N gives the new revision N% and the last fully rolled-out one the
rest; promoting removes canaryTrafficPercent (the latest revision gets 100%). Rolling back pins
canaryTrafficPercent to 0 (100% back on the stable revision at once) and restores the stable
storageUri in the same change, so a rebuilt stable revision warms at 0%; a second `rollback`
then drops canaryTrafficPercent. Dropping it together with the storageUri would let Knative's
"latest revision" target follow the latest *ready* revision (the canary) until the rebuilt one
is ready.

Every change is validated (chart schema, render, strict KServe CRD check) before anything is
written; files are replaced atomically, comments and layout kept, and the diff printed. A
refused request leaves every file byte-identical and exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.lifecycle import gate, registry
from kserve_gitops.repo import Repo, render, yaml_rt
from kserve_gitops.upstream import kube_schemas

MAX_CANARY_PERCENT = 99  # 100% would make the canary the rolled-out revision: that is promote


class RolloutError(Exception):
    """A request that cannot be carried out; nothing was written."""


@dataclass
class Change:
    summary: str
    texts: dict[Path, tuple[str, str]]  # path -> (before, after)


def _set_tag_routing(values: Any) -> None:
    """tagRouting: true right after deploymentMode (it must arrive with the model change)."""
    if values.get("tagRouting") is True:
        return
    if "tagRouting" in values:
        values["tagRouting"] = True
        return
    keys = list(values.keys())
    at = keys.index("deploymentMode") + 1 if "deploymentMode" in keys else len(keys)
    values.insert(at, "tagRouting", True)


def _require_gate(repo: Repo, model: str, version: str, env: str) -> None:
    try:
        result = gate.evaluate(repo, model, version, env)
    except registry.RegistryError as exc:
        raise RolloutError(str(exc)) from None
    if not result.passed:
        raise RolloutError(
            f"{model} {version} failed the quality gate for {env}: " + "; ".join(result.reasons)
        )


def plan(
    repo: Repo, action: str, model: str, env: str, version: str | None, percent: int | None
) -> Change:
    """The files an action changes, before and after; RolloutError when it must not happen."""
    try:
        render.environment_dir(repo, env)
        reg = registry.load(repo, model)
        st = registry.state(reg, env)
        before, values = yaml_rt.load(repo, st.values_path)
    except (render.RenderError, registry.RegistryError, yaml_rt.YamlEditError) as exc:
        raise RolloutError(str(exc)) from None
    where = repo.rel(st.values_path)
    if st.mode != "knative":
        raise RolloutError(
            f"{where}: deploymentMode {st.mode}: rollouts are automated for knative mode "
            "(revisions and canaryTrafficPercent); see charts/inference-service/README.md"
        )
    if st.phase == "inconsistent":
        raise RolloutError(f"{where}: {st.describe()}: run `kgops registry --check`")
    predictor = values["predictor"]
    reg_after = reg.text

    if action == "canary":
        if version is None or percent is None:
            raise RolloutError("canary needs --version and --percent")
        _known(reg, version)
        if not 0 <= percent <= MAX_CANARY_PERCENT:
            raise RolloutError(
                f"--percent {percent}: expected 0-{MAX_CANARY_PERCENT} "
                "(0 deploys the canary dark; for 100% use `make promote`)"
            )
        if st.phase == "rollback-finishing":
            raise RolloutError(
                f"{env}: a rollback to {st.stable} is finishing: run `make rollback` again first"
            )
        if version == st.stable:
            raise RolloutError(f"{env} already serves {version} as its stable version")
        if st.canary and st.canary != version:
            raise RolloutError(
                f"{env}: a canary of {st.canary} is in progress ({st.describe()}): "
                "promote or roll it back first"
            )
        _require_gate(repo, model, version, env)
        if st.canary is None:
            values["model"]["storageUri"] = reg.storage_uri(version)
            _set_tag_routing(values)
            summary = f"{env}: canary {version} at {percent}% beside {st.stable}"
        else:
            summary = f"{env}: canary {version} from {st.canary_percent}% to {percent}%"
        predictor["canaryTrafficPercent"] = percent
    elif action == "promote":
        if st.canary is None:
            raise RolloutError(
                f"{env}: no canary in progress ({st.describe()}): nothing to promote"
            )
        _require_gate(repo, model, st.canary, env)
        del predictor["canaryTrafficPercent"]
        reg.doc["environments"][env]["stable"] = st.canary
        reg_after = yaml_rt.dumps(reg.doc, reg.text)
        summary = f"{env}: promote {st.canary} to 100% (stable was {st.stable})"
    elif action == "rollback":
        if st.phase == "rollback-finishing":
            del predictor["canaryTrafficPercent"]
            summary = f"{env}: finish the rollback: the rebuilt {st.stable} revision takes 100%"
        elif st.canary is None:
            raise RolloutError(
                f"{env}: no canary in progress ({st.describe()}): nothing to roll back"
            )
        else:
            predictor["canaryTrafficPercent"] = 0
            values["model"]["storageUri"] = reg.storage_uri(st.stable)
            summary = (
                f"{env}: roll back {st.canary}: 100% to the {st.stable} revision now, "
                f"{st.stable} rebuilt at 0%; run `make rollback` again once it is Ready"
            )
    else:
        raise RolloutError(f"unknown action {action!r}")

    after = yaml_rt.dumps(values, before)
    texts = {st.values_path: (before, after)}
    if reg_after != reg.text:
        texts[reg.path] = (reg.text, reg_after)
    return Change(summary, texts)


def _known(reg: registry.Registry, version: str) -> None:
    try:
        reg.version(version)
    except registry.RegistryError as exc:
        raise RolloutError(str(exc)) from None


def validate(repo: Repo, change: Change, model: str, env: str) -> None:
    """Render the new values with the chart and check the result against the KServe CRD."""
    values_path = render.model_values_file(repo, env, model)
    after = change.texts[values_path][1]
    source = repo.rel(values_path)
    try:
        values = yaml.safe_load(after)
        namespace = str(render.environment(repo, env).get("namespace", "models"))
        objs = render.render_chart(repo, repo.model_chart, values, model, namespace, source)
    except (yaml.YAMLError, render.RenderError) as exc:
        raise RolloutError(f"the change would not render: {exc}") from None
    problems = [f"{o.ref}: {v}" for o in objs for v in kube_schemas.check(repo, o.body)]
    if problems:
        raise RolloutError(f"{source}: the change fails the KServe CRD: " + "; ".join(problems))


def tag_hosts(repo: Repo, model: str, env: str) -> tuple[str, str]:
    """Host headers of the stable (prev-) and canary (latest-) revisions through the ingress."""
    meta = render.environment(repo, env)
    route = f"{model}-predictor.{meta.get('namespace', 'models')}.{meta.get('ingressDomain')}"
    return f"prev-{route}", f"latest-{route}"


def run(
    repo: Repo, action: str, model: str, env: str, version: str | None, percent: int | None
) -> Change:
    change = plan(repo, action, model, env, version, percent)
    validate(repo, change, model, env)
    yaml_rt.write_all({path: after for path, (_, after) in change.texts.items()})
    return change


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kgops rollout", description=__doc__)
    parser.add_argument("action", choices=("canary", "promote", "rollback"))
    parser.add_argument("--model", help="(default: the checkout's only model)")
    parser.add_argument("--env", required=True)
    parser.add_argument("--version", help="canary: the version to roll out, e.g. v2")
    parser.add_argument("--percent", type=int, help="canary: percent of traffic, 0-99")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    model = args.model or repo.default_model()
    try:
        change = run(repo, args.action, model, args.env, args.version, args.percent)
    except RolloutError as exc:
        print(f"error: {exc}; nothing changed", file=sys.stderr)
        return 2
    for path, (before, after) in change.texts.items():
        sys.stdout.write(yaml_rt.diff(repo, path, before, after))
    print(change.summary)
    if args.action == "canary":
        stable, canary = tag_hosts(repo, model, args.env)
        print(
            f"once synced, compare them: make canary-analysis ENV={args.env} STABLE=<ingress URL> "
            f"CANARY=<ingress URL> HOST_STABLE={stable} HOST_CANARY={canary}"
        )
    print("validated: chart schema, render, KServe CRD; commit the diff above to roll it out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
