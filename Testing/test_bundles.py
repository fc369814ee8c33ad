"""Model bundles: one card reader for the generator, registration and population models.

Reference: the JSON text written into the card files by the test (the parse error Python's json module reports).
"""

from __future__ import annotations

import shutil

import pytest

from DiffDefAtlasLib.bundles import read_card, write_card
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
