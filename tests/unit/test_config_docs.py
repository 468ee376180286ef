"""docs/configuration.md and the shipped config.ini are generated from spec.ini and must not go stale."""
import os

from anomaly_detector.config import docgen
from anomaly_detector.config.loader import load_spec

FIX = "stale: run `python -m anomaly_detector.config.docgen` and commit the result"


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_configuration_doc_is_up_to_date():
    assert _read(docgen.DOC_PATH) == docgen.render_markdown(), "docs/configuration.md is " + FIX


def test_shipped_config_is_up_to_date():
    assert _read(docgen.INI_PATH) == docgen.render_ini(), "etc/anomaly-detector/config.ini is " + FIX


def test_every_spec_key_is_documented_with_help():
    doc = docgen.render_markdown()
    for path, key, _check, help_lines in docgen._walk(load_spec(), ()):
        assert help_lines, "spec key %s %s has no help comment" % (path, key)
        assert "| `%s` |" % key in doc


def test_shipped_config_names_every_key():
    text = _read(docgen.INI_PATH)
    for _path, key, _check, _help in docgen._walk(load_spec(), ()):
        assert "%s = " % key in text, key


def test_generated_paths_are_in_the_repo():
    assert os.path.exists(docgen.DOC_PATH) and os.path.exists(docgen.INI_PATH)
