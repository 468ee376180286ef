"""Test-wide settings.

Property tests are derandomized by default, so that CI (and a submission) passes or fails the
same way on every run; set AD_HYPOTHESIS_EXPLORE=1 to let Hypothesis draw new examples, and turn
whatever it finds into an @example.
"""
import os

from hypothesis import settings

settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("explore" if os.environ.get("AD_HYPOTHESIS_EXPLORE") else "fixed")
