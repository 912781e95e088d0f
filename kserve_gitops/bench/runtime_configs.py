"""The runtime configurations `make bench` measures side by side (bench.sidebyside) and
`kgops profile` samples (bench.profile). A module of their own: sidebyside runs the profiles,
so profile reading them from sidebyside would be an import cycle."""

from __future__ import annotations

from kserve_gitops.load import measure

from dataclasses import dataclass

from kserve_gitops.serving import runtimes


@dataclass(frozen=True)
class Config:
    name: str
    runtime: str
    args: tuple[str, ...]
    note: str

    @property
    def protocols(self) -> tuple[str, ...]:
        return runtimes.PROTOCOLS[self.runtime]


CONFIGS = (
    Config("sklearnserver-upstream", "sklearnserver", (), "KServe's defaults"),
    Config(
        "sklearnserver-tuned",
        "sklearnserver",
        tuple(measure.SETTINGS["tuned"]),
        "this project's recommended settings: " + " ".join(measure.SETTINGS["tuned"]),
    ),
    Config(
        "mlserver-upstream",
        "mlserver",
        (),
        "the image's defaults: one inference worker process behind the HTTP process, debug on",
    ),
    Config(
        "mlserver-inprocess",
        "mlserver",
        ("--workers", "0", "--debug", "false"),
        "parallel_workers 0 (inference in the HTTP process), debug off (no access log)",
    ),
)


def select(names: list[str] | None) -> tuple[Config, ...]:
    """The named configurations (all when None), or ValueError naming the unknown ones."""
    if not names:
        return CONFIGS
    known = {c.name: c for c in CONFIGS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"--runtime-configs: unknown {', '.join(unknown)}; expected some of {', '.join(known)}"
        )
    return tuple(known[n] for n in names)
