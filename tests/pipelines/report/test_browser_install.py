"""``infra/install.sh --test`` adds Debian's chromium and chromium-driver (the browser tests'
browser) when this machine lacks either, and only with --test (functions sourced, nothing
installed)."""

from __future__ import annotations

import sys

from tests.infra.test_install import MEDIA_TOOLS, call, path_with


def test_test_install_adds_debian_chromium_when_missing(tmp_path):
    env = {"PATH": path_with(tmp_path, MEDIA_TOOLS), "PYTHON": sys.executable}
    assert call("system_packages --test", env).split() == ["chromium", "chromium-driver"]
    assert call("system_packages", env) == ""


def test_test_install_with_chromium_present_needs_nothing(tmp_path):
    env = {"PATH": path_with(tmp_path, (*MEDIA_TOOLS, "chromium", "chromedriver")),
           "PYTHON": sys.executable}
    assert call("system_packages --test", env) == ""
