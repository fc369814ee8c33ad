"""Bad input at the Python boundary: every case is one line of :data:`CASES` and must raise ``DiffDefInputError``
with the CLI's wording, never a plain ``ValueError`` / ``TypeError`` / ``IndexError`` from deep inside, and never
run with a silently truncated value. The generator is the tiny 2D test model (conditions age 40-80, sex F/M)."""

from __future__ import annotations

import numpy as np
import pytest

from DiffDefAtlasLib import api
from DiffDefAtlasLib.errors import DiffDefInputError
from DiffDefAtlasLib.imageio import Volume
from DiffDefAtlasLib.spatial import Grid

from modelfactory import build_tiny_model

pytestmark = pytest.mark.usefixtures("fresh_generator_caches")

GRID = Grid((8, 8, 8), np.eye(4))
HEAD = Volume(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), np.eye(4))

#: (case, call taking the tiny model's folder, words the error must hold). A new case is one line.
CASES = [
    ("seed text", lambda m: api.generate_atlas(m, {"age": 60}, seed="x", device="cpu"), "seed: expected a whole number"),
    ("seed 2**64", lambda m: api.generate_atlas(m, {"age": 60}, seed=2**64, device="cpu"), "seed: expected a whole number"),
    ("seed 1.5", lambda m: api.generate_atlas(m, {"age": 60}, seed=1.5, device="cpu"), "seed: expected a whole number"),
    ("seed -1", lambda m: api.generate_atlas(m, {"age": 60}, seed=-1, device="cpu"), "seed: expected a whole number"),
    ("steps text", lambda m: api.generate_atlas(m, {"age": 60}, steps="abc", device="cpu"), "steps: expected a whole number"),
    ("steps 2.7", lambda m: api.generate_atlas(m, {"age": 60}, steps=2.7, device="cpu"), "steps: expected a whole number"),
    ("conditions as a list", lambda m: api.generate_atlas(m, [("age", 60)], device="cpu"), "conditions: expected a mapping"),
    ("model None", lambda m: api.generate_atlas(None, {"age": 60}, device="cpu"), "model: expected a bundled model name"),
    ("model number", lambda m: api.load_generator(3, "cpu"), "model: expected a bundled model name"),
    ("age out of range", lambda m: api.generate_atlas(m, {"age": 500}, device="cpu"), "age"),
    ("refine 1.5", lambda m: api.register_to_atlas(HEAD, HEAD, refine=1.5, device="cpu"), "refine: expected a whole number"),
    ("refine -1", lambda m: api.register_to_atlas(HEAD, HEAD, refine=-1, device="cpu"), "refine: expected a whole number"),
    ("field of the wrong shape", lambda m: api.analyze_field(np.zeros((2, 8, 8, 8)), GRID), "expected a displacement of shape (3, 8, 8, 8)"),
    ("field with NaN", lambda m: api.analyze_field(np.full((3, 8, 8, 8), np.nan), GRID), "NaN or infinite"),
    ("device tpu", lambda m: api.generate_atlas(m, {"age": 60}, device="tpu"), "device"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny2d")


@pytest.mark.parametrize(("case", "call", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_at_the_api_is_a_diffdef_input_error(model, case, call, needle):
    with pytest.raises(DiffDefInputError) as raised:
        call(str(model))
    assert needle in str(raised.value) and "\n" not in str(raised.value)
