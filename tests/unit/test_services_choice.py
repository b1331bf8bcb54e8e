"""tests/services.py picks testcontainers only when the real images are already local."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests import services


def fake_docker(bin_dir: Path, images: dict[str, str], *, info_ok: bool = True) -> None:
    """A `docker` on PATH that answers `info` and `image inspect` for `images` (name ->
    labels JSON) the way the real client does."""
    cases = "\n".join(
        f"    '{name}') echo '{labels}'; exit 0 ;;" for name, labels in images.items()
    )
    script = bin_dir / "docker"
    script.write_text(
        f"""#!/bin/sh
if [ "$1" = info ]; then exit {0 if info_ok else 1}; fi
if [ "$1" = image ] && [ "$2" = inspect ]; then
  eval "name=\\${{$#}}"
  case "$name" in
{cases}
  esac
  echo "Error: No such image: $name" >&2; exit 1
fi
exit 2
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("BROKER_TEST_MINIO_IMAGE", raising=False)
    return tmp_path


def test_services_choice_containers_with_real_images(bin_dir: Path) -> None:
    fake_docker(bin_dir, {"postgres:15": "{}", "minio/minio:latest": "null"})
    assert services._containers_available()


def test_services_choice_not_when_an_image_is_missing(bin_dir: Path) -> None:
    fake_docker(bin_dir, {"postgres:15": "{}"})
    assert not services._containers_available()


def test_services_choice_not_when_an_image_is_a_stand_in(bin_dir: Path) -> None:
    stand_in = '{"org.broker.stand-in":"debian-bookworm"}'
    fake_docker(bin_dir, {"postgres:15": stand_in, "minio/minio:latest": "{}"})
    assert not services._containers_available()


def test_services_choice_not_when_docker_does_not_answer(bin_dir: Path) -> None:
    fake_docker(bin_dir, {"postgres:15": "{}", "minio/minio:latest": "{}"}, info_ok=False)
    assert not services._containers_available()
