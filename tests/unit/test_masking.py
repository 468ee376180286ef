"""MaskingConfig: each masker on and off, extra regexes, round trip through a dict."""
import numpy as np
import pytest

from anomaly_detector.parsing import miner_kernels as mk
from anomaly_detector.parsing.masking import MaskingConfig

CASES = [  # (masker, text, masked with it on)
    ("numbers", "retry 42 after 0.25", "retry <*> after <*>"),
    ("ids", "block blk_x9 on t761 in jk2_init", "block blk_<*> on <*> in jk2_init"),
    ("hex", "mask=ffffffff", "mask=<*>"),
    ("ip", "from 10.0.0.1", "from <*>"),
    ("uuid", "req req-38101a0b-2096-447d-96ea-a692162415ae ok", "req <*> ok"),
    ("path", "open /var/log/messages", "open <*>"),
    ("duration", "took 12ms", "took <*>"),
    ("size", "wrote 5KB", "wrote <*>"),
    ("datetime", "at Sun Jul", "at <*> <*>"),
]


@pytest.mark.parametrize("name,text,masked", CASES)
def test_each_masker_alone(name, text, masked):
    off = {k: False for k, _, _ in CASES}
    only = MaskingConfig(**{**off, name: True})
    assert only.mask(text) == masked
    assert MaskingConfig(**off).mask(text) == " ".join(text.split())


@pytest.mark.parametrize("text,masked", [
    ("[02/Mar/2026:10:00:00 +0000] GET", "[<*> <*>] GET"),
    ("from 2026-03-02T10:00:00.123Z to 2026-03-02 10:00:00,5", "from <*> to <*> <*>"),
    ("on 2026/03/02 and 02.03.2026 at 10:00:00", "on <*> and <*> at <*>"),
])
def test_datetime_masks_dates_and_times_as_one_value(text, masked):
    off = {k: False for k, _, _ in CASES}
    assert MaskingConfig(**{**off, "datetime": True}).mask(text) == masked
    assert MaskingConfig(**off).mask(text) == text


@pytest.mark.parametrize("text,masked", [
    ("image 6ddb8c62 at (/var/lib/nova/instances/_base/6ddb8c62): checking",
     "image <*> at (<*>): checking"),
    ("removing device node '/udev/hda1'", "removing device node '<*>'"),
    ("[instance: 6e9e5c2f-1a0e-4e5a-9f3c-2b1d0c9e8f7a] VM Resumed", "[instance: <*>] VM Resumed"),
    ("req=req-38101a0b-2096-447d-96ea-a692162415ae, done.", "<*>, done."),
    ("open \"/etc/hosts\".", "open \"<*>\"."),
])
def test_whole_token_values_keep_their_brackets_quotes_and_punctuation(text, masked):
    # the program prints the brackets and quotes on every line: they are the template's words
    assert MaskingConfig().mask(text) == masked


def test_defaults_all_on_and_round_trip():
    cfg = MaskingConfig()
    assert cfg.flags == (1 << 9) - 1
    custom = MaskingConfig(hex=False, extra=(r"id=\w+",))
    assert MaskingConfig.from_dict(custom.to_dict()) == custom
    assert custom.flags == cfg.flags & ~mk.F_HEX


def test_extra_regex_marks_bytes_and_masks_whole_token():
    cfg = MaskingConfig(extra=(r"user-[a-z]+",))
    line = b"login user-alice ok"
    force = cfg.force_mask(np.frombuffer(line, dtype=np.uint8), np.array([0]), np.array([len(line)]))
    assert force.tolist() == [0] * 6 + [1] * 10 + [0] * 3
    assert cfg.mask("login (user-alice) ok") == "login <*> ok"
    assert len(MaskingConfig().force_mask(np.zeros(3, np.uint8), np.array([0]), np.array([3]))) == 0


def test_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="does not compile"):
        MaskingConfig(extra=("[",))
