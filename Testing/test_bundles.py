"""Model bundles: one card reader for the generator, registration and population models.

Reference: the JSON text written into the card files by the test (the parse error Python's json module reports).
"""

from __future__ import annotations

import shutil

import pytest

from DiffDefAtlasLib.bundles import read_card, verified_weights, weights_entry, write_card
from DiffDefAtlasLib.cli.main import main
from DiffDefAtlasLib.errors import DiffDefInputError

from clichecks import one_error_line
from modelfactory import build_tiny_model

pytestmark = pytest.mark.usefixtures("fresh_generator_caches")


def test_read_card_names_the_file_and_the_fault(tmp_path):
    assert read_card(write_card(tmp_path, {"name": "m"})) == {"name": "m"}
    assert read_card(tmp_path) == {"name": "m"}  # the folder works as well as the file
    with pytest.raises(DiffDefInputError, match=r"model_card\.json: model card not found"):
        read_card(tmp_path / "missing")
    (tmp_path / "model_card.json").write_text('{"name": "m",')
    with pytest.raises(DiffDefInputError, match=r"model_card\.json: the model card is not valid JSON \(Expecting"):
        read_card(tmp_path)
    (tmp_path / "model_card.json").write_text("[1, 2]")
    with pytest.raises(DiffDefInputError, match="must be a JSON object, found list"):
        read_card(tmp_path)


@pytest.mark.parametrize("command", ["models", "generate"])
def test_a_corrupt_bundled_card_is_named_not_hidden(tmp_path, capsys, monkeypatch, command):
    """A bundled generator whose card is broken JSON: ``models`` and ``generate`` exit 2 naming the card file and
    the parse error (before, the model vanished from the list and generate said "no such bundled model")."""
    import DiffDefAtlasLib.generate.bundled as bundled

    models = tmp_path / "models"
    shutil.copytree(build_tiny_model(tmp_path / "build" / "tiny2d"), models / "tiny2d")
    card = models / "tiny2d" / "model_card.json"
    card.write_text(card.read_text()[:-20])
    monkeypatch.setattr(bundled, "models_dir", lambda: models)
    argv = ["models"] if command == "models" else ["generate", "--model", "tiny2d", "--device", "cpu", "--out", str(tmp_path / "o")]
    one_error_line(capsys, main(argv), str(card), "not valid JSON", status=2)
    assert not (tmp_path / "o").exists()


def test_the_registration_and_population_cards_use_the_same_reader(tmp_path):
    from DiffDefAtlasLib.population.model import PopulationModel
    from DiffDefAtlasLib.register.weights import read_model_card

    (tmp_path / "model_card.json").write_text("{broken")
    with pytest.raises(DiffDefInputError, match="registration model card is not valid JSON"):
        read_model_card(folder=tmp_path)
    with pytest.raises(DiffDefInputError, match="population model card is not valid JSON"):
        PopulationModel.load(tmp_path)


@pytest.mark.parametrize("name", ["brain3d", "oasis2d", "population3d", "registration2d", "registration3d"])
def test_every_bundled_card_has_one_weights_entry(name):
    """The five bundled models share one schema: ``weights`` = file, SHA-256 and size. Reference: hashlib and
    ``os.stat`` of the shipped file, independent of the library's checksum helper."""
    import hashlib

    from DiffDefAtlasLib.resources import resources_dir

    folder = resources_dir() / "models" / name
    card = read_card(folder)
    assert set(card["weights"]) == {"file", "sha256", "bytes"}
    assert not {"weights_file", "weights_sha256", "sha256"} & set(card)  # the old per-model keys are gone
    data = (folder / card["weights"]["file"]).read_bytes()
    assert card["weights"] == {"file": card["weights"]["file"], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert verified_weights(folder, card) == folder / card["weights"]["file"]


def test_verified_weights_refuses_each_fault_naming_the_file(tmp_path):
    """A weights entry written by :func:`weights_entry` passes; a missing entry, a missing file, a truncated copy
    and a same-size altered copy are each refused with the file's name."""
    import hashlib

    path = tmp_path / "w.safetensors"
    path.write_bytes(bytes(range(256)) * 4)
    entry = weights_entry(path)
    assert entry == {"file": "w.safetensors", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": 1024}
    card = {"weights": entry}
    assert verified_weights(tmp_path, card) == path
    with pytest.raises(DiffDefInputError, match="has no weights entry"):
        verified_weights(tmp_path, {"weights_file": "w.safetensors"})
    with pytest.raises(DiffDefInputError, match=r"gone\.safetensors: weights not found"):
        verified_weights(tmp_path, {"weights": {**entry, "file": "gone.safetensors"}})
    path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(DiffDefInputError, match=r"w\.safetensors: expected 1024 bytes, found 768"):
        verified_weights(tmp_path, card)
    path.write_bytes(bytes(range(255, -1, -1)) * 4)
    with pytest.raises(DiffDefInputError, match=r"w\.safetensors: checksum mismatch"):
        verified_weights(tmp_path, card, "weights of model 'w'")


@pytest.mark.parametrize("command", ["models", "generate"])
@pytest.mark.parametrize(("key", "value"), [("minimum", "abc"), ("maximum", None), ("kind", 3)])
def test_a_card_with_a_wrong_condition_field_is_bad_input(tmp_path, capsys, monkeypatch, command, key, value):
    """``"minimum": "abc"`` in a bundled card used to be an internal error (exit 1) in ``models`` and ``generate``."""
    import json

    import DiffDefAtlasLib.generate.bundled as bundled

    models = tmp_path / "models"
    shutil.copytree(build_tiny_model(tmp_path / "build" / "tiny2d"), models / "tiny2d")
    card = models / "tiny2d" / "model_card.json"
    data = json.loads(card.read_text())
    data["conditions"][0][key] = value
    card.write_text(json.dumps(data))
    monkeypatch.setattr(bundled, "models_dir", lambda: models)
    argv = ["models"] if command == "models" else ["generate", "--model", "tiny2d", "--device", "cpu", "--out", str(tmp_path / "o")]
    one_error_line(capsys, main(argv), str(card), status=2)
    assert not (tmp_path / "o").exists()
