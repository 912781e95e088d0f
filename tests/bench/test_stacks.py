"""py-spy's collapsed stacks grouped by library (bench.stacks, under `kgops profile`)."""

from __future__ import annotations

from kserve_gitops.bench import stacks


def test_profile_groups_samples_by_the_innermost_library() -> None:
    site = "/v/lib/python3.11/site-packages"
    std = "/usr/lib/python3.11"
    collapsed = "\n".join(
        [
            f'process 1:"srv";run ({std}/asyncio/runners.py:118);predict ({site}/sklearn/'
            f"naive_bayes.py:90);_wrapfunc ({site}/numpy/_core/fromnumeric.py:57) 7",
            f'process 1:"srv";send ({site}/uvicorn/protocols/http/h.py:524) 3',
            f'process 1:"srv";dispatch ({site}/starlette/routing.py:70);'
            f"loads ({std}/json/decoder.py:337) 2",
            f'process 1:"srv";infer ({site}/mlserver/handlers.py:40);'
            f"__init__ ({std}/collections/__init__.py:378) 5",
            'process 1:"srv" 1',
        ]
    )
    counts = stacks.shares(collapsed)
    assert counts == {
        "model: scikit-learn, numpy, scipy, pandas": 7,
        "HTTP: uvicorn, h11, httptools": 3,
        "JSON and validation: orjson, json, pydantic": 2,
        "runtime: mlserver": 5,  # a standard-library helper is charged to its caller
        "no Python frame (native code)": 1,
    }
